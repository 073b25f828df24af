"""The KPI table is point-in-time: rows after its end change nothing, and rows after a period
change none of that period's KPIs except the two cohort rates that look ahead by definition.
Also: argument errors, empty data, a store without stage history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.contract import DealHistory, empty
from features.kpis.table import kpi_table
from tests.features.history_strategies import BASE, Raw, as_of_hours, future_edits, raw_histories
from tests.features.kpis.company_data import END, at, company, company_frames

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOOK_AHEAD = "^(close_rate_cohort|stage_conversion_rate__.*)$"
"""Cohort rates: what a period's cohort did later, up to the table's cutoff."""


def _after_cutoff_removed_and_added() -> DealHistory:
    """The company without its rows after END, then with other rows after END."""
    frames = company_frames()
    cutoff = datetime(2026, 4, 1, tzinfo=UTC)
    deals = frames["deals"].filter(pl.col("created_at") < cutoff)
    deals = deals.with_columns(  # D9 is won and D5 re-priced after the cutoff
        pl.when(pl.col("deal_id") == "D9")
        .then(pl.lit("Closed Won"))
        .otherwise(pl.col("stage"))
        .alias("stage"),
        pl.when(pl.col("deal_id") == "D9")
        .then(pl.lit(at(4, 10)))
        .otherwise(pl.col("closed_at"))
        .alias("closed_at"),
        pl.when(pl.col("deal_id") == "D5")
        .then(pl.lit(9999.0))
        .otherwise(pl.col("amount"))
        .alias("amount"),
    )
    new_deal = pl.DataFrame(
        {
            "deal_id": ["N1"],
            "owner_id": ["o9"],
            "region": ["LATAM"],
            "amount": [5.0],
            "created_at": [at(4, 1, hour=0)],
            "stage": ["Closed Won"],
            "closed_at": [at(4, 3)],
        }
    )
    history = frames["stage_history"].filter(pl.col("changed_at") < cutoff)
    later = pl.DataFrame(
        {
            "deal_id": ["D9", "D5", "D10", "N1", "N1"],
            "changed_at": [at(4, 10), at(4, 1, hour=0), at(5, 1), at(4, 1, hour=0), at(4, 3)],
            "stage": ["Closed Won", "Negotiation", "Closed Lost", "Qualification", "Closed Won"],
            "amount": [600.0, 9999.0, None, 5.0, None],
            "expected_close_date": [None, date(2026, 9, 1), None, date(2026, 4, 3), None],
        }
    )
    activities = frames["activities"].filter(pl.col("occurred_at") < cutoff)
    more = pl.DataFrame(
        {
            "activity_id": ["X1", "X2"],
            "occurred_at": [at(4, 1, hour=0), at(4, 2)],
            "owner_id": ["o1", "o9"],
            "type": ["demo", "call"],
            "deal_id": ["D10", "N1"],
        }
    )
    return DealHistory.from_frames(
        deals=pl.concat([deals, new_deal], how="diagonal_relaxed"),
        stage_history=pl.concat([history, later], how="diagonal_relaxed"),
        activities=pl.concat([activities, more], how="diagonal_relaxed"),
        reps=frames["reps"],
        targets=frames["targets"],
    )


@pytest.mark.parametrize(("period", "by"), [("month", []), ("week", ["region"])])
def test_rows_after_end_change_nothing(period: str, by: list[str]) -> None:
    before = kpi_table(company(), period=period, by=by, end=END)
    after = kpi_table(_after_cutoff_removed_and_added(), period=period, by=by, end=END)
    assert_frame_equal(before, after)


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC) - timedelta(
        microseconds=1
    )


@FAST
@given(data=st.data(), raw=raw_histories(), hours=as_of_hours())
def test_rows_after_end_change_nothing_property(data: st.DataObject, raw: Raw, hours: int) -> None:
    end = (BASE + timedelta(hours=hours)).date()
    edited = data.draw(future_edits(raw, _end_of(end)))
    for by in ([], ["owner_id"]):
        before = kpi_table(raw.to_history(), period="month", by=by, end=end)
        after = kpi_table(edited.to_history(), period="month", by=by, end=end)
        assert_frame_equal(before, after)


@FAST
@given(data=st.data(), raw=raw_histories(), hours=as_of_hours())
def test_rows_after_a_period_change_none_of_its_kpis(
    data: st.DataObject, raw: Raw, hours: int
) -> None:
    as_of = BASE + timedelta(hours=hours)
    edited = data.draw(future_edits(raw, as_of))
    end = date(2025, 12, 31)  # one fixed cutoff after all the data, for both tables
    for by in ([], ["region"]):
        before, after = (
            kpi_table(r.to_history(), period="week", by=by, end=end)
            .filter(
                pl.col("period_start").dt.offset_by("1w").cast(pl.Datetime("us", "UTC")) <= as_of
            )
            .select(pl.exclude(LOOK_AHEAD))
            for r in (raw, edited)
        )
        keys = ["period_start", *by]
        common = before.join(after.select(keys), on=keys, how="semi", nulls_equal=True)
        assert_frame_equal(
            common,
            after.join(common.select(keys), on=keys, how="semi", nulls_equal=True),
            check_exact=False,
            rel_tol=1e-9,
        )


def test_unknown_dimension_names_it_and_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown KPI dimension 'colour': group by one of "
        r"owner_id, team, region, product, segment, source, deal_type, account_id",
    ):
        kpi_table(company(), by=["region", "colour"])


def test_bad_period_and_dates() -> None:
    with pytest.raises(ValueError, match="unknown KPI period 'day': use one of week, month"):
        kpi_table(company(), period="day")
    with pytest.raises(ValueError, match="start 2026-03-01 is after end 2026-01-01"):
        kpi_table(company(), start=date(2026, 3, 1), end=date(2026, 1, 1))


def test_empty_store_gives_an_empty_table_with_the_columns() -> None:
    table = kpi_table(DealHistory.from_frames(deals=empty("deals")), period="month", by=["region"])
    assert table.height == 0
    assert table.columns[:4] == ["period_start", "period", "region", "bookings"]


def test_periods_before_the_data_are_rows_of_zeros() -> None:
    table = kpi_table(company(), period="month", start=date(2024, 10, 1), end=date(2024, 12, 31))
    # Y1 is created on 2024-12-01: Oct and Nov have no event at all.
    assert table["period"].to_list() == ["2024-10", "2024-11", "2024-12"]
    assert table["bookings"].to_list() == [0.0, 0.0, 0.0]
    assert table["pipeline_created_count"].to_list() == [0, 0, 1]
    assert table["open_pipeline_amount"].to_list() == [0.0, 0.0, 400.0]


def test_without_stage_history_the_derived_one_is_used() -> None:
    table = kpi_table(company(stage_history=None), period="month", start=date(2026, 1, 1), end=END)
    # Outcomes come from deals alone; derived history puts every deal in Qualification at
    # creation, then in its final stage: open deals sit in their current stage from creation.
    assert table["bookings"].to_list() == [500.0, 1000.0, 4200.0]
    # Mar end: D10 Q 700, D5 Disc 1500, D7 Demo 800, D9 Demo 600 (its current stage)
    assert table["open_pipeline_amount"].to_list()[-1] == 3600.0
    assert table["stage_weighted_pipeline"].to_list()[-1] == pytest.approx(70 + 300 + 320 + 240)
