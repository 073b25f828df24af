"""Training sets for the deal models, as they could have been built on a given day.

A model trained "at" a cutoff C may see only what was known at C: snapshots taken before C,
labelled by outcomes that happened at or before C. Deals still open at C have no known label
yet and are left out of training (they are what the model will score). Splits are by time,
never by row, and one deal never sits on both sides of a split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from features.calendar import instant
from features.contract import DealHistory
from features.snapshots import snapshot_features

__all__ = [
    "CATEGORICAL_FEATURES",
    "DERIVED_FEATURES",
    "NUMERIC_FEATURES",
    "FEATURES",
    "MAX_CATEGORY_LEVELS",
    "NO_STAGE_HISTORY",
    "STAGE_DEPENDENT",
    "TimeSplit",
    "booster_matrix",
    "complete_features",
    "describe_dropped",
    "select_features",
    "category_levels",
    "features_of",
    "stage_history_known",
    "labelled_snapshots",
    "time_split",
    "weekly_grid",
    "with_derived",
]

NUMERIC_FEATURES: tuple[str, ...] = (
    "stage_order",
    "stage_probability",
    "amount",
    "amount_change",
    "days_in_stage",
    "deal_age_days",
    "stage_regressions",
    "close_date_pushes",
    "days_pushed_total",
    "days_to_expected_close",
    "activity_count__7d",
    "activity_count__30d",
    "activity_count__30d__call",
    "activity_count__30d__email",
    "activity_count__30d__meeting",
    "activity_count__30d__demo",
    "activity_count__30d__proposal",
    "activity_count__total",
    "days_since_last_activity",
    "owner_win_rate__365d",
    "owner_closed_count__365d",
    "owner_median_cycle_days__365d",
    "owner_tenure_days",
)
CATEGORICAL_FEATURES: tuple[str, ...] = (
    "stage",
    "forecast_category",
    "region",
    "product",
    "segment",
    "source",
    "deal_type",
)
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
"""The columns of ``snapshot_features`` the deal models read (no ids, no labels)."""

DERIVED_FEATURES: dict[str, pl.Expr] = {
    # how busy the deal has been since creation, per week
    "activity_rate__total": pl.col("activity_count__total")
    / pl.max_horizontal(pl.col("deal_age_days"), pl.lit(1.0))
    * 7.0,
    # last week's pace against the last month's (below 1: the deal is going quiet)
    "activity_trend__7d_vs_30d": (pl.col("activity_count__7d") / 7.0)
    / ((pl.col("activity_count__30d") + 1.0) / 30.0),
    # stages gained per month of age
    "stage_speed": pl.col("stage_order").cast(pl.Float64)
    / pl.max_horizontal(pl.col("deal_age_days"), pl.lit(1.0))
    * 30.0,
}
"""Ratios of snapshot columns that trees cannot form by themselves (computed per row)."""


STAGE_DEPENDENT: tuple[str, ...] = (
    "stage",
    "stage_order",
    "stage_probability",
    "days_in_stage",
    "stage_regressions",
    "stage_speed",
    "forecast_category",
    "amount_change",
    "close_date_pushes",
    "days_pushed_total",
    "days_to_expected_close",
)
"""Features read from the stage history: unknown at past snapshots when it is derived.

A derived history (``features.contract.derive_history``, no stage history in the source) puts
every closed deal in the first open stage, with its latest amount, expected close date and
forecast category, until it closes: at a past snapshot these columns are not what was known
then. The models leave them out of training and scoring in that case (reason
:data:`NO_STAGE_HISTORY`); the timing model's calendar features built from
``days_to_expected_close`` go with it.
"""
NO_STAGE_HISTORY = "no stage history"
MAX_CATEGORY_LEVELS = 250
"""Levels kept per categorical feature (the most frequent); a booster takes at most 255."""

_DTYPES: dict[str, pl.DataType] = {
    **{c: pl.Float64() for c in NUMERIC_FEATURES},
    **{c: pl.String() for c in CATEGORICAL_FEATURES},
}


def complete_features(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every absent ``FEATURES`` column added as nulls (for scoring and fitting)."""
    absent = [c for c in FEATURES if c not in frame.columns]
    if not absent:
        return frame
    return frame.with_columns(pl.lit(None, dtype=_DTYPES[c]).alias(c) for c in absent)


