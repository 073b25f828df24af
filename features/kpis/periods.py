"""Periods and the shared context of the KPI engine (:mod:`features.kpis.table`).

A period is ``[period_start, next_start)`` in UTC: ISO weeks starting Monday, calendar months,
quarters or years. Two point-in-time instants belong to each period:

- ``start_as_of`` = ``period_start - 1 µs``: the state just before the period begins (every
  row dated before the period, none dated in it);
- ``end_as_of`` = ``next_start - 1 µs``: the state at the last instant of the period, or the
  table's cutoff when that comes first (the period is then in progress: ``complete`` is false).

The *cutoff* is the last instant a KPI table may read: the end of its ``end`` day, or the
latest timestamp of the data when no ``end`` is given. :func:`kpi_context` cuts every table
there once (rows after it are dropped; deals closed after it are open again), so nothing
downstream can see past it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args

import polars as pl

from features.contract import DIMENSIONS, TS, DealHistory
from features.snapshots import as_of_frame, deal_dimensions, deal_states

__all__ = [
    "Period",
    "PERIODS",
    "KpiContext",
    "kpi_context",
    "known_at",
    "validate_by",
    "period_of",
    "period_label",
    "stage_slug",
    "days_between",
    "ratio",
]

Period = Literal["week", "month", "quarter", "year"]
PERIODS: tuple[str, ...] = get_args(Period)

_EVERY: dict[str, str] = {"week": "1w", "month": "1mo", "quarter": "1q", "year": "1y"}
_PREVIOUS: dict[str, str] = {"week": "-1w", "month": "-1mo", "quarter": "-1q", "year": "-1y"}
# Same period a year before: 52 weeks back for ISO weeks (keeps the Monday), else one year.
_YEAR_BEFORE: dict[str, str] = {"week": "-52w", "month": "-1y", "quarter": "-1y", "year": "-1y"}
_ONE_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


def period_of(value: pl.Expr, period: str) -> pl.Expr:
    """The first day (``Date``) of the ``period`` holding a timestamp or date expression."""
    return value.dt.truncate(_EVERY[period]).dt.date()


def period_label(start: pl.Expr, period: str) -> pl.Expr:
    """``2026-W27`` (ISO year and week), ``2026-07``, ``2026-Q3`` or ``2026`` for a start date."""
    if period == "week":
        week = start.dt.week().cast(pl.String).str.zfill(2)
        return pl.format("{}-W{}", start.dt.iso_year(), week)
    if period == "month":
        return start.dt.strftime("%Y-%m")
    if period == "quarter":
        return pl.format("{}-Q{}", start.dt.year(), start.dt.quarter())
    return start.dt.strftime("%Y")


def days_between(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """``later - earlier`` in fractional days."""
    return (later - earlier).dt.total_microseconds().cast(pl.Float64) / _DAY_US


def ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """``numerator / denominator``, null when the denominator is zero or null."""
    return pl.when(denominator > 0).then(numerator / denominator)


def stage_slug(name: str) -> str:
    """A stage name as a snake_case column suffix: ``"Closed Won"`` -> ``closed_won``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class KpiContext:
    """Everything the KPI families share, built once per :func:`features.kpis.table.kpi_table` call.

    Attributes
    ----------
    history : DealHistory
        The tables cut at ``cutoff``.
    period, by, cutoff
        As validated from the caller's arguments.
    periods : DataFrame
        The period grid: ``period_start, period, next_start, start_as_of, end_as_of,
        complete`` — every period from the first data (or ``start``) to the cutoff (or ``end``).
    deals : LazyFrame
        The cut deals with ``outcome`` (``won``/``lost`` when closed by the cutoff, else null)
        and the ``by`` columns.
    dims : LazyFrame
        ``deal_id`` and the ``by`` columns of every deal.
    states : LazyFrame
        :func:`features.snapshots.deal_states` at every ``start_as_of`` and ``end_as_of``, with
        the ``by`` columns: one call for all periods.
    """

    history: DealHistory
    period: str
    by: tuple[str, ...]
    cutoff: datetime
    periods: pl.DataFrame
    deals: pl.LazyFrame
    dims: pl.LazyFrame
    states: pl.LazyFrame

    @property
    def keys(self) -> list[str]:
        """The key columns of every KPI family frame."""
        return ["period_start", *self.by]

    def period_of(self, value: str | pl.Expr) -> pl.Expr:
        """The ``period_start`` of a timestamp column."""
        expr = pl.col(value) if isinstance(value, str) else value
        return period_of(expr, self.period).alias("period_start")

    def states_at(self, moment: Literal["start", "end"]) -> pl.LazyFrame:
        """The deal states as of each period's start or end, with the period's grid columns."""
        grid = self.periods.lazy().with_columns(pl.col(f"{moment}_as_of").alias("as_of"))
        return self.states.join(grid, on="as_of", how="inner")

    def shifted(self, offset: Literal["previous", "year_before"]) -> pl.Expr:
        """``period_start`` of the previous period, or of the same period a year before."""
        table = _PREVIOUS if offset == "previous" else _YEAR_BEFORE
        return pl.col("period_start").dt.offset_by(table[self.period])


