"""The device layer against the in-process emulator: real pymobiledevice3 client, real TLS, real usbmuxd protocol."""

from __future__ import annotations

import asyncio
import json
import plistlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pymobiledevice3 import usbmux

from stationd import errors
from stationd.device import DeviceSession
from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import DepAssignment, Fault, generated_spec
from stationd.identity import Identity, create_identity
from stationd.pipeline.verdicts import judge_supervision

pytestmark = pytest.mark.anyio

ORG = "Example School"
SKIP = ["AppleID", "Siri", "Privacy"]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME in tmp; USBMUXD_SOCKET_ADDRESS put under monkeypatch so it is restored after DeviceSession sets it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", "/nonexistent/usbmuxd")
    return tmp_path / "home"


@pytest.fixture
def mux_dir() -> Iterator[Path]:
    """A short directory for the usbmuxd socket (UNIX socket paths are limited to ~100 characters)."""
    with tempfile.TemporaryDirectory(prefix="emu", dir="/tmp") as folder:
        yield Path(folder)


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return create_identity(tmp_path / "identity.pem", ORG)


@pytest.fixture
def pair_records(tmp_path: Path) -> Path:
    return tmp_path / "pair_records"


def emulator(mux_dir: Path, *specs) -> Emulator:
    return Emulator(list(specs), socket_path=mux_dir / "mux", speed=0.001)


def session(emu: Emulator, udid: str, pair_records: Path, identity: Identity | None) -> DeviceSession:
    return DeviceSession(udid, usbmux_address=emu.usbmux_address, pair_records=pair_records, identity=identity)


def requests_of(emu: Emulator, udid: str, request: str) -> list[str]:
    """Results of every `request` the device answered (from its request log)."""
    return [entry["result"] for entry in emu.devices[udid].request_log if entry["request"] == request]


def profile(identifier: str, payloads: list[dict], payload_uuid: str | None = None) -> bytes:
    return plistlib.dumps(
        {
            "PayloadType": "Configuration",
            "PayloadIdentifier": identifier,
            "PayloadUUID": payload_uuid or str(uuid.uuid4()),
            "PayloadVersion": 1,
            "PayloadDisplayName": identifier,
            "PayloadContent": payloads,
        }
    )


def wifi_profile() -> bytes:
    payload = {
        "PayloadType": "com.apple.wifi.managed",
        "PayloadIdentifier": "org.example.wifi.payload",
        "PayloadUUID": str(uuid.uuid4()),
        "PayloadVersion": 1,
        "SSID_STR": "School",
        "EncryptionType": "WPA2",
        "Password": "correct horse",
        "AutoJoin": True,
    }
    return profile("org.example.wifi", [payload])


def enrollment_profile(with_mdm: bool) -> bytes:
    payload_type = "com.apple.mdm" if with_mdm else "com.apple.webClip.managed"
    payload = {
        "PayloadType": payload_type,
        "PayloadIdentifier": "org.example.mdm.payload",
        "PayloadUUID": str(uuid.uuid4()),
        "PayloadVersion": 1,
    }
    return profile("org.example.mdm", [payload])


@asynccontextmanager
async def reattached(address: str, udid: str, timeout: float = 5.0) -> AsyncIterator[None]:
    """Listen to usbmuxd around the block; on leaving it, wait until `udid` detached and attached again."""
    mux = await usbmux.create_mux(usbmux_address=address)
    try:
        await mux.listen()
        yield
        detached = False
        async with asyncio.timeout(timeout):
            while True:
                await mux.receive_device_state_update()
                present = any(device.matches_udid(udid) for device in mux.devices)
                if not present:
                    detached = True
                elif detached:
                    return
    finally:
        await mux.close()


