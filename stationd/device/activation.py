"""Activation from the host, as Apple Configurator does it: relay the device's session to the activation server.

Flow: CreateTunnel1SessionInfoRequest (device) → POST {base}/drmHandshake → CreateTunnel1ActivationInfoRequest with
the server's answer (device) → POST {base}/deviceActivation (form field `activation-info`) → activation record →
HandleActivationInfoWithSessionRequest with the record and the response headers (device).
"""

from __future__ import annotations

import plistlib
from typing import Any, cast
from urllib.parse import urlencode

import httpx
from pymobiledevice3.lockdown import LockdownClient
from pymobiledevice3.services.mobile_activation import MobileActivationService

from stationd import errors, outbound
from stationd.device.translate import ERASE_HINT, Subject

PLIST = "application/x-apple-plist"
FORM = "application/x-www-form-urlencoded"
BUDDYML = "application/x-buddyml"
RECORD_TYPES = ("text/xml", "application/xml", PLIST)
HEADERS = {
    "Accept": "application/xml",
    "User-Agent": "iOS Device Activator (MobileActivation-20 built on Jan 15 2012 at 19:07:28)",
}


async def activate_device(lockdown: LockdownClient, http: httpx.AsyncClient, base_url: str, subject: Subject) -> None:
    """Run the session flow once; raise a StationError when the server or the device says no."""
    service = MobileActivationService(lockdown)
    base_url = base_url.rstrip("/")
    session = await _command(service, subject, "CreateTunnel1SessionInfoRequest")
    handshake = await _post(
        http, f"{base_url}/drmHandshake", plistlib.dumps(session), PLIST, subject, "the activation handshake"
    )
    info = await _command(service, subject, "CreateTunnel1ActivationInfoRequest", handshake.content)
    body = urlencode({"activation-info": plistlib.dumps(info)}).encode("ascii")
    answer = await _post(http, f"{base_url}/deviceActivation", body, FORM, subject, "the activation request")
    kind = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == BUDDYML:
        raise errors.ActivationLocked(
            f"Activation Lock is on for {subject.who}: remove the device from the previous owner's Find My / "
            "Apple School Manager, then replug."
        )
    if kind not in RECORD_TYPES:
        raise errors.ActivationFailed(
            f"The activation server answered {subject.who} with {kind or 'no content type'} instead of an activation "
            "record: check that the station reaches Apple's activation server (no proxy page in between), then replug."
        )
    headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in answer.headers.raw}
    reply = await service.activate_with_session(answer.content, cast(Any, headers))  # it reads them as a mapping
    if reply.get("Error"):
        raise errors.ActivationFailed(
            f"{subject.who} refused its activation record ({_short(reply['Error'])}): replug it to try again; "
            f"if it keeps failing, {ERASE_HINT}."
        )
    await lockdown.set_value(True, key="ActivationStateAcknowledged")


async def _command(service: MobileActivationService, subject: Subject, command: str, value: Any = "") -> Any:
    reply = await service.send_command(command, value)
    if reply.get("Error") or "Value" not in reply:
        raise errors.ActivationFailed(
            f"{subject.who} refused to start activation ({command}: {_short(reply.get('Error', 'no value'))}): "
            f"replug it to try again; if it keeps failing, {ERASE_HINT}."
        )
    return reply["Value"]


async def _post(
    http: httpx.AsyncClient, url: str, body: bytes, content_type: str, subject: Subject, what: str
) -> httpx.Response:
    try:
        headers = {**HEADERS, "Content-Type": content_type}
        response = await outbound.fetch(http, "POST", url, content=body, headers=headers)
    except outbound.BadAddress as error:
        raise errors.ConfigurationError(
            f"The activation server address is invalid ({error}): correct it in the configuration."
        ) from None
    except outbound.Unreachable as error:
        raise errors.ActivationServerUnavailable(
            f"The activation server ({httpx.URL(url).host}) cannot be reached for {what} of {subject.who} "
            f"({error}): check the station's internet connection (and any proxy or firewall)."
        ) from None
    except outbound.Refused as error:
        raise errors.ActivationFailed(
            f"The activation server's answer to {what} of {subject.who} was refused: {error}. Check that the station "
            "reaches Apple's activation server (no proxy page in between), then replug."
        ) from None
    if response.status_code >= 500:
        raise errors.ActivationServerUnavailable(
            f"The activation server answered HTTP {response.status_code} to {what} of {subject.who}: "
            "it is having trouble at the moment."
        )
    if response.status_code >= 400:
        raise errors.ActivationServerRefused(
            f"The activation server answered HTTP {response.status_code} to {what} of {subject.who} at "
            f"{httpx.URL(url).host}: check [activation] url in the configuration (leave it out to use Apple's)."
        )
    return response


def _short(text: Any, limit: int = 160) -> str:
    text = str(text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
