"""stationd.usbmux: usbmuxd address spellings and the hotplug watcher, against the emulator and fake servers."""

from __future__ import annotations

import asyncio
import contextlib
import plistlib
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pymobiledevice3 import usbmux
from structlog.testing import capture_logs

from stationd.emulator import Emulator, generated_spec
from stationd.usbmux import AddressError, UsbEvent, UsbmuxAddress, UsbWatcher
from stationd.usbmux import address as usbmux_address
from stationd.usbmux.address import DEFAULT_SOCKET, ENV_VAR
from stationd.usbmux.packet import encode as usbmux_packet

pytestmark = pytest.mark.anyio

FAST = (0.01, 0.05)
HEADER = struct.Struct("<IIII")


@pytest.fixture
def mux_path(tmp_path: Path) -> Path:
    return tmp_path / "mux"


async def take(events: AsyncIterator[UsbEvent], count: int) -> list[UsbEvent]:
    """The next `count` events, failing the test if they take more than five seconds."""
    with anyio.fail_after(5):
        return [await anext(events) for _ in range(count)]


def attached_message(device_id: int, udid: str, connection_type: str = "USB") -> dict[str, Any]:
    properties: dict[str, Any] = {"SerialNumber": udid, "ConnectionType": connection_type, "DeviceID": device_id}
    if connection_type == "USB":
        properties |= {"LocationID": 0x01130000, "ProductID": 0x12AB}
    return {"MessageType": "Attached", "DeviceID": device_id, "Properties": properties}


def ok(tag: int) -> bytes:
    return usbmux_packet(tag, {"MessageType": "Result", "Number": 0})


class FakeUsbmuxd:
    """A usbmuxd stand-in: connection n answers Listen with `replies[n](tag)`, then holds the line until EOF."""

    def __init__(self, replies: list[Callable[[int], bytes]]) -> None:
        self.replies = replies
        self.listens: list[tuple[int, int, int, dict[str, Any]]] = []
        self.closed = 0
        self.all_closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, version, message_type, tag = HEADER.unpack(await reader.readexactly(HEADER.size))
        request = plistlib.loads(await reader.readexactly(length - HEADER.size))
        self.listens.append((version, message_type, tag, request))
        writer.write(self.replies[min(len(self.listens), len(self.replies)) - 1](tag))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            await reader.read()
        writer.close()
        self.closed += 1
        if self.closed == len(self.listens):
            self.all_closed.set()


@contextlib.asynccontextmanager
async def fake_usbmuxd(path: Path, replies: list[Callable[[int], bytes]]) -> AsyncIterator[FakeUsbmuxd]:
    fake = FakeUsbmuxd(replies)
    server = await asyncio.start_unix_server(fake.serve, path=str(path))
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()


# -- addresses ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "parsed", "libusbmuxd"),
    [
        ("/var/run/usbmuxd", UsbmuxAddress(path="/var/run/usbmuxd"), "UNIX:/var/run/usbmuxd"),
        ("UNIX:/tmp/mux", UsbmuxAddress(path="/tmp/mux"), "UNIX:/tmp/mux"),
        ("unix:/tmp/a:b", UsbmuxAddress(path="/tmp/a:b"), "UNIX:/tmp/a:b"),
        ("/tmp/a:b", UsbmuxAddress(path="/tmp/a:b"), "UNIX:/tmp/a:b"),
        ("127.0.0.1:27015", UsbmuxAddress(host="127.0.0.1", port=27015), "127.0.0.1:27015"),
        ("mux.lan:27015", UsbmuxAddress(host="mux.lan", port=27015), "mux.lan:27015"),
        ("[::1]:27015", UsbmuxAddress(host="::1", port=27015), "[::1]:27015"),
    ],
)
def test_address_spellings(spelling: str, parsed: UsbmuxAddress, libusbmuxd: str) -> None:
    assert usbmux_address.parse(spelling) == parsed
    assert usbmux_address.resolve(spelling) == parsed
    assert parsed.for_libusbmuxd() == libusbmuxd
    assert usbmux_address.parse(str(parsed)) == parsed


