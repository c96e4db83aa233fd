"""`stationd check-config` for [store] and [fleet]: the secrets' files, TLS to the database, what needs what."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from stationd.config.model import Config
from stationd.files import SecretFileError, read_secret
from stationd.httpserve import is_loopback

MIN_SECRET = 16
ENCRYPTED_MODES = ("require", "verify-ca", "verify-full")


def fleet_problems(config: Config) -> list[str]:
    """Each line starts with "error:" or "warning:"."""
    problems: list[str] = []
    store, fleet = config.store, config.fleet
    if store.url is not None:
        parts = urlsplit(store.url)
        if parts.password:
            problems.append(
                "warning: store.url holds a password: move it to a file named by store.password_file (chmod 600) "
                "or to the PGPASSWORD environment variable"
            )
        mode = (parse_qs(parts.query).get("sslmode") or [""])[0]
        if parts.hostname and not is_loopback(parts.hostname) and not parts.hostname.startswith("/"):
            if mode not in ENCRYPTED_MODES:
                problems.append(
                    f"warning: store.url: the connection to {parts.hostname} is not encrypted (serials, names and the "
                    "password cross the network in clear): add ?sslmode=verify-full to the URL"
                )
        if store.password_file is not None:
            problems.extend(_secret_problem(store.password_file, "store.password_file", minimum=1))
    elif store.password_file is not None:
        problems.append("warning: store.password_file is ignored without store.url")
    if fleet is None:
        return problems
    if fleet.secret_file is not None:
        problems.extend(_secret_problem(fleet.secret_file, "fleet.secret_file", minimum=MIN_SECRET))
    else:
        problems.append(
            "warning: [fleet] has no secret_file: peers' requests are refused and blueprints cannot hold secrets "
            "(make one with: openssl rand -hex 24 > fleet.secret; chmod 600 fleet.secret; the same on every station)"
        )
    if fleet.blueprint is not None and store.url is None:
        problems.append("error: fleet.blueprint: blueprints live in the fleet's database; set store.url as well")
    if store.url is None:
        problems.append(
            "warning: [fleet] without store.url: stations find each other over Bonjour but do not share one work "
            "queue; set store.url to the fleet's PostgreSQL database"
        )
    return problems


def _secret_problem(path: Path, key: str, *, minimum: int) -> list[str]:
    try:
        secret = read_secret(path, key)
    except SecretFileError as error:
        return [f"error: {error}"]
    if len(secret) < minimum:
        return [f"error: {key}: the secret in {path} is shorter than {minimum} characters (openssl rand -hex 24)"]
    return []
