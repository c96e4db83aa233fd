"""The richer identify: addresses, storage, charge, battery health, apps and profiles, in the record, the export and
the report, read through the real pymobiledevice3 clients from the virtual iPad."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from rig import ORG, make_rig

from stationd.device.diagnostics import battery_health
from stationd.emulator import generated_spec
from stationd.emulator.apps import App
from stationd.emulator.battery import BatterySpec
from stationd.emulator.storage import GB, StorageSpec
from stationd.export import FIELDS, device_row, to_csv
from stationd.store import open_store


@pytest.mark.anyio
async def test_identify_reads_what_the_ipad_arrived_with_and_the_report_what_it_leaves_with(tmp_path: Path) -> None:
    spec = generated_spec(
        0,
        apps=[App("org.example.old", "Old Reader", version="1.2", build="12")],
        battery=BatterySpec(level=64, cycle_count=17, health=91),
        storage=StorageSpec(capacity_gb=128, free_gb=100),
    )
    async with make_rig(tmp_path, [spec]) as rig:
        seen: list = []
        finals = await rig.run_until_settled([spec.udid], on_event=seen.append)
        assert finals[spec.udid].kind == "device.done"
        ipad = rig.emulator.devices[spec.udid]
        values = ipad.values(True)
        disk = ipad.contents.domain("com.apple.disk_usage")
        state = rig.device(spec.udid)
        async with open_store(rig.config.station.database) as store:
            row = await device_row(store, spec.udid)
            job = (await store.jobs_for(spec.udid))[-1]
            trail = await store.list_events(after_id=0)

    assert row is not None
    assert row["bluetooth_mac"] == values["BluetoothAddress"] and row["ethernet_mac"] == values["EthernetAddress"]
    assert row["capacity"] == 128 * GB
    assert row["free"] == disk["AmountDataAvailable"], "free space as the iPad reports it after its erase"
    assert 64 <= row["battery_level"] <= 100 and row["charging"] is True
    assert (row["battery_health"], row["cycle_count"]) == (91, 17)
    assert row["supervised"] is True and row["organization"] == ORG
    assert row["apps"] == [], "the erase removed the old app: the record holds what the iPad leaves with"
    assert row["profiles"] == state["profiles"] and row["profiles"]

    arrived = job.step_data["identify"]
    assert arrived["apps"] == [{"bundle_id": "org.example.old", "version": "1.2", "build": "12", "name": "Old Reader"}]
    assert arrived["supervised"] is False and arrived["profiles"] == []

    reported = next(e for e in trail if e.kind == "device.reported").data["device"]
    assert {k: reported[k] for k in ("bluetooth_mac", "capacity", "battery_health", "supervised", "organization")} == {
        k: row[k] for k in ("bluetooth_mac", "capacity", "battery_health", "supervised", "organization")
    }
    charges = [e.data["battery"] for e in seen if e.kind == "device.identified" and e.data.get("battery")]
    assert charges and all(c["charging"] is True for c in charges), "the trail carries the charge for the boards"
    header, line = to_csv([row]).splitlines()
    assert header.split(",") == list(FIELDS)
    cells = next(csv.reader([line]))
    assert cells[FIELDS.index("profiles")] == "; ".join(row["profiles"])


def test_battery_health_from_either_ioregistry_shape() -> None:
    """iPadOS 17 reports MaximumCapacityPercent; older iPads only the capacities, which give the same figure."""
    assert battery_health({"BatteryData": {"MaximumCapacityPercent": 88}, "CycleCount": 301}) == {
        "battery_health": 88,
        "cycle_count": 301,
    }
    older = {"DesignCapacity": 7606, "NominalChargeCapacity": 6845, "BatteryData": {"CycleCount": 12}}
    assert battery_health(older) == {"battery_health": 90, "cycle_count": 12}
    assert battery_health({"DesignCapacity": 7606, "AppleRawMaxCapacity": 8000}) == {
        "battery_health": 100,
        "cycle_count": None,
    }
    assert battery_health({}) == {"battery_health": None, "cycle_count": None}
