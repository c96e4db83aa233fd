"""`stationd run` as a real process against virtual iPads: SIGKILL mid-run, restart, SIGTERM; and the read commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import anyio
import pytest
from daemon_logs import log_lines
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from stationd.cli import app
from stationd.emulator import Emulator, Latency, generated_spec
from stationd.emulator.mdm_server import mdm_app
from stationd.httpserve import HTTPServer
from stationd.identity import create_identity

STATIOND = [sys.executable, "-m", "stationd.cli"]


def write_config(tmp: Path, emulator: Emulator, mdm_url: str, hook_url: str) -> Path:
    create_identity(tmp / "identity.pem", "Kill School")
    config = tmp / "stationd.toml"
    config.write_text(
        f"""
[station]
id = "station-k"
database = "{tmp / "stationd.db"}"
usbmuxd = "{emulator.usbmux_address}"
log_format = "json"
pair_records = "{tmp / "pairs"}"

[organization]
name = "Kill School"
identity = "{tmp / "identity.pem"}"

[wifi]
ssid = "KillNet"
password = "kill-password"

[enrollment]
mode = "url"
url = "{mdm_url}/enroll"

[activation]
url = "{emulator.activation_url}"

[timeouts]
erase_start = 30

[api]
listen = "127.0.0.1:0"

[plugins]
enabled = ["webhook", "leds"]

[plugins.webhook]
url = "{hook_url}"
events = ["device.done", "batch.done"]

[plugins.leds]
driver = "dry-run"
ports = {{ "Cart · 1" = {{ green = "cart:green:1", red = "cart:red:1" }} }}

