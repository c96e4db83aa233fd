"""The emulator: usbmuxd plus any number of virtual iPads, their timers (erase, reboot), the fake activation server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from stationd.emulator.activation_server import ActivationAuthority, activation_app
from stationd.emulator.afc import AFCConnection
from stationd.emulator.control import check_loopback, control_app
from stationd.emulator.diagnostics import DiagnosticsConnection
from stationd.emulator.installation_proxy import InstallationProxyConnection
from stationd.emulator.ipad import DeviceSpec, VirtualDevice, generated_spec
from stationd.emulator.lockdownd import LOCKDOWN_PORT, LockdownConnection
from stationd.emulator.mcinstall import MCInstallConnection
from stationd.emulator.mobileactivation import ActivationConnection
from stationd.emulator.syslog import OsTraceRelayConnection, SyslogRelayConnection
from stationd.emulator.tls import device_tls_context
from stationd.emulator.usbmuxd import UsbmuxClient, attached_message
from stationd.emulator.wire import WireError
from stationd.httpserve import HTTPServer, parse_address

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SERVICE_CLASSES: dict[str, Any] = {
    "com.apple.mobile.MCInstall": MCInstallConnection,
    "com.apple.mobileactivationd": ActivationConnection,
    "com.apple.mobile.installation_proxy": InstallationProxyConnection,
    "com.apple.afc": AFCConnection,
    "com.apple.syslog_relay": SyslogRelayConnection,
    "com.apple.os_trace_relay": OsTraceRelayConnection,
    "com.apple.mobile.diagnostics_relay": DiagnosticsConnection,
}
FIRST_SERVICE_PORT = 49152


class Emulator:
    """Run with `async with Emulator(...) as emulator:`; every public method runs on the emulator's event loop.

    Its TCP servers (usbmuxd, control API, activation) have no authentication: they bind loopback addresses only,
    unless `allow_remote`."""

    def __init__(
        self,
        specs: Iterable[DeviceSpec] = (),
        *,
        socket_path: str | Path | None = None,
        tcp_address: str | None = None,
        speed: float = 1.0,
        activation_address: str | None = "127.0.0.1:0",
        control_address: str | None = None,
        seed: str = "stationd",
        allow_remote: bool = False,
    ) -> None:
        if socket_path is None and tcp_address is None:
            raise ValueError("the emulator needs a UNIX socket path or a TCP address for usbmuxd")
        if speed < 0:
            raise ValueError("speed must be zero or more")
        if not allow_remote:
            for what, address in (
                ("usbmuxd over TCP", tcp_address),
                ("the control API", control_address),
                ("the fake activation server", activation_address),
            ):
                if address is not None:
                    check_loopback(address, what)
        self.socket_path = str(socket_path) if socket_path is not None else None
        self.tcp_address = tcp_address
        self.speed = speed
        self.buid = str(uuid.uuid4()).upper()
        self.devices: dict[str, VirtualDevice] = {}
        self.plugged: set[str] = set()
        self.listeners: set[UsbmuxClient] = set()
        self.pair_records: dict[str, bytes] = {}
        self.authority = ActivationAuthority()
        self.activation_address = activation_address
        self.activation: HTTPServer | None = None
        self.control_address = control_address
        self.control: HTTPServer | None = None
        self.seed = seed
        self.tcp_port: int | None = None
        self._moved: dict[str, Emulator] = {}  # iPads carried to another emulator (another station's hub)
        self.erases: list[str] = []  # UDIDs, once per EraseDevice acknowledged
        self._erase_seen = asyncio.Event()
        self._next_device_id = 1
        self._next_port = FIRST_SERVICE_PORT
        self._services: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self._streams: dict[str, set[asyncio.Task[Any]]] = {}
        self._timers: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        for spec in specs:
            self._add(spec)

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            self._servers.append(await asyncio.start_unix_server(self._client, path=self.socket_path))
        if self.tcp_address is not None:
            host, port = parse_address(self.tcp_address)
            server = await asyncio.start_server(self._client, host=host, port=port)
            self.tcp_port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
        if self.activation_address is not None:
            host, port = parse_address(self.activation_address)
            self.activation = HTTPServer(activation_app(self.authority, self._is_locked), host, port)
            await self.activation.start()
        if self.control_address is not None:
            host, port = parse_address(self.control_address)
            self.control = HTTPServer(control_app(self), host, port)
            await self.control.start()
        for udid in list(self.devices):
            self.plug(udid)

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()
        for server in self._servers:
            server.close()
        for task in list(self._timers) + [t for tasks in self._streams.values() for t in tasks]:
            task.cancel()
        for client in list(self.listeners):
            client.writer.close()
        await asyncio.gather(*self._timers, return_exceptions=True)
        if self.activation is not None:
            await self.activation.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    @property
    def usbmux_address(self) -> str:
        """What to put in USBMUXD_SOCKET_ADDRESS."""
        if self.socket_path is not None:
            return self.socket_path
        host, _ = parse_address(self.tcp_address or "")
        return f"{host}:{self.tcp_port}"

    @property
    def activation_url(self) -> str | None:
        """Base URL of the fake activation server; its endpoints live under /deviceservices/."""
        return f"{self.activation.url}/deviceservices" if self.activation else None

    @property
    def control_url(self) -> str | None:
        """Base URL of the control API, when it runs."""
        return self.control.url if self.control else None

    # -- devices --------------------------------------------------------------------------------------------------
    def _add(self, spec: DeviceSpec) -> VirtualDevice:
        if spec.udid in self.devices:
            raise ValueError(f"a device with UDID {spec.udid} already exists")
        device = VirtualDevice(spec, self.clock)
        self.devices[spec.udid] = device
        return device

    def add_device(self, spec: DeviceSpec | None = None, plug: bool = True) -> VirtualDevice:
        """Add a device (a generated one when no spec is given) and plug it in."""
        device = self._add(spec or generated_spec(len(self.devices), self.seed))
        if plug:
            self.plug(device.udid)
        return device

    def device(self, udid: str) -> VirtualDevice:
        try:
            return self.devices[udid]
        except KeyError:
            raise KeyError(f"no virtual device with UDID {udid}") from None

    def attached_devices(self) -> list[VirtualDevice]:
        return [d for d in self.devices.values() if d.attached]

    def device_by_id(self, device_id: Any) -> VirtualDevice | None:
        for device in self.devices.values():
            if device.attached and device.device_id == device_id:
                return device
        return None

    def plug(self, udid: str, location_id: int | None = None) -> VirtualDevice:
        """Plug the cable in (optionally into another port); the device attaches unless it is rebooting."""
        device = self.device(udid)
        if location_id is not None:
            device.location_id = location_id
        first = udid not in self.plugged and device.erase_count == 0 and device.device_id is None
        self.plugged.add(udid)
        device.contents.battery.power(True, self.clock())
        if device.status == "detached":
            self._attach(device)
        if first and device.spec.detach_after is not None:
            self._timer(self._detach_later(device, device.spec.detach_after))
        return device

    def unplug(self, udid: str) -> VirtualDevice:
        """Pull the cable: every connection to the device drops and usbmuxd reports it detached."""
        device = self.device(udid)
        self.plugged.discard(udid)
        device.contents.battery.power(False, self.clock())
        if device.attached:
            self._detach(device)
            device.status = "detached"
        return device

    def move(self, udid: str, other: Emulator, location_id: int | None = None) -> VirtualDevice:
        """Carry an iPad to another emulator, as a person carries it to another station: the cable is pulled here
        and plugged into the other emulator's hub (into `location_id`); it keeps everything it holds. An iPad that
        is erasing or rebooting comes back on the other side when it is done."""
        device = self.unplug(udid)
        del self.devices[udid]
        self._moved[udid] = other
        other.devices[udid] = device
        other._moved.pop(udid, None)
        other.plug(udid, location_id)
        return device

    async def wait_erases(self, count: int) -> None:
        """Until this emulator has acknowledged `count` erase requests (for tests and rehearsals)."""
        while len(self.erases) < count:
            await self._erase_seen.wait()

    def _back(self, device: VirtualDevice) -> None:
        """An iPad done rebooting attaches where its cable is now."""
        home = self
        while device.udid in home._moved:
            home = home._moved[device.udid]
        if device.udid in home.plugged:
            home._attach(device)

    def _attach(self, device: VirtualDevice) -> None:
        device.device_id = self._next_device_id
        self._next_device_id += 1
        device.attached = True
        device.status = "attached"
        self.notify(attached_message(device))

    def _detach(self, device: VirtualDevice) -> None:
        device_id = device.device_id
        device.attached = False
        device.device_id = None
        for key in [k for k in self._services if k[0] == device.udid]:
            del self._services[key]
        for task in self._streams.pop(device.udid, set()):
            task.cancel()
        self.notify({"MessageType": "Detached", "DeviceID": device_id})

    def notify(self, message: dict[str, Any]) -> None:
        for client in list(self.listeners):
            if client.writer.is_closing():
                self.listeners.discard(client)
                continue
            client.send(0, message)

    def _is_locked(self, serial: str) -> bool:
        return any(d.spec.serial == serial and d.spec.activation_locked for d in self.devices.values())

    # -- timing ---------------------------------------------------------------------------------------------------
    def clock(self) -> float:
        """Emulator time in seconds: wall time divided by the speed factor (at speed 0, time stands still)."""
        return time.monotonic() / self.speed if self.speed > 0 else 0.0

    async def pause(self, seconds: float) -> None:
        """Wait a device latency, scaled by the speed factor."""
        if seconds * self.speed > 0:
            await asyncio.sleep(seconds * self.speed)

    async def tls_delay(self, device: VirtualDevice) -> None:
        await self.pause(device.spec.latency.tls)

    def _timer(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _detach_later(self, device: VirtualDevice, seconds: float) -> None:
        await self.pause(seconds)
        self.unplug(device.udid)

    def erase(self, device: VirtualDevice) -> None:
        """EraseDevice was acknowledged: detach after a moment, wipe, reboot, come back in Setup Assistant."""
        self.erases.append(device.udid)
        self._erase_seen.set()
        self._erase_seen = asyncio.Event()
        device.status = "erasing"
        self._timer(self._erase(device))

    async def _erase(self, device: VirtualDevice) -> None:
        await self.pause(device.spec.latency.erase)
        if device.attached:
            self._detach(device)
        device.wipe()
        device.status = "rebooting"
        await self.pause(device.spec.latency.reboot)
        device.status = "detached"
        self._back(device)

    # -- streams --------------------------------------------------------------------------------------------------
    def open_service(self, device: VirtualDevice, name: str, pair_record: dict[str, Any]) -> int:
        """Start a service for one connection, as lockdownd does; return the device port to connect to."""
        port = self._next_port
        self._next_port = FIRST_SERVICE_PORT + (self._next_port + 1 - FIRST_SERVICE_PORT) % 16000
        self._services[(device.udid, port)] = (name, pair_record)
        return port

    def port_handler(self, device: VirtualDevice, port: int) -> StreamHandler | None:
        """What listens on a device port: lockdownd, or a service started for one connection."""
        if port == LOCKDOWN_PORT:
            return lambda reader, writer: LockdownConnection(self, device, reader, writer).serve()
        service = self._services.pop((device.udid, port), None)
        if service is None:
            return None
        name, record = service

        async def serve_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.tls_delay(device)
            await writer.start_tls(device_tls_context(device.private_key_pem, record))
            await SERVICE_CLASSES[name](self, device, reader, writer).serve()

        return serve_service

    async def run_device_stream(
        self, device: VirtualDevice, handler: StreamHandler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Run a device port on a connection that usbmuxd handed over; unplugging cancels it and drops the link."""
        task = asyncio.ensure_future(handler(reader, writer))
        streams = self._streams.setdefault(device.udid, set())
        streams.add(task)
        try:
            await asyncio.wait([task])
        finally:
            task.cancel()
            streams.discard(task)
        if task.cancelled():
            writer.transport.abort()
        elif isinstance(task.exception(), (asyncio.IncompleteReadError, ConnectionError, WireError, OSError)):
            return
        elif task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await UsbmuxClient(self, reader, writer).serve()

    # -- state ----------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "usbmuxd": self.usbmux_address,
            "activation_url": self.activation_url,
            "speed": self.speed,
            "devices": [d.snapshot() for d in self.devices.values()],
        }
