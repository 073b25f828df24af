"""The simulator's one knob set: :class:`SimConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pipelines.simulate.world import ANOMALY_MIN_MONTHS, REP_LOAD_FOR_SCALING

__all__ = ["SimConfig"]


@dataclass(frozen=True)
class SimConfig:
    """What company to simulate.

    Parameters
    ----------
    n_deals : int or None
        Number of deals created over the history. ``None`` is the default company: about 30
        reps creating ~10-12 deals each per month. When given, the number of reps is scaled so
        each keeps a realistic load (1,000,000 deals over 36 months is ~2,800 reps).
    months : int
        Months of history; it covers ``[end - months, end)``.
    seed : int
        Random seed: the same config gives byte-identical files.
    anomalies : bool
        Inject the five labelled anomalies (``truth_anomalies``) in the second half.
    end : date
        First day after the history (must be the first of a month): the day of the "export".
    deals_per_rep_month : float
        A rep's deal load: sizes the org for a given ``n_deals`` and scales the creation
        rate of each rep (10 is today's company; fewer for enterprise, more for SMB).
    cycle_scale : float
        Multiplier of every stage duration (and so of the sales cycle and of the reps'
        close-date estimates): 5 is a 6-12 month enterprise cycle, 0.4 an SMB one.
    amount_scale : float
        Multiplier of every deal's initial amount.
    creation_decline : float
        Share by which the deal-creation rate falls, linearly, from the first month to the
        last month that creates deals (0: no decline).
    creation_stop_months : int
        No deal is created in the last this many months of the history.
    win_shift_at : float or None
        Where in the history (share of its months, month aligned) the win rate changes
        regime; ``None``: it never does.
    win_shift_logit : float
        Added to the advance logit of every stage exit from ``win_shift_at`` on.

    The profiles of :mod:`pipelines.simulate.profiles` are named sets of these knobs; their
    defaults are today's company, byte for byte.
    """

    n_deals: int | None = None
    months: int = 36
    seed: int = 7
    anomalies: bool = True
    end: date = date(2026, 11, 1)
    deals_per_rep_month: float = REP_LOAD_FOR_SCALING
    cycle_scale: float = 1.0
    amount_scale: float = 1.0
    creation_decline: float = 0.0
    creation_stop_months: int = 0
    win_shift_at: float | None = None
    win_shift_logit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("deals_per_rep_month", "cycle_scale", "amount_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.creation_decline < 1.0:
            raise ValueError(f"creation_decline must be in [0, 1), got {self.creation_decline}")
        if not 0 <= self.creation_stop_months < self.months:
            raise ValueError(
                f"creation_stop_months must be in [0, months), got {self.creation_stop_months}"
            )
        if self.win_shift_at is not None and not 0.0 < self.win_shift_at < 1.0:
            raise ValueError(f"win_shift_at must be in (0, 1), got {self.win_shift_at}")
        if self.n_deals is not None and self.n_deals < 1:
            raise ValueError(f"n_deals must be a positive number of deals, got {self.n_deals}")
        if self.months < 3:
            raise ValueError(f"months must be at least 3 (got {self.months}): pass --months 3+")
        if self.anomalies and self.months < ANOMALY_MIN_MONTHS:
            raise ValueError(
                f"anomalies need at least {ANOMALY_MIN_MONTHS} months of history, got months="
                f"{self.months}: simulate more months or turn them off (--no-anomalies)"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.end.day != 1:
            raise ValueError(
                f"end must be the first day of a month, got {self.end.isoformat()}: "
                f"use {self.end.replace(day=1).isoformat()}"
            )
