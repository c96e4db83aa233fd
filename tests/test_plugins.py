"""The plugin host: entry points, isolation of failing, hanging and blocking plugins, settings errors, built-ins."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from rich.console import Console
from stationd_plugins import terminal

from stationd.config import PluginsConfig, PortsConfig
from stationd.events import Event, EventBus
from stationd.hooks import hookimpl
from stationd.plugins import PluginConfigError, PluginContext, PluginError, PluginHost

EXAMPLE = Path(__file__).parent / "plugin_example"


def event(id: int, kind: str = "step.started", **fields: Any) -> Event:
    return Event(id=id, ts=1000.0 + id, station_id="cart-1", kind=kind, **fields)


STOP = event(999, "station.stopping")


@contextlib.asynccontextmanager
async def hosting(host: PluginHost) -> AsyncIterator[EventBus]:
    """Run the host on a fresh bus; leaving the block publishes station.stopping and waits for every delivery."""
    bus = EventBus()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            await tasks.start(host.run, bus)
            yield bus
            bus.publish(STOP)


class Recorder:
    """Remembers event ids; `got_all` is set once it has `expect` of them."""

    def __init__(self, expect: int = 0) -> None:
        self.ids: list[int] = []
        self.expect = expect
        self.got_all = anyio.Event()

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        self.ids.append(event.id)
        if len(self.ids) == self.expect:
            self.got_all.set()


class Raising:
    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        raise RuntimeError("boom")


class Hanging:
    def __init__(self) -> None:
        self.ids: list[int] = []

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        self.ids.append(event.id)
        await anyio.sleep_forever()


class Stuck:
    """Holds its first event until released; its own long timeout keeps the host from cutting it."""

    hook_timeout = 60.0

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.release = anyio.Event()

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        self.ids.append(event.id)
        await self.release.wait()


class Blocking:
    """A plain function that blocks its thread until released."""

    def __init__(self, hook_timeout: float | None = None) -> None:
        self.ids: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.hook_timeout = hook_timeout

    @hookimpl
    def stationd_event(self, event: Event) -> None:
        self.ids.append(event.id)
        self.entered.set()
        self.release.wait(30)


def host_with(*plugins: tuple[str, object], timeout: float = 5.0, **config: Any) -> PluginHost:
    host = PluginHost(PluginsConfig(timeout=timeout, **config), "cart-1")
    for name, plugin in plugins:
        host.register(plugin, name)
    return host


@pytest.mark.anyio
async def test_entry_point_plugin_receives_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    host = PluginHost(PluginsConfig(enabled=("example",)), "cart-1")
    assert host.plugin_names() == ["example"]
    import stationd_example_plugin

    stationd_example_plugin.received.clear()
    sent = [event(1, "device.attached"), event(2, "step.started", step="erase"), event(3, "device.done")]
    async with hosting(host) as bus:
        for item in sent:
            bus.publish(item)
    assert stationd_example_plugin.received == [*sent, STOP]


@pytest.mark.anyio
async def test_failing_and_hanging_plugins_do_not_hold_back_the_others() -> None:
    good, hanging, stuck = Recorder(expect=3), Hanging(), Stuck()
    host = host_with(("raising", Raising()), ("hanging", hanging), ("stuck", stuck), ("good", good), timeout=0.2)
    with structlog.testing.capture_logs() as logs:
        async with hosting(host) as bus:
            for i in (1, 2, 3):
                bus.publish(event(i))
            await good.got_all.wait()
            assert stuck.ids == [1]
            stuck.release.set()
    assert good.ids == [1, 2, 3, 999]
    assert stuck.ids == [1, 2, 3, 999]
    assert hanging.ids == [1, 2, 3, 999]
    assert host.failures == {"raising": 4, "hanging": 4}
    failed = [entry for entry in logs if entry["event"] == "plugin.failed"]
    assert {entry["plugin"] for entry in failed} == {"raising", "hanging"}
    assert all(entry["hook"] == "stationd_event" for entry in failed)
    assert any(entry["error"] == "RuntimeError: boom" and "test_plugins.py" in entry["where"] for entry in failed)
    assert any("took longer than 0.2 s" in entry["error"] for entry in failed)


@pytest.mark.anyio
async def test_blocking_sync_plugin_does_not_freeze_the_loop() -> None:
    good, blocking = Recorder(expect=3), Blocking(hook_timeout=60)
    host = host_with(("blocking", blocking), ("good", good))
    async with hosting(host) as bus:
        for i in (1, 2, 3):
            bus.publish(event(i))
        await good.got_all.wait()
        await anyio.to_thread.run_sync(blocking.entered.wait)
        assert blocking.ids == [1]
        blocking.release.set()
    assert blocking.ids == [1, 2, 3, 999]
    assert host.failures == {}


@pytest.mark.anyio
async def test_sync_plugin_stuck_past_its_timeout_is_skipped_until_its_thread_returns() -> None:
    blocking = Blocking()
    host = host_with(("blocking", blocking), timeout=0.2)
    try:
        async with hosting(host) as bus:
            for i in (1, 2, 3):
                bus.publish(event(i))
    finally:
        blocking.release.set()
    assert blocking.ids == [1]
    assert host.failures == {"blocking": 4}


class Everything:
    """Implements every hook and records the calls in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def stationd_startup(self, station_id: str, config: dict) -> None:
        self.calls.append(("startup", (station_id, config)))

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        self.calls.append(("event", event.id))

    @hookimpl
    def stationd_device_done(self, event: Event) -> None:
        self.calls.append(("done", event.id))

    @hookimpl
    async def stationd_device_failed(self, event: Event) -> None:
        self.calls.append(("failed", event.data["error_code"]))

    @hookimpl
    def stationd_port_changed(self, event: Event) -> None:
        self.calls.append(("port", event.data["status"]))

    @hookimpl
    async def stationd_report(self, device: dict) -> None:
        self.calls.append(("report", device["serial"]))

    @hookimpl
    def stationd_shutdown(self, station_id: str) -> None:
        self.calls.append(("shutdown", station_id))


