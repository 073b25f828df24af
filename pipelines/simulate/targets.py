"""Targets: a monthly number per rep from its expected bookings, and their sums above it."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.simulate.anomalies import AnomalyPlan
from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.demand import Deals, creation_weights, rep_load
from pipelines.simulate.funnel import Funnel
from pipelines.simulate.org import Org
from pipelines.simulate.world import (
    TARGET_AMBITION,
    TARGET_LAG_MONTHS,
    TARGET_MONTHS_AHEAD,
    TARGET_QUARTER_SHAPE,
)

__all__: list[str] = []  # internal to pipelines.simulate


def build_targets(
    clock: Clock,
    org: Org,
    deals: Deals,
    funnel: Funnel,
    reps: pl.DataFrame,
    config: SimConfig | None = None,
) -> pl.DataFrame:
    """The ``targets`` table: ``period, scope_type, scope_id, amount``.

    A rep's target for month m is the bookings its planned deal creation of month
    ``m - TARGET_LAG_MONTHS`` should bring (ramp-aware, anomalies unknown to the plan) at the
    company's expected value per new deal, shaped for the quarter-end, times a bit of ambition.
    Team, region and company targets are the sums of their reps'. The plan runs
    ``TARGET_MONTHS_AHEAD`` months past the end of the history, as a real one would: the months
    being forecast have targets. With a ``config``, the plan knows the reps' load and the lag
    follows the cycle (``cycle_scale``); it never foresees a creation decline
    (``creation_decline``, ``creation_stop_months``), as a plan made before it would not.
    """
    months = clock.months + TARGET_MONTHS_AHEAD
    load, lag = 1.0, TARGET_LAG_MONTHS
    if config is not None:
        load = rep_load(config)
        lag = max(0, round(TARGET_LAG_MONTHS * config.cycle_scale))
    planned = creation_weights(clock, org, AnomalyPlan(), months=months, load=load)
    lagged = planned[:, np.maximum(np.arange(months) - lag, 0)]
    value = float(np.mean(np.prod(funnel.p, axis=1) * deals.amount)) if deals.size else 0.0
    shape = TARGET_QUARTER_SHAPE[(clock.calendar_month[:months] - 1) % 3]
    amount = np.round(lagged * value * shape[None, :] * TARGET_AMBITION, -3)
    rep, month = np.nonzero(amount > 0)
    periods = pl.Series([clock.month_label(m) for m in range(months)])
    owner = pl.DataFrame(
        {
            "owner_id": reps["owner_id"].gather(rep),
            "period": periods.gather(month),
            "amount": amount[rep, month],
        }
    ).join(reps.select("owner_id", "team", "region"), on="owner_id", how="left")
    levels = [
        owner.select(
            "period",
            pl.lit("owner").alias("scope_type"),
            pl.col("owner_id").alias("scope_id"),
            "amount",
        ),
        *(
            owner.group_by("period", scope)
            .agg(pl.col("amount").sum())
            .select(
                "period",
                pl.lit(scope).alias("scope_type"),
                pl.col(scope).alias("scope_id"),
                "amount",
            )
            for scope in ("team", "region")
        ),
        owner.group_by("period")
        .agg(pl.col("amount").sum())
        .select(
            "period",
            pl.lit("company").alias("scope_type"),
            pl.lit("company").alias("scope_id"),
            "amount",
        ),
    ]
    return pl.concat(levels).sort("period", "scope_type", "scope_id")
