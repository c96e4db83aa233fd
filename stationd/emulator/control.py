"""The emulator's control API: look at virtual iPads, add them, pull and push their cables (JSON over HTTP).

    GET  /                       where the emulator listens, speed, device counts
    GET  /devices                full snapshots of every device
    GET  /devices/{udid}         one snapshot
    POST /devices                add a device: JSON with any DeviceSpec fields (identity generated when absent)
    POST /devices/{udid}/unplug  pull the cable
    POST /devices/{udid}/plug    plug it back: {"location_id": N} plugs it into another port
    POST /devices/{udid}/battery set the battery: {"level": 10} and/or {"charging": false} (the port charges or not)

It has no authentication: it listens on loopback only (unless the emulator runs with --allow-remote), and every POST
must say `Content-Type: application/json`, which a web page cannot send to another site without its consent (a CORS
preflight), so a page in the technician's browser cannot pull cables. Handlers run on the emulator's event loop.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stationd.emulator.scenario import ScenarioError, build_spec, check_unique, convert_fields
from stationd.httpserve import is_loopback, parse_address

if TYPE_CHECKING:
    from stationd.emulator.emulator import Emulator


def check_loopback(address: str, what: str) -> None:
    """Refuse an address that other machines could reach."""
    host, _ = parse_address(address)
    if not is_loopback(host):
        raise ValueError(
            f"{what} listens on loopback only, not on {host}: it has no authentication (give --allow-remote to "
            "expose it on a network you trust)"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_jsonable, separators=(",", ":")).encode()


def _error(status: int, message: str) -> Response:
    return _JSON({"error": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object in the request body ({} when empty); ValueError when it is something else."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


async def _body_of(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON body, holding only the `allowed` keys."""
    body = await _body(request)
    unknown = set(body) - set(allowed)
    if unknown:
        raise ScenarioError(f"unknown key (only {' and '.join(allowed)} can be given)", sorted(unknown)[0])
    return body


def control_app(emulator: Emulator) -> JsonPostsOnly:
    """The ASGI app of the control API for one emulator."""

    async def summary(request: Request) -> Response:
        devices = list(emulator.devices.values())
        return _JSON(
            {
                "usbmuxd": emulator.usbmux_address,
                "usbmuxd_env": f"USBMUXD_SOCKET_ADDRESS={emulator.usbmux_address}",
                "activation_url": emulator.activation_url,
                "control_url": emulator.control_url,
                "speed": emulator.speed,
                "seed": emulator.seed,
                "devices": len(devices),
                "attached": sum(1 for d in devices if d.attached),
            }
        )

    async def list_devices(request: Request) -> Response:
        return _JSON([d.snapshot() for d in emulator.devices.values()])

    async def get_device(request: Request) -> Response:
        device = emulator.devices.get(request.path_params["udid"])
        if device is None:
            return _error(404, f"no virtual device with UDID {request.path_params['udid']}")
        return _JSON(device.snapshot())

    async def add_device(request: Request) -> Response:
        try:
            spec = build_spec(await _body(request), len(emulator.devices), emulator.seed)
            check_unique([spec], existing=[d.spec for d in emulator.devices.values()])
        except ValueError as error:  # ScenarioError included
            return _error(400, str(error))
        device = emulator.add_device(spec)
        return _JSON(device.snapshot(), status_code=201)

    async def unplug(request: Request) -> Response:
        udid = request.path_params["udid"]
        if udid not in emulator.devices:
            return _error(404, f"no virtual device with UDID {udid}")
        return _JSON(emulator.unplug(udid).snapshot())

    async def plug(request: Request) -> Response:
        udid = request.path_params["udid"]
        if udid not in emulator.devices:
            return _error(404, f"no virtual device with UDID {udid}")
        try:
            body = await _body_of(request, ("location_id",))
            location = body.get("location_id")
            if location is not None and (isinstance(location, bool) or not isinstance(location, int) or location < 0):
                raise ScenarioError("must be a whole number, 0 or more", "location_id")
        except ValueError as error:
            return _error(400, str(error))
        return _JSON(emulator.plug(udid, location).snapshot())

    async def battery(request: Request) -> Response:
        udid = request.path_params["udid"]
        if udid not in emulator.devices:
            return _error(404, f"no virtual device with UDID {udid}")
        try:
            body = await _body_of(request, ("level", "charging"))
            if not body:
                raise ScenarioError('give "level" (percent) and/or "charging" (true or false)')
            checked = convert_fields({"battery": body}, None)["battery"]
        except ValueError as error:
            return _error(400, str(error))
        device = emulator.device(udid)
        level = checked.level if "level" in body else None
        device.contents.battery.set(emulator.clock(), level, checked.charging if "charging" in body else None)
        return _JSON(device.snapshot())

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such endpoint: {request.method} {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    app = Starlette(
        routes=[
            Route("/", summary, methods=["GET"]),
            Route("/devices", list_devices, methods=["GET"]),
            Route("/devices", add_device, methods=["POST"]),
            Route("/devices/{udid}", get_device, methods=["GET"]),
            Route("/devices/{udid}/unplug", unplug, methods=["POST"]),
            Route("/devices/{udid}/plug", plug, methods=["POST"]),
            Route("/devices/{udid}/battery", battery, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )
    return JsonPostsOnly(app)


class JsonPostsOnly:
    """415 for a POST that is not declared as JSON: cross-site "simple" requests (text/plain, forms) never get in."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = Headers(scope=scope).get("content-type", "").partition(";")[0].strip().lower()
            if kind != "application/json":
                response = _error(415, "send the request with the header Content-Type: application/json")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
