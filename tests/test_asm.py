"""The asm reporter and the Apple client against a loopback fake of Apple School Manager's API that checks what the
real one checks (signed assertion, claims, Accept, JSON:API bodies, budgets)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
import structlog
from apple_fixture import FakeApple, fake_apple
from cryptography.hazmat.primitives.asymmetric import ec
from stationd_plugins.asm import AsmReporter

from stationd.apple.credentials import AUDIENCE
from stationd.apple.settings import read_settings
from stationd.plugins import PluginConfigError
from stationd.reporting import DeliveryContext
from stationd.store import Delivery, EventRecord, Outcome, Store, open_store

pytestmark = pytest.mark.anyio


async def finished(store: Store, serials: list[str]) -> list[Delivery]:
    """Deliveries to asm of iPads with these serials, as the courier would claim them."""
    events: list[EventRecord] = []
    for serial in serials:
        udid = f"UDID-{serial}"
        await store.upsert_device(udid, serial=serial)
        job = await store.claim_job(udid, "st")
        events.append(
            await store.add_event(
                "device.reported", station_id="st", udid=udid, job_id=job.id, data={"device": {"serial": serial}}
            )
        )
    await store.queue_reports(events, ["asm"], reader="test", read_to=events[-1].seq, station_id="st")
    return await store.claim_deliveries("asm", claimer="st", limit=1000, lease=600)


def reporter(apple: FakeApple, **overrides: Any) -> AsmReporter:
    return AsmReporter(read_settings(apple.settings(**overrides)))


def context(store: Store) -> DeliveryContext:
    return DeliveryContext(store, "st", structlog.get_logger("test"))


async def test_serials_move_from_configurators_pseudo_server_in_one_verified_activity(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple, open_store(tmp_path / "db") as store:
        apple.api.add_devices(["S1", "S2", "S3"])
        asm = reporter(apple)
        with structlog.testing.capture_logs() as logs:
            results = await asm.deliver(await finished(store, ["S1", "S2", "S3"]), context(store))
            again = await asm.deliver(await finished(store, ["S4"]), context(store))
        await asm.close()
        assignments = await store.get_assignments()
    assert {r.outcome for r in results.values()} == {Outcome.DONE}
    assert all(apple.api.server_of(s) == "MDM1" for s in ("S1", "S2", "S3"))
    assert apple.api.posts == 2, "one activity per batch"
    assert [a.serials for a in apple.api.activities.values()] == [["S1", "S2", "S3"], ["S4"]]
    assert len(apple.api.tokens) == 1, "one token for every call, never one per call"
    assert apple.api.refused == [], "the log said S4 is not found: no lookup needed"
    (result,) = again.values()
    assert result.outcome == Outcome.FAILED
    assert result.message is not None and "S4 is not in your organisation" in result.message
    assert "ask your reseller to add it, or add it with Apple Configurator" in result.message
    assert assignments["S1"].status == "assigned" and assignments["S1"].server == "Lincoln MDM"
    shown = repr(logs)
    assert apple.key_file.read_text().splitlines()[1] not in shown
    assert not any(token in shown for token in apple.api.tokens)


async def test_completed_is_not_proof_a_serial_that_did_not_move_fails_by_name(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple, open_store(tmp_path / "db") as store:
        apple.api.add_devices(["OK1", "STUCK1", "STUCK2"])
        apple.api.stuck = {"STUCK1", "STUCK2"}
        apple.api.unlogged = {"STUCK2"}  # the log leaves it out: only the device's own record tells
        asm = reporter(apple)
        deliveries = await finished(store, ["OK1", "STUCK1", "STUCK2"])
        results = await asm.deliver(deliveries, context(store))
        await asm.close()
    (activity,) = apple.api.activities.values()
    assert activity.done, "the fake said COMPLETED (COMPLETED_WITH_SUCCESS)"
    by_serial = {d.serial: results[d.key] for d in deliveries}
    assert by_serial["OK1"].outcome == Outcome.DONE
    assert by_serial["STUCK1"].outcome == Outcome.FAILED
    assert "STUCK1 did not move to Lincoln MDM" in (by_serial["STUCK1"].message or "")
    assert "device locked by pending operation" in (by_serial["STUCK1"].message or "")
    assert by_serial["STUCK2"].outcome == Outcome.FAILED
    assert 'STUCK2 did not move to Lincoln MDM: it is still on "Devices Added by Apple Configurator 2"' in (
        by_serial["STUCK2"].message or ""
    )
    looked_up = [path for method, path in apple.api.requests if path.endswith("/relationships/assignedServer")]
    assert looked_up == ["/v1/orgDevices/STUCK2/relationships/assignedServer"], "only the serial the log left open"


async def test_past_the_post_budget_apple_answers_429_and_the_batch_waits_its_retry_after(tmp_path: Path) -> None:
    async with fake_apple(tmp_path, posts_per_hour=1) as apple, open_store(tmp_path / "db") as store:
        apple.api.add_devices(["A1", "B1"])
        asm = reporter(apple)
        first = await asm.deliver(await finished(store, ["A1"]), context(store))
        second = await asm.deliver(await finished(store, ["B1"]), context(store))
        await asm.close()
        assert [r.outcome for r in first.values()] == [Outcome.DONE]
        (waiting,) = second.values()
        assert waiting.outcome == Outcome.DEFER and waiting.after is not None and 3500 < waiting.after <= 3601
        assert "HTTP 429" in (waiting.message or "")
        assert (429, "The request rate limit has been reached.") in apple.api.refused
        held = await store.take_budget(f"apple:{apple.api.client_id}:post", limit=10, period=3600)
        assert held > 3500, "Retry-After holds the budget for every station on this store"
        (deferred,) = [d for d in await store.list_deliveries(reporter="asm") if d.serial == "B1"]
        assert deferred.progress.get("posting") is False, "Apple answered: no activity to look for"


async def test_our_own_post_budget_is_kept_before_apple_has_to_refuse(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple, open_store(tmp_path / "db") as store:
        apple.api.add_devices(["A1", "B1"])
        asm = reporter(apple, posts_per_hour=1)
        await asm.deliver(await finished(store, ["A1"]), context(store))
        second = await asm.deliver(await finished(store, ["B1"]), context(store))
        await asm.close()
    (waiting,) = second.values()
    assert waiting.outcome == Outcome.DEFER and "1 POST an hour" in (waiting.message or "")
    assert apple.api.posts == 1 and all(status != 429 for status, _ in apple.api.refused)


async def test_an_expired_token_is_replaced_once_on_401(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple, open_store(tmp_path / "db") as store:
        apple.api.add_devices(["A1", "B1"])
        asm = reporter(apple)
        await asm.deliver(await finished(store, ["A1"]), context(store))
        apple.api.expire_tokens()
        results = await asm.deliver(await finished(store, ["B1"]), context(store))
        await asm.close()
    assert [r.outcome for r in results.values()] == [Outcome.DONE]
    assert len(apple.api.tokens) == 2
    assert [status for status, _ in apple.api.refused] == [401]


async def test_a_restarted_reporter_resumes_its_activity_instead_of_posting_again(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple, open_store(tmp_path / "db") as store:
        apple.api.add_devices(["A1", "A2"])
        apple.api.hold = True
        deliveries = await finished(store, ["A1", "A2"])
        first = reporter(apple)
        polled = anyio.Event()
        apple.api.on_polled = lambda activity: polled.set()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.deliver, deliveries, context(store))
            with anyio.fail_after(10):
                await polled.wait()  # posted, written ahead, and polling
            tasks.cancel_scope.cancel()  # the station stops mid-activity
        await first.close()
        apple.api.hold = False
        again = await store.list_deliveries()
        assert all(d.progress.get("activity") for d in again)
        results = await reporter(apple).deliver(again, context(store))
        assert {r.outcome for r in results.values()} == {Outcome.DONE}
    assert apple.api.posts == 1 and apple.api.moves == {"A1": 1, "A2": 1}


async def test_the_fake_refuses_what_apple_refuses(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple:
        api = apple.api
        now = int(time.time())
        good = {"iss": api.client_id, "sub": api.client_id, "aud": AUDIENCE, "iat": now, "exp": now + 600}

        def assertion(claims: dict[str, Any], key: Any = api.key, kid: str = api.key_id) -> str:
            return jwt.encode({"jti": str(uuid.uuid4()), **claims}, key, algorithm="ES256", headers={"kid": kid})

        async def token(value: str, **fields: str) -> int:
            form = {
                "grant_type": "client_credentials",
                "client_id": api.client_id,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": value,
                "scope": "school.api",
                **fields,
            }
            async with httpx.AsyncClient() as client:
                return (await client.post(f"{apple.url}/auth/oauth2/token", data=form)).status_code

        assert await token(assertion(good)) == 200
        assert await token(assertion({**good, "aud": "https://account.apple.com/auth/oauth2/token"})) == 401
        assert await token(assertion({**good, "sub": "SCHOOLAPI.other"})) == 401
        assert await token(assertion({**good, "exp": now + 181 * 86400})) == 401
        assert await token(assertion({**good, "exp": now - 10})) == 401
        assert await token(assertion(good, key=ec.generate_private_key(ec.SECP256R1()))) == 401
        assert await token(assertion(good, kid="other")) == 401
        assert await token(assertion(good), scope="business.api") == 400
        async with httpx.AsyncClient() as client:
            form = {"grant_type": "client_credentials", "client_id": api.client_id, "scope": "school.api"}
            reply = await client.post(f"{apple.url}/auth/oauth2/token", data=form)
            assert reply.status_code == 400
            bearer = next(iter(api.tokens))
            servers = await client.get(f"{apple.url}/v1/mdmServers", headers={"Authorization": f"Bearer {bearer}"})
            assert servers.status_code == 406, "Accept: application/json is required"
            headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
            shapeless = await client.post(f"{apple.url}/v1/orgDeviceActivities", json={"data": {}}, headers=headers)
            assert shapeless.status_code == 400 and shapeless.json()["errors"][0]["code"] == "ENTITY_ERROR"


async def test_settings_refuse_a_key_others_can_read_and_a_client_id_of_the_other_product(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple:
        apple.key_file.chmod(0o644)
        with pytest.raises(PluginConfigError) as loose:
            read_settings(apple.settings())
        assert loose.value.key == "plugins.asm.key_file" and f"chmod 600 {apple.key_file}" in loose.value.message
        assert "PRIVATE KEY" not in str(loose.value)
        apple.key_file.chmod(0o600)
        with pytest.raises(PluginConfigError) as other:
            read_settings(apple.settings(client_id="BUSINESSAPI.123"))
        assert other.value.key == "plugins.asm.client_id" and 'product = "business"' in other.value.message
        with pytest.raises(PluginConfigError) as relative:
            read_settings(apple.settings(key_file="asm.pem"))
        assert "full path" in relative.value.message


async def test_asm_servers_and_check_on_the_command_line(tmp_path: Path) -> None:
    async with fake_apple(tmp_path) as apple:
        apple.api.add_devices(["ONAC0001"])
        apple.api.add_devices(["OURS0001"], server="MDM1")
        config = tmp_path / "stationd.toml"
        config.write_text(
            f'[organization]\nname = "X"\n[station]\ndatabase = "{tmp_path / "db"}"\n[plugins.asm]\n{apple.toml()}'
        )
        env = dict(os.environ, HOME=str(tmp_path / "home"), COLUMNS="200")
        base = [sys.executable, "-m", "stationd.cli", "asm"]
        servers = await anyio.run_process([*base, "servers", "--config", str(config)], env=env)
        listed = servers.stdout.decode()
        assert "Lincoln MDM" in listed and "MDM1" in listed and "Devices Added by Apple Configurator 2" in listed
        check = await anyio.run_process(
            [*base, "check", "ONAC0001", "OURS0001", "GONE0001", "--config", str(config)], env=env, check=False
        )
        shown = check.stdout.decode()
        assert check.returncode == 1
        assert 'it is still on "Devices Added by Apple Configurator 2"' in shown
        assert "GONE0001 is not in your organisation" in shown
        async with open_store(tmp_path / "db") as store:
            found = await store.get_assignments()
        assert {s: a.status for s, a in found.items()} == {
            "ONAC0001": "unknown",
            "OURS0001": "assigned",
            "GONE0001": "failed",
        }
        missing = await anyio.run_process(
            [*base, "servers", "--config", str(tmp_path / "none.toml")], env=env, check=False
        )
        assert missing.returncode == 2


async def test_three_stations_of_a_fleet_make_one_activity_of_a_window(tmp_path: Path, pg_url: str) -> None:
    """Each station of a fleet queues its own finished iPads, all in one outbox: whichever station claims the
    gathered batch first moves every station's serials in one activity; the others claim nothing."""
    stations = ("st-1", "st-2", "st-3")
    async with fake_apple(tmp_path) as apple, contextlib.AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(open_store(pg_url)) for _ in stations]
        serials = [f"F{n}{i:04d}XYZ" for n in range(3) for i in range(4)]
        apple.api.add_devices(serials)
        for number, (station, store) in enumerate(zip(stations, stores, strict=True)):
            events = []
            for serial in serials[number * 4 : number * 4 + 4]:
                await store.upsert_device(f"UDID-{serial}", serial=serial)
                job = await store.claim_job(f"UDID-{serial}", station)
                events.append(
                    await store.add_event(
                        "device.reported",
                        station_id=station,
                        udid=f"UDID-{serial}",
                        job_id=job.id,
                        data={"device": {"serial": serial}},
                    )
                )
            await store.queue_reports(events, ["asm"], reader=station, read_to=events[-1].seq, station_id=station)
        asm = reporter(apple)
        claims: dict[str, list[Delivery]] = {}

        async def claim(station: str, store: Store) -> None:
            claims[station] = await store.claim_deliveries("asm", claimer=station, limit=12, lease=600, window=3600)

        async with anyio.create_task_group() as tasks:
            for station, store in zip(stations, stores, strict=True):
                tasks.start_soon(claim, station, store)
        [(station, claimed)] = [(s, c) for s, c in claims.items() if c]
        results = await asm.deliver(claimed, DeliveryContext(stores[0], station, structlog.get_logger("test")))
        await asm.close()
    assert len(claimed) == 12 and {r.outcome for r in results.values()} == {Outcome.DONE}
    assert apple.api.posts == 1 and [sorted(a.serials) for a in apple.api.activities.values()] == [sorted(serials)]
