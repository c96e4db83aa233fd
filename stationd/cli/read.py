"""Reading what a station did: status (each port now), devices (every iPad seen), export (CSV or JSON)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.console import Console
from rich.table import Table

from stationd.cli.common import CONFIG_OPTION_HELP, error_exit, load_or_exit
from stationd.export import device_rows, to_configurator, to_csv, to_json, to_serials
from stationd.files import write_private_file
from stationd.fleet.journal import waiting_entries
from stationd.fleet.storage import store_for
from stationd.pipeline.plan import STEPS
from stationd.states import DeviceState
from stationd.store import StoreError, StoreUnavailable


def _rows(config: Path | None) -> list[dict[str, Any]]:
    loaded = load_or_exit(config)
    if not loaded.store.shared and not Path(loaded.station.database).exists():
        error_exit(f"no database at {loaded.station.database}: the station has not run yet")

    async def read() -> list[dict[str, Any]]:
        async with store_for(loaded) as store:
            return await device_rows(store)

    try:
        return anyio.run(read)
    except StoreUnavailable as error:
        waiting = waiting_entries(loaded.store.journal) if loaded.store.journal is not None else 0
        error_exit(
            f"{error}. This station goes on with the iPads already in progress; {waiting} of its writes wait in "
            f"its journal ({loaded.store.journal}) and are delivered when the database is back; new iPads wait."
        )
    except StoreError as error:
        error_exit(str(error))


def _cells(row: dict[str, Any], *names: str) -> list[str]:
    """The row's values for a table: an unknown serial shows "?", any other missing value nothing."""
    return [str(row[name] or ("?" if name == "serial" else "")) for name in names]


def status_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show each port now: which iPad is there, its charge, its step, and what needs a hand.

    Example: stationd status --json
    """
    rows = [r for r in _rows(config) if r["port"] is not None]
    rows.sort(key=lambda r: r["port"] or "")
    if as_json:
        typer.echo(to_json(rows), nl=False)
        return
    table = Table("port", "serial", "name", "battery", "state", "step", "problem")
    for row in rows:
        port, serial, name, state, step, problem = _cells(
            row, "port", "serial", "name", "state", "step", "error_message"
        )
        battery = "" if row["battery_level"] is None else f"{row['battery_level']} %"
        table.add_row(port, serial, name, battery, state, step, problem)
    Console().print(table)
    counts = collections.Counter(r["state"] for r in rows)
    typer.echo(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no iPads seen yet")


def devices_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
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
        table.add_row(*_cells(row, "serial", "udid", "model", "ios_version", "name", "state", "error_message"))
    Console().print(table)


def export_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    fmt: str = typer.Option(
        "csv", "--format", help="csv, json, or configurator (the columns of Apple Configurator's Export Info)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of the screen."),
    serials_only: bool = typer.Option(
        False,
        "--serials-only",
        help="Only the serial numbers, one per line and no header: the CSV Apple School/Business Manager's Device "
        "Assignments and the previous MDM take (release, assign).",
    ),
    state: str | None = typer.Option(
        None, "--state", help="Only iPads in this state: done, failed, held, ... (as `stationd devices` shows)."
    ),
) -> None:
    """Export every iPad (serial, UDID, ECID, model, iOS, Wi-Fi MAC, name, state, times, errors, and how each
    reporter took it: asm, jamf, ... done, pending or failed with the reason).

    The CSV is what Apple School Manager and MDM imports want: one row per serial. --format configurator writes
    the columns of Apple Configurator's Export Info (name, serial, UDID, ECID, model, iOS, capacity, Wi-Fi and
    Bluetooth addresses, battery, supervision, organisation), for sheets and scripts made for Configurator.

    Examples: stationd export --format csv -o cart-12.csv;
    stationd export --serials-only --state failed -o release.csv (for the previous owner to release).
    """
    writers = {"csv": to_csv, "json": to_json, "configurator": to_configurator}
    if fmt not in writers:
        error_exit(f"--format must be csv, json or configurator, not {fmt!r}")
    rows = _rows(config)
    if state is not None:
        known = [*DeviceState, *STEPS]
        if state.strip().lower() not in known:
            error_exit(f"--state must be one of {', '.join(known)}, not {state!r}")
        rows = [r for r in rows if r["state"] == state.strip().lower()]
    text = to_serials(rows) if serials_only else writers[fmt](rows)
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            write_private_file(output, text.encode(), force=True)
        except OSError as error:
            error_exit(f"cannot write {output}: {error.strerror}")
        typer.echo(f"wrote {output} (readable by you only: it lists every serial, UDID and ECID)")
