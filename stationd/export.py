"""What `stationd devices`, `status` and `export` show: one flat row per device, like Configurator's "Export info"."""

from __future__ import annotations

import csv
import datetime
import io
import json
from typing import Any

from stationd.store import DeviceRecord, JobRecord, Store

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
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def row(device: DeviceRecord, job: JobRecord | None) -> dict[str, Any]:
    """One device's row, from its record and its latest job."""
    facts = device.facts or {}
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
    }


async def device_row(store: Store, udid: str) -> dict[str, Any] | None:
    """One device's row, or None if the station does not know it."""
    device = await store.get_device(udid)
    if device is None:
        return None
    jobs = await store.jobs_for(udid)
    return row(device, jobs[-1] if jobs else None)


async def device_rows(store: Store) -> list[dict[str, Any]]:
    rows = []
    for device in await store.list_devices():
        jobs = await store.jobs_for(device.udid)
        rows.append(row(device, jobs[-1] if jobs else None))
    return rows


def to_csv(rows: list[dict[str, Any]], fields: tuple[str, ...] = FIELDS) -> str:
    """The rows as CSV; a text cell a spreadsheet would run as a formula starts with ' instead."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return out.getvalue()


def _cell(value: Any) -> Any:
    """Spreadsheets run a cell starting with = + - @ (or a tab or carriage return) as a formula: a serial, model or
    name chosen by whoever handled the iPad could run one when the export is opened. Prefixed with ', it is text."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"
