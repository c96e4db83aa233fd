"""Which kind of value each key of the configuration takes, and the kinds only the configuration has."""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import fields
from pathlib import Path
from typing import Any

from stationd.config.convert import (
    Converter,
    Invalid,
    boolean,
    choice,
    number,
    path,
    paths,
    placeholder_width_problem,
    text,
    texts,
    toml_string,
    url,
    whole,
)
from stationd.config.model import (
    ENROLLMENT_MODES,
    LOG_FORMATS,
    NAMING_PLACEHOLDERS,
    UNKNOWN_POLICIES,
    NamingConfig,
    TimeoutsConfig,
)
from stationd.httpserve import is_loopback
from stationd.profiles import WIFI_SECURITY
from stationd.usbmux import address as usbmux_address

# An iPad that acknowledged EraseDevice takes an unknown while to go down (the emulator plays 0 to 10 s). The request
# is sent again only after erase_start, so erase_start must stay well above that window: three times its top.
ERASE_START_FLOOR = 30.0
MAX_STEP_SECONDS = 24 * 3600.0
MAX_RETRIES = 20
MAX_CONCURRENCY = 256
MAX_PLUGIN_SECONDS = 300.0
# A held iPad is looked at again this often: a session each time, so not more than once a second per iPad; an iPad
# gains about 1 % a minute on a good port, so more than an hour apart would leave a charged iPad waiting.
MIN_CHARGE_RECHECK = 1.0
MAX_CHARGE_RECHECK = 3600.0
MIN_LEASE = 1.0
MAX_LEASE = 3600.0
MAX_POOL = 64
_FLEET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}")


def schema(base: Path) -> dict[str, dict[str, Converter]]:
    """Each section's keys and their kinds; relative paths are read from `base`, the folder of the file."""
    return {
        "station": {
            "id": text,
            "database": path(base),
            "concurrency": whole(1, MAX_CONCURRENCY),
            "usbmuxd": usbmuxd,
            "log_format": choice(LOG_FORMATS),
            "pair_records": path(base),
        },
        "organization": {"name": text, "identity": path(base)},
        "steps": {
            "erase": boolean,
            "activate": boolean,
            "skip_setup": texts,
            "language": text,
            "region": text,
            "min_battery": whole(0, 100, what="a battery percentage"),
            "charge_recheck": seconds(MIN_CHARGE_RECHECK, MAX_CHARGE_RECHECK),
        },
        "wifi": {
            "ssid": text,
            "security": choice(WIFI_SECURITY),
            "password": text,
            "auto_join": boolean,
            "hidden": boolean,
            "profile": path(base),
        },
        "enrollment": {"mode": choice(ENROLLMENT_MODES), "url": url, "dep_url": url, "hold_until_assigned": boolean},
        "profiles": {"extra": paths(base)},
        "apps": {"install": paths(base)},
        "naming": {"pattern": pattern},
        "activation": {"url": url},
        "timeouts": {item.name: _timeout(item.name) for item in fields(TimeoutsConfig)},
        "api": {"listen": listen_address, "token": api_token, "hosts": host_names, "proxies": addresses},
        "plugins": {"enabled": texts, "timeout": seconds(0, MAX_PLUGIN_SECONDS)},
        "store": {
            "url": database_url,
            "password_file": path(base),
            "lease": seconds(MIN_LEASE, MAX_LEASE),
            "pool": whole(1, MAX_POOL),
            "timeout": seconds(0.5, 120.0),
            "poll": seconds(0.05, 600.0),
            "journal": path(base),
        },
        "fleet": {
            "name": fleet_name,
            "advertise": boolean,
            "interfaces": ipv4_addresses,
            "secret_file": path(base),
            "blueprint": fleet_name,
            "heartbeat": seconds(0.05, 300.0),
        },
        "queue": {"unknown": choice(UNKNOWN_POLICIES)},
    }


def seconds(minimum: float, maximum: float) -> Converter:
    """A number of seconds in [minimum, maximum], never 0."""
    return number(minimum, maximum, what="a number of seconds", above=minimum <= 0)


def _timeout(name: str) -> Converter:
    if name == "retries":
        return whole(0, MAX_RETRIES)
    if name == "erase_start":
        return seconds(ERASE_START_FLOOR, MAX_STEP_SECONDS)
    return seconds(0, MAX_STEP_SECONDS)


