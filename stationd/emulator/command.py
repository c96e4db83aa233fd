"""`stationd emulator`: run virtual iPads from the command line, to rehearse a station without touching a real one."""

from __future__ import annotations

import asyncio
import signal
import socket as sockets
import tempfile
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from stationd.emulator.control import check_loopback
from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import generated_spec
from stationd.emulator.mdm_server import mdm_app
from stationd.emulator.scenario import Scenario, ScenarioError, generated_scenario, load_scenario
from stationd.httpserve import HTTPServer, parse_address


def emulator_command(
    socket: Path | None = typer.Option(
        None, "--socket", metavar="PATH", help="UNIX socket of the emulated usbmuxd. Default: /tmp/stationd-ipads.sock."
    ),
    tcp: str | None = typer.Option(
        None, "--tcp", metavar="HOST:PORT", help="Also serve usbmuxd on TCP (understood by every client)."
    ),
    control: str = typer.Option(
        "127.0.0.1:7780", "--control", metavar="127.0.0.1:PORT", help="Control API (loopback only; 0: a free port)."
    ),
    activation: str = typer.Option(
        "127.0.0.1:7781", "--activation", metavar="127.0.0.1:PORT", help="Fake Apple activation server."
    ),
    devices: int | None = typer.Option(
        None, "--devices", min=0, max=1024, help="Generated iPads. Default 4; with --scenario, added to its devices."
    ),
    scenario: Path | None = typer.Option(
        None, "--scenario", metavar="FILE", help="TOML file: which iPads, in which state, with which faults."
    ),
    speed: float | None = typer.Option(
        None, "--speed", min=0.0, help="Multiplies device delays: 1 is a real iPad's pace, 0.05 twenty times faster."
    ),
    mdm: str = typer.Option(
        "127.0.0.1:7782",
        "--mdm",
        metavar="127.0.0.1:PORT",
        help='Fake MDM: its enrollment URL is http://ADDRESS/enroll ("" to turn it off).',
    ),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Let --tcp, --control, --activation and --mdm listen beyond loopback. They have no authentication: "
        "only on a network you trust.",
    ),
) -> None:
    r"""Run virtual iPads, to rehearse a station without touching a real one.

    The virtual iPads answer on an emulated usbmuxd as iPads on USB do:
    pairing, TLS sessions, supervision, profiles, activation (against a fake
    Apple server), erase and reboot, apps, console log, battery and storage.
    The emulator runs until Ctrl-C.

    Rehearse a station (examples/rehearsal/ has both files ready):
    1. stationd emulator --socket /tmp/ipads.sock --scenario scenario.toml
    2. in stationd.toml: \[station] usbmuxd = "/tmp/ipads.sock",
       \[activation] url = "http://127.0.0.1:7781/deviceservices"
       and \[enrollment] url = "http://127.0.0.1:7782/enroll"
    3. stationd run, and watch: curl http://127.0.0.1:7780/devices
    4. pull a cable: curl -X POST -H 'Content-Type: application/json'
       http://127.0.0.1:7780/devices/UDID/unplug

    Or use pymobiledevice3: export USBMUXD_SOCKET_ADDRESS=/tmp/ipads.sock

    Control API: GET /devices, GET /devices/UDID, POST /devices (add an iPad:
    JSON with scenario keys), POST /devices/UDID/unplug, POST /devices/UDID/plug,
    POST /devices/UDID/battery ({"level": 8, "charging": false}).
    Every POST needs the header Content-Type: application/json. Everything listens
    on loopback only, unless --allow-remote.
    """
    plan = _plan(scenario, devices)
    socket_path = socket or Path(tempfile.gettempdir()) / "stationd-ipads.sock"
    if _socket_in_use(socket_path):
        _error_exit(f"something already listens on {socket_path} (a real usbmuxd?); choose another --socket PATH")
    try:
        if mdm and not allow_remote:
            check_loopback(mdm, "the fake MDM")
        emulator = Emulator(
            plan.specs,
            socket_path=socket_path,
            tcp_address=tcp,
            speed=plan.speed if speed is None else speed,
            seed=plan.seed,
            control_address=control,
            activation_address=activation,
            allow_remote=allow_remote,
        )
    except ValueError as error:
        _error_exit(str(error))

    try:
        asyncio.run(_serve(emulator, mdm))
    except OSError as error:
        reason = error.strerror or str(error)
        _error_exit(
            f"cannot listen: {reason}; choose other addresses (--socket, --tcp, --control, --activation, --mdm)"
        )
    typer.echo("emulator stopped")


def _plan(scenario: Path | None, devices: int | None) -> Scenario:
    """The scenario file's iPads (plus `devices` generated ones), or `devices` generated iPads (4 by default)."""
    try:
        plan = load_scenario(scenario) if scenario else generated_scenario(4 if devices is None else devices)
    except ScenarioError as error:
        _error_exit(str(error))
    if scenario and devices:
        plan.specs += [generated_spec(len(plan.specs) + i, plan.seed) for i in range(devices)]
    return plan


async def _serve(emulator: Emulator, mdm: str) -> None:
    """Run the emulator (and the fake MDM on `mdm`, unless empty) until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    fake_mdm = HTTPServer(mdm_app("Rehearsal School"), *parse_address(mdm)) if mdm else None
    async with emulator:
        if fake_mdm is not None:
            await fake_mdm.start()
        _banner(emulator, fake_mdm)
        try:
            await stop.wait()
        finally:
            if fake_mdm is not None:
                await fake_mdm.stop()


def _socket_in_use(path: Path) -> bool:
    """True when a live server answers on the UNIX socket at `path` (never replace a running usbmuxd)."""
    if not path.exists():
        return False
    probe = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _banner(emulator: Emulator, mdm: HTTPServer | None) -> None:
    """Where the emulator listens, and its iPads."""
    address = emulator.usbmux_address
    typer.echo(f"usbmuxd:      {address}")
    typer.echo(f"  for pymobiledevice3:  export USBMUXD_SOCKET_ADDRESS={address}")
    if emulator.socket_path:
        typer.echo(f"  for libimobiledevice: export USBMUXD_SOCKET_ADDRESS=UNIX:{address}")
    if emulator.tcp_address:
        typer.echo(f"usbmuxd TCP:  {parse_address(emulator.tcp_address)[0]}:{emulator.tcp_port}")
    typer.echo(f"control API:  {emulator.control_url}")
    typer.echo(f"activation:   {emulator.activation_url}")
    if mdm is not None:
        typer.echo(f"MDM enrollment URL: {mdm.url}/enroll")
    console = Console()
    count = len(emulator.devices)
    table = Table(title=f"{count} virtual iPad{'' if count == 1 else 's'}, speed {emulator.speed:g}")
    for column in ("UDID", "serial", "model", "port", "state"):
        table.add_column(column, no_wrap=column in ("UDID", "serial"))
    for device in emulator.devices.values():
        spec = device.spec
        state = [device.activation_state]
        if device.organization:
            state.append(f"supervised by {device.organization}")
        if spec.dep:
            state.append(f"DEP: {spec.dep.organization}")
        if spec.activation_locked:
            state.append("Activation Lock")
        if not device.setup_assistant:
            state.append("set up")
        if spec.faults:
            state.append(f"{len(spec.faults)} fault(s)")
        table.add_row(device.udid, spec.serial, spec.product_type, f"0x{device.location_id:08x}", ", ".join(state))
    console.print(table)
    console.print("Ctrl-C stops the emulator.")
    console.file.flush()


def _error_exit(message: str) -> NoReturn:
    """Print a one-line error for the technician and exit with code 2, as every stationd command does."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
