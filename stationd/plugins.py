"""The plugin host: load the plugins, then deliver every event to each of them without ever holding the station up.

Each plugin gets its own lane: a bounded queue and a task that calls its hooks one event at a time, in order. Every
call is bounded by a timeout and isolated: an exception or a timeout is logged and counted, and that plugin simply
moves on to its next event. A slow plugin only delays itself; plain functions run in a worker thread.
"""

from __future__ import annotations

import collections
import importlib
import importlib.metadata
import inspect
import pkgutil
import threading
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pluggy
import structlog

from stationd import hooks
from stationd.config import PluginsConfig, PortsConfig, convert
from stationd.config.convert import Converter, Invalid, closest, unknown, with_example
from stationd.events import Event, EventBus

ENTRY_POINT_GROUP = "stationd.plugins"
BUILTIN_PACKAGE = "stationd_plugins"
LANE_SIZE = 10_000
DRAIN_SECONDS = 5.0

log = structlog.get_logger("stationd.plugins")
_MISSING: Any = object()


class PluginError(Exception):
    """A plugin cannot be loaded or registered."""


class PluginConfigError(PluginError):
    """A plugin setting is wrong; `key` is its full name, like `plugins.webhook.url`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class PluginContext:
    """What `make(settings, context)` receives besides its settings."""

    name: str
    station_id: str
    ports: PortsConfig | None
    timeout: float
    log: Any


def unused_settings(config: PluginsConfig) -> list[str]:
    """The [plugins.NAME] tables no plugin reads: neither enabled nor installed."""
    installed = {entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return [name for name in config.settings if name not in config.enabled and name not in installed]


def builtin_names() -> list[str]:
    """The built-in plugins, by the name written in `plugins.enabled`."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


class Settings:
    """Read one plugin's `[plugins.NAME]` table; each mistake raises `PluginConfigError` naming its key.

    The values are checked by the configuration's own kinds (`stationd.config.convert`), so a plugin's messages
    read like the rest of the file's. An `example` is the key's value as written in TOML, or its whole line.
    """

    def __init__(self, name: str, table: dict[str, Any], known: Iterable[str]) -> None:
        self.name = name
        self.table = dict(table)
        known = list(known)
        for key in self.table:
            if key not in known:
                listing = f"[plugins.{name}] takes " + ", ".join(known)
                raise self.error(key, unknown(key, known, "setting", listing=listing))

    def error(self, key: str, message: str) -> PluginConfigError:
        return PluginConfigError(f"plugins.{self.name}.{key}", message)

    def read(self, key: str, default: Any, kind: Converter, example: str = "") -> Any:
        """The value of `key` (or `default`) converted by `kind`; missing without a default is an error."""
        example = example.partition(" = ")[2] if example.startswith(f"{key} = ") else example
        if key not in self.table and default is _MISSING:
            hint = f", for example: {key} = {example}" if example else ""
            raise self.error(key, f"is missing; write it under [plugins.{self.name}]{hint}")
        value = self.table.get(key, default)
        try:
            return kind(value)
        except Invalid as bad:
            where = key + bad.key
            sentence = bad.explain(f"plugins.{self.name}.{where}")
            raise self.error(where, with_example(sentence, key, "" if bad.key else example or bad.example)) from None

    def text(self, key: str, default: Any = _MISSING, *, example: str = "") -> str:
        return self.read(key, default, convert.text, example).strip()

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        return self.read(key, default, convert.choice(choices))

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        return self.read(key, default, convert.number(minimum))

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        return self.read(key, default, convert.whole(minimum))

    def flag(self, key: str, default: bool) -> bool:
        return self.read(key, default, convert.boolean)

    def texts(self, key: str, default: Iterable[str], *, example: str = "") -> tuple[str, ...]:
        return self.read(key, list(default), convert.texts, example or '["a", "b"]')

    def table_of(self, key: str, *, example: str) -> dict[str, Any]:
        return self.read(key, {}, convert.table(), example)


class _Lane:
    """One plugin's queue of pending hook calls and the hooks it implements."""

    def __init__(self, name: str, impls: dict[str, list[pluggy.HookImpl]]) -> None:
        self.name = name
        self.impls = impls
        self.queue: collections.deque[tuple[tuple[str, ...], dict[str, Any]] | None] = collections.deque()
        self.ready = anyio.Event()
        self.finished = anyio.Event()
        self.missed = 0

    def put(self, hook_names: tuple[str, ...], kwargs: dict[str, Any]) -> bool:
        """Queue a call of the hooks this plugin implements; False when the oldest pending call was dropped."""
        wanted = tuple(name for name in hook_names if self.impls.get(name))
        if not wanted:
            return True
        dropped = len(self.queue) >= LANE_SIZE
        if dropped:
            self.queue.popleft()
            self.missed += 1
        self.queue.append((wanted, kwargs))
        self.ready.set()
        return not dropped

    def close(self) -> None:
        self.queue.append(None)
        self.ready.set()

    async def get(self) -> tuple[tuple[str, ...], dict[str, Any]] | None:
        while not self.queue:
            self.ready = anyio.Event()
            await self.ready.wait()
        return self.queue.popleft()


