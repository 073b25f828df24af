"""Baseline forecasters: exact answers on hand-built histories, and point-in-time properties
(rows dated at or after the origin change no baseline forecast)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.contract import DEFAULT_PIPELINE, DealHistory, PipelineConfig, Stage
from models.forecast.baselines import (
    close_date_estimates,
    first_booked_month,
    monthly_bookings,
    run_rate,
    seasonal_naive,
    stage_weighted,
)
from tests.features.history_strategies import Raw, future_edits, raw_histories
from tests.models.tiny_history import stage_row, tiny_history

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ORIGIN = date(2025, 4, 1)
WON, LOST = "Closed Won", "Closed Lost"


def ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# -- bookings fixture: deals only (stage history derived) -------------------------------------


def bookings_history() -> DealHistory:
    """Won deals: Apr-24 100 (EU); May-24 200 (NA) + 50 (EU, 23:00 on the 31st); Jan-25 300 (EU);
    Mar-25 60 (NA, at 23:59:59 on the 31st); Apr-25 1000 (EU, exactly at 2025-04-01 00:00).
    A lost deal of 999 and an open one (APAC) book nothing."""
    deals = pl.DataFrame(
        {
            "deal_id": ["W1", "W2", "W3", "L1", "W4", "W5", "W6", "O1"],
            "created_at": [
                ts(2024, 1, 5),
                ts(2024, 2, 1),
                ts(2024, 3, 1),
                ts(2024, 1, 10),
                ts(2025, 1, 2),
                ts(2025, 2, 1),
                ts(2025, 3, 1),
                ts(2024, 6, 1),
            ],
            "closed_at": [
                ts(2024, 4, 10),
                ts(2024, 5, 20),
                ts(2024, 5, 31, 23),
                ts(2024, 4, 15),
                ts(2025, 1, 15),
                ts(2025, 3, 31, 23, 59, 59),
                ts(2025, 4, 1),
                None,
            ],
            "stage": [WON, WON, WON, LOST, WON, WON, WON, "Demo"],
            "amount": [100.0, 200.0, 50.0, 999.0, 300.0, 60.0, 1000.0, 77.0],
            "owner_id": ["o1"] * 8,
            "region": ["EU", "NA", "EU", "EU", "EU", "NA", "EU", "APAC"],
        }
    )
    return DealHistory.from_frames(deals=deals)


def _months(first: date, n: int) -> list[date]:
    return [
        date(first.year + (first.month - 1 + k) // 12, (first.month - 1 + k) % 12 + 1, 1)
        for k in range(n)
    ]


def test_monthly_bookings_are_complete_zero_filled_months() -> None:
    series = monthly_bookings(bookings_history(), before=ORIGIN)
    expected = {date(2024, 4, 1): 100.0, date(2024, 5, 1): 250.0, date(2025, 1, 1): 300.0}
    expected[date(2025, 3, 1)] = 60.0
    months = _months(date(2024, 1, 1), 15)  # Jan 2024 (first deal created) .. Mar 2025
    assert series.columns == ["month", "bookings"]
    assert series["month"].to_list() == months
    assert series["bookings"].to_list() == [expected.get(m, 0.0) for m in months]


def test_monthly_bookings_stop_at_the_last_complete_month() -> None:
    history = bookings_history()
    # Known mid-April 2025: April is not complete, so the deal won on April 1st is not there.
    mid = monthly_bookings(history, before=ts(2025, 4, 15, 12))
    assert mid["month"].max() == date(2025, 3, 1)
    assert mid["bookings"].sum() == 710.0
    # Known on May 1st: April is complete and holds the 1000.
    may = monthly_bookings(history, before=date(2025, 5, 1))
    assert may.row(-1) == (date(2025, 4, 1), 1000.0)
    # Default: the end of the data is 2025-04-01 00:00 (W6's close), so March is the last.
    assert_frame_equal(monthly_bookings(history), monthly_bookings(history, before=ORIGIN))
    # Nothing complete yet: an empty frame with the columns.
    early = monthly_bookings(history, by="region", before=date(2024, 1, 20))
    assert early.is_empty() and early.columns == ["month", "region", "bookings"]


def test_monthly_bookings_by_region_has_every_known_group_every_month() -> None:
    series = monthly_bookings(bookings_history(), by="region", before=ORIGIN)
    assert series.columns == ["month", "region", "bookings"]
    assert series.height == 15 * 3  # APAC, EU, NA (the open APAC deal exists) x 15 months
    booked = series.filter(pl.col("bookings") > 0).rows()
    assert booked == [
        (date(2024, 4, 1), "EU", 100.0),
        (date(2024, 5, 1), "EU", 50.0),
        (date(2024, 5, 1), "NA", 200.0),
        (date(2025, 1, 1), "EU", 300.0),
        (date(2025, 3, 1), "NA", 60.0),
    ]
    # The parts add up to the total.
    total = monthly_bookings(bookings_history(), before=ORIGIN)
    summed = series.group_by("month").agg(pl.col("bookings").sum()).sort("month")
    assert_frame_equal(summed, total)


def test_monthly_bookings_rejects_an_unknown_dimension() -> None:
    with pytest.raises(ValueError, match="unknown dimension 'colour'.*group by one of owner_id"):
        monthly_bookings(bookings_history(), by="colour")


def test_seasonal_naive_is_the_same_month_a_year_before() -> None:
    series = monthly_bookings(bookings_history(), before=ORIGIN)
    out = seasonal_naive(series, ORIGIN, [0, 1, 2, 3, 12])
    assert out.columns == ["target_month", "horizon", "forecast"]
    assert out.rows() == [
        (date(2025, 4, 1), 0, 100.0),
        (date(2025, 5, 1), 1, 250.0),
        (date(2025, 6, 1), 2, 0.0),
        (date(2025, 7, 1), 3, 0.0),
        (date(2026, 4, 1), 12, None),  # April 2025 is not known before the origin
    ]
    # Before a year of history: unknown, not zero.
    early = seasonal_naive(series, date(2024, 6, 1), [0])
    assert early.rows() == [(date(2024, 6, 1), 0, None)]


def test_seasonal_naive_by_region() -> None:
    series = monthly_bookings(bookings_history(), by="region", before=ORIGIN)
    out = seasonal_naive(series, ORIGIN, [0, 1])
    assert out.columns == ["region", "target_month", "horizon", "forecast"]
    assert out.rows() == [
        ("APAC", date(2025, 4, 1), 0, 0.0),
        ("APAC", date(2025, 5, 1), 1, 0.0),
        ("EU", date(2025, 4, 1), 0, 100.0),
        ("EU", date(2025, 5, 1), 1, 50.0),
        ("NA", date(2025, 4, 1), 0, 0.0),
        ("NA", date(2025, 5, 1), 1, 200.0),
    ]


def test_run_rate_is_the_mean_of_the_last_three_complete_months() -> None:
    series = monthly_bookings(bookings_history(), before=ORIGIN)
    out = run_rate(series, ORIGIN, [0, 1, 2])
    # (Jan 300 + Feb 0 + Mar 60) / 3
    assert out.rows() == [
        (date(2025, 4, 1), 0, 120.0),
        (date(2025, 5, 1), 1, 120.0),
        (date(2025, 6, 1), 2, 120.0),
    ]
    # Origin June 2024: Mar 0, Apr 100, May 250.
    assert run_rate(series, date(2024, 6, 1), [0])["forecast"].to_list() == [350.0 / 3]
    # Origin March 2024: only Jan and Feb exist, so no run rate.
    assert run_rate(series, date(2024, 3, 1), [0])["forecast"].to_list() == [None]
    by_region = run_rate(
        monthly_bookings(bookings_history(), by="region", before=ORIGIN), ORIGIN, [0]
    )
    assert by_region.rows() == [
        ("APAC", date(2025, 4, 1), 0, 0.0),
        ("EU", date(2025, 4, 1), 0, 100.0),
        ("NA", date(2025, 4, 1), 0, 20.0),
    ]


def test_series_baselines_read_nothing_from_the_origin_on() -> None:
    history = bookings_history()
    known = monthly_bookings(history, by="region", before=ORIGIN)
    later = monthly_bookings(history, by="region", before=date(2026, 6, 1))  # holds April's 1000
    assert later.filter(pl.col("month") == ORIGIN)["bookings"].sum() == 1000.0
    for baseline in (seasonal_naive, run_rate):
        assert_frame_equal(baseline(known, ORIGIN, range(14)), baseline(later, ORIGIN, range(14)))


def test_origin_must_be_a_month_start_and_horizons_non_negative() -> None:
    series = monthly_bookings(bookings_history(), before=ORIGIN)
    with pytest.raises(ValueError, match="2025-04-02 00:00:00 UTC is not a month start"):
        run_rate(series, date(2025, 4, 2), [0])
    with pytest.raises(ValueError, match="not a month start"):
        seasonal_naive(series, ts(2025, 4, 1, 6), [0])
    with pytest.raises(ValueError, match=r"horizons must be 0 .* got \[-1\]"):
        run_rate(series, ORIGIN, [0, -1])
    with pytest.raises(ValueError, match="bookings series lacks bookings"):
        run_rate(series.drop("bookings"), ORIGIN, [0])


# -- weighted pipeline fixture: real stage history -------------------------------------------


def pipeline_history(pipeline: PipelineConfig = DEFAULT_PIPELINE) -> DealHistory:
    """Open just before 2025-04-01:

    - A: Proposal, 2000, expected 2025-05-15 (h1). After the origin it moves to Negotiation,
      5000, expected 2025-04-30 and is won on 2025-04-28: its deals row shows that latest state.
    - B: Demo, 500, expected 2025-03-10 (past due: h0).
    - C: Negotiation, 1000, expected 2025-04-30 (h0). Region NA.
    - D: Qualification, 3000, expected 2025-08-01 (h4: beyond horizon 3).
    Not open: E created exactly at the origin; F lost on 2025-03-31.
    Closed before the origin, for the historical stage rates: H1 Qualification > Demo >
    Proposal > won; H2 Qualification > Demo > lost; H3 Qualification > Proposal >
    Negotiation > lost; F Qualification > Demo > lost. So the rates are Qualification 1/4,
    Demo 1/3, Proposal 1/2, Negotiation 0, Discovery unknown.
    """
    deal_rows = [
        ("A", ts(2025, 1, 10), WON, ts(2025, 4, 28), 5000.0, date(2025, 4, 30), "EU"),
        ("B", ts(2025, 2, 1), "Demo", None, 500.0, date(2025, 3, 10), "EU"),
        ("C", ts(2025, 3, 15), "Negotiation", None, 1000.0, date(2025, 4, 30), "NA"),
        ("D", ts(2025, 3, 20), "Qualification", None, 3000.0, date(2025, 8, 1), "EU"),
        ("E", ts(2025, 4, 1), "Negotiation", None, 800.0, date(2025, 4, 20), "LATAM"),
        ("F", ts(2025, 1, 1), LOST, ts(2025, 3, 31), 400.0, date(2025, 3, 31), "EU"),
        ("H1", ts(2024, 3, 1), WON, ts(2024, 6, 1), 10.0, date(2024, 6, 1), "EU"),
        ("H2", ts(2024, 3, 1), LOST, ts(2024, 7, 1), 10.0, date(2024, 7, 1), "EU"),
        ("H3", ts(2024, 3, 1), LOST, ts(2024, 8, 1), 10.0, date(2024, 8, 1), "EU"),
    ]
    history = [
        stage_row("A", ts(2025, 1, 10), "Qualification", 1000.0, date(2025, 4, 20)),
        stage_row("A", ts(2025, 3, 1), "Proposal", 2000.0, date(2025, 5, 15)),
        stage_row("A", ts(2025, 4, 5), "Negotiation", 5000.0, date(2025, 4, 30)),
        stage_row("A", ts(2025, 4, 28), WON, None, None),
        stage_row("B", ts(2025, 2, 1), "Demo", 500.0, date(2025, 3, 10)),
        stage_row("C", ts(2025, 3, 15), "Negotiation", 1000.0, date(2025, 4, 30)),
        stage_row("D", ts(2025, 3, 20), "Qualification", 3000.0, date(2025, 8, 1)),
        stage_row("E", ts(2025, 4, 1), "Negotiation", 800.0, date(2025, 4, 20)),
        stage_row("F", ts(2025, 1, 1), "Qualification", 400.0, date(2025, 3, 31)),
        stage_row("F", ts(2025, 2, 1), "Demo", None, None),
        stage_row("F", ts(2025, 3, 31), LOST, None, None),
        stage_row("H1", ts(2024, 3, 1), "Qualification", 10.0, date(2024, 6, 1)),
        stage_row("H1", ts(2024, 4, 1), "Demo", None, None),
        stage_row("H1", ts(2024, 5, 1), "Proposal", None, None),
        stage_row("H1", ts(2024, 6, 1), WON, None, None),
        stage_row("H2", ts(2024, 3, 1), "Qualification", 10.0, date(2024, 7, 1)),
        stage_row("H2", ts(2024, 4, 1), "Demo", None, None),
        stage_row("H2", ts(2024, 7, 1), LOST, None, None),
        stage_row("H3", ts(2024, 3, 1), "Qualification", 10.0, date(2024, 8, 1)),
        stage_row("H3", ts(2024, 4, 1), "Proposal", None, None),
        stage_row("H3", ts(2024, 5, 1), "Negotiation", None, None),
        stage_row("H3", ts(2024, 8, 1), LOST, None, None),
    ]
    return tiny_history(deal_rows, history, pipeline)


def test_stage_weighted_crm_uses_the_config_probabilities_as_of_the_origin() -> None:
    out = stage_weighted(pipeline_history(), ORIGIN, range(4), probability="crm")
    assert out.columns == ["target_month", "horizon", "forecast"]
    # h0: B 500 x 0.4 (past due) + C 1000 x 0.8; h1: A 2000 x 0.6 (Proposal as of then).
    assert out.rows() == [
        (date(2025, 4, 1), 0, pytest.approx(1000.0)),
        (date(2025, 5, 1), 1, pytest.approx(1200.0)),
        (date(2025, 6, 1), 2, 0.0),
        (date(2025, 7, 1), 3, 0.0),
    ]
    # D (expected in August) appears once horizon 4 is asked for: 3000 x 0.1.
    h4 = stage_weighted(pipeline_history(), ORIGIN, [4])
    assert h4.rows() == [(date(2025, 8, 1), 4, pytest.approx(300.0))]


def test_stage_weighted_hist_uses_win_rates_of_deals_closed_before_the_origin() -> None:
    out = stage_weighted(pipeline_history(), ORIGIN, range(3), probability="hist")
    # h0: B 500 x 1/3 (Demo) + C 1000 x 0 (Negotiation); h1: A 2000 x 1/2 (Proposal).
    assert out["forecast"].to_list() == pytest.approx([500.0 / 3, 1000.0, 0.0])
    # One month later A's win (2025-04-28, via Qualification, Proposal, Negotiation) is known:
    # Qualification 2/5, Demo still 1/3, Proposal 2/3, Negotiation 1/2. Open: B (Demo), C and
    # E (Negotiation, both expected in April: past due) in h0; D 3000 x 2/5 in h3 (August).
    may = stage_weighted(pipeline_history(), date(2025, 5, 1), range(4), probability="hist")
    h0 = 500.0 / 3 + 1000.0 / 2 + 800.0 / 2
    assert may["forecast"].to_list() == pytest.approx([h0, 0.0, 0.0, 1200.0])


def test_stage_weighted_by_region_covers_every_known_group() -> None:
    out = stage_weighted(pipeline_history(), ORIGIN, [0, 1], by="region")
    assert out.columns == ["region", "target_month", "horizon", "forecast"]
    # LATAM (deal E) is created at the origin, so it is not a known group yet.
    assert out.rows() == [
        ("EU", date(2025, 4, 1), 0, pytest.approx(200.0)),
        ("EU", date(2025, 5, 1), 1, pytest.approx(1200.0)),
        ("NA", date(2025, 4, 1), 0, pytest.approx(800.0)),
        ("NA", date(2025, 5, 1), 1, 0.0),
    ]


def test_stage_weighted_errors_name_the_fix() -> None:
    no_prob = PipelineConfig(
        (Stage("Open", "open"), Stage("Closed Won", "won"), Stage("Closed Lost", "lost"))
    )
    history = DealHistory.from_frames(
        deals=pl.DataFrame(
            {"deal_id": ["X"], "created_at": [ts(2025, 1, 1)], "owner_id": ["o"]}
        ).with_columns(stage=pl.lit("Open"), amount=pl.lit(1.0)),
        pipeline=no_prob,
    )
    with pytest.raises(ValueError, match="no probability for stage.*Open.*probability='hist'"):
        stage_weighted(history, ORIGIN, [0], probability="crm")
    with pytest.raises(ValueError, match="probability must be 'crm' or 'hist'"):
        stage_weighted(pipeline_history(), ORIGIN, [0], probability="model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a month start"):
        stage_weighted(pipeline_history(), date(2025, 4, 15), [0])


# -- point in time, as a property ---------------------------------------------------------------

ORIGINS = [date(2024, m, 1) for m in range(1, 8)]  # the random histories span Jan..May 2024


def _just_before(origin: date) -> datetime:
    return datetime.combine(origin, datetime.min.time(), tzinfo=UTC) - timedelta(microseconds=1)


def _all_baselines(raw: Raw, origin: date) -> list[pl.DataFrame]:
    history = raw.to_history()
    out: list[pl.DataFrame] = []
    for by in (None, "region"):
        series = monthly_bookings(history, by=by, before=origin)
        out += [
            series,
            seasonal_naive(series, origin, range(3)),
            run_rate(series, origin, range(3)),
            stage_weighted(history, origin, range(3), probability="crm", by=by),
            stage_weighted(history, origin, range(3), probability="hist", by=by),
        ]
    return out


@FAST
@given(data=st.data(), raw=raw_histories(), origin=st.sampled_from(ORIGINS))
def test_rows_at_or_after_the_origin_change_no_baseline(
    data: st.DataObject, raw: Raw, origin: date
) -> None:
    # future_edits changes rows dated strictly after its instant: the instant just before the
    # origin makes that "at or after the origin".
    edited = data.draw(future_edits(raw, _just_before(origin)))
    for before, after in zip(
        _all_baselines(raw, origin), _all_baselines(edited, origin), strict=True
    ):
        assert_frame_equal(before, after)


# -- no basis, no expected close dates (a real CRM export) -------------------------------------


def undated_history() -> DealHistory:
    """Deals only (no stage history, no expected close date): won W1 2024-01-01 → 03-01 (60
    days), W2 02-01 → 05-01 (90 days), W3 03-01 → 04-30 (60 days): median cycle 60 days.
    Open just before 2024-06-01: O1 Qualification 1000 created 2024-05-20; O2 Negotiation
    2000 created 2024-05-01 (31 days old); O3 Proposal 400, stale, created 2023-06-01.
    A stale lost deal L1 created 2023-01-01 (lost 2023-02-01) starts the history."""
    deals = pl.DataFrame(
        {
            "deal_id": ["W1", "W2", "W3", "O1", "O2", "O3", "L1"],
            "created_at": [
                ts(2024, 1, 1),
                ts(2024, 2, 1),
                ts(2024, 3, 1),
                ts(2024, 5, 20),
                ts(2024, 5, 1),
                ts(2023, 6, 1),
                ts(2023, 1, 1),
            ],
            "closed_at": [ts(2024, 3, 1), ts(2024, 5, 1), ts(2024, 4, 30), None, None, None]
            + [ts(2023, 2, 1)],
            "stage": [WON, WON, WON, "Qualification", "Negotiation", "Proposal", LOST],
            "amount": [100.0, 200.0, 300.0, 1000.0, 2000.0, 400.0, 50.0],
            "owner_id": ["o1"] * 7,
        }
    )
    return DealHistory.from_frames(deals=deals)


def test_stage_weighted_places_undated_deals_by_their_stage_time_to_close() -> None:
    origin = date(2024, 6, 1)
    out = stage_weighted(undated_history(), origin, range(4), probability="crm")
    # O1 (Qualification, the stage every won deal entered at creation): 2024-05-31 + 60 days
    # = 2024-07-30, July (h1). O2 (Negotiation: no won deal passed it): the 60-day cycle minus
    # its 31 days, 2024-06-29 (h0). O3 (stale): never before the origin month, so h0.
    assert out.rows() == [
        (date(2024, 6, 1), 0, pytest.approx(2000.0 * 0.8 + 400.0 * 0.6)),
        (date(2024, 7, 1), 1, pytest.approx(1000.0 * 0.1)),
        (date(2024, 8, 1), 2, 0.0),
        (date(2024, 9, 1), 3, 0.0),
    ]
    assert out["forecast"].sum() > 0
    with_deals = stage_weighted(undated_history(), origin, range(2), with_deals=True)
    assert with_deals["deals"].to_list() == [2, 1]


def test_close_date_estimates_read_only_deals_won_before() -> None:
    history = undated_history()
    per_stage, cycle = close_date_estimates(history, ts(2024, 6, 1) - timedelta(microseconds=1))
    assert cycle == pytest.approx(60.0)
    assert per_stage.rows() == [("Qualification", pytest.approx(60.0))]
    # On April 1st only W1 (60 days) was won.
    _, april = close_date_estimates(history, ts(2024, 4, 1))
    assert april == pytest.approx(60.0)
    # Before any win: nothing to estimate from, and undated deals stay out.
    per_stage, none = close_date_estimates(history, ts(2024, 2, 1))
    assert none is None and per_stage.is_empty()
    early = stage_weighted(history, date(2024, 2, 1), range(2), with_deals=True)
    assert early["deals"].to_list() == [0, 0]


def test_seasonal_naive_is_not_applicable_before_the_first_booked_month() -> None:
    # The stale lost deal makes the series start in January 2023, but nothing was booked
    # before March 2024: a year-ago month before that is no basis (null), not a zero.
    series = monthly_bookings(undated_history(), before=date(2025, 4, 1))
    assert series["month"].min() == date(2023, 1, 1)
    assert first_booked_month(series, date(2025, 4, 1)) == date(2024, 3, 1)
    out = seasonal_naive(series, date(2025, 1, 1), range(5))
    assert out["forecast"].to_list() == [None, None, 100.0, 300.0, 200.0]
    assert first_booked_month(series, date(2024, 3, 1)) is None
    assert seasonal_naive(series, date(2024, 3, 1), [0])["forecast"].to_list() == [None]


def _undated(raw: Raw) -> Raw:
    """``raw`` without any expected close date (close dates are then estimated)."""
    out = raw.copy()
    out.deals = [{**d, "expected_close_date": None} for d in out.deals]
    out.history = [{**h, "expected_close_date": None} for h in out.history]
    return out


@FAST
@given(data=st.data(), raw=raw_histories(), origin=st.sampled_from(ORIGINS))
def test_rows_at_or_after_the_origin_change_no_estimated_close_date(
    data: st.DataObject, raw: Raw, origin: date
) -> None:
    edited = data.draw(future_edits(raw, _just_before(origin)))
    before, after = _undated(raw).to_history(), _undated(edited).to_history()
    for probability in ("crm", "hist"):
        assert_frame_equal(
            stage_weighted(before, origin, range(3), probability=probability, with_deals=True),  # type: ignore[arg-type]
            stage_weighted(after, origin, range(3), probability=probability, with_deals=True),  # type: ignore[arg-type]
        )
    moment = _just_before(origin)
    assert_frame_equal(
        close_date_estimates(before, moment)[0], close_date_estimates(after, moment)[0]
    )
    assert close_date_estimates(before, moment)[1] == close_date_estimates(after, moment)[1]
