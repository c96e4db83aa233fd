"""Acceptance: a real headless Chromium watches nine virtual iPads go through the station on the live dashboard."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import dashboard
from rig import make_rig

from stationd.config import PortsConfig
from stationd.emulator import generated_spec
from stationd.emulator.ipad import location_for

# Record every status a tile shows, so the test knows the page saw progress live and not only the end.
WATCH_TILES = """
window.seenStatuses = new Set();
new MutationObserver(() => {
  document.querySelectorAll('.tile').forEach(t => window.seenStatuses.add(t.className));
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
"""
SETTLED = """() =>
  document.querySelectorAll('.tile.s-done').length === 8 &&
  document.querySelectorAll('.tile.s-failed').length === 1
"""
LIVE_WAIT_MS = 25_000  # below the page's 30 s fallback poll: the tiles must follow the event stream


@pytest.mark.anyio
async def test_dashboard_follows_a_cart_to_eight_done_and_one_activation_lock(tmp_path: Path, async_playwright) -> None:
    specs = [generated_spec(i) for i in range(8)]
    specs.append(generated_spec(8, activated=False, activation_locked=True))
    labels = {location_for(i): f"Cart A · {i + 1}" for i in range(10)}
    async with make_rig(tmp_path, specs, speed=0.002) as rig:
        for spec in specs:
            rig.emulator.unplug(spec.udid)
        async with rig.station(ports=PortsConfig(labels=labels)) as station:
            steps = len(station.plan)
            async with dashboard(station, async_playwright, viewport={"width": 1280, "height": 860}) as (page, url):
                problems: list[str] = []
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                await page.add_init_script(WATCH_TILES)
                await page.goto(url + "/")
                await page.locator(".connection.live").wait_for(timeout=10_000)
                await page.wait_for_function("() => document.querySelectorAll('.tile.s-empty').length === 10")

                for spec in specs:
                    rig.emulator.plug(spec.udid)
                await page.wait_for_function(SETTLED, timeout=LIVE_WAIT_MS)

                shot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(shot), full_page=True, animations="disabled")
                seen = await page.evaluate("[...window.seenStatuses].join(' ')")
                header = await page.locator(".top").inner_text()
                failed = await page.locator(".tile.s-failed").inner_text()
                done = await page.locator(".tile.s-done").all_inner_texts()
                empty = await page.locator(".tile.s-empty").all_inner_texts()
                banner = await page.locator("#banner").inner_text()
                page_title = await page.title()

    assert problems == []
    assert "s-busy" in seen or "s-waiting" in seen
    assert "rig" in header and "Rig School" in header
    header = " ".join(header.split())
    assert "8 done" in header and "0 busy" in header and "1 need a hand" in header
    assert "Activation Lock" in failed and "Cart A · 9" in failed and specs[8].serial in failed
    assert "Find My" in failed
    assert len(done) == 8
    for spec, text in zip(specs[:8], done, strict=True):
        assert spec.serial in text and "DONE" in text.upper() and f"{steps}/{steps}" in text
    assert len(empty) == 1 and "Cart A · 10" in empty[0]
    assert "8 done, 1 needs a hand" in banner
    assert page_title.startswith("8 done")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
