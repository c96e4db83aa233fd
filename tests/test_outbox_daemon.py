"""The outbox survives SIGKILL: `stationd run` killed with deliveries pending (an Apple activity in progress, an
endpoint refusing), restarted, delivers every report exactly once (the fakes count them by idempotency key)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from apple_fixture import fake_apple
from daemon_logs import log_lines
from fake_mdms import IdempotentEndpoint, serving

from stationd.emulator import Emulator, generated_spec
from stationd.emulator.mdm_server import mdm_app
from stationd.httpserve import HTTPServer
from stationd.identity import create_identity

STATIOND = [sys.executable, "-m", "stationd.cli"]
TOKEN = "outbox-token-31f0"
FAST = {"window": 0, "poll": 0.2, "gets_per_minute": 100_000}


@pytest.mark.anyio
async def test_sigkill_with_deliveries_pending_then_restart_delivers_each_exactly_once(tmp_path: Path) -> None:
    specs = [generated_spec(i, seed="outbox") for i in range(3)]
    endpoint = IdempotentEndpoint(TOKEN)
    endpoint.refusing = (503, "1")
    mdm = HTTPServer(mdm_app("Outbox School"))
    await mdm.start()
    env = dict(os.environ, HOME=str(tmp_path / "home"), STATIOND_TEST_TOKEN=TOKEN)
    try:
        async with (
            fake_apple(tmp_path, gets_per_minute=100_000) as apple,
            serving(endpoint.app(), endpoint.faults) as endpoint_url,
            Emulator(specs, socket_path=tmp_path / "mux", speed=0.02) as emulator,
        ):
            apple.api.add_devices([s.serial for s in specs])
            apple.api.hold = True  # the first activity stays in progress: a delivery pending at Apple
            create_identity(tmp_path / "identity.pem", "Outbox School")
            config = tmp_path / "stationd.toml"
            config.write_text(
                f"""
[station]
id = "station-o"
database = "{tmp_path / "stationd.db"}"
usbmuxd = "{emulator.usbmux_address}"
log_format = "json"
pair_records = "{tmp_path / "pairs"}"

[organization]
name = "Outbox School"
identity = "{tmp_path / "identity.pem"}"

[wifi]
ssid = "OutboxNet"
password = "outbox-password"

[enrollment]
mode = "url"
url = "{mdm.url}/enroll"

[activation]
url = "{emulator.activation_url}"

[api]
listen = ""

[plugins]
enabled = ["asm", "http"]

[plugins.asm]
{apple.toml(**FAST)}
[plugins.http]
url = "{endpoint_url}/ipads/{{serial}}"
headers = {{ Authorization = "Bearer {{env:STATIOND_TEST_TOKEN}}" }}
body = {{ serial = "{{serial}}", name = "{{name}}" }}
backoff = 0.2
"""
            )
            config.chmod(0o600)
            command = STATIOND + ["run", "--config", str(config)]

            first = await anyio.open_process(command, env=env)
            done: set[str] = set()
            with anyio.fail_after(90):
                async for entry in log_lines(first):
                    if entry.get("event") == "device.done":
                        done.add(entry["udid"])
                    refused = {key.split("/")[0] for key in endpoint.seen}
                    posted = apple.api.activities and all(a.reads for a in apple.api.activities.values())
                    if len(done) == len(specs) and refused == done and posted:
                        first.kill()
                        break
            await first.wait()
            assert first.returncode == -signal.SIGKILL
            (pending,) = apple.api.activities.values()
            assert not pending.done and endpoint.applied == {}

            apple.api.hold = False
            endpoint.refusing = None
            second = await anyio.open_process(command, env=env)
            reported: dict[str, set[str]] = {"asm": set(), "http": set()}
            seen = []
            with anyio.fail_after(60):
                async for entry in log_lines(second):
                    seen.append(entry)
                    if entry.get("event") == "report.done":
                        reported[entry["reporter"]].add(entry["udid"])
                    if all(len(udids) == len(specs) for udids in reported.values()):
                        break
            second.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await second.wait()
            assert second.returncode == 0
            assert any(e.get("event") == "report.resumed" for e in seen)

            udids = {s.udid for s in specs}
            assert {key.split("/")[0] for key in endpoint.applied} == udids
            assert set(endpoint.applied.values()) == {1} and all(
                key.split("/")[1] == "http" for key in endpoint.applied
            )
            assert apple.api.moves == {s.serial: 1 for s in specs}
            posted_serials = [serial for a in apple.api.activities.values() for serial in a.serials]
            assert sorted(posted_serials) == sorted(s.serial for s in specs), "each serial posted once, resumed after"
            assert pending.id in apple.api.activities and pending.done

            export = await anyio.run_process(
                STATIOND + ["export", "--config", str(config), "--format", "json"], env=env
            )
            rows = json.loads(export.stdout)
            assert {(r["reports"]["asm"]["status"], r["reports"]["http"]["status"]) for r in rows} == {("done", "done")}
            for entry in seen:
                assert TOKEN not in json.dumps(entry) and "PRIVATE KEY" not in json.dumps(entry)
    finally:
        await mdm.stop()
