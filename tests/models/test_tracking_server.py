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
    name = "dealcast-close-probability"

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
