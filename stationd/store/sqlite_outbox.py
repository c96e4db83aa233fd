"""The outbox on SQLite: deliveries, the trail readers' places, shared budgets and Apple assignments.

SQLiteStore mixes this in; every method is one transaction of the store's (`_atomic`). On one station the claims
only matter across a restart (`release_deliveries`); the same contract on a shared database makes them fleet-wide.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

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
from stationd.store.records import EventRecord

T = TypeVar("T")

MIGRATION: tuple[str, ...] = (
    """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        reporter TEXT NOT NULL,
        udid TEXT NOT NULL,
        serial TEXT,
        job_id INTEGER NOT NULL,
        station_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL NOT NULL,
        claimed_by TEXT,
        claimed_until REAL,
        progress TEXT NOT NULL DEFAULT '{}',
        message TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        done_at REAL
    )
    """,
    "CREATE INDEX deliveries_due ON deliveries (reporter, status, due_at)",
    "CREATE INDEX deliveries_udid ON deliveries (udid, id)",
    "CREATE TABLE trail_readers (name TEXT PRIMARY KEY, event_id INTEGER NOT NULL)",
    "CREATE TABLE budget_spent (name TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX budget_spent_name ON budget_spent (name, at)",
    "CREATE TABLE budget_holds (name TEXT PRIMARY KEY, until REAL NOT NULL)",
    """
    CREATE TABLE apple_assignments (
        serial TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        server TEXT,
        message TEXT,
        activity TEXT,
        checked_at REAL NOT NULL
    )
    """,
)

JSON_COLUMNS = ("payload", "progress")
EVENT_OF = {Outcome.DONE: "report.done", Outcome.FAILED: "report.failed", Outcome.RETRY: "report.retrying"}


class SQLiteOutbox(Outbox):
    if TYPE_CHECKING:
        _clock: Callable[[], float]

        async def _atomic(self, body: Callable[[aiosqlite.Connection], Awaitable[T]], *, write: bool = True) -> T: ...

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
        ) -> EventRecord: ...

    async def queue_reports(
        self, events: Sequence[EventRecord], reporters: Sequence[str], *, reader: str, read_to: int, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        async def body(db: aiosqlite.Connection) -> tuple[list[Delivery], list[EventRecord]]:
            now = self._clock()
            made: list[Delivery] = []
            written: list[EventRecord] = []
            for event in events:
                if event.kind != "device.reported" or event.udid is None or event.job_id is None:
                    continue
                payload = event.data.get("device") or {}
                serial = payload.get("serial") or event.serial
                for reporter in reporters:
                    key = delivery_key(event.udid, reporter, event.job_id)
                    cursor = await db.execute(
                        "INSERT INTO deliveries (key, reporter, udid, serial, job_id, station_id, payload, status,"
                        " due_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)"
                        " ON CONFLICT (key) DO NOTHING",
                        (
                            key,
                            reporter,
                            event.udid,
                            serial,
                            event.job_id,
                            event.station_id,
                            _dumps(payload),
                            now,
                            now,
                            now,
                        ),
                    )
                    if not cursor.rowcount:
                        continue
                    made.append(await _require(db, key))
                    written.append(
                        await self._insert_event(
                            db,
                            "report.queued",
                            station_id=station_id,
                            udid=event.udid,
                            job_id=event.job_id,
                            data={"reporter": reporter, "key": key, "status": DeliveryStatus.PENDING},
                        )
                    )
            await db.execute(
                "INSERT INTO trail_readers (name, event_id) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET event_id = MAX(event_id, excluded.event_id)",
                (reader, read_to),
            )
            return made, written

        return await self._atomic(body)

    async def report_cursor(self, reader: str) -> int | None:
        async def body(db: aiosqlite.Connection) -> int | None:
            rows = list(await db.execute_fetchall("SELECT event_id FROM trail_readers WHERE name = ?", (reader,)))
            return int(rows[0][0]) if rows else None

        return await self._atomic(body, write=False)

    async def claim_deliveries(
        self, reporter: str, *, claimer: str, limit: int, lease: float, window: float = 0.0
    ) -> list[Delivery]:
        if limit < 1:
            raise ValueError("claim_deliveries needs a limit of 1 or more")

        async def body(db: aiosqlite.Connection) -> list[Delivery]:
            now = self._clock()
            rows = await db.execute_fetchall(
                "SELECT * FROM deliveries WHERE reporter = ? AND status = 'pending' AND due_at <= ?"
                " AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY due_at, id LIMIT ?",
                (reporter, now, now, limit),
            )
            found = [_record(row) for row in rows]
            if not found:
                return []
            if window > 0 and len(found) < limit and min(d.created_at for d in found) > now - window:
                return []
            await db.executemany(
                "UPDATE deliveries SET claimed_by = ?, claimed_until = ?, updated_at = ? WHERE id = ?",
                [(claimer, now + lease, now, d.id) for d in found],
            )
            for delivery in found:
                delivery.claimed_by, delivery.claimed_until, delivery.updated_at = claimer, now + lease, now
            return found

        return await self._atomic(body)

    async def release_deliveries(self, claimer: str) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            cursor = await db.execute(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?", (claimer,)
            )
            return int(cursor.rowcount or 0)

        return await self._atomic(body)

    async def note_deliveries(self, keys: Iterable[str], progress: dict[str, Any]) -> None:
        wanted = list(keys)

        async def body(db: aiosqlite.Connection) -> None:
            now = self._clock()
            for key in wanted:
                delivery = await _require(db, key)
                await db.execute(
                    "UPDATE deliveries SET progress = ?, updated_at = ? WHERE key = ?",
                    (_dumps(deep_merge(delivery.progress, progress)), now, key),
                )

        await self._atomic(body)

    async def settle_deliveries(
        self, settlements: Sequence[Settlement], *, station_id: str
    ) -> tuple[list[Delivery], list[EventRecord]]:
        async def body(db: aiosqlite.Connection) -> tuple[list[Delivery], list[EventRecord]]:
            now = self._clock()
            settled: list[Delivery] = []
            written: list[EventRecord] = []
            for settlement in settlements:
                delivery = await _require(db, settlement.key)
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
                await db.execute(
                    "UPDATE deliveries SET status = ?, attempts = ?, due_at = ?, claimed_by = NULL,"
                    " claimed_until = NULL, progress = ?, message = ?, updated_at = ?, done_at = ? WHERE id = ?",
                    (
                        status,
                        attempts,
                        due_at,
                        _dumps(deep_merge(delivery.progress, settlement.progress)),
                        message,
                        now,
                        done_at,
                        delivery.id,
                    ),
                )
                current = await _require(db, settlement.key)
                settled.append(current)
                if outcome in EVENT_OF:
                    written.append(await self._delivery_event(db, EVENT_OF[outcome], current, station_id))
            return settled, written

        return await self._atomic(body)

    async def requeue_deliveries(
        self, *, station_id: str, reporter: str | None = None, udid: str | None = None
    ) -> tuple[list[Delivery], list[EventRecord]]:
        where, params = _where(status=DeliveryStatus.FAILED, reporter=reporter, udid=udid)

        async def body(db: aiosqlite.Connection) -> tuple[list[Delivery], list[EventRecord]]:
            now = self._clock()
            rows = await db.execute_fetchall(f"SELECT * FROM deliveries {where} ORDER BY id", params)
            requeued, written = [], []
            for row in rows:
                delivery = _record(row)
                await db.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, due_at = ?, claimed_by = NULL,"
                    " claimed_until = NULL, message = NULL, updated_at = ? WHERE id = ?",
                    (now, now, delivery.id),
                )
                current = await _require(db, delivery.key)
                requeued.append(current)
                written.append(await self._delivery_event(db, "report.queued", current, station_id))
            return requeued, written

        return await self._atomic(body)

    async def list_deliveries(
        self, *, udid: str | None = None, reporter: str | None = None, status: str | None = None
    ) -> list[Delivery]:
        where, params = _where(status=status, reporter=reporter, udid=udid)

        async def body(db: aiosqlite.Connection) -> list[Delivery]:
            rows = await db.execute_fetchall(f"SELECT * FROM deliveries {where} ORDER BY id", params)
            return [_record(row) for row in rows]

        return await self._atomic(body, write=False)

    async def next_delivery_at(self, reporter: str, *, window: float = 0.0) -> float | None:
        async def body(db: aiosqlite.Connection) -> float | None:
            rows = list(
                await db.execute_fetchall(
                    "SELECT MIN(MAX(due_at, COALESCE(claimed_until, 0), created_at + ?)) FROM deliveries"
                    " WHERE reporter = ? AND status = 'pending'",
                    (window, reporter),
                )
            )
            value = rows[0][0] if rows else None
            return None if value is None else float(value)

        return await self._atomic(body, write=False)

    async def take_budget(self, name: str, *, limit: int, period: float) -> float:
        if limit < 1 or period <= 0:
            raise ValueError("a budget needs a limit of 1 or more calls per a period of more than 0 seconds")

        async def body(db: aiosqlite.Connection) -> float:
            now = self._clock()
            held = list(await db.execute_fetchall("SELECT until FROM budget_holds WHERE name = ?", (name,)))
            if held and float(held[0][0]) > now:
                return float(held[0][0]) - now
            await db.execute("DELETE FROM budget_spent WHERE name = ? AND at <= ?", (name, now - period))
            spent = list(
                await db.execute_fetchall(
                    "SELECT COUNT(*), MIN(at) FROM budget_spent WHERE name = ?",
                    (name,),
                )
            )[0]
            if int(spent[0]) >= limit:
                return max(float(spent[1]) + period - now, 0.001)
            await db.execute("INSERT INTO budget_spent (name, at) VALUES (?, ?)", (name, now))
            return 0.0

        return await self._atomic(body)

    async def hold_budget(self, name: str, until: float) -> None:
        await self._atomic(
            lambda db: db.execute(
                "INSERT INTO budget_holds (name, until) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET until = MAX(until, excluded.until)",
                (name, until),
            )
        )

    async def record_assignments(self, assignments: Iterable[Assignment]) -> None:
        given = checked_assignments(assignments)

        async def body(db: aiosqlite.Connection) -> None:
            now = self._clock()
            await db.executemany(
                "INSERT INTO apple_assignments (serial, status, server, message, activity, checked_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO UPDATE SET status = excluded.status,"
                " server = excluded.server, message = excluded.message, activity = excluded.activity,"
                " checked_at = excluded.checked_at",
                [(a.serial, a.status, a.server, a.message, a.activity, a.checked_at or now) for a in given],
            )

        await self._atomic(body)

    async def get_assignments(
        self, serials: Iterable[str] | None = None, *, status: str | None = None
    ) -> dict[str, Assignment]:
        wanted = None if serials is None else set(serials)

        async def body(db: aiosqlite.Connection) -> dict[str, Assignment]:
            where, params = ("WHERE status = ?", (status,)) if status is not None else ("", ())
            rows = await db.execute_fetchall(f"SELECT * FROM apple_assignments {where}", params)
            return {
                row["serial"]: Assignment.from_row(row) for row in rows if wanted is None or row["serial"] in wanted
            }

        return await self._atomic(body, write=False)

    async def _delivery_event(
        self, db: aiosqlite.Connection, kind: str, delivery: Delivery, station_id: str
    ) -> EventRecord:
        return await self._insert_event(
            db,
            kind,
            station_id=station_id,
            udid=delivery.udid,
            job_id=delivery.job_id,
            data=delivery.event_data(),
        )


def _where(**given: str | None) -> tuple[str, tuple[Any, ...]]:
    parts = [(f"{column} = ?", value) for column, value in given.items() if value is not None]
    if not parts:
        return "", ()
    return "WHERE " + " AND ".join(part for part, _ in parts), tuple(value for _, value in parts)


async def _require(db: aiosqlite.Connection, key: str) -> Delivery:
    rows = list(await db.execute_fetchall("SELECT * FROM deliveries WHERE key = ?", (key,)))
    if not rows:
        raise StoreError(f"unknown delivery {key}")
    return _record(rows[0])


def _record(row: Any) -> Delivery:
    return Delivery(
        **{f.name: json.loads(row[f.name]) if f.name in JSON_COLUMNS else row[f.name] for f in fields(Delivery)}
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
