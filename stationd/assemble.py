"""The one place a station is put together: store, station, plugins and HTTP API, from a configuration.

`stationd run`, `stationd demo`, the tests' rig and the benchmarks all assemble their station here, so what they run
is the same daemon. The plugins and the API are subscribers of the station's event stream, beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from stationd.api import serve as serve_api
from stationd.config import Config
from stationd.events import EventBus
from stationd.fleet.blueprint import Blueprints
from stationd.fleet.presence import Presence
from stationd.fleet.storage import fleet_secret, store_for
from stationd.identity import Identity
from stationd.plugins import PluginHost
from stationd.reporting.courier import Courier
from stationd.station import Station


@dataclass(frozen=True)
class Assembly:
    station: Station
    dashboard_url: str | None  # None when [api] listen turns the API off


@contextlib.asynccontextmanager
async def assemble(
    config: Config,
    identity: Identity | None,
    *,
    usbmux_address: str | None = None,
    backoff: tuple[float, float] = (1.0, 30.0),
    plugins: bool = True,
    bus: EventBus | None = None,
) -> AsyncIterator[Assembly]:
    """Run a station with its plugins and API while the block runs; leaving the block parks every iPad and lets
    the plugins drain the last events (`station.stopping`) before they shut down. Subscribe to `bus` before, to
    see the station's first events."""
    host = PluginHost(config.plugins, config.station.id, ports=config.ports) if plugins else None
    async with store_for(config, journal=True) as store:
        blueprints = None
        if config.fleet is not None and config.fleet.blueprint is not None:
            folder = (config.store.journal or config.station.database).parent / "blueprints"
            blueprints = Blueprints(config, config.fleet.blueprint, store, fleet_secret(config.fleet), folder)
        station = Station(
            config, store, identity, usbmux_address=usbmux_address, backoff=backoff, bus=bus, blueprints=blueprints
        )
        if host is not None:
            await host.startup()
        try:
            async with anyio.create_task_group() as subscribers:
                if host is not None:
                    await subscribers.start(host.run, station.bus)
                    if reporters := host.reporters():
                        await subscribers.start(Courier(station, reporters).run)
                async with serve_api(station) as url:
                    async with anyio.create_task_group() as running:
                        await running.start(station.run)
                        if config.fleet is not None:
                            station.presence = Presence(station, config.fleet, url, fleet_secret(config.fleet))
                            await running.start(station.presence.run)
                        try:
                            yield Assembly(station, url and url + "/")
                        finally:
                            running.cancel_scope.cancel()
                if host is not None:
                    host.close()
        finally:
            if host is not None:
                with anyio.CancelScope(shield=True):
                    await host.shutdown()
