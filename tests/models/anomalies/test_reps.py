"""Reps far from their peers: hand-built companies where each outlier is known, volume and
tenure rules under which no verdict exists, the fallbacks (no activities, no reps table, a
small team), argument errors, and the point-in-time property: rows dated at or after as_of
never change the output."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.contract import DealHistory
from models.anomalies.detections import ANOMALY_SCHEMA
from models.anomalies.reps import rep_outliers

AS_OF = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
WON, LOST = "Closed Won", "Closed Lost"


@dataclass(frozen=True)
class Rep:
    """A rep of a hand-built company.

    ``won + lost`` deals close in the window, one every 60 hours back from as_of, each
    ``cycle`` days after it was created, with ``touches`` activities each; ``per_week``
    activities without a deal are logged in each of the 30 weeks before as_of, only
    ``quiet_per_week`` in the last ``quiet_weeks`` of them.
    """

    owner: str
    team: str
    region: str = "NA"
    won: int = 18
    lost: int = 42
    cycle: float = 30.0
    touches: int = 0
    per_week: int = 10
    quiet_weeks: int = 0
    quiet_per_week: int = 1
    hired: date = date(2020, 1, 1)


def _rows(rep: Rep) -> tuple[list[dict], list[dict]]:
    deals, activities = [], []
    for i in range(rep.won + rep.lost):
        closed = AS_OF - timedelta(hours=12 + 60 * i)
        deal = f"{rep.owner}-d{i:03d}"
        deals.append(
            {
                "deal_id": deal,
                "created_at": closed - timedelta(days=rep.cycle),
                "owner_id": rep.owner,
                "stage": WON if i < rep.won else LOST,
                "amount": 1000.0,
                "closed_at": closed,
            }
        )
        for j in range(rep.touches):
            at = closed - timedelta(hours=j + 1)
            activities.append(_activity(f"{deal}-t{j}", at, rep.owner, deal))
    for week in range(30):
        count = rep.quiet_per_week if week < rep.quiet_weeks else rep.per_week
        for j in range(count):
            at = AS_OF - timedelta(weeks=week, hours=j + 2)
            if at.date() >= rep.hired:
                activities.append(_activity(f"{rep.owner}-w{week}-{j}", at, rep.owner, None))
    return deals, activities


def _activity(activity_id: str, at: datetime, owner: str, deal: str | None) -> dict:
    return {
        "activity_id": activity_id,
        "occurred_at": at,
        "owner_id": owner,
        "type": "call",
        "deal_id": deal,
    }


def _company(reps: list[Rep], *, activities: bool = True, table: bool = True) -> DealHistory:
    deals, acts = [], []
    for rep in reps:
        d, a = _rows(rep)
        deals += d
        acts += a
    reps_frame = pl.DataFrame(
        [
            {"owner_id": r.owner, "team": r.team, "region": r.region, "hired_at": r.hired}
            for r in reps
        ]
    )
    return DealHistory.from_frames(
        deals=pl.DataFrame(deals),
        activities=pl.DataFrame(acts) if activities else None,
        reps=reps_frame if table else None,
    )


def _twelve(**changes: object) -> list[Rep]:
    """Two teams of six reps; team A's peers win 15, 17, 18, 19 and 21 of 60 (90 of 300)."""
    team_a = [Rep(f"a{i}", "A", won=w, lost=60 - w) for i, w in enumerate([18, 15, 17, 18, 19, 21])]
    team_b = [
        Rep(f"b{i}", "B", region="EU", won=w, lost=60 - w) for i, w in enumerate(range(13, 19))
    ]
    return [replace(team_a[0], **changes), *team_a[1:], *team_b]  # type: ignore[arg-type]


def _drilldown(row: dict) -> list[dict]:
    return json.loads(row["drilldown"])


