"""KPIs of the open pipeline at a period's start and end (tier 1), and the pipeline breakdown.

"As of the period end" and "as of the period start" are the point-in-time deal states of
:func:`features.snapshots.deal_states`, computed for every period in one call by
:func:`features.kpis.periods.kpi_context`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import polars as pl

from features.contract import DIMENSIONS, TS, DealHistory
from features.kpis.periods import KpiContext, ratio
from features.snapshots import as_of_frame, enriched_history, pipeline_as_of

__all__ = [
    "BREAKDOWNS",
    "due_at_start",
    "end_of_period_kpis",
    "start_of_period_kpis",
    "push_counts",
    "stage_win_rates",
    "conform_probabilities",
    "open_pipeline_breakdown",
]

BREAKDOWNS: tuple[str, ...] = ("stage", "expected_close_month", *DIMENSIONS)
"""Columns :func:`open_pipeline_breakdown` can group by."""


def stage_win_rates(history: DealHistory, as_ofs: pl.LazyFrame) -> pl.LazyFrame:
    """Each open stage's historical win rate as of each ``as_of``, point-in-time.

    The rate of stage s as of T = deals won / deals won or lost, among the deals closed at or
    before T whose stage history visited s before they closed. Company-wide (all deals).

    Returns
    -------
    LazyFrame
        ``as_of, stage, stage_win_rate_hist`` for every as-of and open stage (null when no
        closed deal had visited the stage by then). Null for every stage when
        ``history.history_is_derived``: without a stage history the stages a closed deal went
        through are unknown (the derived history puts them all in the first stage), so no
        stage has a known rate.
    """
    open_stages = pl.LazyFrame({"stage": list(history.pipeline.open_stages)})
    if history.history_is_derived:
        return as_ofs.join(open_stages, how="cross").select(
            "as_of", "stage", pl.lit(None, pl.Float64).alias("stage_win_rate_hist")
        )
    kinds = history.pipeline.frame().lazy().select("stage", "stage_kind")
    closed = (
        history.deals.filter(pl.col("closed_at").is_not_null())
        .join(kinds, on="stage", how="inner")
        .filter(pl.col("stage_kind").is_in(["won", "lost"]))
        .select("deal_id", "closed_at", (pl.col("stage_kind") == "won").alias("_won"))
    )
    running = (
        history.stage_history.join(closed, on="deal_id", how="inner")
        .filter(pl.col("changed_at") <= pl.col("closed_at"))
        .unique(["deal_id", "stage"])
        .group_by("stage", "closed_at")
        .agg(pl.len().alias("_n"), pl.col("_won").sum().alias("_w"))
        .with_columns(pl.col("_n", "_w").cum_sum().over("stage", order_by="closed_at"))
        .sort("closed_at")
    )
    return (
        as_ofs.join(open_stages, how="cross")
        .sort("as_of")
        .join_asof(
            running,
            left_on="as_of",
            right_on="closed_at",
            by="stage",
            strategy="backward",
            check_sortedness=False,
        )
        .select("as_of", "stage", ratio(pl.col("_w"), pl.col("_n")).alias("stage_win_rate_hist"))
    )


def conform_probabilities(probabilities: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """``deal_id, as_of (UTC), probability`` from a caller's frame; ValueError if incomplete."""
    lf = probabilities.lazy()
    schema = lf.collect_schema()
    missing = [c for c in ("deal_id", "as_of", "probability") if c not in schema]
    if missing:
        raise ValueError(
            f"probabilities frame lacks column(s) {', '.join(missing)}: "
            "it needs deal_id, as_of and probability (one row per scored deal and date)"
        )
    as_of = pl.col("as_of")
    dtype = schema["as_of"]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        as_of = as_of.dt.replace_time_zone("UTC")
    elif isinstance(dtype, pl.Datetime):
        as_of = as_of.dt.convert_time_zone("UTC")
    return lf.select(
        pl.col("deal_id").cast(pl.String),
        as_of.cast(TS).alias("_p_as_of"),
        pl.col("probability").cast(pl.Float64).alias("_probability"),
    )


