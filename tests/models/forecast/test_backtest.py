"""The rolling-origin backtest on a small simulated company (two origins): the long frame's
contract, its actuals, the scored months, the summary, segments and the acceptance figures."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from features.calendar import instant
from features.contract import DealHistory
from models.forecast.backtest import (
    BASELINES,
    METHODS,
    Backtest,
    acceptance,
    month_origins,
    run_backtest,
)
from models.forecast.revenue import revenue_forecast
from models.forecast.selection import DERIVED
from models.metrics import summarise
from pipelines.simulate import SimConfig, simulate_company

# History [2025-05-01, 2026-11-01): October 2026 is the last closed month.
CONFIG = SimConfig(n_deals=2000, months=18, seed=5, anomalies=False)
ORIGINS = [date(2026, 9, 1), date(2026, 8, 1)]  # unsorted on purpose
SAMPLES = 200
COLUMNS = [
    "segment",
    "origin",
    "target_month",
    "horizon",
    "actual",
    "dealcast",
    "dealcast__p10",
    "dealcast__p90",
    "stage_weighted_crm",
    "stage_weighted_hist",
    "prophet_only",
    "prophet_only__p10",
    "prophet_only__p90",
    "seasonal_naive",
    "run_rate",
    "blend",
    "published",
    "published__p10",
    "published__p90",
    "published_nested",
]
SCORED = (*METHODS, *DERIVED)


@pytest.fixture(scope="module")
def history() -> DealHistory:
    sim = simulate_company(CONFIG)
    return DealHistory.from_frames(**sim.tables, pipeline=sim.pipeline)


@pytest.fixture(scope="module")
def total(history: DealHistory) -> tuple[Backtest, list[date]]:
    seen: list[date] = []
    return run_backtest(history, ORIGINS, n_samples=SAMPLES, on_origin=seen.append), seen


@pytest.fixture(scope="module")
def regional(history: DealHistory) -> Backtest:
    return run_backtest(history, ORIGINS, n_samples=SAMPLES, by="region")


def _bookings(history: DealHistory, region: str | None = None) -> dict[date, float]:
    won = history.deals.filter(pl.col("stage") == "Closed Won").collect()
    if region is not None:
        won = won.filter(pl.col("region") == region)
    monthly = won.group_by(pl.col("closed_at").dt.truncate("1mo").dt.date().alias("m")).agg(
        pl.col("amount").sum()
    )
    return dict(zip(monthly["m"].to_list(), monthly["amount"].to_list(), strict=True))


def test_month_origins() -> None:
    assert month_origins(date(2025, 11, 15), date(2026, 2, 3)) == [
        date(2025, 11, 1),
        date(2025, 12, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    ]
    assert month_origins(date(2026, 3, 31), date(2026, 3, 1)) == [date(2026, 3, 1)]
    assert month_origins(date(2026, 4, 1), date(2026, 3, 31)) == []


def test_frame_has_the_documented_columns_and_only_closed_months(
    history: DealHistory, total: tuple[Backtest, list[date]]
) -> None:
    backtest, seen = total
    frame = backtest.frame
    assert frame.columns == COLUMNS
    assert backtest.origins == seen == sorted(ORIGINS)  # each origin reported, in time order
    assert backtest.horizons == [0, 1, 2] and backtest.by == []
    # Aug: Aug, Sep, Oct; Sep: Sep, Oct (November has not closed when the data ends)
    assert frame.select("origin", "horizon", "target_month").rows() == [
        (date(2026, 8, 1), 0, date(2026, 8, 1)),
        (date(2026, 8, 1), 1, date(2026, 9, 1)),
        (date(2026, 8, 1), 2, date(2026, 10, 1)),
        (date(2026, 9, 1), 0, date(2026, 9, 1)),
        (date(2026, 9, 1), 1, date(2026, 10, 1)),
    ]
    assert (frame["segment"] == "total").all()
    bookings = _bookings(history)
    assert frame["actual"].to_list() == pytest.approx([bookings[m] for m in frame["target_month"]])
    methods = frame.select(COLUMNS[: -len(DERIVED) - 2])
    assert methods.null_count().row(0) == (0,) * methods.width  # a year of history: no gaps
    # two origins per horizon: too few errors for a published interval, none to nest with
    assert frame["published_nested"].null_count() == 3
    for method in ("dealcast", "prophet_only"):
        assert (frame[f"{method}__p10"] <= frame[method]).all()
        assert (frame[method] <= frame[f"{method}__p90"]).all()
        assert (frame[f"{method}__p10"] < frame[f"{method}__p90"]).all()
    # the baselines are the same month a year before and the mean of the last three months
    for row in frame.iter_rows(named=True):
        month = row["target_month"]
        assert row["seasonal_naive"] == pytest.approx(bookings[month.replace(year=2025)])
        origin = row["origin"]
        last3 = [date(2026, origin.month - k, 1) for k in (1, 2, 3)]
        assert row["run_rate"] == pytest.approx(np.mean([bookings[m] for m in last3]))


def test_dealcast_column_is_the_forecast_made_at_the_origin(
    history: DealHistory, total: tuple[Backtest, list[date]]
) -> None:
    """The backtest's shared snapshot table gives the same forecast as a fit from scratch."""
    frame = total[0].frame.filter(pl.col("origin") == date(2026, 8, 1)).sort("horizon")
    summary = (
        revenue_forecast(history, instant(date(2026, 8, 1)), months=3, n_samples=SAMPLES)
        .summary()
        .filter(pl.col("period") == "month")
        .sort("horizon")
    )
    np.testing.assert_allclose(frame["dealcast"], summary["p50"], rtol=1e-9)
    np.testing.assert_allclose(frame["dealcast__p10"], summary["p10"], rtol=1e-9)
    np.testing.assert_allclose(frame["dealcast__p90"], summary["p90"], rtol=1e-9)


