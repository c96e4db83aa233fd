"""`stationd demo`: the real daemon on virtual iPads, with a fake MDM and activation server, nothing to configure."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from stationd.assemble import assemble
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
from stationd.daemon import cancel_on_signal
from stationd.emulator import Emulator, generated_spec
from stationd.emulator.mdm_server import mdm_app
from stationd.events import Event, EventBus
from stationd.httpserve import HTTPServer, parse_address
from stationd.identity import create_identity

DEMO_ORG = "Demo School"
DEMO_DASHBOARD = "127.0.0.1:8480"
FINAL_KINDS = {"device.done", "step.failed"}


def _dashboard_address() -> str:
    """127.0.0.1:8480, or another free port when that one is taken (another station, another demo)."""
    host, port = parse_address(DEMO_DASHBOARD)
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


def demo_specs(count: int) -> list[Any]:
    """A realistic mix: half in use (activated), half fresh out of the box; a few slow to erase."""
    specs = []
    for i in range(count):
        spec = generated_spec(i, seed="demo", activated=i % 2 == 0)
        spec.latency.erase = 4.0 + (i % 3)
        specs.append(spec)
    return specs


def demo_config(
    workdir: Path, identity_path: Path, emulator: Emulator, mdm_url: str, devices: int, board: bool
) -> Config:
    return Config(
        organization=OrganizationConfig(name=DEMO_ORG, identity=identity_path),
        station=StationConfig(id="demo", database=workdir / "stationd.db", concurrency=max(1, devices)),
        wifi=WifiConfig(ssid="Demo-WiFi", security="WPA2", password="demo-password"),
        enrollment=EnrollmentConfig(mode="url", url=f"{mdm_url}/enroll"),
        activation=ActivationConfig(url=emulator.activation_url or ""),
        api=ApiConfig(listen=_dashboard_address()),
        plugins=PluginsConfig(enabled=("terminal",) if board else ()),
    )


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
            config = demo_config(workdir, identity.path, emulator, mdm.url, devices, board)
            bus = EventBus()
            with bus.subscribe() as events:
                async with assemble(
                    config, identity, usbmux_address=emulator.usbmux_address, backoff=(0.2, 2.0), bus=bus
                ) as assembly:
                    on_start(assembly.dashboard_url or "")
                    async with anyio.create_task_group() as tasks:
                        tasks.start_soon(cancel_on_signal, tasks.cancel_scope)
                        async for event in events:
                            show(event)
                            if event.kind in FINAL_KINDS and event.udid:
                                results[event.udid] = "done" if event.kind == "device.done" else "failed"
                            if exit_when_done and len(results) == devices:
                                tasks.cancel_scope.cancel()
    finally:
        await mdm.stop()
    return results
