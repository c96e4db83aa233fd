"""SQLite store on aiosqlite: one connection, one lock, one transaction per call."""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from stationd.files import private_file, private_folder, tighten
from stationd.store import rules
from stationd.store.base import Store, StoreError
from stationd.store.records import (
    INTERRUPTED,
    RUNNING,
    UNFINISHED_STATUSES,
    BlueprintRecord,
    DeviceRecord,
    EventRecord,
    JobRecord,
    StationRecord,
    Transition,
    WorkItem,
)
from stationd.store.sqlite_outbox import MIGRATION as OUTBOX_MIGRATION
from stationd.store.sqlite_outbox import SQLiteOutbox

T = TypeVar("T")
Body = Callable[[aiosqlite.Connection], Awaitable[T]]

BUSY_TIMEOUT_MS = 5000
SIDE_FILES = ("-wal", "-shm", "-journal")

# MIGRATIONS[n] holds the statements that bring the schema from version n to n + 1.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE devices (
            udid TEXT PRIMARY KEY,
            serial TEXT,
            ecid INTEGER,
            facts TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL,
            step TEXT,
            error_code TEXT,
            error_message TEXT,
            location_id INTEGER,
            port_label TEXT,
            name TEXT,
            first_seen REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
        "CREATE INDEX devices_serial ON devices (serial)",
        "CREATE INDEX devices_ecid ON devices (ecid)",
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            udid TEXT NOT NULL REFERENCES devices (udid),
            station_id TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
            completed_steps TEXT NOT NULL DEFAULT '[]',
            step_data TEXT NOT NULL DEFAULT '{}',
            attempts TEXT NOT NULL DEFAULT '{}',
            started_at REAL NOT NULL,
            finished_at REAL,
            error_code TEXT,
            error_message TEXT
        )
        """,
        "CREATE INDEX jobs_udid ON jobs (udid)",
        """
        CREATE UNIQUE INDEX jobs_one_unfinished_per_device ON jobs (udid)
        WHERE status IN ('running', 'interrupted')
        """,
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            station_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            udid TEXT,
            serial TEXT,
            location_id INTEGER,
            port_label TEXT,
            step TEXT,
            job_id INTEGER,
            data TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX events_udid ON events (udid, id)",
    ),
    ("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",),
    OUTBOX_MIGRATION,
    (
        # The port is station-local: kept per station, the device row points at where it was placed last.
        """
        CREATE TABLE placements (
            udid TEXT NOT NULL REFERENCES devices (udid),
            station_id TEXT NOT NULL,
            location_id INTEGER,
            port_label TEXT,
            placed_at REAL NOT NULL,
            PRIMARY KEY (udid, station_id)
        )
        """,
        "ALTER TABLE devices ADD COLUMN station_id TEXT",
        """
        UPDATE devices SET station_id = COALESCE(
            (SELECT station_id FROM jobs WHERE jobs.udid = devices.udid ORDER BY id DESC LIMIT 1), '')
        WHERE location_id IS NOT NULL OR port_label IS NOT NULL
        """,
        """
        INSERT INTO placements (udid, station_id, location_id, port_label, placed_at)
        SELECT udid, station_id, location_id, port_label, updated_at FROM devices WHERE station_id IS NOT NULL
        """,
        "ALTER TABLE devices DROP COLUMN location_id",
        "ALTER TABLE devices DROP COLUMN port_label",
        # Leases and fences: who holds a running job, until when.
        "ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN lease_until REAL",
        # Each station's trail, numbered without gaps; a key makes a delivery idempotent.
        "ALTER TABLE events ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE events ADD COLUMN key TEXT",
        """
        WITH numbered AS (SELECT id, ROW_NUMBER() OVER (PARTITION BY station_id ORDER BY id) AS n FROM events)
        UPDATE events SET seq = numbered.n FROM numbered WHERE numbered.id = events.id
        """,
        "CREATE UNIQUE INDEX events_station_seq ON events (station_id, seq)",
        "CREATE UNIQUE INDEX events_key ON events (key) WHERE key IS NOT NULL",
        """
        CREATE TABLE stations (
            id TEXT PRIMARY KEY,
            fleet TEXT NOT NULL DEFAULT '',
            seq INTEGER NOT NULL DEFAULT 0,
            info TEXT NOT NULL DEFAULT '{}',
            last_seen REAL,
            stopped INTEGER NOT NULL DEFAULT 0
        )
        """,
        "INSERT INTO stations (id, seq) SELECT station_id, MAX(seq) FROM events GROUP BY station_id",
        """
        CREATE TABLE worklist (
            serial TEXT PRIMARY KEY,
            name TEXT,
            grp TEXT,
            notes TEXT,
            listed_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE blueprints (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at REAL NOT NULL,
            station_id TEXT NOT NULL,
            content TEXT NOT NULL,
            PRIMARY KEY (name, version)
        )
        """,
        # The courier follows its own station's trail by seq, no longer by the global id: its place, converted.
        """
        UPDATE trail_readers SET event_id = COALESCE(
            (SELECT MAX(e.seq) FROM events e
             WHERE e.id <= trail_readers.event_id AND 'courier:' || e.station_id = trail_readers.name), 0)
        """,
    ),
]


class SQLiteStore(SQLiteOutbox, Store):
    """Store in one SQLite file (WAL), safe for many device tasks sharing one instance."""

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.time, lease: float = rules.DEFAULT_LEASE
    ) -> None:
        self.path = Path(path)
        self.lease = lease
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._lock = anyio.Lock()

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            _private_database(self.path)
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(explain(self.path, exc)) from exc
        db.row_factory = sqlite3.Row
        self._db = db
        self._lock = anyio.Lock()
        try:
            for pragma in (
                "journal_mode = WAL",
                "synchronous = NORMAL",
                "foreign_keys = ON",
                f"busy_timeout = {BUSY_TIMEOUT_MS}",
            ):
                await db.execute(f"PRAGMA {pragma}")
            await self._check_integrity(db)
            while await self._atomic(self._migrate_one_step):
                pass
            _private_database(self.path)
        except BaseException as exc:
            self._db = None
            await db.close()
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise StoreError(explain(self.path, exc)) from exc
            raise

    async def _check_integrity(self, db: aiosqlite.Connection) -> None:
        """PRAGMA quick_check before anything is written: a damaged file is reported, and left as it is."""
        rows = await db.execute_fetchall("PRAGMA quick_check(5)")
        found = [str(row[0]) for row in rows]
        if found != ["ok"]:
            raise StoreError(_damaged(self.path, "; ".join(found)[:300]))

    async def close(self) -> None:
        if self._db is None:
            return
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def now(self) -> float:
        return self._clock()

    # -- devices --------------------------------------------------------------------------------------------------
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
        placed = location_id is not None or port_label is not None
        if placed and station_id is None:
            raise ValueError("a port is kept per station: give station_id with location_id or port_label")
        given = {"serial": serial, "ecid": ecid, "name": name}

        async def body(db: aiosqlite.Connection) -> DeviceRecord:
            now = self._clock()
            device = await _device(db, udid)
            if device is None:
                await db.execute(
                    "INSERT INTO devices (udid, serial, ecid, facts, state, name, first_seen, updated_at)"
                    " VALUES (?, ?, ?, ?, 'new', ?, ?, ?)",
                    (udid, serial, ecid, _dumps(facts or {}), name, now, now),
                )
            else:
                columns: dict[str, Any] = {column: value for column, value in given.items() if value is not None}
                if facts:
                    columns["facts"] = _dumps({**device.facts, **facts})
                columns["updated_at"] = now
                assignments = ", ".join(f"{column} = ?" for column in columns)
                await db.execute(f"UPDATE devices SET {assignments} WHERE udid = ?", (*columns.values(), udid))
            if placed:
                await db.execute(
                    "INSERT INTO placements (udid, station_id, location_id, port_label, placed_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (udid, station_id) DO UPDATE SET"
                    " location_id = COALESCE(excluded.location_id, location_id),"
                    " port_label = COALESCE(excluded.port_label, port_label), placed_at = excluded.placed_at",
                    (udid, station_id, location_id, port_label, now),
                )
                await db.execute("UPDATE devices SET station_id = ? WHERE udid = ?", (station_id, udid))
            return await _require_device(db, udid)

        return await self._atomic(body)

    async def get_device(self, udid: str) -> DeviceRecord | None:
        return await self._atomic(lambda db: _device(db, udid), write=False)

    async def find_device(
        self, *, udid: str | None = None, serial: str | None = None, ecid: int | None = None
    ) -> DeviceRecord | None:
        identities = [(c, v) for c, v in (("udid", udid), ("serial", serial), ("ecid", ecid)) if v is not None]
        if not identities:
            raise ValueError("find_device needs a udid, a serial or an ecid")

        async def body(db: aiosqlite.Connection) -> DeviceRecord | None:
            for column, value in identities:
                row = await _one(db, f"{DEVICES} WHERE d.{column} = ? ORDER BY d.updated_at DESC LIMIT 1", (value,))
                if row is not None:
                    return _device_record(row)
            return None

        return await self._atomic(body, write=False)

    async def list_devices(self, *, station_id: str | None = None) -> list[DeviceRecord]:
        where, params = "", tuple[str, ...]()
        if station_id is not None:
            where = (
                " WHERE EXISTS (SELECT 1 FROM placements q WHERE q.udid = d.udid AND q.station_id = ?)"
                " OR EXISTS (SELECT 1 FROM jobs j WHERE j.udid = d.udid AND j.station_id = ?)"
            )
            params = (station_id, station_id)

        async def body(db: aiosqlite.Connection) -> list[DeviceRecord]:
            rows = await db.execute_fetchall(f"{DEVICES}{where} ORDER BY d.first_seen, d.udid", params)
            return [_device_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def forget_device(self, udid: str, *, station_id: str) -> bool:
        async def body(db: aiosqlite.Connection) -> bool:
            device = await _device(db, udid)
            if device is None:
                return False
            jobs = await _only(db, "SELECT COUNT(*) AS n FROM jobs WHERE udid = ?", (udid,))
            await self._insert_event(
                db,
                "device.forgotten",
                station_id=station_id,
                udid=udid,
                step=device.step,
                data={"name": device.name, "ecid": device.ecid, "state": device.state, "jobs": jobs["n"]},
            )
            for table in ("jobs", "placements", "devices"):
                await db.execute(f"DELETE FROM {table} WHERE udid = ?", (udid,))
            return True

        return await self._atomic(body)

    # -- jobs -----------------------------------------------------------------------------------------------------
    async def claim_job(
        self, udid: str, station_id: str, *, retry: bool = False, reason: str = "replugged", lease: float | None = None
    ) -> JobRecord:
        async def body(db: aiosqlite.Connection) -> JobRecord:
            await _require_device(db, udid)
            jobs = await _jobs(db, "WHERE udid = ?", (udid,))
            made = rules.claim(
                jobs,
                udid,
                station_id,
                self._clock(),
                self.lease if lease is None else lease,
                retry=retry,
                reason=reason,
            )
            job = made.job
            if made.new:
                cursor = await db.execute(
                    "INSERT INTO jobs (udid, station_id, status, started_at, fence, lease_until)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (udid, station_id, job.status, job.started_at, job.fence, job.lease_until),
                )
                job.id = int(cursor.lastrowid or 0)
            else:
                await _write_job(db, job)
            if made.kind is not None:
                await self._insert_event(
                    db, made.kind, station_id=station_id, udid=udid, job_id=job.id, data=made.data or None
                )
            return job

        return await self._atomic(body)

    async def renew_leases(self, station_id: str, *, lease: float | None = None) -> list[int]:
        until = self._clock() + (self.lease if lease is None else lease)

        async def body(db: aiosqlite.Connection) -> list[int]:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET lease_until = ? WHERE station_id = ? AND status = ? RETURNING id",
                (until, station_id, RUNNING),
            )
            return sorted(int(row["id"]) for row in rows)

        return await self._atomic(body)

    async def expire_leases(self, station_id: str, *, limit: int = 100) -> list[JobRecord]:
        async def body(db: aiosqlite.Connection) -> list[JobRecord]:
            now = self._clock()
            expired = []
            for job in await _jobs(db, "WHERE status = ? AND lease_until < ?", (RUNNING, now), limit):
                job = rules.interrupt(job)
                await _write_job(db, job)
                await db.execute(
                    "UPDATE devices SET state = ?, updated_at = ? WHERE udid = ?", (INTERRUPTED, now, job.udid)
                )
                await self._insert_event(
                    db,
                    "job.expired",
                    station_id=station_id,
                    udid=job.udid,
                    job_id=job.id,
                    data={"previous_station_id": job.station_id},
                )
                expired.append(job)
            return expired

        return await self._atomic(body)

    async def get_job(self, job_id: int) -> JobRecord | None:
        return await self._atomic(lambda db: _job(db, job_id), write=False)

    async def jobs_for(self, udid: str) -> list[JobRecord]:
        return await self._atomic(lambda db: _jobs(db, "WHERE udid = ?", (udid,)), write=False)

    async def latest_jobs(self) -> dict[str, JobRecord]:
        where = "WHERE id IN (SELECT MAX(id) FROM jobs GROUP BY udid)"
        jobs = await self._atomic(lambda db: _jobs(db, where, ()), write=False)
        return {job.udid: job for job in jobs}

    async def unfinished_jobs(self, *, station_id: str | None = None) -> list[JobRecord]:
        where, params = "WHERE status IN (?, ?)", list[Any](UNFINISHED_STATUSES)
        if station_id is not None:
            where += " AND station_id = ?"
            params.append(station_id)
        return await self._atomic(lambda db: _jobs(db, where, params), write=False)

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
        rules.check_status(job_status)
        if error_code is None:
            error_message = None

        async def body(db: aiosqlite.Connection) -> Transition:
            now = self._clock()
            await _require_device(db, udid)
            job = await _require_job(db, job_id)
            if job.udid != udid:
                raise StoreError(f"job {job_id} belongs to device {job.udid}, not {udid}")
            if key is not None:
                done = await _one(db, "SELECT * FROM events WHERE key = ?", (key,))
                if done is not None:
                    return Transition(_event_record(done), await _require_device(db, udid), job)
            rules.check_write(job, station_id, fence, now)
            job = rules.transition(
                job,
                station_id,
                now,
                self.lease,
                completed_step=completed_step,
                step_data=step_data,
                attempt_step=attempt_step,
                job_status=job_status,
                error_code=error_code,
                error_message=error_message,
            )
            await db.execute(
                "UPDATE devices SET state = ?, step = COALESCE(?, step), name = COALESCE(?, name), error_code = ?,"
                " error_message = ?, updated_at = ? WHERE udid = ?",
                (state, step, name, error_code, error_message, now, udid),
            )
            await _write_job(db, job)
            event = await self._insert_event(
                db, kind, station_id=station_id, udid=udid, step=step, data=data, job_id=job_id, key=key
            )
            return Transition(event, await _require_device(db, udid), job)

        return await self._atomic(body)

    async def allocate_counter(self, name: str) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            row = await _only(
                db,
                "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1"
                " RETURNING value",
                (name,),
            )
            return int(row["value"])

        return await self._atomic(body)

    async def mark_interrupted(self, station_id: str) -> list[JobRecord]:
        async def body(db: aiosqlite.Connection) -> list[JobRecord]:
            interrupted = []
            for job in await _jobs(db, "WHERE station_id = ? AND status = ?", (station_id, RUNNING)):
                device = await _require_device(db, job.udid)
                job = rules.interrupt(job)
                await _write_job(db, job)
                await db.execute(
                    "UPDATE devices SET state = ?, updated_at = ? WHERE udid = ?",
                    (INTERRUPTED, self._clock(), job.udid),
                )
                await self._insert_event(
                    db,
                    "job.interrupted",
                    station_id=station_id,
                    udid=job.udid,
                    step=device.step,
                    job_id=job.id,
                    data={"previous_state": device.state},
                )
                interrupted.append(job)
            return interrupted

        return await self._atomic(body)

    # -- events ---------------------------------------------------------------------------------------------------
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
        return await self._atomic(
            lambda db: self._insert_event(
                db, kind, station_id=station_id, udid=udid, step=step, data=data, job_id=job_id, key=key
            )
        )

    async def last_event_id(self) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            return int((await _only(db, "SELECT COALESCE(MAX(id), 0) AS n FROM events"))["n"])

        return await self._atomic(body, write=False)

    async def list_events(self, *, after_id: int = 0, udid: str | None = None, limit: int = 1000) -> list[EventRecord]:
        where, params = "WHERE id > ?", list[Any]([after_id])
        if udid is not None:
            where += " AND udid = ?"
            params.append(udid)

        async def body(db: aiosqlite.Connection) -> list[EventRecord]:
            rows = await db.execute_fetchall(f"SELECT * FROM events {where} ORDER BY id LIMIT ?", (*params, limit))
            return [_event_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def last_seq(self, station_id: str) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            row = await _one(db, "SELECT seq FROM stations WHERE id = ?", (station_id,))
            return int(row["seq"]) if row is not None else 0

        return await self._atomic(body, write=False)

    async def station_events(self, station_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        async def body(db: aiosqlite.Connection) -> list[EventRecord]:
            rows = await db.execute_fetchall(
                "SELECT * FROM events WHERE station_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (station_id, after_seq, limit),
            )
            return [_event_record(row) for row in rows]

        return await self._atomic(body, write=False)

    # -- the fleet ------------------------------------------------------------------------------------------------
    async def heartbeat(self, station_id: str, *, fleet: str, info: dict, stopped: bool = False) -> None:
        async def body(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO stations (id, fleet, info, last_seen, stopped) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET fleet = excluded.fleet, info = excluded.info,"
                " last_seen = excluded.last_seen, stopped = excluded.stopped",
                (station_id, fleet, _dumps(info), self._clock(), int(stopped)),
            )

        await self._atomic(body)

    async def list_stations(self, *, fleet: str | None = None) -> list[StationRecord]:
        where, params = "WHERE last_seen IS NOT NULL", list[Any]()
        if fleet is not None:
            where += " AND fleet = ?"
            params.append(fleet)

        async def body(db: aiosqlite.Connection) -> list[StationRecord]:
            now = self._clock()
            rows = await db.execute_fetchall(f"SELECT * FROM stations {where} ORDER BY id", params)
            return [
                StationRecord(
                    id=row["id"],
                    fleet=row["fleet"],
                    info=json.loads(row["info"]),
                    last_seen=row["last_seen"],
                    age=max(0.0, now - row["last_seen"]),
                    stopped=bool(row["stopped"]),
                )
                for row in rows
            ]

        return await self._atomic(body, write=False)

    # -- the work list --------------------------------------------------------------------------------------------
    async def import_worklist(self, items: list[WorkItem]) -> tuple[int, int]:
        async def body(db: aiosqlite.Connection) -> tuple[int, int]:
            before = (await _only(db, "SELECT COUNT(*) AS n FROM worklist"))["n"]
            now = self._clock()
            await db.executemany(
                "INSERT INTO worklist (serial, name, grp, notes, listed_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (serial) DO UPDATE SET name = excluded.name, grp = excluded.grp,"
                " notes = excluded.notes, listed_at = excluded.listed_at",
                [(item.serial, item.name, item.group, item.notes, now) for item in items],
            )
            added = (await _only(db, "SELECT COUNT(*) AS n FROM worklist"))["n"] - before
            return added, len(items) - added

        return await self._atomic(body)

    async def work_item(self, serial: str) -> WorkItem | None:
        async def body(db: aiosqlite.Connection) -> WorkItem | None:
            row = await _one(db, "SELECT * FROM worklist WHERE serial = ?", (serial,))
            return _work_item(row) if row is not None else None

        return await self._atomic(body, write=False)

    async def list_worklist(self) -> list[WorkItem]:
        async def body(db: aiosqlite.Connection) -> list[WorkItem]:
            return [_work_item(row) for row in await db.execute_fetchall("SELECT * FROM worklist ORDER BY serial")]

        return await self._atomic(body, write=False)

    # -- blueprints -----------------------------------------------------------------------------------------------
    async def push_blueprint(self, name: str, content: dict, *, station_id: str) -> BlueprintRecord:
        async def body(db: aiosqlite.Connection) -> BlueprintRecord:
            row = await _only(
                db, "SELECT COALESCE(MAX(version), 0) + 1 AS version FROM blueprints WHERE name = ?", (name,)
            )
            await db.execute(
                "INSERT INTO blueprints (name, version, created_at, station_id, content) VALUES (?, ?, ?, ?, ?)",
                (name, row["version"], self._clock(), station_id, _dumps(content)),
            )
            return _blueprint(await _only(db, BLUEPRINT + " AND version = ?", (name, row["version"])))

        return await self._atomic(body)

    async def get_blueprint(self, name: str, version: int | None = None) -> BlueprintRecord | None:
        async def body(db: aiosqlite.Connection) -> BlueprintRecord | None:
            if version is None:
                row = await _one(db, BLUEPRINT + " ORDER BY version DESC LIMIT 1", (name,))
            else:
                row = await _one(db, BLUEPRINT + " AND version = ?", (name, version))
            return _blueprint(row) if row is not None else None

        return await self._atomic(body, write=False)

    async def list_blueprints(self) -> list[BlueprintRecord]:
        async def body(db: aiosqlite.Connection) -> list[BlueprintRecord]:
            rows = await db.execute_fetchall("SELECT * FROM blueprints ORDER BY name, version")
            return [_blueprint(row) for row in rows]

        return await self._atomic(body, write=False)

    # -- transactions ---------------------------------------------------------------------------------------------
    async def _atomic(self, body: Body[T], *, write: bool = True) -> T:
        """Run body in one transaction, one call at a time.

        Once the lock is taken the transaction is shielded and runs to its end, so a caller cancelled half-way
        (device unplugged, shutdown) never leaves a transaction open on the shared connection.
        """
        self._require_open()
        async with self._lock:
            with anyio.CancelScope(shield=True):
                result = await self._transaction(body, write)
        return result

    async def _transaction(self, body: Body[T], write: bool) -> T:
        """Run body between BEGIN and COMMIT; roll back on any error."""
        db = self._require_open()
        try:
            await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            result = await body(db)
            await db.execute("COMMIT")
            return result
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                await db.rollback()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(explain(self.path, exc)) from exc
            raise

    def _require_open(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open: use 'async with open_store(...)' or 'await store.open()'")
        return self._db

    async def _migrate_one_step(self, db: aiosqlite.Connection) -> bool:
        """Apply the next pending migration; False when the schema is current."""
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        row = await _only(db, "SELECT COALESCE(MAX(version), 0) AS version FROM schema_version")
        version, latest = row["version"], len(MIGRATIONS)
        if version > latest:
            raise StoreError(
                f"store {self.path} has schema version {version} but this stationd knows only up to"
                f" {latest}: upgrade stationd or use another database"
            )
        if version == latest:
            return False
        for statement in MIGRATIONS[version]:
            await db.execute(statement)
        await db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version + 1, self._clock()))
        return True

    async def _insert_event(
        self,
        db: aiosqlite.Connection,
        kind: str,
        *,
        station_id: str,
        udid: str | None = None,
        step: str | None = None,
        data: dict | None = None,
        job_id: int | None = None,
        key: str | None = None,
    ) -> EventRecord:
        """Append to the station's trail: its next seq (the single writer commits in that order)."""
        if key is not None:
            done = await _one(db, "SELECT * FROM events WHERE key = ?", (key,))
            if done is not None:
                return _event_record(done)
        seq = await _only(
            db,
            "INSERT INTO stations (id, seq) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (station_id,),
        )
        device = await _device(db, udid) if udid is not None else None
        placement = None
        if udid is not None:
            placement = await _one(db, "SELECT * FROM placements WHERE udid = ? AND station_id = ?", (udid, station_id))
        row = await _only(
            db,
            "INSERT INTO events (ts, station_id, seq, kind, udid, serial, location_id, port_label, step, job_id, data,"
            " key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                self._clock(),
                station_id,
                seq["seq"],
                kind,
                udid,
                device.serial if device else None,
                placement["location_id"] if placement else None,
                placement["port_label"] if placement else None,
                step,
                job_id,
                _dumps(data or {}),
                key,
            ),
        )
        return _event_record(row)


