"""The local journal: a station keeps working while the fleet's database cannot be reached.

Every write of the station goes to the shared store with an idempotency key. When the database cannot be reached,
the write goes instead to a journal (an SQLite file beside the configuration, 0600), and the station goes on with
what it knows: the records it wrote and read last (its own iPads), the job rules (`stationd.store.rules`) applied
to them, and its trail numbered on from the last seq it saw. So iPads already in progress finish. What needs the
fleet (a new iPad's claim, the next number of a name, the work list) raises StoreUnavailable, and the iPad waits
with the port state "fleet database unreachable".

While `listen` runs (the station runs it), the journal is delivered in order as soon as the database answers again,
each entry with its key: an entry delivered twice (the answer to the first delivery was lost) is applied once.
An entry the database refuses (the job was taken over by another station meanwhile) is kept aside in the journal's
`refused` table, with the reason, and logged; it is never dropped silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import structlog

from stationd.files import private_file, private_folder, tighten
from stationd.store import rules
from stationd.store.base import Store, StoreError, StoreUnavailable
from stationd.store.outbox import Assignment, Delivery, Settlement
from stationd.store.records import (
    BlueprintRecord,
    DeviceRecord,
    EventRecord,
    JobRecord,
    StationRecord,
    Transition,
    WorkItem,
)

log = structlog.get_logger("stationd.journal")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, args TEXT NOT NULL,"
    " written_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, op TEXT NOT NULL, args TEXT NOT NULL,"
    " written_at REAL NOT NULL, reason TEXT NOT NULL)",
)
JOURNALED = ("record_transition", "add_event", "upsert_device")


class JournaledStore(Store):
    """A shared store with a local journal for outages; everything else passes through to `inner`."""

    def __init__(self, inner: Store, path: Path, station_id: str) -> None:
        self.inner = inner
        self.path = Path(path)
        self.station_id = station_id
        self.lease = inner.lease
        self.unreachable_since: float | None = None
        self.waiting = 0  # entries in the journal, not yet delivered
        self._db: aiosqlite.Connection | None = None
        self._devices: dict[str, DeviceRecord] = {}
        self._jobs: dict[int, JobRecord] = {}
        self._seq = 0  # the last seq of this station's trail, as far as this station knows
        self._provisional: list[EventRecord] = []  # this station's events written to the journal, not delivered
        self._delivering = anyio.Lock()

    # -- opening --------------------------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._db is not None:
            return
        private_folder(self.path.parent)
        private_file(self.path)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        for statement in ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", *SCHEMA):
            await db.execute(statement)
        for suffix in ("-wal", "-shm"):
            tighten(self.path.with_name(self.path.name + suffix))
        self._db = db
        self.waiting = int((await _scalar(db, "SELECT COUNT(*) FROM entries")) or 0)
        try:
            await self.inner.open()
        except BaseException:
            self._db = None
            await db.close()
            raise
        self._seq = await self.inner.last_seq(self.station_id)
        await self._deliver()

    async def close(self) -> None:
        await self.inner.close()
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def health(self) -> dict[str, Any]:
        if self.unreachable_since is None and not self.waiting:
            return {"reachable": True, "waiting": 0}
        return {"reachable": self.unreachable_since is None, "since": self.unreachable_since, "waiting": self.waiting}

    # -- what the journal takes -----------------------------------------------------------------------------------
    async def record_transition(
        self,
        *,
        udid: str,
        job_id: int,
        station_id: str,
        kind: str,
        state: str,
        step: str | None = None,
        completed_step: str | None = None,
        step_data: dict | None = None,
        attempt_step: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        job_status: str | None = None,
        name: str | None = None,
        data: dict | None = None,
        fence: int | None = None,
        key: str | None = None,
    ) -> Transition:
        fields = _arguments(locals())
        fields["key"] = key or _key()
        made = await self._write("record_transition", fields)
        if made is None:
            made = self._transition_here(fields)
        return self._remember_transition(made)

    async def add_event(
        self,
        kind: str,
        *,
        station_id: str,
        udid: str | None = None,
        step: str | None = None,
        data: dict | None = None,
        job_id: int | None = None,
        key: str | None = None,
    ) -> EventRecord:
        fields = _arguments(locals())
        fields["key"] = key or _key()
        event = await self._write("add_event", fields)
        if event is None:
            event = self._event_here(fields)
        return self._remember_event(event)

    async def upsert_device(
        self,
        udid: str,
        *,
        serial: str | None = None,
        ecid: int | None = None,
        facts: dict | None = None,
        location_id: int | None = None,
        port_label: str | None = None,
        name: str | None = None,
        station_id: str | None = None,
    ) -> DeviceRecord:
        fields = _arguments(locals())
        device = await self._write("upsert_device", fields)
        if device is None:
            device = self._device_here(fields)
        self._devices[udid] = device
        return device

    async def _write(self, op: str, fields: dict[str, Any]) -> Any:
        """Write through to the database, or into the journal (returning None) while it cannot be reached or
        entries wait there: the journal is delivered in order, so nothing overtakes what waits."""
        if self.unreachable_since is None and not self.waiting:
            try:
                return await getattr(self.inner, op)(**fields)
            except StoreUnavailable as error:
                self._unreachable(error)
        self._check_journaled(op, fields)
        await self._append(op, fields)
        return None

    def _check_journaled(self, op: str, fields: dict[str, Any]) -> None:
        """What the station can write without the database: its own trail, the iPads and jobs it knows."""
        if fields.get("station_id") not in (None, self.station_id):
            raise self._unavailable()
        if op == "record_transition":
            job = self._jobs.get(fields["job_id"])
            if job is None or fields["udid"] not in self._devices or job.station_id != self.station_id:
                raise self._unavailable()
        if op == "upsert_device" and fields["udid"] not in self._devices and fields.get("station_id") is None:
            raise self._unavailable()

    async def _append(self, op: str, fields: dict[str, Any]) -> None:
        db = self._require_open()
        await db.execute(
            "INSERT INTO entries (op, args, written_at) VALUES (?, ?, ?)", (op, json.dumps(fields), time.time())
        )
        self.waiting += 1

    # -- the station's own view while the database is away --------------------------------------------------------
    def _transition_here(self, fields: dict[str, Any]) -> Transition:
        rules.check_status(fields.get("job_status"))
        job = self._jobs[fields["job_id"]]
        now = time.time()
        rules.check_write(job, self.station_id, fields.get("fence"), now)
        error_code = fields.get("error_code")
        error_message = fields.get("error_message") if error_code is not None else None
        job = rules.transition(
            job,
            self.station_id,
            now,
            self.lease,
            completed_step=fields.get("completed_step"),
            step_data=fields.get("step_data"),
            attempt_step=fields.get("attempt_step"),
            job_status=fields.get("job_status"),
            error_code=error_code,
            error_message=error_message,
        )
        device = dataclasses.replace(
            self._devices[fields["udid"]],
            state=fields["state"],
            step=fields.get("step") or self._devices[fields["udid"]].step,
            name=fields.get("name") or self._devices[fields["udid"]].name,
            error_code=error_code,
            error_message=error_message,
            updated_at=now,
        )
        self._devices[device.udid] = device
        event_fields: dict[str, Any] = {
            "kind": fields["kind"],
            "station_id": self.station_id,
            "udid": device.udid,
            "step": fields.get("step"),
            "data": fields.get("data"),
            "job_id": job.id,
        }
        return Transition(self._event_here(event_fields), device, job)

    def _event_here(self, fields: dict[str, Any]) -> EventRecord:
        udid = fields.get("udid")
        device = self._devices.get(udid) if udid is not None else None
        self._seq += 1
        event = EventRecord(
            id=0,
            ts=time.time(),
            station_id=self.station_id,
            kind=fields["kind"],
            udid=udid,
            serial=device.serial if device else None,
            location_id=device.location_id if device else None,
            port_label=device.port_label if device else None,
            step=fields.get("step"),
            data=dict(fields.get("data") or {}),
            job_id=fields.get("job_id"),
            seq=self._seq,
        )
        self._provisional.append(event)
        return event

    def _device_here(self, fields: dict[str, Any]) -> DeviceRecord:
        now = time.time()
        known = self._devices.get(fields["udid"])
        if known is None:
            known = DeviceRecord(
                udid=fields["udid"],
                serial=None,
                ecid=None,
                facts={},
                state="new",
                step=None,
                error_code=None,
                error_message=None,
                location_id=None,
                port_label=None,
                name=None,
                first_seen=now,
                updated_at=now,
            )
        given = {name: fields.get(name) for name in ("serial", "ecid", "name", "location_id", "port_label")}
        return dataclasses.replace(
            known,
            **{name: value for name, value in given.items() if value is not None},
            facts={**known.facts, **(fields.get("facts") or {})},
            updated_at=now,
        )

    def _remember_transition(self, made: Transition) -> Transition:
        self._devices[made.device.udid] = made.device
        self._jobs[made.job.id] = made.job
        self._remember_event(made.event)
        return made

    def _remember_event(self, event: EventRecord) -> EventRecord:
        if event.station_id == self.station_id and event.id:
            self._seq = max(self._seq, event.seq)
        return event

    def _remember_job(self, job: JobRecord | None) -> JobRecord | None:
        if job is not None and job.station_id == self.station_id:
            self._jobs[job.id] = job
        return job

    # -- delivery -------------------------------------------------------------------------------------------------
    async def listen(self, on_notice: Callable[[dict[str, Any]], None], *, poll: float) -> None:
        """The shared store's notifications, and the journal's delivery each time it may succeed."""

        def notice(received: dict[str, Any]) -> None:
            wake.set()
            on_notice(received)

        async with anyio.create_task_group() as tasks:
            wake = anyio.Event()
            tasks.start_soon(lambda: self.inner.listen(notice, poll=poll))
            while True:
                with anyio.move_on_after(poll):
                    await wake.wait()
                wake = anyio.Event()
                if self.unreachable_since is not None or self.waiting:
                    if await self._deliver():
                        on_notice({"c": "poll"})

    async def _deliver(self) -> bool:
        """Deliver every waiting entry, oldest first; True when the journal is empty afterwards."""
        db = self._require_open()
        async with self._delivering:
            while True:
                rows = list(await db.execute_fetchall("SELECT * FROM entries ORDER BY id LIMIT 100"))
                if not rows:
                    break
                for row in rows:
                    fields = json.loads(row[2])
                    try:
                        await getattr(self.inner, row[1])(**fields)
                    except StoreUnavailable as error:
                        self._unreachable(error)
                        return False
                    except StoreError as error:
                        log.error("journal.entry_refused", op=row[1], udid=fields.get("udid"), reason=str(error))
                        await db.execute(
                            "INSERT INTO refused (id, op, args, written_at, reason) VALUES (?, ?, ?, ?, ?)",
                            (row[0], row[1], row[2], row[3], str(error)),
                        )
                    await db.execute("DELETE FROM entries WHERE id = ?", (row[0],))
                    self.waiting -= 1
            if self.unreachable_since is not None:
                log.info("store.reachable_again", down_for=round(time.time() - self.unreachable_since, 1))
            self.unreachable_since = None
            self._provisional.clear()
            self._seq = max(self._seq, await self.inner.last_seq(self.station_id))
            return True

    def _unreachable(self, error: StoreUnavailable) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.time()
            log.warning("store.unreachable", error=str(error))

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable("the fleet database cannot be reached; this needs it (the station's journal cannot)")

    def _require_open(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open: use 'async with open_store(...)' or 'await store.open()'")
        return self._db

    async def _read(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if self.unreachable_since is not None:
            raise self._unavailable()
        try:
            return await getattr(self.inner, op)(*args, **kwargs)
        except StoreUnavailable as error:
            self._unreachable(error)
            raise

    # -- reads: from the database, or what the station knows while it is away ------------------------------------
    async def now(self) -> float:
        return await self._read("now") if self.unreachable_since is None else time.time()

    async def _read_or_known(self, known: Any, op: str, *args: Any) -> Any:
        """A read of the station's own records: what it knows while the database is away, also when this very read
        is the first to find it gone (the iPad in progress carries on)."""
        if self.unreachable_since is not None and known:
            return known
        try:
            return await self._read(op, *args)
        except StoreUnavailable:
            if known:
                return known
            raise

    async def get_device(self, udid: str) -> DeviceRecord | None:
        device: DeviceRecord | None = await self._read_or_known(self._devices.get(udid), "get_device", udid)
        if device is not None:
            self._devices[udid] = device
        return device

    async def get_job(self, job_id: int) -> JobRecord | None:
        return self._remember_job(await self._read_or_known(self._jobs.get(job_id), "get_job", job_id))

    async def jobs_for(self, udid: str) -> list[JobRecord]:
        known = sorted((job for job in self._jobs.values() if job.udid == udid), key=lambda job: job.id)
        jobs: list[JobRecord] = await self._read_or_known(known, "jobs_for", udid)
        for job in jobs:
            self._remember_job(job)
        return jobs

    async def last_seq(self, station_id: str) -> int:
        if station_id == self.station_id and (self.unreachable_since is not None or self.waiting):
            return self._seq
        return int(await self._read("last_seq", station_id))

    async def station_events(self, station_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        if station_id == self.station_id and (self.unreachable_since is not None or self.waiting):
            return [event for event in self._provisional if event.seq > after_seq][:limit]
        return list(await self._read("station_events", station_id, after_seq=after_seq, limit=limit))

    async def renew_leases(self, station_id: str, *, lease: float | None = None) -> list[int]:
        if self.unreachable_since is not None:
            return []
        return list(await self._read("renew_leases", station_id, lease=lease))

    async def expire_leases(self, station_id: str, *, limit: int = 100) -> list[JobRecord]:
        if self.unreachable_since is not None:
            return []
        return list(await self._read("expire_leases", station_id, limit=limit))

    # -- what needs the fleet's database: passed through ----------------------------------------------------------
    async def claim_job(
        self, udid: str, station_id: str, *, retry: bool = False, reason: str = "replugged", lease: float | None = None
    ) -> JobRecord:
        job: JobRecord = await self._read("claim_job", udid, station_id, retry=retry, reason=reason, lease=lease)
        self._remember_job(job)
        return job

    async def find_device(
        self, *, udid: str | None = None, serial: str | None = None, ecid: int | None = None
    ) -> DeviceRecord | None:
        return await self._read("find_device", udid=udid, serial=serial, ecid=ecid)

    async def list_devices(self, *, station_id: str | None = None) -> list[DeviceRecord]:
        devices: list[DeviceRecord] = await self._read("list_devices", station_id=station_id)
        if station_id == self.station_id:
            self._devices.update((device.udid, device) for device in devices)
        return devices

    async def forget_device(self, udid: str, *, station_id: str) -> bool:
        self._devices.pop(udid, None)
        return bool(await self._read("forget_device", udid, station_id=station_id))

    async def latest_jobs(self) -> dict[str, JobRecord]:
        return dict(await self._read("latest_jobs"))

    async def unfinished_jobs(self, *, station_id: str | None = None) -> list[JobRecord]:
        return list(await self._read("unfinished_jobs", station_id=station_id))

    async def allocate_counter(self, name: str) -> int:
        return int(await self._read("allocate_counter", name))

    async def mark_interrupted(self, station_id: str) -> list[JobRecord]:
        return list(await self._read("mark_interrupted", station_id))

    async def last_event_id(self) -> int:
        return int(await self._read("last_event_id"))

    async def list_events(self, *, after_id: int = 0, udid: str | None = None, limit: int = 1000) -> list[EventRecord]:
        return list(await self._read("list_events", after_id=after_id, udid=udid, limit=limit))

    async def heartbeat(self, station_id: str, *, fleet: str, info: dict, stopped: bool = False) -> None:
        await self._read("heartbeat", station_id, fleet=fleet, info=info, stopped=stopped)

    async def list_stations(self, *, fleet: str | None = None) -> list[StationRecord]:
        return list(await self._read("list_stations", fleet=fleet))

    async def import_worklist(self, items: list[WorkItem]) -> tuple[int, int]:
        added, updated = await self._read("import_worklist", items)
        return int(added), int(updated)

    async def work_item(self, serial: str) -> WorkItem | None:
        return await self._read("work_item", serial)

    async def list_worklist(self) -> list[WorkItem]:
        return list(await self._read("list_worklist"))

    async def push_blueprint(self, name: str, content: dict, *, station_id: str) -> BlueprintRecord:
        return await self._read("push_blueprint", name, content, station_id=station_id)

    async def get_blueprint(self, name: str, version: int | None = None) -> BlueprintRecord | None:
        return await self._read("get_blueprint", name, version)

    async def list_blueprints(self) -> list[BlueprintRecord]:
        return list(await self._read("list_blueprints"))

    # -- the outbox: passed through; what writes to the trail waits until the journal is delivered ------------------
    async def _trail_write(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """An outbox write that appends to this station's trail: only once the journal is delivered, so the trail's
        seq stays in the order the station wrote it (a reporter waits; the iPads are done already)."""
        if self.waiting:
            raise self._unavailable()
        made, events = await self._read(op, *args, **kwargs)
        for event in events:
            self._remember_event(event)
        return list(made), list(events)

    async def queue_reports(
        self, events: Sequence[EventRecord], reporters: Sequence[str], *, reader: str, read_to: int, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        return await self._trail_write(
            "queue_reports", events, reporters, reader=reader, read_to=read_to, station_id=station_id
        )

    async def settle_deliveries(
        self, settlements: Sequence[Settlement], *, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        return await self._trail_write("settle_deliveries", settlements, station_id=station_id)

    async def requeue_deliveries(
        self, *, station_id: str, reporter: str | None = None, udid: str | None = None
    ) -> tuple[list[Delivery], list[EventRecord]]:
        return await self._trail_write("requeue_deliveries", station_id=station_id, reporter=reporter, udid=udid)

    async def report_cursor(self, reader: str) -> int | None:
        return await self._read("report_cursor", reader)

    async def claim_deliveries(
        self, reporter: str, *, claimer: str, limit: int, lease: float, window: float = 0.0
    ) -> list[Delivery]:
        return list(
            await self._read("claim_deliveries", reporter, claimer=claimer, limit=limit, lease=lease, window=window)
        )

    async def release_deliveries(self, claimer: str) -> int:
        return int(await self._read("release_deliveries", claimer))

    async def note_deliveries(self, keys: Iterable[str], progress: dict[str, Any]) -> None:
        await self._read("note_deliveries", list(keys), progress)

    async def list_deliveries(
        self, *, udid: str | None = None, reporter: str | None = None, status: str | None = None
    ) -> list[Delivery]:
        return list(await self._read("list_deliveries", udid=udid, reporter=reporter, status=status))

    async def next_delivery_at(self, reporter: str, *, window: float = 0.0) -> float | None:
        return await self._read("next_delivery_at", reporter, window=window)

    async def take_budget(self, name: str, *, limit: int, period: float) -> float:
        return float(await self._read("take_budget", name, limit=limit, period=period))

    async def hold_budget(self, name: str, until: float) -> None:
        await self._read("hold_budget", name, until)

    async def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        await self._read("record_assignments", list(assignments))

    async def get_assignments(
        self, serials: Iterable[str] | None = None, *, status: str | None = None
    ) -> dict[str, Assignment]:
        return dict(await self._read("get_assignments", None if serials is None else list(serials), status=status))


def _key() -> str:
    return uuid.uuid4().hex


async def _scalar(db: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await db.execute_fetchall(sql))
    return rows[0][0] if rows else None


def _arguments(given: dict[str, Any]) -> dict[str, Any]:
    """A method's arguments (its `locals()` on entry), without `self`."""
    return {name: value for name, value in given.items() if name != "self"}


def waiting_entries(path: Path) -> int:
    """How many entries wait in the journal at `path` (0 when there is none): for `stationd status`."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        except sqlite3.Error:
            return 0
