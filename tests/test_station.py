"""The daemon against virtual iPads, through the real pymobiledevice3 client: the whole pipeline and its faults."""

from __future__ import annotations

import dataclasses
import hashlib
import plistlib
from pathlib import Path

import pytest
from rig import ORG, make_rig

from stationd.config import EnrollmentConfig, ProfilesConfig, StepsConfig
from stationd.emulator import DepAssignment, Fault, generated_spec
from stationd.export import device_rows, to_csv
from stationd.store import open_store


def assert_provisioned(rig, udid: str) -> None:
    state = rig.device(udid)
    assert state["erase_count"] == 1
    assert state["activation_state"] == "Activated"
    assert state["supervised"] and state["organization"] == ORG
    ours = hashlib.sha256(rig.identity.certificate_der).hexdigest()
    assert state["cloud_configuration"]["SupervisorHostCertificates"] == [ours]
    assert "com.apple.wifi.managed" in [t for types in state["profile_payload_types"].values() for t in types]
    assert "com.apple.mdm" in state["stored_profile"]["PayloadTypes"]
    assert state["device_name"] == f"{ORG}-{state['serial']}"


@pytest.mark.anyio
async def test_batch_goes_from_attach_to_done(tmp_path: Path) -> None:
    specs = [generated_spec(i, activated=i % 2 == 0) for i in range(6)]
    async with make_rig(tmp_path, specs) as rig:
        udids = [s.udid for s in specs]
        finals = await rig.run_until_settled(udids)
        assert {e.kind for e in finals.values()} == {"device.done"}
        for udid in udids:
            assert_provisioned(rig, udid)
        async with open_store(rig.config.station.database) as store:
            rows = await device_rows(store)
        csv = to_csv(rows)
        for spec in specs:
            assert spec.serial in csv
        assert {r["state"] for r in rows} == {"done"}
        assert all(r["model"] == "iPad13,18" and r["wifi_mac"] for r in rows)


STEP_REQUESTS = [
    "StartSession",
    "EraseDevice",
    "CreateTunnel1SessionInfoRequest",
    "SetCloudConfiguration",
    "InstallProfileSilent",
    "StoreProfile",
    "SetValue",
]


@pytest.mark.anyio
async def test_device_dropping_its_connection_once_per_step_still_finishes(tmp_path: Path) -> None:
    spec = generated_spec(0, faults=[Fault(r, "drop", 1) for r in STEP_REQUESTS])
    async with make_rig(tmp_path, [spec]) as rig:
        finals = await rig.run_until_settled([spec.udid])
        assert finals[spec.udid].kind == "device.done"
        assert_provisioned(rig, spec.udid)


@pytest.mark.anyio
@pytest.mark.parametrize("other_port", [False, True])
async def test_unplug_at_every_step_then_replug_resumes(tmp_path: Path, other_port: bool) -> None:
    spec = generated_spec(0)
    unplugged: list[str] = []
    async with make_rig(tmp_path, [spec]) as rig:

        def on_event(event) -> None:
            if event.kind == "step.started" and event.step not in unplugged:
                unplugged.append(event.step)
                rig.emulator.unplug(spec.udid)
                rig.emulator.plug(spec.udid, location_id=0x02120000 if other_port else None)

        finals = await rig.run_until_settled([spec.udid], on_event=on_event)
        assert finals[spec.udid].kind == "device.done"
        assert_provisioned(rig, spec.udid)
        assert {"erase", "activate", "supervise", "wifi", "enroll"} <= set(unplugged)
        if other_port:
            async with open_store(rig.config.station.database) as store:
                device = await store.get_device(spec.udid)
            assert device is not None and device.location_id == 0x02120000


