"""A data directory can be copied or moved: its MLflow store follows it (models.tracking)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from models.tracking import (
    artifact_root,
    job_run,
    load_champion,
    log_and_register,
    promote,
    relocate_artifacts,
    tracking_uri,
)

NAME = "dealcast-relocate-test"


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root``: relative path -> (size, mtime in ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _features() -> tuple[pd.DataFrame, np.ndarray]:
    a = np.arange(20, dtype=float)
    return pd.DataFrame({"amount": a, "stage_order": a % 3}), (a > 9).astype(int)


def _locations(data_dir: Path) -> list[str]:
    """Every artifact location MLflow recorded in the data directory's database."""
    con = sqlite3.connect(data_dir / "mlflow" / "mlflow.db")
    try:
        return [
            row[0]
            for query in (
                "SELECT artifact_location FROM experiments WHERE name = 'dealcast'",
                "SELECT artifact_uri FROM runs",
                "SELECT artifact_location FROM logged_models",
                "SELECT storage_location FROM model_versions",
            )
            for row in con.execute(query)
        ]
    finally:
        con.close()


def test_a_copied_data_dir_logs_and_reads_its_own_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    original = tmp_path / "original"
    features, won = _features()
    with job_run(original, "train", params={"deals": 20}) as first:
        first.frame("scores", pl.DataFrame({"deal_id": ["D1", "D2"], "p": [0.2, 0.7]}))
        version = log_and_register(
            first, LogisticRegression().fit(features, won), name=NAME, input_example=features
        )
        promote(NAME, version, score=0.5, higher_is_better=True)
    before = _files(original)

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    with job_run(copy, "forecast", params={"months": 3}) as second:
        second.frame("forecast", pl.DataFrame({"month": ["2026-11"], "p50": [1.0]}))
        version2 = log_and_register(
            second, LogisticRegression(C=0.5).fit(features, won), name=NAME, input_example=features
        )
        promote(NAME, version2, score=0.9, higher_is_better=True)

    assert _files(original) == before  # not a byte, not a new file in the original
    copy_root = artifact_root(copy).as_uri()
    locations = _locations(copy)
    assert locations and all(loc.startswith(copy_root) for loc in locations), locations
    assert all(loc.startswith(artifact_root(original).as_uri()) for loc in _locations(original))

    # The copy is self-contained: its runs' artifacts and its champion read without the original.
    shutil.rmtree(original)
    client = MlflowClient(tracking_uri=tracking_uri(copy))
    for run, name in ((first, "scores.csv"), (second, "forecast.csv")):
        path = client.download_artifacts(run.run_id, name, str(tmp_path))
        assert pl.read_csv(path).height == (2 if name == "scores.csv" else 1)
    model = load_champion(NAME, data_dir=copy)
    assert model.C == 0.5
    assert model.predict_proba(features).shape == (20, 2)


def test_relocate_is_a_no_op_in_place_and_without_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert relocate_artifacts(tmp_path / "nothing-here") is None
    assert not (tmp_path / "nothing-here").exists()
    with job_run(tmp_path / "data", "evaluate", params={}) as run:
        run.metric("wape", 0.1)
    assert relocate_artifacts(tmp_path / "data") is None  # already in place
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    assert relocate_artifacts(moved) == artifact_root(tmp_path / "data").as_uri()
    assert relocate_artifacts(moved) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert relocate_artifacts(moved) is None  # a server decides where artifacts live
