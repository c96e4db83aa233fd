"""com.apple.mobile.MCInstall: cloud configuration (supervision), profiles, the stored enrollment profile, DEP, erase.

One service connection serves every MCInstall request of a session (a TLS handshake each time would be most of the
station's CPU); it is reopened only when the iPad drops it. Escalation (the supervisor proof for silent installs)
lasts as long as that connection. Every public method raises only `StationError` subclasses.
"""

from __future__ import annotations

import plistlib
import uuid
from typing import TYPE_CHECKING, Any

from pymobiledevice3.service_connection import ServiceConnection

from stationd import errors
from stationd.device import translate

if TYPE_CHECKING:
    from stationd.device.session import DeviceSession, SupervisorIdentity

SERVICE = "com.apple.mobile.MCInstall"
POST_SETUP = "PostSetupInstallation"
DEP_VERDICT_CODES = {translate.CLOUD_CONFIGURATION_PRESENT, translate.CLOUD_CONFIGURATION_NOT_AVAILABLE}


class MCInstall:
    """The MCInstall client of one paired session (`session.mc`)."""

    def __init__(self, session: DeviceSession) -> None:
        self.session = session
        self._service: ServiceConnection | None = None
        self._escalated = False

    async def close(self) -> None:
        service, self._service, self._escalated = self._service, None, False
        if service is not None:
            try:
                await service.close()
            except Exception:  # the iPad may be gone already; nothing is left to release
                pass

    async def _call(self, step: str, request: str, **fields: Any) -> dict[str, Any]:
        """One request and its reply, on the session's connection (opened, or reopened after a drop)."""
        try:
            async with self.session.guard(step):
                if self._service is None:
                    self._service = await self.session.lockdown.start_lockdown_service(SERVICE)
                return await self._service.send_recv_plist({"RequestType": request, **fields})
        except errors.StationError:
            await self.close()
            raise

    async def _ask(self, step: str, request: str, profile: bool = False, **fields: Any) -> dict[str, Any]:
        """One request; anything but `Status: Acknowledged` becomes a StationError."""
        reply = await self._call(step, request, **fields)
        if reply.get("Status") != "Acknowledged":
            raise translate.mcinstall_error(reply, self.session.subject, step, profile)
        return reply

    async def _cloud_configuration(self, step: str) -> dict[str, Any]:
        reply = await self._ask(step, "GetCloudConfiguration")
        return dict(reply.get("CloudConfiguration") or {})

    # -- cloud configuration --------------------------------------------------------------------------------------
    async def cloud_configuration(self) -> dict[str, Any]:
        """The device's cloud configuration; {} when it has none."""
        return await self._cloud_configuration("report its cloud configuration")

    async def supervise(
        self, organization: str, skip_setup: list[str], language: str | None = None, region: str | None = None
    ) -> dict[str, Any]:
        """Write a supervised cloud configuration naming our certificate, unless the device holds one already.

        Returns the configuration the device holds afterwards, read back; the caller judges whose it is
        (`pipeline.verdicts`). A device that acknowledges and then holds nothing is an error."""
        identity = self.session.require_identity("supervise")
        step = "take a cloud configuration"
        current = await self._cloud_configuration(step)
        if current:
            return current
        configuration = cloud_configuration(organization, identity.certificate_der, skip_setup, language, region)
        reply = await self._call(step, "SetCloudConfiguration", CloudConfiguration=configuration)
        held = await self._cloud_configuration(step)
        if reply.get("Status") != "Acknowledged" and not held:
            if translate.error_code(reply) in (translate.SETUP_FINISHED, translate.CLOUD_CONFIGURATION_PRESENT):
                # Refused though it holds none: it is past Setup Assistant (devices answer 14001 or 14002).
                raise translate.already_set_up(self.session.subject)
            raise translate.mcinstall_error(reply, self.session.subject, step)
        if not held:
            raise errors.SupervisionNotApplied(
                f"{self.session.subject.who} acknowledged the supervision configuration but holds none: replug it "
                "to try again."
            )
        return held

    async def download_cloud_configuration(self) -> dict[str, Any]:
        """DEP: ask the device to fetch and apply its configuration from Apple, then return what it holds.

        The reply is not the verdict: a device may have fetched its configuration at activation already and answer
        14002, and an unassigned serial may answer 33001 or acknowledge and apply nothing. Only other errors (no
        network, for one) are raised here; the caller judges the configuration read back (`pipeline.verdicts`)."""
        step = "fetch its configuration from Apple"
        reply = await self._call(step, "DownloadAndApplyCloudConfiguration", MDMUsername="", MDMPassword="")
        if reply.get("Status") != "Acknowledged" and translate.error_code(reply) not in DEP_VERDICT_CODES:
            raise translate.mcinstall_error(reply, self.session.subject, step)
        return await self._cloud_configuration(step)

    # -- profiles -------------------------------------------------------------------------------------------------
    async def install_profile(self, data: bytes, *, silent: bool = True) -> None:
        """Install a profile, then check that GetProfileList lists it; nothing to do if it is there already.

        Silent installation escalates with the supervision identity. `silent=False` is for a device still in Setup
        Assistant that we do not supervise yet (DEP mode's Wi-Fi): it installs there without a prompt.
        """
        identity = self.session.require_identity("install profiles silently") if silent else None
        identifier, payload_uuid = profile_ids(data)
        step = "install a profile"
        if identifier is not None and await self._installed_uuid(identifier, step) == payload_uuid:
            return
        if identity is not None:
            await self._escalate(identity, step)
            await self._ask(step, "InstallProfileSilent", profile=True, Payload=data)
        else:
            await self._ask(step, "InstallProfile", profile=True, Payload=data)
        if identifier is not None and await self._installed_uuid(identifier, step) != payload_uuid:
            raise errors.ProfileNotInstalled(
                f"{self.session.subject.who} acknowledged the profile {identifier} but does not list it as "
                "installed: it may be waiting for approval on the iPad's screen (Settings › General › VPN & Device "
                "Management); approve it there, or replug to try again."
            )

    async def installed_profiles(self) -> list[str]:
        """PayloadIdentifiers of the installed profiles."""
        listing = await self._ask("list its profiles", "GetProfileList")
        identifiers = listing.get("OrderedIdentifiers") or list(listing.get("ProfileMetadata") or {})
        return [str(identifier) for identifier in identifiers]

    async def _installed_uuid(self, identifier: str, step: str) -> str | None:
        listing = await self._ask(step, "GetProfileList")
        metadata = (listing.get("ProfileMetadata") or {}).get(identifier)
        return str(metadata.get("PayloadUUID")) if isinstance(metadata, dict) else None

    async def _escalate(self, identity: SupervisorIdentity, step: str) -> None:
        if self._escalated:
            return
        reply = await self._ask(step, "Escalate", SupervisorCertificate=identity.certificate_der)
        challenge = reply.get("Challenge")
        if not isinstance(challenge, bytes):
            raise translate.refused(self.session.subject, step, "it sent no supervision challenge")
        await self._ask(step, "EscalateResponse", SignedRequest=identity.sign(challenge))
        await self._ask(step, "ProceedWithKeybagMigration")
        self._escalated = True

    # -- the stored enrollment profile ----------------------------------------------------------------------------
    async def stored_profile(self) -> bytes | None:
        """The stored PostSetupInstallation profile, or None."""
        return await self._stored_profile("report its stored profile")

    async def _stored_profile(self, step: str) -> bytes | None:
        reply = await self._call(step, "GetStoredProfile", Purpose=POST_SETUP)
        if reply.get("Status") == "Acknowledged":
            data = reply.get("ProfileData")
            return bytes(data) if data else None
        if translate.error_code(reply) == translate.PROFILE_NOT_FOUND:
            return None
        raise translate.mcinstall_error(reply, self.session.subject, step)

    async def store_enrollment_profile(self, data: bytes) -> None:
        """StoreProfile for PostSetupInstallation (the device installs it when Setup Assistant finishes), then read
        it back with GetStoredProfile: only the device holding our profile counts."""
        step = "store the enrollment profile"
        if await self._stored_profile(step) == data:
            return
        await self._ask(step, "StoreProfile", profile=True, ProfileData=data, Purpose=POST_SETUP)
        if await self._stored_profile(step) != data:
            raise errors.EnrollmentNotStored(
                f"{self.session.subject.who} acknowledged the MDM enrollment profile but does not hold it: replug it "
                "to try again."
            )

    # -- erase ----------------------------------------------------------------------------------------------------
    async def erase(self) -> None:
        """EraseDevice; returns once the device acknowledged, or dropped the link as it starts erasing.

        Neither proves anything: the caller proves the erase by the pairing the device forgets (`pairing_known`)."""
        step = "erase"
        try:
            reply = await self._call(step, "EraseDevice", PreserveDataPlan=True, DisallowProximitySetup=False)
        except (errors.ConnectionDropped, errors.DeviceGone):
            return
        await self.close()  # the device ends the connection as it goes down
        if reply.get("Status") != "Acknowledged":
            raise translate.mcinstall_error(reply, self.session.subject, step)


