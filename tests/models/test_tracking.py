"""The MLflow layer against a local SQLite store: runs, artifacts, the champion gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import polars as pl
import pytest
from matplotlib.figure import Figure
from mlflow.models import get_model_info
from mlflow.tracking import MlflowClient
from polars.testing import assert_frame_equal
from sklearn.linear_model import LogisticRegression

from models.tracking import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT,
    SCORE_TAG,
    NoChampionError,
    champion_version,
    job_run,
    load_champion,
    log_and_register,
    promote,
    tracking_uri,
)

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One store for the module: creating a fresh MLflow SQLite schema takes seconds."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield tmp_path_factory.mktemp("data")
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def local(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return data_dir


def _client(data_dir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(data_dir))


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version, as strings (stores differ: SQLite returns ints)."""
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def _tiny_data() -> tuple[pd.DataFrame, pd.Series]:
    a = np.arange(20, dtype=float)
    features = pd.DataFrame({"amount": a, "stage_order": a % 3})
    return features, pd.Series((a > 9).astype(int), name="won")


def _tiny_model(c: float) -> LogisticRegression:
    features, won = _tiny_data()
    return LogisticRegression(C=c).fit(features, won)


def test_tracking_uri_default_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert tracking_uri(tmp_path) == expected
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri(tmp_path) == "http://mlflow.internal:5000"


def test_job_run_logs_params_metrics_and_artifacts(
    local: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns of the working directory
    table = pl.DataFrame(
        {
            "segment": ["all", "all", "smb"],
            "target_month": [date(2026, 8, 1), date(2026, 9, 1), date(2026, 9, 1)],
            "actual": [120.5, 98.0, 40.25],
        }
    )
    figure = Figure()
    figure.add_subplot().plot([1, 2, 3], [3, 1, 2])
    with job_run(
        local,
        "backtest",
        params={"horizons": 3, "as_of": date(2026, 10, 1), "model": {"max_iter": 50}},
        tags={"segment": "all"},
    ) as run:
        for step, wape in enumerate([0.30, 0.20, 0.10]):
            run.metric("wape", wape, step=step)
        run.metrics({"bias": -0.05, "coverage": 0.8}, step=2)
        assert run.frame("backtest", table) == "backtest.csv"
        assert run.figure("fan_chart", figure) == "fan_chart.png"
        assert run.json("importances", {"amount": np.float64(0.75), "as_of": date(2026, 10, 1)})
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the job's URI did not leak into the env

    client = _client(local)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "backtest"
    assert logged.data.tags["dealcast.job"] == "backtest"
    assert logged.data.tags["segment"] == "all"
    assert logged.data.params == {"horizons": "3", "as_of": "2026-10-01", "model.max_iter": "50"}
    history = client.get_metric_history(run.run_id, "wape")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.30), (1, 0.20), (2, 0.10)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "coverage")] == [
        (2, 0.8)
    ]
    assert logged.data.metrics["bias"] == -0.05

    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert names == {"backtest.csv", "fan_chart.png", "importances.json"}
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    root = local.resolve() / "mlflow" / "artifacts"
    assert experiment.artifact_location == root.as_uri()
    run_dir = root / run.run_id / "artifacts"
    back = pl.read_csv(run_dir / "backtest.csv", try_parse_dates=True)
    assert_frame_equal(back, table)
    assert (run_dir / "fan_chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "importances.json").read_text()) == {
        "amount": 0.75,
        "as_of": "2026-10-01",
    }
    assert not (tmp_path / "mlruns").exists()


def test_failing_job_ends_its_run_failed(local: Path) -> None:
    with pytest.raises(ValueError, match="boom"), job_run(local, "train", params={"seed": 1}):
        raise ValueError("boom")
    client = _client(local)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`dealcast.job` = 'train'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    # the failed run is closed: the next job starts its own run
    with job_run(local, "evaluate", params={}) as run:
        run.metric("n_scored", 4)
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_bad_artifact_name_is_refused(local: Path) -> None:
    with (
        pytest.raises(ValueError, match="artifact name 'a/b' is not allowed"),
        job_run(local, "forecast", params={}) as run,
    ):
        run.json("a/b", {})


