"""Consolidation: one anomaly per root cause, the rest as its drill-down."""

from __future__ import annotations

from datetime import date

import polars as pl

from models.anomalies.findings import consolidate
from models.anomalies.kpi import TEST_SCHEMA

TREE = {
    ("region", "NA"): ("", ""),
    ("region", "EMEA"): ("", ""),
    ("team", "NA-01"): ("region", "NA"),
    ("team", "NA-02"): ("region", "NA"),
    ("team", "EMEA-01"): ("region", "EMEA"),
    ("owner_id", "r1"): ("team", "NA-01"),
    ("owner_id", "r2"): ("team", "NA-02"),
    ("owner_id", "r3"): ("team", "EMEA-01"),
    ("product", "Core"): ("", ""),
}
JUNE, JULY, AUG = date(2025, 6, 1), date(2025, 7, 1), date(2025, 8, 1)
FAMILY = {"win_rate": "win_rate", "bookings": "bookings", "activity_volume": "activity_volume"}


def row(
    by: str,
    segment: str,
    metric: str,
    k: float,
    n: float,
    expected: float,
    *,
    start: date = JUNE,
    end: date | None = None,
    period: str = "month",
    z: float = -6.0,
) -> dict:
    """A rate (or, with n = 0, a count) finding: observed k of n against an expected rate."""
    rate = n > 0
    family = "stage_conversion" if metric.startswith("stage_advance") else FAMILY[metric]
    observed = k / n if rate else k
    deviation = k - n * expected if rate else k - expected
    return {
        "period": period,
        "by": by,
        "segment": segment,
        "metric": metric,
        "family": family,
        "kind": "rate" if rate else "count",
        "period_start": start,
        "period_end": end or date(start.year + start.month // 12, start.month % 12 + 1, 1),
        "observed": observed,
        "k": k,
        "n": n if rate else None,
        "expected": expected,
        "band_low": expected * 0.8,
        "band_high": expected * 1.2,
        "p": 1e-9,
        "deviation": deviation,
        "method": "counts",
        "z": z,
        "null_scale": 1.0,
        "p_adj": 1e-9,
        "q": 1e-6,
        "effect": observed / expected - 1,
        "direction": "down" if deviation < 0 else "up",
    }


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows).with_columns(pl.col("n").cast(pl.Float64))


def judged(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{k: r[k] for k in TEST_SCHEMA} for r in rows], schema=TEST_SCHEMA)


def test_a_region_that_holds_the_company_drop_is_the_anomaly() -> None:
    # company 60 of 300 vs 30% (-30 deals); NA 10 of 100 vs 30% (-20); EMEA 50/200 ~ normal
    company = row("", "", "win_rate", 60, 300, 0.30)
    na = row("region", "NA", "win_rate", 10, 100, 0.30)
    emea = row("region", "EMEA", "win_rate", 50, 200, 0.30, z=-1.0)
    out = consolidate(frame([company, na]), judged([company, na, emea]), TREE)
    assert [(a["by"], a["segment"]) for a in out] == [("region", "NA")]
    assert out[0]["context"][0]["by"] == ""


def test_a_company_wide_drop_stays_with_the_company_and_lists_its_parts() -> None:
    company = row("", "", "win_rate", 30, 200, 0.30)
    na = row("region", "NA", "win_rate", 15, 100, 0.30)
    emea = row("region", "EMEA", "win_rate", 15, 100, 0.30)
    out = consolidate(frame([company, na, emea]), judged([company, na, emea]), TREE)
    assert len(out) == 1 and out[0]["by"] == ""
    assert {m["segment"] for m in out[0]["members"]} == {"NA", "EMEA"}
    shares = {c["segment"]: c["share"] for c in out[0]["children"]}
    assert shares == {"NA": 0.5, "EMEA": 0.5}


def test_a_region_whose_teams_both_broke_is_reported_as_the_region() -> None:
    na = row("region", "NA", "win_rate", 10, 100, 0.30)
    t1 = row("team", "NA-01", "win_rate", 4, 50, 0.30)
    t2 = row("team", "NA-02", "win_rate", 6, 50, 0.30)
    out = consolidate(frame([na, t1, t2]), judged([na, t1, t2]), TREE)
    assert [(a["by"], a["segment"]) for a in out] == [("region", "NA")]


def test_a_region_with_one_team_is_named_by_the_region() -> None:
    emea = row("region", "EMEA", "win_rate", 10, 100, 0.30)
    team = row("team", "EMEA-01", "win_rate", 10, 100, 0.30)
    out = consolidate(frame([emea, team]), judged([emea, team]), TREE)
    assert [(a["by"], a["segment"]) for a in out] == [("region", "EMEA")]


def test_several_stages_breaking_with_the_win_rate_is_a_win_rate_anomaly() -> None:
    win = row("region", "NA", "win_rate", 10, 100, 0.30)
    s1 = row("region", "NA", "stage_advance__demo", 20, 100, 0.70)
    s2 = row("region", "NA", "stage_advance__proposal", 25, 100, 0.60)
    out = consolidate(frame([win, s1, s2]), judged([win, s1, s2]), TREE)
    assert [a["metric"] for a in out] == ["win_rate"]
    assert {m["metric"] for m in out[0]["members"]} == {
        "stage_advance__demo",
        "stage_advance__proposal",
    }


def test_one_stage_breaking_with_the_win_rate_is_a_stage_anomaly() -> None:
    win = row("", "", "win_rate", 40, 200, 0.30)
    demo = row("", "", "stage_advance__demo", 60, 200, 0.70)
    out = consolidate(frame([win, demo]), judged([win, demo]), TREE)
    assert [a["metric"] for a in out] == ["stage_advance__demo"]


def test_bookings_after_a_win_rate_break_join_it() -> None:
    win = row("region", "NA", "win_rate", 10, 100, 0.30)
    bookings = row("", "", "bookings", 1.0e6, 0, 2.0e6, start=AUG)
    out = consolidate(frame([win, bookings]), judged([win, bookings]), TREE)
    assert [a["metric"] for a in out] == ["win_rate"]
    assert out[0]["members"][0]["metric"] == "bookings"


def test_consecutive_months_merge_into_one_anomaly() -> None:
    june = row("region", "NA", "win_rate", 10, 100, 0.30, z=-5)
    july = row("region", "NA", "win_rate", 5, 100, 0.30, start=JULY, z=-7)
    out = consolidate(frame([june, july]), judged([june, july]), TREE)
    assert len(out) == 1
    a = out[0]
    assert (a["period_start"], a["period_end"]) == (JUNE, AUG)
    assert a["score"] == 7 and a["observed"] == 0.05  # the worst month speaks


def test_a_reps_single_quiet_week_is_not_an_anomaly_but_two_are() -> None:
    w1 = row(
        "owner_id",
        "r1",
        "activity_volume",
        3,
        0,
        40,
        start=date(2025, 9, 1),
        end=date(2025, 9, 8),
        period="week",
    )
    w2 = row(
        "owner_id",
        "r1",
        "activity_volume",
        2,
        0,
        40,
        start=date(2025, 9, 8),
        end=date(2025, 9, 15),
        period="week",
    )
    alone = row(
        "owner_id",
        "r3",
        "activity_volume",
        3,
        0,
        40,
        start=date(2025, 9, 1),
        end=date(2025, 9, 8),
        period="week",
    )
    out = consolidate(frame([w1, w2, alone]), judged([w1, w2, alone]), TREE)
    assert [(a["segment"], a["period_start"], a["period_end"]) for a in out] == [
        ("r1", date(2025, 9, 1), date(2025, 9, 15))
    ]
