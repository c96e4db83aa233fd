"""One virtual iPad: its identity, its persistent state, and the faults a scenario injects.

This module holds data and pure rules only (apps, files, battery, storage and console live in `contents`); the wire
protocols live in `usbmuxd`, `lockdownd` and one module per service, and timing (erase, reboot, re-attach) lives in
`emulator`.
"""

from __future__ import annotations

import hashlib
import plistlib
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stationd.emulator.apps import App
from stationd.emulator.battery import BatterySpec
from stationd.emulator.console import Line
from stationd.emulator.contents import Contents
from stationd.emulator.storage import StorageSpec
from stationd.identity import supervisor_certificate

# ProductType -> (HardwareModel, ChipID, marketing name). Real values of current iPads.
MODELS: dict[str, tuple[str, int, str]] = {
    "iPad13,18": ("J271AP", 0x8101, "iPad (10th generation)"),
    "iPad12,1": ("J181AP", 0x8030, "iPad (9th generation)"),
    "iPad14,1": ("J310AP", 0x8110, "iPad mini (6th generation)"),
    "iPad13,16": ("J407AP", 0x8103, "iPad Air (5th generation)"),
}
SERIAL_ALPHABET = "0123456789CDFGHJKLMNPQRTVWXY"


@dataclass
class Latency:
    """Seconds a real iPad takes for the slow steps; multiplied by the emulator's speed factor."""

    erase: float = 4.0  # from EraseDevice to the USB detach
    reboot: float = 20.0  # detached while it wipes and reboots, then re-attaches in Setup Assistant
    activation: float = 0.5  # the device's own work when it applies an activation record
    tls: float = 0.0  # extra delay before each TLS handshake ("slow TLS")
    install: float = 2.0  # installation_proxy installing an uploaded app


FAULT_ACTIONS = ("drop", "drop_reply", "error", "hang")


@dataclass
class Behaviour:
    """How this iPad acts where Apple documents nothing. Every field is inferred, not confirmed on real iPads: the
    emulator offers each plausible answer so the station can be tested against all of them."""

    erase_reply: str = "ack"  # ack: answer EraseDevice, then go down; drop: act on it, but the reply is lost
    dep_fetch: str = "activation"  # activation: a DEP-assigned iPad takes its configuration when it activates;
    # request: only when asked (DownloadAndApplyCloudConfiguration)
    dep_present: str = "accept"  # a DEP fetch over a configuration it holds: accept (apply again) or error (14002)
    dep_unassigned: str = (
        "error"  # a DEP fetch for an unassigned serial: error (33001) or silent (acknowledge, nothing)
    )
    dep_source: int = 1  # ConfigurationSource of a DEP configuration: 1 or 0
    set_value: str = "apply"  # SetValue DeviceName: apply, or ignore (acknowledge and keep the old name)
    app_install: str = "apply"  # installation_proxy Install: apply, or ignore (answer Complete, install nothing)

    CHOICES = {
        "erase_reply": ("ack", "drop"),
        "dep_fetch": ("activation", "request"),
        "dep_present": ("accept", "error"),
        "dep_unassigned": ("error", "silent"),
        "dep_source": (1, 0),
        "set_value": ("apply", "ignore"),
        "app_install": ("apply", "ignore"),
    }

    def __post_init__(self) -> None:
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"behaviour {name} must be one of {', '.join(map(str, choices))}")


@dataclass
class Fault:
    """Misbehave on a request: `request` is a lockdownd or diagnostics_relay Request, an MCInstall RequestType, an
    activation Command or an installation_proxy Command."""

    request: str
    action: str = "drop"  # drop: close the connection instead of acting; drop_reply: act, then close without a
    # reply; error: answer the protocol's "busy" error; hang: never answer
    on_try: int = 1  # the n-th time this request arrives (1-based); 0 means every time

    def __post_init__(self) -> None:
        if self.action not in FAULT_ACTIONS:
            raise ValueError(f"fault action must be one of {', '.join(FAULT_ACTIONS)}, not {self.action!r}")
        if self.on_try < 0:
            raise ValueError("fault on_try must be 0 (every time) or a try number from 1")


