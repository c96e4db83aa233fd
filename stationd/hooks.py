"""The plugin hooks: every hook a plugin can implement, in one place.

A plugin is any object (a module, an instance) with functions named after these hooks and marked `@hookimpl`.
An implementation may be a plain function or `async def`, and may take any subset of the hook's arguments.
The built-in plugins in `stationd_plugins` use exactly these hooks. See docs/plugins.md for the guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from stationd.events import Event
    from stationd.reporting import Reporter

PROJECT = "stationd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

EVENT_HOOKS = {
    "device.done": "stationd_device_done",
    "step.failed": "stationd_device_failed",
    "port.changed": "stationd_port_changed",
}
"""Event kinds that, besides `stationd_event`, also fire a hook of their own."""


@hookspec
def stationd_startup(station_id: str, config: dict[str, Any]) -> None:
    """The station is starting, before its first event.

    `config` is this plugin's own `[plugins.NAME]` table from the configuration file (empty if there is none).
    """


@hookspec
def stationd_shutdown(station_id: str) -> None:
    """The station has stopped and every event was delivered: close connections, turn lights off."""


@hookspec
def stationd_event(event: Event) -> None:
    """Every event the station publishes (see `stationd.events.Event`), in order."""


@hookspec
def stationd_device_done(event: Event) -> None:
    """An iPad finished every step (a `device.done` event), called after `stationd_event` for that event."""


@hookspec
def stationd_device_failed(event: Event) -> None:
    """A step failed for good (a `step.failed` event); `event.data` has `error_code` and `error_message`."""


@hookspec
def stationd_port_changed(event: Event) -> None:
    """A USB port changed status (a `port.changed` event), keyed by `event.port_label`.

    `event.data["status"]` is one of empty, busy, waiting, done, failed, attention; `event.data["previous"]` is
    the status before.
    """


@hookspec
def stationd_report(device: dict[str, Any]) -> None:
    """A finished iPad's row, as `stationd.export.device_rows` gives it (serial, udid, ecid, model, name, ...).

    For reporters that tell other systems (Apple School Manager, an MDM, a spreadsheet) that a device is ready.
    """


@hookspec
def stationd_reporter() -> Reporter | None:
    """A durable reporter (a `stationd.reporting.Reporter`), asked once at start.

    Each finished iPad becomes one delivery to it in the station's outbox, kept in the store until it is done:
    retried with backoff, resumed after a restart, never holding the iPad's port. Its `name` is the plugin's.
    """
