"""Tests of stationd.store on SQLite files in tmp_path."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import stationd.store.sqlite as sqlite_backend
from stationd.store import (
    EventRecord,
    JobRecord,
    SQLiteStore,
    Store,
    StoreError,
    open_store,
)

pytestmark = pytest.mark.anyio

STATION = "station-a"


class FakeClock:
    """A clock that moves one second forward at every reading."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "stationd.db"


@pytest.fixture
async def store(db_path: Path):
    async with open_store(db_path, clock=FakeClock()) as opened:
        yield opened


async def device_with_job(store: Store, udid: str = "UDID-1", **fields):
    device = await store.upsert_device(udid, **fields)
    job = await store.open_job(udid, STATION)
    return device, job


async def transition(store: Store, job: JobRecord, **fields) -> EventRecord:
    """Record a transition of the job's device on this station; check what it returns against what is stored."""
    made = await store.record_transition(udid=job.udid, job_id=job.id, station_id=STATION, **fields)
    assert made.device == await store.get_device(job.udid)
    assert made.job == await store.get_job(job.id)
    return made.event


@contextmanager
def raw_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection that commits and closes at the end of the block."""
    db = sqlite3.connect(path)
    try:
        with db:
            yield db
    finally:
        db.close()


def schema_versions(path: Path) -> list[int]:
    with raw_sqlite(path) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]


# Opening, migrations, file


async def test_fresh_file_is_created_migrated_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "stationd.db"
    async with open_store(path) as store:
        await store.upsert_device("UDID-1", serial="SER1")
    assert schema_versions(path) == list(range(1, len(sqlite_backend.MIGRATIONS) + 1))

    async with open_store(path) as store:
        assert (await store.get_device("UDID-1")).serial == "SER1"
    assert schema_versions(path) == list(range(1, len(sqlite_backend.MIGRATIONS) + 1))


async def test_database_file_is_private_whatever_the_umask(db_path: Path) -> None:
    previous = os.umask(0)
    try:
        async with open_store(db_path):
            pass
    finally:
        os.umask(previous)
    assert db_path.stat().st_mode & 0o777 == 0o600


async def test_connection_uses_wal(db_path: Path) -> None:
    async with open_store(db_path):
        pass
    with raw_sqlite(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_newer_schema_is_refused(db_path: Path) -> None:
    async with open_store(db_path):
        pass
    newer = len(sqlite_backend.MIGRATIONS) + 1
    with raw_sqlite(db_path) as db:
        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (newer,))

    store = open_store(db_path)
    with pytest.raises(StoreError, match=f"schema version {newer}"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.list_devices()


async def test_failed_migration_is_rolled_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_store(db_path):
        pass
    known = len(sqlite_backend.MIGRATIONS)
    broken = ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL")
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", [*sqlite_backend.MIGRATIONS, broken])

    with pytest.raises(StoreError):
        async with open_store(db_path):
            pass
    assert schema_versions(db_path) == list(range(1, known + 1))
    with raw_sqlite(db_path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchall() == []


async def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    db_path.write_text("not a database, but a note about iPads\n" * 100)
    with pytest.raises(StoreError, match="is not a SQLite database: set \\[station\\] database"):
        async with open_store(db_path):
            pass


async def test_calls_on_a_store_that_is_not_open_fail_clearly(db_path: Path) -> None:
    store = open_store(db_path)
    with pytest.raises(StoreError, match="not open"):
        await store.get_device("UDID-1")
    await store.open()
    await store.open()
    await store.close()
    await store.close()


def test_open_store_accepts_paths_and_sqlite_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path / "a.db"), SQLiteStore)
    assert open_store(str(tmp_path / "b.db")).path == tmp_path / "b.db"
    assert open_store(f"sqlite://{tmp_path}/c.db").path == tmp_path / "c.db"


@pytest.mark.parametrize("url", ["postgresql://db.example/stationd", "mysql://x/y", "sqlite://relative.db"])
def test_open_store_refuses_other_urls_naming_the_supported_ones(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store(url)


# Devices


async def test_upsert_creates_then_updates_only_given_fields(store: Store) -> None:
    created = await store.upsert_device(
        "UDID-1", serial="SER1", ecid=0x1234, facts={"ProductType": "iPad7,5", "ProductVersion": "16.7"}
    )
    assert created.state == "new"
    assert created.first_seen == created.updated_at

    updated = await store.upsert_device(
        "UDID-1",
        facts={"ProductVersion": "17.5", "DeviceName": "iPad"},
        location_id=0x14100000,
        port_label="3",
    )
    assert updated.serial == "SER1"
    assert updated.ecid == 0x1234
    assert updated.facts == {"ProductType": "iPad7,5", "ProductVersion": "17.5", "DeviceName": "iPad"}
    assert (updated.location_id, updated.port_label, updated.name) == (0x14100000, "3", None)
    assert updated.first_seen == created.first_seen
    assert updated.updated_at > created.updated_at
    assert await store.get_device("UDID-1") == updated


async def test_find_device_by_any_identity(store: Store) -> None:
    first = await store.upsert_device("UDID-1", serial="SER1", ecid=11)
    second = await store.upsert_device("UDID-2", serial="SER2", ecid=22)

    assert await store.find_device(serial="SER2") == second
    assert await store.find_device(ecid=11) == first
    assert await store.find_device(udid="UDID-1", serial="SER2") == first
    assert await store.find_device(udid="UNKNOWN", ecid=22) == second
    assert await store.find_device(serial="NOPE") is None
    assert await store.get_device("NOPE") is None
    with pytest.raises(ValueError):
        await store.find_device()


async def test_list_devices_in_order_of_first_sight(store: Store) -> None:
    for udid in ("UDID-C", "UDID-A", "UDID-B"):
        await store.upsert_device(udid)
    await store.upsert_device("UDID-C", name="late update")
    assert [d.udid for d in await store.list_devices()] == ["UDID-C", "UDID-A", "UDID-B"]


async def test_forget_device_removes_device_and_jobs_but_keeps_events(store: Store) -> None:
    _, job = await device_with_job(store, serial="SER1", port_label="7")
    await store.add_event("device.attached", station_id=STATION, udid="UDID-1")

    assert await store.forget_device("UDID-1", station_id=STATION) is True
    assert await store.get_device("UDID-1") is None
    assert await store.get_job(job.id) is None
    assert await store.jobs_for("UDID-1") == []

    events = await store.list_events(udid="UDID-1")
    assert [e.kind for e in events] == ["job.started", "device.attached", "device.forgotten"]
    assert (events[-1].serial, events[-1].port_label, events[-1].data["jobs"]) == ("SER1", "7", 1)
    assert await store.forget_device("UDID-1", station_id=STATION) is False


# Jobs


async def test_open_job_returns_the_unfinished_job(store: Store) -> None:
    _, job = await device_with_job(store)
    assert job.status == "running"
    assert (job.completed_steps, job.step_data, job.attempts) == ([], {}, {})
    assert await store.open_job("UDID-1", STATION) == job

    await store.mark_interrupted(STATION)
    resumed = await store.open_job("UDID-1", STATION)
    assert (resumed.id, resumed.status) == (job.id, "running")
    assert (await store.list_events())[-1].kind == "job.resumed"

    await transition(store, job, kind="device.done", state="done", job_status="done")
    second = await store.open_job("UDID-1", STATION)
    assert second.id != job.id
    assert [j.id for j in await store.jobs_for("UDID-1")] == [job.id, second.id]


async def test_open_job_needs_a_known_device(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown device"):
        await store.open_job("NOPE", STATION)


async def test_database_forbids_two_unfinished_jobs_for_one_device(store: Store, db_path: Path) -> None:
    await device_with_job(store)
    with raw_sqlite(db_path) as db:
        for status in ("running", "interrupted"):
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(
                    "INSERT INTO jobs (udid, station_id, status, started_at) VALUES ('UDID-1', 'b', ?, 0)",
                    (status,),
                )
        db.execute("INSERT INTO jobs (udid, station_id, status, started_at) VALUES ('UDID-1', 'b', 'done', 0)")


# Transitions


async def test_record_transition_updates_device_job_and_event(store: Store) -> None:
    _, job = await device_with_job(store, serial="SER1", location_id=0x14200000, port_label="2")
    failed = await transition(
        store,
        job,
        kind="step.failed",
        state="activate",
        step="activate",
        attempt_step="activate",
        error_code="activation.locked",
        error_message="Activation Lock is on",
        data={"hint": "ask the owner to release it"},
    )
    device = await store.get_device("UDID-1")
    assert (device.state, device.step, device.error_code) == ("activate", "activate", "activation.locked")
    assert (failed.kind, failed.udid, failed.serial, failed.location_id, failed.port_label, failed.step) == (
        "step.failed",
        "UDID-1",
        "SER1",
        0x14200000,
        "2",
        "activate",
    )
    assert (failed.job_id, failed.data) == (job.id, {"hint": "ask the owner to release it"})
    assert (await store.get_job(job.id)).error_code == "activation.locked"

    await transition(
        store,
        job,
        kind="device.done",
        state="done",
        completed_step="activate",
        error_message="ignored without a code",
        job_status="done",
    )
    device = await store.get_device("UDID-1")
    done = await store.get_job(job.id)
    assert (device.state, device.step, device.error_code, device.error_message) == (
        "done",
        "activate",
        None,
        None,
    )
    assert (done.status, done.error_code, done.error_message) == ("done", None, None)
    assert done.finished_at is not None
    assert await store.unfinished_jobs() == []


async def test_completed_steps_are_recorded_once(store: Store) -> None:
    _, job = await device_with_job(store)
    for step in ("identify", "erase", "erase", "identify", "activate"):
        await transition(store, job, kind="step.finished", state=step, completed_step=step)
    assert (await store.get_job(job.id)).completed_steps == ["identify", "erase", "activate"]


async def test_step_data_is_deep_merged(store: Store) -> None:
    _, job = await device_with_job(store)
    for step_data in (
        {"erase": {"requested_at": 1.0, "confirmed": False}},
        {"erase": {"confirmed": True}, "wifi": {"ssid": "school"}},
        {"erase": {"reboot": {"seen": 2}}, "wifi": {"ssid": "school-2"}},
    ):
        await transition(store, job, kind="step.progress", state="erase", step_data=step_data)
    assert (await store.get_job(job.id)).step_data == {
        "erase": {"requested_at": 1.0, "confirmed": True, "reboot": {"seen": 2}},
        "wifi": {"ssid": "school-2"},
    }


async def test_attempts_are_counted_per_step(store: Store) -> None:
    _, job = await device_with_job(store)
    for step in ("erase", "activate", "activate", "activate", None):
        await transition(store, job, kind="step.started", state="x", attempt_step=step)
    assert (await store.get_job(job.id)).attempts == {"erase": 1, "activate": 3}


async def test_failed_transition_changes_nothing(store: Store) -> None:
    _, old = await device_with_job(store)
    await transition(store, old, kind="device.done", state="done", job_status="done")
    current = await store.open_job("UDID-1", STATION)
    before = (await store.get_device("UDID-1"), await store.jobs_for("UDID-1"), await store.list_events())

    with pytest.raises(StoreError):
        await transition(
            store,
            old,
            kind="step.started",
            state="erase",
            completed_step="erase",
            job_status="running",
        )
    assert (
        await store.get_device("UDID-1"),
        await store.jobs_for("UDID-1"),
        await store.list_events(),
    ) == before
    assert (await store.open_job("UDID-1", STATION)).id == current.id


async def test_transition_refuses_unknown_or_mismatched_records(store: Store) -> None:
    _, job = await device_with_job(store)
    await store.upsert_device("UDID-2")
    common = {"station_id": STATION, "kind": "step.started", "state": "erase"}
    with pytest.raises(StoreError, match="unknown device"):
        await store.record_transition(udid="NOPE", job_id=job.id, **common)
    with pytest.raises(StoreError, match="unknown job"):
        await store.record_transition(udid="UDID-1", job_id=job.id + 100, **common)
    with pytest.raises(StoreError, match="belongs to device UDID-1"):
        await store.record_transition(udid="UDID-2", job_id=job.id, **common)
    with pytest.raises(ValueError, match="job_status"):
        await store.record_transition(udid="UDID-1", job_id=job.id, job_status="paused", **common)
    assert [e.kind for e in await store.list_events()] == ["job.started"]


async def test_mark_interrupted_takes_only_this_stations_running_jobs(store: Store) -> None:
    _, running = await device_with_job(store, "UDID-1")
    await transition(store, running, kind="step.started", state="erase", step="erase")
    _, finished = await device_with_job(store, "UDID-2")
    await transition(store, finished, kind="device.done", state="done", job_status="done")
    await store.upsert_device("UDID-3")
    elsewhere = await store.open_job("UDID-3", "station-b")

    interrupted = await store.mark_interrupted(STATION)
    assert [(j.id, j.status) for j in interrupted] == [(running.id, "interrupted")]
    device = await store.get_device("UDID-1")
    assert (device.state, device.step) == ("interrupted", "erase")
    event = (await store.list_events())[-1]
    assert (event.kind, event.udid, event.step, event.job_id) == (
        "job.interrupted",
        "UDID-1",
        "erase",
        running.id,
    )
    assert event.data == {"previous_state": "erase"}
    assert [j.id for j in await store.unfinished_jobs()] == [running.id, elsewhere.id]
    assert [j.id for j in await store.unfinished_jobs(station_id=STATION)] == [running.id]
    assert await store.mark_interrupted(STATION) == []


async def test_progress_survives_a_restart(db_path: Path) -> None:
    async with open_store(db_path) as store:
        _, job = await device_with_job(store)
        await transition(
            store,
            job,
            kind="step.finished",
            state="erase",
            step="erase",
            completed_step="erase",
        )

    async with open_store(db_path) as store:
        [interrupted] = await store.mark_interrupted(STATION)
        resumed = await store.open_job("UDID-1", STATION)
    assert interrupted.id == resumed.id == job.id
    assert resumed.completed_steps == ["erase"]


async def test_committed_progress_survives_sigkill(db_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from stationd.store import open_store

        async def main(path):
            store = open_store(path)
            await store.open()
            await store.upsert_device("UDID-1", serial="SER1")
            job = await store.open_job("UDID-1", "station-a")
            await store.record_transition(
                udid="UDID-1", job_id=job.id, station_id="station-a", kind="step.finished",
                state="erase", step="erase", completed_step="erase",
                step_data={"erase": {"confirmed": True}},
            )
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main(sys.argv[1]))
        """
    )
    killed = subprocess.run([sys.executable, "-c", script, str(db_path)], timeout=60)
    assert killed.returncode == -signal.SIGKILL

    async with open_store(db_path) as store:
        [job] = await store.mark_interrupted(STATION)
    assert job.completed_steps == ["erase"]
    assert job.step_data == {"erase": {"confirmed": True}}


