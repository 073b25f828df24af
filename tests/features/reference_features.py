"""A naive, row-by-row reference for ``snapshot_features``: slow, obvious, and independent.

It walks Python lists of row dicts (see history_strategies.Raw); nothing is shared with the
polars implementation except the pipeline config and the definitions in its docstring.
"""

from __future__ import annotations

import statistics
from datetime import date, datetime, time, timedelta

import polars as pl

from features.contract import ACTIVITY_TYPES, DEFAULT_PIPELINE
from features.snapshots import LABEL_COLUMNS, snapshot_features
from tests.features.history_strategies import Raw

ORDER = DEFAULT_PIPELINE.order()
KIND = {s.name: s.kind for s in DEFAULT_PIPELINE.stages}
PROB = {s.name: s.probability for s in DEFAULT_PIPELINE.stages}


def _days(delta: timedelta) -> float:
    return delta / timedelta(days=1)


def reference_features(raw: Raw, as_of: datetime) -> list[dict]:
    rows = []
    teams = {}
    hired = {}
    for rep in raw.reps:
        teams.setdefault(rep["owner_id"], rep.get("team"))
        hired.setdefault(rep["owner_id"], rep.get("hired_at"))
    for deal in raw.deals:
        created, closed = deal["created_at"], deal["closed_at"]
        if not (created <= as_of and (closed is None or closed > as_of)):
            continue
        rows.append(_one(raw, deal, as_of, teams, hired))
    return sorted(rows, key=lambda r: r["deal_id"])


def _one(raw: Raw, deal: dict, as_of: datetime, teams: dict, hired: dict) -> dict:
    did = deal["deal_id"]
    hist = [
        (i, h)
        for i, h in enumerate(raw.history)
        if h["deal_id"] == did and h["changed_at"] <= as_of
    ]
    hist.sort(key=lambda p: (p[1]["changed_at"], p[0]))
    state: dict = {
        "stage": None,
        "amount": None,
        "expected_close_date": None,
        "forecast_category": None,
    }
    first_amount = None
    regressions = pushes = days_pushed = 0
    entered = None
    prev_stage = None
    prev_close = None
    for _, h in hist:
        for col in ("amount", "expected_close_date", "forecast_category"):
            if h[col] is not None:
                state[col] = h[col]
        if first_amount is None and state["amount"] is not None:
            first_amount = state["amount"]
        stage = h["stage"]
        if (
            prev_stage is not None
            and KIND[stage] == "open"
            and KIND[prev_stage] == "open"
            and ORDER[stage] < ORDER[prev_stage]
        ):
            regressions += 1
        if prev_stage is None or stage != prev_stage:
            entered = h["changed_at"]
        close = state["expected_close_date"]
        if prev_close is not None and close is not None and close > prev_close:
            pushes += 1
            days_pushed += (close - prev_close).days
        prev_close = close
        prev_stage = stage
        state["stage"] = stage
    owner = deal["owner_id"]
    acts = [a for a in raw.activities if a["deal_id"] == did and a["occurred_at"] <= as_of]
    out = {
        "deal_id": did,
        "as_of": as_of,
        "stage": state["stage"],
        "stage_order": ORDER.get(state["stage"]) if state["stage"] else None,
        "stage_probability": PROB.get(state["stage"]) if state["stage"] else None,
        "amount": state["amount"],
        "amount_initial": first_amount,
        "amount_change": (
            state["amount"] - first_amount
            if state["amount"] is not None and first_amount is not None
            else None
        ),
        "expected_close_date": state["expected_close_date"],
        "forecast_category": state["forecast_category"],
        "days_in_stage": _days(as_of - entered) if entered else None,
        "deal_age_days": _days(as_of - deal["created_at"]),
        "stage_regressions": regressions if hist else None,
        "close_date_pushes": pushes if hist else None,
        "days_pushed_total": days_pushed if hist else None,
        "days_to_expected_close": (
            (state["expected_close_date"] - as_of.date()).days
            if state["expected_close_date"]
            else None
        ),
    }
    for window in (7, 30):
        recent = [a for a in acts if a["occurred_at"] > as_of - timedelta(days=window)]
        out[f"activity_count__{window}d"] = len(recent)
        for t in ACTIVITY_TYPES:
            out[f"activity_count__{window}d__{t}"] = sum(a["type"] == t for a in recent)
    out["activity_count__total"] = len(acts)
    last = max((a["occurred_at"] for a in acts), default=None)
    out["days_since_last_activity"] = _days(as_of - last) if last else None
    closed = [
        d
        for d in raw.deals
        if d["owner_id"] == owner
        and d["closed_at"] is not None
        and as_of - timedelta(days=365) < d["closed_at"] <= as_of
        and KIND.get(d["stage"]) in ("won", "lost")
    ]
    won = [d for d in closed if KIND[d["stage"]] == "won"]
    out["owner_win_rate__365d"] = len(won) / len(closed) if closed else None
    out["owner_closed_count__365d"] = len(closed)
    out["owner_median_cycle_days__365d"] = (
        statistics.median(_days(d["closed_at"] - d["created_at"]) for d in won) if won else None
    )
    hire: date | None = hired.get(owner)
    if hire is not None:
        start = datetime.combine(hire, time(), tzinfo=as_of.tzinfo)
    else:
        start = min(d["created_at"] for d in raw.deals if d["owner_id"] == owner)
    out["owner_tenure_days"] = _days(as_of - start)
    for dim in ("owner_id", "region", "product", "segment", "source", "deal_type", "account_id"):
        out[dim] = deal.get(dim)
    out["team"] = teams.get(owner)
    return out


def computed_features(raw: Raw, as_of: datetime) -> pl.DataFrame:
    """``snapshot_features`` for one as-of date, without labels, sorted by deal."""
    return (
        snapshot_features(raw.to_history(), [as_of]).drop(LABEL_COLUMNS).sort("deal_id").collect()
    )
