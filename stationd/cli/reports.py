"""`stationd reports`: every finished iPad's deliveries to the reporters, and sending failed ones again."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from stationd.cli.common import CONFIG_OPTION_HELP, error_exit, load_or_exit, with_store
from stationd.store import Delivery, Store


def reports_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    reporter: str | None = typer.Option(None, "--reporter", help="Only this reporter (asm, jamf, http, ...)."),
    status: str | None = typer.Option(None, "--status", help="Only pending, done or failed deliveries."),
    retry: bool = typer.Option(False, "--retry", help="Send the failed deliveries (of --reporter) again."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show how each finished iPad was reported: per reporter, pending, done, or failed with the reason.

    After fixing what a failure names (a serial added by the reseller, a token renewed), --retry sends the failed
    ones again; a running station picks them up within half a minute.

    Examples: stationd reports --status failed; stationd reports --retry --reporter asm
    """
    loaded = load_or_exit(config)
    if status is not None and status not in ("pending", "done", "failed"):
        error_exit(f"--status must be pending, done or failed, not {status!r}")
    if not loaded.store.shared and not Path(loaded.station.database).exists():
        error_exit(f"no database at {loaded.station.database}: the station has not run yet")

    async def read(store: Store) -> tuple[list[Delivery], int]:
        again = 0
        if retry:
            requeued, _ = await store.requeue_deliveries(station_id=loaded.station.id, reporter=reporter)
            again = len(requeued)
        return await store.list_deliveries(reporter=reporter, status=status), again

    deliveries, again = with_store(loaded, read)
    if as_json:
        rows = [
            {"serial": d.serial, "udid": d.udid, "reporter": d.reporter, "key": d.key, **d.summary()}
            for d in deliveries
        ]
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table("serial", "reporter", "status", "tries", "")
        for d in deliveries:
            table.add_row(d.serial or d.udid, d.reporter, d.status, str(d.attempts), d.message or "")
        Console().print(table)
    if retry:
        typer.echo(f"{again} failed deliveries queued again")
