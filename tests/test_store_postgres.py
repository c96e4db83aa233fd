"""What is PostgreSQL's own in the store: a cursor that never skips an event committed late, stations migrating at
once, notifications, a server that restarts or cannot be reached, and credentials that never show."""

from __future__ import annotations

import json

import anyio
import psycopg
import pytest
from pgcluster import Cluster, free_port

import stationd.store.postgres as postgres_backend
from stationd.store import StoreError, StoreUnavailable, open_store

pytestmark = pytest.mark.anyio

STATION = "station-a"


async def test_a_reader_of_a_stations_trail_never_skips_an_event_that_committed_late(pg_url: str) -> None:
    """Sequence values commit out of order: an event taking id 1 can commit after one taking id 2. A reader that
    follows ids would have moved past 1 for good; a reader of the station's trail (seq) cannot."""
    async with open_store(pg_url) as store:
        await store.add_event("station.started", station_id="elsewhere")
        late = await psycopg.AsyncConnection.connect(pg_url)
        try:
            await late.execute(
                postgres_backend.INSERT_EVENT,
                {"station_id": STATION, "kind": "late", "udid": None, "step": None, "job_id": None}
                | {"data": psycopg.types.json.Jsonb({}), "key": None},
            )
            early = await store.add_event("early", station_id="elsewhere")
            assert await store.station_events(STATION) == [], "not committed yet: not visible"
            seen_by_id = [e.kind for e in await store.list_events(after_id=0)]
            await late.commit()
        finally:
            await late.close()
        [event] = await store.station_events(STATION)
    assert (event.kind, event.seq) == ("late", 1)
    assert event.id < early.id and "late" not in seen_by_id, "by id, the late event lies behind the cursor"


async def test_stations_starting_together_migrate_once(pg_url: str) -> None:
    async def start() -> None:
        async with open_store(pg_url) as store:
            await store.upsert_device("UDID-1")

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(start)
    async with await psycopg.AsyncConnection.connect(pg_url) as raw:
        versions = await (await raw.execute("SELECT version FROM schema_version ORDER BY version")).fetchall()
    assert [row[0] for row in versions] == list(range(1, len(postgres_backend.MIGRATIONS) + 1))


async def test_a_newer_schema_is_refused_saying_to_upgrade(pg_url: str) -> None:
    async with open_store(pg_url):
        pass
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as raw:
        await raw.execute("INSERT INTO schema_version VALUES (99, 0)")
    with pytest.raises(StoreError, match="schema version 99 .* upgrade stationd on this station"):
        async with open_store(pg_url):
            pass


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    port = free_port()
    url = f"postgresql://station:s3cret-pw@127.0.0.1:{port}/fleet?sslmode=disable"
    with pytest.raises(StoreUnavailable) as refused:
        async with open_store(url, timeout=1, password="also-secret"):
            pass
    message = str(refused.value)
    assert f"postgresql://***@127.0.0.1:{port}/fleet" in message and "Connection refused" in message
    assert "s3cret-pw" not in message and "also-secret" not in message


async def test_a_password_from_the_configuration_reaches_the_server(postgres: Cluster) -> None:
    name = f"pw_{free_port()}"
    async with await psycopg.AsyncConnection.connect(postgres.url(), autocommit=True) as raw:
        await raw.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-of-{name}'")
        await raw.execute(f"CREATE DATABASE {name} OWNER {name}")
    url = f"postgresql://{name}@127.0.0.1:{postgres.port}/{name}"
    async with open_store(url, password=f"pw-of-{name}") as store:
        assert await store.now() > 0


async def test_notifications_wake_listeners_of_other_stations(pg_url: str) -> None:
    async with open_store(pg_url) as listener, open_store(pg_url) as writer:
        notices: list[dict] = []
        ready, arrived = anyio.Event(), anyio.Event()

        def on_notice(notice: dict) -> None:
            notices.append(notice)
            ready.set()
            if notice.get("c") == "blueprint":
                arrived.set()

        async with anyio.create_task_group() as group:
            group.start_soon(lambda: listener.listen(on_notice, poll=60))
            with anyio.fail_after(10):
                await ready.wait()
                await writer.add_event("queue.imported", station_id="cli")
                await writer.push_blueprint("school", {}, station_id="cli")
                await arrived.wait()
            group.cancel_scope.cancel()
    kinds = [n["c"] for n in notices]
    assert kinds[0] == "poll" and kinds[-2:] == ["event", "blueprint"]
    expected = {"c": "event", "station": "cli", "seq": 0, "kind": "queue.imported", "udid": None}
    assert notices[-2] | {"seq": 0} == expected
    assert json.dumps(notices[-1]) == json.dumps({"c": "blueprint", "name": "school", "version": 1})


async def test_after_a_server_restart_reads_go_on_and_a_write_says_the_database_is_unreachable(
    postgres: Cluster,
) -> None:
    url = postgres.create_database()
    async with open_store(url, pool_size=1) as store:
        await store.upsert_device("UDID-1", serial="SER1")
        await anyio.to_thread.run_sync(postgres.restart)
        assert (await store.get_device("UDID-1")).serial == "SER1", "a read is tried again on a fresh connection"
        await anyio.to_thread.run_sync(postgres.restart)
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            await store.upsert_device("UDID-1", serial="SER2")
        assert (await store.upsert_device("UDID-1", serial="SER2")).serial == "SER2"
