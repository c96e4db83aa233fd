"""The store contract, once for every backend (SQLite files in tmp_path, databases in a throw-away PostgreSQL
cluster), then what is each backend's own: tests/test_store_sqlite.py and tests/test_store_postgres.py."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from stationd.store import (
    EventRecord,
    JobBusy,
    JobRecord,
    LeaseLost,
    Store,
    StoreError,
    WorkItem,
    open_store,
)

pytestmark = pytest.mark.anyio

STATION = "station-a"
OTHER = "station-b"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store of each backend lives: a file, or a new database in the session's cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "stationd.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(url: str):
    async with open_store(url) as opened:
        yield opened


async def device_with_job(store: Store, udid: str = "UDID-1", **fields) -> tuple:
    device = await store.upsert_device(udid, **fields)
    job = await store.claim_job(udid, STATION)
    return device, job


async def transition(store: Store, job: JobRecord, **fields) -> EventRecord:
    """Record a transition of the job's device on this station; check what it returns against what is stored."""
    made = await store.record_transition(udid=job.udid, job_id=job.id, station_id=STATION, **fields)
    assert made.device == await store.get_device(job.udid)
    assert made.job == await store.get_job(job.id)
    return made.event


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
        station_id=STATION,
    )
    assert updated.serial == "SER1"
    assert updated.ecid == 0x1234
    assert updated.facts == {"ProductType": "iPad7,5", "ProductVersion": "17.5", "DeviceName": "iPad"}
    assert (updated.location_id, updated.port_label, updated.name) == (0x14100000, "3", None)
    assert updated.first_seen == created.first_seen
    assert updated.updated_at >= created.updated_at
    assert await store.get_device("UDID-1") == updated
    with pytest.raises(ValueError, match="station_id"):
        await store.upsert_device("UDID-1", port_label="4")


async def test_a_port_is_kept_per_station_and_events_carry_their_stations_port(store: Store) -> None:
    await store.upsert_device("UDID-1", serial="SER1", location_id=0x01110000, port_label="A · 1", station_id=STATION)
    here = await store.add_event("device.attached", station_id=STATION, udid="UDID-1")
    moved = await store.upsert_device("UDID-1", location_id=0x01120000, port_label="B · 2", station_id=OTHER)
    there = await store.add_event("device.attached", station_id=OTHER, udid="UDID-1")
    again = await store.add_event("device.detached", station_id=STATION, udid="UDID-1")

    assert (moved.location_id, moved.port_label) == (0x01120000, "B · 2"), "a device shows where it was placed last"
    assert [(e.serial, e.port_label) for e in (here, there, again)] == [
        ("SER1", "A · 1"),
        ("SER1", "B · 2"),
        ("SER1", "A · 1"),
    ]
    assert [d.udid for d in await store.list_devices(station_id=STATION)] == ["UDID-1"]
    assert await store.list_devices(station_id="station-c") == []


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
    _, job = await device_with_job(store, serial="SER1", port_label="7", station_id=STATION)
    await store.add_event("device.attached", station_id=STATION, udid="UDID-1")

    assert await store.forget_device("UDID-1", station_id=STATION) is True
    assert await store.get_device("UDID-1") is None
    assert await store.get_job(job.id) is None
    assert await store.jobs_for("UDID-1") == []

    events = await store.list_events(udid="UDID-1")
    assert [e.kind for e in events] == ["job.started", "device.attached", "device.forgotten"]
    assert (events[-1].serial, events[-1].port_label, events[-1].data["jobs"]) == ("SER1", "7", 1)
    assert await store.forget_device("UDID-1", station_id=STATION) is False


# Claims, leases and fences


async def test_a_claim_keeps_this_stations_job_and_resumes_an_interrupted_one_under_a_new_fence(store: Store) -> None:
    _, job = await device_with_job(store)
    assert (job.status, job.station_id, job.fence) == ("running", STATION, 1)
    assert (job.completed_steps, job.step_data, job.attempts) == ([], {}, {})
    assert job.lease_until is not None and job.lease_until > job.started_at
    again = await store.claim_job("UDID-1", STATION)
    assert (again.id, again.fence) == (job.id, job.fence)

    await store.mark_interrupted(STATION)
    resumed = await store.claim_job("UDID-1", OTHER)
    assert (resumed.id, resumed.status, resumed.station_id, resumed.fence) == (job.id, "running", OTHER, 2)
    event = (await store.list_events())[-1]
    assert (event.kind, event.station_id) == ("job.resumed", OTHER)
    assert event.data == {"previous_status": "interrupted", "previous_station_id": STATION}

    await store.record_transition(
        udid="UDID-1", job_id=job.id, station_id=OTHER, kind="device.done", state="done", job_status="done", fence=2
    )
    second = await store.claim_job("UDID-1", STATION)
    assert second.id != job.id
    assert [j.id for j in await store.jobs_for("UDID-1")] == [job.id, second.id]


