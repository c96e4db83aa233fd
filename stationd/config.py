"""The station's configuration: one TOML file that a technician edits.

`load_config` reports every mistake at once, each with its line, its `section.key` and what to write instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import socket
import string
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stationd import limits
from stationd.httpserve import is_loopback
from stationd.identity import IdentityError, load_identity
from stationd.outbound import plain_http_warning
from stationd.profiles import (
    PASSWORD_SECURITY,
    WIFI_PAYLOAD_TYPE,
    WIFI_SECURITY,
    WPA_SECURITY,
    ProfileInvalid,
    payload_types,
    validate_profile,
    wifi_profile,
)
from stationd.redact import is_secret_key, redact, redact_text, redact_url
from stationd.usbmux import address as usbmux_address

LOG_FORMATS = ("auto", "json", "console")
ENROLLMENT_MODES = ("url", "dep", "none")
NAMING_PLACEHOLDERS = ("org", "serial", "model", "port", "n")
APPLE_ACTIVATION_URL = "https://albert.apple.com/deviceservices"

DEFAULT_SKIP_SETUP = (
    "Location", "Restore", "SIMSetup", "Android", "AppleID", "IntendedUser", "TOS", "Siri", "ScreenTime",
    "Diagnostics", "SoftwareUpdate", "Passcode", "Biometric", "Payment", "Zoom", "DisplayTone",
    "MessagingActivationUsingPhoneNumber", "HomeButtonSensitivity", "CloudStorage", "ScreenSaver", "TapToSetup",
    "Keyboard", "PreferredLanguage", "SpokenLanguage", "WatchMigration", "OnBoarding", "Privacy",
    "iMessageAndFaceTime", "AppStore", "Safety", "Multitasking", "ActionButton", "TermsOfAddress",
    "AccessibilityAppearance", "Welcome", "Appearance", "RestoreCompleted", "UpdateCompleted", "Display", "Tone",
    "LanguageAndLocale", "TouchID", "TrueToneDisplay", "iCloudStorage", "iCloudDiagnostics", "Registration",
    "DeviceToDeviceMigration", "UnlockWithWatch", "Accessibility", "ExpressLanguage", "Language", "Region",
    "Avatar", "DeviceProtection", "Wallpaper", "Intelligence", "WebContentFiltering", "CameraButton",
    "AdditionalPrivacySettings", "EnableLockdownMode", "SafetyAndHandling",
)
KNOWN_SETUP_PANES = frozenset(DEFAULT_SKIP_SETUP) | {
    "WiFi", "FileVault", "TVProviderSignIn", "TVHomeScreenSync", "TVRoom", "LockdownMode", "OSShowcase",
}


def default_config_path() -> Path:
    """`$STATIOND_CONFIG`, else the system-wide location for this platform."""
    if os.environ.get("STATIOND_CONFIG"):
        return Path(os.environ["STATIOND_CONFIG"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library/Application Support/stationd/stationd.toml"
    return Path("/etc/stationd/stationd.toml")


def default_database_path() -> Path:
    """Where the station's database lives unless the configuration says otherwise."""
    if sys.platform == "darwin":
        return Path.home() / "Library/Application Support/stationd/stationd.db"
    return Path("/var/lib/stationd/stationd.db")


@dataclass(frozen=True)
class StationConfig:
    """[station]: this computer."""

    id: str = field(default_factory=socket.gethostname)
    database: Path = field(default_factory=default_database_path)
    concurrency: int = 8
    usbmuxd: str | None = None
    log_format: str = "auto"
    pair_records: Path | None = None

    def __post_init__(self) -> None:
        if self.pair_records is None:
            object.__setattr__(self, "pair_records", self.database.parent / "pair_records")


@dataclass(frozen=True)
class OrganizationConfig:
    """[organization]: who supervises the iPads."""

    name: str
    identity: Path = field(default_factory=lambda: default_config_path().parent / "identity.pem")


@dataclass(frozen=True)
class StepsConfig:
    """[steps]: what Prepare does to each iPad."""

    erase: bool = True
    activate: bool = True
    skip_setup: tuple[str, ...] = DEFAULT_SKIP_SETUP
    language: str = "en"
    region: str = "US"