def end_of_period_kpis(ctx: KpiContext, probabilities: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """The open pipeline as of each period's end (or the cutoff, for a period in progress).

    Returns
    -------
    LazyFrame
        ``period_start, *by, open_pipeline_count, open_pipeline_amount,
        stage_weighted_pipeline, stage_weighted_pipeline_hist`` and, when ``probabilities``
        (``deal_id, as_of, probability``) is given, ``model_weighted_pipeline``: each open deal's
        latest probability dated at or before the period end times its amount (deals without
        one add nothing).
    """
    probs = ctx.history.pipeline.frame().lazy().select("stage", "stage_probability")
    as_ofs = ctx.periods.lazy().select(pl.col("end_as_of").alias("as_of"))
    states = (
        ctx.states_at("end")
        .join(probs, on="stage", how="left")
        .join(stage_win_rates(ctx.history, as_ofs), on=["as_of", "stage"], how="left")
    )
    aggs = [
        pl.len().cast(pl.Int64).alias("open_pipeline_count"),
        pl.col("amount").sum().alias("open_pipeline_amount"),
        (pl.col("amount") * pl.col("stage_probability")).sum().alias("stage_weighted_pipeline"),
        (pl.col("amount") * pl.col("stage_win_rate_hist"))
        .sum()
        .alias("stage_weighted_pipeline_hist"),
    ]
    if probabilities is not None:
        states = states.sort("as_of").join_asof(
            probabilities.sort("_p_as_of"),
            left_on="as_of",
            right_on="_p_as_of",
            by="deal_id",
            strategy="backward",
            check_sortedness=False,
        )
        aggs.append(
            (pl.col("amount") * pl.col("_probability")).sum().alias("model_weighted_pipeline")
        )
    return states.group_by(ctx.keys).agg(aggs)


def due_at_start(ctx: KpiContext) -> pl.LazyFrame:
    """The deals open as each period began, with ``_due`` (expected close, as of then, inside
    the period) and ``_in`` (won or lost by the period's end, or the cutoff)."""
    closes = ctx.deals.select("deal_id", pl.col("closed_at").alias("_closed_at"), "outcome")
    due = (pl.col("expected_close_date") >= pl.col("period_start")) & (
        pl.col("expected_close_date") < pl.col("next_start")
    )
    closed_in = pl.col("outcome").is_not_null() & (pl.col("_closed_at") <= pl.col("end_as_of"))
    return (
        ctx.states_at("start")
        .join(closes, on="deal_id", how="left")
        .with_columns(due.fill_null(False).alias("_due"), closed_in.fill_null(False).alias("_in"))
    )


def start_of_period_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """The pipeline open as the period begins, and what became of the part due in it.

    A deal is *due* in the period when, as of the period start, it was open with an expected
    close date inside the period. It *slipped* when it was neither won nor lost by the period
    end. ``slip_rate`` is null for a period still in progress at the cutoff.

    Returns
    -------
    LazyFrame
        ``period_start, *by, pipeline_due_at_start_amount, slip_rate, _open_at_start_count``.
    """
    return (
        due_at_start(ctx)
        .group_by(ctx.keys)
        .agg(
            pl.len().cast(pl.Int64).alias("_open_at_start_count"),
            pl.col("amount").filter(pl.col("_due")).sum().alias("pipeline_due_at_start_amount"),
            pl.when(pl.col("complete").all())
            .then(ratio((pl.col("_due") & ~pl.col("_in")).sum(), pl.col("_due").sum()))
            .alias("slip_rate"),
        )
    )


def push_counts(ctx: KpiContext) -> pl.LazyFrame:
    """Close-date pushes recorded in the period (a history row moving the expected close later).

    Returns
    -------
    LazyFrame
        ``period_start, *by, _pushes``.
    """
    pushes = pl.col("close_date_pushes") - pl.col("close_date_pushes").shift(1).fill_null(0)
    return (
        enriched_history(ctx.history)
        .with_columns(pushes.over("deal_id", order_by="changed_at").alias("_push"))
        .filter(pl.col("_push") > 0)
        .join(ctx.dims, on="deal_id", how="left")
        .with_columns(ctx.period_of("changed_at"))
        .group_by(ctx.keys)
        .agg(pl.col("_push").sum().cast(pl.Int64).alias("_pushes"))
    )


def open_pipeline_breakdown(
    history: DealHistory,
    as_of: datetime | date,
    by: Sequence[str] = ("stage",),
    *,
    probabilities: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The open pipeline as of ``as_of`` (a bare date is 00:00 UTC), grouped.

    Parameters
    ----------
    history : DealHistory
    as_of : date or datetime
    by : columns of :data:`BREAKDOWNS`
        ``stage`` (in funnel order), ``expected_close_month`` (``YYYY-MM`` of the
        expected close date as of then) or any dimension of ``features.contract.DIMENSIONS``.
    probabilities : frame ``deal_id, as_of, probability``, optional
        Adds ``model_weighted_pipeline`` from each deal's latest probability at or before
        ``as_of``.

    Returns
    -------
    DataFrame
        ``*by, open_pipeline_count, open_pipeline_amount, stage_weighted_pipeline``
        [``, model_weighted_pipeline``].

    Examples
    --------
    >>> open_pipeline_breakdown(history, date(2026, 7, 1), by=("expected_close_month",))
    ... # doctest: +SKIP
    """
    keys = list(dict.fromkeys(by))
    unknown = [k for k in keys if k not in BREAKDOWNS]
    if unknown:
        raise ValueError(
            f"unknown breakdown {', '.join(map(repr, unknown))}: "
            f"break the pipeline down by one of {', '.join(BREAKDOWNS)}"
        )
    stages = history.pipeline.frame().select("stage", "stage_probability")
    deals = (
        pipeline_as_of(history, as_of)
        .join(stages, on="stage", how="left")
        .with_columns(
            pl.col("expected_close_date").dt.strftime("%Y-%m").alias("expected_close_month")
        )
    )
    aggs = [
        pl.len().cast(pl.Int64).alias("open_pipeline_count"),
        pl.col("amount").sum().alias("open_pipeline_amount"),
        (pl.col("amount") * pl.col("stage_probability")).sum().alias("stage_weighted_pipeline"),
    ]
    if probabilities is not None:
        moment = as_of_frame([as_of]).collect().item()
        latest = (
            conform_probabilities(probabilities)
            .filter(pl.col("_p_as_of") <= moment)
            .sort("_p_as_of")
            .group_by("deal_id")
            .agg(pl.col("_probability").last())
            .collect()
        )
        deals = deals.join(latest, on="deal_id", how="left")
        aggs.append(
            (pl.col("amount") * pl.col("_probability")).sum().alias("model_weighted_pipeline")
        )
    if not keys:
        return deals.select(aggs)
    out = deals.group_by(keys).agg(*aggs, pl.col("stage_order").max().alias("_order"))
    order = ["_order" if k == "stage" else k for k in keys]
    return out.sort(order, nulls_last=True).drop("_order")
