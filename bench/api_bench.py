"""How fast the station's HTTP API answers while a full cart is in progress.

Four processes: an emulator serving N virtual iPads (and the fake MDM), the real daemon (its API on a loopback port)
working on all of them at once, R readers of the event stream (`/api/stream`), and this one as the client asking
`/api/ports` and `/api/devices` in turn, for a fixed window while the iPads are in progress. Prints p50/p99 latency
per endpoint, and for the stream the delay from an event's creation in the store to its arrival at a reader, with how
many iPads were in progress at the window's start and end. Figures only; nothing is asserted.

    .venv/bin/python bench/api_bench.py [--devices 64] [--readers 8] [--seconds 15] [--speed 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from station_config import ORG, bench_config

EMULATOR = """
import json, sys
from stationd.demo import demo_specs
from stationd.emulator.mdm_server import mdm_app
from stationd.emulator.thread import EmulatorThread
from stationd.httpserve import HTTPServer
with EmulatorThread(demo_specs({n}), socket_path={socket!r}, speed={speed}) as emulator:
    mdm = HTTPServer(mdm_app({org!r}))
    url = emulator.call(mdm.start)
    print(json.dumps({{"usbmux": emulator.usbmux_address, "activation": emulator.activation_url, "mdm": url}}),
          flush=True)
    sys.stdin.read()
    emulator.call(mdm.stop)
"""


def daemon(workdir: Path, info: dict[str, str], n: int) -> None:
    """The daemon under test: a Station serving its API; prints the API's URL, runs until stdin closes."""
    import logging

    import anyio

    from stationd import logs
    from stationd.assemble import assemble
    from stationd.identity import create_identity

    logs.configure("json", level=logging.WARNING)  # to stderr: stdout carries the URL
    identity = create_identity(workdir / "identity.pem", ORG, force=True)
    config = bench_config(
        workdir, identity, devices=n, activation_url=info["activation"], mdm_url=info["mdm"], listen="127.0.0.1:0"
    )

    lags: list[float] = []

    async def watch_loop() -> None:  # how late the event loop wakes a task that sleeps 5 ms: how long it was busy
        while True:
            started = time.perf_counter()
            await anyio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)

    async def main() -> None:
        async with assemble(config, identity, usbmux_address=info["usbmux"], backoff=(0.2, 2.0)) as assembly:
            print(json.dumps({"url": assembly.dashboard_url}), flush=True)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch_loop)
                await anyio.to_thread.run_sync(sys.stdin.read)
                tasks.cancel_scope.cancel()
        print(json.dumps({"lag_p50": percentile(lags, 50), "lag_p99": percentile(lags, 99)}), flush=True)

    anyio.run(main)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def read_streams(url: str, readers: int) -> None:
    """The stream readers, in a process of their own (a busy request loop beside them would delay them, not the
    station): prints "ready" once all are connected, then, when stdin closes, the delays it saw as JSON."""
    import anyio
    import httpx

    delays: list[float] = []
    ready = 0

    async def read_stream() -> None:
        nonlocal ready
        async with (
            httpx.AsyncClient(base_url=url, timeout=None) as client,
            client.stream("GET", "/api/stream") as response,
        ):
            ready += 1
            if ready == readers:
                print("ready", flush=True)
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    delays.append(time.time() - json.loads(line[6:])["ts"])

    async with anyio.create_task_group() as tasks:
        for _ in range(readers):
            tasks.start_soon(read_stream)
        await anyio.to_thread.run_sync(sys.stdin.read)
        tasks.cancel_scope.cancel()
    print(json.dumps(delays), flush=True)


