"""Data never reaches a spreadsheet as a formula nor a terminal as escape codes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from features.contract import DEFAULT_PIPELINE
from features.store import Store
from pipelines.cli import app
from pipelines.console import csv_safe, plain_text

EVIL = "=cmd|' /C calc'!A0"
ANSI = "\x1b[31mred\x1b[0m\x07"


def _store(data: Path) -> None:
    ts = datetime(2024, 1, 5, tzinfo=UTC)
    deals = pl.DataFrame(
        {
            "deal_id": ["d1", "d2", "d3"],
            "created_at": [ts] * 3,
            "owner_id": [EVIL, ANSI, "+1-2"],
            "stage": ["Closed Won", "Closed Won", "Demo"],
            "amount": [100.0, 200.0, -3.0],
            "closed_at": [datetime(2024, 2, 1, tzinfo=UTC)] * 2 + [None],
        }
    )
    Store(data).write({"deals": deals}, DEFAULT_PIPELINE)


def test_kpis_csv_neutralises_formulas(tmp_path: Path) -> None:
    _store(tmp_path)
    result = CliRunner().invoke(
        app, ["kpis", "--by", "owner_id", "--format", "csv", "--data", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    cells = [c for line in result.stdout.splitlines() for c in line.split(",")]
    assert not any(c.lstrip('"').startswith(("=", "+", "@")) for c in cells)
    assert "'=cmd|' /C calc'!A0" in result.stdout


def test_kpis_table_strips_control_characters(tmp_path: Path) -> None:
    _store(tmp_path)
    result = CliRunner().invoke(
        app, ["kpis", "--by", "owner_id", "--format", "table", "--data", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "red" in result.stdout


def test_csv_safe_and_plain_text() -> None:
    frame = pl.DataFrame(
        {"s": ["=1+1", "+x", "-y", "@z", "\tt", "\rr", "ok", "-5", "+1.5e3", None], "n": range(10)}
    )
    out = csv_safe(frame)["s"].to_list()
    assert out == ["'=1+1", "'+x", "'-y", "'@z", "'\tt", "'\rr", "ok", "-5", "+1.5e3", None]
    assert csv_safe(frame)["n"].to_list() == list(range(10))
    assert plain_text("a\x1b[2Jb\x00c[bold]d") == "a[2Jbc\\[bold]d"
