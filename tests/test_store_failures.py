"""The database failing under the station: a full disk and a damaged page give errors that name the file and say
what to do, lose nothing, and never make the station erase an iPad twice."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from rig import make_rig
from typer.testing import CliRunner

from stationd.cli import app as cli
from stationd.emulator import generated_spec
from stationd.store import StoreError, open_store

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs to fill up (mounting one needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("filling a disk needs a small tmpfs, and mounting one needs root: run the suite as root (CI does)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(disk)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path: Path) -> None:
    with path.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


@pytest.mark.anyio
async def test_a_full_disk_stops_the_station_naming_the_file_and_after_freeing_it_nothing_is_lost(
    tmp_path: Path, small_disk: Path
) -> None:
    spec = generated_spec(0)
    database = small_disk / "stationd.db"
    filler = small_disk / "filler"
    async with make_rig(tmp_path, [spec], speed=0.01) as rig:
        station = dataclasses.replace(rig.config.station, database=database)
        with pytest.raises(BaseExceptionGroup) as stopped:
            async with rig.station(station=station) as running:
                with running.bus.subscribe() as events, anyio.fail_after(60):
                    async for event in events:
                        if event.kind == "step.waiting" and event.step == "erase":
                            fill(filler)
        errors = [leaf for leaf in leaves(stopped.value) if isinstance(leaf, StoreError)]
        assert errors, stopped.value
        assert f"the disk holding the database {database} is full: free some space there" in str(errors[0])

        filler.unlink()
        finals = await rig.run_until_settled([spec.udid], station=station)
        async with open_store(database) as store:
            kinds = [(record.kind, record.step) for record in await store.list_events(limit=100_000)]
    assert finals[spec.udid].kind == "device.done"
    assert rig.device(spec.udid)["erase_count"] == 1
    assert ("step.waiting", "erase") in kinds and kinds.count(("station.started", None)) == 2


@pytest.mark.anyio
async def test_a_damaged_page_is_found_at_start_and_the_file_is_left_untouched(tmp_path: Path) -> None:
    spec = generated_spec(0)
    async with make_rig(tmp_path, [spec]) as rig:
        finals = await rig.run_until_settled([spec.udid])
    assert finals[spec.udid].kind == "device.done"
    database = tmp_path / "stationd.db"
    data = bytearray(database.read_bytes())
    pages = len(data) // PAGE
    assert pages >= 4
    middle = pages // 2
    data[middle * PAGE : (middle + 1) * PAGE] = b"\xa5" * PAGE
    database.write_bytes(bytes(data))
    before = hashlib.sha256(database.read_bytes()).hexdigest()

    with pytest.raises(StoreError) as damaged:
        async with open_store(database):
            pass
    config = tmp_path / "stationd.toml"
    config.write_text(f'[organization]\nname = "X"\n[station]\ndatabase = "{database}"\n')
    status = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(cli, ["status", "--config", str(config)]))

    message = str(damaged.value)
    assert message.startswith(f"the database {database} is damaged (")
    assert "left it untouched" in message and f"sqlite3 {database} .recover" in message
    assert status.exit_code == 2 and f"the database {database} is damaged" in status.output
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
