"""What the richer identify costs per iPad: time and host CPU of each read, on paired sessions to virtual iPads.

A separate process serves N virtual iPads (device latencies 0: what is measured is the station's side and the
wire, not an iPad's own work). This process pairs with each once (not measured), then, one iPad at a time, times:
  lockdown values  the default domain only (what identify read before issue 12)
  facts            DeviceSession.facts(): the default, disk-usage and battery domains (every session now)
  inventory        apps, profiles, supervision and battery health (the identify step and the report step)
and prints, per read, the mean wall time and this process's CPU per iPad. A job reads the facts once per session
(twice in a plain run: before and after the erase) and the inventory twice (identify and report).
Figures only; nothing is asserted.

    .venv/bin/python bench/identify_bench.py [--devices 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

EMULATOR = """
import json, sys
from stationd.emulator import generated_spec
from stationd.emulator.apps import App
from stationd.emulator.thread import EmulatorThread
apps = [App(f"org.example.app{{i:02d}}", f"App {{i}}") for i in range(12)]
specs = [generated_spec(i, apps=apps) for i in range({n})]
with EmulatorThread(specs, socket_path={socket!r}, speed=0) as emulator:
    print(json.dumps({{"usbmux": emulator.usbmux_address}}), flush=True)
    sys.stdin.read()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="reads of each kind per iPad")
    args = parser.parse_args()

    import anyio

    from stationd.device import DeviceSession
    from stationd.device.inventory import inventory
    from stationd.identity import create_identity

    workdir = Path(tempfile.mkdtemp(prefix="stationd-identify-"))
    emulator = subprocess.Popen(
        [sys.executable, "-c", EMULATOR.format(n=args.devices, socket=str(workdir / "usbmuxd"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    info = json.loads(emulator.stdout.readline())  # type: ignore[union-attr]
    identity = create_identity(workdir / "identity.pem", "Bench School")

    async def run() -> dict[str, tuple[float, float]]:
        from pymobiledevice3 import usbmux

        from stationd.usbmux.address import resolve

        address = resolve(info["usbmux"])
        udids = [d.serial for d in await usbmux.list_devices(address.for_pymobiledevice3())]
        sessions = []
        for udid in udids:  # pairing, TLS: not measured
            session = DeviceSession(udid, usbmux_address=address, pair_records=workdir / "pairs", identity=identity)
            sessions.append(await session.__aenter__())
        reads: dict[str, Callable[[DeviceSession], Awaitable[Any]]] = {
            "lockdown values": lambda s: s.lockdown.get_value(),
            "facts": lambda s: s.facts(),
            "inventory": inventory,
        }
        figures = {}
        for name, read in reads.items():
            await read(sessions[0])  # warm: imports, the first service connection's TLS context
            wall = cpu = 0.0
            for _ in range(args.rounds):
                for session in sessions:
                    started, cpu_started = time.perf_counter(), time.process_time()
                    await read(session)
                    wall += time.perf_counter() - started
                    cpu += time.process_time() - cpu_started
            count = args.rounds * len(sessions)
            figures[name] = (wall / count, cpu / count)
        for session in sessions:
            await session.__aexit__(None, None, None)
        return figures

    figures = anyio.run(run)
    emulator.stdin.close()  # type: ignore[union-attr]
    emulator.wait(timeout=30)
    print(
        f"stationd identify bench: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {args.devices} virtual iPads (12 user apps each), {args.rounds} rounds"
    )
    print(f"{'read':>16} {'wall ms/iPad':>13} {'CPU ms/iPad':>12}")
    for name, (wall, cpu) in figures.items():
        print(f"{name:>16} {wall * 1000:>13.1f} {cpu * 1000:>12.1f}")
    base_wall, base_cpu = figures["lockdown values"]
    facts_wall, facts_cpu = figures["facts"]
    inv_wall, inv_cpu = figures["inventory"]
    extra_wall = 2 * (facts_wall - base_wall + inv_wall)
    extra_cpu = 2 * (facts_cpu - base_cpu + inv_cpu)
    print(
        "per plain job (facts at 2 sessions, inventory at identify and report), beyond the old identify: "
        f"{extra_wall * 1000:.0f} ms, {extra_cpu * 1000:.0f} ms CPU"
    )


if __name__ == "__main__":
    main()