@dataclass
class DepAssignment:
    """The device's Automated Device Enrollment record at Apple: which organisation and MDM own it."""

    organization: str
    mdm_url: str = "https://mdm.example.invalid/dep/enroll"
    supervisor_certificates: list[bytes] = field(default_factory=list)  # DER, carried by the MDM's DEP profile
    skip_setup: list[str] = field(default_factory=list)


@dataclass
class DeviceSpec:
    """Everything a scenario says about one virtual iPad."""

    serial: str
    udid: str
    ecid: int
    product_type: str = "iPad13,18"
    product_version: str = "17.5.1"
    build_version: str = "21F90"
    device_name: str = "iPad"
    wifi_address: str = "f0:18:98:00:00:01"
    location_id: int = 0x01110000
    activated: bool = True
    setup_assistant: bool = True  # still in Setup Assistant: pairs without a trust dialog
    passcode: bool = False  # a set-up device with a passcode refuses pairing and services
    supervised_by: str | None = None  # organisation already holding a cloud configuration
    configuration_supervised: bool = True  # whether that configuration supervises the device (IsSupervised)
    allow_pairing: bool = True  # that configuration's AllowPairing: false makes a set-up device refuse new hosts
    supervisor_certificates: list[bytes] = field(default_factory=list)  # DER, of the supervising organisation
    dep: DepAssignment | None = None
    activation_locked: bool = False
    refuse_pairing: bool = False  # the person taps "Don't Trust"
    trust_dialog_accepts: bool = False  # the person taps "Trust" on a set-up device
    profiles: list[bytes] = field(default_factory=list)  # .mobileconfig payloads installed at start
    latency: Latency = field(default_factory=Latency)
    behaviour: Behaviour = field(default_factory=Behaviour)
    faults: list[Fault] = field(default_factory=list)
    detach_after: float | None = None  # unplug itself this many seconds after its first attach
    apps: list[App] = field(default_factory=list)  # user apps installed at start (system apps are always there)
    storage: StorageSpec = field(default_factory=StorageSpec)
    battery: BatterySpec = field(default_factory=BatterySpec)
    syslog: list[Line] = field(default_factory=list)  # console lines the iPad logged before the emulator started

    @property
    def hardware_model(self) -> str:
        return MODELS.get(self.product_type, ("J271AP", 0x8101, "iPad"))[0]

    @property
    def chip_id(self) -> int:
        return MODELS.get(self.product_type, ("J271AP", 0x8101, "iPad"))[1]


def location_for(index: int) -> int:
    """A LocationID for the index-th port: bus 1, hubs of ten ports (hub and port as path nibbles)."""
    hub, port = divmod(index, 10)
    return (1 << 24) | (((hub % 15) + 1) << 20) | ((port + 1) << 16)


def generated_spec(index: int, seed: str = "stationd", **overrides: Any) -> DeviceSpec:
    """A distinct, valid-looking iPad for position `index` (deterministic for a seed)."""
    rng = random.Random(f"{seed}:{index}")
    product_type = overrides.pop("product_type", "iPad13,18")
    chip = MODELS.get(product_type, ("J271AP", 0x8101, "iPad"))[1]
    ecid = rng.getrandbits(52) | (1 << 52)
    serial = "".join(rng.choice(SERIAL_ALPHABET) for _ in range(10))
    mac = ":".join(f"{b:02x}" for b in [0xF0, 0x18, 0x98, rng.getrandbits(8), rng.getrandbits(8), rng.getrandbits(8)])
    spec = DeviceSpec(
        serial=serial,
        udid=f"{chip:08X}-{ecid:016X}",
        ecid=ecid,
        product_type=product_type,
        wifi_address=mac,
        location_id=location_for(index),
        device_name=f"iPad {index + 1}",
    )
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def foreign_supervisor_certificate(organization: str) -> bytes:
    """A supervisor certificate (DER) for an organisation whose key nobody here holds, as a previous owner's."""
    certificate = supervisor_certificate(ec.generate_private_key(ec.SECP256R1()), organization)
    return certificate.public_bytes(serialization.Encoding.DER)


def profile_identifier(profile: bytes) -> str:
    """The PayloadIdentifier of a .mobileconfig (the key a device lists it under)."""
    return str(plistlib.loads(profile)["PayloadIdentifier"])


