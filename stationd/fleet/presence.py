"""This station among its fleet: it says it is alive in the shared database (a heartbeat row) and over Bonjour
(`_stationd._tcp`, python-zeroconf's asyncio API), and finds the other stations of its fleet both ways.

mDNS does not cross VLANs or routed networks, so the database's heartbeats are what a fleet relies on; Bonjour
finds peers on the same LAN without it. A station of another fleet (another `[fleet] name`) is ignored. The TXT
record and the heartbeat carry what anyone may read: the station id, the fleet's name, the version, the API port
and counts of busy, done and failed iPads; never a secret, a token or a database URL.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import ifaddr
import structlog
from anyio.abc import TaskGroup, TaskStatus
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from stationd import __version__
from stationd.config import FleetConfig
from stationd.httpserve import is_loopback
from stationd.states import PortStatus
from stationd.store import StoreError

if TYPE_CHECKING:
    from stationd.station import Station

log = structlog.get_logger("stationd.fleet")

SERVICE = "_stationd._tcp.local."
STALE_BEATS = 3  # a station whose heartbeat is older than this many intervals is gone
REQUEST_MS = 3000


@dataclass
class Peer:
    """Another station of the fleet, as the database and Bonjour know it."""

    id: str
    host: str | None = None
    api: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    version: str | None = None
    last_seen: float | None = None  # seconds since its heartbeat (the database's clock), when it has one
    via: set[str] = field(default_factory=set)  # "database", "bonjour"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "api": self.api,
            "counts": self.counts,
            "version": self.version,
            "last_seen": self.last_seen,
            "via": sorted(self.via),
        }


def counts(station: Station) -> dict[str, int]:
    statuses = Counter(status for _, status in station.view.ports.values())
    return {"busy": statuses[PortStatus.BUSY], "done": statuses[PortStatus.DONE], "failed": statuses[PortStatus.FAILED]}


def interface_addresses(chosen: tuple[str, ...]) -> list[str]:
    """The IPv4 addresses to advertise on: those chosen, else every interface's but loopback."""
    if chosen:
        return list(chosen)
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not is_loopback(ip.ip) and not ipaddress.ip_address(ip.ip).is_link_local:
                found.append(ip.ip)
    return found


def stale_after(fleet: FleetConfig) -> float:
    return STALE_BEATS * fleet.heartbeat


