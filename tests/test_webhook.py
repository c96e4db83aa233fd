"""The webhook plugin against a loopback HTTP server: retries, body formats, secrets kept out of the logs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stationd_plugins.webhook import message

from stationd.config import PluginsConfig
from stationd.events import Event, EventBus
from stationd.httpserve import HTTPServer
from stationd.plugins import PluginHost

SECRET_HEADER = "Bearer header-secret-7f3a"
SECRET_PATH = "T000/B000/path-secret-91c2"

DONE = Event(
    id=1,
    ts=1000.0,
    station_id="cart-1",
    kind="device.done",
    udid="u1",
    serial="F9FXK2LQ",
    step="report",
    port_label="Hub A · 3",
    data={"name": "Lincoln-F9FXK2LQ"},
)
FAILED = Event(
    id=2,
    ts=1001.0,
    station_id="cart-1",
    kind="step.failed",
    udid="u2",
    serial="F9FZZ9",
    step="activate",
    port_label="Hub A · 4",
    data={"error_code": "activation_refused", "error_message": "Apple refused"},
)
STOP = Event(id=3, ts=1002.0, station_id="cart-1", kind="station.stopping")


class Endpoint:
    """Answers `statuses` in turn (then 200) and keeps every request's headers and JSON body."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], Any]] = []

    async def handle(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.json()))
        n = len(self.requests)
        return Response(status_code=self.statuses[n - 1] if n <= len(self.statuses) else 200)


@contextlib.asynccontextmanager
async def serving(endpoint: Endpoint) -> AsyncIterator[str]:
    server = HTTPServer(Starlette(routes=[Route("/hook/{rest:path}", endpoint.handle, methods=["POST"])]))
    await server.start()
    try:
        yield f"{server.url}/hook/{SECRET_PATH}"
    finally:
        await server.stop()


async def deliver(url: str, events: list[Event], **settings: Any) -> PluginHost:
    host = PluginHost(PluginsConfig(enabled=("webhook",), settings={"webhook": {"url": url, **settings}}), "cart-1")
    bus = EventBus()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            await tasks.start(host.run, bus)
            for event in events:
                bus.publish(event)
            bus.publish(STOP)
    await host.shutdown()
    return host


@pytest.mark.anyio
async def test_retries_until_the_endpoint_accepts_and_keeps_secrets_out_of_the_logs() -> None:
    endpoint = Endpoint([500, 500])
    with structlog.testing.capture_logs() as logs:
        async with serving(endpoint) as url:
            host = await deliver(url, [DONE], backoff=0, headers={"Authorization": SECRET_HEADER})
    assert len(endpoint.requests) == 3
    assert all(headers["authorization"] == SECRET_HEADER for headers, _ in endpoint.requests)
    assert all(body == DONE.as_dict() for _, body in endpoint.requests)
    kinds = [entry["event"] for entry in logs if entry["event"].startswith("webhook.")]
    assert kinds == ["webhook.retry", "webhook.retry", "webhook.sent"]
    assert all(
        entry["error"] == "HTTP 500" and entry["host"] == "127.0.0.1"
        for entry in logs
        if entry["event"] == "webhook.retry"
    )
    logged = repr(logs)
    assert "header-secret" not in logged and "path-secret" not in logged
    assert host.failures == {}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", [DONE.as_dict(), FAILED.as_dict()]),
        (
            "slack",
            [
                {"text": "✅ iPad F9FXK2LQ (Hub A · 3 · cart-1) done: Lincoln-F9FXK2LQ"},
                {"text": "⚠️ iPad F9FZZ9 (Hub A · 4 · cart-1) failed at activate: Apple refused"},
            ],
        ),
        (
            "teams",
            [
                {"@type": "MessageCard", "@context": "https://schema.org/extensions", "text": message(DONE)},
                {"@type": "MessageCard", "@context": "https://schema.org/extensions", "text": message(FAILED)},
            ],
        ),
    ],
)
async def test_body_formats(fmt: str, expected: list[dict]) -> None:
    endpoint = Endpoint([])
    async with serving(endpoint) as url:
        await deliver(url, [DONE, FAILED, Event(id=9, ts=1.0, station_id="cart-1", kind="step.started")], format=fmt)
    assert [body for _, body in endpoint.requests] == expected


@pytest.mark.anyio
async def test_gives_up_at_once_on_a_client_error_and_after_the_retries_on_server_errors() -> None:
    refused, broken = Endpoint([404]), Endpoint([503] * 10)
    with structlog.testing.capture_logs() as logs:
        async with serving(refused) as url:
            await deliver(url, [DONE], backoff=0)
        async with serving(broken) as url:
            await deliver(url, [DONE], backoff=0, retries=2)
    assert len(refused.requests) == 1
    assert len(broken.requests) == 3
    failures = [entry for entry in logs if entry["event"] == "webhook.failed"]
    assert [entry["error"] for entry in failures] == ["HTTP 404", "HTTP 503"]


@pytest.mark.anyio
async def test_unreachable_endpoint_is_retried_then_logged() -> None:
    endpoint = Endpoint([])
    async with serving(endpoint) as url:
        pass
    with structlog.testing.capture_logs() as logs:
        host = await deliver(url, [DONE], backoff=0, retries=1, timeout=2)
    kinds = [entry["event"] for entry in logs if entry["event"].startswith("webhook.")]
    assert kinds == ["webhook.retry", "webhook.retry", "webhook.failed"]
    assert host.failures == {}
