"""KPIs of deals closed in a period and of deals created in it (tier 1).

Each builder is a pure function of a :class:`~features.kpis.periods.KpiContext` returning a
lazy frame keyed by ``period_start`` and the ``by`` columns.
"""

from __future__ import annotations

import polars as pl

from features.kpis.periods import KpiContext, days_between, ratio

__all__ = ["closed_deal_kpis", "created_deal_kpis"]


def closed_deal_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Outcomes of the deals won or lost with ``closed_at`` in the period.

    Parameters
    ----------
    ctx : KpiContext

    Returns
    -------
    LazyFrame
        ``period_start, *by, bookings, deals_won, deals_lost, win_rate, win_rate_amount,
        avg_deal_size, median_deal_size, cycle_days_median, cycle_days_mean, cycle_days_p90,
        _bookings_expansion`` (the helper feeds ``upsell_share``).

    Examples
    --------
    >>> closed_deal_kpis(kpi_context(history, period="month", by=(), ...)[0])  # doctest: +SKIP
    """
    won = pl.col("outcome") == "won"
    won_amount = pl.col("amount").filter(won)
    cycle = pl.col("_cycle_days").filter(won)
    return (
        ctx.deals.filter(pl.col("outcome").is_not_null())
        .with_columns(
            ctx.period_of("closed_at"),
            days_between(pl.col("closed_at"), pl.col("created_at")).alias("_cycle_days"),
        )
        .group_by(ctx.keys)
        .agg(
            won_amount.sum().alias("bookings"),
            won.sum().cast(pl.Int64).alias("deals_won"),
            (~won).sum().cast(pl.Int64).alias("deals_lost"),
            won.mean().alias("win_rate"),
            ratio(won_amount.sum(), pl.col("amount").sum()).alias("win_rate_amount"),
            won_amount.mean().alias("avg_deal_size"),
            won_amount.median().alias("median_deal_size"),
            cycle.median().alias("cycle_days_median"),
            cycle.mean().alias("cycle_days_mean"),
            cycle.quantile(0.9, "linear").alias("cycle_days_p90"),
            pl.col("amount")
            .filter(won & (pl.col("deal_type") == "expansion"))
            .sum()
            .alias("_bookings_expansion"),
        )
    )


def created_deal_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Pipeline created in the period and the close rate of that creation cohort.

    The amount of a created deal is the first amount its stage history recorded, counted
    when it was recorded by the end of the creation period (so later edits never change a
    past period). A deal of the cohort counts as won when it was won by the cutoff: the one
    look-ahead of this family, by definition of a cohort close rate.

    Returns
    -------
    LazyFrame
        ``period_start, *by, pipeline_created_count, pipeline_created_amount,
        close_rate_cohort``.
    """
    history = ctx.history.stage_history.filter(pl.col("amount").is_not_null())
    first_amount = history.group_by("deal_id").agg(
        pl.col("amount").sort_by("changed_at", maintain_order=True).first().alias("_amount0"),
        pl.col("changed_at").min().alias("_amount0_at"),
    )
    ends = ctx.periods.lazy().select("period_start", "end_as_of")
    known = pl.col("_amount0_at") <= pl.col("end_as_of")
    return (
        ctx.deals.with_columns(ctx.period_of("created_at"))
        .join(ends, on="period_start", how="left")
        .join(first_amount, on="deal_id", how="left")
        .group_by(ctx.keys)
        .agg(
            pl.len().cast(pl.Int64).alias("pipeline_created_count"),
            pl.col("_amount0").filter(known).sum().alias("pipeline_created_amount"),
            (pl.col("outcome") == "won").fill_null(False).mean().alias("close_rate_cohort"),
        )
    )