def test_a_rep_with_a_low_win_rate_over_many_deals_is_flagged() -> None:
    out = rep_outliers(_company(_twelve(won=3, lost=57)), AS_OF)
    assert out.schema == pl.Schema(ANOMALY_SCHEMA)
    assert out.height == 1
    row = out.row(0, named=True)
    assert (row["kind"], row["metric"], row["by"], row["segment"]) == (
        "rep",
        "win_rate",
        "owner_id",
        "a0",
    )
    assert row["direction"] == "down"
    assert row["observed"] == pytest.approx(3 / 60)
    assert row["expected"] == pytest.approx(90 / 300)  # the other five of team A, pooled
    assert row["band_low"] < row["expected"] < row["band_high"]
    assert row["observed"] < row["band_low"]
    assert row["score"] > 1.96
    assert (row["period_start"], row["period_end"]) == (date(2025, 7, 7), date(2026, 1, 5))
    assert row["summary"] == (
        "a0 won 3 of 60 deals closed in the last 6 months (5%) "
        "against 30% for the 5 other reps of team A"
    )
    drill = _drilldown(row)
    assert drill[0]["what"] == "95% band at this volume"
    assert [d["what"] for d in drill[1:]] == ["a5", "a4", "a3", "a2", "a1"]  # best first
    assert drill[1]["detail"] == "35% (60 deals)"


def test_the_same_rate_on_few_deals_gets_no_verdict() -> None:
    few = _company(_twelve(won=0, lost=4))
    assert rep_outliers(few, AS_OF).filter(pl.col("metric") == "win_rate").is_empty()
    # Judged anyway (min_closed=1), 0 of 4 against 30% is no evidence.
    assert rep_outliers(few, AS_OF, min_closed=1).filter(pl.col("metric") == "win_rate").is_empty()


def test_identical_reps_flag_nothing() -> None:
    reps = [Rep(f"r{i}", "AB"[i % 2], touches=3) for i in range(12)]
    out = rep_outliers(_company(reps), AS_OF)
    assert out.is_empty()
    assert out.schema == pl.Schema(ANOMALY_SCHEMA)


def test_a_rep_hired_two_weeks_ago_gets_no_verdict() -> None:
    newcomer = Rep("new", "A", won=0, lost=2, per_week=0, hired=(AS_OF - timedelta(days=14)).date())
    out = rep_outliers(_company([*_twelve(), newcomer]), AS_OF)
    assert out.filter(pl.col("segment") == "new").is_empty()


def test_a_rep_who_stops_logging_activities_is_flagged_down() -> None:
    reps = _twelve(won=18, lost=42, quiet_weeks=5)
    reps = [replace(r, per_week=w) for r, w in zip(reps, [10, 9, 10, 11, 10, 10] * 2, strict=True)]
    out = rep_outliers(_company(reps), AS_OF)
    assert out["metric"].to_list() == ["activity_volume"]
    row = out.row(0, named=True)
    assert row["segment"] == "a0"
    assert row["direction"] == "down"
    assert row["observed"] == pytest.approx(4 / 4)  # 1 a week in the 4-week window
    assert row["expected"] == pytest.approx((9 + 10 + 11 + 10 + 10) * 4 / (5 * 4))
    assert row["period_start"] == date(2025, 12, 8)
    assert row["summary"] == (
        "a0 logged 4 activities in the last 4 weeks (1.0 a week) "
        "against 10.0 a week for the 5 other reps of team A"
    )


def test_a_rep_hired_mid_window_is_judged_on_their_active_weeks() -> None:
    # Each peer created 60 deals in the window (2.3 a week); the newcomer, hired 10 weeks
    # ago, created 3: judged as 0.3 a week over 10 active weeks, not 3 over 26.
    hired = (AS_OF - timedelta(weeks=10)).date()
    newcomer = Rep("new", "A", won=0, lost=0, per_week=10, hired=hired)
    newcomer_deals = [
        {
            "deal_id": f"new-{i}",
            "created_at": AS_OF - timedelta(weeks=i + 1),
            "owner_id": "new",
            "stage": WON if i < 1 else LOST,
            "amount": 500.0,
            "closed_at": AS_OF - timedelta(weeks=i + 1) + timedelta(hours=1),
        }
        for i in range(3)
    ]
    reps = [r for r in _twelve() if r.owner != "a0"]  # no a0 of the default setup
    history = _company([*reps, newcomer])
    history = DealHistory.from_frames(
        deals=pl.concat(
            [history.deals.collect(), pl.DataFrame(newcomer_deals)], how="diagonal_relaxed"
        ),
        activities=history.activities,
        reps=history.reps,
    )
    out = rep_outliers(history, AS_OF).filter(pl.col("metric") == "pipeline_created")
    assert out["segment"].to_list() == ["new"]
    row = out.row(0, named=True)
    assert row["direction"] == "down"
    assert row["observed"] == pytest.approx(3 / 10)
    assert row["expected"] == pytest.approx(5 * 60 / (5 * 26))
    assert row["summary"] == (
        "new created 3 deals in 10.0 active weeks of the last 6 months (0.3 a week) "
        "against 2.3 a week for the 5 other reps of team A"
    )


