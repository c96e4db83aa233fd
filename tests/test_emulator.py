"""The emulator as pymobiledevice3 sees it (in-process, async API), its scenarios and its control API."""

from __future__ import annotations

import asyncio
import os
import plistlib
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import (
    BadDevError,
    CloudConfigurationAlreadyPresentError,
    ConnectionFailedError,
    GetProhibitedError,
    NotPairedError,
    PairingDialogResponsePendingError,
    ProfileError,
    SessionActiveError,
    UserDeniedPairingError,
)
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.services.mobile_activation import MobileActivationService
from pymobiledevice3.services.mobile_config import MobileConfigService

from stationd.emulator.emulator import Emulator
from stationd.emulator.ipad import DeviceSpec, Fault, Latency, generated_spec, location_for
from stationd.emulator.scenario import CONVERTERS, ScenarioError, generated_scenario, load_scenario, parse_scenario
from stationd.emulator.thread import EmulatorThread
from stationd.identity import Identity, create_identity
from stationd.usbmux import packet as usbmux_packet_io

pytestmark = pytest.mark.anyio


# -- helpers ----------------------------------------------------------------------------------------------------------
def spec(index: int = 0, **overrides: Any) -> DeviceSpec:
    return generated_spec(index, "tests", **overrides)


@asynccontextmanager
async def running(*specs: DeviceSpec, **options: Any) -> AsyncIterator[Emulator]:
    """An emulator on a free TCP port; USBMUXD_SOCKET_ADDRESS points at it while it runs, because
    pymobiledevice3 saves pair records through the default usbmuxd address, not the one it was given."""
    options.setdefault("speed", 0.001)
    previous = os.environ.get("USBMUXD_SOCKET_ADDRESS")
    async with Emulator(specs, tcp_address="127.0.0.1:0", **options) as emulator:
        os.environ["USBMUXD_SOCKET_ADDRESS"] = emulator.usbmux_address
        try:
            yield emulator
        finally:
            if previous is None:
                os.environ.pop("USBMUXD_SOCKET_ADDRESS", None)
            else:
                os.environ["USBMUXD_SOCKET_ADDRESS"] = previous


async def lockdown(emulator: Emulator, udid: str, pairs: Path, **options: Any) -> Any:
    return await create_using_usbmux(
        serial=udid, usbmux_address=emulator.usbmux_address, pairing_records_cache_folder=pairs, **options
    )


def profile(payloads: list[dict[str, Any]], identifier: str = "org.example.test") -> bytes:
    return plistlib.dumps(
        {
            "PayloadType": "Configuration",
            "PayloadIdentifier": identifier,
            "PayloadUUID": str(uuid.uuid4()).upper(),
            "PayloadVersion": 1,
            "PayloadDisplayName": identifier,
            "PayloadContent": [
                {"PayloadIdentifier": f"{identifier}.{i}", "PayloadUUID": str(uuid.uuid4()), "PayloadVersion": 1} | p
                for i, p in enumerate(payloads)
            ],
        }
    )


WIFI = profile([{"PayloadType": "com.apple.wifi.managed", "SSID_STR": "School", "EncryptionType": "WPA2"}], "org.wifi")
MDM = profile([{"PayloadType": "com.apple.mdm", "ServerURL": "https://mdm.example.org/mdm"}], "org.mdm")


@pytest.fixture
def ours(tmp_path: Path) -> Identity:
    return create_identity(tmp_path / "ours.pem", "Our School")


