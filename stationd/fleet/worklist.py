"""The work list: the serials a school or a company must have done, read from the CSV file it already has (exported
from its previous MDM, Apple School Manager or a spreadsheet), and how far the fleet got with each.

Reading is strict and complete: every problem is reported with its line, and nothing is imported unless the
whole file is right. What is accepted: UTF-8 (with or without Excel's byte-order mark) or UTF-16 with its mark
(Excel's "Unicode text"); `,`, `;` or tab between cells; Excel's quoting; a header naming the columns (serial, and
optionally name, group or tag, notes) or a plain column of serials.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from stationd.store import DeviceRecord, JobRecord, Store, WorkItem

SERIAL = re.compile(r"[A-Z0-9]{8,14}")
MAX_NAME = 63  # an iPad's name is at most 63 characters in Setup Assistant
MAX_SHOWN_PROBLEMS = 20
HEADERS = {
    "serial": ("serial", "serial number", "serialnumber", "serial_number", "serial no", "device serial", "sn"),
    "name": ("name", "device name", "devicename", "device_name", "asset name", "asset_name"),
    "group": ("group", "tag", "asset tag", "asset_tag", "class", "cart", "location"),
    "notes": ("notes", "note", "comment", "comments", "description"),
}
STATUSES = ("done", "in progress", "failed", "not yet seen")
EXPORT_FIELDS = (
    "serial",
    "status",
    "listed_name",
    "group",
    "notes",
    "name",
    "udid",
    "station",
    "finished_at",
    "error_code",
    "error_message",
)


class WorkListError(ValueError):
    """The file cannot be imported; `problems` names each one with its line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        shown = problems[:MAX_SHOWN_PROBLEMS]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {problem}" for problem in shown) + (f"\n  ... and {more} more" if more > 0 else "")
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        super().__init__(f"{source}: {count}, nothing was imported:\n{lines}")


def read_worklist(data: bytes, source: str = "the work list") -> list[WorkItem]:
    """The work list in a CSV file's bytes, or WorkListError naming every problem with its line."""
    text = _decode(data, source)
    if not text.strip():
        raise WorkListError(source, ["the file is empty: it needs a column of serial numbers"])
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text)))
    numbered = [(number, row) for number, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not numbered:
        raise WorkListError(source, ["the file holds no serial numbers, only empty lines"])
    columns, body = _columns(numbered, source)
    items: list[WorkItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, row in body:
        cells = {name: (row[index].strip() if index < len(row) else "") for name, index in columns.items()}
        serial = cells["serial"].upper().replace(" ", "")
        if not serial:
            problems.append(f"line {number}: no serial number")
            continue
        if not SERIAL.fullmatch(serial):
            problems.append(
                f"line {number}: {cells['serial'][:40]!r} is not a serial number (8 to 14 letters and digits)"
            )
            continue
        if serial in seen:
            problems.append(f"line {number}: serial {serial} is already on line {seen[serial]}")
            continue
        seen[serial] = number
        name = cells.get("name") or None
        if name is not None and len(name) > MAX_NAME:
            problems.append(f"line {number}: the name of {serial} is {len(name)} characters long (at most {MAX_NAME})")
            continue
        items.append(WorkItem(serial, name=name, group=cells.get("group") or None, notes=cells.get("notes") or None))
    if problems:
        raise WorkListError(source, problems)
    if not items:
        raise WorkListError(source, ["the file has a header but no serial numbers below it"])
    return items


def _decode(data: bytes, source: str) -> str:
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as error:
                raise WorkListError(source, [f"the file is not valid {encoding.upper()}: {error.reason}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise WorkListError(
            source,
            [
                f"line {line}: the file is not UTF-8 (byte 0x{data[error.start]:02x}); save it again as "
                '"CSV UTF-8" (Excel: File › Save As › CSV UTF-8; Numbers: Export To › CSV › Unicode UTF-8)'
            ],
        ) from None


def _delimiter(text: str) -> str:
    """`,`, `;` or tab: whichever the first line uses most outside quotes (a single column has none)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = Counter({delimiter: unquoted.count(delimiter) for delimiter in (",", ";", "\t")})
    delimiter, count = counts.most_common(1)[0]
    return delimiter if count else ","


def _columns(numbered: list[tuple[int, list[str]]], source: str) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Which cell holds what, from the header, or a plain first column of serials when there is no header."""
    _, first = numbered[0]
    names = [cell.strip().lower().lstrip("\ufeff") for cell in first]
    found: dict[str, int] = {}
    for column, aliases in HEADERS.items():
        for index, name in enumerate(names):
            if name in aliases and column not in found:
                found[column] = index
    if "serial" in found:
        return found, numbered[1:]
    if found or not SERIAL.fullmatch(first[0].strip().upper().replace(" ", "")):
        header = ", ".join(repr(cell.strip()) for cell in first if cell.strip())[:200]
        raise WorkListError(
            source,
            [
                f"line {numbered[0][0]}: no serial column; the header names {header}. Name the column of serial "
                'numbers "serial" (other columns the station reads: name, group or tag, notes)'
            ],
        )
    return {"serial": 0}, numbered


# -- progress ---------------------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One serial of the work list and how far the fleet got with it."""

    item: WorkItem
    status: str
    device: DeviceRecord | None
    job: JobRecord | None


async def progress(store: Store) -> tuple[list[Entry], int]:
    """Each listed serial with its status, and how many iPads not on the list were provisioned anyway."""
    items = await store.list_worklist()
    by_serial: dict[str, DeviceRecord] = {}
    for device in await store.list_devices():
        if device.serial and (
            device.serial not in by_serial or device.updated_at > by_serial[device.serial].updated_at
        ):
            by_serial[device.serial] = device
    latest = await store.latest_jobs()
    entries = []
    for item in items:
        listed = by_serial.pop(item.serial) if item.serial in by_serial else None
        job = latest.get(listed.udid) if listed is not None else None
        entries.append(Entry(item, _status(job), listed, job))
    return entries, len(by_serial)


def _status(job: JobRecord | None) -> str:
    if job is None:
        return "not yet seen"
    if job.status == "done":
        return "done"
    if job.status == "failed":
        return "failed"
    return "in progress"


def counts(entries: list[Entry]) -> dict[str, int]:
    found = Counter(entry.status for entry in entries)
    return {status: found.get(status, 0) for status in STATUSES}


def export_rows(entries: list[Entry]) -> list[dict[str, Any]]:
    """The final report: one row per listed serial, exactly once."""
    return [
        {
            "serial": entry.item.serial,
            "status": entry.status,
            "listed_name": entry.item.name,
            "group": entry.item.group,
            "notes": entry.item.notes,
            "name": entry.device.name if entry.device else None,
            "udid": entry.device.udid if entry.device else None,
            "station": entry.job.station_id if entry.job else None,
            "finished_at": _iso(entry.job.finished_at) if entry.job else None,
            "error_code": entry.job.error_code if entry.job else None,
            "error_message": entry.job.error_message if entry.job else None,
        }
        for entry in entries
    ]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")
