"""Acceptance: `stationd emulator` in a subprocess, driven by the unmodified pymobiledevice3 command line."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_emulator_services import make_ipa
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
    command += ["--control", "127.0.0.1:0", "--activation", "127.0.0.1:0", "--mdm", "127.0.0.1:0", *args]
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


def _pmd3_env(running: Running, home: Path) -> dict[str, str]:
    return os.environ | {"HOME": str(home), "USBMUXD_SOCKET_ADDRESS": running.socket, "NO_COLOR": "1"}


def pmd3(running: Running, home: Path, *args: str) -> str:
    """Run the real pymobiledevice3 CLI against the emulator; return its standard output."""
    env = _pmd3_env(running, home)
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
    pmd3(
        emulator,
        home,
        "profile",
        "install-wifi-profile",
        "WPA2",
        "SchoolNet",
        "secret123",
        "--keybag",
        "keybag.pem",
        "--udid",
        udid,
    )
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


SERVICES_SCENARIO = """
speed = 0.01
seed = "services"
[[device]]
apps = [{ bundle_id = "org.example.reader", version = "3.0", build = "300", size_mb = 120 }]
storage = { capacity_gb = 64, free_gb = 41.5 }
battery = { level = 23, rate = 0, drain = 0, cycle_count = 187, health = 92 }
syslog = [{ process = "mdmd", message = "Acceptance line from the scenario", level = "Error", pid = 212 }]
"""


def log(running: Running, udid: str) -> set[tuple[str, str]]:
    """(channel, result) of the device's request log, from the control API."""
    return {(e["channel"], e["result"]) for e in device(running, udid)["request_log"]}


def syslog_live(running: Running, home: Path, udid: str, count: int, seconds: float = 30) -> list[str]:
    """`pymobiledevice3 syslog live`, stopped with Ctrl-C after `count` lines (or `seconds`)."""
    process = subprocess.Popen(
        [PYMOBILEDEVICE3, "syslog", "live", "--udid", udid],
        env=_pmd3_env(running, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home,
    )
    lines: queue.Queue[str] = queue.Queue()
    output = process.stdout
    assert output is not None

    def read() -> None:
        for line in output:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while len(seen) < count and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    return seen


def test_pymobiledevice3_cli_reads_apps_console_battery_and_storage(tmp_path: Path, socket_dir: Path) -> None:
    (tmp_path / "scenario.toml").write_text(SERVICES_SCENARIO)
    running = _start(["--scenario", str(tmp_path / "scenario.toml")], socket_dir)
    home = tmp_path / "home"
    home.mkdir()
    try:
        udid = json.loads(pmd3(running, home, "usbmux", "list"))[0]["UniqueDeviceID"]
        listed = json.loads(pmd3(running, home, "apps", "list", "--udid", udid))
        assert listed["org.example.reader"]["CFBundleShortVersionString"] == "3.0"
        assert listed["com.apple.mobilesafari"]["ApplicationType"] == "System"

        (tmp_path / "Reader2.ipa").write_bytes(make_ipa("org.example.notes", version="1.4", build="14"))
        pmd3(running, home, "apps", "install", str(tmp_path / "Reader2.ipa"), "--udid", udid)
        user = json.loads(pmd3(running, home, "apps", "list", "--type", "User", "--udid", udid))
        assert sorted(user) == ["org.example.notes", "org.example.reader"]
        assert user["org.example.notes"]["CFBundleShortVersionString"] == "1.4"
        state = device(running, udid)
        assert {(a["bundle_id"], a["version"]) for a in state["apps"] if a["type"] == "User"} == {
            ("org.example.notes", "1.4"),
            ("org.example.reader", "3.0"),
        }

        usage = json.loads(pmd3(running, home, "lockdown", "get", "com.apple.disk_usage", "--udid", udid))
        assert usage["TotalDiskCapacity"] == state["storage"]["capacity"] == 64_000_000_000
        assert usage["TotalDataAvailable"] == state["storage"]["free"] < 41_500_000_000  # the new app takes room
        power = json.loads(pmd3(running, home, "lockdown", "get", "com.apple.mobile.battery", "--udid", udid))
        assert (power["BatteryCurrentCapacity"], power["BatteryIsCharging"]) == (23, True)
        battery = json.loads(pmd3(running, home, "diagnostics", "battery", "single", "--udid", udid))
        assert (battery["CurrentCapacity"], battery["CycleCount"], battery["IsCharging"]) == (23, 187, True)
        assert battery["BatteryData"]["MaximumCapacityPercent"] == 92
        assert (state["battery"]["percent"], state["battery"]["charging"], state["battery"]["cycle_count"]) == (
            23,
            True,
            187,
        )

        lines = syslog_live(running, home, udid, count=15)
        assert len(lines) == 15, lines
        assert "mdmd{mdmd}[212] <ERROR>: Acceptance line from the scenario" in lines[0]
        deadline = time.monotonic() + 20
        while ("os_trace_relay", "ended") not in log(running, udid):
            assert time.monotonic() < deadline, "the console stream did not end when pymobiledevice3 left"
            time.sleep(0.05)
    finally:
        running.process.send_signal(signal.SIGINT)
        running.process.communicate(timeout=15)
    assert running.process.returncode == 0