@dataclass(frozen=True)
class WifiConfig:
    """[wifi]: the network the iPad joins during setup, by name or as a ready-made profile."""

    ssid: str | None = None
    security: str = "WPA2"
    password: str | None = field(default=None, repr=False)
    auto_join: bool = True
    hidden: bool = False
    profile: Path | None = None

    def mobileconfig(self) -> bytes:
        """The .mobileconfig to install: the given profile file, or one built from ssid and password."""
        if self.profile is not None:
            return self.profile.read_bytes()
        return wifi_profile(self.ssid or "", self.security, self.password, self.auto_join, self.hidden)


@dataclass(frozen=True)
class EnrollmentConfig:
    """[enrollment]: how the iPad reaches the MDM."""

    mode: str = "none"
    url: str | None = None
    dep_url: str | None = None  # DEP mode: the MDM's enrollment URL in its DEP profile, to recognise our configuration


@dataclass(frozen=True)
class ProfilesConfig:
    """[profiles]: extra .mobileconfig files installed on every iPad."""

    extra: tuple[Path, ...] = ()


@dataclass(frozen=True)
class NamingConfig:
    """[naming]: the name each iPad gets."""

    pattern: str = "{org}-{serial}"

    @property
    def numbered(self) -> bool:
        """The pattern uses {n}, the station's counter."""
        return any(name == "n" for _, name, _, _ in string.Formatter().parse(self.pattern))

    def device_name(self, *, org: str, serial: str, model: str = "", port: str = "", n: int = 0) -> str:
        """Fill the pattern for one device."""
        return self.pattern.format(org=org, serial=serial, model=model, port=port, n=n)


@dataclass(frozen=True)
class ActivationConfig:
    """[activation]: Apple's activation service (overridable for tests)."""

    url: str = APPLE_ACTIVATION_URL

    @property
    def drm_handshake_url(self) -> str:
        return f"{self.url.rstrip('/')}/drmHandshake"

    @property
    def device_activation_url(self) -> str:
        return f"{self.url.rstrip('/')}/deviceActivation"


@dataclass(frozen=True)
class TimeoutsConfig:
    """[timeouts]: seconds allowed per step, and how often a failed step is retried."""

    identify: float = 60
    erase: float = 900
    erase_start: float = 60
    activate: float = 300
    supervise: float = 120
    wifi: float = 120
    profiles: float = 120
    enroll: float = 300
    name: float = 60
    report: float = 60
    retries: int = 3


@dataclass(frozen=True)
class PortsConfig:
    """[ports]: labels for the physical USB ports, by usbmuxd LocationID ("0x01110000" = "Hub A · 1")."""

    labels: dict[int, str] = field(default_factory=dict)

    def label(self, location_id: int | None) -> str | None:
        """The port's label; an unmapped port is labelled by its LocationID."""
        if location_id is None:
            return None
        return self.labels.get(location_id) or f"0x{location_id:08x}"


