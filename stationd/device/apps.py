"""com.apple.mobile.installation_proxy and com.apple.afc: the apps on an iPad, and installing an .ipa (`session.apps`).

pymobiledevice3's service classes carry both protocols. The install itself is sent here rather than through its
`install_from_bytes`, which holds the whole package in memory (an in-house app is hundreds of megabytes, times every
iPad at once) and draws a progress bar on the daemon's terminal: the package is streamed from disk to PublicStaging
in chunks, the Install command sent, and its progress read until the iPad says Complete or names its error.
Every public method raises only `StationError` subclasses.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pymobiledevice3.services.afc import AfcService
from pymobiledevice3.services.installation_proxy import InstallationProxyService

from stationd import errors

if TYPE_CHECKING:
    from stationd.device.session import DeviceSession

ATTRIBUTES = ("CFBundleIdentifier", "CFBundleShortVersionString", "CFBundleVersion", "CFBundleDisplayName")
STAGING = "/PublicStaging/stationd"
CHUNK = 1 << 20  # bytes per AFC write


def app_entry(attributes: dict[str, Any]) -> dict[str, Any]:
    """What the station keeps of one app: bundle id, version (CFBundleShortVersionString), build, name."""
    build = attributes.get("CFBundleVersion")
    return {
        "bundle_id": str(attributes.get("CFBundleIdentifier")),
        "version": str(attributes.get("CFBundleShortVersionString") or build or ""),
        "build": str(build or ""),
        "name": str(attributes.get("CFBundleDisplayName") or ""),
    }


class Apps:
    """The app clients of one paired session."""

    def __init__(self, session: DeviceSession) -> None:
        self.session = session

    async def installed(self, bundle_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The user apps the iPad lists (Browse), sorted by bundle id; only `bundle_ids` when given."""
        options: dict[str, Any] = {"ApplicationType": "User"}
        if bundle_ids is not None:
            options["BundleIDs"] = list(bundle_ids)
        async with self.session.guard("list its apps"):
            async with InstallationProxyService(self.session.lockdown) as proxy:
                found = await proxy.browse(options, list(ATTRIBUTES))
        apps = [app_entry(entry) for entry in found if isinstance(entry, dict) and entry.get("CFBundleIdentifier")]
        return sorted(apps, key=lambda app: app["bundle_id"])

    async def install(self, package: Path) -> None:
        """Upload `package` (an .ipa) to PublicStaging and have installation_proxy install it; the staged copy is
        removed whatever happens. The caller verifies with `installed`: a reply of Complete proves nothing."""
        try:
            stream = package.open("rb")
        except OSError as error:
            raise errors.ConfigurationError(f"cannot read the app {package}: {error.strerror}") from error
        staged = f"{STAGING}/{uuid.uuid4()}.ipa"
        with stream:
            async with self.session.guard("take an app"):
                async with AfcService(self.session.lockdown) as afc:
                    try:
                        await afc.makedirs(STAGING)
                        await _upload(afc, stream, staged)
                        reply = await self._install(staged)
                    finally:
                        with suppress(Exception):  # the iPad may be gone; an erase clears PublicStaging anyway
                            await afc.rm_single(staged, force=True)
        if reply.get("Error"):
            reason = str(reply.get("ErrorDescription") or reply["Error"]).strip().rstrip(".")
            raise errors.AppRejected(
                f"{self.session.subject.who} refused the app {package.name}: {reason} ({reply['Error']}). Check "
                "that the app is signed for these iPads (ad hoc or in-house) and supports this iPadOS, then replug."
            )

    async def _install(self, staged: str) -> dict[str, Any]:
        """Send Install and read its progress messages; the last one (Complete, or an Error)."""
        async with InstallationProxyService(self.session.lockdown) as proxy:
            service = proxy.service
            await service.send_plist({"Command": "Install", "ClientOptions": {}, "PackagePath": staged})
            while True:
                reply = await service.recv_plist()
                if not reply or reply.get("Error") or reply.get("Status") == "Complete":
                    return reply or {"Error": "NoReply", "ErrorDescription": "installation_proxy closed the connection"}


async def _upload(afc: AfcService, stream: BinaryIO, path: str) -> None:
    handle = await afc.fopen(path, "w")
    try:
        while chunk := stream.read(CHUNK):
            await afc.fwrite(handle, chunk)
    finally:
        await afc.fclose(handle)
