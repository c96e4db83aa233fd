"""A fake of Apple School Manager's (and Apple Business Manager's) API that checks what the real one checks.

- `POST /auth/oauth2/token` (and `/auth/oauth2/v2/token`): the fields as a form body or in the query string (Apple's
  sample); `client_credentials` with a JWT-bearer client assertion whose ES256 signature verifies with the API
  account's public key (its `kid`), whose `aud` is Apple's, `iss` = `sub` = the client id, with `iat`, `jti` and an
  `exp` still ahead and at most 180 days after `iat`; the scope of the account's product. More than
  `tokens_per_hour` tokens an hour are answered 429, as Apple answers a client that asks too often.
- The API (`/v1/...`): a bearer token it issued and that has not expired, `Accept: application/json`, JSON:API
  bodies and errors, cursor paging (`limit` at most 1000), and the observed budgets (POSTs per hour, GETs per
  minute) past which it answers 429 with Retry-After.
- `orgDeviceActivities`: ASSIGN_DEVICES moves each serial of the organisation to the server, except the `stuck`
  ones; the activity says IN_PROGRESS for its first `polls` reads (or while `hold` is set), then COMPLETED with
  COMPLETED_WITH_SUCCESS whatever happened per serial: only its log (`downloadUrl`, CSV) tells, and it leaves out the
  serials in `unlogged`.
"""

from __future__ import annotations

import base64
import csv
import io
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stationd.apple.credentials import AUDIENCE, CLIENT_PREFIXES, MAX_ASSERTION_DAYS, SCOPES

JSON = "application/json"
CONFIGURATOR_NAME = "Devices Added by Apple Configurator 2"
ACTIVITY_TYPES = (
    "ASSIGN_DEVICES",
    "UNASSIGN_DEVICES",
    "ASSIGN_DEVICES_WITH_MDM_MIGRATION_DEADLINE",
    "UPDATE_MDM_MIGRATION_DEADLINE",
    "CANCEL_MDM_MIGRATION",
)


@dataclass
class Activity:
    id: str
    kind: str
    server: str
    serials: list[str]
    reads: int = 0
    done: bool = False
    log: list[tuple[str, str, str]] = field(default_factory=list)


