"""Demand: when deals are created, by whom, and what they are (product, size, buyer intent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulate.anomalies import AnomalyPlan
from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.org import Org
from pipelines.simulate.world import (
    ACCOUNTS_PER_DEAL,
    AMOUNT_LOG_SD,
    DAY,
    DEAL_TYPE_SHARE,
    DEALS_PER_REP_MONTH,
    GROWTH_PER_YEAR,
    MONTH_SEASONALITY,
    OFFICE_HOURS,
    OFFICE_START_UTC_H,
    PRODUCT_AMOUNT,
    PRODUCT_SHARE_BY_SEGMENT,
    REP_LOAD_FOR_SCALING,
    SEGMENT_AMOUNT,
    SEGMENT_SHARE,
    SOURCE_INTENT,
    SOURCE_SHARE,
    choose,
    choose_rows,
    rng_for,
)

__all__: list[str] = []  # internal to pipelines.simulate


@dataclass(frozen=True)
class Deals:
    """One entry per deal, in creation order (index = deal code)."""

    created: np.ndarray  # int64 seconds
    owner: np.ndarray
    region: np.ndarray
    segment: np.ndarray
    product: np.ndarray
    source: np.ndarray
    deal_type: np.ndarray
    account: np.ndarray
    amount: np.ndarray  # initial amount
    intent: np.ndarray  # the buyer's latent intent: never recorded

    @property
    def size(self) -> int:
        return int(self.created.size)

    @property
    def n_accounts(self) -> int:
        return int(self.account.max()) + 1 if self.size else 0


def rep_load(config: SimConfig) -> float:
    """A rep's creation rate relative to today's company (1.0 by default)."""
    return config.deals_per_rep_month / REP_LOAD_FOR_SCALING


def creation_trend(config: SimConfig, clock: Clock) -> np.ndarray | None:
    """Multiplier of deal creation per history month (``None``: flat, today's company).

    Falls linearly by ``creation_decline`` from the first month to the last one that creates
    deals, and is 0 in the last ``creation_stop_months`` months.
    """
    if config.creation_decline == 0.0 and config.creation_stop_months == 0:
        return None
    active = clock.months - config.creation_stop_months
    trend = np.zeros(clock.months)
    trend[:active] = 1.0 - config.creation_decline * np.arange(active) / max(active - 1, 1)
    return trend


def creation_weights(
    clock: Clock,
    org: Org,
    plan: AnomalyPlan,
    *,
    months: int | None = None,
    load: float = 1.0,
    trend: np.ndarray | None = None,
) -> np.ndarray:
    """Expected new deals per ``[rep, month]``: load × ramp × growth × seasonality.

    ``months`` (default the history's) may run past the end of the history, up to the clock's
    extra months: a plan made before those months happen; anomalies never extend past the end.
    ``load`` scales every rep's rate (:func:`rep_load`); ``trend`` (:func:`creation_trend`,
    one value per history month) shapes creation over time.
    """
    n = clock.months if months is None else months
    starts = clock.month_starts[:n].astype(np.float64)
    ends = clock.month_starts[1 : n + 1].astype(np.float64)
    lo = np.maximum(starts[None, :], org.hired[:, None].astype(np.float64))
    active = np.clip((ends[None, :] - lo) / (ends - starts)[None, :], 0.0, 1.0)
    mid = (lo + ends[None, :]) / 2.0
    reps = np.broadcast_to(np.arange(org.size)[:, None], mid.shape)
    growth = (1.0 + GROWTH_PER_YEAR) ** (mid / (365.25 * DAY))
    season = MONTH_SEASONALITY[clock.calendar_month[:n] - 1]
    anomaly = plan.creation_factor(clock, org)
    if n > clock.months:
        anomaly = np.pad(anomaly, ((0, 0), (0, n - clock.months)), constant_values=1.0)
    if trend is not None:
        anomaly = anomaly * np.pad(trend, (0, max(anomaly.shape[1] - trend.size, 0)))[None, :]
    return (
        DEALS_PER_REP_MONTH
        * load
        * org.volume[:, None]
        * org.creation_factor(reps, mid)
        * growth
        * season[None, :]
        * active
        * anomaly[:, :n]
    )


def _office_days(
    rng: np.random.Generator, clock: Clock, lo_day: np.ndarray, hi_day: np.ndarray
) -> np.ndarray:
    """A day in ``[lo_day, hi_day)`` for each entry, moved off weekends where it can be."""
    day = lo_day + np.floor(rng.random(lo_day.size) * (hi_day - lo_day)).astype(np.int64)
    weekday = clock.weekday(day * DAY)
    day = np.where(weekday == 5, day - 1, np.where(weekday == 6, day + 1, day))
    day = np.where(day < lo_day, day + 3, np.where(day >= hi_day, day - 3, day))
    return np.clip(day, lo_day, hi_day - 1)


def office_time(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A second of the working day (UTC) of ``region``."""
    hours = OFFICE_START_UTC_H[region] + rng.random(region.size) * OFFICE_HOURS
    return np.floor(hours * 3600).astype(np.int64)


def create_deals(config: SimConfig, clock: Clock, org: Org, plan: AnomalyPlan) -> Deals:
    """Draw every deal of the history (its own random stream)."""
    rng = rng_for(config.seed, "demand")
    weights = creation_weights(
        clock, org, plan, load=rep_load(config), trend=creation_trend(config, clock)
    )
    n = config.n_deals if config.n_deals is not None else round(float(weights.sum()))
    counts = rng.multinomial(n, (weights / weights.sum()).ravel())
    cell = np.repeat(np.arange(counts.size), counts)
    rep, month = np.divmod(cell, clock.months)
    lo_day = np.maximum(clock.month_starts[month], org.hired[rep]) // DAY
    hi_day = clock.month_starts[month + 1] // DAY
    region = org.region[rep]
    created = _office_days(rng, clock, lo_day, hi_day) * DAY + office_time(rng, region)
    order = np.lexsort((rep, created))
    created, rep, region = created[order], rep[order], region[order]

    segment = choose(rng, SEGMENT_SHARE, n)
    product = choose_rows(rng, PRODUCT_SHARE_BY_SEGMENT, segment)
    source = choose(rng, SOURCE_SHARE, n)
    deal_type = choose(rng, DEAL_TYPE_SHARE, n)
    noise = np.exp(rng.normal(-(AMOUNT_LOG_SD**2) / 2, AMOUNT_LOG_SD, n))
    base = PRODUCT_AMOUNT[product] * SEGMENT_AMOUNT[segment]
    if config.amount_scale != 1.0:
        base = base * config.amount_scale
    amount = np.round(base * noise, -2)
    amount = np.maximum(amount, 100.0)
    intent = rng.normal(0.0, 1.0, n) + SOURCE_INTENT[source]

    # Each rep works a book of accounts; a few accounts come back often, and expansions and
    # renewals go to the established part of the book.
    book = np.maximum(10, np.ceil(np.bincount(rep, minlength=org.size) * ACCOUNTS_PER_DEAL))
    offset = np.concatenate([[0], np.cumsum(book)[:-1]]).astype(np.int64)
    u = rng.random(n)
    share = np.where(deal_type == 0, u**1.6, 0.3 * u)
    account = offset[rep] + np.floor(share * book[rep]).astype(np.int64)
    return Deals(
        created=created,
        owner=rep.astype(np.int64),
        region=region,
        segment=segment,
        product=product,
        source=source,
        deal_type=deal_type,
        account=account,
        amount=amount,
        intent=intent,
    )
