"""Apps on a virtual iPad: the system apps every iPad has, user apps from the scenario, and reading an .ipa."""

from __future__ import annotations

import io
import plistlib
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

MAX_INFO_PLIST = 1024 * 1024  # bytes; a larger Info.plist is refused rather than read
MAX_ENTRIES = 20_000  # files in one .ipa
BUNDLE_ID = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
IPAD_FAMILIES = {1, 2}  # UIDeviceFamily: 1 iPhone (runs on iPad too), 2 iPad
MB = 1_000_000


@dataclass
class App:
    """One installed app, with what installation_proxy reports about it."""

    bundle_id: str
    name: str
    version: str = "1.0"  # CFBundleShortVersionString
    build: str = "1"  # CFBundleVersion
    kind: str = "User"  # ApplicationType: System or User
    size: int = 50 * MB  # StaticDiskUsage, bytes
    info: dict[str, Any] = field(default_factory=dict)  # the rest of the bundle's Info.plist
    bundle_uuid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    data_uuid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())

    @property
    def path(self) -> str:
        if self.kind == "System":
            return f"/Applications/{self.name.replace(' ', '')}.app"
        return f"/private/var/containers/Bundle/Application/{self.bundle_uuid}/{self.name}.app"

    def attributes(self) -> dict[str, Any]:
        """Every attribute, as a Lookup or Browse without ReturnAttributes gives them."""
        values: dict[str, Any] = {
            "CFBundleExecutable": self.name.replace(" ", ""),
            "CFBundleName": self.name,
            "CFBundlePackageType": "APPL",
            "CFBundleSupportedPlatforms": ["iPhoneOS"],
            "MinimumOSVersion": "15.0",
            "UIDeviceFamily": [1, 2],
        }
        values |= self.info
        values |= {
            "ApplicationType": self.kind,
            "CFBundleDisplayName": self.info.get("CFBundleDisplayName", self.name),
            "CFBundleIdentifier": self.bundle_id,
            "CFBundleShortVersionString": self.version,
            "CFBundleVersion": self.build,
            "DynamicDiskUsage": 0 if self.kind == "System" else 1_200_000,
            "IsAppClip": False,
            "Path": self.path,
            "StaticDiskUsage": self.size,
        }
        if self.kind == "User":
            values["Container"] = f"/private/var/mobile/Containers/Data/Application/{self.data_uuid}"
        return values

    def summary(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "type": self.kind,
            "size": self.size,
        }


# (bundle id, name, size in MB) of apps every iPad has; sizes are plausible, not measured.
SYSTEM_APPS = (
    ("com.apple.AppStore", "App Store", 20),
    ("com.apple.camera", "Camera", 25),
    ("com.apple.mobilecal", "Calendar", 30),
    ("com.apple.mobilenotes", "Notes", 40),
    ("com.apple.mobilesafari", "Safari", 35),
    ("com.apple.mobileslideshow", "Photos", 60),
    ("com.apple.Preferences", "Settings", 30),
)
SYSTEM_BUNDLE_IDS = frozenset(bundle_id for bundle_id, _, _ in SYSTEM_APPS)


def system_apps(ios_version: str) -> dict[str, App]:
    return {
        bundle_id: App(bundle_id, name, version=ios_version, build="1", kind="System", size=size * MB)
        for bundle_id, name, size in SYSTEM_APPS
    }


