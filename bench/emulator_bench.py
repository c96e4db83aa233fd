"""How many virtual iPads one emulator serves: lockdown connections (pairing + TLS session) with pymobiledevice3.

Attaches N devices at once, then opens a paired lockdown session to every one with pymobiledevice3, first all
concurrently, then one after another (pairings are forgotten in between, so both runs pair from scratch).
Prints figures only; asserts nothing about speed.

    .venv/bin/python bench/emulator_bench.py [--devices 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pymobiledevice3.lockdown import create_using_usbmux

from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import generated_spec
from stationd.emulator.thread import EmulatorThread


async def connect(address: str, udid: str, folder: Path) -> float:
    """Seconds for pymobiledevice3 to pair with one device and start a TLS session."""
    started = time.perf_counter()
    client = await create_using_usbmux(serial=udid, usbmux_address=address, pairing_records_cache_folder=folder)
    elapsed = time.perf_counter() - started
    if not client.paired:
        raise RuntimeError(f"{udid} did not pair")
    await client.close()
    return elapsed


async def run(address: str, udids: list[str], folder: Path, concurrent: bool) -> list[float]:
    if concurrent:
        return list(await asyncio.gather(*(connect(address, udid, folder) for udid in udids)))
    return [await connect(address, udid, folder) for udid in udids]


def forget_pairings(emulator: Emulator) -> None:
    """Make the next run pair from scratch: drop usbmuxd's pair records and every device's paired hosts."""
    emulator.pair_records.clear()
    for device in emulator.devices.values():
        device.paired_hosts.clear()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(label: str, wall: float, times: list[float]) -> None:
    print(
        f"{label:<32} wall {wall:6.2f} s   per device median {statistics.median(times) * 1000:7.1f} ms"
        f"   p95 {percentile(times, 0.95) * 1000:7.1f} ms   {len(times) / wall:6.1f} devices/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=64, help="virtual iPads attached at once (default 64)")
    args = parser.parse_args()

    started = time.perf_counter()
    specs = [generated_spec(i, "bench") for i in range(args.devices)]
    with EmulatorThread(specs, speed=0) as thread:
        setup = time.perf_counter() - started
        address = thread.usbmux_address or ""
        os.environ["USBMUXD_SOCKET_ADDRESS"] = address  # pymobiledevice3 saves pair records via the default address
        attached = thread.call(lambda: len(thread.emulator.attached_devices()))
        print(f"{attached} virtual iPads attached in {setup:.2f} s (device keys included); usbmuxd at {address}")
        print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; emulator and clients share this process")
        udids = [spec.udid for spec in specs]
        for mode, concurrent in (("concurrent", True), ("sequential", False)):
            thread.call(forget_pairings, thread.emulator)
            for what in ("pair + TLS session", "TLS session only"):  # the second run finds usbmuxd's pair records
                with tempfile.TemporaryDirectory() as folder:
                    begin = time.perf_counter()
                    times = asyncio.run(run(address, udids, Path(folder), concurrent))
                    report(f"{mode}, {what}", time.perf_counter() - begin, times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 1024 / 1024 if platform.system() == "Darwin" else peak / 1024
    print(f"peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
