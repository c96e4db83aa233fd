"""A flood of idle API connections cannot take the file descriptors the iPads need.

`stationd run` runs as a real process with RLIMIT_NOFILE lowered to 256; while 400 idle connections are held open
to its API, eight virtual iPads are plugged in. Every iPad finishes, the log stays short (one line about the
refused connections, no tracebacks), and the API answers again once the flood is gone."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from daemon_logs import log_lines

from stationd.emulator import Emulator, generated_spec
from stationd.emulator.mdm_server import mdm_app
from stationd.httpserve import HTTPServer
from stationd.identity import create_identity

LIMIT = 256
IDLE_CONNECTIONS = 400
DEVICES = 8
LOWERED = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
    "sys.argv = ['stationd', 'run', '--config', sys.argv[1]]; runpy.run_module('stationd.cli', run_name='__main__')"
)


def write_config(tmp: Path, emulator: Emulator, mdm_url: str) -> Path:
    create_identity(tmp / "identity.pem", "Flood School")
    config = tmp / "stationd.toml"
    config.write_text(
        f'[station]\nid = "flood"\ndatabase = "{tmp / "stationd.db"}"\nusbmuxd = "{emulator.usbmux_address}"\n'
        f'log_format = "json"\npair_records = "{tmp / "pairs"}"\nconcurrency = {DEVICES}\n'
        f'[organization]\nname = "Flood School"\nidentity = "{tmp / "identity.pem"}"\n'
        f'[wifi]\nssid = "FloodNet"\npassword = "flood-password"\n'
        f'[enrollment]\nmode = "url"\nurl = "{mdm_url}/enroll"\n'
        f'[activation]\nurl = "{emulator.activation_url}"\n'
        f'[api]\nlisten = "127.0.0.1:0"\n'
    )
    config.chmod(0o600)
    return config


@pytest.mark.anyio
async def test_idle_connections_beyond_the_descriptors_leave_the_ipads_unaffected(tmp_path: Path) -> None:
    specs = [generated_spec(i) for i in range(DEVICES)]
    mdm = HTTPServer(mdm_app("Flood School"))
    await mdm.start()
    lines: list[str] = []
    held: list[SocketStream] = []
    try:
        async with Emulator(specs, socket_path=tmp_path / "mux", speed=0.002) as emulator:
            for spec in specs:
                emulator.unplug(spec.udid)
            config = write_config(tmp_path, emulator, mdm.url)
            command = [sys.executable, "-c", LOWERED.format(limit=LIMIT), str(config)]
            process = await anyio.open_process(command, env=dict(os.environ, HOME=str(tmp_path / "home")))
            try:
                entries = log_lines(process, lines)
                with anyio.fail_after(60):
                    url = ""
                    async for entry in entries:
                        if entry.get("event") == "api.listening":
                            url = entry["url"]
                            break
                    assert url, "\n".join(lines)
                    host, port = url.removeprefix("http://").split(":")
                    for _ in range(IDLE_CONNECTIONS):
                        held.append(await anyio.connect_tcp(host, int(port)))
                    for spec in specs:
                        emulator.plug(spec.udid)
                    finished: dict[str, str] = {}
                    async for entry in entries:
                        if entry.get("event") in ("device.done", "step.failed"):
                            finished[entry["udid"]] = entry["event"]
                        if len(finished) == DEVICES:
                            break
                for stream in held:
                    await stream.aclose()
                held.clear()
                async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                    with anyio.fail_after(30):
                        devices = await answered(client, "/api/devices")
            finally:
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    await process.wait()
    finally:
        for stream in held:
            await stream.aclose()
        await mdm.stop()
    assert finished == dict.fromkeys((spec.udid for spec in specs), "device.done")
    assert all(state["erase_count"] == 1 for state in (emulator.devices[s.udid].snapshot() for s in specs))
    assert {device["state"] for device in devices["devices"]} == {"done"}
    log = "\n".join(lines)
    assert "Too many open files" not in log and "Traceback" not in log
    assert log.count("http.too_many_connections") == 1
    assert len(lines) < 40 * DEVICES


async def answered(client: httpx.AsyncClient, path: str) -> Any:
    """The first answer once the server has let go of the closed connections (each try is a full round trip)."""
    for _ in range(100):
        try:
            response = await client.get(path)
        except httpx.TransportError:
            continue
        if response.status_code == 200:
            return response.json()
    raise AssertionError(f"{path} never answered")
