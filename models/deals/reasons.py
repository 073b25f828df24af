"""Why a deal scores what it scores, in words a rep understands, computed from the model.

For each group of related features (pushes, activity, owner record, ...) the model re-scores the
deal with that group set to what a typical deal *in the same stage* had (medians and modes of the
training rows of that stage). The difference is that group's effect on this deal's probability;
the largest effects, up or down, become the reasons. It is an occlusion attribution: model-based,
exact for the model, cheap for the few hundred deals a rep or a team owns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from models.deals.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES

__all__ = ["Reason", "ReasonExplainer", "REASON_GROUPS"]

Phrase = Callable[[dict], str]


def _n(value: float | int | None) -> int:
    return int(round(float(value))) if value is not None else 0


def _pushes(r: dict) -> str:
    n = _n(r["close_date_pushes"])
    if n == 0:
        return "close date never pushed"
    return f"close date pushed {n} time{'s' if n != 1 else ''} ({_n(r['days_pushed_total'])} days)"


def _silence(r: dict) -> str:
    d = r["days_since_last_activity"]
    return "no activity logged yet" if d is None else f"no activity for {_n(d)} days"


def _activity(r: dict) -> str:
    return f"{_n(r['activity_count__30d'])} activities in the last 30 days"


def _owner(r: dict) -> str:
    rate, n = r["owner_win_rate__365d"], _n(r["owner_closed_count__365d"])
    if rate is None or n == 0:
        return "owner has no closed deals in the last year"
    return f"this owner won {round(100 * rate)}% of {n} deals closed in the last year"


def _close(r: dict) -> str:
    d = r["days_to_expected_close"]
    if d is None:
        return "no expected close date"
    d = _n(d)
    return f"{-d} days past its close date" if d < 0 else f"expected to close in {d} days"


def _amount(r: dict) -> str:
    change = r["amount_change"]
    if change is not None and change < 0:
        return f"amount cut by {-change:,.0f} since creation"
    return f"amount {r['amount']:,.0f}" if r["amount"] is not None else "no amount"


REASON_GROUPS: dict[str, tuple[tuple[str, ...], Phrase]] = {
    "pushes": (("close_date_pushes", "days_pushed_total"), _pushes),
    "silence": (("days_since_last_activity",), _silence),
    "activity": (
        tuple(c for c in NUMERIC_FEATURES if c.startswith("activity_count__")),
        _activity,
    ),
    "owner": (
        ("owner_win_rate__365d", "owner_closed_count__365d", "owner_median_cycle_days__365d"),
        _owner,
    ),
    "stage_time": (("days_in_stage",), lambda r: f"{_n(r['days_in_stage'])} days in {r['stage']}"),
    "age": (("deal_age_days",), lambda r: f"open for {_n(r['deal_age_days'])} days"),
    "close_date": (("days_to_expected_close",), _close),
    "amount": (("amount", "amount_change"), _amount),
    "regressions": (
        ("stage_regressions",),
        lambda r: f"moved back a stage {_n(r['stage_regressions'])} time(s)",
    ),
    "call": (("forecast_category",), lambda r: f"rep's call: {r['forecast_category'] or 'none'}"),
    "tenure": (
        ("owner_tenure_days",),
        lambda r: f"owner's tenure {_n((r['owner_tenure_days'] or 0) / 30)} months",
    ),
    "product": (("product", "segment"), lambda r: f"{r['product']} for {r['segment']}"),
    "source": (("source", "deal_type"), lambda r: f"{r['deal_type']} deal from {r['source']}"),
}
"""Feature groups the reasons speak of, with the phrase that describes a deal's value."""


@dataclass(frozen=True)
class Reason:
    """One reason: what is true of the deal, and how much it moves the probability."""

    group: str
    text: str
    effect: float  # probability points (0..1 scale) this group adds (+) or removes (-)

    def __str__(self) -> str:
        direction = "raises" if self.effect > 0 else "lowers"
        return f"{self.text} ({direction} the chance by {abs(self.effect) * 100:.0f} pts)"


class ReasonExplainer:
    """Explains a fitted close-probability model's scores against same-stage typical deals.

    Parameters
    ----------
    model
        Anything with ``predict_proba(frame)`` over snapshot rows.
    reference_rows : DataFrame
        Training rows (snapshot features); their per-stage medians/modes are the "typical deal".
    """

    def __init__(self, model: object, reference_rows: pl.DataFrame) -> None:
        self.model = model
        numeric = [c for c in NUMERIC_FEATURES if c in reference_rows.columns]
        categorical = [c for c in CATEGORICAL_FEATURES if c in reference_rows.columns]
        self.typical = reference_rows.group_by("stage").agg(
            *[pl.col(c).median().alias(c) for c in numeric if c != "stage_order"],
            *[pl.col(c).drop_nulls().mode().first().alias(c) for c in categorical if c != "stage"],
        )

    def explain(self, rows: pl.DataFrame, *, top: int = 3) -> list[list[Reason]]:
        """The ``top`` reasons of each row, largest effect first."""
        if rows.height == 0:
            return []
        base = self._score(rows)
        effects: dict[str, np.ndarray] = {}
        for group, (columns, _) in REASON_GROUPS.items():
            present = [c for c in columns if c in rows.columns and c in self.typical.columns]
            if not present:
                continue
            typical = rows.select("stage").join(
                self.typical.select("stage", *present),
                on="stage",
                how="left",
                maintain_order="left",
            )
            swapped = rows.with_columns(
                pl.coalesce(typical[c], rows[c]).cast(rows.schema[c]).alias(c) for c in present
            )
            effects[group] = base - self._score(swapped)
        records = rows.to_dicts()
        out = []
        for i, record in enumerate(records):
            ranked = sorted(effects, key=lambda g: -abs(effects[g][i]))[:top]
            out.append(
                [Reason(g, REASON_GROUPS[g][1](record), float(effects[g][i])) for g in ranked]
            )
        return out

    def _score(self, rows: pl.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(rows))[:, 1]  # type: ignore[attr-defined]