@pytest.mark.parametrize("spelling", ["host:port", ":27015", "host:0", "host:70000", "::1:27015", "[nope]:27015"])
def test_address_rejects_nonsense(spelling: str) -> None:
    with pytest.raises(AddressError, match="neither a socket path nor HOST:PORT"):
        usbmux_address.parse(spelling)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["tcp", "plain path", "path with a colon"])
async def test_pymobiledevice3_reaches_the_emulator_at_every_spelling_we_give_it(tmp_path: Path, where: str) -> None:
    spec = generated_spec(0)
    socket_path = {"plain path": tmp_path / "mux", "path with a colon": tmp_path / "a:b"}.get(where)
    tcp = "127.0.0.1:0" if where == "tcp" else None
    async with Emulator([spec], socket_path=socket_path, tcp_address=tcp, speed=0, activation_address=None) as emu:
        for spelling in [emu.usbmux_address, f"UNIX:{emu.usbmux_address}"] if socket_path else [emu.usbmux_address]:
            given = usbmux_address.parse(spelling).for_pymobiledevice3()
            devices = await usbmux.list_devices(usbmux_address=given)
            assert [device.serial for device in devices] == [spec.udid], spelling


def test_ipv6_is_refused_for_pymobiledevice3_with_a_reason() -> None:
    with pytest.raises(AddressError, match="IPv4 only"):
        usbmux_address.parse("[::1]:27015").for_pymobiledevice3()


def test_address_override_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert usbmux_address.resolve() == UsbmuxAddress(path=DEFAULT_SOCKET)
    monkeypatch.setenv(ENV_VAR, "")
    assert usbmux_address.resolve() == UsbmuxAddress(path=DEFAULT_SOCKET)
    monkeypatch.setenv(ENV_VAR, "UNIX:/run/env-mux")
    assert usbmux_address.resolve() == UsbmuxAddress(path="/run/env-mux")
    assert usbmux_address.resolve("10.0.0.2:27015") == UsbmuxAddress(host="10.0.0.2", port=27015)
    assert UsbWatcher().address == "/run/env-mux"
    assert UsbWatcher("UNIX:/run/override").address == "/run/override"


# -- against the emulator -----------------------------------------------------------------------------------------


async def test_attach_unplug_replug_add(mux_path: Path) -> None:
    specs = [generated_spec(i) for i in range(3)]
    async with Emulator(specs, socket_path=mux_path, speed=0.001, activation_address=None) as emu:
        watcher = UsbWatcher(str(mux_path), backoff=FAST)
        async with contextlib.aclosing(watcher.events()) as events:
            connected, *attached = await take(events, 4)
            assert connected == UsbEvent("connected")
            assert {e.kind for e in attached} == {"attached"}
            for event in attached:
                device = emu.device(event.udid or "")
                assert event.device_id == device.device_id
                assert event.location_id == device.location_id
                assert event.product_id == 0x12AB
                assert event.connection_type == "USB"
                assert event.properties["SerialNumber"] == device.udid
            assert len({e.location_id for e in attached}) == 3
            assert set(watcher.attached()) == {s.udid for s in specs}

            udid = specs[1].udid
            before = watcher.attached()[udid]
            emu.unplug(udid)
            (detached,) = await take(events, 1)
            assert (detached.kind, detached.udid, detached.device_id) == ("detached", udid, before.device_id)
            assert detached.location_id == before.location_id
            assert udid not in watcher.attached()

            emu.plug(udid, location_id=0x01120000)
            (replugged,) = await take(events, 1)
            assert (replugged.kind, replugged.udid, replugged.location_id) == ("attached", udid, 0x01120000)
            assert replugged.device_id not in {e.device_id for e in attached}
            assert watcher.attached()[udid] == replugged

            added = emu.add_device()
            (event,) = await take(events, 1)
            assert (event.kind, event.udid, event.location_id) == ("attached", added.udid, added.location_id)
            assert len(watcher.attached()) == 4