class RawMux:
    """A bare usbmuxd client, to see what pymobiledevice3 throws away (LocationID and the other properties)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.tag = reader, writer, 0

    @classmethod
    async def open(cls, emulator: Emulator) -> RawMux:
        host, _, port = emulator.usbmux_address.rpartition(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, body: dict[str, Any]) -> None:
        self.tag += 1
        self.writer.write(usbmux_packet_io.encode(self.tag, body))
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        with anyio.fail_after(5):
            payload = (await usbmux_packet_io.read(self.reader.readexactly)).payload
        return plistlib.loads(payload)

    async def hotplug(self) -> dict[str, Any]:
        """The next Attached or Detached message (skipping Paired notifications)."""
        while True:
            message = await self.receive()
            if message["MessageType"] in ("Attached", "Detached"):
                return message

    async def listen(self) -> None:
        await self.send({"MessageType": "Listen"})
        assert await self.receive() == {"MessageType": "Result", "Number": 0}

    def close(self) -> None:
        self.writer.close()


# -- usbmuxd ----------------------------------------------------------------------------------------------------------
async def test_usbmuxd_result_codes() -> None:
    async with running(spec()) as emulator:
        mux = await usbmux.create_mux(emulator.usbmux_address)
        with pytest.raises(BadDevError):
            await mux.connect(usbmux.MuxDevice(999, "no-such-device", "USB"), 62078)
        await mux.close()

        mux = await usbmux.create_mux(emulator.usbmux_address)
        await mux.get_device_list()
        with pytest.raises(ConnectionFailedError):
            await mux.connect(mux.devices[0], 1234)
        await mux.close()

        mux = await usbmux.create_mux(emulator.usbmux_address)
        with pytest.raises(NotPairedError):
            await mux.get_pair_record("00000000-0000000000000000")
        await mux.close()


async def test_listen_reports_attach_with_port_and_detach() -> None:
    device_spec = spec()
    async with running(device_spec) as emulator:
        mux = await RawMux.open(emulator)
        await mux.listen()
        attached = await mux.receive()
        assert attached["MessageType"] == "Attached"
        properties = attached["Properties"]
        assert properties["SerialNumber"] == device_spec.udid
        assert properties["LocationID"] == device_spec.location_id == location_for(0)
        assert properties["ProductID"] == 0x12AB
        assert properties["ConnectionSpeed"] == 480_000_000
        assert properties["USBSerialNumber"] == device_spec.udid.replace("-", "")

        emulator.unplug(device_spec.udid)
        assert await mux.receive() == {"MessageType": "Detached", "DeviceID": attached["DeviceID"]}

        emulator.plug(device_spec.udid, location_id=location_for(7))
        again = await mux.receive()
        assert again["Properties"]["LocationID"] == location_for(7)
        assert again["DeviceID"] != attached["DeviceID"]
        mux.close()


# -- lockdownd --------------------------------------------------------------------------------------------------------
async def test_values_before_and_after_session(tmp_path: Path) -> None:
    device_spec = spec()
    async with running(device_spec) as emulator:
        unpaired = await lockdown(emulator, device_spec.udid, tmp_path, autopair=False)
        assert unpaired.all_values["UniqueDeviceID"] == device_spec.udid
        assert "SerialNumber" not in unpaired.all_values
        with pytest.raises(GetProhibitedError):
            await unpaired.get_value(key="SerialNumber")
        await unpaired.close()

        paired = await lockdown(emulator, device_spec.udid, tmp_path)
        assert paired.all_values["SerialNumber"] == device_spec.serial
        assert paired.all_values["UniqueChipID"] == device_spec.ecid
        assert paired.all_values["ActivationState"] == "Activated"
        assert paired.all_values["HardwareModel"] == "J271AP"
        await paired.close()


async def test_pairing_paths(tmp_path: Path) -> None:
    setup = spec(0)
    pending = spec(1, setup_assistant=False)
    trusted = spec(2, setup_assistant=False, trust_dialog_accepts=True)
    denied = spec(3, setup_assistant=False, refuse_pairing=True)
    async with running(setup, pending, trusted, denied) as emulator:
        client = await lockdown(emulator, setup.udid, tmp_path / "a")
        assert client.paired
        await client.close()
        assert len(emulator.device(setup.udid).paired_hosts) == 1

        with pytest.raises(PairingDialogResponsePendingError):
            await lockdown(emulator, pending.udid, tmp_path / "b", pair_timeout=0)

        client = await lockdown(emulator, trusted.udid, tmp_path / "c")
        assert client.paired
        await client.close()

        with pytest.raises(UserDeniedPairingError):
            await lockdown(emulator, denied.udid, tmp_path / "d")


def _keybag(path: Path, identity: Identity, key: Any = None) -> Path:
    """A PEM keybag with the identity's certificate and `key` (the identity's own by default)."""
    key = key or identity.private_key
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(identity.certificate.public_bytes(serialization.Encoding.PEM) + pem)
    return path


async def test_supervised_pairing_challenge(tmp_path: Path, ours: Identity) -> None:
    theirs = create_identity(tmp_path / "theirs.pem", "Other School")
    device_spec = spec(
        supervised_by="Our School", supervisor_certificates=[ours.certificate_der], setup_assistant=False
    )
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path / "right", autopair=False)
        await client.pair_supervised(ours.path, timeout=0)
        assert await client.validate_pairing()
        await client.close()
        log = emulator.device(device_spec.udid).request_log
        assert [entry["result"] for entry in log if entry["request"] == "Pair"] == ["MCChallengeRequired", "ok"]

        client = await lockdown(emulator, device_spec.udid, tmp_path / "wrong", autopair=False)
        with pytest.raises(PairingDialogResponsePendingError):
            await client.pair_supervised(theirs.path, timeout=0)
        await client.close()

        stolen = _keybag(tmp_path / "stolen.pem", ours, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        client = await lockdown(emulator, device_spec.udid, tmp_path / "stolen", autopair=False)
        with pytest.raises(UserDeniedPairingError):
            await client.pair_supervised(stolen, timeout=0)
        await client.close()


# -- MCInstall --------------------------------------------------------------------------------------------------------
async def test_silent_install_needs_escalation(tmp_path: Path, ours: Identity) -> None:
    device_spec = spec(supervised_by="Our School", supervisor_certificates=[ours.certificate_der])
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with MobileConfigService(client) as service:
            reply = await service.service.send_recv_plist({"RequestType": "InstallProfileSilent", "Payload": WIFI})
            assert reply["Status"] == "Error"
            assert reply["ErrorChain"][0]["ErrorCode"] == 13001
        async with MobileConfigService(client) as service:
            await service.install_profile_silent(ours.path, WIFI)
        await client.close()
        device = emulator.device(device_spec.udid)
        assert device.snapshot()["profiles"] == ["org.wifi"]
        assert device.has_network


async def test_malformed_profile_is_refused_with_an_error_chain(tmp_path: Path) -> None:
    device_spec = spec()
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with MobileConfigService(client) as service:
            reply = await service.service.send_recv_plist({"RequestType": "InstallProfile", "Payload": b"not a plist"})
        await client.close()
        assert reply["Status"] == "Error"
        assert reply["ErrorChain"][0]["ErrorCode"] == 1000
        assert "property list" in reply["ErrorChain"][0]["LocalizedDescription"]


async def test_cloud_configuration_already_present(tmp_path: Path) -> None:
    device_spec = spec(supervised_by="Other School")
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with MobileConfigService(client) as service:
            assert (await service.get_cloud_configuration())["OrganizationName"] == "Other School"
            with pytest.raises(CloudConfigurationAlreadyPresentError):
                await service.set_cloud_configuration({"IsSupervised": True, "OrganizationName": "Our School"})
        await client.close()


async def test_store_profile_requires_an_mdm_payload(tmp_path: Path) -> None:
    device_spec = spec()
    async with running(device_spec) as emulator:
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with MobileConfigService(client) as service:
            with pytest.raises(ProfileError, match="4001"):
                await service.store_profile(WIFI)
            await service.store_profile(MDM)
            assert (await service.get_stored_profile())["ProfileData"] == MDM
        await client.close()
        assert emulator.device(device_spec.udid).snapshot()["stored_profile"]["PayloadTypes"] == ["com.apple.mdm"]


async def test_erase_detaches_and_comes_back_wiped(tmp_path: Path, ours: Identity) -> None:
    device_spec = spec(supervised_by="Our School", supervisor_certificates=[ours.certificate_der], profiles=[WIFI])
    async with running(device_spec) as emulator:
        mux = await RawMux.open(emulator)
        await mux.listen()
        first = await mux.receive()
        client = await lockdown(emulator, device_spec.udid, tmp_path)
        async with MobileConfigService(client) as service:
            assert (await service.get_profile_list())["OrderedIdentifiers"] == ["org.wifi"]
            await service.erase_device(preserve_data_plan=False, disallow_proximity_setup=False)
        await client.close()

        assert await mux.hotplug() == {"MessageType": "Detached", "DeviceID": first["DeviceID"]}
        back = await mux.hotplug()
        assert back["MessageType"] == "Attached"
        assert back["Properties"]["SerialNumber"] == device_spec.udid
        mux.close()

        snapshot = emulator.device(device_spec.udid).snapshot()
        assert snapshot["erase_count"] == 1
        assert snapshot["activation_state"] == "Unactivated"
        assert snapshot["setup_assistant"] and not snapshot["supervised"]
        assert snapshot["profiles"] == [] and snapshot["paired_hosts"] == []

        client = await lockdown(emulator, device_spec.udid, tmp_path)  # stale pair record: pairs again
        assert client.all_values["ActivationState"] == "Unactivated"
        await client.close()


async def test_faults_drop_on_first_try_then_succeed(tmp_path: Path) -> None:
    faults = [Fault("StartSession", "drop", 1), Fault("EraseDevice", "drop", 1)]
    device_spec = spec(faults=faults, latency=Latency(erase=1000))  # stays "erasing" for a second at this speed
    async with running(device_spec) as emulator:
        device = emulator.device(device_spec.udid)
        try:
            client = await lockdown(emulator, device_spec.udid, tmp_path)
        except SessionActiveError:  # pymobiledevice3 reconnects, opens a session, then resends StartSession
            client = await lockdown(emulator, device_spec.udid, tmp_path)
        assert client.paired
        sessions = [e["result"] for e in device.request_log if e["request"] == "StartSession"]
        assert sessions[0] == "fault:drop" and "ok" in sessions[1:]

        async with MobileConfigService(client) as service:
            await service.erase_device(False, False)  # the drop looks like success to pymobiledevice3
        assert device.erase_count == 0 and device.status == "attached"
        async with MobileConfigService(client) as service:
            await service.erase_device(False, False)
        await client.close()
        assert device.status == "erasing"


# -- activation -------------------------------------------------------------------------------------------------------
async def _activation_response(emulator: Emulator, udid: str, pairs: Path) -> tuple[Any, httpx.Response]:
    """Relay a device's activation request to the fake server, as a host does."""
    client = await lockdown(emulator, udid, pairs)
    activation = MobileActivationService(client)
    blob = await activation.create_activation_session_info()
    async with httpx.AsyncClient(base_url=emulator.activation_url or "") as http:
        handshake = await http.post(
            "/drmHandshake", content=plistlib.dumps(blob), headers={"Content-Type": "application/x-apple-plist"}
        )
        info = await activation.create_activation_info_with_session(handshake.content)
        response = await http.post("/deviceActivation", data={"activation-info": plistlib.dumps(info).decode()})
    return activation, response


