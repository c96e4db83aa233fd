"""Scenarios: the virtual iPads an emulator starts with, read from a TOML file.

The keys of each device (and their rules, which serve the control API's `POST /devices` too) are in scenario_keys.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stationd.config import convert
from stationd.config.convert import unknown
from stationd.emulator.ipad import DeviceSpec, foreign_supervisor_certificate, generated_spec
from stationd.emulator.scenario_keys import CONVERTERS, ScenarioError, check, convert_fields
from stationd.emulator.storage import GB

__all__ = [
    "CONVERTERS",
    "DEFAULT_SEED",
    "Scenario",
    "ScenarioError",
    "build_spec",
    "check_unique",
    "convert_fields",
    "generated_scenario",
    "load_scenario",
    "parse_scenario",
]

DEFAULT_SEED = "stationd"
SCENARIO_KEYS = ("speed", "seed", "defaults", "device")


@dataclass
class Scenario:
    """What an emulator runs: a speed factor, the seed of generated identities, and the devices."""

    speed: float = 1.0
    seed: str = DEFAULT_SEED
    specs: list[DeviceSpec] = field(default_factory=list)


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
            f"{(storage.fresh_free - app_bytes) / GB:g} GB can be free",
            "storage.free_gb",
        )
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


def check_unique(specs: list[DeviceSpec], existing: Iterable[DeviceSpec] = (), tables: list[int] | None = None) -> None:
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
    speed = check(convert.number(0, what="a speed factor"), data.get("speed", 1.0), "speed")
    seed = check(convert.text, data.get("seed", DEFAULT_SEED), "seed")
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
    count = check(convert.whole(0, 10_000), table.get("count", 1), "count")
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
