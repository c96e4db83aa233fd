"""A fleet of three `stationd run` processes, each with its own emulator, sharing one PostgreSQL database and
advertising over Bonjour on loopback only (plus a fourth station of another fleet).

One run covers the fleet's promises, each checked on the emulators (the iPads' own state) and in the trail:
- a 30-serial work list is done across the three stations, every name unique, `stationd queue export` listing
  every serial once;
- an iPad unplugged from station 1 mid-pipeline and plugged into station 2's hub resumes there, not erased again;
- station 3 killed with SIGKILL mid-erase: its iPads, carried to the other hubs, resume there once its lease
  expires, each erased exactly once; restarted, station 3 goes on;
- a blueprint pushed from station 1 is used by stations 2 and 3 for the next iPads (their Wi-Fi and enrollment
  profiles say so), not by the iPad that was in progress when it was pushed;
- PostgreSQL restarted mid-run: nothing lost, nothing applied twice (the trail against the emulators' requests);
- `stationd fleet` lists the other stations within 5 s of their start, not the other fleet's, and drops station 3
  once it is gone; a peer request without the fleet's secret is refused;
- the asm reporter of every station shares one outbox: the whole work list, finished at three stations, goes to
  Apple School Manager in one activity (its window gathers all 30), each serial moved once.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from apple_fixture import fake_apple
from daemon_logs import log_lines
from pgcluster import Cluster

from stationd.emulator import Emulator, generated_spec
from stationd.emulator.ipad import Fault, location_for, profile_identifier
from stationd.emulator.mdm_server import enrollment_profile, mdm_app
from stationd.httpserve import HTTPServer
from stationd.identity import create_identity
from stationd.profiles import wifi_profile
from stationd.store import open_store

pytestmark = pytest.mark.anyio

STATIOND = [sys.executable, "-m", "stationd.cli"]
ORG = "Fleet School"
SPEED = 0.1
PER_STATION = 10
LATE = 2  # iPads per emulator plugged in only once the second blueprint is taken
SECRET = "fleet-secret-0123456789abcdef"


class Board:
    """Set each time any station logs a line."""

    def __init__(self) -> None:
        self.changed = anyio.Event()

    def touch(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class Daemon:
    """A `stationd run` process and the JSON log lines it wrote so far."""

    def __init__(self, name: str, process: Process, board: Board) -> None:
        self.name = name
        self.process = process
        self.board = board
        self.entries: list[dict[str, Any]] = []
        self.changed = anyio.Event()

    async def read(self) -> None:
        async for entry in log_lines(self.process):
            self.entries.append(entry)
            self.changed.set()
            self.changed = anyio.Event()
            self.board.touch()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        seen = 0
        with anyio.move_on_after(timeout) as waiting:
            while True:
                changed = self.changed
                for entry in self.entries[seen:]:
                    if predicate(entry):
                        return entry
                seen = len(self.entries)
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited: {self.entries[-5:]}")
                await changed.wait()
        assert not waiting.cancelled_caught, f"{self.name} did not log it in {timeout} s; last: {self.entries[-8:]}"
        raise AssertionError("unreachable")


def station_config(
    tmp: Path,
    index: int,
    emulator: Emulator,
    mdm_url: str,
    pg_url: str,
    *,
    ssid: str,
    asm: str,
    file: str = "stationd.toml",
) -> Path:
    folder = tmp / f"station-{index}"
    folder.mkdir(exist_ok=True)
    config = folder / file
    config.write_text(
        f"""
[station]
id = "station-{index}"
database = "{folder / "stationd.db"}"
usbmuxd = "{emulator.usbmux_address}"
log_format = "json"
concurrency = 16
pair_records = "{folder / "pairs"}"

[organization]
name = "{ORG}"
identity = "{tmp / "identity.pem"}"

[wifi]
ssid = "{ssid}"
password = "fleet-wifi-password"

[enrollment]
mode = "url"
url = "{mdm_url}/enroll"

[activation]
url = "{emulator.activation_url}"

[naming]
pattern = "{{org}}-{{n:03d}}"

[timeouts]
erase_start = 30

[api]
listen = "127.0.0.1:0"

[store]
url = "{pg_url}"
lease = 2
poll = 0.3
timeout = 2
journal = "{folder / "journal.db"}"

