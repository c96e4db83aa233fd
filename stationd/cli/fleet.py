"""The fleet: `stationd fleet` lists the stations of this station's fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import typer
from rich.console import Console
from rich.table import Table

from stationd.cli.common import CONFIG_OPTION_HELP, error_exit, load_or_exit
from stationd.config import Config
from stationd.errors import ConfigurationError
from stationd.export import to_json
from stationd.fleet.presence import Peer, browse, stale_after
from stationd.fleet.storage import fleet_secret, store_for
from stationd.store import StoreError

PROBE_TIMEOUT = 2.0


def fleet_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    listen: float = typer.Option(
        2.0, "--browse", min=0.0, max=30.0, help="Seconds to listen for stations over Bonjour (0: only the database)."
    ),
) -> None:
    """List the stations of this station's fleet: id, host, API, counts, last seen, reachable.

    Stations are found in the fleet's database (each running station writes a heartbeat there) and over Bonjour
    on this network; a station of another fleet is not listed. Each one's API is asked, with the fleet's secret,
    whether it answers.

    Example: stationd fleet
    """
    loaded = load_or_exit(config)
    if loaded.fleet is None:
        error_exit("this station is not part of a fleet: add a [fleet] section with the fleet's name")
    try:
        secret = fleet_secret(loaded.fleet)
    except ConfigurationError as error:
        error_exit(str(error))
    try:
        peers = anyio.run(_stations, loaded, listen, secret)
    except StoreError as error:
        error_exit(str(error))
    if as_json:
        typer.echo(to_json(peers), nl=False)
        return
    table = Table("station", "host", "API", "busy", "done", "failed", "last seen", "reachable", "found by")
    for peer in peers:
        counts = peer["counts"]
        seen = "" if peer["last_seen"] is None else f"{peer['last_seen']:.0f} s ago"
        table.add_row(
            peer["id"] + (" (this one)" if peer["self"] else ""),
            peer["host"] or "",
            peer["api"] or "",
            *(str(counts.get(name, "")) for name in ("busy", "done", "failed")),
            seen,
            {True: "yes", False: "NO", None: "?"}[peer["reachable"]],
            ", ".join(peer["via"]),
        )
    Console().print(table)
    typer.echo(f"{len(peers)} station{'s' if len(peers) != 1 else ''} in fleet {loaded.fleet.name!r}")


async def _stations(config: Config, listen: float, secret: str | None) -> list[dict[str, Any]]:
    fleet = config.fleet
    assert fleet is not None
    merged: dict[str, Peer] = {}
    if config.store.shared:
        async with store_for(config) as store:
            for record in await store.list_stations(fleet=fleet.name):
                if record.stopped or record.age > stale_after(fleet):
                    continue
                merged[record.id] = Peer(
                    record.id,
                    host=record.info.get("host"),
                    api=record.info.get("api"),
                    counts=dict(record.info.get("counts") or {}),
                    version=record.info.get("version"),
                    last_seen=round(record.age, 1),
                    via={"database"},
                )
    if listen > 0:
        for peer in await browse(fleet, listen):
            known = merged.setdefault(peer.id, peer)
            if known is not peer:
                known.via |= peer.via
                known.api = known.api or peer.api
    rows = [
        peer.as_dict() | {"reachable": None, "self": peer.id == config.station.id}
        for peer in sorted(merged.values(), key=lambda peer: peer.id)
    ]
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as client, anyio.create_task_group() as tasks:
        for row in rows:
            tasks.start_soon(_probe, client, row, secret)
    return rows


async def _probe(client: httpx.AsyncClient, row: dict[str, Any], secret: str | None) -> None:
    """Whether the station's API answers: with the secret, its peer endpoint; without, its public status."""
    if not row["api"]:
        return
    base = row["api"].rstrip("/")
    try:
        if secret:
            response = await client.get(f"{base}/api/fleet/station", headers={"authorization": f"Bearer {secret}"})
        else:
            response = await client.get(f"{base}/api/station")
    except httpx.HTTPError:
        row["reachable"] = False
        return
    row["reachable"] = response.status_code == 200
