"""Per-reporter status where people look: the device's API record, the port (and its tile in a real Chromium), and
the export; a refused report shows the endpoint's reason in plain words, and never holds the port."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import httpx
import pytest
from browser import CHROMIUM, CHROMIUM_ARGS
from fake_mdms import IdempotentEndpoint, serving
from rig import make_rig

from stationd.api import create_app
from stationd.assemble import assemble
from stationd.config import PluginsConfig
from stationd.emulator import generated_spec
from stationd.events import EventBus
from stationd.export import device_rows, to_csv
from stationd.httpserve import HTTPServer

TOKEN = "view-token-88d2"


@pytest.mark.anyio
async def test_each_reporters_status_shows_in_the_api_the_tile_and_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, async_playwright
) -> None:
    monkeypatch.setenv("STATIOND_TEST_TOKEN", TOKEN)
    specs = [generated_spec(i, seed="view") for i in range(2)]
    taken, refused = specs
    endpoint = IdempotentEndpoint(TOKEN)
    endpoint.refuse[refused.serial] = (422, "unknown asset tag for this school")
    async with serving(endpoint.app(), endpoint.faults) as url, make_rig(tmp_path, specs) as rig:
        settings = {
            "url": f"{url}/ipads/{{serial}}",
            "headers": {"Authorization": "Bearer {env:STATIOND_TEST_TOKEN}"},
        }
        config = dataclasses.replace(rig.config, plugins=PluginsConfig(enabled=("http",), settings={"http": settings}))
        bus = EventBus()
        settled: dict[str, str] = {}
        with bus.subscribe() as events:
            async with assemble(
                config, rig.identity, usbmux_address=rig.emulator.usbmux_address, backoff=(0.01, 0.05), bus=bus
            ) as assembly:
                station = assembly.station
                with anyio.fail_after(60):
                    async for event in events:
                        if event.kind in ("report.done", "report.failed"):
                            settled[event.udid or ""] = event.kind
                        if len(settled) == 2:
                            break
                app = create_app(station)
                server = HTTPServer(app)
                api = await server.start()
                try:
                    async with httpx.AsyncClient(base_url=api) as client:
                        good = (await client.get(f"/api/devices/{taken.udid}")).json()
                        bad = (await client.get(f"/api/devices/{refused.udid}")).json()
                        ports = (await client.get("/api/ports")).json()["ports"]
                    async with async_playwright() as playwright:
                        browser = await playwright.chromium.launch(
                            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
                        )
                        try:
                            page = await browser.new_page()
                            await page.goto(api + "/")
                            await page.wait_for_function("() => document.querySelectorAll('.tile.s-done').length === 2")
                            tiles = await page.locator(".tile.s-done").all_inner_texts()
                        finally:
                            await browser.close()
                finally:
                    app.state.api.closing.set()
                    await server.stop()
                rows = await device_rows(station.store)
    assert settled == {taken.udid: "report.done", refused.udid: "report.failed"}
    assert good["state"] == "done" and good["reports"]["http"]["status"] == "done"
    assert bad["state"] == "done", "a refused report never holds the iPad or its port"
    assert bad["reports"]["http"]["status"] == "failed"
    assert "unknown asset tag for this school" in bad["reports"]["http"]["message"]
    assert {p["status"] for p in ports if p["device"]} == {"done"}
    assert sorted(p["reports"]["http"]["status"] for p in ports if p["device"]) == ["done", "failed"]
    text = " ".join(tiles)
    assert "Reported: http ✓" in text and "Reported: http failed: " in text and "unknown asset tag" in text
    csv = to_csv(rows)
    assert "http: done" in csv
    assert "http: failed (127.0.0.1 refused the request (HTTP 422: unknown asset tag for this school))" in csv
    assert TOKEN not in csv