def test_champion_gate_and_load(local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "dealcast-close-probability"
    features, _ = _tiny_data()
    models = {1: _tiny_model(1.0), 2: _tiny_model(0.01), 3: _tiny_model(100.0)}
    wape = {1: 0.30, 2: 0.40, 3: 0.20}  # lower is better
    client = _client(local)
    aliases = {}
    for expected_version, model in models.items():
        with job_run(local, "train", params={"C": model.C}) as run:
            version = log_and_register(run, model, name=name, input_example=features)
            assert version == expected_version
            aliases[version] = promote(name, version, score=wape[version], higher_is_better=False)
        after = _aliases(client, name)
        if version == 1:
            assert after == {CHAMPION: "1"}
        if version == 2:  # worse: the champion stays
            assert after == {CHAMPION: "1", CHALLENGER: "2"}
    assert aliases == {1: CHAMPION, 2: CHALLENGER, 3: CHAMPION}
    assert _aliases(client, name) == {CHAMPION: "3", CHALLENGER: "2"}
    assert client.get_model_version(name, "1").aliases == []
    assert client.get_model_version(name, "3").tags[SCORE_TAG] == "0.2"
    assert champion_version(name, data_dir=local) == 3

    loaded = load_champion(name, data_dir=local)
    np.testing.assert_allclose(loaded.predict_proba(features), models[3].predict_proba(features))
    assert not np.allclose(loaded.predict_proba(features), models[1].predict_proba(features))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri(local))  # for get_model_info
    info = get_model_info(f"models:/{name}/3")
    assert info.signature is not None
    assert info.signature.inputs.input_names() == ["amount", "stage_order"]
    assert tuple(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 2)
    assert info.flavors["python_function"]["predict_fn"] == "predict_proba"
    assert info.saved_input_example_info is not None


def test_promote_refuses_mixed_score_directions(local: Path) -> None:
    name = "dealcast-close-timing"
    features, _ = _tiny_data()
    with job_run(local, "train", params={}) as run:
        first = log_and_register(run, _tiny_model(1.0), name=name, input_example=features)
        second = log_and_register(
            run, _tiny_model(2.0), name=name, input_example=pl.from_pandas(features)
        )
    assert promote(name, first, score=0.3, higher_is_better=False, data_dir=local) == CHAMPION
    with pytest.raises(ValueError, match="higher_is_better=False"):
        promote(name, second, score=0.9, higher_is_better=True, data_dir=local)
    # a tie does not dethrone the champion
    assert promote(name, second, score=0.3, higher_is_better=False, data_dir=local) == CHALLENGER


def test_log_and_register_needs_the_open_run(local: Path) -> None:
    features, _ = _tiny_data()
    with job_run(local, "train", params={}) as run:
        pass
    with pytest.raises(RuntimeError, match="inside the job_run block"):
        log_and_register(run, _tiny_model(1.0), name="dealcast-x", input_example=features)


def test_no_champion_error_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(NoChampionError, match="run `dealcast train` first"):
        load_champion("dealcast-close-probability", data_dir=tmp_path)
    assert champion_version("dealcast-close-probability", data_dir=tmp_path) is None
    assert not (tmp_path / "mlflow").exists()  # looking did not create a store


def test_registry_calls_need_a_store_outside_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="pass data_dir="):
        promote("dealcast-close-probability", 1, score=0.1, higher_is_better=False)


_TELEMETRY_PROBE = """
import models.tracking  # noqa: F401
from mlflow.telemetry import get_telemetry_client
print(get_telemetry_client() is None)
"""


def test_importing_tracking_disables_mlflow_telemetry() -> None:
    # A clean process: pytest and CI variables would disable telemetry on their own.
    ci_markers = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ci_markers and k not in {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    }
    result = subprocess.run(
        [sys.executable, "-c", _TELEMETRY_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "True"
