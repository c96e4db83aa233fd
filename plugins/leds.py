"""A light per USB port, readable from across the room, through Linux's LED class (/sys/class/leds).

Settings, under [plugins.leds]:
    driver    "sysfs" (write /sys/class/leds) or "dry-run" (only log what would be written)
    root      the LED class folder (default "/sys/class/leds")
    ports     for each port label, its LEDs by colour: {"Hub A · 1" = {red = "hubA:red:1", green = "hubA:green:1"}}
    patterns  per port status, what each colour does: "on", "off", "blink" or "slow";
              e.g. {failed = {red = "blink"}}; a colour a pattern leaves out is off
    blink_ms  on and off time of "blink", in milliseconds (default 250)
    slow_ms   on and off time of "slow" (default 1000)
A port follows `port.changed` events; every light turns off when the station starts and stops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from stationd.events import Event
from stationd.hooks import hookimpl
from stationd.plugins import PluginContext, Settings
from stationd.states import PortStatus

STATUSES = tuple(PortStatus)
MODES = ("on", "off", "blink", "slow")
DEFAULT_PATTERNS: dict[str, dict[str, str]] = {
    PortStatus.EMPTY: {},
    PortStatus.BUSY: {"green": "blink"},
    PortStatus.WAITING: {"green": "slow"},
    PortStatus.HELD: {"red": "slow"},
    PortStatus.DONE: {"green": "on"},
    PortStatus.FAILED: {"red": "on"},
}
LED_FILES = ("brightness", "max_brightness", "trigger")
SETTINGS = ("driver", "root", "ports", "patterns", "blink_ms", "slow_ms")


class Driver(Protocol):
    def check(self, led: str, *, timer: bool) -> None: ...

    def max_brightness(self, led: str) -> int: ...

    def write(self, led: str, attribute: str, value: str) -> None: ...


class SysfsDriver:
    """Writes the LED class attributes; `check` says exactly which path is missing or not writable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._max: dict[str, int] = {}

    def check(self, led: str, *, timer: bool) -> None:
        folder = self.root / led
        if not folder.is_dir():
            raise LookupError(f"there is no LED at {folder}; the LEDs of this computer are the names in {self.root}")
        for name in LED_FILES:
            path = folder / name
            if not path.exists():
                raise LookupError(f"{path} is missing; {folder} does not look like an LED")
        for name in ("brightness", "trigger"):
            if not os.access(folder / name, os.W_OK):
                raise LookupError(
                    f"cannot write {folder / name}; run stationd as root or add a udev rule that "
                    f"lets its user write the LED files"
                )
        if timer and "timer" not in (folder / "trigger").read_text().replace("[", " ").replace("]", " ").split():
            raise LookupError(
                f"{folder / 'trigger'} does not offer the timer trigger that blinking needs; load it "
                f"with: modprobe ledtrig-timer"
            )

    def max_brightness(self, led: str) -> int:
        if led not in self._max:
            self._max[led] = int((self.root / led / "max_brightness").read_text().strip() or 1)
        return self._max[led]

    def write(self, led: str, attribute: str, value: str) -> None:
        (self.root / led / attribute).write_text(value)


class DryRunDriver:
    """Writes nothing: logs each write and keeps them in `writes` as (path, value)."""

    def __init__(self, root: Path, log: Any) -> None:
        self.root = root
        self.log = log
        self.writes: list[tuple[str, str]] = []

    def check(self, led: str, *, timer: bool) -> None:
        return None

    def max_brightness(self, led: str) -> int:
        try:
            return int((self.root / led / "max_brightness").read_text().strip())
        except (OSError, ValueError):
            return 1

    def write(self, led: str, attribute: str, value: str) -> None:
        path = str(self.root / led / attribute)
        self.writes.append((path, value))
        self.log.info("leds.would_write", path=path, value=value)


