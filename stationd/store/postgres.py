"""PostgreSQL store: one database shared by every station of a fleet (psycopg 3, async, with psycopg-pool).

The contract and the job rules are the ones every backend shares (`base.Store`, `rules`); what is PostgreSQL's own:

- **Locks.** A transition locks its job row (`FOR UPDATE`), so two writers of one job never lose an update; a claim
  locks the device's row, so two claims of one device are served one after the other. The sweep of expired
  leases takes `FOR UPDATE SKIP LOCKED`, so stations sweeping at the same time share the work without waiting.
- **The trail's cursor.** Sequence values commit out of order, so "id > last" could skip an event. Each station's
  trail is numbered instead by its row in `stations`: the update that takes the next `seq` holds that row's lock
  until commit, so one station's events commit in `seq` order, without gaps.
- **Wake-ups.** Every event, blueprint and work list import sends a NOTIFY on the channel `stationd`; listeners
  (`listen`) poll as well, since a notification sent while they were disconnected is lost.
- **Clock.** Every time is the server's (`now()`), so stations with skewed clocks agree on leases and ages.

Credentials never leave: the URL is shown with its password masked, the password may come from a 0600 file, and
TLS is used as the URL asks (`?sslmode=verify-full`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stationd.redact import redact_text, redact_url
from stationd.store import rules
from stationd.store.base import Store, StoreError, StoreUnavailable
from stationd.store.pgsql import NOW, Conn, fetch_all, fetch_value
from stationd.store.postgres_outbox import MIGRATION as OUTBOX_MIGRATION
from stationd.store.postgres_outbox import PostgresOutbox
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

T = TypeVar("T")
Body = Callable[[Conn], Awaitable[T]]
Notice = Callable[[dict[str, Any]], None]

log = structlog.get_logger("stationd.store")

CHANNEL = "stationd"
MIGRATION_LOCK = 7_253_001  # pg_advisory_xact_lock key: stations starting together migrate one at a time
RECONNECT = (0.5, 10.0)  # a listener's first and longest wait before it connects again

# MIGRATIONS[n] holds the statements that bring the schema from version n to n + 1.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE devices (
            udid text PRIMARY KEY,
            serial text,
            ecid bigint,
            facts jsonb NOT NULL DEFAULT '{}',
            state text NOT NULL,
            step text,
            error_code text,
            error_message text,
            name text,
            station_id text,
            first_seen float8 NOT NULL,
            updated_at float8 NOT NULL
        )
        """,
        "CREATE INDEX devices_serial ON devices (serial)",
        "CREATE INDEX devices_ecid ON devices (ecid)",
        """
        CREATE TABLE placements (
            udid text NOT NULL REFERENCES devices (udid) ON DELETE CASCADE,
            station_id text NOT NULL,
            location_id bigint,
            port_label text,
            placed_at float8 NOT NULL,
            PRIMARY KEY (udid, station_id)
        )
        """,
        "CREATE INDEX placements_station ON placements (station_id)",
        """
        CREATE TABLE jobs (
            id bigserial PRIMARY KEY,
            udid text NOT NULL REFERENCES devices (udid),
            station_id text NOT NULL,
            status text NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
            completed_steps jsonb NOT NULL DEFAULT '[]',
            step_data jsonb NOT NULL DEFAULT '{}',
            attempts jsonb NOT NULL DEFAULT '{}',
            started_at float8 NOT NULL,
            finished_at float8,
            error_code text,
            error_message text,
            fence bigint NOT NULL DEFAULT 1,
            lease_until float8
        )
        """,
        "CREATE INDEX jobs_udid ON jobs (udid)",
        "CREATE UNIQUE INDEX jobs_one_unfinished_per_device ON jobs (udid) WHERE status IN ('running', 'interrupted')",
        "CREATE INDEX jobs_running ON jobs (station_id, lease_until) WHERE status = 'running'",
        """
        CREATE TABLE stations (
            id text PRIMARY KEY,
            fleet text NOT NULL DEFAULT '',
            seq bigint NOT NULL DEFAULT 0,
            info jsonb NOT NULL DEFAULT '{}',
            last_seen float8,
            stopped boolean NOT NULL DEFAULT false
        )
        """,
        """
        CREATE TABLE events (
            id bigserial PRIMARY KEY,
            ts float8 NOT NULL,
            station_id text NOT NULL,
            seq bigint NOT NULL,
            kind text NOT NULL,
            udid text,
            serial text,
            location_id bigint,
            port_label text,
            step text,
            job_id bigint,
            data jsonb NOT NULL DEFAULT '{}',
            key text,
            UNIQUE (station_id, seq)
        )
        """,
        "CREATE UNIQUE INDEX events_key ON events (key) WHERE key IS NOT NULL",
        "CREATE INDEX events_udid ON events (udid, id)",
        "CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL)",
        """
        CREATE TABLE worklist (
            serial text PRIMARY KEY,
            name text,
            grp text,
            notes text,
            listed_at float8 NOT NULL
        )
        """,
        """
        CREATE TABLE blueprints (
            name text NOT NULL,
            version integer NOT NULL,
            created_at float8 NOT NULL,
            station_id text NOT NULL,
            content jsonb NOT NULL,
            PRIMARY KEY (name, version)
        )
        """,
    ),
    OUTBOX_MIGRATION,
]

