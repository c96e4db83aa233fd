"""`stationd run` and `stationd demo`: wiring configuration, identity, store and station together."""

from __future__ import annotations

import resource
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from stationd.config import (
    ActivationConfig,
    ApiConfig,
    Config,
    EnrollmentConfig,
    OrganizationConfig,
    PluginsConfig,
    StationConfig,
    WifiConfig,
)
from stationd.emulator import Emulator, generated_spec
from stationd.emulator.mdm_server import mdm_app
from stationd.events import Event
from stationd.httpserve import HTTPServer, parse_address
from stationd.identity import create_identity, load_identity
from stationd.plugins import PluginHost
from stationd.station import Station, running
from stationd.store import open_store

log = structlog.get_logger("stationd")


async def cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("station.signal", signal=signal.Signals(signum).name)
            scope.cancel()
            return


async def serve(station: Station, plugins: PluginHost) -> None:
    """Run the station with its plugins until SIGTERM or SIGINT (or until cancelled), then park and drain."""
    await plugins.startup()
    try:
        async with anyio.create_task_group() as outer:
            await outer.start(plugins.run, station.bus)
            async with anyio.create_task_group() as inner:
                inner.start_soon(cancel_on_signal, inner.cancel_scope)
                await station.run()
            plugins.close()
    finally:
        with anyio.CancelScope(shield=True):
            await plugins.shutdown()


def more_file_descriptors(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (a shell's default, 1024, is small for a cart of
    iPads); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def run_station(config: Config) -> None:
    """The daemon: run until SIGTERM or SIGINT, then park every device and exit."""
    more_file_descriptors()
    identity = load_identity(config.organization.identity)
    plugins = PluginHost(config.plugins, config.station.id, ports=config.ports)
    async with open_store(config.station.database) as store:
        station = Station(config, store, identity, plugins=plugins)
        log.info("station.starting", station=config.station.id, steps=station.plan, database=str(config.station.database))
        await serve(station, plugins)


DEMO_ORG = "Demo School"
DEMO_DASHBOARD = "127.0.0.1:8480"


def _dashboard_address() -> str:
    """127.0.0.1:8480, or another free port when that one is taken (another station, another demo)."""
    host, port = parse_address(DEMO_DASHBOARD)
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


FINAL_KINDS = {"device.done", "step.failed"}


def demo_specs(count: int) -> list[Any]:
    """A realistic mix: half in use (activated), half fresh out of the box; a few slow to erase."""
    specs = []
    for i in range(count):
        spec = generated_spec(i, seed="demo", activated=i % 2 == 0)
        spec.latency.erase = 4.0 + (i % 3)
        specs.append(spec)
    return specs


async def demo(
    devices: int,
    *,
    speed: float = 0.05,
    exit_when_done: bool = False,
    workdir: Path | None = None,
    board: bool = False,
    show: Callable[[Event], None] = lambda event: None,
    on_start: Callable[[str], None] = lambda dashboard_url: None,
) -> dict[str, str]:
    """Run the daemon on virtual iPads; return each device's final state by UDID (when exit_when_done).

    With `board`, the terminal plugin draws the live board (through the same plugin host `stationd run` uses)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="stationd-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    identity = create_identity(workdir / "identity.pem", DEMO_ORG, force=True)
    mdm = HTTPServer(mdm_app(DEMO_ORG))
    await mdm.start()
    results: dict[str, str] = {}
    try:
        async with Emulator(demo_specs(devices), socket_path=workdir / "usbmuxd", speed=speed) as emulator:
            config = Config(
                organization=OrganizationConfig(name=DEMO_ORG, identity=identity.path),
                station=StationConfig(id="demo", database=workdir / "stationd.db", concurrency=max(1, devices)),
                wifi=WifiConfig(ssid="Demo-WiFi", security="WPA2", password="demo-password"),
                enrollment=EnrollmentConfig(mode="url", url=f"{mdm.url}/enroll"),
                activation=ActivationConfig(url=emulator.activation_url or ""),
                api=ApiConfig(listen=_dashboard_address()),
                plugins=PluginsConfig(enabled=("terminal",) if board else ()),
            )
            plugins = PluginHost(config.plugins, config.station.id, ports=config.ports)
            async with open_store(config.station.database) as store:
                station = Station(
                    config, store, identity, usbmux_address=emulator.usbmux_address, backoff=(0.2, 2.0), plugins=plugins
                )
                on_start(f"http://{config.api.listen}/")
                await plugins.startup()
                async with anyio.create_task_group() as host:
                    await host.start(plugins.run, station.bus)
                    with station.bus.subscribe() as events:
                        async with running(station):
                            async with anyio.create_task_group() as tasks:
                                tasks.start_soon(cancel_on_signal, tasks.cancel_scope)
                                async for event in events:
                                    show(event)
                                    if event.kind in FINAL_KINDS and event.udid:
                                        results[event.udid] = "done" if event.kind == "device.done" else "failed"
                                    if exit_when_done and len(results) == devices:
                                        tasks.cancel_scope.cancel()
                    plugins.close()
                await plugins.shutdown()
    finally:
        await mdm.stop()
    return results