@dataclass(frozen=True)
class ApiConfig:
    """[api]: the HTTP API and dashboard. Loopback by default; mutating endpoints need the token (and so does any
    `listen` address other machines reach). `hosts`: extra Host names answered; `proxies`: addresses whose
    X-Forwarded-For is believed."""

    listen: str | None = "127.0.0.1:8480"
    token: str | None = field(default=None, repr=False)
    hosts: tuple[str, ...] = ()
    proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginsConfig:
    """[plugins]: which plugins run, how long a hook may take, and each plugin's own [plugins.NAME] table."""

    enabled: tuple[str, ...] = ()
    timeout: float = 5.0
    settings: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` is the file it was read from, if any."""

    organization: OrganizationConfig
    station: StationConfig = field(default_factory=StationConfig)
    steps: StepsConfig = field(default_factory=StepsConfig)
    wifi: WifiConfig | None = None
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    naming: NamingConfig = field(default_factory=NamingConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    source: Path | None = None


_SECTIONS: dict[str, type] = {
    "station": StationConfig,
    "organization": OrganizationConfig,
    "steps": StepsConfig,
    "wifi": WifiConfig,
    "enrollment": EnrollmentConfig,
    "profiles": ProfilesConfig,
    "naming": NamingConfig,
    "activation": ActivationConfig,
    "timeouts": TimeoutsConfig,
    "ports": PortsConfig,
    "api": ApiConfig,
    "plugins": PluginsConfig,
}


@dataclass(frozen=True)
class ConfigIssue:
    """One mistake in the file: where it is, which key, and what to do."""

    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(part for part in (f"line {self.line}" if self.line else "", self.key) if part)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """The configuration file cannot be used; `issues` lists every problem found."""

    def __init__(self, path: Path, issues: list[ConfigIssue]) -> None:
        self.path = path
        self.issues = issues
        if len(issues) == 1:
            text = f"{path}: {issues[0]}"
        else:
            text = f"{path} has {len(issues)} problems:\n" + "\n".join(f"  {issue}" for issue in issues)
        super().__init__(text)


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
    deep = limits.deepest_line(text)
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


_TOO_DEEP = f"lists or tables nest more than {limits.MAX_DEPTH} levels deep; no setting needs that, check the brackets"


def check_config(config: Config) -> list[str]:
    """Checks that read other files. Each line starts with "error:" or "warning:"."""
    problems = []
    try:
        load_identity(config.organization.identity)
    except IdentityError as error:
        problems.append(f"error: organization.identity: {error}")
    if config.wifi is not None and config.wifi.profile is not None:
        problems.extend(_profile_problems("wifi.profile", config.wifi.profile, need=WIFI_PAYLOAD_TYPE))
    for profile in config.profiles.extra:
        problems.extend(_profile_problems("profiles.extra", profile))
    if config.source is not None:
        problems.extend(_exposed_secrets(config.source, _secrets_held(config)))
    for key, url in (("enrollment.url", config.enrollment.url if config.enrollment.mode == "url" else None),
                     ("activation.url", config.activation.url if config.steps.activate else None)):
        warning = plain_http_warning(key, url) if url else None
        if warning is not None:
            problems.append(warning)
    problems.extend(_plugin_problems(config))
    if config.enrollment.mode != "url" and config.enrollment.url:
        problems.append(f'warning: enrollment.url is ignored because enrollment.mode is "{config.enrollment.mode}"')
    if config.enrollment.mode != "dep" and config.enrollment.dep_url:
        problems.append(f'warning: enrollment.dep_url is ignored because enrollment.mode is "{config.enrollment.mode}"')
    for pane in config.steps.skip_setup:
        if pane not in KNOWN_SETUP_PANES:
            problems.append(
                f'warning: steps.skip_setup: "{pane}" is not a Setup Assistant screen stationd knows; check its spelling'
            )
    return problems


def api_exposure_problem(listen: str, token: str | None) -> str | None:
    """Why the API must not start on `listen` (an address other machines reach, and no token), or None."""
    host = listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if token or is_loopback(host):
        return None
    return (
        f"listen = {_toml_string(listen)} lets other machines on the network reach the station's API, so it needs "
        'a token: add  token = "..."  under [api] (make one with: openssl rand -hex 24), or listen on '
        '"127.0.0.1:8480" and reach it through SSH'
    )


def example_config(org: str = "Example School") -> str:
    """A commented configuration that `load_config` accepts, for `stationd init`."""
    return _EXAMPLE.replace("@ORG@", _toml_string(org))


def _profile_problems(key: str, path: Path, need: str | None = None) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return [f"error: {key}: cannot read {path}: {error.strerror}"]
    try:
        profile = validate_profile(data, str(path))
    except ProfileInvalid as error:
        return [f"error: {key}: {error}"]
    if need is not None and need not in payload_types(profile):
        return [f"error: {key}: {path} holds no Wi-Fi payload ({need})"]
    return []


def _secrets_held(config: Config) -> list[str]:
    """What in the configuration is secret, in words."""
    held = []
    if config.wifi is not None and config.wifi.password:
        held.append("the Wi-Fi password")
    if config.api.token:
        held.append("the API token")
    if config.enrollment.url and redact_url(config.enrollment.url) != config.enrollment.url:
        held.append("credentials in enrollment.url")
    for name, settings in config.plugins.settings.items():
        if redact(settings) != settings or _has_secret_key(settings) or "://" in repr(settings):
            held.append(f"the settings of the {name} plugin")
    return held


def _has_secret_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(is_secret_key(str(key)) or _has_secret_key(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_secret_key(item) for item in value)
    return False


def _exposed_secrets(source: Path, held: list[str]) -> list[str]:
    try:
        mode = source.stat().st_mode & 0o777
    except OSError:
        return []
    if os.name != "posix" or not mode & 0o077 or not held:
        return []
    who = "other users" if mode & 0o007 else "its group"
    return [
        f"warning: {source} holds {', '.join(held)} and {who} can read it (mode {mode:04o}); run `chmod 600 "
        f"{source}` (and `chown` it to the user the station runs as, if that is another user)"
    ]


