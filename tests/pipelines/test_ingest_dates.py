"""Hardening of ``dealcast ingest``: impossible dates, NUL bytes, formula-like values.

- a timestamp or date outside the sane window (before 1990-01-01, or more than about two
  years after the export day) is quarantined with its reason, so one typo can never move
  "the end of the data" every command works from;
- a NUL byte in a row quarantines that row (file, row, "contains a NUL byte"); in the header
  it fails the file with a precise message; it is never mistaken for UTF-16;
- the quarantine CSV never carries a cell a spreadsheet would run as a formula.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from features.snapshots import data_end, data_now
from features.store import Store
from pipelines.ingest import IngestError, ingest_sources
from pipelines.ingest.checks import EARLIEST, time_window

DEALS = "deal_id,created_at,owner_id,stage,amount,expected_close_date,closed_at\n"
GOOD = "D1,2024-01-05,r1,Discovery,100,2024-03-01,\nD2,2024-01-06,r2,Closed Won,200,,2024-02-01\n"


def _ingest(tmp_path: Path, body: str | bytes, name: str = "deals.csv") -> tuple[Path, Store]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    data = body if isinstance(body, bytes) else body.encode()
    (src / name).write_bytes(data)
    store = Store(tmp_path / "data")
    return src, store


def _lines(path: Path | None) -> list[dict[str, str]]:
    assert path is not None
    return pl.read_csv(path, infer_schema=False).to_dicts()


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("D3,2024-01-07,r3,Closed Won,300,,2100-01-01", "closed_at"),
        ("D3,9999-12-31,r3,Discovery,300,2024-03-01,", "created_at"),
        ("D3,1900-01-01,r3,Discovery,300,2024-03-01,", "created_at"),
        ("D3,2024-01-07,r3,Discovery,300,2999-03-01,", "expected_close_date"),
    ],
)
def test_impossible_dates_are_quarantined_and_do_not_move_the_end(
    tmp_path: Path, row: str, column: str
) -> None:
    src, store = _ingest(tmp_path, DEALS + GOOD + row + "\n")
    report = ingest_sources([src], store=store)
    assert report.counts("deals").loaded == 2
    assert report.counts("deals").quarantined == 1
    lines = _lines(report.quarantine_file)
    assert [(ln["row_number"], ln["column"]) for ln in lines] == [("3", column)]
    assert "outside the accepted window 1990-01-01" in lines[0]["reason"]
    history = store.load()
    assert data_end(history) == datetime(2024, 2, 1, tzinfo=UTC)
    assert data_now(history) == datetime(2024, 2, 2, tzinfo=UTC)


def test_the_window_follows_the_export_day(tmp_path: Path) -> None:
    window = time_window(date(2026, 12, 7))
    assert window.start == EARLIEST == date(1990, 1, 1)
    assert date(2028, 12, 6) < window.end <= date(2028, 12, 9)
    # an export whose file is dated in the future (a clock ahead) widens it, never narrows it
    src, store = _ingest(tmp_path, DEALS + GOOD + "D3,2024-01-07,r3,Discovery,1,2030-06-01,\n")
    future = datetime(2029, 1, 1, tzinfo=UTC).timestamp()
    os.utime(src / "deals.csv", (future, future))
    report = ingest_sources([src], store=store)
    assert report.counts("deals").loaded == 3


def test_typed_parquet_timestamps_are_checked_too(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "deal_id": ["D1", "D2"],
            "created_at": [datetime(2024, 1, 5), datetime(2150, 1, 1)],
            "owner_id": ["r1", "r2"],
            "stage": ["Discovery", "Discovery"],
            "amount": [1.0, 2.0],
        }
    )
    src = tmp_path / "src"
    src.mkdir()
    frame.write_parquet(src / "deals.parquet")
    report = ingest_sources([src], store=Store(tmp_path / "data"))
    assert report.counts("deals").loaded == 1
    assert _lines(report.quarantine_file)[0]["column"] == "created_at"


def test_nul_byte_in_a_row_quarantines_it_with_file_and_row(tmp_path: Path) -> None:
    body = (DEALS + GOOD).encode() + b"D\x003,2024-01-07,r3,Discovery,300,2024-03-01,\n"
    src, store = _ingest(tmp_path, body)
    report = ingest_sources([src], store=store)
    assert report.counts("deals").quarantined == 1
    (line,) = _lines(report.quarantine_file)
    assert line["row_number"] == "3" and line["column"] == "deal_id"
    assert line["source_file"].endswith("deals.csv")
    assert "contains a NUL byte" in line["reason"]
    assert not any("\x00" in d for d in store.load().deals.collect()["deal_id"])


def test_nul_byte_after_64_kib_is_quarantined_too(tmp_path: Path) -> None:
    filler = "".join(f"F{i},2024-01-05,r1,Discovery,1,2024-03-01,\n" for i in range(3000))
    assert len(DEALS + filler) > 65536
    body = (DEALS + filler).encode() + b"EVIL\x00ID,2024-01-07,r3,Discovery,300,2024-03-01,\n"
    src, store = _ingest(tmp_path, body)
    report = ingest_sources([src], store=store)
    assert report.counts("deals").quarantined == 1
    assert "contains a NUL byte" in _lines(report.quarantine_file)[0]["reason"]
    assert store.load().deals.collect().height == 3000


def test_nul_in_the_header_fails_with_a_precise_message(tmp_path: Path) -> None:
    src, store = _ingest(tmp_path, b"deal_id,crea\x00ted_at\nD1,2024-01-05\n")
    with pytest.raises(IngestError, match=r"deals\.csv, line 1 \(the header\) contains a NUL"):
        ingest_sources([src], store=store)


def test_quarantine_csv_neutralises_formulas(tmp_path: Path) -> None:
    evil = "=cmd|' /C calc'!A0"
    body = DEALS + GOOD + f'D3,2024-01-07,r3,Discovery,"{evil}",2024-03-01,\n'
    body += "D4,2024-01-07,r4,Discovery,-5,2024-03-01,\n"
    src, store = _ingest(tmp_path, body)
    report = ingest_sources([src], store=store)
    lines = _lines(report.quarantine_file)
    values = [ln["value"] for ln in lines]
    assert "'" + evil in values and evil not in values
    assert "-5" in values  # a plain negative number is no formula: left as it is
