"""What every command shares: the --config option's help, one way to fail, one way to load the configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

import anyio
import typer

from stationd.config import Config, ConfigError, default_config_path, load_config
from stationd.fleet.storage import store_for
from stationd.store import Store, StoreError

T = TypeVar("T")

# Help texts are read as Markdown: a paragraph is reflowed to the terminal's width (rich's own markup would keep the
# docstrings' line breaks and take "[plugins.asm]" or "[queue] unknown" for style tags and drop them).
HELP_MARKUP: Literal["markdown"] = "markdown"
CONFIG_OPTION_HELP = "Configuration file. Default: $STATIOND_CONFIG, else the system-wide stationd.toml."


def error_exit(message: str) -> NoReturn:
    """Print a one-line error for the technician and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def with_store(loaded: Config, action: Callable[[Store], Awaitable[T]]) -> T:
    """`action` on the configured store (the station's file or the fleet's database); a store error exits 2 with
    its message."""

    async def run() -> T:
        async with store_for(loaded) as store:
            return await action(store)

    try:
        return anyio.run(run)
    except StoreError as error:
        error_exit(str(error))


def load_or_exit(path: Path | None) -> Config:
    """Load the configuration, or print every problem and exit 2."""
    try:
        return load_config(path or default_config_path())
    except ConfigError as error:
        typer.echo(f"error: problems in {error.path}:", err=True)
        for issue in error.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(2) from None
