"""Reading an .ipa on the station: which app it holds, and whether an iPad can take it at all.

An .ipa is a ZIP archive with one `Payload/<Name>.app/Info.plist`. `check-config` reads every file in
`[apps] install` this way, so a file that is not an app, or an app built for another platform (a Mac, an Apple TV,
the Simulator), is refused with its path before any iPad is plugged in. Code signatures are the iPad's to judge.
"""

from __future__ import annotations

import plistlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_INFO_PLIST = 1024 * 1024  # bytes: an Info.plist is a few kilobytes; a larger one is not read
IPAD_FAMILIES = {1, 2}  # UIDeviceFamily: 1 iPhone (runs on iPad too), 2 iPad
BUNDLE = re.compile(r"^Payload/([^/]+\.app)/Info\.plist$")


class IpaInvalid(Exception):
    """The file cannot be installed on an iPad; the message names the file and why."""


@dataclass(frozen=True)
class Package:
    """The app an .ipa holds."""

    path: Path
    bundle_id: str
    version: str  # CFBundleShortVersionString (the build when there is none)
    build: str  # CFBundleVersion
    name: str
    app_store: bool  # it carries iTunesMetadata.plist: downloaded from the App Store

    def matches(self, app: dict[str, Any] | None) -> bool:
        """The iPad lists this very version (an app entry from `session.apps.installed`)."""
        return app is not None and app.get("version") == self.version and app.get("build") == self.build


def read_package(path: Path) -> Package:
    """The app in the .ipa at `path`; IpaInvalid when an iPad could not install it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            plists = [name for name in names if BUNDLE.match(name)]
            if len(plists) != 1:
                found = "no Payload/<Name>.app/Info.plist" if not plists else "more than one app in Payload/"
                raise IpaInvalid(f"{path} is not an iPad app: it holds {found}.")
            entry = archive.getinfo(plists[0])
            if entry.file_size > MAX_INFO_PLIST:
                raise IpaInvalid(f"{path} is not an iPad app: its Info.plist is larger than 1 MB.")
            data = archive.read(entry)
            bundle = plists[0].split("/")[1]
    except zipfile.BadZipFile:
        raise IpaInvalid(f"{path} is not an .ipa: it is not a ZIP archive.") from None
    except OSError as error:
        raise IpaInvalid(f"cannot read {path}: {error.strerror or error}") from None
    try:
        info = plistlib.loads(data)
    except Exception:
        raise IpaInvalid(f"{path} is not an iPad app: its Info.plist cannot be read.") from None
    if not isinstance(info, dict):
        raise IpaInvalid(f"{path} is not an iPad app: its Info.plist is not a dictionary.")
    return _package(path, info, bundle, "iTunesMetadata.plist" in names)


def _package(path: Path, info: dict[str, Any], bundle: str, app_store: bool) -> Package:
    bundle_id, build = info.get("CFBundleIdentifier"), info.get("CFBundleVersion")
    if not isinstance(bundle_id, str) or not bundle_id:
        raise IpaInvalid(f"{path} is not an iPad app: its Info.plist has no CFBundleIdentifier.")
    if not isinstance(build, str) or not build:
        raise IpaInvalid(f"{path} is not an iPad app: its Info.plist has no CFBundleVersion.")
    platforms = info.get("CFBundleSupportedPlatforms", ["iPhoneOS"])
    families = info.get("UIDeviceFamily", [1])
    families = families if isinstance(families, list) else [families]
    if not isinstance(platforms, list) or "iPhoneOS" not in platforms:
        raise IpaInvalid(f"{path} is built for {_listed(platforms)}, not for iPad (iPhoneOS).")
    if not IPAD_FAMILIES & set(families):
        raise IpaInvalid(f"{path} is built for devices {_listed(families)} (UIDeviceFamily), not for iPad (1 or 2).")
    version, name = info.get("CFBundleShortVersionString"), info.get("CFBundleDisplayName") or info.get("CFBundleName")
    return Package(
        path=path,
        bundle_id=bundle_id,
        version=version if isinstance(version, str) and version else build,
        build=build,
        name=name if isinstance(name, str) and name else bundle.removesuffix(".app"),
        app_store=app_store,
    )


def _listed(values: Any) -> str:
    return ", ".join(map(str, values)) if isinstance(values, list) and values else repr(values)
