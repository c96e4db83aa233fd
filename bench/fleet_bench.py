"""A fleet on one PostgreSQL: how the shared store holds up. Figures only; nothing is asserted.

Starts a throw-away cluster (durable settings: fsync and synchronous commit on) and prints:

1. fleet: N stations x 64 iPads, synthetic workers driving the store contract (no emulator): each iPad claims its
   job, then runs 8 steps (step.started and step.finished, `--think` seconds apart on average, as a real step takes:
   each pause drawn between half and one and a half times it, and the iPads plugged in over one such pause, not in
   the same millisecond), then is done; transitions per second and transition latency p50/p99, for N = 10 to 100
   stations; `--lockstep` keeps every iPad in step with the others (the worst case: every transition at once);
2. claims: 3 station processes claiming 64 iPads each, over and over: claims per second, and the conflicts a
   device would see (busy refusals, errors, retries): the target is none;
3. added latency of one transition, PostgreSQL on loopback against SQLite (one worker, p50/p99);
4. NOTIFY to bus: another process writes an event in a station's trail; the station hears the notification, reads
   its trail and publishes on its bus (as Station does): p50/p99.

    .venv/bin/python bench/fleet_bench.py [--stations 10 25 50 100] [--think 2.0] [--steps 8] [--lockstep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgcluster import cluster  # noqa: E402

from stationd.events import Event, EventBus  # noqa: E402
from stationd.store import Store, open_store  # noqa: E402

IPADS = 64


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


# -- 1. a fleet of synthetic stations ---------------------------------------------------------------------------------
async def ipad(
    store: Store, station: str, udid: str, steps: int, think: float, lockstep: bool, latencies: list[float]
) -> None:
    pause = (lambda: think) if lockstep else (lambda: random.uniform(0.5 * think, 1.5 * think))
    if not lockstep:
        await asyncio.sleep(random.uniform(0, think))
    await store.upsert_device(udid, serial=udid[-10:], port_label=udid[-2:], station_id=station)
    job = await store.claim_job(udid, station)
    for index in range(steps):
        for kind in ("step.started", "step.finished"):
            started = time.perf_counter()
            made = await store.record_transition(
                udid=udid,
                job_id=job.id,
                station_id=station,
                kind=kind,
                state=f"step-{index}",
                step=f"step-{index}",
                completed_step=f"step-{index}" if kind == "step.finished" else None,
                step_data={f"step-{index}": {"ok": True}} if kind == "step.finished" else None,
                fence=job.fence,
            )
            latencies.append(time.perf_counter() - started)
            job = made.job
            await asyncio.sleep(pause())
    started = time.perf_counter()
    await store.record_transition(
        udid=udid,
        job_id=job.id,
        station_id=station,
        kind="device.done",
        state="done",
        job_status="done",
        fence=job.fence,
    )
    latencies.append(time.perf_counter() - started)


def busy_cpu() -> float:
    """Seconds of CPU the whole machine has spent busy (Linux /proc/stat; NaN elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(field) for field in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


async def fleet(url: str, stations: int, steps: int, think: float, lockstep: bool) -> dict[str, float]:
    stores = [open_store(url, pool_size=2, timeout=30) for _ in range(stations)]
    for store in stores:
        await store.open()
    latencies: list[float] = []
    started = time.perf_counter()
    client_before, machine_before = time.process_time(), busy_cpu()
    try:
        async with asyncio.TaskGroup() as tasks:
            for index, store in enumerate(stores):
                for device in range(IPADS):
                    tasks.create_task(
                        ipad(
                            store,
                            f"s{stations}-{index}",
                            f"U{stations:03d}{index:03d}{device:04d}",
                            steps,
                            think,
                            lockstep,
                            latencies,
                        )
                    )
    finally:
        for store in stores:
            await store.close()
    elapsed = time.perf_counter() - started
    client = time.process_time() - client_before
    server = busy_cpu() - machine_before - client
    return {
        "client_cpu": client / len(latencies),
        "server_cpu": server / len(latencies),
        "stations": stations,
        "ipads": stations * IPADS,
        "transitions": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "elapsed": elapsed,
    }


# -- 2. claims by three station processes -----------------------------------------------------------------------------
CLAIMER = """
import asyncio, json, sys, time
from stationd.store import JobBusy, StoreError, open_store

async def main(url, station, seconds):
    store = open_store(url, pool_size=8)
    await store.open()
    claims = refused = errors = 0
    deadline = time.perf_counter() + seconds

    async def device(udid):
        nonlocal claims, refused, errors
        await store.upsert_device(udid, station_id=station, port_label=udid[-2:])
        while time.perf_counter() < deadline:
            try:
                job = await store.claim_job(udid, station)
                claims += 1
                await store.record_transition(udid=udid, job_id=job.id, station_id=station, kind="device.done",
                                              state="done", job_status="done", fence=job.fence)
            except JobBusy:
                refused += 1
            except StoreError:
                errors += 1

    await asyncio.gather(*(device(f"{station}-{n:02d}") for n in range(64)))
    await store.close()
    print(json.dumps({"claims": claims, "refused": refused, "errors": errors}))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def claims(url: str, seconds: float) -> dict[str, float]:
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, url, f"station-{n}", str(seconds)], stdout=subprocess.PIPE)
        for n in range(3)
    ]
    results = [json.loads(process.communicate(timeout=seconds + 120)[0]) for process in processes]
    total = {key: sum(result[key] for result in results) for key in ("claims", "refused", "errors")}
    return {**total, "per_second": total["claims"] / seconds}


# -- 3. one transition: PostgreSQL against SQLite ---------------------------------------------------------------------
async def single(url: str, count: int) -> list[float]:
    async with open_store(url) as store:
        await store.upsert_device("SINGLE", port_label="1", station_id="one")
        job = await store.claim_job("SINGLE", "one")
        latencies = []
        for index in range(count):
            started = time.perf_counter()
            job = (
                await store.record_transition(
                    udid="SINGLE",
                    job_id=job.id,
                    station_id="one",
                    kind="step.progress",
                    state="erase",
                    step_data={"erase": {"n": index}},
                    fence=job.fence,
                )
            ).job
            latencies.append(time.perf_counter() - started)
        return latencies


# -- 4. NOTIFY to the bus ---------------------------------------------------------------------------------------------
WRITER = """
import asyncio, sys, time
from stationd.store import open_store

async def main(url, count):
    async with open_store(url) as store:
        for index in range(count):
            await store.add_event("bench.ping", station_id="listener", data={"sent": time.time()})
            await asyncio.sleep(0.01)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def notify_to_bus(url: str, count: int) -> list[float]:
    """A station's follower, as Station runs it: notice -> its trail after the last seq -> the bus."""
    bus, latencies = EventBus(), []
    async with open_store(url) as store:
        published = await store.last_seq("listener")
        wake, ready = asyncio.Event(), asyncio.Event()

        def on_notice(notice: dict) -> None:
            ready.set()
            if notice.get("c") == "event" and notice.get("station") == "listener":
                wake.set()

        async def follow() -> None:
            nonlocal published
            while True:
                await wake.wait()
                wake.clear()
                for record in await store.station_events("listener", after_seq=published):
                    bus.publish(Event.from_record(record))
                    published = record.seq

        with bus.subscribe() as events:
            listener = asyncio.create_task(store.listen(on_notice, poll=60))
            follower = asyncio.create_task(follow())
            await ready.wait()
            writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url, str(count))
            for _ in range(count):
                event = await events.get()
                latencies.append(time.time() - event.data["sent"])
            await writer.wait()
            listener.cancel()
            follower.cancel()
    return latencies


