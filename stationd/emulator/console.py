"""A virtual iPad's console: what it logs (scenario lines, its own events) and the background chatter of iOS.

Lines are kept in a bounded ring. Streams (syslog_relay, os_trace_relay) subscribe with a bounded queue each: a client
that does not read loses the oldest lines, never the emulator's memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

HISTORY = 200  # lines a new stream gets first (what the iPad logged lately)
QUEUE = 1000  # lines waiting for one slow client
LEVELS = ("Notice", "Info", "Debug", "Error", "Fault")
CHATTER_INTERVAL = 1.0  # emulated seconds between two background lines
MIN_INTERVAL = 0.01  # wall seconds: at any speed a stream carries at most 100 background lines a second


@dataclass
class Line:
    process: str
    message: str
    level: str = "Notice"
    pid: int = 0
    image: str | None = None  # the library that logged it, when not the process itself
    subsystem: str | None = None
    category: str | None = None
    at: float = field(default_factory=time.time)

    def syslog(self, device_name: str) -> bytes:
        """The line as syslog_relay sends it: `Mon DD HH:MM:SS host process(image)[pid] <Level>: message`, then
        a newline and a NUL. The host is the device name with hyphens for spaces (inferred)."""
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(self.at))
        sender = f"{self.process}({self.image})" if self.image else self.process
        host = device_name.replace(" ", "-")
        return f"{stamp} {host} {sender}[{self.pid}] <{self.level}>: {self.message}\n".encode() + b"\x00"


# Background lines an idle iPad logs, in turn ({level} and {charging} are the battery's). Plausible, not copied.
CHATTER = (
    Line(
        "SpringBoard",
        "[FBSystemService] Scene update for com.apple.springboard complete",
        pid=34,
        image="FrontBoard",
        subsystem="com.apple.FrontBoard",
        category="Scene",
    ),
    Line(
        "powerd",
        "Battery at {level}%, external power {charging}",
        pid=52,
        subsystem="com.apple.powerd",
        category="battery",
    ),
    Line("locationd", "os_transaction created: CLLocationManager monitoring", level="Info", pid=71),
    Line(
        "wifid",
        "WiFi: auto-join scan requested (screen on, not associated)",
        pid=43,
        subsystem="com.apple.WiFiManager",
        category="autojoin",
    ),
    Line(
        "backboardd", "Display brightness 0.42, ambient light 118 lux", level="Info", pid=61, image="BackBoardServices"
    ),
    Line("mDNSResponder", "mDNS_Execute: DNS cache size 24", level="Debug", pid=92),
    Line("kernel", "AppleSmartBattery: gauge update, cycle count {cycle_count}", pid=0),
    Line(
        "runningboardd",
        "Assertion acquired for process com.apple.Preferences: suspended -> running",
        level="Info",
        pid=31,
        subsystem="com.apple.runningboard",
        category="assertion",
    ),
)


class Console:
    """The console of one virtual iPad."""

    def __init__(self, lines: list[Line]) -> None:
        self.history: deque[Line] = deque(maxlen=HISTORY)
        self.subscribers: set[asyncio.Queue[Line]] = set()
        self.logged = 0
        for line in lines:
            self.log(line)

    def log(self, line: Line) -> None:
        """The iPad logs a line: every stream sees it."""
        self.history.append(line)
        self.logged += 1
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(line)

    def subscribe(self) -> asyncio.Queue[Line]:
        queue: asyncio.Queue[Line] = asyncio.Queue(QUEUE)
        for line in self.history:
            queue.put_nowait(line)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Line]) -> None:
        self.subscribers.discard(queue)

    def snapshot(self) -> dict[str, Any]:
        return {
            "logged": self.logged,
            "recent": [
                f"{line.process}[{line.pid}] <{line.level}>: {line.message}" for line in list(self.history)[-20:]
            ],
        }


def chatter(index: int, values: dict[str, Any]) -> Line:
    """The index-th background line, filled with the iPad's current values."""
    template = CHATTER[index % len(CHATTER)]
    return Line(
        template.process,
        template.message.format(**values),
        template.level,
        template.pid,
        template.image,
        template.subsystem,
        template.category,
    )
