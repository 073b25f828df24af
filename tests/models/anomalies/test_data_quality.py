"""Data-quality checks on a hand-built company: each break with hand-computed numbers, a clean
company that raises nothing, histories without optional tables, argument errors, and the
point-in-time property (rows dated after as_of never change the detections)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from scipy.stats import nbinom, norm

from features.contract import SCHEMAS, DealHistory
from models.anomalies.data_quality import DATA_QUALITY_CHECKS, data_quality
from models.anomalies.detections import ANOMALY_SCHEMA
from tests.features.history_strategies import Raw, as_of_hours, at, future_edits, raw_histories
from tests.models.tiny_history import stage_row, ts

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AS_OF = ts(2024, 7, 1)  # a Monday; the previous month starts are 2024-01-01 .. 2024-06-01
FAR = date(2025, 6, 30)  # a close date never past due here
DISC, QUAL, LOST = "Discovery", "Qualification", "Closed Lost"
OWN = "own"  # _deal's default account: one account per deal, so no accidental duplicates


def _deal(
    raw: Raw,
    deal: str,
    created: datetime,
    *,
    owner: str = "o1",
    amount: float | None = 1000.0,
    close: date = FAR,
    closed: datetime | None = None,
    account: str | None = OWN,
    touch: bool = True,
) -> None:
    """A deal in Discovery from ``created`` (lost at ``closed``), touched weekly while open."""
    raw.deals.append(
        {
            "deal_id": deal,
            "created_at": created,
            "owner_id": owner,
            "stage": LOST if closed else DISC,
            "amount": amount,
            "expected_close_date": close,
            "closed_at": closed,
            "account_id": f"acc-{deal}" if account == OWN else account,
        }
    )
    raw.history.append(stage_row(deal, created, DISC, amount, close))
    if closed is not None:
        raw.history.append(stage_row(deal, closed, LOST, None, None))
    when = created + timedelta(hours=1)
    while touch and when < min(closed or AS_OF, AS_OF):
        _activity(raw, owner, when, deal)
        when += timedelta(weeks=1)


def _activity(raw: Raw, owner: str, when: datetime, deal: str | None = None) -> None:
    raw.activities.append(
        {
            "activity_id": f"a{len(raw.activities)}",
            "occurred_at": when,
            "owner_id": owner,
            "type": "call",
            "deal_id": deal,
        }
    )


def _log(raw: Raw, owner: str, first: date, last: date, per_day: int, every: int = 1) -> None:
    """``per_day`` unlinked calls at 10:00 on every ``every``-th day from ``first`` to ``last``."""
    day = first
    while day <= last:
        for i in range(per_day):
            _activity(
                raw, owner, datetime(day.year, day.month, day.day, 10, i, tzinfo=AS_OF.tzinfo)
            )
        day += timedelta(days=every)


def company(*breaks: str) -> Raw:
    """A steady company, plus the named breaks.

    60 open deals ``bg00..bg59`` (created 2023-12-01, 1,000 each, even ones o1's, odd ones
    o2's) touched weekly; ``bg00`` has been past due since 2023-12-20. Reps o1, o2 (team T1)
    log 3 calls a day, o3 2 and o4 1 (team T2), every day of 2023-12-01 .. 2024-06-30.
    """
    raw = Raw()
    raw.reps = [
        {"owner_id": o, "team": t, "hired_at": date(2020, 1, 1)}
        for o, t in (("o1", "T1"), ("o2", "T1"), ("o3", "T2"), ("o4", "T2"), ("o6", "T1"))
    ]
    raw.reps.append({"owner_id": "o5", "team": "T1", "hired_at": date(2024, 5, 1)})
    for i in range(60):
        created = ts(2023, 12, 1) + timedelta(days=i % 7)
        close = date(2023, 12, 20) if i == 0 else FAR
        _deal(raw, f"bg{i:02d}", created, owner=f"o{1 + i % 2}", close=close)
    silent = "activity_drop" in breaks
    for owner, per_day in (("o1", 3), ("o2", 3), ("o3", 2), ("o4", 1)):
        last = date(2024, 6, 16) if silent and owner in ("o3", "o4") else date(2024, 6, 30)
        _log(raw, owner, date(2023, 12, 1), last, per_day)
    if silent:  # a new hire and a rep logging too little to test, both going quiet too
        _log(raw, "o5", date(2024, 5, 1), date(2024, 6, 16), 3)
        _log(raw, "o6", date(2023, 12, 4), date(2024, 6, 16), 4, every=7)
    if "past_due" in breaks:  # 6 deals created after the last month start, due 2024-06-20
        for k in range(1, 7):
            owner = "o1" if k <= 4 else "o3"
            _deal(raw, f"late{k}", ts(2024, 6, 10), owner=owner, close=date(2024, 6, 20))
    if "stale" in breaks:
        for k in range(1, 6):  # last touched 2024-03-20: 73 days before 06-01, 103 before 07-01
            deal, owner = f"stale{k}", "o1" if k <= 3 else "o2"
            _deal(raw, deal, ts(2024, 3, 15), owner=owner, touch=False)
            raw.history.append(stage_row(deal, ts(2024, 3, 20), DISC, None, None))
        _deal(raw, "moved", ts(2024, 3, 15), touch=False)  # a stage-history row on 05-01
        raw.history.append(stage_row("moved", ts(2024, 5, 1), QUAL, None, None))
        _deal(raw, "called", ts(2024, 3, 15), touch=False)  # an activity on 04-15
        _activity(raw, "o1", ts(2024, 4, 15), "called")
    if "missing" in breaks:
        _deal(raw, "m1", ts(2024, 3, 1), amount=None)  # open, no amount
        _deal(raw, "m2", ts(2024, 5, 1), amount=0.0)  # open at 0
        _deal(raw, "m3", ts(2024, 6, 1), amount=None, closed=ts(2024, 6, 10))  # recent, lost
        _deal(raw, "m4", ts(2023, 12, 1), amount=None, closed=ts(2024, 1, 5))  # old: not checked
        _deal(raw, "m5", ts(2024, 6, 1), amount=0.0, closed=ts(2024, 6, 10))  # closed at 0: fine
        _deal(raw, "m6", ts(2024, 4, 1), amount=None)  # given an amount on 05-01
        raw.history.append(stage_row("m6", ts(2024, 5, 1), DISC, 500.0, None))
        _deal(raw, "m7", ts(2024, 4, 1), amount=800.0)  # a later row without one: carried
        raw.history.append(stage_row("m7", ts(2024, 5, 1), QUAL, None, None))
    if "duplicates" in breaks:
        for deal, account, amount, day, owner in (
            ("dup1", "A", 20_000.0, 1, "o2"),
            ("dup2", "A", 20_100.0, 10, "o2"),  # dup1's duplicate: 0.5% apart, 9 days later
            ("dup3", "A", 20_500.0, 5, "o2"),  # 2.5% from dup1, 2% from dup2
            ("dup4", "B", 5_000.0, 1, "o2"),
            ("dup5", "B", 5_000.0, 20, "o2"),  # 19 days after dup4
            ("dup6", None, 7_000.0, 2, "o2"),
            ("dup7", None, 7_000.0, 3, "o2"),  # no account: dup6's duplicate through the owner
            ("dup8", None, 7_000.0, 2, "o1"),  # another owner
            ("dup9", "D", 0.0, 1, "o2"),
            ("dup10", "D", 0.0, 1, "o2"),  # no amount: not compared
        ):
            _deal(raw, deal, ts(2024, 6, day), owner=owner, amount=amount, account=account)
        for deal, day in (("dup11", 1), ("dup12", 3)):  # twins, but closed and created long ago
            _deal(raw, deal, ts(2023, 12, day), amount=3000.0, account="C", closed=ts(2024, 1, 9))
    return raw


def found(
    raw: Raw | DealHistory, metric: str, as_of: datetime = AS_OF, **options: float
) -> list[dict]:
    """The ``metric`` records of ``data_quality``, drilldowns parsed."""
    history = raw.to_history() if isinstance(raw, Raw) else raw
    rows = data_quality(history, as_of, **options).filter(pl.col("metric") == metric)
    return [
        {**row, "drilldown": json.loads(row["drilldown"])} for row in rows.iter_rows(named=True)
    ]


# -- each check -----------------------------------------------------------------------------


def test_a_steady_company_raises_nothing() -> None:
    history = company().to_history()
    for as_of in (AS_OF, ts(2024, 4, 1), ts(2024, 6, 12)):
        assert data_quality(history, as_of).height == 0


def test_past_due_open_deals() -> None:
    (record,) = found(company("past_due"), "past_due_open")
    # At each of the 6 month starts 1 of the 60 open deals was past due; now 7 of 66 are.
    assert record["observed"] == pytest.approx(7 / 66)
    assert record["expected"] == pytest.approx(6.5 / 361)  # (6 + 0.5) / (360 + 1)
    assert record["band_high"] < 7 / 66
    assert (record["period_start"], record["by"], record["direction"]) == (AS_OF.date(), "", "up")
    # The null: mean 66 * p0, variance inflated by 1 + 66/360 (the baseline's own error; the
    # months' Pearson dispersion is below 1). Seven or more of 1.19 expected: p = 0.0011.
    mu, size = 66 * 6.5 / 361, 66 * 6.5 / 361 / (66 / 360)
    p = nbinom.sf(6, size, size / (size + mu))
    assert record["score"] == pytest.approx(norm.isf(p), abs=1e-3)
    assert record["severity"] == "low"
    assert record["summary"].startswith(
        "7 open deals (10.6% of 66, 7K) have an expected close date before 2024-07-01; "
        "usually 1.8% at the previous month starts"
    )
    assert record["drilldown"] == [
        {"what": "o1", "share": 0.714, "detail": "5 deals, 5K"},
        {"what": "o3", "share": 0.286, "detail": "2 deals, 2K"},
    ]


def test_past_due_above_the_ceiling_is_flagged_whatever_the_baseline() -> None:
    raw = company("past_due")
    assert found(raw, "past_due_open", min_excess=0.5) == []  # 7.5 points over: not enough
    (record,) = found(raw, "past_due_open", min_excess=0.5, past_due_ceiling=0.07)
    assert record["score"] == pytest.approx(4 * (7 / 66) / 0.07, abs=1e-3)  # 6.06
    assert record["severity"] == "high"


def test_stale_pipeline() -> None:
    (record,) = found(company("stale"), "stale_pipeline")
    # None stale at 6 month starts (60 open deals at 3, 67 at the next 3); now 5 of 67.
    assert record["observed"] == pytest.approx(5 / 67)
    assert record["expected"] == pytest.approx(0.5 / 382)
    assert record["summary"].startswith(
        "5 open deals (7.5% of 67, 5K) have had no stage change or activity in 90 days"
    )
    assert record["drilldown"] == [
        {"what": "o1", "share": 0.6, "detail": "3 deals, 3K"},
        {"what": "o2", "share": 0.4, "detail": "2 deals, 2K"},
    ]
    assert found(company("stale"), "stale_pipeline", as_of=ts(2024, 6, 1)) == []


def test_missing_amounts() -> None:
    (record,) = found(company("missing"), "missing_amount")
    # Checked: 64 open deals (60 + m1, m2, m6, m7) and 2 recent closed ones (m3, m5).
    assert (record["observed"], record["expected"]) == (3.0, 0.0)
    assert record["score"] == pytest.approx(2 + 4 * (3 / 66) / 0.10, abs=1e-3)
    assert record["severity"] == "low"
    assert (record["period_start"], record["period_end"]) == (date(2024, 4, 2), AS_OF.date())
    assert "3 of the 66 deals" in record["summary"]
    assert "2 missing, 1 at 0 while open" in record["summary"]
    assert [entry["what"] for entry in record["drilldown"]] == ["m1", "m2", "m3"]
    assert record["drilldown"][1]["detail"] == "owner o1, Discovery, created 2024-05-01, amount 0"
    assert (
        record["drilldown"][2]["detail"]
        == "owner o1, Closed Lost, created 2024-06-01, amount missing"
    )


def test_duplicate_deals() -> None:
    (record,) = found(company("duplicates"), "duplicate_deals")
    # Checked: the 60 open deals and dup1..dup10; 4 of those 70 deals are in a pair.
    assert (record["observed"], record["expected"]) == (2.0, 0.0)
    assert record["score"] == pytest.approx(2 + 4 * (4 / 70) / 0.10, abs=1e-3)
    assert record["severity"] == "medium"
    assert record["drilldown"] == [
        {
            "what": "dup1 / dup2",
            "share": 0.5,
            "detail": "A: amounts 20,000 and 20,100, created 9 days apart",
        },
        {
            "what": "dup6 / dup7",
            "share": 0.5,
            "detail": "owner o2: amounts 7,000 and 7,000, created 1 day apart",
        },
    ]


def test_activity_logging_drop_by_team_and_rep() -> None:
    records = {
        (r["by"], r["segment"]): r for r in found(company("activity_drop"), "activity_logging_drop")
    }
    # o3 and o4 (team T2) log nothing from 06-17; the company falls 26% only (204 vs 277.5);
    # the new hire o5 and o6 (4 calls a week) go quiet too but are not tested.
    assert set(records) == {("team", "T2"), ("owner_id", "o3"), ("owner_id", "o4")}
    rep = records["owner_id", "o3"]
    assert (rep["observed"], rep["expected"]) == (0.0, pytest.approx(28.0))
    assert (rep["period_start"], rep["period_end"]) == (date(2024, 6, 17), AS_OF.date())
    assert (rep["direction"], rep["severity"]) == ("down", "high")
    assert rep["summary"] == (
        "o3 logged 0 activities in the 14 days to 2024-07-01; about 28 expected from the 12 weeks "
        "before (-100%)"
    )
    assert rep["drilldown"] == [
        {"what": "call", "share": 1.0, "detail": "0 logged; about 28 expected"}
    ]
    team = records["team", "T2"]
    assert (team["observed"], team["expected"]) == (0.0, pytest.approx(42.0))
    assert team["drilldown"] == [
        {"what": "o3", "share": 0.667, "detail": "0 logged; about 28 expected"},
        {"what": "o4", "share": 0.333, "detail": "0 logged; about 14 expected"},
    ]
    # Steady weekly counts: phi = 1 * (1 + 2/12). Benjamini-Hochberg over the 7 tests (the
    # company, T1, T2, o1..o4) puts o4's p-value third: q = p * 7 / 3.
    size = 14 / (1 / 6)
    p_o4 = (size / (size + 14)) ** size
    assert records["owner_id", "o4"]["score"] == pytest.approx(norm.isf(p_o4 * 7 / 3), abs=1e-3)


def test_a_calm_rep_borrows_the_spread_of_the_others() -> None:
    raw = company("activity_drop")
    for owner in ("o1", "o2"):  # 6 more calls a day every other baseline week (slots 0, 2, ..)
        for k in range(0, 12, 2):
            monday = date(2024, 6, 10) - timedelta(weeks=k)
            _log(raw, owner, monday, monday + timedelta(days=6), 6)
    (rep,) = [r for r in found(raw, "activity_logging_drop") if r["segment"] == "o3"]
    # o1, o2: weeks of 51 and 93 calls, variance 12 * 21**2 / 11 over a mean of 72; o3 and o4
    # are steady (ratio 0): the median ratio of the 4 reps tested is half o1's.
    phi = (12 * 21**2 / 11 / 72) / 2 * (1 + 2 / 12)
    size = 28 / (phi - 1)
    assert rep["band_high"] == nbinom(size, size / (size + 28)).isf(0.01)


def test_min_drop_keeps_a_modest_fall_quiet() -> None:
    history = company("activity_drop").to_history()
    drops = data_quality(history, AS_OF, min_drop=0.1).filter(pl.col("by") == "")
    assert drops["summary"].to_list() == [
        "The company logged 204 activities in the 14 days to 2024-07-01; about 278 expected from "
        "the 12 weeks before (-26%)"
    ]


# -- what the history lacks, and bad arguments ----------------------------------------------


def test_missing_tables_are_skipped() -> None:
    raw = company("past_due", "stale", "activity_drop")
    deals_only = DealHistory.from_frames(deals=pl.DataFrame(raw.deals, schema=SCHEMAS["deals"]))
    result = data_quality(deals_only, AS_OF)
    assert result.schema == pl.Schema(ANOMALY_SCHEMA)
    # The derived history shows the stale deals untouched since creation (108 days): without
    # the real history the check cannot tell, so it is skipped; so are the activity checks.
    assert result["metric"].to_list() == ["past_due_open"]
    no_reps = DealHistory.from_frames(
        deals=pl.DataFrame(raw.deals, schema=SCHEMAS["deals"]),
        activities=pl.DataFrame(raw.activities, schema=SCHEMAS["activities"]),
    )
    drops = found(no_reps, "activity_logging_drop")
    # Without reps: no teams; o5 is still not tested, its first activity (05-01) being
    # inside the baseline.
    assert {(r["by"], r["segment"]) for r in drops} == {("owner_id", "o3"), ("owner_id", "o4")}


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("alpha", 1.5, "alpha must be between 0 and 1 \\(exclusive\\), not 1.5"),
        ("min_drop", 0.0, "min_drop must be between 0 and 1"),
        ("window_days", 0, "window_days must be at least 1, not 0"),
        ("min_weekly", -1.0, "min_weekly must be at least 0, not -1.0"),
    ],
)
def test_bad_arguments_are_named(argument: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        data_quality(company().to_history(), AS_OF, **{argument: value})


# -- point in time --------------------------------------------------------------------------

EVERY_BREAK = ("past_due", "stale", "missing", "duplicates", "activity_drop")


def test_rows_after_as_of_change_nothing() -> None:
    raw = company(*EVERY_BREAK)
    before = data_quality(raw.to_history(), AS_OF)
    later = ts(2024, 7, 2)
    for k in range(1, 4):  # a stale deal moves, a late one is pushed, m1 gets an amount
        raw.history.append(stage_row(f"stale{k}", later, QUAL, None, None))
        raw.history.append(stage_row(f"late{k}", later, DISC, None, date(2024, 9, 1)))
    raw.history.append(stage_row("m1", later, DISC, 900.0, None))
    for deal in raw.deals:
        if deal["deal_id"] in ("m1", "dup2"):  # the latest state a CRM export shows
            deal["amount"] = 900.0 if deal["deal_id"] == "m1" else 50_000.0
        if deal["deal_id"] == "dup2":
            deal["stage"], deal["closed_at"] = LOST, later
            raw.history.append(stage_row("dup2", later, LOST, 50_000.0, None))
    _log(raw, "o3", date(2024, 7, 1), date(2024, 7, 20), 30)
    _deal(raw, "new", ts(2024, 7, 1) + timedelta(seconds=1), amount=None, close=date(2024, 1, 1))
    assert_frame_equal(data_quality(raw.to_history(), AS_OF), before)


@st.composite
def company_and_as_of(draw: st.DrawFn) -> tuple[Raw, datetime]:
    raw, extra = company(*EVERY_BREAK), draw(raw_histories())
    raw.deals += extra.deals
    raw.history += extra.history
    raw.activities += extra.activities
    near = st.integers(-72, 72).map(lambda h: AS_OF + timedelta(hours=h))
    return raw, draw(st.one_of(as_of_hours().map(at), near))


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@FAST
@given(data=st.data(), example=company_and_as_of())
def test_rows_after_as_of_never_change_detections(
    data: st.DataObject, example: tuple[Raw, datetime]
) -> None:
    raw, as_of = example
    before = data_quality(raw.to_history(), as_of)
    # future_edits drops activities without a deal (it keeps those of the deals it keeps), so
    # the reps' unlinked calls are set aside, then put back with more of them after as_of.
    linked = raw.copy()
    linked.activities = [a for a in raw.activities if a["deal_id"] is not None]
    edited = data.draw(future_edits(linked, as_of))
    edited.activities += [a for a in raw.activities if a["deal_id"] is None]
    _log(edited, "o3", as_of.date() + timedelta(days=1), as_of.date() + timedelta(days=20), 9)
    assert_frame_equal(before, data_quality(edited.to_history(), as_of))


def test_the_property_sees_every_check() -> None:
    # The property above is not vacuous: at AS_OF its company raises every check.
    assert set(data_quality(company(*EVERY_BREAK).to_history(), AS_OF)["metric"]) == set(
        DATA_QUALITY_CHECKS
    )
