"""Reaching an iPad's lockdownd and its services through usbmuxd, by the DeviceID the hotplug watcher reported.

pymobiledevice3's `create_using_usbmux` and its service connections ask usbmuxd for the whole device list
(ListDevices) on every connection, and ask it for its BUID and the pair record too: with 64 iPads plugged in, parsing
those lists was most of the station's CPU. Here the iPad's usbmuxd DeviceID is known (the watcher saw it attach),
the BUID is read once per usbmuxd, and the pair record comes from the station's own folder; the protocol is
pymobiledevice3's, unchanged.
"""

from __future__ import annotations

import hashlib
import plistlib
import uuid
from pathlib import Path
from ssl import SSLContext
from typing import Any

from pymobiledevice3 import exceptions as pmd
from pymobiledevice3 import usbmux
from pymobiledevice3.lockdown import PlistUsbmuxLockdownClient
from pymobiledevice3.service_connection import ServiceConnection, create_ssl_context

from stationd.usbmux import UsbmuxConnection
from stationd.usbmux.address import UsbmuxAddress

LOCKDOWN_PORT = 62078
LOCKDOWN_TYPE = "com.apple.mobile.lockdown"
_buids: dict[str, str] = {}
_contexts: dict[str, SSLContext] = {}  # by the host certificate's SHA-256


class Lockdown(PlistUsbmuxLockdownClient):
    """pymobiledevice3's lockdown client, opening service connections straight to its known DeviceID, with one TLS
    context per host certificate (pymobiledevice3 writes the key to a temporary file and loads it for every service
    connection; the station's host certificate is the same for every iPad)."""

    async def start_lockdown_service(self, name: str, include_escrow_bag: bool = False) -> ServiceConnection:
        attributes = await self.get_service_connection_attributes(name, include_escrow_bag=include_escrow_bag)
        context = self._tls_context() if attributes.get("EnableServiceSSL", False) else None
        return await self.create_service_connection(attributes["Port"], ssl_context=context)

    def _tls_context(self) -> SSLContext:
        if self.pair_record is None:
            raise pmd.NotPairedError()
        key = hashlib.sha256(self.pair_record["HostCertificate"]).hexdigest()
        if key not in _contexts:
            with self.ssl_file() as path:
                _contexts[key] = create_ssl_context(path)
        return _contexts[key]

    async def create_service_connection(
        self, port: int, ssl_context: SSLContext | None = None, strip_ssl: bool = False
    ) -> ServiceConnection:
        mux_device = self.service.mux_device
        if mux_device is None:
            return await super().create_service_connection(port, ssl_context, strip_ssl)
        return await open_port(mux_device, port, self.usbmux_address, ssl_context, strip_ssl)


async def open_port(
    mux_device: usbmux.MuxDevice,
    port: int,
    usbmux_address: str | None,
    ssl_context: SSLContext | None = None,
    strip_ssl: bool = False,
) -> ServiceConnection:
    sock = await mux_device.connect(port, usbmux_address=usbmux_address)
    return await ServiceConnection.from_socket(
        sock, ssl_context=ssl_context, strip_ssl=strip_ssl, mux_device=mux_device
    )


async def mux_device(udid: str, device_id: int | None, address: UsbmuxAddress) -> usbmux.MuxDevice:
    """The usbmuxd device to connect to: by its DeviceID when known, else looked up once in the device list."""
    if device_id is not None:
        return usbmux.MuxDevice(devid=device_id, serial=udid, connection_type="USB")
    found = await usbmux.select_device(udid, usbmux_address=address.for_pymobiledevice3())
    if found is None:
        raise pmd.DeviceNotFoundError(udid)
    return found


async def system_buid(address: UsbmuxAddress) -> str:
    """usbmuxd's BUID (the host's SystemBUID in lockdown sessions), read once per usbmuxd."""
    key = str(address)
    if key not in _buids:
        async with await UsbmuxConnection.open(address) as mux:
            _buids[key] = await mux.read_buid()
    return _buids[key]


def saved_pair_record(folder: Path, udid: str) -> dict[str, Any] | None:
    """The station's pair record for this iPad, or None (pymobiledevice3 then asks usbmuxd)."""
    try:
        record = plistlib.loads((folder / f"{udid}.plist").read_bytes())
    except (OSError, plistlib.InvalidFileException):
        return None
    return record if isinstance(record, dict) else None


async def connect(udid: str, device_id: int | None, address: UsbmuxAddress, pair_records: Path, label: str) -> Lockdown:
    """A lockdown client on the iPad, its values read, its pairing validated when it has one (`paired`)."""
    device = await mux_device(udid, device_id, address)
    pymobiledevice3_address = address.for_pymobiledevice3()
    service = await open_port(device, LOCKDOWN_PORT, pymobiledevice3_address)
    try:
        lockdown = Lockdown(
            service,
            host_id=str(uuid.uuid4()).upper(),  # replaced by the pair record's HostID, or a new one when pairing
            identifier=udid,
            label=label,
            system_buid=await system_buid(address),
            pair_record=saved_pair_record(pair_records, udid),
            pairing_records_cache_folder=pair_records,
            port=LOCKDOWN_PORT,
            usbmux_address=pymobiledevice3_address,
        )
        if await lockdown.query_type() != LOCKDOWN_TYPE:
            raise pmd.IncorrectModeError()
        lockdown.all_values = await lockdown.get_value()
        await lockdown.validate_pairing()
    except BaseException:
        await service.close()
        raise
    return lockdown
