"""Tier-1 KPIs of the hand-built company (tests/features/kpis/test_data.py), checked by hand.

Each expected value is worked out in the comment above it from the table in the data module.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from features.kpis.table import KPI_DEFINITIONS, kpi_definition, kpi_table
from tests.features.kpis.company_data import END, company

APPROX = {"rel": 1e-9, "abs": 1e-9}


def _row(table: pl.DataFrame, period: str, **by: str | None) -> dict:
    rows = table.filter(pl.col("period") == period)
    for column, value in by.items():
        rows = rows.filter(pl.col(column).is_null() if value is None else pl.col(column) == value)
    assert rows.height == 1, f"{rows.height} rows for {period} {by}"
    return rows.row(0, named=True)


def _check(row: dict, expected: dict[str, float | int | None]) -> None:
    for column, value in expected.items():
        got = row[column]
        if value is None:
            assert got is None, f"{column}: expected null, got {got}"
        else:
            assert got == pytest.approx(value, **APPROX), f"{column}: {got} != {value}"


@pytest.fixture(scope="module")
def monthly() -> pl.DataFrame:
    return kpi_table(company(), period="month", start=date(2026, 1, 1), end=END)


def test_periods_rows_and_keys(monthly: pl.DataFrame) -> None:
    # start/end keep Jan-Mar 2026 although the data starts in Dec 2024
    assert monthly["period"].to_list() == ["2026-01", "2026-02", "2026-03"]
    assert monthly["period_start"].to_list() == [
        date(2026, 1, 1),
        date(2026, 2, 1),
        date(2026, 3, 1),
    ]
    assert monthly.columns[:2] == ["period_start", "period"]
    # every column is defined
    assert all(kpi_definition(c) for c in monthly.columns), [
        c for c in monthly.columns if not kpi_definition(c)
    ]


def test_outcomes(monthly: pl.DataFrame) -> None:
    # Closed: Jan D2 lost (2000), D4 won (500, expansion, 10 days); Feb D1 won (1000, new,
    # Jan 5 -> Feb 14 = 40 days); Mar D6 lost (2500), D3 won (3000, Jan 12 -> Mar 20 = 19 + 28
    # + 20 = 67 days), D8 won (1200, expansion, Mar 2 -> 25 = 23 days).
    # Dec 2025 booked Z1 500, Jan 2025 booked Y1 400, Feb and Mar 2025 nothing.
    _check(
        _row(monthly, "2026-01"),
        {
            "bookings": 500.0,
            "bookings_growth": 0.0,  # (500 - 500) / 500
            "bookings_growth_yoy": 0.25,  # (500 - 400) / 400
            "deals_won": 1,
            "deals_lost": 1,
            "win_rate": 0.5,
            "win_rate_amount": 0.2,  # 500 / (500 + 2000)
            "avg_deal_size": 500.0,
            "median_deal_size": 500.0,
            "upsell_share": 1.0,  # D4 is an expansion
            "cycle_days_median": 10.0,
            "cycle_days_mean": 10.0,
            "cycle_days_p90": 10.0,
        },
    )
    _check(
        _row(monthly, "2026-02"),
        {
            "bookings": 1000.0,
            "bookings_growth": 1.0,  # (1000 - 500) / 500
            "bookings_growth_yoy": None,  # Feb 2025 booked nothing
            "deals_won": 1,
            "deals_lost": 0,
            "win_rate": 1.0,
            "win_rate_amount": 1.0,
            "avg_deal_size": 1000.0,
            "upsell_share": 0.0,
            "cycle_days_mean": 40.0,
        },
    )
    _check(
        _row(monthly, "2026-03"),
        {
            "bookings": 4200.0,  # 3000 + 1200
            "bookings_growth": 3.2,  # (4200 - 1000) / 1000
            "deals_won": 2,
            "deals_lost": 1,
            "win_rate": 2 / 3,
            "win_rate_amount": 4200 / 6700,  # 4200 / (4200 + 2500)
            "avg_deal_size": 2100.0,
            "median_deal_size": 2100.0,
            "upsell_share": 1200 / 4200,
            "cycle_days_median": 45.0,  # (23 + 67) / 2
            "cycle_days_mean": 45.0,
            "cycle_days_p90": 62.6,  # linear: 23 + 0.9 * (67 - 23)
        },
    )


def test_creation_cohorts(monthly: pl.DataFrame) -> None:
    # Created Jan: D1 1000, D2 2000, D3 3000, D4 500, D10 700 -> 5 deals, 7200; won by the
    # cutoff: D1, D3, D4 -> 3/5.
    _check(
        _row(monthly, "2026-01"),
        {"pipeline_created_count": 5, "pipeline_created_amount": 7200.0, "close_rate_cohort": 0.6},
    )
    # Created Feb: D5 1500, D6 2500, D7 (its amount, 800, was first recorded on Mar 1: after
    # the end of February, so not counted) -> 3 deals, 4000; none won -> 0.
    _check(
        _row(monthly, "2026-02"),
        {"pipeline_created_count": 3, "pipeline_created_amount": 4000.0, "close_rate_cohort": 0.0},
    )
    # Created Mar: D8 1200 (won), D9 600 (open) -> 2, 1800, 1/2. D11 (Apr 2) is after the cutoff.
    _check(
        _row(monthly, "2026-03"),
        {"pipeline_created_count": 2, "pipeline_created_amount": 1800.0, "close_rate_cohort": 0.5},
    )


def test_open_pipeline_at_period_end(monthly: pl.DataFrame) -> None:
    # Jan 31 end: D1 (Demo, 1000), D3 (Q, 3000), D10 (Q, 700).
    #   CRM-weighted: .4*1000 + .1*3000 + .1*700 = 770.
    #   Historical stage win rates from the deals closed by then (Y1 won: Q, Prop; Z1 won: Q,
    #   Demo; D2 lost: Q, Disc; D4 won: Q): Q 3/4, Demo 1/1 -> 1000 + .75*3000 + .75*700 = 3775.
    _check(
        _row(monthly, "2026-01"),
        {
            "open_pipeline_count": 3,
            "open_pipeline_amount": 4700.0,
            "stage_weighted_pipeline": 770.0,
            "stage_weighted_pipeline_hist": 3775.0,
        },
    )
    # Feb 28 end: D3 (Demo, 3000), D10 (Q, 700), D5 (Q since the move back, 1500), D6 (Disc,
    # 2500), D7 (Q, amount not yet recorded: counts 1 deal, no amount).
    #   CRM: 1200 + 70 + 150 + 500 = 1920.
    #   Rates add D1 (won: Q, Disc, Demo, Prop): Q 4/5, Disc 1/2, Demo 2/2
    #   -> 3000 + .8*700 + .8*1500 + .5*2500 = 6010.
    _check(
        _row(monthly, "2026-02"),
        {
            "open_pipeline_count": 5,
            "open_pipeline_amount": 7700.0,
            "stage_weighted_pipeline": 1920.0,
            "stage_weighted_pipeline_hist": 6010.0,
        },
    )
    # Mar 31 end: D10 (Q, 700), D5 (Disc, 1500), D7 (Demo, 800), D9 (Q, 600; its Apr 5 move
    # is after the cutoff).
    #   CRM: 70 + 300 + 320 + 60 = 750.
    #   Rates add D6 (lost: Q, Disc), D3 (won: Q, Demo, Neg), D8 (won: Q, Prop): Q 6/8,
    #   Disc 1/3, Demo 3/3 -> .75*700 + 1500/3 + 800 + .75*600 = 2275.
    _check(
        _row(monthly, "2026-03"),
        {
            "open_pipeline_count": 4,
            "open_pipeline_amount": 3600.0,
            "stage_weighted_pipeline": 750.0,
            "stage_weighted_pipeline_hist": 2275.0,
        },
    )


def test_due_pipeline_slip_and_pushes(monthly: pl.DataFrame) -> None:
    # Jan: nothing open as January began -> nothing due, slip undefined; no push; 0 open at
    # start + 5 created -> 0 / 5.
    _check(
        _row(monthly, "2026-01"),
        {"pipeline_due_at_start_amount": 0.0, "slip_rate": None, "pushes_per_deal": 0.0},
    )
    # Feb: open as Feb began with close expected in Feb: D1 (02-15), D3 (02-28, pushed only on
    # Feb 20), D10 (02-20) -> 4700. D1 won in Feb; D3 and D10 slipped -> 2/3.
    # Pushes in Feb: D3 on Feb 20; deals open during Feb: 3 at its start + 3 created -> 1/6.
    _check(
        _row(monthly, "2026-02"),
        {"pipeline_due_at_start_amount": 4700.0, "slip_rate": 2 / 3, "pushes_per_deal": 1 / 6},
    )
    # Mar: open as Mar began, expected in Mar: D3 (03-25), D5 (03-15, pushed on Mar 3), D6
    # (03-31) -> 7000; D10 (02-20, past due) and D7 (04-15) are not due. D3 won, D6 lost, D5
    # slipped -> 1/3. Pushes: D5 on Mar 3; open during Mar: 5 at start + 2 created -> 1/7.
    _check(
        _row(monthly, "2026-03"),
        {"pipeline_due_at_start_amount": 7000.0, "slip_rate": 1 / 3, "pushes_per_deal": 1 / 7},
    )


def test_sales_velocity(monthly: pl.DataFrame) -> None:
    # open deals x avg deal size x win rate / mean cycle days
    assert _row(monthly, "2026-01")["sales_velocity_per_day"] == pytest.approx(3 * 500 * 0.5 / 10)
    assert _row(monthly, "2026-02")["sales_velocity_per_day"] == pytest.approx(5 * 1000 * 1.0 / 40)
    assert _row(monthly, "2026-03")["sales_velocity_per_day"] == pytest.approx(
        4 * 2100 * (2 / 3) / 45
    )


def test_stage_conversion(monthly: pl.DataFrame) -> None:
    # Jan entries: Q D1 D2 D3 D4 D10 (D10 never moves) -> 4/5; Disc D1 (-> Demo) D2 (-> lost)
    # -> 1/2; Demo D1 (-> Prop) -> 1; nobody entered Prop or Neg -> null.
    _check(
        _row(monthly, "2026-01"),
        {
            "stage_conversion_rate__qualification": 0.8,
            "stage_conversion_rate__discovery": 0.5,
            "stage_conversion_rate__demo": 1.0,
            "stage_conversion_rate__proposal": None,
            "stage_conversion_rate__negotiation": None,
        },
    )
    # Feb entries: Q D5 (twice, counted once; reaches Disc), D6 (Disc), D7 (Demo on Mar 5)
    # -> 3/3; Disc D5 (moved back, never beyond Disc), D6 (lost) -> 0/2; Demo D3 (-> Neg) -> 1;
    # Prop D1 (-> won) -> 1.
    _check(
        _row(monthly, "2026-02"),
        {
            "stage_conversion_rate__qualification": 1.0,
            "stage_conversion_rate__discovery": 0.0,
            "stage_conversion_rate__demo": 1.0,
            "stage_conversion_rate__proposal": 1.0,
        },
    )
    # Mar entries: Q D8 (-> Prop), D9 (its Apr 5 move is after the cutoff) -> 1/2; Disc D5 ->
    # 0/1; Demo D7 -> 0/1; Prop D8 (-> won) -> 1; Neg D3 (-> won) -> 1.
    _check(
        _row(monthly, "2026-03"),
        {
            "stage_conversion_rate__qualification": 0.5,
            "stage_conversion_rate__discovery": 0.0,
            "stage_conversion_rate__demo": 0.0,
            "stage_conversion_rate__proposal": 1.0,
            "stage_conversion_rate__negotiation": 1.0,
        },
    )


def test_stage_durations(monthly: pl.DataFrame) -> None:
    # Stays that ended in Jan: Q D1 5, D2 7, D4 10 days; Disc D1 10, D2 14.
    #   Q p90 (linear) = 7 + 0.8 * 3 = 9.4; Disc median 12, p90 = 10 + 0.9 * 4 = 13.6.
    _check(
        _row(monthly, "2026-01"),
        {
            "stage_duration_days_median__qualification": 7.0,
            "stage_duration_days_p90__qualification": 9.4,
            "stage_duration_days_median__discovery": 12.0,
            "stage_duration_days_p90__discovery": 13.6,
            "stage_duration_days_median__demo": None,
        },
    )
    # Ended in Feb: Q D3 21, D5 7, D6 10 -> median 10, p90 10 + 0.8 * 11 = 18.8; Disc D5 7;
    # Demo D1 14; Prop D1 11.
    _check(
        _row(monthly, "2026-02"),
        {
            "stage_duration_days_median__qualification": 10.0,
            "stage_duration_days_p90__qualification": 18.8,
            "stage_duration_days_median__discovery": 7.0,
            "stage_duration_days_median__demo": 14.0,
            "stage_duration_days_p90__demo": 14.0,
            "stage_duration_days_median__proposal": 11.0,
            "stage_duration_days_median__negotiation": None,
        },
    )
    # Ended in Mar: Q D5 14 (Feb 17 -> Mar 3), D7 18 (Feb 15 -> Mar 5: its Mar 1 row is the same
    # stay), D8 7 -> median 14, p90 14 + 0.8 * 4 = 17.2; Disc D6 18; Demo D3 28; Prop D8 16;
    # Neg D3 18.
    _check(
        _row(monthly, "2026-03"),
        {
            "stage_duration_days_median__qualification": 14.0,
            "stage_duration_days_p90__qualification": 17.2,
            "stage_duration_days_median__discovery": 18.0,
            "stage_duration_days_median__demo": 28.0,
            "stage_duration_days_median__proposal": 16.0,
            "stage_duration_days_p90__negotiation": 18.0,
        },
    )


def test_by_region(monthly: pl.DataFrame) -> None:
    table = kpi_table(company(), period="month", by=["region"], start=date(2026, 1, 1), end=END)
    # Keys: period_start, period, region; a null region row holds the deal-less activity A9.
    assert table.columns[:3] == ["period_start", "period", "region"]
    # Jan EU: D4 won 500, D2 lost; Dec 2025 EU booked nothing (growth null); Jan 2025 EU Y1 400.
    _check(
        _row(table, "2026-01", region="EU"),
        {
            "bookings": 500.0,
            "bookings_growth": None,
            "bookings_growth_yoy": 0.25,
            "win_rate": 0.5,
            "open_pipeline_count": 1,  # D1
            "open_pipeline_amount": 1000.0,
        },
    )
    # Jan NA: nothing closed; Dec 2025 NA booked Z1 500 -> -100%; open D3 + D10 = 3700.
    _check(
        _row(table, "2026-01", region="NA"),
        {
            "bookings": 0.0,
            "bookings_growth": -1.0,
            "win_rate": None,
            "deals_won": 0,
            "open_pipeline_count": 2,
            "open_pipeline_amount": 3700.0,
        },
    )
    # Mar NA: D3 won 3000, D6 lost -> 1/2; EU: D8 won 1200.
    _check(_row(table, "2026-03", region="NA"), {"bookings": 3000.0, "win_rate": 0.5})
    _check(_row(table, "2026-03", region="EU"), {"bookings": 1200.0, "win_rate": 1.0})
    # the groups add up to the total
    summed = table.group_by("period").agg(pl.col("bookings", "open_pipeline_amount").sum())
    expected = monthly.select("period", "bookings", "open_pipeline_amount")
    assert summed.sort("period").equals(expected.sort("period"))


def test_quarter_and_year() -> None:
    quarters = kpi_table(company(), period="quarter", start=date(2026, 1, 1), end=END)
    # 2026-Q1 booked 500 + 1000 + 4200 = 5700; 2025-Q4 booked Z1 500; 2025-Q1 booked Y1 400.
    # Won in Q1: cycles 10, 23, 40, 67 -> median 31.5, mean 35, p90 40 + 0.7 * 27 = 58.9.
    # Created in Q1 (by the cutoff): D1-D10, won D1 D3 D4 D8 -> 4/10.
    _check(
        _row(quarters, "2026-Q1"),
        {
            "bookings": 5700.0,
            "bookings_growth": 10.4,  # (5700 - 500) / 500
            "bookings_growth_yoy": 13.25,  # (5700 - 400) / 400
            "cycle_days_median": 31.5,
            "cycle_days_mean": 35.0,
            "cycle_days_p90": 58.9,
            "close_rate_cohort": 0.4,
            "pipeline_created_count": 10,
        },
    )
    years = kpi_table(company(), period="year", end=END)
    # 2024 (Y1 created), 2025 (Y1 and Z1 won: 900), 2026 to date (5700).
    assert years["period"].to_list() == ["2024", "2025", "2026"]
    _check(_row(years, "2025"), {"bookings": 900.0, "deals_won": 2})
    _check(_row(years, "2026"), {"bookings": 5700.0, "bookings_growth": 5700 / 900 - 1})


def test_weeks_are_iso_weeks_from_monday() -> None:
    weeks = kpi_table(company(), period="week", start=date(2026, 1, 26), end=date(2026, 2, 8))
    # 2026-01-26 is a Monday, in ISO week 5; 2026-02-08 is the Sunday ending week 6.
    assert weeks["period"].to_list() == ["2026-W05", "2026-W06"]
    assert weeks["period_start"].to_list() == [date(2026, 1, 26), date(2026, 2, 2)]
    # W05: D2 lost Thu Jan 29, D4 won Fri Jan 30. W06: nothing closed (D1 closes Feb 14).
    _check(_row(weeks, "2026-W05"), {"bookings": 500.0, "deals_lost": 1, "win_rate": 0.5})
    _check(_row(weeks, "2026-W06"), {"bookings": 0.0, "bookings_growth": -1.0})


def test_cutoff_mid_period_is_period_to_date() -> None:
    table = kpi_table(company(), period="month", start=date(2026, 1, 1), end=date(2026, 3, 15))
    # As known at the end of Mar 15: D3 (won Mar 20) and D8 (won Mar 25) are still open.
    # March to date: only D6 lost (Mar 10). Its slip rate is unknown until March is over.
    _check(
        _row(table, "2026-03"),
        {"bookings": 0.0, "deals_won": 0, "deals_lost": 1, "slip_rate": None},
    )
    # Open at the cutoff: D3 3000, D10 700, D5 1500, D7 800, D8 1200, D9 600.
    _check(_row(table, "2026-03"), {"open_pipeline_count": 6, "open_pipeline_amount": 7800.0})
    # The Jan cohort has won D1 and D4 by then (D3 not yet): 2/5.
    _check(_row(table, "2026-01"), {"close_rate_cohort": 0.4, "bookings": 500.0})
    _check(_row(table, "2026-02"), {"slip_rate": 2 / 3, "bookings": 1000.0})


def test_without_activities_or_targets_tier2_columns_are_absent() -> None:
    table = kpi_table(company(activities=None, targets=None), period="month", end=END)
    tier2 = [c for c, text in KPI_DEFINITIONS.items() if text.startswith("[tier 2]")]
    tier2.remove("proposals_sent")  # has a stage-based fallback, checked below
    assert set(tier2) & set(table.columns) == set()
    # proposals_sent falls back to entries into the Proposal stage: D1 on Feb 3, D8 on Mar 9.
    assert _row(table, "2026-02")["proposals_sent"] == 1
    assert _row(table, "2026-03")["proposals_sent"] == 1
    assert "model_weighted_pipeline" not in table.columns