DEVICES = (
    "SELECT d.*, p.location_id, p.port_label FROM devices d"
    " LEFT JOIN placements p ON p.udid = d.udid AND p.station_id = d.station_id"
)
BLUEPRINT = "SELECT * FROM blueprints WHERE name = ?"


def explain(path: Path, error: OSError | sqlite3.Error) -> str:
    """What went wrong with the database at `path`, and what to do; the transaction that failed was rolled back, so
    everything recorded before it is kept."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL" or getattr(error, "errno", None) == errno.ENOSPC:
        return (
            f"the disk holding the database {path} is full: free some space there (or move [station] database to a "
            "larger disk), then start the station again; everything recorded so far is kept, and every iPad resumes "
            "where it stopped"
        )
    if name.startswith("SQLITE_READONLY") or getattr(error, "errno", None) in (errno.EROFS, errno.EACCES):
        return (
            f"the database {path} cannot be written ({error}): check that the station's user may write the file "
            "and its folder, and that the disk is not mounted read-only, then start the station again"
        )
    if name == "SQLITE_NOTADB":
        return (
            f"{path} is not a SQLite database: set [station] database to the station's database file, or move "
            "this file away and let the station create a new one"
        )
    if name == "SQLITE_CORRUPT":
        return _damaged(path, str(error))
    if name.startswith("SQLITE_IOERR"):
        return f"the disk holding the database {path} failed ({error}): check the disk, then start the station again"
    return f"cannot use the database {path}: {error}"


def _damaged(path: Path, detail: str) -> str:
    return (
        f"the database {path} is damaged ({detail}); the station left it untouched. Stop the station, keep a copy "
        f"of the file, then recover what can be read: sqlite3 {path} .recover | sqlite3 {path}.recovered, and set "
        "[station] database to the recovered file (or restore a backup)"
    )


def _private_database(path: Path) -> None:
    """The database, its WAL and shared-memory files readable by the station's user only, in a 0700 folder."""
    private_folder(path.parent)
    private_file(path)
    for suffix in SIDE_FILES:
        tighten(path.with_name(path.name + suffix))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _one(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
    rows = list(await db.execute_fetchall(sql, tuple(params)))
    return rows[0] if rows else None


async def _only(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row:
    """The one row a query must return (an aggregate, a row just written)."""
    row = await _one(db, sql, params)
    if row is None:
        raise StoreError(f"the database returned no row for {sql.split()[0]} ... where one was expected")
    return row


async def _device(db: aiosqlite.Connection, udid: str) -> DeviceRecord | None:
    row = await _one(db, f"{DEVICES} WHERE d.udid = ?", (udid,))
    return _device_record(row) if row is not None else None


async def _require_device(db: aiosqlite.Connection, udid: str) -> DeviceRecord:
    device = await _device(db, udid)
    if device is None:
        raise StoreError(f"unknown device {udid}")
    return device


async def _job(db: aiosqlite.Connection, job_id: int) -> JobRecord | None:
    row = await _one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))
    return _job_record(row) if row is not None else None


