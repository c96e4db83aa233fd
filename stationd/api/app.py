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
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from stationd.api.auth import refusal
from stationd.api.fleet import fleet_view, peer_station
from stationd.api.guard import BodyRefused, Guard, allowed_hosts, read_json
from stationd.api.views import device_view, job_view, port_views, status_counts
from stationd.config import api_exposure_problem
from stationd.errors import ConfigurationError
from stationd.events import Event
from stationd.export import device_rows, to_csv, to_json
from stationd.httpserve import HTTPServer, parse_address

if TYPE_CHECKING:
    from stationd.station import Station
    from stationd.store import Store

log = structlog.get_logger("stationd.api")

HERE = Path(__file__).parent
DEFAULT_PORT = 8480
HEARTBEAT = 15.0
RECONNECT_MS = 3000
REPLAY_PAGE = 500
DEVICE_EVENTS = 50
MAX_EVENTS = 1000
STREAM_QUEUE = 10_000  # events a live stream may fall behind by before it replays the rest from the store
LARGEST_ID = 2**63 - 1  # SQLite's largest integer
DIGITS = re.compile(r"[0-9]+")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def sse(event: Event) -> bytes:
    """One server-sent event: id, kind and the event as one line of JSON."""
    data = json.dumps(event.as_dict(), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


class EventStream:
    """The bus as server-sent events, after replaying the store from `after`; ends on disconnect or shutdown.

    A client that falls behind by more than its queue (a slow link) gets the events it missed replayed from the
    store, so it never sees a gap. Each write yields to the event loop, so a dropped connection is noticed at once
    and nothing more is written into a dead socket."""

    def __init__(
        self, station: Station, after: int | None, heartbeat: float, closing: anyio.Event, queue: int = STREAM_QUEUE
    ) -> None:
        self.station = station
        self.after = after
        self.heartbeat = heartbeat
        self.closing = closing
        self.queue = queue

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

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(until_disconnected)
            tasks.start_soon(until_closing)
            await self._stream(write)
            tasks.cancel_scope.cancel()
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, write: Any) -> None:
        with self.station.bus.subscribe(self.queue) as events:
            await write(f"retry: {RECONNECT_MS}\n\n".encode())
            last = events.start_seq if self.after is None else self.after
            floor = None
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
                if events.missed != missed:
                    missed = events.missed
                    floor = last = await self._replay(write, last)
                batch = [e for e in [event, *events.ready()] if floor is None or e.seq > floor]
                if not batch:
                    continue
                await write(b"".join(sse(e) for e in batch))  # one write for what is waiting: fewer syscalls
                last = batch[-1].seq
                if any(e.kind == "station.stopping" for e in batch):
                    return

    async def _replay(self, write: Any, after: int) -> int:
        """Send the station's stored events after seq `after`; return the last seq sent (or `after`)."""
        while True:
            records = await self.station.store.station_events(
                self.station.station_id, after_seq=after, limit=REPLAY_PAGE
            )
            for record in records:
                await write(sse(Event.from_record(record)))
                after = record.seq
            if len(records) < REPLAY_PAGE:
                return after


