"""Framing of lockdownd and its services: big-endian length-prefixed plists (usbmuxd packets: stationd.usbmux)."""

from __future__ import annotations

import asyncio
import plistlib
import struct
from typing import Any

MAX_PACKET = 16 * 1024 * 1024


class WireError(Exception):
    """The peer sent bytes that are not a valid packet of the protocol."""


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
