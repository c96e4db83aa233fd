"""Blueprints: one set of provisioning settings for the whole fleet, kept in the fleet's database as numbered
versions (Apple Configurator shares its profiles through iCloud Drive; a fleet needs the same without an account).

`stationd blueprint push` captures this station's [steps], [wifi], [enrollment], [profiles] (with the profile
files' contents) and [naming]. A station with `[fleet] blueprint = "NAME"` takes them at start and whenever a new
version is pushed: new iPads get the newest version, an iPad in progress keeps the one it started with (the version
is in its job, so another station resuming it uses the same one).

Secrets are encrypted with a key derived from the fleet's secret (HKDF-SHA256, then AES-256-GCM): the Wi-Fi
password, every profile file's contents (a Wi-Fi profile holds its password; others may hold certificates) and an
enrollment URL that carries credentials. Without the fleet's secret, a blueprint holding any of them is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stationd.config import Config, EnrollmentConfig, NamingConfig, ProfilesConfig, StepsConfig, WifiConfig
from stationd.errors import BlueprintError
from stationd.files import private_folder, write_private_file
from stationd.pipeline.plan import plan
from stationd.redact import redact_url
from stationd.store import BlueprintRecord, JobRecord, Store

log = structlog.get_logger("stationd.fleet")

SECTIONS = ("steps", "wifi", "enrollment", "profiles", "naming")
SEALED = "sealed"  # the key of an encrypted value: {"sealed": base64(nonce + ciphertext)}


def _key(secret: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"stationd blueprint", info=b"v1").derive(secret.encode())
    return AESGCM(derived)


def _seal(value: bytes, secret: str | None, what: str) -> dict[str, str]:
    if not secret:
        raise BlueprintError(
            f"the blueprint would hold {what}: set [fleet] secret_file (the fleet's shared secret) so it is "
            "stored encrypted"
        )
    nonce = os.urandom(12)
    return {SEALED: base64.b64encode(nonce + _key(secret).encrypt(nonce, value, None)).decode()}


def _open(sealed: dict[str, str], secret: str | None) -> bytes:
    if not secret:
        raise BlueprintError("this blueprint holds encrypted settings: set [fleet] secret_file to the fleet's secret")
    raw = base64.b64decode(sealed[SEALED])
    try:
        return _key(secret).decrypt(raw[:12], raw[12:], None)
    except InvalidTag:
        raise BlueprintError(
            "this blueprint's encrypted settings do not open with this station's fleet secret: every station of "
            "the fleet needs the same [fleet] secret_file"
        ) from None


def capture(config: Config, secret: str | None) -> dict[str, Any]:
    """This station's provisioning settings as a blueprint's content (secrets sealed, files read)."""
    content: dict[str, Any] = {
        "steps": {**dataclasses.asdict(config.steps), "skip_setup": list(config.steps.skip_setup)},
        "naming": {"pattern": config.naming.pattern},
        "enrollment": {"mode": config.enrollment.mode, "dep_url": config.enrollment.dep_url, "url": None},
        "profiles": {"extra": [_file(path, secret) for path in config.profiles.extra]},
        "wifi": None,
    }
    url = config.enrollment.url
    if url is not None:
        content["enrollment"]["url"] = url if redact_url(url) == url else _seal(url.encode(), secret, "credentials")
    wifi = config.wifi
    if wifi is not None:
        content["wifi"] = {
            "ssid": wifi.ssid,
            "security": wifi.security,
            "auto_join": wifi.auto_join,
            "hidden": wifi.hidden,
            "password": _seal(wifi.password.encode(), secret, "the Wi-Fi password") if wifi.password else None,
            "profile": _file(wifi.profile, secret) if wifi.profile else None,
        }
    return content


def _file(path: Path, secret: str | None) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BlueprintError(f"cannot read {path}: {error.strerror}") from None
    return {"name": path.name, "sha256": hashlib.sha256(data).hexdigest(), "data": _seal(data, secret, "profiles")}


def apply(config: Config, record: BlueprintRecord, secret: str | None, folder: Path) -> Config:
    """`config` with the blueprint's sections; its profile files written (0600) under `folder`."""
    content = record.content
    here = folder / _safe(record.name) / f"v{record.version}"
    private_folder(here)

    def written(entry: dict[str, Any]) -> Path:
        target = here / _safe(entry["name"])
        write_private_file(target, _open(entry["data"], secret), force=True)
        return target

    steps = content["steps"]
    enrollment = dict(content["enrollment"])
    if isinstance(enrollment.get("url"), dict):
        enrollment["url"] = _open(enrollment["url"], secret).decode()
    wifi = None
    if content.get("wifi") is not None:
        given = dict(content["wifi"])
        if given.get("password") is not None:
            given["password"] = _open(given["password"], secret).decode()
        if given.get("profile") is not None:
            given["profile"] = written(given["profile"])
        wifi = WifiConfig(**given)
    return dataclasses.replace(
        config,
        steps=StepsConfig(**{**steps, "skip_setup": tuple(steps["skip_setup"])}),
        wifi=wifi,
        enrollment=EnrollmentConfig(**enrollment),
        profiles=ProfilesConfig(extra=tuple(written(entry) for entry in content["profiles"]["extra"])),
        naming=NamingConfig(**content["naming"]),
    )


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name).lstrip(".") or "blueprint"


