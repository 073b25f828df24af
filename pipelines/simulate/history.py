"""What the CRM records about each deal: its stage history, and its latest state.

Rows of a deal, in time order: created (Qualification), every stage entry (sometimes with a
re-estimated close date), detours back one stage (a regression and the return), amount
changes in Proposal and Negotiation, a slip-wave push (anomaly), the rep's pushes whenever
the expected close date passes while the deal is open, and the final Closed Won / Closed
Lost row. Only rows before the end of the history exist: open deals are cut there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulate.anomalies import AnomalyPlan
from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.demand import Deals
from pipelines.simulate.funnel import N_OPEN, NEVER, Funnel
from pipelines.simulate.org import Org
from pipelines.simulate.world import (
    AMOUNT_CHANGE_STAGES,
    AMOUNT_CUT_INTENT,
    AMOUNT_CUT_LOGIT,
    AMOUNT_CUT_RANGE,
    AMOUNT_RAISE_P,
    AMOUNT_RAISE_RANGE,
    ANOMALY_SLIP_DAYS,
    ANOMALY_SLIP_SHARE,
    DAY,
    ESTIMATE_LOG_SD,
    HABIT_ESTIMATE,
    HABIT_PUSH,
    MIN_PUSH_DAYS,
    PERCEPTION_LIFT,
    PERCEPTION_SD,
    PUSH_LAG_DAYS,
    PUSH_MEAN_DAYS,
    REESTIMATE_AT_STAGE_CHANGE,
    REGRESSION_INTENT,
    REGRESSION_LOGIT,
    REGRESSION_STAGES,
    rng_for,
    sigmoid,
)

__all__: list[str] = []  # internal to pipelines.simulate

WON, LOST = N_OPEN, N_OPEN + 1  # stage codes after the open ones (DEFAULT_PIPELINE order)
FORECAST_CATEGORIES: tuple[str, ...] = ("omitted", "pipeline", "best_case", "commit")
_KEEP = np.iinfo(np.int64).min  # "this row does not set the close date"

# Row kinds, in the order rows of one deal at the same second are written.
_CREATED, _ENTRY, _DETOUR, _RETURN, _AMOUNT, _SLIP, _PUSH, _CLOSE = range(8)


@dataclass(frozen=True)
class History:
    """Stage history rows sorted by deal and time; ``ecd`` in days since the start."""

    deal: np.ndarray
    t: np.ndarray
    stage: np.ndarray  # code: 0-4 open stages, WON, LOST
    amount: np.ndarray
    ecd: np.ndarray
    forecast: np.ndarray  # code into FORECAST_CATEGORIES

    def latest(self, n_deals: int) -> np.ndarray:
        """Row index of each deal's latest row (every deal has at least its first row)."""
        return np.cumsum(np.bincount(self.deal, minlength=n_deals)) - 1


@dataclass(frozen=True)
class _Rows:
    deal: np.ndarray
    t: np.ndarray
    kind: np.ndarray
    set_ecd: np.ndarray  # absolute close date (days) or _KEEP
    shift: np.ndarray  # days added to the close date

    @classmethod
    def of(
        cls,
        deal: np.ndarray,
        t: np.ndarray,
        kind: int,
        set_ecd: np.ndarray | None = None,
        shift: np.ndarray | None = None,
    ) -> _Rows:
        n = deal.size
        return cls(
            deal=deal,
            t=t,
            kind=np.full(n, kind, dtype=np.int8),
            set_ecd=np.full(n, _KEEP, dtype=np.int64) if set_ecd is None else set_ecd,
            shift=np.zeros(n, dtype=np.int64) if shift is None else shift,
        )

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__)
        )

    def where(self, mask: np.ndarray) -> _Rows:
        return _Rows(*(getattr(self, f)[mask] for f in _Rows.__dataclass_fields__))


def _estimate(
    rng: np.random.Generator, t: np.ndarray, days: np.ndarray, habit: np.ndarray
) -> np.ndarray:
    """A rep's expected close date (days): ``t`` + habit × typical remaining cycle × noise."""
    noise = np.exp(rng.normal(0.0, ESTIMATE_LOG_SD, t.size))
    return np.floor_divide(t + np.floor(HABIT_ESTIMATE[habit] * days * noise * DAY), DAY).astype(
        np.int64
    )


