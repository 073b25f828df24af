"""Rolling-origin backtest of the monthly forecast against the baselines ops use today.

At each origin T (a month start) every method is refit on what was known before T and
forecasts months T+h. The long frame has one row per segment × origin × horizon: ``segment,
origin, target_month, horizon, actual`` and one column per method (``<method>__p10`` and
``<method>__p90`` for methods with an interval); ``models.metrics.summarise`` scores it.

Methods:

- ``dealcast`` — :func:`models.forecast.revenue.revenue_forecast` (deal models refit at T);
- ``stage_weighted_crm`` / ``stage_weighted_hist`` — the weighted pipeline by expected close month;
- ``prophet_only`` — Prophet on monthly bookings alone, from the first mature month;
- ``seasonal_naive`` — the same month a year before;
- ``run_rate`` — the mean of the last 3 months.

Only target months that closed before the end of the data are scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import polars as pl

from features.calendar import add_months, instant
from features.contract import DealHistory
from features.snapshots import data_now, snapshot_features
from models.forecast.baselines import monthly_bookings, run_rate, seasonal_naive, stage_weighted
from models.forecast.newbiz import BookingsProphet
from models.forecast.revenue import _mondays_before, revenue_forecast
from models.metrics import P10, P90, summarise

__all__ = [
    "BASELINES",
    "METHODS",
    "WARMUP_MONTHS",
    "Backtest",
    "month_origins",
    "run_backtest",
]

METHODS: tuple[str, ...] = (
    "dealcast",
    "stage_weighted_crm",
    "stage_weighted_hist",
    "prophet_only",
    "seasonal_naive",
    "run_rate",
)
BASELINES: tuple[str, ...] = METHODS[1:]

WARMUP_MONTHS = 6
"""Months at the start of a history that ``prophet_only`` skips: a CRM history starts with an
empty pipeline, so its first months book less than the business does (the simulator's too)."""


def month_origins(start: date, end: date) -> list[date]:
    """Month starts from ``start``'s month to ``end``'s month, inclusive."""
    first, last = date(start.year, start.month, 1), date(end.year, end.month, 1)
    out = []
    while first <= last:
        out.append(first)
        first = add_months(first, 1)
    return out


@dataclass
class Backtest:
    """The long frame, its summary per method and horizon, and the origins run."""

    frame: pl.DataFrame
    summary: pl.DataFrame
    origins: list[date]
    horizons: list[int]
    by: list[str]

    def league(self) -> pl.DataFrame:
        """The summary with a rank per horizon (1 = lowest WAPE)."""
        return self.summary.with_columns(
            pl.col("wape").rank("min").over("horizon").cast(pl.Int64).alias("rank")
        ).sort("horizon", "rank")


def _segment(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Replace the ``by`` columns with one ``segment`` string column ("total" without ``by``)."""
    if not by:
        return frame.with_columns(pl.lit("total").alias("segment"))
    label = pl.concat_str(
        [pl.col(c).cast(pl.String).fill_null("(none)") for c in by], separator=" · "
    )
    return frame.with_columns(label.alias("segment")).drop(by)


def _point(frame: pl.DataFrame, by: list[str], name: str) -> pl.DataFrame:
    return _segment(frame, by).select("segment", "horizon", pl.col("forecast").alias(name))


def _prophet_only(
    history: DealHistory, origin: date, horizons: list[int], by: list[str], n_samples: int
) -> pl.DataFrame:
    series = monthly_bookings(history, by=by or None, before=origin)
    if series.height:
        first = series["month"].min()
        series = series.filter(pl.col("month") >= add_months(first, WARMUP_MONTHS))  # type: ignore[arg-type]
    model = BookingsProphet().fit(series.select(*by, "month", "bookings"))
    draws = model.sample(origin, horizons, n_samples=n_samples, seed=0)
    return _segment(
        draws.group_by(*by, "horizon").agg(
            pl.col("bookings").mean().alias("prophet_only"),
            pl.col("bookings").quantile(0.1).alias(f"prophet_only{P10}"),
            pl.col("bookings").quantile(0.9).alias(f"prophet_only{P90}"),
        ),
        by,
    )


def _dealcast(
    history: DealHistory,
    origin: date,
    horizons: list[int],
    by: list[str],
    n_samples: int,
    snapshots: pl.DataFrame,
) -> pl.DataFrame:
    forecast = revenue_forecast(
        history,
        instant(origin),
        months=max(horizons) + 1,
        by=by or None,
        n_samples=n_samples,
        snapshots=snapshots,
    )
    summary = forecast.summary().filter(
        (pl.col("period") == "month") & pl.col("horizon").is_in(horizons)
    )
    if by:
        summary = summary.filter(pl.col("by") != "")
    return summary.select(
        "segment",
        "horizon",
        pl.col("p50").alias("dealcast"),
        pl.col("p10").alias(f"dealcast{P10}"),
        pl.col("p90").alias(f"dealcast{P90}"),
    )


def _method_column(
    method: str,
    history: DealHistory,
    origin: date,
    series: pl.DataFrame,
    hs: list[int],
    dims: list[str],
    n_samples: int,
    snapshots: pl.DataFrame,
) -> pl.DataFrame:
    """``segment, horizon, <method>[, <method>__p10, <method>__p90]`` at one origin."""
    if method == "run_rate":
        return _point(run_rate(series, origin, hs), dims, method)
    if method in ("stage_weighted_crm", "stage_weighted_hist"):
        weighted = stage_weighted(
            history,
            origin,
            hs,
            probability="crm" if method.endswith("crm") else "hist",
            by=dims or None,
        )
        return _point(weighted, dims, method)
    if method == "prophet_only":
        return _prophet_only(history, origin, hs, dims, n_samples)
    return _dealcast(history, origin, hs, dims, n_samples, snapshots)


def run_backtest(
    history: DealHistory,
    origins: Sequence[date],
    *,
    horizons: Sequence[int] = (0, 1, 2),
    by: str | Sequence[str] | None = None,
    n_samples: int = 1000,
    methods: Sequence[str] = METHODS,
    on_origin: Callable[[date], None] | None = None,
) -> Backtest:
    """Refit every method at each origin and score it on the months that have closed.

    Parameters
    ----------
    history : DealHistory
    origins : sequence of date
        Month starts.
    horizons : sequence of int
        Months ahead (0 = the origin's month).
    by : dimension(s), optional
        Score per segment instead of the company total.
    n_samples : int
        Monte Carlo draws per origin.
    methods : sequence of str
        A subset of :data:`METHODS` (the train job's gate runs ``dealcast`` alone).
    on_origin : callable, optional
        Called after each origin (progress bars).
    """
    hs = sorted({int(h) for h in horizons})
    if not hs or hs[0] < 0:
        raise ValueError(f"horizons must be integers >= 0, got {list(horizons)}")
    if not origins:
        raise ValueError("no origins: give at least one month start")
    dims = [by] if isinstance(by, str) else list(by or ())
    chosen = [m for m in METHODS if m in set(methods)]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not chosen:
        raise ValueError(f"methods must be among {', '.join(METHODS)}, got {list(methods)}")
    end = data_now(history)
    ordered = sorted(set(origins))
    # one snapshot table for every origin: Mondays before the last origin, labels filtered per
    # origin in models.forecast.revenue.training_rows (only outcomes known at that origin are kept)
    last = datetime(ordered[-1].year, ordered[-1].month, 1, tzinfo=UTC)
    snapshots = snapshot_features(history, _mondays_before(history, last, None)).collect()
    # actuals: every month closed before the end of the data
    actual_by = monthly_bookings(history, by=dims or None, before=end)
    actuals = _segment(actual_by, dims).select(
        "segment", pl.col("month").alias("target_month"), pl.col("bookings").alias("actual")
    )
    parts = []
    for origin in ordered:
        series = monthly_bookings(history, by=dims or None, before=origin)
        grid = _segment(seasonal_naive(series, origin, hs), dims).select(
            "segment", "target_month", "horizon", pl.col("forecast").alias("seasonal_naive")
        )
        columns = [
            _method_column(m, history, origin, series, hs, dims, n_samples, snapshots)
            for m in chosen
            if m != "seasonal_naive"
        ]
        if "seasonal_naive" not in chosen:
            grid = grid.drop("seasonal_naive")
        row = grid
        for column in columns:
            row = row.join(column, on=["segment", "horizon"], how="full", coalesce=True)
        row = row.with_columns(
            pl.lit(origin).alias("origin"),
            pl.lit(origin).dt.offset_by(pl.format("{}mo", pl.col("horizon"))).alias("target_month"),
        )
        parts.append(row)
        if on_origin is not None:
            on_origin(origin)
    frame = (
        pl.concat(parts, how="diagonal")
        .join(actuals, on=["segment", "target_month"], how="left")
        .filter(pl.col("actual").is_not_null())
    )
    order = [
        "segment",
        "origin",
        "target_month",
        "horizon",
        "actual",
        *(c for m in METHODS for c in (m, f"{m}{P10}", f"{m}{P90}") if c in frame.columns),
    ]
    frame = frame.select(order).sort("segment", "origin", "horizon")
    summary = summarise(frame, chosen, by=("method", "horizon"))
    return Backtest(frame, summary, ordered, hs, dims)


def acceptance(backtest: Backtest) -> dict[str, object]:
    """The issue's bar: lowest WAPE at every horizon, h0 30% below the best baseline, coverage.

    Returns the figures and a ``passed`` flag per check (the caller decides what to do).
    """
    summary = backtest.summary
    out: dict[str, object] = {}
    for h in backtest.horizons:
        part = summary.filter(pl.col("horizon") == h)
        ours = part.filter(pl.col("method") == "dealcast")
        others = part.filter(pl.col("method") != "dealcast").drop_nulls("wape")
        if ours.height == 0 or others.height == 0:
            continue
        wape = float(ours["wape"][0])
        best = others.sort("wape").row(0, named=True)
        out[f"h{h}"] = {
            "wape": wape,
            "best_baseline": best["method"],
            "best_baseline_wape": best["wape"],
            "improvement": 1.0 - wape / best["wape"] if best["wape"] else None,
            "lowest": wape < best["wape"],
            "coverage": ours["coverage"][0],
        }
    cover = summary.filter(pl.col("method") == "dealcast")["coverage"].drop_nulls().to_numpy()
    out["coverage"] = float(np.mean(cover)) if cover.size else None
    return out
