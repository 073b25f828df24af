"""The simulator's one knob set: :class:`SimConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pipelines.simulate.world import ANOMALY_MIN_MONTHS

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
    """

    n_deals: int | None = None
    months: int = 36
    seed: int = 7
    anomalies: bool = True
    end: date = date(2026, 11, 1)

    def __post_init__(self) -> None:
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
