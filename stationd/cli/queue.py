"""The work list: `stationd queue` (progress), `queue import FILE.csv`, `queue export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from stationd.apple.worklist import SerialList
from stationd.cli.asm import assign_and_show, settings_or_exit
from stationd.cli.common import CONFIG_OPTION_HELP, HELP_MARKUP, error_exit, load_or_exit, with_store
from stationd.export import to_csv, to_json
from stationd.files import write_private_file
from stationd.fleet import worklist

queue_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help="The work list: the serials to be done, shared by every station of the fleet.",
    invoke_without_command=True,
)


@queue_app.callback()
def queue_command(
    context: typer.Context,
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a summary."),
) -> None:
    """Show how far the work list is: done, in progress, failed, not yet seen.

    Example: stationd queue
    """
    if context.invoked_subcommand is not None:
        return
    loaded = load_or_exit(config)
    entries, unlisted = with_store(loaded, worklist.progress)
    totals = worklist.counts(entries)
    if as_json:
        typer.echo(to_json([{"listed": len(entries), **totals, "not on the list": unlisted}]), nl=False)
        return
    if not entries:
        typer.echo("the work list is empty: import one with  stationd queue import FILE.csv")
        return
    table = Table("status", "iPads", "share")
    for status, count in totals.items():
        table.add_row(status, str(count), f"{count / len(entries):.0%}")
    Console().print(table)
    typer.echo(f"{len(entries)} serials on the work list; {unlisted} iPads not on it were provisioned as well")


@queue_app.command("import")
def import_command(
    file: Path = typer.Argument(
        ..., help="CSV file with a column of serial numbers (and optionally name, group, notes)."
    ),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the file, import nothing."),
    assign: bool = typer.Option(
        False,
        "--assign",
        help="Then assign the serials to the MDM server of [plugins.asm] in Apple School/Business Manager, verified "
        "(as stationd asm assign does). Exit code 1 when any did not move.",
    ),
    to: str | None = typer.Option(
        None, "--to", help="With --assign: the MDM server's name instead of [plugins.asm]'s."
    ),
) -> None:
    """Import the serials to be done, from the CSV file you already have.

    Export it from your previous MDM or from Apple School/Business Manager, or write it in a spreadsheet: a
    column named "serial" (or only serial numbers, one a line); optional columns "name" (the iPad gets this name
    instead of the naming pattern's), "group" (or "tag") and "notes". Cells may be separated by , or ; or tabs.
    Every problem is listed with its line, and nothing is imported unless the whole file is right. A serial
    already on the list is updated. With --assign, the serials are also assigned to your MDM server in Apple
    School/Business Manager (DEP mode: an iPad waits at the station until its serial is assigned).

    Examples: stationd queue import serials.csv; stationd queue import serials.csv --assign
    """
    if to is not None and not assign:
        error_exit("--to names the server for --assign: add --assign, or leave --to out")
    asm = settings_or_exit(config) if assign else None  # nothing is imported when --assign cannot be done
    loaded = asm[1] if asm is not None else load_or_exit(config)
    try:
        data = file.read_bytes()
    except OSError as error:
        error_exit(f"cannot read {file}: {error.strerror}")
    try:
        items = worklist.read_worklist(data, str(file))
    except worklist.WorkListError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(f"{file}: {len(items)} serials, ready to import (nothing imported: --dry-run)")
        return

    async def run(store: Any) -> tuple[int, int]:
        return await store.import_worklist(items)

    added, updated = with_store(loaded, run)
    typer.echo(f"imported {file}: {added} serials added, {updated} updated")
    if asm is not None and assign_and_show(asm, SerialList([item.serial for item in items]), to):
        raise typer.Exit(1)


@queue_app.command("export")
def export_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    fmt: str = typer.Option("csv", "--format", help="csv or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of the screen."),
) -> None:
    """The final report: every serial of the work list once, with its status, name, station and time.

    Example: stationd queue export --format csv -o holiday-week.csv
    """
    if fmt not in ("csv", "json"):
        error_exit(f"--format must be csv or json, not {fmt!r}")
    loaded = load_or_exit(config)
    entries, _ = with_store(loaded, worklist.progress)
    rows = worklist.export_rows(entries)
    text = to_csv(rows, worklist.EXPORT_FIELDS) if fmt == "csv" else to_json(rows)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        write_private_file(output, text.encode(), force=True)
    except OSError as error:
        error_exit(f"cannot write {output}: {error.strerror}")
    typer.echo(f"wrote {output}: {len(rows)} serials (readable by you only)")
