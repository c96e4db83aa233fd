"""The checks that read other files: the identity, the profiles, the configuration file's own permissions, and the
plugins loaded with their settings. `stationd check-config` and `stationd run` show them; `load_config` does not
read any file but the configuration."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from stationd.config.model import KNOWN_SETUP_PANES, Config
from stationd.identity import IdentityError, load_identity
from stationd.ipa import IpaInvalid, read_package
from stationd.outbound import plain_http_warning
from stationd.profiles import WIFI_PAYLOAD_TYPE, ProfileInvalid, payload_types, validate_profile
from stationd.redact import is_secret_key, redact, redact_url


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
    for package in config.apps.install:
        problems.extend(_app_problems(package))
    if config.source is not None:
        problems.extend(_exposed_secrets(config.source, _secrets_held(config)))
    for key, url in (
        ("enrollment.url", config.enrollment.url if config.enrollment.mode == "url" else None),
        ("activation.url", config.activation.url if config.steps.activate else None),
    ):
        warning = plain_http_warning(key, url) if url else None
        if warning is not None:
            problems.append(warning)
    problems.extend(_plugin_problems(config))
    problems.extend(_fleet_problems(config))
    if config.enrollment.mode != "url" and config.enrollment.url:
        problems.append(f'warning: enrollment.url is ignored because enrollment.mode is "{config.enrollment.mode}"')
    if config.enrollment.mode != "dep" and config.enrollment.hold_until_assigned:
        problems.append(
            f'warning: enrollment.hold_until_assigned is ignored because enrollment.mode is "{config.enrollment.mode}"'
        )
    elif config.enrollment.hold_until_assigned and "asm" not in config.plugins.enabled:
        problems.append(
            "warning: enrollment.hold_until_assigned holds each iPad until its serial is known to be assigned, but the "
            "asm plugin is not enabled: only `stationd asm assign` and `stationd asm check` will let them go; add "
            '"asm" to plugins.enabled (with [plugins.asm]) so the station checks held serials itself'
        )
    if config.enrollment.mode != "dep" and config.enrollment.dep_url:
        problems.append(f'warning: enrollment.dep_url is ignored because enrollment.mode is "{config.enrollment.mode}"')
    for pane in config.steps.skip_setup:
        if pane not in KNOWN_SETUP_PANES:
            problems.append(
                f'warning: steps.skip_setup: "{pane}" is not a Setup Assistant screen stationd knows; '
                "check its spelling"
            )
    return problems


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


def _app_problems(path: Path) -> list[str]:
    try:
        package = read_package(path)
    except IpaInvalid as error:
        return [f"error: apps.install: {error}"]
    if package.app_store:
        return [
            f"warning: apps.install: {path} was downloaded from the App Store ({package.bundle_id}); an iPad installs "
            "only custom and in-house apps from the station: give App Store apps through the MDM (Apps and Books)"
        ]
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
    if config.store.url and redact_url(config.store.url) != config.store.url:
        held.append("credentials in store.url")
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


def _fleet_problems(config: Config) -> list[str]:
    from stationd.fleet.checks import fleet_problems

    return fleet_problems(config)


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
