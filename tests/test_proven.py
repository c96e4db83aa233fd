"""Done means done: every step is verified from the iPad's own state, under every way a real iPad may behave.

Where Apple documents nothing, the emulator plays each plausible iPad (`Behaviour`, latencies, busy replies), and
each of them is interrupted at every step: unplugged and plugged back, or a reply lost after the request took
effect. Every iPad must end done and provisioned as its own state shows it, or in a specific named error: never
done while something is missing. SIGKILL at every step is in test_daemon_cli.py, with real processes.
"""

from __future__ import annotations

import dataclasses
import plistlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from rig import ORG, make_rig, provisioning_problems
from test_emulator_services import make_ipa

from stationd.config import AppsConfig, EnrollmentConfig, ProfilesConfig, TimeoutsConfig
from stationd.emulator import Behaviour, DepAssignment, Fault, Latency, generated_spec
from stationd.pipeline import steps

EXTRA = "org.example.restrictions"
READER = ("org.example.reader", "2.1")  # what make_ipa() holds
OTHER = "Other District"
# The requests each step makes of the iPad; a lost reply on each (the request takes effect, the answer is lost).
LOST_REPLIES = [
    Fault("Pair", "drop_reply", 1),
    Fault("EraseDevice", "drop_reply", 1),
    Fault("HandleActivationInfoWithSessionRequest", "drop_reply", 1),
    Fault("SetCloudConfiguration", "drop_reply", 1),
    Fault("InstallProfile", "drop_reply", 1),
    Fault("InstallProfileSilent", "drop_reply", 1),
    Fault("InstallProfileSilent", "drop_reply", 2),
    Fault("DownloadAndApplyCloudConfiguration", "drop_reply", 1),
    Fault("StoreProfile", "drop_reply", 1),
    Fault("SetValue", "drop_reply", 1),
    Fault("Install", "drop_reply", 1),
]
BUSY = [
    Fault("GetCloudConfiguration", "error", 1),
    Fault("GetProfileList", "error", 1),
    Fault("GetStoredProfile", "error", 1),
    Fault("StartService", "error", 3),
]
INTERRUPTIONS = ("none", "unplug", "lost_reply")
URL_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "fresh": {"activated": False},
    "slow_to_go_down": {"activated": False, "latency": Latency(erase=10.0)},
    "instantly_down": {"latency": Latency(erase=0.0)},
    "erase_reply_lost": {"behaviour": Behaviour(erase_reply="drop")},
    "busy": {"faults": BUSY},
    "ignores_names": {"behaviour": Behaviour(set_value="ignore")},
    "ignores_installs": {"behaviour": Behaviour(app_install="ignore")},
    "dep_ours_at_activation": {"activated": False, "dep": "ours", "behaviour": Behaviour(dep_source=0)},
    "dep_elsewhere_at_activation": {"dep": "elsewhere"},
    "dep_elsewhere_on_request": {"dep": "elsewhere", "behaviour": Behaviour(dep_fetch="request")},
}
URL_ALLOWED_FAILURES = {
    "ignores_names": {"name_not_applied"},
    "ignores_installs": {"app_not_installed"},
    "dep_elsewhere_at_activation": {"dep_assigned_elsewhere"},
}
DEP_VARIANTS: dict[str, dict[str, Any]] = {
    "ours_activation_accept_1": {"dep": "ours", "behaviour": Behaviour("ack", "activation", "accept", "error", 1)},
    "ours_activation_14002_0": {"dep": "ours", "behaviour": Behaviour("ack", "activation", "error", "error", 0)},
    "ours_request_accept_0": {"dep": "ours", "behaviour": Behaviour("ack", "request", "accept", "error", 0)},
    "ours_request_14002_1": {"dep": "ours", "behaviour": Behaviour("drop", "request", "error", "error", 1)},
    "elsewhere_activation": {"dep": "elsewhere", "behaviour": Behaviour(dep_fetch="activation", dep_source=0)},
    "elsewhere_request": {"dep": "elsewhere", "behaviour": Behaviour(dep_fetch="request", dep_present="error")},
    "unassigned_33001": {"behaviour": Behaviour(dep_unassigned="error")},
    "unassigned_silent": {"behaviour": Behaviour(dep_unassigned="silent", dep_fetch="request")},
}


