"""The work list in the pipeline: names from the list win over the pattern, and with unknown = "hold" an iPad that
is not listed is held untouched (its own port state) until its serial is imported."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
from rig import make_rig

from stationd.config import QueueConfig
from stationd.emulator import generated_spec
from stationd.store import WorkItem

pytestmark = pytest.mark.anyio


async def test_a_listed_ipad_takes_its_listed_name_and_an_unlisted_one_waits_untouched(tmp_path: Path) -> None:
    listed, unlisted = generated_spec(0), generated_spec(1)
    async with make_rig(tmp_path, [listed, unlisted]) as rig:
        store_settings = dataclasses.replace(rig.config.store, poll=0.05)
        async with rig.station(queue=QueueConfig(unknown="hold"), store=store_settings) as station:
            await station.store.import_worklist([WorkItem(listed.serial, name="Library-07")])
            held = done = None
            with station.bus.subscribe() as events, anyio.fail_after(60):
                async for event in events:
                    if event.kind == "port.changed" and event.udid == unlisted.udid and event.data["status"] == "held":
                        held = event
                    if event.kind == "device.done" and event.udid == listed.udid:
                        done = event
                    if held and done:
                        break
                view = station.view.devices[unlisted.udid]
                assert (view.device.error_code, view.status) == ("not_on_work_list", "held")
                assert "is not on the work list" in (view.device.error_message or "")
                assert rig.device(unlisted.udid)["erase_count"] == 0, "a held iPad is not touched"

                await station.store.import_worklist([WorkItem(unlisted.serial)])
                async for event in events:
                    if event.kind == "device.done" and event.udid == unlisted.udid:
                        break
    assert rig.device(listed.udid)["device_name"] == "Library-07"
    assert rig.device(unlisted.udid)["device_name"] == f"Rig School-{unlisted.serial}"
    assert rig.device(unlisted.udid)["erase_count"] == 1
