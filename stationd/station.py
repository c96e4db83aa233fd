"""The station: watch usbmuxd, give each device a worker in one task group, keep the view, publish the trail.

Flow: usbmuxd event → DeviceWorker (pipeline) → job log → store (device, job, event in one transaction) → the
station's view (ports, devices) → EventBus → subscribers (plugins, API, dashboard). The HTTP API and the plugins
are started beside the station (`stationd.assemble`), as subscribers; the station itself serves nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus

from stationd.config import Config
from stationd.device import SessionOpener
from stationd.errors import RESTART_JOB_CODES, FleetUnreachable, HeldElsewhere, NotOnWorkList, StationError
from stationd.events import Event, EventBus
from stationd.files import private_folder, tighten
from stationd.identity import Identity
from stationd.pipeline.joblog import JobLog
from stationd.pipeline.plan import plan
from stationd.pipeline.timing import Timing
from stationd.pipeline.worker import DeviceWorker, Pipeline
from stationd.redact import redact
from stationd.states import DeviceState, JobStatus
from stationd.store import DeviceRecord, EventRecord, JobRecord, Store, StoreError
from stationd.usbmux import UsbEvent, UsbWatcher, resolve
from stationd.view import PortChange, StationView

if TYPE_CHECKING:
    from stationd.fleet.blueprint import Blueprints
    from stationd.fleet.presence import Presence

log = structlog.get_logger("stationd.station")


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
        blueprints: Blueprints | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.station_id = config.station.id
        self.usbmux = resolve(usbmux_address or config.station.usbmuxd)
        self.pair_records = config.station.pair_records or Path(config.station.database).parent / "pair-records"
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=30.0)
        self.bus = bus or EventBus()
        self.plan = plan(config)
        self.view = StationView()
        self.jobs = JobLog(store, self.station_id, self._recorded)
        self.pipeline = Pipeline(
            plan=self.plan,
            config=config,
            jobs=self.jobs,
            sessions=SessionOpener(self.usbmux, self.pair_records, identity),
            timing=Timing(config.timeouts, backoff),
            http=self.http,
            limiter=anyio.CapacityLimiter(config.station.concurrency),
            settings=blueprints,
        )
        self.blueprints = blueprints
        self.workers: dict[str, DeviceWorker] = {}
        self.started_at = time.time()
        self._published = 0  # seq of the last event of this station's trail published on the bus
        self._publishing = anyio.Lock()
        self._unpublished = anyio.Event()  # the store says this station's trail grew (another process wrote it)
        self._tasks: TaskGroup | None = None
        self.notice_listeners: list[Callable[[dict[str, Any]], None]] = []  # the fleet's parts, told what changed
        self.presence: Presence | None = None  # this station among its fleet (stationd.assemble sets it)

    # -- running --------------------------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; a cancelled station parks every device cleanly (their jobs resume later)."""
        private_folder(self.pair_records)
        for record in self.pair_records.iterdir():
            tighten(record)
        self.started_at = time.time()
        self._published = self.bus.last_seq = await self.store.last_seq(self.station_id)
        if self.blueprints is not None:
            await self.blueprints.refresh()
            _, self.plan = self.blueprints.newest()
        for job in await self.store.mark_interrupted(self.station_id):
            log.info("job.interrupted_by_restart", udid=job.udid, job=job.id)
        devices = await self.store.list_devices(station_id=self.station_id)
        latest = await self.store.latest_jobs()
        self.view.load(devices, {device.udid: latest[device.udid] for device in devices if device.udid in latest})
        await self.event("station.started", data={"plan": self.plan, "concurrency": self.config.station.concurrency})
        watcher = UsbWatcher(str(self.usbmux))
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._keep_leases)
                tasks.start_soon(self._follow_trail)
                tasks.start_soon(partial(self.store.listen, self._on_notice, poll=self.config.store.poll))
                task_status.started()
                async with contextlib.aclosing(watcher.events()) as events:
                    async for usb in events:
                        self._on_usb(usb, tasks)
        finally:
            with anyio.CancelScope(shield=True):
                await self.event("station.stopping")
                if self._own_http:
                    await self.http.aclose()

    # -- the fleet's shared store: leases, wake-ups ---------------------------------------------------------------
    async def _keep_leases(self) -> None:
        """Renew this station's hold on its running jobs well before it lapses, and turn the jobs of stations that
        let theirs lapse (they stopped without a word) into interrupted ones, so they show as waiting."""
        while True:
            await anyio.sleep(self.store.lease / 3)
            try:
                await self.store.renew_leases(self.station_id)
                if await self.store.expire_leases(self.station_id):
                    await self.publish()
            except StoreError as error:
                log.warning("store.lease_renewal_failed", error=str(error))

    async def _follow_trail(self) -> None:
        while True:
            await self._unpublished.wait()
            self._unpublished = anyio.Event()
            try:
                await self.publish()
            except StoreError as error:
                log.warning("store.trail_unreadable", error=str(error))

    def _on_notice(self, notice: dict[str, Any]) -> None:
        """What the store says changed: this station's trail grew, the work list changed (held iPads look again),
        another station let an iPad go (the iPad held here, waiting for it, looks again)."""
        kind = notice.get("c")
        if kind == "poll" or (kind == "event" and notice.get("station") == self.station_id):
            self._unpublished.set()
        if kind == "worklist":
            waiting = [worker for worker in self.workers.values() if worker.held]
        elif kind == "poll":
            waiting = [worker for worker in self.workers.values() if worker.held in FLEET_HOLDS]
        elif kind == "event" and notice.get("kind") in RELEASING_EVENTS:
            waiting = [w for w in [self.workers.get(str(notice.get("udid")))] if w is not None and w.held]
        else:
            waiting = []
        for worker in waiting:
            worker.nudge()
        if self.blueprints is not None and self._tasks is not None and kind in ("poll", "blueprint"):
            if kind == "poll" or notice.get("name") == self.blueprints.name:
                self._tasks.start_soon(self._take_blueprint)
        for listener in self.notice_listeners:
            listener(notice)

    async def _take_blueprint(self) -> None:
        """The newest version of the fleet's blueprint, for the next iPads (those in progress keep theirs)."""
        assert self.blueprints is not None
        try:
            taken = await self.blueprints.refresh()
        except (StoreError, StationError) as error:
            log.warning("blueprint.unreadable", error=str(error))
            return
        if taken:
            _, self.plan = self.blueprints.newest()
            await self.event("blueprint.taken", data=self.blueprints.recorded())

    def _on_usb(self, usb: UsbEvent, tasks: TaskGroup) -> None:
        if usb.kind in ("connected", "disconnected"):
            log.info("usbmuxd." + usb.kind)
            return
        if usb.udid is None:
            return
        if usb.kind == "attached":
            worker = self.workers.get(usb.udid)
            if worker is None:
                worker = self.workers[usb.udid] = DeviceWorker(self.pipeline, usb.udid)
                tasks.start_soon(worker.run, name=f"device {usb.udid}")
            label = self.config.ports.label(usb.location_id)
            worker.on_attached(usb.location_id, label, usb.device_id)
            tasks.start_soon(self._attached, usb.udid, usb.location_id, label)
        elif usb.kind == "detached" and usb.udid in self.workers:
            self.workers[usb.udid].on_detached()
            tasks.start_soon(self._detached, usb.udid)

    async def _attached(self, udid: str, location_id: int | None, label: str | None) -> None:
        device = await self.store.upsert_device(
            udid, location_id=location_id, port_label=label, station_id=self.station_id
        )
        worker = self.workers.get(udid)
        if worker is not None:
            worker.known.set()
        event = await self.store.add_event(
            "device.attached", station_id=self.station_id, udid=udid, data={"location_id": location_id}
        )
        self.view.record(device)
        await self._announce(self.view.plugged(udid, True), [event])

    async def _detached(self, udid: str) -> None:
        event = await self.store.add_event("device.detached", station_id=self.station_id, udid=udid)
        await self._announce(self.view.plugged(udid, False), [event])

    # -- what the job log recorded: the view, port events, the bus ------------------------------------------------
    async def _recorded(self, device: DeviceRecord | None, job: JobRecord | None, events: list[EventRecord]) -> None:
        await self._announce(self.view.record(device, job), events)

    async def _announce(self, change: PortChange | None, events: list[EventRecord]) -> None:
        """Publish what was recorded, then the port change it made and, when a cart is finished, batch.done. What
        was recorded goes out first: it is committed, and waiting for the port's own write would only delay it."""
        await self.publish(events)
        if change is None:
            return
        following = [
            await self.store.add_event(
                "port.changed",
                station_id=self.station_id,
                udid=change.udid,
                data={"status": change.status, "previous": change.previous},
            )
        ]
        batch = self.view.batch_finished()
        if batch is not None:
            following.append(await self.store.add_event("batch.done", station_id=self.station_id, data=batch))
        await self.publish(following)

    # -- operator actions -----------------------------------------------------------------------------------------
    async def retry(self, udid: str) -> bool:
        """Run a failed device again from where it stopped, or provision a done one again (a new job)."""
        latest = await self.jobs.latest(udid)
        if latest is None:
            return False
        if latest.status in (JobStatus.DONE, JobStatus.FAILED):
            retry = latest.status == JobStatus.FAILED and latest.error_code not in RESTART_JOB_CODES
            await self.jobs.claim(udid, retry=retry, reason="operator")
        self._nudge(udid)
        return True

    async def skip(self, udid: str, step: str) -> bool:
        """Count a step as done (the operator did it by hand, or it does not apply) and go on."""
        if step not in self.plan:
            raise ValueError(f"unknown step {step!r}; the steps are {', '.join(self.plan)}")
        latest = await self.jobs.latest(udid)
        if latest is None or latest.status == JobStatus.DONE:
            return False
        status = JobStatus.RUNNING if latest.status == JobStatus.FAILED else None
        await self.jobs.operator_transition(
            udid,
            latest,
            "operator.skip",
            state=DeviceState.WAITING,
            completed_step=step,
            job_status=status,
            data={"step": step},
        )
        self._nudge(udid)
        return True

    async def forget(self, udid: str) -> bool:
        """Drop everything known about a device (its events stay in the audit trail)."""
        worker = self.workers.pop(udid, None)
        if worker is not None:
            worker.life.cancel()
        self.view.forget(udid)
        forgotten = await self.store.forget_device(udid, station_id=self.station_id)
        await self.publish()
        return forgotten

    def attached(self, udid: str) -> bool:
        worker = self.workers.get(udid)
        return worker is not None and worker.attached.is_set()

    def _nudge(self, udid: str) -> None:
        worker = self.workers.get(udid)
        if worker is not None:
            worker.nudge()

    # -- the trail ------------------------------------------------------------------------------------------------
    async def event(self, kind: str, *, udid: str | None = None, data: dict[str, Any] | None = None) -> None:
        await self.publish([await self.store.add_event(kind, station_id=self.station_id, udid=udid, data=redact(data))])

    async def publish(self, written: list[EventRecord] | None = None) -> None:
        """Publish, in order and once each, every event of this station's trail since the last call.

        The bus is fed from the store's trail, so what subscribers see is exactly the audit trail, including
        the events the store writes itself (job.started, job.interrupted, device.forgotten) and those another
        process wrote for this station. When the events just `written` follow the last one published without a
        gap (by seq), they are published as they are; otherwise the trail is read from the store."""
        async with self._publishing:
            fresh = sorted(
                (r for r in written or [] if r.station_id == self.station_id and r.seq > self._published),
                key=lambda r: r.seq,
            )
            expected = list(range(self._published + 1, self._published + 1 + len(fresh)))
            if not fresh or [r.seq for r in fresh] != expected:
                fresh = await self._unpublished_events()
            for record in fresh:
                self.bus.publish(Event.from_record(record))
                self._published = record.seq

    async def _unpublished_events(self) -> list[EventRecord]:
        found: list[EventRecord] = []
        while True:
            page = await self.store.station_events(
                self.station_id, after_seq=found[-1].seq if found else self._published
            )
            found += page
            if len(page) < TRAIL_PAGE:
                return found


TRAIL_PAGE = 1000  # the store's default page of station_events
FLEET_HOLDS = frozenset({NotOnWorkList.code, HeldElsewhere.code, FleetUnreachable.code})  # looked at on every poll
RELEASING_EVENTS = frozenset({"job.interrupted", "job.expired", "step.interrupted", "device.done", "step.failed"})


@contextlib.asynccontextmanager
async def running(station: Station) -> AsyncIterator[Station]:
    """Run a station in the background of a block (tests, demo); leaving the block stops it."""
    async with anyio.create_task_group() as tasks:
        await tasks.start(station.run)
        try:
            yield station
        finally:
            tasks.cancel_scope.cancel()
