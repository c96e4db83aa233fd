"""What a virtual iPad holds besides its identity and management state: apps, files, storage, battery, console."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from stationd.emulator.apps import App, system_apps
from stationd.emulator.battery import Battery, BatterySpec
from stationd.emulator.console import Console, Line
from stationd.emulator.media import MediaTree
from stationd.emulator.storage import Storage, StorageSpec


class Contents:
    """Survives unplugging; an erase removes the user apps and files (the battery stays as it is)."""

    def __init__(
        self,
        ios_version: str,
        apps: list[App],
        storage: StorageSpec,
        battery: BatterySpec,
        console: list[Line],
        clock: Callable[[], float],
    ) -> None:
        self.ios_version = ios_version
        self.clock = clock
        self.apps = system_apps(ios_version) | {app.bundle_id: dataclasses.replace(app) for app in apps}
        self.media = MediaTree()
        self.storage = Storage(storage, self.user_bytes())
        self.battery = Battery(dataclasses.replace(battery), clock())
        self.console = Console([dataclasses.replace(line) for line in console])

    def now(self) -> float:
        """Emulator time, seconds."""
        return self.clock()

    def user_bytes(self) -> int:
        """What user apps and files take on the data volume."""
        return sum(app.size for app in self.apps.values() if app.kind == "User") + self.media.size

    def free_bytes(self) -> int:
        return self.storage.free(self.user_bytes())

    def install(self, app: App) -> None:
        """Install or upgrade: an upgrade keeps the app's data container."""
        old = self.apps.get(app.bundle_id)
        if old is not None:
            app.data_uuid = old.data_uuid
        self.apps[app.bundle_id] = app

    def uninstall(self, bundle_id: str) -> None:
        self.apps.pop(bundle_id, None)

    def wipe(self) -> None:
        self.apps = system_apps(self.ios_version)
        self.media.wipe()
        self.storage.wipe()

    def domain(self, name: Any) -> dict[str, Any] | None:
        """A lockdownd domain this module answers (None: not one of them)."""
        if name == "com.apple.disk_usage":
            return self.storage.disk_usage(self.user_bytes())
        if name == "com.apple.mobile.battery":
            return self.battery.lockdown_domain(self.now())
        return None

    def console_values(self) -> dict[str, Any]:
        """What the console's background lines mention."""
        now = self.now()
        return {
            "level": self.battery.percent(now),
            "charging": "yes" if self.battery.connected else "no",
            "cycle_count": self.battery.spec.cycle_count,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "apps": [app.summary() for app in self.apps.values()],
            "battery": self.battery.snapshot(self.now()),
            "storage": self.storage.snapshot(self.user_bytes()),
            "files": self.media.snapshot(),
            "console": self.console.snapshot(),
        }
