"""The port map: teach the station which physical USB port is which ("Hub A · 7"), and write it to the config."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from stationd.files import write_private_file
from stationd.usbmux import UsbEvent, UsbWatcher

SECTION = re.compile(r"^\s*\[\s*ports\s*\]\s*(#.*)?$")
ANY_SECTION = re.compile(r"^\s*\[")


async def learn(
    events: AsyncIterator[UsbEvent],
    *,
    prefix: str,
    start: int = 1,
    count: int | None = None,
    known: dict[int, str] | None = None,
    on_port: Callable[[int, str], None] = lambda location, label: None,
) -> dict[int, str]:
    """Label each new port a device is plugged into, in order: prefix + number. Stops after `count` new ports
    (or when the events end, e.g. on Ctrl-C); returns the whole map, ports learnt before included."""
    labels = dict(known or {})
    number = start
    learnt = 0
    async for event in events:
        if event.kind != "attached" or event.location_id is None or event.location_id in labels:
            continue
        while f"{prefix}{number}" in labels.values():
            number += 1
        label = f"{prefix}{number}"
        labels[event.location_id] = label
        on_port(event.location_id, label)
        number += 1
        learnt += 1
        if count is not None and learnt >= count:
            break
    return labels


async def learn_from_usbmuxd(address: str | None, **options: object) -> dict[int, str]:
    watcher = UsbWatcher(address)
    async with contextlib.aclosing(watcher.events()) as events:
        return await learn(events, **options)  # type: ignore[arg-type]


def ports_section(labels: dict[int, str]) -> str:
    lines = ["[ports]", "# Written by `stationd ports --learn`: usbmuxd LocationID = the label people read."]
    for location, label in sorted(labels.items()):
        escaped = label.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'"0x{location:08x}" = "{escaped}"')
    return "\n".join(lines) + "\n"


def write_ports(config_path: Path, labels: dict[int, str]) -> None:
    """Replace the [ports] section of the config file (or add one), keeping everything else as it was.

    The file holds secrets (Wi-Fi password, API token): it is rewritten atomically, 0600 from the first byte."""
    text = config_path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if SECTION.match(line)), None)
    section = ports_section(labels)
    if start is None:
        new = text + ("" if text.endswith("\n") or not text else "\n") + "\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if ANY_SECTION.match(lines[i])), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    before = config_path.stat()
    write_private_file(config_path, new.encode("utf-8"), force=True)
    if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
        with contextlib.suppress(PermissionError):  # keep the owner the service reads it as, when allowed to
            os.chown(config_path, before.st_uid, before.st_gid)
