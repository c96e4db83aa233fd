"""The keys of a virtual iPad: one converter per key of a scenario's [[device]] table (and of [defaults], and of a
control API `POST /devices` body, where file paths are not accepted and certificates and profiles are given inline).

Each check is one of the configuration's kinds (stationd.config.convert), so a scenario is refused in the words the
configuration file uses; `key` is the value's full name in the device table ("battery.level", "apps[0].bundle_id").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stationd.config import convert
from stationd.config.convert import Converter, Invalid, unknown
from stationd.emulator.apps import BUNDLE_ID, MB, SYSTEM_BUNDLE_IDS, App
from stationd.emulator.battery import BatterySpec
from stationd.emulator.console import LEVELS, Line
from stationd.emulator.ipad import FAULT_ACTIONS, Behaviour, DepAssignment, Fault, Latency
from stationd.emulator.mcinstall import parse_profile
from stationd.emulator.storage import GB, StorageSpec

MAC_ADDRESS = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class ScenarioError(ValueError):
    """A scenario (or a control API request) says something the emulator cannot build; names the key and device."""

    def __init__(self, message: str, key: str | None = None, index: int | None = None, source: str | None = None):
        self.message, self.key, self.index, self.source = message, key, index, source
        where = [source] if source else []
        if index is not None:
            where.append(f"[[device]] #{index + 1}")
        if key:
            where.append(key)
        super().__init__(": ".join(where + [message]))

    def located(self, index: int | None = None, source: str | None = None) -> ScenarioError:
        """The same error, placed in a device table and a file."""
        return ScenarioError(
            self.message,
            self.key,
            self.index if index is None else index,
            self.source if source is None else source,
        )


def check(kind: Converter, value: Any, key: str) -> Any:
    """`kind(value)`, or a ScenarioError naming `key` (and where below it the refused value is)."""
    try:
        return kind(value)
    except Invalid as bad:
        raise ScenarioError(bad.explain(key + bad.key), key + bad.key) from None


def _string(value: Any, key: str) -> str:
    return check(convert.text, value, key)


def _boolean(value: Any, key: str) -> bool:
    return check(convert.boolean, value, key)


def _integer(value: Any, key: str, maximum: int = 2**64 - 1) -> int:
    return check(convert.whole(0, maximum), value, key)


def _seconds(value: Any, key: str) -> float:
    return check(convert.number(0, what="a number of seconds"), value, key)


def _number(value: Any, key: str, low: float, high: float, what: str = "a number") -> float:
    return check(convert.number(low, high, what=what), value, key)


def _one_of(value: Any, key: str, options: Iterable[Any]) -> Any:
    return check(convert.choice(options), value, key)


def _table(value: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
    return check(convert.table(allowed), value, key)


def _list(value: Any, key: str) -> list[Any]:
    return check(convert.items, value, key)


def _file_or_text(value: Any, key: str, base: Path | None, inline: Callable[[str], bool], what: str) -> bytes:
    text = _string(value, key)
    if inline(text):
        return text.encode()
    if base is None:
        raise ScenarioError(f"give the {what} itself here, not a file name", key)
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        return path.read_bytes()
    except OSError as error:
        raise ScenarioError(f"cannot read {path}: {error.strerror}", key) from None


def _certificate(value: Any, key: str, base: Path | None) -> bytes:
    """A certificate as DER, from a PEM certificate or keybag (certificate + key), or a DER file."""
    data = _file_or_text(value, key, base, lambda text: text.lstrip().startswith("-----BEGIN"), "PEM certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0].public_bytes(serialization.Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    except ValueError:
        raise ScenarioError("is not a certificate (expected PEM, a PEM keybag, or DER)", key) from None


def _certificates(value: Any, key: str, base: Path | None) -> list[bytes]:
    return [_certificate(item, f"{key}[{i}]", base) for i, item in enumerate(_list(value, key))]


def _profiles(value: Any, key: str, base: Path | None) -> list[bytes]:
    profiles = []
    for i, item in enumerate(_list(value, key)):
        data = _file_or_text(item, f"{key}[{i}]", base, lambda text: text.lstrip().startswith("<"), "profile XML")
        _, failure = parse_profile(data)
        if failure:
            raise ScenarioError(failure["ErrorChain"][0]["LocalizedDescription"], f"{key}[{i}]")
        profiles.append(data)
    return profiles


def _latency(value: Any, key: str, base: Path | None) -> Latency:
    names = [f.name for f in fields(Latency)]
    table = _table(value, key, names)
    return Latency(**{name: _seconds(v, f"{key}.{name}") for name, v in table.items()})


def _behaviour(value: Any, key: str, base: Path | None) -> Behaviour:
    table = _table(value, key, Behaviour.CHOICES)
    return Behaviour(**{name: _one_of(v, f"{key}.{name}", Behaviour.CHOICES[name]) for name, v in table.items()})


def _faults(value: Any, key: str, base: Path | None) -> list[Fault]:
    faults = []
    for i, item in enumerate(_list(value, key)):
        where = f"{key}[{i}]"
        table = _table(item, where, ("request", "action", "on_try"))
        if "request" not in table:
            raise ScenarioError('is missing; name the request to misbehave on, e.g. "StartSession"', f"{where}.request")
        action = _one_of(table.get("action", "drop"), f"{where}.action", FAULT_ACTIONS)
        faults.append(
            Fault(
                request=_string(table["request"], f"{where}.request"),
                action=action,
                on_try=_integer(table.get("on_try", 1), f"{where}.on_try"),
            )
        )
    return faults


def _dep(value: Any, key: str, base: Path | None) -> DepAssignment:
    allowed = ("organization", "mdm_url", "supervisor_certificates", "supervisor_certificate", "skip_setup")
    table = _table(value, key, allowed)
    if "organization" not in table:
        raise ScenarioError("is missing; name the organisation the device is assigned to", f"{key}.organization")
    dep = DepAssignment(organization=_string(table["organization"], f"{key}.organization"))
    if "mdm_url" in table:
        dep.mdm_url = _string(table["mdm_url"], f"{key}.mdm_url")
    certificates = table.get("supervisor_certificates", [])
    dep.supervisor_certificates = _certificates(certificates, f"{key}.supervisor_certificates", base)
    if "supervisor_certificate" in table:
        single = _certificate(table["supervisor_certificate"], f"{key}.supervisor_certificate", base)
        dep.supervisor_certificates.append(single)
    panes = _list(table.get("skip_setup", []), f"{key}.skip_setup")
    dep.skip_setup = [_string(pane, f"{key}.skip_setup[{i}]") for i, pane in enumerate(panes)]
    return dep


def _apps(value: Any, key: str, base: Path | None) -> list[App]:
    """User apps: a bundle id, or { bundle_id, name, version, build, size_mb }."""
    apps: list[App] = []
    for i, item in enumerate(_list(value, key)):
        where = f"{key}[{i}]"
        table = (
            {"bundle_id": item}
            if isinstance(item, str)
            else _table(item, where, ("bundle_id", "name", "version", "build", "size_mb"))
        )
        if "bundle_id" not in table:
            raise ScenarioError('is missing; name the app, e.g. "org.example.reader"', f"{where}.bundle_id")
        bundle_id = _string(table["bundle_id"], f"{where}.bundle_id")
        if not BUNDLE_ID.match(bundle_id):
            raise ScenarioError("must be a bundle identifier like org.example.reader", f"{where}.bundle_id")
        if bundle_id in SYSTEM_BUNDLE_IDS:
            raise ScenarioError("is a system app, which every virtual iPad has already", f"{where}.bundle_id")
        if any(app.bundle_id == bundle_id for app in apps):
            raise ScenarioError(f"lists {bundle_id} twice", where)
        version = _string(table.get("version", "1.0"), f"{where}.version")
        apps.append(
            App(
                bundle_id,
                _string(table.get("name", bundle_id.rsplit(".", 1)[-1]), f"{where}.name"),
                version=version,
                build=_string(table.get("build", version), f"{where}.build"),
                size=int(_number(table.get("size_mb", 50), f"{where}.size_mb", 0.001, 4000, "a size in MB") * MB),
            )
        )
    return apps


def _storage(value: Any, key: str, base: Path | None) -> StorageSpec:
    table = _table(value, key, ("capacity_gb", "free_gb"))
    spec = StorageSpec(_number(table.get("capacity_gb", 64), f"{key}.capacity_gb", 16, 4096, "a size in GB"))
    if "free_gb" in table:
        spec.free_gb = _number(table["free_gb"], f"{key}.free_gb", 0, spec.fresh_free / GB, "a size in GB")
    return spec


def _battery(value: Any, key: str, base: Path | None) -> BatterySpec:
    table = _table(value, key, ("level", "charging", "rate", "drain", "cycle_count", "health"))
    spec = BatterySpec()
    if "level" in table:
        spec.level = _number(table["level"], f"{key}.level", 0, 100, "a percentage")
    if "charging" in table:
        spec.charging = _boolean(table["charging"], f"{key}.charging")
    for name in ("rate", "drain"):
        if name in table:
            setattr(spec, name, _number(table[name], f"{key}.{name}", 0, 100, "percent per minute"))
    if "cycle_count" in table:
        spec.cycle_count = _integer(table["cycle_count"], f"{key}.cycle_count", 100_000)
    if "health" in table:
        spec.health = _integer(table["health"], f"{key}.health", 100)
    return spec


def _syslog(value: Any, key: str, base: Path | None) -> list[Line]:
    """Console lines: a message (logged by the kernel), or { process, message, level, pid }."""
    lines = []
    for i, item in enumerate(_list(value, key)):
        where = f"{key}[{i}]"
        table = (
            {"message": item} if isinstance(item, str) else _table(item, where, ("process", "message", "level", "pid"))
        )
        if "message" not in table:
            raise ScenarioError("is missing; give the text the iPad logs", f"{where}.message")
        message = _string(table["message"], f"{where}.message")
        if "\x00" in message or "\n" in message:
            raise ScenarioError("must be one line (no newline or NUL)", f"{where}.message")
        process = _string(table.get("process", "kernel"), f"{where}.process")
        if not re.match(r"^[A-Za-z0-9_.-]+$", process):
            raise ScenarioError("must be a process name like mdmd (letters, digits, . _ -)", f"{where}.process")
        level = _one_of(table.get("level", "Notice"), f"{where}.level", LEVELS)
        lines.append(Line(process, message, level, _integer(table.get("pid", 0), f"{where}.pid", 99_999)))
    return lines


def _plain(check: Callable[[Any, str], Any]) -> Callable[[Any, str, Path | None], Any]:
    return lambda value, key, base: check(value, key)


def _wifi_address(value: Any, key: str) -> str:
    if not isinstance(value, str) or not MAC_ADDRESS.match(value):
        raise ScenarioError("must be a MAC address like f0:18:98:12:34:56", key)
    return value.lower()


CONVERTERS: dict[str, Callable[[Any, str, Path | None], Any]] = {
    "serial": _plain(_string),
    "udid": _plain(_string),
    "ecid": _plain(lambda v, k: _integer(v, k, 2**64 - 1)),
    "product_type": _plain(_string),
    "product_version": _plain(_string),
    "build_version": _plain(_string),
    "device_name": _plain(_string),
    "wifi_address": _plain(_wifi_address),
    "location_id": _plain(lambda v, k: _integer(v, k, 2**32 - 1)),
    "activated": _plain(_boolean),
    "setup_assistant": _plain(_boolean),
    "passcode": _plain(_boolean),
    "supervised_by": _plain(_string),
    "configuration_supervised": _plain(_boolean),
    "allow_pairing": _plain(_boolean),
    "supervisor_certificates": _certificates,
    "supervisor_certificate": _certificate,
    "dep": _dep,
    "activation_locked": _plain(_boolean),
    "refuse_pairing": _plain(_boolean),
    "trust_dialog_accepts": _plain(_boolean),
    "profiles": _profiles,
    "latency": _latency,
    "behaviour": _behaviour,
    "faults": _faults,
    "detach_after": _plain(_seconds),
    "apps": _apps,
    "storage": _storage,
    "battery": _battery,
    "syslog": _syslog,
}
_KNOWN_KEYS = "known keys: " + ", ".join(sorted(CONVERTERS))


def convert_fields(raw: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """Check and convert the keys of one device table (or [defaults], or a control API body)."""
    converted = {}
    for key, value in raw.items():
        if key not in CONVERTERS:
            raise ScenarioError(unknown(key, CONVERTERS, listing=_KNOWN_KEYS), key)
        converted[key] = CONVERTERS[key](value, key, base)
    return converted
