"""usbmuxd's plist-protocol packets, for both sides: the station's client and the emulator's server.

A packet is a little-endian header (length including the header, version, message type, tag) and a payload; the
plist protocol uses version 1 and message type 8 with an XML plist dictionary. Old clients speak version 0 (binary);
a server answers them with a binary RESULT.
"""

from __future__ import annotations

import plistlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct("<IIII")
VERSION_BINARY = 0
VERSION_PLIST = 1
MESSAGE_RESULT = 1
MESSAGE_PLIST = 8
MAX_PACKET = 4 * 1024 * 1024

ReceiveExactly = Callable[[int], Awaitable[bytes]]


class PacketError(Exception):
    """Bytes that are not a valid usbmuxd packet."""


@dataclass(frozen=True)
class Packet:
    version: int
    message_type: int
    tag: int
    payload: bytes

    @property
    def is_plist(self) -> bool:
        return (self.version, self.message_type) == (VERSION_PLIST, MESSAGE_PLIST)

    def message(self) -> dict[str, Any]:
        """The payload as a plist dictionary."""
        if not self.is_plist:
            raise PacketError(f"packet version {self.version} type {self.message_type}, expected a plist packet")
        try:
            message = plistlib.loads(self.payload)
        except Exception as error:
            raise PacketError(f"payload is not a plist: {self.payload[:32]!r}") from error
        if not isinstance(message, dict):
            raise PacketError("payload is a plist but not a dictionary")
        return message


def encode(tag: int, message: dict[str, Any]) -> bytes:
    """A plist-protocol packet."""
    payload = plistlib.dumps(message)
    return HEADER.pack(HEADER.size + len(payload), VERSION_PLIST, MESSAGE_PLIST, tag) + payload


def encode_binary_result(tag: int, number: int) -> bytes:
    """A binary-protocol RESULT packet (the answer to a client speaking the old protocol)."""
    return HEADER.pack(HEADER.size + 4, VERSION_BINARY, MESSAGE_RESULT, tag) + struct.pack("<I", number)


async def read(receive_exactly: ReceiveExactly) -> Packet:
    """Read one packet with any stream's "read exactly n bytes" (anyio's or asyncio's)."""
    length, version, message_type, tag = HEADER.unpack(await receive_exactly(HEADER.size))
    if not HEADER.size <= length <= MAX_PACKET:
        raise PacketError(f"packet with impossible length {length}")
    return Packet(version, message_type, tag, await receive_exactly(length - HEADER.size))
