"""com.apple.mobile.diagnostics_relay (`session.diagnostics`): the battery's health and cycle count (IORegistry).

The charge level and whether it charges come from lockdownd's battery domain (`DeviceSession.facts`); health needs
the IORegistry's AppleSmartBattery entry, which pymobiledevice3's DiagnosticsService reads (class IOPMPowerSource).
Every public method raises only `StationError` subclasses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymobiledevice3.services.diagnostics import DiagnosticsService

if TYPE_CHECKING:
    from stationd.device.session import DeviceSession


class Diagnostics:
    """The diagnostics_relay client of one paired session."""

    def __init__(self, session: DeviceSession) -> None:
        self.session = session

    async def battery(self) -> dict[str, int | None]:
        """{"battery_health": percent of design capacity, "cycle_count": n}; None where the iPad says nothing."""
        async with self.session.guard("report its battery"):
            async with DiagnosticsService(self.session.lockdown) as diagnostics:
                entry = await diagnostics.get_battery()
        return battery_health(entry if isinstance(entry, dict) else {})


def battery_health(entry: dict[str, Any]) -> dict[str, int | None]:
    """Health as Settings shows it ("Maximum Capacity"): BatteryData.MaximumCapacityPercent where iPadOS reports it,
    else the full-charge capacity over the design capacity (NominalChargeCapacity, or AppleRawMaxCapacity)."""
    found = entry.get("BatteryData")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    health = _count(data.get("MaximumCapacityPercent"))
    design = _count(entry.get("DesignCapacity")) or _count(data.get("DesignCapacity"))
    if health is None and design:
        full = _count(entry.get("NominalChargeCapacity")) or _count(entry.get("AppleRawMaxCapacity"))
        health = min(100, round(100 * full / design)) if full else None
    cycles = _count(entry.get("CycleCount"))
    return {"battery_health": health, "cycle_count": cycles if cycles is not None else _count(data.get("CycleCount"))}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