async def test_usbmuxd_restart_detaches_then_replays(mux_path: Path) -> None:
    specs = [generated_spec(i) for i in range(3)]
    emu = Emulator(specs, socket_path=mux_path, speed=0.001, activation_address=None)
    await emu.start()
    try:
        watcher = UsbWatcher(str(mux_path), backoff=FAST)
        async with contextlib.aclosing(watcher.events()) as events:
            first = await take(events, 4)
            await emu.stop()
            disconnected, *detached = await take(events, 4)
            assert disconnected == UsbEvent("disconnected")
            assert [e.kind for e in detached] == ["detached"] * 3
            assert {e.udid for e in detached} == {s.udid for s in specs}
            assert {(e.device_id, e.location_id) for e in detached} == {(e.device_id, e.location_id) for e in first[1:]}
            assert watcher.attached() == {}

            await emu.start()
            connected, *replayed = await take(events, 4)
            assert connected == UsbEvent("connected")
            assert [e.kind for e in replayed] == ["attached"] * 3
            assert set(watcher.attached()) == {s.udid for s in specs}
    finally:
        await emu.stop()


async def test_tcp_usbmuxd() -> None:
    async with Emulator([generated_spec(0)], tcp_address="127.0.0.1:0", speed=0.001, activation_address=None) as emu:
        watcher = UsbWatcher(emu.usbmux_address, backoff=FAST)
        assert not watcher.usbmux.is_unix
        async with contextlib.aclosing(watcher.events()) as events:
            connected, attached = await take(events, 2)
            assert connected.kind == "connected"
            assert (attached.kind, attached.udid) == ("attached", emu.devices[attached.udid or ""].udid)
            assert attached.location_id == generated_spec(0).location_id


async def test_env_var_unix_spelling(mux_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, f"UNIX:{mux_path}")
    async with Emulator([generated_spec(0)], socket_path=mux_path, speed=0.001, activation_address=None):
        async with contextlib.aclosing(UsbWatcher(backoff=FAST).events()) as events:
            assert [e.kind for e in await take(events, 2)] == ["connected", "attached"]


async def test_unreachable_backs_off_exponentially_then_connects(mux_path: Path) -> None:
    emu = Emulator([generated_spec(0)], socket_path=mux_path, speed=0.001, activation_address=None)
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 7:
            await emu.start()

    watcher = UsbWatcher(str(mux_path), backoff=(0.5, 10.0), sleep=sleep, jitter=lambda: 1.0)
    try:
        async with contextlib.aclosing(watcher.events()) as events:
            assert [e.kind for e in await take(events, 3)] == ["disconnected", "connected", "attached"]
    finally:
        await emu.stop()
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_jitter_stays_under_the_cap(mux_path: Path) -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 6:
            raise RuntimeError("enough")

    watcher = UsbWatcher(str(mux_path), backoff=(1.0, 4.0), sleep=sleep, jitter=iter([0.0, 0.5] * 3).__next__)
    async with contextlib.aclosing(watcher.events()) as events:
        assert (await take(events, 1))[0].kind == "disconnected"
        with pytest.raises(RuntimeError, match="enough"):
            await take(events, 1)
    assert delays == [0.5, 1.5, 2.0, 3.0, 2.0, 3.0]


# -- against fake servers -----------------------------------------------------------------------------------------