def listen_address(value: Any) -> str | None:
    """'host:port' for the HTTP API, or "" to turn it off."""
    if value == "":
        return None
    address = text(value).strip()
    _, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise Invalid('an address like 127.0.0.1:8480 (or 0.0.0.0:8480 for the LAN, or "" to turn it off)', value)
    return address


def api_token(value: Any) -> str:
    secret = text(value)
    if not all(33 <= ord(char) < 127 for char in secret):
        raise Invalid(
            message="the token must be ASCII letters, digits and punctuation, without spaces (a request "
            "header cannot carry anything else); make one with: openssl rand -hex 24"
        )
    if len(secret) < 16:
        raise Invalid(message="the token must be at least 16 characters; make one with: openssl rand -hex 24")
    return secret


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def host_names(value: Any) -> tuple[str, ...]:
    names = texts(value)
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise Invalid(
                message=f"{toml_string(name)} is not a host name (write names only, without port or scheme)",
                example='["station-1.school.example"]',
            )
    return names


def addresses(value: Any) -> tuple[str, ...]:
    found = texts(value)
    for address in found:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise Invalid(
                message=f"{toml_string(address)} is not an IP address or network", example='["127.0.0.1"]'
            ) from None
    return found


def database_url(value: Any) -> str:
    """The fleet's PostgreSQL database, as a URL."""
    example = '"postgresql://station@db.school.example/stationd?sslmode=verify-full"'
    if not isinstance(value, str) or value.partition("://")[0].lower() not in ("postgresql", "postgres"):
        raise Invalid("a PostgreSQL URL starting with postgresql://", value, example=example)
    if not value.partition("://")[2].strip("/"):
        raise Invalid(message="the URL names no server: write postgresql://USER@HOST/DATABASE", example=example)
    return value


def fleet_name(value: Any) -> str:
    """A short name (fleets and blueprints): letters, digits, spaces, dots, dashes, underscores."""
    if not isinstance(value, str) or not _FLEET_NAME.fullmatch(value):
        raise Invalid(
            "a name of letters, digits, spaces, dots, dashes or underscores (at most 63)", value, example='"district-3"'
        )
    return value


def ipv4_addresses(value: Any) -> tuple[str, ...]:
    """IPv4 addresses of this computer's interfaces (Bonjour advertises and listens on them)."""
    found = texts(value)
    for index, address in enumerate(found):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            refused = Invalid(message=f"{toml_string(address)} is not an IPv4 address", example='["192.168.1.20"]')
            raise refused.inside(f"[{index}]") from None
    return found


def usbmuxd(value: Any) -> str:
    example = '"127.0.0.1:27015"'
    try:
        address = usbmux_address.parse(value) if isinstance(value, str) and value.strip() else None
    except usbmux_address.AddressError:
        address = None
    if address is None:
        raise Invalid("a socket path (/var/run/usbmuxd or UNIX:/var/run/usbmuxd) or HOST:PORT", value, example=example)
    if not address.is_unix and ":" in (address.host or ""):
        raise Invalid(
            message="pymobiledevice3 reaches usbmuxd over IPv4 only: give an IPv4 address or a socket path",
            example=example,
        )
    return value


def pattern(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("a name pattern in double quotes", value, example='"{org}-{serial}"')
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        too_wide = placeholder_width_problem(value)
    except ValueError as error:
        raise Invalid(message=f"cannot read the pattern ({error}); write placeholders like {{serial}}") from None
    if too_wide is not None:
        raise Invalid(message=too_wide, example='"{org}-{n:03d}"')
    known = ", ".join(f"{{{name}}}" for name in NAMING_PLACEHOLDERS)
    for name in names:
        if name not in NAMING_PLACEHOLDERS:
            raise Invalid(message=f"unknown placeholder {{{name}}}; use {known}", example='"{org}-{serial}"')
    try:
        NamingConfig(value).device_name(org="Org", serial="SERIAL", model="iPad", port="1", n=1)
    except (ValueError, TypeError) as error:
        raise Invalid(message=f"the pattern cannot be filled in ({error})", example='"{org}-{n:03d}"') from None
    return value


def api_exposure_problem(listen: str, token: str | None) -> str | None:
    """Why the API must not start on `listen` (an address other machines reach, and no token), or None."""
    host = listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if token or is_loopback(host):
        return None
    return (
        f"listen = {toml_string(listen)} lets other machines on the network reach the station's API, so it needs "
        'a token: add  token = "..."  under [api] (make one with: openssl rand -hex 24), or listen on '
        '"127.0.0.1:8480" and reach it through SSH'
    )
