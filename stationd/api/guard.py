"""What a request must be before the API reads it, and what every response carries.

- **Host names.** A web page the technician opens elsewhere can point a name it controls at the station's address
  (DNS rebinding) and read the API as if it were its own. So only requests whose `Host` is a loopback name, an IP
  address, this computer's name (and its `.local` Bonjour name), the `listen` host or one of `[api] hosts` are
  answered; others get 421.
- **Bodies.** An action's body is read only after its token was checked, only as JSON (a cross-site page can send
  a "simple" POST as text/plain or a form, never as application/json), and only up to `MAX_BODY` bytes.
- **Headers.** The security headers go on every response, errors and crashes included (this layer sits outside
  Starlette's error handler).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("stationd.api")

MAX_BODY = 16 * 1024
BODY_TIMEOUT = 10.0
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
LOGGED_HOSTS = 32  # refused Host names logged (each once), so a flood of names cannot flood the log
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class BodyRefused(Exception):
    """The request body cannot be read: `status` (400, 408, 413, 415) and a message saying what to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def allowed_hosts(listen: str | None, extra: Iterable[str]) -> frozenset[str]:
    """The host names the API answers to (IP addresses are always accepted)."""
    names = {*LOOPBACK_NAMES, *(name.lower().rstrip(".") for name in extra)}
    hostname = socket.gethostname().lower().rstrip(".")
    if hostname:
        names |= {hostname, hostname.split(".")[0] + ".local"}
    if listen:
        names.add(listen.rpartition(":")[0].strip("[]").lower())
    return frozenset(name for name in names if name)


def host_allowed(header: str, names: frozenset[str]) -> bool:
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in names or host.endswith(".localhost")


class Guard:
    """The API's outermost layer: refuse foreign Host names, add the security headers to every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.logged: set[str] = set()

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

        host = Headers(scope=scope).get("host", "")
        if not host_allowed(host, self.hosts):
            await self._refuse_host(scope, host, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _refuse_host(self, scope: Scope, host: str, send: Send) -> None:
        if len(self.logged) < LOGGED_HOSTS and host not in self.logged:
            self.logged.add(host)
            client = scope.get("client")
            log.warning(
                "api.host_refused",
                host=host[:100],
                client=client[0] if client else None,
                hint='a name the station should answer to goes in [api] hosts = ["..."]',
            )
        message = (
            f"this station does not answer to the host name {host[:100]!r}: open it by its IP address or a "
            'configured name (add names to [api] hosts = ["..."] in the configuration)'
        )
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 421, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The request's JSON body, read after authorisation: application/json only, at most `limit` bytes."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise BodyRefused(415, "send the body as JSON, with the header Content-Type: application/json")
    declared = request.headers.get("content-length", "")
    too_large = BodyRefused(413, f"the body is larger than the {limit:,} bytes an action takes")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    with anyio.move_on_after(BODY_TIMEOUT) as scope:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    if scope.cancelled_caught:
        raise BodyRefused(408, f"the body did not arrive within {BODY_TIMEOUT:g} s")
    try:
        return json.loads(body)
    except ValueError:
        raise BodyRefused(400, "the body is not valid JSON") from None
