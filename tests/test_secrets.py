"""Planted secrets reach no output channel, after a run that fails and a run that succeeds.

The enrollment URL carries a user, a password and an invitation token; the Wi-Fi password, the API token and a
webhook header are planted too. A virtual iPad fails its enrollment against a broken MDM (a 503, then a sign-in page),
then succeeds against a working one. Every channel is then searched for every secret: the HTTP API and the dashboard
page, the event stream, the logs (both formats), `stationd status`, `devices` and `export`, the database and its WAL
bytes, the webhook bodies, and whatever reached stdout or stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from browser import CHROMIUM, CHROMIUM_ARGS
from rig import Rig, make_rig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from stationd import logs
from stationd.api import create_app
from stationd.assemble import assemble
from stationd.cli import app as cli
from stationd.config import ApiConfig, Config, EnrollmentConfig, PluginsConfig, WifiConfig
from stationd.emulator import generated_spec
from stationd.httpserve import HTTPServer
from stationd.station import Station

URL_USER = "pl4nted-user"
URL_PASSWORD = "Pl4ntedUrlPassword"
INVITATION = "Pl4ntedInvitationToken"
WIFI_PASSWORD = "Pl4ntedWifiPassword"
API_TOKEN = "Pl4ntedApiToken-0123456789"
WEBHOOK_SECRET = "Pl4ntedWebhookHeader"
SECRETS = (URL_USER, URL_PASSWORD, INVITATION, WIFI_PASSWORD, API_TOKEN, WEBHOOK_SECRET)
HOOK_EVENTS = ["step.retrying", "step.failed", "step.finished", "job.retried", "device.done", "batch.done"]


def with_secrets(base_url: str) -> str:
    scheme, _, rest = base_url.partition("://")
    return f"{scheme}://{URL_USER}:{URL_PASSWORD}@{rest}/enroll?invitation={INVITATION}&school=lincoln"


def broken_mdm() -> Starlette:
    """An MDM that is down once (503), then answers a sign-in page instead of the profile."""
    seen: list[str] = []

    async def enroll(request: Request) -> Response:
        seen.append(request.headers.get("authorization", ""))
        if len(seen) == 1:
            return Response("Service Unavailable", status_code=503)
        return Response("<html><body>Please sign in</body></html>", media_type="text/html")

    app = Starlette(routes=[Route("/enroll", enroll)])
    app.state.seen = seen
    return app


def webhook_receiver() -> Starlette:
    bodies: list[bytes] = []

    async def hook(request: Request) -> Response:
        bodies.append(await request.body())
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    app.state.bodies = bodies
    return app


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    server = HTTPServer(app)
    url = await server.start()
    try:
        yield url
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop()


Look = Callable[[str, str], Awaitable[dict[str, str]]]


@contextlib.asynccontextmanager
async def station_with_plugins(rig: Rig, config: Config) -> AsyncIterator[Station]:
    """A station with its plugin host, as `stationd run` assembles them; leaving drains the plugins."""
    async with assemble(
        config, rig.identity, usbmux_address=rig.emulator.usbmux_address, backoff=(0.01, 0.05)
    ) as assembly:
        yield assembly.station


async def until_final(station: Station, udid: str, plug: Any) -> str:
    with station.bus.subscribe() as events:
        plug()
        with anyio.fail_after(60):
            async for event in events:
                if event.udid == udid and event.kind in ("device.done", "step.failed"):
                    return event.kind
    raise AssertionError("the bus ended")


async def read_api(url: str, udid: str) -> dict[str, str]:
    """Every read endpoint, the dashboard's files, and the event stream replayed from the start."""
    paths = [
        "/",
        "/static/dashboard.js",
        "/api/station",
        "/api/ports",
        "/api/devices",
        f"/api/devices/{udid}",
        "/api/events?limit=1000",
        "/api/export",
        "/api/export?format=json",
        f"/api/events?udid={udid}",
    ]
    found = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for path in paths:
            response = await client.get(path)
            assert response.status_code == 200, path
            found[f"GET {path}"] = response.text
        lines = []
        async with client.stream("GET", "/api/stream", headers={"Last-Event-ID": "0"}) as response:
            with anyio.fail_after(20):
                async for line in response.aiter_lines():
                    if line == ": heartbeat":
                        break
                    lines.append(line)
        found["SSE /api/stream"] = "\n".join(lines)
    return found


def cli_outputs(tmp: Path, rig: Rig, enrollment_url: str) -> dict[str, str]:
    """`stationd status`, `devices` and `export` on the station's database, through a configuration file that holds
    the secrets (the only place the enrollment URL may be)."""
    config = tmp / "stationd.toml"
    config.write_text(
        f'[station]\nid = "rig"\ndatabase = "{rig.config.station.database}"\n'
        f'[organization]\nname = "Rig School"\nidentity = "{rig.identity.path}"\n'
        f'[wifi]\nssid = "RigNet"\npassword = "{WIFI_PASSWORD}"\n'
        f'[enrollment]\nmode = "url"\nurl = "{enrollment_url}"\n'
        f'[api]\ntoken = "{API_TOKEN}"\n'
    )
    config.chmod(0o600)
    runner = CliRunner()
    outputs = {}
    export = tmp / "export.csv"
    for args in (
        ["status"],
        ["status", "--json"],
        ["devices"],
        ["devices", "--json"],
        ["export"],
        ["export", "--format", "json"],
        ["export", "-o", str(export)],
        ["check-config"],
    ):
        result = runner.invoke(cli, [*args, "--config", str(config)], env={"COLUMNS": "400"})
        assert result.exit_code == 0, (args, result.output)
        outputs["stationd " + " ".join(args[:2])] = result.output
    outputs["export file"] = export.read_text()
    return outputs