def flat(content: dict[str, Any]) -> dict[str, str]:
    """`section.key = value` lines of a blueprint, secrets shown only as sealed (with a fingerprint of the
    ciphertext, so a diff shows that they changed)."""
    lines: dict[str, str] = {}
    for section in SECTIONS:
        value = content.get(section)
        if value is None:
            lines[section] = "(none)"
            continue
        for key, item in value.items():
            lines[f"{section}.{key}"] = _shown(item)
    return lines


def _shown(item: Any) -> str:
    if isinstance(item, dict) and SEALED in item:
        return f"(encrypted {hashlib.sha256(item[SEALED].encode()).hexdigest()[:8]})"
    if isinstance(item, dict) and "name" in item and "sha256" in item:
        return f"{item['name']} (sha256 {item['sha256'][:12]})"
    if isinstance(item, list):
        return "[" + ", ".join(_shown(element) for element in item) + "]"
    return json.dumps(item, ensure_ascii=False)


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed from `old` to `new`, one line per setting ("- " before, "+ " after)."""
    before, after = flat(old), flat(new)
    lines = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            if key in before:
                lines.append(f"- {key} = {before[key]}")
            if key in after:
                lines.append(f"+ {key} = {after[key]}")
    return lines


class Blueprints:
    """A station's settings from its fleet's blueprint: the newest version for new iPads, the version a job
    started with for that job (`for_job`)."""

    def __init__(self, base: Config, name: str, store: Store, secret: str | None, folder: Path) -> None:
        self.base = base
        self.name = name
        self.store = store
        self.secret = secret
        self.folder = folder
        self.current: BlueprintRecord | None = None
        self._configs: dict[int, tuple[Config, list[str]]] = {}

    async def refresh(self) -> bool:
        """Take the newest version; True when it is a new one."""
        record = await self.store.get_blueprint(self.name)
        if record is None:
            raise BlueprintError(
                f"the fleet database has no blueprint {self.name!r}: push one from a station with "
                f"`stationd blueprint push {self.name}`, or remove [fleet] blueprint"
            )
        if self.current is not None and record.version == self.current.version:
            return False
        self._remember(record)
        self.current = record
        log.info("blueprint.taken", blueprint=self.name, version=record.version)
        return True

    def _remember(self, record: BlueprintRecord) -> tuple[Config, list[str]]:
        if record.version not in self._configs:
            config = apply(self.base, record, self.secret, self.folder)
            self._configs[record.version] = (config, plan(config))
        return self._configs[record.version]

    async def for_job(self, job: JobRecord) -> tuple[Config, list[str], dict[str, Any]]:
        """The settings `job` runs with, and its blueprint record ({"name", "version"})."""
        recorded = job.step_data.get("blueprint")
        if (
            isinstance(recorded, dict)
            and recorded.get("name") == self.name
            and isinstance(recorded.get("version"), int)
        ):
            version = recorded["version"]
            if version not in self._configs:
                record = await self.store.get_blueprint(self.name, version)
                if record is None:
                    raise BlueprintError(f"version {version} of blueprint {self.name!r} is gone from the database")
                self._remember(record)
            config, steps = self._configs[version]
            return config, steps, recorded
        config, steps = self.newest()
        return config, steps, self.recorded()

    def newest(self) -> tuple[Config, list[str]]:
        """The configuration and plan of the newest version taken (`refresh` first)."""
        if self.current is None:
            raise BlueprintError(f"blueprint {self.name!r} was not read yet")
        return self._configs[self.current.version]

    def recorded(self) -> dict[str, Any]:
        """What a job records of the newest version: {"name", "version"}."""
        return {"name": self.name, "version": self.current.version if self.current is not None else None}
