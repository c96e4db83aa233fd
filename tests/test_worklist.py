"""The work list from the files schools have: encodings, separators, Excel's quoting, headers or none, and every
mistake named with its line, importing nothing; then progress and the final export."""

from __future__ import annotations

import codecs
import json
import time
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from stationd.cli import app
from stationd.fleet.worklist import WorkListError, read_worklist
from stationd.store import WorkItem, open_store


def problems(data: bytes) -> list[str]:
    with pytest.raises(WorkListError) as refused:
        read_worklist(data, "list.csv")
    assert "nothing was imported" in str(refused.value)
    return refused.value.problems


def test_a_header_with_excels_quoting_a_bom_and_semicolons() -> None:
    data = codecs.BOM_UTF8 + (
        b"Serial Number;Device Name;Tag;Notes\r\n"
        b'dmpx1234abcd;"Lab; 01";cart A;"said ""fragile"""\r\n'
        b"\r\n"
        b"F9FX0000ZZ;;;\r\n"
    )
    assert read_worklist(data) == [
        WorkItem("DMPX1234ABCD", name="Lab; 01", group="cart A", notes='said "fragile"'),
        WorkItem("F9FX0000ZZ"),
    ]


def test_a_plain_column_of_serials_and_excels_unicode_text() -> None:
    assert read_worklist(b"DMPX1234ABCD\nF9FX0000ZZ\n") == [WorkItem("DMPX1234ABCD"), WorkItem("F9FX0000ZZ")]
    utf16 = "serial\tname\nDMPX1234ABCD\tÉcole-1\n".encode("utf-16")
    assert read_worklist(utf16) == [WorkItem("DMPX1234ABCD", name="École-1")]


def test_a_file_that_is_not_utf8_says_how_to_save_it() -> None:
    [problem] = problems("serial,name\nDMPX1234ABCD,École\n".encode("latin-1"))
    assert problem.startswith("line 2: the file is not UTF-8") and "CSV UTF-8" in problem


def test_a_header_without_a_serial_column_names_what_it_has() -> None:
    [problem] = problems(b"asset,owner\nDMPX1234ABCD,Mr Smith\n")
    assert "line 1: no serial column; the header names 'asset', 'owner'" in problem


def test_duplicates_and_malformed_serials_are_named_with_their_lines() -> None:
    found = problems(
        b"serial,name\nDMPX1234ABCD,a\nnot-a-serial,b\n,c\nDMPX1234ABCD,d\nF9FX0000ZZ," + b"x" * 70 + b"\n"
    )
    assert found == [
        "line 3: 'not-a-serial' is not a serial number (8 to 14 letters and digits)",
        "line 4: no serial number",
        "line 5: serial DMPX1234ABCD is already on line 2",
        "line 6: the name of F9FX0000ZZ is 70 characters long (at most 63)",
    ]


@pytest.mark.parametrize("data", [b"", b"\n \n", codecs.BOM_UTF8, b"serial,name\n"])
def test_an_empty_file_is_refused(data: bytes) -> None:
    [problem] = problems(data)
    assert "serial" in problem


@pytest.mark.anyio
async def test_a_list_of_100000_serials_is_read_and_imported_whole(tmp_path: Path, pg_url: str) -> None:
    data = "serial,name\n" + "".join(f"S{index:09d},iPad-{index}\n" for index in range(100_000))
    started = time.monotonic()
    items = read_worklist(data.encode())
    read = time.monotonic() - started
    async with open_store(pg_url) as store:
        with anyio.fail_after(120):
            assert await store.import_worklist(items) == (100_000, 0)
        assert (await store.work_item("S000099999")).name == "iPad-99999"
    print(f"100,000 serials: read {read:.2f} s, read and imported into PostgreSQL {time.monotonic() - started:.2f} s")


def test_the_commands_import_whole_files_only_then_show_and_export_progress(tmp_path: Path) -> None:
    config = tmp_path / "stationd.toml"
    config.write_text(f'[organization]\nname = "X"\n[station]\ndatabase = "{tmp_path / "stationd.db"}"\n')
    bad = tmp_path / "bad.csv"
    bad.write_text("serial\nDMPX1234ABCD\nnope\n")
    good = tmp_path / "good.csv"
    good.write_text("serial,name\nDMPX1234ABCD,Lab-1\nF9FX0000ZZ,Lab-2\nG7GX0000ZZ,\n")
    runner = CliRunner()

    refused = runner.invoke(app, ["queue", "import", str(bad), "--config", str(config)])
    assert refused.exit_code == 2 and "line 3: 'nope' is not a serial number" in refused.output
    cannot_assign = runner.invoke(app, ["queue", "import", str(good), "--assign", "--config", str(config)])
    assert cannot_assign.exit_code != 0 and "the configuration has no [plugins.asm]" in cannot_assign.output
    assert "empty" in runner.invoke(app, ["queue", "--config", str(config)]).output, "nothing imported without it"
    dry = runner.invoke(app, ["queue", "import", str(good), "--dry-run", "--config", str(config)])
    assert "3 serials, ready to import" in dry.output
    assert (
        "3 serials added, 0 updated"
        in runner.invoke(app, ["queue", "import", str(good), "--config", str(config)]).output
    )

    async def one_done() -> None:
        async with open_store(tmp_path / "stationd.db") as store:
            await store.upsert_device("UDID-1", serial="F9FX0000ZZ", name="Lab-2")
            job = await store.claim_job("UDID-1", "cart")
            await store.record_transition(
                udid="UDID-1", job_id=job.id, station_id="cart", kind="device.done", state="done", job_status="done"
            )

    anyio.run(one_done)
    summary = runner.invoke(app, ["queue", "--json", "--config", str(config)])
    assert json.loads(summary.output) == [
        {"listed": 3, "done": 1, "in progress": 0, "failed": 0, "not yet seen": 2, "not on the list": 0}
    ]
    exported = runner.invoke(app, ["queue", "export", "--format", "json", "--config", str(config)])
    rows = json.loads(exported.output)
    assert sorted(row["serial"] for row in rows) == ["DMPX1234ABCD", "F9FX0000ZZ", "G7GX0000ZZ"]
    assert {row["serial"]: row["status"] for row in rows}["F9FX0000ZZ"] == "done"
    csv_out = runner.invoke(app, ["queue", "export", "-o", str(tmp_path / "out.csv"), "--config", str(config)])
    assert "3 serials" in csv_out.output and (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o600
