"""Tier-2 KPIs (activities, targets), model-weighted pipeline and the pipeline breakdown, on
the hand-built company of tests/features/kpis/test_data.py, checked by hand."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from features.kpis.table import kpi_table, open_pipeline_breakdown
from tests.features.kpis.company_data import END, at, company
from tests.features.kpis.test_table import _check, _row


@pytest.fixture(scope="module")
def monthly() -> pl.DataFrame:
    return kpi_table(company(), period="month", start=date(2026, 1, 1), end=END)


def test_activities_by_type_and_per_rep(monthly: pl.DataFrame) -> None:
    # Jan: A1 call, A2 email, A3 demo, A4 call, A5 call; reps o1, o2, o3 -> 5/3.
    _check(
        _row(monthly, "2026-01"),
        {
            "activities__call": 3,
            "activities__email": 1,
            "activities__demo": 1,
            "activities__meeting": 0,
            "activities__proposal": 0,
            "activities__other": 0,
            "activities_per_rep": 5 / 3,
            "proposals_sent": 0,
        },
    )
    # Feb: A6 proposal, A7 demo, A8 demo, A9 email (no deal); reps o1, o3, o2 -> 4/3.
    _check(
        _row(monthly, "2026-02"),
        {
            "activities__proposal": 1,
            "activities__demo": 2,
            "activities__email": 1,
            "activities_per_rep": 4 / 3,
            "proposals_sent": 1,
        },
    )
    # Mar: A10 proposal, A11 demo, A12 proposal (A13 is after the cutoff); reps o3, o2 -> 1.5.
    _check(
        _row(monthly, "2026-03"),
        {
            "activities__proposal": 2,
            "activities__demo": 1,
            "activities__call": 0,
            "activities_per_rep": 1.5,
            "proposals_sent": 2,
        },
    )


def test_touches_per_closed_deal_and_demo_to_close(monthly: pl.DataFrame) -> None:
    # Jan: D4 won with no activity; D2 lost with A2 email + A5 call. No demo -> null.
    _check(
        _row(monthly, "2026-01"),
        {
            "touches_per_closed_deal__won": 0.0,
            "touches_per_closed_deal__lost": 2.0,
            "touches_per_closed_deal__lost__call": 1.0,
            "touches_per_closed_deal__lost__email": 1.0,
            "touches_per_closed_deal__lost__demo": 0.0,
            "demo_to_close_rate": None,
        },
    )
    # Feb: D1 won after A1 call, A3 demo, A6 proposal; no deal lost. D1 had a demo, won -> 1.
    _check(
        _row(monthly, "2026-02"),
        {
            "touches_per_closed_deal__won": 3.0,
            "touches_per_closed_deal__won__proposal": 1.0,
            "touches_per_closed_deal__lost": None,
            "demo_to_close_rate": 1.0,
        },
    )
    # Mar: D3 won (A4 call, A7 demo, A10 proposal: 3), D8 won (A12 proposal: 1) -> 2 per won
    # deal, demo .5, proposal 1; D6 lost after A11 demo -> 1. Had a demo: D3 won, D6 lost -> 1/2.
    _check(
        _row(monthly, "2026-03"),
        {
            "touches_per_closed_deal__won": 2.0,
            "touches_per_closed_deal__won__demo": 0.5,
            "touches_per_closed_deal__won__proposal": 1.0,
            "touches_per_closed_deal__lost": 1.0,
            "touches_per_closed_deal__lost__demo": 1.0,
            "demo_to_close_rate": 0.5,
        },
    )


def test_response_time_and_silence(monthly: pl.DataFrame) -> None:
    # First activity (days after creation), in the month it happened: Jan D1 1 (A1), D2 1
    # (A2), D3 10 (A4) -> median 1; Feb D5 9 (A8); Mar D6 26 (A11, Feb 10 -> Mar 8), D8 13
    # (A12) -> 19.5.
    # Days since the last touch (activity, or creation if later) of the deals open at the
    # month's end (24:00):
    #   Jan: D1 10.5 (A3 Jan 21), D3 9.5 (A4 Jan 22), D10 6.5 (created Jan 25) -> 9.5
    #   Feb: D3 23.5 (A7), D10 34.5, D5 16.5 (A8), D6 18.5 (created), D7 13.5 -> 18.5
    #   Mar: D10 65.5, D5 47.5, D7 44.5 (A13 is after the cutoff), D9 21.5 -> (44.5+47.5)/2
    # (the period end is 1 microsecond before 24:00: well inside the tolerance)
    expected = {"2026-01": (1.0, 9.5), "2026-02": (9.0, 18.5), "2026-03": (19.5, 46.0)}
    for period, (first, silent) in expected.items():
        row = _row(monthly, period)
        assert row["time_to_first_activity_days_median"] == pytest.approx(first)
        assert row["days_since_last_activity_median"] == pytest.approx(silent, abs=1e-9)


def test_company_targets(monthly: pl.DataFrame) -> None:
    # Company targets 1000 / 2000 / 4000; bookings 500 / 1000 / 4200; due at start 0 / 4700 /
    # 7000. Reps at quota: Jan o1 500 >= 400 only -> 1/3; Feb o1 1000 >= 1000 only -> 1/3;
    # Mar o2 1200 >= 1000 and o3 3000 >= 3000 (o1 0 < 500) -> 2/3.
    expected = {
        "2026-01": (1000.0, 0.5, 0.0, 1 / 3),
        "2026-02": (2000.0, 0.5, 2.35, 1 / 3),
        "2026-03": (4000.0, 1.05, 1.75, 2 / 3),
    }
    for period, (target, attainment, coverage, at_quota) in expected.items():
        _check(
            _row(monthly, period),
            {
                "target": target,
                "quota_attainment": attainment,
                "pipeline_coverage": coverage,
                "reps_at_quota_share": at_quota,
            },
        )


def test_targets_by_owner_team_and_region() -> None:
    owners = kpi_table(company(), period="month", by=["owner_id"], start=date(2026, 1, 1), end=END)
    # o1 Jan: 500 / 400; o2 Mar: 1200 / 1000; o3 Feb: due at start D3 3000 + D10 700 over 300.
    _check(
        _row(owners, "2026-01", owner_id="o1"),
        {"target": 400.0, "quota_attainment": 1.25, "reps_at_quota_share": 1.0},
    )
    _check(
        _row(owners, "2026-03", owner_id="o2"),
        {"quota_attainment": 1.2, "reps_at_quota_share": 1.0},
    )
    _check(
        _row(owners, "2026-02", owner_id="o3"),
        {"quota_attainment": 0.0, "pipeline_coverage": 3700 / 300, "reps_at_quota_share": 0.0},
    )
    teams = kpi_table(company(), period="month", by=["team"], start=date(2026, 1, 1), end=END)
    # Team A = o1, o2; B = o3. Jan A: 500 / 900, reps o1 yes, o2 no -> 1/2; B: 0 / 300.
    # Feb coverage A: D1 1000 / 1500. Mar B: 3000 / 3000, o3 at quota; A: 1200 / 1500, o2 only.
    _check(
        _row(teams, "2026-01", team="A"),
        {"quota_attainment": 500 / 900, "reps_at_quota_share": 0.5},
    )
    _check(_row(teams, "2026-01", team="B"), {"quota_attainment": 0.0, "reps_at_quota_share": 0.0})
    _check(_row(teams, "2026-02", team="A"), {"pipeline_coverage": 1000 / 1500})
    _check(_row(teams, "2026-03", team="B"), {"quota_attainment": 1.0, "reps_at_quota_share": 1.0})
    _check(_row(teams, "2026-03", team="A"), {"quota_attainment": 0.8, "reps_at_quota_share": 0.5})
    regions = kpi_table(company(), period="month", by=["region"], start=date(2026, 1, 1), end=END)
    # No region targets: attainment null. Reps by their region: EU o1 (yes) o2 (no) in Jan.
    _check(
        _row(regions, "2026-01", region="EU"),
        {"target": None, "quota_attainment": None, "reps_at_quota_share": 0.5},
    )
    # Activities follow the linked deal's region; A9 has no deal -> the null-region group.
    _check(
        _row(regions, "2026-02", region=None),
        {"activities__email": 1, "bookings": 0.0, "open_pipeline_count": 0},
    )
    _check(_row(regions, "2026-01", region="EU"), {"activities__call": 2, "activities__email": 1})
    products = kpi_table(company(), period="month", by=["product"], end=END)
    assert products["target"].is_null().all() and products["reps_at_quota_share"].is_null().all()


def test_targets_of_quarters_and_weeks() -> None:
    quarters = kpi_table(company(), period="quarter", start=date(2026, 1, 1), end=END)
    # Q1 target 1000 + 2000 + 4000; booked 5700.
    _check(_row(quarters, "2026-Q1"), {"target": 7000.0, "quota_attainment": 5700 / 7000})
    weeks = kpi_table(company(), period="week", start=date(2026, 1, 26), end=date(2026, 2, 1))
    # ISO week 5 = Mon Jan 26 .. Sun Feb 1: 6 days of January's 1000 / 31 a day and 1 day of
    # February's 2000 / 28 a day. Booked D4 500.
    target = 6 * 1000 / 31 + 2000 / 28
    _check(_row(weeks, "2026-W05"), {"target": target, "quota_attainment": 500 / target})


def test_model_weighted_pipeline_from_probabilities() -> None:
    probabilities = pl.DataFrame(
        {
            "deal_id": ["D1", "D3", "D3", "D5"],
            "as_of": [  # naive timestamps, read as UTC
                datetime(2026, 1, 31),
                datetime(2026, 1, 15),
                datetime(2026, 2, 1),
                datetime(2026, 4, 1),  # after the cutoff: never used
            ],
            "probability": [0.5, 0.2, 0.9, 0.7],
        }
    )
    table = kpi_table(
        company(), period="month", start=date(2026, 1, 1), end=END, probabilities=probabilities
    )
    # Jan end: D1 1000 * .5 + D3 3000 * .2 (its Feb 1 score is later) + D10 (no score) = 1100.
    # Feb end: D3 3000 * .9 = 2700 (D1 closed; D5, D6, D7, D10 unscored). Mar end: 0.
    assert table["model_weighted_pipeline"].to_list() == pytest.approx([1100.0, 2700.0, 0.0])
    with pytest.raises(ValueError, match="lacks column.*probability"):
        kpi_table(company(), probabilities=probabilities.drop("probability"))


def test_open_pipeline_breakdown() -> None:
    # Open as of 2026-03-01 00:00 UTC: D3 (Demo, 3000, expected 03-25), D10 (Q, 700, 02-20),
    # D5 (Q, 1500, 03-15), D6 (Disc, 2500, 03-31), D7 (Q, amount unknown, 04-15).
    by_stage = open_pipeline_breakdown(company(), date(2026, 3, 1), by=("stage",))
    assert by_stage.to_dict(as_series=False) == {
        "stage": ["Qualification", "Discovery", "Demo"],
        "open_pipeline_count": [3, 1, 1],
        "open_pipeline_amount": [2200.0, 2500.0, 3000.0],
        "stage_weighted_pipeline": pytest.approx([220.0, 500.0, 1200.0]),
    }
    by_month = open_pipeline_breakdown(company(), date(2026, 3, 1), by=("expected_close_month",))
    assert by_month["expected_close_month"].to_list() == ["2026-02", "2026-03", "2026-04"]
    assert by_month["open_pipeline_count"].to_list() == [1, 3, 1]
    assert by_month["open_pipeline_amount"].to_list() == [700.0, 7000.0, 0.0]
    probabilities = pl.DataFrame(
        {"deal_id": ["D3", "D6"], "as_of": [at(2, 27), at(3, 2)], "probability": [0.5, 0.9]}
    )
    # D3's score of Feb 27 counts; D6's of Mar 2 is after the as-of.
    total = open_pipeline_breakdown(company(), date(2026, 3, 1), by=(), probabilities=probabilities)
    assert total.row(0, named=True) == {
        "open_pipeline_count": 5,
        "open_pipeline_amount": 7700.0,
        "stage_weighted_pipeline": pytest.approx(1920.0),
        "model_weighted_pipeline": 1500.0,
    }
    with pytest.raises(ValueError, match="unknown breakdown 'colour'.*expected_close_month"):
        open_pipeline_breakdown(company(), date(2026, 3, 1), by=("colour",))