async def test_activation_and_activation_lock(tmp_path: Path) -> None:
    free = spec(0, activated=False)
    locked = spec(1, activated=False, activation_locked=True)
    async with running(free, locked) as emulator:
        activation, response = await _activation_response(emulator, free.udid, tmp_path)
        assert response.headers["content-type"].startswith("text/xml")
        reply = await activation.activate_with_session(response.content, response.headers)
        assert reply["Value"]["ActivationState"] == "Activated"
        assert await activation.state() == "Activated"
        await activation.lockdown.close()

        activation, response = await _activation_response(emulator, locked.udid, tmp_path)
        assert response.headers["content-type"].startswith("application/x-buddyml")
        assert "Activation Lock" in response.text and locked.serial in response.text
        assert await activation.state() == "Unactivated"
        await activation.lockdown.close()


# -- scenarios --------------------------------------------------------------------------------------------------------
EXAMPLE = """
speed = 0.05
seed = "demo"
[defaults]
product_type = "iPad13,18"
[[device]]
count = 3
activated = false
latency = { erase = 4, reboot = 20, activation = 0.5, tls = 0 }
[[device]]
serial = "DMPXK2ABCD"
activation_locked = true
[[device]]
supervised_by = "Other School"
[[device]]
supervised_by = "Our School"
supervisor_certificate = "ours.pem"
setup_assistant = false
[[device]]
dep = { organization = "Other District", mdm_url = "https://mdm.other.example/enroll" }
faults = [ { request = "StartSession", action = "drop", on_try = 1 },
           { request = "EraseDevice", action = "drop", on_try = 1 } ]
detach_after = 30
profiles = ["wifi.mobileconfig"]
"""


