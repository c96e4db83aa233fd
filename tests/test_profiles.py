"""Configuration profile validation and the generated Wi-Fi profile."""

from __future__ import annotations

import plistlib
import uuid

import pytest

from stationd.identity import create_identity
from stationd.profiles import (
    WIFI_PAYLOAD_TYPE,
    ProfileInvalid,
    payload_types,
    validate_profile,
    wifi_profile,
)


def profile(**changes):
    """A valid profile dict with some top-level keys replaced (None removes the key)."""
    data = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": "org.example.test",
        "PayloadUUID": str(uuid.uuid4()),
        "PayloadContent": [
            {
                "PayloadType": "com.apple.webClip.managed",
                "PayloadVersion": 1,
                "PayloadIdentifier": "org.example.test.clip",
                "PayloadUUID": str(uuid.uuid4()),
            }
        ],
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_valid_profile_returns_its_dict():
    result = validate_profile(plistlib.dumps(profile()), "test.mobileconfig")
    assert result["PayloadIdentifier"] == "org.example.test"
    assert payload_types(result) == ["com.apple.webClip.managed"]


def test_binary_plist_is_accepted():
    data = plistlib.dumps(profile(), fmt=plistlib.FMT_BINARY)
    assert validate_profile(data, "binary")["PayloadType"] == "Configuration"


def test_not_a_plist_is_refused():
    with pytest.raises(ProfileInvalid, match="notes.txt is not a property list"):
        validate_profile(b"just some text", "notes.txt")


def test_plist_that_is_not_a_dict_is_refused():
    with pytest.raises(ProfileInvalid, match="not a dictionary"):
        validate_profile(plistlib.dumps(["a", "b"]), "list.plist")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"PayloadType": None}, 'PayloadType must be "Configuration"'),
        ({"PayloadType": "com.apple.wifi.managed"}, 'PayloadType must be "Configuration"'),
        ({"PayloadUUID": None}, "missing PayloadUUID"),
        ({"PayloadIdentifier": None}, "missing PayloadIdentifier"),
        ({"PayloadIdentifier": ""}, "missing PayloadIdentifier"),
        ({"PayloadVersion": "1"}, "PayloadVersion must be a whole number"),
        ({"PayloadContent": None}, "PayloadContent must be a list"),
        ({"PayloadContent": {"PayloadType": "x"}}, "PayloadContent must be a list"),
        ({"PayloadContent": ["text"]}, "payload 1: must be a dictionary"),
        ({"PayloadContent": [{"PayloadVersion": 1}]}, "payload 1: missing PayloadType"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason(changes, message):
    with pytest.raises(ProfileInvalid) as caught:
        validate_profile(plistlib.dumps(profile(**changes)), "bad.mobileconfig")
    assert message in str(caught.value)
    assert "bad.mobileconfig" in str(caught.value)


def test_all_problems_are_reported_together():
    data = plistlib.dumps(profile(PayloadUUID=None, PayloadIdentifier=None))
    with pytest.raises(ProfileInvalid) as caught:
        validate_profile(data, "bad")
    assert "missing PayloadUUID" in str(caught.value)
    assert "missing PayloadIdentifier" in str(caught.value)


def test_wifi_payload_needs_an_ssid():
    content = [
        {
            "PayloadType": WIFI_PAYLOAD_TYPE,
            "PayloadVersion": 1,
            "PayloadIdentifier": "x.wifi",
            "PayloadUUID": "A",
        }
    ]
    with pytest.raises(ProfileInvalid, match="SSID_STR"):
        validate_profile(plistlib.dumps(profile(PayloadContent=content)), "wifi")


def test_signed_profile_is_checked_inside_its_envelope(tmp_path):
    identity = create_identity(tmp_path / "identity.pem", "Example School")
    signed = identity.sign(plistlib.dumps(profile()))
    assert validate_profile(signed, "signed.mobileconfig")["PayloadIdentifier"] == "org.example.test"


def test_wifi_profile_is_a_valid_wifi_profile():
    data = wifi_profile("School WiFi", "WPA2", "correct horse", auto_join=True, hidden=True)
    result = validate_profile(data, "generated")
    assert result["PayloadIdentifier"] == "org.stationd.wifi.school-wifi"
    (payload,) = result["PayloadContent"]
    assert payload["PayloadType"] == WIFI_PAYLOAD_TYPE
    assert payload["SSID_STR"] == "School WiFi"
    assert payload["EncryptionType"] == "WPA2"
    assert payload["Password"] == "correct horse"
    assert payload["AutoJoin"] is True
    assert payload["HIDDEN_NETWORK"] is True


def test_wifi_profile_identity_depends_on_the_ssid_only():
    first = plistlib.loads(wifi_profile("Net", "WPA2", "password-one"))
    again = plistlib.loads(wifi_profile("Net", "WPA2", "password-two"))
    other = plistlib.loads(wifi_profile("Other", "WPA2", "password-one"))
    assert first["PayloadUUID"] == again["PayloadUUID"]
    assert first["PayloadContent"][0]["PayloadUUID"] == again["PayloadContent"][0]["PayloadUUID"]
    assert first["PayloadUUID"] != other["PayloadUUID"]
    assert wifi_profile("Net", "WPA2", "password-one") == wifi_profile("Net", "WPA2", "password-one")


def test_open_network_has_no_password_key():
    payload = plistlib.loads(wifi_profile("Guest", "None"))["PayloadContent"][0]
    assert "Password" not in payload


def test_ssid_without_letters_still_gets_an_identifier():
    identifier = plistlib.loads(wifi_profile("💡", "None"))["PayloadIdentifier"]
    assert identifier.startswith("org.stationd.wifi.") and len(identifier) > len("org.stationd.wifi.")


@pytest.mark.parametrize(
    ("ssid", "security", "password", "message"),
    [
        ("", "WPA2", "long enough", "SSID"),
        ("x" * 33, "WPA2", "long enough", "SSID"),
        ("Net", "WPA4", "long enough", "unknown Wi-Fi security"),
        ("Net", "WPA2", None, "needs a password"),
        ("Net", "None", "Zq7-secret", "takes no password"),
        ("Net", "WPA2", "Zq7", "8 to 63"),
    ],
)
def test_wifi_profile_refuses_bad_input_without_echoing_the_password(ssid, security, password, message):
    with pytest.raises(ValueError, match=message) as caught:
        wifi_profile(ssid, security, password)
    if password:
        assert password not in str(caught.value)
