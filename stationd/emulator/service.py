"""What every device port shares: read a plist request, apply the scenario's fault, dispatch to `do_<Request>`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from stationd.emulator.ipad import VirtualDevice
from stationd.emulator.wire import plist_frame, read_plist

if TYPE_CHECKING:
    from stationd.emulator.emulator import Emulator


class CloseConnection(Exception):
    """A handler ends the connection without a reply (the reason goes to the request log)."""


class DeviceConnection:
    """One host connection to a device port: the emulator, the device, and the connection's two directions."""

    channel = "service"  # name in the device's request log

    def __init__(
        self, emulator: Emulator, device: VirtualDevice, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.emulator = emulator
        self.device = device
        self.reader = reader
        self.writer = writer


class DeviceService(DeviceConnection):
    """A device service that speaks length-prefixed plists. Subclasses name their request key and error replies."""

    key = "Request"  # the request field of this protocol

    async def serve(self) -> None:
        while True:
            message = await read_plist(self.reader)
            request = str(message.get(self.key, ""))
            fault = self.device.fault_for(request)
            if fault is not None and fault.action != "drop_reply":
                self.device.log(self.channel, request, f"fault:{fault.action}")
                if fault.action == "drop":
                    return
                if fault.action == "hang":
                    await asyncio.Event().wait()
                await self.send(self.busy(request))
                continue
            handler = getattr(self, "do_" + request, None)
            try:
                answer = await handler(message) if handler is not None else self.unknown(request)
            except CloseConnection as closed:
                self.device.log(self.channel, request, f"closed:{closed}")
                return
            reply = self.complete(request, answer)
            if fault is not None:  # drop_reply: the request took effect, its reply is lost with the link
                self.device.log(self.channel, request, f"fault:{fault.action}:{self.outcome(reply)}")
                return
            self.device.log(self.channel, request, self.outcome(reply))
            await self.send(reply)
            if not await self.after(request, reply):
                return

    async def send(self, reply: dict[str, Any]) -> None:
        self.writer.write(plist_frame(reply))
        await self.writer.drain()

    def complete(self, request: str, reply: dict[str, Any]) -> dict[str, Any]:
        """Fields every reply of this protocol carries."""
        return reply

    def busy(self, request: str) -> dict[str, Any]:
        """The reply to a request a fault makes fail."""
        return {"Error": "The device is busy."}

    def unknown(self, request: str) -> dict[str, Any]:
        return {"Error": f"Unknown request {request!r}"}

    def outcome(self, reply: dict[str, Any]) -> str:
        """How the request log records a reply."""
        return str(reply.get("Error", "ok"))

    async def after(self, request: str, reply: dict[str, Any]) -> bool:
        """Act once the reply is sent; False ends the connection."""
        return True