def make(settings: dict[str, Any], context: PluginContext) -> Leds:
    read = Settings(context.name, settings, SETTINGS)
    driver_name = read.choice("driver", "sysfs", ("sysfs", "dry-run"))
    root = Path(read.text("root", "/sys/class/leds", example='root = "/sys/class/leds"'))
    driver: Driver = SysfsDriver(root) if driver_name == "sysfs" else DryRunDriver(root, context.log)
    ports = _ports(read)
    patterns = _patterns(read)
    blinks = {colour for pattern in patterns.values() for colour, mode in pattern.items() if mode in ("blink", "slow")}
    for label, colours in ports.items():
        for colour, led in colours.items():
            try:
                driver.check(led, timer=colour in blinks)
            except LookupError as error:
                raise read.error(f'ports."{label}".{colour}', str(error)) from None
    if context.ports is not None:
        known = set(context.ports.labels.values())
        for label in ports:
            if known and label not in known and not label.startswith("0x"):
                context.log.warning(
                    "leds.unknown_port", port=label, hint="no [ports] entry has this label, so this light never changes"
                )
    delays = {"blink": read.integer("blink_ms", 250, minimum=1), "slow": read.integer("slow_ms", 1000, minimum=1)}
    return Leds(driver, ports, patterns, delays)


def _ports(read: Settings) -> dict[str, dict[str, str]]:
    example = 'ports = { "Hub A · 1" = { red = "hubA:red:1", green = "hubA:green:1" } }'
    table = read.table_of("ports", example=example)
    if not table:
        raise read.error("ports", f"is missing; give each port's LEDs, for example: {example}")
    ports: dict[str, dict[str, str]] = {}
    for label, colours in table.items():
        if not isinstance(colours, dict) or not colours:
            raise read.error(f'ports."{label}"', f"must be a table of colours and LED names, for example: {example}")
        for colour, led in colours.items():
            if not isinstance(led, str) or not led or "/" in led:
                raise read.error(f'ports."{label}".{colour}', 'must be the name of an LED, like "hubA:red:1"')
        ports[label] = dict(colours)
    return ports


def _patterns(read: Settings) -> dict[str, dict[str, str]]:
    patterns = {status: dict(pattern) for status, pattern in DEFAULT_PATTERNS.items()}
    for status, pattern in read.table_of("patterns", example='patterns = { failed = { red = "blink" } }').items():
        if status not in STATUSES:
            raise read.error(f"patterns.{status}", "is not a port status; write one of " + ", ".join(STATUSES))
        if not isinstance(pattern, dict):
            raise read.error(f"patterns.{status}", 'must be a table, for example: { red = "blink" }')
        for colour, mode in pattern.items():
            if mode not in MODES:
                raise read.error(f"patterns.{status}.{colour}", "must be one of " + ", ".join(f'"{m}"' for m in MODES))
        patterns[status] = dict(pattern)
    return patterns


class Leds:
    def __init__(
        self,
        driver: Driver,
        ports: dict[str, dict[str, str]],
        patterns: dict[str, dict[str, str]],
        delays: dict[str, int],
    ) -> None:
        self.driver = driver
        self.ports = ports
        self.patterns = patterns
        self.delays = delays
        self.status: dict[str, str] = {}

    def show(self, label: str, status: str) -> None:
        """Set every LED of one port to the pattern of `status`."""
        pattern = self.patterns.get(status, {})
        for colour, led in self.ports[label].items():
            self.set(led, pattern.get(colour, "off"))
        self.status[label] = status

    def set(self, led: str, mode: str) -> None:
        if mode in self.delays:
            self.driver.write(led, "trigger", "timer")
            self.driver.write(led, "delay_on", str(self.delays[mode]))
            self.driver.write(led, "delay_off", str(self.delays[mode]))
            return
        self.driver.write(led, "trigger", "none")
        self.driver.write(led, "brightness", str(self.driver.max_brightness(led) if mode == "on" else 0))

    def all_off(self) -> None:
        for label in self.ports:
            self.show(label, PortStatus.EMPTY)

    @hookimpl
    def stationd_startup(self) -> None:
        self.all_off()

    @hookimpl
    def stationd_port_changed(self, event: Event) -> None:
        status = event.data.get("status")
        if event.port_label in self.ports and status in STATUSES:
            self.show(event.port_label, status)

    @hookimpl
    def stationd_shutdown(self) -> None:
        self.all_off()
