"""lockdownd on device port 62078: values, pairing (plain and supervised), TLS sessions, starting services."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

from cryptography import x509

from stationd.emulator.pkcs7 import SignatureInvalid, verify_signed_challenge
from stationd.emulator.service import DeviceService
from stationd.emulator.tls import device_tls_context

if TYPE_CHECKING:
    pass

LOCKDOWN_PORT = 62078
SERVICES = (
    "com.apple.mobile.MCInstall",
    "com.apple.mobileactivationd",
    "com.apple.mobile.installation_proxy",
    "com.apple.afc",
    "com.apple.syslog_relay",
    "com.apple.os_trace_relay",
    "com.apple.mobile.diagnostics_relay",
)
PUBLIC_DOMAINS = {"com.apple.mobile.lockdown", None}


class Drop(Exception):
    """A fault asks to drop the connection now."""


class LockdownConnection(DeviceService):
    """One host connection to lockdownd; holds its session and any pending supervision challenge."""

    channel = "lockdownd"
    key = "Request"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.session_host: str | None = None
        self.session_id: str | None = None
        self.challenge: bytes | None = None
        self.challenge_certificate: bytes | None = None

    def complete(self, request: str, reply: dict[str, Any]) -> dict[str, Any]:
        reply.setdefault("Request", request)
        return reply

    def busy(self, request: str) -> dict[str, Any]:
        return {"Request": request, "Error": "ServiceLimit"}

    def unknown(self, request: str) -> dict[str, Any]:
        return {"Request": request, "Error": "InvalidRequest"}

    async def after(self, request: str, reply: dict[str, Any]) -> bool:
        if request == "StartSession" and "Error" not in reply:
            await self._start_tls()
        return True

    async def _start_tls(self) -> None:
        record = self.device.paired_hosts[self.session_host]  # type: ignore[index]
        await self.emulator.tls_delay(self.device)
        await self.writer.start_tls(device_tls_context(self.device.private_key_pem, record))

    # -- requests -------------------------------------------------------------------------------------------------
    async def do_QueryType(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"Type": "com.apple.mobile.lockdown"}

    async def do_GetValue(self, message: dict[str, Any]) -> dict[str, Any]:
        domain, key = message.get("Domain"), message.get("Key")
        in_session = self.session_id is not None
        if domain not in PUBLIC_DOMAINS:
            if not in_session:
                return {"Error": "GetProhibited"}
            values = self.device.contents.domain(domain)
            if values is None:
                return {"Domain": domain, "Value": {}} if key is None else {"Error": "MissingValue"}
            if key is None:
                return {"Domain": domain, "Value": values}
            return {"Domain": domain, "Key": key, "Value": values[key]} if key in values else {"Error": "MissingValue"}
        values = self.device.values(in_session)
        if key is None:
            return {"Value": values}
        if key in values:
            return {"Key": key, "Value": values[key]}
        if not in_session and key in self.device.values(True):
            return {"Key": key, "Error": "GetProhibited"}
        return {"Key": key, "Error": "MissingValue"}

    async def do_SetValue(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.session_id is None:
            return {"Error": "SetProhibited"}
        key, value = message.get("Key"), message.get("Value")
        if key == "DeviceName" and isinstance(value, str) and value:
            if self.device.spec.behaviour.set_value == "apply":
                self.device.device_name = value
            return {"Key": key}
        if key == "ActivationStateAcknowledged":
            return {"Key": key}
        return {"Error": "SetProhibited"}

    async def do_Pair(self, message: dict[str, Any]) -> dict[str, Any]:
        record = message.get("PairRecord")
        options = message.get("PairingOptions") or {}
        if not isinstance(record, dict) or not record.get("HostID") or not record.get("DeviceCertificate"):
            return {"Error": "InvalidPairRecord"}
        if self.device.spec.refuse_pairing:
            return {"Error": "UserDeniedPairing"}
        if "ChallengeResponse" in options:
            if self.challenge is None:
                return {"Error": "InvalidPairRecord"}
            try:
                verify_signed_challenge(
                    options["ChallengeResponse"], self.challenge, [self.challenge_certificate or b""]
                )
            except SignatureInvalid:
                return {"Error": "UserDeniedPairing"}
            finally:
                self.challenge = None
            return self._accept_pair(record)
        offered = options.get("SupervisorCertificate")
        if offered is not None and bytes(offered) in self.device.supervisor_certificates():
            self.challenge = os.urandom(32)
            self.challenge_certificate = bytes(offered)
            return {"Error": "MCChallengeRequired", "ExtendedResponse": {"PairingChallenge": self.challenge}}
        if self.device.setup_assistant:
            return self._accept_pair(record)
        if self.device.cloud_configuration and self.device.cloud_configuration.get("AllowPairing") is False:
            return {"Error": "MCProtected"}
        if self.device.spec.passcode:
            return {"Error": "PasswordProtected"}
        if self.device.spec.trust_dialog_accepts:
            return self._accept_pair(record)
        return {"Error": "PairingDialogResponsePending"}

    def _accept_pair(self, record: dict[str, Any]) -> dict[str, Any]:
        try:
            x509.load_pem_x509_certificate(bytes(record["DeviceCertificate"]))
            x509.load_pem_x509_certificate(bytes(record["HostCertificate"]))
        except (KeyError, ValueError, TypeError):
            return {"Error": "InvalidPairRecord"}
        kept: dict[str, Any] = {
            k: record[k] for k in ("HostID", "DeviceCertificate", "HostCertificate", "RootCertificate") if k in record
        }
        self.device.paired_hosts[str(record["HostID"])] = kept
        return {"EscrowBag": os.urandom(32)}

    async def do_ValidatePair(self, message: dict[str, Any]) -> dict[str, Any]:
        host_id = (message.get("PairRecord") or {}).get("HostID")
        return {} if host_id in self.device.paired_hosts else {"Error": "InvalidHostID"}

    async def do_Unpair(self, message: dict[str, Any]) -> dict[str, Any]:
        host_id = (message.get("PairRecord") or {}).get("HostID")
        if host_id not in self.device.paired_hosts:
            return {"Error": "InvalidHostID"}
        del self.device.paired_hosts[host_id]
        return {}

    async def do_StartSession(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.session_id is not None:
            return {"Error": "SessionActive"}
        host_id = message.get("HostID")
        if host_id not in self.device.paired_hosts:
            return {"Error": "InvalidHostID"}
        self.session_host = host_id
        self.session_id = str(uuid.uuid4()).upper()
        return {"SessionID": self.session_id, "EnableSessionSSL": True}

    async def do_StopSession(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.session_id is None or message.get("SessionID") != self.session_id:
            return {"Error": "InvalidSessionID"}
        self.session_id = None
        return {"Result": "Success"}

    async def do_StartService(self, message: dict[str, Any]) -> dict[str, Any]:
        service = message.get("Service")
        if self.session_id is None:
            return {"Error": "SessionInactive"}
        if service not in SERVICES:
            return {"Service": service, "Error": "InvalidService"}
        if self.device.spec.passcode and not self.device.setup_assistant:
            return {"Service": service, "Error": "PasswordProtected"}
        record = self.device.paired_hosts.get(self.session_host)  # type: ignore[arg-type]
        if record is None:
            return {"Service": service, "Error": "InvalidHostID"}
        port = self.emulator.open_service(self.device, str(service), record)
        return {"Service": service, "Port": port, "EnableServiceSSL": True}

    async def do_EnterRecovery(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"Error": "InvalidRequest"}
