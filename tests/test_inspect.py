"""Acceptance: `stationd inspect` on an iPad in Setup Assistant, on a set-up one this station supervises, and on one
that does not trust the station (a plain message, no pairing request, no hang), through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stationd.cli import app
from stationd.emulator import generated_spec
from stationd.emulator.apps import App
from stationd.emulator.battery import BatterySpec
from stationd.emulator.console import Line
from stationd.emulator.thread import EmulatorThread
from stationd.identity import create_identity

ORG = "Inspect School"
SCENARIO_LINE = "Scenario line for inspect"


@pytest.fixture
def station(tmp_path: Path):
    identity = create_identity(tmp_path / "identity.pem", ORG)
    fresh = generated_spec(
        0,
        battery=BatterySpec(level=55, cycle_count=3, health=97),
        apps=[App("org.example.atlas", "Atlas", version="4.0", build="400")],
        syslog=[Line("mdmd", SCENARIO_LINE)],
    )
    ours = generated_spec(
        1, setup_assistant=False, supervised_by=ORG, supervisor_certificates=[identity.certificate_der]
    )
    stranger = generated_spec(2, setup_assistant=False)
    with EmulatorThread([fresh, ours, stranger], speed=0.0005) as emulator:
        config = tmp_path / "stationd.toml"
        config.write_text(
            f'[organization]\nname = "{ORG}"\nidentity = "identity.pem"\n\n'
            f'[station]\nid = "bench-1"\ndatabase = "station.db"\nusbmuxd = "{emulator.usbmux_address}"\n'
        )
        config.chmod(0o600)

        def inspect(*args: str):
            return CliRunner().invoke(app, ["inspect", *args, "--config", str(config)])

        def pair_requests(udid: str) -> list[str]:
            log = emulator.call(lambda: list(emulator.emulator.devices[udid].request_log))
            return [entry["result"] for entry in log if entry["channel"] == "lockdownd" and entry["request"] == "Pair"]

        yield inspect, pair_requests, fresh, ours, stranger


def test_inspect_an_ipad_in_setup_assistant(station) -> None:
    inspect, pair_requests, fresh, _, _ = station
    first = inspect(fresh.udid)
    assert first.exit_code == 1 and pair_requests(fresh.udid) == [], "no pairing without --pair"
    assert "does not trust this station" in first.stderr and f"stationd inspect {fresh.udid} --pair" in first.stderr
    assert f"model: {fresh.product_type}" in first.stdout

    paired = inspect(fresh.udid, "--pair", "--json", "--log", "500")
    assert paired.exit_code == 0, paired.output
    report = json.loads(paired.stdout)
    assert (report["serial"], report["udid"], report["ecid"]) == (fresh.serial, fresh.udid, fresh.ecid)
    assert report["bluetooth_address"] and report["ethernet_address"] and report["wifi_address"] == fresh.wifi_address
    assert report["battery_health"] == 97 and report["cycle_count"] == 3 and 55 <= report["battery_level"] <= 100
    assert report["capacity"] == 64_000_000_000 and 0 < report["free"] < report["capacity"]
    assert report["apps"] == [{"bundle_id": "org.example.atlas", "version": "4.0", "build": "400", "name": "Atlas"}]
    assert report["supervised"] is False and report["profiles"] == [] and report["station"] is None
    assert 0 < len(report["console"]) <= 500 and any(SCENARIO_LINE in line for line in report["console"])

    again = inspect(fresh.serial, "--log", "3")  # by serial now: the pairing is the station's
    assert again.exit_code == 0, again.output
    assert "org.example.atlas" in again.stdout and "health 97 %" in again.stdout and "64 GB" in again.stdout
    assert len(again.stdout.split("Console (last 3 lines)")[1].strip().splitlines()) == 3
    assert pair_requests(fresh.udid) == ["ok"], "paired once, silently"


def test_inspect_a_set_up_ipad_this_station_supervises(station) -> None:
    inspect, pair_requests, _, ours, _ = station
    result = inspect(ours.udid, "--pair")
    assert result.exit_code == 0, result.output
    assert f"supervised by {ORG}" in result.stdout and ours.serial in result.stdout
    assert pair_requests(ours.udid) == ["MCChallengeRequired", "ok"], "the supervision proof: no dialog"


def test_inspect_an_ipad_that_does_not_trust_the_station(station) -> None:
    inspect, pair_requests, _, _, stranger = station
    plain = inspect(stranger.udid, "--json")
    assert plain.exit_code == 1
    assert json.loads(plain.stdout) == {
        "udid": stranger.udid,
        "trusted": False,
        "public": {"name": stranger.device_name, "model": stranger.product_type, "iOS": "17.5.1", "build": "21F90"},
    }
    assert "does not trust this station" in plain.stderr and "Trust This Computer?" in plain.stderr
    assert pair_requests(stranger.udid) == [], "nothing was put on its screen"

    asked = inspect(stranger.udid, "--pair")
    assert asked.exit_code == 2 and "shows 'Trust This Computer?'" in asked.stderr, asked.output
    missing = inspect("NOTASERIAL")
    assert missing.exit_code == 2 and "no plugged-in iPad is NOTASERIAL" in missing.stderr
    assert stranger.udid in missing.stderr, "the UDIDs plugged in are named"
