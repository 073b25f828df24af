"""Small random deal histories for property tests, kept as plain rows so tests can mutate them.

Times are whole hours after ``BASE`` so that ties (two rows at one instant) happen often.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import polars as pl
from hypothesis import strategies as st

from features.contract import ACTIVITY_TYPES, DEFAULT_PIPELINE, DealHistory

BASE = datetime(2024, 1, 1, tzinfo=UTC)
OPEN = list(DEFAULT_PIPELINE.open_stages)
WON, LOST = "Closed Won", "Closed Lost"
OWNERS = ["o1", "o2", "o3"]


def at(hours: int) -> datetime:
    return BASE + timedelta(hours=hours)


@dataclass
class Raw:
    """A deal history as row dicts (the canonical columns), easy to add to, drop from, change."""

    deals: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    activities: list[dict] = field(default_factory=list)
    reps: list[dict] = field(default_factory=list)

    def to_history(self) -> DealHistory:
        return DealHistory.from_frames(
            deals=pl.DataFrame(self.deals, schema=_schema("deals")),
            stage_history=pl.DataFrame(self.history, schema=_schema("stage_history")),
            activities=pl.DataFrame(self.activities, schema=_schema("activities")),
            reps=pl.DataFrame(self.reps, schema=_schema("reps")),
        )

    def copy(self) -> Raw:
        return replace(
            self,
            deals=[dict(r) for r in self.deals],
            history=[dict(r) for r in self.history],
            activities=[dict(r) for r in self.activities],
            reps=[dict(r) for r in self.reps],
        )


def _schema(table: str) -> dict[str, pl.DataType]:
    from features.contract import SCHEMAS

    return SCHEMAS[table]


@st.composite
def deal_rows(draw: st.DrawFn, deal_id: str, *, min_start: int = 0, max_start: int = 2000) -> Raw:
    """One deal with a history of stage moves, amount and close-date changes, activities."""
    start = draw(st.integers(min_start, max_start))
    owner = draw(st.sampled_from(OWNERS))
    n_changes = draw(st.integers(0, 5))
    gaps = draw(st.lists(st.integers(0, 400), min_size=n_changes, max_size=n_changes))
    outcome = draw(st.sampled_from(["open", "won", "lost"]))
    rows = []
    t = start
    stage = OPEN[0]
    amount: float | None = draw(st.sampled_from([None, 1000.0, 2500.0]))
    close = BASE.date() + timedelta(days=start // 24 + draw(st.integers(-5, 90)))
    rows.append(_hist(deal_id, t, stage, amount, close, "pipeline"))
    for gap in gaps:
        t += gap
        stage = draw(st.sampled_from(OPEN))
        new_amount = draw(st.sampled_from([None, None, 800.0, 1500.0, 3000.0]))
        new_close = draw(
            st.sampled_from([None, None, close + timedelta(days=14), close - timedelta(days=3)])
        )
        if new_close is not None:
            close = new_close
        rows.append(
            _hist(deal_id, t, stage, new_amount, new_close, draw(st.sampled_from([None, "commit"])))
        )
    closed_at = None
    final = stage
    if outcome != "open":
        t += draw(st.integers(0, 300))
        closed_at = at(t)
        final = WON if outcome == "won" else LOST
        rows.append(_hist(deal_id, t, final, None, None, None))
    acts = [
        {
            "activity_id": f"{deal_id}-a{i}",
            "occurred_at": at(start + off),
            "owner_id": owner,
            "type": draw(st.sampled_from(ACTIVITY_TYPES)),
            "deal_id": deal_id,
            "account_id": None,
        }
        for i, off in enumerate(draw(st.lists(st.integers(0, max(t - start, 0) + 200), max_size=6)))
    ]
    deal = {
        "deal_id": deal_id,
        "created_at": at(start),
        "owner_id": owner,
        "stage": final,
        "amount": draw(st.sampled_from([1200.0, 2500.0])),
        "expected_close_date": close,
        "closed_at": closed_at,
        "region": draw(st.sampled_from(["EU", "NA"])),
        "product": "core",
    }
    return Raw(deals=[deal], history=rows, activities=acts)


def _hist(
    deal_id: str, hours: int, stage: str, amount: float | None, close: date | None, cat: str | None
) -> dict:
    return {
        "deal_id": deal_id,
        "changed_at": at(hours),
        "stage": stage,
        "amount": amount,
        "expected_close_date": close,
        "forecast_category": cat,
    }


@st.composite
def raw_histories(draw: st.DrawFn, *, max_deals: int = 8) -> Raw:
    n = draw(st.integers(1, max_deals))
    raw = Raw()
    for i in range(n):
        one = draw(deal_rows(f"d{i}"))
        raw.deals += one.deals
        raw.history += one.history
        raw.activities += one.activities
    with_hire = draw(st.booleans())
    raw.reps = [
        {"owner_id": o, "team": "t1" if o != "o3" else "t2", "hired_at": date(2023, 6, 1)}
        for o in OWNERS
        if with_hire or o == "o1"
    ]
    return raw


def as_of_hours() -> st.SearchStrategy[int]:
    return st.integers(0, 3000)


@st.composite
def future_edits(draw: st.DrawFn, raw: Raw, as_of: datetime) -> Raw:
    """Add, delete and change rows dated after ``as_of``; everything else stays as it was."""
    out = raw.copy()
    cut = int((as_of - BASE).total_seconds() // 3600) + 1
    # delete some future history rows and activities
    out.history = [h for h in out.history if h["changed_at"] <= as_of or draw(st.booleans())]
    out.activities = [a for a in out.activities if a["occurred_at"] <= as_of or draw(st.booleans())]
    # change future history rows and activities
    for h in out.history:
        if h["changed_at"] > as_of and draw(st.booleans()):
            h["stage"] = draw(st.sampled_from(["Discovery", "Proposal", WON, LOST]))
            h["amount"] = draw(st.sampled_from([None, 1.0, 99999.0]))
            h["expected_close_date"] = draw(st.sampled_from([None, date(2030, 1, 1)]))
    for a in out.activities:
        if a["occurred_at"] > as_of and draw(st.booleans()):
            a["type"] = "demo"
    # deals that close after as_of: change how and when they close (still after as_of), and
    # their latest-state columns, which a CRM rewrites over time
    for d in out.deals:
        if d["closed_at"] is None or d["closed_at"] > as_of:
            if draw(st.booleans()):
                d["stage"] = draw(st.sampled_from([WON, LOST, "Negotiation"]))
                d["closed_at"] = (
                    None if d["stage"] == "Negotiation" else at(cut + draw(st.integers(0, 500)))
                )
                d["amount"] = draw(st.sampled_from([5.0, 50000.0]))
                d["expected_close_date"] = date(2031, 1, 1)
    # deals created after as_of: delete some, add some
    out.deals = [d for d in out.deals if d["created_at"] <= as_of or draw(st.booleans())]
    kept = {d["deal_id"] for d in out.deals}
    out.history = [h for h in out.history if h["deal_id"] in kept]
    out.activities = [a for a in out.activities if a["deal_id"] in kept]
    for i in range(draw(st.integers(0, 3))):
        new = draw(deal_rows(f"new{i}", min_start=cut, max_start=cut + 1000))
        out.deals += new.deals
        out.history += new.history
        out.activities += new.activities
    # new history rows and activities after as_of for deals that exist
    for d in out.deals:
        if draw(st.booleans()):
            out.history.append(
                {
                    "deal_id": d["deal_id"],
                    "changed_at": at(cut + draw(st.integers(0, 100))),
                    "stage": draw(st.sampled_from(["Qualification", "Negotiation"])),
                    "amount": 7.0,
                    "expected_close_date": date(2029, 5, 5),
                    "forecast_category": "commit",
                }
            )
            out.activities.append(
                {
                    "activity_id": f"x-{d['deal_id']}",
                    "occurred_at": at(cut + draw(st.integers(0, 100))),
                    "owner_id": d["owner_id"],
                    "type": "call",
                    "deal_id": d["deal_id"],
                    "account_id": None,
                }
            )
    return out
