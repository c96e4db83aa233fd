"""com.apple.mobile.installation_proxy on the device: Browse, Lookup, Install/Upgrade of an uploaded .ipa, Uninstall.

Long commands answer with progress messages ({"Status": stage, "PercentComplete": n}) and end with
{"Status": "Complete"}, or with {"Error": name, "ErrorDescription": text} as installation_proxy does. The stages and
percentages are those ideviceinstaller and Xcode show for real iPads; the time they take is `latency.install`.
"""

from __future__ import annotations

from typing import Any

from stationd.emulator.apps import App, PackageRefused, read_package
from stationd.emulator.console import Line
from stationd.emulator.media import MediaError
from stationd.emulator.service import DeviceService

PAGE = 20  # apps per Browse message (inferred: real iPads send a few dozen at a time)
INSTALL_STAGES = (
    ("CreatingStagingDirectory", 5),
    ("ExtractingPackage", 15),
    ("InspectingPackage", 20),
    ("TakingInstallLock", 20),
    ("PreflightingApplication", 30),
    ("InstallingEmbeddedProfile", 30),
    ("VerifyingApplication", 40),
    ("CreatingContainer", 50),
    ("InstallingApplication", 60),
    ("PostflightingApplication", 70),
    ("SandboxingApplication", 80),
    ("GeneratingApplicationMap", 90),
)
UNINSTALL_STAGES = (("RemovingApplication", 50), ("GeneratingApplicationMap", 90))
APPLICATION_TYPES = {"Any": ("System", "User"), "System": ("System",), "User": ("User",), "Hidden": ()}
INSTALLD_PID = 96


def failure(error: str, description: str) -> dict[str, Any]:
    return {"Error": error, "ErrorDescription": description}


class InstallationProxyConnection(DeviceService):
    """One host connection to installation_proxy."""

    channel = "installation_proxy"
    key = "Command"

    def busy(self, request: str) -> dict[str, Any]:
        return failure("APIInternalError", "The device is busy.")

    def unknown(self, request: str) -> dict[str, Any]:
        return failure("UnknownCommand", f"Unknown command {request!r}.")

    def _options(self, message: dict[str, Any]) -> dict[str, Any]:
        options = message.get("ClientOptions")
        return options if isinstance(options, dict) else {}

    def _selected(self, options: dict[str, Any]) -> list[App]:
        """The apps ApplicationType (default Any) and BundleIDs (default all) select."""
        kinds = APPLICATION_TYPES.get(str(options.get("ApplicationType", "Any")), ())
        wanted = options.get("BundleIDs")
        apps = [app for app in self.device.contents.apps.values() if app.kind in kinds]
        if isinstance(wanted, list):
            apps = [app for app in apps if app.bundle_id in wanted]
        return apps

    def _attributes(self, app: App, options: dict[str, Any]) -> dict[str, Any]:
        values = app.attributes()
        wanted = options.get("ReturnAttributes")
        if isinstance(wanted, list):
            values = {key: values[key] for key in wanted if key in values}
        return values

    async def _progress(self, stages: tuple[tuple[str, int], ...]) -> None:
        """Send each stage after its share of the install time."""
        for stage, percent in stages:
            await self.emulator.pause(self.device.spec.latency.install / len(INSTALL_STAGES))
            await self.send({"PercentComplete": percent, "Status": stage})

    # -- commands -------------------------------------------------------------------------------------------------
    async def do_Browse(self, message: dict[str, Any]) -> dict[str, Any]:
        options = self._options(message)
        entries = [self._attributes(app, options) for app in self._selected(options)]
        for start in range(0, len(entries), PAGE):
            page = entries[start : start + PAGE]
            await self.send(
                {
                    "CurrentAmount": len(page),
                    "CurrentIndex": start,
                    "CurrentList": page,
                    "Status": "BrowsingApplications",
                    "Total": len(entries),
                }
            )
        return {"Status": "Complete"}

    async def do_Lookup(self, message: dict[str, Any]) -> dict[str, Any]:
        options = self._options(message)
        found = {app.bundle_id: self._attributes(app, options) for app in self._selected(options)}
        return {"LookupResult": found, "Status": "Complete"}

    async def do_Install(self, message: dict[str, Any]) -> dict[str, Any]:
        path = message.get("PackagePath")
        if not isinstance(path, str) or not path:
            return failure("MissingPackagePath", "The Install command has no PackagePath.")
        contents = self.device.contents
        await self._progress(INSTALL_STAGES[:2])
        try:
            app = read_package(contents.media.read(path), contents.ios_version)
        except MediaError as error:
            return failure("PackageExtractionFailed", f"Failed to extract the package at {path}: {error}.")
        except PackageRefused as refused:
            contents.console.log(
                Line(
                    "installd",
                    f"Install of {path} failed: {refused.error}: {refused.description}",
                    level="Error",
                    pid=INSTALLD_PID,
                )
            )
            return refused.reply()
        await self._progress(INSTALL_STAGES[2:])
        if self.device.spec.behaviour.app_install == "ignore":
            return {"Status": "Complete"}
        contents.install(app)
        contents.console.log(
            Line("installd", f"Installed {app.bundle_id} version {app.version} ({app.build})", pid=INSTALLD_PID)
        )
        return {"Status": "Complete"}

    do_Upgrade = do_Install

    async def do_Uninstall(self, message: dict[str, Any]) -> dict[str, Any]:
        """Uninstalling an app that is not there completes without an error (inferred)."""
        bundle_id = message.get("ApplicationIdentifier")
        if not isinstance(bundle_id, str) or not bundle_id:
            return failure("MissingApplicationIdentifier", "The Uninstall command has no ApplicationIdentifier.")
        contents = self.device.contents
        app = contents.apps.get(bundle_id)
        if app is not None and app.kind == "System":
            return failure("UninstallProhibited", f"{bundle_id} is a system app.")
        await self._progress(UNINSTALL_STAGES)
        contents.uninstall(bundle_id)
        if app is not None:
            contents.console.log(Line("installd", f"Uninstalled {bundle_id}", pid=INSTALLD_PID))
        return {"Status": "Complete"}
