"""What every column of the KPI table means: one record per KPI, in table order.

``<stage>`` in a name stands for each open stage of the pipeline config, as a snake_case
suffix (``Closed Won`` -> ``closed_won``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from features.contract import ACTIVITY_TYPES

__all__ = ["Kpi", "Unit", "KPIS", "KPI_DEFINITIONS", "KPI_UNITS", "kpi_definition", "kpi_unit"]

Unit = Literal["key", "money", "count", "rate", "growth", "days", "ratio"]
Family = Literal["key", "outcomes", "pipeline", "process", "activities", "targets"]


@dataclass(frozen=True)
class Kpi:
    """One column of the KPI table."""

    name: str
    family: Family
    unit: Unit
    tier: int
    text: str
    zero_when_empty: bool = False
    """A sum or count: 0 (not null) for a period and group without any such event."""


_P = "in the period"
_OPEN_END = "deals open as of the period end (its last instant, or the cutoff if sooner)"


def _kpis() -> tuple[Kpi, ...]:
    k = Kpi
    touches = [
        k(
            f"touches_per_closed_deal__{outcome}" + ("" if t is None else f"__{t}"),
            "activities",
            "ratio",
            2,
            f"Mean number of {'activities' if t is None else t + ' activities'} linked to a "
            f"deal {outcome} {_P}, logged up to its close (deals without any count 0).",
        )
        for outcome in ("won", "lost")
        for t in (None, *ACTIVITY_TYPES)
    ]
    # fmt: off
    return (
        k("period_start", "key", "key", 0, "First day of the period (UTC; weeks start Monday)."),
        k("period", "key", "key", 0, "Period label: 2026-W27 (ISO), 2026-07, 2026-Q3 or 2026."),
        # -- outcomes
        k("bookings", "outcomes", "money", 1,
          f"Sum of amount of the deals won with closed_at {_P}.", True),
        k("bookings_growth", "outcomes", "growth", 1,
          "(bookings - previous period's bookings) / previous period's bookings, within the "
          "group; null when the previous period booked nothing."),
        k("bookings_growth_yoy", "outcomes", "growth", 1,
          "Growth of bookings vs the same period a year before (52 weeks before, for weeks), "
          "within the group; null when that period booked nothing."),
        k("deals_won", "outcomes", "count", 1, f"Deals won with closed_at {_P}.", True),
        k("deals_lost", "outcomes", "count", 1, f"Deals lost with closed_at {_P}.", True),
        k("win_rate", "outcomes", "rate", 1, f"Won / (won + lost), deals closed {_P}, by count."),
        k("win_rate_amount", "outcomes", "rate", 1,
          f"Amount won / amount won or lost, deals closed {_P}."),
        k("avg_deal_size", "outcomes", "money", 1, f"Mean amount of the deals won {_P}."),
        k("median_deal_size", "outcomes", "money", 1, f"Median amount of the deals won {_P}."),
        k("upsell_share", "outcomes", "rate", 1,
          "Bookings of deal_type = expansion / all bookings of the period."),
        k("close_rate_cohort", "outcomes", "rate", 1,
          f"Of the deals created {_P}, the share won by the table's cutoff (looks ahead to "
          "the cutoff, so recent cohorts rise as they mature)."),
        k("cycle_days_median", "outcomes", "days", 1,
          f"Median of closed_at - created_at (days) of the deals won {_P}."),
        k("cycle_days_mean", "outcomes", "days", 1,
          f"Mean of closed_at - created_at (days) of the deals won {_P}."),
        k("cycle_days_p90", "outcomes", "days", 1,
          f"90th percentile (linear) of closed_at - created_at (days) of the deals won {_P}."),
        # -- pipeline
        k("pipeline_created_count", "pipeline", "count", 1, f"Deals created {_P}.", True),
        k("pipeline_created_amount", "pipeline", "money", 1,
          f"Sum of the first amount recorded for the deals created {_P} (if recorded by the "
          "period end).", True),
        k("open_pipeline_count", "pipeline", "count", 1, f"Number of {_OPEN_END}.", True),
        k("open_pipeline_amount", "pipeline", "money", 1,
          f"Sum of amount (as of then) of {_OPEN_END}.", True),
        k("stage_weighted_pipeline", "pipeline", "money", 1,
          f"Sum of amount x the pipeline config's probability of the stage, {_OPEN_END}.", True),
        k("stage_weighted_pipeline_hist", "pipeline", "money", 1,
          f"Sum of amount x the stage's historical win rate, {_OPEN_END}; the rate of stage s "
          "= won / (won + lost) among all deals closed by then that had been in s.", True),
        k("model_weighted_pipeline", "pipeline", "money", 1,
          f"Sum of amount x the deal's latest model probability dated by then, {_OPEN_END} "
          "(only when probabilities are passed).", True),
        k("pipeline_due_at_start_amount", "pipeline", "money", 1,
          "Amount of the deals open as the period began (its previous instant) whose expected "
          "close date, as of then, fell in the period.", True),
        k("sales_velocity_per_day", "pipeline", "money", 1,
          "open_pipeline_count x avg_deal_size x win_rate / cycle_days_mean: expected "
          "bookings per day at the period's pace."),
        # -- process
        k("stage_conversion_rate__<stage>", "process", "rate", 1,
          f"Of the deals that entered <stage> {_P}, the share that later (by the cutoff) "
          "reached a later open stage or won."),
        k("stage_duration_days_median__<stage>", "process", "days", 1,
          f"Median days in <stage> of the stays in it that ended {_P}."),
        k("stage_duration_days_p90__<stage>", "process", "days", 1,
          f"90th percentile (linear) of days in <stage> of the stays in it that ended {_P}."),
        k("slip_rate", "process", "rate", 1,
          "Of the deals due in the period (open at its start, expected close inside it as of "
          "then), the share neither won nor lost by its end; null while it is in progress."),
        k("pushes_per_deal", "process", "ratio", 1,
          f"Expected-close-date pushes (moved later) recorded {_P} / deals open at some time "
          "in it (open at its start + created in it)."),
        # -- activities (tier 2)
        *[
            k(f"activities__{t}", "activities", "count", 2,
              f"Activities of type {t} logged {_P}.", True)
            for t in ACTIVITY_TYPES
        ],
        k("activities_per_rep", "activities", "ratio", 2,
          f"Activities logged {_P} / reps who logged at least one."),
        k("proposals_sent", "activities", "count", 2,
          f"Proposal activities logged {_P}; without activities, entries into open stages "
          "named like 'proposal'.", True),
        *touches,
        k("demo_to_close_rate", "activities", "rate", 2,
          f"Of the deals closed {_P} that had a demo activity before closing, the share won."),
        k("time_to_first_activity_days_median", "activities", "days", 2,
          f"Median days from creation to first activity, of the deals first worked {_P}."),
        k("days_since_last_activity_median", "activities", "days", 2,
          f"Median days since the last activity (or creation, if later) of {_OPEN_END}."),
        # -- targets (tier 2)
        k("target", "targets", "money", 2,
          "Target of the group (scope matching --by: company, owner, team, region): the sum "
          "of its monthly targets, pro-rated by day for weeks."),
        k("quota_attainment", "targets", "rate", 2, "bookings / target."),
        k("reps_at_quota_share", "targets", "rate", 2,
          "Of the reps with an owner target in the period, the share whose bookings reached it."),
        k("pipeline_coverage", "targets", "ratio", 2,
          "pipeline_due_at_start_amount / target: open pipeline expected in the period, as it "
          "began, over what was left to book then (the whole target)."),
    )
    # fmt: on


KPIS: tuple[Kpi, ...] = _kpis()
"""Every KPI column in table order (``<stage>`` columns repeat for each open stage)."""

KPI_DEFINITIONS: dict[str, str] = {
    kpi.name: (f"[tier {kpi.tier}] " if kpi.tier else "") + kpi.text for kpi in KPIS
}
"""Column -> one-line definition, with its tier (1: deals and stage history; 2: activities or
targets). ``<stage>`` stands for each open stage: see :func:`kpi_definition`."""

KPI_UNITS: dict[str, Unit] = {kpi.name: kpi.unit for kpi in KPIS}
"""Column -> unit: money, count, rate (a share, 0..1), growth, days, ratio, or key."""


def _pattern(column: str) -> str:
    """The KPIS name of a column: ``stage_conversion_rate__demo`` -> ``..._rate__<stage>``."""
    if column in KPI_UNITS:
        return column
    head, sep, _ = column.rpartition("__")
    return f"{head}__<stage>" if sep and f"{head}__<stage>" in KPI_UNITS else column


def kpi_definition(column: str) -> str | None:
    """The definition of a KPI table column (stage columns resolved), or None if unknown."""
    text = KPI_DEFINITIONS.get(_pattern(column))
    if text is None or "<stage>" not in text:
        return text
    return text.replace("<stage>", column.rpartition("__")[2])


def kpi_unit(column: str) -> Unit | None:
    """The unit of a KPI table column (stage columns resolved), or None if unknown."""
    return KPI_UNITS.get(_pattern(column))