def _plugin_problems(config: Config) -> list[str]:
    """Load the enabled plugins with their settings, as `stationd run` does, without running them."""
    from stationd.plugins import PluginError, PluginHost, unused_settings

    unused = unused_settings(config.plugins)
    problems = [f'warning: [plugins.{name}] is ignored: add "{name}" to plugins.enabled' for name in unused]
    used = {name: table for name, table in config.plugins.settings.items() if name not in unused}
    try:
        PluginHost(dataclasses.replace(config.plugins, settings=used), config.station.id, ports=config.ports)
    except PluginError as error:
        problems.append(f"error: {error}")
    return problems


class _Invalid(Exception):
    """A value of the wrong kind: `expected` describes the right kind, `example` a right value."""

    def __init__(self, expected: str = "", example: str | None = None, message: str | None = None) -> None:
        super().__init__(message or expected)
        self.expected = expected
        self.example = example
        self.message = message


Converter = Callable[[Any], Any]


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false (without quotes)")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("some text in double quotes")
    return value


def _integer(minimum: int, maximum: int) -> Converter:
    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise _Invalid(f"a whole number from {minimum} to {maximum} (without quotes)")
        return value

    return convert


def _seconds(minimum: float, maximum: float) -> Converter:
    """A finite number of seconds in [minimum, maximum] (NaN and inf are refused: they defeat every deadline)."""

    def convert(value: Any) -> float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0 or not minimum <= value <= maximum:
            low = f"at least {minimum:g}" if minimum > 0 else "greater than 0"
            raise _Invalid(f"a number of seconds, {low} and at most {maximum:g} (without quotes)")
        return float(value)

    return convert


# An iPad that acknowledged EraseDevice takes an unknown while to go down (the emulator plays 0 to 10 s). The request
# is sent again only after erase_start, so erase_start must stay well above that window: three times its top.
ERASE_START_FLOOR = 30.0
MAX_STEP_SECONDS = 24 * 3600.0
MAX_RETRIES = 20
MAX_CONCURRENCY = 256
MAX_PLUGIN_SECONDS = 300.0


def _choice(options: tuple[str, ...]) -> Converter:
    def convert(value: Any) -> str:
        if isinstance(value, str):
            for option in options:
                if value.strip().lower() == option.lower():
                    return option
        raise _Invalid(f"one of {', '.join(options)}", example=_toml_string(options[0]))

    return convert


def _path(base: Path) -> Converter:
    def convert(value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid("a file or folder path in double quotes", example='"/path/to/file"')
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(base / path))

    return convert


def _text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise _Invalid("a list of texts in square brackets", example='["Location", "Siri"]')
    return tuple(value)


