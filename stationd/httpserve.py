"""Serve an ASGI app with uvicorn inside an already running event loop, on a socket we bind ourselves.

Binding first lets callers ask for port 0 and learn the real port; signals stay with the caller (the daemon and the
emulator decide how Ctrl-C and SIGTERM stop everything, not each HTTP server).

Every server is bounded, so that no client can take the station's file descriptors (which its iPads need):
at most `max_connections` connections at once (a connection beyond that is closed as soon as it is accepted), and
`header_timeout` seconds for a client to send a request's headers (idle and trickling connections are dropped).
Proxy headers (X-Forwarded-For) are believed only from the addresses in `proxies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import resource
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("stationd.http")

MAX_CONNECTIONS = 128
HEADER_TIMEOUT = 10.0
BUSY_LOG_INTERVAL = 60.0  # seconds between two "too many connections" lines


def connection_cap(maximum: int = MAX_CONNECTIONS) -> int:
    """How many connections one server may hold: `maximum`, and at most a quarter of this process's file
    descriptors, so the iPads' connections (usbmuxd, lockdownd, services) and the database always find one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return maximum
    return max(4, min(maximum, soft // 4))


@dataclass
class Limits:
    max_connections: int
    header_timeout: float
    busy_logged_at: float = -BUSY_LOG_INTERVAL
    refused: int = 0


class _BoundedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a deadline for each request's headers."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse()
            return
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        """Until a request's headers are complete (h11 leaves IDLE), the header deadline runs; it is not reset by
        each byte, so a client trickling its headers is dropped all the same."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(self.limits.header_timeout, self.transport.close)
        else:
            self._stop_header_timer()

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _refuse(self) -> None:
        self.transport.abort()
        limits = self.limits
        limits.refused += 1
        now = time.monotonic()
        if now - limits.busy_logged_at >= BUSY_LOG_INTERVAL:
            limits.busy_logged_at = now
            log.warning(
                "http.too_many_connections",
                limit=limits.max_connections,
                refused=limits.refused,
                hint="connections beyond the limit are closed at once; the iPads are not affected",
            )


class _Server(uvicorn.Server):
    """uvicorn's server, leaving signals to the caller and saying when it listens (no polling)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    async def serve_then_set(self, sockets: list[socket.socket]) -> None:
        try:
            await self.serve(sockets=sockets)
        finally:
            self.listening.set()  # a server that failed to start must not leave its starter waiting


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only: localhost, 127.0.0.0/8, ::1."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(address: str, default_port: int = 0) -> tuple[str, int]:
    """'127.0.0.1:8080', ':8080', '8080' or 'host' -> (host, port)."""
    if address.isdigit():
        return "127.0.0.1", int(address)
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return (host.strip("[]") or "127.0.0.1"), int(port)


class HTTPServer:
    """One running HTTP server; `url` is known as soon as `start` returns."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        proxies: tuple[str, ...] = (),
        max_connections: int | None = None,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Named IPPROTO_TCP, the connections it accepts get TCP_NODELAY from asyncio: without it, a response written
        # in two parts (headers, body) waits for the client's delayed ACK, 40 ms per request.
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.limits = Limits(max_connections or connection_cap(), header_timeout)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=functools.partial(_BoundedProtocol, limits=self.limits),  # type: ignore[arg-type]
            proxy_headers=bool(proxies),
            forwarded_allow_ips=list(proxies) or None,
        )
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve while the block runs (in the caller's task group: one cancellation model); yields the URL."""
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.server.serve_then_set, [self.sock])
                await self.server.listening.wait()
                if not self.server.started:
                    raise OSError(f"the HTTP server on {self.url} did not start")
                try:
                    yield self.url
                finally:
                    self.server.should_exit = True
        finally:
            self.sock.close()

    async def start(self) -> str:
        """Start in the background, for callers that stop it explicitly (`stop`): the emulator's servers, tests."""
        self.task = asyncio.create_task(self.server.serve_then_set([self.sock]))
        await self.server.listening.wait()
        if self.task.done():
            self.task.result()
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()
