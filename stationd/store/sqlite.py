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
from stationd.store.base import Store, StoreError, deep_merge
from stationd.store.records import (
    FINISHED_STATUSES,
    INTERRUPTED,
    JOB_STATUSES,
    RUNNING,
    UNFINISHED_STATUSES,
    DeviceRecord,
    EventRecord,
    JobRecord,
    Transition,
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
]


class SQLiteStore(SQLiteOutbox, Store):
    """Store in one SQLite file (WAL), safe for many device tasks sharing one instance."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
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
    ) -> DeviceRecord:
        given = {
            "serial": serial,
            "ecid": ecid,
            "location_id": location_id,
            "port_label": port_label,
            "name": name,
        }

        async def body(db: aiosqlite.Connection) -> DeviceRecord:
            now = self._clock()
            device = await _device(db, udid)
            if device is None:
                await db.execute(
                    "INSERT INTO devices (udid, serial, ecid, facts, state, location_id,"
                    " port_label, name, first_seen, updated_at)"
                    " VALUES (?, ?, ?, ?, 'new', ?, ?, ?, ?, ?)",
                    (udid, serial, ecid, _dumps(facts or {}), location_id, port_label, name, now, now),
                )
            else:
                columns: dict[str, Any] = {column: value for column, value in given.items() if value is not None}
                if facts:
                    columns["facts"] = _dumps({**device.facts, **facts})
                columns["updated_at"] = now
                assignments = ", ".join(f"{column} = ?" for column in columns)
                await db.execute(f"UPDATE devices SET {assignments} WHERE udid = ?", (*columns.values(), udid))
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
                row = await _one(
                    db,
                    f"SELECT * FROM devices WHERE {column} = ? ORDER BY updated_at DESC LIMIT 1",
                    (value,),
                )
                if row is not None:
                    return _device_record(row)
            return None

        return await self._atomic(body, write=False)

    async def list_devices(self) -> list[DeviceRecord]:
        async def body(db: aiosqlite.Connection) -> list[DeviceRecord]:
            rows = await db.execute_fetchall("SELECT * FROM devices ORDER BY first_seen, udid")
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
            await db.execute("DELETE FROM jobs WHERE udid = ?", (udid,))
            await db.execute("DELETE FROM devices WHERE udid = ?", (udid,))
            return True

        return await self._atomic(body)

    async def open_job(self, udid: str, station_id: str) -> JobRecord:
        async def body(db: aiosqlite.Connection) -> JobRecord:
            await _require_device(db, udid)
            row = await _one(db, "SELECT * FROM jobs WHERE udid = ? AND status IN (?, ?)", (udid, *UNFINISHED_STATUSES))
            if row is None:
                cursor = await db.execute(
                    "INSERT INTO jobs (udid, station_id, status, started_at) VALUES (?, ?, ?, ?)",
                    (udid, station_id, RUNNING, self._clock()),
                )
                job_id = int(cursor.lastrowid or 0)
                await self._insert_event(db, "job.started", station_id=station_id, udid=udid, job_id=job_id)
                return await _require_job(db, job_id)
            job = _job_record(row)
            if job.status != RUNNING or job.station_id != station_id:
                await db.execute(
                    "UPDATE jobs SET status = ?, station_id = ? WHERE id = ?", (RUNNING, station_id, job.id)
                )
                await self._insert_event(
                    db,
                    "job.resumed",
                    station_id=station_id,
                    udid=udid,
                    job_id=job.id,
                    data={"previous_status": job.status, "previous_station_id": job.station_id},
                )
            return await _require_job(db, job.id)

        return await self._atomic(body)

    async def get_job(self, job_id: int) -> JobRecord | None:
        return await self._atomic(lambda db: _job(db, job_id), write=False)

    async def jobs_for(self, udid: str) -> list[JobRecord]:
        return await self._select_jobs("WHERE udid = ?", (udid,))

    async def unfinished_jobs(self, *, station_id: str | None = None) -> list[JobRecord]:
        where, params = "WHERE status IN (?, ?)", list[Any](UNFINISHED_STATUSES)
        if station_id is not None:
            where += " AND station_id = ?"
            params.append(station_id)
        return await self._select_jobs(where, params)

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
    ) -> Transition:
        if job_status is not None and job_status not in JOB_STATUSES:
            raise ValueError(f"job_status must be one of {', '.join(JOB_STATUSES)}, not {job_status!r}")
        if error_code is None:
            error_message = None

        async def body(db: aiosqlite.Connection) -> Transition:
            now = self._clock()
            await _require_device(db, udid)
            job = await _require_job(db, job_id)
            if job.udid != udid:
                raise StoreError(f"job {job_id} belongs to device {job.udid}, not {udid}")
            await db.execute(
                "UPDATE devices SET state = ?, step = COALESCE(?, step), name = COALESCE(?, name), error_code = ?,"
                " error_message = ?, updated_at = ? WHERE udid = ?",
                (state, step, name, error_code, error_message, now, udid),
            )
            if completed_step is not None and completed_step not in job.completed_steps:
                job.completed_steps.append(completed_step)
            if step_data:
                job.step_data = deep_merge(job.step_data, step_data)
            if attempt_step is not None:
                job.attempts[attempt_step] = job.attempts.get(attempt_step, 0) + 1
            status = job_status or job.status
            if status not in FINISHED_STATUSES:
                job.finished_at = None
            elif not job.finished:
                job.finished_at = now
            job.status, job.error_code, job.error_message = status, error_code, error_message
            await db.execute(
                "UPDATE jobs SET status = ?, completed_steps = ?, step_data = ?, attempts = ?,"
                " finished_at = ?, error_code = ?, error_message = ? WHERE id = ?",
                (
                    job.status,
                    _dumps(job.completed_steps),
                    _dumps(job.step_data),
                    _dumps(job.attempts),
                    job.finished_at,
                    error_code,
                    error_message,
                    job_id,
                ),
            )
            event = await self._insert_event(
                db, kind, station_id=station_id, udid=udid, step=step, data=data, job_id=job_id
            )
            return Transition(event, await _require_device(db, udid), job)

        return await self._atomic(body)

    async def allocate_counter(self, name: str) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            await db.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
                (name,),
            )
            row = await _only(db, "SELECT value FROM counters WHERE name = ?", (name,))
            return int(row["value"])

        return await self._atomic(body)

    async def mark_interrupted(self, station_id: str) -> list[JobRecord]:
        async def body(db: aiosqlite.Connection) -> list[JobRecord]:
            rows = await db.execute_fetchall(
                "SELECT * FROM jobs WHERE station_id = ? AND status = ? ORDER BY id", (station_id, RUNNING)
            )
            interrupted = []
            for row in rows:
                job = _job_record(row)
                device = await _require_device(db, job.udid)
                await db.execute("UPDATE jobs SET status = ? WHERE id = ?", (INTERRUPTED, job.id))
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
                interrupted.append(await _require_job(db, job.id))
            return interrupted

        return await self._atomic(body)

    async def add_event(
        self,
        kind: str,
        *,
        station_id: str,
        udid: str | None = None,
        step: str | None = None,
        data: dict | None = None,
        job_id: int | None = None,
    ) -> EventRecord:
        return await self._atomic(
            lambda db: self._insert_event(
                db, kind, station_id=station_id, udid=udid, step=step, data=data, job_id=job_id
            )
        )

    async def last_event_id(self) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            rows = await db.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM events")
            return int(list(rows)[0][0])

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

    async def _select_jobs(self, where: str, params: Iterable[Any]) -> list[JobRecord]:
        async def body(db: aiosqlite.Connection) -> list[JobRecord]:
            rows = await db.execute_fetchall(f"SELECT * FROM jobs {where} ORDER BY id", tuple(params))
            return [_job_record(row) for row in rows]

        return await self._atomic(body, write=False)

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
    ) -> EventRecord:
        device = await _device(db, udid) if udid is not None else None
        cursor = await db.execute(
            "INSERT INTO events (ts, station_id, kind, udid, serial, location_id, port_label, step,"
            " job_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._clock(),
                station_id,
                kind,
                udid,
                device.serial if device else None,
                device.location_id if device else None,
                device.port_label if device else None,
                step,
                job_id,
                _dumps(data or {}),
            ),
        )
        return _event_record(await _only(db, "SELECT * FROM events WHERE id = ?", (cursor.lastrowid,)))


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
    row = await _one(db, "SELECT * FROM devices WHERE udid = ?", (udid,))
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
    )
