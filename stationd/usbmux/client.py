"""A usbmuxd client connection (anyio): requests with their tagged replies, and the Listen notification stream.

Used by the hotplug watcher, `stationd doctor` and the device layer (to hand usbmuxd the pair records it makes).
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from stationd.usbmux import packet
from stationd.usbmux.address import UsbmuxAddress

PROGRAM = {"ClientVersionString": "stationd", "ProgName": "stationd", "kLibUSBMuxVersion": 3}
LINK_ERRORS = (OSError, anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError)


class UsbmuxError(Exception):
    """usbmuxd answered a request with a non-zero result, or sent something unexpected."""

    def __init__(self, message: str, number: int | None = None) -> None:
        super().__init__(message)
        self.number = number


class UsbmuxConnection:
    """One connection to usbmuxd; `async with await UsbmuxConnection.open(address) as mux: ...`."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buffer = BufferedByteReceiveStream(stream)
        self.tag = 0

    @classmethod
    async def open(cls, address: UsbmuxAddress) -> UsbmuxConnection:
        if address.path is not None:
            stream: ByteStream = await anyio.connect_unix(address.path)
        else:
            stream = await anyio.connect_tcp(address.host or "", address.port or 0)
        return cls(stream)

    async def __aenter__(self) -> UsbmuxConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def send(self, message: dict[str, Any]) -> int:
        self.tag += 1
        await self.stream.send(packet.encode(self.tag, {**PROGRAM, **message}))
        return self.tag

    async def receive(self) -> tuple[int, dict[str, Any]]:
        received = await packet.read(self.buffer.receive_exactly)
        return received.tag, received.message()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply; a Result with a non-zero Number raises UsbmuxError."""
        tag = await self.send(message)
        reply_tag, reply = await self.receive()
        if reply_tag != tag:
            raise UsbmuxError(f"expected the reply with tag {tag}, got {reply.get('MessageType')!r} tag {reply_tag}")
        if reply.get("MessageType") == "Result" and reply.get("Number") != 0:
            raise UsbmuxError(
                f"{message['MessageType']} refused with result {reply.get('Number')!r}", reply.get("Number")
            )
        return reply

    async def listen(self) -> None:
        """Ask for Attached/Detached notifications; read them with `receive`."""
        reply = await self.request({"MessageType": "Listen"})
        if reply.get("MessageType") != "Result":
            raise UsbmuxError(f"expected a Result to Listen, got {reply.get('MessageType')!r}")

    async def read_buid(self) -> str:
        reply = await self.request({"MessageType": "ReadBUID"})
        buid = reply.get("BUID")
        if not isinstance(buid, str):
            raise UsbmuxError("usbmuxd answered ReadBUID without a BUID")
        return buid

    async def save_pair_record(self, udid: str, device_id: int, record: bytes) -> None:
        await self.request(
            {"MessageType": "SavePairRecord", "PairRecordID": udid, "PairRecordData": record, "DeviceID": device_id}
        )
