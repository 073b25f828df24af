"""The funnel: each deal's stage exits drawn upfront, the advance decisions, the true odds.

A deal moves through the five open stages in order. Each stage's duration is drawn at
creation (gamma; mean by stage × product/segment cycle, shorter for high intent), and the
final decision of deals in a quarter's first two months is sometimes held until the quarter's
last two weeks. At the exit of stage k the deal advances with

    p_k = sigmoid(base_k + a_k·intent + rep skill/ramp at the exit + deal-type effect
                  + anomaly effects at the exit),

else it is lost there; passing the last open stage is a win. A win-rate regime change
(``SimConfig.win_shift_at``) adds ``win_shift_logit`` to the advance logit of every exit from
then on, so the truth below includes it. Before each exit, the buyer's
mood shows (``cooling_from``: at most 14 days and 40% of the stage before the exit): most
buyers about to say no cool down, a few about to say yes do too, and a cooling buyer goes
quiet (fewer activities). From then on the mood is part of the simulator's state. So, for a
deal in stage s at time t, with T_k = prod_{j >= k} p_j,

    P(won | state at t) = T_s                                   before cooling_from_s
                        = P(advance at s | mood) · T_{s+1}      from then on,

where P(advance | cooling) = p·c1 / (p·c1 + (1-p)·c0) with c1, c0 the cooling shares before a
yes and a no (and the complements when not cooling). Every term is known at t (durations,
exit times and moods are drawn upfront), so the truth is exact: no Monte Carlo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulate.anomalies import AnomalyPlan
from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.demand import Deals
from pipelines.simulate.org import Org
from pipelines.simulate.world import (
    COOLING_DAYS,
    COOLING_IF_LOST,
    COOLING_IF_PASSED,
    COOLING_SHARE,
    CYCLE_STRETCH,
    DAY,
    DEAL_TYPE_LOGIT,
    INTENT_SPEED,
    LOST_REASON_BY_STAGE,
    MIN_STAGE_DAYS,
    PRODUCT_CYCLE_DAYS,
    QUARTER_PULL,
    QUARTER_PULL_DAYS,
    REFERENCE_CYCLE_DAYS,
    SEGMENT_CYCLE,
    STAGE_BASE_LOGIT,
    STAGE_INTENT,
    STAGE_MEAN_DAYS,
    STAGE_SHAPE,
    choose_rows,
    rng_for,
    sigmoid,
)

__all__: list[str] = []  # internal to pipelines.simulate

N_OPEN = STAGE_MEAN_DAYS.size
NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Funnel:
    """Per deal and open stage k (``[deal, k]`` arrays), all drawn at creation."""

    entries: np.ndarray  # int64 seconds the deal would enter stage k
    exits: np.ndarray  # int64 seconds of the decision at the end of stage k
    cooling_from: np.ndarray  # int64 seconds the buyer's mood about exit k shows
    cooling: np.ndarray  # the buyer cools down before exit k
    p: np.ndarray  # P(advance) at exit k
    passed: np.ndarray  # the decision at exit k (only those up to ``last`` happen)
    last: np.ndarray  # the stage the deal ends in (lost there, or won after stage 4)
    won: np.ndarray
    closed: np.ndarray  # int64 seconds of the final decision (may be past the end)
    lost_reason: np.ndarray  # code into LOST_REASONS (meaningless for wins)
    typical_days: np.ndarray  # [deal, k]: stage k's duration in a typical won deal

    @property
    def reached(self) -> np.ndarray:
        """``[deal, k]``: the deal enters stage k (before or after the end of history)."""
        out = np.ones_like(self.passed)
        out[:, 1:] = np.cumprod(self.passed[:, :-1], axis=1).astype(bool)
        return out

    def stage_at(self, deal: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The true open stage of each deal at ``t`` (valid while the deal is open)."""
        s = np.zeros(deal.size, dtype=np.int64)
        for k in range(N_OPEN):
            s += self.exits[:, k][deal] <= t
        return s

    def probability(self, deal: np.ndarray, t: np.ndarray) -> np.ndarray:
        """P(won | the simulator's state at ``t``) for deals open at ``t``."""
        tail = np.ones((self.p.shape[0], N_OPEN + 1))
        tail[:, :N_OPEN] = np.cumprod(self.p[:, ::-1], axis=1)[:, ::-1]
        s = self.stage_at(deal, t)
        p = self.p[deal, s]
        cool = self.cooling[deal, s]
        yes = p * np.where(cool, COOLING_IF_PASSED, 1.0 - COOLING_IF_PASSED)
        no = (1.0 - p) * np.where(cool, COOLING_IF_LOST, 1.0 - COOLING_IF_LOST)
        mood_known = t >= self.cooling_from[deal, s]
        return np.where(mood_known, yes / (yes + no), 1.0) * np.where(
            mood_known, tail[deal, s + 1], tail[deal, s]
        )


