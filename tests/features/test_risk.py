"""Deal risk flags: a hand-built company where each flag is known to fire or not, the
thresholds under which no norm (and so no flag) exists, argument errors, and the
point-in-time property: rows dated after as_of never change the norms or the flags."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.risk import RISK_FLAGS, risk_flags, risk_norms
from features.snapshots import snapshot_features
from tests.features.history_strategies import Raw, as_of_hours, at, future_edits, raw_histories
from tests.models.tiny_history import stage_row, ts

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AS_OF = ts(2024, 7, 1)  # a Monday: the silence snapshots are Mondays too
TODAY = AS_OF.date()
QUAL, DISC, PROP, NEGO, LOST = (
    "Qualification",
    "Discovery",
    "Proposal",
    "Negotiation",
    "Closed Lost",
)


def _background(raw: Raw, n: int) -> None:
    """``n`` closed deals of o1 that set the norms.

    Deal j is created on a Tuesday (three a week from 2024-01-02), spends j + 1 days in
    Qualification and 20 in Discovery, and is lost; it gets an activity every Saturday while
    open. So at every Monday snapshot it is open at, its last activity was 2 days before;
    Qualification stays last 1..n days and Discovery stays 20; every amount is 1,000.
    """
    for j in range(n):
        deal = f"bg{j:02d}"
        created = ts(2024, 1, 2) + timedelta(weeks=j // 3)
        qualified = created + timedelta(days=j + 1)
        lost = qualified + timedelta(days=20)
        raw.deals.append(
            {
                "deal_id": deal,
                "created_at": created,
                "owner_id": "o1",
                "stage": LOST,
                "amount": 1000.0,
                "closed_at": lost,
            }
        )
        raw.history += [
            stage_row(deal, created, QUAL, 1000.0, created.date() + timedelta(days=60)),
            stage_row(deal, qualified, DISC, None, None),
            stage_row(deal, lost, LOST, None, None),
        ]
        saturday = created + timedelta(days=4)
        while saturday < lost:
            _touch(raw, deal, saturday, "o1")
            saturday += timedelta(weeks=1)


def _touch(raw: Raw, deal: str, when: datetime, owner: str) -> None:
    raw.activities.append(
        {
            "activity_id": f"{deal}@{when:%Y%m%d}",
            "occurred_at": when,
            "owner_id": owner,
            "type": "call",
            "deal_id": deal,
        }
    )


Change = tuple[int, str, float | None, int | None]
"""``days before AS_OF, stage, amount (None: unchanged), close in days from TODAY (None: same)``."""


def _open_deal(
    raw: Raw,
    deal: str,
    changes: list[Change],
    *,
    touched: tuple[int, ...] = (1,),
    owner: str = "o1",
) -> None:
    """An open deal: stage-history rows ``changes``, activities ``touched`` days before AS_OF."""
    created = AS_OF - timedelta(days=changes[0][0])
    raw.deals.append(
        {
            "deal_id": deal,
            "created_at": created,
            "owner_id": owner,
            "stage": changes[-1][1],
            "closed_at": None,
        }
    )
    for days, stage, amount, close in changes:
        due = None if close is None else TODAY + timedelta(days=close)
        raw.history.append(stage_row(deal, AS_OF - timedelta(days=days), stage, amount, due))
    for days in touched:
        _touch(raw, deal, AS_OF - timedelta(days=days), owner)


def company(n_background: int = 30) -> Raw:
    """The background deals, 13 open deals of o1 and 9 deals of o3 (one open)."""
    raw = Raw()
    _background(raw, n_background)
    _open_deal(raw, "calm", [(5, QUAL, 1000.0, 30)])
    _open_deal(raw, "stalled", [(40, QUAL, 1000.0, 30)])
    _open_deal(
        raw,
        "pushed",
        [(10, DISC, 1000.0, 10), (8, DISC, None, 20), (6, DISC, None, 30), (4, DISC, None, 40)],
    )
    _open_deal(raw, "pushed_once", [(10, DISC, 1000.0, 10), (8, DISC, None, 20)])
    _open_deal(raw, "late", [(5, DISC, 1000.0, -12)])
    _open_deal(raw, "due_today", [(5, DISC, 1000.0, 0)])
    _open_deal(raw, "quiet", [(6, DISC, 1000.0, 30)], touched=(5,))
    _open_deal(raw, "untouched", [(10, QUAL, 1000.0, 30)], touched=())
    _open_deal(raw, "cut", [(10, DISC, 1000.0, 30), (5, DISC, 700.0, None)])
    _open_deal(raw, "cut_small", [(10, DISC, 1000.0, 30), (5, DISC, 850.0, None)])
    _open_deal(raw, "backward", [(30, DISC, 1000.0, 30), (10, QUAL, None, None)])
    _open_deal(raw, "big", [(5, DISC, 5000.0, 30)])
    _open_deal(raw, "biggish", [(5, DISC, 1900.0, 30)])  # above o1's p90, under 2x its median
    # o3: 8 small lost deals and a huge one sitting in Proposal, never touched; no norm
    # applies to it (no Proposal stays or silences seen, o3 has 9 deals).
    for k in range(8):
        _closed_o3(raw, f"o3-{k}", ts(2024, 2, 1) + timedelta(days=k))
    _open_deal(raw, "whale", [(200, PROP, 1_000_000.0, 30)], touched=(), owner="o3")
    return raw


def _closed_o3(raw: Raw, deal: str, created: datetime) -> None:
    lost = created + timedelta(days=5)
    raw.deals.append(
        {
            "deal_id": deal,
            "created_at": created,
            "owner_id": "o3",
            "stage": LOST,
            "amount": 100.0,
            "closed_at": lost,
        }
    )
    raw.history += [
        stage_row(deal, created, NEGO, 100.0, created.date()),
        stage_row(deal, lost, LOST, None, None),
    ]


def flags_of(raw: Raw, as_of: datetime = AS_OF, **mins: int) -> pl.DataFrame:
    history = raw.to_history()
    rows = snapshot_features(history, [as_of]).collect()
    return risk_flags(rows, risk_norms(history, as_of, **mins))


# -- the hand-built company ----------------------------------------------------------------


def test_norms_of_the_company() -> None:
    norms = risk_norms(company().to_history(), AS_OF)
    assert norms.as_of == AS_OF
    open_stages = [QUAL, DISC, "Demo", PROP, NEGO]
    # Qualification stays of 1..30 days: p90 = 27 + 0.1 * (28 - 27). Discovery: 30 stays of
    # 20 days, and "backward"'s (20 days, left for Qualification). o3's 8 Negotiation stays
    # are too few for a norm.
    assert_frame_equal(
        norms.stage_days,
        pl.DataFrame(
            {
                "stage": open_stages,
                "spells": [30, 31, 0, 0, 8],
                "days_p90": [27.1, 20.0, None, None, None],
            },
            schema_overrides={"spells": pl.UInt32},
        ),
        check_exact=False,
    )
    # Every silence seen at a Monday snapshot is 2 days (the Saturday activity). Qualification:
    # ceil((q - 6) / 7) Mondays for each stay of q >= 7 days = 7*1 + 7*2 + 7*3 + 3*4 = 54.
    # Discovery: 3 Mondays per 20-day stay, 2 when it starts on a Tuesday (q = 7, 14, 21, 28).
    assert_frame_equal(
        norms.silence,
        pl.DataFrame(
            {
                "stage": open_stages,
                "observations": [54, 86, 0, 0, 0],
                "silence_days_p90": [2.0, 2.0, None, None, None],
            },
            schema_overrides={"observations": pl.UInt32},
        ),
    )
    # o1: 30 + 13 deals, 39 of them at 1,000; o3: 9 deals, too few.
    assert_frame_equal(
        norms.owner_amounts,
        pl.DataFrame(
            {
                "owner_id": ["o1", "o3"],
                "deals": [43, 9],
                "amount_high": [1855.0, None],
                "amount_median": [1000.0, None],
            },
            schema_overrides={"deals": pl.UInt32},
        ),
    )


EXPECTED = [
    (
        "backward",
        "stage_regression",
        "moved back to an earlier stage once; now in Qualification",
        1.0,
    ),
    (
        "big",
        "large_for_owner",
        "amount 5,000 is 5× this owner's median deal of 1,000 and above 97.5% of their 43 deals "
        "(97.5th percentile 1,855)",
        5000 / 1855,
    ),
    ("cut", "amount_cut", "amount cut 30% from 1,000 to 700", 1.5),
    ("late", "past_due", "expected to close on 2024-06-19 (12 days ago) and still open", 1.4),
    ("pushed", "pushed", "close date pushed 3 times, by 30 days in total", 1.5),
    (
        "quiet",
        "silent",
        "no activity for 5 days; 90% of open Discovery deals had one within 2 days",
        2.5,
    ),
    (
        "stalled",
        "stalled",
        "in Qualification for 40 days; 90% of deals move on within 27.1 days",
        40 / 27.1,
    ),
    (
        "untouched",
        "silent",
        "no activity logged in the 10 days since it was created; 90% of open Qualification "
        "deals had one within 2 days",
        5.0,
    ),
]


def test_each_flag_fires_exactly_where_expected() -> None:
    got = flags_of(company())
    assert got.schema == pl.Schema(
        {"deal_id": pl.String, "flag": pl.String, "evidence": pl.String, "severity": pl.Float64}
    )
    assert_frame_equal(got, pl.DataFrame(EXPECTED, schema=got.schema, orient="row"))
    # calm, pushed_once, due_today, cut_small, biggish and whale miss every threshold
    assert set(got["flag"]) == set(RISK_FLAGS)


def test_flags_of_one_deal_come_in_flag_order() -> None:
    raw = company()
    # pushed twice, past due, cut by half, moved back: four flags on one deal
    _open_deal(
        raw,
        "mess",
        [(9, DISC, 1000.0, -20), (8, QUAL, 500.0, -10), (7, QUAL, None, -3)],
    )
    got = flags_of(raw).filter(pl.col("deal_id") == "mess")
    assert got["flag"].to_list() == ["pushed", "past_due", "amount_cut", "stage_regression"]
    assert got["evidence"].to_list() == [
        "close date pushed twice, by 17 days in total",
        "expected to close on 2024-06-28 (3 days ago) and still open",
        "amount cut 50% from 1,000 to 500",
        "moved back to an earlier stage once; now in Qualification",
    ]
    assert got["severity"].to_list() == pytest.approx([1.0, 1.1, 2.5, 1.0])


def test_stalled_needs_20_completed_stays() -> None:
    # 19 Qualification stays ended before as_of: no norm, so 40 days there is no verdict.
    assert "stalled" not in flags_of(company(19)).filter(pl.col("deal_id") == "stalled")["flag"]
    with_20 = flags_of(company(20)).filter(pl.col("flag") == "stalled")
    # stays of 1..20 days: p90 = 18 + 0.1 * (19 - 18)
    assert with_20["evidence"].to_list() == [
        "in Qualification for 40 days; 90% of deals move on within 18.1 days"
    ]


def test_only_stays_ended_by_as_of_are_counted() -> None:
    # bg08 (created 2024-01-16) leaves Qualification on 2024-01-25 after 9 days, the last of
    # bg00..bg08 to do so; bg09.. leave after 2024-01-30.
    history = company().to_history()
    left = ts(2024, 1, 25)
    for as_of, spells in ((left, 9), (left - timedelta(microseconds=1), 8)):
        qual = risk_norms(history, as_of).stage_days.row(0, named=True)
        assert (qual["stage"], qual["spells"]) == (QUAL, spells)


def test_silent_needs_20_observations() -> None:
    # Qualification has 54 silences seen: asking for 55 leaves it without a norm.
    got = flags_of(company(), min_observations=55).filter(pl.col("flag") == "silent")
    assert got["deal_id"].to_list() == ["quiet"]  # Discovery (86 seen) still has one


def test_large_for_owner_needs_10_deals_created_by_as_of() -> None:
    raw = company()
    _closed_o3(raw, "o3-later", AS_OF + timedelta(days=1))  # created after as_of: not counted
    assert "whale" not in flags_of(raw)["deal_id"]
    _closed_o3(raw, "o3-tenth", AS_OF - timedelta(days=30))
    got = flags_of(raw).filter(pl.col("deal_id") == "whale").row(0, named=True)
    # o3: nine deals of 100 and the whale; p97.5 = 100 + 0.775 * (1,000,000 - 100)
    assert got["flag"] == "large_for_owner"
    assert got["evidence"] == (
        "amount 1,000,000 is 10000× this owner's median deal of 100 and above 97.5% of their 10 "
        "deals (97.5th percentile 775,023)"
    )
    assert got["severity"] == pytest.approx(1_000_000 / 775_022.5)


def test_without_activities_no_deal_is_silent() -> None:
    raw = company()
    raw.activities = []
    got = flags_of(raw)
    assert "silent" not in got["flag"]
    assert "stalled" in got["flag"]


def test_a_bare_date_is_midnight_utc() -> None:
    history = company().to_history()
    norms = risk_norms(history, TODAY)
    assert norms.as_of == AS_OF
    assert_frame_equal(norms.stage_days, risk_norms(history, AS_OF).stage_days)


# -- errors and edges ----------------------------------------------------------------------


def test_rows_and_norms_at_different_instants_are_refused() -> None:
    history = company().to_history()
    rows = snapshot_features(history, [AS_OF]).collect()
    with pytest.raises(
        ValueError, match=r"rows are as of 2024-07-01 .* but the norms as of 2024-06"
    ):
        risk_flags(rows, risk_norms(history, AS_OF - timedelta(days=1)))


def test_missing_columns_are_named() -> None:
    history = company().to_history()
    rows = snapshot_features(history, [AS_OF]).collect().drop("days_in_stage", "amount_change")
    with pytest.raises(ValueError, match=r"snapshot column\(s\) amount_change, days_in_stage"):
        risk_flags(rows, risk_norms(history, AS_OF))


def test_bad_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="min_spells must be at least 1, not 0"):
        risk_norms(company().to_history(), AS_OF, min_spells=0)


def test_no_open_deal_gives_an_empty_frame() -> None:
    history = company().to_history()
    before = ts(2023, 12, 1)
    got = risk_flags(snapshot_features(history, [before]).collect(), risk_norms(history, before))
    assert got.height == 0 and got.columns == ["deal_id", "flag", "evidence", "severity"]


def test_without_days_pushed_total_the_push_evidence_has_no_total() -> None:
    history = company().to_history()
    rows = snapshot_features(history, [AS_OF]).collect().drop("days_pushed_total")
    got = risk_flags(rows, risk_norms(history, AS_OF)).filter(pl.col("flag") == "pushed")
    assert got["evidence"].to_list() == ["close date pushed 3 times"]


# -- the point-in-time property ------------------------------------------------------------


def _norms_and_flags(raw: Raw, as_of: datetime) -> tuple[pl.DataFrame, ...]:
    # Minimums of 1: every norm the data allows is defined and exercised.
    history = raw.to_history()
    norms = risk_norms(history, as_of, min_spells=1, min_observations=1, min_owner_deals=1)
    rows = snapshot_features(history, [as_of]).collect()  # labels included: they must not leak
    return norms.stage_days, norms.silence, norms.owner_amounts, risk_flags(rows, norms)


@st.composite
def company_and_as_of(draw: st.DrawFn) -> tuple[Raw, datetime]:
    """The company plus a random history, as of a random hour of the random history's span
    or within three days of AS_OF (where the company raises every flag)."""
    raw, extra = company(), draw(raw_histories())
    raw.deals += extra.deals
    raw.history += extra.history
    raw.activities += extra.activities
    raw.reps = extra.reps
    near = st.integers(-72, 72).map(lambda h: AS_OF + timedelta(hours=h))
    as_of = draw(st.one_of(as_of_hours().map(at), near))
    return raw, as_of + timedelta(minutes=draw(st.sampled_from([0, 1, 59])))


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the company is 70 kB
@FAST
@given(data=st.data(), example=company_and_as_of())
def test_rows_after_as_of_never_change_norms_or_flags(
    data: st.DataObject, example: tuple[Raw, datetime]
) -> None:
    raw, as_of = example
    before = _norms_and_flags(raw, as_of)
    after = _norms_and_flags(data.draw(future_edits(raw, as_of)), as_of)
    for one, other in zip(before, after, strict=True):
        assert_frame_equal(one, other)
    assert (before[-1]["severity"] >= 1).all()


def test_the_property_sees_every_flag() -> None:
    # The property above is not vacuous: near AS_OF its histories raise each flag.
    assert set(_norms_and_flags(company(), AS_OF)[-1]["flag"]) == set(RISK_FLAGS)
