"""Tier-2 KPIs: activities (when ``activities`` is supplied) and targets (when ``targets`` is).

Grouping activities: ``owner_id`` is the rep who logged the activity and ``team`` that rep's
team; every other dimension is the linked deal's (null for activities without a deal).

Targets are monthly (``period`` = ``YYYY-MM``). A quarter's or a year's target is the sum of
its months' targets; a week's is pro-rated by day from the months it overlaps. The target of
a group is the one whose ``scope_type`` matches ``by``: ``company`` without ``by``, ``owner``
for ``owner_id``, ``team``, ``region``; any other grouping has no target.
"""

from __future__ import annotations

import polars as pl

from features.contract import ACTIVITY_TYPES
from features.kpis.periods import KpiContext, days_between, period_of

__all__ = [
    "TARGET_SCOPES",
    "activity_kpis",
    "closed_deal_touch_kpis",
    "first_activity_kpis",
    "last_activity_kpis",
    "target_kpis",
    "reps_at_quota_kpis",
]

TARGET_SCOPES: dict[tuple[str, ...], str] = {
    (): "company",
    ("owner_id",): "owner",
    ("team",): "team",
    ("region",): "region",
}
"""``by`` -> the targets ``scope_type`` that matches it."""


def _activities(ctx: KpiContext) -> pl.LazyFrame:
    """Cut activities with the ``by`` columns (owner/team of the rep, the rest of the deal)."""
    acts = ctx.history.activities
    deal_side = [d for d in ctx.by if d not in ("owner_id", "team")]
    if deal_side:
        acts = acts.join(ctx.dims.select("deal_id", *deal_side), on="deal_id", how="left")
    if "team" in ctx.by:
        teams = ctx.history.reps.select("owner_id", "team").unique("owner_id", keep="first")
        acts = acts.join(teams, on="owner_id", how="left")
    return acts


def activity_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Activities logged in the period, by type, and per active rep.

    Returns
    -------
    LazyFrame
        ``period_start, *by, activities__<type>`` for each type of
        ``features.contract.ACTIVITY_TYPES``, ``activities_per_rep`` (all activities / reps who
        logged at least one).
    """
    counts = [
        (pl.col("type") == t).sum().cast(pl.Int64).alias(f"activities__{t}") for t in ACTIVITY_TYPES
    ]
    return (
        _activities(ctx)
        .with_columns(ctx.period_of("occurred_at"))
        .group_by(ctx.keys)
        .agg(*counts, (pl.len() / pl.col("owner_id").n_unique()).alias("activities_per_rep"))
    )


def closed_deal_touch_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Activities on the deals closed in the period, logged up to their close.

    Returns
    -------
    LazyFrame
        ``period_start, *by, touches_per_closed_deal__{won,lost}[__<type>]`` (mean over the
        won / lost deals, a deal without activities counting 0) and ``demo_to_close_rate``:
        of the deals closed in the period that had a demo before closing, the share won.
    """
    closed = ctx.deals.filter(pl.col("outcome").is_not_null())
    types = ["all", *ACTIVITY_TYPES]
    per_deal = (
        ctx.history.activities.join(closed.select("deal_id", "closed_at"), on="deal_id")
        .filter(pl.col("occurred_at") <= pl.col("closed_at"))
        .group_by("deal_id")
        .agg(
            (pl.len() if t == "all" else (pl.col("type") == t).sum())
            .cast(pl.Int64)
            .alias(f"_n_{t}")
            for t in types
        )
    )
    aggs = []
    for outcome in ("won", "lost"):
        mine = pl.col("outcome") == outcome
        for t in types:
            name = f"touches_per_closed_deal__{outcome}" + ("" if t == "all" else f"__{t}")
            aggs.append(pl.col(f"_n_{t}").filter(mine).mean().alias(name))
    had_demo = pl.col("_n_demo") > 0
    aggs.append((pl.col("outcome") == "won").filter(had_demo).mean().alias("demo_to_close_rate"))
    return (
        closed.join(per_deal, on="deal_id", how="left")
        .with_columns(pl.col(f"_n_{t}").fill_null(0) for t in types)
        .with_columns(ctx.period_of("closed_at"))
        .group_by(ctx.keys)
        .agg(aggs)
    )


