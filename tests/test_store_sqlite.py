"""What is SQLite's own in the store: the file (private, WAL, migrations, damage), its schema's rules, and a crash."""

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

import pytest

import stationd.store.sqlite as sqlite_backend
from stationd.store import SQLiteStore, StoreError, open_store

pytestmark = pytest.mark.anyio

STATION = "station-a"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "stationd.db"


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


async def test_fresh_file_is_created_migrated_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "stationd.db"
    async with open_store(path) as store:
        await store.upsert_device("UDID-1", serial="SER1")
    assert schema_versions(path) == list(range(1, len(sqlite_backend.MIGRATIONS) + 1))

    async with open_store(path) as store:
        assert (await store.get_device("UDID-1")).serial == "SER1"
    assert schema_versions(path) == list(range(1, len(sqlite_backend.MIGRATIONS) + 1))


async def test_a_station_database_of_the_previous_schema_keeps_its_ports_jobs_and_trail(db_path: Path) -> None:
    with raw_sqlite(db_path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        for version, statements in enumerate(sqlite_backend.MIGRATIONS[:2], start=1):
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
        db.execute(
            "INSERT INTO devices (udid, serial, state, location_id, port_label, first_seen, updated_at)"
            " VALUES ('UDID-1', 'SER1', 'erase', 17, 'Hub A · 1', 1, 2)"
        )
        db.execute(
            "INSERT INTO jobs (udid, station_id, status, completed_steps, started_at)"
            " VALUES ('UDID-1', 'cart', 'running', '[\"identify\"]', 1)"
        )
        for kind in ("job.started", "step.started"):
            db.execute("INSERT INTO events (ts, station_id, kind, udid) VALUES (1, 'cart', ?, 'UDID-1')", (kind,))

    async with open_store(db_path) as store:
        device = await store.get_device("UDID-1")
        [job] = await store.mark_interrupted("cart")
        trail = await store.station_events("cart")
        resumed = await store.claim_job("UDID-1", "cart")
    assert (device.location_id, device.port_label, device.state) == (17, "Hub A · 1", "erase")
    assert (job.completed_steps, resumed.id, resumed.fence) == (["identify"], job.id, 1)
    assert [(e.seq, e.kind) for e in trail] == [(1, "job.started"), (2, "step.started"), (3, "job.interrupted")]
    assert trail[-1].port_label == "Hub A · 1"


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


@pytest.mark.parametrize("url", ["mysql://user:hunter2@x/y", "sqlite://relative.db"])
def test_open_store_refuses_other_urls_naming_the_supported_ones(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///") as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)


async def test_database_forbids_two_unfinished_jobs_for_one_device(db_path: Path) -> None:
    async with open_store(db_path) as store:
        await store.upsert_device("UDID-1")
        await store.claim_job("UDID-1", STATION)
    with raw_sqlite(db_path) as db:
        for status in ("running", "interrupted"):
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(
                    "INSERT INTO jobs (udid, station_id, status, started_at) VALUES ('UDID-1', 'b', ?, 0)",
                    (status,),
                )
        db.execute("INSERT INTO jobs (udid, station_id, status, started_at) VALUES ('UDID-1', 'b', 'done', 0)")


async def test_committed_progress_survives_sigkill(db_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from stationd.store import open_store

        async def main(path):
            store = open_store(path)
            await store.open()
            await store.upsert_device("UDID-1", serial="SER1")
            job = await store.claim_job("UDID-1", "station-a")
            await store.record_transition(
                udid="UDID-1", job_id=job.id, station_id="station-a", kind="step.finished",
                state="erase", step="erase", completed_step="erase",
                step_data={"erase": {"confirmed": True}}, fence=job.fence,
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


async def test_the_stores_clock_stamps_what_it_writes(db_path: Path) -> None:
    ticks = iter(range(1_700_000_000, 1_700_000_100))
    async with open_store(db_path, clock=lambda: float(next(ticks))) as store:
        start = await store.now()
        created = await store.upsert_device("UDID-1")
        updated = await store.upsert_device("UDID-1", serial="S")
        assert (created.first_seen, updated.updated_at) == (start + 1, start + 2)
