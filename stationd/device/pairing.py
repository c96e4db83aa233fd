"""Pairing with one set of host keys per station, as real hosts do.

pymobiledevice3's `pair` and `pair_supervised` generate a fresh root key and host key for every pairing and reload
the supervision identity each time: about a third of the station's CPU per iPad, since every iPad pairs twice
(before and after its erase). Here the station's root and host keys are made once, kept 0600 next to the pair
records, and each pairing only signs a device certificate. The root private key never leaves the station (it is
not sent to the device, unlike pymobiledevice3's pair record).
"""

from __future__ import annotations

import functools
import plistlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pymobiledevice3.exceptions as pmd
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pymobiledevice3.ca import build_device_certificate, build_host_certificate, build_root_certificate
from pymobiledevice3.lockdown import LockdownClient

from stationd.files import private_folder, write_private_file
from stationd.usbmux import UsbmuxConnection
from stationd.usbmux.address import UsbmuxAddress

HOST_KEYS = "host-keys.pem"
PAIR_ERRORS: dict[str, type[Exception]] = {
    "PairingDialogResponsePending": pmd.PairingDialogResponsePendingError,
    "UserDeniedPairing": pmd.UserDeniedPairingError,
    "PasswordProtected": pmd.PasswordRequiredError,
}


class Supervisor(Protocol):
    @property
    def certificate_der(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class HostKeys:
    """The station's pairing root and host certificate, with their keys."""

    root_certificate: x509.Certificate
    root_key: rsa.RSAPrivateKey = field(repr=False)
    host_certificate_pem: bytes
    host_key_pem: bytes = field(repr=False)

    @property
    def root_certificate_pem(self) -> bytes:
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@functools.cache
def host_keys(folder: Path) -> HostKeys:
    """Load the station's host keys from `folder`, making them (mode 0600) the first time."""
    path = folder / HOST_KEYS
    if path.exists():
        data = path.read_bytes()
        root_certificate, host_certificate = x509.load_pem_x509_certificates(data)
        blocks = data.split(b"-----BEGIN PRIVATE KEY-----")[1:]
        root_key, host_key = (
            serialization.load_pem_private_key(b"-----BEGIN PRIVATE KEY-----" + block, None) for block in blocks
        )
        assert isinstance(root_key, rsa.RSAPrivateKey) and isinstance(host_key, rsa.RSAPrivateKey)
        return HostKeys(
            root_certificate, root_key, host_certificate.public_bytes(serialization.Encoding.PEM), _pem_key(host_key)
        )
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    host_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_certificate = build_root_certificate(root_key, hashes.SHA256())
    host_certificate = build_host_certificate(host_key, root_certificate, root_key, hashes.SHA256())
    keys = HostKeys(
        root_certificate, root_key, host_certificate.public_bytes(serialization.Encoding.PEM), _pem_key(host_key)
    )
    _write_private(path, keys.root_certificate_pem + keys.host_certificate_pem + _pem_key(root_key) + keys.host_key_pem)
    return keys


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically, 0600 from the first byte, in a 0700 folder."""
    private_folder(path.parent)
    write_private_file(path, data, force=True)


async def pair(
    lockdown: LockdownClient, keys: HostKeys, supervisor: Supervisor | None, usbmux_address: UsbmuxAddress
) -> None:
    """Pair `lockdown`'s device with the station's host keys, proving supervision when asked; save the record."""
    public_key = serialization.load_pem_public_key(await lockdown.get_value("", "DevicePublicKey"))
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise pmd.PairingError("the device's public key is not an RSA key")
    device_certificate = build_device_certificate(public_key, keys.root_certificate, keys.root_key, hashes.SHA256())
    record: dict[str, Any] = {
        "DeviceCertificate": device_certificate.public_bytes(serialization.Encoding.PEM),
        "HostCertificate": keys.host_certificate_pem,
        "HostID": lockdown.host_id,
        "RootCertificate": keys.root_certificate_pem,
        "SystemBUID": lockdown.system_buid,
        "WiFiMACAddress": lockdown.wifi_mac_address,
    }
    options: dict[str, Any] = {"ExtendedPairingErrors": True}
    if supervisor is not None:
        options["SupervisorCertificate"] = supervisor.certificate_der
    reply = await _request_pair(lockdown, record, options)
    if reply.get("Error") == "MCChallengeRequired":
        if supervisor is None:
            raise pmd.PairingError("the device asked for a supervision proof and the station has no identity")
        challenge = (reply.get("ExtendedResponse") or {}).get("PairingChallenge", b"")
        options = {"ChallengeResponse": supervisor.sign(bytes(challenge)), "ExtendedPairingErrors": True}
        reply = await _request_pair(lockdown, record, options)
    record["HostPrivateKey"] = keys.host_key_pem
    if reply.get("EscrowBag") is not None:
        record["EscrowBag"] = reply["EscrowBag"]
    lockdown.pair_record = record
    await save_pair_record(lockdown, record, usbmux_address)
    lockdown.paired = True


async def save_pair_record(lockdown: LockdownClient, record: dict[str, Any], usbmux_address: UsbmuxAddress) -> None:
    """Keep the record where pymobiledevice3 looks for it: in the cache folder (0600: it holds the host's private
    key and the escrow bag) and in usbmuxd, which pymobiledevice3 asks first. pymobiledevice3's own
    `save_pair_record` would reach only the default usbmuxd (or $USBMUXD_SOCKET_ADDRESS), not the station's."""
    data = plistlib.dumps(record)
    folder = lockdown.pairing_records_cache_folder
    if folder is not None and lockdown.identifier is not None:
        _write_private(Path(folder) / f"{lockdown.identifier}.plist", data)
    mux_device = lockdown.service.mux_device
    if mux_device is not None and lockdown.identifier is not None:
        async with await UsbmuxConnection.open(usbmux_address) as mux:
            await mux.save_pair_record(lockdown.identifier, mux_device.devid, data)


async def _request_pair(lockdown: LockdownClient, record: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "Label": lockdown.label,
        "Request": "Pair",
        "PairRecord": record,
        "ProtocolVersion": "2",
        "PairingOptions": options,
    }
    reply = await lockdown.service.send_recv_plist(request)
    error = str(reply["Error"]) if reply.get("Error") is not None else None
    if error is None or error == "MCChallengeRequired":
        return reply
    message = f"lockdownd refused to pair: {error}"
    if error == "MCProtected":
        raise pmd.MCProtectedError(message, lockdown.identifier, lockdown.product_version, error=error)
    raise PAIR_ERRORS.get(error, pmd.PairingError)(message)
