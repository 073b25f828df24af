"""Forecast-accuracy tracking: score every kept forecast once its target period has closed.

The kept forecasts (``features.forecast_log.KEPT_SCHEMA``: one row per forecast × method ×
segment × target period) meet what was actually booked (:func:`actuals_for`, from
:func:`models.forecast.baselines.monthly_bookings`) in :func:`score_forecasts`, which gives one
scored
row per kept row (``features.forecast_log.ACCURACY_SCHEMA``). :func:`accuracy_summary` and
:func:`accuracy_by_month` turn scored rows into WAPE, bias, P10-P90 coverage and mean accuracy
through :func:`models.metrics.summarise`, the same definitions the backtest uses.

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import polars as pl

from features.contract import DealHistory
from features.forecast_log import ACCURACY_SCHEMA, KEPT_KEY, KEPT_SCHEMA, METHODS, segment_label
from models import metrics
from models.forecast.baselines import monthly_bookings

__all__ = [
    "ACTUALS_SCHEMA",
    "SUMMARY_METRICS",
    "accuracy_by_month",
    "accuracy_summary",
    "actuals_for",
    "score_forecasts",
]

ACTUALS_SCHEMA: dict[str, pl.DataType] = {
    "by": pl.String(),
    "segment": pl.String(),
    "month": pl.Date(),
    "bookings": pl.Float64(),
}
"""The actuals frame: bookings of each complete month per ``by`` dimension and segment."""

SUMMARY_METRICS: tuple[str, ...] = ("wape", "bias", "coverage", "accuracy", "n")
"""The columns :func:`accuracy_summary` adds after its grouping keys."""

_PERIOD_MONTHS = {"month": 1, "quarter": 3}
_ROW = [k for k in KEPT_KEY if k != "method"]  # one forecast's row of one target period


def _closed_until(closed_before: date | datetime) -> date:
    """The day whose 00:00 UTC is the last instant known (a naive datetime is UTC)."""
    if isinstance(closed_before, datetime):
        moment = closed_before if closed_before.tzinfo else closed_before.replace(tzinfo=UTC)
        return moment.astimezone(UTC).date()
    return closed_before


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str, fix: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {', '.join(missing)} (has {', '.join(frame.columns)}): {fix}"
        )


def _method_rank(methods: Sequence[str]) -> list[str]:
    """The known methods first (in :data:`METHODS` order), then the others alphabetically."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


# -- actuals -----------------------------------------------------------------------------------


def actuals_for(history: DealHistory, kept: pl.DataFrame, before: date | datetime) -> pl.DataFrame:
    """What was booked in every complete month, for each ``by`` dimension the kept rows use.

    Parameters
    ----------
    history : DealHistory
    kept : DataFrame
        Kept forecasts; only its ``by`` column is read (``""`` is the company total).
    before : date or datetime
        The instant the bookings are known at (a bare date is 00:00 UTC); a month counts once
        it ended by then, as in :func:`models.forecast.baselines.monthly_bookings`.

    Returns
    -------
    DataFrame
        ``by, segment, month, bookings`` (:data:`ACTUALS_SCHEMA`): the total as ``by = ""``,
        ``segment = "total"``; a grouping's rows carry its name in ``by`` (``"region"``,
        ``"region,product"``) and the segment's label in ``segment``
        (``features.forecast_log.segment_label``: ``"EU"``, ``"EU · SMB"``, ``"(none)"`` for
        deals without a value). Zero-filled months, as ``monthly_bookings`` gives them.

    Examples
    --------
    >>> actuals_for(history, kept, date(2026, 11, 1))  # doctest: +SKIP
    """
    _require(kept, ["by"], "kept forecasts", "pass frames of ForecastLog.read()")
    parts = [pl.DataFrame(schema=ACTUALS_SCHEMA)]
    for by in sorted(kept["by"].drop_nulls().unique().to_list()):
        if by == "":
            series = monthly_bookings(history, before=before).with_columns(
                pl.lit("total").alias("segment")
            )
        else:
            dims = by.split(",")
            series = monthly_bookings(history, by=dims, before=before).with_columns(
                segment_label(dims)
            )
        series = series.with_columns(pl.lit(by).alias("by"))
        parts.append(series.select([pl.col(c).cast(t) for c, t in ACTUALS_SCHEMA.items()]))
    return pl.concat(parts)


