"""The console streams: com.apple.syslog_relay (text lines) and com.apple.os_trace_relay (binary entries).

Both start with the lines the iPad logged lately, then carry what it logs and its background chatter until the
client disconnects (or the cable is pulled). The replay of recent lines is inferred for syslog_relay; for
os_trace_relay it is what the HISTORICAL stream flag asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import plistlib
import struct
import uuid
from typing import Any

from stationd.emulator.console import CHATTER, CHATTER_INTERVAL, MIN_INTERVAL, Line, chatter
from stationd.emulator.service import DeviceConnection
from stationd.emulator.wire import read_plist

# os_trace_relay: the levels of its binary entries, and the fixed part of an entry (the layout pymobiledevice3
# parses; the fields it skips are sent as zeros).
TRACE_LEVELS = {"Notice": 0x00, "Info": 0x01, "Debug": 0x02, "Error": 0x10, "Fault": 0x11}
TRACE_HEADER = struct.Struct("<9sIQ16s18sIIIBB6sQQ16sHHHIIII")
TRACE_ENTRY = 0x02
IMAGE_UUID = uuid.UUID("5B3D1A3E-6C55-3C5A-9B1E-6A1F1D2C0E01").bytes


class ConsoleStream(DeviceConnection):
    """One client reading the console; subclasses encode a line for their protocol."""

    channel = "console"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pid: int | None = None  # only this process's lines, when set

    def encode(self, line: Line) -> bytes:
        raise NotImplementedError

    async def start(self) -> bool:
        """Read the client's request, if the protocol has one; False ends the connection."""
        return True

    async def serve(self) -> None:
        if not await self.start():
            return
        self.device.log(self.channel, "stream", "started")
        queue = self.device.contents.console.subscribe()
        gone = asyncio.ensure_future(self.reader.read(1))  # a client never sends more: data or EOF means it left
        feeding = asyncio.ensure_future(self._feed(queue))
        try:
            await asyncio.wait([gone, feeding], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.device.contents.console.unsubscribe(queue)
            for task in (gone, feeding):
                task.cancel()
            for task in (gone, feeding):
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await task
            self.device.log(self.channel, "stream", "ended")

    async def _feed(self, queue: asyncio.Queue[Line]) -> None:
        index = 0
        while True:
            interval = max(CHATTER_INTERVAL * self.emulator.speed, MIN_INTERVAL)
            try:
                line = await asyncio.wait_for(queue.get(), interval)
            except TimeoutError:
                line = chatter(index, self.device.contents.console_values())
                index += 1
            if self.pid is not None and line.pid != self.pid:
                continue
            self.writer.write(self.encode(line))
            await self.writer.drain()


class SyslogRelayConnection(ConsoleStream):
    """com.apple.syslog_relay: text lines, each ending in a newline and a NUL, with no request from the client."""

    channel = "syslog_relay"

    def encode(self, line: Line) -> bytes:
        return line.syslog(self.device.device_name)


class OsTraceRelayConnection(ConsoleStream):
    """com.apple.os_trace_relay: `StartActivity` (then binary log entries) and `PidList`."""

    channel = "os_trace_relay"

    async def start(self) -> bool:
        request = await read_plist(self.reader)
        kind = request.get("Request")
        if kind == "PidList":
            processes = {str(line.pid): {"ProcessName": line.process} for line in CHATTER}
            self.device.log(self.channel, "PidList", "ok")
            answer = plistlib.dumps({"Payload": processes, "Status": "RequestSuccessful"})
            self.writer.write(b"\x01" + struct.pack(">I", len(answer)) + answer)
            await self.writer.drain()
            return False
        if kind != "StartActivity":
            self.device.log(self.channel, str(kind), "unknown")
            self.writer.write(_status_reply({"Status": "RequestFailed", "Error": f"Unknown request {kind!r}"}))
            await self.writer.drain()
            return False
        pid = request.get("Pid", -1)
        self.pid = pid if isinstance(pid, int) and pid >= 0 else None
        self.writer.write(_status_reply({"Status": "RequestSuccessful"}))
        await self.writer.drain()
        return True

    def encode(self, line: Line) -> bytes:
        entry = trace_entry(line)
        return bytes([TRACE_ENTRY]) + struct.pack("<I", len(entry)) + entry


def _status_reply(body: dict[str, Any]) -> bytes:
    """StartActivity's answer: the width of the length field, the length (both little-endian), the plist."""
    data = plistlib.dumps(body)
    return struct.pack("<I", 4) + struct.pack("<I", len(data)) + data


def trace_entry(line: Line) -> bytes:
    """One os_trace_relay log entry for `line`."""
    seconds = int(line.at)
    filename = f"/usr/libexec/{line.process}".encode() + b"\x00"
    image = (
        f"/System/Library/PrivateFrameworks/{line.image}.framework/{line.image}"
        if line.image
        else f"/usr/libexec/{line.process}"
    ).encode() + b"\x00"
    message = line.message.encode() + b"\x00"
    subsystem = (line.subsystem or "").encode() + b"\x00" if line.subsystem and line.category else b""
    category = (line.category or "").encode() + b"\x00" if line.subsystem and line.category else b""
    header = TRACE_HEADER.pack(
        bytes(9),
        line.pid,
        line.pid,
        IMAGE_UUID,
        bytes(18),
        seconds,
        0,
        int((line.at - seconds) * 1_000_000),
        0,
        TRACE_LEVELS.get(line.level, 0),
        bytes(6),
        int(line.at * 24_000_000),
        1000 + line.pid,
        IMAGE_UUID,
        len(image),
        len(message),
        0,
        0x1F00,
        len(subsystem),
        len(category),
        0,
    )
    return header + filename + image + message + subsystem + category