def test_summary_has_one_row_per_method_and_horizon(total: tuple[Backtest, list[date]]) -> None:
    backtest = total[0]
    summary = backtest.summary
    assert summary.select("method", "horizon").rows() == [
        (m, h) for m in SCORED for h in (0, 1, 2)
    ]
    # the nested choice has nothing to choose with at the first origin of each horizon
    assert summary["n"].to_list() == [2, 2, 1] * (len(SCORED) - 1) + [1, 1, 0]
    with_interval = summary.filter(pl.col("method").is_in(["dealcast", "prophet_only"]))
    assert with_interval["coverage"].null_count() == 0
    assert summary.filter(pl.col("method").is_in(list(BASELINES[:2])))["coverage"].null_count() == 6
    # WAPE by hand for one cell
    h0 = backtest.frame.filter(pl.col("horizon") == 0)
    wape = (h0["actual"] - h0["run_rate"]).abs().sum() / h0["actual"].abs().sum()
    got = summary.filter((pl.col("method") == "run_rate") & (pl.col("horizon") == 0))["wape"][0]
    assert got == pytest.approx(wape)
    league = backtest.league()
    for h in (0, 1, 2):
        part = league.filter(pl.col("horizon") == h)
        assert part["rank"][0] == 1 and part["wape"][0] == part["wape"].min()


def test_by_region_gives_one_segment_per_region(
    history: DealHistory, total: tuple[Backtest, list[date]], regional: Backtest
) -> None:
    frame = regional.frame
    assert frame.columns == COLUMNS and regional.by == ["region"]
    assert sorted(frame["segment"].unique().to_list()) == ["EMEA", "NA"]
    assert frame.height == 2 * total[0].frame.height
    for region in ("EMEA", "NA"):
        part = frame.filter(pl.col("segment") == region)
        bookings = _bookings(history, region)
        assert part["actual"].to_list() == pytest.approx(
            [bookings[m] for m in part["target_month"]]
        )
    # The regions' point forecasts of additive methods sum to the total's.
    sums = (
        frame.group_by("origin", "horizon")
        .agg(pl.col("actual", "stage_weighted_crm", "seasonal_naive", "run_rate").sum())
        .sort("origin", "horizon")
    )
    whole = total[0].frame.sort("origin", "horizon")
    for col in ("actual", "stage_weighted_crm", "seasonal_naive", "run_rate"):
        np.testing.assert_allclose(sums[col], whole[col], rtol=1e-9)
    assert regional.summary.height == len(SCORED) * 3
    assert regional.summary["n"].to_list() == [4, 4, 2] * (len(SCORED) - 1) + [2, 2, 0]


def test_acceptance_reports_each_horizon(total: tuple[Backtest, list[date]]) -> None:
    backtest = total[0]
    figures = acceptance(backtest)
    assert set(figures) == {"h0", "h1", "h2", "coverage"}
    summary = backtest.summary
    for h in (0, 1, 2):
        got = figures[f"h{h}"]
        assert isinstance(got, dict)
        part = summary.filter(pl.col("horizon") == h)
        ours = part.filter(pl.col("method") == "dealcast").row(0, named=True)
        others = part.filter(pl.col("method").is_in(list(BASELINES))).sort("wape")
        assert got["wape"] == pytest.approx(ours["wape"])
        assert got["coverage"] == ours["coverage"]
        assert got["best_baseline"] == others["method"][0]
        assert got["best_baseline_wape"] == pytest.approx(others["wape"][0])
        assert got["improvement"] == pytest.approx(1 - ours["wape"] / others["wape"][0])
        assert got["lowest"] == (ours["wape"] < others["wape"][0])
    cover = summary.filter(pl.col("method") == "dealcast")["coverage"].to_numpy()
    assert figures["coverage"] == pytest.approx(cover.mean())


def test_acceptance_on_a_known_answer_frame() -> None:
    """Exact figures on a hand-made frame: a perfect method and a 10%-off baseline."""
    frame = pl.DataFrame(
        {
            "segment": ["total"] * 2,
            "origin": [date(2026, 1, 1)] * 2,
            "target_month": [date(2026, 1, 1), date(2026, 2, 1)],
            "horizon": [0, 1],
            "actual": [100.0, 200.0],
            "dealcast": [100.0, 180.0],
            "dealcast__p10": [90.0, 150.0],
            "dealcast__p90": [110.0, 190.0],
            "run_rate": [110.0, 220.0],
        }
    )
    backtest = Backtest(
        frame, summarise(frame, ["dealcast", "run_rate"]), [date(2026, 1, 1)], [0, 1], []
    )
    figures = acceptance(backtest)
    assert figures["h0"] == {
        "wape": 0.0,
        "best_baseline": "run_rate",
        "best_baseline_wape": pytest.approx(0.1),
        "improvement": pytest.approx(1.0),
        "lowest": True,
        "coverage": 1.0,
    }
    h1 = figures["h1"]
    assert isinstance(h1, dict)
    assert h1["wape"] == pytest.approx(0.1) and h1["best_baseline_wape"] == pytest.approx(0.1)
    assert h1["lowest"] is False  # a tie is not lower
    assert h1["coverage"] == 0.0  # 200 is above its P90
    assert figures["coverage"] == pytest.approx(0.5)


def test_run_backtest_refuses_bad_arguments(history: DealHistory) -> None:
    with pytest.raises(ValueError, match=r"horizons must be integers >= 0, got \[-1, 0\]"):
        run_backtest(history, ORIGINS, horizons=[-1, 0])
    with pytest.raises(ValueError, match="no origins"):
        run_backtest(history, [])
