"""The port map: show it, or learn it by plugging one iPad into each port in turn."""

from __future__ import annotations

from pathlib import Path

import anyio
import typer
from rich.console import Console
from rich.table import Table

from stationd.cli.common import CONFIG_OPTION_HELP, load_or_exit
from stationd.config import default_config_path
from stationd.daemon import cancel_on_signal
from stationd.portlabels import learn_from_usbmuxd, write_ports


def ports_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
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
    loaded = load_or_exit(path)
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
                loaded.station.usbmuxd,
                prefix=prefix,
                start=start,
                count=count,
                known=dict(loaded.ports.labels),
                on_port=on_port,
            )
            tasks.cancel_scope.cancel()

    typer.echo(f"Plug an iPad into the port to call {prefix}{start}. Ctrl-C when every port is done.")
    anyio.run(listen)
    if not learnt:
        typer.echo("No new port was plugged in; the configuration is unchanged.")
        return
    write_ports(path, {**loaded.ports.labels, **learnt})
    typer.echo(f"Wrote {len(learnt)} port label(s) to {path}.")