def cloud_configuration(
    organization: str, certificate_der: bytes, skip_setup: list[str], language: str | None, region: str | None
) -> dict[str, Any]:
    """The supervised cloud configuration Apple Configurator's Prepare writes (no MDM URL: applied at once)."""
    configuration: dict[str, Any] = {
        "AllowPairing": True,
        "CloudConfigurationUIComplete": True,
        "ConfigurationSource": 2,
        "ConfigurationWasApplied": True,
        "IsMDMUnremovable": False,
        "IsMandatory": True,
        "IsMultiUser": False,
        "IsSupervised": True,
        "OrganizationMagic": str(uuid.uuid5(uuid.NAMESPACE_DNS, organization)),
        "OrganizationName": organization,
        "PostSetupProfileWasInstalled": True,
        "SkipSetup": list(skip_setup),
        "SupervisorHostCertificates": [certificate_der],
    }
    if language:
        configuration["Language"] = language
    if region:
        configuration["Region"] = region
    return configuration


def profile_ids(data: bytes) -> tuple[str | None, str | None]:
    """PayloadIdentifier and PayloadUUID of an unsigned .mobileconfig; (None, None) if unreadable."""
    try:
        profile = plistlib.loads(data)
    except Exception:
        return None, None
    if not isinstance(profile, dict):
        return None, None
    identifier, payload_uuid = profile.get("PayloadIdentifier"), profile.get("PayloadUUID")
    if not isinstance(identifier, str) or not isinstance(payload_uuid, str):
        return None, None
    return identifier, payload_uuid


def supervised_by(configuration: dict[str, Any], certificate_der: bytes) -> bool:
    """The configuration supervises the device and lists this certificate as a supervisor."""
    certificates = [bytes(c) for c in configuration.get("SupervisorHostCertificates") or []]
    return bool(configuration.get("IsSupervised")) and certificate_der in certificates
