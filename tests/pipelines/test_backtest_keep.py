"""`dealcast backtest --keep`: each origin's company forecasts kept as retrospective forecasts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from features.forecast_log import ForecastLog
from models.forecast.backtest import Backtest
from models.metrics import P10, P90
from pipelines.backtest import RETROSPECTIVE, kept_from_backtest


def _backtest(by: list[str]) -> Backtest:
    frame = pl.DataFrame(
        {
            "segment": ["total"] * 3,
            "origin": [date(2026, 1, 1), date(2026, 1, 1), date(2026, 2, 1)],
            "target_month": [date(2026, 1, 1), date(2026, 2, 1), date(2026, 2, 1)],
            "horizon": [0, 1, 0],
            "actual": [100.0, 120.0, 120.0],
            "dealcast": [90.0, 130.0, 118.0],
            f"dealcast{P10}": [70.0, 100.0, 95.0],
            f"dealcast{P90}": [110.0, 160.0, 140.0],
            "stage_weighted_crm": [150.0, 60.0, 170.0],
            "stage_weighted_hist": [140.0, 70.0, 160.0],
            "run_rate": [100.0, 100.0, 110.0],
        }
    )
    return Backtest(frame, pl.DataFrame(), [date(2026, 1, 1), date(2026, 2, 1)], [0, 1], by)


def test_each_origin_becomes_one_kept_forecast_of_the_kept_methods(tmp_path: Path) -> None:
    frames = kept_from_backtest(_backtest([]))
    assert [f["forecast_id"][0] for f in frames] == ["backtest-2026-01", "backtest-2026-02"]
    first = frames[0].sort("method", "horizon")
    assert set(first["method"]) == {"dealcast", "stage_weighted_crm", "stage_weighted_hist"}
    dealcast = first.filter(pl.col("method") == "dealcast")
    assert dealcast["p50"].to_list() == [90.0, 130.0]
    assert dealcast["p10"].to_list() == [70.0, 100.0]
    assert dealcast["p90"].to_list() == [110.0, 160.0]
    crm = first.filter(pl.col("method") == "stage_weighted_crm")
    assert crm["p10"].null_count() == 2 and crm["p50"].to_list() == [150.0, 60.0]
    assert set(first["model_version"]) == {RETROSPECTIVE}
    assert first["as_of"].dt.day().to_list() == [1] * first.height
    log = ForecastLog(tmp_path)
    for frame in frames:
        log.append(frame)
    assert log.read().height == sum(f.height for f in frames)


def test_a_per_segment_backtest_keeps_nothing() -> None:
    assert kept_from_backtest(_backtest(["region"])) == []
