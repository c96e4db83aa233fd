"""A virtual iPad's battery: the level rises while the cable charges it and falls otherwise.

The level is computed from elapsed emulator time (wall seconds divided by the speed factor), never by a background
task, so it is deterministic for tests: `level(now)` depends only on the scenario and the plug/unplug times.
"""

from __future__ import annotations

from dataclasses import dataclass

# Real iPads (10th generation, 28.6 Wh) charge from a USB port in two to four hours and lose a few percent a day
# when idle; these defaults are inferred from that, not measured: percent per emulated minute.
DEFAULT_RATE = 0.6
DEFAULT_DRAIN = 0.05
DESIGN_CAPACITY_MAH = 7606  # iPad (10th generation): 28.6 Wh at 3.76 V (inferred from Apple's Wh figure)


@dataclass
class BatterySpec:
    """What a scenario says about the battery (`battery = { level = 10, charging = true, ... }`)."""

    level: float = 80.0  # percent when the emulator starts
    charging: bool = True  # the port charges it while plugged in (false: a hub that gives too little power)
    rate: float = DEFAULT_RATE  # percent per emulated minute while charging
    drain: float = DEFAULT_DRAIN  # percent per emulated minute while unplugged (or on a port that does not charge)
    cycle_count: int = 42
    health: int = 100  # maximum capacity, percent of design capacity

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 100:
            raise ValueError("battery level must be from 0 to 100")
        if not 0 <= self.health <= 100:
            raise ValueError("battery health must be from 0 to 100")
        if self.rate < 0 or self.drain < 0 or self.cycle_count < 0:
            raise ValueError("battery rate, drain and cycle_count must be 0 or more")


class Battery:
    """The battery state: a level at a moment, and whether it is gaining or losing charge since then."""

    def __init__(self, spec: BatterySpec, now: float) -> None:
        self.spec = spec
        self._level = float(spec.level)
        self._since = now
        self.connected = False  # the cable is in

    @property
    def charging(self) -> bool:
        """Charging now: plugged into a port that charges (a full battery is on the cable, not charging)."""
        return self.connected and self.spec.charging

    def level(self, now: float) -> float:
        """Percent at emulator time `now` (seconds)."""
        minutes = max(0.0, now - self._since) / 60
        if self.charging:
            return min(100.0, self._level + self.spec.rate * minutes)
        return max(0.0, self._level - self.spec.drain * minutes)

    def percent(self, now: float) -> int:
        """The whole percent iOS shows (BatteryCurrentCapacity), rounded."""
        return round(self.level(now))

    def fully_charged(self, now: float) -> bool:
        return self.level(now) >= 100.0

    def is_charging(self, now: float) -> bool:
        """What the iPad reports as BatteryIsCharging: on a charging cable and not yet full."""
        return self.charging and not self.fully_charged(now)

    def power(self, connected: bool, now: float) -> None:
        """The cable went in or out at `now`: keep the level reached and change direction."""
        self._level = self.level(now)
        self._since = now
        self.connected = connected

    def set(self, now: float, level: float | None = None, charging: bool | None = None) -> None:
        """Change the level or whether the port charges (the control API), from `now` on."""
        self._level = self.level(now) if level is None else float(level)
        self._since = now
        if charging is not None:
            self.spec.charging = charging

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "level": round(self.level(now), 2),
            "percent": self.percent(now),
            "charging": self.is_charging(now),
            "external_connected": self.connected,
            "fully_charged": self.fully_charged(now),
            "charges_when_plugged": self.spec.charging,
            "rate": self.spec.rate,
            "drain": self.spec.drain,
            "cycle_count": self.spec.cycle_count,
            "health": self.spec.health,
        }

    # -- what the iPad reports ------------------------------------------------------------------------------------
    def lockdown_domain(self, now: float) -> dict[str, object]:
        """lockdownd's com.apple.mobile.battery domain."""
        return {
            "BatteryCurrentCapacity": self.percent(now),
            "BatteryIsCharging": self.is_charging(now),
            "ExternalChargeCapable": self.connected and self.spec.charging,
            "ExternalConnected": self.connected,
            "FullyCharged": self.fully_charged(now),
            "GasGaugeCapability": True,
            "HasBattery": True,
        }

    def ioregistry(self, now: float) -> dict[str, object]:
        """The AppleSmartBattery entry (class IOPMPowerSource) diagnostics_relay returns from the IORegistry.

        Key names follow answers real iPads give; the values are derived from the model and are inferred (voltage,
        temperature and currents are plausible figures, not measurements)."""
        percent = self.percent(now)
        charging = self.is_charging(now)
        max_mah = DESIGN_CAPACITY_MAH * self.spec.health // 100
        current_mah = max_mah * percent // 100
        voltage = 3500 + 8 * percent  # mV, rises with the charge (inferred curve)
        amperage = 1500 if charging else (0 if self.connected else -250)  # mA
        adapter = {
            "AdapterID": 0,
            "Current": 2100 if self.connected else 0,
            "Description": "usb host" if self.connected else "batt",
            "FamilyCode": -536854528 if self.connected else 0,
            "IsWireless": False,
            "Voltage": 5000 if self.connected else 0,
            "Watts": 10 if self.connected else 0,
        }
        return {
            "AdapterDetails": adapter,
            "Amperage": amperage,
            "AppleRawBatteryVoltage": voltage,
            "AppleRawCurrentCapacity": current_mah,
            "AppleRawExternalConnected": self.connected,
            "AppleRawMaxCapacity": max_mah,
            "AtCriticalLevel": percent <= 5,
            "AvgTimeToEmpty": 65535 if self.connected else int(percent / max(self.spec.drain, 0.01)),
            "AvgTimeToFull": int((100 - percent) / self.spec.rate) if charging and self.spec.rate else 65535,
            "BatteryData": {
                "CycleCount": self.spec.cycle_count,
                "DesignCapacity": DESIGN_CAPACITY_MAH,
                "MaximumCapacityPercent": self.spec.health,
                "StateOfCharge": percent,
                "Voltage": voltage,
            },
            "BatteryInstalled": True,
            "CurrentCapacity": percent,
            "CycleCount": self.spec.cycle_count,
            "DesignCapacity": DESIGN_CAPACITY_MAH,
            "ExternalChargeCapable": self.connected and self.spec.charging,
            "ExternalConnected": self.connected,
            "FullyCharged": self.fully_charged(now),
            "InstantAmperage": amperage,
            "IsCharging": charging,
            "MaxCapacity": 100,
            "NominalChargeCapacity": max_mah,
            "Temperature": 2950 if charging else 2750,  # hundredths of a degree Celsius
            "TimeRemaining": 0,
            "Voltage": voltage,
        }

    def gas_gauge(self) -> dict[str, object]:
        """diagnostics_relay's GasGauge report (as `idevicediagnostics diagnostics GasGauge` shows it)."""
        return {
            "CycleCount": self.spec.cycle_count,
            "DesignCapacity": DESIGN_CAPACITY_MAH,
            "FullChargeCapacity": DESIGN_CAPACITY_MAH * self.spec.health // 100,
            "Status": "Success",
        }
