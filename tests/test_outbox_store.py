"""The outbox's store contract, written against the `Store` interface and run on every backend: SQLite with a clock
the test moves, PostgreSQL (the server's clock) with its stored times moved back instead; plus what a fleet adds:
two stations claiming at once, and one budget shared by all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psycopg
import pytest

from stationd.store import Assignment, DeliveryStatus, EventRecord, Outcome, Settlement, Store, open_store

pytestmark = pytest.mark.anyio

STATION = "station-a"
SHIFTED = {
    "deliveries": ("due_at", "claimed_until", "created_at", "updated_at", "done_at"),
    "budget_spent": ("at",),
    "budget_holds": ("until",),
    "apple_assignments": ("checked_at",),
}


class Clock:
    """The store's time, moved by hand: SQLite's clock, or every time PostgreSQL holds moved back by as much."""

    def __init__(self, pg_url: str | None = None) -> None:
        self.pg_url = pg_url
        self.at = 1_700_000_000.0

    def __call__(self) -> float:
        return self.at

    async def now(self, store: Store) -> float:
        return await store.now() if self.pg_url else self.at

    async def travel(self, seconds: float) -> None:
        if self.pg_url is None:
            self.at += seconds
            return
        async with await psycopg.AsyncConnection.connect(self.pg_url) as conn:
            for table, columns in SHIFTED.items():
                moved = ", ".join(f"{column} = {column} - %(s)s" for column in columns)
                await conn.execute(f"UPDATE {table} SET {moved}", {"s": seconds})


def near(value: float) -> object:
    """The server's clock moves while a test runs: a time read from it is within a second of what is expected."""
    return pytest.approx(value, abs=1.0)