async def measure(url: str, readers: int, seconds: float) -> dict[str, Any]:
    import anyio
    import httpx

    latencies: dict[str, list[float]] = {"/api/ports": [], "/api/devices": []}
    in_progress: list[int] = []

    async def busy(client: httpx.AsyncClient) -> int:
        devices = (await client.get("/api/devices")).json()["devices"]
        return sum(1 for device in devices if device["state"] not in ("done", "failed"))

    streams = subprocess.Popen(
        [sys.executable, __file__, "--read-streams", url, str(readers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert (await anyio.to_thread.run_sync(streams.stdout.readline)).strip() == "ready"  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        in_progress.append(await busy(client))
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for path, values in latencies.items():
                started = time.perf_counter()
                response = await client.get(path)
                values.append(time.perf_counter() - started)
                response.raise_for_status()
        in_progress.append(await busy(client))
    streams.stdin.close()  # type: ignore[union-attr]
    delays = json.loads(await anyio.to_thread.run_sync(streams.stdout.readline))  # type: ignore[union-attr]
    streams.wait(timeout=30)
    return {"latencies": latencies, "delays": delays, "in_progress": in_progress}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--speed", type=float, default=0.5, help="device latency factor (1.0 = a real iPad)")
    parser.add_argument("--daemon", nargs=2, metavar=("WORKDIR", "INFO"), help=argparse.SUPPRESS)
    parser.add_argument("--read-streams", nargs=2, metavar=("URL", "READERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_streams:
        import anyio

        anyio.run(read_streams, args.read_streams[0], int(args.read_streams[1]))
        return
    if args.daemon:
        daemon(Path(args.daemon[0]), json.loads(args.daemon[1]), args.devices)
        return

    import anyio

    workdir = Path(tempfile.mkdtemp(prefix="stationd-api-bench-"))
    env = dict(os.environ, HOME=str(workdir))
    emulator = subprocess.Popen(  # its stderr is dropped: Python 3.11 prints a traceback per cancelled connection
        [
            sys.executable,
            "-c",
            EMULATOR.format(n=args.devices, socket=str(workdir / "usbmuxd"), speed=args.speed, org=ORG),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    info = emulator.stdout.readline()  # type: ignore[union-attr]
    station = subprocess.Popen(
        [sys.executable, __file__, "--devices", str(args.devices), "--daemon", str(workdir), info.strip()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = json.loads(station.stdout.readline())["url"].rstrip("/")  # type: ignore[union-attr]
    cpu_before = _cpu_seconds(station.pid)
    figures = anyio.run(measure, url, args.readers, args.seconds)
    cpu = _cpu_seconds(station.pid) - cpu_before
    station.stdin.close()  # type: ignore[union-attr]
    lag = json.loads(station.stdout.readline())  # type: ignore[union-attr]
    for process in (station, emulator):
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=60)

    print(
        f"stationd API bench: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{args.devices} virtual iPads (latencies x{args.speed}), {args.readers} stream readers, {args.seconds:g} s"
    )
    start, end = figures["in_progress"]
    print(
        f"iPads in progress: {start} at the start of the window, {end} at its end; "
        f"daemon CPU {cpu / args.seconds:.0%} of one core; its event loop woke a 5 ms sleep late by "
        f"{lag['lag_p50'] * 1000:.1f} ms p50, {lag['lag_p99'] * 1000:.1f} ms p99"
    )
    print(f"{'endpoint':<28} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for path, values in figures["latencies"].items():
        print(
            f"{'GET ' + path:<28} {len(values):>9} {percentile(values, 50) * 1000:>8.1f} "
            f"{percentile(values, 99) * 1000:>8.1f} {max(values) * 1000:>8.1f}"
        )
    delays = figures["delays"]
    if delays:
        print(
            f"{'stream: store -> reader':<28} {len(delays):>9} {percentile(delays, 50) * 1000:>8.1f} "
            f"{percentile(delays, 99) * 1000:>8.1f} {max(delays) * 1000:>8.1f}"
        )
        print(
            f"(stream rows count events received by all {args.readers} readers; "
            f"{statistics.mean(delays) * 1000:.1f} ms mean delay)"
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
