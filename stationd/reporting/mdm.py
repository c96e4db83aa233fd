"""What the MDM presets share: their settings' secrets, one connection pool, and the answer to "not enrolled yet".

An iPad enrolled through the Apple Configurator URL installs its MDM profile when Setup Assistant finishes, on the
person's desk: the MDM may not know it for hours or days after the station reported it. So a device the MDM cannot
find yet is retried with backoff (for `patience`, three days by default), not failed.
"""

from __future__ import annotations

from typing import Any

import httpx

from stationd.config import convert
from stationd.plugins import Settings
from stationd.reporting.reporter import Reporter, Result
from stationd.reporting.web import SecretError, names_secret, reveal


def secret_setting(read: Settings, key: str, example: str) -> str:
    """A secret setting written as where it is ({env:NAME} or {file:/path}), readable now; returns the template."""
    value = read.text(key, example=f"{key} = {example}")
    if not names_secret(value) or value.strip() != value or not value.startswith("{") or not value.endswith("}"):
        raise read.error(
            key,
            f"holds a secret: keep it out of the configuration and write where it is instead, like {key} = {example}"
            " (the environment of the station, or a file only its owner may read)",
        )
    try:
        reveal(value)
    except SecretError as error:
        raise read.error(key, str(error)) from None
    return value


def base_url(read: Settings, example: str, default: str | None = None) -> str:
    """The MDM's address (required unless it has a `default`)."""
    if default is None:
        read.text("url", example=f'url = "{example}"')
    return str(read.read("url", default or "", convert.url, f'url = "{example}"')).rstrip("/")


def common_settings(read: Settings, group_example: str) -> dict[str, Any]:
    """What every preset takes besides its credentials: the group, whether to rename, timeout and patience."""
    return {
        "group_id": read.read("group_id", None, _optional_id, group_example),
        "rename": read.flag("rename", True),
        "timeout": read.read("timeout", 15.0, convert.number(0.1, 300.0)),
        "patience": read.read("patience", 3.0, convert.number(0.0, 365.0)) * 86400,
    }


def _optional_id(value: Any) -> int | None:
    return None if value is None else int(convert.whole(1)(value))


def not_enrolled_yet(mdm: str, serial: str | None) -> Result:
    return Result.retry(
        f"{mdm} does not list iPad {serial} yet: it appears there once the iPad finishes Setup Assistant and "
        "enrolls; the station tries again"
    )


class MdmReporter(Reporter):
    """A preset's common part: one HTTP client, opened at the first delivery."""

    batch = 10
    timeout = 15.0

    def __init__(self, **settings: Any) -> None:
        for name, value in settings.items():
            setattr(self, name, value)
        self.lease = max(120.0, (self.timeout + 1) * 4 * self.batch)
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