class PluginHost:
    """Loads built-in and installed plugins and runs their hooks, each call bounded and isolated."""

    def __init__(self, config: PluginsConfig, station_id: str, *, ports: PortsConfig | None = None) -> None:
        self.config = config
        self.station_id = station_id
        self.ports = ports
        self.pm = pluggy.PluginManager(hooks.PROJECT)
        self.pm.add_hookspecs(hooks)
        self.failures: dict[str, int] = {}
        self.missed: dict[str, int] = {}
        self._lanes: dict[str, _Lane] = {}
        self._reading: anyio.CancelScope | None = None
        self._busy: set[str] = set()
        self._load()

    # -- loading --------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        builtins = builtin_names()
        installed = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        for name in dict.fromkeys(self.config.enabled):
            if name in builtins:
                self._add(name, importlib.import_module(f"{BUILTIN_PACKAGE}.{name}"))
            elif name not in installed:
                raise PluginConfigError("plugins.enabled", _unknown_plugin(name, builtins, list(installed)))
        for name, entry_point in installed.items():
            if name in builtins:
                raise PluginError(
                    f'the installed plugin "{name}" ({entry_point.value}) has the name of a built-in plugin; '
                    "its package must register under another name"
                )
            self._add(name, _load_entry_point(entry_point))
        for name in unused_settings(self.config):
            log.warning(
                "plugin.settings_unused",
                plugin=name,
                hint=f'[plugins.{name}] is ignored: add "{name}" to plugins.enabled',
            )

    def _add(self, name: str, target: Any) -> None:
        make = getattr(target, "make", None)
        if not callable(make):
            self.register(target, name)
            return
        logger = structlog.get_logger("stationd.plugins", plugin=name)
        context = PluginContext(name, self.station_id, self.ports, self.config.timeout, logger)
        try:
            plugin = make(dict(self.config.settings.get(name, {})), context)
        except PluginError:
            raise
        except Exception as error:
            raise PluginError(f'the plugin "{name}" cannot start: {type(error).__name__}: {error}') from error
        self.register(plugin, name)

    def register(self, plugin: object, name: str) -> None:
        """Add a plugin object (a module or an instance with `@hookimpl` functions) under `name`."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as error:
            if self.pm.get_plugin(name) is plugin:
                self.pm.unregister(name=name)
            raise PluginError(f'the plugin "{name}" cannot be used: {error}') from error
        wrappers = [i for i in self._all_impls(name) if i.wrapper or i.hookwrapper]
        if wrappers:
            self.pm.unregister(name=name)
            raise PluginError(
                f'the plugin "{name}" uses hook wrappers, which stationd does not support; '
                f"write plain hook functions instead ({wrappers[0].function.__name__})"
            )

    def reporters(self) -> list[Any]:
        """The durable reporters the plugins give (`stationd_reporter`), each named after its plugin."""
        found: list[Any] = []
        for impl in self.pm.hook.stationd_reporter.get_hookimpls():
            reporter: Any = impl.function()
            if reporter is not None:
                reporter.name = impl.plugin_name
                found.append(reporter)
        return found

    def plugin_names(self) -> list[str]:
        """Registered plugins, in the order they were loaded."""
        return [name for name, _ in self.pm.list_name_plugin()]

    def _all_impls(self, name: str) -> list[pluggy.HookImpl]:
        plugin = self.pm.get_plugin(name)
        callers = self.pm.get_hookcallers(plugin) or []
        return [impl for caller in callers for impl in caller.get_hookimpls() if impl.plugin_name == name]

    def _impls(self, name: str, hook: str) -> list[pluggy.HookImpl]:
        return [impl for impl in getattr(self.pm.hook, hook).get_hookimpls() if impl.plugin_name == name]

    # -- running --------------------------------------------------------------------------------------------------
    async def startup(self) -> None:
        """Call every `stationd_startup`, concurrently, each with its own timeout; each gets its own settings."""
        async with anyio.create_task_group() as tasks:
            for impl in self.pm.hook.stationd_startup.get_hookimpls():
                settings = dict(self.config.settings.get(impl.plugin_name, {}))
                kwargs = {"station_id": self.station_id, "config": settings}
                tasks.start_soon(self._call, impl.plugin_name, "stationd_startup", impl, kwargs)

    async def shutdown(self) -> None:
        """Call every `stationd_shutdown`, concurrently, each with its own timeout."""
        async with anyio.create_task_group() as tasks:
            for impl in self.pm.hook.stationd_shutdown.get_hookimpls():
                kwargs = {"station_id": self.station_id}
                tasks.start_soon(self._call, impl.plugin_name, "stationd_shutdown", impl, kwargs)

    async def run(self, bus: EventBus, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver the bus's events to every plugin until `station.stopping` has been delivered or `close()`.

        Subscribes before signalling `task_status.started()`, so start it with `await tasks.start(host.run, bus)`
        before the station publishes anything. On the way out, queued calls get twice the timeout (at least 5 s).
        """
        wanted = (*hooks.EVENT_HOOKS.values(), "stationd_event", "stationd_report")
        self._lanes = {}
        for name in self.plugin_names():
            impls = {hook: self._impls(name, hook) for hook in wanted}
            if any(impls.values()):
                self._lanes[name] = _Lane(name, impls)
        with bus.subscribe() as subscription:
            async with anyio.create_task_group() as tasks:
                for lane in self._lanes.values():
                    tasks.start_soon(self._serve, lane, name=f"plugin {lane.name}")
                with anyio.CancelScope() as self._reading:
                    task_status.started()
                    async for event in subscription:
                        self._fan_out(event)
                        if event.kind == "station.stopping":
                            break
                self._reading = None
                for lane in self._lanes.values():
                    lane.close()
                with anyio.move_on_after(max(self.config.timeout * 2, DRAIN_SECONDS)):
                    for lane in self._lanes.values():
                        await lane.finished.wait()
                tasks.cancel_scope.cancel()
        self._lanes = {}

    def close(self) -> None:
        """Stop reading the bus: `run()` delivers what is already queued, then returns."""
        if self._reading is not None:
            self._reading.cancel()

    def _fan_out(self, event: Event) -> None:
        special = hooks.EVENT_HOOKS.get(event.kind)
        names = ("stationd_event", special) if special else ("stationd_event",)
        for lane in self._lanes.values():
            self._put(lane, names, {"event": event})
            if event.kind == "device.reported":  # a finished iPad's row, for reporters: from the trail too
                self._put(lane, ("stationd_report",), {"device": event.data.get("device", {})})

    def _put(self, lane: _Lane, names: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        if not lane.put(names, kwargs):
            self.missed[lane.name] = lane.missed
            if lane.missed == 1:
                log.warning(
                    "plugin.behind",
                    plugin=lane.name,
                    queued=LANE_SIZE,
                    hint="the plugin is too slow for the station; its oldest events are dropped",
                )

    async def _serve(self, lane: _Lane) -> None:
        try:
            while (item := await lane.get()) is not None:
                names, kwargs = item
                for name in names:
                    for impl in lane.impls[name]:
                        await self._call(lane.name, name, impl, kwargs)
        finally:
            lane.finished.set()

    async def _call(self, name: str, hook: str, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> None:
        """One implementation, bounded by the plugin's timeout; every failure is logged, counted and swallowed."""
        limit = getattr(impl.plugin, "hook_timeout", None) or self.config.timeout
        args = [kwargs[arg] for arg in impl.argnames]
        scope: anyio.CancelScope | None = None
        try:
            with anyio.fail_after(limit if limit > 0 else None) as scope:
                if inspect.iscoroutinefunction(impl.function):
                    await impl.function(*args)
                else:
                    result = await self._in_thread(name, impl.function, args)
                    if inspect.isawaitable(result):
                        await result
        except Exception as error:
            if isinstance(error, TimeoutError) and scope is not None and scope.cancel_called:
                self._failed(name, hook, f"took longer than {limit:g} s and was stopped")
            elif isinstance(error, _StillBusy):
                self._failed(name, hook, str(error))
            else:
                self._failed(name, hook, f"{type(error).__name__}: {error}", where=_where(error))

    async def _in_thread(self, name: str, function: Any, args: list[Any]) -> Any:
        """Run a plain function in a worker thread; while one is stuck past its timeout, skip the plugin's calls."""
        if name in self._busy:
            raise _StillBusy("skipped: its previous call is still running in a worker thread")
        lock = threading.Lock()
        state = {"started": False, "abandoned": False}

        def call() -> Any:
            with lock:
                if state["abandoned"]:
                    return None
                state["started"] = True
            try:
                return function(*args)
            finally:
                self._busy.discard(name)

        self._busy.add(name)
        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        finally:
            with lock:
                if not state["started"]:
                    state["abandoned"] = True
                    self._busy.discard(name)

    def _failed(self, name: str, hook: str, error: str, where: str | None = None) -> None:
        self.failures[name] = self.failures.get(name, 0) + 1
        log.error("plugin.failed", plugin=name, hook=hook, error=error, **({"where": where} if where else {}))


class _StillBusy(Exception):
    pass


def _where(error: BaseException) -> str | None:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


def _unknown_plugin(name: str, builtins: list[str], installed: list[str]) -> str:
    close = closest(name, builtins + installed)
    hint = f' Did you mean "{close}"?' if close else ""
    known = f"the built-in plugins are {', '.join(builtins)}"
    if installed:
        known += f"; installed plugins: {', '.join(installed)}"
    return (
        f'no plugin named "{name}": it is neither built in nor installed ({known}).{hint} '
        f"To use a third-party plugin, install its package (pip install ...) into stationd's environment."
    )


def _load_entry_point(entry_point: importlib.metadata.EntryPoint) -> Any:
    try:
        return entry_point.load()
    except Exception as error:
        source = entry_point.dist.name if entry_point.dist is not None else entry_point.value
        raise PluginError(
            f'the installed plugin "{entry_point.name}" (from {source}) cannot be loaded: '
            f"{type(error).__name__}: {error}; reinstall or remove that package"
        ) from error
