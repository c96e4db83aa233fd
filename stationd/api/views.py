"""What the API shows: one entry per USB port, and devices and jobs as JSON-ready dicts.

A port's status is what a technician needs from across the room: empty, busy (a step is running), waiting (the iPad
is restarting between steps and will come back by itself), done, or failed (it needs a hand).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from stationd.errors import title
from stationd.states import JobStatus, PortStatus
from stationd.store import DeviceRecord, JobRecord
from stationd.view import battery_of

if TYPE_CHECKING:
    from stationd.station import Station


def location_hex(location_id: int | None) -> str | None:
    return None if location_id is None else f"0x{location_id:08x}"


def job_view(job: JobRecord | None, plan: list[str], now: float) -> dict[str, Any] | None:
    if job is None:
        return None
    done = [step for step in plan if step in job.completed_steps]
    end = job.finished_at if job.finished_at is not None else now
    return {
        "id": job.id,
        "station_id": job.station_id,
        "status": job.status,
        "completed_steps": job.completed_steps,
        "steps_done": len(plan) if job.status == JobStatus.DONE else len(done),
        "steps_total": len(plan),
        "attempts": job.attempts,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "elapsed": round(max(0.0, end - job.started_at), 1),
        "error_code": job.error_code,
        "error_message": job.error_message,
    }


def device_summary(device: DeviceRecord) -> dict[str, Any]:
    facts = device.facts or {}
    return {
        "udid": device.udid,
        "serial": device.serial,
        "name": device.name or facts.get("device_name"),
        "model": facts.get("product_type"),
    }


def device_view(device: DeviceRecord, job: JobRecord | None, station: Station, now: float) -> dict[str, Any]:
    facts = device.facts or {}
    return {
        **device_summary(device),
        "ecid": device.ecid,
        "ios_version": facts.get("product_version"),
        "state": device.state,
        "step": device.step,
        "error_code": device.error_code,
        "error_title": title(device.error_code),
        "error_message": device.error_message,
        "port": station.config.ports.label(device.location_id),
        "location_id": device.location_id,
        "attached": station.attached(device.udid),
        "battery": battery_of(device),
        "storage": {"capacity": facts.get("capacity"), "free": facts.get("free")},
        "first_seen": device.first_seen,
        "updated_at": device.updated_at,
        "job": job_view(job, station.plan, now),
        "reports": station.view.reports.get(device.udid, {}),
    }


def port_views(station: Station) -> list[dict[str, Any]]:
    """Every mapped port and every port a device was seen on (empty or not), in physical order, from the
    station's view: the same statuses `port.changed` events announce, with no store call."""
    now = time.time()
    view = station.view
    locations: dict[str, int | None] = {label: location for location, label in station.config.ports.labels.items()}
    for label, (udid, _) in view.ports.items():
        device = view.devices.get(udid)
        if device is not None and device.port == label:
            locations.setdefault(label, device.device.location_id)
    views = []
    for label in sorted(locations, key=lambda name: (locations[name] is None, locations[name] or 0, name)):
        port = _empty_port(label, locations[label], station.plan)
        occupant = view.occupant(label)
        if occupant is not None:
            port.update(_occupied(occupant.device, view.ports[label][1], occupant.job, station.plan, now))
            port["reports"] = view.reports.get(occupant.device.udid, {})
        views.append(port)
    return views


def status_counts(ports: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(port["status"] for port in ports)
    return {status: counts.get(status, 0) for status in PortStatus}


def _empty_port(label: str, location: int | None, plan: list[str]) -> dict[str, Any]:
    return {
        "label": label,
        "location_id": location,
        "location": location_hex(location),
        "status": PortStatus.EMPTY,
        "device": None,
        "step": None,
        "steps_done": 0,
        "steps_total": len(plan),
        "job_id": None,
        "restarting": False,
        "started_at": None,
        "finished_at": None,
        "elapsed": None,
        "error_code": None,
        "error_title": None,
        "error_message": None,
        "reports": {},
        "battery": None,
    }


def _occupied(device: DeviceRecord, status: str, job: JobRecord | None, plan: list[str], now: float) -> dict[str, Any]:
    view: dict[str, Any] = {"status": status, "device": device_summary(device), "step": device.step}
    view["battery"] = battery_of(device)
    view["restarting"] = status == PortStatus.WAITING and _erasing(job)
    summary = job_view(job, plan, now)
    if summary is not None:
        view.update(
            {key: summary[key] for key in ("steps_done", "steps_total", "started_at", "finished_at", "elapsed")}
        )
        view["job_id"] = summary["id"]
    if status in (PortStatus.FAILED, PortStatus.HELD):
        view.update(
            error_code=device.error_code,
            error_title=title(device.error_code),
            error_message=device.error_message,
        )
    return view


def _erasing(job: JobRecord | None) -> bool:
    """The erase was sent and has not finished: the iPad is wiping and restarting by itself."""
    if job is None or "erase" in job.completed_steps:
        return False
    return bool(job.step_data.get("erase", {}).get("requested_at"))