@pytest.fixture(params=["sqlite", "postgres"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return Clock(request.getfixturevalue("pg_url") if request.param == "postgres" else None)


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with open_store(clock.pg_url or tmp_path / "stationd.db", clock=clock) as opened:
        yield opened


async def reported(store: Store, n: int) -> list[EventRecord]:
    """n finished iPads, each with its `device.reported` event as the job log writes it."""
    events = []
    for i in range(n):
        udid = f"UDID-{i}"
        await store.upsert_device(udid, serial=f"SERIAL{i}")
        job = await store.claim_job(udid, STATION)
        events.append(
            await store.add_event(
                "device.reported",
                station_id=STATION,
                udid=udid,
                job_id=job.id,
                data={"device": {"serial": f"SERIAL{i}", "udid": udid, "name": f"iPad {i}"}},
            )
        )
    return events


async def test_each_report_is_queued_once_per_reporter_however_often_the_trail_is_read(store: Store) -> None:
    events = await reported(store, 3)
    made, written = await store.queue_reports(
        events, ["asm", "jamf"], reader="outbox:a", read_to=events[-1].seq, station_id=STATION
    )
    assert len(made) == 6 and [e.kind for e in written] == ["report.queued"] * 6
    assert {d.key for d in made} == {f"UDID-{i}/{r}/{e.job_id}" for i, e in enumerate(events) for r in ("asm", "jamf")}
    assert made[0].payload == events[0].data["device"] and made[0].serial == "SERIAL0"
    again, none = await store.queue_reports(events, ["asm", "jamf"], reader="outbox:b", read_to=5, station_id=STATION)
    assert again == [] and none == []
    assert await store.report_cursor("outbox:a") == events[-1].seq
    assert await store.report_cursor("outbox:b") == 5
    assert await store.report_cursor("nobody") is None
    await store.queue_reports([], ["asm"], reader="outbox:a", read_to=1, station_id=STATION)
    assert await store.report_cursor("outbox:a") == events[-1].seq, "a place in the trail never moves back"


async def test_claims_are_exclusive_until_settled_or_their_lease_ends(store: Store, clock: Clock) -> None:
    events = await reported(store, 3)
    await store.queue_reports(events, ["asm"], reader="r", read_to=events[-1].seq, station_id=STATION)
    first = await store.claim_deliveries("asm", claimer="station-a", limit=2, lease=60)
    assert [d.serial for d in first] == ["SERIAL0", "SERIAL1"]
    second = await store.claim_deliveries("asm", claimer="station-b", limit=10, lease=60)
    assert [d.serial for d in second] == ["SERIAL2"]
    assert await store.claim_deliveries("asm", claimer="station-b", limit=10, lease=60) == []
    await clock.travel(61)
    taken = await store.claim_deliveries("asm", claimer="station-b", limit=10, lease=60)
    assert {d.serial for d in taken} == {"SERIAL0", "SERIAL1", "SERIAL2"}
    assert await store.release_deliveries("station-b") == 3
    assert len(await store.claim_deliveries("asm", claimer="station-a", limit=10, lease=60)) == 3


async def test_a_window_gathers_a_batch_before_anything_is_claimed(store: Store, clock: Clock) -> None:
    events = await reported(store, 2)
    await store.queue_reports(events[:1], ["asm"], reader="r", read_to=events[0].seq, station_id=STATION)
    assert await store.claim_deliveries("asm", claimer="a", limit=10, lease=60, window=300) == []
    assert await store.next_delivery_at("asm", window=300) == near(await clock.now(store) + 300)
    await clock.travel(200)
    await store.queue_reports(events[1:], ["asm"], reader="r", read_to=events[1].seq, station_id=STATION)
    assert await store.claim_deliveries("asm", claimer="a", limit=10, lease=60, window=300) == []
    assert len(await store.claim_deliveries("asm", claimer="a", limit=2, lease=60, window=300)) == 2, "a full batch"
    await store.release_deliveries("a")
    await clock.travel(100)
    assert len(await store.claim_deliveries("asm", claimer="a", limit=10, lease=60, window=300)) == 2


async def test_settling_records_the_outcome_the_tries_and_an_event(store: Store, clock: Clock) -> None:
    events = await reported(store, 4)
    made, _ = await store.queue_reports(events, ["jamf"], reader="r", read_to=events[-1].seq, station_id=STATION)
    keys = [d.key for d in made]
    now = await clock.now(store)
    await store.claim_deliveries("jamf", claimer="a", limit=10, lease=60)
    await store.note_deliveries(keys[:1], {"activity": "A1"})
    settled, written = await store.settle_deliveries(
        [
            Settlement(keys[0], Outcome.DONE, "named iPad 0"),
            Settlement(keys[1], Outcome.FAILED, "not in your organisation"),
            Settlement(keys[2], Outcome.RETRY, "HTTP 503", due_at=now + 30),
            Settlement(keys[3], Outcome.DEFER, due_at=now + 600, progress={"waited": True}),
        ],
        station_id=STATION,
    )
    assert [d.status for d in settled] == ["done", "failed", "pending", "pending"]
    assert [d.attempts for d in settled] == [1, 1, 1, 0]
    assert settled[0].progress == {"activity": "A1"} and settled[0].done_at == near(now)
    assert settled[3].progress == {"waited": True} and settled[3].due_at == now + 600
    assert [e.kind for e in written] == ["report.done", "report.failed", "report.retrying"]
    assert written[1].data["message"] == "not in your organisation" and written[1].serial == "SERIAL1"
    assert all(d.claimed_by is None for d in settled)
    assert await store.claim_deliveries("jamf", claimer="a", limit=10, lease=60) == []
    assert await store.next_delivery_at("jamf") == now + 30
    await clock.travel(30)
    assert [d.key for d in await store.claim_deliveries("jamf", claimer="a", limit=10, lease=60)] == [keys[2]]
    assert {d.status for d in await store.list_deliveries(udid="UDID-0")} == {DeliveryStatus.DONE}
    assert len(await store.list_deliveries(reporter="jamf", status="pending")) == 2
    requeued, queued = await store.requeue_deliveries(station_id=STATION, reporter="jamf")
    assert [d.key for d in requeued] == [keys[1]] and requeued[0].attempts == 0 and requeued[0].message is None
    assert [e.kind for e in queued] == ["report.queued"]


async def test_a_budget_spends_calls_within_its_period_and_honours_holds(store: Store, clock: Clock) -> None:
    assert [await store.take_budget("apple.post", limit=2, period=3600) for _ in range(2)] == [0.0, 0.0]
    assert await store.take_budget("apple.post", limit=2, period=3600) == near(3600)
    await clock.travel(1800)
    assert await store.take_budget("apple.post", limit=2, period=3600) == near(1800)
    assert await store.take_budget("apple.get", limit=20, period=60) == 0.0, "budgets are separate"
    await clock.travel(1800)
    assert await store.take_budget("apple.post", limit=2, period=3600) == 0.0
    await store.hold_budget("apple.get", await clock.now(store) + 120)
    assert await store.take_budget("apple.get", limit=20, period=60) == near(120)
    await clock.travel(120)
    assert await store.take_budget("apple.get", limit=20, period=60) == 0.0


async def test_assignments_are_kept_by_serial(store: Store, clock: Clock) -> None:
    await store.record_assignments(
        [Assignment("S1", "wanted"), Assignment("S2", "assigned", server="Lincoln MDM", activity="A1")]
    )
    await store.record_assignments([Assignment("S1", "pending", server="Lincoln MDM", activity="A2")])
    found = await store.get_assignments(["S1", "S3"])
    assert (
        list(found) == ["S1"]
        and found["S1"].status == "pending"
        and found["S1"].checked_at == near(await clock.now(store))
    )
    assert list(await store.get_assignments(status="assigned")) == ["S2"]
    with pytest.raises(ValueError):
        await store.record_assignments([Assignment("S4", "moved")])


async def test_stations_claiming_at_once_never_take_the_same_delivery(store: Store) -> None:
    events = await reported(store, 30)
    await store.queue_reports(events, ["asm"], reader="r", read_to=events[-1].seq, station_id=STATION)
    taken: dict[str, list[str]] = {}

    async def claim(station: str) -> None:
        while batch := await store.claim_deliveries("asm", claimer=station, limit=3, lease=60):
            taken.setdefault(station, []).extend(d.key for d in batch)

    async with anyio.create_task_group() as tasks:
        for station in ("station-a", "station-b", "station-c"):
            tasks.start_soon(claim, station)
    keys = [key for batch in taken.values() for key in batch]
    assert len(keys) == 30 and len(set(keys)) == 30


async def test_a_budget_is_one_for_every_station_spending_at_once(store: Store) -> None:
    spent = []

    async def spend() -> None:
        spent.append(await store.take_budget("apple.post", limit=10, period=3600))

    async with anyio.create_task_group() as tasks:
        for _ in range(25):
            tasks.start_soon(spend)
    assert spent.count(0.0) == 10, "no more calls than the budget allows, however many spend at once"