def _path_list(base: Path) -> Converter:
    to_path = _path(base)

    def convert(value: Any) -> tuple[Path, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise _Invalid("a list of file paths in square brackets", example='["apps.mobileconfig"]')
        return tuple(to_path(item) for item in value)

    return convert


def _listen(value: Any) -> str | None:
    """'host:port' for the HTTP API, or "" to turn it off."""
    if value == "":
        return None
    text = _text(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _Invalid("an address like 127.0.0.1:8480 (or 0.0.0.0:8480 for the LAN, or \"\" to turn it off)")
    return text


def _token(value: Any) -> str:
    text = _text(value)
    if not all(33 <= ord(char) < 127 for char in text):
        raise _Invalid("", message="the token must be ASCII letters, digits and punctuation, without spaces (a "
                       "request header cannot carry anything else); make one with: openssl rand -hex 24")
    if len(text) < 16:
        raise _Invalid("", message="the token must be at least 16 characters; make one with: openssl rand -hex 24")
    return text


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _host_names(value: Any) -> tuple[str, ...]:
    names = _text_list(value)
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise _Invalid(message=f"{name!r} is not a host name (write names only, without port or scheme)",
                           example='["station-1.school.example"]')
    return names


def _addresses(value: Any) -> tuple[str, ...]:
    addresses = _text_list(value)
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise _Invalid(message=f"{address!r} is not an IP address or network", example='["127.0.0.1"]') from None
    return addresses


def _url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Invalid("a web address starting with https:// or http://", example='"https://mdm.example.org/enroll"')
    return value


def _usbmuxd(value: Any) -> str:
    example = '"127.0.0.1:27015"'
    try:
        address = usbmux_address.parse(value) if isinstance(value, str) and value.strip() else None
    except usbmux_address.AddressError:
        address = None
    if address is None:
        raise _Invalid("a socket path (/var/run/usbmuxd or UNIX:/var/run/usbmuxd) or HOST:PORT", example=example)
    if not address.is_unix and ":" in (address.host or ""):
        raise _Invalid(message="pymobiledevice3 reaches usbmuxd over IPv4 only: give an IPv4 address or a socket path",
                       example=example)
    return value


def _pattern(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a name pattern in double quotes", example='"{org}-{serial}"')
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        too_wide = limits.placeholder_width_problem(value)
    except ValueError as error:
        raise _Invalid(message=f"cannot read the pattern ({error}); write placeholders like {{serial}}") from None
    if too_wide is not None:
        raise _Invalid(message=too_wide, example='"{org}-{n:03d}"')
    known = ", ".join(f"{{{name}}}" for name in NAMING_PLACEHOLDERS)
    for name in names:
        if name not in NAMING_PLACEHOLDERS:
            raise _Invalid(message=f"unknown placeholder {{{name}}}; use {known}", example='"{org}-{serial}"')
    try:
        NamingConfig(value).device_name(org="Org", serial="SERIAL", model="iPad", port="1", n=1)
    except (ValueError, TypeError) as error:
        raise _Invalid(message=f"the pattern cannot be filled in ({error})", example='"{org}-{n:03d}"') from None
    return value


def _timeout_converter(name: str) -> Converter:
    if name == "retries":
        return _integer(0, MAX_RETRIES)
    if name == "erase_start":
        return _seconds(ERASE_START_FLOOR, MAX_STEP_SECONDS)
    return _seconds(0, MAX_STEP_SECONDS)


def _schema(base: Path) -> dict[str, dict[str, Converter]]:
    return {
        "station": {
            "id": _text, "database": _path(base), "concurrency": _integer(1, MAX_CONCURRENCY), "usbmuxd": _usbmuxd,
            "log_format": _choice(LOG_FORMATS), "pair_records": _path(base),
        },
        "organization": {"name": _text, "identity": _path(base)},
        "steps": {
            "erase": _boolean, "activate": _boolean, "skip_setup": _text_list, "language": _text, "region": _text,
        },
        "wifi": {
            "ssid": _text, "security": _choice(WIFI_SECURITY), "password": _text, "auto_join": _boolean,
            "hidden": _boolean, "profile": _path(base),
        },
        "enrollment": {"mode": _choice(ENROLLMENT_MODES), "url": _url, "dep_url": _url},
        "profiles": {"extra": _path_list(base)},
        "naming": {"pattern": _pattern},
        "activation": {"url": _url},
        "timeouts": {
            name: _timeout_converter(name) for name in (f.name for f in fields(TimeoutsConfig))
        },
        "api": {"listen": _listen, "token": _token, "hosts": _host_names, "proxies": _addresses},
        "plugins": {"enabled": _text_list, "timeout": _seconds(0, MAX_PLUGIN_SECONDS)},
    }


class _Reader:
    """Turns parsed TOML into a `Config`, collecting every problem with its line."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.lines = _key_lines(text)
        self.issues: list[ConfigIssue] = []
        self.invalid: set[tuple[str, str]] = set()

    def config(self) -> Config:
        schema = _schema(self.path.parent)
        self._limits()
        self._unknown_sections(schema)
        plugin_settings = self._plugin_tables()
        values = {name: self._section(name, converters) for name, converters in schema.items()}
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
        sections = {name: _SECTIONS[name](**found) for name, found in values.items() if name != "wifi"}
        wifi = WifiConfig(**values["wifi"]) if "wifi" in self.data else None
        return Config(**sections, wifi=wifi, source=self.path)

    def _limits(self) -> None:
        """Drop every value beyond the bounds in `stationd.limits`, reporting it with its key and line."""
        for name, table in list(self.data.items()):
            if not isinstance(table, dict):
                problem = limits.oversized(table, 1)
                if problem is not None:
                    self.issues.append(ConfigIssue(self.lines.get((name,)), name, problem))
                    del self.data[name]
                continue
            if len(table) > limits.MAX_ITEMS:
                self.error(name, None, f"holds more than {limits.MAX_ITEMS:,} settings ({len(table):,})")
                self.data[name] = {}
                continue
            for key, value in list(table.items()):
                problem = limits.oversized(value, 2)
                if problem is not None:
                    self.invalid.add((name, key))
                    self.error(name, key, problem)
                    del table[key]

    def error(self, section: str, key: str | None, message: str) -> None:
        line = self.lines.get((section, key)) if key else None
        line = line or self.lines.get((section,))
        self.issues.append(ConfigIssue(line, f"{section}.{key}" if key else f"[{section}]", message))

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
                self.error("ports", key, 'is not a LocationID; write it as `stationd ports --learn` does, for '
                           'example: "0x01110000" = "Hub A · 1"')
                continue
            if not isinstance(value, str) or not value.strip():
                self.error("ports", key, 'the label must be text, for example: "Hub A · 1"')
            elif value in labels.values():
                self.error("ports", key, f"the label {value!r} is already used by another port")
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

    def _unknown_sections(self, schema: dict[str, dict[str, Converter]]) -> None:
        for name, value in self.data.items():
            if name in schema or name == "ports":
                continue
            if not isinstance(value, dict):
                line = self.lines.get((name,))
                self.issues.append(ConfigIssue(line, name, "is outside any section; move it under the right [section]"))
                continue
            known = ", ".join(f"[{section}]" for section in schema)
            hint = _did_you_mean(name, schema, "[{}]", f"the sections are {known}")
            self.error(name, None, f"unknown section; {hint}")

    def _section(self, section: str, converters: dict[str, Converter]) -> dict[str, Any]:
        table = self.data.get(section, {})
        if not isinstance(table, dict):
            self.error(section, None, f"must be a section: write [{section}] on its own line, then its settings")
            return {}
        found = {}
        for key, value in table.items():
            if key not in converters:
                known = f"[{section}] takes " + ", ".join(converters)
                self.error(section, key, "unknown setting; " + _did_you_mean(key, converters, "{}", known))
                continue
            try:
                found[key] = converters[key](value)
            except _Invalid as bad:
                self.invalid.add((section, key))
                self.error(section, key, self._explain(section, key, value, bad))
        return found

    def _explain(self, section: str, key: str, value: Any, bad: _Invalid) -> str:
        if bad.message:
            text = bad.message
        else:
            got = f"a {_kind(value)}" if is_secret_key(key) else _show(value)
            text = f"expected {bad.expected}, got {got}"
        example = bad.example or _default_literal(section, key)
        return f"{text}; write for example: {key} = {example}" if example else text

    def _check_organization(self, found: dict[str, Any]) -> None:
        if "name" not in found and ("organization", "name") not in self.invalid:
            self.error(
                "organization", "name",
                'is missing; add a [organization] section with your organisation\'s name, '
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
            self.error("wifi", "ssid", 'is missing; write the network name, for example: ssid = "School-WiFi", '
                       'or give a Wi-Fi profile: profile = "wifi.mobileconfig"')
            return
        if ("wifi", "security") in self.invalid or ("wifi", "password") in self.invalid:
            return
        ssid = found.get("ssid")
        if ssid is not None and len(ssid.encode()) > 32:
            self.error("wifi", "ssid", "a Wi-Fi network name has at most 32 characters")
        self._check_wifi_password(found.get("security", "WPA2"), found.get("password"))

    def _check_wifi_password(self, security: str, password: str | None) -> None:
        if security in PASSWORD_SECURITY and password is None:
            self.error("wifi", "password", f'is missing; a {security} network needs its password: password = "..." '
                       '(or write security = "None" for an open network)')
        elif security == "None" and password is not None:
            self.error("wifi", "password", 'an open network (security = "None") has no password; remove the '
                       'password line or write the right security, for example: security = "WPA2"')
        elif security in WPA_SECURITY and password is not None and not 8 <= len(password) <= 64:
            self.error("wifi", "password", f"a {security} password has 8 to 63 characters; check it")

    def _check_enrollment(self, found: dict[str, Any]) -> None:
        if found.get("mode") == "url" and "url" not in found and ("enrollment", "url") not in self.invalid:
            self.error("enrollment", "url", 'is missing; mode = "url" needs the enrollment address your MDM gives, '
                       'for example: url = "https://mdm.example.org/enroll"')

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


def _did_you_mean(name: str, known: dict[str, Any], shape: str, otherwise: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {shape.format(close[0])}?" if close else otherwise


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false value"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "section"
    return "date or time"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = _toml_string(redact_text(value))
        return shown if len(shown) <= 60 else shown[:57] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)
    return f"a {_kind(value)}"


def _default_literal(section: str, key: str) -> str | None:
    for item in fields(_SECTIONS[section]):
        if item.name == key and isinstance(item.default, (bool, int, float, str)):
            return _toml_literal(item.default)
    return None


def _toml_literal(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    return repr(value)


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


_EXAMPLE = """\
# stationd configuration
#
# This file tells the station how to prepare each iPad plugged into it.
# Lines starting with # are notes and are ignored. To use a setting shown with a # in front,
# remove the # and change the value. Text goes between double quotes; yes/no is written true/false.
# After each change, run:  stationd check-config

[station]
# Name of this station in reports. Default: the computer's name.
# id = "cart-room-1"

# How many iPads are prepared at the same time. Lower it if a USB hub misbehaves.
concurrency = 8

# How the station writes its log: "auto" (readable on screen, JSON for services), "json" or "console".
log_format = "auto"

# Where the station remembers each iPad (which ones are done). The default depends on the system.
# database = "/var/lib/stationd/stationd.db"

# Folder for pairing records. Default: a "pair_records" folder next to the database.
# pair_records = "/var/lib/stationd/pair_records"

# Only if usbmuxd listens somewhere unusual: a socket path like "/var/run/usbmuxd" or
# "UNIX:/var/run/usbmuxd", or "HOST:PORT" like "127.0.0.1:27015".
# usbmuxd = "127.0.0.1:27015"

[organization]
# Your organisation's name, shown on every iPad ("This iPad is supervised by ...").
name = @ORG@

# The supervision identity (certificate and private key) that proves the iPads belong to you.
# Create a new one:                       stationd identity create --org @ORG@
# or import Apple Configurator's export:  stationd identity import identity.p12
# A path that does not start with / is read from the folder of this file.
identity = "identity.pem"

[steps]
# Erase the iPad first. EVERYTHING ON IT IS DELETED. Needed to supervise an iPad that was used before.
erase = true

# Activate the iPad with Apple from the station.
activate = true

# Language and region the iPad is set to.
language = "en"
region = "US"

# Setup Assistant screens to skip. Leave it out to skip every screen except Wi-Fi.
# skip_setup = ["Location", "Siri", "Passcode", "AppleID"]

# The Wi-Fi network the iPad joins during setup (needed to enroll with an MDM).
# To use it, remove the # in front of [wifi] and of the lines below it.
# Either give the network:
# [wifi]
# ssid = "School-WiFi"
# security = "WPA2"        # one of "None", "WEP", "WPA", "WPA2", "WPA3", "Any"
# password = "the Wi-Fi password"
# auto_join = true
# hidden = false           # true if the network does not show its name
# or give a Wi-Fi profile made with Apple Configurator (and no ssid or password):
# profile = "wifi.mobileconfig"
# This file then holds the Wi-Fi password: keep it private with  chmod 600 <this file>

[enrollment]
# How the iPad joins your device management server (MDM):
#   "none"  no enrollment;
#   "url"   the "Apple Configurator enrollment URL" your MDM shows (write it in url below);
#   "dep"   Automated Device Enrollment through Apple School/Business Manager (needs Wi-Fi).
mode = "none"
# url = "https://mdm.example.org/configurator/enroll"
# In "dep" mode the station accepts the configuration Apple hands the iPad when it names your organisation (as
# above) or, if your MDM's DEP profile uses another name, when it points at this enrollment URL:
# dep_url = "https://mdm.example.org/dep/enroll"

[profiles]
# Extra configuration profiles (.mobileconfig files) installed on every iPad, in this order.
# extra = ["restrictions.mobileconfig", "calendars.mobileconfig"]
extra = []

[naming]
# The name each iPad gets. Placeholders: {org} organisation, {serial} serial number, {model} model,
# {port} USB port, {n} a counter ({n:03d} writes 001, 002, ...).
pattern = "{org}-{serial}"

[activation]
# Apple's activation service. Change it only for tests.
url = "https://albert.apple.com/deviceservices"

[timeouts]
# Longest time in seconds each step may take before it counts as failed.
identify = 60
erase = 900
# An iPad that accepted the erase request but has not erased after this many seconds never got it: the
# request is sent again. At least 30 (an iPad takes a few seconds to go down after accepting it).
erase_start = 60
activate = 300
supervise = 120
wifi = 120
profiles = 120
enroll = 300
name = 60
report = 60
# How many times a failed step is tried again.
retries = 3

[ports]
# A label for each USB port, so people read "Hub A · 7" instead of a number. `stationd ports --learn` writes
# these lines for you: plug one iPad into each port in turn. Ports not listed show their LocationID.
# "0x01110000" = "Hub A · 1"

[api]
# The HTTP API and the live dashboard (open http://127.0.0.1:8480/ in a browser).
# Write listen = "0.0.0.0:8480" to let phones and laptops on the LAN see the dashboard (it then needs the token
# below), or "" to turn it off.
listen = "127.0.0.1:8480"
# Retrying, skipping a step or forgetting an iPad through the API needs this token (at least 16 characters;
# make one with: openssl rand -hex 24). Without a token those actions are refused.
# token = "..."
# Host names the dashboard answers to, besides IP addresses, localhost and this computer's name:
# hosts = ["cart-1.school.example"]
# Only behind a reverse proxy: the proxy's address, so the log shows the real client from X-Forwarded-For.
# proxies = ["127.0.0.1"]

[plugins]
# Built-in plugins to run: terminal (a live board in this terminal), leds (a light per port), webhook (Slack,
# Teams or any JSON endpoint), desktop (notifications on this computer). Plugins installed with pip that
# register in the "stationd.plugins" entry-point group run as well.
enabled = []
# Longest time in seconds a plugin may take to handle one event; a slower plugin is skipped for that event.
timeout = 5
# Each plugin reads its settings from its own table, for example:
# [plugins.webhook]
# url = "https://hooks.slack.com/services/..."
# format = "slack"
"""
