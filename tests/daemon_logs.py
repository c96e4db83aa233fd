"""Read a `stationd run` process's JSON log lines as they come."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from anyio.abc import Process
from anyio.streams.text import TextReceiveStream


async def log_lines(process: Process, kept: list[str] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Each line of the process's stderr, parsed (a line that is not JSON comes as {"event": "unparsed"});
    every raw line is also appended to `kept`, when given."""
    assert process.stderr is not None
    buffer = ""
    async for chunk in TextReceiveStream(process.stderr):
        buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            if kept is not None:
                kept.append(line)
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield {"event": "unparsed", "line": line}