@pytest.mark.anyio
async def test_failures_are_specific_and_do_not_disturb_the_others(tmp_path: Path) -> None:
    good = generated_spec(0)
    locked = generated_spec(1, activated=False, activation_locked=True)
    dep_elsewhere = generated_spec(2, dep=DepAssignment(organization="Other District"))
    async with make_rig(tmp_path, [good, locked, dep_elsewhere]) as rig:
        finals = await rig.run_until_settled([good.udid, locked.udid, dep_elsewhere.udid])
        assert finals[good.udid].kind == "device.done"
        assert_provisioned(rig, good.udid)
        assert finals[locked.udid].data["error_code"] == "activation_locked"
        assert "Find My" in finals[locked.udid].data["error_message"]
        assert finals[dep_elsewhere.udid].data["error_code"] == "dep_assigned_elsewhere"
        assert dep_elsewhere.serial in finals[dep_elsewhere.udid].data["error_message"]
        assert "Other District" in finals[dep_elsewhere.udid].data["error_message"]
        assert rig.device(locked.udid)["erase_count"] == 1


@pytest.mark.anyio
async def test_supervised_by_another_organisation_without_erase(tmp_path: Path) -> None:
    spec = generated_spec(0, supervised_by="Other School")
    async with make_rig(tmp_path, [spec]) as rig:
        steps = StepsConfig(erase=False)
        finals = await rig.run_until_settled([spec.udid], steps=steps)
        assert finals[spec.udid].data["error_code"] == "supervised_elsewhere"
        assert "Other School" in finals[spec.udid].data["error_message"]
        assert rig.device(spec.udid)["erase_count"] == 0


@pytest.mark.anyio
async def test_supervised_by_another_organisation_is_erased_then_done(tmp_path: Path) -> None:
    spec = generated_spec(0, supervised_by="Other School")
    async with make_rig(tmp_path, [spec]) as rig:
        finals = await rig.run_until_settled([spec.udid])
        assert finals[spec.udid].kind == "device.done"
        assert_provisioned(rig, spec.udid)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("/garbage", "enrollment_invalid", "text/html"),
        ("/missing", "enrollment_invalid", "404"),
        ("/no-mdm", "enrollment_invalid", "MDM payload"),
        ("/unavailable", "enrollment_unavailable", "503"),
    ],
)
async def test_bad_enrollment_url_fails_clearly(tmp_path: Path, path: str, code: str, words: str) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        enrollment = EnrollmentConfig(mode="url", url=rig.mdm_url + path)
        finals = await rig.run_until_settled([spec.udid], enrollment=enrollment)
        event = finals[spec.udid]
        assert event.kind == "step.failed" and event.step == "enroll"
        assert event.data["error_code"] == code
        assert words in event.data["error_message"]
        assert rig.device(spec.udid)["stored_profile"] is None
        assert rig.device(spec.udid)["erase_count"] == 1


@pytest.mark.anyio
async def test_malformed_extra_profile_fails_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "restrictions.mobileconfig"
    bad.write_bytes(plistlib.dumps({"PayloadType": "Configuration", "PayloadContent": []}))
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        finals = await rig.run_until_settled([spec.udid], profiles=ProfilesConfig(extra=(bad,)))
        event = finals[spec.udid]
        assert event.data["error_code"] == "configuration"
        assert "restrictions.mobileconfig" in event.data["error_message"]


@pytest.mark.anyio
async def test_dep_mode_installs_wifi_first_and_fetches_apple_configuration(tmp_path: Path) -> None:
    ours = generated_spec(0, dep=DepAssignment(organization=ORG))
    unassigned = generated_spec(1)
    async with make_rig(tmp_path, [ours, unassigned]) as rig:
        rig.emulator.devices[ours.udid].spec.dep.supervisor_certificates.append(rig.identity.certificate_der)
        enrollment = EnrollmentConfig(mode="dep")
        finals = await rig.run_until_settled([ours.udid, unassigned.udid], enrollment=enrollment)
        assert finals[ours.udid].kind == "device.done"
        state = rig.device(ours.udid)
        assert state["cloud_configuration"]["ConfigurationSource"] == 1
        assert state["organization"] == ORG
        assert finals[unassigned.udid].data["error_code"] == "dep_not_assigned"
        assert unassigned.serial in finals[unassigned.udid].data["error_message"]


@pytest.mark.anyio
async def test_done_device_replugged_is_not_touched_again(tmp_path: Path) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        await rig.run_until_settled([spec.udid])
        rig.emulator.unplug(spec.udid)
        rig.emulator.plug(spec.udid)
        async with rig.station() as station:
            assert await station.jobs.job_for(spec.udid) is None
        assert rig.device(spec.udid)["erase_count"] == 1


