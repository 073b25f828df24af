from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import features.store as store_module
from features.contract import DEFAULT_PIPELINE
from features.store import Store, StoreNotFoundError


def _deals(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": [f"d{i}" for i in range(n)],
            "created_at": [datetime(2024, 1, 1, tzinfo=UTC)] * n,
            "owner_id": ["o"] * n,
            "stage": ["Demo"] * n,
            "amount": [float(i) for i in range(n)],
        }
    )


def test_missing_store_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="run `dealcast ingest SOURCE`"):
        Store(tmp_path).load()


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path)
    truth = pl.DataFrame({"deal_id": ["d0"], "probability": [0.3]})
    store.write({"deals": _deals(3)}, DEFAULT_PIPELINE, truth={"truth_probabilities": truth})
    history = store.load()
    assert history.deals.collect()["deal_id"].to_list() == ["d0", "d1", "d2"]
    assert history.pipeline == DEFAULT_PIPELINE
    assert history.history_is_derived and history.has == frozenset({"deals"})
    assert store.manifest()["rows"] == {"deals": 3}
    got = store.truth("truth_probabilities")
    assert got is not None
    assert_frame_equal(got.collect(), truth)
    assert store.truth("truth_anomalies") is None


def test_rewrite_replaces_and_keeps_the_last_versions(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for n in (1, 2, 3, 4, 5):
        store.write({"deals": _deals(n)}, DEFAULT_PIPELINE)
    assert store.load().deals.collect().height == 5
    versions = [p for p in store.versions.iterdir() if not p.name.startswith(".")]
    assert len(versions) == store_module.KEEP_VERSIONS


def test_failure_mid_write_leaves_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.write({"deals": _deals(2)}, DEFAULT_PIPELINE)
    before = store.current()
    calls = {"n": 0}
    real = store_module._write_parquet

    def fail_second(frame: pl.DataFrame, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(frame, path)

    monkeypatch.setattr(store_module, "_write_parquet", fail_second)
    with pytest.raises(OSError, match="disk full"):
        store.write(
            {"deals": _deals(5), "reps": pl.DataFrame({"owner_id": ["o"]})}, DEFAULT_PIPELINE
        )
    assert store.current() == before
    assert store.load().deals.collect().height == 2
    monkeypatch.undo()
    store.write({"deals": _deals(1)}, DEFAULT_PIPELINE)  # the next write sweeps the debris
    assert not list(store.versions.glob(".staging-*"))


def test_unknown_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not canonical tables: leads"):
        Store(tmp_path).write({"deals": _deals(1), "leads": _deals(1)}, DEFAULT_PIPELINE)