# Concurrency


async def test_concurrent_transitions_lose_no_update(store: Store) -> None:
    _, job = await device_with_job(store)

    async def finish(index: int) -> None:
        await store.record_transition(
            udid=job.udid,
            job_id=job.id,
            station_id=STATION,
            kind="step.finished",
            state="enroll",
            completed_step=f"step-{index}",
            step_data={"steps": {f"step-{index}": index}},
            attempt_step="enroll",
        )

    async with anyio.create_task_group() as group:
        for index in range(50):
            group.start_soon(finish, index)

    final = await store.get_job(job.id)
    assert sorted(final.completed_steps) == sorted(f"step-{i}" for i in range(50))
    assert final.step_data["steps"] == {f"step-{i}": i for i in range(50)}
    assert final.attempts == {"enroll": 50}
    assert len(await store.list_events(udid="UDID-1")) == 51


async def test_concurrent_devices_each_get_one_job(store: Store) -> None:
    async def provision(index: int) -> None:
        udid = f"UDID-{index:02d}"
        await store.upsert_device(udid, serial=f"SER{index:02d}", location_id=index)
        job = await store.open_job(udid, STATION)
        await store.open_job(udid, STATION)
        await transition(store, job, kind="step.finished", state="erase", completed_step="erase")

    async with anyio.create_task_group() as group:
        for index in range(50):
            group.start_soon(provision, index)

    jobs = await store.unfinished_jobs()
    assert len({job.udid for job in jobs}) == len(jobs) == 50
    assert all(job.completed_steps == ["erase"] for job in jobs)
    assert len(await store.list_devices()) == 50


