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
import json
from typing import Any
from urllib.parse import quote

import httpx

from stationd.config import convert
from stationd.hooks import hookimpl
from stationd.plugins import PluginContext, Settings
from stationd.reporting import DeliveryContext, Reporter, Result
from stationd.reporting.mdm import MdmReporter, base_url, not_enrolled_yet, secret_setting
from stationd.reporting.web import SecretError, judge, reveal, send
from stationd.store import Delivery

SETTINGS = ("url", "api_key", "group_id", "rename", "timeout", "patience")
AUTH_HINT = "check plugins.simplemdm.api_key (SimpleMDM › Settings › API)"


def make(settings: dict[str, Any], context: PluginContext) -> SimpleMdmPlugin:
    read = Settings(context.name, settings, SETTINGS)
    group = read.read("group_id", None, lambda v: None if v is None else convert.whole(1)(v), "group_id = 7")
    return SimpleMdmPlugin(
        SimpleMdmReporter(
            url=base_url(read, "https://a.simplemdm.com", default="https://a.simplemdm.com"),
            api_key=secret_setting(read, "api_key", '"{env:SIMPLEMDM_API_KEY}"'),
            group_id=group,
            rename=read.flag("rename", True),
            timeout=read.read("timeout", 15.0, convert.number(0.1, 300.0)),
            patience=read.read("patience", 3.0, convert.number(0.0, 365.0)) * 86400,
        )
    )


class SimpleMdmPlugin:
    def __init__(self, reporter: SimpleMdmReporter) -> None:
        self.reporter = reporter

    @hookimpl
    def stationd_reporter(self) -> Reporter:
        return self.reporter


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
            for item in _json(found).get("data") or []
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


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
