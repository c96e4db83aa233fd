"""`stationd asm`: Apple School/Business Manager by hand, with the API account of [plugins.asm]: the MDM servers,
where serials are, and assigning them (the same batching and verification as the asm reporter)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import typer
from rich.console import Console
from rich.table import Table

from stationd.apple.assign import where_is
from stationd.apple.client import AppleClient, AppleError, BudgetSpent
from stationd.apple.settings import AsmSettings, read_settings
from stationd.apple.worklist import SerialFile, SerialList, SerialSource, WorkListError, assign_serials
from stationd.cli.common import CONFIG_OPTION_HELP, HELP_MARKUP, error_exit, load_or_exit
from stationd.config import Config
from stationd.fleet.storage import store_for
from stationd.plugins import PluginConfigError
from stationd.store import Assignment, Store, StoreError

T = TypeVar("T")

asm_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help="Apple School Manager / Apple Business Manager: MDM servers, where serials are, assigning them. Uses the "
    "API account of [plugins.asm] in the configuration.",
    no_args_is_help=True,
)
WORK_LIST_HELP = "A file of serials: one per line, or a CSV with a serial column (stationd export writes one)."


def settings_or_exit(config: Path | None) -> tuple[AsmSettings, Config]:
    loaded = load_or_exit(config)
    table = loaded.plugins.settings.get("asm")
    if table is None:
        error_exit(
            "the configuration has no [plugins.asm]: add it with client_id, key_id, key_file and server "
            "(the API account of Apple School Manager › Preferences › API)"
        )
    try:
        return read_settings(table), loaded
    except PluginConfigError as error:
        error_exit(str(error))


def _run(read: tuple[AsmSettings, Config], work: Callable[[AsmSettings, AppleClient, Store], Awaitable[T]]) -> T:
    settings, loaded = read

    async def main() -> T:
        async with store_for(loaded) as store, settings.session(store) as client:
            return await work(settings, client, store)

    try:
        return anyio.run(main)
    except (AppleError, StoreError, WorkListError) as error:
        error_exit(str(error))


def _source(serials: list[str], work_list: Path | None) -> SerialSource:
    if bool(serials) == (work_list is not None):
        error_exit("give serial numbers or --work-list FILE (one of them)")
    return SerialFile(work_list) if work_list is not None else SerialList(serials)


@asm_app.command("servers")
def servers_command(config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP)) -> None:
    """List the organisation's MDM servers (name, id, type), to write one as server in [plugins.asm].

    Example: stationd asm servers
    """

    async def work(settings: AsmSettings, client: AppleClient, store: Store) -> None:
        table = Table("name", "id", "type")
        for server in await client.servers(fresh=True):
            table.add_row(server.name, server.id, "Apple Configurator" if server.configurator else server.type)
        Console().print(table)

    _run(settings_or_exit(config), work)


@asm_app.command("check")
def check_command(
    serials: list[str] = typer.Argument(None, help="Serial numbers."),
    work_list: Path | None = typer.Option(None, "--work-list", help=WORK_LIST_HELP),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Show where each serial is assigned, and record it (an iPad held in DEP mode goes on once it is ours).

    Each serial is one GET, within Apple's budget of about 20 a minute: a long list takes a while.

    Example: stationd asm check F9FXK2LQ F9FZZ9AB
    """
    source = _source(serials or [], work_list)

    async def work(settings: AsmSettings, client: AppleClient, store: Store) -> int:
        server = await client.server(settings.server)
        table = Table("serial", "where", "")
        missing = 0
        for serial in source.serials():
            verdict = await _patiently(where_is, client, serial, server)
            status = "assigned" if verdict.moved else ("failed" if "not in your" in verdict.message else "unknown")
            await store.record_assignments([Assignment(serial, status, server.name, verdict.message)])
            missing += not verdict.moved
            table.add_row(serial, "ours" if verdict.moved else "not ours", verdict.message)
        Console().print(table)
        return missing

    if _run(settings_or_exit(config), work):
        raise typer.Exit(1)


@asm_app.command("assign")
def assign_command(
    serials: list[str] = typer.Argument(None, help="Serial numbers."),
    work_list: Path | None = typer.Option(None, "--work-list", help=WORK_LIST_HELP),
    to: str | None = typer.Option(None, "--to", help="The MDM server's name (default: server in [plugins.asm])."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Assign serials to an MDM server in one verified activity (per 1000), before or after their iPads come.

    Each serial is verified from the activity's log (or where it now sits); one that did not move is listed with
    the reason. Exit code 1 when any did not move. In DEP mode, iPads held for their assignment go on by themselves.

    Example: stationd asm assign --work-list cart-12.txt --to "Lincoln Jamf"
    """
    source = _source(serials or [], work_list)
    if assign_and_show(settings_or_exit(config), source, to):
        raise typer.Exit(1)


def assign_and_show(read: tuple[AsmSettings, Config], source: SerialSource, to: str | None) -> int:
    """Assign `source`'s serials (to `to`, or the server of [plugins.asm]), show each verdict; how many did not move.
    `stationd asm assign` and `stationd queue import --assign` both do it."""

    async def work(settings: AsmSettings, client: AppleClient, store: Store) -> int:
        def waiting(message: str, after: float) -> None:
            typer.echo(f"waiting {after:.0f} s: {message}", err=True)

        verdicts = await assign_serials(
            client, store, source, to or settings.server, batch=settings.batch, poll=settings.poll, waiting=waiting
        )
        table = Table("serial", "moved", "")
        for verdict in verdicts.values():
            table.add_row(verdict.serial, "yes" if verdict.moved else "NO", verdict.message)
        Console().print(table)
        moved = sum(v.moved for v in verdicts.values())
        typer.echo(f"{moved} of {len(verdicts)} serials assigned to {to or settings.server}")
        return len(verdicts) - moved

    return _run(read, work)


async def _patiently(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """The call's answer, waiting out Apple's budget as often as it takes."""
    while True:
        try:
            return await call(*args)
        except BudgetSpent as spent:
            typer.echo(f"waiting {spent.after or 60:.0f} s: {spent.message}", err=True)
            await anyio.sleep(spent.after or 60.0)
