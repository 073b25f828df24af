"""The MLflow layer against a real ``mlflow server`` (see ``conftest.mlflow_server``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from models.tracking import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT,
    champion_version,
    job_run,
    load_champion,
    log_and_register,
    promote,
)

if TYPE_CHECKING:
    from tests.models.conftest import MlflowServer

# Not marked slow: server start 5-10 s, the whole test 8-12 s on 2 cores (measured).


def test_train_and_forecast_against_a_server(
    mlflow_server: MlflowServer,
    mlflow_server_uri: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    a = np.arange(20, dtype=float)
    features = pd.DataFrame({"amount": a, "stage_order": a % 3})
    won = (a > 9).astype(int)
    good, worse = LogisticRegression(C=10.0).fit(features, won), LogisticRegression(C=0.01)
    worse.fit(features, won)
    name = "tracking-layer-test-model"  # not a dealcast model: the session server is shared

    with job_run(tmp_path, "train", params={"C": 10.0}) as train:
        train.metric("brier", 0.05, step=0)
        train.frame("reliability", pl.DataFrame({"bin": [0, 1], "observed": [0.1, 0.9]}))
        first = log_and_register(train, good, name=name, input_example=features)
        assert promote(name, first, score=0.05, higher_is_better=False) == CHAMPION
    with job_run(tmp_path, "train", params={"C": 0.01}) as retrain:
        second = log_and_register(retrain, worse, name=name, input_example=features)
        assert promote(name, second, score=0.20, higher_is_better=False) == CHALLENGER
    with job_run(tmp_path, "forecast", params={"as_of": "2026-10-01"}) as forecast:
        model = load_champion(name)
        forecast.tag("model_version", champion_version(name))
        forecast.metric("expected_bookings", float(model.predict_proba(features)[:, 1].sum()))

    # everything went to the server, nothing to a local store in the data directory
    assert not (tmp_path / "mlflow").exists()
    np.testing.assert_allclose(model.predict_proba(features), good.predict_proba(features))

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = {
        r.info.run_id: r
        for r in client.search_runs([experiment.experiment_id], max_results=100)
        if r.info.run_id in {train.run_id, retrain.run_id, forecast.run_id}
    }
    assert {r.info.run_name for r in runs.values()} == {"train", "forecast"}
    assert all(r.info.status == "FINISHED" for r in runs.values()) and len(runs) == 3
    assert runs[train.run_id].data.metrics["brier"] == 0.05
    assert runs[forecast.run_id].data.params == {"as_of": "2026-10-01"}
    assert runs[forecast.run_id].data.tags["model_version"] == "1"
    expected = float(good.predict_proba(features)[:, 1].sum())
    assert runs[forecast.run_id].data.metrics["expected_bookings"] == pytest.approx(expected)

    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    assert aliases == {CHAMPION: str(first), CHALLENGER: str(second)}
    assert client.get_model_version_by_alias(name, CHAMPION).run_id == train.run_id

    # artifacts were proxied by the server into its --artifacts-destination
    assert {a.path for a in client.list_artifacts(train.run_id)} == {"reliability.csv"}
    stored = list(mlflow_server.artifacts_dir.rglob("reliability.csv"))
    assert len(stored) == 1
    assert stored[0].read_text().splitlines() == ["bin,observed", "0,0.1", "1,0.9"]
    assert list(mlflow_server.artifacts_dir.rglob("model.skops"))

    # MLflow prints "View run ... at: <url>" banners to stdout for server runs: suppressed
    assert "View run" not in capfd.readouterr().out


def test_dealcast_train_then_forecast_against_a_server(
    mlflow_server: MlflowServer, mlflow_server_uri: str, tmp_path: Path
) -> None:
    """The real jobs: `train` registers both models there, `forecast` loads them @champion."""
    from features.forecast_log import ForecastLog
    from features.store import Store
    from pipelines.forecast import PROBABILITY_MODEL, TIMING_MODEL, run_forecast
    from pipelines.ingest import ingest_sources
    from pipelines.simulate import SimConfig, simulate_company, write_company
    from pipelines.train import run_train

    write_company(simulate_company(SimConfig(n_deals=1500, months=24, seed=3)), tmp_path / "src")
    ingest_sources([tmp_path / "src"], store=Store(tmp_path), source_format="canonical")

    trained = run_train(tmp_path, gate_origins=3)
    made = run_forecast(tmp_path, months=2, n_samples=300)

    assert not (tmp_path / "mlflow").exists()  # nothing tracked locally
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for name in (PROBABILITY_MODEL, TIMING_MODEL):
        champion = client.get_model_version_by_alias(name, CHAMPION)
        assert champion.run_id == trained["run_id"]
    assert made["models"] == "registry @champion"
    assert made["model_version"] == (
        f"{PROBABILITY_MODEL}@v{trained['version']}, {TIMING_MODEL}@v{trained['timing_version']}"
    )
    train_run, forecast_run = client.get_run(trained["run_id"]), client.get_run(made["run_id"])
    assert train_run.info.run_name == "train" and forecast_run.info.run_name == "forecast"
    assert train_run.data.metrics["brier"] == pytest.approx(trained["brier"])
    total = made["summary"].filter((pl.col("by") == "") & (pl.col("period") == "month"))
    history = sorted((m.step, m.value) for m in client.get_metric_history(made["run_id"], "p50"))
    assert [step for step, _ in history] == total["horizon"].to_list()
    assert [value for _, value in history] == pytest.approx(total["p50"].to_list())
    artifacts = {a.path for a in client.list_artifacts(made["run_id"])}
    assert {"fan_chart.png", "forecast.csv", "kept.csv"} <= artifacts
    kept = ForecastLog(tmp_path).read()
    assert kept["forecast_id"].unique().to_list() == [made["forecast_id"]]
    assert set(kept["method"]) == {"dealcast", "stage_weighted_crm", "stage_weighted_hist"}