def _end_of_day(day: date) -> datetime:
    """The last microsecond of ``day`` (UTC)."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC) - _ONE_US


def _truncate(day: date, period: str) -> date:
    return pl.select(period_of(pl.lit(day), period)).item()


def _data_span(history: DealHistory) -> tuple[datetime | None, datetime | None]:
    """The first and last timestamps recorded in deals, stage history and activities."""
    stamps = pl.concat(
        [
            history.deals.select(pl.col("created_at").alias("t")),
            history.deals.select(pl.col("closed_at").alias("t")),
            history.stage_history.select(pl.col("changed_at").alias("t")),
            history.activities.select(pl.col("occurred_at").alias("t")),
        ]
    )
    span = stamps.select(pl.col("t").min().alias("first"), pl.col("t").max().alias("last"))
    first, last = span.collect().row(0)
    return first, last


def known_at(history: DealHistory, cutoff: datetime) -> DealHistory:
    """The history as it was known at ``cutoff``: later rows dropped, later closes undone."""
    limit = pl.lit(cutoff).cast(TS)
    deals = history.deals.filter(pl.col("created_at") <= limit).with_columns(
        pl.when(pl.col("closed_at") <= limit).then(pl.col("closed_at")).alias("closed_at")
    )
    return replace(
        history,
        deals=deals,
        stage_history=history.stage_history.filter(pl.col("changed_at") <= limit),
        activities=history.activities.filter(pl.col("occurred_at") <= limit),
    )


def _grid(first: date, last: date, period: str, cutoff: datetime) -> pl.DataFrame:
    starts = pl.date_range(first, last, _EVERY[period], eager=True).alias("period_start")
    end_of = (pl.col("next_start").cast(TS) - _ONE_US).alias("_end")
    return (
        pl.DataFrame({"period_start": starts})
        .with_columns(
            period_label(pl.col("period_start"), period).alias("period"),
            pl.col("period_start").dt.offset_by(_EVERY[period]).alias("next_start"),
        )
        .with_columns(end_of, (pl.col("period_start").cast(TS) - _ONE_US).alias("start_as_of"))
        .with_columns(
            pl.min_horizontal("_end", pl.lit(cutoff).cast(TS)).alias("end_as_of"),
            (pl.col("_end") <= pl.lit(cutoff).cast(TS)).alias("complete"),
        )
        .drop("_end")
    )


_EMPTY_GRID = {
    "period_start": pl.Date(),
    "period": pl.String(),
    "next_start": pl.Date(),
    "start_as_of": TS,
    "end_as_of": TS,
    "complete": pl.Boolean(),
}


def validate_by(by: str | Sequence[str] | None) -> tuple[str, ...]:
    """The ``by`` dimensions as a tuple without repeats; ValueError naming an unknown one."""
    names = [by] if isinstance(by, str) else list(by or ())
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ValueError(
            f"unknown KPI dimension {', '.join(map(repr, unknown))}: "
            f"group by one of {', '.join(DIMENSIONS)}"
        )
    return tuple(dict.fromkeys(names))


def kpi_context(
    history: DealHistory,
    *,
    period: str,
    by: str | Sequence[str] | None,
    start: date | None,
    end: date | None,
) -> tuple[KpiContext, date | None, date | None]:
    """Validate the arguments, cut the history and build the period grid.

    Returns the context and the first and last ``period_start`` to show (None: no bound).
    """
    if period not in PERIODS:
        raise ValueError(f"unknown KPI period {period!r}: use one of {', '.join(PERIODS)}")
    dims = validate_by(by)
    if start is not None and end is not None and start > end:
        raise ValueError(f"start {start} is after end {end}: swap --from and --to")
    first_at, last_at = _data_span(history)
    if end is not None:
        cutoff = _end_of_day(end)
    elif last_at is not None:
        cutoff = last_at
    else:  # no data and no end: nothing to cut
        cutoff = _end_of_day(start or date.today())
    cut = known_at(history, cutoff)

    # The grid runs from the first data (or ``start``, if earlier) to ``end`` (or the last data).
    first_days = [d for d in (first_at.date() if first_at else None, start) if d is not None]
    last_day = end or (last_at.date() if last_at else None)
    if first_days and last_day is not None and min(first_days) <= last_day:
        first, last = _truncate(min(first_days), period), _truncate(last_day, period)
        grid = _grid(first, last, period, cutoff)
    else:
        grid = pl.DataFrame(schema=_EMPTY_GRID)

    all_dims = deal_dimensions(cut).select("deal_id", *dims)
    kinds = cut.pipeline.frame().lazy().select("stage", "stage_kind")
    deals = (
        cut.deals.join(kinds, on="stage", how="left")
        .with_columns(
            pl.when(pl.col("closed_at").is_not_null() & pl.col("stage_kind").is_in(["won", "lost"]))
            .then(pl.col("stage_kind"))
            .alias("outcome")
        )
        .drop("stage_kind", *[d for d in dims if d != "team"])
        .join(all_dims, on="deal_id", how="left")
    )
    moments = pl.concat([grid["start_as_of"], grid["end_as_of"]])
    states = deal_states(cut, as_of_frame(moments)).join(all_dims, on="deal_id", how="left")
    context = KpiContext(
        history=cut,
        period=period,
        by=dims,
        cutoff=cutoff,
        periods=grid,
        deals=deals,
        dims=all_dims,
        states=states,
    )
    shown_from = _truncate(start, period) if start is not None else None
    shown_to = _truncate(end, period) if end is not None else None
    return context, shown_from, shown_to