class FakeAppleApi:
    """The fake's state: the organisation's servers and devices, the API account, and what was asked."""

    def __init__(
        self,
        *,
        product: str = "school",
        servers: dict[str, str] | None = None,
        devices: dict[str, str | None] | None = None,
        posts_per_hour: int = 10,
        gets_per_minute: int = 20,
        tokens_per_hour: int = 10,
        polls: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.product = product
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.client_id = f"{CLIENT_PREFIXES[product]}{uuid.uuid4()}"
        self.key_id = secrets.token_hex(5)
        self.configurator_id = "AC" + secrets.token_hex(8).upper()
        self.servers: dict[str, tuple[str, str]] = {self.configurator_id: (CONFIGURATOR_NAME, "APPLE_CONFIGURATOR")}
        for name, server_id in (servers or {"Lincoln MDM": "MDM1"}).items():
            self.servers[server_id] = (name, "MDM")
        self.devices: dict[str, str | None] = dict(devices or {})
        self.posts_per_hour, self.gets_per_minute, self.tokens_per_hour = (
            posts_per_hour,
            gets_per_minute,
            tokens_per_hour,
        )
        self.polls = polls
        self.clock = clock
        self.hold = False
        self.stuck: set[str] = set()
        self.unlogged: set[str] = set()
        self.tokens: dict[str, float] = {}
        self.activities: dict[str, Activity] = {}
        self.moves: dict[str, int] = {}  # serial -> how many activities moved it
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call that was answered
        self.refused: list[tuple[int, str]] = []  # (status, why) of every refusal
        self.on_assigned: Callable[[str, str], None] | None = None  # (serial, server name) once moved
        self.on_polled: Callable[[Activity], None] | None = None  # after every read of an activity
        self._posts: deque[float] = deque()
        self._gets: deque[float] = deque()
        self._issued: deque[float] = deque()

    # -- what a test sets up --------------------------------------------------------------------------------------
    def add_devices(self, serials: list[str], server: str | None = None) -> None:
        """Serials of the organisation, on `server` (default: Apple Configurator's pseudo-server)."""
        for serial in serials:
            self.devices[serial] = server or self.configurator_id

    def key_pem(self) -> bytes:
        """The API account's private key as Apple hands it out (PEM)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (the next call with one is answered 401)."""
        self.tokens = dict.fromkeys(self.tokens, 0.0)

    def server_of(self, serial: str) -> str | None:
        return self.devices.get(serial)

    @property
    def posts(self) -> int:
        return sum(1 for method, path in self.requests if method == "POST")

    @property
    def gets(self) -> int:
        return sum(1 for method, _ in self.requests if method == "GET")

    # -- the app --------------------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/auth/oauth2/token", self._token, methods=["POST"]),
                Route("/auth/oauth2/v2/token", self._token, methods=["POST"]),
                Route("/v1/mdmServers", self._servers, methods=["GET"]),
                Route("/v1/orgDevices", self._org_devices, methods=["GET"]),
                Route("/v1/orgDevices/{serial}", self._org_device, methods=["GET"]),
                Route("/v1/orgDevices/{serial}/relationships/assignedServer", self._assigned, methods=["GET"]),
                Route("/v1/orgDeviceActivities", self._post_activity, methods=["POST"]),
                Route("/v1/orgDeviceActivities/{id}", self._activity, methods=["GET"]),
                Route("/downloads/{id}.csv", self._log, methods=["GET"]),
            ]
        )

    # -- the token ------------------------------------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        fields = {k: v[0] for k, v in parse_qs(request.url.query).items()}
        if body:
            if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                return self._oauth_error(400, "invalid_request", "the token request must be a form")
            fields.update({k: v[0] for k, v in parse_qs(body).items()})
        problem = self._assertion_problem(fields)
        if problem is not None:
            return self._oauth_error(400 if problem[0] != "invalid_client" else 401, *problem)
        now = self.clock()
        while self._issued and self._issued[0] <= now - 3600:
            self._issued.popleft()
        if len(self._issued) >= self.tokens_per_hour:
            self.refused.append((429, "token requested too often"))
            return JSONResponse({"error": "rate_limited"}, status_code=429, headers={"Retry-After": "3600"})
        self._issued.append(now)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + 3600
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": fields["scope"]}
        )

    def _assertion_problem(self, fields: dict[str, str]) -> tuple[str, str] | None:
        if fields.get("grant_type") != "client_credentials":
            return "unsupported_grant_type", "grant_type must be client_credentials"
        if fields.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return "invalid_request", "client_assertion_type must be the JWT-bearer type"
        if fields.get("client_id") != self.client_id:
            return "invalid_client", "unknown client_id"
        if fields.get("scope") != SCOPES[self.product]:
            return "invalid_scope", f"the scope of this account is {SCOPES[self.product]}"
        assertion = fields.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.key.public_key(),
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=self.client_id,
                options={"require": ["iss", "sub", "aud", "iat", "exp", "jti"]},
            )
        except jwt.PyJWTError as error:
            return "invalid_client", f"client assertion refused: {type(error).__name__}"
        if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
            return "invalid_client", "client assertion header: alg must be ES256 and kid the key id"
        if claims["sub"] != self.client_id:
            return "invalid_client", "client assertion: sub must be the client id"
        if claims["exp"] - claims["iat"] > MAX_ASSERTION_DAYS * 86400:
            return "invalid_client", "client assertion: exp is more than 180 days after iat"
        return None

    def _oauth_error(self, status: int, error: str, description: str) -> Response:
        self.refused.append((status, description))
        return JSONResponse({"error": error, "error_description": description}, status_code=status)

    # -- the API's checks -----------------------------------------------------------------------------------------
    def _refuse(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
        self.refused.append((status, detail))
        error = {
            "id": str(uuid.uuid4()),
            "status": str(status),
            "code": code,
            "title": code.replace("_", " ").title(),
            "detail": detail,
        }
        return JSONResponse({"errors": [error]}, status_code=status, headers=headers)

    def _checked(self, request: Request) -> Response | None:
        authorization = request.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        if token is None or self.tokens.get(token, 0.0) <= self.clock():
            return self._refuse(401, "UNAUTHORIZED", "Authentication credentials are missing or invalid.")
        if JSON not in request.headers.get("accept", ""):
            return self._refuse(406, "NOT_ACCEPTABLE", "Send Accept: application/json.")
        now = self.clock()
        post = request.method == "POST"
        window, limit, period = (
            (self._posts, self.posts_per_hour, 3600) if post else (self._gets, self.gets_per_minute, 60)
        )
        while window and window[0] <= now - period:
            window.popleft()
        if len(window) >= limit:
            wait = int(window[0] + period - now) + 1
            return self._refuse(
                429, "RATE_LIMIT_EXCEEDED", "The request rate limit has been reached.", {"Retry-After": str(wait)}
            )
        window.append(now)
        self.requests.append((request.method, request.url.path))
        return None

    # -- reads ----------------------------------------------------------------------------------------------------
    async def _servers(self, request: Request) -> Response:
        refused = self._checked(request)
        if refused is not None:
            return refused
        items = [
            {"type": "mdmServers", "id": sid, "attributes": {"serverName": name, "serverType": kind}}
            for sid, (name, kind) in self.servers.items()
        ]
        return self._page(request, items)

    async def _org_devices(self, request: Request) -> Response:
        refused = self._checked(request)
        if refused is not None:
            return refused
        items = [self._device(serial) for serial in self.devices]
        return self._page(request, items)

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        try:
            limit = int(request.query_params.get("limit", "100"))
            start = int(base64.urlsafe_b64decode(request.query_params.get("cursor", "") + "==") or b"0")
        except ValueError:
            return self._refuse(400, "PARAMETER_ERROR.INVALID", "limit must be a number and cursor one we gave.")
        if not 1 <= limit <= 1000:
            return self._refuse(400, "PARAMETER_ERROR.INVALID", "limit must be from 1 to 1000.")
        body: dict[str, Any] = {"data": items[start : start + limit], "links": {"self": str(request.url)}}
        if start + limit < len(items):
            cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode().rstrip("=")
            body["links"]["next"] = str(request.url.include_query_params(cursor=cursor, limit=limit))
        body["meta"] = {"paging": {"total": len(items), "limit": limit}}
        return JSONResponse(body)

    def _device(self, serial: str) -> dict[str, Any]:
        return {
            "type": "orgDevices",
            "id": serial,
            "attributes": {
                "serialNumber": serial,
                "deviceModel": "iPad",
                "productFamily": "iPad",
                "status": "ASSIGNED" if self.devices.get(serial) else "UNASSIGNED",
            },
        }

    def _unknown_device(self, request: Request) -> Response | None:
        """The refusal of a request about a serial (checked first), or None for a device of the organisation."""
        refused = self._checked(request)
        if refused is not None or request.path_params["serial"] in self.devices:
            return refused
        serial = request.path_params["serial"]
        return self._refuse(404, "NOT_FOUND", f"There is no orgDevices resource with the id '{serial}'.")

    async def _org_device(self, request: Request) -> Response:
        refused = self._unknown_device(request)
        if refused is not None:
            return refused
        return JSONResponse({"data": self._device(request.path_params["serial"]), "links": {"self": str(request.url)}})

    async def _assigned(self, request: Request) -> Response:
        refused = self._unknown_device(request)
        if refused is not None:
            return refused
        server = self.devices[request.path_params["serial"]]
        data = {"type": "mdmServers", "id": server} if server else None
        return JSONResponse({"data": data, "links": {"self": str(request.url)}})

    # -- activities -----------------------------------------------------------------------------------------------
    async def _post_activity(self, request: Request) -> Response:
        refused = self._checked(request)
        if refused is not None:
            return refused
        if not request.headers.get("content-type", "").startswith(JSON):
            return self._refuse(415, "UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json.")
        try:
            data = (await request.json())["data"]
            kind = data["attributes"]["activityType"]
            server = data["relationships"]["mdmServer"]["data"]
            devices = data["relationships"]["devices"]["data"]
            assert data["type"] == "orgDeviceActivities" and server["type"] == "mdmServers"
            assert isinstance(devices, list) and devices
            assert all(d["type"] == "orgDevices" and isinstance(d["id"], str) and d["id"] for d in devices)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._refuse(400, "ENTITY_ERROR", "The request entity is not a valid orgDeviceActivities document.")
        if kind not in ACTIVITY_TYPES:
            return self._refuse(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", f"'{kind}' is not a valid activityType.")
        if server["id"] not in self.servers or self.servers[server["id"]][1] != "MDM":
            return self._refuse(409, "ENTITY_ERROR.RELATIONSHIP.INVALID", "The mdmServer is not one of yours.")
        activity = Activity(str(uuid.uuid4()), kind, server["id"], [d["id"] for d in devices])
        self.activities[activity.id] = activity
        return JSONResponse({"data": self._activity_body(request, activity)}, status_code=201)

    async def _activity(self, request: Request) -> Response:
        refused = self._checked(request)
        if refused is not None:
            return refused
        activity = self.activities.get(request.path_params["id"])
        if activity is None:
            return self._refuse(404, "NOT_FOUND", "There is no orgDeviceActivities resource with this id.")
        activity.reads += 1
        if not activity.done and not self.hold and activity.reads > self.polls:
            self._carry_out(activity)
        if self.on_polled is not None:
            self.on_polled(activity)
        return JSONResponse({"data": self._activity_body(request, activity)})

    def _carry_out(self, activity: Activity) -> None:
        for serial in activity.serials:
            if serial not in self.devices:
                activity.log.append((serial, "FAILED", "DEVICE_NOT_FOUND"))
            elif serial in self.stuck:
                activity.log.append((serial, "FAILED", "DEVICE_LOCKED_BY_PENDING_OPERATION"))
            else:
                target = activity.server if activity.kind.startswith("ASSIGN") else None
                self.devices[serial] = target
                self.moves[serial] = self.moves.get(serial, 0) + 1
                activity.log.append((serial, "SUCCESS", ""))
                if self.on_assigned is not None and target is not None:
                    self.on_assigned(serial, self.servers[target][0])
        activity.done = True

    def _activity_body(self, request: Request, activity: Activity) -> dict[str, Any]:
        attributes: dict[str, Any] = {"activityType": activity.kind, "status": "IN_PROGRESS", "subStatus": "SUBMITTED"}
        if activity.done:
            attributes.update(
                status="COMPLETED",
                subStatus="COMPLETED_WITH_SUCCESS",
                downloadUrl=str(request.base_url).rstrip("/") + f"/downloads/{activity.id}.csv",
            )
        return {"type": "orgDeviceActivities", "id": activity.id, "attributes": attributes}

    async def _log(self, request: Request) -> Response:
        activity = self.activities.get(request.path_params["id"])
        if activity is None or not activity.done:
            return Response("Not Found", status_code=404)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["serial_number", "operation_status", "operation_substatus"])
        for row in activity.log:
            if row[0] not in self.unlogged:
                writer.writerow(row)
        return Response(out.getvalue(), media_type="text/csv")