async def test_garbage_from_usbmuxd_goes_through_reconnect(mux_path: Path) -> None:
    udid = "00008101-000A1B2C3D4E5F60"
    replies = [
        lambda tag: ok(tag) + usbmux_packet(0, attached_message(1, udid)) + b"\xde\xad\xbe\xef" * 8,
        lambda tag: HEADER.pack(40, 1, 8, tag) + b"this is not a property list",
        lambda tag: ok(tag) + usbmux_packet(0, attached_message(1, udid)),
    ]
    async with fake_usbmuxd(mux_path, replies) as fake:
        watcher = UsbWatcher(str(mux_path), backoff=FAST)
        with capture_logs() as logs:
            async with contextlib.aclosing(watcher.events()) as events:
                kinds = [(e.kind, e.udid) for e in await take(events, 6)]
        with anyio.fail_after(5):
            await fake.all_closed.wait()
    assert kinds == [
        ("connected", None),
        ("attached", udid),
        ("disconnected", None),
        ("detached", udid),
        ("connected", None),
        ("attached", udid),
    ]
    warnings = [entry for entry in logs if entry["event"] == "usbmuxd.protocol_error"]
    assert len(warnings) == 2
    assert all(entry["log_level"] == "warning" and entry["address"] == str(mux_path) for entry in warnings)
    assert [(v, k, request["MessageType"]) for v, k, _, request in fake.listens] == [(1, 8, "Listen")] * 3
    assert all(tag > 0 for _, _, tag, _ in fake.listens)


async def test_refused_listen_goes_through_reconnect(mux_path: Path) -> None:
    replies = [
        lambda tag: usbmux_packet(tag, {"MessageType": "Result", "Number": 1}),
        lambda tag: usbmux_packet(tag + 1, {"MessageType": "Result", "Number": 0}),
        ok,
    ]
    async with fake_usbmuxd(mux_path, replies) as fake:
        async with contextlib.aclosing(UsbWatcher(str(mux_path), backoff=FAST).events()) as events:
            assert [e.kind for e in await take(events, 2)] == ["disconnected", "connected"]
        assert len(fake.listens) == 3


@pytest.mark.parametrize("usb_only", [True, False])
async def test_network_devices_and_paired_messages(mux_path: Path, usb_only: bool) -> None:
    usb, wifi = "00008101-000000000000000A", "00008101-000000000000000B"
    messages = [
        {"MessageType": "Paired", "DeviceID": 1},
        attached_message(7, wifi, "Network"),
        attached_message(1, usb),
        {"MessageType": "Detached", "DeviceID": 7},
        {"MessageType": "Detached", "DeviceID": 99},
    ]
    replies = [lambda tag: ok(tag) + b"".join(usbmux_packet(0, m) for m in messages)]
    async with fake_usbmuxd(mux_path, replies):
        watcher = UsbWatcher(str(mux_path), usb_only=usb_only, backoff=FAST)
        async with contextlib.aclosing(watcher.events()) as events:
            if usb_only:
                seen = await take(events, 3)
                assert [(e.kind, e.udid, e.device_id) for e in seen[1:]] == [
                    ("attached", usb, 1),
                    ("detached", None, 99),
                ]
            else:
                seen = await take(events, 5)
                assert [(e.kind, e.udid, e.connection_type) for e in seen[1:]] == [
                    ("attached", wifi, "Network"),
                    ("attached", usb, "USB"),
                    ("detached", wifi, "Network"),
                    ("detached", None, None),
                ]
            assert list(watcher.attached()) == [usb]


async def test_cancelling_the_consumer_closes_the_socket(mux_path: Path) -> None:
    replies = [lambda tag: ok(tag) + usbmux_packet(0, attached_message(1, "00008101-000000000000000C"))]
    async with fake_usbmuxd(mux_path, replies) as fake:
        seen: list[str] = []
        ready = anyio.Event()

        async def consume() -> None:
            async for event in UsbWatcher(str(mux_path), backoff=FAST).events():
                seen.append(event.kind)
                if event.kind == "attached":
                    ready.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await ready.wait()
                tg.cancel_scope.cancel()
            await fake.all_closed.wait()
    assert seen == ["connected", "attached"]
