"""The apps step: `[apps] install` puts custom and in-house .ipa files on every iPad, verified by Browse; an .ipa an
iPad could never take is refused at check-config with its path."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
from rig import make_rig
from test_emulator_services import make_ipa, zipped
from typer.testing import CliRunner

from stationd.cli import app
from stationd.config import AppsConfig, Config, OrganizationConfig, StepsConfig
from stationd.emulator import generated_spec
from stationd.emulator.apps import App
from stationd.identity import create_identity
from stationd.pipeline.plan import plan
from stationd.store import open_store


def installs(rig, udid: str) -> list[str]:
    log = rig.emulator.devices[udid].request_log
    return [e["result"] for e in log if e["channel"] == "installation_proxy" and e["request"] == "Install"]


@pytest.mark.anyio
async def test_apps_are_installed_verified_and_kept_in_the_record(tmp_path: Path) -> None:
    (tmp_path / "Reader.ipa").write_bytes(make_ipa())
    (tmp_path / "Quiz.ipa").write_bytes(make_ipa("org.example.quiz", version="1.4", build="14"))
    fresh, kept = generated_spec(0), generated_spec(1, apps=[App("org.example.reader", "Reader", "2.1", "210")])
    apps = AppsConfig(install=(tmp_path / "Reader.ipa", tmp_path / "Quiz.ipa"))
    async with make_rig(tmp_path, [fresh, kept]) as rig:
        rig.emulator.unplug(kept.udid)
        finals = await rig.run_until_settled([fresh.udid], apps=apps)
        assert finals[fresh.udid].kind == "device.done"
        # Without an erase, an iPad that has the very version already is not sent it again.
        no_erase = dataclasses.replace(rig.config.steps, erase=False)
        rig.emulator.plug(kept.udid)
        finals = await rig.run_until_settled([kept.udid], apps=apps, steps=no_erase)
        assert finals[kept.udid].kind == "device.done"
        listed = {
            udid: {a["bundle_id"]: a["version"] for a in rig.device(udid)["apps"] if a["type"] == "User"}
            for udid in (fresh.udid, kept.udid)
        }
        sent = {udid: installs(rig, udid) for udid in (fresh.udid, kept.udid)}
        async with open_store(rig.config.station.database) as store:
            device = await store.get_device(fresh.udid)
            job = (await store.jobs_for(fresh.udid))[-1]

    expected = {"org.example.reader": "2.1", "org.example.quiz": "1.4"}
    assert listed == {fresh.udid: expected, kept.udid: expected}
    assert sent == {fresh.udid: ["ok", "ok"], kept.udid: ["ok"]}, "only what the iPad lacks is sent"
    assert job.step_data["apps"]["installed"] == [
        {"bundle_id": "org.example.reader", "version": "2.1", "build": "210"},
        {"bundle_id": "org.example.quiz", "version": "1.4", "build": "14"},
    ]
    assert device is not None
    assert {a["bundle_id"]: a["version"] for a in device.facts["apps"]} == expected, "the report reads them back"


@pytest.mark.anyio
async def test_an_app_the_ipad_refuses_fails_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "Future.ipa").write_bytes(make_ipa(MinimumOSVersion="99.0"))
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        finals = await rig.run_until_settled([spec.udid], apps=AppsConfig(install=(tmp_path / "Future.ipa",)))
        files = rig.device(spec.udid)["files"]["files"]
    failed = finals[spec.udid]
    assert failed.kind == "step.failed" and failed.step == "apps" and failed.data["error_code"] == "app_rejected"
    assert "Future.ipa" in failed.data["error_message"] and "iPadOS 99.0" in failed.data["error_message"]
    assert files == {}, "the staged package is removed from PublicStaging"


def test_check_config_refuses_an_ipa_no_ipad_can_take_and_names_it(tmp_path: Path) -> None:
    create_identity(tmp_path / "identity.pem", "Example School")
    bad = {
        "notes.ipa": b"this is a text file",
        "empty.ipa": zipped({"Payload/Reader.app/Reader": b"\xcf\xfa\xed\xfe"}),
        "mac.ipa": make_ipa(CFBundleSupportedPlatforms=["MacOSX"]),
        "tv.ipa": make_ipa(UIDeviceFamily=[3]),
        "nameless.ipa": make_ipa(CFBundleIdentifier=None),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "store.ipa").write_bytes(
        zipped(
            {
                "Payload/Reader.app/Info.plist": zipfile.ZipFile(io.BytesIO(make_ipa())).read(
                    "Payload/Reader.app/Info.plist"
                ),
                "iTunesMetadata.plist": b"<plist/>",
            }
        )
    )
    (tmp_path / "good.ipa").write_bytes(make_ipa())
    listed = ", ".join(f'"{name}"' for name in [*bad, "store.ipa", "good.ipa", "absent.ipa"])
    config = tmp_path / "stationd.toml"
    config.write_text(f'[organization]\nname = "Example School"\n\n[apps]\ninstall = [{listed}]\n')
    config.chmod(0o600)
    result = CliRunner().invoke(app, ["check-config", "--config", str(config)])
    lines = result.output.splitlines()
    assert result.exit_code == 1
    errors = [line for line in lines if line.startswith("error: apps.install:")]
    assert len(errors) == 6
    for name, why in [
        ("notes.ipa", "not a ZIP archive"),
        ("empty.ipa", "no Payload/<Name>.app/Info.plist"),
        ("mac.ipa", "built for MacOSX, not for iPad"),
        ("tv.ipa", "devices 3 (UIDeviceFamily)"),
        ("nameless.ipa", "no CFBundleIdentifier"),
        ("absent.ipa", "cannot read"),
    ]:
        assert any(str(tmp_path / name) in line and why in line for line in errors), (name, errors)
    warnings = [line for line in lines if line.startswith("warning: apps.install:")]
    assert len(warnings) == 1 and "store.ipa" in warnings[0] and "Apps and Books" in warnings[0]
    assert not any("good.ipa" in line for line in lines)


def test_apps_step_is_planned_only_when_apps_are_listed(tmp_path: Path) -> None:
    base = Config(organization=OrganizationConfig(name="School"), steps=StepsConfig())
    assert "apps" not in plan(base)
    with_apps = dataclasses.replace(base, apps=AppsConfig(install=(tmp_path / "a.ipa",)))
    assert plan(with_apps)[-3:] == ["apps", "name", "report"]
