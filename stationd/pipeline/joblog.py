"""The job log: the only way the pipeline writes. Each call is one store transaction (device, job and event
together), and every record it makes is handed on (`on_record`) to the station, which keeps its view of ports and
devices and publishes the event. So every write is on the trail; nothing in the pipeline reads the store behind it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from stationd.errors import RESTART_JOB_CODES
from stationd.export import row as report_row
from stationd.redact import redact
from stationd.states import DeviceState, JobStatus
from stationd.store import Assignment, DeviceRecord, EventRecord, JobRecord, Store, Transition

OnRecord = Callable[[DeviceRecord | None, JobRecord | None, list[EventRecord]], Awaitable[None]]


class JobLog:
    def __init__(self, store: Store, station_id: str, on_record: OnRecord) -> None:
        self.store = store
        self.station_id = station_id
        self.on_record = on_record

    async def transition(self, udid: str, job: JobRecord, kind: str, **fields: Any) -> JobRecord:
        """Persist one transition, then hand it on; returns the job as it is afterwards.

        Every text is redacted first: no credential inside a URL reaches the trail, the API, the plugins or exports."""
        fields = {name: redact(value) for name, value in fields.items()}
        if fields.get("error_code"):
            fields["data"] = {
                **(fields.get("data") or {}),
                "error_code": fields["error_code"],
                "error_message": fields.get("error_message"),
            }
        made: Transition = await self.store.record_transition(
            udid=udid, job_id=job.id, station_id=self.station_id, kind=kind, **fields
        )
        await self.on_record(made.device, made.job, [made.event])
        return made.job

    async def checkpoint(self, udid: str, job: JobRecord, step: str, data: dict[str, Any]) -> JobRecord:
        """Persist step data before acting on it (write-ahead), e.g. that an erase is about to be sent."""
        return await self.transition(
            udid, job, "step.progress", state=step, step=step, step_data={step: data}, data=data
        )

    async def identified(self, udid: str, facts: dict[str, Any], location_id: int | None, label: str | None) -> None:
        """What the iPad said about itself; its "device.identified" event carries no secret, only its charge (for
        the boards that follow the trail)."""
        device = await self.store.upsert_device(
            udid,
            serial=facts.get("serial"),
            ecid=facts.get("ecid"),
            facts=facts,
            location_id=location_id,
            port_label=label,
        )
        charge = {"level": facts.get("battery_level"), "charging": facts.get("charging")}
        event = await self.store.add_event(
            "device.identified",
            station_id=self.station_id,
            udid=udid,
            data={"battery": charge} if "battery_level" in facts else None,
        )
        await self.on_record(device, None, [event])

    async def job_for(self, udid: str) -> JobRecord | None:
        """The job to work on when a device attaches: none once done; a failed job resumes, unless its failure
        needs a fresh start (an erase again, for a DEP assignment that changed)."""
        jobs = await self.store.jobs_for(udid)
        latest = jobs[-1] if jobs else None
        if latest is not None and latest.status == JobStatus.DONE:
            return None
        if latest is not None and latest.status == JobStatus.FAILED and latest.error_code not in RESTART_JOB_CODES:
            return await self.transition(
                udid,
                latest,
                "job.retried",
                state=DeviceState.WAITING,
                job_status=JobStatus.RUNNING,
                data={"reason": "replugged"},
            )
        return await self.open_job(udid)

    async def open_job(self, udid: str) -> JobRecord:
        job = await self.store.open_job(udid, self.station_id)
        await self.on_record(await self.store.get_device(udid), job, [])
        return job

    async def finish(self, udid: str, job: JobRecord) -> None:
        """The job is done: `device.done`, then the iPad's report row as `device.reported` (reporters read it
        from the trail, like every subscriber)."""
        made = await self.store.record_transition(
            udid=udid,
            job_id=job.id,
            station_id=self.station_id,
            kind="device.done",
            state=DeviceState.DONE,
            step="report",
            job_status=JobStatus.DONE,
        )
        reported = await self.store.add_event(
            "device.reported",
            station_id=self.station_id,
            udid=udid,
            job_id=job.id,
            data={"device": report_row(made.device, made.job)},
        )
        await self.on_record(made.device, made.job, [made.event, reported])

    async def assignment(self, serial: str) -> Assignment | None:
        """Where Apple School/Business Manager has the serial, as last verified (the asm reporter, `stationd asm`)."""
        return (await self.store.get_assignments([serial])).get(serial)

    async def want_assignment(self, serial: str) -> None:
        """Ask for the serial to be checked (and, with the asm reporter's assign_held, assigned)."""
        await self.store.record_assignments([Assignment(serial, "wanted")])

    async def current(self, job: JobRecord) -> JobRecord:
        return await self.store.get_job(job.id) or job

    async def latest(self, udid: str) -> JobRecord | None:
        jobs = await self.store.jobs_for(udid)
        return jobs[-1] if jobs else None

    async def interrupted(self, udid: str, job: JobRecord, step: str | None, reason: str) -> None:
        if job.status != JobStatus.RUNNING:
            return
        await self.transition(
            udid,
            job,
            "step.interrupted",
            state=DeviceState.INTERRUPTED,
            step=step,
            job_status=JobStatus.INTERRUPTED,
            data={"reason": reason},
        )

    async def number(self, udid: str, job: JobRecord, step: str, counter: str) -> tuple[int, JobRecord]:
        """This job's number from a station-wide counter ({n} in names): allocated once and kept in the job
        (written ahead of its use), so a retry keeps its number and no two iPads share one."""
        saved = job.step_data.get("numbers", {}).get(counter)
        if isinstance(saved, int):
            return saved, job
        value = await self.store.allocate_counter(counter)
        job = await self.transition(
            udid,
            job,
            "job.numbered",
            state=step,
            step=step,
            step_data={"numbers": {counter: value}},
            data={"counter": counter, "value": value},
        )
        return value, job
