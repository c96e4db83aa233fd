"""Name each finished iPad in Jamf Pro and put it in a static group, through the Jamf Pro API.

Jamf Pro's documentation (developer.jamf.com):
- Client credentials: https://developer.jamf.com/jamf-pro/docs/client-credentials (`POST /api/oauth/token` with
  `client_id`, `client_secret`, `grant_type=client_credentials`; the access token's `expires_in` is short, so it is
  kept until shortly before then and asked again once on a 401).
- Finding the iPad: https://developer.jamf.com/jamf-pro/reference/get_v2-mobile-devices-detail
  (`GET /api/v2/mobile-devices/detail` with the RSQL `filter=serialNumber=="..."`; `mobileDeviceId` in `results`).
- Naming it: https://developer.jamf.com/jamf-pro/reference/patch_v2-mobile-devices-id (`PATCH
  /api/v2/mobile-devices/{id}` with `name`; for a supervised iPad Jamf Pro then sends the MDM Settings command
  that renames the device itself).
- The static group: https://developer.jamf.com/jamf-pro/reference/updatemobiledevicegroupbyid (Classic API
  `PUT /JSSResource/mobiledevicegroups/id/{id}` with `mobile_device_additions`, which adds without replacing the
  group's members; the Classic API takes the same bearer token).

The iPad is found by serial; until it has enrolled (after Setup Assistant) Jamf Pro does not list it, and the
delivery is retried. Settings, under [plugins.jamf]:
    url            your Jamf Pro, like "https://school.jamfcloud.com"
    client_id      the API client's id (Settings › API roles and clients)
    client_secret  where its secret is: "{env:JAMF_CLIENT_SECRET}" or "{file:/etc/stationd/jamf.secret}" (0600)
    group_id       the static mobile device group to add the iPad to (its number in Jamf Pro); none by default
    rename         true (default): set the iPad's name in Jamf Pro; false: leave names alone
    timeout        seconds per request (default 15); patience: days of retries (default 3)
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import anyio
import httpx

from stationd.plugins import PluginContext, Settings
from stationd.reporting import DeliveryContext, ReporterPlugin, Result
from stationd.reporting.mdm import MdmReporter, base_url, common_settings, not_enrolled_yet, secret_setting
from stationd.reporting.web import SecretError, json_body, judge, reveal, send
from stationd.store import Delivery

SETTINGS = ("url", "client_id", "client_secret", "group_id", "rename", "timeout", "patience")
AUTH_HINT = "check client_id and client_secret, and that the API role allows reading and updating mobile devices"
MARGIN = 10.0


def make(settings: dict[str, Any], context: PluginContext) -> ReporterPlugin:
    read = Settings(context.name, settings, SETTINGS)
    return ReporterPlugin(
        JamfReporter(
            url=base_url(read, "https://school.jamfcloud.com"),
            client_id=read.text("client_id", example='client_id = "8a3b2c1d-..."'),
            client_secret=secret_setting(read, "client_secret", '"{env:JAMF_CLIENT_SECRET}"'),
            **common_settings(read, "group_id = 12"),
        )
    )


class JamfReporter(MdmReporter):
    url: str
    client_id: str
    client_secret: str
    group_id: int | None
    rename: bool

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = anyio.Lock()

    async def deliver(self, deliveries: list[Delivery], context: DeliveryContext) -> dict[str, Result]:
        return {delivery.key: await self.one(delivery) for delivery in deliveries}

    async def one(self, delivery: Delivery) -> Result:
        serial, name = delivery.serial, delivery.payload.get("name")
        query = f"section=GENERAL&page-size=2&filter={quote(f'serialNumber=={json.dumps(serial)}', safe='')}"
        found = await self.call("GET", f"/api/v2/mobile-devices/detail?{query}")
        if isinstance(found, Result):
            return found
        results = json_body(found).get("results") or []
        if not results:
            return not_enrolled_yet("Jamf Pro", serial)
        device_id = str(results[0].get("mobileDeviceId") or results[0].get("id") or "")
        done = []
        if self.rename and name:
            renamed = await self.call("PATCH", f"/api/v2/mobile-devices/{quote(device_id)}", payload={"name": name})
            if isinstance(renamed, Result):
                return renamed
            done.append(f'named "{name}"')
        if self.group_id is not None:
            xml = (
                "<mobile_device_group><mobile_device_additions><mobile_device>"
                f"<serial_number>{escape(serial or '')}</serial_number>"
                "</mobile_device></mobile_device_additions></mobile_device_group>"
            )
            added = await self.call("PUT", f"/JSSResource/mobiledevicegroups/id/{self.group_id}", xml=xml)
            if isinstance(added, Result):
                return added
            done.append(f"added to group {self.group_id}")
        return Result.done(f"Jamf Pro device {device_id}: " + (", ".join(done) or "found"), jamf_id=device_id)

    async def call(
        self, method: str, path: str, *, payload: Any = None, xml: str | None = None
    ) -> httpx.Response | Result:
        """One Jamf Pro API call with the bearer token; a 401 gets one new token and one more try."""
        for renew in (False, True):
            token = await self.token(renew=renew)
            if isinstance(token, Result):
                return token
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            content = None
            if payload is not None:
                headers["Content-Type"], content = "application/json", json.dumps(payload).encode()
            elif xml is not None:
                headers["Content-Type"], content = "text/xml", xml.encode()
            answer = await send(self.http, method, self.url + path, what="Jamf Pro", content=content, headers=headers)
            if isinstance(answer, Result) or answer.status_code != 401:
                break
        if isinstance(answer, Result):
            return answer
        return judge(answer, "Jamf Pro", auth_hint=AUTH_HINT) or answer

    async def token(self, *, renew: bool) -> str | Result:
        async with self._lock:
            if self._token is not None and not renew and time.monotonic() < self._expires - MARGIN:
                return self._token
            try:
                secret = reveal(self.client_secret)
            except SecretError as error:
                return Result.retry(f"cannot sign in to Jamf Pro: {error}")
            form = {"client_id": self.client_id, "client_secret": secret, "grant_type": "client_credentials"}
            answer = await send(
                self.http,
                "POST",
                self.url + "/api/oauth/token",
                what="Jamf Pro",
                content=str(httpx.QueryParams(form)).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            )
            if isinstance(answer, Result):
                return answer
            refused = judge(answer, "Jamf Pro", auth_hint=AUTH_HINT)
            if refused is not None:
                return refused
            body = json_body(answer)
            if not isinstance(body.get("access_token"), str):
                return Result.retry("Jamf Pro gave no access token")
            self._token = body["access_token"]
            lifetime = body.get("expires_in")
            self._expires = time.monotonic() + (float(lifetime) if isinstance(lifetime, (int, float)) else 60.0)
            return self._token
