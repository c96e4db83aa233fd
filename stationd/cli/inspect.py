"""`stationd inspect`: what one plugged-in iPad says about itself, like Apple Configurator's device view. Read-only.

It pairs with nothing by itself: an iPad that does not trust this station yet is shown from what lockdownd tells any
computer, with why and what to do. Pairing writes a host record onto the iPad and, on a set-up iPad not supervised
by this station, puts "Trust This Computer?" on its screen; and no public value tells an iPad in Setup Assistant
(which pairs silently) from a set-up one. So pairing waits for --pair.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import typer
from pymobiledevice3 import usbmux
from rich.console import Console
from rich.table import Table

from stationd.cli.common import CONFIG_OPTION_HELP, error_exit, load_or_exit
from stationd.config import Config
from stationd.device import DeviceSession
from stationd.device.inventory import inventory
from stationd.errors import NotTrusted, StationError
from stationd.fleet.storage import store_for
from stationd.identity import Identity, IdentityError, load_identity
from stationd.store import StoreError
from stationd.usbmux.address import UsbmuxAddress, resolve

LOG_SECONDS = 2.0  # how long --log listens to the console
TIMEOUT = 60.0  # an iPad that has not answered everything by then is given up on
PUBLIC = (("DeviceName", "name"), ("ProductType", "model"), ("ProductVersion", "iOS"), ("BuildVersion", "build"))
GB = 1_000_000_000


def inspect_command(
    target: str = typer.Argument(..., metavar="UDID|SERIAL", help="The iPad: its UDID, or its serial number."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the view."),
    log: int = typer.Option(0, "--log", min=0, max=5000, metavar="N", help="Also print its last N console lines."),
    pair: bool = typer.Option(
        False,
        "--pair",
        help="Pair if it does not trust this station yet: silent in Setup Assistant and on iPads this station's "
        "organisation supervises; a set-up iPad shows 'Trust This Computer?'.",
    ),
) -> None:
    """Show everything one plugged-in iPad says about itself: identity, hardware addresses, iPadOS, supervision and
    organisation, battery, storage, profiles and apps. It changes nothing on the iPad and works whether or not the
    iPad is in a job.

    Without --pair it uses only a pairing the station already holds, as it does for every iPad it has prepared.
    An iPad that does not trust this station is shown from its public values, with what to do.

    Examples: stationd inspect F9FXK2ABCD · stationd inspect 00008101-001D079B222D9534 --json --log 50
    """
    loaded = load_or_exit(config)
    folder = Path(loaded.station.pair_records or Path(loaded.station.database).parent / "pair_records")
    if folder.exists() and not os.access(folder, os.R_OK | os.X_OK):
        error_exit(f"cannot read the station's pairings in {folder}: run inspect as the user the station runs as")
    identity = _identity(loaded) if pair else None

    async def read() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT):
            return await inspect_ipad(loaded, folder, target, identity=identity, pair=pair, log=log)

    try:
        report = anyio.run(read)
    except NotTrusted as refused:
        _untrusted(target, refused, as_json)
    except LookupError as missing:
        error_exit(str(missing))
    except TimeoutError:
        error_exit(f"the iPad {target} did not answer within {TIMEOUT:g} s: replug it and try again")
    except (StationError, StoreError) as error:
        error_exit(str(error))
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        show(report)


def _identity(config: Config) -> Identity | None:
    """The supervision identity when it can be read (supervised pairing), else None (plain pairing)."""
    try:
        return load_identity(config.organization.identity)
    except IdentityError:
        return None


async def inspect_ipad(
    config: Config, folder: Path, target: str, *, identity: Identity | None, pair: bool, log: int
) -> dict[str, Any]:
    """The report on the iPad `target` (UDID or serial); LookupError when no plugged-in iPad is it."""
    address = resolve(config.station.usbmuxd)
    known = await _known(config)
    udid = await _find(address, folder, target, known)
    session = DeviceSession(
        udid, usbmux_address=address, pair_records=folder, identity=identity, label="stationd-inspect", pair=pair
    )
    async with session:
        facts = await session.facts()
        held = await inventory(session)
        console = await session.console.recent(log, LOG_SECONDS) if log else None
    record = known.get(udid)
    station = None if record is None else {"state": record.state, "step": record.step, "port": record.port_label}
    return {**facts.as_dict(), **held, "station": station, "console": console}


async def _known(config: Config) -> dict[str, Any]:
    """The station's (or its fleet's) device records by UDID ({} before the station has run)."""
    if not config.store.shared and not await anyio.Path(config.station.database).exists():
        return {}
    async with store_for(config) as store:
        return {device.udid: device for device in await store.list_devices()}


async def _find(address: UsbmuxAddress, folder: Path, target: str, known: dict[str, Any]) -> str:
    try:
        attached = [device.serial for device in await usbmux.list_devices(address.for_pymobiledevice3())]
    except Exception as error:
        raise StationError(
            f"usbmuxd cannot be reached at {address} ({error}): start it, or check [station] usbmuxd"
        ) from error
    wanted = target.strip().lower()
    for udid in attached:
        if udid.lower() == wanted:
            return udid
    for udid, device in known.items():
        if udid in attached and (device.serial or "").lower() == wanted:
            return udid
    for udid in attached:  # an iPad the station has not recorded: its serial needs a session (never a pairing)
        try:
            async with DeviceSession(udid, usbmux_address=address, pair_records=folder, identity=None, pair=False) as s:
                if (await s.facts()).serial.lower() == wanted:
                    return udid
        except StationError:
            continue
    plugged = ", ".join(attached) or "none"
    raise LookupError(
        f"no plugged-in iPad is {target}. A serial is known only for iPads this station has seen or can read; give "
        f"the UDID instead (plugged in now: {plugged})"
    )


def _untrusted(target: str, refused: NotTrusted, as_json: bool) -> None:
    values = refused.details.get("values") or {}
    public = {label: values.get(key) for key, label in PUBLIC if values.get(key) is not None}
    advice = (
        "stationd inspect does not pair by itself: on a set-up iPad, pairing puts 'Trust This Computer?' on its "
        "screen. If it shows Setup Assistant (Hello), or this station's organisation supervises it, it pairs "
        f"without a dialog: run `stationd inspect {target} --pair`. Otherwise unlock it, run with --pair and tap Trust."
    )
    if as_json:
        typer.echo(json.dumps({"udid": values.get("UniqueDeviceID"), "trusted": False, "public": public}, indent=2))
    else:
        for label, value in public.items():
            typer.echo(f"{label:>6}: {value}")
    typer.echo(f"{refused} {advice}", err=True)
    raise typer.Exit(1)


# -- the view -------------------------------------------------------------------------------------------------------
def show(report: dict[str, Any]) -> None:
    console = Console()
    title = f"iPad {report['serial']}" + (f" · {report['device_name']}" if report.get("device_name") else "")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _lines(report):
        grid.add_row(label, value)
    console.print(f"[bold]{title}[/bold]")
    console.print(grid)
    apps = report.get("apps")
    if apps:
        table = Table("app", "version", "build", "name", title=f"{len(apps)} app" + ("s" if len(apps) > 1 else ""))
        for app in apps:
            table.add_row(app["bundle_id"], app["version"], app["build"], app.get("name") or "")
        console.print(table)
    if report.get("console") is not None:
        console.print(f"[bold]Console[/bold] (last {len(report['console'])} lines)")
        for line in report["console"]:
            typer.echo(line)


def _lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    ecid = report.get("ecid")
    model = " ".join(str(v) for v in (report.get("product_type"), report.get("hardware_model")) if v)
    organization = report.get("organization")
    station = report.get("station")
    lines = [
        ("UDID", report["udid"]),
        ("ECID", f"0x{ecid:X} ({ecid})" if isinstance(ecid, int) else "?"),
        ("Model", model or "?"),
        ("iPadOS", f"{report.get('product_version')} ({report.get('build_version')})"),
        ("Activation", report.get("activation_state") or "?"),
        ("Supervision", _supervision(report.get("supervised"), organization)),
        ("Wi-Fi", report.get("wifi_address") or "?"),
        ("Bluetooth", report.get("bluetooth_address") or "?"),
        ("Ethernet", report.get("ethernet_address") or "?"),
        ("Battery", _battery(report)),
        ("Storage", _storage(report)),
        ("Profiles", ", ".join(report.get("profiles") or []) or "none"),
    ]
    if station is not None:
        where = f" on {station['port']}" if station.get("port") else ""
        step = f" (step {station['step']})" if station.get("step") else ""
        lines.append(("Station", f"{station['state']}{where}{step}"))
    return lines


def _supervision(supervised: Any, organization: str | None) -> str:
    if supervised is None:
        return "unknown"
    return f"supervised by {organization or 'an unnamed organisation'}" if supervised else "not supervised"


def _battery(report: dict[str, Any]) -> str:
    level = report.get("battery_level")
    if level is None:
        return "unknown"
    charging = report.get("charging")
    parts = [f"{level} %", "charging" if charging is True else "not charging" if charging is False else ""]
    if report.get("battery_health") is not None:
        parts.append(f"health {report['battery_health']} %")
    if report.get("cycle_count") is not None:
        parts.append(f"{report['cycle_count']} cycles")
    return ", ".join(part for part in parts if part)


def _storage(report: dict[str, Any]) -> str:
    capacity, free = report.get("capacity"), report.get("free")
    if capacity is None:
        return "unknown"
    text = f"{capacity / GB:.0f} GB"
    return text + (f", {free / GB:.1f} GB free" if free is not None else "")