async def test_a_job_held_by_another_station_is_refused_until_its_lease_expires(store: Store) -> None:
    await store.upsert_device("UDID-1")
    held = await store.claim_job("UDID-1", OTHER)
    with pytest.raises(JobBusy) as busy:
        await store.claim_job("UDID-1", STATION)
    assert busy.value.owner == OTHER and 0 < busy.value.remaining <= store.lease

    expired = await store.claim_job("UDID-1", OTHER, lease=0)
    taken = await store.claim_job("UDID-1", STATION)
    assert (taken.id, taken.station_id, taken.fence) == (held.id, STATION, expired.fence + 1)
    assert (await store.list_events())[-1].data["reason"] == "lease expired"


async def test_a_station_that_lost_its_job_cannot_write_it(store: Store) -> None:
    _, mine = await device_with_job(store)
    await transition(store, mine, kind="step.finished", state="erase", completed_step="erase", fence=mine.fence)
    await store.claim_job("UDID-1", STATION, lease=0)
    theirs = await store.claim_job("UDID-1", OTHER)
    before = (await store.get_device("UDID-1"), await store.get_job(mine.id), await store.list_events())

    with pytest.raises(LeaseLost, match=f"taken over by station {OTHER}"):
        await store.record_transition(
            udid="UDID-1",
            job_id=mine.id,
            station_id=STATION,
            kind="step.finished",
            state="activate",
            completed_step="activate",
            fence=mine.fence,
        )
    with pytest.raises(LeaseLost, match=f"runs at station {OTHER}"):
        await store.record_transition(
            udid="UDID-1", job_id=mine.id, station_id=STATION, kind="operator.skip", state="waiting"
        )
    assert (await store.get_device("UDID-1"), await store.get_job(mine.id), await store.list_events()) == before
    assert theirs.completed_steps == ["erase"], "the new holder resumes from the last completed step"


async def test_leases_are_renewed_by_their_station_and_expired_ones_swept(store: Store) -> None:
    _, mine = await device_with_job(store, "UDID-1")
    await store.upsert_device("UDID-2")
    gone = await store.claim_job("UDID-2", OTHER, lease=0)

    assert await store.renew_leases(STATION, lease=600) == [mine.id]
    renewed = await store.get_job(mine.id)
    assert renewed.lease_until >= await store.now() + 599
    assert await store.renew_leases("station-c") == []

    [expired] = await store.expire_leases(STATION)
    assert (expired.id, expired.status, expired.lease_until) == (gone.id, "interrupted", None)
    assert (await store.get_device("UDID-2")).state == "interrupted"
    event = (await store.station_events(STATION))[-1]
    assert (event.kind, event.udid, event.data) == ("job.expired", "UDID-2", {"previous_station_id": OTHER})
    assert await store.expire_leases(STATION) == []
    assert (await store.get_job(mine.id)).status == "running"


async def test_a_failed_job_is_claimed_again_when_retried_else_a_new_one_starts(store: Store) -> None:
    _, job = await device_with_job(store)
    await transition(
        store, job, kind="step.failed", state="failed", job_status="failed", error_code="timeout", fence=job.fence
    )
    retried = await store.claim_job("UDID-1", OTHER, retry=True, reason="operator")
    assert (retried.id, retried.status, retried.station_id, retried.finished_at) == (job.id, "running", OTHER, None)
    assert (await store.list_events())[-1].kind == "job.retried"
    await store.record_transition(
        udid="UDID-1", job_id=job.id, station_id=OTHER, kind="x", state="failed", job_status="failed", fence=2
    )
    fresh = await store.claim_job("UDID-1", STATION)
    assert fresh.id != job.id


