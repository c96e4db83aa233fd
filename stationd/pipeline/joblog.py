"""The job log: the only way the pipeline writes. Each call is one store transaction (device, job and event
together), and every record it makes is handed on (`on_record`) to the station, which keeps its view of ports and
devices and publishes the event. So every write is on the trail; nothing in the pipeline reads the store behind it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from stationd.errors import RESTART_JOB_CODES, FleetUnreachable, Held, HeldElsewhere
from stationd.export import row as report_row
from stationd.redact import redact
from stationd.states import DeviceState, JobStatus
from stationd.store import (
    Assignment,
    DeviceRecord,
    EventRecord,
    JobBusy,
    JobRecord,
    Store,
    StoreUnavailable,
    Transition,
    WorkItem,
)

OnRecord = Callable[[DeviceRecord | None, JobRecord | None, list[EventRecord]], Awaitable[None]]


class JobLog:
    def __init__(self, store: Store, station_id: str, on_record: OnRecord) -> None:
        self.store = store
        self.station_id = station_id
        self.on_record = on_record

    async def transition(self, udid: str, job: JobRecord, kind: str, **fields: Any) -> JobRecord:
        """Persist one transition of a job this station holds (at the job's fence: refused with LeaseLost once
        another station took it over), then hand it on; returns the job as it is afterwards.

        Every text is redacted first: no credential inside a URL reaches the trail, the API, the plugins or exports."""
        return await self._transition(udid, job, kind, job.fence, fields)

    async def operator_transition(self, udid: str, job: JobRecord, kind: str, **fields: Any) -> JobRecord:
        """A transition an operator asked for (skip a step): allowed unless the job runs at another station."""
        return await self._transition(udid, job, kind, None, fields)

    async def _transition(
        self, udid: str, job: JobRecord, kind: str, fence: int | None, fields: dict[str, Any]
    ) -> JobRecord:
        fields = {name: redact(value) for name, value in fields.items()}
        if fields.get("error_code"):
            fields["data"] = {
                **(fields.get("data") or {}),
                "error_code": fields["error_code"],
                "error_message": fields.get("error_message"),
            }
        made: Transition = await self.store.record_transition(
            udid=udid, job_id=job.id, station_id=self.station_id, kind=kind, fence=fence, **fields
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
            station_id=self.station_id,
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
        """The job to work on when a device attaches, claimed for this station: none once done; a failed job
        resumes, unless its failure needs a fresh start (an erase again, for a DEP assignment that changed).

        Raises Held while another station holds the job, and while the fleet's database cannot be reached."""
        try:
            jobs = await self.store.jobs_for(udid)
            latest = jobs[-1] if jobs else None
            if latest is not None and latest.status == JobStatus.DONE:
                return None
            retry = (
                latest is not None and latest.status == JobStatus.FAILED and latest.error_code not in RESTART_JOB_CODES
            )
            return await self.claim(udid, retry=retry)
        except JobBusy as busy:
            raise HeldElsewhere(
                f"This iPad is being provisioned at station {busy.owner}: unplug it there first. If that station "
                f"stopped, this one takes the iPad over when its hold expires (in {busy.remaining:.0f} s).",
                recheck=min(30.0, busy.remaining + 0.5),
            ) from busy
        except StoreUnavailable as unavailable:
            raise unreachable("starts") from unavailable

    async def claim(self, udid: str, *, retry: bool = False, reason: str = "replugged") -> JobRecord:
        job = await self.store.claim_job(udid, self.station_id, retry=retry, reason=reason)
        await self.on_record(await self.store.get_device(udid), job, [])
        return job

    async def held(self, udid: str, held: Held) -> None:
        """An iPad that waits before this station holds a job for it: its port shows why; nothing is written to
        its records, which belong to whoever holds its job."""
        event = await self.store.add_event(
            "step.held", station_id=self.station_id, udid=udid, data={"error_code": held.code, "message": str(held)}
        )
        device = await self.store.get_device(udid)
        if device is not None:
            shown = dataclasses.replace(device, state=DeviceState.HELD, error_code=held.code, error_message=str(held))
            await self.on_record(shown, None, [event])

    async def work_item(self, serial: str) -> WorkItem | None:
        """What the work list says of this serial, if it is listed."""
        try:
            return await self.store.work_item(serial)
        except StoreUnavailable as unavailable:
            raise unreachable("reads the work list") from unavailable

    async def finish(self, udid: str, job: JobRecord) -> None:
        """The job is done: `device.done`, then the iPad's report row as `device.reported` (reporters read it
        from the trail, like every subscriber)."""
        made = await self.store.record_transition(
            udid=udid,
            job_id=job.id,
            station_id=self.station_id,
            fence=job.fence,
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
        try:
            value = await self.store.allocate_counter(counter)
        except StoreUnavailable as unavailable:
            raise unreachable("takes its number") from unavailable
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


def unreachable(what: str) -> FleetUnreachable:
    """The hold of an iPad whose next step needs the fleet's database while it cannot be reached."""
    return FleetUnreachable(
        f"The fleet database cannot be reached: this iPad waits, and {what} by itself when the database is back "
        "(iPads already in progress carry on).",
        recheck=10.0,
    )