def test_scenario_example(tmp_path: Path, ours: Identity) -> None:
    (tmp_path / "wifi.mobileconfig").write_bytes(WIFI)
    (tmp_path / "scenario.toml").write_text(EXAMPLE)
    scenario = load_scenario(tmp_path / "scenario.toml")
    assert (scenario.speed, scenario.seed, len(scenario.specs)) == (0.05, "demo", 7)
    first, locked, foreign, supervised, dep = scenario.specs[0], *scenario.specs[3:]
    assert [s.location_id for s in scenario.specs] == [location_for(i) for i in range(7)]
    assert not first.activated and first.latency.reboot == 20 and first.product_type == "iPad13,18"
    assert locked.serial == "DMPXK2ABCD" and locked.activation_locked and locked.udid.startswith("00008101-")
    assert foreign.supervised_by == "Other School" and len(foreign.supervisor_certificates) == 1
    assert supervised.supervisor_certificates == [ours.certificate_der] and not supervised.setup_assistant
    assert dep.dep is not None and dep.dep.organization == "Other District"
    assert [(f.request, f.action, f.on_try) for f in dep.faults] == [
        ("StartSession", "drop", 1),
        ("EraseDevice", "drop", 1),
    ]
    assert dep.detach_after == 30 and dep.profiles == [WIFI]
    assert load_scenario(tmp_path / "scenario.toml").specs[0].udid == first.udid  # deterministic per seed


