"""Pairing with the station's own host keys: made once, reused for every iPad, the root key kept at home."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from stationd.device import DeviceSession
from stationd.device.pairing import HOST_KEYS, host_keys
from stationd.emulator import Emulator, generated_spec
from stationd.identity import create_identity


@pytest.mark.anyio
async def test_one_set_of_host_keys_pairs_every_ipad_and_the_root_key_stays_home(tmp_path: Path) -> None:
    identity = create_identity(tmp_path / "identity.pem", "Pair School")
    records = tmp_path / "pairs"
    specs = [generated_spec(0), generated_spec(1)]
    async with Emulator(specs, socket_path=tmp_path / "mux", speed=0, activation_address=None) as emulator:
        for spec in specs:
            async with DeviceSession(
                spec.udid, usbmux_address=emulator.usbmux_address, pair_records=records, identity=identity
            ) as session:
                assert (await session.facts()).serial == spec.serial
        saved = [plistlib.loads((records / f"{spec.udid}.plist").read_bytes()) for spec in specs]
        on_devices = [emulator.devices[spec.udid].paired_hosts for spec in specs]
    assert (records / HOST_KEYS).stat().st_mode & 0o777 == 0o600
    assert saved[0]["HostCertificate"] == saved[1]["HostCertificate"] == host_keys(records).host_certificate_pem
    assert saved[0]["HostID"] != saved[1]["HostID"], "each pairing gets its own HostID (the erase proof needs it)"
    assert all("RootPrivateKey" not in record and "HostPrivateKey" in record for record in saved)
    assert [list(hosts) for hosts in on_devices] == [[record["HostID"]] for record in saved]


def test_host_keys_are_made_once_and_read_back(tmp_path: Path) -> None:
    made = host_keys(tmp_path / "a")
    host_keys.cache_clear()
    read = host_keys(tmp_path / "a")
    assert read.host_certificate_pem == made.host_certificate_pem
    assert read.root_certificate == made.root_certificate
    assert read.host_key_pem == made.host_key_pem
    assert host_keys(tmp_path / "b").host_certificate_pem != made.host_certificate_pem
