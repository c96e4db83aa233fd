"""The emulator is reachable from this machine only (unless --allow-remote), and its control API takes only JSON
POSTs, so a web page in the technician's browser cannot pull cables with a cross-site form or text/plain POST."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from stationd.cli import app as cli
from stationd.emulator import Emulator, generated_spec


@pytest.mark.parametrize("option", ["tcp_address", "activation_address", "control_address"])
def test_every_tcp_server_binds_loopback_only_unless_allowed(option: str) -> None:
    options = {"tcp_address": "127.0.0.1:0", option: "0.0.0.0:7780"}
    with pytest.raises(ValueError, match="listens on loopback only, not on 0.0.0.0.*--allow-remote"):
        Emulator([], **options)
    assert Emulator([], allow_remote=True, **options)


@pytest.mark.parametrize("option", ["--tcp", "--activation", "--control", "--mdm"])
def test_the_command_refuses_addresses_beyond_loopback(tmp_path: Path, option: str) -> None:
    result = CliRunner().invoke(cli, ["emulator", "--socket", str(tmp_path / "ipads.sock"), option, "0.0.0.0:7799"])
    assert result.exit_code == 2
    assert "listens on loopback only, not on 0.0.0.0" in result.output and "--allow-remote" in result.output


@pytest.mark.anyio
async def test_the_control_api_takes_only_json_posts(tmp_path: Path) -> None:
    spec = generated_spec(0)
    async with (
        Emulator([spec], socket_path=tmp_path / "usbmuxd", control_address="127.0.0.1:0") as emulator,
        httpx.AsyncClient(base_url=emulator.control_url or "", timeout=10) as http,
    ):
        unplug = f"/devices/{spec.udid}/unplug"
        refused = [
            await http.post(unplug),
            await http.post(unplug, content=b"{}", headers={"Content-Type": "text/plain"}),
            await http.post(unplug, data={"a": "b"}),
            await http.post("/devices", content=b"{}", headers={"Content-Type": "text/plain;charset=UTF-8"}),
        ]
        still_attached = emulator.devices[spec.udid].attached
        accepted = await http.post(unplug, json={})
    assert [response.status_code for response in refused] == [415] * 4
    assert all("Content-Type: application/json" in response.json()["error"] for response in refused)
    assert still_attached and len(emulator.devices) == 1
    assert accepted.status_code == 200 and not accepted.json()["attached"]
