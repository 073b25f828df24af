"""The KPI engine: the sales KPI catalogue (``definitions``) per period and group.

:func:`kpi_table` returns one row per period (and group, with ``by``) and one column per KPI;
:data:`KPI_DEFINITIONS` says what each column is. The work is split by KPI family:

- :mod:`features.kpis.outcomes` — deals closed and created in the period;
- :mod:`features.kpis.pipeline` — the open pipeline at the period's start and end;
- :mod:`features.kpis.stages` — stage conversion and stage durations;
- :mod:`features.kpis.activity` — activities and targets (tier 2);

each a lazy frame keyed by ``period_start`` and the ``by`` columns, joined here onto the full
grid of periods x groups, so a period without any event still has its row (bookings 0).

Point in time: the table reads nothing after its cutoff (the end of the ``end`` day, or the
last timestamp in the data). A KPI of a period reads nothing after that period's end, except
``close_rate_cohort`` and ``stage_conversion_rate__<stage>``, cohort rates that by definition
look at what the period's cohort did later (up to the cutoff).

Thin sources: without a stage history (``history.history_is_derived``) the KPIs that need
the stages a deal went through (:data:`features.kpis.stages.NEEDS_STAGE_HISTORY`: stage
conversion, stage durations, the historical stage win rates behind
``stage_weighted_pipeline_hist``, and ``proposals_sent`` when there are no activities either)
are null, not 0; :func:`kpi_notes` says which and why, for the caller to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from features.contract import DealHistory
from features.kpis.activity import (
    activity_kpis,
    closed_deal_touch_kpis,
    first_activity_kpis,
    last_activity_kpis,
    reps_at_quota_kpis,
    target_kpis,
)
from features.kpis.definitions import KPI_DEFINITIONS, KPI_UNITS, KPIS, kpi_definition, kpi_unit
from features.kpis.outcomes import closed_deal_kpis, created_deal_kpis
from features.kpis.periods import PERIODS, KpiContext, kpi_context, ratio
from features.kpis.pipeline import (
    conform_probabilities,
    end_of_period_kpis,
    open_pipeline_breakdown,
    push_counts,
    start_of_period_kpis,
)
from features.kpis.stages import (
    NEEDS_STAGE_HISTORY,
    proposal_stages,
    stage_columns,
    stage_entry_kpis,
    stage_exit_kpis,
)

__all__ = [
    "KPI_DEFINITIONS",
    "KPI_UNITS",
    "PERIODS",
    "kpi_definition",
    "kpi_notes",
    "kpi_table",
    "kpi_unit",
    "open_pipeline_breakdown",
]

_ZERO_WHEN_EMPTY = {k.name for k in KPIS if k.zero_when_empty}


def kpi_table(
    history: DealHistory,
    *,
    period: str = "month",
    by: Sequence[str] = (),
    start: date | None = None,
    end: date | None = None,
    probabilities: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every KPI of the catalogue per period, optionally per group.

    Parameters
    ----------
    history : DealHistory
        The canonical tables. Tier-2 columns appear when ``activities`` / ``targets`` were
        supplied (``history.has``).
    period : {"week", "month", "quarter", "year"}
        ISO weeks (Monday), calendar months, quarters or years, in UTC.
    by : dimensions of ``features.contract.DIMENSIONS``
        Group every KPI by these (``team`` comes from ``reps``). An unknown one is a
        ValueError that lists the valid ones.
    start, end : date, optional
        Show the periods holding ``start`` to ``end`` (default: all periods of the data).
        ``end`` is also the cutoff: the table is what was known at the end of that day, and
        the period holding it is period-to-date.
    probabilities : frame ``deal_id, as_of, probability``, optional
        Close probabilities from a model: adds ``model_weighted_pipeline``.

    Returns
    -------
    DataFrame
        ``period_start`` (Date), ``period`` (label), the ``by`` columns, then one column per
        KPI as in :data:`KPI_DEFINITIONS`, sorted by period and group.

    Examples
    --------
    >>> kpi_table(Store("dealcast-data").load(), period="quarter", by=["region"])
    ... # doctest: +SKIP
    """
    ctx, shown_from, shown_to = kpi_context(history, period=period, by=by, start=start, end=end)
    probs = None
    if probabilities is not None:
        probs = conform_probabilities(probabilities).filter(
            pl.col("_p_as_of") <= pl.lit(ctx.cutoff)
        )
    has_activities = "activities" in history.has
    has_targets = "targets" in history.has
    families: list[pl.LazyFrame | None] = [
        closed_deal_kpis(ctx),
        created_deal_kpis(ctx),
        end_of_period_kpis(ctx, probs),
        start_of_period_kpis(ctx),
        push_counts(ctx),
        stage_entry_kpis(ctx),
        stage_exit_kpis(ctx),
    ]
    if has_activities:
        families += [
            activity_kpis(ctx),
            closed_deal_touch_kpis(ctx),
            first_activity_kpis(ctx),
            last_activity_kpis(ctx),
        ]
    if has_targets:
        families += [target_kpis(ctx), reps_at_quota_kpis(ctx)]
    # One collect for all families: shared subplans (the deal states, the enriched history)
    # run once, and the joins below work on small per-period frames.
    computed = pl.collect_all([f for f in families if f is not None])
    table = _derived(ctx, _on_grid(ctx, [f.lazy() for f in computed]))
    if has_targets:
        present = table.collect_schema().names()
        table = table.with_columns(  # null when no target scope matches ``by``
            pl.lit(None, pl.Float64).alias(c)
            for c in ("target", "reps_at_quota_share")
            if c not in present
        ).with_columns(
            ratio(pl.col("bookings"), pl.col("target")).alias("quota_attainment"),
            ratio(pl.col("pipeline_due_at_start_amount"), pl.col("target")).alias(
                "pipeline_coverage"
            ),
        )
    schema = table.collect_schema()
    unknown = [c for c in _unknown_columns(ctx) if c in schema]
    if unknown:  # null, not the 0% a derived history would give
        table = table.with_columns(pl.lit(None, schema[c]).alias(c) for c in unknown)
    if shown_from is not None:
        table = table.filter(pl.col("period_start") >= shown_from)
    if shown_to is not None:
        table = table.filter(pl.col("period_start") <= shown_to)
    columns = _columns(ctx, table.collect_schema().names())
    return table.select(columns).sort(ctx.keys, nulls_last=True).collect()


