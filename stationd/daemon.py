"""`stationd run`: the daemon, assembled from the configuration, until SIGTERM or SIGINT."""

from __future__ import annotations

import resource
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


def more_file_descriptors(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (a shell's default, 1024, is small for a cart of
    iPads); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def run_station(config: Config) -> None:
    """The daemon: run until SIGTERM or SIGINT, then park every device and exit."""
    more_file_descriptors()
    identity = load_identity(config.organization.identity)
    async with assemble(config, identity) as assembly:
        station = assembly.station
        log.info(
            "station.starting", station=config.station.id, steps=station.plan, database=str(config.station.database)
        )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancel_on_signal, tasks.cancel_scope)
