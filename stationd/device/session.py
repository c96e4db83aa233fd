"""One paired lockdown connection to one iPad, and every request the station makes of it.

Every public method raises only `StationError` subclasses (see `translate`).
"""

from __future__ import annotations

import os
import plistlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from pymobiledevice3 import usbmux
from pymobiledevice3.lockdown import LockdownClient, create_using_usbmux
from pymobiledevice3.service_connection import ServiceConnection
from pymobiledevice3.services.mobile_config import MobileConfigService

from stationd import errors
from stationd.device import pairing, translate
from stationd.device.activation import activate_device
from stationd.device.translate import ERASE_HINT, Subject

USBMUX_ENVIRONMENT = "USBMUXD_SOCKET_ADDRESS"
DEP_VERDICT_CODES = {translate.CLOUD_CONFIGURATION_PRESENT, translate.CLOUD_CONFIGURATION_NOT_AVAILABLE}
ACTIVATED = ("Activated", "FactoryActivated")
POST_SETUP = "PostSetupInstallation"
LOCKDOWN_PORT = 62078


class SupervisorIdentity(Protocol):
    """What the device layer needs of the supervision identity (`stationd.identity.Identity` fits)."""

    @property
    def path(self) -> Path: ...

    @property
    def certificate_der(self) -> bytes: ...

    @property
    def organization(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class DeviceFacts:
    """What lockdownd says about a device, read in a paired session."""

    udid: str
    serial: str
    ecid: int | None
    product_type: str
    product_version: str
    build_version: str
    device_class: str
    device_name: str
    wifi_address: str | None
    hardware_model: str | None
    activation_state: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form, for the store."""
        return asdict(self)


class DeviceSession:
    """One lockdown connection to one device, paired (async context manager).

    Entering connects through usbmuxd and pairs when needed: supervised pairing when an identity is given (silent in
    Setup Assistant, and on a set-up device supervised by our certificate), plain pairing otherwise; a pair record
    the device no longer accepts (it was erased) is dropped and replaced. A `usbmux_address` is also written to
    USBMUXD_SOCKET_ADDRESS, because pymobiledevice3 saves new pair records to the default usbmuxd.
    """

    def __init__(
        self,
        udid: str,
        *,
        usbmux_address: str | None,
        pair_records: Path,
        identity: SupervisorIdentity | None,
        label: str = "stationd",
    ) -> None:
        self.udid = udid
        self.usbmux_address = plain_usbmux_address(usbmux_address)
        self.pair_records = Path(pair_records)
        self.identity = identity
        self.label = label
        self._lockdown: LockdownClient | None = None
        self._serial: str | None = None

    # -- connection -----------------------------------------------------------------------------------------------
    async def __aenter__(self) -> DeviceSession:
        if self.usbmux_address is not None:
            os.environ[USBMUX_ENVIRONMENT] = self.usbmux_address
        async with self._guard("connect"):
            lockdown = await create_using_usbmux(
                serial=self.udid,
                usbmux_address=self.usbmux_address,
                pairing_records_cache_folder=self.pair_records,
                autopair=False,
                label=self.label,
            )
            try:
                if not lockdown.paired:
                    await self._pair(lockdown)
            except BaseException:
                with suppress(Exception):
                    await lockdown.close()
                raise
            self._lockdown = lockdown
            self._serial = lockdown.all_values.get("SerialNumber")
        return self

    async def __aexit__(self, *exc: object) -> None:
        lockdown, self._lockdown = self._lockdown, None
        if lockdown is not None:
            with suppress(Exception):
                await lockdown.close()

    async def _pair(self, lockdown: LockdownClient) -> None:
        if lockdown.pair_record is not None:
            # The device refused our record (erased since): drop it and pair again.
            (self.pair_records / f"{lockdown.identifier or self.udid}.plist").unlink(missing_ok=True)
            lockdown.pair_record = None
        # A new HostID for every pairing: an erase is proven by the device forgetting the pairing that was in use
        # when the request was sent (see `probe.pairing_known`), so no later pairing may reuse that HostID.
        lockdown.host_id = str(uuid.uuid4()).upper()
        await pairing.pair(lockdown, pairing.host_keys(self.pair_records), self.identity)
        if not await lockdown.validate_pairing():
            raise errors.PairingRefused(
                f"{self.subject.who} accepted pairing but then refused the session: replug it; "
                f"if it happens again, {ERASE_HINT}."
            )

    @property
    def pairing(self) -> dict[str, str]:
        """The pairing this session runs on (HostID and SystemBUID: identifiers, not secrets)."""
        lockdown = self.lockdown
        return {"host_id": lockdown.host_id, "system_buid": lockdown.system_buid}

    @property
    def subject(self) -> Subject:
        organization = self.identity.organization if self.identity is not None else None
        return Subject(self.udid, self._serial, organization)

    @property
    def lockdown(self) -> LockdownClient:
        if self._lockdown is None:
            raise errors.ConnectionDropped(f"No open connection to {self.subject.who}: the station reconnects.")
        return self._lockdown

    @asynccontextmanager
    async def _guard(self, step: str) -> AsyncIterator[None]:
        """Translate whatever escapes the block into a StationError."""
        try:
            yield
        except errors.StationError:
            raise
        except Exception as error:
            if translate.is_connection_error(error) and not await self._attached():
                raise translate.device_gone(self.subject) from error
            raise translate.translate(error, self.subject, step) from error

    async def _attached(self) -> bool:
        try:
            devices = await usbmux.list_devices(usbmux_address=self.usbmux_address)
        except Exception:
            return True
        return any(device.matches_udid(self.udid) for device in devices)

    @asynccontextmanager
    async def _mcinstall(self, step: str) -> AsyncIterator[MobileConfigService]:
        async with self._guard(step), MobileConfigService(self.lockdown) as service:
            yield service

    async def _ask(
        self, service: MobileConfigService, step: str, request: str, profile: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """Send one MCInstall request; anything but `Status: Acknowledged` becomes a StationError."""
        reply = await service.service.send_recv_plist({"RequestType": request, **fields})
        if reply.get("Status") != "Acknowledged":
            raise translate.mcinstall_error(reply, self.subject, step, profile)
        return reply

    async def _cloud_configuration(self, service: MobileConfigService, step: str) -> dict[str, Any]:
        reply = await self._ask(service, step, "GetCloudConfiguration")
        return dict(reply.get("CloudConfiguration") or {})

    def _require_identity(self, step: str) -> SupervisorIdentity:
        if self.identity is None:
            raise errors.ConfigurationError(
                f"The station has no supervision identity, so it cannot {step}: create or import one "
                "(`stationd identity create` or `stationd identity import`)."
            )
        return self.identity

    # -- lockdown -------------------------------------------------------------------------------------------------
    async def facts(self) -> DeviceFacts:
        async with self._guard("read its details"):
            values = await self.lockdown.get_value()
            self._serial = values.get("SerialNumber") or self._serial
            return DeviceFacts(
                udid=str(values.get("UniqueDeviceID") or self.udid),
                serial=str(values.get("SerialNumber") or ""),
                ecid=values.get("UniqueChipID"),
                product_type=str(values.get("ProductType") or ""),
                product_version=str(values.get("ProductVersion") or ""),
                build_version=str(values.get("BuildVersion") or ""),
                device_class=str(values.get("DeviceClass") or ""),
                device_name=str(values.get("DeviceName") or ""),
                wifi_address=values.get("WiFiAddress"),
                hardware_model=values.get("HardwareModel"),
                activation_state=str(values.get("ActivationState") or ""),
            )

    async def activation_state(self) -> str:
        async with self._guard("report its activation state"):
            return str(await self.lockdown.get_value(key="ActivationState"))

    async def set_name(self, name: str) -> None:
        """Set DeviceName, then read it back: a device may acknowledge SetValue and keep its old name."""
        async with self._guard("take a new name"):
            await self.lockdown.set_value(name, key="DeviceName")
            current = await self.lockdown.get_value(key="DeviceName")
        if current != name:
            raise errors.NameNotApplied(
                f"{self.subject.who} acknowledged the name {name!r} but still calls itself {current!r}: it does not "
                "take names over USB. Let the MDM name it (or skip the name step for it)."
            )

    async def activate(self, http: httpx.AsyncClient, base_url: str) -> str:
        """Activate through the station (nothing to do if already activated); returns the ActivationState read
        back afterwards, which must say activated: the device's reply alone proves nothing."""
        async with self._guard("activate"):
            state = await self.lockdown.get_value(key="ActivationState")
            if state not in ACTIVATED:
                await activate_device(self.lockdown, http, base_url, self.subject)
                state = await self.lockdown.get_value(key="ActivationState")
        if state not in ACTIVATED:
            raise errors.ActivationFailed(
                f"{self.subject.who} accepted its activation record but reports {state}: replug it to try again; "
                f"if it keeps failing, {ERASE_HINT}."
            )
        return str(state)

    # -- MCInstall ------------------------------------------------------------------------------------------------
    async def cloud_configuration(self) -> dict[str, Any]:
        """The device's cloud configuration; {} when it has none."""
        step = "report its cloud configuration"
        async with self._mcinstall(step) as service:
            return await self._cloud_configuration(service, step)

    async def erase(self) -> None:
        """EraseDevice; returns once the device acknowledged, or dropped the link as it starts erasing."""
        request = {"RequestType": "EraseDevice", "PreserveDataPlan": True, "DisallowProximitySetup": False}
        async with self._mcinstall("erase") as service:
            try:
                reply = await service.service.send_recv_plist(request)
            except Exception as error:
                if translate.is_connection_error(error):
                    return
                raise
            if reply.get("Status") != "Acknowledged":
                raise translate.mcinstall_error(reply, self.subject, "erase")

    async def supervise(
        self, organization: str, skip_setup: list[str], language: str | None = None, region: str | None = None
    ) -> dict[str, Any]:
        """Write a supervised cloud configuration naming our certificate, unless the device holds one already.

        Returns the configuration the device holds afterwards, read back; the caller judges whose it is
        (`pipeline.verdicts`). A device that acknowledges and then holds nothing is an error."""
        identity = self._require_identity("supervise")
        step = "take a cloud configuration"
        async with self._mcinstall(step) as service:
            current = await self._cloud_configuration(service, step)
            if current:
                return current
            configuration = cloud_configuration(organization, identity.certificate_der, skip_setup, language, region)
            reply = await service.service.send_recv_plist(
                {"RequestType": "SetCloudConfiguration", "CloudConfiguration": configuration}
            )
            held = await self._cloud_configuration(service, step)
            if reply.get("Status") != "Acknowledged" and not held:
                if translate.error_code(reply) in (translate.SETUP_FINISHED, translate.CLOUD_CONFIGURATION_PRESENT):
                    # Refused though it holds none: it is past Setup Assistant (devices answer 14001 or 14002).
                    raise translate.already_set_up(self.subject)
                raise translate.mcinstall_error(reply, self.subject, step)
            if not held:
                raise errors.SupervisionNotApplied(
                    f"{self.subject.who} acknowledged the supervision configuration but holds none: replug it to "
                    "try again."
                )
            return held

    async def install_profile(self, data: bytes, *, silent: bool = True) -> None:
        """Install a profile; no-op if the same PayloadIdentifier and PayloadUUID is there.

        Silent installation escalates with the supervision identity. `silent=False` is for a device still in Setup
        Assistant that we do not supervise yet (DEP mode's Wi-Fi): it installs there without a prompt.
        """
        identity = self._require_identity("install profiles silently") if silent else None
        identifier, payload_uuid = profile_ids(data)
        step = "install a profile"
        async with self._mcinstall(step) as service:
            if identifier is not None and await self._installed_uuid(service, identifier, step) == payload_uuid:
                return
            if identity is not None:
                await self._escalate(service, identity, step)
                await self._ask(service, step, "InstallProfileSilent", profile=True, Payload=data)
            else:
                await self._ask(service, step, "InstallProfile", profile=True, Payload=data)
            if identifier is not None and await self._installed_uuid(service, identifier, step) != payload_uuid:
                raise errors.ProfileNotInstalled(
                    f"{self.subject.who} acknowledged the profile {identifier} but does not list it as installed: "
                    "it may be waiting for approval on the iPad's screen (Settings › General › VPN & Device "
                    "Management); approve it there, or replug to try again."
                )

    async def _installed_uuid(self, service: MobileConfigService, identifier: str, step: str) -> str | None:
        listing = await self._ask(service, step, "GetProfileList")
        metadata = (listing.get("ProfileMetadata") or {}).get(identifier)
        return str(metadata.get("PayloadUUID")) if isinstance(metadata, dict) else None

    async def _escalate(self, service: MobileConfigService, identity: SupervisorIdentity, step: str) -> None:
        reply = await self._ask(service, step, "Escalate", SupervisorCertificate=identity.certificate_der)
        challenge = reply.get("Challenge")
        if not isinstance(challenge, bytes):
            raise translate.refused(self.subject, step, "it sent no supervision challenge")
        await self._ask(service, step, "EscalateResponse", SignedRequest=identity.sign(challenge))
        await self._ask(service, step, "ProceedWithKeybagMigration")

    async def installed_profiles(self) -> list[str]:
        """PayloadIdentifiers of the installed profiles."""
        step = "list its profiles"
        async with self._mcinstall(step) as service:
            listing = await self._ask(service, step, "GetProfileList")
            identifiers = listing.get("OrderedIdentifiers") or list(listing.get("ProfileMetadata") or {})
            return [str(identifier) for identifier in identifiers]

    async def store_enrollment_profile(self, data: bytes) -> None:
        """StoreProfile for PostSetupInstallation (the device installs it when Setup Assistant finishes), then read
        it back with GetStoredProfile: only the device holding our profile counts."""
        step = "store the enrollment profile"
        async with self._mcinstall(step) as service:
            if await self._stored_profile(service, step) == data:
                return
            await self._ask(service, step, "StoreProfile", profile=True, ProfileData=data, Purpose=POST_SETUP)
            if await self._stored_profile(service, step) != data:
                raise errors.EnrollmentNotStored(
                    f"{self.subject.who} acknowledged the MDM enrollment profile but does not hold it: replug it to "
                    "try again."
                )

    async def stored_profile(self) -> bytes | None:
        """The stored PostSetupInstallation profile, or None."""
        step = "report its stored profile"
        async with self._mcinstall(step) as service:
            return await self._stored_profile(service, step)

    async def _stored_profile(self, service: MobileConfigService, step: str) -> bytes | None:
        reply = await service.service.send_recv_plist({"RequestType": "GetStoredProfile", "Purpose": POST_SETUP})
        if reply.get("Status") == "Acknowledged":
            data = reply.get("ProfileData")
            return bytes(data) if data else None
        if translate.error_code(reply) == translate.PROFILE_NOT_FOUND:
            return None
        raise translate.mcinstall_error(reply, self.subject, step)

    async def download_cloud_configuration(self) -> dict[str, Any]:
        """DEP: ask the device to fetch and apply its configuration from Apple, then return what it holds.

        The reply is not the verdict: a device may have fetched its configuration at activation already and answer
        14002, and an unassigned serial may answer 33001 or acknowledge and apply nothing. Only other errors (no
        network, for one) are raised here; the caller judges the configuration read back (`pipeline.verdicts`)."""
        step = "fetch its configuration from Apple"
        async with self._mcinstall(step) as service:
            reply = await service.service.send_recv_plist(
                {"RequestType": "DownloadAndApplyCloudConfiguration", "MDMUsername": "", "MDMPassword": ""}
            )
            code = translate.error_code(reply)
            if reply.get("Status") != "Acknowledged" and code not in DEP_VERDICT_CODES:
                raise translate.mcinstall_error(reply, self.subject, step)
            return await self._cloud_configuration(service, step)


async def pairing_known(udid: str, pairing: dict[str, str], *, usbmux_address: str | None, label: str = "stationd") -> bool:
    """Whether the device still holds `pairing` (a HostID and SystemBUID from `DeviceSession.pairing`).

    This is the station's proof of an erase: an erase makes the device forget every pairing (the first StartSession
    after it fails with InvalidHostID), while a fresh iPad, or one that acknowledged EraseDevice and has not gone
    down yet, still holds the pairing the request was sent over. StartSession is sent on a new lockdownd
    connection, before anything pairs again, so no later pairing can hide the answer."""
    subject = Subject(udid)
    address = plain_usbmux_address(usbmux_address)
    try:
        service = await ServiceConnection.create_using_usbmux(udid, LOCKDOWN_PORT, usbmux_address=address)
        try:
            reply = await service.send_recv_plist(
                {"Label": label, "Request": "StartSession", "HostID": pairing["host_id"],
                 "SystemBUID": pairing["system_buid"]}
            )
        finally:
            with suppress(Exception):
                await service.close()
    except Exception as error:
        raise translate.translate(error, subject, "answer whether it still knows this station") from error
    if reply.get("Error") == "InvalidHostID":
        return False
    if reply.get("SessionID"):
        return True
    raise translate.refused(subject, "start a session", str(reply.get("Error") or "no session id"))


def plain_usbmux_address(address: str | None) -> str | None:
    """pymobiledevice3 takes '/path' or 'host:port'; also accept libusbmuxd's 'UNIX:/path'."""
    if address is not None and address.upper().startswith("UNIX:"):
        return address[len("UNIX:"):]
    return address


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
