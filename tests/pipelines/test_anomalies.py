"""``dealcast anomalies``: every detector, by severity; ``--evaluate`` against the truth.

One simulated company (6,000 deals over 24 months, seed 13, anomalies on) ingested once.
The acceptance figures of the issue are measured on the default company by
``dealcast anomalies --evaluate`` (bench/README.md); here the same command runs on a smaller
company and must find most of what was injected.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.kpis.periods import known_at
from features.store import Store
from models.anomalies.kpi import DetectorConfig, detect_kpi_anomalies
from pipelines.cli import app as cli

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("anomalies")
    src = root / "source"
    _ok("simulate", "--out", str(src), "--deals", "6000", "--months", "24", "--seed", "13")
    _ok("ingest", str(src), "--data", str(root / "data"))
    return root / "data"


def test_evaluate_finds_most_injected_anomalies_with_few_false_alarms(data: Path) -> None:
    report = json.loads(_ok("anomalies", "--evaluate", "--format", "json", "--data", str(data)))
    assert {"precision", "recall", "false_alarms_per_month"} <= set(report)
    assert report["labels"] == 5 and report["months"] == 12  # the second half of 24 months
    assert report["recall"] >= 0.6, report["per_label"]
    assert report["precision"] >= 0.5, report["false_alarms"]
    assert report["false_alarms_per_month"] <= 1.0
    found = {p["kind"] for p in report["per_label"] if p["found"]}
    assert {"win_rate_collapse", "stage_conversion_break"} <= found


def test_detectors_never_read_the_truth(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Store, name: str) -> None:
        raise AssertionError(f"a detector read the truth table {name}")

    monkeypatch.setattr(Store, "truth", refuse)
    out = json.loads(
        _ok("anomalies", "--format", "json", "--since", "2025-11-01", "--data", str(data))
    )
    assert out["detectors"] == ["kpi", "rep", "data_quality", "deal"]
    assert out["counts"]["kpi_anomalies"] >= 1


def test_anomalies_are_listed_by_severity_with_their_evidence(data: Path) -> None:
    out = json.loads(
        _ok("anomalies", "--format", "json", "--since", "2025-11-01", "--data", str(data))
    )
    rows = out["anomalies"]
    rank = {"high": 0, "medium": 1, "low": 2}
    assert [(rank[r["severity"]], -r["score"]) for r in rows] == sorted(
        (rank[r["severity"]], -r["score"]) for r in rows
    )
    kpi = [r for r in rows if r["kind"] == "kpi"]
    assert kpi and all(r["period_start"] >= "2025-11-01" for r in kpi)
    for r in kpi:
        assert r["summary"] and r["expected"] is not None
        assert r["band_low"] <= r["expected"] <= r["band_high"]
        assert (r["observed"] < r["expected"]) == (r["direction"] == "down")
    assert sum(out["counts"][f"{k}_anomalies"] for k in out["detectors"]) == len(rows)
    assert out["run_id"]
    table = _ok("anomalies", "--since", "2025-11-01", "--data", str(data))
    assert "deal risk flags not listed" in table


def test_a_detection_as_of_a_day_is_blind_to_everything_after_it(data: Path) -> None:
    history = Store(data).load()
    as_of, since = date(2026, 3, 1), date(2025, 12, 1)
    config = DetectorConfig(prophet=False)
    full, _ = detect_kpi_anomalies(history, as_of=as_of, since=since, config=config)
    cut = known_at(history, datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC))
    blind, _ = detect_kpi_anomalies(cut, as_of=as_of, since=since, config=config)
    assert full.height >= 1
    assert full.equals(blind)
    assert full.filter(pl.col("period_end") > as_of).is_empty()


def test_evaluate_without_truth_is_a_clear_error(tmp_path: Path, data: Path) -> None:
    result = runner.invoke(cli, ["anomalies", "--evaluate", "--data", str(tmp_path / "none")])
    assert result.exit_code != 0
