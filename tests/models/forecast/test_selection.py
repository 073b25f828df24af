"""The published forecast: chosen per horizon on the company's own backtest, with intervals
from its own errors, never above the best applicable baseline on those origins."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.calendar import add_months
from models.forecast.selection import (
    ForecastChoice,
    booked_range_flag,
    choose,
    interval,
    published_columns,
    published_summary,
)
from models.metrics import P10, P90, wape

ORIGINS = [add_months(date(2025, 1, 1), i) for i in range(12)]


def frame(actual, **methods) -> pl.DataFrame:
    """One segment, one horizon (0): a backtest frame with a column per method."""
    n = len(actual)
    return pl.DataFrame(
        {
            "segment": ["total"] * n,
            "origin": ORIGINS[:n],
            "target_month": ORIGINS[:n],
            "horizon": [0] * n,
            "actual": [float(a) for a in actual],
            **{m: [float(v) for v in values] for m, values in methods.items()},
        }
    )


def test_the_lowest_wape_is_chosen_and_the_choice_names_the_best_baseline() -> None:
    actual = [100, 120, 90, 110, 105, 95]
    bt = frame(
        actual,
        dealcast=[160, 180, 150, 170, 160, 150],  # 50% too high: the deal model is off here
        run_rate=[105, 110, 100, 105, 100, 100],
        seasonal_naive=[80, 140, 70, 130, 85, 120],
    )
    made = choose(bt).horizons[0]
    assert made.method in ("run_rate", "blend")
    assert made.best_baseline == "run_rate"
    assert made.wape <= wape(bt["actual"], bt["run_rate"]) + 1e-12
    assert made.wape < wape(bt["actual"], bt["dealcast"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1, 1000), min_size=2, max_size=10).flatmap(
        lambda actual: st.tuples(
            st.just(actual),
            st.lists(st.floats(0, 2000), min_size=len(actual), max_size=len(actual)),
            st.lists(st.floats(0, 2000), min_size=len(actual), max_size=len(actual)),
            st.lists(st.floats(0, 2000), min_size=len(actual), max_size=len(actual)),
        )
    )
)
def test_published_is_never_above_the_best_baseline_on_its_origins(data) -> None:
    actual, deal, run, naive = data
    bt = frame(actual, dealcast=deal, run_rate=run, seasonal_naive=naive)
    made = choose(bt).horizons[0]
    best = min(wape(bt["actual"], bt[m]) for m in ("run_rate", "seasonal_naive"))
    assert made.wape <= best + 1e-9
    assert made.best_baseline_wape == pytest.approx(best)
    published = published_columns(bt, ["dealcast", "run_rate", "seasonal_naive"])
    assert wape(published["actual"], published["published"]) == pytest.approx(made.wape)


def test_the_nested_choice_at_an_origin_reads_only_earlier_origins() -> None:
    rng = np.random.default_rng(0)
    actual = rng.uniform(80, 120, 10)
    methods = {
        m: actual * rng.uniform(0.6, 1.4, 10) for m in ("dealcast", "run_rate", "prophet_only")
    }
    before = published_columns(frame(actual, **methods), list(methods))
    later = actual.copy()
    later[6:] *= 5  # the future changes wildly
    moved = {m: v.copy() for m, v in methods.items()}
    moved["run_rate"][6:] = later[6:]  # and run rate would be perfect on it
    after = published_columns(frame(later, **moved), list(moved))
    nested = before["published_nested"].to_list()
    assert nested[0] is None  # nothing before the first origin to choose with
    assert after["published_nested"].to_list()[:6] == pytest.approx(nested[:6])
    assert after["published_nested"].to_list()[7] != pytest.approx(nested[7])


def test_a_method_missing_on_some_origin_is_not_a_candidate() -> None:
    bt = frame([100, 100, 100], dealcast=[130, 130, 130], run_rate=[100, 100, 100])
    bt = bt.with_columns(pl.Series("seasonal_naive", [100.0, None, 100.0]))
    made = choose(bt).horizons[0]
    assert "seasonal_naive" not in made.weights
    assert set(choose(bt).league["method"]) == {"dealcast", "run_rate", "blend"}


def test_intervals_from_the_errors_cover_about_80_percent_out_of_sample() -> None:
    rng = np.random.default_rng(1)
    n = 400
    actual = 1000 * np.exp(rng.normal(0, 0.3, n))
    forecast = np.full(n, 1000.0)  # wrong by ~30% every origin, its own band knows nothing
    bt = pl.DataFrame(
        {
            "segment": ["total"] * n,
            "origin": [add_months(date(1990, 1, 1), i) for i in range(n)],
            "horizon": [0] * n,
            "actual": actual,
            "dealcast": forecast,
            f"dealcast{P10}": forecast * 0.99,
            f"dealcast{P90}": forecast * 1.01,
            "run_rate": forecast * 1.5,
        }
    )
    out = published_columns(bt, ["dealcast", "run_rate"])
    inside = (out["actual"] >= out[f"published{P10}"]) & (out["actual"] <= out[f"published{P90}"])
    assert 0.74 <= inside.mean() <= 0.86
    # the model's own 2%-wide band would have covered almost nothing
    own = (bt["actual"] >= bt[f"dealcast{P10}"]) & (bt["actual"] <= bt[f"dealcast{P90}"])
    assert own.mean() < 0.1


def test_an_interval_holds_its_point_and_stays_non_negative() -> None:
    lo, hi = interval(100.0, bias=2.0, sd=0.1, n=6, scale=5.0)  # errors say: far too low
    assert lo <= 100.0 <= hi
    lo, hi = interval(10.0, bias=-3.0, sd=1.0, n=6, scale=1.0)
    assert lo >= 0.0
    assert interval(10.0, bias=0.0, sd=0.1, n=2, scale=1.0) is None


def test_the_choice_survives_json_and_combine_renormalises_without_a_method() -> None:
    actual = [100, 110, 90, 105, 95, 100]
    bt = frame(
        actual,
        dealcast=[120, 90, 110, 85, 115, 95],
        run_rate=[90, 125, 80, 120, 85, 110],
        prophet_only=[105, 100, 100, 100, 100, 100],
    )
    choice = choose(bt)
    again = ForecastChoice.from_json(choice.to_json())
    assert again.horizons == choice.horizons
    assert again.league.equals(choice.league)
    half = replace(again.horizons[0], weights={"dealcast": 0.5, "run_rate": 0.5})
    made = ForecastChoice({0: half}, again.league)
    value, label = made.combine(0, {"dealcast": 100.0, "run_rate": None})
    assert (value, label) == (100.0, "dealcast")
    value, label = made.combine(0, {"dealcast": 100.0, "run_rate": 200.0})
    assert value == pytest.approx(150.0) and label.startswith("blend(")


def summary_rows(p50_total: float, parts: dict[str, float]) -> pl.DataFrame:
    """A two-month revenue summary: the company and its regions (a deal-level Monte Carlo)."""
    rows = []
    for h in (0, 1):
        month = add_months(date(2026, 10, 1), h)
        rows.append(
            (
                "",
                "total",
                "month",
                month,
                h,
                p50_total,
                0.8 * p50_total,
                p50_total,
                1.2 * p50_total,
                0.0,
                p50_total,
                0.0,
                None,
                None,
                None,
            )
        )
        for name, value in parts.items():
            rows.append(
                (
                    "region",
                    name,
                    "month",
                    month,
                    h,
                    value,
                    0.8 * value,
                    value,
                    1.2 * value,
                    0.0,
                    value,
                    0.0,
                    None,
                    None,
                    None,
                )
            )
    quarter = p50_total * 3
    rows.append(
        (
            "",
            "total",
            "quarter",
            date(2026, 10, 1),
            0,
            quarter,
            0.8 * quarter,
            quarter,
            1.2 * quarter,
            0.0,
            quarter,
            0.0,
            None,
            None,
            None,
        )
    )
    schema = {
        "by": pl.String,
        "segment": pl.String,
        "period": pl.String,
        "target_month": pl.Date,
        "horizon": pl.Int64,
        "mean": pl.Float64,
        "p10": pl.Float64,
        "p50": pl.Float64,
        "p90": pl.Float64,
        "booked_to_date": pl.Float64,
        "pipeline_mean": pl.Float64,
        "newbiz_mean": pl.Float64,
        "target": pl.Float64,
        "gap": pl.Float64,
        "p_reach_target": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_published_summary_takes_the_chosen_point_and_segments_still_add_up() -> None:
    actual = [100, 110, 90, 105, 95, 100]
    bt = frame(actual, dealcast=[200] * 6, run_rate=[100, 105, 95, 100, 100, 100])
    choice = choose(pl.concat([bt, bt.with_columns(pl.lit(1, dtype=pl.Int64).alias("horizon"))]))
    assert choice.horizons[0].method == "run_rate"
    summary = summary_rows(300.0, {"EMEA": 200.0, "AMER": 100.0})
    out = published_summary(summary, choice, {"run_rate": {0: 120.0, 1: 130.0}})
    total = out.filter((pl.col("by") == "") & (pl.col("period") == "month")).sort("horizon")
    assert total["p50"].to_list() == pytest.approx([120.0, 130.0])
    assert total["method"].to_list() == ["run_rate", "run_rate"]
    assert total["deal_model_p50"].to_list() == [300.0, 300.0]
    # every row: ordered, and the mean is still booked + its two parts
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()
    parts = out["booked_to_date"] + out["pipeline_mean"] + out["newbiz_mean"]
    np.testing.assert_allclose(out["mean"], parts, rtol=1e-9)
    # the quarter moves by its months' moves: 300 + 300 -> 120 + 130
    quarter = out.filter((pl.col("by") == "") & (pl.col("period") == "quarter")).row(0, named=True)
    assert quarter["p50"] == pytest.approx(900.0 - 600.0 + 250.0)
    regions = (
        out.filter((pl.col("by") == "region") & (pl.col("period") == "month"))
        .group_by("horizon")
        .agg(pl.col("p50").sum())
    )
    assert regions.sort("horizon")["p50"].to_list() == pytest.approx([120.0, 130.0])
    assert (total["p10"] <= total["p50"]).all() and (total["p50"] <= total["p90"]).all()
    # without a choice, the Monte Carlo is published as is
    plain = published_summary(summary, None, {})
    assert plain.filter(pl.col("by") == "")["p50"].to_list() == [300.0, 300.0, 900.0]


def test_a_forecast_far_above_anything_booked_is_flagged() -> None:
    booked = [100.0, 120.0, 110.0, 130.0]
    assert booked_range_flag(247.0, booked) == "P50 is 1.9× the best month ever booked (130)"
    assert booked_range_flag(150.0, booked) is None
    assert "lowest month" in booked_range_flag(40.0, booked)
    summary = summary_rows(247.0, {})
    flagged = published_summary(
        summary, choose(frame([1, 1, 1], dealcast=[1, 1, 1])), {}, booked_months=booked
    )
    assert flagged.filter(pl.col("by") == "")["flag"].str.contains("1.9×").all()
    assert math.isfinite(flagged["p50"][0])
