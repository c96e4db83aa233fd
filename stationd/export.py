"""What `stationd devices`, `status` and `export` show: one flat row per device, like Configurator's "Export info".

Facts the iPad did not report (an old iPadOS, a domain it refused) are empty cells, never guesses."""

from __future__ import annotations

import csv
import datetime
import io
import json
from typing import Any

from stationd.store import Delivery, DeviceRecord, JobRecord, Store

FIELDS = (
    "serial",
    "udid",
    "ecid",
    "model",
    "ios_version",
    "build",
    "wifi_mac",
    "name",
    "state",
    "step",
    "error_code",
    "error_message",
    "port",
    "location_id",
    "station",
    "first_seen",
    "updated_at",
    "finished_at",
    "bluetooth_mac",
    "ethernet_mac",
    "capacity",
    "free",
    "battery_level",
    "charging",
    "battery_health",
    "cycle_count",
    "supervised",
    "organization",
    "apps",
    "profiles",
    "group",
    "notes",
    "reports",
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def row(device: DeviceRecord, job: JobRecord | None) -> dict[str, Any]:
    """One device's row, from its record and its latest job."""
    facts = device.facts or {}
    listed = ((job.step_data.get("identify") or {}).get("listed") if job else None) or {}
    return {
        "serial": device.serial,
        "udid": device.udid,
        "ecid": device.ecid,
        "model": facts.get("product_type"),
        "ios_version": facts.get("product_version"),
        "build": facts.get("build_version"),
        "wifi_mac": facts.get("wifi_address"),
        "name": device.name,
        "state": device.state,
        "step": device.step,
        "error_code": device.error_code,
        "error_message": device.error_message,
        "port": device.port_label,
        "location_id": device.location_id,
        "station": job.station_id if job else None,
        "first_seen": _iso(device.first_seen),
        "updated_at": _iso(device.updated_at),
        "finished_at": _iso(job.finished_at) if job else None,
        "bluetooth_mac": facts.get("bluetooth_address"),
        "ethernet_mac": facts.get("ethernet_address"),
        "capacity": facts.get("capacity"),
        "free": facts.get("free"),
        "battery_level": facts.get("battery_level"),
        "charging": facts.get("charging"),
        "battery_health": facts.get("battery_health"),
        "cycle_count": facts.get("cycle_count"),
        "supervised": facts.get("supervised"),
        "organization": facts.get("organization"),
        "apps": facts.get("apps"),
        "profiles": facts.get("profiles"),
        "group": listed.get("group"),
        "notes": listed.get("notes"),
    }


def reports(deliveries: list[Delivery], job: JobRecord | None) -> dict[str, dict[str, Any]]:
    """The device's status with each reporter, for its latest job: {"asm": {"status": "done", "message": ...}}."""
    if job is None:
        return {}
    return {d.reporter: {"status": d.status, "message": d.message} for d in deliveries if d.job_id == job.id}


async def device_row(store: Store, udid: str) -> dict[str, Any] | None:
    """One device's row with its report statuses, or None if the station does not know it."""
    device = await store.get_device(udid)
    if device is None:
        return None
    jobs = await store.jobs_for(udid)
    job = jobs[-1] if jobs else None
    return {**row(device, job), "reports": reports(await store.list_deliveries(udid=udid), job)}


async def device_rows(store: Store) -> list[dict[str, Any]]:
    """Every device's row, with its report statuses."""
    by_device: dict[str, list[Delivery]] = {}
    for delivery in await store.list_deliveries():
        by_device.setdefault(delivery.udid, []).append(delivery)
    rows = []
    for device in await store.list_devices():
        jobs = await store.jobs_for(device.udid)
        job = jobs[-1] if jobs else None
        rows.append({**row(device, job), "reports": reports(by_device.get(device.udid, []), job)})
    return rows


def reports_text(value: Any) -> str:
    """The report statuses in one cell: "asm: done; jamf: failed (not in Jamf yet ...)"."""
    if not isinstance(value, dict):
        return ""
    parts = []
    for reporter, report in sorted(value.items()):
        message = report.get("message") if report.get("status") != "done" else None
        parts.append(f"{reporter}: {report.get('status')}" + (f" ({message})" if message else ""))
    return "; ".join(parts)


def to_serials(rows: list[dict[str, Any]]) -> str:
    """One serial per line, no header: the list Apple School/Business Manager's Device Assignments take as a CSV
    file (Release Devices, Assign to Server) and the previous MDM takes for a release request."""
    serials = dict.fromkeys(str(r["serial"]) for r in rows if r.get("serial"))
    return "".join(f"{_cell(serial)}\n" for serial in serials)


def to_csv(rows: list[dict[str, Any]], fields: tuple[str, ...] = FIELDS) -> str:
    """The rows as CSV; a text cell a spreadsheet would run as a formula starts with ' instead."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(reports_text(row.get(k)) if k == "reports" else row.get(k)) for k in fields})
    return out.getvalue()


def _cell(value: Any) -> Any:
    """Spreadsheets run a cell starting with = + - @ (or a tab or carriage return) as a formula: a serial, model or
    name chosen by whoever handled the iPad could run one when the export is opened. Prefixed with ', it is text."""
    if value is None:
        return ""
    if isinstance(value, list):  # apps ("bundle id version") and profiles, one cell each
        value = "; ".join(f"{v['bundle_id']} {v['version']}" if isinstance(v, dict) else str(v) for v in value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


# Apple Configurator's "Export Info" columns: the fields its device Info shows (name, serial, UDID, ECID, model,
# iOS, capacity, Wi-Fi and Bluetooth addresses, battery, supervision, organisation), each headed by the name
# Configurator's own command line, cfgutil, gives the same property (`cfgutil get`, cfgutil(1) man page, as
# mirrored at https://gist.github.com/AloPress/1c708593e64472b2e6c26b28d52eeecb). ECID, UDID, deviceType,
# firmwareVersion, buildVersion and serialNumber, and the ECID written as 0x-hexadecimal, are also confirmed by
# the University of Utah's aeios, which drives cfgutil (github.com/univ-of-utah-marriott-library-apple/aeios,
# actools/cfgutil.py and its tests). The GUI's own CSV headings could not be read from a public source.
CONFIGURATOR_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("serialNumber", "serial"),
    ("UDID", "udid"),
    ("ECID", "ecid"),
    ("deviceType", "model"),
    ("firmwareVersion", "ios_version"),
    ("buildVersion", "build"),
    ("totalDiskCapacity", "capacity"),
    ("totalSpaceAvailable", "free"),
    ("wifiAddress", "wifi_mac"),
    ("bluetoothAddress", "bluetooth_mac"),
    ("batteryCurrentCapacity", "battery_level"),
    ("batteryIsCharging", "charging"),
    ("isSupervised", "supervised"),
    ("organizationName", "organization"),
)


def to_configurator(rows: list[dict[str, Any]]) -> str:
    """The rows as Apple Configurator's Export Info CSV (see CONFIGURATOR_FIELDS)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([heading for heading, _ in CONFIGURATOR_FIELDS])
    for row in rows:
        writer.writerow([_cell(_configurator_value(key, row.get(key))) for _, key in CONFIGURATOR_FIELDS])
    return out.getvalue()


def _configurator_value(key: str, value: Any) -> Any:
    if key == "ecid" and isinstance(value, int):
        return f"0x{value:X}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