def test_scenario_explicit_identity_and_generated_scenario() -> None:
    tables = [{"ecid": 0x1234, "location_id": 0x02110000}, {"udid": "00008101-00000000000ABCDE"}]
    scenario = parse_scenario({"device": tables})
    assert scenario.specs[0].udid == "00008101-0000000000001234"
    assert scenario.specs[0].location_id == 0x02110000
    assert scenario.specs[1].ecid == 0xABCDE
    generated = generated_scenario(3, speed=0.5, seed="x")
    assert (generated.speed, len(generated.specs)) == (0.5, 3)
    assert len({s.serial for s in generated.specs}) == 3
    assert {f.name for f in fields(DeviceSpec)} <= set(CONVERTERS)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"speedy": 1}, "speedy: unknown key; did you mean speed?"),
        ({"device": [{}, {"activate": True}]}, "[[device]] #2: activate: unknown key; did you mean activated?"),
        ({"device": [{"activated": "yes"}]}, "[[device]] #1: activated: must be true or false"),
        ({"device": [{"latency": {"erase": -1}}]}, "latency.erase: must be a number of seconds"),
        (
            {"device": [{"faults": [{"request": "Pair", "action": "explode"}]}]},
            'faults[0].action: must be one of "drop", "drop_reply", "error"',
        ),
        ({"device": [{"faults": [{"action": "drop"}]}]}, "faults[0].request: is missing"),
        ({"device": [{"serial": "A"}, {"serial": "A"}]}, "[[device]] #2: serial: duplicate serial A"),
        ({"device": [{"udid": "U-1"}, {"count": 2}, {"udid": "U-1"}]}, "[[device]] #3: udid: duplicate udid U-1"),
        ({"device": [{"count": 2, "serial": "A"}]}, "serial: count = 2 would give every device the same serial"),
        ({"device": [{"supervisor_certificate": "x.pem"}]}, "cannot read"),
        ({"device": [{"supervised_by": "A", "supervisor_certificate": "ours.pem"}, {"passcode": False}]}, None),
        ({"defaults": {"passcode": 1}}, "defaults.passcode: must be true or false"),
        ({"device": [{"wifi_address": "nope"}]}, "wifi_address: must be a MAC address"),
        ({"device": [{"profiles": ["<plist><dict/></plist>"]}]}, "profiles[0]: The profile is missing the field"),
        ({"device": [{"dep": {"mdm_url": "https://x"}}]}, "dep.organization: is missing"),
    ],
)
def test_scenario_errors_name_the_key_and_device(
    tmp_path: Path, ours: Identity, data: dict[str, Any], expected: str | None
) -> None:
    if expected is None:
        assert len(parse_scenario(data, tmp_path).specs) == 2
        return
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, tmp_path, "s.toml")
    assert str(caught.value).startswith("s.toml: ")
    assert expected in str(caught.value)