DEVICES = (
    "SELECT d.*, p.location_id, p.port_label FROM devices d"
    " LEFT JOIN placements p ON p.udid = d.udid AND p.station_id = d.station_id"
)
INSERT_EVENT = f"""
    WITH s AS (
        INSERT INTO stations (id, seq) VALUES (%(station_id)s, 1)
        ON CONFLICT (id) DO UPDATE SET seq = stations.seq + 1 RETURNING seq
    )
    INSERT INTO events (ts, station_id, seq, kind, udid, serial, location_id, port_label, step, job_id, data, key)
    SELECT extract(epoch from clock_timestamp())::float8, %(station_id)s, s.seq, %(kind)s, %(udid)s,
        (SELECT serial FROM devices WHERE udid = %(udid)s),
        (SELECT location_id FROM placements WHERE udid = %(udid)s AND station_id = %(station_id)s),
        (SELECT port_label FROM placements WHERE udid = %(udid)s AND station_id = %(station_id)s),
        %(step)s, %(job_id)s, %(data)s, %(key)s
    FROM s
    RETURNING *, pg_notify('{CHANNEL}', json_build_object(
        'c', 'event', 'station', station_id, 'seq', seq, 'kind', kind, 'udid', udid)::text)
"""


class PostgresStore(PostgresOutbox, Store):
    """Store on a PostgreSQL server, shared by the stations of a fleet; one connection pool per station."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        lease: float = rules.DEFAULT_LEASE,
        pool_size: int = 8,
        timeout: float = 5.0,
        application: str = "stationd",
    ) -> None:
        self.url = url
        self.shown = redact_url(url)
        self.lease = lease
        self.timeout = timeout
        self._password = password
        self._pool_size = pool_size
        self._application = application
        self._pool: AsyncConnectionPool[Conn] | None = None

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "connect_timeout": max(1, round(self.timeout)),
            "application_name": self._application[:63],
        }
        if self._password is not None:
            options["password"] = self._password
        return options

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            first = await psycopg.AsyncConnection.connect(self.url, **self._connect_options())
        except psycopg.Error as error:
            raise StoreUnavailable(self._unreachable(error)) from error
        await first.close()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            kwargs={**self._connect_options(), "row_factory": dict_row},
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=self.timeout,
            reconnect_timeout=0,
            name="stationd",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except (PoolTimeout, psycopg.Error) as error:
            await pool.close()
            raise StoreUnavailable(self._unreachable(error)) from error
        self._pool = pool
        try:
            while await self._atomic(self._migrate_one_step):
                pass
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await pool.close()

    async def now(self) -> float:
        return await self._atomic(lambda conn: fetch_value(conn, f"SELECT {NOW} AS v"), write=False)

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

        async def body(conn: Conn) -> DeviceRecord:
            await conn.execute(
                "INSERT INTO devices (udid, serial, ecid, facts, state, name, first_seen, updated_at)"
                f" VALUES (%(udid)s, %(serial)s, %(ecid)s, %(facts)s, 'new', %(name)s, {NOW}, {NOW})"
                " ON CONFLICT (udid) DO UPDATE SET serial = COALESCE(excluded.serial, devices.serial),"
                " ecid = COALESCE(excluded.ecid, devices.ecid), facts = devices.facts || excluded.facts,"
                " name = COALESCE(excluded.name, devices.name), updated_at = excluded.updated_at",
                {"udid": udid, "serial": serial, "ecid": ecid, "facts": Jsonb(facts or {}), "name": name},
            )
            if placed:
                await conn.execute(
                    "INSERT INTO placements (udid, station_id, location_id, port_label, placed_at)"
                    f" VALUES (%s, %s, %s, %s, {NOW}) ON CONFLICT (udid, station_id) DO UPDATE SET"
                    " location_id = COALESCE(excluded.location_id, placements.location_id),"
                    " port_label = COALESCE(excluded.port_label, placements.port_label),"
                    " placed_at = excluded.placed_at",
                    (udid, station_id, location_id, port_label),
                )
                await conn.execute("UPDATE devices SET station_id = %s WHERE udid = %s", (station_id, udid))
            return await _require_device(conn, udid)

        return await self._atomic(body)

    async def get_device(self, udid: str) -> DeviceRecord | None:
        return await self._atomic(lambda conn: _device(conn, udid), write=False)

    async def find_device(
        self, *, udid: str | None = None, serial: str | None = None, ecid: int | None = None
    ) -> DeviceRecord | None:
        identities = [(c, v) for c, v in (("udid", udid), ("serial", serial), ("ecid", ecid)) if v is not None]
        if not identities:
            raise ValueError("find_device needs a udid, a serial or an ecid")

        async def body(conn: Conn) -> DeviceRecord | None:
            for column, value in identities:
                rows = await fetch_all(
                    conn, f"{DEVICES} WHERE d.{column} = %s ORDER BY d.updated_at DESC LIMIT 1", value
                )
                if rows:
                    return _device_record(rows[0])
            return None

        return await self._atomic(body, write=False)

    async def list_devices(self, *, station_id: str | None = None) -> list[DeviceRecord]:
        where: str = ""
        params: tuple[Any, ...] = ()
        if station_id is not None:
            where = (
                " WHERE EXISTS (SELECT 1 FROM placements q WHERE q.udid = d.udid AND q.station_id = %s)"
                " OR EXISTS (SELECT 1 FROM jobs j WHERE j.udid = d.udid AND j.station_id = %s)"
            )
            params = (station_id, station_id)

        async def body(conn: Conn) -> list[DeviceRecord]:
            rows = await fetch_all(conn, f"{DEVICES}{where} ORDER BY d.first_seen, d.udid", *params)
            return [_device_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def forget_device(self, udid: str, *, station_id: str) -> bool:
        async def body(conn: Conn) -> bool:
            device = await _device(conn, udid, lock=True)
            if device is None:
                return False
            jobs = await fetch_value(conn, "SELECT COUNT(*) AS v FROM jobs WHERE udid = %s", udid)
            await _insert_event(
                conn,
                "device.forgotten",
                station_id=station_id,
                udid=udid,
                step=device.step,
                data={"name": device.name, "ecid": device.ecid, "state": device.state, "jobs": jobs},
            )
            await conn.execute("DELETE FROM jobs WHERE udid = %s", (udid,))
            await conn.execute("DELETE FROM devices WHERE udid = %s", (udid,))
            return True

        return await self._atomic(body)

    # -- jobs -----------------------------------------------------------------------------------------------------
    async def claim_job(
        self, udid: str, station_id: str, *, retry: bool = False, reason: str = "replugged", lease: float | None = None
    ) -> JobRecord:
        async def body(conn: Conn) -> JobRecord:
            if await _device(conn, udid, lock=True) is None:
                raise StoreError(f"unknown device {udid}")
            now = await fetch_value(conn, f"SELECT {NOW} AS v")
            jobs = [
                _job_record(row)
                for row in await fetch_all(conn, "SELECT * FROM jobs WHERE udid = %s ORDER BY id", udid)
            ]
            made = rules.claim(
                jobs, udid, station_id, now, self.lease if lease is None else lease, retry=retry, reason=reason
            )
            job = made.job
            if made.new:
                job.id = await fetch_value(
                    conn,
                    "INSERT INTO jobs (udid, station_id, status, started_at, fence, lease_until)"
                    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id AS v",
                    udid,
                    station_id,
                    job.status,
                    job.started_at,
                    job.fence,
                    job.lease_until,
                )
            else:
                await _write_job(conn, job)
            if made.kind is not None:
                await _insert_event(
                    conn, made.kind, station_id=station_id, udid=udid, job_id=job.id, data=made.data or None
                )
            return job

        return await self._atomic(body)

    async def renew_leases(self, station_id: str, *, lease: float | None = None) -> list[int]:
        seconds = self.lease if lease is None else lease

        async def body(conn: Conn) -> list[int]:
            rows = await fetch_all(
                conn,
                f"UPDATE jobs SET lease_until = {NOW} + %s WHERE station_id = %s AND status = %s RETURNING id",
                seconds,
                station_id,
                RUNNING,
            )
            return sorted(int(row["id"]) for row in rows)

        return await self._atomic(body)

    async def expire_leases(self, station_id: str, *, limit: int = 100) -> list[JobRecord]:
        """Turn running jobs whose station let its lease lapse into interrupted ones (a "job.expired" event in
        this station's trail each): the fleet shows them as waiting, not as running at a station that is gone.
        Stations sweeping together skip each other's rows (SKIP LOCKED)."""

        async def body(conn: Conn) -> list[JobRecord]:
            candidates = await fetch_all(
                conn,
                f"SELECT udid FROM jobs WHERE status = %s AND lease_until < {NOW} ORDER BY id LIMIT %s",
                RUNNING,
                limit,
            )
            expired = []
            for candidate in candidates:
                job = await _locked_job(
                    conn, candidate["udid"], f"status = 'running' AND lease_until < {NOW}", skip_locked=True
                )
                if job is None:
                    continue
                job = rules.interrupt(job)
                await _write_job(conn, job)
                await conn.execute(
                    f"UPDATE devices SET state = %s, updated_at = {NOW} WHERE udid = %s", (INTERRUPTED, job.udid)
                )
                await _insert_event(
                    conn,
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
        return await self._atomic(lambda conn: _job(conn, job_id), write=False)

    async def jobs_for(self, udid: str) -> list[JobRecord]:
        return await self._jobs("WHERE udid = %s ORDER BY id", udid)

    async def latest_jobs(self) -> dict[str, JobRecord]:
        jobs = await self._jobs("WHERE id IN (SELECT MAX(id) FROM jobs GROUP BY udid) ORDER BY id")
        return {job.udid: job for job in jobs}

    async def unfinished_jobs(self, *, station_id: str | None = None) -> list[JobRecord]:
        if station_id is None:
            return await self._jobs("WHERE status IN (%s, %s) ORDER BY id", *UNFINISHED_STATUSES)
        return await self._jobs(
            "WHERE status IN (%s, %s) AND station_id = %s ORDER BY id", *UNFINISHED_STATUSES, station_id
        )

    async def _jobs(self, where: str, *params: Any) -> list[JobRecord]:
        async def body(conn: Conn) -> list[JobRecord]:
            return [_job_record(row) for row in await fetch_all(conn, f"SELECT * FROM jobs {where}", *params)]

        return await self._atomic(body, write=False)

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

        async def body(conn: Conn) -> Transition:
            if not await fetch_all(conn, "SELECT udid FROM devices WHERE udid = %s FOR UPDATE", udid):
                raise StoreError(f"unknown device {udid}")
            rows = await fetch_all(conn, f"SELECT {NOW} AS now, j.* FROM jobs j WHERE j.id = %s FOR UPDATE", job_id)
            if not rows:
                raise StoreError(f"unknown job {job_id}")
            now, job = rows[0]["now"], _job_record(rows[0])
            if job.udid != udid:
                raise StoreError(f"job {job_id} belongs to device {job.udid}, not {udid}")
            if key is not None:
                done = await fetch_all(conn, "SELECT * FROM events WHERE key = %s", key)
                if done:
                    return Transition(_event_record(done[0]), await _require_device(conn, udid), job)
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
            devices = await fetch_all(
                conn,
                "WITH d AS (UPDATE devices SET state = %s, step = COALESCE(%s, step), name = COALESCE(%s, name),"
                " error_code = %s, error_message = %s, updated_at = %s WHERE udid = %s RETURNING *)"
                " SELECT d.*, p.location_id, p.port_label FROM d"
                " LEFT JOIN placements p ON p.udid = d.udid AND p.station_id = d.station_id",
                state,
                step,
                name,
                error_code,
                error_message,
                now,
                udid,
            )
            await _write_job(conn, job)
            event = await _insert_event(
                conn, kind, station_id=station_id, udid=udid, step=step, data=data, job_id=job_id, key=key
            )
            return Transition(event, _device_record(devices[0]), job)

        return await self._atomic(body)

    async def allocate_counter(self, name: str) -> int:
        async def body(conn: Conn) -> int:
            return int(
                await fetch_value(
                    conn,
                    "INSERT INTO counters (name, value) VALUES (%s, 1)"
                    " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value AS v",
                    name,
                )
            )

        return await self._atomic(body)

    async def mark_interrupted(self, station_id: str) -> list[JobRecord]:
        async def body(conn: Conn) -> list[JobRecord]:
            candidates = await fetch_all(
                conn, "SELECT udid FROM jobs WHERE station_id = %s AND status = %s ORDER BY id", station_id, RUNNING
            )
            interrupted = []
            for candidate in candidates:
                found = await _locked_job(conn, candidate["udid"], "status = 'running' AND station_id = %s", station_id)
                if found is None:
                    continue
                job = rules.interrupt(found)
                device = await _require_device(conn, job.udid)
                await _write_job(conn, job)
                await conn.execute(
                    f"UPDATE devices SET state = %s, updated_at = {NOW} WHERE udid = %s", (INTERRUPTED, job.udid)
                )
                await _insert_event(
                    conn,
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
            lambda conn: _insert_event(
                conn, kind, station_id=station_id, udid=udid, step=step, data=data, job_id=job_id, key=key
            )
        )

    async def last_event_id(self) -> int:
        return int(
            await self._atomic(
                lambda conn: fetch_value(conn, "SELECT COALESCE(MAX(id), 0) AS v FROM events"), write=False
            )
        )

    async def list_events(self, *, after_id: int = 0, udid: str | None = None, limit: int = 1000) -> list[EventRecord]:
        async def body(conn: Conn) -> list[EventRecord]:
            if udid is None:
                rows = await fetch_all(conn, "SELECT * FROM events WHERE id > %s ORDER BY id LIMIT %s", after_id, limit)
            else:
                rows = await fetch_all(
                    conn, "SELECT * FROM events WHERE id > %s AND udid = %s ORDER BY id LIMIT %s", after_id, udid, limit
                )
            return [_event_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def last_seq(self, station_id: str) -> int:
        async def body(conn: Conn) -> int:
            rows = await fetch_all(conn, "SELECT seq FROM stations WHERE id = %s", station_id)
            return int(rows[0]["seq"]) if rows else 0

        return await self._atomic(body, write=False)

    async def station_events(self, station_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[EventRecord]:
        async def body(conn: Conn) -> list[EventRecord]:
            rows = await fetch_all(
                conn,
                "SELECT * FROM events WHERE station_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                station_id,
                after_seq,
                limit,
            )
            return [_event_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def listen(self, on_notice: Notice, *, poll: float) -> None:
        """Call `on_notice` with each notification on the `stationd` channel, until cancelled; reconnect after a
        loss (with backoff), and call it with {"c": "poll"} every `poll` seconds and after each reconnection, since
        notifications sent while disconnected are lost."""
        delay = RECONNECT[0]
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **self._connect_options())
            except psycopg.Error as error:
                log.warning("store.listen_failed", database=self.shown, error=redact_text(str(error))[:200])
                await anyio.sleep(delay)
                delay = min(RECONNECT[1], delay * 2)
                continue
            delay = RECONNECT[0]
            try:
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    on_notice({"c": "poll"})
                    while True:
                        with anyio.move_on_after(poll):
                            async for notice in connection.notifies():
                                on_notice(_notice(notice.payload))
                        on_notice({"c": "poll"})
            except psycopg.Error as error:
                log.warning("store.listen_lost", database=self.shown, error=redact_text(str(error))[:200])

    # -- the fleet ------------------------------------------------------------------------------------------------
    async def heartbeat(self, station_id: str, *, fleet: str, info: dict, stopped: bool = False) -> None:
        async def body(conn: Conn) -> None:
            await conn.execute(
                f"INSERT INTO stations (id, fleet, info, last_seen, stopped) VALUES (%s, %s, %s, {NOW}, %s)"
                " ON CONFLICT (id) DO UPDATE SET fleet = excluded.fleet, info = excluded.info,"
                " last_seen = excluded.last_seen, stopped = excluded.stopped",
                (station_id, fleet, Jsonb(info), stopped),
            )

        await self._atomic(body)

    async def list_stations(self, *, fleet: str | None = None) -> list[StationRecord]:
        async def body(conn: Conn) -> list[StationRecord]:
            query = f"SELECT *, greatest(0, {NOW} - last_seen) AS age FROM stations WHERE last_seen IS NOT NULL"
            if fleet is None:
                rows = await fetch_all(conn, query + " ORDER BY id")
            else:
                rows = await fetch_all(conn, query + " AND fleet = %s ORDER BY id", fleet)
            return [
                StationRecord(
                    id=row["id"],
                    fleet=row["fleet"],
                    info=row["info"],
                    last_seen=row["last_seen"],
                    age=row["age"],
                    stopped=row["stopped"],
                )
                for row in rows
            ]

        return await self._atomic(body, write=False)

    # -- the work list --------------------------------------------------------------------------------------------
    async def import_worklist(self, items: list[WorkItem]) -> tuple[int, int]:
        async def body(conn: Conn) -> tuple[int, int]:
            before = await fetch_value(conn, "SELECT COUNT(*) AS v FROM worklist")
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    f"INSERT INTO worklist (serial, name, grp, notes, listed_at) VALUES (%s, %s, %s, %s, {NOW})"
                    " ON CONFLICT (serial) DO UPDATE SET name = excluded.name, grp = excluded.grp,"
                    " notes = excluded.notes, listed_at = excluded.listed_at",
                    [(item.serial, item.name, item.group, item.notes) for item in items],
                )
            added = await fetch_value(conn, "SELECT COUNT(*) AS v FROM worklist") - before
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"c": "worklist"})))
            return int(added), len(items) - int(added)

        return await self._atomic(body)

    async def work_item(self, serial: str) -> WorkItem | None:
        async def body(conn: Conn) -> WorkItem | None:
            rows = await fetch_all(conn, "SELECT * FROM worklist WHERE serial = %s", serial)
            return _work_item(rows[0]) if rows else None

        return await self._atomic(body, write=False)

    async def list_worklist(self) -> list[WorkItem]:
        async def body(conn: Conn) -> list[WorkItem]:
            return [_work_item(row) for row in await fetch_all(conn, "SELECT * FROM worklist ORDER BY serial")]

        return await self._atomic(body, write=False)

    # -- blueprints -----------------------------------------------------------------------------------------------
    async def push_blueprint(self, name: str, content: dict, *, station_id: str) -> BlueprintRecord:
        async def body(conn: Conn) -> BlueprintRecord:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK, name))
            rows = await fetch_all(
                conn,
                "INSERT INTO blueprints (name, version, created_at, station_id, content)"
                f" SELECT %s, COALESCE(MAX(version), 0) + 1, {NOW}, %s, %s FROM blueprints WHERE name = %s"
                " RETURNING *",
                name,
                station_id,
                Jsonb(content),
                name,
            )
            record = _blueprint(rows[0])
            notice = {"c": "blueprint", "name": name, "version": record.version}
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(notice)))
            return record

        return await self._atomic(body)

    async def get_blueprint(self, name: str, version: int | None = None) -> BlueprintRecord | None:
        async def body(conn: Conn) -> BlueprintRecord | None:
            if version is None:
                rows = await fetch_all(
                    conn, "SELECT * FROM blueprints WHERE name = %s ORDER BY version DESC LIMIT 1", name
                )
            else:
                rows = await fetch_all(conn, "SELECT * FROM blueprints WHERE name = %s AND version = %s", name, version)
            return _blueprint(rows[0]) if rows else None

        return await self._atomic(body, write=False)

    async def list_blueprints(self) -> list[BlueprintRecord]:
        async def body(conn: Conn) -> list[BlueprintRecord]:
            return [_blueprint(row) for row in await fetch_all(conn, "SELECT * FROM blueprints ORDER BY name, version")]

        return await self._atomic(body, write=False)

    # -- transactions ---------------------------------------------------------------------------------------------
    async def _event(
        self,
        conn: Conn,
        kind: str,
        *,
        station_id: str,
        udid: str | None = None,
        job_id: int | None = None,
        data: dict | None = None,
    ) -> EventRecord:
        """Append to a station's trail within a transaction of the outbox's."""
        return await _insert_event(conn, kind, station_id=station_id, udid=udid, job_id=job_id, data=data)

    async def _atomic(self, body: Body[T], *, write: bool = True) -> T:
        """Run body in one transaction on a pooled connection.

        A caller cancelled before the call begins writes nothing; once begun, the transaction is shielded and runs
        to its end (bounded by the pool's and the connection's timeouts), so cancellation never leaves one open.
        A read that meets a dropped connection (the server restarted) is tried once more on a fresh one."""
        await anyio.lowlevel.checkpoint()
        with anyio.CancelScope(shield=True):
            for attempt in (1, 2):
                pool = self._require_open()
                try:
                    async with pool.connection() as conn:
                        async with conn.transaction():
                            return await body(conn)
                except PoolTimeout as error:
                    raise StoreUnavailable(self._unreachable(error)) from error
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:  # the connection, not the SQL
                    if write or attempt == 2:
                        raise StoreUnavailable(self._unreachable(error)) from error
                except psycopg.Error as error:
                    raise StoreError(f"the fleet database {self.shown} refused: {redact_text(str(error))}") from error
        raise AssertionError("unreachable")

    def _unreachable(self, error: BaseException) -> str:
        detail = redact_text(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return (
            f"the fleet database {self.shown} cannot be reached ({detail[:300]}): check that the server runs and "
            "that this station may reach it (address, port, firewall, [store] password_file)"
        )

    def _require_open(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StoreError("store is not open: use 'async with open_store(...)' or 'await store.open()'")
        return self._pool

    async def _migrate_one_step(self, conn: Conn) -> bool:
        """Apply the next pending migration (under an advisory lock: stations starting together wait their turn);
        False when the schema is current."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at float8 NOT NULL)"
        )
        version, latest = (
            int(await fetch_value(conn, "SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")),
            len(MIGRATIONS),
        )
        if version > latest:
            raise StoreError(
                f"the fleet database {self.shown} has schema version {version} but this stationd knows only up to"
                f" {latest}: upgrade stationd on this station (every station of a fleet runs the same version)"
            )
        if version == latest:
            return False
        for statement in MIGRATIONS[version]:
            await conn.execute(statement)
        await conn.execute(f"INSERT INTO schema_version (version, applied_at) VALUES (%s, {NOW})", (version + 1,))
        return True


async def _insert_event(
    conn: Conn,
    kind: str,
    *,
    station_id: str,
    udid: str | None = None,
    step: str | None = None,
    data: dict | None = None,
    job_id: int | None = None,
    key: str | None = None,
) -> EventRecord:
    if key is not None:
        done = await fetch_all(conn, "SELECT * FROM events WHERE key = %s", key)
        if done:
            return _event_record(done[0])
    params = {
        "station_id": station_id,
        "kind": kind,
        "udid": udid,
        "step": step,
        "job_id": job_id,
        "data": Jsonb(data or {}),
        "key": key,
    }
    cursor = await conn.execute(INSERT_EVENT, params)
    row = await cursor.fetchone()
    assert row is not None
    return _event_record(row)


async def _device(conn: Conn, udid: str, *, lock: bool = False) -> DeviceRecord | None:
    if lock:
        rows = await fetch_all(conn, "SELECT udid FROM devices WHERE udid = %s FOR UPDATE", udid)
        if not rows:
            return None
    rows = await fetch_all(conn, f"{DEVICES} WHERE d.udid = %s", udid)
    return _device_record(rows[0]) if rows else None


async def _locked_job(
    conn: Conn, udid: str, condition: str, *params: Any, skip_locked: bool = False
) -> JobRecord | None:
    """The device's job meeting `condition`, locked: the device's row first, then the job's (the order every
    writer of a device takes them in, so no two transactions wait for each other)."""
    wait = " SKIP LOCKED" if skip_locked else ""
    if not await fetch_all(conn, f"SELECT udid FROM devices WHERE udid = %s FOR UPDATE{wait}", udid):
        return None
    rows = await fetch_all(conn, f"SELECT * FROM jobs WHERE udid = %s AND {condition} FOR UPDATE{wait}", udid, *params)
    return _job_record(rows[0]) if rows else None


async def _require_device(conn: Conn, udid: str) -> DeviceRecord:
    device = await _device(conn, udid)
    if device is None:
        raise StoreError(f"unknown device {udid}")
    return device


async def _job(conn: Conn, job_id: int) -> JobRecord | None:
    rows = await fetch_all(conn, "SELECT * FROM jobs WHERE id = %s", job_id)
    return _job_record(rows[0]) if rows else None


async def _write_job(conn: Conn, job: JobRecord) -> None:
    await conn.execute(
        "UPDATE jobs SET station_id = %s, status = %s, completed_steps = %s, step_data = %s, attempts = %s,"
        " finished_at = %s, error_code = %s, error_message = %s, fence = %s, lease_until = %s WHERE id = %s",
        (
            job.station_id,
            job.status,
            Jsonb(job.completed_steps),
            Jsonb(job.step_data),
            Jsonb(job.attempts),
            job.finished_at,
            job.error_code,
            job.error_message,
            job.fence,
            job.lease_until,
            job.id,
        ),
    )


def _notice(payload: str) -> dict[str, Any]:
    try:
        notice = json.loads(payload)
    except ValueError:
        return {"c": "poll"}
    return notice if isinstance(notice, dict) else {"c": "poll"}


def _device_record(row: dict[str, Any]) -> DeviceRecord:
    return DeviceRecord(
        udid=row["udid"],
        serial=row["serial"],
        ecid=row["ecid"],
        facts=row["facts"],
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


def _job_record(row: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        udid=row["udid"],
        station_id=row["station_id"],
        status=row["status"],
        completed_steps=row["completed_steps"],
        step_data=row["step_data"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        fence=row["fence"],
        lease_until=row["lease_until"],
    )


def _event_record(row: dict[str, Any]) -> EventRecord:
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
        data=row["data"],
        job_id=row["job_id"],
        seq=row["seq"],
    )


def _work_item(row: dict[str, Any]) -> WorkItem:
    return WorkItem(serial=row["serial"], name=row["name"], group=row["grp"], notes=row["notes"])


def _blueprint(row: dict[str, Any]) -> BlueprintRecord:
    return BlueprintRecord(
        name=row["name"],
        version=row["version"],
        created_at=row["created_at"],
        station_id=row["station_id"],
        content=row["content"],
    )
