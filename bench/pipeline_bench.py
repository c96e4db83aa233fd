"""How the station scales with the number of iPads plugged in at once.

For each N, a fresh emulator process serves N virtual iPads (a mix of activated and fresh devices, with real iPad
latencies scaled by --speed), and a fresh bench process runs the real daemon (Station) on them, with the fake MDM,
until every iPad is done. Prints, per N: wall time from start to the last iPad done, parallel efficiency
(time for N / time for 1: 1.0 is perfect), the daemon process's CPU seconds per iPad, the marginal CPU of each iPad
beyond the first size (start-up left out), and its peak RSS.
Figures only; nothing is asserted.

    .venv/bin/python bench/pipeline_bench.py [--sizes 1 8 32 64] [--speed 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMULATOR = """
import json, sys
from stationd.demo import demo_specs
from stationd.emulator.thread import EmulatorThread
with EmulatorThread(demo_specs({n}), socket_path={socket!r}, speed={speed}) as emulator:
    print(json.dumps({{"usbmux": emulator.usbmux_address, "activation": emulator.activation_url}}), flush=True)
    sys.stdin.read()
"""


def one(n: int, speed: float) -> dict[str, float]:
    """Run the daemon on N virtual iPads served by another process; return this process's figures."""
    import anyio
    from station_config import ORG, bench_config

    from stationd.assemble import assemble
    from stationd.emulator.mdm_server import mdm_app
    from stationd.events import EventBus
    from stationd.httpserve import HTTPServer
    from stationd.identity import create_identity

    workdir = Path(tempfile.mkdtemp(prefix="stationd-bench-"))
    os.environ["HOME"] = str(workdir)
    emulator = subprocess.Popen(
        [sys.executable, "-c", EMULATOR.format(n=n, socket=str(workdir / "usbmuxd"), speed=speed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    info = json.loads(emulator.stdout.readline())  # type: ignore[union-attr]
    identity = create_identity(workdir / "identity.pem", ORG)

    async def main() -> float:
        mdm = HTTPServer(mdm_app(ORG))
        await mdm.start()
        config = bench_config(workdir, identity, devices=n, activation_url=info["activation"], mdm_url=mdm.url)
        done: set[str] = set()
        bus = EventBus()
        with bus.subscribe() as events:
            started = time.perf_counter()
            async with assemble(config, identity, usbmux_address=info["usbmux"], backoff=(0.2, 2.0), bus=bus):
                async for event in events:
                    if event.kind == "step.failed":
                        raise RuntimeError(f"{event.serial} failed: {event.data.get('error_message')}")
                    if event.kind == "device.done" and event.udid:
                        done.add(event.udid)
                    if len(done) == n:
                        break
            wall = time.perf_counter() - started
        await mdm.stop()
        return wall

    cpu_before = time.process_time()
    wall = anyio.run(main)
    cpu = time.process_time() - cpu_before
    emulator.stdin.close()  # type: ignore[union-attr]
    emulator.wait(timeout=30)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "wall": wall, "cpu_per_device": cpu / n, "rss_mib": rss_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--speed", type=float, default=0.05, help="device latency factor (1.0 = a real iPad)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.speed)))
        return
    print(
        f"stationd pipeline bench: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, device latencies x{args.speed} (erase 4-6 s, reboot 20 s, activation 0.5 s at x1)"
    )
    print(
        f"{'iPads':>6} {'wall s':>8} {'N/1':>6} {'daemon CPU s/iPad':>18} {'marginal s/iPad':>16} {'peak RSS MiB':>13}"
    )
    first = None
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--speed", str(args.speed)],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        first = first or figures
        cpu, first_cpu = figures["cpu_per_device"] * n, first["cpu_per_device"] * first["n"]
        marginal = f"{(cpu - first_cpu) / (n - first['n']):>16.3f}" if n > first["n"] else f"{'':>16}"
        print(
            f"{n:>6} {figures['wall']:>8.2f} {figures['wall'] / first['wall']:>6.2f} "
            f"{figures['cpu_per_device']:>18.3f} {marginal} {figures['rss_mib']:>13.0f}"
        )
    print("marginal: daemon CPU of each iPad beyond the first size's, start-up (imports, host keys) left out")


if __name__ == "__main__":
    main()