def kpi_notes(history: DealHistory) -> tuple[str, ...]:
    """What the KPI table of ``history`` cannot tell, one line per KPI family (empty if all).

    Without a stage history in the source the stages a closed deal went through are not
    known: the derived history would show every closed deal going straight from the first
    stage to its close, i.e. 0% conversion of every later stage.

    Examples
    --------
    >>> kpi_notes(Store("dealcast-data").load())  # a flat export: no stage history
    ... # doctest: +SKIP
    ('stage conversion: unknown without a stage history ...', ...)
    """
    if not history.history_is_derived:
        return ()
    why = "unknown without a stage history"
    notes = [
        f"stage conversion: {why} (stage_conversion_rate__* left empty)",
        f"stage durations: {why} (stage_duration_days_* left empty)",
        f"historical stage win rates: {why} (stage_weighted_pipeline_hist left empty)",
    ]
    if "activities" not in history.has and proposal_stages(history.pipeline):
        notes.append(f"proposals sent: {why} or activities (proposals_sent left empty)")
    return tuple(notes)


def _unknown_columns(ctx: KpiContext) -> list[str]:
    """The KPI columns :func:`kpi_notes` calls unknown for ``ctx.history`` (stages expanded)."""
    history = ctx.history
    if not history.history_is_derived:
        return []
    slugs = list(stage_columns(ctx).values())
    out = []
    for name in NEEDS_STAGE_HISTORY:
        out += [name.replace("<stage>", s) for s in slugs] if "<stage>" in name else [name]
    if "activities" not in history.has:
        out.append("proposals_sent")
    return out


def _on_grid(ctx: KpiContext, families: list[pl.LazyFrame]) -> pl.LazyFrame:
    """Every family left-joined onto periods x groups (groups: any seen in any family)."""
    grid = ctx.periods.lazy().select("period_start", "period")
    if ctx.by:
        groups = pl.concat([f.select(ctx.by) for f in families]).unique()
        grid = grid.join(groups, how="cross")
    for family in families:
        grid = grid.join(family, on=ctx.keys, how="left", nulls_equal=True)
    names = grid.collect_schema().names()
    zero = [c for c in names if c in _ZERO_WHEN_EMPTY or c.startswith("_")]
    return grid.with_columns(pl.col(zero).fill_null(0))


def _derived(ctx: KpiContext, table: pl.LazyFrame) -> pl.LazyFrame:
    """KPIs computed from other columns: growth, upsell share, velocity, pushes, proposals."""
    earlier = table.select(
        pl.col("period_start").alias("_then"), *ctx.by, pl.col("bookings").alias("_booked")
    )
    growth = {
        "bookings_growth": ctx.shifted("previous"),
        "bookings_growth_yoy": ctx.shifted("year_before"),
    }
    for name, then in growth.items():
        table = (
            table.with_columns(then.alias("_then"))
            .join(earlier, on=["_then", *ctx.by], how="left", nulls_equal=True)
            .with_columns(
                ratio(pl.col("bookings") - pl.col("_booked"), pl.col("_booked")).alias(name)
            )
            .drop("_then", "_booked")
        )
    velocity = pl.col("open_pipeline_count") * pl.col("avg_deal_size") * pl.col("win_rate")
    table = table.with_columns(
        ratio(pl.col("_bookings_expansion"), pl.col("bookings")).alias("upsell_share"),
        ratio(velocity, pl.col("cycle_days_mean")).alias("sales_velocity_per_day"),
        ratio(
            pl.col("_pushes"), pl.col("_open_at_start_count") + pl.col("pipeline_created_count")
        ).alias("pushes_per_deal"),
    )
    if "activities__proposal" in table.collect_schema().names():
        return table.with_columns(pl.col("activities__proposal").alias("proposals_sent"))
    if proposal_stages(ctx.history.pipeline):
        return table.with_columns(pl.col("_proposal_stage_entries").alias("proposals_sent"))
    return table


def _columns(ctx: KpiContext, present: list[str]) -> list[str]:
    """The output columns in :data:`KPIS` order, stage columns expanded, helpers dropped."""
    slugs = list(stage_columns(ctx).values())
    out = ["period_start", "period", *ctx.by]
    for kpi in KPIS[2:]:
        names = (
            [kpi.name.replace("<stage>", s) for s in slugs] if "<stage>" in kpi.name else [kpi.name]
        )
        out += [n for n in names if n in present]
    return out
