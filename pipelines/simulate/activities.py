"""Activities: calls, emails, meetings, demos and proposals, linked to deals or prospecting.

A deal's activity rate depends on its stage and rises with the buyer's intent, times a
per-deal "chattiness" (reps and buyers differ). While a buyer cools down before a stage exit
(``Funnel.cooling``: most buyers about to say no), the rate thins out. Reps also log prospecting
activities not linked to any deal. Weekends are quiet; a silent-rep anomaly drops most of a
rep's activities for a few weeks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulate.anomalies import AnomalyPlan
from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.demand import Deals, office_time
from pipelines.simulate.funnel import N_OPEN, Funnel
from pipelines.simulate.org import Org
from pipelines.simulate.world import (
    ACTIVITY_CHATTINESS_SHAPE,
    ACTIVITY_COOLING,
    ACTIVITY_INTENT,
    ACTIVITY_LEVEL_CAP,
    ACTIVITY_MIX_BY_STAGE,
    ACTIVITY_RATE,
    DAY,
    KICKOFF_DAYS,
    KICKOFF_RATE,
    PROSPECTING_MIX,
    PROSPECTING_PER_DAY,
    WEEKEND_KEEP,
    choose,
    rng_for,
)

__all__: list[str] = []  # internal to pipelines.simulate


@dataclass(frozen=True)
class Activities:
    """One entry per activity, sorted by time; ``deal`` and ``account`` are -1 when unlinked."""

    t: np.ndarray
    owner: np.ndarray
    kind: np.ndarray  # code into ACTIVITY_TYPES
    deal: np.ndarray
    account: np.ndarray


def _logged(
    rng: np.random.Generator,
    clock: Clock,
    plan: AnomalyPlan,
    start: np.ndarray,
    length: np.ndarray,
    rate: np.ndarray,
    region: np.ndarray,
    owner: np.ndarray,
    mix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The activities logged at ``rate`` per weekday in each ``[start, start + length)``.

    Poisson counts, uniform times moved into the owner's office hours of the same day when
    that stays inside the span, weekends mostly quiet, a silent rep (anomaly) mostly quiet.
    Returns (index of the span, time, activity type code) of each logged activity.
    """
    counts = rng.poisson(rate * length / DAY)
    source = np.repeat(np.arange(start.size, dtype=np.int64), counts)
    lo, span = start[source], length[source]
    t = lo + np.floor(rng.random(source.size) * span).astype(np.int64)
    moved = np.floor_divide(t, DAY) * DAY + office_time(rng, region[source])
    t = np.where((moved >= lo) & (moved < lo + span), moved, t)
    weekend = clock.weekday(t) >= 5
    keep = rng.random(t.size) < np.where(weekend, WEEKEND_KEEP, 1.0) * plan.activity_keep(
        owner[source], t
    )
    return source[keep], t[keep], choose(rng, mix, int(keep.sum()))


def build_activities(
    config: SimConfig, clock: Clock, org: Org, deals: Deals, funnel: Funnel, plan: AnomalyPlan
) -> Activities:
    """Every logged activity of the history (its own random stream)."""
    rng = rng_for(config.seed, "activities")
    n, horizon = deals.size, clock.horizon
    chattiness = rng.gamma(ACTIVITY_CHATTINESS_SHAPE, 1.0 / ACTIVITY_CHATTINESS_SHAPE, n)
    level = np.minimum(chattiness * np.exp(ACTIVITY_INTENT * deals.intent), ACTIVITY_LEVEL_CAP)
    reached = funnel.reached
    spans: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = []
    for k in range(N_OPEN):
        start = funnel.entries[:, k]
        stop = np.minimum(funnel.exits[:, k], horizon)
        cooling = np.where(funnel.cooling[:, k], funnel.cooling_from[:, k], stop)
        quiet = np.clip(cooling, start, stop)
        spans.append((start, quiet, ACTIVITY_RATE[k] * level, reached[:, k], k))
        spans.append((quiet, stop, ACTIVITY_RATE[k] * ACTIVITY_COOLING * level, reached[:, k], k))
    # The kick-off: a first flurry of touches right after creation (more for keen buyers).
    start = funnel.entries[:, 0]
    stop = np.minimum(start + int(KICKOFF_DAYS * DAY), np.minimum(funnel.exits[:, 0], horizon))
    spans.append((start, stop, KICKOFF_RATE * level, np.ones(n, dtype=bool), 0))

    deal_parts, t_parts, kind_parts = [], [], []
    for lo, hi, rate, live, k in spans:
        at = np.nonzero(live & (hi > lo))[0]
        source, t, kind = _logged(
            rng,
            clock,
            plan,
            lo[at],
            hi[at] - lo[at],
            rate[at],
            deals.region[at],
            deals.owner[at],
            ACTIVITY_MIX_BY_STAGE[k],
        )
        deal_parts.append(at[source])
        t_parts.append(t)
        kind_parts.append(kind)
    deal = np.concatenate(deal_parts)
    owner = deals.owner[deal]

    # Prospecting, not linked to a deal: from hire (or the start) to the end.
    first = np.maximum(org.hired, 0)
    reps, p_t, p_kind = _logged(
        rng,
        clock,
        plan,
        first,
        np.maximum(horizon - first, 0),
        np.full(org.size, PROSPECTING_PER_DAY),
        org.region,
        np.arange(org.size),
        PROSPECTING_MIX,
    )
    t = np.concatenate([*t_parts, p_t])
    order = np.argsort(t, kind="stable")
    deal = np.concatenate([deal, np.full(reps.size, -1, dtype=np.int64)])[order]
    return Activities(
        t=t[order],
        owner=np.concatenate([owner, reps])[order],
        kind=np.concatenate([*kind_parts, p_kind])[order],
        deal=deal,
        account=np.where(deal >= 0, deals.account[np.maximum(deal, 0)], -1),
    )
