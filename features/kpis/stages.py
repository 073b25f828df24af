"""Stage conversion and stage duration per open stage, from the stage history (tier 1).

A *stage run* is a stretch of consecutive stage-history rows of one deal in one stage: it is
entered at its first row and left at the next row in another stage (null while the deal is
still in it at the cutoff). Runs come from the point-in-time enriched history of
:mod:`features.snapshots`, already cut at the table's cutoff, so no run "ends" after it.

Cohort convention of ``stage_conversion_rate__<stage>``: the deals that entered the stage in
the period (each deal once, however often it re-entered); a deal converted when, at any time
after that entry and up to the cutoff, it was in a later open stage or won. Lost, moved back
or still in the stage at the cutoff: not converted. Recent cohorts therefore rise as they
mature, like ``close_rate_cohort``.

Without a stage history in the source (``history.history_is_derived``) the stages a closed
deal went through are unknown: the derived history has it in the first open stage from
creation to close, which would read as "0% of the deals got past the first stage". These
KPIs are then null, and :func:`features.kpis.table.kpi_notes` says why
(:data:`NEEDS_STAGE_HISTORY`).
"""

from __future__ import annotations

import polars as pl

from features.contract import PipelineConfig
from features.kpis.periods import KpiContext, days_between, ratio, stage_slug
from features.snapshots import enriched_history

__all__ = [
    "NEEDS_STAGE_HISTORY",
    "proposal_stages",
    "stage_columns",
    "stage_entry_kpis",
    "stage_exit_kpis",
    "stage_runs",
]


NEEDS_STAGE_HISTORY: dict[str, str] = {
    "stage_conversion_rate__<stage>": "stage conversion",
    "stage_duration_days_median__<stage>": "stage durations",
    "stage_duration_days_p90__<stage>": "stage durations",
    "stage_weighted_pipeline_hist": "historical stage win rates",
}
"""KPI columns (``<stage>``: each open stage) that are unknown without a real stage history,
and what they are about (the note ``dealcast kpis`` prints)."""


def proposal_stages(pipeline: PipelineConfig) -> tuple[str, ...]:
    """The open stages whose name contains "proposal" (any case)."""
    return tuple(s for s in pipeline.open_stages if "proposal" in s.lower())


def stage_columns(ctx: KpiContext) -> dict[str, str]:
    """Open stage name -> its snake_case column suffix; ValueError when two names collide."""
    slugs = {name: stage_slug(name) for name in ctx.history.pipeline.open_stages}
    seen: dict[str, str] = {}
    for name, slug in slugs.items():
        if slug in seen or not slug:
            raise ValueError(
                f"open stages {seen.get(slug, '')!r} and {name!r} both give the KPI column "
                f"suffix {slug!r}: rename one in the pipeline config"
            )
        seen[slug] = name
    return slugs


def stage_runs(ctx: KpiContext) -> pl.LazyFrame:
    """One row per stage run of an open stage.

    Returns
    -------
    LazyFrame
        ``deal_id, stage, stage_order, entered_at, left_at, later_max_order`` plus the ``by``
        columns; ``later_max_order`` is the highest stage order the deal reached after this
        entry (null if it never moved again).
    """

    def by_deal(expr: pl.Expr) -> pl.Expr:
        return expr.over("deal_id", order_by="changed_at")

    later_max = pl.col("stage_order").reverse().cum_max().reverse().shift(-1)
    return (
        enriched_history(ctx.history)
        .filter(pl.col("changed_at") == pl.col("stage_entered_at"))
        .with_columns(
            by_deal(pl.col("changed_at").shift(-1)).alias("left_at"),
            by_deal(later_max).alias("later_max_order"),
        )
        .filter(pl.col("stage").is_in(list(ctx.history.pipeline.open_stages)))
        .join(ctx.dims, on="deal_id", how="left")
        .select(
            "deal_id",
            "stage",
            "stage_order",
            pl.col("changed_at").alias("entered_at"),
            "left_at",
            "later_max_order",
            *ctx.by,
        )
    )


def stage_entry_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Conversion of the deals that entered each open stage in the period.

    Returns
    -------
    LazyFrame
        ``period_start, *by, stage_conversion_rate__<stage>...`` and
        ``_proposal_stage_entries``: entries into open stages whose name contains "proposal"
        (the fallback of ``proposals_sent`` when there are no activities).
    """
    converted = (pl.col("later_max_order") > pl.col("stage_order")).fill_null(False)
    aggs = []
    for name, slug in stage_columns(ctx).items():
        here = pl.col("stage") == name
        entered = pl.col("deal_id").filter(here).n_unique()
        passed = pl.col("deal_id").filter(here & converted).n_unique()
        aggs.append(ratio(passed, entered).alias(f"stage_conversion_rate__{slug}"))
    proposals = list(proposal_stages(ctx.history.pipeline))
    aggs.append(
        pl.col("stage").is_in(proposals).sum().cast(pl.Int64).alias("_proposal_stage_entries")
    )
    return stage_runs(ctx).with_columns(ctx.period_of("entered_at")).group_by(ctx.keys).agg(aggs)


def stage_exit_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Days spent in each open stage, over the stage runs that ended in the period.

    Returns
    -------
    LazyFrame
        ``period_start, *by, stage_duration_days_median__<stage>,
        stage_duration_days_p90__<stage>...`` (p90 linearly interpolated).
    """
    days = days_between(pl.col("left_at"), pl.col("entered_at"))
    aggs = []
    for name, slug in stage_columns(ctx).items():
        spent = days.filter(pl.col("stage") == name)
        aggs += [
            spent.median().alias(f"stage_duration_days_median__{slug}"),
            spent.quantile(0.9, "linear").alias(f"stage_duration_days_p90__{slug}"),
        ]
    return (
        stage_runs(ctx)
        .filter(pl.col("left_at").is_not_null())
        .with_columns(ctx.period_of("left_at"))
        .group_by(ctx.keys)
        .agg(aggs)
    )
