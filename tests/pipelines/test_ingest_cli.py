"""``dealcast ingest`` through the CLI: printed counts, exit code 2 on a file-level failure."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from features.store import Store
from pipelines.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
DEALS = "deal_id,created_at,owner_id,stage,amount\n"


def test_cli_prints_read_loaded_quarantined_per_table(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "deals.csv").write_text(
        DEALS + "D1,2024-01-05,r1,Discovery,100\nD2,2024-01-05,r1,Discovery,-3\n"
        "D3,2024-01-06,r2,Demo,50\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["ingest", str(source), "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "deals" in line and "│" in line)
    assert [cell.strip() for cell in row.split("│")[3:6]] == ["3", "2", "1"]
    assert "1 row quarantined: see" in result.output
    assert Store(tmp_path / "data").load().deals.collect().height == 2


def test_cli_salesforce_with_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(FIXTURES / "salesforce"),
            "--source-format",
            "salesforce",
            "--data",
            str(tmp_path / "data"),
        ],
    )
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if "│" in line]
    counts = {cells[1]: cells[3:6] for cells in (re.split(r"\s*│\s*", t) for t in table)}
    assert counts["deals"] == ["8", "5", "3"]
    assert counts["stage_history"] == ["13", "10", "3"]


def test_cli_flat_with_map_flags_and_date_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(FIXTURES / "flat" / "opportunities.csv"),
            "--source-format",
            "flat",
            "--map",
            "deal_id=Opportunity ID",
            "--map",
            "owner_id=Opportunity Owner",
            "--map",
            "created_at=Created Date",
            "--map",
            "close_date=Close Date",
            "--date-format",
            "%d/%m/%Y",
            "--pipeline",
            str(FIXTURES / "flat" / "stages.toml"),
            "--data",
            str(tmp_path / "data"),
        ],
    )
    assert result.exit_code == 0, result.output
    deals = Store(tmp_path / "data").load().deals.collect()
    assert sorted(deals["deal_id"].to_list()) == ["OPP-1", "OPP-2", "OPP-3", "OPP-4", "OPP-5"]


def test_cli_file_level_failure_exits_2_with_the_message(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "deals.csv").write_text(
        "deal_id,created_at,stage,amount\nD1,2024-01-05,Demo,1\n", encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["ingest", str(source), "--data", str(tmp_path / "data")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "error:" in text
    assert "required column 'owner_id' of deals is missing" in text
    assert "--map owner_id=<your column name>" in text
    assert not Store(tmp_path / "data").exists()
