"""The port map: learning ports from usbmuxd, writing them into the config file, labels on events."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stationd.cli import app
from stationd.config import example_config, load_config
from stationd.emulator import Emulator, generated_spec
from stationd.emulator.thread import EmulatorThread
from stationd.portlabels import learn, write_ports
from stationd.usbmux import UsbWatcher


@pytest.mark.anyio
async def test_learn_labels_new_ports_in_the_order_they_are_plugged(tmp_path: Path) -> None:
    specs = [generated_spec(i) for i in range(3)]
    async with Emulator(specs[:1], socket_path=tmp_path / "mux", speed=0, activation_address=None) as emulator:
        for spec in specs[1:]:
            emulator.add_device(spec, plug=False)
        seen: list[tuple[int, str]] = []

        def on_port(location: int, label: str) -> None:
            seen.append((location, label))
            if len(seen) == 1:
                emulator.plug(specs[2].udid)
            elif len(seen) == 2:
                emulator.plug(specs[1].udid, location_id=0x01190000)

        watcher = UsbWatcher(emulator.usbmux_address)
        async with contextlib.aclosing(watcher.events()) as events:
            labels = await learn(events, prefix="Hub A · ", count=3, known={0x01500000: "Hub A · 2"}, on_port=on_port)
    assert seen == [(specs[0].location_id, "Hub A · 1"), (specs[2].location_id, "Hub A · 3"), (0x01190000, "Hub A · 4")]
    assert labels[0x01500000] == "Hub A · 2" and len(labels) == 4


def test_write_ports_replaces_only_the_ports_section(tmp_path: Path) -> None:
    config = tmp_path / "stationd.toml"
    config.write_text(example_config("Port School"))
    config.chmod(0o600)
    write_ports(config, {0x01110000: "Hub A · 1", 0x01120000: 'Cart "B" 2'})
    loaded = load_config(config)
    assert loaded.ports.labels == {0x01110000: "Hub A · 1", 0x01120000: 'Cart "B" 2'}
    assert loaded.organization.name == "Port School" and loaded.api.listen == "127.0.0.1:8480"
    write_ports(config, {0x01130000: "Hub B · 1"})
    assert load_config(config).ports.labels == {0x01130000: "Hub B · 1"}
    assert config.read_text().count("[ports]") == 1
    assert config.stat().st_mode & 0o777 == 0o600


def test_ports_learn_command_writes_the_config(tmp_path: Path) -> None:
    specs = [generated_spec(i) for i in range(2)]
    config = tmp_path / "stationd.toml"
    with EmulatorThread(specs, socket_path=tmp_path / "mux", speed=0) as emulator:
        text = example_config("Port School")
        config.write_text(text.replace("[station]\n", f'[station]\nusbmuxd = "{emulator.usbmux_address}"\n', 1))
        runner = CliRunner()
        result = runner.invoke(
            app, ["ports", "--config", str(config), "--learn", "--prefix", "Cart 1 · ", "--count", "2"]
        )
    assert result.exit_code == 0, result.output
    assert "Wrote 2 port label(s)" in result.output
    labels = load_config(config).ports.labels
    assert sorted(labels.values()) == ["Cart 1 · 1", "Cart 1 · 2"]
    assert set(labels) == {s.location_id for s in specs}
    shown = runner.invoke(app, ["ports", "--config", str(config)])
    assert "Cart 1 · 2" in shown.output and f"0x{specs[1].location_id:08x}" in shown.output
