"""The hardened API: token before body, body caps, Host names, exposure without a token, bounded connections,
proxy headers, odd numbers, headers on every error, and an event stream that neither writes into dead sockets nor
loses events when a client falls behind."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from rig import make_rig
from structlog.testing import capture_logs

from stationd.api import create_app, serve
from stationd.api.app import EventStream
from stationd.config import ApiConfig, ConfigError, load_config
from stationd.errors import ConfigurationError
from stationd.httpserve import HTTPServer

TOKEN = "correct-horse-battery-staple-42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_HEADER = f"Authorization: Bearer {TOKEN}".encode()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CountingApp:
    """Counts the request-body bytes the app under test asked for."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


async def raw_request(url: str, head: bytes, body_bytes: int) -> bytes:
    """Send `head`, then up to `body_bytes` of body while reading the answer; return the answer's first bytes."""
    host, port = url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(head)

        async def pour() -> None:
            chunk = b"{" * 65536
            for _ in range(body_bytes // len(chunk)):
                await stream.send(chunk)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pour)
            with anyio.fail_after(10):
                answer = await stream.receive()
            tasks.cancel_scope.cancel()
    return answer


@pytest.mark.anyio
async def test_the_token_is_checked_before_a_byte_of_the_body_is_read(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig, rig.station(api=ApiConfig(listen=None, token=TOKEN)) as station:
        app = CountingApp(create_app(station))
        server = HTTPServer(app)
        url = await server.start()
        try:
            before = rss_mb()
            head = (
                b"POST /api/devices/X/skip HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000000\r\n\r\n"
            )
            anonymous = await raw_request(url, head, 8_000_000)
            declared = await raw_request(url, head.replace(b"Host:", AUTH_HEADER + b"\r\nHost:"), 0)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                form = await client.post("/api/devices/X/skip", headers=AUTH, data={"step": "wifi"})
        finally:
            await server.stop()
    assert anonymous.startswith(b"HTTP/1.1 401 ")
    assert app.read == 0, "the body was read before the token was checked"
    assert rss_mb() - before < 50
    assert declared.startswith(b"HTTP/1.1 413 ")
    assert form.status_code == 400 and "Content-Type: application/json" in form.json()["error"]


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked transfer encoding)."""
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


@pytest.mark.anyio
async def test_a_json_body_larger_than_the_cap_is_refused_with_413(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig, rig.station(api=ApiConfig(listen=None, token=TOKEN)) as station:
        transport = httpx.ASGITransport(app=create_app(station))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            streamed = await client.post(
                "/api/devices/X/skip",
                headers={**AUTH, "Content-Type": "application/json"},
                content=chunked(b'{"step": "' + b"w" * 40_000 + b'"}'),
            )
            bad = await client.post(
                "/api/devices/X/skip", headers={**AUTH, "Content-Type": "application/json"}, content=b"{not json"
            )
    assert streamed.status_code == 413 and "16,384 bytes" in streamed.json()["error"]
    assert bad.status_code == 400


@pytest.mark.anyio
async def test_only_known_host_names_are_answered(tmp_path: Path) -> None:
    extra = ApiConfig(listen=None, hosts=("station-7.school.example",))
    async with make_rig(tmp_path, []) as rig, rig.station(api=extra) as station:
        transport = httpx.ASGITransport(app=create_app(station))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            with capture_logs() as logs:
                rebound = {
                    path: await client.get(path, headers={"Host": "evil.example"})
                    for path in ("/api/devices", "/api/export", "/api/stream", "/")
                }
                again = await client.get("/api/ports", headers={"Host": "evil.example:8480"})
            answered = {
                host: (await client.get("/api/ports", headers={"Host": host})).status_code
                for host in (
                    "127.0.0.1:8480",
                    "localhost:8480",
                    "[::1]:8480",
                    "192.168.1.20:8480",
                    "station-7.school.example",
                    "dashboard.localhost",
                )
            }
    for response in [*rebound.values(), again]:
        assert response.status_code == 421 and "[api] hosts" in response.json()["error"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    assert set(answered.values()) == {200}
    assert [entry["host"] for entry in logs if entry["event"] == "api.host_refused"] == [
        "evil.example",
        "evil.example:8480",
    ]


@pytest.mark.anyio
async def test_an_address_other_machines_reach_needs_a_token(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig:
        exposed = SimpleNamespace(config=dataclasses.replace(rig.config, api=ApiConfig(listen="0.0.0.0:0")))
        with pytest.raises(ConfigurationError) as refused:
            async with serve(exposed):
                pass
    assert "needs a token" in str(refused.value) and "openssl rand -hex 24" in str(refused.value)
    config = tmp_path / "stationd.toml"
    config.write_text('[organization]\nname = "X"\n[api]\nlisten = "0.0.0.0:8480"\n')
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert "line 4, api.listen:" in str(error.value) and "needs a token" in str(error.value)
    config.write_text(f'[organization]\nname = "X"\n[api]\nlisten = "0.0.0.0:8480"\ntoken = "{TOKEN}"\n')
    assert load_config(config).api.listen == "0.0.0.0:8480"
    config.write_text('[organization]\nname = "X"\n[api]\nlisten = "[::1]:8480"\n')
    assert load_config(config).api.listen == "[::1]:8480"


async def served_answer(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(request)
        try:
            with anyio.fail_after(10):
                return await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return b""


@pytest.mark.anyio
async def test_connections_are_capped_and_slow_headers_are_dropped() -> None:
    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = HTTPServer(hello, max_connections=3, header_timeout=0.3)
    url = await server.start()
    host, port = url.removeprefix("http://").split(":")
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        with capture_logs() as logs:
            held = []
            for _ in range(3):
                stream = await anyio.connect_tcp(host, int(port))
                await stream.send(request)
                assert (await stream.receive()).startswith(b"HTTP/1.1 200 ")
                held.append(stream)
            refused = [await served_answer(url, request) for _ in range(3)]
            for stream in held:
                await stream.aclose()
        slow = await anyio.connect_tcp(host, int(port))
        await slow.send(b"GET / HTTP/1.1\r\nHost: 12")
        with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await slow.receive()
        await slow.aclose()
    finally:
        await server.stop()
    assert refused == [b"", b"", b""]
    assert [entry["event"] for entry in logs] == ["http.too_many_connections"]
    assert server.limits.refused == 3


@pytest.mark.anyio
@pytest.mark.parametrize(("proxies", "client"), [((), "127.0.0.1"), (("127.0.0.1",), "203.0.113.9")])
async def test_forwarded_for_is_believed_only_from_configured_proxies(
    tmp_path: Path, proxies: tuple[str, ...], client: str
) -> None:
    api = ApiConfig(listen="127.0.0.1:0", token=TOKEN, proxies=proxies)
    async with make_rig(tmp_path, []) as rig, rig.station(api=api) as station, serve(station) as url:
        assert url is not None
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            with capture_logs() as logs:
                await http.post(
                    "/api/devices/X/retry",
                    headers={"Authorization": "Bearer wrong-token-000000", "X-Forwarded-For": "203.0.113.9"},
                )
    assert [entry["client"] for entry in logs if entry["event"] == "api.refused"] == [client]


@pytest.mark.anyio
async def test_odd_numbers_are_400_and_a_crash_is_a_json_500_with_the_security_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise RuntimeError("the disk went away")

    async with make_rig(tmp_path, []) as rig, rig.station() as station:
        transport = httpx.ASGITransport(app=create_app(station), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            odd = [
                await client.get("/api/events", params={"after": "99999999999999999999999"}),
                await client.get("/api/events", params={"after": "9223372036854775808"}),
                await client.get("/api/events", params={"after": "²"}),
                await client.get("/api/events", params={"limit": "٣"}),
                await client.get("/api/stream", headers={"Last-Event-ID": "²".encode("latin-1")}),
                await client.get("/api/stream", params={"after": "99999999999999999999999"}),
            ]
            largest = await client.get("/api/events", params={"after": "9223372036854775807"})
            monkeypatch.setattr(station.store, "list_devices", broken)
            crashed = await client.get("/api/export")
    assert [response.status_code for response in odd] == [400] * len(odd)
    assert all("error" in response.json() for response in odd)
    assert largest.status_code == 200 and largest.json()["events"] == []
    assert crashed.status_code == 500 and "log" in crashed.json()["error"]
    assert "default-src 'none'" in crashed.headers["content-security-policy"]
    assert crashed.headers["x-content-type-options"] == "nosniff"


def sse_ids(chunks: list[bytes]) -> list[int]:
    return [int(line[4:]) for chunk in chunks for line in chunk.decode().splitlines() if line.startswith("id: ")]


@pytest.mark.anyio
async def test_an_aborted_replay_stops_writing_at_once(tmp_path: Path) -> None:
    """Model of uvicorn: when the socket dies, the server learns it on its next turn of the event loop (its
    connection_lost is scheduled with call_soon); every write before that goes into a dead socket."""
    async with make_rig(tmp_path, []) as rig, rig.station() as station:
        for _ in range(100):
            await station.event("test.filler")
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()
        state = {"sent": 0, "dead": False, "into_dead_socket": 0}
        requested = False

        async def send(message: Any) -> None:
            if message["type"] != "http.response.body":
                return
            if state["dead"] and not lost.is_set():
                state["into_dead_socket"] += 1
            state["sent"] += 1
            if state["sent"] == 10:
                state["dead"] = True
                loop.call_soon(lost.set)

        async def receive() -> Any:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await lost.wait()
            return {"type": "http.disconnect"}

        with anyio.fail_after(10):
            await EventStream(station, 0, 30.0, anyio.Event())({"type": "http"}, receive, send)
    assert state["into_dead_socket"] == 0
    assert state["sent"] <= 11


@pytest.mark.anyio
async def test_a_live_client_that_falls_behind_gets_the_missed_events_from_the_store(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig, rig.station() as station:
        chunks: list[bytes] = []
        subscribed, released, caught_up, closing = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()
        last = 0

        async def send(message: Any) -> None:
            if message["type"] != "http.response.body":
                return
            chunks.append(message["body"])
            if len(chunks) == 1:
                subscribed.set()
                await released.wait()
            if last and last in sse_ids(chunks[-1:]):
                caught_up.set()

        async def receive() -> Any:
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(EventStream(station, None, 30.0, closing, queue=4), {"type": "http"}, receive, send)
            with anyio.fail_after(10):
                await subscribed.wait()
                first = station.bus.last_seq + 1
                for _ in range(12):
                    await station.event("test.burst")
                last = station.bus.last_seq
                released.set()
                await caught_up.wait()
            closing.set()
    assert sse_ids(chunks) == list(range(first, last + 1))
    assert all(
        json.loads(line[6:])["kind"] == "test.burst"
        for chunk in chunks[1:]
        for line in chunk.decode().splitlines()
        if line.startswith("data: ")
    )