[ports]
"0x{emulator.devices[next(iter(emulator.devices))].location_id:08x}" = "Cart · 1"
"""
    )
    config.chmod(0o600)
    return config


@pytest.mark.anyio
async def test_sigkill_mid_run_then_restart_finishes_without_erasing_twice(tmp_path: Path) -> None:
    specs = [generated_spec(i) for i in range(3)]
    mdm = HTTPServer(mdm_app("Kill School"))
    await mdm.start()
    posted: list[dict] = []

    async def hook(request: Request) -> Response:
        posted.append(json.loads(await request.body()))
        return Response("ok")

    webhook = HTTPServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
    await webhook.start()
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    try:
        async with Emulator(specs, socket_path=tmp_path / "mux", speed=0.02) as emulator:
            config = write_config(tmp_path, emulator, mdm.url, f"{webhook.url}/hook")
            command = STATIOND + ["run", "--config", str(config)]

            first = await anyio.open_process(command, env=env)
            with anyio.fail_after(60):
                async for entry in log_lines(first):
                    if entry.get("event") == "step.waiting":
                        first.kill()
                        break
            await first.wait()
            assert first.returncode == -signal.SIGKILL

            second = await anyio.open_process(command, env=env)
            done: set[str] = set()
            seen: list[dict] = []
            with anyio.fail_after(90):
                async for entry in log_lines(second):
                    seen.append(entry)
                    if entry.get("event") == "device.done":
                        done.add(entry["udid"])
                    if len(done) == len(specs):
                        break
            second.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await second.wait()
            assert second.returncode == 0
            assert any(e.get("event") == "job.interrupted_by_restart" for e in seen)
            assert any(e.get("event") == "leds.would_write" for e in seen)
            for spec in specs:
                state = emulator.devices[spec.udid].snapshot()
                assert state["erase_count"] == 1
                assert state["organization"] == "Kill School"
            for entry in seen:
                assert "kill-password" not in json.dumps(entry)

            export = await anyio.run_process(
                STATIOND + ["export", "--config", str(config), "--format", "json"], env=env
            )
            rows = json.loads(export.stdout)
            assert sorted(r["serial"] for r in rows) == sorted(s.serial for s in specs)
            assert {r["state"] for r in rows} == {"done"}
            status = await anyio.run_process(STATIOND + ["status", "--config", str(config)], env=env)
            assert "3 done" in status.stdout.decode()
            doctor = await anyio.run_process(STATIOND + ["doctor", "--config", str(config)], env=env)
            assert "usbmuxd: reachable" in doctor.stdout.decode()
            assert "identity: Kill School" in doctor.stdout.decode()
            assert sorted(p["udid"] for p in posted if p["kind"] == "device.done") == sorted(s.udid for s in specs)
            assert any(p["kind"] == "batch.done" and p["data"] == {"done": 3, "failed": 0} for p in posted)
    finally:
        await mdm.stop()
        await webhook.stop()


def test_run_with_malformed_config_says_what_is_wrong(tmp_path: Path) -> None:
    config = tmp_path / "stationd.toml"
    config.write_text('[organization]\nname = "X"\n[enrollment]\nmode = "sometimes"\n')
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "enrollment.mode" in result.output and "line 4" in result.output


def test_run_without_identity_says_how_to_make_one(tmp_path: Path) -> None:
    config = tmp_path / "stationd.toml"
    config.write_text(
        f'[organization]\nname = "X"\nidentity = "{tmp_path / "none.pem"}"\n[station]\ndatabase = "{tmp_path / "db"}"\n'
    )
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "stationd identity create" in result.output


def test_doctor_reports_unreachable_usbmuxd(tmp_path: Path) -> None:
    create_identity(tmp_path / "identity.pem", "X")
    config = tmp_path / "stationd.toml"
    config.write_text(
        f'[organization]\nname = "X"\nidentity = "{tmp_path / "identity.pem"}"\n'
        f'[station]\ndatabase = "{tmp_path / "db"}"\nusbmuxd = "{tmp_path / "no-such-socket"}"\n'
    )
    result = CliRunner().invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 1
    assert "FAIL  usbmuxd" in result.output and "install and start usbmuxd" in result.output
    assert "ok    identity" in result.output and "ok    database" in result.output


def test_demo_command_finishes_every_ipad(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--devices", "3", "--exit-when-done", "--speed", "0.001", "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "3 of 3 iPads done" in result.output


def test_run_with_the_dashboard_port_taken_says_what_to_change(tmp_path: Path) -> None:
    create_identity(tmp_path / "identity.pem", "X")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "stationd.toml"
        config.write_text(
            f'[organization]\nname = "X"\nidentity = "{tmp_path / "identity.pem"}"\n'
            f'[station]\ndatabase = "{tmp_path / "db"}"\nusbmuxd = "{tmp_path / "no-such-socket"}"\n'
            f'[api]\nlisten = "127.0.0.1:{port}"\n'
        )
        result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in result.output and "[api] listen" in result.output
    assert "Traceback" not in result.output


async def run_killing(command: list[str], env: dict[str, str], udids: set[str], kill_at: list[str]) -> list[str]:
    """Run `stationd run`, SIGKILL it the first time each step of `kill_at` starts (the erase: once it was sent),
    restart it, until every iPad is done or failed; return the steps it was killed at."""
    killed: list[str] = []
    finished: set[str] = set()
    with anyio.fail_after(180):
        while len(finished) < len(udids):
            process = await anyio.open_process(command, env=env)
            async for entry in log_lines(process):
                event, step = entry.get("event"), entry.get("step")
                if event in ("device.done", "step.failed") and entry.get("udid") in udids:
                    finished.add(entry["udid"])
                moment = "step.waiting" if step == "erase" else "step.started"
                if event == moment and step in kill_at and step not in killed:
                    killed.append(step)
                    process.kill()
                    break
                if len(finished) == len(udids):
                    process.send_signal(signal.SIGTERM)
                    break
            await process.wait()
    return killed


@pytest.mark.anyio
async def test_sigkill_at_every_step_under_every_erase_behaviour_ends_provisioned(tmp_path: Path) -> None:
    from stationd.emulator import Behaviour

    specs = [
        generated_spec(0, activated=False),
        generated_spec(1, behaviour=Behaviour(erase_reply="drop")),
        generated_spec(2, activated=False, behaviour=Behaviour(set_value="ignore")),
    ]
    mdm = HTTPServer(mdm_app("Kill School"))
    await mdm.start()
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    steps = ["identify", "erase", "activate", "supervise", "wifi", "enroll", "name", "report"]
    try:
        async with Emulator(specs, socket_path=tmp_path / "mux", speed=0.02) as emulator:
            config = write_config(tmp_path, emulator, mdm.url, f"{mdm.url}/no-hook")
            command = STATIOND + ["run", "--config", str(config)]
            killed = await run_killing(command, env, {s.udid for s in specs}, steps)
            assert killed == steps
            for spec in specs[:2]:
                state = emulator.devices[spec.udid].snapshot()
                assert state["erase_count"] == 1 and state["activation_state"] == "Activated"
                assert state["organization"] == "Kill School" and state["stored_profile"] is not None
                assert state["device_name"] == f"Kill School-{spec.serial}"
            ignoring = emulator.devices[specs[2].udid].snapshot()
            assert ignoring["erase_count"] == 1 and ignoring["device_name"] == "iPad"
            export = await anyio.run_process(
                STATIOND + ["export", "--config", str(config), "--format", "json"], env=env
            )
            states = {row["serial"]: (row["state"], row["error_code"]) for row in json.loads(export.stdout)}
            assert states[specs[2].serial] == ("failed", "name_not_applied")
            assert {states[s.serial] for s in specs[:2]} == {("done", None)}
    finally:
        await mdm.stop()


@pytest.mark.anyio
async def test_sigkill_between_the_erase_acknowledgement_and_going_down_erases_once(tmp_path: Path) -> None:
    # speed 0.02: the fresh iPad goes down 3 s after acknowledging, long after the station was killed.
    spec = generated_spec(0, activated=False, latency=Latency(erase=150.0))
    mdm = HTTPServer(mdm_app("Kill School"))
    await mdm.start()
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    try:
        async with Emulator([spec], socket_path=tmp_path / "mux", speed=0.02) as emulator:
            config = write_config(tmp_path, emulator, mdm.url, f"{mdm.url}/no-hook")
            command = STATIOND + ["run", "--config", str(config)]
            first = await anyio.open_process(command, env=env)
            with anyio.fail_after(60):
                async for entry in log_lines(first):
                    if entry.get("event") == "step.waiting":
                        assert emulator.devices[spec.udid].status == "erasing"
                        first.kill()
                        break
            await first.wait()
            assert await run_killing(command, env, {spec.udid}, []) == []
            state = emulator.devices[spec.udid].snapshot()
            assert state["erase_count"] == 1 and state["activation_state"] == "Activated"
            assert state["organization"] == "Kill School" and state["device_name"] == f"Kill School-{spec.serial}"
            assert [r["result"] for r in state["request_log"] if r["request"] == "EraseDevice"] == ["ok"]
    finally:
        await mdm.stop()