@pytest.mark.anyio
async def test_restart_resumes_without_erasing_twice(tmp_path: Path) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:

        def stop_during_activation(event) -> bool:
            return event.kind == "step.started" and event.step == "activate"

        assert await rig.run_until_settled([spec.udid], on_event=stop_during_activation) == {}
        finals = await rig.run_until_settled([spec.udid])
        assert finals[spec.udid].kind == "device.done"
        assert_provisioned(rig, spec.udid)
        async with open_store(rig.config.station.database) as store:
            kinds = [e.kind for e in await store.list_events(udid=spec.udid)]
        assert "job.interrupted" in kinds or "step.interrupted" in kinds


def test_plan_orders_steps_per_mode(tmp_path: Path) -> None:
    from stationd.config import Config, OrganizationConfig, WifiConfig
    from stationd.errors import ConfigurationError
    from stationd.pipeline.plan import plan

    base = Config(organization=OrganizationConfig(name="X"), wifi=WifiConfig(ssid="N", password="password1"))
    assert plan(dataclasses.replace(base, enrollment=EnrollmentConfig(mode="url", url="https://m/e"))) == [
        "identify",
        "erase",
        "activate",
        "supervise",
        "wifi",
        "enroll",
        "name",
        "report",
    ]
    assert plan(dataclasses.replace(base, enrollment=EnrollmentConfig(mode="dep"))) == [
        "identify",
        "erase",
        "activate",
        "wifi",
        "enroll",
        "name",
        "report",
    ]
    assert plan(dataclasses.replace(base, steps=StepsConfig(erase=False, activate=False))) == [
        "identify",
        "supervise",
        "wifi",
        "name",
        "report",
    ]
    with pytest.raises(ConfigurationError, match="wifi"):
        plan(dataclasses.replace(base, wifi=None, enrollment=EnrollmentConfig(mode="dep")))


@pytest.mark.anyio
async def test_ports_change_state_and_the_batch_is_announced_once(tmp_path: Path) -> None:
    specs = [generated_spec(0), generated_spec(1, activated=False, activation_locked=True)]
    async with make_rig(tmp_path, specs) as rig:
        seen: list = []

        def until_batch_done(event) -> bool:
            seen.append(event)
            return event.kind == "batch.done"

        await rig.run_until_settled(["only batch.done ends this run"], on_event=until_batch_done)
        changes = [(e.port_label, e.data["status"]) for e in seen if e.kind == "port.changed"]
        assert ("0x01110000", "busy") in changes and ("0x01120000", "busy") in changes
        assert ("0x01110000", "done") in changes and ("0x01120000", "failed") in changes
        assert [e.data for e in seen if e.kind == "batch.done"] == [{"done": 1, "failed": 1}]
        assert all(e.serial for e in seen if e.kind == "port.changed" and e.data["status"] in ("done", "failed"))


@pytest.mark.anyio
async def test_operator_retry_skip_and_forget(tmp_path: Path) -> None:
    locked = generated_spec(0, activated=False, activation_locked=True)
    async with make_rig(tmp_path, [locked]) as rig:
        async with rig.station() as station:
            with station.bus.subscribe() as events:
                async for event in events:
                    if event.kind == "step.failed":
                        break
                rig.emulator.devices[locked.udid].spec.activation_locked = False
                assert await station.retry(locked.udid)
                async for event in events:
                    if event.kind in ("device.done", "step.failed"):
                        break
                assert event.kind == "device.done"
                assert rig.device(locked.udid)["erase_count"] == 1

                assert not await station.skip(locked.udid, "wifi")
                with pytest.raises(ValueError, match="unknown step"):
                    await station.skip(locked.udid, "polish")
                assert await station.forget(locked.udid)
                assert await station.store.get_device(locked.udid) is None
                assert not await station.forget(locked.udid)
                assert not await station.retry("no-such-udid")


