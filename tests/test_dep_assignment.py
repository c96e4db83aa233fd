"""DEP pre-assignment: a work list assigned with `stationd asm assign --work-list` (or `queue import --assign`) in
one verified activity; in DEP mode an iPad whose serial is not assigned yet is held, not erased, and goes on once
it is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from apple_fixture import fake_apple
from rig import ORG, make_rig

from stationd.config import EnrollmentConfig
from stationd.emulator import generated_spec
from stationd.emulator.ipad import DepAssignment
from stationd.events import EventBus
from stationd.states import DeviceState, PortStatus

pytestmark = pytest.mark.anyio


async def test_a_work_list_assigned_before_the_erase_and_an_unassigned_ipad_held_not_erased(tmp_path: Path) -> None:
    specs = [generated_spec(i, seed="dep-hold") for i in range(3)]
    listed, unlisted = specs[:2], specs[2]
    async with fake_apple(tmp_path) as apple, make_rig(tmp_path, specs) as rig:
        apple.api.add_devices([s.serial for s in specs])
        by_serial = {s.serial: rig.emulator.devices[s.udid] for s in specs}

        def assigned(serial: str, server: str) -> None:  # Apple now hands the iPad our MDM's configuration
            by_serial[serial].spec.dep = DepAssignment(ORG, supervisor_certificates=[rig.identity.certificate_der])

        apple.api.on_assigned = assigned
        work_list = tmp_path / "cart.csv"
        work_list.write_text("serial,name\n" + "".join(f"{s.serial},cart\n" for s in listed))
        config = tmp_path / "stationd.toml"
        config.write_text(
            f'[organization]\nname = "{ORG}"\n[station]\ndatabase = "{rig.config.station.database}"\n'
            f"[plugins.asm]\n{apple.toml()}"
        )
        config.chmod(0o600)
        command = [sys.executable, "-m", "stationd.cli", "asm", "assign", "--work-list", str(work_list)]
        command += ["--to", "Lincoln MDM", "--config", str(config)]
        done = await anyio.run_process(command, env=dict(os.environ, HOME=str(tmp_path / "home")), check=False)
        output = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()
        assert "2 of 2 serials assigned to Lincoln MDM" in output
        assert apple.api.posts == 1 and len(apple.api.activities) == 1, "the whole work list in one activity"

        dep = EnrollmentConfig(mode="dep", hold_until_assigned=True)
        bus = EventBus()
        finished: set[str] = set()
        held = anyio.Event()
        with bus.subscribe() as events:
            async with rig.station(bus, enrollment=dep) as station:
                with anyio.fail_after(60):
                    async for event in events:
                        if event.kind == "device.done":
                            finished.add(event.udid or "")
                        if event.kind == "step.held" and event.udid == unlisted.udid:
                            held.set()
                        if held.is_set() and finished == {s.udid for s in listed}:
                            break
                view = station.view.devices[unlisted.udid].device
                assert view.state == DeviceState.HELD and view.error_code == "waiting_for_asm"
                assert "Waiting for Apple School Manager" in (view.error_message or "")
                assert rig.device(unlisted.udid)["erase_count"] == 0, "held before the erase"
                assert station.view.ports[view.port_label or ""][1] == PortStatus.HELD

                # once put on the work list and assigned with it, the held iPad goes on: erased once, ours
                (tmp_path / "late.csv").write_text(f"serial\n{unlisted.serial}\n")
                late = await anyio.run_process(
                    [sys.executable, "-m", "stationd.cli", "queue", "import", str(tmp_path / "late.csv"), "--assign"]
                    + ["--to", "Lincoln MDM", "--config", str(config)],
                    env=dict(os.environ, HOME=str(tmp_path / "home")),
                    check=False,
                )
                assert late.returncode == 0, late.stderr.decode()
                assert "1 serials added" in late.stdout.decode() and "1 of 1 serials assigned" in late.stdout.decode()
                assert apple.api.posts == 2
                await station.retry(unlisted.udid)  # the operator's nudge instead of waiting for the recheck
                with anyio.fail_after(60):
                    async for event in events:
                        if event.kind == "device.done" and event.udid == unlisted.udid:
                            break
        for spec in specs:
            state = rig.device(spec.udid)
            assert state["erase_count"] == 1 and state["organization"] == ORG, spec.serial
