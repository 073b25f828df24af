"""Scoring kept forecasts: exact answers on hand-built forecasts and actuals."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.contract import DealHistory
from features.forecast_log import ACCURACY_SCHEMA
from models.forecast.accuracy import (
    ACTUALS_SCHEMA,
    accuracy_by_month,
    accuracy_summary,
    actuals_for,
    score_forecasts,
)
from models.forecast.baselines import monthly_bookings
from tests.features.kept_forecasts import kept_frame, row

JUL, AUG, SEP, OCT, NOV = (date(2026, m, 1) for m in (7, 8, 9, 10, 11))


def actuals(bookings: dict[date, float], *, by: str = "", segment: str = "total") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "by": [by] * len(bookings),
            "segment": [segment] * len(bookings),
            "month": list(bookings),
            "bookings": list(bookings.values()),
        },
        schema=ACTUALS_SCHEMA,
    )


TOTAL = actuals({JUL: 100.0, AUG: 150.0, SEP: 100.0, OCT: 200.0, NOV: 0.0})
EU = actuals({SEP: 100.0, OCT: 0.0}, by="region", segment="EU")


def one_forecast() -> pl.DataFrame:
    """Made 2026-09-10: Sep (h0), Oct (h1) and Nov (h2), Q3 (h-2) and EU in Sep and Oct."""
    return kept_frame(
        [
            row(SEP, "dealcast", 90.0, 80.0, 120.0),
            row(SEP, "stage_weighted_crm", 130.0),
            row(OCT, "dealcast", 210.0, 150.0, 260.0),
            row(OCT, "stage_weighted_crm", 150.0),
            row(NOV, "dealcast", 20.0, 0.0, 40.0),
            row(JUL, "dealcast", 400.0, 300.0, 500.0, period="quarter"),
            row(JUL, "stage_weighted_crm", 320.0, period="quarter"),
            row(SEP, "dealcast", 50.0, 40.0, 100.0, by="region", segment="EU"),
            row(OCT, "dealcast", 10.0, 0.0, 20.0, by="region", segment="EU"),
        ]
    )


def _scored(kept: pl.DataFrame, closed_before: date | datetime) -> pl.DataFrame:
    return score_forecasts(kept, pl.concat([TOTAL, EU]), closed_before)


def test_scores_by_hand() -> None:
    scored = _scored(one_forecast(), date(2026, 11, 1))
    assert scored.schema == pl.Schema(ACCURACY_SCHEMA)
    got = {
        (r["period"], r["target_month"], r["segment"], r["method"]): (
            r["horizon"],
            r["actual"],
            r["forecast"],
            r["error"],
            r["abs_error"],
            r["accuracy"],
            r["covered"],
        )
        for r in scored.iter_rows(named=True)
    }
    assert got == {
        ("month", SEP, "total", "dealcast"): (
            0,
            100.0,
            90.0,
            -10.0,
            10.0,
            pytest.approx(0.9),
            True,
        ),
        ("month", SEP, "total", "stage_weighted_crm"): (0, 100.0, 130.0, 30.0, 30.0, 0.7, None),
        ("month", OCT, "total", "dealcast"): (1, 200.0, 210.0, 10.0, 10.0, 0.95, True),
        ("month", OCT, "total", "stage_weighted_crm"): (1, 200.0, 150.0, -50.0, 50.0, 0.75, None),
        # Q3 = Jul + Aug + Sep = 350
        ("quarter", JUL, "total", "dealcast"): (-2, 350.0, 400.0, 50.0, 50.0, 1 - 50 / 350, True),
        ("quarter", JUL, "total", "stage_weighted_crm"): (
            -2,
            350.0,
            320.0,
            -30.0,
            30.0,
            pytest.approx(1 - 30 / 350),
            None,
        ),
        # the bounds are inside the interval; nothing booked: accuracy is undefined
        ("month", SEP, "EU", "dealcast"): (0, 100.0, 50.0, -50.0, 50.0, 0.5, True),
        ("month", OCT, "EU", "dealcast"): (1, 0.0, 10.0, 10.0, 10.0, None, True),
    }


def test_only_closed_periods_are_scored() -> None:
    kept = one_forecast()

    def scored_months(closed_before: date | datetime) -> set[tuple[str, date, str]]:
        rows = _scored(kept, closed_before).filter(pl.col("method") == "dealcast")
        return set(rows.select("period", "target_month", "segment").iter_rows())

    q3, sep, oct_, sep_eu, oct_eu = (
        ("quarter", JUL, "total"),
        ("month", SEP, "total"),
        ("month", OCT, "total"),
        ("month", SEP, "EU"),
        ("month", OCT, "EU"),
    )
    assert scored_months(date(2026, 9, 30)) == set()  # Sep (and so Q3) is still open
    assert scored_months(datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC)) == set()
    assert scored_months(date(2026, 10, 1)) == {q3, sep, sep_eu}
    assert scored_months(datetime(2026, 10, 31, 23, 0, tzinfo=UTC)) == {q3, sep, sep_eu}
    assert scored_months(date(2026, 11, 1)) == {q3, sep, oct_, sep_eu, oct_eu}
    # Nov closed too, but the actuals hold no December: 2026-12-01 scores November's row
    assert ("month", NOV, "total") in scored_months(date(2026, 12, 1))


def test_rows_without_an_actual_are_not_scored() -> None:
    kept = one_forecast()
    # a quarter needs its three months: without July, Q3 cannot be scored
    scored = score_forecasts(kept, TOTAL.filter(pl.col("month") != JUL), date(2026, 11, 1))
    assert scored.filter(pl.col("period") == "quarter").height == 0
    assert scored.filter(pl.col("segment") == "EU").height == 0  # no EU actuals given
    assert scored.height == 4


def test_several_forecasts_of_one_month_all_count() -> None:
    earlier = kept_frame(
        [row(OCT, "dealcast", 260.0, 210.0, 300.0), row(OCT, "stage_weighted_crm", 250.0)],
        forecast_id="F0",
        as_of=datetime(2026, 9, 2, tzinfo=UTC),
    )
    later = kept_frame(
        [row(OCT, "dealcast", 190.0, 180.0, 230.0), row(OCT, "stage_weighted_crm", 170.0)],
        forecast_id="F2",
        as_of=datetime(2026, 9, 20, tzinfo=UTC),
    )
    scored = _scored(pl.concat([earlier, one_forecast(), later]), date(2026, 11, 1))
    october = accuracy_by_month(scored).filter(pl.col("target_month") == OCT)
    dealcast = october.row(0, named=True)
    assert (dealcast["method"], dealcast["horizon"], dealcast["n"]) == ("dealcast", 1, 3)
    # errors 60, 10, -10 against 200 each: WAPE 80 / 600, bias 60 / 600; 2 of 3 covered
    assert dealcast["wape"] == pytest.approx(80 / 600)
    assert dealcast["bias"] == pytest.approx(60 / 600)
    assert dealcast["coverage"] == pytest.approx(2 / 3)
    assert dealcast["accuracy"] == pytest.approx((0.7 + 0.95 + 0.95) / 3)


def test_summary_by_hand() -> None:
    scored = _scored(one_forecast(), date(2026, 11, 1))
    summary = accuracy_summary(scored.filter(pl.col("by") == ""), by=("method", "period"))
    expected = pl.DataFrame(
        {
            "method": ["dealcast", "dealcast", "stage_weighted_crm", "stage_weighted_crm"],
            "period": ["month", "quarter", "month", "quarter"],
            # month: errors -10 and +10 against 100 and 200; quarter: +50 against 350
            "wape": [20 / 300, 50 / 350, 80 / 300, 30 / 350],
            "bias": [0.0, 50 / 350, -20 / 300, -30 / 350],
            "coverage": [1.0, 1.0, None, None],
            "accuracy": [(0.9 + 0.95) / 2, 1 - 50 / 350, (0.7 + 0.75) / 2, 1 - 30 / 350],
            "n": [2, 1, 2, 1],
        },
        schema_overrides={"coverage": pl.Float64},
    )
    assert_frame_equal(summary, expected)


def test_summary_defaults_and_segments() -> None:
    scored = _scored(one_forecast(), date(2026, 11, 1))
    default = accuracy_summary(scored)
    assert default.columns == [
        "method",
        "horizon",
        "period",
        "wape",
        "bias",
        "coverage",
        "accuracy",
        "n",
    ]
    # the EU rows pool with the total unless grouped apart: group by segment
    segments = accuracy_summary(scored, by=("segment", "method", "horizon"))
    eu = segments.filter(pl.col("segment") == "EU").sort("horizon")
    assert eu["wape"].to_list() == [0.5, None]  # October booked nothing: WAPE undefined
    assert eu["coverage"].to_list() == [1.0, 1.0]
    assert eu["accuracy"].to_list() == [0.5, None]
    empty = accuracy_summary(scored.head(0))
    assert empty.height == 0 and empty.columns == default.columns
    with pytest.raises(ValueError, match="lacks 'method'"):
        accuracy_summary(scored, by=("horizon",))
    with pytest.raises(ValueError, match="lacks column"):
        accuracy_summary(scored.drop("actual"))


def test_history_is_per_month_for_the_total() -> None:
    scored = _scored(one_forecast(), date(2026, 11, 1))
    history = accuracy_by_month(scored)
    assert history.columns[:4] == ["period", "target_month", "method", "horizon"]
    assert history.select("period", "target_month", "method", "horizon").rows() == [
        ("month", SEP, "dealcast", 0),
        ("month", SEP, "stage_weighted_crm", 0),
        ("month", OCT, "dealcast", 1),
        ("month", OCT, "stage_weighted_crm", 1),
        ("quarter", JUL, "dealcast", -2),
        ("quarter", JUL, "stage_weighted_crm", -2),
    ]
    assert history["accuracy"].to_list() == pytest.approx(
        [0.9, 0.7, 0.95, 0.75, 1 - 50 / 350, 1 - 30 / 350]
    )
    eu = accuracy_by_month(scored, by="region")
    assert eu.select("target_month", "segment").rows() == [(SEP, "EU"), (OCT, "EU")]


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(ValueError, match="kept forecasts lacks column.*ForecastLog.read"):
        score_forecasts(one_forecast().drop("p50"), TOTAL, date(2026, 11, 1))
    with pytest.raises(ValueError, match="actuals lacks column.*bookings"):
        score_forecasts(one_forecast(), TOTAL.drop("bookings"), date(2026, 11, 1))


def _ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_actuals_come_from_monthly_bookings() -> None:
    deals = pl.DataFrame(
        {
            "deal_id": ["a", "b", "c", "d"],
            "created_at": [_ts(2026, 6, 1), _ts(2026, 6, 2), _ts(2026, 7, 1), _ts(2026, 7, 2)],
            "owner_id": ["o1", "o1", "o2", "o2"],
            "stage": ["Closed Won", "Closed Won", "Closed Won", "Demo"],
            "amount": [100.0, 40.0, 70.0, 999.0],
            "closed_at": [_ts(2026, 7, 5), _ts(2026, 8, 31, 23), _ts(2026, 8, 1), None],
            "region": ["EU", "NA", "EU", None],
        }
    )
    history = DealHistory.from_frames(deals=deals)
    kept = kept_frame(
        [row(AUG, "dealcast", 1.0), row(AUG, "dealcast", 1.0, by="region", segment="EU")]
    )
    got = actuals_for(history, kept, date(2026, 9, 1))
    assert got.schema == pl.Schema(ACTUALS_SCHEMA)
    jun = date(2026, 6, 1)
    assert sorted(got.rows()) == [
        ("", "total", jun, 0.0),
        ("", "total", JUL, 100.0),
        ("", "total", AUG, 110.0),
        ("region", "(none)", jun, 0.0),  # the open deal d has no region
        ("region", "(none)", JUL, 0.0),
        ("region", "(none)", AUG, 0.0),
        ("region", "EU", jun, 0.0),
        ("region", "EU", JUL, 100.0),
        ("region", "EU", AUG, 70.0),
        ("region", "NA", jun, 0.0),
        ("region", "NA", JUL, 0.0),
        ("region", "NA", AUG, 40.0),
    ]
    total = monthly_bookings(history, before=date(2026, 9, 1))
    assert got.filter(pl.col("by") == "")["bookings"].to_list() == total["bookings"].to_list()
    assert actuals_for(history, kept.head(0), date(2026, 9, 1)).height == 0
    # several dimensions: labelled as the forecast labels them
    both = kept_frame([row(AUG, "dealcast", 1.0, by="region,owner_id", segment="EU · o2")])
    august = actuals_for(history, both, date(2026, 9, 1)).filter(pl.col("month") == AUG)
    assert sorted(august.select("segment", "bookings").rows()) == [
        ("(none) · o2", 0.0),
        ("EU · o1", 0.0),
        ("EU · o2", 70.0),
        ("NA · o1", 40.0),
    ]
    scored = score_forecasts(both, actuals_for(history, both, date(2026, 9, 1)), date(2026, 9, 1))
    assert scored.select("segment", "actual").rows() == [("EU · o2", 70.0)]
    assert scored["accuracy"].to_list() == pytest.approx([1 / 70])