def with_derived(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus the :data:`DERIVED_FEATURES` columns (absent inputs count as null)."""
    return complete_features(frame).with_columns(
        expr.alias(name) for name, expr in DERIVED_FEATURES.items()
    )


def select_features(
    frame: pl.DataFrame,
    candidates: tuple[str, ...],
    *,
    stage_known: bool = True,
    absent: tuple[str, ...] = (),
    stage_dependent: tuple[str, ...] = STAGE_DEPENDENT,
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The ``candidates`` a model can learn from in ``frame``, and why the others are left out.

    A feature is dropped when it is ``absent`` from the caller's rows (``"absent"``), entirely
    null (``"all null"``) or holds one value on every row (``"constant"``): a gradient booster
    cannot split on it, and scikit-learn's crashes on an all-missing column. With
    ``stage_known`` false every ``stage_dependent`` feature is dropped (``"no stage
    history"``). Returns ``(used, dropped)``, ``used`` in ``candidates`` order, ``dropped``
    mapping feature -> reason.
    """
    used: list[str] = []
    dropped: dict[str, str] = {}
    for name in candidates:
        if not stage_known and name in stage_dependent:
            dropped[name] = NO_STAGE_HISTORY
        elif name in absent or name not in frame.columns:
            dropped[name] = "absent"
        elif frame.height == 0 or frame[name].null_count() == frame.height:
            dropped[name] = "all null"
        elif frame[name].n_unique() <= 1:
            dropped[name] = "constant"
        else:
            used.append(name)
    return tuple(used), dropped


def describe_dropped(dropped: dict[str, str]) -> str:
    """``dropped`` (feature -> reason) in words, grouped by reason; "none" when empty."""
    if not dropped:
        return "none"
    by_reason: dict[str, list[str]] = {}
    for name, reason in dropped.items():
        by_reason.setdefault(reason, []).append(name)
    return "; ".join(f"{reason}: {', '.join(names)}" for reason, names in by_reason.items())


def stage_history_known(frame: pl.DataFrame) -> bool:
    """Whether labelled rows show deals in more than one stage before they closed.

    A derived history (no stage history in the source) shows every closed deal in the first
    open stage at every snapshot; so does a real one in which no deal ever moved, where the
    stage features are constant anyway.
    """
    if "stage" not in frame.columns or frame.height == 0:
        return False
    return frame["stage"].drop_nulls().n_unique() > 1


def weekly_grid(start: date | datetime, end: date | datetime) -> list[datetime]:
    """Weekly as-of timestamps from ``start`` (inclusive) up to ``end`` (exclusive)."""
    first, last = instant(start), instant(end)
    out, t = [], first
    while t < last:
        out.append(t)
        t += timedelta(weeks=1)
    return out


def labelled_snapshots(
    history: DealHistory,
    as_ofs: list[datetime],
    *,
    cutoff: date | datetime,
) -> pl.DataFrame:
    """Snapshots at ``as_ofs`` (all before ``cutoff``) of deals whose outcome is known at it.

    Returns ``snapshot_features`` rows with ``label_won`` and ``label_closed_at`` true to what
    was known at ``cutoff``: rows of deals closed after ``cutoff`` (or still open) are dropped,
    so no label comes from after the cutoff.
    """
    limit = instant(cutoff)
    if any(instant(t) >= limit for t in as_ofs):
        raise ValueError(f"every as_of must be before the cutoff {limit:%Y-%m-%d %H:%M}")
    return (
        snapshot_features(history, as_ofs)
        .filter(pl.col("label_closed_at").is_not_null() & (pl.col("label_closed_at") <= limit))
        .collect()
    )


@dataclass(frozen=True)
class TimeSplit:
    """Rows for fitting, calibrating and testing, in that time order, with no deal in two."""

    fit: pl.DataFrame
    calibrate: pl.DataFrame
    test: pl.DataFrame


def time_split(
    frame: pl.DataFrame, *, calibrate_from: datetime, test_from: datetime | None = None
) -> TimeSplit:
    """Split snapshot rows by ``as_of``; a deal belongs to the part of its first snapshot.

    Every later snapshot of a deal that started in an earlier part is dropped from the later
    part, so the same deal never informs both sides (its outcome would leak across).
    """
    first_seen = frame.group_by("deal_id").agg(pl.col("as_of").min().alias("_first"))
    tagged = frame.join(first_seen, on="deal_id")
    cal_from = instant(calibrate_from)
    test_start = instant(test_from) if test_from is not None else None

    def part(lo: datetime | None, hi: datetime | None) -> pl.DataFrame:
        cond = pl.lit(True)
        if lo is not None:
            cond &= pl.col("_first") >= lo
        if hi is not None:
            cond &= pl.col("_first") < hi
        return tagged.filter(cond).drop("_first")

    return TimeSplit(
        fit=part(None, cal_from),
        calibrate=part(cal_from, test_start),
        test=part(test_start, None) if test_start is not None else tagged.clear().drop("_first"),
    )


def features_of(frame: pl.DataFrame) -> pl.DataFrame:
    """The model columns of a snapshot frame, in ``FEATURES`` order (labels dropped)."""
    return frame.select(FEATURES)


def category_levels(frame: pl.DataFrame) -> dict[str, list[str]]:
    """The sorted levels of each categorical feature seen in ``frame`` (fixed at fit time).

    At most :data:`MAX_CATEGORY_LEVELS` per feature, the most frequent (others score as
    missing); a feature absent from ``frame`` has no level.
    """
    out: dict[str, list[str]] = {}
    for c in CATEGORICAL_FEATURES:
        if c not in frame.columns:
            out[c] = []
            continue
        counts = (
            frame.select(pl.col(c).cast(pl.String))
            .drop_nulls()
            .group_by(c)
            .len()
            .sort(["len", c], descending=[True, False])
            .head(MAX_CATEGORY_LEVELS)
        )
        out[c] = sorted(counts[c].to_list())
    return out


def booster_matrix(
    frame: pl.DataFrame,
    *,
    numeric: tuple[str, ...],
    levels: dict[str, list[str]],
    categorical: tuple[str, ...] = CATEGORICAL_FEATURES,
) -> tuple[np.ndarray, np.ndarray]:
    """A gradient booster's input and its categorical mask.

    Columns ``numeric`` as floats, then each ``categorical`` feature as the index of its level
    in ``levels`` (NaN for a level unseen at fit time, which the booster treats as missing).
    Absent columns are read as nulls.
    """
    frame = complete_features(frame)
    exprs = [pl.col(c).cast(pl.Float64) for c in numeric] + [
        pl.col(c)
        .cast(pl.String)
        .replace_strict(
            {level: float(i) for i, level in enumerate(levels[c])},
            default=None,
            return_dtype=pl.Float64,
        )
        .alias(c)
        for c in categorical
    ]
    mask = np.array([False] * len(numeric) + [True] * len(categorical), dtype=bool)
    return frame.select(exprs).to_numpy().astype(np.float64), mask
