"""The fleet in the API: what a peer may ask this station (with the fleet's secret), and the fleet view of the
dashboard (this station and every peer, each peer asked with the secret).

A peer proves itself with `Authorization: Bearer <the fleet's secret>`, compared in constant time; the secret is
never logged, shown, advertised or sent anywhere but to the peers of the fleet.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stationd.api.views import port_views, status_counts

if TYPE_CHECKING:
    from stationd.fleet.presence import Peer, Presence
    from stationd.station import Station

log = structlog.get_logger("stationd.api")

PEER_TIMEOUT = 2.0
NO_SECRET = (
    "peer requests are turned off: set [fleet] secret_file to the fleet's shared secret (the same file on every "
    "station, chmod 600) and restart the station"
)


def peer_refusal(request: Request, secret: str | None) -> Response | None:
    """None when the request carries the fleet's secret, else the response refusing it."""
    if not secret:
        return JSONResponse({"error": NO_SECRET}, status_code=403)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return JSONResponse(
            {"error": "a peer request needs the fleet's secret: Authorization: Bearer <secret>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="stationd fleet"'},
        )
    if not hmac.compare_digest(given.strip().encode(), secret.encode()):
        log.warning("api.peer_refused", client=request.client.host if request.client else None)
        return JSONResponse({"error": "wrong fleet secret"}, status_code=403)
    return None


def station_summary(station: Station) -> dict[str, Any]:
    """What a peer (or the fleet view) learns of this station."""
    ports = port_views(station)
    presence = station.presence
    return {
        "id": station.station_id,
        "fleet": presence.fleet.name if presence is not None else None,
        "info": presence.info() if presence is not None else {},
        "counts": status_counts(ports),
        "ports": ports,
        "store": station.store.health(),
        "now": time.time(),
    }


async def peer_station(station: Station, request: Request) -> Response:
    presence = station.presence
    refused = peer_refusal(request, presence.secret if presence is not None else None)
    if refused is not None:
        return refused
    return JSONResponse(station_summary(station))


async def fleet_view(station: Station, request: Request) -> Response:
    """This station and every peer, with their ports: peers are asked (with the secret) at once, each within
    PEER_TIMEOUT; one that does not answer is listed as unreachable."""
    presence = station.presence
    own = {**station_summary(station), "reachable": True, "self": True}
    if presence is None:
        return JSONResponse({"fleet": None, "stations": [own]})
    peers = presence.peers()
    answers: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT) as client, anyio.create_task_group() as tasks:
        for peer in peers:
            tasks.start_soon(_ask, client, peer, presence, answers)
    stations = [own]
    for peer in peers:
        answer = answers.get(peer.id)
        stations.append({**peer.as_dict(), **(answer or {}), "reachable": answer is not None, "self": False})
    return JSONResponse({"fleet": presence.fleet.name, "stations": stations})


async def _ask(client: httpx.AsyncClient, peer: Peer, presence: Presence, answers: dict[str, dict[str, Any]]) -> None:
    if not peer.api or not presence.secret:
        return
    try:
        response = await client.get(
            f"{peer.api.rstrip('/')}/api/fleet/station", headers={"authorization": f"Bearer {presence.secret}"}
        )
    except httpx.HTTPError:
        return
    if response.status_code == 200:
        answers[peer.id] = response.json()