def win_shift_time(config: SimConfig, clock: Clock) -> int | None:
    """Simulator seconds of the win-rate regime change (the start of a month), if any."""
    if config.win_shift_at is None:
        return None
    month = min(max(round(config.win_shift_at * clock.months), 1), clock.months - 1)
    return int(clock.month_starts[month])


def run_funnel(
    config: SimConfig, clock: Clock, org: Org, deals: Deals, plan: AnomalyPlan
) -> Funnel:
    """Draw every deal's path through the funnel (its own random stream)."""
    rng = rng_for(config.seed, "funnel")
    n = deals.size
    cycle = PRODUCT_CYCLE_DAYS[deals.product] / REFERENCE_CYCLE_DAYS * SEGMENT_CYCLE[deals.segment]
    if config.cycle_scale != 1.0:
        cycle = cycle * config.cycle_scale
    typical = STAGE_MEAN_DAYS[None, :] * cycle[:, None]
    mean = CYCLE_STRETCH * typical * np.exp(-INTENT_SPEED * deals.intent)[:, None]
    days = np.maximum(rng.gamma(STAGE_SHAPE, mean / STAGE_SHAPE), MIN_STAGE_DAYS)
    exits = deals.created[:, None] + np.floor(np.cumsum(days, axis=1) * DAY).astype(np.int64)

    # Quarter-end pull: some final decisions due in a quarter's first two months are held
    # until its last two weeks (the buyer waits for the quarter-end deal).
    final = exits[:, -1]
    month = clock.month_of(final)
    on_grid = (month >= 0) & (month + 3 < clock.month_starts.size)
    month = np.where(on_grid, month, 0)
    position = (clock.calendar_month[month] - 1) % 3
    pull = on_grid & (position < 2) & (rng.random(n) < QUARTER_PULL)
    quarter_end = clock.month_starts[np.minimum(month + 3 - position, clock.month_starts.size - 1)]
    held = quarter_end - np.floor(rng.random(n) * QUARTER_PULL_DAYS * DAY).astype(np.int64) - 1
    exits[:, -1] = np.where(pull, np.maximum(held, final), final)

    entries = np.empty_like(exits)
    entries[:, 0] = deals.created
    entries[:, 1:] = exits[:, :-1]
    duration_days = (exits - entries) / DAY
    window = np.minimum(COOLING_DAYS, COOLING_SHARE * duration_days)
    cooling_from = exits - np.floor(window * DAY).astype(np.int64)

    logit = (
        STAGE_BASE_LOGIT[None, :]
        + STAGE_INTENT[None, :] * deals.intent[:, None]
        + DEAL_TYPE_LOGIT[deals.deal_type][:, None]
    )
    shift_at = win_shift_time(config, clock)
    for k in range(N_OPEN):
        logit[:, k] += org.win_logit(deals.owner, exits[:, k].astype(np.float64))
        logit[:, k] += plan.exit_logit(k, deals.region, exits[:, k])
        if shift_at is not None:
            logit[:, k] += np.where(exits[:, k] >= shift_at, config.win_shift_logit, 0.0)
    p = sigmoid(logit)
    passed = rng.random((n, N_OPEN)) < p
    cooling = rng.random((n, N_OPEN)) < np.where(passed, COOLING_IF_PASSED, COOLING_IF_LOST)
    failed = ~passed
    lost = failed.any(axis=1)
    last = np.where(lost, np.argmax(failed, axis=1), N_OPEN - 1)
    closed = exits[np.arange(n), last]
    return Funnel(
        entries=entries,
        exits=exits,
        cooling_from=cooling_from,
        cooling=cooling,
        p=p,
        passed=passed,
        last=last,
        won=np.logical_not(lost),
        closed=closed,
        lost_reason=choose_rows(rng, LOST_REASON_BY_STAGE, last),
        typical_days=typical,
    )
