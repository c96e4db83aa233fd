"""com.apple.syslog_relay: the iPad's console log (`session.console`), read for a bounded while.

syslog_relay is a live stream with no end; whether it first replays what the iPad logged lately is not documented
(the emulator does). So a read keeps the last lines that arrive within a few seconds, however many come.
Every public method raises only `StationError` subclasses.
"""

from __future__ import annotations

from collections import deque
from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio
from pymobiledevice3.services.syslog import SyslogService

if TYPE_CHECKING:
    from stationd.device.session import DeviceSession


class Console:
    """The console client of one paired session."""

    def __init__(self, session: DeviceSession) -> None:
        self.session = session

    async def recent(self, count: int, seconds: float) -> list[str]:
        """The last `count` lines the console carries within `seconds`."""
        lines: deque[str] = deque(maxlen=count)
        async with self.session.guard("share its console"):
            async with SyslogService(self.session.lockdown) as syslog:
                with anyio.move_on_after(seconds):
                    async with aclosing(syslog.watch()) as stream:
                        async for line in stream:
                            lines.append(line if isinstance(line, str) else line.decode("utf-8", "replace"))
        return list(lines)
