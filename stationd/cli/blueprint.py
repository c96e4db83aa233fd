"""The fleet's shared settings: `stationd blueprint push|list|show|diff`."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import typer

from stationd.cli.common import CONFIG_OPTION_HELP, HELP_MARKUP, error_exit, load_or_exit, with_store
from stationd.config import Config
from stationd.errors import ConfigurationError
from stationd.fleet import blueprint
from stationd.fleet.storage import fleet_secret

blueprint_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help="Blueprints: one set of provisioning settings for the whole fleet, in the fleet's database.",
    no_args_is_help=True,
)
NAME_HELP = "The blueprint's name; stations take it with [fleet] blueprint = NAME."


@blueprint_app.command("push")
def push_command(
    name: str = typer.Argument(..., help=NAME_HELP),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Store this station's [steps], [wifi], [enrollment], [profiles] (with the profile files) and [naming] as
    the blueprint's next version.

    Stations with [fleet] blueprint = NAME use it for the next iPads they start (iPads in progress keep the
    version they started with). The Wi-Fi password, the profile files and credentials in the enrollment URL are
    stored encrypted with the fleet's secret ([fleet] secret_file).

    Example: stationd blueprint push school-2025
    """
    loaded = load_or_exit(config)
    secret = _secret(loaded)
    try:
        content = blueprint.capture(loaded, secret)
    except ConfigurationError as error:
        error_exit(str(error))

    async def push(store: Any) -> Any:
        return await store.push_blueprint(name, content, station_id=loaded.station.id)

    record = _run(loaded, push)
    typer.echo(f"pushed blueprint {name!r} version {record.version}: stations following it use it for the next iPads")


@blueprint_app.command("list")
def list_command(config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP)) -> None:
    """List every blueprint and its versions: when and from which station each was pushed.

    Example: stationd blueprint list
    """
    loaded = load_or_exit(config)
    records = _run(loaded, lambda store: store.list_blueprints())
    if not records:
        typer.echo("no blueprint yet: push one with  stationd blueprint push NAME")
    for record in records:
        typer.echo(f"{record.name}  v{record.version}  {_when(record.created_at)}  from {record.station_id}")


@blueprint_app.command("show")
def show_command(
    name: str = typer.Argument(..., help=NAME_HELP),
    version: int | None = typer.Option(None, "--version", min=1, help="Which version. Default: the newest."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Show a blueprint's settings (secrets only as "encrypted").

    Example: stationd blueprint show school-2025 --version 2
    """
    loaded = load_or_exit(config)
    record = _one(loaded, name, version)
    typer.echo(
        f"# blueprint {record.name} v{record.version}, pushed {_when(record.created_at)} from {record.station_id}"
    )
    for key, value in blueprint.flat(record.content).items():
        typer.echo(f"{key} = {value}")


@blueprint_app.command("diff")
def diff_command(
    name: str = typer.Argument(..., help=NAME_HELP),
    old: int | None = typer.Argument(None, help="The older version. Default: the one before the newest."),
    new: int | None = typer.Argument(None, help="The newer version. Default: the newest."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Show what changed between two versions of a blueprint.

    Example: stationd blueprint diff school-2025 1 2
    """
    loaded = load_or_exit(config)
    newer = _one(loaded, name, new)
    older = _one(loaded, name, old if old is not None else max(1, newer.version - 1))
    lines = blueprint.diff(older.content, newer.content)
    typer.echo(f"# {name}: v{older.version} -> v{newer.version}")
    typer.echo("\n".join(lines) if lines else "no difference")


def _secret(loaded: Config) -> str | None:
    if loaded.fleet is None:
        return None
    try:
        return fleet_secret(loaded.fleet)
    except ConfigurationError as error:
        error_exit(str(error))


def _one(loaded: Config, name: str, version: int | None) -> Any:
    record = _run(loaded, lambda store: store.get_blueprint(name, version))
    if record is None:
        which = f"version {version} of " if version is not None else ""
        error_exit(f"no {which}blueprint {name!r} in the fleet database (stationd blueprint list shows them)")
    return record


def _run(loaded: Config, action: Any) -> Any:
    if not loaded.store.shared:
        error_exit("blueprints live in the fleet's database: set [store] url to the fleet's PostgreSQL URL")
    return with_store(loaded, action)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
