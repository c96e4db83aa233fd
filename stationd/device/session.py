"""One paired lockdown connection to one iPad: pairing, facts, name, activation; `mc` is its MCInstall client,
`apps` its installation_proxy and AFC client, `diagnostics` its diagnostics_relay client, `console` its syslog_relay
client.

Every public method raises only `StationError` subclasses (see `translate`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from pymobiledevice3 import exceptions as pmd
from pymobiledevice3 import usbmux
from pymobiledevice3.lockdown import LockdownClient

from stationd import errors
from stationd.device import lockdown as connection
from stationd.device import pairing, translate
from stationd.device.activation import activate_device
from stationd.device.apps import Apps
from stationd.device.console import Console
from stationd.device.diagnostics import Diagnostics
from stationd.device.mcinstall import MCInstall
from stationd.device.translate import ERASE_HINT, Subject
from stationd.usbmux.address import UsbmuxAddress, resolve

ACTIVATED = ("Activated", "FactoryActivated")
DISK_USAGE = "com.apple.disk_usage"
BATTERY = "com.apple.mobile.battery"


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
    bluetooth_address: str | None = None
    ethernet_address: str | None = None
    capacity: int | None = None  # bytes (TotalDiskCapacity)
    free: int | None = None  # bytes the iPad offers for apps and files (AmountDataAvailable)
    battery_level: int | None = None  # percent
    charging: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form, for the store."""
        return asdict(self)


class DeviceSession:
    """One lockdown connection to one device, paired (async context manager).

    Entering connects through usbmuxd and pairs when needed: supervised pairing when an identity is given (silent in
    Setup Assistant, and on a set-up device supervised by our certificate), plain pairing otherwise; a pair record
    the device no longer accepts (it was erased) is dropped and replaced.
    """

    def __init__(
        self,
        udid: str,
        *,
        usbmux_address: UsbmuxAddress | str | None,
        pair_records: Path,
        identity: SupervisorIdentity | None,
        device_id: int | None = None,
        label: str = "stationd",
        pair: bool = True,
    ) -> None:
        self.udid = udid
        self.device_id = device_id  # usbmuxd's DeviceID for this attachment, when the watcher reported it
        self.address = usbmux_address if isinstance(usbmux_address, UsbmuxAddress) else resolve(usbmux_address)
        self.pair_records = Path(pair_records)
        self.identity = identity
        self.label = label
        self.may_pair = pair  # False: only an existing pairing is used (read-only callers: `stationd inspect`)
        self.mc = MCInstall(self)
        self.apps = Apps(self)
        self.diagnostics = Diagnostics(self)
        self.console = Console(self)
        self._lockdown: LockdownClient | None = None
        self._serial: str | None = None

    # -- connection -----------------------------------------------------------------------------------------------
    async def __aenter__(self) -> DeviceSession:
        async with self.guard("connect"):
            lockdown = await connection.connect(self.udid, self.device_id, self.address, self.pair_records, self.label)
            try:
                if not lockdown.paired:
                    if not self.may_pair:
                        raise errors.NotTrusted(
                            f"{self.subject.who} does not trust this station: it holds no pairing with it.",
                            values=dict(lockdown.all_values or {}),
                        )
                    await self._pair(lockdown)
            except BaseException:
                with suppress(Exception):
                    await lockdown.close()
                raise
            self._lockdown = lockdown
            self._serial = lockdown.all_values.get("SerialNumber")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.mc.close()
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
        # when the request was sent (see `pairing_known`), so no later pairing may reuse that HostID.
        lockdown.host_id = str(uuid.uuid4()).upper()
        await pairing.pair(lockdown, pairing.host_keys(self.pair_records), self.identity, self.address)
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
    async def guard(self, step: str) -> AsyncIterator[None]:
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
            devices = await usbmux.list_devices(usbmux_address=self.address.for_pymobiledevice3())
        except Exception:
            return True
        return any(device.matches_udid(self.udid) for device in devices)

    def require_identity(self, step: str) -> SupervisorIdentity:
        if self.identity is None:
            raise errors.ConfigurationError(
                f"The station has no supervision identity, so it cannot {step}: create or import one "
                "(`stationd identity create` or `stationd identity import`)."
            )
        return self.identity

    # -- lockdown -------------------------------------------------------------------------------------------------
    async def facts(self) -> DeviceFacts:
        """Identity, addresses, storage and charge: lockdownd's default, disk-usage and battery domains (three
        requests on the session's connection). A domain the iPad refuses leaves its facts unknown."""
        async with self.guard("read its details"):
            values = await self.lockdown.get_value()
            self._serial = values.get("SerialNumber") or self._serial
            disk = await self._domain(DISK_USAGE)
            battery = await self._domain(BATTERY)
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
                bluetooth_address=_text(values.get("BluetoothAddress")),
                ethernet_address=_text(values.get("EthernetAddress")),
                capacity=_whole(disk.get("TotalDiskCapacity")),
                free=_whole(disk.get("AmountDataAvailable", disk.get("TotalDataAvailable"))),
                battery_level=_whole(battery.get("BatteryCurrentCapacity")),
                charging=_flag(battery.get("BatteryIsCharging")),
            )

    async def _domain(self, name: str) -> dict[str, Any]:
        """A lockdownd domain's values; {} when the iPad refuses it (GetProhibited, MissingValue, ...)."""
        try:
            values = await self.lockdown.get_value(domain=name)
        except (pmd.GetProhibitedError, pmd.MissingValueError):
            return {}
        return values if isinstance(values, dict) else {}

    async def activation_state(self) -> str:
        async with self.guard("report its activation state"):
            return str(await self.lockdown.get_value(key="ActivationState"))

    async def set_name(self, name: str) -> None:
        """Set DeviceName, then read it back: a device may acknowledge SetValue and keep its old name."""
        async with self.guard("take a new name"):
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
        async with self.guard("activate"):
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


async def pairing_known(
    udid: str,
    pairing: dict[str, str],
    *,
    usbmux_address: UsbmuxAddress,
    device_id: int | None = None,
    label: str = "stationd",
) -> bool:
    """Whether the device still holds `pairing` (a HostID and SystemBUID from `DeviceSession.pairing`).

    This is the station's proof of an erase: an erase makes the device forget every pairing (the first StartSession
    after it fails with InvalidHostID), while a fresh iPad, or one that acknowledged EraseDevice and has not gone
    down yet, still holds the pairing the request was sent over. StartSession is sent on a new lockdownd
    connection, before anything pairs again, so no later pairing can hide the answer."""
    subject = Subject(udid)
    try:
        device = await connection.mux_device(udid, device_id, usbmux_address)
        service = await connection.open_port(device, connection.LOCKDOWN_PORT, usbmux_address.for_pymobiledevice3())
        try:
            reply = await service.send_recv_plist(
                {
                    "Label": label,
                    "Request": "StartSession",
                    "HostID": pairing["host_id"],
                    "SystemBUID": pairing["system_buid"],
                }
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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _whole(value: Any) -> int | None:
    """A count the iPad reports (bytes, percent), or None when it reports none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
