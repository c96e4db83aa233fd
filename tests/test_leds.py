"""The leds plugin against a fake /sys/class/leds tree, and its dry-run driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from stationd.config import PluginsConfig
from stationd.events import Event, EventBus
from stationd.plugins import PluginConfigError, PluginHost

PORT = "Hub A · 1"
LEDS = {"red": "hubA:red:1", "green": "hubA:green:1"}


def fake_led(root: Path, name: str, *, max_brightness: int = 255, triggers: str = "[none] timer heartbeat") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for attribute, value in (
        ("brightness", "0"),
        ("max_brightness", str(max_brightness)),
        ("trigger", triggers),
        ("delay_on", "500"),
        ("delay_off", "500"),
    ):
        (folder / attribute).write_text(value)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "leds"
    fake_led(root, LEDS["red"], max_brightness=1)
    fake_led(root, LEDS["green"], max_brightness=255)
    return root


def state(root: Path, name: str) -> dict[str, str]:
    return {f.name: f.read_text() for f in (root / name).iterdir() if f.name != "max_brightness"}


def leds_host(settings: dict[str, Any]) -> PluginHost:
    return PluginHost(PluginsConfig(enabled=("leds",), settings={"leds": settings}), "cart-1")


def changed(status: str, label: str = PORT, id: int = 1) -> Event:
    return Event(
        id=id,
        ts=1.0,
        station_id="cart-1",
        kind="port.changed",
        port_label=label,
        data={"status": status, "previous": "empty"},
    )


OFF = {"trigger": "none", "brightness": "0"}
BLINK = {"trigger": "timer", "delay_on": "250", "delay_off": "250"}
SLOW = {"trigger": "timer", "delay_on": "1000", "delay_off": "1000"}


@pytest.mark.parametrize(
    ("status", "green", "red"),
    [
        ("empty", OFF, OFF),
        ("busy", BLINK, OFF),
        ("waiting", SLOW, OFF),
        ("done", {"trigger": "none", "brightness": "255"}, OFF),
        ("failed", OFF, {"trigger": "none", "brightness": "1"}),
    ],
)
def test_each_port_status_lights_its_pattern(sysfs: Path, status: str, green: dict, red: dict) -> None:
    leds = leds_host({"root": str(sysfs), "ports": {PORT: LEDS}}).pm.get_plugin("leds")
    leds.stationd_port_changed(changed("done"))
    leds.stationd_port_changed(changed(status))
    assert state(sysfs, LEDS["green"]).items() >= green.items()
    assert state(sysfs, LEDS["red"]).items() >= red.items()


@pytest.mark.anyio
async def test_leds_follow_port_changes_through_the_host(sysfs: Path) -> None:
    host = leds_host(
        {"root": str(sysfs), "ports": {PORT: LEDS}, "patterns": {"failed": {"red": "blink"}}, "blink_ms": 100}
    )
    bus = EventBus()
    await host.startup()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            await tasks.start(host.run, bus)
            bus.publish(changed("busy", id=1))
            bus.publish(changed("failed", id=2))
            bus.publish(changed("done", label="Hub Z · 9", id=3))
            bus.publish(Event(id=4, ts=1.0, station_id="cart-1", kind="station.stopping"))
    assert state(sysfs, LEDS["red"]).items() >= {"trigger": "timer", "delay_on": "100", "delay_off": "100"}.items()
    assert state(sysfs, LEDS["green"]).items() >= OFF.items()
    await host.shutdown()
    assert state(sysfs, LEDS["red"]).items() >= OFF.items()
    assert host.failures == {}


def test_missing_led_names_its_path(sysfs: Path) -> None:
    with pytest.raises(PluginConfigError) as caught:
        leds_host({"root": str(sysfs), "ports": {PORT: {**LEDS, "red": "hubA:red:9"}}})
    assert caught.value.key == 'plugins.leds.ports."Hub A · 1".red'
    assert str(sysfs / "hubA:red:9") in str(caught.value)


def test_blinking_needs_the_timer_trigger(tmp_path: Path) -> None:
    fake_led(tmp_path, "green", triggers="[none] heartbeat")
    with pytest.raises(PluginConfigError, match="modprobe ledtrig-timer"):
        leds_host({"root": str(tmp_path), "ports": {PORT: {"green": "green"}}})


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"ports": {}}, "plugins.leds.ports"),
        ({"ports": {PORT: LEDS}, "driver": "gpio"}, "plugins.leds.driver"),
        ({"ports": {PORT: LEDS}, "patterns": {"failed": {"red": "flash"}}}, "plugins.leds.patterns.failed.red"),
        ({"ports": {PORT: LEDS}, "patterns": {"broken": {"red": "on"}}}, "plugins.leds.patterns.broken"),
        ({"ports": {PORT: {"red": "../etc"}}}, 'plugins.leds.ports."Hub A · 1".red'),
    ],
)
def test_bad_led_settings_name_the_key(sysfs: Path, settings: dict, key: str) -> None:
    with pytest.raises(PluginConfigError) as caught:
        leds_host({"root": str(sysfs), **settings})
    assert caught.value.key == key


def test_dry_run_records_what_it_would_write(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    leds = leds_host({"driver": "dry-run", "root": str(root), "ports": {PORT: LEDS}}).pm.get_plugin("leds")
    leds.stationd_port_changed(changed("done"))
    assert leds.driver.writes == [
        (str(root / LEDS["red"] / "trigger"), "none"),
        (str(root / LEDS["red"] / "brightness"), "0"),
        (str(root / LEDS["green"] / "trigger"), "none"),
        (str(root / LEDS["green"] / "brightness"), "1"),
    ]
    assert not root.exists()
