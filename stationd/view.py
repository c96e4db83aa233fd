"""The station's view of its ports and devices, kept in memory from the records it writes and the plugs it sees.

The API, the dashboard and the port events read this view, never the store: it answers at once however many iPads
are in progress. A port's status is derived here and only here (`status_of`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stationd.states import DeviceState, PortStatus
from stationd.store import Delivery, DeviceRecord, JobRecord

UNFINISHED = (PortStatus.BUSY, PortStatus.WAITING, PortStatus.HELD)  # a cart is not finished while a port shows one


@dataclass
class DeviceView:
    device: DeviceRecord
    job: JobRecord | None = None
    attached: bool = False

    @property
    def port(self) -> str | None:
        return self.device.port_label

    @property
    def status(self) -> PortStatus:
        return status_of(self.device.state, self.attached)


@dataclass(frozen=True)
class PortChange:
    """A port showing something new; `port.changed` announces it."""

    udid: str
    label: str
    status: PortStatus
    previous: PortStatus


def battery_of(device: DeviceRecord) -> dict[str, Any] | None:
    """A port's charge: {"level": percent, "charging": bool or None} as the iPad reported it at its last read (every
    session, and every look while it is held for charge), or None when it has reported no level."""
    facts = device.facts or {}
    level = facts.get("battery_level")
    return None if level is None else {"level": level, "charging": facts.get("charging")}


def status_of(state: str, attached: bool) -> PortStatus:
    """What a port shows for a device in `state`: busy, waiting (for the iPad to come back: restarting, or
    unplugged mid-job), done, failed, or empty once a finished iPad is taken away."""
    if state in (DeviceState.DONE, DeviceState.FAILED):
        return PortStatus(state) if attached else PortStatus.EMPTY
    if state == DeviceState.NEW:
        return PortStatus.BUSY if attached else PortStatus.EMPTY
    if state == DeviceState.HELD:
        return PortStatus.HELD if attached else PortStatus.EMPTY
    return PortStatus.BUSY if attached and state != DeviceState.WAITING else PortStatus.WAITING


@dataclass
class StationView:
    devices: dict[str, DeviceView] = field(default_factory=dict)
    ports: dict[str, tuple[str, PortStatus]] = field(default_factory=dict)  # label -> (udid, status shown)
    reports: dict[str, dict[str, dict]] = field(default_factory=dict)  # udid -> reporter -> its latest delivery
    _batch_announced: bool = True

    def load(self, devices: list[DeviceRecord], jobs: dict[str, JobRecord]) -> None:
        """Start from what the store knows (nothing is attached yet)."""
        for device in devices:
            self.devices[device.udid] = DeviceView(device, jobs.get(device.udid))

    def record(self, device: DeviceRecord | None, job: JobRecord | None = None) -> PortChange | None:
        """A device or job as the store now holds it."""
        if device is None:
            return None
        view = self.devices.get(device.udid)
        if view is None:
            view = self.devices[device.udid] = DeviceView(device)
        view.device = device
        if job is not None:
            view.job = job
        return self._port_update(view)

    def plugged(self, udid: str, attached: bool) -> PortChange | None:
        view = self.devices.get(udid)
        if view is None:
            return None
        view.attached = attached
        return self._port_update(view)

    def report(self, delivery: Delivery) -> None:
        """A delivery as the outbox now holds it: the device's status with that reporter (its latest job's)."""
        shown = self.reports.setdefault(delivery.udid, {})
        current = shown.get(delivery.reporter)
        if current is None or current["job_id"] <= delivery.job_id:
            shown[delivery.reporter] = {"job_id": delivery.job_id, **delivery.summary()}

    def forget(self, udid: str) -> None:
        self.devices.pop(udid, None)
        self.reports.pop(udid, None)
        for label, (owner, _) in list(self.ports.items()):
            if owner == udid:
                del self.ports[label]

    def _port_update(self, view: DeviceView) -> PortChange | None:
        label = view.port
        if label is None:
            return None
        status = view.status
        previous = self.ports.get(label)
        if previous == (view.device.udid, status):
            return None
        for other, (owner, _) in list(self.ports.items()):
            if owner == view.device.udid and other != label:
                del self.ports[other]
        self.ports[label] = (view.device.udid, status)
        if status in UNFINISHED:
            self._batch_announced = False
        return PortChange(view.device.udid, label, status, previous[1] if previous else PortStatus.EMPTY)

    def batch_finished(self) -> dict[str, int] | None:
        """Counts of done and failed ports the first time no port is busy, waiting or held, once per batch."""
        statuses = Counter(status for _, status in self.ports.values())
        if any(statuses[status] for status in UNFINISHED):
            self._batch_announced = False
            return None
        if self._batch_announced:
            return None
        self._batch_announced = True
        return {"done": statuses[PortStatus.DONE], "failed": statuses[PortStatus.FAILED]}

    def occupant(self, label: str) -> DeviceView | None:
        """The device a port shows (None when empty, or when its device moved to another port)."""
        entry = self.ports.get(label)
        if entry is None or entry[1] == PortStatus.EMPTY:
            return None
        view = self.devices.get(entry[0])
        return view if view is not None and view.port == label else None
