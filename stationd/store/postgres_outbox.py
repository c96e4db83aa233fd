"""The outbox on PostgreSQL: deliveries, the trail readers' places, shared budgets and Apple assignments, fleet-wide.

PostgresStore mixes this in; every method is one transaction of the store's (`_atomic`). What the fleet adds to
the single station's rules (`sqlite_outbox`): two stations claiming at once take different deliveries
(`FOR UPDATE SKIP LOCKED`), and a budget is spent under a transaction-scoped advisory lock on its name, so the
stations of a fleet together never make more calls than Apple or an MDM allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg.types.json import Jsonb

from stationd.store.base import Outbox, StoreError, deep_merge
from stationd.store.outbox import (
    Assignment,
    Delivery,
    DeliveryStatus,
    Outcome,
    Settlement,
    checked_assignments,
    delivery_key,
)
from stationd.store.pgsql import NOW, Conn, fetch_all, fetch_value
from stationd.store.records import EventRecord

T = TypeVar("T")

BUDGET_LOCK = 7_253_002  # pg_advisory_xact_lock(BUDGET_LOCK, hashtext(name)): one spender of a budget at a time

MIGRATION: tuple[str, ...] = (
    """
    CREATE TABLE deliveries (
        id bigserial PRIMARY KEY,
        key text NOT NULL UNIQUE,
        reporter text NOT NULL,
        udid text NOT NULL,
        serial text,
        job_id bigint NOT NULL,
        station_id text NOT NULL,
        payload jsonb NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        due_at float8 NOT NULL,
        claimed_by text,
        claimed_until float8,
        progress jsonb NOT NULL DEFAULT '{}',
        message text,
        created_at float8 NOT NULL,
        updated_at float8 NOT NULL,
        done_at float8
    )
    """,
    "CREATE INDEX deliveries_due ON deliveries (reporter, status, due_at)",
    "CREATE INDEX deliveries_udid ON deliveries (udid, id)",
    "CREATE TABLE trail_readers (name text PRIMARY KEY, seq bigint NOT NULL)",
    "CREATE TABLE budget_spent (name text NOT NULL, at float8 NOT NULL)",
    "CREATE INDEX budget_spent_name ON budget_spent (name, at)",
    "CREATE TABLE budget_holds (name text PRIMARY KEY, until float8 NOT NULL)",
    """
    CREATE TABLE apple_assignments (
        serial text PRIMARY KEY,
        status text NOT NULL,
        server text,
        message text,
        activity text,
        checked_at float8 NOT NULL
    )
    """,
)

EVENT_OF = {Outcome.DONE: "report.done", Outcome.FAILED: "report.failed", Outcome.RETRY: "report.retrying"}
UNCLAIMED = "status = 'pending' AND due_at <= %(now)s AND (claimed_until IS NULL OR claimed_until <= %(now)s)"


class PostgresOutbox(Outbox):
    if TYPE_CHECKING:

        async def _atomic(self, body: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T: ...

        async def _event(
            self,
            conn: Conn,
            kind: str,
            *,
            station_id: str,
            udid: str | None = None,
            job_id: int | None = None,
            data: dict | None = None,
        ) -> EventRecord: ...

    async def queue_reports(
        self, events: Sequence[EventRecord], reporters: Sequence[str], *, reader: str, read_to: int, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        async def body(conn: Conn) -> tuple[list[Delivery], list[EventRecord]]:
            made: list[Delivery] = []
            written: list[EventRecord] = []
            for event in events:
                if event.kind != "device.reported" or event.udid is None or event.job_id is None:
                    continue
                payload = event.data.get("device") or {}
                for reporter in reporters:
                    key = delivery_key(event.udid, reporter, event.job_id)
                    rows = await fetch_all(
                        conn,
                        "INSERT INTO deliveries (key, reporter, udid, serial, job_id, station_id, payload, status,"
                        f" due_at, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', {NOW},"
                        f" {NOW}, {NOW}) ON CONFLICT (key) DO NOTHING RETURNING *",
                        key,
                        reporter,
                        event.udid,
                        payload.get("serial") or event.serial,
                        event.job_id,
                        event.station_id,
                        Jsonb(payload),
                    )
                    if not rows:
                        continue
                    made.append(_record(rows[0]))
                    written.append(
                        await self._event(
                            conn,
                            "report.queued",
                            station_id=station_id,
                            udid=event.udid,
                            job_id=event.job_id,
                            data={"reporter": reporter, "key": key, "status": DeliveryStatus.PENDING},
                        )
                    )
            await conn.execute(
                "INSERT INTO trail_readers (name, seq) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET seq = GREATEST(trail_readers.seq, excluded.seq)",
                (reader, read_to),
            )
            return made, written

        return await self._atomic(body)

    async def report_cursor(self, reader: str) -> int | None:
        async def body(conn: Conn) -> int | None:
            rows = await fetch_all(conn, "SELECT seq FROM trail_readers WHERE name = %s", reader)
            return int(rows[0]["seq"]) if rows else None

        return await self._atomic(body, write=False)

    async def claim_deliveries(
        self, reporter: str, *, claimer: str, limit: int, lease: float, window: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError("claim_deliveries needs a limit of 1 or more")

        async def body(conn: Conn) -> list[Delivery]:
            now = float(await fetch_value(conn, f"SELECT {NOW} AS v"))
            cursor = await conn.execute(
                f"SELECT * FROM deliveries WHERE reporter = %(reporter)s AND {UNCLAIMED}"
                " ORDER BY due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
                {"reporter": reporter, "now": now, "limit": limit},
            )
            found = [_record(row) for row in await cursor.fetchall()]
            if not found:
                return []
            if window > 0 and len(found) < limit and min(d.created_at for d in found) > now - window:
                return []
            rows = await fetch_all(
                conn,
                "UPDATE deliveries SET claimed_by = %s, claimed_until = %s, updated_at = %s WHERE id = ANY(%s)"
                " RETURNING *",
                claimer,
                now + lease,
                now,
                [d.id for d in found],
            )
            return sorted((_record(row) for row in rows), key=lambda d: (d.due_at, d.id))

        return await self._atomic(body)

    async def release_deliveries(self, claimer: str) -> int:
        async def body(conn: Conn) -> int:
            cursor = await conn.execute(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s", (claimer,)
            )
            return max(cursor.rowcount, 0)

        return await self._atomic(body)

    async def note_deliveries(self, keys: Iterable[str], progress: dict[str, Any]) -> None:
        wanted = list(keys)

        async def body(conn: Conn) -> None:
            for key in wanted:
                delivery = await _require(conn, key)
                await conn.execute(
                    f"UPDATE deliveries SET progress = %s, updated_at = {NOW} WHERE key = %s",
                    (Jsonb(deep_merge(delivery.progress, progress)), key),
                )

        await self._atomic(body)

    async def settle_deliveries(
        self, settlements: Sequence[Settlement], *, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        async def body(conn: Conn) -> tuple[list[Delivery], list[EventRecord]]:
            now = float(await fetch_value(conn, f"SELECT {NOW} AS v"))
            settled: list[Delivery] = []
            written: list[EventRecord] = []
            for settlement in settlements:
                delivery = await _require(conn, settlement.key)
                outcome = Outcome(settlement.outcome)
                status, done_at = DeliveryStatus.PENDING, None
                attempts = delivery.attempts + (0 if outcome == Outcome.DEFER else 1)
                due_at = delivery.due_at
                if outcome == Outcome.DONE:
                    status, done_at = DeliveryStatus.DONE, now
                elif outcome == Outcome.FAILED:
                    status = DeliveryStatus.FAILED
                else:
                    due_at = settlement.due_at if settlement.due_at is not None else now
                message = settlement.message if outcome != Outcome.DEFER or settlement.message else delivery.message
                rows = await fetch_all(
                    conn,
                    "UPDATE deliveries SET status = %s, attempts = %s, due_at = %s, claimed_by = NULL,"
                    " claimed_until = NULL, progress = %s, message = %s, updated_at = %s, done_at = %s WHERE id = %s"
                    " RETURNING *",
                    str(status),
                    attempts,
                    due_at,
                    Jsonb(deep_merge(delivery.progress, settlement.progress)),
                    message,
                    now,
                    done_at,
                    delivery.id,
                )
                current = _record(rows[0])
                settled.append(current)
                if outcome in EVENT_OF:
                    written.append(await self._delivery_event(conn, EVENT_OF[outcome], current, station_id))
            return settled, written

        return await self._atomic(body)

    async def requeue_deliveries(
        self, *, station_id: str, reporter: str | None = None, udid: str | None = None
    ) -> tuple[list[Delivery], list[EventRecord]]:
        where, params = _where(status=DeliveryStatus.FAILED, reporter=reporter, udid=udid)

        async def body(conn: Conn) -> tuple[list[Delivery], list[EventRecord]]:
            rows = await fetch_all(
                conn,
                f"UPDATE deliveries SET status = 'pending', attempts = 0, due_at = {NOW}, claimed_by = NULL,"
                f" claimed_until = NULL, message = NULL, updated_at = {NOW} {where} RETURNING *",
                *params,
            )
            requeued = sorted((_record(row) for row in rows), key=lambda d: d.id)
            written = [await self._delivery_event(conn, "report.queued", d, station_id) for d in requeued]
            return requeued, written

        return await self._atomic(body)

    async def list_deliveries(
        self, *, udid: str | None = None, reporter: str | None = None, status: str | None = None
    ) -> list[Delivery]:
        where, params = _where(status=status, reporter=reporter, udid=udid)

        async def body(conn: Conn) -> list[Delivery]:
            rows = await fetch_all(conn, f"SELECT * FROM deliveries {where} ORDER BY id", *params)
            return [_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def next_delivery_at(self, reporter: str, *, window: float = 0.0) -> float | None:
        async def body(conn: Conn) -> float | None:
            value = await fetch_value(
                conn,
                "SELECT MIN(GREATEST(due_at, COALESCE(claimed_until, 0), created_at + %s)) AS v FROM deliveries"
                " WHERE reporter = %s AND status = 'pending'",
                window,
                reporter,
            )
            return None if value is None else float(value)

        return await self._atomic(body, write=False)

    async def take_budget(self, name: str, *, limit: int, period: float) -> float:
        if limit < 1 or period <= 0:
            raise ValueError("a budget needs a limit of 1 or more calls per a period of more than 0 seconds")

        async def body(conn: Conn) -> float:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (BUDGET_LOCK, name))
            now = float(await fetch_value(conn, f"SELECT {NOW} AS v"))
            held = await fetch_all(conn, "SELECT until FROM budget_holds WHERE name = %s", name)
            if held and float(held[0]["until"]) > now:
                return float(held[0]["until"]) - now
            await conn.execute("DELETE FROM budget_spent WHERE name = %s AND at <= %s", (name, now - period))
            spent = (
                await fetch_all(conn, "SELECT COUNT(*) AS n, MIN(at) AS first FROM budget_spent WHERE name = %s", name)
            )[0]
            if int(spent["n"]) >= limit:
                return max(float(spent["first"]) + period - now, 0.001)
            await conn.execute("INSERT INTO budget_spent (name, at) VALUES (%s, %s)", (name, now))
            return 0.0

        return await self._atomic(body)

    async def hold_budget(self, name: str, until: float) -> None:
        await self._atomic(
            lambda conn: conn.execute(
                "INSERT INTO budget_holds (name, until) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET until = GREATEST(budget_holds.until, excluded.until)",
                (name, until),
            )
        )

    async def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        given = checked_assignments(assignments)

        async def body(conn: Conn) -> None:
            async with conn.cursor() as cursor:  # one batch for a whole activity's serials, not a round trip each
                await cursor.executemany(
                    "INSERT INTO apple_assignments (serial, status, server, message, activity, checked_at)"
                    f" VALUES (%s, %s, %s, %s, %s, COALESCE(%s, {NOW})) ON CONFLICT (serial) DO UPDATE SET"
                    " status = excluded.status, server = excluded.server, message = excluded.message,"
                    " activity = excluded.activity, checked_at = excluded.checked_at",
                    [(a.serial, a.status, a.server, a.message, a.activity, a.checked_at or None) for a in given],
                )

        await self._atomic(body)

    async def get_assignments(
        self, serials: Iterable[str] | None = None, *, status: str | None = None
    ) -> dict[str, Assignment]:
        wanted = None if serials is None else list(set(serials))
        where, params = _where(status=status)
        if wanted is not None:
            where = f"{where} AND serial = ANY(%s)" if where else "WHERE serial = ANY(%s)"
            params = (*params, wanted)

        async def body(conn: Conn) -> dict[str, Assignment]:
            rows = await fetch_all(conn, f"SELECT * FROM apple_assignments {where}", *params)
            return {row["serial"]: Assignment.from_row(row) for row in rows}

        return await self._atomic(body, write=False)

    async def _delivery_event(self, conn: Conn, kind: str, delivery: Delivery, station_id: str) -> EventRecord:
        return await self._event(
            conn,
            kind,
            station_id=station_id,
            udid=delivery.udid,
            job_id=delivery.job_id,
            data=delivery.event_data(),
        )


def _where(**given: str | None) -> tuple[str, tuple[Any, ...]]:
    parts = [(f"{column} = %s", value) for column, value in given.items() if value is not None]
    if not parts:
        return "", ()
    return "WHERE " + " AND ".join(part for part, _ in parts), tuple(value for _, value in parts)


async def _require(conn: Conn, key: str) -> Delivery:
    rows = await fetch_all(conn, "SELECT * FROM deliveries WHERE key = %s FOR UPDATE", key)
    if not rows:
        raise StoreError(f"unknown delivery {key}")
    return _record(rows[0])


def _record(row: dict[str, Any]) -> Delivery:
    return Delivery(**{f.name: row[f.name] for f in fields(Delivery)})