[fleet]
name = "district"
interfaces = ["127.0.0.1"]
secret_file = "{tmp / "fleet.secret"}"
blueprint = "fleet"
heartbeat = 0.3

[queue]
unknown = "hold"

[plugins]
enabled = ["asm"]

[plugins.asm]
{asm}"""
    )
    config.chmod(0o600)
    return config


def other_fleet_config(tmp: Path, emulator: Emulator) -> Path:
    folder = tmp / "elsewhere"
    folder.mkdir()
    config = folder / "stationd.toml"
    config.write_text(
        f"""
[station]
id = "elsewhere-1"
database = "{folder / "stationd.db"}"
usbmuxd = "{emulator.usbmux_address}"
log_format = "json"
[organization]
name = "Other School"
identity = "{tmp / "identity.pem"}"
[api]
listen = "127.0.0.1:0"
[fleet]
name = "warehouse"
interfaces = ["127.0.0.1"]
heartbeat = 0.3
"""
    )
    return config


async def cli(env: dict[str, str], *args: str) -> str:
    result = await anyio.run_process([*STATIOND, *args], env=env, check=False)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return result.stdout.decode()


async def fleet_listing(env: dict[str, str], config: Path, browse: float) -> dict[str, dict[str, Any]]:
    rows = json.loads(await cli(env, "fleet", "--json", "--browse", str(browse), "--config", str(config)))
    return {row["id"]: row for row in rows}


def stuck(udids: set[str], daemons: tuple[Daemon, ...]) -> str:
    """What each unfinished iPad's last log lines say, at every station: for a failure's message."""
    keys = ("event", "step", "reason", "error_code", "error", "level")
    lines = []
    for udid in sorted(udids):
        lines.append(f"{udid} is not done:")
        for daemon in daemons:
            for entry in [e for e in daemon.entries if e.get("udid") == udid][-6:]:
                lines.append(f"  {daemon.name}: " + ", ".join(f"{k}={entry[k]}" for k in keys if k in entry))
    return "\n".join(lines)


def wifi_id(ssid: str) -> str:
    return profile_identifier(wifi_profile(ssid, "WPA2", "fleet-wifi-password", True, False))


def enrollment_sha(mdm_url: str) -> str:
    return hashlib.sha256(enrollment_profile(ORG, mdm_url)).hexdigest()


@pytest.mark.timeout(300)  # four daemons and three emulators on two shared cores: about 30 s alone
async def test_three_stations_share_one_work_queue(tmp_path: Path, postgres: Cluster) -> None:
    pg_url = postgres.create_database()
    create_identity(tmp_path / "identity.pem", ORG)
    (tmp_path / "fleet.secret").write_text(SECRET + "\n")
    (tmp_path / "fleet.secret").chmod(0o600)
    specs = [generated_spec(index) for index in range(3 * PER_STATION)]
    # The iPad carried from station 1 to station 2: its first activation hangs, so it is surely mid-pipeline (after
    # its erase, before its Wi-Fi) when it is unplugged, whatever the machine's load.
    specs[0].faults = [Fault("CreateTunnel1SessionInfoRequest", "hang", 1)]
    groups = [specs[i * PER_STATION : (i + 1) * PER_STATION] for i in range(3)]
    late = {spec.udid for group in groups for spec in group[-LATE:]}
    mdm_one, mdm_two = HTTPServer(mdm_app(ORG)), HTTPServer(mdm_app(ORG))
    await mdm_one.start()
    await mdm_two.start()
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    emulators = [Emulator(group, socket_path=tmp_path / f"mux-{i + 1}", speed=SPEED) for i, group in enumerate(groups)]
    spare = Emulator([], socket_path=tmp_path / "mux-elsewhere", speed=SPEED)
    daemons: list[Daemon] = []
    try:
        async with (
            fake_apple(tmp_path) as apple,
            emulators[0],
            emulators[1],
            emulators[2],
            spare,
            anyio.create_task_group() as readers,
        ):
            apple.api.add_devices([spec.serial for spec in specs])
            asm = apple.toml(window=600, batch=len(specs))  # nothing is sent before the whole list is done
            for emulator in emulators:
                for udid in late:
                    if udid in emulator.devices:
                        emulator.unplug(udid)
            configs = [
                station_config(tmp_path, i + 1, emulators[i], mdm_one.url, pg_url, ssid="FleetNet-1", asm=asm)
                for i in range(3)
            ]
            pusher = station_config(
                tmp_path, 1, emulators[0], mdm_two.url, pg_url, ssid="FleetNet-2", asm=asm, file="blueprint-2.toml"
            )
            serials = tmp_path / "serials.csv"
            serials.write_text("serial;group\n" + "".join(f"{spec.serial};cart\n" for spec in specs))
            await cli(env, "queue", "import", str(serials), "--config", str(configs[0]))
            await cli(env, "blueprint", "push", "fleet", "--config", str(configs[0]))

            board = Board()

            async def start(name: str, config: Path) -> Daemon:
                process = await anyio.open_process([*STATIOND, "run", "--config", str(config)], env=env)
                daemon = Daemon(name, process, board)
                daemons.append(daemon)
                readers.start_soon(daemon.read)
                await daemon.wait_for(lambda e: e.get("event") == "api.listening")
                return daemon

            one, two, three = [await start(f"station-{i + 1}", configs[i]) for i in range(3)]
            elsewhere = await start("elsewhere-1", other_fleet_config(tmp_path, spare))

            # An iPad leaves station 1 as it activates (after its erase, before its Wi-Fi); back once blueprint 2 is.
            moved = groups[0][0]
            carried_off = anyio.Event()

            async def carry_off() -> None:
                await one.wait_for(
                    lambda e: (
                        e.get("event") == "step.started" and e.get("step") == "activate" and e.get("udid") == moved.udid
                    )
                )
                emulators[0].unplug(moved.udid)
                carried_off.set()

            readers.start_soon(carry_off)

            # Station 3 dies mid-erase; its iPads are carried to the other hubs and resume there after its lease.
            with anyio.fail_after(60):
                await emulators[2].wait_erases(PER_STATION - LATE)
            three.process.kill()
            await three.process.wait()
            for k, spec in enumerate(s for s in groups[2] if s.udid not in late):
                emulators[2].move(spec.udid, emulators[k % 2], location_for(40 + k))

            # The fleet finds itself (not the other fleet) and drops station 3 once it is gone.
            with anyio.fail_after(30):
                listing = await fleet_listing(env, configs[0], browse=1.5)
            assert {"station-1", "station-2"} <= set(listing) <= {"station-1", "station-2", "station-3"}
            assert listing["station-1"]["self"] and not listing["station-2"]["self"]
            for row in (listing["station-1"], listing["station-2"]):
                assert row["reachable"] and set(row["via"]) == {"bonjour", "database"} and row["last_seen"] < 5
            async with httpx.AsyncClient(timeout=5) as client:
                peer_url = listing["station-2"]["api"] + "/api/fleet/station"
                refused = await client.get(peer_url)
                wrong = await client.get(peer_url, headers={"authorization": "Bearer not-the-secret"})
                allowed = await client.get(peer_url, headers={"authorization": f"Bearer {SECRET}"})
            assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 403, 200)
            assert SECRET not in allowed.text and pg_url not in allowed.text
            with anyio.fail_after(30):
                while "station-3" in await fleet_listing(env, configs[0], browse=0):
                    pass

            # Blueprint 2, pushed from station 1, is taken by every station, station 3 restarted among them.
            await carried_off.wait()
            await cli(env, "blueprint", "push", "fleet", "--config", str(pusher))
            three = await start("station-3 again", configs[2])
            for daemon in (one, two, three):
                await daemon.wait_for(lambda e: e.get("event") == "blueprint.taken" and e.get("version") == 2)
            listing = await fleet_listing(env, configs[1], browse=1.5)
            assert set(listing) == {"station-1", "station-2", "station-3"}
            assert set(listing["station-3"]["via"]) == {"bonjour", "database"} and listing["station-3"]["reachable"]

            # PostgreSQL restarts while the late iPads and the carried one are under way.
            emulators[0].move(moved.udid, emulators[1], location_for(60))
            for emulator in emulators:
                for udid in late & set(emulator.devices):
                    emulator.plug(udid)
            await two.wait_for(lambda e: e.get("event") == "step.started" and e.get("udid") in late)
            await anyio.to_thread.run_sync(postgres.restart)

            done: set[str] = set()
            with anyio.move_on_after(120):
                while True:
                    changed = board.changed
                    done = {e["udid"] for d in (one, two, three) for e in d.entries if e.get("event") == "device.done"}
                    if len(done) == len(specs):
                        break
                    await changed.wait()
            assert len(done) == len(specs), stuck({s.udid for s in specs} - done, (one, two, three))
            with anyio.fail_after(60):
                while True:  # the last station to queue a report claims the gathered batch: one activity
                    changed = board.changed
                    reported = [e for d in (one, two, three) for e in d.entries if e.get("event") == "report.done"]
                    if len(reported) == len(specs):
                        break
                    await changed.wait()
            exported = json.loads(await cli(env, "queue", "export", "--format", "json", "--config", str(configs[1])))
            for daemon in (one, two, three, elsewhere):
                daemon.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                for daemon in (one, two, three, elsewhere):
                    await daemon.process.wait()
            readers.cancel_scope.cancel()

        devices = {udid: device for emulator in emulators for udid, device in emulator.devices.items()}
        async with open_store(pg_url) as store:
            events = await store.list_events(limit=1_000_000)
            jobs = await store.latest_jobs()
    finally:
        for daemon in daemons:
            if daemon.process.returncode is None:
                daemon.process.kill()
        await mdm_one.stop()
        await mdm_two.stop()

    states = {udid: device.snapshot() for udid, device in devices.items()}
    assert set(states) == {spec.udid for spec in specs}
    erases = {
        udid: sum(1 for r in state["request_log"] if r["request"] == "EraseDevice") for udid, state in states.items()
    }
    assert {state["erase_count"] for state in states.values()} == {1}, "every iPad erased exactly once"
    assert set(erases.values()) == {1}
    names = [state["device_name"] for state in states.values()]
    assert len(set(names)) == len(names) == 30 and all(name.startswith(f"{ORG}-") for name in names)
    assert sorted(row["serial"] for row in exported) == sorted(spec.serial for spec in specs)
    assert {row["status"] for row in exported} == {"done"}

    by_kind = Counter((event.udid, event.kind) for event in events)
    assert all(by_kind[(spec.udid, "device.done")] == 1 for spec in specs), "nothing applied twice"
    finished_erases = Counter(event.udid for event in events if event.kind == "step.finished" and event.step == "erase")
    assert set(finished_erases.values()) == {1}
    stations = {jobs[spec.udid].station_id for spec in specs}
    assert stations == {"station-1", "station-2", "station-3"}
    for spec in groups[2][: PER_STATION - LATE]:
        assert jobs[spec.udid].station_id in ("station-1", "station-2"), "station 3's iPads finished elsewhere"
    trail = [(e.station_id, e.kind, e.step) for e in events if e.udid == moved.udid]
    assert jobs[moved.udid].station_id == "station-2", "\n".join(map(str, trail))
    assert any(e.kind == "job.resumed" and e.udid == moved.udid and e.station_id == "station-2" for e in events)

    first_blueprint = (wifi_id("FleetNet-1"), enrollment_sha(mdm_one.url))
    second_blueprint = (wifi_id("FleetNet-2"), enrollment_sha(mdm_two.url))

    def settings(udid: str) -> tuple[str, str]:
        state = states[udid]
        [wifi] = [name for name in state["profiles"] if name.startswith("org.stationd.wifi.")]
        return wifi, state["stored_profile"]["sha256"]

    assert settings(moved.udid) == first_blueprint, "an iPad in progress keeps the blueprint it started with"
    for spec in groups[1][-LATE:] + groups[2][-LATE:]:
        assert settings(spec.udid) == second_blueprint, "the next iPads at stations 2 and 3 take the new blueprint"
    for spec in groups[2][: PER_STATION - LATE]:
        assert settings(spec.udid) == first_blueprint

    assert apple.api.posts == 1, "one activity for the whole fleet's window"
    [activity] = apple.api.activities.values()
    assert sorted(activity.serials) == sorted(spec.serial for spec in specs)
    assert {spec.serial: apple.api.moves.get(spec.serial) for spec in specs} == {spec.serial: 1 for spec in specs}
