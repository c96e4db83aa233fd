"""Configuration profiles (.mobileconfig): validation and the Wi-Fi profile the station installs."""

from __future__ import annotations

import hashlib
import plistlib
import re
import uuid
from typing import Any

WIFI_PAYLOAD_TYPE = "com.apple.wifi.managed"
WIFI_SECURITY = ("None", "WEP", "WPA", "WPA2", "WPA3", "Any")
PASSWORD_SECURITY = ("WEP", "WPA", "WPA2", "WPA3")
WPA_SECURITY = ("WPA", "WPA2", "WPA3")
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/stationd/stationd/wifi")


class ProfileInvalid(ValueError):
    """A .mobileconfig that an iPad would refuse."""


def validate_profile(data: bytes, source: str) -> dict[str, Any]:
    """Check that `data` is a configuration profile and return its top-level dict.

    Signed profiles (CMS envelope around the plist) are accepted: the embedded plist is checked,
    the signature is not. `source` names the file or origin in error messages.
    """
    profile = _parse(_unwrap_signed(data), source)
    problems = _top_level_problems(profile)
    content = profile.get("PayloadContent")
    if isinstance(content, list):
        for index, payload in enumerate(content):
            problems.extend(_payload_problems(index, payload))
    if problems:
        raise ProfileInvalid(f"{source} is not a valid configuration profile: " + "; ".join(problems))
    return profile


def payload_types(profile: dict[str, Any]) -> list[str]:
    """The PayloadType of each payload in a validated profile."""
    return [payload["PayloadType"] for payload in profile["PayloadContent"]]


def wifi_profile(
    ssid: str,
    security: str = "WPA2",
    password: str | None = None,
    auto_join: bool = True,
    hidden: bool = False,
) -> bytes:
    """Build a .mobileconfig joining one Wi-Fi network.

    The UUIDs and identifiers derive from the SSID only, so installing the profile again (even with a new
    password) replaces the previous one instead of adding a second copy.
    """
    _check_wifi(ssid, security, password)
    slug = _slug(ssid)
    payload: dict[str, Any] = {
        "PayloadType": WIFI_PAYLOAD_TYPE,
        "PayloadVersion": 1,
        "PayloadIdentifier": f"org.stationd.wifi.{slug}.network",
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, f"payload:{ssid}")).upper(),
        "PayloadDisplayName": f"Wi-Fi ({ssid})",
        "SSID_STR": ssid,
        "EncryptionType": security,
        "AutoJoin": auto_join,
        "HIDDEN_NETWORK": hidden,
    }
    if password is not None:
        payload["Password"] = password
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"org.stationd.wifi.{slug}",
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, f"profile:{ssid}")).upper(),
        "PayloadDisplayName": f"Wi-Fi {ssid}",
        "PayloadDescription": f"Joins the Wi-Fi network {ssid}.",
        "PayloadOrganization": "stationd",
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, sort_keys=True)


def _unwrap_signed(data: bytes) -> bytes:
    """Return the plist inside a signed (DER CMS) profile, or `data` unchanged."""
    if not data.startswith(b"\x30"):
        return data
    start = data.find(b"<?xml")
    end = data.find(b"</plist>", start)
    if start < 0 or end < 0:
        start = data.find(b"bplist00")
        return data[start:] if start >= 0 else data
    return data[start : end + len(b"</plist>")]


def _parse(data: bytes, source: str) -> dict[str, Any]:
    try:
        profile = plistlib.loads(data)
    except Exception as error:  # plistlib raises several unrelated types for bad input
        raise ProfileInvalid(f"{source} is not a property list ({error.__class__.__name__}: {error})") from None
    if not isinstance(profile, dict):
        raise ProfileInvalid(f"{source} is not a configuration profile: the property list is not a dictionary")
    return profile


def _top_level_problems(profile: dict[str, Any]) -> list[str]:
    problems = []
    if profile.get("PayloadType") != "Configuration":
        problems.append(f'PayloadType must be "Configuration", found {_describe(profile.get("PayloadType"))}')
    problems.extend(_identity_problems(profile, ""))
    content = profile.get("PayloadContent")
    if not isinstance(content, list):
        problems.append(f"PayloadContent must be a list of payloads, found {_describe(content)}")
    return problems


def _payload_problems(index: int, payload: Any) -> list[str]:
    where = f"payload {index + 1}: "
    if not isinstance(payload, dict):
        return [f"{where}must be a dictionary, found {_describe(payload)}"]
    problems = []
    if not isinstance(payload.get("PayloadType"), str) or not payload["PayloadType"]:
        problems.append(f"{where}missing PayloadType")
    problems.extend(_identity_problems(payload, where))
    if payload.get("PayloadType") == WIFI_PAYLOAD_TYPE and not payload.get("SSID_STR"):
        problems.append(f"{where}Wi-Fi payload without SSID_STR (the network name)")
    return problems


def _identity_problems(item: dict[str, Any], where: str) -> list[str]:
    problems = []
    for key in ("PayloadIdentifier", "PayloadUUID"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            problems.append(f"{where}missing {key}")
    version = item.get("PayloadVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        problems.append(f"{where}PayloadVersion must be a whole number (usually 1), found {_describe(version)}")
    return problems


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value)
    return f"a {type(value).__name__}"


def _check_wifi(ssid: str, security: str, password: str | None) -> None:
    if not ssid or len(ssid.encode()) > 32:
        raise ValueError("the Wi-Fi network name (SSID) must be 1 to 32 bytes long")
    if security not in WIFI_SECURITY:
        raise ValueError(f"unknown Wi-Fi security {security!r}; expected one of {', '.join(WIFI_SECURITY)}")
    if security in PASSWORD_SECURITY and not password:
        raise ValueError(f"Wi-Fi security {security} needs a password")
    if security in WPA_SECURITY and password and not 8 <= len(password) <= 64:
        raise ValueError(f"a {security} password has 8 to 63 characters")
    if security == "None" and password:
        raise ValueError('an open network (security "None") takes no password')


def _slug(ssid: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", ssid.lower()).strip("-")
    return slug or hashlib.sha256(ssid.encode()).hexdigest()[:12]
