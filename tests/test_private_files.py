"""Every file the station writes is 0600 in a 0700 folder, tightened when it already exists, even under umask 022."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from rig import make_rig
from typer.testing import CliRunner

from stationd.cli import app as cli
from stationd.device.pairing import HOST_KEYS, host_keys
from stationd.emulator import generated_spec
from stationd.portlabels import write_ports
from stationd.store import open_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """What most shells have: new files 0644 unless the station says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.anyio
async def test_database_pair_records_and_host_keys_are_private_even_in_a_loose_existing_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    database = state / "stationd.db"
    async with open_store(database) as store:
        await store.list_devices()
    pairs = state / "pair_records"
    pairs.mkdir(mode=0o755)
    (pairs / "00008101-OLD.plist").write_bytes(b"<plist/>")
    for path in (state, pairs, database, pairs / "00008101-OLD.plist"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        station_config = dataclasses.replace(rig.config.station, database=database, pair_records=pairs)
        async with rig.station(station=station_config) as station:
            with station.bus.subscribe() as events, anyio.fail_after(30):
                async for event in events:
                    if event.kind == "device.done":
                        break
            open_modes = {path.name: mode(path) for path in state.iterdir() if path.is_file()}
    assert mode(state) == 0o700 and mode(pairs) == 0o700
    assert open_modes["stationd.db-wal"] == 0o600 and open_modes["stationd.db-shm"] == 0o600
    assert set(open_modes.values()) == {0o600}
    records = sorted(path.name for path in pairs.iterdir())
    assert records == sorted([f"{spec.udid}.plist", HOST_KEYS, "00008101-OLD.plist"])
    assert {path.name: mode(path) for path in pairs.iterdir()} == dict.fromkeys(records, 0o600)


def test_host_keys_are_written_0600_even_over_a_loose_leftover(tmp_path: Path) -> None:
    folder = tmp_path / "fresh-pairs"
    folder.mkdir(mode=0o755)
    leftover = folder / (HOST_KEYS + ".new")
    leftover.write_bytes(b"")
    leftover.chmod(0o644)
    host_keys(folder)
    assert mode(folder / HOST_KEYS) == 0o600 and mode(folder) == 0o700


def test_a_rewritten_configuration_and_an_export_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    config = tmp_path / "stationd.toml"
    config.write_text('[organization]\nname = "X"\n[wifi]\nssid = "N"\npassword = "wifi-password-1"\n')
    config.chmod(0o644)
    write_ports(config, {0x01110000: "Hub A · 1"})
    assert mode(config) == 0o600
    assert 'password = "wifi-password-1"' in config.read_text() and '"0x01110000" = "Hub A · 1"' in config.read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["stationd.toml"]

    database = tmp_path / "stationd.db"
    anyio.run(_empty_database, database)
    config.write_text(f'[organization]\nname = "X"\n[station]\ndatabase = "{database}"\n')
    export = tmp_path / "cart.csv"
    export.write_text("old\n")
    export.chmod(0o644)
    result = CliRunner().invoke(cli, ["export", "--config", str(config), "-o", str(export)])
    assert result.exit_code == 0, result.output
    assert mode(export) == 0o600 and export.read_text().startswith("serial,udid")


async def _empty_database(path: Path) -> None:
    async with open_store(path) as store:
        await store.list_devices()