@pytest.mark.anyio
async def test_operator_skips_a_failed_step_and_the_device_finishes(tmp_path: Path) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        enrollment = EnrollmentConfig(mode="url", url=rig.mdm_url + "/missing")
        async with rig.station(enrollment=enrollment) as station:
            with station.bus.subscribe() as events:
                async for event in events:
                    if event.kind == "step.failed":
                        break
                assert event.step == "enroll"
                assert await station.skip(spec.udid, "enroll")
                async for event in events:
                    if event.kind in ("device.done", "step.failed"):
                        break
        assert event.kind == "device.done"
        assert rig.device(spec.udid)["stored_profile"] is None
        assert rig.device(spec.udid)["device_name"] == f"{ORG}-{spec.serial}"


@pytest.mark.anyio
async def test_a_device_that_hangs_while_pairing_is_timed_out_and_retried(tmp_path: Path) -> None:
    hanging = generated_spec(0, faults=[Fault("StartSession", "hang", 1), Fault("InstallProfileSilent", "hang", 1)])
    fine = generated_spec(1)
    async with make_rig(tmp_path, [hanging, fine]) as rig:
        timeouts = dataclasses.replace(rig.config.timeouts, identify=1, wifi=1)
        seen: list = []
        finals = await rig.run_until_settled([hanging.udid, fine.udid], on_event=seen.append, timeouts=timeouts)
        assert {e.kind for e in finals.values()} == {"device.done"}
        retried = [e for e in seen if e.kind == "step.retrying" and e.udid == hanging.udid]
        assert {e.step for e in retried} == {"identify", "wifi"}
        assert all(e.data["error_code"] == "timeout" for e in retried)
        assert not [e for e in seen if e.kind == "step.retrying" and e.udid == fine.udid]


@pytest.mark.anyio
async def test_a_replug_after_transient_failures_gets_a_fresh_retry_budget(tmp_path: Path) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        broken = EnrollmentConfig(mode="url", url=rig.mdm_url + "/unavailable")
        first = await rig.run_until_settled([spec.udid], enrollment=broken)
        assert first[spec.udid].data["error_code"] == "enrollment_unavailable"
        rig.emulator.unplug(spec.udid)
        rig.emulator.plug(spec.udid)
        seen: list = []
        second = await rig.run_until_settled([spec.udid], on_event=seen.append, enrollment=broken)
        assert second[spec.udid].data["error_code"] == "enrollment_unavailable"
        assert [e.data["try"] for e in seen if e.kind == "step.retrying"] == [1, 2, 3]
        assert rig.device(spec.udid)["erase_count"] == 1


@pytest.mark.anyio
async def test_a_held_ipad_shows_why_keeps_no_slot_and_goes_on_by_itself(tmp_path: Path, monkeypatch) -> None:
    from stationd.errors import Held
    from stationd.pipeline import steps

    held, other = generated_spec(0), generated_spec(1)
    release = {"now": False}
    activate = steps.STEP_FUNCTIONS["activate"]

    async def gated(ctx):
        if ctx.udid == held.udid and not release["now"]:
            raise Held("waiting for something outside the station", recheck=0.05)
        return await activate(ctx)

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "activate", gated)
    async with make_rig(tmp_path, [held, other]) as rig:
        seen: list = []

        def on_event(event) -> None:
            seen.append(event)
            if event.kind == "device.done" and event.udid == other.udid:
                release["now"] = True

        station_config = dataclasses.replace(rig.config.station, concurrency=1)
        finals = await rig.run_until_settled([held.udid, other.udid], on_event=on_event, station=station_config)
        assert {e.kind for e in finals.values()} == {"device.done"}, "the held iPad kept no slot from the other"
        ports = [(e.udid, e.data["status"]) for e in seen if e.kind == "port.changed"]
        assert (held.udid, "held") in ports
        holds = [e for e in seen if e.kind == "step.held"]
        assert holds and holds[0].data["error_code"] == "held" and "outside" in holds[0].data["error_message"]
        assert not [e for e in seen if e.kind == "step.retrying"], "a hold uses no retries"
        batches = [e.id for e in seen if e.kind == "batch.done"]
        last_held = max(e.id for e in seen if e.kind == "step.held")
        assert all(batch > last_held for batch in batches), "no cart is finished while a port is held"
