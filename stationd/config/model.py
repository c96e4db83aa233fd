"""The configuration's model: one frozen dataclass per [section], their defaults, and the errors a file can have.

`example_config` is the commented file `stationd init` writes (example.toml, shipped with the package).
"""

from __future__ import annotations

import os
import socket
import string
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stationd.config.convert import toml_string
from stationd.profiles import wifi_profile

LOG_FORMATS = ("auto", "json", "console")
UNKNOWN_POLICIES = ("provision", "hold")
ENROLLMENT_MODES = ("url", "dep", "none")
NAMING_PLACEHOLDERS = ("org", "serial", "model", "port", "n")
APPLE_ACTIVATION_URL = "https://albert.apple.com/deviceservices"

DEFAULT_SKIP_SETUP = (
    "Location",
    "Restore",
    "SIMSetup",
    "Android",
    "AppleID",
    "IntendedUser",
    "TOS",
    "Siri",
    "ScreenTime",
    "Diagnostics",
    "SoftwareUpdate",
    "Passcode",
    "Biometric",
    "Payment",
    "Zoom",
    "DisplayTone",
    "MessagingActivationUsingPhoneNumber",
    "HomeButtonSensitivity",
    "CloudStorage",
    "ScreenSaver",
    "TapToSetup",
    "Keyboard",
    "PreferredLanguage",
    "SpokenLanguage",
    "WatchMigration",
    "OnBoarding",
    "Privacy",
    "iMessageAndFaceTime",
    "AppStore",
    "Safety",
    "Multitasking",
    "ActionButton",
    "TermsOfAddress",
    "AccessibilityAppearance",
    "Welcome",
    "Appearance",
    "RestoreCompleted",
    "UpdateCompleted",
    "Display",
    "Tone",
    "LanguageAndLocale",
    "TouchID",
    "TrueToneDisplay",
    "iCloudStorage",
    "iCloudDiagnostics",
    "Registration",
    "DeviceToDeviceMigration",
    "UnlockWithWatch",
    "Accessibility",
    "ExpressLanguage",
    "Language",
    "Region",
    "Avatar",
    "DeviceProtection",
    "Wallpaper",
    "Intelligence",
    "WebContentFiltering",
    "CameraButton",
    "AdditionalPrivacySettings",
    "EnableLockdownMode",
    "SafetyAndHandling",
)
KNOWN_SETUP_PANES = frozenset(DEFAULT_SKIP_SETUP) | {
    "WiFi",
    "FileVault",
    "TVProviderSignIn",
    "TVHomeScreenSync",
    "TVRoom",
    "LockdownMode",
    "OSShowcase",
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
    min_battery: int = 0  # percent an iPad needs before anything is done to it (its erase first); 0: no charge gate
    charge_recheck: float = 60.0  # seconds between two looks at the charge of an iPad held below min_battery


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
    hold_until_assigned: bool = False  # DEP mode: hold each iPad, before its erase, until its serial is assigned


@dataclass(frozen=True)
class ProfilesConfig:
    """[profiles]: extra .mobileconfig files installed on every iPad."""

    extra: tuple[Path, ...] = ()


@dataclass(frozen=True)
class AppsConfig:
    """[apps]: custom and in-house .ipa files installed on every iPad (App Store apps come from the MDM)."""

    install: tuple[Path, ...] = ()


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
    charge: float = 60
    assignment: float = 60
    erase: float = 900
    erase_start: float = 60
    activate: float = 300
    supervise: float = 120
    wifi: float = 120
    profiles: float = 120
    apps: float = 900
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
class StoreConfig:
    """[store]: where the station keeps its progress. Without `url`, the SQLite file [station] database; with a
    PostgreSQL URL, the fleet's shared database (its password in `password_file`, or PGPASSWORD). `lease`: how long
    a station holds an iPad's job without renewing it (another station resumes the iPad after that); `journal`:
    where transitions wait while the fleet's database cannot be reached."""

    url: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    lease: float = 60.0
    pool: int = 8
    timeout: float = 5.0
    poll: float = 5.0
    journal: Path | None = None

    @property
    def shared(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class FleetConfig:
    """[fleet]: this station as one of a fleet. It advertises itself over Bonjour (unless `advertise` is false) on
    `interfaces` (default: every interface but loopback) and finds the stations of the same fleet `name`; peers
    prove themselves with the shared secret in `secret_file`; `blueprint` names the settings taken from the fleet
    database."""

    name: str = "stationd"
    advertise: bool = True
    interfaces: tuple[str, ...] = ()
    secret_file: Path | None = None
    blueprint: str | None = None
    heartbeat: float = 5.0


@dataclass(frozen=True)
class QueueConfig:
    """[queue]: the work list. `unknown`: what happens to an iPad whose serial is not on it ("provision" it
    anyway, or "hold" it untouched)."""

    unknown: str = "provision"


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` is the file it was read from, if any."""

    organization: OrganizationConfig
    station: StationConfig = field(default_factory=StationConfig)
    steps: StepsConfig = field(default_factory=StepsConfig)
    wifi: WifiConfig | None = None
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    apps: AppsConfig = field(default_factory=AppsConfig)
    naming: NamingConfig = field(default_factory=NamingConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    fleet: FleetConfig | None = None
    queue: QueueConfig = field(default_factory=QueueConfig)
    source: Path | None = None


SECTIONS: dict[str, type] = {
    "station": StationConfig,
    "organization": OrganizationConfig,
    "steps": StepsConfig,
    "wifi": WifiConfig,
    "enrollment": EnrollmentConfig,
    "profiles": ProfilesConfig,
    "apps": AppsConfig,
    "naming": NamingConfig,
    "activation": ActivationConfig,
    "timeouts": TimeoutsConfig,
    "ports": PortsConfig,
    "api": ApiConfig,
    "plugins": PluginsConfig,
    "store": StoreConfig,
    "fleet": FleetConfig,
    "queue": QueueConfig,
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


def example_config(org: str = "Example School") -> str:
    """A commented configuration that `load_config` accepts, for `stationd init`."""
    text = resources.files(__package__).joinpath("example.toml").read_text(encoding="utf-8")
    return text.replace("@ORG@", toml_string(org))