@pytest.mark.anyio
async def test_every_hook_in_order_with_its_own_settings() -> None:
    plugin = Everything()
    host = host_with(("everything", plugin), settings={"everything": {"colour": "green"}})
    await host.startup()
    async with hosting(host) as bus:
        bus.publish(event(1, "port.changed", port_label="Hub A · 1", data={"status": "busy", "previous": "empty"}))
        bus.publish(event(2, "step.failed", data={"error_code": "timeout", "error_message": "slow"}))
        bus.publish(event(3, "device.done"))
        bus.publish(event(4, "device.reported", data={"device": {"serial": "F9F123"}}))
    await host.shutdown()
    assert ("report", "F9F123") in plugin.calls
    assert [call for call in plugin.calls if call[0] != "report"] == [
        ("startup", ("cart-1", {"colour": "green"})),
        ("event", 1),
        ("port", "busy"),
        ("event", 2),
        ("failed", "timeout"),
        ("event", 3),
        ("done", 3),
        ("event", 4),
        ("event", 999),
        ("shutdown", "cart-1"),
    ]


@pytest.mark.anyio
async def test_startup_and_shutdown_are_guarded_too() -> None:
    class SlowStart:
        @hookimpl
        async def stationd_startup(self) -> None:
            await anyio.sleep_forever()

        @hookimpl
        def stationd_shutdown(self) -> None:
            raise OSError("gone")

    plugin = Everything()
    host = host_with(("slow", SlowStart()), ("everything", plugin), timeout=0.2)
    with anyio.fail_after(10):
        await host.startup()
        await host.shutdown()
    assert [call for call, _ in plugin.calls] == ["startup", "shutdown"]
    assert host.failures == {"slow": 2}


def test_unknown_plugin_is_a_clear_error() -> None:
    with pytest.raises(PluginConfigError) as caught:
        PluginHost(PluginsConfig(enabled=("wehbook",)), "cart-1")
    assert caught.value.key == "plugins.enabled"
    assert 'no plugin named "wehbook"' in str(caught.value)
    assert 'Did you mean "webhook"?' in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({}, "plugins.webhook.url", "is missing"),
        ({"url": "ftp://example.org/x"}, "plugins.webhook.url", "https://"),
        ({"url": "https://example.org", "format": "xml"}, "plugins.webhook.format", '"slack"'),
        ({"url": "https://example.org", "retries": -1}, "plugins.webhook.retries", "whole number"),
        ({"url": "https://example.org", "events": "device.done"}, "plugins.webhook.events", "list"),
        ({"url": "https://example.org", "headers": {"X-Token": 3}}, "plugins.webhook.headers.X-Token", "text"),
        ({"urll": "https://example.org"}, "plugins.webhook.urll", "did you mean url?"),
    ],
)
def test_bad_settings_name_the_key(settings: dict, key: str, words: str) -> None:
    with pytest.raises(PluginConfigError) as caught:
        PluginHost(PluginsConfig(enabled=("webhook",), settings={"webhook": settings}), "cart-1")
    assert caught.value.key == key
    assert str(caught.value).startswith(key + ": ")
    assert words in str(caught.value)


def test_misnamed_hooks_and_arguments_are_refused() -> None:
    class Typo:
        @hookimpl
        def stationd_evnt(self, event: Event) -> None: ...

    class WrongArgument:
        @hookimpl
        def stationd_event(self, evt: Event) -> None: ...

    host = host_with()
    with pytest.raises(PluginError, match='"typo"'):
        host.register(Typo(), "typo")
    with pytest.raises(PluginError, match="evt"):
        host.register(WrongArgument(), "wrong")
    assert host.plugin_names() == []


