"""`stationd run`: the daemon, assembled from the configuration, until SIGTERM or SIGINT."""

from __future__ import annotations

import signal

import anyio
import structlog

from stationd.assemble import assemble
from stationd.config import Config
from stationd.identity import load_identity

log = structlog.get_logger("stationd")


async def cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("station.signal", signal=signal.Signals(signum).name)
            scope.cancel()
            return


async def run_station(config: Config) -> None:
    """The daemon: run until SIGTERM or SIGINT, then park every device and exit."""
    identity = load_identity(config.organization.identity)
    async with assemble(config, identity) as assembly:
        station = assembly.station
        log.info("station.starting", station=config.station.id, steps=station.plan, database=str(config.station.database))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancel_on_signal, tasks.cancel_scope)
