"""The station daemon: watch usbmuxd, give each device a worker in one task group, persist every transition.

Flow: usbmuxd event → DeviceWorker (pipeline) → store (transition + audit event) → EventBus → subscribers.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from stationd.api import serve as serve_api
from stationd.config import Config
from stationd.device import DeviceSession
from stationd.errors import RESTART_JOB_CODES
from stationd.events import Event, EventBus
from stationd.files import private_folder, tighten
from stationd.identity import Identity
from stationd.pipeline.plan import plan
from stationd.pipeline.worker import DeviceWorker
from stationd.plugins import PluginHost
from stationd.redact import redact
from stationd.report import device_row
from stationd.store import JobRecord, Store
from stationd.usbmux import UsbEvent, UsbWatcher, resolve

log = structlog.get_logger("stationd.station")
STEP_TIMEOUT_FIELDS = {"profiles": "wifi", "name": "report"}


class Station:
    def __init__(
        self,
        config: Config,
        store: Store,
        identity: Identity | None,
        *,
        usbmux_address: str | None = None,
        http: httpx.AsyncClient | None = None,
        bus: EventBus | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
        plugins: PluginHost | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.station_id = config.station.id
        self.usbmux = resolve(usbmux_address or config.station.usbmuxd)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=30.0)
        self.bus = bus or EventBus()
        self.backoff = backoff
        self.plugins = plugins
        self.plan = plan(config)
        self.limiter = anyio.CapacityLimiter(config.station.concurrency)
        self.workers: dict[str, DeviceWorker] = {}
        self.running_step: dict[str, str] = {}
        self.ports: dict[str, tuple[str, str]] = {}  # port label -> (udid, status)
        self.dashboard_url: str | None = None
        self.started_at = time.time()
        self._published = 0  # id of the last event published on the bus
        self._publishing = anyio.Lock()
        self._batch_announced = True
        self.pair_records = config.station.pair_records or Path(config.station.database).parent / "pair-records"
        self._tasks: anyio.abc.TaskGroup | None = None

    # -- running --------------------------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; a cancelled station parks every device cleanly (their jobs resume later)."""
        private_folder(self.pair_records)
        for record in self.pair_records.iterdir():
            tighten(record)
        self.started_at = time.time()
        self._published = self.bus.last_id = await self.store.last_event_id()
        for job in await self.store.mark_interrupted(self.station_id):
            log.info("job.interrupted_by_restart", udid=job.udid, job=job.id)
        await self.event("station.started", data={"plan": self.plan, "concurrency": self.config.station.concurrency})
        watcher = UsbWatcher(str(self.usbmux))
        async with serve_api(self) as url:
            self.dashboard_url = url and url + "/"
            try:
                async with anyio.create_task_group() as tasks:
                    self._tasks = tasks
                    task_status.started()
                    async with contextlib.aclosing(watcher.events()) as events:
                        async for usb in events:
                            self._on_usb(usb)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.event("station.stopping")
                    if self._own_http:
                        await self.http.aclose()

    def _on_usb(self, usb: UsbEvent) -> None:
        if usb.kind in ("connected", "disconnected"):
            log.info("usbmuxd." + usb.kind)
            return
        if usb.udid is None:
            return
        if usb.kind == "attached":
            worker = self.workers.get(usb.udid)
            if worker is None:
                worker = self.workers[usb.udid] = DeviceWorker(self, usb.udid)
                assert self._tasks is not None
                self._tasks.start_soon(worker.run, name=f"device {usb.udid}")
            label = self.config.ports.label(usb.location_id)
            worker.on_attached(usb.location_id, label, usb.device_id)
            self._tasks.start_soon(self._attached_event, usb.udid, usb.location_id, label)  # type: ignore[union-attr]
        elif usb.kind == "detached" and usb.udid in self.workers:
            self.workers[usb.udid].on_detached()
            self._tasks.start_soon(self._detached_event, usb.udid)  # type: ignore[union-attr]

    async def _attached_event(self, udid: str, location_id: int | None, label: str | None) -> None:
        await self.store.upsert_device(udid, location_id=location_id, port_label=label)
        await self.event("device.attached", udid=udid, data={"location_id": location_id})
        await self._port_update(udid)

    async def _detached_event(self, udid: str) -> None:
        await self.event("device.detached", udid=udid)
        await self._port_update(udid)

    # -- ports and batches ----------------------------------------------------------------------------------------
    def port_status(self, udid: str, state: str | None) -> str:
        """What a port shows: busy, waiting (for the iPad to come back: rebooting, or unplugged mid-job), done,
        failed, or empty once a finished iPad is taken away."""
        worker = self.workers.get(udid)
        attached = worker is not None and worker.attached.is_set()
        if state in ("done", "failed"):
            return state if attached else "empty"
        if state in (None, "new"):
            return "busy" if attached else "empty"
        return "busy" if attached and state != "waiting" else "waiting"

    async def _port_update(self, udid: str) -> None:
        device = await self.store.get_device(udid)
        if device is None or device.port_label is None:
            return
        status = self.port_status(udid, device.state)
        previous = self.ports.get(device.port_label)
        if previous == (udid, status):
            return
        for label, (owner, _) in list(self.ports.items()):
            if owner == udid and label != device.port_label:
                del self.ports[label]
        self.ports[device.port_label] = (udid, status)
        if status in ("busy", "waiting"):
            self._batch_announced = False
        await self.event(
            "port.changed", udid=udid, data={"status": status, "previous": previous[1] if previous else "empty"}
        )
        if status in ("done", "failed"):
            await self._batch_update()

    async def _batch_update(self) -> None:
        """A cart is finished when no port is busy or waiting: say so once per batch."""
        statuses = [status for _, status in self.ports.values()]
        if any(status in ("busy", "waiting") for status in statuses):
            self._batch_announced = False
            return
        if self._batch_announced:
            return
        self._batch_announced = True
        done, failed = statuses.count("done"), statuses.count("failed")
        await self.event("batch.done", data={"done": done, "failed": failed})

    async def report(self, udid: str) -> None:
        """Hand a finished device's row to the reporter plugins."""
        if self.plugins is None:
            return
        row = await device_row(self.store, udid)
        if row is not None:
            self.plugins.report(row)

    # -- operator actions -----------------------------------------------------------------------------------------
    async def retry(self, udid: str) -> bool:
        """Run a failed device again from where it stopped, or provision a done one again (a new job)."""
        jobs = await self.store.jobs_for(udid)
        if not jobs:
            return False
        latest = jobs[-1]
        if latest.status == "failed" and latest.error_code not in RESTART_JOB_CODES:
            await self.transition(
                udid, latest, "job.retried", state="waiting", job_status="running", data={"reason": "operator"}
            )
        elif latest.status in ("done", "failed"):
            await self.store.open_job(udid, self.station_id)
            await self.publish()
        self._nudge(udid)
        return True

    async def skip(self, udid: str, step: str) -> bool:
        """Count a step as done (the operator did it by hand, or it does not apply) and go on."""
        if step not in self.plan:
            raise ValueError(f"unknown step {step!r}; the steps are {', '.join(self.plan)}")
        jobs = await self.store.jobs_for(udid)
        if not jobs:
            return False
        latest = jobs[-1]
        if latest.status == "done":
            return False
        status = "running" if latest.status == "failed" else None
        await self.transition(
            udid, latest, "operator.skip", state="waiting", completed_step=step, job_status=status, data={"step": step}
        )
        self._nudge(udid)
        return True

    async def forget(self, udid: str) -> bool:
        """Drop everything known about a device (its events stay in the audit trail)."""
        worker = self.workers.pop(udid, None)
        if worker is not None:
            worker.life.cancel()
        for label, (owner, _) in list(self.ports.items()):
            if owner == udid:
                del self.ports[label]
        forgotten = await self.store.forget_device(udid, station_id=self.station_id)
        await self.publish()
        return forgotten

    def _nudge(self, udid: str) -> None:
        worker = self.workers.get(udid)
        if worker is not None:
            worker.nudge()

    # -- helpers the workers use ----------------------------------------------------------------------------------
    def open_session(self, udid: str, device_id: int | None = None) -> DeviceSession:
        return DeviceSession(
            udid, usbmux_address=self.usbmux, pair_records=self.pair_records, identity=self.identity, device_id=device_id
        )

    def step_timeout(self, step: str) -> float:
        return float(getattr(self.config.timeouts, STEP_TIMEOUT_FIELDS.get(step, step)))

    def backoff_delay(self, tries: int) -> float:
        base, cap = self.backoff
        return min(cap, base * 2 ** (tries - 1)) * (0.75 + random.random() / 2)

    async def job_for(self, udid: str) -> JobRecord | None:
        """The job to work on when a device attaches: none once done; a failed job is retried on replug."""
        jobs = await self.store.jobs_for(udid)
        latest = jobs[-1] if jobs else None
        if latest is not None and latest.status == "done":
            return None
        if latest is not None and latest.status == "failed" and latest.error_code not in RESTART_JOB_CODES:
            return await self.transition(
                udid, latest, "job.retried", state="waiting", job_status="running", data={"reason": "replugged"}
            )
        job = await self.store.open_job(udid, self.station_id)
        await self.publish()
        return job

    async def current(self, job: JobRecord) -> JobRecord:
        return await self.store.get_job(job.id) or job

    async def transition(self, udid: str, job: JobRecord, kind: str, **fields: Any) -> JobRecord:
        """Persist one transition (device, job, event in one transaction), then publish its event.

        Every text is redacted first: no credential inside a URL reaches the trail, the API, the plugins or exports."""
        fields = {name: redact(value) for name, value in fields.items()}
        if fields.get("error_code"):
            fields["data"] = {
                **(fields.get("data") or {}),
                "error_code": fields["error_code"],
                "error_message": fields.get("error_message"),
            }
        await self.store.record_transition(udid=udid, job_id=job.id, station_id=self.station_id, kind=kind, **fields)
        await self.publish()
        if "state" in fields:
            await self._port_update(udid)
        return await self.current(job)

    async def interrupted(self, udid: str, job: JobRecord, reason: str) -> None:
        if job.status != "running":
            return
        step = self.running_step.get(udid)
        await self.transition(
            udid, job, "step.interrupted", state="interrupted", step=step, job_status="interrupted",
            data={"reason": reason},
        )

    async def event(self, kind: str, *, udid: str | None = None, data: dict[str, Any] | None = None) -> None:
        await self.store.add_event(kind, station_id=self.station_id, udid=udid, data=redact(data))
        await self.publish()

    async def publish(self) -> None:
        """Publish, in order and once each, every event the store has recorded since the last call.

        The bus is fed from the store's trail, so what subscribers see is exactly the audit trail, including
        the events the store writes itself (job.started, job.interrupted, device.forgotten)."""
        async with self._publishing:
            for record in await self.store.list_events(after_id=self._published):
                self.bus.publish(Event.from_record(record))
                self._published = record.id


@contextlib.asynccontextmanager
async def running(station: Station) -> AsyncIterator[Station]:
    """Run a station in the background of a block (tests, demo); leaving the block stops it."""
    async with anyio.create_task_group() as tasks:
        await tasks.start(station.run)
        try:
            yield station
        finally:
            tasks.cancel_scope.cancel()