# -- scoring -----------------------------------------------------------------------------------


def score_forecasts(
    kept: pl.DataFrame, actuals: pl.DataFrame, closed_before: date | datetime
) -> pl.DataFrame:
    """Score every kept row whose target period closed before ``closed_before``.

    A month is closed when the first day of the next month is ``<= closed_before``; a quarter
    when all three of its months are. The actual of a month is its bookings in ``actuals``; a
    quarter's is the sum of its three months (all three must be in ``actuals``).

    Parameters
    ----------
    kept : DataFrame
        Kept forecasts (``features.forecast_log.KEPT_SCHEMA``).
    actuals : DataFrame
        ``by, segment, month, bookings`` (:func:`actuals_for`).
    closed_before : date or datetime
        The instant the actuals are known at (a bare date is 00:00 UTC).

    Returns
    -------
    DataFrame
        ``features.forecast_log.ACCURACY_SCHEMA``: the kept columns, then ``actual``,
        ``forecast`` (= ``p50``), ``error`` (forecast − actual), ``abs_error``, ``accuracy``
        (1 − |A − F| / A, null when A = 0) and ``covered`` (``p10 <= A <= p90``, null for a
        point method). Rows whose period is still open, or whose segment has no actual, are
        not returned.

    Examples
    --------
    A dealcast P50 of 90 (P10 80, P90 120) for a month that booked 100 scores
    error = -10, accuracy = 0.9, covered = True:

    >>> score_forecasts(kept, actuals, date(2026, 11, 1))  # doctest: +SKIP
    """
    fix = "pass kept forecasts (ForecastLog.read()) and actuals (actuals_for)"
    _require(kept, list(KEPT_SCHEMA), "kept forecasts", fix)
    _require(actuals, list(ACTUALS_SCHEMA), "actuals", fix)
    rows = kept.select([pl.col(c).cast(t) for c, t in KEPT_SCHEMA.items()])
    booked = actuals.select([pl.col(c).cast(t) for c, t in ACTUALS_SCHEMA.items()])
    unknown = sorted(set(rows["period"].drop_nulls()) - set(_PERIOD_MONTHS))
    if unknown:
        raise ValueError(f"unknown period(s) {unknown} in kept forecasts: use 'month' or 'quarter'")
    span = pl.col("period").replace_strict(_PERIOD_MONTHS, return_dtype=pl.Int64)
    closed = rows.filter(
        pl.col("target_month").dt.offset_by(pl.format("{}mo", span)) <= _closed_until(closed_before)
    )
    monthly = booked.select(
        "by", "segment", pl.col("month").alias("target_month"), pl.col("bookings").alias("_month")
    )
    quarterly = (
        booked.group_by("by", "segment", pl.col("month").dt.truncate("1q").alias("target_month"))
        .agg(pl.col("bookings").sum().alias("_quarter"), pl.col("month").n_unique().alias("_n"))
        .filter(pl.col("_n") == 3)
        .drop("_n")
    )
    on = ["by", "segment", "target_month"]
    actual = pl.when(pl.col("period") == "month").then("_month").otherwise("_quarter")
    scored = (
        closed.join(monthly, on=on, how="left")
        .join(quarterly, on=on, how="left")
        .with_columns(actual.alias("actual"), pl.col("p50").alias("forecast"))
        .filter(pl.col("actual").is_not_null())
    )
    has_interval = pl.col("p10").is_not_null() & pl.col("p90").is_not_null()
    scored = scored.with_columns(
        (pl.col("forecast") - pl.col("actual")).alias("error"),
        (pl.col("forecast") - pl.col("actual")).abs().alias("abs_error"),
        metrics.accuracy(scored["actual"], scored["forecast"]),
        pl.when(has_interval)
        .then(pl.col("actual").is_between(pl.col("p10"), pl.col("p90")))
        .alias("covered"),
    )
    return scored.select([pl.col(c).cast(t) for c, t in ACCURACY_SCHEMA.items()]).sort(
        ["target_month", "created_at", *KEPT_KEY]
    )


# -- summaries ---------------------------------------------------------------------------------


