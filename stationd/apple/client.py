"""A client of the Apple School/Business Manager API that keeps to Apple's budgets and says what went wrong.

- One bearer token at a time: fetched with the client assertion, kept until shortly before its `expires_in`, and
  fetched again once when the API answers 401; never per call (Apple answers 429 to a client asking too often).
- Every API call spends from a budget kept in the station's store (`Outbox.take_budget`): POSTs per hour and GETs
  per minute, named after the API account, so every station sharing a store shares them. A 429's Retry-After holds
  the budget for everyone.
- JSON:API error bodies (`errors[] {status, code, title, detail}`) become one plain sentence; the token, the
  assertion and the key never appear in a message or a log line.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import structlog

from stationd import outbound
from stationd.apple.credentials import TOKEN_URL, ApiAccount, Assertion
from stationd.redact import redact_url
from stationd.reporting.web import json_body, retry_after
from stationd.store import Outbox

log = structlog.get_logger("stationd.apple")

JSON = "application/json"
TOKEN_MARGIN = 60.0  # seconds before its expiry a token is replaced
MAX_PAGES = 100
CONFIGURATOR = "APPLE_CONFIGURATOR"


class AppleError(Exception):
    """A call did not give a usable answer. `transient`: worth trying again later; `after`: when (Retry-After, a
    spent budget); `status`: the HTTP status, when there was one."""

    def __init__(self, message: str, *, transient: bool = False, after: float | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.after = after
        self.status = status

    def __str__(self) -> str:
        return self.message


class BudgetSpent(AppleError):
    """Apple's observed limit for this kind of call is spent (or Apple said so): nothing was sent."""

    def __init__(self, message: str, after: float) -> None:
        super().__init__(message, transient=True, after=after)


@dataclass(frozen=True)
class Budget:
    posts_per_hour: int = 10
    gets_per_minute: int = 20
    wait: float = 120.0  # seconds a GET may wait for its budget before the caller is told to come back later


@dataclass(frozen=True)
class Server:
    """An MDM server of the organisation (or Apple Configurator's pseudo-server)."""

    id: str
    name: str
    type: str

    @property
    def configurator(self) -> bool:
        return self.type == CONFIGURATOR


