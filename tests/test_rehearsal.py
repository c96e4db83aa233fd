"""The shipped rehearsal (examples/rehearsal): its scenario and configuration load and work together."""

from __future__ import annotations

from pathlib import Path

import pytest
from rig import make_rig

from stationd.config import load_config
from stationd.emulator.scenario import load_scenario

EXAMPLE = Path(__file__).parent.parent / "examples" / "rehearsal"


def test_example_configuration_points_at_the_emulators_defaults() -> None:
    config = load_config(EXAMPLE / "stationd.toml")
    assert config.station.usbmuxd == "/tmp/ipads.sock"
    assert config.activation.url == "http://127.0.0.1:7781/deviceservices"
    assert config.enrollment.url == "http://127.0.0.1:7782/enroll"
    assert config.organization.identity == EXAMPLE / "identity.pem"


@pytest.mark.anyio
async def test_the_rehearsal_cart_ends_with_every_ipad_done_or_in_a_clear_state(tmp_path: Path) -> None:
    scenario = load_scenario(EXAMPLE / "scenario.toml")
    assert len(scenario.specs) == 10
    example = load_config(EXAMPLE / "stationd.toml")
    what_to_do = {name: getattr(example, name) for name in ("wifi", "steps", "naming", "profiles")}
    async with make_rig(tmp_path, scenario.specs, speed=0.0005) as rig:
        finals = await rig.run_until_settled([s.udid for s in scenario.specs], **what_to_do)
    codes = sorted(e.data.get("error_code", "done") for e in finals.values())
    assert codes == ["activation_locked", "dep_assigned_elsewhere"] + ["done"] * 8