async def test_claim_needs_a_known_device(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown device"):
        await store.claim_job("NOPE", STATION)


async def test_two_stations_claiming_one_device_at_once_get_one_job_between_them(url: str) -> None:
    async with open_store(url) as first, open_store(url) as second:
        await first.upsert_device("UDID-1")
        results: dict[str, object] = {}

        async def claim(store: Store, station: str) -> None:
            try:
                results[station] = await store.claim_job("UDID-1", station)
            except JobBusy as busy:
                results[station] = busy

        async with anyio.create_task_group() as group:
            group.start_soon(claim, first, STATION)
            group.start_soon(claim, second, OTHER)
        claimed = [r for r in results.values() if isinstance(r, JobRecord)]
        refused = [r for r in results.values() if isinstance(r, JobBusy)]
        assert len(claimed) == len(refused) == 1
        assert refused[0].owner == claimed[0].station_id
        assert len(await first.jobs_for("UDID-1")) == 1


# Transitions


async def test_record_transition_updates_device_job_and_event(store: Store) -> None:
    _, job = await device_with_job(store, serial="SER1", location_id=0x14200000, port_label="2", station_id=STATION)
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
    assert (device.state, device.step, device.error_code, device.error_message) == ("done", "activate", None, None)
    assert (done.status, done.error_code, done.error_message, done.lease_until) == ("done", None, None, None)
    assert done.finished_at is not None and done.finished_at >= done.started_at
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
    current = await store.claim_job("UDID-1", STATION)
    before = (await store.get_device("UDID-1"), await store.jobs_for("UDID-1"), await store.list_events())

    with pytest.raises(StoreError):
        await transition(store, old, kind="step.started", state="erase", completed_step="erase", job_status="running")
    assert (await store.get_device("UDID-1"), await store.jobs_for("UDID-1"), await store.list_events()) == before
    assert (await store.claim_job("UDID-1", STATION)).id == current.id


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


async def test_a_transition_delivered_twice_with_its_key_is_applied_once(store: Store) -> None:
    _, job = await device_with_job(store)
    fields = {"kind": "step.retrying", "state": "wifi", "attempt_step": "wifi", "key": "journal-1", "fence": 1}
    first = await transition(store, job, **fields)
    second = await transition(store, job, **fields)
    assert first == second
    assert (await store.get_job(job.id)).attempts == {"wifi": 1}
    event = await store.add_event("port.changed", station_id=STATION, udid="UDID-1", key="journal-2")
    assert await store.add_event("port.changed", station_id=STATION, udid="UDID-1", key="journal-2") == event
    assert [e.kind for e in await store.list_events()] == ["job.started", "step.retrying", "port.changed"]


async def test_mark_interrupted_takes_only_this_stations_running_jobs(store: Store) -> None:
    _, running = await device_with_job(store, "UDID-1")
    await transition(store, running, kind="step.started", state="erase", step="erase")
    _, finished = await device_with_job(store, "UDID-2")
    await transition(store, finished, kind="device.done", state="done", job_status="done")
    await store.upsert_device("UDID-3")
    elsewhere = await store.claim_job("UDID-3", OTHER)

    interrupted = await store.mark_interrupted(STATION)
    assert [(j.id, j.status, j.lease_until) for j in interrupted] == [(running.id, "interrupted", None)]
    device = await store.get_device("UDID-1")
    assert (device.state, device.step) == ("interrupted", "erase")
    event = (await store.list_events())[-1]
    assert (event.kind, event.udid, event.step, event.job_id) == ("job.interrupted", "UDID-1", "erase", running.id)
    assert event.data == {"previous_state": "erase"}
    assert [j.id for j in await store.unfinished_jobs()] == [running.id, elsewhere.id]
    assert [j.id for j in await store.unfinished_jobs(station_id=STATION)] == [running.id]
    assert await store.mark_interrupted(STATION) == []


async def test_progress_survives_a_restart(url: str) -> None:
    async with open_store(url) as store:
        _, job = await device_with_job(store)
        await transition(store, job, kind="step.finished", state="erase", step="erase", completed_step="erase")

    async with open_store(url) as store:
        [interrupted] = await store.mark_interrupted(STATION)
        resumed = await store.claim_job("UDID-1", STATION)
    assert interrupted.id == resumed.id == job.id
    assert resumed.completed_steps == ["erase"]


async def test_latest_jobs_in_one_read(store: Store) -> None:
    _, first = await device_with_job(store, "UDID-1")
    await transition(store, first, kind="device.done", state="done", job_status="done")
    second = await store.claim_job("UDID-1", STATION)
    _, other = await device_with_job(store, "UDID-2")
    assert {udid: job.id for udid, job in (await store.latest_jobs()).items()} == {
        "UDID-1": second.id,
        "UDID-2": other.id,
    }


# Counters


async def test_counters_never_give_a_number_twice_even_to_two_stations(url: str) -> None:
    async with open_store(url) as first, open_store(url) as second:
        numbers: list[int] = []

        async def take(store: Store) -> None:
            for _ in range(10):
                numbers.append(await store.allocate_counter("naming"))

        async with anyio.create_task_group() as group:
            for store in (first, second, first, second):
                group.start_soon(take, store)
        assert sorted(numbers) == list(range(1, 41))
        assert await first.allocate_counter("other") == 1


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
            fence=job.fence,
        )

    async with anyio.create_task_group() as group:
        for index in range(50):
            group.start_soon(finish, index)

    final = await store.get_job(job.id)
    assert sorted(final.completed_steps) == sorted(f"step-{i}" for i in range(50))
    assert final.step_data["steps"] == {f"step-{i}": i for i in range(50)}
    assert final.attempts == {"enroll": 50}
    events = await store.station_events(STATION)
    assert len(events) == 51 and [e.seq for e in events] == list(range(1, 52))


