"""Follow usbmuxd's hotplug notifications, keeping the LocationID (USB port path) that pymobiledevice3 drops."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from stationd.usbmux.address import resolve
from stationd.usbmux.client import LINK_ERRORS, UsbmuxConnection, UsbmuxError
from stationd.usbmux.packet import PacketError

log = structlog.get_logger(__name__)

HANDSHAKE_TIMEOUT = 5.0


@dataclass(frozen=True)
class UsbEvent:
    """One hotplug event; "connected"/"disconnected" are about usbmuxd itself and carry no device."""

    kind: str
    device_id: int | None = None
    udid: str | None = None
    location_id: int | None = None
    product_id: int | None = None
    connection_type: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


class UsbWatcher:
    """Turn usbmuxd's Listen notifications into `UsbEvent`s, reconnecting for ever; one consumer per watcher."""

    def __init__(
        self,
        address: str | None = None,
        *,
        usb_only: bool = True,
        backoff: tuple[float, float] = (0.5, 10.0),
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.usbmux = resolve(address)
        self.usb_only = usb_only
        self.backoff = backoff
        self._sleep = sleep
        self._jitter = jitter
        self._devices: dict[int, UsbEvent] = {}
        self._skipped: set[int] = set()

    @property
    def address(self) -> str:
        """The resolved address, for logs: a socket path or host:port."""
        return str(self.usbmux)

    def attached(self) -> dict[str, UsbEvent]:
        """The devices attached now, by UDID (a USB attachment wins over a network one)."""
        ordered = sorted(self._devices.values(), key=lambda e: e.connection_type == "USB")
        return {e.udid: e for e in ordered if e.udid is not None}

    async def events(self) -> AsyncGenerator[UsbEvent, None]:
        """Yield hotplug events for ever; close it with `contextlib.aclosing` or by cancelling its consumer."""
        delay = self.backoff[0]
        up: bool | None = None
        while True:
            try:
                mux = await self._connect()
                async with mux.stream:
                    up, delay = True, self.backoff[0]
                    log.info("usbmuxd.connected", address=self.address)
                    yield UsbEvent("connected")
                    while True:
                        event = self._handle(*await mux.receive())
                        if event is not None:
                            yield event
            except (PacketError, UsbmuxError) as e:
                log.warning("usbmuxd.protocol_error", address=self.address, error=str(e))
            except LINK_ERRORS as e:
                if up is not False:
                    log.warning("usbmuxd.unreachable", address=self.address, error=repr(e))
            if up is not False:
                up = False
                yield UsbEvent("disconnected")
                for event in self._forget_all():
                    yield event
            pause = delay * (0.5 + self._jitter() / 2)
            log.debug("usbmuxd.retry", address=self.address, delay=round(pause, 3))
            await self._sleep(pause)
            delay = min(self.backoff[1], delay * 2)

    async def _connect(self) -> UsbmuxConnection:
        with anyio.fail_after(HANDSHAKE_TIMEOUT):
            mux = await UsbmuxConnection.open(self.usbmux)
            try:
                await mux.listen()
            except BaseException:
                await anyio.aclose_forcefully(mux.stream)
                raise
        return mux

    def _handle(self, tag: int, message: dict[str, Any]) -> UsbEvent | None:
        kind = message.get("MessageType")
        device_id = message.get("DeviceID")
        if kind not in ("Attached", "Detached"):
            if kind != "Paired":
                log.debug("usbmuxd.message_ignored", message_type=kind, tag=tag)
            return None
        if not isinstance(device_id, int):
            log.warning("usbmuxd.message_ignored", message_type=kind, reason="no DeviceID")
            return None
        if kind == "Detached":
            if device_id in self._skipped:
                self._skipped.discard(device_id)
                return None
            seen = self._devices.pop(device_id, None)
            return dataclasses.replace(seen, kind="detached") if seen else UsbEvent("detached", device_id)
        event = _attached_event(device_id, message.get("Properties"))
        if event is None:
            log.warning("usbmuxd.message_ignored", message_type=kind, device_id=device_id, reason="no SerialNumber")
        elif self.usb_only and event.connection_type == "Network":
            self._skipped.add(device_id)
        else:
            self._devices[device_id] = event
            return event
        return None

    def _forget_all(self) -> list[UsbEvent]:
        gone = [dataclasses.replace(e, kind="detached") for e in self._devices.values()]
        self._devices.clear()
        self._skipped.clear()
        return gone


def _attached_event(device_id: int, properties: Any) -> UsbEvent | None:
    if not isinstance(properties, dict) or not isinstance(properties.get("SerialNumber"), str):
        return None

    def number(key: str) -> int | None:
        value = properties.get(key)
        return value if isinstance(value, int) else None

    connection_type = properties.get("ConnectionType")
    return UsbEvent(
        "attached",
        device_id,
        properties["SerialNumber"],
        number("LocationID"),
        number("ProductID"),
        connection_type if isinstance(connection_type, str) else None,
        properties,
    )
