"""The read side of reporting on the command line: export --serials-only and --state, and stationd reports."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
from typer.testing import CliRunner

from stationd.cli import app
from stationd.store import Outcome, Settlement, open_store


def station(tmp: Path) -> Path:
    """A station's database with three iPads (two done, one failed) and their asm deliveries, and its config."""

    async def make() -> None:
        async with open_store(tmp / "stationd.db") as store:
            events = []
            for serial, state in (("AAAA1111", "done"), ("BBBB2222", "failed"), ("=CCC3333", "done")):
                udid = f"UDID-{serial}"
                await store.upsert_device(udid, serial=serial)
                job = await store.claim_job(udid, "st")
                await store.record_transition(udid=udid, job_id=job.id, station_id="st", kind="x", state=state)
                if state == "done":
                    events.append(
                        await store.add_event(
                            "device.reported", station_id="st", udid=udid, job_id=job.id, data={"device": {}}
                        )
                    )
            made, _ = await store.queue_reports(events, ["asm"], reader="r", read_to=events[-1].seq, station_id="st")
            await store.settle_deliveries(
                [
                    Settlement(made[0].key, Outcome.DONE, "assigned to Lincoln MDM"),
                    Settlement(made[1].key, Outcome.FAILED, "not in your organisation"),
                ],
                station_id="st",
            )

    anyio.run(make)
    config = tmp / "stationd.toml"
    config.write_text(f'[organization]\nname = "X"\n[station]\nid = "st"\ndatabase = "{tmp / "stationd.db"}"\n')
    return config


def test_serials_only_is_one_serial_per_line_without_a_header_and_state_filters(tmp_path: Path) -> None:
    config = station(tmp_path)
    runner = CliRunner()
    everything = runner.invoke(app, ["export", "--config", str(config), "--serials-only"])
    assert everything.exit_code == 0 and everything.output == "AAAA1111\nBBBB2222\n'=CCC3333\n"
    failed = runner.invoke(app, ["export", "--config", str(config), "--serials-only", "--state", "failed"])
    assert failed.output == "BBBB2222\n"
    wrong = runner.invoke(app, ["export", "--config", str(config), "--state", "finished"])
    assert wrong.exit_code == 2 and "--state must be one of" in wrong.output
    rows = json.loads(runner.invoke(app, ["export", "--config", str(config), "--format", "json"]).output)
    assert [r["reports"] for r in rows] == [
        {"asm": {"status": "done", "message": "assigned to Lincoln MDM"}},
        {},
        {"asm": {"status": "failed", "message": "not in your organisation"}},
    ]
    csv = runner.invoke(app, ["export", "--config", str(config)]).output
    assert csv.splitlines()[0].endswith(",reports") and "asm: failed (not in your organisation)" in csv


def test_reports_lists_deliveries_and_retry_queues_the_failed_again(tmp_path: Path) -> None:
    config = station(tmp_path)
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["reports", "--config", str(config), "--json"]).output)
    assert [(r["serial"], r["status"]) for r in listed] == [("AAAA1111", "done"), ("=CCC3333", "failed")]
    retried = runner.invoke(app, ["reports", "--config", str(config), "--retry", "--reporter", "asm"])
    assert retried.exit_code == 0 and "1 failed deliveries queued again" in retried.output
    pending = json.loads(
        runner.invoke(app, ["reports", "--config", str(config), "--json", "--status", "pending"]).output
    )
    assert [r["serial"] for r in pending] == ["=CCC3333"]