class AppleClient:
    def __init__(
        self,
        account: ApiAccount,
        *,
        api_url: str,
        outbox: Outbox,
        http: httpx.AsyncClient,
        token_url: str = TOKEN_URL,
        budget: Budget = Budget(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.api_url = api_url.rstrip("/") + "/"
        self.token_url = token_url
        self.outbox = outbox
        self.http = http
        self.budget = budget
        self.clock = clock
        self.assertion = Assertion(account, clock=clock)
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = anyio.Lock()
        self._servers: list[Server] | None = None
        self.calls = {"POST": 0, "GET": 0, "token": 0}

    # -- the token ------------------------------------------------------------------------------------------------
    async def token(self, *, renew: bool = False) -> str:
        async with self._token_lock:
            if renew or self._token is None or self.clock() >= self._token_expires - TOKEN_MARGIN:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    async def _fetch_token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.account.client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion.current(),
            "scope": self.account.scope,
        }
        self.calls["token"] += 1
        response = await self._send(
            "POST",
            self.token_url,
            content=_form(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": JSON},
        )
        if response.status_code == 429:
            raise AppleError(
                "Apple refused a new token for a while (HTTP 429): the station asks for one an hour; "
                "another program using the same API account may ask too often",
                transient=True,
                after=retry_after(response) or 300.0,
                status=429,
            )
        if response.status_code >= 500:
            raise AppleError(f"Apple's sign-in service answered {response.status_code}", transient=True, status=500)
        body = json_body(response)
        if response.status_code != 200 or not isinstance(body.get("access_token"), str):
            reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            raise AppleError(
                f"Apple refused the API account's credentials ({reason}): check client_id, key_id and key_file "
                f"against the API account in {self.account.service} (Preferences › API); a revoked account needs "
                "a new key",
                status=response.status_code,
            )
        self._token = body["access_token"]
        lifetime = body.get("expires_in")
        self._token_expires = self.clock() + (float(lifetime) if isinstance(lifetime, (int, float)) else 3600.0)
        log.info("apple.token", service=self.account.service, expires_in=lifetime)

    # -- calls ----------------------------------------------------------------------------------------------------
    async def call(self, method: str, path: str, *, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call (a path under the API's URL, or a full URL on its host), within its budget."""
        url = path if path.startswith(("http://", "https://")) else self.api_url + path.lstrip("/")
        response = await self._api(method, url, body)
        if response.status_code in (200, 201, 202):
            return json_body(response)
        raise self._refusal(response, method, path)

    async def _api(self, method: str, url: str, body: dict[str, Any] | None, *, own_host: bool = True) -> Any:
        """A call to the API (its budget spent first), or a GET of an activity log on another host (no budget)."""
        if own_host:
            await self._spend(method)
        content = None if body is None else _dumps(body)
        for renewed in (False, True):
            headers = {"Accept": JSON}
            if own_host:
                headers["Authorization"] = f"Bearer {await self.token(renew=renewed)}"
            if content is not None:
                headers["Content-Type"] = JSON
            self.calls[method] = self.calls.get(method, 0) + 1
            response = await self._send(method, url, content=content, headers=headers)
            if response.status_code != 401 or renewed or not own_host:
                break
            log.info("apple.token_refused", hint="the token was refused; asking for a new one once")
        if response.status_code == 429:
            after = retry_after(response) or (3600.0 if method == "POST" else 60.0)
            await self.outbox.hold_budget(self._budget_name(method), self.clock() + after)
            raise BudgetSpent(
                f"{self.account.service} asked the station to wait {after:.0f} s (HTTP 429: too many "
                f"{method} requests)",
                after,
            )
        return response

    async def _spend(self, method: str) -> None:
        post = method == "POST"
        limit = self.budget.posts_per_hour if post else self.budget.gets_per_minute
        period = 3600.0 if post else 60.0
        deadline = time.monotonic() + (0.0 if post else self.budget.wait)
        while True:
            pause = await self.outbox.take_budget(self._budget_name(method), limit=limit, period=period)
            if pause <= 0:
                return
            if pause > deadline - time.monotonic():
                kind = f"{limit} POST an hour" if post else f"{limit} GET a minute"
                raise BudgetSpent(f"the budget of {kind} for {self.account.service} is spent for now", pause)
            await anyio.sleep(pause)

    def _budget_name(self, method: str) -> str:
        return f"apple:{self.account.client_id}:{'post' if method == 'POST' else 'get'}"

    async def _send(self, method: str, url: str, *, content: bytes | None, headers: dict[str, str]) -> Any:
        try:
            return await outbound.fetch(self.http, method, url, content=content, headers=headers)
        except outbound.Unreachable as error:
            raise AppleError(f"{self.account.service} cannot be reached ({error})", transient=True) from None
        except outbound.OutboundError as error:
            raise AppleError(f"{self.account.service}: {error}") from None

    def _refusal(self, response: Any, method: str, path: str) -> AppleError:
        status = response.status_code
        detail = jsonapi_message(json_body(response)) or f"HTTP {status}"
        where = f"{method} {path.split('?')[0]}"
        if status >= 500:
            return AppleError(f"{self.account.service} had trouble ({detail})", transient=True, status=status)
        if status == 401:
            return AppleError(
                f"{self.account.service} refused the API account's token twice ({detail}): check that the API "
                "account still exists",
                status=status,
            )
        if status == 403:
            return AppleError(
                f"{self.account.service} refused {where} ({detail}): the API account needs the permission to "
                '"assign devices to a device management service" (an Administrator or Site Manager gives it)',
                status=status,
            )
        return AppleError(f"{self.account.service} refused {where}: {detail}", status=status)

    # -- what the station asks ------------------------------------------------------------------------------------
    async def servers(self, *, fresh: bool = False) -> list[Server]:
        """The organisation's MDM servers (Apple Configurator's pseudo-server too), read once per client."""
        if self._servers is not None and not fresh:
            return self._servers
        found: list[Server] = []
        page: str | None = "mdmServers?limit=1000"
        for _ in range(MAX_PAGES):
            if page is None:
                break
            answer = await self.call("GET", page)
            for item in answer.get("data") or []:
                attributes = item.get("attributes") or {}
                found.append(
                    Server(
                        str(item.get("id")),
                        str(attributes.get("serverName") or ""),
                        str(attributes.get("serverType") or ""),
                    )
                )
            page = (answer.get("links") or {}).get("next")
        self._servers = found
        return found

    async def server(self, wanted: str) -> Server:
        """The MDM server named (or with the id) `wanted`."""
        servers = await self.servers()
        for server in servers:
            if server.id == wanted or server.name.casefold() == wanted.strip().casefold():
                return server
        names = ", ".join(f'"{s.name}"' for s in servers if not s.configurator) or "none"
        raise AppleError(
            f'{self.account.service} has no MDM server named "{wanted}"; its MDM servers are {names} '
            "(`stationd asm servers` lists them)"
        )

    async def assigned_server(self, serial: str) -> str | None:
        """The id of the server the serial is assigned to, None when unassigned; `NotInOrganisation` when the
        organisation does not have it."""
        try:
            answer = await self.call("GET", f"orgDevices/{quote(serial, safe='')}/relationships/assignedServer")
        except AppleError as error:
            if error.status == 404:
                raise NotInOrganisation(serial, self.account.service) from None
            raise
        data = answer.get("data")
        return str(data["id"]) if isinstance(data, dict) and data.get("id") else None

    async def post_activity(self, serials: list[str], server_id: str, activity: str = "ASSIGN_DEVICES") -> str:
        body = {
            "data": {
                "type": "orgDeviceActivities",
                "attributes": {"activityType": activity},
                "relationships": {
                    "mdmServer": {"data": {"type": "mdmServers", "id": server_id}},
                    "devices": {"data": [{"type": "orgDevices", "id": serial} for serial in serials]},
                },
            }
        }
        answer = await self.call("POST", "orgDeviceActivities", body=body)
        data = answer.get("data") or {}
        if not data.get("id"):
            raise AppleError(f"{self.account.service} accepted the assignment but gave no activity id", transient=True)
        return str(data["id"])

    async def activity(self, activity_id: str) -> dict[str, Any]:
        answer = await self.call("GET", f"orgDeviceActivities/{quote(activity_id, safe='')}")
        return (answer.get("data") or {}).get("attributes") or {}

    async def activity_log(self, url: str) -> list[dict[str, str]]:
        """The activity's per-serial log (CSV). The token goes only to the API's own host."""
        own = httpx.URL(url).host == httpx.URL(self.api_url).host
        response = await self._api("GET", url, None, own_host=own)
        if response.status_code != 200:
            raise AppleError(
                f"the activity log at {redact_url(url)} answered {response.status_code}",
                transient=response.status_code >= 500,
                status=response.status_code,
            )
        text = response.content.decode("utf-8-sig", errors="replace")
        return [
            {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))
        ]


class NotInOrganisation(AppleError):
    def __init__(self, serial: str, service: str) -> None:
        super().__init__(not_in_organisation(serial, service), status=404)
        self.serial = serial


def not_in_organisation(serial: str, service: str) -> str:
    return (
        f"{serial} is not in your organisation in {service}: ask your reseller to add it, or add it with "
        "Apple Configurator on a Mac (no API adds devices)"
    )


def jsonapi_message(body: dict[str, Any]) -> str:
    """A JSON:API error body as one sentence: "title: detail (code)", for each error."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for error in errors[:3]:
        if not isinstance(error, dict):
            continue
        title, detail, code = (str(error.get(k) or "") for k in ("title", "detail", "code"))
        text = ": ".join(dict.fromkeys(part for part in (title, detail) if part))
        if text or code:
            parts.append(text + (f" ({code})" if code else "") if text else code)
    return "; ".join(parts)[:500]


def _form(fields: dict[str, str]) -> bytes:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fields.items()).encode()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
