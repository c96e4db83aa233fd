"""What an iPad holds beyond its identity: its apps, its profiles, its supervision and its battery's health.

Read at the identify step (what it arrived with) and at the report step (what it leaves with): two service
connections (installation_proxy, diagnostics_relay) and two requests on the session's MCInstall connection. A part
the iPad refuses (it answers an error rather than dropping the link) is left unknown rather than failing the iPad;
a dropped link still ends the attempt, as everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from stationd import errors

if TYPE_CHECKING:
    from stationd.device.session import DeviceSession

T = TypeVar("T")


async def inventory(session: DeviceSession, *, battery: bool = True) -> dict[str, Any]:
    """{"apps", "profiles", "supervised", "organization", "battery_health", "cycle_count"}; None where unknown.
    `battery=False` leaves out health and cycle count (a service connection less), which do not change in a job."""
    apps = await _unless_refused(session.apps.installed())
    profiles = await _unless_refused(session.mc.installed_profiles())
    cloud = await _unless_refused(session.mc.cloud_configuration())
    health: dict[str, Any] = {}
    if battery:
        health = await _unless_refused(session.diagnostics.battery()) or {"battery_health": None, "cycle_count": None}
    return {
        "apps": apps,
        "profiles": profiles,
        "supervised": bool(cloud.get("IsSupervised")) if cloud is not None else None,
        "organization": (cloud.get("OrganizationName") or None) if cloud is not None else None,
        **health,
    }


async def _unless_refused(read: Awaitable[T]) -> T | None:
    try:
        return await read
    except errors.DeviceRefused:
        return None
