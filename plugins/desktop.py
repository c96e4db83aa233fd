"""Desktop notifications on the station's own screen: notify-send on Linux, osascript on macOS.

Settings, under [plugins.desktop]:
    events   which event kinds notify (default ["step.failed", "batch.done"])
    command  the program to run instead, as a list; it gets the title and the text as its last two arguments
If the notification tool is missing, the plugin says so once in the log and turns itself off.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

import anyio
from stationd_plugins.webhook import message

from stationd.events import Event
from stationd.hooks import hookimpl
from stationd.plugins import PluginContext, Settings

DEFAULT_EVENTS = ("step.failed", "batch.done")
TITLE = "stationd"


def make(settings: dict[str, Any], context: PluginContext) -> Desktop:
    read = Settings(context.name, settings, ("events", "command"))
    events = read.texts("events", DEFAULT_EVENTS, example='["step.failed", "batch.done"]')
    command = read.texts("command", (), example='["notify-send", "--urgency=critical"]')
    return Desktop(events=events, command=command, context=context)


def applescript_string(text: str) -> str:
    """`text` as an AppleScript string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Desktop:
    def __init__(self, *, events: tuple[str, ...], command: tuple[str, ...], context: PluginContext) -> None:
        self.events = frozenset(events)
        self.command = command
        self.log = context.log
        self.enabled = True
        self.sent = 0

    def argv(self, title: str, text: str) -> list[str] | None:
        """The command line that shows one notification here, or None if this system has no tool for it."""
        if self.command:
            return [*self.command, title, text]
        if sys.platform == "darwin":
            script = f"display notification {applescript_string(text)} with title {applescript_string(title)}"
            return ["osascript", "-e", script]
        if sys.platform.startswith("linux"):
            return ["notify-send", "--app-name=stationd", title, text]
        return None

    @hookimpl
    async def stationd_event(self, event: Event) -> None:
        if self.enabled and event.kind in self.events:
            await self.notify(TITLE, message(event))

    async def notify(self, title: str, text: str) -> None:
        argv = self.argv(title, text)
        if argv is None or shutil.which(argv[0]) is None:
            self.enabled = False
            tool = argv[0] if argv else "a notification tool"
            self.log.warning(
                "desktop.disabled",
                reason=f"{tool} is not available on this computer",
                hint="install libnotify-bin (notify-send) or set plugins.desktop.command",
            )
            return
        result = await anyio.run_process(argv, check=False, stdout=subprocess.DEVNULL)
        if result.returncode == 0:
            self.sent += 1
        else:
            error = result.stderr.decode(errors="replace").strip()[:200]
            self.log.warning("desktop.failed", returncode=result.returncode, error=error)