# -- connection and pairing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_facts(mux_dir: Path, pair_records: Path, transport: str) -> None:
    spec = generated_spec(0, activated=False)
    if transport == "unix":
        running = emulator(mux_dir, spec)
    else:
        running = Emulator([spec], tcp_address="127.0.0.1:0", speed=0.001)
    async with running as emu:
        address = "UNIX:" + emu.usbmux_address if transport == "unix" else emu.usbmux_address
        async with DeviceSession(spec.udid, usbmux_address=address, pair_records=pair_records, identity=None) as device:
            facts = await device.facts()
            assert await device.activation_state() == "Unactivated"
    assert facts.udid == spec.udid
    assert facts.serial == spec.serial
    assert facts.ecid == spec.ecid
    assert (facts.product_type, facts.hardware_model, facts.device_class) == ("iPad13,18", "J271AP", "iPad")
    assert (facts.product_version, facts.build_version) == (spec.product_version, spec.build_version)
    assert facts.wifi_address == spec.wifi_address
    assert facts.device_name == spec.device_name
    assert facts.activation_state == "Unactivated"
    assert json.loads(json.dumps(facts.as_dict()))["serial"] == spec.serial


async def test_pairs_in_setup_assistant_once(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        for _ in range(2):
            async with session(emu, spec.udid, pair_records, identity) as device:
                assert (await device.facts()).serial == spec.serial
        assert requests_of(emu, spec.udid, "Pair") == ["ok"]
        assert len(emu.devices[spec.udid].paired_hosts) == 1
        assert spec.udid in emu.pair_records
    assert (pair_records / f"{spec.udid}.plist").exists()


async def test_supervised_device_pairs_without_dialog(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(
        0, setup_assistant=False, supervised_by=ORG, supervisor_certificates=[identity.certificate_der]
    )
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            assert (await device.facts()).activation_state == "Activated"
        assert requests_of(emu, spec.udid, "Pair") == ["MCChallengeRequired", "ok"]


async def test_set_up_unsupervised_device_needs_trust(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0, setup_assistant=False)
    async with emulator(mux_dir, spec) as emu:
        with pytest.raises(errors.TrustPending) as caught:
            async with session(emu, spec.udid, pair_records, identity):
                pass
    assert not caught.value.transient
    assert ORG in caught.value.message and "tap Trust" in caught.value.message
    assert spec.serial in caught.value.message or spec.udid in caught.value.message


async def test_pairing_refused(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, setup_assistant=False, refuse_pairing=True)
    async with emulator(mux_dir, spec) as emu:
        with pytest.raises(errors.PairingRefused):
            async with session(emu, spec.udid, pair_records, None):
                pass


async def test_passcode_locked(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0, setup_assistant=False, passcode=True)
    async with emulator(mux_dir, spec) as emu:
        with pytest.raises(errors.PasscodeLocked) as caught:
            async with session(emu, spec.udid, pair_records, identity):
                pass
    assert "unlock it or erase it" in caught.value.message


async def test_dropped_connection_is_transient_and_a_retry_works(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, faults=[Fault("StartSession", "drop", 1)])
    async with emulator(mux_dir, spec) as emu:
        with pytest.raises(errors.ConnectionDropped) as caught:
            async with session(emu, spec.udid, pair_records, None):
                pass
        assert caught.value.transient
        async with session(emu, spec.udid, pair_records, None) as device:
            assert (await device.facts()).serial == spec.serial


async def test_unplugged_device_is_gone(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, None) as device:
            emu.unplug(spec.udid)
            with pytest.raises(errors.DeviceGone) as caught:
                await device.facts()
        assert caught.value.transient
        with pytest.raises(errors.DeviceGone):
            async with session(emu, spec.udid, pair_records, None):
                pass


async def test_erase_then_reconnect_with_stale_pair_record(
    mux_dir: Path, pair_records: Path, identity: Identity
) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            await device.mc.supervise(ORG, SKIP)
            await device.set_name("Class 3 - 01")
            async with reattached(emu.usbmux_address, spec.udid):
                await device.mc.erase()
        assert emu.devices[spec.udid].erase_count == 1
        async with session(emu, spec.udid, pair_records, identity) as device:
            facts = await device.facts()
            assert await device.mc.cloud_configuration() == {}
        assert requests_of(emu, spec.udid, "StartSession")[-2:] == ["InvalidHostID", "ok"]
        assert requests_of(emu, spec.udid, "Pair") == ["ok", "ok"]
    assert facts.activation_state == "Unactivated"
    assert facts.device_name == "iPad"


# -- activation ------------------------------------------------------------------------------------------------------
async def test_activation(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, activated=False)
    async with emulator(mux_dir, spec) as emu, httpx.AsyncClient() as http:
        async with session(emu, spec.udid, pair_records, None) as device:
            await device.activate(http, emu.activation_url)
            assert await device.activation_state() == "Activated"
            await device.activate(http, emu.activation_url)
        assert emu.devices[spec.udid].activation_count == 1


async def test_activation_lock(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, activated=False, activation_locked=True)
    async with emulator(mux_dir, spec) as emu, httpx.AsyncClient() as http:
        async with session(emu, spec.udid, pair_records, None) as device:
            with pytest.raises(errors.ActivationLocked) as caught:
                await device.activate(http, emu.activation_url)
            assert await device.activation_state() == "Unactivated"
    assert "Activation Lock is on" in caught.value.message and "Find My" in caught.value.message


async def test_activation_server_unavailable(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, activated=False)
    failing = httpx.MockTransport(lambda request: httpx.Response(503, text="busy"))
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, None) as device:
            async with httpx.AsyncClient(transport=failing) as http:
                with pytest.raises(errors.ActivationServerUnavailable) as busy:
                    await device.activate(http, emu.activation_url)
            async with httpx.AsyncClient() as http:
                with pytest.raises(errors.ActivationServerUnavailable) as unreachable:
                    await device.activate(http, "http://127.0.0.1:9/deviceservices")
    assert busy.value.transient and unreachable.value.transient


async def test_activation_record_refused_by_the_device(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, activated=False)
    forged_record = plistlib.dumps({"ActivationRecord": {"AccountToken": plistlib.dumps({}), "unbrick": True}})

    async def forging(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/drmHandshake"):
            async with httpx.AsyncClient() as real:
                answer = await real.post(str(request.url), content=request.content, headers=request.headers)
            return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)
        return httpx.Response(200, content=forged_record, headers={"Content-Type": "text/xml"})

    async with emulator(mux_dir, spec) as emu, httpx.AsyncClient(transport=httpx.MockTransport(forging)) as http:
        async with session(emu, spec.udid, pair_records, None) as device:
            with pytest.raises(errors.ActivationFailed) as caught:
                await device.activate(http, emu.activation_url)
            assert await device.activation_state() == "Unactivated"
    assert "refused its activation record" in caught.value.message


# -- supervision -----------------------------------------------------------------------------------------------------
async def test_supervise_is_idempotent(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            await device.mc.supervise(ORG, SKIP)
            await device.mc.supervise(ORG, SKIP)
            configuration = await device.mc.cloud_configuration()
        assert requests_of(emu, spec.udid, "SetCloudConfiguration") == ["ok"]
    assert configuration["IsSupervised"] is True
    assert configuration["OrganizationName"] == ORG
    assert configuration["OrganizationMagic"] == str(uuid.uuid5(uuid.NAMESPACE_DNS, ORG))
    assert configuration["SkipSetup"] == SKIP
    assert configuration["SupervisorHostCertificates"] == [identity.certificate_der]


async def test_supervised_by_another_organisation(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0, supervised_by="Other School", supervisor_certificates=[b"not ours"])
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            held = await device.mc.supervise(ORG, SKIP)
        assert requests_of(emu, spec.udid, "SetCloudConfiguration") == []
    assert held["OrganizationName"] == "Other School"
    with pytest.raises(errors.AlreadySupervised) as caught:
        judge_supervision(
            held, organization=ORG, certificate_der=identity.certificate_der, serial=spec.serial, erased=False
        )
    assert "Other School" in caught.value.message and spec.serial in caught.value.message


async def test_dep_assigned_elsewhere_after_activation(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0, activated=False, dep=DepAssignment("Regional Service"))
    async with emulator(mux_dir, spec) as emu, httpx.AsyncClient() as http:
        async with session(emu, spec.udid, pair_records, identity) as device:
            assert await device.activate(http, emu.activation_url) == "Activated"
            held = await device.mc.supervise(ORG, SKIP)
    with pytest.raises(errors.DepAssignedElsewhere) as caught:
        judge_supervision(
            held, organization=ORG, certificate_der=identity.certificate_der, serial=spec.serial, erased=True
        )
    message = caught.value.message
    assert "Regional Service" in message and f"release serial {spec.serial}" in message
    assert "erase it" not in message.lower(), "erasing cannot help: Apple hands the configuration back"


# -- profiles --------------------------------------------------------------------------------------------------------
async def test_install_profile_silently_once(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0)
    wifi = wifi_profile()
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            await device.mc.supervise(ORG, SKIP)
            await device.mc.install_profile(wifi)
            await device.mc.install_profile(wifi)
            assert await device.mc.installed_profiles() == ["org.example.wifi"]
        assert requests_of(emu, spec.udid, "InstallProfileSilent") == ["ok"]
        assert emu.devices[spec.udid].has_network


async def test_install_profile_needs_our_supervision(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            with pytest.raises(errors.NotSupervisedByUs):
                await device.mc.install_profile(wifi_profile())


async def test_malformed_profile_is_rejected(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            await device.mc.supervise(ORG, SKIP)
            with pytest.raises(errors.ProfileRejected) as caught:
                await device.mc.install_profile(b"this is not a profile")
    assert "not a property list" in caught.value.message


async def test_store_enrollment_profile(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0)
    enrollment = enrollment_profile(with_mdm=True)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, None) as device:
            assert await device.mc.stored_profile() is None
            with pytest.raises(errors.ProfileRejected) as caught:
                await device.mc.store_enrollment_profile(enrollment_profile(with_mdm=False))
            await device.mc.store_enrollment_profile(enrollment)
            assert await device.mc.stored_profile() == enrollment
    assert "MDM payload" in caught.value.message


# -- DEP -------------------------------------------------------------------------------------------------------------
async def test_dep_download_needs_network(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0, dep=DepAssignment(ORG))
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, None) as device:
            with pytest.raises(errors.NoNetwork):
                await device.mc.download_cloud_configuration()


async def test_dep_download_not_assigned(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, identity) as device:
            await device.mc.supervise(ORG, SKIP)
            await device.mc.install_profile(wifi_profile())
            held = await device.mc.download_cloud_configuration()
        assert requests_of(emu, spec.udid, "DownloadAndApplyCloudConfiguration") == ["33001"]
    assert held["OrganizationName"] == ORG, "33001 is not the verdict: the configuration the iPad holds is"


async def test_dep_download_assigned(mux_dir: Path, pair_records: Path, identity: Identity) -> None:
    dep = DepAssignment(ORG, supervisor_certificates=[identity.certificate_der])
    spec = generated_spec(0, activated=False, dep=dep)
    async with emulator(mux_dir, spec) as emu, httpx.AsyncClient() as http:
        async with session(emu, spec.udid, pair_records, identity) as device:
            await device.activate(http, emu.activation_url)
            await device.mc.supervise(ORG, SKIP)
            await device.mc.install_profile(wifi_profile())
            configuration = await device.mc.download_cloud_configuration()
        assert requests_of(emu, spec.udid, "SetCloudConfiguration") == []
    assert configuration["ConfigurationSource"] == 1
    assert configuration["OrganizationName"] == ORG
    assert configuration["ConfigurationURL"] == dep.mdm_url


async def test_set_name(mux_dir: Path, pair_records: Path) -> None:
    spec = generated_spec(0)
    async with emulator(mux_dir, spec) as emu:
        async with session(emu, spec.udid, pair_records, None) as device:
            await device.set_name("Class 3 - 07")
            assert (await device.facts()).device_name == "Class 3 - 07"
        assert emu.devices[spec.udid].device_name == "Class 3 - 07"