@pytest.mark.anyio
async def test_desktop_notifies_chosen_events_with_the_command(tmp_path: Path) -> None:
    out = tmp_path / "notes.jsonl"
    script = tmp_path / "notify.py"
    script.write_text(f"import json, sys\nopen({str(out)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    settings = {"desktop": {"command": [sys.executable, str(script)]}}
    host = PluginHost(PluginsConfig(enabled=("desktop",), settings=settings), "cart-1")
    async with hosting(host) as bus:
        bus.publish(event(1, "device.done", serial="F9F1", port_label="Hub A · 1"))
        bus.publish(
            event(
                2,
                "step.failed",
                serial="F9F2",
                port_label="Hub A · 2",
                step="activate",
                data={"error_code": "x", "error_message": "Apple said no"},
            )
        )
        bus.publish(event(3, "batch.done", data={"done": 9, "failed": 1}))
    notes = [json.loads(line) for line in out.read_text().splitlines()]
    assert notes == [
        ["stationd", "⚠️ iPad F9F2 (Hub A · 2 · cart-1) failed at activate: Apple said no"],
        ["stationd", "🏁 Batch finished at cart-1: 9 done, 1 failed"],
    ]
    assert host.failures == {}


@pytest.mark.anyio
async def test_desktop_without_its_tool_says_so_once_and_stops(tmp_path: Path) -> None:
    settings = {"desktop": {"command": [str(tmp_path / "no-such-notifier")]}}
    with structlog.testing.capture_logs() as logs:
        host = PluginHost(PluginsConfig(enabled=("desktop",), settings=settings), "cart-1")
        async with hosting(host) as bus:
            bus.publish(event(1, "batch.done"))
            bus.publish(event(2, "batch.done"))
    assert [entry["event"] for entry in logs if entry["event"].startswith("desktop.")] == ["desktop.disabled"]
    assert host.failures == {}


def board_events() -> list[Event]:
    one = {"udid": "u1", "serial": "F9F111", "port_label": "Hub A · 1"}
    two = {"udid": "u2", "serial": "F9F222", "port_label": "Hub A · 2"}
    three = {"udid": "u3", "serial": "F9F333", "port_label": "Hub B · 1"}
    return [
        event(1, "station.started", data={"plan": ["erase", "activate", "name"]}),
        event(2, "port.changed", **one, data={"status": "busy", "previous": "empty"}),
        event(3, "step.started", **one, step="erase"),
        event(4, "step.finished", **one, step="erase"),
        event(5, "step.started", **one, step="activate"),
        event(6, "step.started", **two, step="erase"),
        event(
            7,
            "step.failed",
            **two,
            step="erase",
            data={"error_code": "erase_timeout", "error_message": "The iPad did not come back"},
        ),
        event(8, "port.changed", **two, data={"status": "failed", "previous": "busy"}),
        event(9, "device.done", **three, data={"name": "Lincoln-F9F333"}),
        event(10, "port.changed", **three, data={"status": "done", "previous": "busy"}),
        event(11, "device.identified", **one, data={"battery": {"level": 12, "charging": True}}),
        event(12, "device.identified", **two, data={"battery": {"level": 40, "charging": False}}),
    ]


def test_terminal_board_shows_ports_serials_progress_and_errors() -> None:
    ports = PortsConfig(labels={0x01110000: "Hub A · 1", 0x01120000: "Hub A · 2", 0x01130000: "Hub A · 3"})
    context = PluginContext("terminal", "cart-1", ports, 5.0, structlog.get_logger())
    board = terminal.make({}, context)
    board.clock = lambda: 1000.0 + 65
    for item in board_events():
        board.apply(item)
    console = Console(record=True, width=200)
    console.print(board.render())
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 2}
    assert list(lines) == ["Hub A · 1", "Hub A · 2", "Hub A · 3", "Hub B · 1"]
    assert "F9F111" in lines["Hub A · 1"] and "activate" in lines["Hub A · 1"] and "1/3" in lines["Hub A · 1"]
    assert "12 % charging" in lines["Hub A · 1"] and "40 % not charging" in lines["Hub A · 2"]
    assert "1:02" in lines["Hub A · 1"]
    assert "F9F222" in lines["Hub A · 2"] and "failed" in lines["Hub A · 2"]
    assert "The iPad did not come back" in lines["Hub A · 2"]
    assert "F9F333" in lines["Hub B · 1"] and "Lincoln-F9F333" in lines["Hub B · 1"] and "3/3" in lines["Hub B · 1"]
    assert "F9F" not in lines["Hub A · 3"]
    assert "1 done · 1 failed" in text


@pytest.mark.anyio
async def test_terminal_board_stays_off_without_a_terminal() -> None:
    host = PluginHost(PluginsConfig(enabled=("terminal",)), "cart-1")
    board = host.pm.get_plugin("terminal")
    await host.startup()
    async with hosting(host) as bus:
        for item in board_events():
            bus.publish(item)
    await host.shutdown()
    assert board.live is None
    assert board.rows["Hub A · 2"].error == "The iPad did not come back"
    assert host.failures == {}