def build_history(
    config: SimConfig, clock: Clock, org: Org, deals: Deals, funnel: Funnel, plan: AnomalyPlan
) -> History:
    """Every stage-history row of every deal (its own random stream)."""
    rng = rng_for(config.seed, "history")
    n, horizon = deals.size, clock.horizon
    habit = org.habit[deals.owner]
    remaining = np.cumsum(funnel.typical_days[:, ::-1], axis=1)[:, ::-1]  # typical, from k on
    reached = funnel.reached
    duration = funnel.exits - funnel.entries
    ids = np.arange(n, dtype=np.int64)

    first = _estimate(rng, deals.created, remaining[:, 0], habit)
    parts = [_Rows.of(ids, deals.created, _CREATED, first)]
    for k in range(1, N_OPEN):
        at = np.nonzero(reached[:, k] & (funnel.entries[:, k] < horizon))[0]
        t = funnel.entries[at, k]
        new = _estimate(rng, t, remaining[at, k], habit[at])
        redo = rng.random(at.size) < REESTIMATE_AT_STAGE_CHANGE
        parts.append(_Rows.of(at, t, _ENTRY, np.where(redo, new, _KEEP)))

    # Detours: back one stage for a while, inside the stage (more likely at low intent).
    detour_from = np.full((n, N_OPEN), NEVER, dtype=np.int64)
    detour_to = np.zeros((n, N_OPEN), dtype=np.int64)
    for k in REGRESSION_STAGES:
        u = rng.random((3, n))
        hit = reached[:, k] & (u[0] < sigmoid(REGRESSION_LOGIT - REGRESSION_INTENT * deals.intent))
        start = funnel.entries[:, k] + np.floor((0.2 + 0.4 * u[1]) * duration[:, k]).astype(
            np.int64
        )
        stop = start + np.floor((0.1 + 0.2 * u[2]) * duration[:, k]).astype(np.int64)
        hit &= (stop > start) & (start < horizon)
        detour_from[hit, k], detour_to[hit, k] = start[hit], stop[hit]
        parts.append(_Rows.of(ids[hit], start[hit], _DETOUR))
        back = hit & (stop < horizon)
        parts.append(_Rows.of(ids[back], stop[back], _RETURN))

    # Amount changes: cuts (more likely at low intent) and the odd raise.
    change_at = np.full((n, len(AMOUNT_CHANGE_STAGES)), NEVER, dtype=np.int64)
    factor = np.ones((n, len(AMOUNT_CHANGE_STAGES)))
    for i, k in enumerate(AMOUNT_CHANGE_STAGES):
        u = rng.random((4, n))
        cut = u[0] < sigmoid(AMOUNT_CUT_LOGIT - AMOUNT_CUT_INTENT * deals.intent)
        raise_ = ~cut & (u[1] < AMOUNT_RAISE_P)
        lo, hi = (
            np.where(cut, AMOUNT_CUT_RANGE[0], AMOUNT_RAISE_RANGE[0]),
            np.where(cut, AMOUNT_CUT_RANGE[1], AMOUNT_RAISE_RANGE[1]),
        )
        t = funnel.entries[:, k] + np.floor((0.1 + 0.7 * u[2]) * duration[:, k]).astype(np.int64)
        hit = reached[:, k] & (cut | raise_) & (t < horizon) & (t > funnel.entries[:, k])
        change_at[hit, i] = t[hit]
        factor[hit, i] = lo[hit] + (hi[hit] - lo[hit]) * u[3, hit]
        parts.append(_Rows.of(ids[hit], t[hit], _AMOUNT))

    stop_at = np.minimum(funnel.closed, horizon)
    if plan.slip is not None:  # a wave of pushed close dates in one region and month
        w = plan.slip
        u = rng.random((3, n))
        t = w.start + np.floor(u[0] * (w.end - w.start)).astype(np.int64)
        hit = (deals.region == w.segment) & (deals.created <= t) & (t < stop_at)
        hit &= u[1] < ANOMALY_SLIP_SHARE
        shortest, longest = ANOMALY_SLIP_DAYS
        days = shortest + np.floor(u[2] * (longest - shortest + 1)).astype(np.int64)
        parts.append(_Rows.of(ids[hit], t[hit], _SLIP, shift=days[hit]))

    base = _Rows.concat(parts)
    base = base.where(np.lexsort((base.kind, base.t, base.deal)))
    ecd, pushes = _close_dates(rng, base, n, stop_at, HABIT_PUSH[habit])

    closed = np.nonzero(funnel.closed < horizon)[0]
    close_t = funnel.closed[closed]
    deal = np.concatenate([base.deal, pushes.deal, closed])
    t = np.concatenate([base.t, pushes.t, close_t])
    kind = np.concatenate([base.kind, pushes.kind, np.full(closed.size, _CLOSE, np.int8)])
    ecd = np.concatenate([ecd, pushes.set_ecd, np.floor_divide(close_t, DAY)])
    order = np.lexsort((kind, t, deal))
    deal, t, kind, ecd = deal[order], t[order], kind[order], ecd[order]

    is_close = kind == _CLOSE
    stage = funnel.stage_at(deal, t)
    stage = np.where(is_close, np.where(funnel.won[deal], WON, LOST), stage)
    detour = (t >= detour_from[deal, np.minimum(stage, N_OPEN - 1)]) & (
        t < detour_to[deal, np.minimum(stage, N_OPEN - 1)]
    )
    stage = stage - (detour & ~is_close)

    amount = deals.amount[deal].copy()
    for i in range(len(AMOUNT_CHANGE_STAGES)):
        amount *= np.where(t >= change_at[deal, i], factor[deal, i], 1.0)
    amount = np.round(amount, -2)

    perception = deals.intent + rng.normal(0.0, PERCEPTION_SD, n)
    forecast = _forecast(stage, ecd - np.floor_divide(t, DAY), habit[deal], perception[deal])
    forecast = np.where(is_close, np.where(stage == WON, 3, 0), forecast)
    return History(
        deal=deal,
        t=t,
        stage=stage.astype(np.int8),
        amount=amount,
        ecd=ecd,
        forecast=forecast.astype(np.int8),
    )