class Presence:
    """Run beside the station (`run`); `peers()` lists the other stations of the fleet."""

    def __init__(self, station: Station, fleet: FleetConfig, api_url: str | None, secret: str | None = None) -> None:
        self.station = station
        self.fleet = fleet
        self.secret = secret  # the fleet's shared secret: peers' requests carry it, and ours to them
        self.addresses = interface_addresses(fleet.interfaces)
        self.api_port = _port(api_url)
        self.api_url = self._reachable_url(api_url)
        self.bonjour: dict[str, Peer] = {}  # by service name
        self.database: dict[str, Peer] = {}
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: TaskGroup | None = None

    def info(self) -> dict[str, Any]:
        """What this station says of itself (heartbeat, TXT record, peers' questions): nothing secret."""
        return {
            "host": socket.gethostname(),
            "api": self.api_url,
            "version": __version__,
            "counts": counts(self.station),
            "started_at": self.station.started_at,
        }

    def peers(self) -> list[Peer]:
        """The other stations of this fleet: alive in the database, or seen over Bonjour."""
        merged: dict[str, Peer] = {}
        for source in (self.database, self.bonjour):
            for peer in source.values():
                known = merged.setdefault(peer.id, Peer(peer.id))
                known.host = known.host or peer.host
                known.api = known.api or peer.api
                known.counts = peer.counts or known.counts
                known.version = known.version or peer.version
                known.last_seen = peer.last_seen if peer.last_seen is not None else known.last_seen
                known.via |= peer.via
        return sorted(merged.values(), key=lambda peer: peer.id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._beat)
                task_status.started()
                if self.fleet.advertise and self.addresses:
                    await self._start_bonjour()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_bonjour()
                try:
                    await self.station.store.heartbeat(
                        self.station.station_id, fleet=self.fleet.name, info=self.info(), stopped=True
                    )
                except StoreError as error:
                    log.warning("fleet.goodbye_failed", error=str(error))

    async def _beat(self) -> None:
        """A heartbeat row every `[fleet] heartbeat` seconds; the peers the database knows; the TXT counts."""
        store = self.station.store
        while True:
            try:
                await store.heartbeat(self.station.station_id, fleet=self.fleet.name, info=self.info())
                stations = await store.list_stations(fleet=self.fleet.name)
            except StoreError as error:
                log.warning("fleet.heartbeat_failed", error=str(error))
            else:
                self.database = {
                    record.id: Peer(
                        record.id,
                        host=record.info.get("host"),
                        api=record.info.get("api"),
                        counts=dict(record.info.get("counts") or {}),
                        version=record.info.get("version"),
                        last_seen=round(record.age, 1),
                        via={"database"},
                    )
                    for record in stations
                    if record.id != self.station.station_id
                    and not record.stopped
                    and record.age <= stale_after(self.fleet)
                }
            await self._update_bonjour()
            await anyio.sleep(self.fleet.heartbeat)

    # -- Bonjour --------------------------------------------------------------------------------------------------
    def _txt(self) -> dict[str, str]:
        shown = counts(self.station)
        return {
            "id": self.station.station_id,
            "fleet": self.fleet.name,
            "version": __version__,
            "api": str(self.api_port or 0),
            **{name: str(value) for name, value in shown.items()},
        }

    def _service(self) -> AsyncServiceInfo:
        label = _label(self.station.station_id)
        return AsyncServiceInfo(
            SERVICE,
            f"{label}.{SERVICE}",
            addresses=[socket.inet_aton(address) for address in self.addresses],
            port=self.api_port or 0,
            properties=self._txt(),
            server=f"{_label(socket.gethostname())}-{label}.local.",
        )

    async def _start_bonjour(self) -> None:
        self._zeroconf = AsyncZeroconf(interfaces=self.addresses, ip_version=IPVersion.V4Only)
        self._info = self._service()
        await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        AsyncServiceBrowser(self._zeroconf.zeroconf, [SERVICE], handlers=[self._on_change])
        log.info("fleet.advertising", fleet=self.fleet.name, addresses=self.addresses)

    async def _update_bonjour(self) -> None:
        """Announce the TXT record again when the counts changed."""
        if self._zeroconf is None or self._info is None:
            return
        if self._txt() != {key.decode(): (value or b"").decode() for key, value in self._info.properties.items()}:
            self._info = self._service()
            await self._zeroconf.async_update_service(self._info)

    async def _stop_bonjour(self) -> None:
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None:
            await zeroconf.async_unregister_all_services()
            await zeroconf.async_close()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        """Called on the event loop by zeroconf's browser: a service appeared, changed or said goodbye."""
        if state_change == ServiceStateChange.Removed:
            self.bonjour.pop(name, None)
        elif self._zeroconf is not None and self._tasks is not None:
            self._tasks.start_soon(self._resolve, service_type, name)

    async def _resolve(self, service_type: str, name: str) -> None:
        if self._zeroconf is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zeroconf.zeroconf, REQUEST_MS):
            return
        txt = {key.decode(): (value or b"").decode() for key, value in info.properties.items()}
        if txt.get("fleet") != self.fleet.name or not txt.get("id") or txt["id"] == self.station.station_id:
            return
        address = next(iter(info.parsed_addresses(IPVersion.V4Only)), None)
        port = info.port or 0
        self.bonjour[name] = Peer(
            txt["id"],
            host=(info.server or "").rstrip(".") or None,
            api=f"http://{address}:{port}" if address and port else None,
            counts={key: int(txt[key]) for key in ("busy", "done", "failed") if txt.get(key, "").isdigit()},
            version=txt.get("version"),
            via={"bonjour"},
        )

    def _reachable_url(self, api_url: str | None) -> str | None:
        """The API's URL as a peer reaches it: the listen address, or this computer's first address for 0.0.0.0."""
        if api_url is None:
            return None
        host = api_url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        if host in ("0.0.0.0", "::") and self.addresses:
            return f"http://{self.addresses[0]}:{self.api_port}"
        return api_url


def _port(api_url: str | None) -> int | None:
    if api_url is None:
        return None
    port = api_url.rstrip("/").rsplit(":", 1)[-1]
    return int(port) if port.isdigit() else None


def _label(text: str) -> str:
    """A DNS label made of the text: letters, digits and dashes, at most 63."""
    label = "".join(char if char.isalnum() or char == "-" else "-" for char in text).strip("-")
    return (label or "station")[:63]


async def browse(fleet: FleetConfig, seconds: float, *, exclude: str | None = None) -> list[Peer]:
    """The stations of `fleet` that answer over Bonjour within `seconds` (for `stationd fleet`)."""
    addresses = interface_addresses(fleet.interfaces)
    if not addresses:
        return []
    found: dict[str, Peer] = {}
    zeroconf = AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change != ServiceStateChange.Removed:
            names.add(name)

    browser = AsyncServiceBrowser(zeroconf.zeroconf, [SERVICE], handlers=[on_change])
    try:
        await anyio.sleep(seconds)
        for name in sorted(names):
            info = AsyncServiceInfo(SERVICE, name)
            if not await info.async_request(zeroconf.zeroconf, REQUEST_MS):
                continue
            txt = {key.decode(): (value or b"").decode() for key, value in info.properties.items()}
            if txt.get("fleet") != fleet.name or not txt.get("id") or txt["id"] == exclude:
                continue
            address = next(iter(info.parsed_addresses(IPVersion.V4Only)), None)
            found[txt["id"]] = Peer(
                txt["id"],
                host=(info.server or "").rstrip(".") or None,
                api=f"http://{address}:{info.port}" if address and info.port else None,
                counts={key: int(txt[key]) for key in ("busy", "done", "failed") if txt.get(key, "").isdigit()},
                version=txt.get("version"),
                via={"bonjour"},
            )
    finally:
        await browser.async_cancel()
        await zeroconf.async_close()
    return list(found.values())
