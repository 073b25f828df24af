"""The main job and the read-side commands, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.store import Store
from pipelines.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("demo")
    # a smaller company than the default keeps the suite quick; the flow is the same
    result = runner.invoke(app, ["demo", "--data", str(data), "--no-serve", "--deals", "4000"])
    assert result.exit_code == 0, result.output
    return data, result.output


def test_demo_prints_kpis_of_four_quarters_and_the_pipeline(demo_data: tuple[Path, str]) -> None:
    data, output = demo_data
    assert Store(data).exists()
    assert "KPIs of the last four complete quarters (data ends 2026-10-31)" in output
    for quarter in ("2025-Q4", "2026-Q1", "2026-Q2", "2026-Q3"):
        assert quarter in output
    assert "Open pipeline by stage" in output
    assert "quarantined" in output


def test_demo_trains_backtests_and_forecasts(demo_data: tuple[Path, str]) -> None:
    data, output = demo_data
    assert "registered v1 as @champion" in output
    assert "Backtest league table — origins 2025-11...2026-10" in output
    for method in ("dealcast", "stage_weighted_crm", "prophet_only", "run_rate"):
        assert method in output
    assert "Bookings forecast as of 2026-11-01 00:00 UTC" in output and "Q4 2026" in output
    assert "registry @champion" in output
    assert f"sqlite:///{data.resolve()}/mlflow/mlflow.db" in output.replace("\n", "")


def test_snapshot_json_matches_the_store(demo_data: tuple[Path, str]) -> None:
    data, _ = demo_data
    result = runner.invoke(
        app, ["snapshot", "--data", str(data), "--as-of", "2026-06-30", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and {"deal_id", "stage", "days_in_stage", "label_outcome"} <= set(rows[0])
    assert {r["as_of"][:10] for r in rows} == {"2026-06-30"}


def test_snapshot_parquet_needs_out(demo_data: tuple[Path, str], tmp_path: Path) -> None:
    data, _ = demo_data
    bad = runner.invoke(app, ["snapshot", "--data", str(data), "--as-of", "2026-06-30"])
    assert bad.exit_code == 2 and "needs --out" in bad.output
    out = tmp_path / "snap.parquet"
    ok = runner.invoke(
        app, ["snapshot", "--data", str(data), "--as-of", "2026-06-30", "--out", str(out)]
    )
    assert ok.exit_code == 0
    assert pl.read_parquet(out).height > 0


def test_kpis_json_by_region(demo_data: tuple[Path, str]) -> None:
    data, _ = demo_data
    result = runner.invoke(
        app,
        [
            "kpis",
            "--data",
            str(data),
            "--period",
            "quarter",
            "--by",
            "region",
            "--format",
            "json",
            "--from",
            "2026-01-01",
            "--to",
            "2026-06-30",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["period"] for r in rows} == {"2026-Q1", "2026-Q2"}
    assert {r["region"] for r in rows} >= {"NA", "EMEA"}
    assert all(r["bookings"] >= 0 for r in rows)


def test_commands_without_a_store_say_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["kpis", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "dealcast ingest" in result.output


def test_bad_date_names_the_option(tmp_path: Path) -> None:
    result = runner.invoke(app, ["snapshot", "--data", str(tmp_path), "--as-of", "30/06/2026"])
    assert result.exit_code == 2
    assert "--as-of expects a date like 2026-06-30" in result.output


def test_simulate_refuses_bad_config_with_a_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--months", "2"])
    assert result.exit_code == 2
    assert "error:" in result.output and "months" in result.output
    assert not list(tmp_path.iterdir())