def test_scenario_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("speed = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "bad.toml")
    with pytest.raises(ScenarioError, match="cannot read the scenario"):
        load_scenario(tmp_path / "missing.toml")
    (tmp_path / "cert.toml").write_text('[[device]]\nsupervised_by = "A"\nsupervisor_certificate = "bad.toml"\n')
    with pytest.raises(ScenarioError, match=r"#1: supervisor_certificate: is not a certificate"):
        load_scenario(tmp_path / "cert.toml")


# -- control API ------------------------------------------------------------------------------------------------------
async def test_control_api() -> None:
    first = spec()
    async with (
        running(first, control_address="127.0.0.1:0", seed="tests") as emulator,
        httpx.AsyncClient(base_url=emulator.control_url or "", timeout=10) as http,
    ):
        summary = (await http.get("/")).json()
        assert summary["usbmuxd"] == emulator.usbmux_address
        assert summary["activation_url"] == emulator.activation_url
        assert (summary["devices"], summary["attached"], summary["speed"]) == (1, 1, 0.001)

        listed = (await http.get("/devices")).json()
        assert [d["udid"] for d in listed] == [first.udid]
        one = (await http.get(f"/devices/{first.udid}")).json()
        assert one["serial"] == first.serial and one["attached"] and one["spec"]["latency"]["erase"] == 4.0

        missing = await http.get("/devices/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        assert (await http.post("/devices/nope/unplug", json={})).status_code == 404
        assert (await http.post("/devices/nope/plug", json={})).status_code == 404

        created = await http.post("/devices", json={})
        assert created.status_code == 201
        assert created.json()["udid"] == spec(1).udid and created.json()["attached"]
        body = {"serial": "LOCKED1", "activated": False, "activation_locked": True}
        locked = await http.post("/devices", json=body)
        assert locked.status_code == 201
        assert locked.json()["activation_state"] == "Unactivated" and locked.json()["spec"]["activation_locked"]

        for body, message in [
            ({"activated": "yes"}, "activated: must be true or false"),
            ({"serial": "LOCKED1"}, "duplicate serial LOCKED1"),
            ({"colour": "blue"}, "colour: unknown key"),
            ({"profiles": ["wifi.mobileconfig"]}, "not a file name"),
            ([1, 2], "must be a JSON object"),
        ]:
            refused = await http.post("/devices", json=body)
            assert refused.status_code == 400 and message in refused.json()["error"], refused.text

        unplugged = (await http.post(f"/devices/{first.udid}/unplug", json={})).json()
        assert not unplugged["attached"] and unplugged["device_id"] is None
        plugged = (await http.post(f"/devices/{first.udid}/plug", json={"location_id": location_for(9)})).json()
        assert plugged["attached"] and plugged["location_id"] == location_for(9)
        bad = await http.post(f"/devices/{first.udid}/plug", json={"location_id": "left"})
        assert bad.status_code == 400 and "location_id" in bad.json()["error"]
        assert (await http.get("/")).json()["devices"] == 3


def test_control_address_must_be_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Emulator([], tcp_address="127.0.0.1:0", control_address="0.0.0.0:7780")


def test_emulator_thread() -> None:
    device_spec = spec()
    with EmulatorThread([device_spec], speed=0) as thread:
        assert thread.running and thread.usbmux_address and thread.activation_url and thread.control_url
        snapshot = httpx.get(f"{thread.control_url}/devices/{device_spec.udid}").json()
        assert snapshot["attached"]
        thread.call(thread.emulator.unplug, device_spec.udid)
        assert not thread.call(lambda: thread.emulator.device(device_spec.udid).attached)
        host, _, port = thread.usbmux_address.rpartition(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    assert not thread.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)
