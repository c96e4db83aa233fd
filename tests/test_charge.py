"""Acceptance: the charge gate. An iPad below `steps.min_battery` is held before its erase, charges in the emulator
and then goes through; one on a port that gives no power waits until it gets some. The port shows the level all
along, in the API and on the dashboard (a real headless Chromium)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from browser import dashboard
from rig import make_rig

from stationd.config import PortsConfig, StepsConfig
from stationd.emulator import generated_spec
from stationd.emulator.battery import BatterySpec
from stationd.emulator.ipad import location_for

# Every text a held tile shows, so the test knows the page showed the level while the iPad was held.
WATCH_HELD = """
window.heldTexts = new Set();
new MutationObserver(() => {
  document.querySelectorAll('.tile.s-held').forEach(t => window.heldTexts.add(t.innerText));
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""
UNPOWERED_HELD = """() => [...document.querySelectorAll('.tile.s-held')].some(t =>
  t.innerText.includes('Cart A · 2') && t.innerText.includes('not charging'))"""
BOTH_DONE = "() => document.querySelectorAll('.tile.s-done').length === 2"
MIN_BATTERY = 30


async def ports(url: str) -> dict[str, dict]:
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/api/ports")
    return {port["label"]: port for port in response.json()["ports"]}


@pytest.mark.anyio
async def test_an_ipad_below_min_battery_is_held_charges_and_then_goes_through(
    tmp_path: Path, async_playwright
) -> None:
    low = generated_spec(0, battery=BatterySpec(level=10, rate=0.2))  # 10 to 30 % in about 3 s at this speed
    unpowered = generated_spec(1, battery=BatterySpec(level=20, charging=False, drain=0))
    labels = {location_for(i): f"Cart A · {i + 1}" for i in range(2)}
    steps = StepsConfig(min_battery=MIN_BATTERY, charge_recheck=0.2)
    async with make_rig(tmp_path, [low, unpowered], speed=0.0005) as rig:
        for spec in (low, unpowered):
            rig.emulator.unplug(spec.udid)
        async with rig.station(steps=steps, ports=PortsConfig(labels=labels)) as station:
            assert station.plan[:3] == ["identify", "charge", "erase"]
            async with dashboard(station, async_playwright) as (page, url):
                await page.add_init_script(WATCH_HELD)
                await page.goto(url + "/")
                await page.locator(".connection.live").wait_for(timeout=10_000)
                for spec in (low, unpowered):
                    rig.emulator.plug(spec.udid)
                await page.wait_for_function(UNPOWERED_HELD, timeout=20_000)
                held = (await ports(url))["Cart A · 2"]
                counts = await page.locator(".top").inner_text()
                rig.emulator.devices[unpowered.udid].contents.battery.set(rig.emulator.clock(), charging=True)
                await page.wait_for_function(BOTH_DONE, timeout=20_000)
                finished = await ports(url)
                held_texts = await page.evaluate("[...window.heldTexts]")
                done_texts = await page.locator(".tile.s-done").all_inner_texts()
            trail = await station.store.list_events(after_id=0, limit=10_000)
        levels = {spec.udid: rig.device(spec.udid)["battery"]["percent"] for spec in (low, unpowered)}

    assert held["status"] == "held" and held["error_code"] == "charging"
    message = held["error_message"]
    assert message.startswith("Not charging (20 %)") and "Move it to a port that charges" in message
    assert held["battery"] == {"level": 20, "charging": False}
    assert "0 busy" not in " ".join(counts.split()), "a held iPad is not counted as finished"
    shown = " ".join(held_texts)
    assert "Charging (1" in shown and "Battery 1" in shown and "· charging" in shown, held_texts
    assert "Not charging (20 %)" in shown and "Battery 20 % · not charging" in shown

    for label in ("Cart A · 1", "Cart A · 2"):
        assert finished[label]["status"] == "done"
        assert finished[label]["battery"]["level"] >= MIN_BATTERY and finished[label]["battery"]["charging"] is True
    assert all("Battery " in text and "· charging" in text for text in done_texts)
    assert all(level >= MIN_BATTERY for level in levels.values())

    for spec in (low, unpowered):
        mine = [e for e in trail if e.udid == spec.udid]
        holds = [e for e in mine if e.kind == "step.held"]
        assert len(holds) >= 2 and all(e.step == "charge" and e.data["error_code"] == "charging" for e in holds)
        assert [e.step for e in mine if e.kind == "step.started"].count("charge") == 1, "a look again is no restart"
        statuses = [e.data["status"] for e in mine if e.kind == "port.changed"]
        assert statuses[:3] == ["busy", "held", "busy"] and statuses.count("held") == 1, "no flicker while held"
        assert statuses[-1] == "done"
        erase = next(e.id for e in mine if e.kind == "step.started" and e.step == "erase")
        assert erase > max(e.id for e in holds), "held before any erase"
    batches = [e.id for e in trail if e.kind == "batch.done"]
    assert batches and min(batches) > max(e.id for e in trail if e.kind == "step.held"), "no cart done while held"


def test_min_battery_is_a_percentage_and_the_recheck_bounded(tmp_path: Path) -> None:
    from stationd.config import ConfigError, load_config
    from stationd.pipeline.plan import plan

    path = tmp_path / "stationd.toml"
    path.write_text('[organization]\nname = "School"\n\n[steps]\nmin_battery = 150\ncharge_recheck = 0.1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "line 5, steps.min_battery" in text and "battery percentage from 0 to 100" in text
    assert "line 6, steps.charge_recheck" in text
    path.write_text('[organization]\nname = "School"\n\n[steps]\nmin_battery = 40\n')
    config = load_config(path)
    assert config.steps.min_battery == 40 and config.steps.charge_recheck == 60
    assert plan(config)[:3] == ["identify", "charge", "erase"]
    path.write_text('[organization]\nname = "School"\n')
    assert "charge" not in plan(load_config(path)), "off by default"
