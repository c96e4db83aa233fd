"""Reading the configuration file: TOML in, a `Config` out, or a `ConfigError` listing every mistake at once, each
with its line, its `section.key` and what to write instead."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from stationd.config.convert import (
    MAX_DEPTH,
    MAX_ITEMS,
    Converter,
    Invalid,
    oversized,
    shown,
    toml_literal,
    unknown,
    with_example,
)
from stationd.config.model import SECTIONS, Config, ConfigError, ConfigIssue, FleetConfig, WifiConfig
from stationd.config.schema import api_exposure_problem, schema
from stationd.profiles import PASSWORD_SECURITY, WPA_SECURITY


def load_config(path: Path | str) -> Config:
    """Read and check the TOML file at `path`; raise `ConfigError` listing every problem."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        missing = f"file not found; create it with `stationd init --config {path}`"
        raise ConfigError(path, [ConfigIssue(None, "", missing)]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [ConfigIssue(None, "", f"cannot read the file: {error}")]) from None
    deep = deepest_line(text)
    if deep is not None:
        raise ConfigError(path, [ConfigIssue(deep, "", _TOO_DEEP)])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))
        line = int(found.group(1)) if found else None
        raise ConfigError(path, [ConfigIssue(line, "", f"this is not valid TOML: {error}")]) from None
    except RecursionError:
        raise ConfigError(path, [ConfigIssue(None, "", _TOO_DEEP)]) from None
    return _Reader(path, text, data).config()


OPTIONAL = ("wifi", "fleet")  # sections that are there only when the file has them
_TOO_DEEP = f"lists or tables nest more than {MAX_DEPTH} levels deep; no setting needs that, check the brackets"