def _device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class VirtualDevice:
    """State of one virtual iPad. Survives unplugging; an erase resets it as a real erase would."""

    REQUEST_LOG_LENGTH = 500

    def __init__(self, spec: DeviceSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.contents = Contents(spec.product_version, spec.apps, spec.storage, spec.battery, spec.syslog, clock)
        self.private_key = _device_key()
        self.public_key_pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
        self.private_key_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.device_name = spec.device_name
        self.activation_state = "Activated" if spec.activated else "Unactivated"
        self.setup_assistant = spec.setup_assistant
        self.cloud_configuration: dict[str, Any] | None = None
        if spec.supervised_by:
            self.cloud_configuration = supervised_cloud_configuration(
                spec.supervised_by, spec.supervisor_certificates
            ) | {"IsSupervised": spec.configuration_supervised, "AllowPairing": spec.allow_pairing}
        self.profiles: dict[str, bytes] = {profile_identifier(p): p for p in spec.profiles}
        self.pending_profiles: dict[str, bytes] = {}  # installed without supervision: waiting for a tap on the device
        self.stored_profile: bytes | None = None
        self.provisional_nonce: bytes | None = None
        self.activation_session: dict[str, Any] | None = None
        self.paired_hosts: dict[str, dict[str, Any]] = {}  # HostID -> pair record (certificates only)
        self.wifi_power = True
        self.erase_count = 0
        self.activation_count = 0
        self.attached = False
        self.device_id: int | None = None
        self.location_id = spec.location_id
        self.status = "detached"  # detached | attached | erasing | rebooting
        self.request_log: deque[dict[str, Any]] = deque(maxlen=self.REQUEST_LOG_LENGTH)
        self._fault_counts: dict[str, int] = {}

    # -- identity -------------------------------------------------------------------------------------------------
    @property
    def udid(self) -> str:
        return self.spec.udid

    @property
    def supervised(self) -> bool:
        return bool(self.cloud_configuration and self.cloud_configuration.get("IsSupervised"))

    @property
    def organization(self) -> str | None:
        return self.cloud_configuration.get("OrganizationName") if self.cloud_configuration else None

    @property
    def has_network(self) -> bool:
        """A Wi-Fi profile with the radio on, as the emulator models network reachability."""
        return self.wifi_power and any(_is_wifi_profile(p) for p in self.profiles.values())

    def supervisor_certificates(self) -> list[bytes]:
        if not self.cloud_configuration:
            return []
        return list(self.cloud_configuration.get("SupervisorHostCertificates") or [])

    def values(self, in_session: bool) -> dict[str, Any]:
        """The lockdownd default domain; before a session only the public subset a real device gives."""
        public = {
            "BuildVersion": self.spec.build_version,
            "DeviceClass": "iPad",
            "DeviceName": self.device_name,
            "DevicePublicKey": self.public_key_pem,
            "ProductName": "iPhone OS",
            "ProductType": self.spec.product_type,
            "ProductVersion": self.spec.product_version,
            "UniqueDeviceID": self.udid,
            "WiFiAddress": self.spec.wifi_address,
            "HostAttached": True,
        }
        if not in_session:
            return public
        return public | {
            "ActivationState": self.activation_state,
            "ActivationStateAcknowledged": self.activation_state == "Activated",
            "BluetoothAddress": _shifted_mac(self.spec.wifi_address),
            "EthernetAddress": _shifted_mac(self.spec.wifi_address, 2),
            "CPUArchitecture": "arm64e",
            "ChipID": self.spec.chip_id,
            "DeviceColor": "1",
            "HardwareModel": self.spec.hardware_model,
            "HardwarePlatform": f"t{self.spec.chip_id:04x}",
            "ModelNumber": "MPQ03",
            "PasswordProtected": self.spec.passcode and not self.setup_assistant,
            "ProductionSOC": True,
            "RegionInfo": "LL/A",
            "SerialNumber": self.spec.serial,
            "TelephonyCapability": False,
            "TimeZone": "Europe/Paris",
            "UniqueChipID": self.spec.ecid,
        }

    # -- faults and logging ---------------------------------------------------------------------------------------
    def fault_for(self, request: str) -> Fault | None:
        """Count this arrival of `request` and return the fault the scenario set for it, if any."""
        count = self._fault_counts[request] = self._fault_counts.get(request, 0) + 1
        for fault in self.spec.faults:
            if fault.request == request and fault.on_try in (0, count):
                return fault
        return None

    def log(self, channel: str, request: str, result: str) -> None:
        self.request_log.append({"ts": time.time(), "channel": channel, "request": request, "result": result})

    # -- state changes --------------------------------------------------------------------------------------------
    def wipe(self) -> None:
        """What an erase leaves: unactivated, unsupervised, no profiles, no pairings, in Setup Assistant."""
        self.erase_count += 1
        self.activation_state = "Unactivated"
        self.setup_assistant = True
        self.cloud_configuration = None
        self.profiles.clear()
        self.pending_profiles.clear()
        self.stored_profile = None
        self.provisional_nonce = None
        self.activation_session = None
        self.paired_hosts.clear()
        self.wifi_power = True
        self.device_name = "iPad"
        self.contents.wipe()

    def snapshot(self) -> dict[str, Any]:
        """Full internal state for the control API (JSON-safe)."""
        cloud = None
        if self.cloud_configuration is not None:
            cloud = {k: v for k, v in self.cloud_configuration.items() if k != "SupervisorHostCertificates"} | {
                "SupervisorHostCertificates": [
                    hashlib.sha256(c).hexdigest()
                    for c in self.cloud_configuration.get("SupervisorHostCertificates", [])
                ]
            }
        spec = asdict(self.spec)
        spec.pop("profiles")
        spec["supervisor_certificates"] = [hashlib.sha256(c).hexdigest() for c in self.spec.supervisor_certificates]
        if spec.get("dep"):
            spec["dep"]["supervisor_certificates"] = [
                hashlib.sha256(c).hexdigest()
                for c in self.spec.dep.supervisor_certificates  # type: ignore[union-attr]
            ]
        return {
            "udid": self.udid,
            "serial": self.spec.serial,
            "ecid": self.spec.ecid,
            "product_type": self.spec.product_type,
            "product_version": self.spec.product_version,
            "device_name": self.device_name,
            "status": self.status,
            "attached": self.attached,
            "device_id": self.device_id,
            "location_id": self.location_id,
            "activation_state": self.activation_state,
            "activation_count": self.activation_count,
            "setup_assistant": self.setup_assistant,
            "supervised": self.supervised,
            "organization": self.organization,
            "cloud_configuration": cloud,
            "profiles": sorted(self.profiles),
            "profile_payload_types": {k: _payload_types(v) for k, v in self.profiles.items()},
            "pending_profiles": sorted(self.pending_profiles),
            "stored_profile": _profile_summary(self.stored_profile),
            "provisional_enrollment": self.provisional_nonce is not None,
            "wifi_power": self.wifi_power,
            "erase_count": self.erase_count,
            "paired_hosts": sorted(self.paired_hosts),
            **self.contents.snapshot(),
            "request_log": list(self.request_log),
            "spec": spec,
        }


def supervised_cloud_configuration(organization: str, certificates: list[bytes]) -> dict[str, Any]:
    """The cloud configuration a device supervised by `organization` holds."""
    return {
        "AllowPairing": True,
        "CloudConfigurationUIComplete": True,
        "ConfigurationSource": 2,
        "ConfigurationWasApplied": True,
        "IsMandatory": True,
        "IsMultiUser": False,
        "IsSupervised": True,
        "OrganizationMagic": str(uuid.uuid5(uuid.NAMESPACE_DNS, organization)),
        "OrganizationName": organization,
        "PostSetupProfileWasInstalled": True,
        "SkipSetup": [],
        "SupervisorHostCertificates": list(certificates),
    }


def _shifted_mac(mac: str, by: int = 1) -> str:
    parts = mac.split(":")
    parts[-1] = f"{(int(parts[-1], 16) + by) % 256:02x}"
    return ":".join(parts)


def _payload_types(profile: bytes) -> list[str]:
    try:
        return [p.get("PayloadType", "") for p in plistlib.loads(profile).get("PayloadContent", [])]
    except Exception:
        return []


def _is_wifi_profile(profile: bytes) -> bool:
    return "com.apple.wifi.managed" in _payload_types(profile)


def _profile_summary(profile: bytes | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    data = plistlib.loads(profile)
    return {
        "PayloadIdentifier": data.get("PayloadIdentifier"),
        "PayloadTypes": _payload_types(profile),
        "sha256": hashlib.sha256(profile).hexdigest(),
    }