class Api:
    """The endpoints, bound to one station."""

    def __init__(self, station: Station, heartbeat: float, queue: int) -> None:
        self.station = station
        self.heartbeat = heartbeat
        self.queue = queue
        self.started_at = station.started_at
        self.closing = anyio.Event()
        self.dashboard_html = (HERE / "dashboard.html").read_text(encoding="utf-8")

    @property
    def store(self) -> Store:
        return self.station.store

    async def dashboard(self, request: Request) -> Response:
        return HTMLResponse(self.dashboard_html, headers={"cache-control": "no-cache"})

    async def station_info(self, request: Request) -> Response:
        ports = port_views(self.station)
        devices = [view.device for view in self.station.view.devices.values()]
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
                "store": self.station.store.health(),
                "fleet": self.station.presence.fleet.name if self.station.presence is not None else None,
            }
        )

    async def ports(self, request: Request) -> Response:
        ports = port_views(self.station)
        return JSONResponse(
            {"station": self.station.station_id, "now": time.time(), "counts": status_counts(ports), "ports": ports}
        )

    async def devices(self, request: Request) -> Response:
        """From the station's view, oldest first: no store call, however busy the station is."""
        now = time.time()
        known = sorted(self.station.view.devices.values(), key=lambda view: view.device.first_seen)
        return JSONResponse({"devices": [device_view(v.device, v.job, self.station, now) for v in known]})

    async def device(self, request: Request) -> Response:
        udid = request.path_params["udid"]
        known = self.station.view.devices.get(udid)
        if known is None:
            return unknown_device(udid)
        now = time.time()
        jobs = await self.store.jobs_for(udid)
        records = await self.store.list_events(udid=udid, limit=1_000_000)
        view = device_view(known.device, known.job, self.station, now)
        view["jobs"] = [job_view(job, self.station.plan, now) for job in jobs]
        view["events"] = [Event.from_record(record).as_dict() for record in records[-DEVICE_EVENTS:]]
        return JSONResponse(view)

    async def events(self, request: Request) -> Response:
        """This station's trail after seq `after` (`last_id`: the seq to ask after next); with `udid`, that iPad's
        events at every station after id `after`."""
        try:
            after = _int_param(request, "after", 0, 0, None)
            limit = _int_param(request, "limit", 100, 1, MAX_EVENTS)
        except ValueError as e:
            return error(400, str(e))
        udid = request.query_params.get("udid") or None
        if udid is None:
            records = await self.store.station_events(self.station.station_id, after_seq=after, limit=limit)
            last = records[-1].seq if records else after
        else:
            records = await self.store.list_events(after_id=after, udid=udid, limit=limit)
            last = records[-1].id if records else after
        return JSONResponse({"events": [Event.from_record(record).as_dict() for record in records], "last_id": last})

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
            after = event_id(given.strip())
            if after is None:
                return error(400, f"Last-Event-ID (or after) must be an event id, not {given[:40]!r}")
        return EventStream(self.station, after, self.heartbeat, self.closing, self.queue)

    async def fleet(self, request: Request) -> Response:
        return await fleet_view(self.station, request)

    async def peer(self, request: Request) -> Response:
        """What a peer asks, with the fleet's secret."""
        return await peer_station(self.station, request)

    async def retry(self, request: Request) -> Response:
        return await self._act(request, "retry", self.station.retry)

    async def skip(self, request: Request) -> Response:
        """The token is checked before a byte of the body is read."""
        refused = self._refused(request, "skip")
        if refused is not None:
            return refused
        plan = self.station.plan
        try:
            body = await read_json(request)
        except BodyRefused as e:
            if e.status != 415:
                return error(e.status, e.message)
            body = None
        step = body.get("step") if isinstance(body, dict) else None
        if not isinstance(step, str) or step not in plan:
            return error(
                400,
                f'send a JSON body naming a step of the plan, like {{"step": "wifi"}} (with the header '
                f"Content-Type: application/json); steps: {', '.join(plan)}",
            )
        return await self._act(request, "skip", lambda udid: self.station.skip(udid, step), step=step, checked=True)

    async def forget(self, request: Request) -> Response:
        return await self._act(request, "forget", self.station.forget)

    def _refused(self, request: Request, action: str) -> Response | None:
        refused = refusal(request, self.station.config.api.token)
        if refused is not None:
            log.warning("api.refused", action=action, status=refused.status_code, client=_client(request))
        return refused

    async def _act(self, request: Request, action: str, run: Any, checked: bool = False, **details: Any) -> Response:
        refused = None if checked else self._refused(request, action)
        if refused is not None:
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


def event_id(text: str) -> int | None:
    """An event id written in ASCII digits, within SQLite's integers; None for anything else."""
    if not DIGITS.fullmatch(text) or len(text) > 19 or int(text) > LARGEST_ID:
        return None
    return int(text)


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    number = event_id(text)
    if number is None or number < low or (high is not None and number > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else "")
        raise ValueError(f"{name} must be a whole number {bounds}, not {text[:40]!r}")
    return number


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("api.internal_error", path=request.url.path, error=type(exc).__name__)
    return error(500, "the station could not answer this request; its log says why")


class _GuardedStarlette(Starlette):
    """Starlette with the Guard outside its error handler, so even a crash's 500 carries the security headers."""

    hosts: frozenset[str] = frozenset()

    def build_middleware_stack(self) -> ASGIApp:
        return Guard(super().build_middleware_stack(), self.hosts)


def create_app(
    station: Station, *, heartbeat: float = HEARTBEAT, queue: int = STREAM_QUEUE, hosts: frozenset[str] | None = None
) -> Starlette:
    """The API and dashboard for one station; `app.state.api.closing.set()` ends open event streams.

    `hosts`: the Host names answered (IP addresses always are); default: loopback names, this computer's names,
    the `listen` host and `[api] hosts`."""
    api = Api(station, heartbeat, queue)
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
        Route("/api/fleet", api.fleet, methods=["GET"]),
        Route("/api/fleet/station", api.peer, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = _GuardedStarlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    config = station.config.api
    app.hosts = hosts if hosts is not None else allowed_hosts(config.listen, config.hosts)
    app.state.api = api
    return app


@contextlib.asynccontextmanager
async def serve(station: Station, *, heartbeat: float = HEARTBEAT) -> AsyncIterator[str | None]:
    """Serve the API and dashboard on `[api] listen` while the block runs; yields the URL, None when turned off."""
    config = station.config.api
    listen = config.listen
    if not listen:
        yield None
        return
    problem = api_exposure_problem(listen, config.token)
    if problem is not None:
        raise ConfigurationError(problem)
    host, port = parse_address(listen, DEFAULT_PORT)
    app = create_app(station, heartbeat=heartbeat)
    try:
        server = HTTPServer(app, host, port, proxies=config.proxies)
    except OSError as e:
        raise ConfigurationError(
            f"cannot serve the dashboard on {listen}: {e.strerror or e}; change [api] listen "
            '(another port, or "" to turn it off)'
        ) from e
    async with server.running() as url:
        log.info(
            "api.listening",
            url=url,
            actions="enabled" if config.token else "disabled",
            max_connections=server.limits.max_connections,
        )
        try:
            yield url
        finally:
            app.state.api.closing.set()
