"""com.apple.mobile.diagnostics_relay on the device: IORegistry entries (the battery), diagnostics reports, Goodbye."""

from __future__ import annotations

from typing import Any

from stationd.emulator.service import DeviceService

# The entry names and class a battery query can use: pymobiledevice3 asks for the class IOPMPowerSource,
# idevicediagnostics for the entry AppleSmartBattery (iPads since 2017) or AppleARMPMUCharger (older ones).
BATTERY_ENTRIES = {"AppleSmartBattery", "AppleARMPMUCharger"}
BATTERY_CLASSES = {"IOPMPowerSource", "AppleSmartBattery", "AppleARMPMUCharger"}


class DiagnosticsConnection(DeviceService):
    """One host connection to diagnostics_relay."""

    channel = "diagnostics_relay"
    key = "Request"

    def busy(self, request: str) -> dict[str, Any]:
        return {"Status": "Failure"}

    def unknown(self, request: str) -> dict[str, Any]:
        return {"Status": "UnknownRequest"}

    def outcome(self, reply: dict[str, Any]) -> str:
        return "ok" if reply.get("Status") == "Success" else str(reply.get("Status"))

    async def after(self, request: str, reply: dict[str, Any]) -> bool:
        return request != "Goodbye"

    async def do_IORegistry(self, message: dict[str, Any]) -> dict[str, Any]:
        """An entry by name or class; a name or class the device does not have answers an empty entry."""
        name, ioclass = message.get("EntryName"), message.get("EntryClass")
        plane = message.get("CurrentPlane")
        if (name is None and ioclass is None) or plane not in (None, "IOService", "IOPower"):
            return {"Status": "Success", "Diagnostics": {"IORegistry": {}}}
        matches = (name is None or name in BATTERY_ENTRIES) and (ioclass is None or ioclass in BATTERY_CLASSES)
        entry = self.device.contents.battery.ioregistry(self.device.contents.now()) if matches else {}
        return {"Status": "Success", "Diagnostics": {"IORegistry": entry}}

    async def do_GasGauge(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"Status": "Success", "Diagnostics": {"GasGauge": self.device.contents.battery.gas_gauge()}}

    async def do_All(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"Status": "Success", "Diagnostics": {"GasGauge": self.device.contents.battery.gas_gauge()}}

    async def do_Goodbye(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"Status": "Success"}
