"""Company profiles: named, documented sets of :class:`SimConfig` knobs.

Each profile is a different company drawn by the same generator through its real knobs
(deal volume and rep load, stage durations, amounts, creation rate over time, a win-rate
regime change), never by filtering a simulated company afterwards, so the truth tables stay
those of the company written.

- ``default``: today's company (about 30 reps, ~10,900 deals over 36 months); byte-identical
  to ``SimConfig(seed=seed)``.
- ``small``: 600 deals over 24 months (5 reps): the size of a young team's CRM.
- ``enterprise``: 2,000 deals over 36 months from ~28 reps at 2 deals per rep-month, stage
  durations × 7 (won deals close in 3-16 months, median ~7-8), amounts × 3.
- ``smb``: 30,000 deals over 36 months at 28 deals per rep-month, stage durations × 0.4
  (won cycles of 2-4 weeks), amounts × 0.15.
- ``declining``: the deal-creation rate falls linearly by 80% (before growth) over the
  history, then stops for its last 3 months (no labelled anomalies: their windows could sit
  in the silent months).
- ``regime``: from the middle of the history every stage exit's advance logit drops by 0.38,
  which cuts the win rate by about a third; ``truth_anomalies`` gets a ``win_rate_regime``
  row for it (no other labelled anomalies, so the two halves compare cleanly).

>>> company_config("enterprise", seed=3).cycle_scale
7.0
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from pipelines.simulate.config import SimConfig

__all__ = ["COMPANY_PROFILES", "company_config"]

COMPANY_PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "small": {"n_deals": 600, "months": 24},
    "enterprise": {
        "n_deals": 2_000,
        "deals_per_rep_month": 2.0,
        "cycle_scale": 7.0,
        "amount_scale": 3.0,
    },
    "smb": {
        "n_deals": 30_000,
        "deals_per_rep_month": 28.0,
        "cycle_scale": 0.4,
        "amount_scale": 0.15,
    },
    "declining": {"creation_decline": 0.8, "creation_stop_months": 3, "anomalies": False},
    "regime": {"win_shift_at": 0.5, "win_shift_logit": -0.38, "anomalies": False},
}
"""Profile name -> the :class:`SimConfig` fields it sets (the others keep their defaults)."""


def company_config(
    name: str,
    seed: int = 7,
    *,
    n_deals: int | None = None,
    months: int | None = None,
    anomalies: bool | None = None,
    end: date | None = None,
) -> SimConfig:
    """The :class:`SimConfig` of company profile ``name``.

    ``n_deals``, ``months``, ``anomalies`` and ``end`` override the profile's (or the default)
    values when given: a smaller ``enterprise`` still has enterprise cycles and amounts.
    Raises ``ValueError`` for an unknown name.
    """
    if name not in COMPANY_PROFILES:
        raise ValueError(
            f"unknown company profile {name!r}: use one of {', '.join(COMPANY_PROFILES)}"
        )
    config = replace(SimConfig(seed=seed), **COMPANY_PROFILES[name])
    given = {"n_deals": n_deals, "months": months, "anomalies": anomalies, "end": end}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    return replace(config, **overrides) if overrides else config