async def test_cancelled_caller_leaves_a_usable_consistent_store(store: Store) -> None:
    _, job = await device_with_job(store)

    async def finish_erase() -> None:
        await store.record_transition(
            udid=job.udid,
            job_id=job.id,
            station_id=STATION,
            kind="step.finished",
            state="erase",
            completed_step="erase",
        )

    async with anyio.create_task_group() as group:
        group.start_soon(finish_erase)
        await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()

    assert (await store.get_device("UDID-1")).state == "erase"
    assert (await store.get_job(job.id)).completed_steps == ["erase"]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await transition(store, job, kind="step.finished", state="wifi", completed_step="wifi")
    assert (await store.get_job(job.id)).completed_steps == ["erase"], "cancelled before it began: nothing written"
    await transition(store, job, kind="step.finished", state="wifi", completed_step="wifi")
    assert (await store.get_job(job.id)).completed_steps == ["erase", "wifi"]
    assert [e.kind for e in await store.list_events()] == ["job.started", "step.finished", "step.finished"]


# Events


async def test_events_are_ordered_filtered_and_tailed(store: Store) -> None:
    await store.upsert_device("UDID-1", serial="SER1", location_id=0x14100000, port_label="1")
    await store.add_event("device.attached", station_id=STATION, udid="UDID-1", data={"speed": "usb2"})
    await store.add_event("station.started", station_id=STATION)
    await store.add_event("operator.retry", station_id=STATION, udid="UDID-1", step="wifi")
    await store.add_event("device.attached", station_id=STATION, udid="UDID-9")

    events = await store.list_events()
    assert [e.kind for e in events] == [
        "device.attached",
        "station.started",
        "operator.retry",
        "device.attached",
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    attached = events[0]
    assert (attached.serial, attached.location_id, attached.port_label) == ("SER1", 0x14100000, "1")
    assert attached.data == {"speed": "usb2"}
    assert (events[3].serial, events[3].location_id, events[3].port_label) == (None, None, None)

    assert [e.id for e in await store.list_events(udid="UDID-1")] == [events[0].id, events[2].id]
    assert await store.list_events(after_id=events[1].id) == events[2:]
    assert await store.list_events(after_id=events[0].id, limit=2) == events[1:3]
    assert await store.list_events(after_id=events[-1].id) == []


@pytest.mark.anyio
async def test_last_event_id_is_where_a_new_reader_starts(tmp_path: Path) -> None:
    async with open_store(tmp_path / "db.sqlite") as store:
        assert await store.last_event_id() == 0
        first = await store.add_event("station.started", station_id="s")
        second = await store.add_event("station.stopping", station_id="s")
        assert await store.last_event_id() == second.id > first.id