def database_bytes(database: Path) -> dict[str, bytes]:
    return {f"file {path.name}": path.read_bytes() for path in sorted(database.parent.glob(database.name + "*"))}


async def planted(tmp: Path, log_format: str, webhook_format: str, look: Look = read_api) -> dict[str, str | bytes]:
    """Run the failing then the succeeding station; `look` reads the served API at the end of each run."""
    spec = generated_spec(0)
    log_lines = io.StringIO()
    logs.configure(log_format, stream=log_lines)
    hook_app, bad_app = webhook_receiver(), broken_mdm()
    channels: dict[str, str | bytes] = {}
    async with make_rig(tmp, [spec]) as rig, served(hook_app) as hook_url, served(bad_app) as bad_url:
        webhook = {
            "url": f"{hook_url}/hook",
            "format": webhook_format,
            "events": HOOK_EVENTS,
            "backoff": 0,
            "headers": {"Authorization": f"Bearer {WEBHOOK_SECRET}"},
        }
        failing = dataclasses.replace(
            rig.config,
            wifi=WifiConfig(ssid="RigNet", security="WPA2", password=WIFI_PASSWORD),
            enrollment=EnrollmentConfig(mode="url", url=with_secrets(bad_url)),
            api=ApiConfig(listen=None, token=API_TOKEN),
            plugins=PluginsConfig(enabled=("webhook",), settings={"webhook": webhook}),
        )
        working = EnrollmentConfig(mode="url", url=with_secrets(rig.mdm_url))
        succeeding = dataclasses.replace(failing, enrollment=working)
        rig.emulator.unplug(spec.udid)
        for run, config, final in (("failing", failing, "step.failed"), ("succeeding", succeeding, "device.done")):
            async with station_with_plugins(rig, config) as station, served(create_app(station, heartbeat=0.2)) as url:
                assert await until_final(station, spec.udid, lambda: rig.emulator.plug(spec.udid)) == final
                found = {**await look(url, spec.udid), **database_bytes(tmp / "stationd.db")}
                channels.update({f"{run}: {name}": content for name, content in found.items()})
            rig.emulator.unplug(spec.udid)
        assert len(bad_app.state.seen) == 2 and all(auth.startswith("Basic ") for auth in bad_app.state.seen)
        channels.update(database_bytes(tmp / "stationd.db"))
        channels.update(await anyio.to_thread.run_sync(cli_outputs, tmp, rig, succeeding.enrollment.url or ""))
        channels[f"webhook bodies ({webhook_format})"] = b"\n".join(hook_app.state.bodies)
    channels[f"log ({log_format})"] = log_lines.getvalue()
    assert len(hook_app.state.bodies) >= 4
    return channels


def assert_no_secret(channels: dict[str, str | bytes]) -> None:
    leaks = []
    for name, content in channels.items():
        for secret in SECRETS:
            if (secret.encode() if isinstance(content, bytes) else secret) in content:
                leaks.append(f"{secret} in {name}")
    assert leaks == []


@pytest.mark.anyio
@pytest.mark.parametrize(("log_format", "webhook_format"), [("json", "json"), ("console", "slack")])
async def test_planted_secrets_reach_no_channel_after_a_failing_and_a_succeeding_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], log_format: str, webhook_format: str
) -> None:
    channels = await planted(tmp_path, log_format, webhook_format)
    out, err = capfd.readouterr()
    channels.update({"stdout": out, "stderr": err})
    assert_no_secret(channels)

    # The channels did carry the story, with the URL in its redacted form (host and path kept).
    failed_port = json.loads(str(channels["failing: GET /api/ports"]))["ports"][0]
    assert failed_port["status"] == "failed" and failed_port["error_code"] == "enrollment_invalid"
    assert "did not return an enrollment profile (got text/html" in failed_port["error_message"]
    trail = str(channels["succeeding: SSE /api/stream"])
    assert "The enrollment URL http://***@127.0.0.1:" in trail and "/enroll?invitation=***&school=***" in trail
    assert "answered 503" in trail and "step.failed" in trail and "device.done" in trail
    assert json.loads(str(channels["succeeding: GET /api/devices"]))["devices"][0]["state"] == "done"
    log = str(channels[f"log ({log_format})"])
    assert "step.failed" in log and "device.done" in log
    assert b"***@127.0.0.1" in bytes(channels[f"webhook bodies ({webhook_format})"])
    assert any(name.endswith("stationd.db-wal") for name in channels)


async def render_dashboard(url: str, udid: str, async_playwright: Any) -> dict[str, str]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(url + "/")
            await page.wait_for_function("() => document.querySelectorAll('.tile.s-done, .tile.s-failed').length")
            return {"dashboard": await page.content() + await page.locator("body").inner_text()}
        finally:
            await browser.close()


@pytest.mark.anyio
async def test_the_dashboard_a_browser_renders_holds_no_planted_secret(tmp_path: Path, async_playwright: Any) -> None:
    channels = await planted(tmp_path, "json", "json", lambda url, udid: render_dashboard(url, udid, async_playwright))
    assert_no_secret(channels)
    assert "text/html" in str(channels["failing: dashboard"]) and "Done" in str(channels["succeeding: dashboard"])
