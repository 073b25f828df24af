"""The simulator's calendar: int64 seconds since the start of the history, months, Mondays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from features.contract import TS
from pipelines.simulate.config import SimConfig
from pipelines.simulate.world import DAY

__all__: list[str] = []  # internal to pipelines.simulate

_EXTRA_MONTHS = 24  # the month grid runs past the end: decisions drawn upfront can fall there


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Clock:
    """Time of one simulation: ``0`` is ``start`` 00:00 UTC, ``horizon`` is ``end``.

    ``month_starts[i]`` is the first second of month ``i`` (month 0 starts the history,
    month ``months`` is the end); the grid continues ``_EXTRA_MONTHS`` past the end.
    """

    start: date
    end: date
    months: int
    month_starts: np.ndarray
    calendar_month: np.ndarray  # 1..12 for each grid month

    @classmethod
    def of(cls, config: SimConfig) -> Clock:
        start = _add_months(config.end, -config.months)
        firsts = [_add_months(start, i) for i in range(config.months + _EXTRA_MONTHS + 1)]
        return cls(
            start=start,
            end=config.end,
            months=config.months,
            month_starts=np.array([(d - start).days * DAY for d in firsts], dtype=np.int64),
            calendar_month=np.array([d.month for d in firsts], dtype=np.int64),
        )

    @property
    def horizon(self) -> int:
        """Seconds from the start to the end of the history."""
        return int(self.month_starts[self.months])

    @property
    def epoch_seconds(self) -> int:
        return (self.start - date(1970, 1, 1)).days * DAY

    def month_of(self, t: np.ndarray) -> np.ndarray:
        """Grid month index of each time (times before the start give -1)."""
        return np.searchsorted(self.month_starts, t, side="right") - 1

    def weekday(self, t: np.ndarray) -> np.ndarray:
        """Day of the week of each time, Monday 0."""
        return (self.start.weekday() + np.floor_divide(t, DAY)) % 7

    def mondays(self) -> np.ndarray:
        """Every Monday 00:00 UTC in ``[start, end)``."""
        first = (7 - self.start.weekday()) % 7
        return np.arange(first * DAY, self.horizon, 7 * DAY, dtype=np.int64)

    def timestamps(self, t: np.ndarray, name: str) -> pl.Series:
        """Simulator seconds as a UTC ``Datetime("us")`` series."""
        us = (np.asarray(t, dtype=np.int64) + self.epoch_seconds) * 1_000_000
        return pl.Series(name, us).cast(TS)

    def dates(self, days: np.ndarray, name: str) -> pl.Series:
        """Days since the start as a ``Date`` series."""
        offset = (self.start - date(1970, 1, 1)).days
        return pl.Series(name, (np.asarray(days, dtype=np.int64) + offset).astype(np.int32)).cast(
            pl.Date
        )

    def month_label(self, index: int) -> str:
        """``YYYY-MM`` of a grid month."""
        day = _add_months(self.start, index)
        return f"{day.year:04d}-{day.month:02d}"

    def date_of_month(self, index: int) -> date:
        return _add_months(self.start, index)
