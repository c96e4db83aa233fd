"""Serials to assign before any iPad arrives (DEP mode), and the one call that assigns them.

`SerialSource` is all the assignment needs of a work list: its serials. A file given on the command line is one
(`SerialFile`: a serial per line, or a CSV with a `serial` column such as `stationd export` writes); the fleet's work
list (`stationd queue import --assign`) is another. `assign_serials` posts them in as few activities as the batch
allows, verifies each serial, and records every verdict in the store, where the DEP hold reads it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anyio

from stationd.apple.assign import Verdict, assign
from stationd.apple.client import AppleClient, BudgetSpent
from stationd.store import Assignment, Outbox

SERIAL = re.compile(r"[A-Z0-9]{8,20}")
MAX_FILE_BYTES = 8 * 1024 * 1024


class WorkListError(ValueError):
    """The work list cannot be read; the message names the line."""


class SerialSource(Protocol):
    def serials(self) -> list[str]:
        """The serial numbers to assign, each once, in order."""


class SerialFile:
    """Serials from a file: one per line (blank lines and # comments skipped), or a CSV with a "serial" column."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def serials(self) -> list[str]:
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise WorkListError(f"{self.path} is larger than {MAX_FILE_BYTES // 2**20} MiB: not a list of serials")
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise WorkListError(f"cannot read the work list {self.path}: {error}") from None
        return parse_serials(text, str(self.path))


class SerialList:
    """Serials given on the command line."""

    def __init__(self, serials: list[str]) -> None:
        self._serials = serials

    def serials(self) -> list[str]:
        return parse_serials("\n".join(self._serials), "the command line")


def parse_serials(text: str, where: str) -> list[str]:
    lines = text.splitlines()
    first = lines[0] if lines else ""
    rows: list[tuple[int, str]]
    if "," in first or first.strip().lower() in ("serial", "serial_number", "serial number"):
        reader = csv.DictReader(io.StringIO(text))
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        column = columns.get("serial") or columns.get("serial_number") or columns.get("serial number")
        if column is None:
            raise WorkListError(f"{where}: line 1 has no serial column (write serial as its header)")
        rows = [(reader.line_num, (row.get(column) or "").strip()) for row in reader]
    else:
        rows = [(number, line.split("#", 1)[0].strip()) for number, line in enumerate(lines, start=1)]
    found: dict[str, None] = {}
    for number, value in rows:
        if not value:
            continue
        serial = value.upper().lstrip("'")
        if not SERIAL.fullmatch(serial):
            raise WorkListError(
                f"{where}, line {number}: {value[:40]!r} is not a serial number (8 to 20 letters or digits)"
            )
        found[serial] = None
    if not found:
        raise WorkListError(f"{where} holds no serial number")
    return list(found)


async def assign_serials(
    client: AppleClient,
    outbox: Outbox,
    source: SerialSource,
    server_name: str,
    *,
    batch: int = 1000,
    poll: float = 30.0,
    waiting: Callable[[str, float], None] | None = None,
) -> dict[str, Verdict]:
    """Assign every serial of `source` to the MDM server `server_name`, verified, and record each verdict.

    When Apple's budget is spent it waits (telling `waiting`) and goes on, so a long list finishes unattended."""
    serials = source.serials()
    server = await client.server(server_name)
    verdicts: dict[str, Verdict] = {}
    for start in range(0, len(serials), batch):
        chunk = serials[start : start + batch]
        progress: dict = {}

        async def note(values: dict, chunk: list[str] = chunk, progress: dict = progress) -> None:
            progress.update(values)
            if values.get("activity"):
                await outbox.record_assignments(
                    [Assignment(s, "pending", server.name, activity=values["activity"]) for s in chunk]
                )

        while True:
            try:
                found = await assign(client, chunk, server, progress=progress, note=note, poll=poll)
                break
            except BudgetSpent as spent:
                if waiting is not None:
                    waiting(spent.message, spent.after or 60.0)
                await anyio.sleep(spent.after or 60.0)
        await outbox.record_assignments(
            Assignment(v.serial, "assigned" if v.moved else "failed", server.name, v.message, v.activity)
            for v in found.values()
        )
        verdicts.update(found)
    return verdicts
