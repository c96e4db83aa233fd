"""Name each finished iPad in SimpleMDM and put it in an assignment group, through SimpleMDM's API.

SimpleMDM's API documentation (https://api.simplemdm.com/v1):
- Authentication: the API key as the HTTP Basic user name, with no password
  (https://api.simplemdm.com/v1#authentication); errors are JSON with `errors[].title`; 429 when rate-limited.
- Finding the iPad: `GET /api/v1/devices?search=SERIAL` (https://api.simplemdm.com/v1#list-all-1), matched on
  `attributes.serial_number`.
- Naming it: `PATCH /api/v1/devices/{id}` with `name` (the record in SimpleMDM) and `device_name` (the iPad's own
  name, which SimpleMDM sets on a supervised iPad) (https://api.simplemdm.com/v1#update).
- The group: `POST /api/v1/assignment_groups/{group}/devices/{device}` (https://api.simplemdm.com/v1#assign-device),
  answered 204.

Settings, under [plugins.simplemdm]:
    api_key    where the API key is: "{env:SIMPLEMDM_API_KEY}" or "{file:/etc/stationd/simplemdm.key}" (0600)
    group_id   the assignment group to add the iPad to (its number); none by default
    rename     true (default): set the iPad's name (record and device); false: leave names alone
    url        "https://a.simplemdm.com" unless you test against a fake
    timeout    seconds per request (default 15); patience: days of retries (default 3)
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx

from stationd.plugins import PluginContext, Settings
from stationd.reporting import DeliveryContext, ReporterPlugin, Result
from stationd.reporting.mdm import MdmReporter, base_url, common_settings, not_enrolled_yet, secret_setting
from stationd.reporting.web import SecretError, json_body, judge, reveal, send
from stationd.store import Delivery

SETTINGS = ("url", "api_key", "group_id", "rename", "timeout", "patience")
AUTH_HINT = "check plugins.simplemdm.api_key (SimpleMDM › Settings › API)"


def make(settings: dict[str, Any], context: PluginContext) -> ReporterPlugin:
    read = Settings(context.name, settings, SETTINGS)
    return ReporterPlugin(
        SimpleMdmReporter(
            url=base_url(read, "https://a.simplemdm.com", default="https://a.simplemdm.com"),
            api_key=secret_setting(read, "api_key", '"{env:SIMPLEMDM_API_KEY}"'),
            **common_settings(read, "group_id = 7"),
        )
    )


class SimpleMdmReporter(MdmReporter):
    url: str
    api_key: str
    group_id: int | None
    rename: bool

    async def deliver(self, deliveries: list[Delivery], context: DeliveryContext) -> dict[str, Result]:
        return {delivery.key: await self.one(delivery) for delivery in deliveries}

    async def one(self, delivery: Delivery) -> Result:
        serial, name = delivery.serial or "", delivery.payload.get("name")
        found = await self.call("GET", f"/api/v1/devices?search={quote(serial, safe='')}")
        if isinstance(found, Result):
            return found
        matches = [
            item
            for item in json_body(found).get("data") or []
            if str((item.get("attributes") or {}).get("serial_number") or "").upper() == serial.upper()
        ]
        if not matches:
            return not_enrolled_yet("SimpleMDM", serial)
        device_id = str(matches[0].get("id"))
        done = []
        if self.rename and name:
            form = httpx.QueryParams({"name": name, "device_name": name})
            renamed = await self.call("PATCH", f"/api/v1/devices/{quote(device_id)}", form=str(form))
            if isinstance(renamed, Result):
                return renamed
            done.append(f'named "{name}"')
        if self.group_id is not None:
            added = await self.call("POST", f"/api/v1/assignment_groups/{self.group_id}/devices/{quote(device_id)}")
            if isinstance(added, Result):
                return added
            done.append(f"added to assignment group {self.group_id}")
        return Result.done(f"SimpleMDM device {device_id}: " + (", ".join(done) or "found"), simplemdm_id=device_id)

    async def call(self, method: str, path: str, *, form: str | None = None) -> httpx.Response | Result:
        try:
            key = reveal(self.api_key)
        except SecretError as error:
            return Result.retry(f"cannot use SimpleMDM: {error}")
        headers = {
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
            "Accept": "application/json",
        }
        content = None
        if form is not None:
            headers["Content-Type"], content = "application/x-www-form-urlencoded", form.encode()
        answer = await send(self.http, method, self.url + path, what="SimpleMDM", content=content, headers=headers)
        if isinstance(answer, Result):
            return answer
        return judge(answer, "SimpleMDM", auth_hint=AUTH_HINT) or answer
