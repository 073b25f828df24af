"""The KPI series the anomaly detector watches, with the counts behind each value.

A rate from 4 deals and a rate from 400 are not equally surprising, so every point of a series
carries its counts: ``k`` of ``n`` for a rate (won of closed, advanced of exits, slipped of
due), the count itself for a count, the number of items behind a sum or a mean. The values are
the KPI engine's (:func:`features.kpis.table.kpi_table`) where it has them; two counted variants are
built here because the detector needs them known at the period's end:

- ``stage_advance__<stage>``: of the stays in ``<stage>`` that *ended* in the period, the share
  that moved to a later open stage or won. The catalogue's ``stage_conversion_rate`` follows
  the cohort that *entered* the stage, whose fate is still unknown for recent periods.
- ``slip_rate`` with its counts: of the deals due in the period (open as it began, expected
  close inside it as of then), how many were neither won nor lost by its end.
- ``pushed_share``: of the deals open at some time in the period (open as it began, or
  created in it), how many had their expected close date moved at least :data:`SLIP_DAYS`
  later in one change (reps move dates by days all the time; a month is a slip). A wave of pushed
  close dates shows here the month it happens; ``slip_rate`` only moves if closes move too.

Only complete periods are returned (a period in progress would look like a collapse).
Without a stage history (``history.history_is_derived``) there is no ``stage_advance``
series: the stages closed deals went through are unknown, not "never left the first one".

Point in time: the series is built from :func:`features.kpis.periods.known_at` the cutoff, and
the value of a period reads nothing after that period's end, so a detector that judges period
``t`` against periods before ``t`` sees only what was known when ``t`` closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from features.contract import DealHistory
from features.kpis.periods import KpiContext, kpi_context, stage_slug
from features.kpis.pipeline import due_at_start
from features.kpis.table import kpi_table
from features.snapshots import enriched_history

__all__ = [
    "SERIES_BY",
    "SLIP_DAYS",
    "SERIES_METRICS",
    "SERIES_SCHEMA",
    "SeriesMetric",
    "kpi_series",
]


@dataclass(frozen=True)
class SeriesMetric:
    """One watched KPI: its family (what the anomaly is about) and how its counts read."""

    name: str
    family: str
    kind: str  # rate: k of n | count: k | amount: a sum of n items | mean: a mean of n items
    text: str


SERIES_METRICS: tuple[SeriesMetric, ...] = (
    SeriesMetric("win_rate", "win_rate", "rate", "won / (won + lost) of the deals closed"),
    SeriesMetric(
        "stage_advance__<stage>",
        "stage_conversion",
        "rate",
        "of the stays in <stage> that ended, the share that moved forward or won",
    ),
    SeriesMetric("slip_rate", "slip_rate", "rate", "of the deals due, the share not closed"),
    SeriesMetric(
        "pushed_share",
        "slip_rate",
        "rate",
        "of the deals open in the period, the share whose close date was pushed 30+ days",
    ),
    SeriesMetric("pipeline_created", "pipeline_created", "count", "deals created"),
    SeriesMetric(
        "pipeline_created_amount", "pipeline_created", "amount", "amount of the deals created"
    ),
    SeriesMetric("activity_volume", "activity_volume", "count", "activities logged"),
    SeriesMetric("bookings", "bookings", "amount", "amount of the deals won"),
    SeriesMetric("avg_deal_size", "deal_size", "mean", "mean amount of the deals won"),
    SeriesMetric("cycle_days", "cycle_length", "mean", "mean days created -> won"),
)
"""The metrics of :func:`kpi_series` (``<stage>`` repeats for each open stage)."""

SERIES_BY: tuple[str, ...] = ("", "region", "team", "owner_id", "product")
"""The segmentations watched: the company (``""``) and each dimension."""

SERIES_SCHEMA: dict[str, pl.DataType] = {
    "period": pl.String(),
    "period_start": pl.Date(),
    "period_end": pl.Date(),
    "by": pl.String(),
    "segment": pl.String(),
    "metric": pl.String(),
    "family": pl.String(),
    "kind": pl.String(),
    "value": pl.Float64(),
    "k": pl.Float64(),
    "n": pl.Float64(),
}

SLIP_DAYS = 30
"""A close-date push of at least this many days is a slip (``pushed_share``)."""

_FROM_TABLE = {  # metric -> (value, k, n) expressions on a kpi_table frame
    "win_rate": ("win_rate", "deals_won", "_closed"),
    "pipeline_created": ("pipeline_created_count", "pipeline_created_count", None),
    "pipeline_created_amount": (
        "pipeline_created_amount",
        "pipeline_created_amount",
        "pipeline_created_count",
    ),
    "activity_volume": ("_activities", "_activities", None),
    "bookings": ("bookings", "bookings", "deals_won"),
    "avg_deal_size": ("avg_deal_size", "bookings", "deals_won"),
    "cycle_days": ("cycle_days_mean", None, "deals_won"),
}


def kpi_series(
    history: DealHistory,
    *,
    periods: Sequence[str] = ("month", "week"),
    by: Sequence[str] = SERIES_BY,
    end: date | None = None,
) -> pl.DataFrame:
    """Every watched metric per complete period and segment, with its counts, in long form.

    Parameters
    ----------
    history : DealHistory
    periods : "month" and/or "week"
    by : segmentations, ``""`` for the company (default :data:`SERIES_BY`)
    end : date, optional
        The cutoff (end of that day, as in :func:`~features.kpis.table.kpi_table`); default: the
        last timestamp in the data.

    Returns
    -------
    DataFrame
        :data:`SERIES_SCHEMA`: ``period`` ("month"/"week"), ``period_start``, ``period_end``
        (exclusive), ``by``, ``segment`` (``""`` for the company), ``metric``, ``family``,
        ``kind``, ``value`` and the counts ``k`` (numerator, count or sum) and ``n``
        (denominator or number of items; null for counts). Segments with a null dimension
        value are left out. Sorted by period, by, segment, metric, period_start.
    """
    frames = []
    for period in periods:
        for dim in by:
            dims = (dim,) if dim else ()
            table = kpi_table(history, period=period, by=dims, end=end)
            ctx, _, _ = kpi_context(history, period=period, by=dims, start=None, end=end)
            complete = ctx.periods.filter(pl.col("complete")).select(
                "period_start", pl.col("next_start").dt.date().alias("period_end")
            )
            counted = [_slips(ctx), _pushed(ctx)]
            if not history.history_is_derived:  # stage exits are unknown without a history
                counted.insert(0, _stage_advances(ctx))
            extra = pl.collect_all(counted)
            frames.append(_long(table, extra, complete, period, dim, history))
    out = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=SERIES_SCHEMA)
    return out.sort("period", "by", "segment", "metric", "period_start")


def _long(
    table: pl.DataFrame,
    extra: list[pl.DataFrame],
    complete: pl.DataFrame,
    period: str,
    dim: str,
    history: DealHistory,
) -> pl.DataFrame:
    keys = ["period_start", *([dim] if dim else [])]
    activity_columns = [c for c in table.columns if c.startswith("activities__")]
    wide = table.join(complete, on="period_start", how="inner").with_columns(
        (pl.col("deals_won") + pl.col("deals_lost")).alias("_closed"),
        (pl.sum_horizontal(activity_columns) if activity_columns else pl.lit(None))
        .cast(pl.Float64)
        .alias("_activities"),
    )
    segment = (pl.col(dim).cast(pl.String) if dim else pl.lit("")).alias("segment")
    head: list[pl.Expr] = [
        pl.lit(period).alias("period"),
        pl.col("period_start"),
        pl.col("period_end"),
        pl.lit(dim).alias("by"),
    ]
    parts = []
    for metric, (value, k, n) in _FROM_TABLE.items():
        if metric == "activity_volume" and not activity_columns:
            continue
        parts.append(
            wide.select(
                *head,
                segment,
                pl.lit(metric).alias("metric"),
                pl.col(value).cast(pl.Float64).alias("value"),
                (pl.col(k) if k else pl.lit(None)).cast(pl.Float64).alias("k"),
                (pl.col(n) if n else pl.lit(None)).cast(pl.Float64).alias("n"),
            )
        )
    for counted in extra:
        parts.append(
            counted.join(
                wide.select(*keys, "period_end"), on=keys, how="inner", nulls_equal=True
            ).select(
                *head,
                segment,
                "metric",
                (pl.col("k") / pl.col("n")).alias("value"),
                pl.col("k").cast(pl.Float64),
                pl.col("n").cast(pl.Float64),
            )
        )
    spec = pl.DataFrame(
        {
            "metric": [m.name for m in SERIES_METRICS],
            "family": [m.family for m in SERIES_METRICS],
            "kind": [m.kind for m in SERIES_METRICS],
        }
    )
    stages = {
        f"stage_advance__{stage_slug(s)}": ("stage_conversion", "rate")
        for s in history.pipeline.open_stages
    }
    spec = pl.concat(
        [
            spec,
            pl.DataFrame(
                {
                    "metric": list(stages),
                    "family": [f for f, _ in stages.values()],
                    "kind": [k for _, k in stages.values()],
                }
            ),
        ]
    )
    return (
        pl.concat(parts, how="vertical")
        .filter(pl.col("segment").is_not_null())
        .join(spec, on="metric", how="inner")
        .select(list(SERIES_SCHEMA))
        .cast(SERIES_SCHEMA)  # type: ignore[arg-type]
    )


def _stage_advances(ctx: KpiContext) -> pl.LazyFrame:
    """``period_start, *by, metric, k, n``: exits of each open stage and how many moved on."""

    def by_deal(expr: pl.Expr) -> pl.Expr:
        return expr.over("deal_id", order_by="changed_at")

    kinds = ctx.history.pipeline.frame().lazy().select("stage", "stage_kind")
    entries = (
        enriched_history(ctx.history)
        .filter(pl.col("changed_at") == pl.col("stage_entered_at"))
        .join(kinds, on="stage", how="left")
    )
    advanced = (pl.col("_next_kind") == "won") | (
        (pl.col("_next_kind") == "open") & (pl.col("_next_order") > pl.col("stage_order"))
    )
    return (
        entries.with_columns(
            by_deal(pl.col("changed_at").shift(-1)).alias("_left_at"),
            by_deal(pl.col("stage_kind").shift(-1)).alias("_next_kind"),
            by_deal(pl.col("stage_order").shift(-1)).alias("_next_order"),
        )
        .filter((pl.col("stage_kind") == "open") & pl.col("_left_at").is_not_null())
        .join(ctx.dims, on="deal_id", how="left")
        .with_columns(
            ctx.period_of("_left_at"),
            (
                pl.lit("stage_advance__")
                + pl.col("stage").replace_strict(
                    {s: stage_slug(s) for s in ctx.history.pipeline.open_stages},
                    return_dtype=pl.String,
                )
            ).alias("metric"),
        )
        .group_by(*ctx.keys, "metric")
        .agg(advanced.fill_null(False).sum().alias("k"), pl.len().alias("n"))
    )


def _slips(ctx: KpiContext) -> pl.LazyFrame:
    """``period_start, *by, metric, k, n``: deals due in the period and how many slipped."""
    return (
        due_at_start(ctx)
        .filter(pl.col("_due"))
        .group_by(ctx.keys)
        .agg((~pl.col("_in")).sum().alias("k"), pl.len().alias("n"))
        .with_columns(pl.lit("slip_rate").alias("metric"))
    )


def _pushed(ctx: KpiContext) -> pl.LazyFrame:
    """``period_start, *by, metric, k, n``: deals open in the period, how many slipped a month.

    A push of at least :data:`SLIP_DAYS` in one change counts; small date edits are routine.
    """
    moved = pl.col("expected_close_date") - pl.col("expected_close_date").shift(1)
    pushed = (
        enriched_history(ctx.history)
        .with_columns(moved.over("deal_id", order_by="changed_at").dt.total_days().alias("_days"))
        .filter(pl.col("_days") >= SLIP_DAYS)
        .join(ctx.dims, on="deal_id", how="left")
        .with_columns(ctx.period_of("changed_at"))
        .group_by(ctx.keys)
        .agg(pl.col("deal_id").n_unique().alias("k"))
    )
    open_at_start = ctx.states_at("start").group_by(ctx.keys).agg(pl.len().alias("_open"))
    created = (
        ctx.deals.with_columns(ctx.period_of("created_at"))
        .group_by(ctx.keys)
        .agg(pl.len().alias("_created"))
    )
    return (
        open_at_start.join(created, on=ctx.keys, how="full", coalesce=True, nulls_equal=True)
        .join(pushed, on=ctx.keys, how="left", nulls_equal=True)
        .select(
            *ctx.keys,
            pl.lit("pushed_share").alias("metric"),
            pl.col("k").fill_null(0),
            (pl.col("_open").fill_null(0) + pl.col("_created").fill_null(0)).alias("n"),
        )
    )