def accuracy_summary(
    scored: pl.DataFrame, by: Sequence[str] = ("method", "horizon", "period")
) -> pl.DataFrame:
    """WAPE, bias, P10-P90 coverage and mean accuracy of scored forecasts, per group.

    Parameters
    ----------
    scored : DataFrame
        Rows of :func:`score_forecasts` (or the stored accuracy table).
    by : sequence of str
        ``"method"`` and any columns a forecast's methods share (``horizon``, ``period``,
        ``by``, ``segment``, ``target_month``, ``origin_month``, ``forecast_id``).

    Returns
    -------
    DataFrame
        ``*by, wape, bias, coverage, accuracy, n`` — ``wape = sum|e| / sum A``,
        ``bias = sum e / sum A`` (``e`` = forecast − actual; null when the actuals sum to 0),
        ``coverage`` the share of actuals inside ``[p10, p90]`` (null for a point method),
        ``accuracy`` the mean per-row accuracy, ``n`` the rows scored. Methods in
        ``METHODS`` order, then sorted by the other keys.

    Examples
    --------
    >>> accuracy_summary(scored, by=("method", "horizon"))  # doctest: +SKIP
    """
    keys = list(dict.fromkeys(by))
    if "method" not in keys:
        raise ValueError(
            f"by={tuple(by)} lacks 'method': accuracy pooled across methods means nothing"
        )
    fix = "pass rows of score_forecasts or read_accuracy, and group by their columns"
    _require(scored, [*ACCURACY_SCHEMA, *keys], "scored forecasts", fix)
    groups = [k for k in keys if k != "method"]
    schema = {k: scored.schema[k] for k in keys}
    out_schema = {**schema, **dict.fromkeys(SUMMARY_METRICS[:-1], pl.Float64()), "n": pl.Int64()}
    if scored.height == 0:
        return pl.DataFrame(schema=out_schema)
    methods = _method_rank(scored["method"].unique().to_list())
    index = list(dict.fromkeys([*_ROW, *groups]))
    wide = scored.pivot(on="method", index=[*index, "actual"], values="forecast")
    # Interval columns only for the methods that have one (a point method's coverage is null).
    with_interval = scored.filter(pl.col("p10").is_not_null() & pl.col("p90").is_not_null())
    bounds = (("p10", metrics.P10), ("p90", metrics.P90)) if with_interval.height else ()
    for bound, suffix in bounds:
        interval = with_interval.pivot(on="method", index=_ROW, values=bound)
        renamed = {m: f"{m}{suffix}" for m in interval.columns if m not in _ROW}
        wide = wide.join(interval.rename(renamed), on=_ROW, how="left")
    summary = metrics.summarise(wide, methods, by=keys).filter(pl.col("n") > 0)
    mean_accuracy = scored.group_by(keys).agg(pl.col("accuracy").mean())
    rank = pl.DataFrame({"method": methods, "_rank": list(range(len(methods)))})
    order = ["_rank" if k == "method" else k for k in keys]
    return (
        summary.join(mean_accuracy, on=keys, how="left", nulls_equal=True)
        .join(rank, on="method", how="left")
        .sort(order, nulls_last=True)
        .select([pl.col(c).cast(t) for c, t in out_schema.items()])
    )


def accuracy_by_month(scored: pl.DataFrame, *, by: str = "") -> pl.DataFrame:
    """The accuracy history: one row per closed target period × method × horizon.

    Parameters
    ----------
    scored : DataFrame
        Rows of :func:`score_forecasts` (or the stored accuracy table).
    by : str
        ``""`` (default) for the company total; a dimension name (``"region"``) for its
        segments, which adds a ``segment`` column.

    Returns
    -------
    DataFrame
        ``period, target_month, [segment], method, horizon, wape, bias, coverage, accuracy,
        n`` in period, month, method order (see :func:`accuracy_summary`); ``n`` > 1 when
        several forecasts of one horizon were kept for a month.

    Examples
    --------
    >>> accuracy_by_month(scored).filter(pl.col("horizon") == 0)  # doctest: +SKIP
    """
    keys = ["period", "target_month", *(["segment"] if by else []), "method", "horizon"]
    return accuracy_summary(scored.filter(pl.col("by") == by), by=keys)