def extra_profile(tmp: Path) -> Path:
    path = tmp / "restrictions.mobileconfig"
    path.write_bytes(
        plistlib.dumps(
            {
                "PayloadType": "Configuration",
                "PayloadIdentifier": EXTRA,
                "PayloadUUID": str(uuid.uuid4()).upper(),
                "PayloadVersion": 1,
                "PayloadDisplayName": "Restrictions",
                "PayloadContent": [
                    {
                        "PayloadType": "com.apple.applicationaccess",
                        "PayloadIdentifier": EXTRA + ".r",
                        "PayloadUUID": str(uuid.uuid4()).upper(),
                        "PayloadVersion": 1,
                        "allowCamera": False,
                    }
                ],
            }
        )
    )
    return path


def matrix_specs(variants: dict[str, dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """(variant, interruption, spec) for every variant × interruption, one virtual iPad each."""
    made = []
    for name, fields in variants.items():
        for interruption in INTERRUPTIONS:
            index = len(made)
            values = {k: v for k, v in fields.items() if k != "dep"}
            values["faults"] = list(values.get("faults", [])) + (LOST_REPLIES if interruption == "lost_reply" else [])
            if "latency" in values:
                values["latency"] = dataclasses.replace(values["latency"])
            spec = generated_spec(index, seed="proven", **values)
            if fields.get("dep") == "elsewhere":
                spec.dep = DepAssignment(OTHER)
            elif fields.get("dep") == "ours":
                spec.dep = DepAssignment(ORG)
            made.append((name, interruption, spec))
    return made


async def run_matrix(tmp: Path, variants: dict[str, dict[str, Any]], mode: str = "url") -> tuple[list, dict]:
    made = matrix_specs(variants)
    specs = [spec for _, _, spec in made]
    unplugging = {spec.udid for _, interruption, spec in made if interruption == "unplug"}
    unplugged: set[tuple[str, str]] = set()
    async with make_rig(tmp, specs) as rig:
        for spec in specs:
            if spec.dep is not None and spec.dep.organization == ORG:
                rig.emulator.devices[spec.udid].spec.dep.supervisor_certificates.append(rig.identity.certificate_der)

        def on_event(event: Any) -> None:
            if event.kind == "step.started" and event.udid in unplugging and (event.udid, event.step) not in unplugged:
                unplugged.add((event.udid, event.step))
                rig.emulator.unplug(event.udid)
                rig.emulator.plug(event.udid)

        (tmp / "Reader.ipa").write_bytes(make_ipa())
        sections: dict[str, Any] = {
            "profiles": ProfilesConfig(extra=(extra_profile(tmp),)),
            "apps": AppsConfig(install=(tmp / "Reader.ipa",)),
            "steps": dataclasses.replace(rig.config.steps, min_battery=30),  # the iPads hold 80 %: a charge step
        }
        if mode == "dep":
            sections["enrollment"] = EnrollmentConfig(mode="dep")
        finals = await rig.run_until_settled([spec.udid for spec in specs], on_event=on_event, timeout=240, **sections)
        states = {spec.udid: rig.device(spec.udid) for spec in specs}
        problems = {spec.udid: provisioning_problems(rig, spec.udid, mode=mode, extra=(EXTRA,)) for spec in specs}
    steps_unplugged = {step for _, step in unplugged}
    return made, {"finals": finals, "states": states, "problems": problems, "unplugged": steps_unplugged}


@pytest.mark.anyio
async def test_url_mode_every_variant_interrupted_at_every_step_ends_provisioned_or_named(tmp_path: Path) -> None:
    made, seen = await run_matrix(tmp_path, URL_VARIANTS)
    steps = {"identify", "charge", "erase", "activate", "supervise", "wifi", "profiles", "apps", "enroll", "name"}
    assert steps | {"report"} <= seen["unplugged"]
    for variant, interruption, spec in made:
        final, state = seen["finals"][spec.udid], seen["states"][spec.udid]
        where = f"{variant}/{interruption}"
        assert state["erase_count"] == 1, where
        if final.kind == "device.done":
            assert seen["problems"][spec.udid] == [], where
            assert READER in [(a["bundle_id"], a["version"]) for a in state["apps"]], where
        else:
            assert final.data["error_code"] in URL_ALLOWED_FAILURES.get(variant, set()), (where, final.data)
        if variant in URL_ALLOWED_FAILURES:
            assert final.kind == "step.failed", f"{where}: done, but the iPad cannot be what the station says"
        if variant == "dep_elsewhere_at_activation":
            assert OTHER in final.data["error_message"] and "erase it" not in final.data["error_message"].lower()


@pytest.mark.anyio
async def test_dep_mode_every_variant_interrupted_at_every_step_is_judged_by_what_the_ipad_holds(
    tmp_path: Path,
) -> None:
    made, seen = await run_matrix(tmp_path, DEP_VARIANTS, mode="dep")
    for variant, interruption, spec in made:
        final = seen["finals"][spec.udid]
        where = f"{variant}/{interruption}"
        assert seen["states"][spec.udid]["erase_count"] == 1, where
        if variant.startswith("ours"):
            assert final.kind == "device.done", (where, final.data)
            assert seen["problems"][spec.udid] == [], where
        elif variant.startswith("elsewhere"):
            assert final.data["error_code"] == "dep_assigned_elsewhere", (where, final.data)
            message = final.data["error_message"]
            assert OTHER in message and f"release serial {spec.serial}" in message, where
            assert "erase it" not in message.lower(), where
        else:
            assert final.data["error_code"] == "dep_not_assigned", (where, final.data)
            assert spec.serial in final.data["error_message"] and OTHER not in final.data["error_message"], where


@pytest.mark.anyio
@pytest.mark.parametrize("activated", [False, True])
async def test_interrupted_between_acknowledging_the_erase_and_going_down_is_erased_once(
    tmp_path: Path,
    activated: bool,
) -> None:
    # The emulator's speed is 0.0005: 2000 s of ack-to-detach are 1 s here, well inside erase_start.
    spec = generated_spec(0, activated=activated, latency=Latency(erase=2000.0))
    async with make_rig(tmp_path, [spec]) as rig:
        interrupted: list[str] = []

        def on_event(event: Any) -> None:
            if event.kind == "step.progress" and event.step == "erase" and event.data.get("sent") and not interrupted:
                interrupted.append(rig.device(spec.udid)["status"])
                rig.emulator.unplug(spec.udid)
                rig.emulator.plug(spec.udid)

        timeouts = TimeoutsConfig(retries=3, erase_start=3.0)
        finals = await rig.run_until_settled([spec.udid], on_event=on_event, timeouts=timeouts)
        assert interrupted == ["erasing"], "unplugged while the iPad had acknowledged and not yet gone down"
        assert finals[spec.udid].kind == "device.done"
        assert provisioning_problems(rig, spec.udid) == []
        assert [r["result"] for r in rig.device(spec.udid)["request_log"] if r["request"] == "EraseDevice"] == ["ok"]


@pytest.mark.anyio
async def test_an_ipad_that_acknowledges_and_never_erases_is_asked_again_then_failed(tmp_path: Path) -> None:
    spec = generated_spec(0, activated=False, faults=[Fault("EraseDevice", "drop", 0)])
    async with make_rig(tmp_path, [spec]) as rig:
        timeouts = TimeoutsConfig(retries=2, erase_start=0.2)
        finals = await rig.run_until_settled([spec.udid], timeouts=timeouts)
        final = finals[spec.udid]
        assert final.data["error_code"] == "erase_not_started" and final.step == "erase"
        assert "by hand" in final.data["error_message"]
        state = rig.device(spec.udid)
        assert state["erase_count"] == 0 and state["activation_state"] == "Unactivated"
        assert [r["request"] for r in state["request_log"]].count("EraseDevice") == 3


@pytest.mark.anyio
async def test_a_step_that_raises_unexpectedly_fails_that_ipad_alone(tmp_path: Path, monkeypatch) -> None:
    broken, fine = generated_spec(0), generated_spec(1)
    supervise = steps.STEP_FUNCTIONS["supervise"]

    async def buggy(ctx: Any) -> Any:
        if ctx.udid == broken.udid:
            raise KeyError("OrganizationMagic")
        return await supervise(ctx)

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "supervise", buggy)
    async with make_rig(tmp_path, [broken, fine]) as rig:
        finals = await rig.run_until_settled([broken.udid, fine.udid])
        assert finals[fine.udid].kind == "device.done"
        assert provisioning_problems(rig, fine.udid) == []
        failed = finals[broken.udid]
        assert failed.kind == "step.failed" and failed.step == "supervise"
        assert failed.data["error_code"] == "internal_error"
        message = failed.data["error_message"]
        assert "supervise" in message and "KeyError" in message and "log" in message
        assert "OrganizationMagic" not in message and "Traceback" not in message

        monkeypatch.setitem(steps.STEP_FUNCTIONS, "supervise", supervise)
        rig.emulator.unplug(broken.udid)
        rig.emulator.plug(broken.udid)
        again = await rig.run_until_settled([broken.udid])
        assert again[broken.udid].kind == "device.done"
        assert provisioning_problems(rig, broken.udid) == []


@pytest.mark.anyio
async def test_busy_replies_are_retried_and_an_unknown_refusal_is_retried_once(tmp_path: Path) -> None:
    busy = generated_spec(0, faults=BUSY)
    stubborn = generated_spec(1, faults=[Fault("GetProfileList", "error", 0)])
    async with make_rig(tmp_path, [busy, stubborn]) as rig:
        seen: list = []
        finals = await rig.run_until_settled([busy.udid, stubborn.udid], on_event=seen.append)
        assert finals[busy.udid].kind == "device.done" and provisioning_problems(rig, busy.udid) == []
        codes = {e.data["error_code"] for e in seen if e.kind == "step.retrying" and e.udid == busy.udid}
        assert codes == {"device_busy", "device_refused"}
        failed = finals[stubborn.udid]
        assert failed.data["error_code"] == "device_refused" and failed.step == "wifi"
        assert "MCInstallationErrorDomain error 1" in failed.data["error_message"]
        assert "tried 2 times" in failed.data["error_message"]
        assert [e.data["try"] for e in seen if e.kind == "step.retrying" and e.udid == stubborn.udid] == [1]


@pytest.mark.anyio
async def test_dep_assigned_elsewhere_is_erased_again_once_released(tmp_path: Path) -> None:
    spec = generated_spec(0, dep=DepAssignment(OTHER))
    async with make_rig(tmp_path, [spec]) as rig:
        dep = EnrollmentConfig(mode="dep")
        first = await rig.run_until_settled([spec.udid], enrollment=dep)
        assert first[spec.udid].data["error_code"] == "dep_assigned_elsewhere"
        rig.emulator.devices[spec.udid].spec.dep = DepAssignment(
            ORG, supervisor_certificates=[rig.identity.certificate_der]
        )
        rig.emulator.unplug(spec.udid)
        rig.emulator.plug(spec.udid)
        second = await rig.run_until_settled([spec.udid], enrollment=dep)
        assert second[spec.udid].kind == "device.done"
        assert rig.device(spec.udid)["erase_count"] == 2, "a new job: erased again to fetch the new assignment"
        assert provisioning_problems(rig, spec.udid, mode="dep") == ["erased 2 times"]
