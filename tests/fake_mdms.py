"""Loopback fakes of the MDM APIs the presets use, and of an idempotent HTTP endpoint, each checking what the real
one checks: authentication, paths, bodies; with 401 for an expired token and queued faults (429 or 503 with
Retry-After, or a hang past the client's timeout)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stationd.httpserve import HTTPServer


class Faults:
    """Answers to give before the real ones: (status, Retry-After) pairs, or "hang"."""

    def __init__(self) -> None:
        self.queued: list[tuple[int, str | None] | str] = []
        self.release = anyio.Event()

    async def next(self) -> Response | None:
        if not self.queued:
            return None
        fault = self.queued.pop(0)
        if fault == "hang":
            await self.release.wait()
            return Response(status_code=503)
        status, after = fault  # type: ignore[misc]
        headers = {"Retry-After": after} if after else {}
        return JSONResponse({"errors": [{"title": "Slow down"}]}, status_code=status, headers=headers)


class FakeJamf:
    """Jamf Pro: OAuth client credentials, the v2 mobile-devices API and the Classic API's static groups."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.issued = 0
        self.devices: dict[str, dict[str, Any]] = {}  # id -> {serial, name}
        self.groups: dict[int, list[str]] = {}  # id -> serials
        self.calls: list[tuple[str, str]] = []
        self.faults = Faults()

    def enroll(self, serial: str) -> str:
        device_id = str(len(self.devices) + 100)
        self.devices[device_id] = {"serial": serial, "name": "iPad"}
        return device_id

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/oauth/token", self.token, methods=["POST"]),
                Route("/api/v2/mobile-devices/detail", self.detail, methods=["GET"]),
                Route("/api/v2/mobile-devices/{id}", self.patch, methods=["PATCH"]),
                Route("/JSSResource/mobiledevicegroups/id/{id:int}", self.group, methods=["PUT"]),
            ]
        )

    async def token(self, request: Request) -> Response:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form != {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "grant_type": "client_credentials",
        }:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = secrets.token_hex(16)
        self.tokens.add(token)
        self.issued += 1
        return JSONResponse({"access_token": token, "scope": "api-role:1", "token_type": "Bearer", "expires_in": 299})

    async def _checked(self, request: Request) -> Response | None:
        self.calls.append((request.method, request.url.path))
        fault = await self.faults.next()
        if fault is not None:
            return fault
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return JSONResponse({"httpStatus": 401, "errors": [{"code": "INVALID_TOKEN"}]}, status_code=401)
        return None

    async def detail(self, request: Request) -> Response:
        refused = await self._checked(request)
        if refused is not None:
            return refused
        found = re.fullmatch(r'serialNumber=="([^"]*)"', request.query_params.get("filter", ""))
        if found is None or request.query_params.get("section") != "GENERAL":
            return JSONResponse({"httpStatus": 400, "errors": [{"code": "INVALID_FIELD"}]}, status_code=400)
        results = [
            {"mobileDeviceId": device_id, "general": {"displayName": d["name"]}}
            for device_id, d in self.devices.items()
            if d["serial"] == found.group(1)
        ]
        return JSONResponse({"totalCount": len(results), "results": results})

    async def patch(self, request: Request) -> Response:
        refused = await self._checked(request)
        if refused is not None:
            return refused
        device = self.devices.get(request.path_params["id"])
        body = json.loads(await request.body() or b"null")
        if device is None:
            return JSONResponse({"httpStatus": 404, "errors": []}, status_code=404)
        if request.headers.get("content-type") != "application/json" or set(body or {}) != {"name"}:
            return JSONResponse({"httpStatus": 400, "errors": [{"code": "INVALID_FIELD"}]}, status_code=400)
        device["name"] = body["name"]
        return JSONResponse({"id": request.path_params["id"], "name": body["name"]})

    async def group(self, request: Request) -> Response:
        refused = await self._checked(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type") != "text/xml":
            return Response("<error>Unsupported Media Type</error>", status_code=415)
        root = ET.fromstring(await request.body())
        serials = [e.text or "" for e in root.findall("./mobile_device_additions/mobile_device/serial_number")]
        if root.tag != "mobile_device_group" or not serials:
            return Response("<error>Bad Request</error>", status_code=400)
        members = self.groups.setdefault(request.path_params["id"], [])
        members.extend(s for s in serials if s not in members)
        return Response(f"<mobile_device_group><id>{request.path_params['id']}</id></mobile_device_group>", 201)


class FakeSimpleMdm:
    """SimpleMDM: the API key as the Basic user, devices by search, form-encoded updates, assignment groups."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.devices: dict[int, dict[str, Any]] = {}
        self.groups: dict[int, list[int]] = {}
        self.calls: list[tuple[str, str]] = []
        self.faults = Faults()

    def enroll(self, serial: str) -> int:
        device_id = len(self.devices) + 121
        self.devices[device_id] = {"serial_number": serial, "name": "iPad", "device_name": "iPad"}
        return device_id

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/devices", self.search, methods=["GET"]),
                Route("/api/v1/devices/{id:int}", self.update, methods=["PATCH"]),
                Route("/api/v1/assignment_groups/{group:int}/devices/{id:int}", self.assign, methods=["POST"]),
            ]
        )

    async def _checked(self, request: Request) -> Response | None:
        self.calls.append((request.method, request.url.path))
        fault = await self.faults.next()
        if fault is not None:
            return fault
        expected = "Basic " + base64.b64encode(f"{self.api_key}:".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"errors": [{"title": "api key is invalid"}]}, status_code=401)
        return None

    async def search(self, request: Request) -> Response:
        refused = await self._checked(request)
        if refused is not None:
            return refused
        wanted = request.query_params.get("search", "")
        data = [
            {"type": "device", "id": device_id, "attributes": dict(d)}
            for device_id, d in self.devices.items()
            if wanted and wanted.lower() in d["serial_number"].lower()
        ]
        return JSONResponse({"data": data, "has_more": False})

    async def update(self, request: Request) -> Response:
        refused = await self._checked(request)
        if refused is not None:
            return refused
        device = self.devices.get(request.path_params["id"])
        if device is None:
            return JSONResponse({"errors": [{"title": "object not found"}]}, status_code=404)
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return JSONResponse({"errors": [{"title": "unsupported content type"}]}, status_code=400)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if not form or not set(form) <= {"name", "device_name"}:
            return JSONResponse({"errors": [{"title": "unknown attribute"}]}, status_code=422)
        device.update(form)
        return JSONResponse({"data": {"type": "device", "id": request.path_params["id"], "attributes": device}})

    async def assign(self, request: Request) -> Response:
        refused = await self._checked(request)
        if refused is not None:
            return refused
        if request.path_params["id"] not in self.devices:
            return JSONResponse({"errors": [{"title": "object not found"}]}, status_code=404)
        members = self.groups.setdefault(request.path_params["group"], [])
        if request.path_params["id"] not in members:
            members.append(request.path_params["id"])
        return Response(status_code=204)


class IdempotentEndpoint:
    """Any endpoint that honours Idempotency-Key: a key applied once is answered again without applying it twice.
    `applied` counts each key's effects (1 each, however often it came); `seen` every request's key."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.applied: dict[str, int] = {}
        self.bodies: dict[str, Any] = {}
        self.seen: list[str] = []
        self.faults = Faults()
        self.refusing: tuple[int, str] | None = None  # every request answered so, until cleared
        self.refuse: dict[str, tuple[int, str]] = {}  # serial -> (status, message) it is always refused with

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/ipads/{serial}", self.handle, methods=["POST", "PUT", "PATCH"])])

    async def handle(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key", "")
        self.seen.append(key)
        fault = await self.faults.next()
        if fault is not None:
            return fault
        if self.refusing is not None:
            status, after = self.refusing
            return JSONResponse({"message": "maintenance"}, status_code=status, headers={"Retry-After": after})
        if request.path_params["serial"] in self.refuse:
            status, message = self.refuse[request.path_params["serial"]]
            return JSONResponse({"message": message}, status_code=status)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"message": "bad token"}, status_code=401)
        if not key:
            return JSONResponse({"message": "Idempotency-Key is required"}, status_code=400)
        if key not in self.applied:
            self.applied[key] = 1
            self.bodies[key] = await request.json()
        return JSONResponse({"ok": True}, status_code=201)


@contextlib.asynccontextmanager
async def serving(app: Starlette, faults: Faults | None = None) -> AsyncIterator[str]:
    server = HTTPServer(app)
    await server.start()
    try:
        yield server.url
    finally:
        if faults is not None:
            faults.release.set()
        await server.stop()
