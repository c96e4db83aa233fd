"""The journal: a station whose fleet database is cut off carries on with the iPads it holds, and everything it
wrote reaches the database once, in order, when the network is back (a relay on loopback plays the network)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from pgcluster import Cluster
from rig import ORG, make_rig
from tcpproxy import Relay

from stationd.config import EnrollmentConfig, StoreConfig
from stationd.emulator import generated_spec
from stationd.emulator.ipad import DepAssignment
from stationd.events import EventBus
from stationd.fleet.journal import JournaledStore, waiting_entries
from stationd.store import Assignment, StoreUnavailable, open_store

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


async def test_a_read_that_first_meets_the_outage_answers_with_what_the_station_knows(
    postgres: Cluster, tmp_path: Path
) -> None:
    """The first call after the network goes may be a read (the worker re-reads its job after an unplug or a hold):
    for the station's own iPad it answers with what the station wrote last, instead of failing the iPad."""
    database = postgres.create_database()
    relay = await Relay(postgres.port).start()
    through_relay = database.replace(f":{postgres.port}/", f":{relay.port}/")
    try:
        async with JournaledStore(open_store(through_relay, timeout=1), tmp_path / "journal.db", STATION) as store:
            await store.upsert_device("UDID-1", serial="SER1", port_label="1", station_id=STATION)
            job = await store.claim_job("UDID-1", STATION)
            relay.cut()
            assert await store.get_job(job.id) == job, "the first call after the cut"
            assert store.health()["reachable"] is False
            assert [j.id for j in await store.jobs_for("UDID-1")] == [job.id]
            assert (await store.get_device("UDID-1")).serial == "SER1"
            with pytest.raises(StoreUnavailable):
                await store.get_job(job.id + 1000)
    finally:
        await relay.stop()


async def test_an_ipad_whose_step_needs_the_database_during_an_outage_waits_and_goes_on(
    postgres: Cluster, tmp_path: Path
) -> None:
    """DEP mode: the assignment step reads where Apple has the serial, which only the fleet's database knows. Cut off
    just before it, the iPad is held ("fleet database unreachable"), not failed; back, it goes on from there."""
    database = postgres.create_database()
    spec = generated_spec(0, seed="outage")
    relay = await Relay(postgres.port).start()
    store_settings = StoreConfig(
        url=database.replace(f":{postgres.port}/", f":{relay.port}/"),
        lease=30,
        timeout=1,
        poll=0.2,
        journal=tmp_path / "journal.db",
    )
    dep = EnrollmentConfig(mode="dep", hold_until_assigned=True)
    try:
        async with make_rig(tmp_path, [spec]) as rig, open_store(database) as direct:
            await direct.record_assignments([Assignment(spec.serial, "assigned", "Lincoln MDM")])
            rig.emulator.devices[spec.udid].spec.dep = DepAssignment(
                ORG, supervisor_certificates=[rig.identity.certificate_der]
            )
            bus = EventBus()
            seen: list[str] = []
            with bus.subscribe() as events:
                async with rig.station(bus, store=store_settings, enrollment=dep):
                    with anyio.fail_after(60):
                        async for event in events:
                            if event.kind == "step.finished" and event.step == "identify":
                                relay.cut()
                            if event.kind == "step.held" and event.data.get("error_code") == "fleet_unreachable":
                                seen.append("held")
                                relay.restore()
                            if event.kind in ("device.done", "step.failed"):
                                seen.append(event.kind)
                                break
        assert seen[0] == "held" and seen[-1] == "device.done", seen  # held again if it looked before the delivery
        assert set(seen) == {"held", "device.done"}
        assert rig.device(spec.udid)["erase_count"] == 1
    finally:
        await relay.stop()
