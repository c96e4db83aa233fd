"""The `stationd` command line: one typer app, one small function per command."""

from __future__ import annotations

import collections
import logging
import os
import time
from pathlib import Path
from typing import Any, NoReturn

import anyio
import typer
from rich.console import Console
from rich.table import Table

from stationd import logs
from stationd.config import (
    Config,
    ConfigError,
    check_config,
    default_config_path,
    example_config,
    load_config,
)
from stationd.daemon import cancel_on_signal, run_station
from stationd.demo import demo
from stationd.doctor import run_checks
from stationd.errors import StationError
from stationd.events import Event
from stationd.files import write_private_file
from stationd.identity import (
    Identity,
    IdentityError,
    PasswordRequired,
    create_identity,
    import_identity,
    load_identity,
)
from stationd.plugins import PluginError
from stationd.portlabels import learn_from_usbmuxd, write_ports
from stationd.export import device_rows, to_csv, to_json
from stationd.store import StoreError, open_store

app = typer.Typer(
    name="stationd",
    help="Enrollment station for iPads: plug them in and walk away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _error_exit(message: str) -> NoReturn:
    """Print a one-line error for the technician and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


_CONFIG_OPTION_HELP = "Configuration file. Default: $STATIOND_CONFIG, else the system-wide stationd.toml."


@app.command("init")
def init_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
    org: str = typer.Option("Example School", "--org", help="Your organisation's name, as the iPads will show it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing configuration file."),
) -> None:
    """Write a commented configuration file for you to edit.

    Example: stationd init --org "Lincoln Primary School"
    """
    path = config or default_config_path()
    try:
        write_private_file(path, example_config(org).encode(), force)
    except FileExistsError:
        _error_exit(f"{path} already exists; edit it, or add --force to replace it with the example")
    except OSError as error:
        _error_exit(f"cannot write {path}: {error.strerror}")
    identity = path.parent / "identity.pem"
    typer.echo(f"Wrote {path}. Next steps:")
    typer.echo(f"  1. Edit {path}: organisation name, Wi-Fi, enrollment.")
    typer.echo(f'  2. Create a supervision identity: stationd identity create --org "{org}" --out {identity}')
    typer.echo(f"     or import Apple Configurator's: stationd identity import FILE.p12 --out {identity}")
    typer.echo(f"  3. Check everything: stationd check-config --config {path}")


@app.command("check-config")
def check_config_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
) -> None:
    """Check the configuration file and the files it names (identity, profiles).

    Lists every problem with its line. Exit code 0 when the station can run, 1 otherwise.

    Example: stationd check-config --config /etc/stationd/stationd.toml
    """
    path = config or default_config_path()
    try:
        loaded = load_config(path)
    except ConfigError as error:
        typer.echo(f"Problems in {error.path}:")
        for issue in error.issues:
            typer.echo(f"error: {issue}")
        raise typer.Exit(1) from None
    problems = check_config(loaded)
    for problem in problems:
        typer.echo(problem)
    if any(problem.startswith("error:") for problem in problems):
        raise typer.Exit(1)
    warnings = f" ({len(problems)} warning{'s' if len(problems) > 1 else ''})" if problems else ""
    typer.echo(f"configuration OK{warnings}")


identity_app = typer.Typer(
    help="The supervision identity: the certificate and key that prove the iPads belong to your organisation.",
    no_args_is_help=True,
)
app.add_typer(identity_app, name="identity")
_IDENTITY_OUT_HELP = "Where to write the identity. Default: identity.pem next to the configuration file."


def _default_identity_path() -> Path:
    return default_config_path().parent / "identity.pem"


def _print_identity(identity: Identity) -> None:
    typer.echo(f"File:          {identity.path}")
    typer.echo(f"Organization:  {identity.organization}")
    typer.echo(f"SHA-256:       {identity.fingerprint_sha256}")
    typer.echo(f"Valid until:   {identity.not_valid_after:%Y-%m-%d}")


@identity_app.command("create")
def identity_create(
    org: str = typer.Option(..., "--org", help="Your organisation's name, as the iPads will show it."),
    out: Path | None = typer.Option(None, "--out", help=_IDENTITY_OUT_HELP),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing identity (iPads supervised with it stop trusting this station)."
    ),
) -> None:
    """Create a new supervision identity.

    Use it when your organisation has none yet.
    iPads supervised with Apple Configurator trust only its identity until erased: import that one instead.
    Keep a copy of the file in a safe place.

    Example: stationd identity create --org "Lincoln Primary School"
    """
    try:
        identity = create_identity(out or _default_identity_path(), org, force)
    except IdentityError as error:
        _error_exit(str(error))
    _print_identity(identity)


def _import_asking_password(source: Path, dest: Path, password: str | None, force: bool) -> Identity:
    try:
        return import_identity(source, dest, password, force)
    except PasswordRequired:
        password = typer.prompt(f"Password for {source.name}", hide_input=True)
        return import_identity(source, dest, password, force)


@identity_app.command("import")
def identity_import(
    file: Path = typer.Argument(..., help="The .p12 file exported from Apple Configurator, or a PEM file."),
    out: Path | None = typer.Option(None, "--out", help=_IDENTITY_OUT_HELP),
    password_env: str | None = typer.Option(
        None, "--password-env", metavar="VAR", help="Read the password from this environment variable (for scripts)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity file."),
) -> None:
    """Import the supervision identity exported from Apple Configurator.

    In Apple Configurator: Settings > Organizations > select yours > Export Supervision Identity.
    The password is asked for (hidden) unless --password-env names a variable holding it.

    Example: stationd identity import "Lincoln Primary School.p12"
    """
    password = None
    if password_env is not None:
        if password_env not in os.environ:
            _error_exit(f"the environment variable {password_env} is not set")
        password = os.environ[password_env]
    try:
        identity = _import_asking_password(file, out or _default_identity_path(), password, force)
    except IdentityError as error:
        _error_exit(str(error))
    _print_identity(identity)


@identity_app.command("show")
def identity_show(
    path: Path | None = typer.Argument(None, help="Identity file. Default: identity.pem next to the configuration."),
) -> None:
    """Show an identity's organisation, fingerprint and expiry date (never its private key).

    Example: stationd identity show /etc/stationd/identity.pem
    """
    try:
        identity = load_identity(path or _default_identity_path())
    except IdentityError as error:
        _error_exit(str(error))
    _print_identity(identity)


def _load_or_exit(path: Path | None) -> Config:
    """Load the configuration, or print every problem and exit 2."""
    try:
        return load_config(path or default_config_path())
    except ConfigError as error:
        typer.echo(f"error: problems in {error.path}:", err=True)
        for issue in error.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(2) from None
    except FileNotFoundError:
        _error_exit(f"no configuration at {path or default_config_path()}: create one with `stationd init`")


@app.command("run")
def run_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
) -> None:
    """Run the station: watch USB, provision every iPad that is plugged in, until stopped.

    Each iPad goes through erase, activation, supervision, Wi-Fi, extra profiles, MDM enrollment, naming and
    reporting, as the configuration says. Progress is saved at every step: unplug an iPad, or stop the station,
    and it resumes where it stopped; no iPad is ever erased twice. Ctrl-C or SIGTERM parks every iPad cleanly.
    Every check of `stationd check-config` runs first: the station refuses to start on an error, before it
    touches any iPad.

    Example: stationd run --config /etc/stationd/stationd.toml
    """
    loaded = _load_or_exit(config)
    problems = check_config(loaded)
    errors = [problem for problem in problems if problem.startswith("error:")]
    for problem in problems:
        typer.echo(problem, err=True)
    if errors:
        _error_exit(
            f"the station did not start: fix the {len(errors)} error{'s' if len(errors) > 1 else ''} above "
            "(`stationd check-config` lists them again)"
        )
    logs.configure(loaded.station.log_format)
    try:
        anyio.run(run_station, loaded)
    except (*STARTUP_ERRORS, BaseExceptionGroup) as error:
        _error_exit(_startup_problem(error))


STARTUP_ERRORS = (IdentityError, StationError, StoreError, PluginError)


def _startup_problem(error: BaseException) -> str:
    """The technician-facing message of an expected error, even when task groups wrapped it; re-raise others."""
    if not isinstance(error, BaseExceptionGroup):
        return str(error)
    expected, unexpected = error.split(STARTUP_ERRORS)
    if unexpected is not None or expected is None:
        raise error
    leaves: list[BaseException] = []
    pending: list[BaseException] = [expected]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    return "; ".join(dict.fromkeys(str(leaf) for leaf in leaves))


def _rows(config: Path | None) -> list[dict[str, Any]]:
    loaded = _load_or_exit(config)
    if not Path(loaded.station.database).exists():
        _error_exit(f"no database at {loaded.station.database}: the station has not run yet")

    async def read() -> list[dict[str, Any]]:
        async with open_store(loaded.station.database) as store:
            return await device_rows(store)

    try:
        return anyio.run(read)
    except StoreError as error:
        _error_exit(str(error))


@app.command("status")
def status_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show each port now: which iPad is there, its step, and what needs a hand.

    Example: stationd status --json
    """
    rows = [r for r in _rows(config) if r["port"] is not None]
    rows.sort(key=lambda r: r["port"] or "")
    if as_json:
        typer.echo(to_json(rows), nl=False)
        return
    table = Table("port", "serial", "name", "state", "step", "problem")
    for row in rows:
        table.add_row(row["port"], row["serial"] or "?", row["name"] or "", row["state"], row["step"] or "", row["error_message"] or "")
    Console().print(table)
    counts = collections.Counter(r["state"] for r in rows)
    typer.echo(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no iPads seen yet")


@app.command("devices")
def devices_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every iPad this station has seen, with serial, model, iOS version, state and last error.

    Example: stationd devices
    """
    rows = _rows(config)
    if as_json:
        typer.echo(to_json(rows), nl=False)
        return
    table = Table("serial", "udid", "model", "iOS", "name", "state", "problem")
    for row in rows:
        table.add_row(row["serial"] or "?", row["udid"], row["model"] or "", row["ios_version"] or "", row["name"] or "", row["state"], row["error_message"] or "")
    Console().print(table)


@app.command("export")
def export_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
    fmt: str = typer.Option("csv", "--format", help="csv or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of the screen."),
) -> None:
    """Export every iPad (serial, UDID, ECID, model, iOS, Wi-Fi MAC, name, state, times, errors).

    The CSV is what Apple School Manager and MDM imports want: one row per serial.

    Example: stationd export --format csv -o cart-12.csv
    """
    if fmt not in ("csv", "json"):
        _error_exit(f"--format must be csv or json, not {fmt!r}")
    text = (to_csv if fmt == "csv" else to_json)(_rows(config))
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            write_private_file(output, text.encode(), force=True)
        except OSError as error:
            _error_exit(f"cannot write {output}: {error.strerror}")
        typer.echo(f"wrote {output} (readable by you only: it lists every serial, UDID and ECID)")


@app.command("ports")
def ports_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
    learn: bool = typer.Option(False, "--learn", help="Learn the ports: plug one iPad into each port in turn."),
    prefix: str = typer.Option("Port ", "--prefix", help='Label prefix, e.g. "Hub A · " gives "Hub A · 1", ...'),
    start: int = typer.Option(1, "--start", min=0, help="Number of the first port learnt."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many ports (default: Ctrl-C)."),
) -> None:
    """Show the port map, or learn it so every port has a name people can read from across the room.

    With --learn, plug an iPad (any iPad, it is not touched) into the first port, then the next, and so on, in
    the order you want them numbered; iPads already plugged in count first. Press Ctrl-C when every port is done:
    the labels are written to the [ports] section of the configuration (the rest of the file is kept).

    Example: stationd ports --learn --prefix "Hub A · " --count 10
    """
    path = config or default_config_path()
    loaded = _load_or_exit(path)
    if not learn:
        table = Table("label", "LocationID")
        for location, label in sorted(loaded.ports.labels.items()):
            table.add_row(label, f"0x{location:08x}")
        Console().print(table)
        if not loaded.ports.labels:
            typer.echo("No ports are labelled yet: run `stationd ports --learn`.")
        return
    learnt: dict[int, str] = {}

    def on_port(location: int, label: str) -> None:
        learnt[location] = label
        typer.echo(f"  {label}  (LocationID 0x{location:08x}) — now plug into the next port")

    async def listen() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancel_on_signal, tasks.cancel_scope)
            await learn_from_usbmuxd(
                loaded.station.usbmuxd, prefix=prefix, start=start, count=count,
                known=dict(loaded.ports.labels), on_port=on_port,
            )
            tasks.cancel_scope.cancel()

    typer.echo(f"Plug an iPad into the port to call {prefix}{start}. Ctrl-C when every port is done.")
    anyio.run(listen)
    if not learnt:
        typer.echo("No new port was plugged in; the configuration is unchanged.")
        return
    write_ports(path, {**loaded.ports.labels, **learnt})
    typer.echo(f"Wrote {len(learnt)} port label(s) to {path}.")


@app.command("doctor")
def doctor_command(
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_OPTION_HELP),
) -> None:
    """Check that this machine can run a station: configuration, identity, database, usbmuxd.

    Example: stationd doctor
    """
    results = anyio.run(run_checks, config or default_config_path())
    for ok, what, detail in results:
        typer.echo(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}")
    if not all(ok for ok, _, _ in results):
        raise typer.Exit(1)


@app.command("demo")
def demo_command(
    devices: int = typer.Option(8, "--devices", min=1, max=256, help="How many virtual iPads to plug in."),
    speed: float = typer.Option(0.05, "--speed", min=0.0, help="Device timing factor: 1.0 is a real iPad's pace."),
    exit_when_done: bool = typer.Option(False, "--exit-when-done", help="Stop once every iPad is done or failed."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Keep the demo's files (database, identity) here."),
) -> None:
    """Watch the station provision virtual iPads: no hardware, no network, nothing to configure.

    Starts the emulator with N virtual iPads, a fake activation server and a fake MDM on this machine, and the
    real daemon on them. Exit code 0 only if every iPad finished.

    Example: stationd demo --devices 8 --exit-when-done
    """
    logs.configure("console", level=logging.WARNING)
    console = Console()
    started = time.monotonic()

    def show(event: Event) -> None:
        if event.kind in SHOWN_EVENTS:
            elapsed = time.monotonic() - started
            detail = event.data.get("error_message") or event.step or ""
            console.print(f"{elapsed:7.1f}s  {event.port_label or '':>12}  {event.serial or event.udid or '':<12}  {event.kind:<16} {detail}")

    def announce(dashboard_url: str) -> None:
        console.print(f"Dashboard: {dashboard_url}  (open it in a browser while the demo runs)")

    board = console.is_terminal
    results = anyio.run(
        lambda: demo(
            devices, speed=speed, exit_when_done=exit_when_done, workdir=workdir, board=board,
            show=(lambda event: None) if board else show, on_start=announce,
        )
    )
    done = sum(1 for r in results.values() if r == "done")
    console.print(f"{done} of {devices} iPads done, {len(results) - done} failed, in {time.monotonic() - started:.1f}s")
    if exit_when_done and done != devices:
        raise typer.Exit(1)


SHOWN_EVENTS = {"device.attached", "step.started", "step.waiting", "step.retrying", "step.failed", "device.done"}


@app.command("emulator")
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
        "127.0.0.1:7782", "--mdm", metavar="127.0.0.1:PORT",
        help='Fake MDM: its enrollment URL is http://ADDRESS/enroll ("" to turn it off).',
    ),
    allow_remote: bool = typer.Option(
        False, "--allow-remote",
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
    import asyncio
    import signal
    import tempfile

    from stationd.emulator.control import check_loopback
    from stationd.emulator.ipad import generated_spec
    from stationd.emulator.emulator import Emulator
    from stationd.emulator.mdm_server import mdm_app
    from stationd.emulator.scenario import (
        ScenarioError,
        generated_scenario,
        load_scenario,
    )
    from stationd.httpserve import HTTPServer, parse_address

    try:
        plan = load_scenario(scenario) if scenario else generated_scenario(4 if devices is None else devices)
    except ScenarioError as error:
        _error_exit(str(error))
    if scenario and devices:
        plan.specs += [generated_spec(len(plan.specs) + i, plan.seed) for i in range(devices)]
    socket_path = socket or Path(tempfile.gettempdir()) / "stationd-ipads.sock"
    if _emulator_socket_in_use(socket_path):
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

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        fake_mdm = HTTPServer(mdm_app("Rehearsal School"), *parse_address(mdm)) if mdm else None
        async with emulator:
            if fake_mdm is not None:
                await fake_mdm.start()
            _emulator_banner(emulator, fake_mdm)
            try:
                await stop.wait()
            finally:
                if fake_mdm is not None:
                    await fake_mdm.stop()

    try:
        asyncio.run(serve())
    except OSError as error:
        reason = error.strerror or str(error)
        _error_exit(f"cannot listen: {reason}; choose other addresses (--socket, --tcp, --control, --activation, --mdm)")
    typer.echo("emulator stopped")


def _emulator_socket_in_use(path: Path) -> bool:
    """True when a live server answers on the UNIX socket at `path` (never replace a running usbmuxd)."""
    import socket

    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _emulator_banner(emulator: Any, mdm: Any) -> None:
    """Where the emulator listens, and its iPads."""
    from stationd.httpserve import parse_address

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