def test_a_slow_rep_is_flagged_on_the_geometric_mean_of_their_cycles() -> None:
    reps = [
        replace(r, cycle=90.0 if r.owner == "a0" else 30.0 + i) for i, r in enumerate(_twelve())
    ]
    out = rep_outliers(_company(reps), AS_OF).filter(pl.col("metric") == "cycle_days")
    assert out["segment"].to_list() == ["a0"]
    row = out.row(0, named=True)
    assert row["direction"] == "up"
    assert row["observed"] == pytest.approx(90.0)
    peers = [(31.0 + i, w) for i, w in enumerate([15, 17, 18, 19, 21])]  # (cycle, won deals)
    log_mean = sum(w * math.log(c) for c, w in peers) / sum(w for _, w in peers)
    assert row["expected"] == pytest.approx(math.exp(log_mean))


def test_touches_per_closed_deal() -> None:
    reps = [
        replace(r, touches=2 if r.owner == "a0" else 8 + i % 3) for i, r in enumerate(_twelve())
    ]
    out = rep_outliers(_company(reps), AS_OF).filter(pl.col("metric") == "touches_per_closed_deal")
    assert out["segment"].to_list() == ["a0"]
    row = out.row(0, named=True)
    assert row["observed"] == pytest.approx(2.0)
    assert row["expected"] == pytest.approx((9 + 10 + 8 + 9 + 10) / 5)


def test_without_activities_the_activity_metrics_are_skipped() -> None:
    reps = _twelve(won=3, lost=57, quiet_weeks=5)
    out = rep_outliers(_company(reps, activities=False), AS_OF)
    assert out["metric"].to_list() == ["win_rate"]
    with_them = rep_outliers(_company(reps), AS_OF)
    assert set(with_them["metric"]) == {"win_rate", "activity_volume"}


def test_without_a_reps_table_the_peers_are_the_company() -> None:
    out = rep_outliers(_company(_twelve(won=3, lost=57), table=False), AS_OF)
    row = out.row(0, named=True)
    assert row["segment"] == "a0"
    assert row["expected"] == pytest.approx((90 + sum(range(13, 19))) / (11 * 60))
    assert row["summary"].endswith("for the 11 other reps of the company")


