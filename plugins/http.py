"""Report each finished iPad to any HTTP endpoint: an inventory, a spreadsheet service, an MDM with an API.

Each finished iPad is one request, made once it is done and retried with backoff until the endpoint takes it (the
outbox keeps it across restarts). Every request carries `Idempotency-Key: <device>/<reporter>/<job>`, the same on
every retry, so an endpoint that honours it applies a report once however often it arrives.

Settings, under [plugins.http]:
    url       where to send, with the device's fields: "https://inventory.example.org/ipads/{serial}"
    method    POST (default), PUT or PATCH
    headers   request headers; a secret comes from the environment or a 0600 file, never the configuration:
              { Authorization = "Bearer {env:INVENTORY_TOKEN}" } or { X-Api-Key = "{file:/etc/stationd/inv.key}" }
    body      the JSON body, a table whose texts take the device's fields ({serial}, {name}, ...; a text that is
              exactly "{ecid}" keeps the value as it is); default: the device's whole row
    timeout   seconds per request (default 10)
    backoff   seconds before the first retry, doubling up to an hour (default 30)
    patience  days of retries before a delivery fails (default 3)

The fields: serial, udid, ecid, model, ios_version, build, wifi_mac, name, port, location_id, station, first_seen,
updated_at, finished_at (the row `stationd export` writes), and key (the idempotency key).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from stationd.config import convert
from stationd.export import FIELDS
from stationd.plugins import PluginContext, Settings
from stationd.reporting import DeliveryContext, Reporter, ReporterPlugin, Result
from stationd.reporting.web import (
    SecretError,
    fill,
    fill_body,
    fill_secrets,
    judge,
    names_secret,
    placeholders,
    reveal,
    secret_header,
    send,
)
from stationd.store import Delivery

SETTINGS = ("url", "method", "headers", "body", "timeout", "backoff", "patience")
METHODS = ("POST", "PUT", "PATCH")
TEMPLATE_FIELDS = (*FIELDS, "key")


def make(settings: dict[str, Any], context: PluginContext) -> ReporterPlugin:
    read = Settings(context.name, settings, SETTINGS)
    url = read.text("url", example='url = "https://inventory.example.org/ipads/{serial}"')
    check_fields(read, "url", url)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise read.error("url", 'must start with https:// (or http://), like "https://inventory.example.org/ipads"')
    headers = read.table_of("headers", example='headers = { Authorization = "Bearer {env:INVENTORY_TOKEN}" }')
    for name, value in headers.items():
        if not isinstance(value, str):
            raise read.error(f"headers.{name}", "must be text between double quotes")
        check_secret(read, f"headers.{name}", value, secret=secret_header(name))
        check_fields(read, f"headers.{name}", value)
    body = read.table_of("body", example='body = { serial = "{serial}", name = "{name}" }')
    check_body(read, "body", body)
    return ReporterPlugin(
        HttpReporter(
            url,
            method=read.choice("method", "POST", METHODS),
            headers=headers,
            body=body or None,
            timeout=read.read("timeout", 10.0, convert.number(0.1, 300.0)),
            backoff=read.read("backoff", 30.0, convert.number(0.0, 3600.0)),
            patience=read.read("patience", 3.0, convert.number(0.0, 365.0)) * 86400,
        )
    )


def check_fields(read: Settings, key: str, template: str) -> None:
    try:
        used = placeholders(template)
    except ValueError as error:
        raise read.error(key, f"cannot read the template ({error}); write fields like {{serial}}") from None
    for name in used:
        if name not in TEMPLATE_FIELDS:
            raise read.error(key, f"unknown field {{{name}}}; the fields are " + ", ".join(TEMPLATE_FIELDS))


def check_secret(read: Settings, key: str, value: str, *, secret: bool) -> None:
    """A secret header takes its value from {env:NAME} or {file:/path}, which must be readable now."""
    if secret and not names_secret(value):
        raise read.error(
            key,
            "holds a secret: keep it out of the configuration and write where it is instead, "
            '"Bearer {env:TOKEN_VARIABLE}" or "{file:/etc/stationd/token}" (a file only its owner may read)',
        )
    try:
        reveal(value)
    except SecretError as error:
        raise read.error(key, str(error)) from None


def check_body(read: Settings, key: str, value: Any) -> None:
    if isinstance(value, str):
        check_fields(read, key, value)
    elif isinstance(value, dict):
        for name, item in value.items():
            check_body(read, f"{key}.{name}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_body(read, f"{key}[{index}]", item)


class HttpReporter(Reporter):
    def __init__(
        self,
        url: str,
        *,
        method: str,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        timeout: float,
        backoff: float,
        patience: float,
    ) -> None:
        self.url, self.method, self.headers, self.body = url, method, headers, body
        self.timeout = timeout
        self.backoff, self.patience = backoff, patience
        self.lease = max(60.0, (timeout + 1) * self.batch * 2)
        self.host = urlsplit(url).hostname or "the endpoint"
        self._http: httpx.AsyncClient | None = None

    async def deliver(self, deliveries: list[Delivery], context: DeliveryContext) -> dict[str, Result]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        results = {}
        for delivery in deliveries:
            results[delivery.key] = await self.one(self._http, delivery)
        return results

    async def one(self, http: httpx.AsyncClient, delivery: Delivery) -> Result:
        fields = {**delivery.payload, "key": delivery.key}
        try:
            headers = {name: fill_secrets(value, fields) for name, value in self.headers.items()}
        except SecretError as error:
            return Result.retry(f"cannot send to {self.host}: {error}")
        headers.update({"Content-Type": "application/json", "Accept": "application/json"})
        headers["Idempotency-Key"] = delivery.key
        body = fill_body(self.body, fields) if self.body is not None else delivery.payload
        url = fill(self.url, fields, for_url=True)
        answer = await send(http, self.method, url, what=self.host, content=json.dumps(body).encode(), headers=headers)
        if isinstance(answer, Result):
            return answer
        verdict = judge(answer, self.host, auth_hint="check the token in [plugins.http] headers")
        return verdict or Result.done(f"{self.host} answered {answer.status_code}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