class PackageRefused(Exception):
    """installation_proxy refuses the package: `error` is its Error name, the message its ErrorDescription."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def reply(self) -> dict[str, Any]:
        return {"Error": self.error, "ErrorDescription": self.description}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def read_package(data: bytes, ios_version: str) -> App:
    """The app an .ipa holds, checked as installd checks it (without code signatures); PackageRefused otherwise.

    Error names are installation_proxy's own; which one a real iPad picks for a wrong platform is inferred
    (DeviceFamilyNotSupported for an app that names no iPhone or iPad family or no iPhoneOS platform)."""
    entries, bundle, info = _open_bundle(data)
    names = {entry.filename for entry in entries}
    bundle_id = info.get("CFBundleIdentifier")
    if not isinstance(bundle_id, str) or not BUNDLE_ID.match(bundle_id):
        raise PackageRefused("MissingBundleIdentifier", "The bundle's Info.plist has no valid CFBundleIdentifier.")
    build = info.get("CFBundleVersion")
    if not isinstance(build, str) or not build:
        raise PackageRefused("MissingBundleVersion", "The bundle's Info.plist has no CFBundleVersion.")
    executable = info.get("CFBundleExecutable")
    if not isinstance(executable, str) or f"Payload/{bundle}/{executable}" not in names:
        raise PackageRefused(
            "MissingBundleExecutable", f"Payload/{bundle} has no executable named by CFBundleExecutable."
        )
    platforms = info.get("CFBundleSupportedPlatforms", ["iPhoneOS"])
    families = info.get("UIDeviceFamily", [1])
    families = families if isinstance(families, list) else [families]
    if not isinstance(platforms, list) or "iPhoneOS" not in platforms or not any(f in IPAD_FAMILIES for f in families):
        raise PackageRefused(
            "DeviceFamilyNotSupported",
            f"This app is not for iPadOS (CFBundleSupportedPlatforms {platforms}, UIDeviceFamily {families}).",
        )
    minimum = info.get("MinimumOSVersion")
    if isinstance(minimum, str) and _version_tuple(minimum) > _version_tuple(ios_version):
        raise PackageRefused("DeviceOSVersionTooLow", f"This app needs iPadOS {minimum}; the iPad runs {ios_version}.")
    name = info.get("CFBundleName")
    version = info.get("CFBundleShortVersionString")
    return App(
        bundle_id,
        name if isinstance(name, str) and name else bundle.removesuffix(".app"),
        version=version if isinstance(version, str) and version else build,
        build=build,
        size=sum(entry.file_size for entry in entries if entry.filename.startswith(f"Payload/{bundle}/")),
        info={
            k: v
            for k, v in info.items()
            if k not in ("CFBundleIdentifier", "CFBundleShortVersionString", "CFBundleVersion")
        },
    )


def _open_bundle(data: bytes) -> tuple[list[zipfile.ZipInfo], str, dict[str, Any]]:
    """The archive's entries, its one Payload/*.app bundle and that bundle's Info.plist."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise PackageRefused("PackageExtractionFailed", "Failed to extract the package: not a ZIP archive.") from None
    if len(entries) > MAX_ENTRIES:
        raise PackageRefused("PackageExtractionFailed", f"The package holds more than {MAX_ENTRIES} files.")
    parts = [entry.filename.split("/") for entry in entries]
    bundles = sorted({p[1] for p in parts if len(p) > 2 and p[0] == "Payload" and p[1].endswith(".app")})
    if not bundles:
        raise PackageRefused("PackageInspectionFailed", "The package has no Payload/*.app bundle.")
    if len(bundles) > 1:
        raise PackageRefused("PackageInspectionFailed", f"The package holds more than one app: {', '.join(bundles)}.")
    bundle = bundles[0]
    plist_entry = next((e for e in entries if e.filename == f"Payload/{bundle}/Info.plist"), None)
    if plist_entry is None:
        raise PackageRefused("PackageInspectionFailed", f"Payload/{bundle} has no Info.plist.")
    if plist_entry.file_size > MAX_INFO_PLIST:
        raise PackageRefused("PackageInspectionFailed", f"Payload/{bundle}/Info.plist is larger than 1 MB.")
    try:
        info = plistlib.loads(archive.read(plist_entry))
    except Exception:
        raise PackageRefused("PackageInspectionFailed", f"Payload/{bundle}/Info.plist is not a plist.") from None
    if not isinstance(info, dict):
        raise PackageRefused("PackageInspectionFailed", f"Payload/{bundle}/Info.plist is not a dictionary.")
    return entries, bundle, info
