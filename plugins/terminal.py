"""A live board in the terminal: one row per USB port with its iPad, charge, step, progress, time and error.

Settings, under [plugins.terminal]:
    force  show the board even when standard output is not a terminal (default false)
Log lines keep printing above the board.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stationd.events import Event
from stationd.hooks import hookimpl
from stationd.plugins import PluginContext, Settings
from stationd.states import PortStatus

STYLES = {
    PortStatus.BUSY: "yellow",
    PortStatus.WAITING: "cyan",
    PortStatus.HELD: "magenta",
    PortStatus.DONE: "green",
    PortStatus.FAILED: "bold red",
}
JOB_KINDS = (
    "job.started",
    "job.resumed",
    "job.retried",
    "step.started",
    "step.progress",
    "step.finished",
    "step.waiting",
    "step.retrying",
)


def make(settings: dict[str, Any], context: PluginContext) -> Board:
    read = Settings(context.name, settings, ("force",))
    labels = [label for _, label in sorted(context.ports.labels.items())] if context.ports else []
    return Board(context.station_id, labels, force=read.flag("force", False), log=context.log)


@dataclass
class PortRow:
    """What one port shows."""

    label: str
    udid: str | None = None
    serial: str | None = None
    name: str | None = None
    status: str = PortStatus.EMPTY
    step: str | None = None
    finished: set[str] = field(default_factory=set)
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    battery: str = ""  # the charge the iPad last reported: "64 %", "12 % charging", "12 % not charging"


def charge(battery: dict[str, Any]) -> str:
    charging = battery.get("charging")
    state = " charging" if charging is True else " not charging" if charging is False else ""
    return f"{battery.get('level')} %{state}"


def elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Board:
    def __init__(
        self,
        station_id: str,
        labels: list[str],
        *,
        force: bool = False,
        log: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.station_id = station_id
        self.rows = {label: PortRow(label) for label in labels}
        self.force = force
        self.log = log
        self.clock = clock
        self.plan: list[str] = []
        self.live: Live | None = None
        self.lock = threading.Lock()

    # -- state ----------------------------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Update the rows from one event."""
        with self.lock:
            if event.kind == "station.started":
                self.plan = list(event.data.get("plan") or [])
            elif event.kind == "device.forgotten":
                for row in self.rows.values():
                    if row.udid == event.udid:
                        self.rows[row.label] = PortRow(row.label)
            elif event.port_label is not None:
                self._apply_to_port(event)

    def _apply_to_port(self, event: Event) -> None:
        row = self.rows.setdefault(event.port_label, PortRow(event.port_label))  # type: ignore[arg-type]
        if event.udid is not None and row.udid != event.udid:
            row = self.rows[row.label] = PortRow(row.label, udid=event.udid)
        row.serial = event.serial or row.serial
        row.name = event.data.get("name") or row.name
        kind = event.kind
        if kind == "device.identified" and event.data.get("battery"):
            row.battery = charge(event.data["battery"])
        if kind in JOB_KINDS and (row.started_at is None or kind == "job.started"):
            row.started_at, row.ended_at = event.ts, None
        if kind == "job.retried":
            row.error, row.ended_at = None, None
        elif kind == "step.started":
            row.step, row.error = event.step, None
        elif kind == "step.finished" and event.step:
            row.finished.add(event.step)
        elif kind == "step.held":
            row.error = event.data.get("error_message") or "on hold"
        elif kind == "step.retrying":
            row.error = f"retrying: {event.data.get('error_message') or event.data.get('error_code')}"
        elif kind == "step.failed":
            row.error = event.data.get("error_message") or event.data.get("error_code") or "failed"
            row.step, row.ended_at = event.step or row.step, event.ts
        elif kind == "device.done":
            row.step, row.error, row.ended_at = "done", None, event.ts
            row.finished.update(self.plan)
        elif kind == "port.changed":  # the station's own port status, the one every light and tile shows
            row.status = str(event.data.get("status") or row.status)
            if row.status == PortStatus.EMPTY:
                self.rows[row.label] = PortRow(row.label)

    def progress(self, row: PortRow) -> str:
        if self.plan and (row.started_at is not None or row.finished):
            return f"{len(row.finished & set(self.plan))}/{len(self.plan)}"
        return row.step or ""

    def render(self) -> Table:
        """The board as a rich Table."""
        with self.lock:
            rows = list(self.rows.values())
            now = self.clock()
            counts = {status: sum(r.status == status for r in rows) for status in (PortStatus.DONE, PortStatus.FAILED)}
            table = Table(
                title=f"stationd · {self.station_id}",
                caption=f"{counts['done']} done · {counts['failed']} failed",
                expand=True,
            )
            for column in ("Port", "Status", "Serial", "Name", "Battery", "Step", "Progress", "Time", "Error"):
                table.add_column(column, overflow="fold", ratio=3 if column == "Error" else None)
            for row in rows:
                since = elapsed((row.ended_at or now) - row.started_at) if row.started_at is not None else ""
                table.add_row(
                    row.label,
                    row.status,
                    row.serial or "",
                    row.name or "",
                    row.battery,
                    row.step or "",
                    self.progress(row),
                    since,
                    row.error or "",
                    style=STYLES.get(row.status),
                )
            return table

    # -- hooks ----------------------------------------------------------------------------------------------------
    @hookimpl
    async def stationd_startup(self) -> None:
        if not (self.force or sys.stdout.isatty()):
            if self.log is not None:
                self.log.info("terminal.off", reason="standard output is not a terminal; set plugins.terminal.force")
            return
        self.live = Live(get_renderable=self.render, console=Console(), refresh_per_second=1, redirect_stderr=True)
        self.live.start()

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        self.apply(event)
        if self.live is not None:
            self.live.refresh()

    @hookimpl
    async def stationd_shutdown(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
