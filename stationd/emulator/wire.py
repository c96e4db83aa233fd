"""Framing of the two wire protocols the emulator speaks: usbmuxd packets and length-prefixed plists."""

from __future__ import annotations

import asyncio
import plistlib
import struct
from typing import Any

USBMUX_HEADER = struct.Struct("<IIII")  # length (including itself), version, message type, tag
USBMUX_VERSION_BINARY = 0
USBMUX_VERSION_PLIST = 1
USBMUX_MSG_RESULT = 1
USBMUX_MSG_PLIST = 8
MAX_PACKET = 16 * 1024 * 1024


class WireError(Exception):
    """The peer sent bytes that are not a valid packet of the protocol."""


async def read_usbmux_packet(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    """Read one usbmuxd packet; return (version, message type, tag, payload)."""
    header = await reader.readexactly(USBMUX_HEADER.size)
    length, version, message, tag = USBMUX_HEADER.unpack(header)
    if length < USBMUX_HEADER.size or length > MAX_PACKET:
        raise WireError(f"usbmuxd packet with impossible length {length}")
    payload = await reader.readexactly(length - USBMUX_HEADER.size)
    return version, message, tag, payload


def usbmux_packet(tag: int, body: dict[str, Any]) -> bytes:
    """Encode a plist-protocol usbmuxd packet."""
    payload = plistlib.dumps(body)
    return USBMUX_HEADER.pack(USBMUX_HEADER.size + len(payload), USBMUX_VERSION_PLIST, USBMUX_MSG_PLIST, tag) + payload


def usbmux_binary_result(tag: int, number: int) -> bytes:
    """Encode a binary-protocol RESULT packet (answer to clients that speak the old binary protocol)."""
    return USBMUX_HEADER.pack(USBMUX_HEADER.size + 4, USBMUX_VERSION_BINARY, USBMUX_MSG_RESULT, tag) + struct.pack(
        "<I", number
    )


async def read_plist(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one big-endian length-prefixed plist (lockdownd and its services)."""
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_PACKET:
        raise WireError(f"plist message with impossible length {length}")
    data = await reader.readexactly(length)
    try:
        message = plistlib.loads(data)
    except Exception as e:
        raise WireError(f"message is not a plist: {data[:40]!r}") from e
    if not isinstance(message, dict):
        raise WireError("message is a plist but not a dictionary")
    return message


def plist_frame(message: dict[str, Any]) -> bytes:
    """Encode one big-endian length-prefixed XML plist."""
    payload = plistlib.dumps(message)
    return struct.pack(">I", len(payload)) + payload
