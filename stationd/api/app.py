"""The station's HTTP API and live dashboard (Starlette): JSON reads, token-guarded actions, server-sent events."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stationd.api.auth import refusal
from stationd.api.ports import device_view, job_view, port_views, status_counts
from stationd.errors import ConfigurationError
from stationd.events import Event
from stationd.httpserve import HTTPServer, parse_address
from stationd.report import device_rows, to_csv, to_json

log = structlog.get_logger("stationd.api")

HERE = Path(__file__).parent
DEFAULT_PORT = 8480
HEARTBEAT = 15.0
RECONNECT_MS = 3000
REPLAY_PAGE = 500
DEVICE_EVENTS = 50
MAX_EVENTS = 1000
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class SecurityHeaders:
    """Add the strict CSP and friends to every response (API responses are also never cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if scope["path"].startswith("/api/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def sse(event: Event) -> bytes:
    """One server-sent event: id, kind and the event as one line of JSON."""
    data = json.dumps(event.as_dict(), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


class EventStream:
    """The bus as server-sent events, after replaying the store from `after`; ends on disconnect or shutdown."""

    def __init__(self, station: Any, after: int | None, heartbeat: float, closing: anyio.Event) -> None:
        self.station = station
        self.after = after
        self.heartbeat = heartbeat
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        disconnected = False

        async def until_disconnected() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            tasks.cancel_scope.cancel()

        async def until_closing() -> None:
            await self.closing.wait()
            tasks.cancel_scope.cancel()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(until_disconnected)
            tasks.start_soon(until_closing)
            await self._stream(send)
            tasks.cancel_scope.cancel()
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        with self.station.bus.subscribe() as events:
            await write(f"retry: {RECONNECT_MS}\n\n".encode())
            floor = last = self.after
            if self.after is not None:
                floor = last = await self._replay(write, self.after)
            missed = 0
            while True:
                event = None
                with anyio.move_on_after(self.heartbeat):
                    event = await events.get()
                if event is None:
                    await write(b": heartbeat\n\n")
                    continue
                if events.missed != missed and last is not None:
                    missed = events.missed
                    floor = last = await self._replay(write, last)
                if floor is not None and event.id <= floor:
                    continue
                await write(sse(event))
                last = event.id
                if event.kind == "station.stopping":
                    return

    async def _replay(self, write: Any, after: int) -> int:
        """Send the stored events after `after`; return the last id sent (or `after`)."""
        while True:
            records = await self.station.store.list_events(after_id=after, limit=REPLAY_PAGE)
            for record in records:
                await write(sse(Event.from_record(record)))
                after = record.id
            if len(records) < REPLAY_PAGE:
                return after


class Api:
    """The endpoints, bound to one station."""

    def __init__(self, station: Any, heartbeat: float) -> None:
        self.station = station
        self.heartbeat = heartbeat
        self.started_at = getattr(station, "started_at", None) or time.time()
        self.closing = anyio.Event()
        self.dashboard_html = (HERE / "dashboard.html").read_text(encoding="utf-8")

    @property
    def store(self) -> Any:
        return self.station.store

    async def dashboard(self, request: Request) -> Response:
        return HTMLResponse(self.dashboard_html, headers={"cache-control": "no-cache"})

    async def station_info(self, request: Request) -> Response:
        ports = port_views(self.station)
        devices = await self.store.list_devices()
        config = self.station.config
        return JSONResponse(
            {
                "id": self.station.station_id,
                "organization": config.organization.name,
                "plan": self.station.plan,
                "concurrency": config.station.concurrency,
                "started_at": self.started_at,
                "now": time.time(),
                "ports": status_counts(ports),
                "devices": dict(Counter(device.state for device in devices)),
            }
        )

    async def ports(self, request: Request) -> Response:
        ports = port_views(self.station)
        return JSONResponse(
            {"station": self.station.station_id, "now": time.time(), "counts": status_counts(ports), "ports": ports}
        )

    async def devices(self, request: Request) -> Response:
        now = time.time()
        views = []
        for device in await self.store.list_devices():
            jobs = await self.store.jobs_for(device.udid)
            views.append(device_view(device, jobs[-1] if jobs else None, self.station, now))
        return JSONResponse({"devices": views})

    async def device(self, request: Request) -> Response:
        udid = request.path_params["udid"]
        device = await self.store.get_device(udid)
        if device is None:
            return unknown_device(udid)
        now = time.time()
        jobs = await self.store.jobs_for(udid)
        records = await self.store.list_events(udid=udid, limit=1_000_000)
        view = device_view(device, jobs[-1] if jobs else None, self.station, now)
        view["jobs"] = [job_view(job, self.station.plan, now) for job in jobs]
        view["events"] = [Event.from_record(record).as_dict() for record in records[-DEVICE_EVENTS:]]
        return JSONResponse(view)

    async def events(self, request: Request) -> Response:
        try:
            after = _int_param(request, "after", 0, 0, None)
            limit = _int_param(request, "limit", 100, 1, MAX_EVENTS)
        except ValueError as e:
            return error(400, str(e))
        udid = request.query_params.get("udid") or None
        records = await self.store.list_events(after_id=after, udid=udid, limit=limit)
        return JSONResponse(
            {
                "events": [Event.from_record(record).as_dict() for record in records],
                "last_id": records[-1].id if records else after,
            }
        )

    async def export(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "json"):
            return error(400, f"format must be csv or json, not {fmt!r}")
        rows = await device_rows(self.store)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", self.station.station_id) or "station"
        disposition = {"content-disposition": f'attachment; filename="stationd-{name}-{stamp}.{fmt}"'}
        if fmt == "csv":
            return Response(to_csv(rows), media_type="text/csv; charset=utf-8", headers=disposition)
        return Response(to_json(rows), media_type="application/json", headers=disposition)

    async def stream(self, request: Request) -> Response | EventStream:
        given = request.headers.get("last-event-id") or request.query_params.get("after")
        after = None
        if given:
            if not given.strip().isdigit():
                return error(400, f"Last-Event-ID (or after) must be an event id, not {given!r}")
            after = int(given)
        return EventStream(self.station, after, self.heartbeat, self.closing)

    async def retry(self, request: Request) -> Response:
        return await self._act(request, "retry", self.station.retry)

    async def skip(self, request: Request) -> Response:
        plan = self.station.plan
        try:
            body = await request.json()
        except ValueError:
            body = None
        step = body.get("step") if isinstance(body, dict) else None
        if not isinstance(step, str) or step not in plan:
            return error(400, f'send a JSON body naming a step of the plan, like {{"step": "wifi"}}; steps: '
                         f'{", ".join(plan)}')
        return await self._act(request, "skip", lambda udid: self.station.skip(udid, step), step=step)

    async def forget(self, request: Request) -> Response:
        return await self._act(request, "forget", self.station.forget)

    async def _act(self, request: Request, action: str, run: Any, **details: Any) -> Response:
        refused = refusal(request, self.station.config.api.token)
        if refused is not None:
            log.warning("api.refused", action=action, status=refused.status_code, client=_client(request))
            return refused
        udid = request.path_params["udid"]
        device = await self.store.get_device(udid)
        if device is None:
            return unknown_device(udid)
        log.info("api." + action, udid=udid, client=_client(request), **details)
        if not await run(udid):
            return error(409, f"cannot {action} {device.serial or udid} now: it is {device.state}")
        body: dict[str, Any] = {"ok": True, "action": action, "udid": udid, **details}
        current = await self.store.get_device(udid)
        if current is not None:
            jobs = await self.store.jobs_for(udid)
            body["device"] = device_view(current, jobs[-1] if jobs else None, self.station, time.time())
        return JSONResponse(body)


def unknown_device(udid: str) -> JSONResponse:
    return error(404, f"no device with UDID {udid!r} at this station")


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else "")
        raise ValueError(f"{name} must be a whole number {bounds}, not {text!r}")
    return int(text)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(station: Any, *, heartbeat: float = HEARTBEAT) -> Starlette:
    """The API and dashboard for one station; `app.state.api.closing.set()` ends open event streams."""
    api = Api(station, heartbeat)
    routes = [
        Route("/", api.dashboard, methods=["GET"]),
        Route("/api/station", api.station_info, methods=["GET"]),
        Route("/api/ports", api.ports, methods=["GET"]),
        Route("/api/devices", api.devices, methods=["GET"]),
        Route("/api/devices/{udid}", api.device, methods=["GET"]),
        Route("/api/devices/{udid}", api.forget, methods=["DELETE"]),
        Route("/api/devices/{udid}/retry", api.retry, methods=["POST"]),
        Route("/api/devices/{udid}/skip", api.skip, methods=["POST"]),
        Route("/api/events", api.events, methods=["GET"]),
        Route("/api/export", api.export, methods=["GET"]),
        Route("/api/stream", api.stream, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.api = api
    return app


@contextlib.asynccontextmanager
async def serve(station: Any, *, heartbeat: float = HEARTBEAT) -> AsyncIterator[str | None]:
    """Serve the API and dashboard on `[api] listen` while the block runs; yields the URL, None when turned off."""
    listen = station.config.api.listen
    if not listen:
        yield None
        return
    host, port = parse_address(listen, DEFAULT_PORT)
    app = create_app(station, heartbeat=heartbeat)
    try:
        server = HTTPServer(app, host, port)
    except OSError as e:
        raise ConfigurationError(
            f"cannot serve the dashboard on {listen}: {e.strerror or e}; change [api] listen "
            '(another port, or "" to turn it off)'
        ) from e
    url = await server.start()
    log.info("api.listening", url=url, actions="enabled" if station.config.api.token else "disabled")
    try:
        yield url
    finally:
        app.state.api.closing.set()
        with anyio.CancelScope(shield=True):
            await server.stop()