def test_a_small_team_falls_back_to_its_region() -> None:
    # Team C has three reps (two others): a0 is compared with the rest of region NA.
    reps = [
        replace(r, team="C") if r.owner in ("a0", "a1", "a2") else r
        for r in _twelve(won=3, lost=57)
    ]
    row = rep_outliers(_company(reps), AS_OF).row(0, named=True)
    assert row["segment"] == "a0"
    assert row["expected"] == pytest.approx(90 / 300)
    assert row["summary"].endswith("for the 5 other reps of region NA")


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("fdr", 0.0, r"fdr=0.0 is out of range: use a rate such as 0.05"),
        ("min_peers", 1, r"min_peers=1 is out of range"),
        ("window_days", 3, r"window_days=3 is out of range: use at least 7 days"),
        ("min_effect", -0.1, r"min_effect=-0.1 is out of range"),
    ],
)
def test_arguments_out_of_range_are_refused(argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rep_outliers(_company(_twelve()), AS_OF, **{argument: value})  # type: ignore[arg-type]


_BASE = _twelve(won=3, lost=57, quiet_weeks=5, touches=1)
_BASE_HISTORY = _company(_BASE)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["deal", "close", "activity", "hire"]),
            st.integers(0, 24 * 200),  # hours at or after as_of
            st.integers(0, 11),  # which rep
            st.booleans(),  # won / linked to one of the rep's deals
        ),
        min_size=1,
        max_size=40,
    )
)
def test_rows_at_or_after_as_of_never_change_the_output(
    edits: list[tuple[str, int, int, bool]],
) -> None:
    deals = _BASE_HISTORY.deals.collect().to_dicts()
    activities = _BASE_HISTORY.activities.collect().to_dicts()
    reps = _BASE_HISTORY.reps.collect().to_dicts()
    # Deals open at as_of, for the future to close.
    for i, rep in enumerate(_BASE):
        deals.append(
            {
                "deal_id": f"open-{i}",
                "created_at": AS_OF - timedelta(days=20),
                "owner_id": rep.owner,
                "stage": "Discovery",
                "amount": 1.0,
                "closed_at": None,
            }
        )
    base = DealHistory.from_frames(
        deals=pl.DataFrame(deals), activities=pl.DataFrame(activities), reps=_BASE_HISTORY.reps
    )
    expected = rep_outliers(base, AS_OF)
    assert set(expected["metric"]) == {"win_rate", "activity_volume"}
    for n, (kind, hours, who, flag) in enumerate(edits):
        at, owner = AS_OF + timedelta(hours=hours), _BASE[who].owner
        if kind == "deal":
            deals.append(
                {
                    "deal_id": f"future-{n}",
                    "created_at": at,
                    "owner_id": owner,
                    "stage": WON if flag else LOST,
                    "amount": 1.0,
                    "closed_at": at,
                }
            )
        elif kind == "close":
            deal = next(d for d in deals if d["deal_id"] == f"open-{who}")
            deal |= {"stage": WON if flag else LOST, "closed_at": at}
        elif kind == "activity":
            deal_id = f"{owner}-d000" if flag else None
            activities.append(_activity(f"future-a{n}", at, owner, deal_id))
        else:  # a rep hired at or after as_of, already busy
            reps.append({"owner_id": f"late-{n}", "team": "A", "hired_at": at.date()})
            activities.append(_activity(f"late-a{n}", at, f"late-{n}", None))
    later = DealHistory.from_frames(
        deals=pl.DataFrame(deals),
        activities=pl.DataFrame(activities),
        reps=pl.DataFrame(reps, infer_schema_length=None),
    )
    assert_frame_equal(rep_outliers(later, AS_OF), expected)


def _noisy_company(seed: int, r00_wins: float = 0.25) -> DealHistory:
    """24 reps in 4 teams with the same true rates (but r00's win rate): the rest is chance."""
    rng = np.random.default_rng(seed)
    deals, activities = [], []
    for r in range(24):
        owner = f"r{r:02d}"
        closes = rng.uniform(1, 180, rng.poisson(60))
        cycles = rng.lognormal(math.log(40), 0.5, closes.size)
        for i, (close, cycle, won) in enumerate(
            zip(
                closes,
                cycles,
                rng.random(closes.size) < (r00_wins if r == 0 else 0.25),
                strict=True,
            )
        ):
            closed = AS_OF - timedelta(days=float(close))
            deals.append(
                {
                    "deal_id": f"{owner}-d{i}",
                    "created_at": closed - timedelta(days=float(cycle)),
                    "owner_id": owner,
                    "stage": WON if won else LOST,
                    "amount": 1000.0,
                    "closed_at": closed,
                }
            )
            for j in range(rng.poisson(5)):  # touches
                at = closed - timedelta(hours=j + 1)
                activities.append(_activity(f"{owner}-d{i}-t{j}", at, owner, f"{owner}-d{i}"))
        for j, hours in enumerate(rng.uniform(1, 30 * 7 * 24, rng.poisson(300))):
            at = AS_OF - timedelta(hours=float(hours))
            activities.append(_activity(f"{owner}-a{j}", at, owner, None))
    reps = pl.DataFrame(
        {"owner_id": [f"r{r:02d}" for r in range(24)], "team": [f"T{r % 4}" for r in range(24)]}
    )
    return DealHistory.from_frames(
        deals=pl.DataFrame(deals), activities=pl.DataFrame(activities), reps=reps
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reps_who_differ_only_by_chance_flag_nothing(seed: int) -> None:
    history = _noisy_company(seed)
    assert rep_outliers(history, AS_OF).is_empty()
    # The same company where r00 loses every deal: r00 alone stands out.
    out = rep_outliers(_noisy_company(seed, r00_wins=0.0), AS_OF)
    assert out.select("segment", "metric", "direction").rows() == [("r00", "win_rate", "down")]