def _close_dates(
    rng: np.random.Generator, rows: _Rows, n: int, stop_at: np.ndarray, push_scale: np.ndarray
) -> tuple[np.ndarray, _Rows]:
    """Walk each deal's rows in order: the close date after each row, plus the pushes.

    Between two rows (and after the last one, until the deal closes or the history ends),
    whenever the expected close date passes the rep pushes it within ``PUSH_LAG_DAYS`` to a
    new date ``MIN_PUSH_DAYS`` or more ahead (shorter pushes for optimists). Vectorised over
    deals: one pass per row rank, and per push round within it.
    """
    counts = np.bincount(rows.deal, minlength=n)
    first = np.cumsum(counts) - counts
    ecd_after = np.empty(rows.t.size, dtype=np.int64)
    current = np.zeros(n, dtype=np.int64)
    push_deal, push_t, push_ecd = [], [], []
    for j in range(int(counts.max())):
        deals = np.nonzero(counts > j)[0]
        row = first[deals] + j
        setting = rows.set_ecd[row] != _KEEP
        current[deals[setting]] = rows.set_ecd[row[setting]]
        current[deals] += rows.shift[row]
        ecd_after[row] = current[deals]
        has_next = counts[deals] > j + 1
        until = np.where(has_next, rows.t[np.where(has_next, row + 1, row)], stop_at[deals])
        while deals.size:
            lag = np.floor(rng.random(deals.size) * PUSH_LAG_DAYS * DAY).astype(np.int64)
            at = (current[deals] + 1) * DAY + lag
            due = at < until
            deals, until, at = deals[due], until[due], at[due]
            if not deals.size:
                break
            length = rng.gamma(2.0, PUSH_MEAN_DAYS * push_scale[deals] / 2.0)
            new = at // DAY + np.maximum(MIN_PUSH_DAYS, np.round(length)).astype(np.int64)
            push_deal.append(deals)
            push_t.append(at)
            push_ecd.append(new)
            current[deals] = new
    pushes = _Rows.of(
        np.concatenate(push_deal) if push_deal else np.zeros(0, np.int64),
        np.concatenate(push_t) if push_t else np.zeros(0, np.int64),
        _PUSH,
        np.concatenate(push_ecd) if push_ecd else np.zeros(0, np.int64),
    )
    return ecd_after, pushes


def _forecast(
    stage: np.ndarray, days_to_close: np.ndarray, habit: np.ndarray, perception: np.ndarray
) -> np.ndarray:
    """The rep's forecast category (code into FORECAST_CATEGORIES) for open stages.

    Early stages are pipeline (omitted when the date is far out), Proposal best case,
    Negotiation commit. From Demo on, a date within 30 days lifts a deal one level, and so
    does the rep's (noisy) read of a keen buyer, while a cold read drops it one; optimists
    lift one more level, sandbaggers call one level lower.
    """
    level = np.array([0, 0, 0, 1, 2, 2, 2])[np.minimum(stage, 6)]
    late = stage >= 2
    read = (perception > PERCEPTION_LIFT).astype(np.int64) - (perception < -PERCEPTION_LIFT)
    level = level + late * (read + (days_to_close <= 30) + (habit == 1)) - (habit == 2)
    level = np.clip(level, 0, 2)
    level = np.where((stage <= 1) & (days_to_close > 120), -1, level)
    return level + 1
