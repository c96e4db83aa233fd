"""com.apple.mobileactivationd on the device: activation state, session handshake, applying an activation record."""

from __future__ import annotations

import os
import plistlib
from typing import TYPE_CHECKING, Any

from stationd.emulator.activation_server import record_for_device
from stationd.emulator.ipad import VirtualDevice
from stationd.emulator.mcinstall import dep_cloud_configuration
from stationd.emulator.service import DeviceService

if TYPE_CHECKING:
    from stationd.emulator.emulator import Emulator


class ActivationConnection(DeviceService):
    """One host connection to mobileactivationd (hosts open one per command)."""

    channel = "mobileactivationd"
    key = "Command"

    async def do_GetActivationStateRequest(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"Value": self.device.activation_state}

    async def do_CreateTunnel1SessionInfoRequest(self, message: dict[str, Any]) -> dict[str, Any]:
        handshake = os.urandom(32)
        self.device.activation_session = {"handshake": handshake, "randomness": None}
        return {
            "Value": {
                "HandshakeRequestMessage": handshake,
                "UniqueDeviceID": self.device.udid,
                "SerialNumber": self.device.spec.serial,
            }
        }

    async def do_CreateTunnel1ActivationInfoRequest(self, message: dict[str, Any]) -> dict[str, Any]:
        session = self.device.activation_session
        if session is None:
            return {"Error": "No activation session: send CreateTunnel1SessionInfoRequest first."}
        try:
            answer = plistlib.loads(bytes(message.get("Value", b"")))
            signature = answer["HandshakeResponseMessage"]
        except Exception:
            return {"Error": "The DRM handshake response is not a plist from the activation server."}
        if not self.emulator.authority.verify(signature, session["handshake"]):
            return {"Error": "The DRM handshake response was not issued for this device's session."}
        session["randomness"] = os.urandom(16).hex()
        inner = {
            "ActivationRandomness": session["randomness"],
            "ActivationState": self.device.activation_state,
            "BuildVersion": self.device.spec.build_version,
            "DeviceClass": "iPad",
            "ProductType": self.device.spec.product_type,
            "ProductVersion": self.device.spec.product_version,
            "SerialNumber": self.device.spec.serial,
            "UniqueChipID": self.device.spec.ecid,
            "UniqueDeviceID": self.device.udid,
        }
        return {"Value": {"ActivationInfoXML": plistlib.dumps(inner), "FairPlaySignature": os.urandom(16)}}

    async def do_HandleActivationInfoWithSessionRequest(self, message: dict[str, Any]) -> dict[str, Any]:
        session = self.device.activation_session
        if session is None or session.get("randomness") is None:
            return {"Error": "No activation session is in progress."}
        failure = await apply_activation_record(self.emulator, self.device, message.get("Value"), session["randomness"])
        if failure:
            return {"Error": failure}
        self.device.activation_session = None
        return {"Value": {"ActivationState": self.device.activation_state}}

    async def do_DeactivateRequest(self, message: dict[str, Any]) -> dict[str, Any]:
        self.device.activation_state = "Unactivated"
        return {"Value": {}}


async def apply_activation_record(emulator: Emulator, device: VirtualDevice, raw: Any, randomness: str) -> str | None:
    """Check a record as the device would and activate; return an error message, or None on success."""
    try:
        record = record_for_device(raw)
        token_bytes = bytes(record["AccountToken"])
        token = plistlib.loads(token_bytes)
    except Exception:
        return "The activation record is malformed."
    if not emulator.authority.verify(record.get("AccountTokenSignature", b""), token_bytes):
        return "The activation record is not signed by the activation server."
    if token.get("UniqueDeviceID") != device.udid or token.get("ActivationRandomness") != randomness:
        return "The activation record was issued for another device or session."
    await emulator.pause(device.spec.latency.activation)
    device.activation_state = "Activated"
    device.activation_count += 1
    if (
        device.spec.dep is not None
        and not device.cloud_configuration
        and device.spec.behaviour.dep_fetch == "activation"
    ):
        # Apple tells an activating device that it belongs to an MDM (inferred from Setup Assistant's behaviour; the
        # other plausible reading, "only when asked", is behaviour.dep_fetch = "request").
        device.cloud_configuration = dep_cloud_configuration(device.spec.dep, device.spec.behaviour.dep_source)
    return None
