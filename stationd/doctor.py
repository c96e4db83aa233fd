"""`stationd doctor`: can this machine run a station? Each check says what is wrong and what to do."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from stationd.config import Config, ConfigError, check_config, load_config
from stationd.fleet.storage import store_for
from stationd.identity import IdentityError, load_identity
from stationd.redact import redact_url
from stationd.store import StoreError, open_store
from stationd.usbmux import UsbmuxConnection, UsbmuxError, packet, resolve

Check = tuple[bool, str, str]


async def usbmuxd_check(address: str | None) -> Check:
    """Connect to usbmuxd and ask its BUID, as every client does first."""
    where = resolve(address)
    try:
        with anyio.fail_after(5):
            async with await UsbmuxConnection.open(where) as mux:
                await mux.read_buid()
    except (OSError, TimeoutError) as e:
        hint = "install and start usbmuxd (apt install usbmuxd), or set station.usbmuxd"
        if isinstance(e, PermissionError):
            hint = "run the station as a user in the group that may open the usbmuxd socket"
        return False, "usbmuxd", f"cannot talk to {where} ({e.__class__.__name__}): {hint}"
    except (UsbmuxError, packet.PacketError, anyio.EndOfStream, anyio.IncompleteRead):
        return False, "usbmuxd", f"{where} answered something that is not usbmuxd"
    return True, "usbmuxd", f"reachable at {where}"


async def database_check(config: Config) -> Check:
    if config.store.url is not None:
        shown = redact_url(config.store.url)
        try:
            async with store_for(config) as store:
                await store.now()
        except StoreError as e:
            return False, "fleet database", str(e)
        return True, "fleet database", f"{shown} answers"
    path = Path(config.station.database)
    try:
        async with open_store(path) as store:
            await store.list_devices()
    except (StoreError, OSError) as e:
        return False, "database", f"{path}: {e}"
    if not os.access(path, os.W_OK):
        return False, "database", f"{path} is not writable by this user"
    return True, "database", f"{path} is writable"


def identity_check(config: Config) -> Check:
    try:
        identity = load_identity(config.organization.identity)
    except IdentityError as e:
        return False, "identity", str(e)
    return True, "identity", f"{identity.organization}, valid until {identity.not_valid_after:%Y-%m-%d}"


async def run_checks(config_path: Path) -> list[Check]:
    try:
        config = load_config(config_path)
    except ConfigError as e:
        return [(False, "configuration", "; ".join(str(issue) for issue in e.issues))]
    except FileNotFoundError:
        return [(False, "configuration", f"no file at {config_path}: create one with `stationd init`")]
    problems = [p for p in check_config(config) if p.startswith("error:")]
    results: list[Check] = [
        (not problems, "configuration", "; ".join(problems) if problems else f"{config_path} is valid"),
        identity_check(config),
        await database_check(config),
        await usbmuxd_check(config.station.usbmuxd),
    ]
    return results
