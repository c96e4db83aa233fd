"""The fleet in a station's API: a peer's request needs the fleet's secret, the fleet view gathers the stations,
and the database's health is shown (a station on its own file is always reachable)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
from rig import make_rig

from stationd.api import create_app
from stationd.config import FleetConfig
from stationd.fleet.presence import Presence

pytestmark = pytest.mark.anyio
SECRET = "a-fleet-secret-of-enough-length"


async def test_a_peer_request_needs_the_fleets_secret(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig:
        fleet = FleetConfig(name="district", advertise=False, heartbeat=60)
        async with rig.station(fleet=fleet) as station:
            station.presence = Presence(station, fleet, None, SECRET)
            transport = httpx.ASGITransport(app=create_app(station))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                missing = await client.get("/api/fleet/station")
                wrong = await client.get("/api/fleet/station", headers={"authorization": "Bearer nope"})
                right = await client.get("/api/fleet/station", headers={"authorization": f"Bearer {SECRET}"})
                view = await client.get("/api/fleet")
                info = await client.get("/api/station")
            station.presence = Presence(station, fleet, None, None)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                off = await client.get("/api/fleet/station", headers={"authorization": f"Bearer {SECRET}"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 403, 200)
    assert right.json()["id"] == "rig" and right.json()["fleet"] == "district"
    assert SECRET not in right.text and SECRET not in view.text
    assert [s["id"] for s in view.json()["stations"]] == ["rig"] and view.json()["stations"][0]["self"]
    assert info.json()["store"] == {"reachable": True, "waiting": 0} and info.json()["fleet"] == "district"
    assert off.status_code == 403 and "secret_file" in off.json()["error"]
    assert dataclasses.asdict(fleet)["name"] == "district"