async def test_concurrent_devices_each_get_one_job(store: Store) -> None:
    async def provision(index: int) -> None:
        udid = f"UDID-{index:02d}"
        await store.upsert_device(udid, serial=f"SER{index:02d}", location_id=index, station_id=STATION)
        job = await store.claim_job(udid, STATION)
        await store.claim_job(udid, STATION)
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

    written = (await store.get_job(job.id)).completed_steps == ["erase"]
    assert (await store.get_device("UDID-1")).state == ("erase" if written else "new"), "all of it, or nothing"
    assert len(await store.list_events()) == (2 if written else 1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await transition(store, job, kind="step.finished", state="wifi", completed_step="wifi")
    assert "wifi" not in (await store.get_job(job.id)).completed_steps, "cancelled before it began: nothing written"
    await transition(store, job, kind="step.finished", state="wifi", completed_step="wifi")
    assert (await store.get_job(job.id)).completed_steps[-1] == "wifi"
    assert [e.kind for e in await store.list_events()][-1] == "step.finished"


# Events


async def test_events_are_ordered_filtered_and_tailed(store: Store) -> None:
    await store.upsert_device("UDID-1", serial="SER1", location_id=0x14100000, port_label="1", station_id=STATION)
    await store.add_event("device.attached", station_id=STATION, udid="UDID-1", data={"speed": "usb2"})
    await store.add_event("station.started", station_id=STATION)
    await store.add_event("operator.retry", station_id=STATION, udid="UDID-1", step="wifi")
    await store.add_event("device.attached", station_id=STATION, udid="UDID-9")

    events = await store.list_events()
    assert [e.kind for e in events] == ["device.attached", "station.started", "operator.retry", "device.attached"]
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


async def test_each_station_has_its_own_trail_numbered_without_gaps(store: Store) -> None:
    assert await store.last_seq(STATION) == 0
    for index in range(3):
        await store.add_event("station.started", station_id=STATION, data={"n": index})
        await store.add_event("station.started", station_id=OTHER, data={"n": index})
    mine = await store.station_events(STATION)
    assert [(e.seq, e.data["n"]) for e in mine] == [(1, 0), (2, 1), (3, 2)]
    assert {e.station_id for e in mine} == {STATION}
    assert await store.station_events(STATION, after_seq=1, limit=1) == mine[1:2]
    assert await store.last_seq(STATION) == await store.last_seq(OTHER) == 3
    assert await store.last_event_id() == (await store.list_events())[-1].id


# The fleet


async def test_heartbeats_list_the_stations_of_a_fleet_by_the_databases_clock(store: Store) -> None:
    await store.heartbeat(STATION, fleet="district", info={"host": "cart-1", "busy": 2})
    await store.heartbeat(OTHER, fleet="district", info={"host": "cart-2"}, stopped=True)
    await store.heartbeat("elsewhere", fleet="warehouse", info={})

    stations = await store.list_stations(fleet="district")
    assert [(s.id, s.info, s.stopped) for s in stations] == [
        (STATION, {"host": "cart-1", "busy": 2}, False),
        (OTHER, {"host": "cart-2"}, True),
    ]
    now = await store.now()
    assert all(0 <= s.age < 60 and s.last_seen <= now for s in stations)
    assert [s.id for s in await store.list_stations()] == sorted(["elsewhere", STATION, OTHER])


async def test_the_work_list_is_imported_whole_and_updated_by_serial(store: Store) -> None:
    added = await store.import_worklist(
        [WorkItem("SER1", name="Lab-01", group="lab", notes="left shelf"), WorkItem("SER2")]
    )
    assert added == (2, 0)
    assert await store.import_worklist([WorkItem("SER2", name="Lab-02"), WorkItem("SER3")]) == (1, 1)
    assert await store.work_item("SER1") == WorkItem("SER1", name="Lab-01", group="lab", notes="left shelf")
    assert await store.work_item("NOPE") is None
    assert [item.serial for item in await store.list_worklist()] == ["SER1", "SER2", "SER3"]
    assert (await store.work_item("SER2")).name == "Lab-02"


async def test_blueprints_are_numbered_versions(store: Store) -> None:
    first = await store.push_blueprint("school", {"naming": {"pattern": "{serial}"}}, station_id=STATION)
    second = await store.push_blueprint("school", {"naming": {"pattern": "{n}"}}, station_id=OTHER)
    other = await store.push_blueprint("office", {}, station_id=STATION)
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert (await store.get_blueprint("school")).content == {"naming": {"pattern": "{n}"}}
    assert (await store.get_blueprint("school", 1)).station_id == STATION
    assert await store.get_blueprint("school", 3) is None and await store.get_blueprint("none") is None
    assert [(b.name, b.version) for b in await store.list_blueprints()] == [("office", 1), ("school", 1), ("school", 2)]