async def main(args: argparse.Namespace) -> None:
    settings = {"max_connections": "400", "fsync": "on", "full_page_writes": "on", "shared_buffers": "256MB"}
    with cluster(**settings) as running:
        print(
            f"PostgreSQL on loopback (fsync on); {IPADS} iPads per station, {args.steps} steps, think {args.think} s"
            + (" in lockstep" if args.lockstep else " on average")
        )
        print("\n1. fleet: stations x 64 iPads on one database")
        print(
            f"{'stations':>9} {'iPads':>6} {'transitions':>12} {'per second':>11} {'p50':>10} {'p99':>10} {'wall':>7}"
            f" {'CPU/transition: workers':>24} {'the rest (server)':>18}"
        )
        for stations in args.stations:
            figures = await fleet(running.create_database(), stations, args.steps, args.think, args.lockstep)
            print(
                f"{stations:>9} {figures['ipads']:>6} {figures['transitions']:>12} {figures['per_second']:>11.0f}"
                f" {ms(figures['p50'])} {ms(figures['p99'])} {figures['elapsed']:>6.1f}s"
                f" {ms(figures['client_cpu']):>24} {ms(figures['server_cpu']):>18}"
            )

        print("\n2. claims: 3 station processes x 64 iPads, claim then done, over and over")
        result = claims(running.create_database(), args.claim_seconds)
        print(
            f"   {result['claims']} claims in {args.claim_seconds:.0f} s: {result['per_second']:.0f} claims/s;"
            f" busy refusals {result['refused']}, errors {result['errors']} (conflicts a device saw)"
        )

        print("\n3. one transition, one worker")
        postgres = await single(running.create_database(), args.single)
        with tempfile.TemporaryDirectory() as folder:
            sqlite = await single(str(Path(folder) / "bench.db"), args.single)
        for name, values in (("SQLite", sqlite), ("PostgreSQL", postgres)):
            print(f"   {name:<11} p50 {ms(percentile(values, 0.5))}  p99 {ms(percentile(values, 0.99))}")
        print(
            f"   added by PostgreSQL: p50 {ms(percentile(postgres, 0.5) - percentile(sqlite, 0.5))}"
            f"  p99 {ms(percentile(postgres, 0.99) - percentile(sqlite, 0.99))}"
        )

        print("\n4. NOTIFY to bus (another process writes, the station publishes)")
        latencies = await notify_to_bus(running.create_database(), args.notices)
        print(
            f"   {len(latencies)} events: p50 {ms(statistics.median(latencies))}  p99 {ms(percentile(latencies, 0.99))}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--think", type=float, default=2.0, help="Seconds between a step's start and its end.")
    parser.add_argument("--lockstep", action="store_true", help="Every iPad in step with the others (worst case).")
    parser.add_argument("--claim-seconds", type=float, default=10.0)
    parser.add_argument("--single", type=int, default=2000, help="Transitions for the one-worker comparison.")
    parser.add_argument("--notices", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
