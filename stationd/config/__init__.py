"""The station's configuration: one TOML file that a technician edits.

`load_config` reports every mistake at once, each with its line, its `section.key` and what to write instead;
`check_config` adds what needs other files. The rooms: `model` (one frozen dataclass per section), `convert` (the
kinds of values, shared with plugin settings and emulator scenarios), `schema` (the kind of each key), `reader`
(TOML to `Config`), `checks` (identity, profiles, permissions, plugins) and `example.toml` (`stationd init`).
"""

from stationd.config.checks import check_config
from stationd.config.model import (
    APPLE_ACTIVATION_URL,
    DEFAULT_SKIP_SETUP,
    ENROLLMENT_MODES,
    KNOWN_SETUP_PANES,
    LOG_FORMATS,
    NAMING_PLACEHOLDERS,
    ActivationConfig,
    ApiConfig,
    AppsConfig,
    Config,
    ConfigError,
    ConfigIssue,
    EnrollmentConfig,
    FleetConfig,
    NamingConfig,
    OrganizationConfig,
    PluginsConfig,
    PortsConfig,
    ProfilesConfig,
    QueueConfig,
    StationConfig,
    StepsConfig,
    StoreConfig,
    TimeoutsConfig,
    WifiConfig,
    default_config_path,
    default_database_path,
    example_config,
)
from stationd.config.reader import load_config
from stationd.config.schema import (
    ERASE_START_FLOOR,
    MAX_CONCURRENCY,
    MAX_PLUGIN_SECONDS,
    MAX_RETRIES,
    MAX_STEP_SECONDS,
    api_exposure_problem,
)

__all__ = [
    "APPLE_ACTIVATION_URL",
    "DEFAULT_SKIP_SETUP",
    "ENROLLMENT_MODES",
    "ERASE_START_FLOOR",
    "KNOWN_SETUP_PANES",
    "LOG_FORMATS",
    "MAX_CONCURRENCY",
    "MAX_PLUGIN_SECONDS",
    "MAX_RETRIES",
    "MAX_STEP_SECONDS",
    "NAMING_PLACEHOLDERS",
    "ActivationConfig",
    "ApiConfig",
    "AppsConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "EnrollmentConfig",
    "FleetConfig",
    "NamingConfig",
    "OrganizationConfig",
    "PluginsConfig",
    "PortsConfig",
    "ProfilesConfig",
    "QueueConfig",
    "StationConfig",
    "StepsConfig",
    "StoreConfig",
    "TimeoutsConfig",
    "WifiConfig",
    "api_exposure_problem",
    "check_config",
    "default_config_path",
    "default_database_path",
    "example_config",
    "load_config",
]
