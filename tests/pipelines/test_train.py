"""`dealcast train`: metrics printed as JSON, one MLflow run, a registered version, the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from models.tracking import tracking_uri
from pipelines.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("train")
    src = data / "src"
    assert (
        runner.invoke(
            app, ["simulate", "--out", str(src), "--deals", "2000", "--months", "24"]
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["ingest", str(src), "--data", str(data)]).exit_code == 0
    return data


def test_train_prints_metrics_and_registers(demo_store: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(demo_store), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    for key in ("brier", "auc", "ece", "log_loss", "baseline_brier", "oracle_brier"):
        assert isinstance(out[key], float)
    assert out["alias"] == "champion" and out["version"] == 1
    client = MlflowClient(tracking_uri(demo_store))
    run = client.get_run(out["run_id"])
    assert run.data.metrics["brier"] == pytest.approx(out["brier"])
    artifacts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert "reliability.png" in artifacts and "feature_importance.csv" in artifacts
    assert "gate_backtest.csv" in artifacts
    # the timing model is registered by the same run, gated by the same backtest score
    assert out["timing_version"] == 1 and out["timing_alias"] == "champion"
    assert out["gate_metric"] == "backtest WAPE, month 0"
    assert 0.0 < out["backtest_wape_h0"] < 1.0
    assert run.data.metrics["backtest_wape_h0"] == pytest.approx(out["backtest_wape_h0"])
    timing = client.get_model_version_by_alias("dealcast-close-timing", "champion")
    assert timing.run_id == out["run_id"]
    assert timing.tags["dealcast.cutoff"].startswith("20")
    # what the forecast publishes, per horizon, chosen on that backtest: never above the best
    # applicable baseline there, with the honest nested figure beside it
    assert len(out["forecast_choice"]) == 3 and out["forecast_choice"][0].startswith("h0: ")
    for h in range(3):
        assert out[f"published_wape_h{h}"] <= out[f"best_baseline_wape_h{h}"] + 1e-12
        assert out[f"published_wape_h{h}"] <= out[f"backtest_wape_h{h}"] + 1e-12
        assert isinstance(out[f"nested_wape_h{h}"], float)
        assert 0.0 <= out[f"published_coverage_h{h}"] <= 1.0
    assert {r["horizon"] for r in out["league"] if r["chosen"]} == {0, 1, 2}
    assert "forecast_choice.json" in artifacts and "tuning.csv" in artifacts
    assert out["tuning"].endswith("(2 time folds)") or out["tuning"].startswith("defaults")
    probability = client.get_model_version_by_alias("dealcast-close-probability", "champion")
    choice = json.loads(probability.tags["dealcast.forecast_choice"])
    assert [c["horizon"] for c in choice["horizons"]] == [0, 1, 2]
    # the same data again cannot beat the champion: the new version is only a challenger
    again = runner.invoke(app, ["train", "--data", str(demo_store), "--format", "json"])
    second = json.loads(again.stdout[again.stdout.index("{") :])
    assert second["version"] == 2 and second["alias"] == "challenger"
    assert second["timing_version"] == 2 and second["timing_alias"] == "challenger"
