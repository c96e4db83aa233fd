"""A fake of Apple's activation server (albert): the two requests an activating host relays for its device.

- POST /deviceservices/drmHandshake, body: the device's session blob as an `application/x-apple-plist`;
  answers a plist with `HandshakeResponseMessage` (our signature over the device's handshake message).
- POST /deviceservices/deviceActivation, form field `activation-info`: the device's activation info plist;
  answers `text/xml` with an `ActivationRecord` signed for that device and session, or, for a device under
  Activation Lock, an `application/x-buddyml` login page as Apple's server does.

Signatures use the server's EC key; virtual devices trust its public key, so a record forged or meant for another
device or session is refused by the device, as a real iPad refuses a record not made for it.
"""

from __future__ import annotations

import base64
import plistlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PLIST = "application/x-apple-plist"


class ActivationAuthority:
    """The key behind the fake server; devices hold its public half."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public_key.verify(bytes(signature), bytes(data), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def buddyml_lock_page(serial: str) -> str:
    """The Activation Lock page: Apple asks for the Apple ID that locked the device."""
    return (
        '<xmlui><page><navigationBar title="Activation Lock" hidesBackButton="false"/>'
        "<tableView><section>"
        '<editableTextRow id="login" label="Apple ID" placeholder="example@icloud.com"/>'
        '<editableTextRow id="password" label="Password" secure="true"/>'
        "<footer>This iPad is linked to an Apple ID. Enter the Apple ID and password that were used to set up "
        f"this iPad (serial {serial}).</footer>"
        "</section></tableView></page>"
        f'<serverInfo isAuthRequired="true" serial="{serial}"/></xmlui>'
    )


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status_code=400, media_type="text/plain")


def activation_app(authority: ActivationAuthority, is_locked: Callable[[str], bool]) -> Starlette:
    """The ASGI app of the fake activation server."""

    async def drm_handshake(request: Request) -> Response:
        try:
            blob = plistlib.loads(await request.body())
            message = bytes(blob["HandshakeRequestMessage"])
        except Exception:
            return _bad_request("drmHandshake expects the device's session blob as a plist")
        answer = {"HandshakeResponseMessage": authority.sign(message), "serverKP": b"stationd-fake-albert"}
        return Response(plistlib.dumps(answer), media_type=PLIST)

    async def device_activation(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("latin-1"), encoding="latin-1")
        raw = form.get("activation-info", [None])[0]
        if raw is None:
            return _bad_request("deviceActivation expects the form field activation-info")
        try:
            info = plistlib.loads(raw.encode("latin-1"))
            inner = plistlib.loads(bytes(info["ActivationInfoXML"]))
            serial, udid = inner["SerialNumber"], inner["UniqueDeviceID"]
            randomness = inner["ActivationRandomness"]
        except Exception:
            return _bad_request("activation-info is not a device's activation info plist")
        if is_locked(serial):
            return Response(buddyml_lock_page(serial), media_type="application/x-buddyml")
        token = plistlib.dumps(
            {"UniqueDeviceID": udid, "SerialNumber": serial, "ActivationRandomness": randomness, "ActivityURL": ""}
        )
        record = {
            "ActivationRecord": {
                "unbrick": True,
                "AccountToken": token,
                "AccountTokenSignature": authority.sign(token),
                "AccountTokenCertificate": base64.b64encode(b"stationd fake activation authority"),
                "DeviceCertificate": base64.b64encode(f"device {udid}".encode()),
            }
        }
        return Response(plistlib.dumps(record), media_type="text/xml")

    return Starlette(
        routes=[
            Route("/deviceservices/drmHandshake", drm_handshake, methods=["POST"]),
            Route("/deviceservices/deviceActivation", device_activation, methods=["POST"]),
        ]
    )


def record_for_device(record_xml: Any) -> dict[str, Any]:
    """Parse what the host hands the device: the deviceActivation body (bytes) or its parsed dictionary."""
    data = plistlib.loads(bytes(record_xml)) if isinstance(record_xml, (bytes, bytearray)) else record_xml
    if not isinstance(data, dict):
        raise ValueError("the activation record is not a dictionary")
    record = data.get("ActivationRecord", data)
    for wrapper in ("iphone-activation", "device-activation"):
        if wrapper in data:
            record = data[wrapper].get("activation-record", {})
    if not isinstance(record, dict):
        raise ValueError("the activation record is not a dictionary")
    return record
