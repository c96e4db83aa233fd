"""The generic HTTP reporter and the Jamf Pro and SimpleMDM presets against loopback fakes: auth, paths, bodies,
expired tokens, 429/503 with Retry-After, timeouts; and the settings refuse secrets written in the configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import structlog
from fake_mdms import FakeJamf, FakeSimpleMdm, IdempotentEndpoint, serving

from stationd.config import PluginsConfig
from stationd.files import write_private_file
from stationd.plugins import PluginConfigError, PluginHost
from stationd.reporting import DeliveryContext, Reporter
from stationd.store import Delivery, Outcome, Store, open_store

pytestmark = pytest.mark.anyio

JAMF_SECRET = "jamf-secret-5d1e"
SIMPLEMDM_KEY = "simplemdm-key-77aa"
TOKEN = "inventory-token-0c9b"


def reporter(name: str, settings: dict[str, Any]) -> Reporter:
    host = PluginHost(PluginsConfig(enabled=(name,), settings={name: settings}), "st")
    (found,) = host.reporters()
    assert found.name == name
    return found


async def deliveries(store: Store, reporter: str, devices: dict[str, str]) -> list[Delivery]:
    """Finished iPads (serial -> name) queued for `reporter` and claimed."""
    events = []
    for serial, name in devices.items():
        udid = f"UDID-{serial}"
        await store.upsert_device(udid, serial=serial)
        job = await store.claim_job(udid, "st")
        row = {"serial": serial, "udid": udid, "name": name, "ecid": 1234, "model": "iPad13,18"}
        events.append(
            await store.add_event("device.reported", station_id="st", udid=udid, job_id=job.id, data={"device": row})
        )
    await store.queue_reports(events, [reporter], reader="t", read_to=events[-1].seq, station_id="st")
    return await store.claim_deliveries(reporter, claimer="st", limit=100, lease=600)


def context(store: Store) -> DeliveryContext:
    return DeliveryContext(store, "st", structlog.get_logger("test"))


def secret_file(tmp: Path, name: str, value: str) -> Path:
    path = tmp / "secrets" / name
    write_private_file(path, (value + "\n").encode())
    return path


async def test_jamf_finds_the_ipad_by_serial_names_it_and_adds_it_to_a_static_group(tmp_path: Path) -> None:
    jamf = FakeJamf("client-1", JAMF_SECRET)
    device_id = jamf.enroll("JAMF01")
    secret = secret_file(tmp_path, "jamf.secret", JAMF_SECRET)
    async with serving(jamf.app(), jamf.faults) as url, open_store(tmp_path / "db") as store:
        jamf_reporter = reporter(
            "jamf", {"url": url, "client_id": "client-1", "client_secret": f"{{file:{secret}}}", "group_id": 12}
        )
        claimed = await deliveries(store, "jamf", {"JAMF01": "Lincoln-JAMF01", "LATER01": "Lincoln-LATER01"})
        with structlog.testing.capture_logs() as logs:
            results = await jamf_reporter.deliver(claimed, context(store))
            jamf.tokens.clear()  # every token expires: the next call is answered 401, and one new token is fetched
            jamf.faults.queued = [(503, "7")]
            retried = await jamf_reporter.deliver(claimed[:1], context(store))
            again = await jamf_reporter.deliver(claimed[:1], context(store))
        await jamf_reporter.close()
    done, later = (results[d.key] for d in claimed)
    assert done.outcome == Outcome.DONE and jamf.devices[device_id]["name"] == "Lincoln-JAMF01"
    assert jamf.groups == {12: ["JAMF01"]}
    assert later.outcome == Outcome.RETRY and "does not list iPad LATER01 yet" in (later.message or "")
    (first,) = retried.values()
    assert first.outcome == Outcome.RETRY and first.after == 7 and "HTTP 503" in (first.message or "")
    (second,) = again.values()
    assert second.outcome == Outcome.DONE
    assert jamf.issued == 2, "one token reused, and one more after the 401"
    assert jamf.calls[:3] == [
        ("GET", "/api/v2/mobile-devices/detail"),
        ("PATCH", f"/api/v2/mobile-devices/{device_id}"),
        ("PUT", "/JSSResource/mobiledevicegroups/id/12"),
    ]
    assert JAMF_SECRET not in repr(logs)


async def test_jamf_refuses_a_secret_written_in_the_configuration() -> None:
    with pytest.raises(PluginConfigError) as refused:
        reporter("jamf", {"url": "https://school.jamfcloud.com", "client_id": "c", "client_secret": JAMF_SECRET})
    assert refused.value.key == "plugins.jamf.client_secret" and "{env:JAMF_CLIENT_SECRET}" in refused.value.message
    assert JAMF_SECRET not in str(refused.value)
    os.environ.pop("STATIOND_TEST_UNSET", None)
    with pytest.raises(PluginConfigError) as unset:
        reporter("jamf", {"url": "https://a.example", "client_id": "c", "client_secret": "{env:STATIOND_TEST_UNSET}"})
    assert "STATIOND_TEST_UNSET is not set" in unset.value.message


async def test_simplemdm_renames_the_ipad_and_adds_it_to_an_assignment_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simple = FakeSimpleMdm(SIMPLEMDM_KEY)
    device_id = simple.enroll("SMDM01")
    monkeypatch.setenv("STATIOND_TEST_SIMPLEMDM", SIMPLEMDM_KEY)
    async with serving(simple.app(), simple.faults) as url, open_store(tmp_path / "db") as store:
        settings = {"url": url, "api_key": "{env:STATIOND_TEST_SIMPLEMDM}", "group_id": 7, "timeout": 0.5}
        simple_reporter = reporter("simplemdm", settings)
        claimed = await deliveries(store, "simplemdm", {"SMDM01": "Lincoln-SMDM01"})
        simple.faults.queued = [(429, "30"), "hang"]
        limited = await simple_reporter.deliver(claimed, context(store))
        timed_out = await simple_reporter.deliver(claimed, context(store))
        results = await simple_reporter.deliver(claimed, context(store))
        monkeypatch.setenv("STATIOND_TEST_SIMPLEMDM", "a-revoked-key")
        refused = await simple_reporter.deliver(claimed, context(store))
        await simple_reporter.close()
    (first,) = limited.values()
    assert first.outcome == Outcome.RETRY and first.after == 30 and "HTTP 429" in (first.message or "")
    (second,) = timed_out.values()
    assert second.outcome == Outcome.RETRY and "did not answer in time" in (second.message or "")
    (third,) = results.values()
    assert third.outcome == Outcome.DONE
    assert simple.devices[device_id]["device_name"] == "Lincoln-SMDM01" == simple.devices[device_id]["name"]
    assert simple.groups == {7: [device_id]}
    (fourth,) = refused.values()
    assert fourth.outcome == Outcome.FAILED and "check plugins.simplemdm.api_key" in (fourth.message or "")
    assert "api key is invalid" in (fourth.message or "") and "a-revoked-key" not in (fourth.message or "")


async def test_the_http_reporter_fills_its_template_and_sends_an_idempotency_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = IdempotentEndpoint(TOKEN)
    monkeypatch.setenv("STATIOND_TEST_TOKEN", TOKEN)
    async with serving(endpoint.app(), endpoint.faults) as url, open_store(tmp_path / "db") as store:
        http_reporter = reporter(
            "http",
            {
                "url": f"{url}/ipads/{{serial}}",
                "method": "PUT",
                "headers": {"Authorization": "Bearer {env:STATIOND_TEST_TOKEN}", "X-Station": "{station}"},
                "body": {"serial": "{serial}", "ecid": "{ecid}", "label": "{name} on cart 3", "tags": ["ipad"]},
                "timeout": 0.5,
            },
        )
        claimed = await deliveries(store, "http", {"HTTP01": "Lincoln-HTTP01"})
        endpoint.faults.queued = ["hang"]
        first = await http_reporter.deliver(claimed, context(store))
        second = await http_reporter.deliver(claimed, context(store))
        third = await http_reporter.deliver(claimed, context(store))
        await http_reporter.close()
    assert [r.outcome for r in (*first.values(), *second.values(), *third.values())] == [
        Outcome.RETRY,
        Outcome.DONE,
        Outcome.DONE,
    ]
    (key,) = endpoint.applied
    assert key == claimed[0].key and endpoint.seen == [key, key, key] and endpoint.applied == {key: 1}
    assert endpoint.bodies[key] == {
        "serial": "HTTP01",
        "ecid": 1234,
        "label": "Lincoln-HTTP01 on cart 3",
        "tags": ["ipad"],
    }


def test_the_http_reporter_refuses_literal_secrets_and_unknown_fields() -> None:
    with pytest.raises(PluginConfigError) as literal:
        reporter("http", {"url": "https://inv.example/x", "headers": {"Authorization": "Bearer abc123"}})
    assert literal.value.key == "plugins.http.headers.Authorization" and "{env:" in literal.value.message
    with pytest.raises(PluginConfigError) as unknown:
        reporter("http", {"url": "https://inv.example/{serail}"})
    assert "unknown field {serail}" in unknown.value.message
    with pytest.raises(PluginConfigError) as loose:
        reporter("http", {"url": "https://inv.example/x", "headers": {"X-Api-Key": "{file:/etc/passwd}"}})
    assert "chmod 600 /etc/passwd" in loose.value.message
