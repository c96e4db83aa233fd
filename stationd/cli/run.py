"""Running a station: run (the real one) and demo (virtual iPads, nothing to configure)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import typer
from rich.console import Console

from stationd import logs
from stationd.cli.common import CONFIG_OPTION_HELP, error_exit, load_or_exit
from stationd.config import check_config
from stationd.daemon import run_station
from stationd.demo import demo
from stationd.errors import StationError
from stationd.events import Event
from stationd.identity import IdentityError
from stationd.plugins import PluginError
from stationd.store import StoreError


def run_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Run the station: watch USB, provision every iPad that is plugged in, until stopped.

    Each iPad goes through erase, activation, supervision, Wi-Fi, extra profiles, MDM enrollment, naming and
    reporting, as the configuration says. Progress is saved at every step: unplug an iPad, or stop the station,
    and it resumes where it stopped; no iPad is ever erased twice. Ctrl-C or SIGTERM parks every iPad cleanly.
    Every check of `stationd check-config` runs first: the station refuses to start on an error, before it
    touches any iPad.

    Example: stationd run --config /etc/stationd/stationd.toml
    """
    loaded = load_or_exit(config)
    problems = check_config(loaded)
    errors = [problem for problem in problems if problem.startswith("error:")]
    for problem in problems:
        typer.echo(problem, err=True)
    if errors:
        error_exit(
            f"the station did not start: fix the {len(errors)} error{'s' if len(errors) > 1 else ''} above "
            "(`stationd check-config` lists them again)"
        )
    logs.configure(loaded.station.log_format)
    try:
        anyio.run(run_station, loaded)
    except (*STARTUP_ERRORS, BaseExceptionGroup) as error:
        error_exit(_startup_problem(error))


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
            device = event.serial or event.udid or ""
            console.print(f"{elapsed:7.1f}s  {event.port_label or '':>12}  {device:<12}  {event.kind:<16} {detail}")

    def announce(dashboard_url: str) -> None:
        console.print(f"Dashboard: {dashboard_url}  (open it in a browser while the demo runs)")

    board = console.is_terminal
    results = anyio.run(
        lambda: demo(
            devices,
            speed=speed,
            exit_when_done=exit_when_done,
            workdir=workdir,
            board=board,
            show=(lambda event: None) if board else show,
            on_start=announce,
        )
    )
    done = sum(1 for r in results.values() if r == "done")
    console.print(f"{done} of {devices} iPads done, {len(results) - done} failed, in {time.monotonic() - started:.1f}s")
    if exit_when_done and done != devices:
        raise typer.Exit(1)


SHOWN_EVENTS = {"device.attached", "step.started", "step.waiting", "step.retrying", "step.failed", "device.done"}