class _Reader:
    """Turns parsed TOML into a `Config`, collecting every problem with its line."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.lines = _key_lines(text)
        self.issues: list[ConfigIssue] = []
        self.invalid: set[tuple[str, str]] = set()

    def config(self) -> Config:
        kinds = schema(self.path.parent)
        self._limits()
        self._unknown_sections(kinds)
        plugin_settings = self._plugin_tables()
        values = {name: self._section(name, converters) for name, converters in kinds.items()}
        values["ports"] = {"labels": self._ports()}
        values["plugins"]["settings"] = plugin_settings
        self._check_organization(values["organization"])
        self._check_wifi(values["wifi"])
        self._check_enrollment(values["enrollment"])
        self._check_api(values["api"])
        if self.issues:
            self.issues.sort(key=lambda issue: issue.line or 0)
            raise ConfigError(self.path, self.issues)
        values["organization"].setdefault("identity", self.path.parent / "identity.pem")
        values["store"].setdefault("journal", self.path.parent / "journal.db")
        sections = {name: SECTIONS[name](**found) for name, found in values.items() if name not in OPTIONAL}
        wifi = WifiConfig(**values["wifi"]) if "wifi" in self.data else None
        fleet = FleetConfig(**values["fleet"]) if "fleet" in self.data else None
        return Config(**sections, wifi=wifi, fleet=fleet, source=self.path)

    def _limits(self) -> None:
        """Drop every value beyond the bounds (`convert.MAX_*`), reporting it with its key and line."""
        for name, table in list(self.data.items()):
            if not isinstance(table, dict):
                problem = oversized(table, 1)
                if problem is not None:
                    self.issues.append(ConfigIssue(self.lines.get((name,)), name, problem))
                    del self.data[name]
                continue
            if len(table) > MAX_ITEMS:
                self.error(name, None, f"holds more than {MAX_ITEMS:,} settings ({len(table):,})")
                self.data[name] = {}
                continue
            for key, value in list(table.items()):
                problem = oversized(value, 2)
                if problem is not None:
                    self.invalid.add((name, key))
                    self.error(name, key, problem)
                    del table[key]

    def error(self, section: str, key: str | None, message: str, below: str = "") -> None:
        """Record a problem at `section.key` (and `below` it: "[2]", ".name"), on the line that key is on."""
        line = self.lines.get((section, key)) if key else None
        line = line or self.lines.get((section,))
        self.issues.append(ConfigIssue(line, f"{section}.{key}{below}" if key else f"[{section}]", message))

    def _ports(self) -> dict[int, str]:
        """[ports]: keys are LocationIDs (hex like "0x01110000" or decimal), values the labels people read."""
        table = self.data.get("ports", {})
        if not isinstance(table, dict):
            self.error("ports", None, 'must be a section: [ports] then lines like "0x01110000" = "Hub A · 1"')
            return {}
        labels: dict[int, str] = {}
        for key, value in table.items():
            try:
                location = int(key, 0)
            except ValueError:
                self.error(
                    "ports",
                    key,
                    "is not a LocationID; write it as `stationd ports --learn` does, for "
                    'example: "0x01110000" = "Hub A · 1"',
                )
                continue
            if not isinstance(value, str) or not value.strip():
                self.error("ports", key, 'the label must be text, for example: "Hub A · 1"')
            elif value in labels.values():
                self.error("ports", key, f"the label {shown(value)} is already used by another port")
            else:
                labels[location] = value.strip()
        return labels

    def _plugin_tables(self) -> dict[str, dict[str, Any]]:
        """Take the [plugins.NAME] tables out of [plugins]: each plugin checks its own settings."""
        table = self.data.get("plugins")
        if not isinstance(table, dict):
            return {}
        settings = {name: value for name, value in table.items() if isinstance(value, dict)}
        self.data["plugins"] = {k: v for k, v in table.items() if k not in settings}
        return settings

    def _unknown_sections(self, kinds: dict[str, dict[str, Converter]]) -> None:
        for name, value in self.data.items():
            if name in kinds or name == "ports":
                continue
            if not isinstance(value, dict):
                line = self.lines.get((name,))
                self.issues.append(ConfigIssue(line, name, "is outside any section; move it under the right [section]"))
                continue
            known = ", ".join(f"[{section}]" for section in kinds)
            self.error(name, None, unknown(name, kinds, "section", shape="[{}]", listing=f"the sections are {known}"))

    def _section(self, section: str, converters: dict[str, Converter]) -> dict[str, Any]:
        table = self.data.get(section, {})
        if not isinstance(table, dict):
            self.error(section, None, f"must be a section: write [{section}] on its own line, then its settings")
            return {}
        found = {}
        for key, value in table.items():
            if key not in converters:
                listing = f"[{section}] takes " + ", ".join(converters)
                self.error(section, key, unknown(key, converters, "setting", listing=listing))
                continue
            try:
                found[key] = converters[key](value)
            except Invalid as bad:
                self.invalid.add((section, key))
                example = None if bad.key else bad.example or _default_literal(section, key)
                self.error(section, key, with_example(bad.explain(f"{section}.{key}{bad.key}"), key, example), bad.key)
        return found

    def _check_organization(self, found: dict[str, Any]) -> None:
        if "name" not in found and ("organization", "name") not in self.invalid:
            self.error(
                "organization",
                "name",
                "is missing; add a [organization] section with your organisation's name, "
                'for example: name = "Example School"',
            )

    def _check_wifi(self, found: dict[str, Any]) -> None:
        if "wifi" not in self.data or not isinstance(self.data["wifi"], dict):
            return
        given = set(self.data["wifi"])
        if "profile" in given and given & {"ssid", "password"}:
            self.error("wifi", "profile", "give either profile (a .mobileconfig file) or ssid and password, not both")
            return
        if "profile" in given:
            return
        if "ssid" not in given:
            self.error(
                "wifi",
                "ssid",
                'is missing; write the network name, for example: ssid = "School-WiFi", '
                'or give a Wi-Fi profile: profile = "wifi.mobileconfig"',
            )
            return
        if ("wifi", "security") in self.invalid or ("wifi", "password") in self.invalid:
            return
        ssid = found.get("ssid")
        if ssid is not None and len(ssid.encode()) > 32:
            self.error("wifi", "ssid", "a Wi-Fi network name has at most 32 characters")
        self._check_wifi_password(found.get("security", "WPA2"), found.get("password"))

    def _check_wifi_password(self, security: str, password: str | None) -> None:
        if security in PASSWORD_SECURITY and password is None:
            self.error(
                "wifi",
                "password",
                f'is missing; a {security} network needs its password: password = "..." '
                '(or write security = "None" for an open network)',
            )
        elif security == "None" and password is not None:
            self.error(
                "wifi",
                "password",
                'an open network (security = "None") has no password; remove the '
                'password line or write the right security, for example: security = "WPA2"',
            )
        elif security in WPA_SECURITY and password is not None and not 8 <= len(password) <= 64:
            self.error("wifi", "password", f"a {security} password has 8 to 63 characters; check it")

    def _check_enrollment(self, found: dict[str, Any]) -> None:
        if found.get("mode") == "url" and "url" not in found and ("enrollment", "url") not in self.invalid:
            self.error(
                "enrollment",
                "url",
                'is missing; mode = "url" needs the enrollment address your MDM gives, '
                'for example: url = "https://mdm.example.org/enroll"',
            )

    def _check_api(self, found: dict[str, Any]) -> None:
        listen = found.get("listen")
        if listen and ("api", "token") not in self.invalid:
            problem = api_exposure_problem(listen, found.get("token"))
            if problem is not None:
                self.error("api", "listen", problem)


_NAME = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)"""
_HEADER = re.compile(rf"\s*\[\s*({_NAME}(?:\s*\.\s*{_NAME})*)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(rf"\s*({_NAME}(?:\s*\.\s*{_NAME})*)\s*=")


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line of each `[section]` header and `key =`, keyed (section,) and (section, key); first one wins."""
    lines: dict[tuple[str, ...], int] = {}
    section: list[str] = []
    in_string = False
    for number, raw in enumerate(text.splitlines(), start=1):
        toggles = (raw.count('"""') + raw.count("'''")) % 2 == 1
        if in_string:
            in_string = not toggles
            continue
        in_string = toggles
        header = _HEADER.match(raw)
        key = None if header else _KEY.match(raw)
        if header:
            section = _names(header.group(1))
            full = section
        elif key:
            full = section + _names(key.group(1))
        else:
            continue
        lines.setdefault(tuple(full[:1]), number)
        if len(full) > 1:
            lines.setdefault(tuple(full[:2]), number)
    return lines


def _names(dotted: str) -> list[str]:
    return [part.strip("\"'") for part in re.findall(_NAME, dotted)]


def deepest_line(text: str, limit: int = MAX_DEPTH) -> int | None:
    """The first line where brackets nest deeper than `limit` (outside strings and comments), or None."""
    depth, line, index, quote = 0, 1, 0, ""
    while index < len(text):
        char = text[index]
        if char == "\n":
            line += 1
        if quote:
            if char == "\\" and quote in ('"', '"""'):
                index += 2
                continue
            if text.startswith(quote, index):
                index += len(quote)
                quote = ""
                continue
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, index) else char
            index += len(quote)
            continue
        elif char == "#":
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth = max(0, depth - 1)
        index += 1
    return None


def _default_literal(section: str, key: str) -> str | None:
    """The default of `section.key` as written in TOML, to show how to write it."""
    for item in fields(SECTIONS[section]):
        if item.name == key and isinstance(item.default, (bool, int, float, str)):
            return toml_literal(item.default)
    return None
