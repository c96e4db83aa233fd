"""com.apple.mobile.MCInstall on the device: profiles, cloud configuration (supervision), DEP, erase."""

from __future__ import annotations

import os
import plistlib
from typing import TYPE_CHECKING, Any

from stationd.emulator.pkcs7 import SignatureInvalid, verify_signed_challenge
from stationd.emulator.service import CloseConnection, DeviceService

if TYPE_CHECKING:
    pass

# Error codes of the MCInstall / MCCloudConfiguration domains as devices report them.
SETUP_FINISHED = 14001
CLOUD_CONFIGURATION_ALREADY_PRESENT = 14002
CLOUD_CONFIGURATION_NOT_AVAILABLE = 33001
NO_NETWORK = 33002
PROFILE_MALFORMED = 1000
PROFILE_MISSING_FIELD = 1003
PROFILE_NOT_FOUND = 1001
NOT_SUPERVISED = 13002
NOT_ESCALATED = 13001
BAD_CHALLENGE_RESPONSE = 13003
MDM_PAYLOAD_MISSING = 4001
INVALID_REQUEST = 1


def error(code: int, domain: str, description: str) -> dict[str, Any]:
    """An MCInstall failure reply, in the device's ErrorChain shape."""
    return {
        "Status": "Error",
        "ErrorChain": [
            {
                "ErrorCode": code,
                "ErrorDomain": domain,
                "LocalizedDescription": description,
                "USEnglishDescription": description,
            }
        ],
    }


