"""The HTTP API against a real station on virtual iPads: reads, exports, the event stream and token-guarded actions."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from rig import make_rig
from structlog.testing import capture_logs

from stationd.api import create_app, serve
from stationd.config import ApiConfig, PortsConfig
from stationd.emulator import generated_spec
from stationd.emulator.ipad import location_for
from stationd.httpserve import HTTPServer

TOKEN = "correct-horse-battery-staple-42"
LABELS = {location_for(0): "Cart 1", location_for(1): "Cart 2", location_for(2): "Cart 3", location_for(5): "Cart 6"}


def specs() -> list[Any]:
    return [
        generated_spec(0),
        generated_spec(1, activated=False, activation_locked=True),
        generated_spec(2, activated=False, activation_locked=True),
    ]


async def until_ports(events: Any, wanted: dict[str, str], timeout: float = 30) -> None:
    """Read the bus until each listed device's port shows the wanted status."""
    seen: dict[str, str] = {}
    with anyio.fail_after(timeout):
        async for event in events:
            if event.kind == "port.changed":
                seen[event.udid] = event.data["status"]
            if all(seen.get(udid) == status for udid, status in wanted.items()):
                return


@contextlib.asynccontextmanager
async def client_for(station: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(station))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def read_sse(lines: AsyncIterator[str]) -> dict[str, str]:
    """The next server-sent event (or comment) as its fields; a comment comes back as {"comment": text}."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if fields:
                return fields
            continue
        if line.startswith(":"):
            return {"comment": line[1:].strip()}
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    raise EOFError("the stream ended")


@pytest.mark.anyio
async def test_ports_devices_events_and_export(tmp_path: Path) -> None:
    good, locked, _ = specs()
    async with make_rig(tmp_path, [good, locked]) as rig, rig.station(ports=PortsConfig(labels=LABELS)) as station:
        with station.bus.subscribe() as events:
            await until_ports(events, {good.udid: "done", locked.udid: "failed"})
        async with client_for(station) as client:
            info = (await client.get("/api/station")).json()
            ports = (await client.get("/api/ports")).json()
            devices = (await client.get("/api/devices")).json()["devices"]
            detail = (await client.get(f"/api/devices/{locked.udid}")).json()
            unknown = await client.get("/api/devices/NOPE")
            first = (await client.get("/api/events", params={"limit": 5})).json()
            after = (await client.get("/api/events", params={"after": first["last_id"], "limit": 1000})).json()
            of_locked = (await client.get("/api/events", params={"udid": locked.udid})).json()["events"]
            bad = [await client.get("/api/events", params=p) for p in ({"limit": 0}, {"after": "x"})]
            exported = await client.get("/api/export")
            exported_json = await client.get("/api/export", params={"format": "json"})
            bad_format = await client.get("/api/export", params={"format": "xml"})
            refused = await client.post(f"/api/devices/{locked.udid}/retry", headers={"Authorization": "Bearer x"})
            missing = await client.get("/api/nothing")
            wrong_method = await client.post("/api/ports")

    plan = station.plan
    assert info["id"] == "rig" and info["organization"] == "Rig School" and info["plan"] == plan
    assert info["concurrency"] == 16 and info["started_at"] <= info["now"]
    assert info["ports"] == {"empty": 2, "busy": 0, "waiting": 0, "held": 0, "done": 1, "failed": 1}
    assert info["devices"] == {"done": 1, "failed": 1}

    assert [p["label"] for p in ports["ports"]] == ["Cart 1", "Cart 2", "Cart 3", "Cart 6"]
    done, failed, _, empty = ports["ports"]
    assert done["status"] == "done" and done["device"]["serial"] == good.serial
    assert done["device"]["model"] == "iPad13,18" and done["location"] == f"0x{location_for(0):08x}"
    assert done["steps_done"] == done["steps_total"] == len(plan)
    assert done["finished_at"] >= done["started_at"] and done["elapsed"] >= 0
    assert failed["status"] == "failed" and failed["step"] == "activate"
    assert failed["error_code"] == "activation_locked" and failed["error_title"] == "Activation Lock"
    assert "Find My" in failed["error_message"] and 0 < failed["steps_done"] < len(plan)
    assert empty["status"] == "empty" and empty["device"] is None and empty["location_id"] == location_for(5)

    assert {d["serial"]: d["state"] for d in devices} == {good.serial: "done", locked.serial: "failed"}
    assert all(d["attached"] and d["port"] in ("Cart 1", "Cart 2") for d in devices)
    assert detail["serial"] == locked.serial and detail["job"]["status"] == "failed"
    assert [job["status"] for job in detail["jobs"]] == ["failed"]
    assert "step.failed" in [e["kind"] for e in detail["events"]]
    assert unknown.status_code == 404 and locked.udid not in unknown.json()["error"]

    ids = [e["id"] for e in first["events"] + after["events"]]
    assert len(first["events"]) == 5 and ids == sorted(set(ids)) and ids[0] == 1
    assert first["last_id"] == first["events"][-1]["id"]
    assert {e["udid"] for e in of_locked} == {locked.udid}
    assert all(r.status_code == 400 and "error" in r.json() for r in bad)

    assert exported.headers["content-type"].startswith("text/csv")
    disposition = exported.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="stationd-rig-') and disposition.endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["serial"]: r["state"] for r in rows} == {good.serial: "done", locked.serial: "failed"}
    assert exported_json.headers["content-disposition"].endswith('.json"')
    assert {r["serial"] for r in exported_json.json()} == {good.serial, locked.serial}
    assert bad_format.status_code == 400

    assert refused.status_code == 403 and "[api] token" in refused.json()["error"]
    assert missing.status_code == 404 and "error" in missing.json()
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


@pytest.mark.anyio
async def test_dashboard_page_and_its_files_are_served_under_a_strict_policy(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig, rig.station() as station, client_for(station) as client:
        page = await client.get("/")
        script = await client.get("/static/dashboard.js")
        style = await client.get("/static/dashboard.css")
        ports = await client.get("/api/ports")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["content-type"].startswith("text/html") and "/static/dashboard.js" in page.text
    assert "<script>" not in page.text and "style=" not in page.text
    assert script.status_code == 200 and "EventSource" in script.text
    assert style.status_code == 200 and ".tile" in style.text
    assert ports.json()["ports"] == [] and ports.headers["cache-control"] == "no-store"


@pytest.mark.anyio
async def test_stream_sends_events_in_order_replays_after_last_event_id_and_ends_with_the_station(
    tmp_path: Path,
) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig, anyio.create_task_group() as tasks:
        rig.emulator.unplug(spec.udid)
        stop = anyio.Event()

        async def run_station(*, task_status: Any) -> None:
            async with rig.station() as station:
                server = HTTPServer(create_app(station, heartbeat=0.2))
                task_status.started((station, await server.start()))
                await stop.wait()
            with anyio.fail_after(5):
                await server.stop()

        station, url = await tasks.start(run_station)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            live = []
            async with client.stream("GET", "/api/stream") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                assert (await read_sse(lines)) == {"retry": "3000"}
                rig.emulator.plug(spec.udid)
                with anyio.fail_after(30):
                    while not live or live[-1]["event"] != "device.done":
                        event = await read_sse(lines)
                        if "comment" not in event:
                            live.append(event)
            ids = [int(e["id"]) for e in live]
            assert ids == sorted(set(ids))
            for event in live:
                data = json.loads(event["data"])
                assert data["id"] == int(event["id"]) and data["kind"] == event["event"]
            assert {"device.attached", "port.changed", "step.started", "step.finished"} <= {e["event"] for e in live}

            middle = ids[len(ids) // 2]
            replayed = []
            async with client.stream("GET", "/api/stream", headers={"Last-Event-ID": str(middle)}) as response:
                lines = response.aiter_lines()
                with anyio.fail_after(10):
                    while (event := await read_sse(lines)) != {"comment": "heartbeat"}:
                        if "id" in event:
                            replayed.append(int(event["id"]))
            stored = [r.id for r in await station.store.list_events(after_id=middle)]
            assert replayed == stored and stored[-1] >= ids[-1]

            bad = await client.get("/api/stream", headers={"Last-Event-ID": "yesterday"})
            assert bad.status_code == 400

            async with client.stream("GET", "/api/stream") as response:
                lines = response.aiter_lines()
                assert (await read_sse(lines)) == {"retry": "3000"}
                stop.set()
                with anyio.fail_after(10):
                    tail = [event async for event in _events_until_end(lines)]
            assert tail[-1]["event"] == "station.stopping"


@pytest.mark.anyio
async def test_serve_follows_the_listen_setting_and_closes_open_streams(tmp_path: Path) -> None:
    async with make_rig(tmp_path, []) as rig:
        async with rig.station(api=ApiConfig(listen=None)) as station, serve(station) as url:
            assert url is None
        async with rig.station(api=ApiConfig(listen="127.0.0.1:0")) as station, anyio.create_task_group() as tasks:
            with anyio.fail_after(10):
                async with serve(station) as url:

                    async def read_to_end(*, task_status: Any) -> None:
                        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                            assert (await client.get("/api/station")).json()["id"] == "rig"
                            async with client.stream("GET", "/api/stream") as response:
                                lines = response.aiter_lines()
                                assert (await read_sse(lines)) == {"retry": "3000"}
                                task_status.started()
                                assert [event async for event in _events_until_end(lines)] == []

                    await tasks.start(read_to_end)


async def _events_until_end(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    while True:
        try:
            yield await read_sse(lines)
        except EOFError:
            return


@pytest.mark.anyio
async def test_actions_need_the_token_and_take_effect(tmp_path: Path) -> None:
    good, locked, skipped = specs()
    async with make_rig(tmp_path, [good, locked, skipped]) as rig:
        config = {"ports": PortsConfig(labels=LABELS), "api": ApiConfig(listen=None, token=TOKEN)}
        async with rig.station(**config) as station, client_for(station) as client:
            with station.bus.subscribe() as events:
                await until_ports(events, {good.udid: "done", locked.udid: "failed", skipped.udid: "failed"})
            auth = {"Authorization": f"Bearer {TOKEN}"}
            with capture_logs() as logs:
                missing = await client.post(f"/api/devices/{locked.udid}/retry")
                basic = await client.post(f"/api/devices/{locked.udid}/retry", headers={"Authorization": "Basic eA=="})
                wrong = await client.delete(f"/api/devices/{good.udid}", headers={"Authorization": "Bearer nope"})
                unknown = await client.post("/api/devices/NOPE/retry", headers=auth)

                forgot = await client.delete(f"/api/devices/{good.udid}", headers=auth)
                after_forget = await client.get(f"/api/devices/{good.udid}")
                forgot_again = await client.delete(f"/api/devices/{good.udid}", headers=auth)

                rig.emulator.devices[locked.udid].spec.activation_locked = False
                with station.bus.subscribe() as events:
                    retried = await client.post(f"/api/devices/{locked.udid}/retry", headers=auth)
                    await until_ports(events, {locked.udid: "done"})
                after_retry = (await client.get(f"/api/devices/{locked.udid}")).json()

                no_body = await client.post(f"/api/devices/{skipped.udid}/skip", headers=auth)
                bad_step = await client.post(f"/api/devices/{skipped.udid}/skip", headers=auth, json={"step": "x"})
                skip = await client.post(f"/api/devices/{skipped.udid}/skip", headers=auth, json={"step": "activate"})

    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert basic.status_code == 401
    assert wrong.status_code == 403 and "error" in wrong.json()
    assert unknown.status_code == 404

    assert forgot.status_code == 200 and forgot.json()["ok"]
    assert after_forget.status_code == 404 and forgot_again.status_code == 404

    assert retried.status_code == 200 and retried.json()["action"] == "retry"
    assert after_retry["state"] == "done" and after_retry["job"]["status"] == "done"
    assert [job["status"] for job in after_retry["jobs"]] == ["done"]

    assert no_body.status_code == 400 and "step" in no_body.json()["error"]
    assert bad_step.status_code == 400 and "activate" in bad_step.json()["error"]
    assert skip.status_code == 200 and "activate" in skip.json()["device"]["job"]["completed_steps"]

    assert TOKEN not in repr(logs)
    actions = [entry["event"] for entry in logs]
    assert {"api.refused", "api.forget", "api.retry", "api.skip"} <= set(actions)
