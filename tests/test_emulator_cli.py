"""Acceptance: `stationd emulator` in a subprocess, driven by the unmodified pymobiledevice3 command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stationd.cli import app

PYMOBILEDEVICE3 = str(Path(sys.executable).parent / "pymobiledevice3")
SCENARIO = """
speed = 0.01
seed = "acceptance"
[[device]]
count = 2
activated = true
"""


@dataclass
class Running:
    process: subprocess.Popen[str]
    socket: str
    control_url: str
    banner: str


def _start(args: list[str], socket_dir: Path) -> Running:
    """Start `stationd emulator` and read its banner (where it listens) up to the device table's end."""
    socket_path = str(socket_dir / "usbmuxd.sock")
    command = [sys.executable, "-m", "stationd.cli", "emulator", "--socket", socket_path]
    command += ["--control", "127.0.0.1:0", "--activation", "127.0.0.1:0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            break
    banner = "".join(lines)
    if process.poll() is not None or not banner.endswith("the emulator.\n"):
        process.kill()
        raise AssertionError(f"the emulator did not start:\n{banner}{process.communicate()[1]}")
    control = next(line.split()[-1] for line in lines if line.startswith("control API:"))
    return Running(process, socket_path, control, banner)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for the UNIX socket (socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def emulator(tmp_path: Path, socket_dir: Path) -> Iterator[Running]:
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    running = _start(["--scenario", str(tmp_path / "scenario.toml")], socket_dir)
    yield running
    running.process.send_signal(signal.SIGINT)
    running.process.communicate(timeout=15)
    assert running.process.returncode == 0


def pmd3(running: Running, home: Path, *args: str) -> str:
    """Run the real pymobiledevice3 CLI against the emulator; return its standard output."""
    env = os.environ | {"HOME": str(home), "USBMUXD_SOCKET_ADDRESS": running.socket, "NO_COLOR": "1"}
    result = subprocess.run([PYMOBILEDEVICE3, *args], env=env, capture_output=True, text=True, timeout=60, cwd=home)
    assert result.returncode == 0, f"pymobiledevice3 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def device(running: Running, udid: str) -> dict[str, Any]:
    return httpx.get(f"{running.control_url}/devices/{udid}", timeout=10).json()


def test_pymobiledevice3_cli_prepares_a_virtual_ipad(emulator: Running, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert f"export USBMUXD_SOCKET_ADDRESS={emulator.socket}" in emulator.banner

    listed = json.loads(pmd3(emulator, home, "usbmux", "list"))
    udids = [entry["UniqueDeviceID"] for entry in listed]
    assert len(udids) == 2
    udid = udids[0]

    info = json.loads(pmd3(emulator, home, "lockdown", "info", "--udid", udid))
    assert info["SerialNumber"] == device(emulator, udid)["serial"]
    assert info["ActivationState"] == "Activated"
    assert json.loads(pmd3(emulator, home, "profile", "list", "--udid", udid))["OrderedIdentifiers"] == []

    pmd3(emulator, home, "profile", "create-keybag", "keybag.pem", "Our School")
    pmd3(emulator, home, "profile", "supervise", "Our School", "--keybag", "keybag.pem", "--udid", udid)
    pmd3(emulator, home, "profile", "install-wifi-profile", "WPA2", "SchoolNet", "secret123", "--keybag", "keybag.pem",
         "--udid", udid)
    profiles = json.loads(pmd3(emulator, home, "profile", "list", "--udid", udid))
    assert [m["PayloadDisplayName"] for m in profiles["ProfileMetadata"].values()] == ["WiFi Profile For SchoolNet"]
    cloud = json.loads(pmd3(emulator, home, "profile", "cloud-configuration", "--udid", udid))
    assert cloud["OrganizationName"] == "Our School" and cloud["IsSupervised"]

    state = device(emulator, udid)
    assert state["organization"] == "Our School" and state["supervised"]
    assert state["profile_payload_types"] == {state["profiles"][0]: ["com.apple.wifi.managed"]}

    pmd3(emulator, home, "profile", "erase-device", "--udid", udid)
    deadline = time.monotonic() + 20
    while not ((state := device(emulator, udid))["erase_count"] == 1 and state["attached"]):
        assert time.monotonic() < deadline, f"the device did not come back after its erase: {state['status']}"
        time.sleep(0.05)
    assert state["activation_state"] == "Unactivated" and state["setup_assistant"]
    assert state["profiles"] == [] and state["organization"] is None and state["paired_hosts"] == []

    info = json.loads(pmd3(emulator, home, "lockdown", "info", "--udid", udid))
    assert info["ActivationState"] == "Unactivated"
    assert device(emulator, udids[1])["erase_count"] == 0


def test_emulator_stops_cleanly_on_sigint(socket_dir: Path) -> None:
    running = _start(["--devices", "1", "--speed", "0"], socket_dir)
    assert "1 virtual iPad, speed 0" in running.banner
    assert httpx.get(f"{running.control_url}/", timeout=10).json()["attached"] == 1
    running.process.send_signal(signal.SIGINT)
    stdout, stderr = running.process.communicate(timeout=15)
    assert running.process.returncode == 0, stderr
    assert "emulator stopped" in stdout
    assert not Path(running.socket).exists()


def test_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[device]]\nactivated = "yes"\n')
    result = CliRunner().invoke(app, ["emulator", "--scenario", str(tmp_path / "bad.toml")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "[[device]] #1: activated: must be true or false" in lines[0]
