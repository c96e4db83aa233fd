"""1,000 finished iPads through the outbox to the fake Apple School Manager API, within Apple's observed budget.

Makes N finished iPads in a fresh SQLite store (each with its `device.reported` event, as the job log writes it),
then runs the real courier with the asm reporter against the loopback fake of Apple's API, which enforces 10 POSTs
an hour and 20 GETs a minute as Apple is observed to. Prints, per batch size: POSTs and GETs the API answered (and
the 429s it had to give: 0 means the station kept within the budget by itself), the token requests, how many
serials were verified as moved, the wall time until every delivery was settled, and the time to write the N
reports into the outbox. Figures only; nothing is asserted.

    .venv/bin/python bench/outbox_bench.py [--devices 1000] [--batch 1000 100] [--poll 1] [--window 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def one(devices: int, batch: int, poll: float, window: float) -> dict[str, float]:
    import anyio
    import structlog
    from apple_fixture import fake_apple
    from stationd_plugins.asm import AsmReporter

    from stationd.apple.settings import read_settings
    from stationd.config import Config, OrganizationConfig, StationConfig
    from stationd.reporting.courier import Courier
    from stationd.station import Station
    from stationd.store import open_store

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    workdir = Path(tempfile.mkdtemp(prefix="stationd-outbox-bench-"))
    figures: dict[str, float] = {}

    async def main() -> None:
        async with fake_apple(workdir, posts_per_hour=10, gets_per_minute=20) as apple:
            serials = [f"BENCH{i:06d}" for i in range(devices)]
            apple.api.add_devices(serials)
            config = Config(
                organization=OrganizationConfig(name="Bench School", identity=workdir / "identity.pem"),
                station=StationConfig(id="bench", database=workdir / "stationd.db"),
            )
            async with open_store(config.station.database) as store:
                station = Station(config, store, None)
                reader = f"courier:{station.station_id}"
                await store.queue_reports([], [], reader=reader, read_to=0, station_id="bench")
                started = time.perf_counter()
                for serial in serials:
                    udid = f"UDID-{serial}"
                    await store.upsert_device(udid, serial=serial)
                    job = await store.claim_job(udid, "bench")
                    await store.add_event(
                        "device.reported",
                        station_id="bench",
                        udid=udid,
                        job_id=job.id,
                        data={"device": {"serial": serial, "udid": udid}},
                    )
                figures["write_s"] = time.perf_counter() - started
                reporter = AsmReporter(read_settings(apple.settings(batch=batch, poll=poll, window=window)))
                reporter.name = "asm"
                settled = 0
                started = time.perf_counter()
                with station.bus.subscribe() as events:
                    async with anyio.create_task_group() as tasks:
                        await tasks.start(Courier(station, [reporter]).run)
                        async for event in events:
                            if event.kind in ("report.done", "report.failed"):
                                settled += 1
                                if settled == devices:
                                    break
                        tasks.cancel_scope.cancel()
                figures["wall_s"] = time.perf_counter() - started
                done = await store.list_deliveries(status="done")
                figures["moved"] = sum(1 for s in serials if apple.api.server_of(s) == "MDM1")
                figures["done"] = len(done)
            figures["posts"] = apple.api.posts
            figures["gets"] = apple.api.gets
            figures["refused_429"] = sum(1 for status, _ in apple.api.refused if status == 429)
            figures["tokens"] = len(apple.api.tokens)
            figures["activities"] = len(apple.api.activities)

    anyio.run(main)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between two reads of a running activity")
    parser.add_argument(
        "--window", type=float, default=2.0, help="seconds a batch gathers (the station's default: 300)"
    )
    args = parser.parse_args()
    print(f"outbox bench: {args.devices} finished iPads, asm reporter, fake Apple API at 10 POST/h and 20 GET/min")
    print(f"python {platform.python_version()} on {platform.machine()}, poll {args.poll:g} s, window {args.window:g} s")
    header = f"{'batch':>6} {'activities':>10} {'POSTs':>6} {'GETs':>5} {'429s':>5} {'tokens':>6}"
    print(header + f" {'moved':>6} {'done':>6} {'wall s':>8} {'queue-in s':>10}")
    for batch in args.batch:
        f = one(args.devices, batch, args.poll, args.window)
        print(
            f"{batch:>6} {f['activities']:>10.0f} {f['posts']:>6.0f} {f['gets']:>5.0f} {f['refused_429']:>5.0f} "
            f"{f['tokens']:>6.0f} {f['moved']:>6.0f} {f['done']:>6.0f} {f['wall_s']:>8.2f} {f['write_s']:>10.2f}"
        )


if __name__ == "__main__":
    main()