def parse_profile(data: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Validate a .mobileconfig like a device does: return (profile, None) or (None, error reply)."""
    if not isinstance(data, (bytes, bytearray)):
        return None, error(PROFILE_MALFORMED, "MCProfileErrorDomain", "The profile is missing or is not data.")
    try:
        profile = plistlib.loads(bytes(data))
    except Exception:
        return None, error(
            PROFILE_MALFORMED, "MCProfileErrorDomain", "The profile cannot be read: it is not a property list."
        )
    if not isinstance(profile, dict):
        return None, error(PROFILE_MALFORMED, "MCProfileErrorDomain", "The profile is not a dictionary.")
    for field in ("PayloadType", "PayloadUUID", "PayloadIdentifier"):
        if not isinstance(profile.get(field), str) or not profile.get(field):
            return None, error(
                PROFILE_MISSING_FIELD, "MCProfileErrorDomain", f"The profile is missing the field {field}."
            )
    if profile["PayloadType"] != "Configuration":
        return None, error(PROFILE_MALFORMED, "MCProfileErrorDomain", "The profile's PayloadType is not Configuration.")
    content = profile.get("PayloadContent", [])
    if not isinstance(content, list) or not all(isinstance(p, dict) and p.get("PayloadType") for p in content):
        return None, error(
            PROFILE_MALFORMED, "MCProfileErrorDomain", "The profile's PayloadContent is not a list of payloads."
        )
    return profile, None


class MCInstallConnection(DeviceService):
    """One host connection to MCInstall; escalation (supervisor proof) lasts for this connection only."""

    channel = "MCInstall"
    key = "RequestType"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.challenge: bytes | None = None
        self.challenge_certificate: bytes | None = None
        self.escalated = False

    def busy(self, request: str) -> dict[str, Any]:
        return error(INVALID_REQUEST, "MCInstallationErrorDomain", "The device is busy.")

    def unknown(self, request: str) -> dict[str, Any]:
        return error(INVALID_REQUEST, "MCInstallationErrorDomain", f"Unknown request {request!r}.")

    def outcome(self, reply: dict[str, Any]) -> str:
        return "ok" if reply.get("Status") == "Acknowledged" else str(reply["ErrorChain"][0]["ErrorCode"])

    async def after(self, request: str, reply: dict[str, Any]) -> bool:
        return not (request == "EraseDevice" and reply.get("Status") == "Acknowledged")

    @staticmethod
    def ok(**values: Any) -> dict[str, Any]:
        return {"Status": "Acknowledged", **values}

    # -- handshake and supervision --------------------------------------------------------------------------------
    async def do_HelloHostIdentifier(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.ok(Identifier=self.device.udid)

    async def do_Flush(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.ok()

    async def do_Escalate(self, message: dict[str, Any]) -> dict[str, Any]:
        certificate = message.get("SupervisorCertificate")
        if not self.device.supervised:
            return error(NOT_SUPERVISED, "MCInstallationErrorDomain", "The device is not supervised.")
        if certificate is None or bytes(certificate) not in self.device.supervisor_certificates():
            return error(
                NOT_SUPERVISED, "MCInstallationErrorDomain", "The certificate is not a supervisor of this device."
            )
        self.challenge = os.urandom(8)
        self.challenge_certificate = bytes(certificate)
        return self.ok(Challenge=self.challenge)

    async def do_EscalateResponse(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.challenge is None:
            return error(BAD_CHALLENGE_RESPONSE, "MCInstallationErrorDomain", "No escalation challenge is pending.")
        try:
            verify_signed_challenge(
                message.get("SignedRequest", b""), self.challenge, [self.challenge_certificate or b""]
            )
        except SignatureInvalid as e:
            return error(
                BAD_CHALLENGE_RESPONSE, "MCInstallationErrorDomain", f"The challenge response is invalid: {e}."
            )
        finally:
            self.challenge = None
        self.escalated = True
        return self.ok()

    async def do_ProceedWithKeybagMigration(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.ok()

    # -- profiles -------------------------------------------------------------------------------------------------
    async def do_GetProfileList(self, message: dict[str, Any]) -> dict[str, Any]:
        manifest, metadata = {}, {}
        for identifier, data in self.device.profiles.items():
            profile = plistlib.loads(data)
            manifest[identifier] = {"Description": profile.get("PayloadDisplayName", identifier), "IsActive": True}
            metadata[identifier] = {
                "PayloadDisplayName": profile.get("PayloadDisplayName", identifier),
                "PayloadRemovalDisallowed": bool(profile.get("PayloadRemovalDisallowed", False)),
                "PayloadUUID": profile["PayloadUUID"],
                "PayloadVersion": profile.get("PayloadVersion", 1),
            }
        return self.ok(
            OrderedIdentifiers=list(self.device.profiles), ProfileManifest=manifest, ProfileMetadata=metadata
        )

    async def do_InstallProfile(self, message: dict[str, Any]) -> dict[str, Any]:
        profile, failure = parse_profile(message.get("Payload"))
        if failure:
            return failure
        # In Setup Assistant there is no Settings app to approve a profile: it installs at once (inferred from
        # Configurator installing Wi-Fi before DEP enrollment). A set-up device waits for the person to approve.
        target = self.device.profiles if self.device.setup_assistant else self.device.pending_profiles
        target[profile["PayloadIdentifier"]] = bytes(message["Payload"])  # type: ignore[index]
        return self.ok()

    async def do_InstallProfileSilent(self, message: dict[str, Any]) -> dict[str, Any]:
        if not self.escalated:
            return error(
                NOT_ESCALATED, "MCInstallationErrorDomain", "Silent installation needs a supervisor escalation first."
            )
        profile, failure = parse_profile(message.get("Payload"))
        if failure:
            return failure
        self.device.profiles[profile["PayloadIdentifier"]] = bytes(message["Payload"])  # type: ignore[index]
        return self.ok()

    async def do_RemoveProfile(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            identifier = plistlib.loads(bytes(message.get("ProfileIdentifier", b""))).get("PayloadIdentifier")
        except Exception:
            return error(PROFILE_MALFORMED, "MCProfileErrorDomain", "ProfileIdentifier is not a property list.")
        if identifier not in self.device.profiles:
            return error(PROFILE_NOT_FOUND, "MCProfileErrorDomain", f"No profile {identifier!r} is installed.")
        del self.device.profiles[identifier]
        return self.ok()

    async def do_StoreProfile(self, message: dict[str, Any]) -> dict[str, Any]:
        profile, failure = parse_profile(message.get("ProfileData"))
        if failure:
            return failure
        if message.get("Purpose") != "PostSetupInstallation":
            return error(INVALID_REQUEST, "MCInstallationErrorDomain", "Unknown profile purpose.")
        if not any(p.get("PayloadType") == "com.apple.mdm" for p in profile["PayloadContent"]):  # type: ignore[index]
            return error(
                MDM_PAYLOAD_MISSING, "MCInstallationErrorDomain", "The profile does not contain an MDM payload."
            )
        self.device.stored_profile = bytes(message["ProfileData"])
        return self.ok()

    async def do_GetStoredProfile(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.device.stored_profile is None:
            return error(PROFILE_NOT_FOUND, "MCProfileErrorDomain", "No profile is stored.")
        return self.ok(ProfileData=self.device.stored_profile)

    # -- cloud configuration --------------------------------------------------------------------------------------
    async def do_GetCloudConfiguration(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.ok(CloudConfiguration=self.device.cloud_configuration or {})

    async def do_SetCloudConfiguration(self, message: dict[str, Any]) -> dict[str, Any]:
        configuration = message.get("CloudConfiguration")
        if self.device.cloud_configuration:
            return error(
                CLOUD_CONFIGURATION_ALREADY_PRESENT,
                "MCCloudConfigErrorDomain",
                "The cloud configuration is already present.",
            )
        if not isinstance(configuration, dict):
            return error(INVALID_REQUEST, "MCCloudConfigErrorDomain", "CloudConfiguration is not a dictionary.")
        if not self.device.setup_assistant:
            return error(SETUP_FINISHED, "MCCloudConfigErrorDomain", "The device has finished Setup Assistant.")
        applied = dict(configuration)
        if not applied.get("ConfigurationURL"):
            applied["ConfigurationWasApplied"] = True
        self.device.cloud_configuration = applied
        return self.ok()

    async def do_DownloadAndApplyCloudConfiguration(self, message: dict[str, Any]) -> dict[str, Any]:
        dep, behaviour = self.device.spec.dep, self.device.spec.behaviour
        if not self.device.has_network:
            return error(NO_NETWORK, "MCCloudConfigErrorDomain", "The device has no network connection.")
        if self.device.cloud_configuration and behaviour.dep_present == "error":
            return error(
                CLOUD_CONFIGURATION_ALREADY_PRESENT,
                "MCCloudConfigErrorDomain",
                "The cloud configuration is already present.",
            )
        if dep is None:
            if behaviour.dep_unassigned == "silent":
                return self.ok()
            return error(
                CLOUD_CONFIGURATION_NOT_AVAILABLE,
                "MCCloudConfigErrorDomain",
                "The configuration for your iPad is not available.",
            )
        if (
            self.device.cloud_configuration
            and self.device.cloud_configuration.get("OrganizationName") != dep.organization
        ):
            return error(
                CLOUD_CONFIGURATION_ALREADY_PRESENT,
                "MCCloudConfigErrorDomain",
                "The cloud configuration is already present.",
            )
        self.device.cloud_configuration = dep_cloud_configuration(dep, behaviour.dep_source)
        return self.ok()

    async def do_EstablishProvisionalEnrollment(self, message: dict[str, Any]) -> dict[str, Any]:
        nonce = message.get("Nonce")
        if not isinstance(nonce, (bytes, bytearray)) or not nonce:
            return error(INVALID_REQUEST, "MCInstallationErrorDomain", "A nonce is required.")
        self.device.provisional_nonce = bytes(nonce)
        return self.ok()

    async def do_SetWiFiPowerState(self, message: dict[str, Any]) -> dict[str, Any]:
        self.device.wifi_power = bool(message.get("PowerState"))
        return self.ok()

    async def do_EraseDevice(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.device.spec.passcode and not self.device.setup_assistant:
            return error(INVALID_REQUEST, "MCInstallationErrorDomain", "The device is locked with a passcode.")
        self.emulator.erase(self.device)
        if self.device.spec.behaviour.erase_reply == "drop":
            # It acts on the request, but the link drops before the reply leaves (inferred as plausible).
            raise CloseConnection("erasing; reply dropped")
        return self.ok()


def dep_cloud_configuration(dep: Any, source: int = 1) -> dict[str, Any]:
    """The cloud configuration Apple hands a device that is assigned to an MDM (`source`: its ConfigurationSource,
    1 or 0: which one real iPads report is not documented)."""
    return {
        "AllowPairing": True,
        "CloudConfigurationUIComplete": False,
        "ConfigurationSource": source,
        "ConfigurationURL": dep.mdm_url,
        "ConfigurationWasApplied": True,
        "IsMDMUnremovable": True,
        "IsMandatory": True,
        "IsMultiUser": False,
        "IsSupervised": True,
        "OrganizationName": dep.organization,
        "SkipSetup": list(dep.skip_setup),
        "SupervisorHostCertificates": list(dep.supervisor_certificates),
    }
