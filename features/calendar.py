"""Instants, months and dimensions as every layer reads them (one definition each).

An ``as_of`` enters dealcast at one of three doors — a CLI option, a job's entry function
(``pipelines``), an API query — and is turned into an :data:`Instant` there, once, by
:func:`instant`. Everything below (``features``, ``models``) takes that :data:`Instant` and
trusts it: no lower function re-normalises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import TypeAlias

from features.contract import DIMENSIONS

__all__ = ["Instant", "add_months", "check_dimensions", "instant", "month_of", "quarter_start"]

Instant: TypeAlias = datetime
"""A timezone-aware UTC datetime, as :func:`instant` returns it: the one form of an ``as_of``."""


def instant(value: date | datetime) -> Instant:
    """A bare date is 00:00 UTC; a naive datetime is UTC; an aware one is converted to UTC."""
    out = value if isinstance(value, datetime) else datetime.combine(value, time())
    return out.replace(tzinfo=UTC) if out.tzinfo is None else out.astimezone(UTC)


def month_of(moment: date | datetime) -> date:
    """The first day of the month holding ``moment``."""
    return date(moment.year, moment.month, 1)


def add_months(month: date, n: int) -> date:
    """The first day of the month ``n`` months after ``month``'s."""
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def quarter_start(month: date) -> date:
    """The first day of the quarter holding ``month``."""
    return date(month.year, (month.month - 1) // 3 * 3 + 1, 1)


def check_dimensions(by: str | Sequence[str] | None) -> list[str]:
    """``by`` as a list of distinct dimensions; ValueError naming any unknown one."""
    names = [by] if isinstance(by, str) else list(by or ())
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ValueError(
            f"unknown dimension {', '.join(map(repr, unknown))}: "
            f"group by one of {', '.join(DIMENSIONS)}"
        )
    return list(dict.fromkeys(names))
