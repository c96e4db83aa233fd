"""Scenarios: the virtual iPads an emulator starts with, read from a TOML file.

The same field rules serve the control API (`POST /devices` with JSON), where file paths are not accepted and
certificates and profiles are given inline (PEM text, XML plist text).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stationd.config import convert
from stationd.config.convert import Converter, Invalid, unknown
from stationd.emulator.apps import BUNDLE_ID, MB, SYSTEM_BUNDLE_IDS, App
from stationd.emulator.battery import BatterySpec
from stationd.emulator.console import LEVELS, Line
from stationd.emulator.ipad import (
    FAULT_ACTIONS,
    Behaviour,
    DepAssignment,
    DeviceSpec,
    Fault,
    Latency,
    foreign_supervisor_certificate,
    generated_spec,
)
from stationd.emulator.mcinstall import parse_profile
from stationd.emulator.storage import GB, StorageSpec

DEFAULT_SEED = "stationd"
SCENARIO_KEYS = ("speed", "seed", "defaults", "device")
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


@dataclass
class Scenario:
    """What an emulator runs: a speed factor, the seed of generated identities, and the devices."""

    speed: float = 1.0
    seed: str = DEFAULT_SEED
    specs: list[DeviceSpec] = field(default_factory=list)


# -- values -----------------------------------------------------------------------------------------------------------
# Each check is one of the configuration's kinds (stationd.config.convert), so a scenario is refused in the words
# the configuration file uses; `key` is the value's full name in the device table.
def _check(kind: Converter, value: Any, key: str) -> Any:
    try:
        return kind(value)
    except Invalid as bad:
        raise ScenarioError(bad.explain(key + bad.key), key + bad.key) from None


def _string(value: Any, key: str) -> str:
    return _check(convert.text, value, key)


def _boolean(value: Any, key: str) -> bool:
    return _check(convert.boolean, value, key)


def _integer(value: Any, key: str, maximum: int = 2**64 - 1) -> int:
    return _check(convert.whole(0, maximum), value, key)


def _seconds(value: Any, key: str) -> float:
    return _check(convert.number(0, what="a number of seconds"), value, key)


def _number(value: Any, key: str, low: float, high: float, what: str = "a number") -> float:
    return _check(convert.number(low, high, what=what), value, key)


def _one_of(value: Any, key: str, options: Iterable[Any]) -> Any:
    return _check(convert.choice(options), value, key)


def _table(value: Any, key: str, allowed: Iterable[str]) -> dict[str, Any]:
    return _check(convert.table(allowed), value, key)


def _list(value: Any, key: str) -> list[Any]:
    return _check(convert.items, value, key)


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
        table = {"bundle_id": item} if isinstance(item, str) else _table(
            item, where, ("bundle_id", "name", "version", "build", "size_mb"))
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
        apps.append(App(
            bundle_id,
            _string(table.get("name", bundle_id.rsplit(".", 1)[-1]), f"{where}.name"),
            version=version,
            build=_string(table.get("build", version), f"{where}.build"),
            size=int(_number(table.get("size_mb", 50), f"{where}.size_mb", 0.001, 4000, "a size in MB") * MB),
        ))
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
        table = {"message": item} if isinstance(item, str) else _table(
            item, where, ("process", "message", "level", "pid"))
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


def build_spec(raw: dict[str, Any], index: int, seed: str = DEFAULT_SEED, base: Path | None = None) -> DeviceSpec:
    """One DeviceSpec from raw fields; identity, port and name are generated from `index` and `seed` when absent."""
    values = convert_fields(raw, base)
    single = values.pop("supervisor_certificate", None)
    if single is not None:
        if "supervisor_certificates" in values:
            raise ScenarioError("give it or supervisor_certificates, not both", "supervisor_certificate")
        values["supervisor_certificates"] = [single]
    organization = values.get("supervised_by")
    if values.get("supervisor_certificates") and organization is None:
        key = "supervisor_certificate" if single is not None else "supervisor_certificates"
        raise ScenarioError("needs supervised_by: the organisation this certificate supervises for", key)
    if organization is not None and not values.get("supervisor_certificates"):
        values["supervisor_certificates"] = [foreign_supervisor_certificate(organization)]
    storage = values.get("storage")
    app_bytes = sum(app.size for app in values.get("apps", []))
    if storage is not None and storage.free_gb is not None and storage.free_gb * GB + app_bytes > storage.fresh_free:
        raise ScenarioError(
            f"leaves no room for the apps listed ({app_bytes / GB:g} GB): at most "
            f"{(storage.fresh_free - app_bytes) / GB:g} GB can be free", "storage.free_gb")
    spec = generated_spec(index, seed, **values)
    if "ecid" in values and "udid" not in values:
        spec.udid = f"{spec.chip_id:08X}-{spec.ecid:016X}"
    elif "udid" in values and "ecid" not in values:
        spec.ecid = _ecid_from_udid(spec.udid, spec.ecid)
    return spec


def _ecid_from_udid(udid: str, fallback: int) -> int:
    """Modern UDIDs are CHIPID-ECID in hex; keep the two consistent when only the UDID is given."""
    _, sep, tail = udid.partition("-")
    try:
        return int(tail, 16) if sep and len(tail) == 16 else fallback
    except ValueError:
        return fallback


def check_unique(
    specs: list[DeviceSpec], existing: Iterable[DeviceSpec] = (), tables: list[int] | None = None
) -> None:
    """Serial, UDID and ECID identify a device: refuse two devices sharing one.

    `tables[i]` is the index of the [[device]] table that made `specs[i]`, for the error message.
    """
    seen: dict[tuple[str, Any], int | None] = {}
    for spec in existing:
        for name in ("serial", "udid", "ecid"):
            seen[(name, getattr(spec, name))] = None
    for position, spec in enumerate(specs):
        table = tables[position] if tables else None
        for name in ("serial", "udid", "ecid"):
            value = getattr(spec, name)
            if (name, value) in seen:
                other = seen[(name, value)]
                already = "a device already in the emulator" if other is None else f"[[device]] #{other + 1}"
                raise ScenarioError(f"duplicate {name} {value} (already used by {already})", name, table)
            seen[(name, value)] = table


def parse_scenario(data: dict[str, Any], base: Path | None = None, source: str | None = None) -> Scenario:
    """A Scenario from parsed TOML; relative file names are resolved against `base`."""
    try:
        return _parse(data, base)
    except ScenarioError as error:
        raise error.located(source=source) from None


def _parse(data: dict[str, Any], base: Path | None) -> Scenario:
    for key in data:
        if key not in SCENARIO_KEYS:
            raise ScenarioError(unknown(key, SCENARIO_KEYS), key)
    speed = _check(convert.number(0, what="a speed factor"), data.get("speed", 1.0), "speed")
    seed = _string(data.get("seed", DEFAULT_SEED), "seed")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ScenarioError("must be a table: [defaults]", "defaults")
    try:
        convert_fields(defaults, base)
    except ScenarioError as error:
        raise ScenarioError(error.message, f"defaults.{error.key}") from None
    tables = data.get("device", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ScenarioError("must be tables written [[device]]", "device")
    specs: list[DeviceSpec] = []
    origins: list[int] = []
    for table_index, table in enumerate(tables):
        try:
            made = _expand(defaults, table, len(specs), seed, base)
        except ScenarioError as error:
            raise error.located(index=table_index) from None
        specs.extend(made)
        origins.extend([table_index] * len(made))
    check_unique(specs, tables=origins)
    return Scenario(speed=speed, seed=seed, specs=specs)


def _expand(
    defaults: dict[str, Any], table: dict[str, Any], first: int, seed: str, base: Path | None
) -> list[DeviceSpec]:
    """The DeviceSpecs of one [[device]] table (`count` of them)."""
    count = _integer(table.get("count", 1), "count", 10_000)
    if count > 1:
        for key in ("serial", "udid", "ecid", "wifi_address"):
            if key in table:
                raise ScenarioError(f"count = {count} would give every device the same {key}; drop one of them", key)
    raw = defaults | {k: v for k, v in table.items() if k != "count"}
    for merged in ("latency", "behaviour", "battery", "storage"):
        if isinstance(defaults.get(merged), dict) and isinstance(table.get(merged), dict):
            raw[merged] = defaults[merged] | table[merged]
    return [build_spec(raw, first + i, seed, base) for i in range(count)]


def load_scenario(path: str | Path) -> Scenario:
    """Read a TOML scenario file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ScenarioError(f"cannot read the scenario: {error.strerror}", source=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ScenarioError(f"not valid TOML: {error}", source=str(path)) from None
    return parse_scenario(data, path.parent, str(path))


def generated_scenario(n: int, speed: float = 1.0, seed: str = DEFAULT_SEED) -> Scenario:
    """`n` generated iPads, activated and in Setup Assistant, on consecutive ports."""
    return Scenario(speed=speed, seed=seed, specs=[generated_spec(i, seed) for i in range(n)])
