"""The journal: a station whose fleet database is cut off carries on with the iPads it holds, and everything it
wrote reaches the database once, in order, when the network is back (a relay on loopback plays the network)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pgcluster import Cluster
from tcpproxy import Relay

from stationd.fleet.journal import JournaledStore, waiting_entries
from stationd.store import StoreUnavailable, open_store

pytestmark = pytest.mark.anyio

STATION = "cart-1"


async def test_an_outage_is_journaled_and_delivered_once_in_order(postgres: Cluster, tmp_path: Path) -> None:
    database = postgres.create_database()
    relay = await Relay(postgres.port).start()
    through_relay = database.replace(f":{postgres.port}/", f":{relay.port}/")
    journal = tmp_path / "journal.db"
    try:
        async with JournaledStore(open_store(through_relay, timeout=1), journal, STATION) as store:
            await store.upsert_device("UDID-1", serial="SER1", port_label="1", station_id=STATION)
            await store.upsert_device("UDID-2", serial="SER2", port_label="2", station_id=STATION)
            job = await store.claim_job("UDID-1", STATION)
            job = (
                await store.record_transition(
                    udid="UDID-1",
                    job_id=job.id,
                    station_id=STATION,
                    kind="step.started",
                    state="erase",
                    step="erase",
                    fence=job.fence,
                )
            ).job

            relay.cut()
            made = await store.record_transition(
                udid="UDID-1",
                job_id=job.id,
                station_id=STATION,
                kind="step.finished",
                state="erase",
                step="erase",
                completed_step="erase",
                fence=job.fence,
            )
            attached = await store.add_event("port.changed", station_id=STATION, udid="UDID-1", data={"status": "busy"})
            with pytest.raises(StoreUnavailable):
                await store.claim_job("UDID-2", STATION)
            assert made.job.completed_steps == ["erase"] and made.device.state == "erase"
            assert (made.event.seq, attached.seq) == (3, 4), "the trail goes on where it was"
            assert [e.seq for e in await store.station_events(STATION, after_seq=2)] == [3, 4]
            assert (await store.get_job(job.id)).completed_steps == ["erase"]
            assert store.health()["reachable"] is False and store.health()["waiting"] == 2
            assert waiting_entries(journal) == 2
            assert journal.stat().st_mode & 0o777 == 0o600

            relay.restore()
            assert await store._deliver() is True
            assert store.health() == {"reachable": True, "waiting": 0}
            assert await store._deliver() is True

        async with open_store(database) as direct:
            trail = await direct.station_events(STATION)
            stored = await direct.get_job(job.id)
        assert [(e.seq, e.kind) for e in trail] == [
            (1, "job.started"),
            (2, "step.started"),
            (3, "step.finished"),
            (4, "port.changed"),
        ]
        assert stored.completed_steps == ["erase"]
    finally:
        await relay.stop()


async def test_an_entry_the_database_refuses_on_delivery_is_kept_aside(postgres: Cluster, tmp_path: Path) -> None:
    database = postgres.create_database()
    relay = await Relay(postgres.port).start()
    through_relay = database.replace(f":{postgres.port}/", f":{relay.port}/")
    journal = tmp_path / "journal.db"
    try:
        async with JournaledStore(open_store(through_relay, timeout=1), journal, STATION) as store:
            await store.upsert_device("UDID-1", port_label="1", station_id=STATION)
            job = await store.claim_job("UDID-1", STATION, lease=0)
            relay.cut()
            await store.record_transition(
                udid="UDID-1", job_id=job.id, station_id=STATION, kind="step.finished", state="wifi", fence=job.fence
            )
            async with open_store(database) as other:
                await other.claim_job("UDID-1", "cart-2")
            relay.restore()
            assert await store._deliver() is True
        with sqlite3.connect(journal) as db:
            [(reason,)] = db.execute("SELECT reason FROM refused").fetchall()
        assert "taken over by station cart-2" in reason
    finally:
        await relay.stop()
