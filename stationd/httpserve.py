"""Serve an ASGI app with uvicorn inside an already running event loop, on a socket we bind ourselves.

Binding first lets callers ask for port 0 and learn the real port; signals stay with the caller (the daemon and the
emulator decide how Ctrl-C and SIGTERM stop everything, not each HTTP server).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.005)
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()
