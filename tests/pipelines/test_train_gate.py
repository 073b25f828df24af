"""The champion gate of `dealcast train`: a close probability worse than stage rates on the
held-out period is never `@champion`, even with no sitting champion (failure 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import pipelines.train as train_job
from features.contract import DEFAULT_PIPELINE
from features.store import Store
from models.tracking import (
    CHALLENGER,
    CHAMPION,
    VETO_TAG,
    champion_version,
    job_run,
    load_champion,
    log_and_register,
    promote,
    tracking_uri,
)
from pipelines.cli import app
from tests.models.deals.test_sparse_exports import export

runner = CliRunner()


def test_veto_keeps_a_version_from_champion_with_no_sitting_one(tmp_path: Path) -> None:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    import pandas as pd

    with job_run(tmp_path, "train", params={}) as run:
        version = log_and_register(
            run, model, name="gate-test", input_example=pd.DataFrame({"x": [0.0, 1.0]})
        )
    reason = "close probability Brier 0.2540 on the held-out period is not below stage 0.2280"
    alias = promote(
        "gate-test", version, score=0.1, higher_is_better=False, data_dir=tmp_path, veto=reason
    )
    assert alias == CHALLENGER
    assert champion_version("gate-test", data_dir=tmp_path) is None
    client = MlflowClient(tracking_uri(tmp_path))
    assert client.get_model_version("gate-test", str(version)).tags[VETO_TAG] == reason
    # without a veto the same rules as before: no champion yet -> champion
    with job_run(tmp_path, "train", params={}) as run:
        second = log_and_register(
            run, model, name="gate-test", input_example=pd.DataFrame({"x": [0.0, 1.0]})
        )
    assert (
        promote("gate-test", second, score=0.5, higher_is_better=False, data_dir=tmp_path)
        == CHAMPION
    )


def test_stage_rate_veto_says_why() -> None:
    worse = {"brier": 0.254, "baseline_brier": 0.228, "baseline": "stage win rates"}
    reason = train_job.stage_rate_veto(worse)
    assert reason is not None and "0.2540" in reason and "stage win rates 0.2280" in reason
    assert train_job.stage_rate_veto({"brier": 0.137, "baseline_brier": 0.1606}) is None
    assert train_job.stage_rate_veto({"brier": 0.2, "baseline_brier": 0.2}) is not None  # a tie
    assert train_job.stage_rate_veto({}) is None  # nothing held out: nothing to judge


@pytest.fixture(scope="module")
def export_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat export: deals only (derived history), no activities, no expected close dates."""
    data = tmp_path_factory.mktemp("flat-export")
    deals = export(derived=True).deals.collect()
    Store(data).write({"deals": deals}, DEFAULT_PIPELINE)
    return data


def test_train_on_a_flat_export_never_crowns_a_model_worse_than_stage_rates(
    export_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boosted model lost on held-out data: the stage rates are registered in its place
    (champion, so publish works), and the booster is never registered at all."""
    real = train_job.evaluate_close_probability

    def worse(*args: object, **kwargs: object):  # noqa: ANN202
        evaluation = real(*args, **kwargs)  # type: ignore[arg-type]
        base = float(evaluation.metrics["baseline_brier"])  # type: ignore[arg-type]
        evaluation.metrics["brier"] = base + 0.026
        return evaluation

    monkeypatch.setattr(train_job, "evaluate_close_probability", worse)
    result = runner.invoke(app, ["train", "--data", str(export_store), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    assert out["version"] == 1 and out["alias"] == CHAMPION
    assert out["gate"].startswith("stage win rates registered in place of the boosted model")
    assert "overall win rate" in out["baseline"]
    # the features left out, and why
    assert "no stage history: stage" in out["features_dropped"]
    assert "days_to_expected_close" in out["features_dropped"]
    client = MlflowClient(tracking_uri(export_store))
    run = client.get_run(out["run_id"])
    assert run.data.tags["dealcast.gate_veto"] in out["gate"]
    assert "no stage history" in run.data.params["features.probability_dropped"]
    assert run.data.params["features.stage_history"] == "derived"
    assert "features.json" in {a.path for a in client.list_artifacts(out["run_id"])}
    version = client.get_model_version("dealcast-close-probability", "1")
    assert version.tags[train_job.STAGE_RATES_TAG] in out["gate"]
    champion = load_champion("dealcast-close-probability", data_dir=export_store)
    assert champion.booster is False and champion.estimator_ is None
    assert champion.fallback_ is not None and champion.fallback_.startswith("stage win rates")