async def _require_job(db: aiosqlite.Connection, job_id: int) -> JobRecord:
    job = await _job(db, job_id)
    if job is None:
        raise StoreError(f"unknown job {job_id}")
    return job


async def _jobs(db: aiosqlite.Connection, where: str, params: Iterable[Any], limit: int = -1) -> list[JobRecord]:
    rows = await db.execute_fetchall(f"SELECT * FROM jobs {where} ORDER BY id LIMIT ?", (*params, limit))
    return [_job_record(row) for row in rows]


async def _write_job(db: aiosqlite.Connection, job: JobRecord) -> None:
    await db.execute(
        "UPDATE jobs SET station_id = ?, status = ?, completed_steps = ?, step_data = ?, attempts = ?,"
        " finished_at = ?, error_code = ?, error_message = ?, fence = ?, lease_until = ? WHERE id = ?",
        (
            job.station_id,
            job.status,
            _dumps(job.completed_steps),
            _dumps(job.step_data),
            _dumps(job.attempts),
            job.finished_at,
            job.error_code,
            job.error_message,
            job.fence,
            job.lease_until,
            job.id,
        ),
    )


def _device_record(row: sqlite3.Row) -> DeviceRecord:
    return DeviceRecord(
        udid=row["udid"],
        serial=row["serial"],
        ecid=row["ecid"],
        facts=json.loads(row["facts"]),
        state=row["state"],
        step=row["step"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        location_id=row["location_id"],
        port_label=row["port_label"],
        name=row["name"],
        first_seen=row["first_seen"],
        updated_at=row["updated_at"],
    )


def _job_record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        udid=row["udid"],
        station_id=row["station_id"],
        status=row["status"],
        completed_steps=json.loads(row["completed_steps"]),
        step_data=json.loads(row["step_data"]),
        attempts=json.loads(row["attempts"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        fence=row["fence"],
        lease_until=row["lease_until"],
    )


def _work_item(row: sqlite3.Row) -> WorkItem:
    return WorkItem(serial=row["serial"], name=row["name"], group=row["grp"], notes=row["notes"])


def _blueprint(row: sqlite3.Row) -> BlueprintRecord:
    return BlueprintRecord(
        name=row["name"],
        version=row["version"],
        created_at=row["created_at"],
        station_id=row["station_id"],
        content=json.loads(row["content"]),
    )


def _event_record(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        id=row["id"],
        ts=row["ts"],
        station_id=row["station_id"],
        kind=row["kind"],
        udid=row["udid"],
        serial=row["serial"],
        location_id=row["location_id"],
        port_label=row["port_label"],
        step=row["step"],
        data=json.loads(row["data"]),
        job_id=row["job_id"],
        seq=row["seq"],
    )
