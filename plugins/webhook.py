"""Post chosen events to a URL: any JSON endpoint, a Slack incoming webhook or a Microsoft Teams connector.

Settings, under [plugins.webhook]:
    url      where to post (required; http:// or https://)
    events   which event kinds to send (default ["device.done", "step.failed", "batch.done"])
    format   "json" (the event as a JSON object), "slack" ({"text": ...}) or "teams" (a MessageCard)
    timeout  seconds per request (default 10)
    retries  how many times a failed request is tried again (default 3), waiting backoff, 2×backoff, ...
    backoff  seconds before the first retry (default 1)
    headers  extra request headers, e.g. {Authorization = "Bearer ..."}; never logged
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from stationd.events import Event
from stationd.hooks import hookimpl
from stationd.plugins import PluginContext, Settings

DEFAULT_EVENTS = ("device.done", "step.failed", "batch.done")
FORMATS = ("json", "slack", "teams")
SETTINGS = ("url", "events", "format", "timeout", "retries", "backoff", "headers")


def make(settings: dict[str, Any], context: PluginContext) -> Webhook:
    read = Settings(context.name, settings, SETTINGS)
    url = read.text("url", example='url = "https://hooks.slack.com/services/..."')
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise read.error(
            "url", 'must start with https:// (or http://), for example: url = "https://hooks.slack.com/services/..."'
        )
    headers = read.table_of("headers", example='headers = { Authorization = "Bearer ..." }')
    for key, value in headers.items():
        if not isinstance(value, str):
            raise read.error(f"headers.{key}", "must be text between double quotes")
    return Webhook(
        url,
        events=read.texts("events", DEFAULT_EVENTS, example='["device.done", "step.failed"]'),
        fmt=read.choice("format", "json", FORMATS),
        timeout=read.number("timeout", 10.0, minimum=0.1),
        retries=read.integer("retries", 3),
        backoff=read.number("backoff", 1.0),
        headers=headers,
        context=context,
    )


def message(event: Event) -> str:
    """One line a person reads in a chat channel."""
    where = " · ".join(part for part in (event.port_label, event.station_id) if part)
    device = f"iPad {event.serial or event.udid or '?'}" + (f" ({where})" if where else "")
    if event.kind == "device.done":
        name = event.data.get("name")
        return f"✅ {device} done" + (f": {name}" if name else "")
    if event.kind == "step.failed":
        error = event.data.get("error_message") or event.data.get("error_code") or "unknown error"
        return f"⚠️ {device} failed at {event.step or '?'}: {error}"
    if event.kind == "batch.done":
        done, failed = event.data.get("done", 0), event.data.get("failed", 0)
        return f"🏁 Batch finished at {event.station_id}: {done} done, {failed} failed"
    return f"{event.kind}: {device}" + (f" at {event.step}" if event.step else "")


def body(event: Event, fmt: str) -> dict[str, Any]:
    """The JSON body for one event in the chosen format."""
    if fmt == "slack":
        return {"text": message(event)}
    if fmt == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "text": message(event)}
    return event.as_dict()


class Webhook:
    def __init__(
        self,
        url: str,
        *,
        events: tuple[str, ...],
        fmt: str,
        timeout: float,
        retries: int,
        backoff: float,
        headers: dict[str, str],
        context: PluginContext,
    ) -> None:
        self.url = url
        self.events = frozenset(events)
        self.fmt = fmt
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = headers
        self.log = context.log
        self.host = urlsplit(url).hostname
        self.client: httpx.AsyncClient | None = None
        self.hook_timeout = context.timeout + (timeout + 1) * (retries + 1) + backoff * (2**retries - 1)

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        if event.kind in self.events:
            await self.send(body(event, self.fmt), kind=event.kind)

    @hookimpl
    async def stationd_shutdown(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def send(self, payload: dict[str, Any], *, kind: str) -> bool:
        """Post with retries on network errors, 429 and 5xx; True once the endpoint accepted it."""
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
        outcome = ""
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                await anyio.sleep(self.backoff * 2 ** (attempt - 2))
            try:
                response = await self.client.post(self.url, json=payload)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
                self.log.warning("webhook.retry", host=self.host, kind=kind, attempt=attempt, error=outcome)
                continue
            if response.is_success:
                self.log.debug("webhook.sent", host=self.host, kind=kind, attempt=attempt)
                return True
            outcome = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break
            self.log.warning("webhook.retry", host=self.host, kind=kind, attempt=attempt, error=outcome)
        self.log.error(
            "webhook.failed",
            host=self.host,
            kind=kind,
            error=outcome,
            hint="check plugins.webhook.url and headers; the endpoint refused or could not be reached",
        )
        return False