def first_activity_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Response time: days from a deal's creation to its first activity (at or after it).

    Counted in the period of that first activity, so a period's value never changes later.

    Returns
    -------
    LazyFrame
        ``period_start, *by, time_to_first_activity_days_median``.
    """
    first = (
        ctx.history.activities.join(ctx.deals.select("deal_id", "created_at"), on="deal_id")
        .filter(pl.col("occurred_at") >= pl.col("created_at"))
        .group_by("deal_id")
        .agg(pl.col("occurred_at").min().alias("_first"), pl.col("created_at").first())
    )
    return (
        first.join(ctx.dims, on="deal_id", how="left")
        .with_columns(ctx.period_of("_first"))
        .group_by(ctx.keys)
        .agg(
            days_between(pl.col("_first"), pl.col("created_at"))
            .median()
            .alias("time_to_first_activity_days_median")
        )
    )


def last_activity_kpis(ctx: KpiContext) -> pl.LazyFrame:
    """Days since the last touch of the deals open at the period end.

    The last touch is the latest activity on the deal at or before the period end, or the
    deal's creation when that is later (a deal never worked has been silent since it was
    created).

    Returns
    -------
    LazyFrame
        ``period_start, *by, days_since_last_activity_median``.
    """
    acts = (
        ctx.history.activities.filter(pl.col("deal_id").is_not_null())
        .select("deal_id", pl.col("occurred_at").alias("_last"))
        .sort("_last")
    )
    touched = pl.max_horizontal("created_at", "_last")
    return (
        ctx.states_at("end")
        .sort("as_of")
        .join_asof(
            acts,
            left_on="as_of",
            right_on="_last",
            by="deal_id",
            strategy="backward",
            check_sortedness=False,
        )
        .group_by(ctx.keys)
        .agg(
            days_between(pl.col("as_of"), touched).median().alias("days_since_last_activity_median")
        )
    )


def _targets(ctx: KpiContext, scope: str, key: str | None) -> pl.LazyFrame:
    """Targets of ``scope`` per ``period_start`` (and ``key`` = scope_id) in ctx's periods."""
    month = (pl.col("period") + "-01").str.to_date("%Y-%m-%d", strict=False).alias("_month")
    rows = (
        ctx.history.targets.filter(pl.col("scope_type") == scope)
        .with_columns(month)
        .filter(pl.col("_month").is_not_null())
    )
    if ctx.period == "week":
        # Spread each month's target over its days, then sum the days of each week.
        days = pl.date_ranges("_month", pl.col("_month").dt.offset_by("1mo"), closed="left")
        rows = (
            rows.with_columns(days.alias("_day"))
            .with_columns((pl.col("amount") / pl.col("_day").list.len()).alias("amount"))
            .explode("_day")
            .with_columns(period_of(pl.col("_day"), "week").alias("period_start"))
        )
    else:
        rows = rows.with_columns(period_of(pl.col("_month"), ctx.period).alias("period_start"))
    keys = ["period_start"] if key is None else ["period_start", pl.col("scope_id").alias(key)]
    return rows.group_by(keys).agg(pl.col("amount").sum().alias("target"))


def target_kpis(ctx: KpiContext) -> pl.LazyFrame | None:
    """The target of each group and period, or None when ``by`` has no matching scope.

    Returns
    -------
    LazyFrame or None
        ``period_start, *by, target``.
    """
    scope = TARGET_SCOPES.get(ctx.by)
    if scope is None:
        return None
    return _targets(ctx, scope, ctx.by[0] if ctx.by else None)


def reps_at_quota_kpis(ctx: KpiContext) -> pl.LazyFrame | None:
    """Share of reps with an owner target in the period whose bookings reached it.

    A rep's bookings are all of the rep's won deals of the period; a rep belongs to the team
    and region of the ``reps`` table. None when ``by`` is not one of ``TARGET_SCOPES``.

    Returns
    -------
    LazyFrame or None
        ``period_start, *by, reps_at_quota_share``.
    """
    if ctx.by not in TARGET_SCOPES:
        return None
    bookings = (
        ctx.deals.filter(pl.col("outcome") == "won")
        .with_columns(ctx.period_of("closed_at"))
        .group_by("period_start", "owner_id")
        .agg(pl.col("amount").sum().alias("_booked"))
    )
    reps = _targets(ctx, "owner", "owner_id").filter(pl.col("target") > 0)
    reps = reps.join(bookings, on=["period_start", "owner_id"], how="left")
    if ctx.by in (("team",), ("region",)):
        attrs = ctx.history.reps.select("owner_id", *ctx.by).unique("owner_id", keep="first")
        reps = reps.join(attrs, on="owner_id", how="left")
    attained = pl.col("_booked").fill_null(0) >= pl.col("target")
    return reps.group_by(ctx.keys).agg(attained.mean().alias("reps_at_quota_share"))
