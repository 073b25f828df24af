"""The sales organisation: reps in teams and regions, their hire dates, skill and date habit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.world import (
    DAY,
    DEFAULT_REPS,
    HABIT_SHARE,
    HIRED_DURING_SHARE,
    RAMP_CREATION_FLOOR,
    RAMP_DAYS,
    RAMP_WIN_LOGIT,
    REGION_SHARE,
    REGIONS,
    SKILL_SD,
    TEAM_SIZE,
    VOLUME_SD,
    choose,
    rng_for,
)

__all__: list[str] = []  # internal to pipelines.simulate

_FIRST = (
    "Ada Ben Chloe Dev Elena Farid Grace Hugo Ines Jonas Kofi Lena Mateo Nadia Omar Priya "
    "Quinn Rosa Sven Tara Umar Vera Wei Ximena Yusuf Zoe"
).split()
_LAST = (
    "Adams Bauer Costa Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Lopez Moreau "
    "Nakamura Okafor Patel Rossi Silva Tanaka Usman Varga Weber Xu Yilmaz Zhang"
).split()


@dataclass(frozen=True)
class Org:
    """One entry per rep (index = rep code); ``hired`` in simulator seconds (may be < 0)."""

    team: np.ndarray
    region: np.ndarray
    hired: np.ndarray
    skill: np.ndarray
    habit: np.ndarray
    volume: np.ndarray
    names: list[str]

    @property
    def size(self) -> int:
        return int(self.team.size)

    def owner_ids(self) -> pl.Series:
        width = max(4, len(str(self.size)))
        return pl.Series("owner_id", [f"rep-{i + 1:0{width}d}" for i in range(self.size)])

    def team_ids(self) -> list[str]:
        """Team names, ``<region>-<nn>`` numbered within the region."""
        n_teams = int(self.team.max()) + 1
        team_region = np.zeros(n_teams, dtype=np.int64)
        team_region[self.team] = self.region
        out, seen = [], dict.fromkeys(range(len(REGIONS)), 0)
        for t in range(n_teams):
            seen[int(team_region[t])] += 1
            out.append(f"{REGIONS[int(team_region[t])]}-{seen[int(team_region[t])]:02d}")
        return out

    def ramp(self, rep: np.ndarray, t: np.ndarray) -> np.ndarray:
        """0 at hire, 1 once ramped (``RAMP_DAYS`` later)."""
        return np.clip((t - self.hired[rep]) / (RAMP_DAYS * DAY), 0.0, 1.0)

    def creation_factor(self, rep: np.ndarray, t: np.ndarray) -> np.ndarray:
        return RAMP_CREATION_FLOOR + (1.0 - RAMP_CREATION_FLOOR) * self.ramp(rep, t)

    def win_logit(self, rep: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Skill plus the ramp penalty of a new hire, at time ``t``."""
        return self.skill[rep] + RAMP_WIN_LOGIT * (1.0 - self.ramp(rep, t))

    def table(self, clock: Clock) -> pl.DataFrame:
        """The ``reps`` table."""
        teams = self.team_ids()
        width = max(2, len(str(len(teams))))
        return pl.DataFrame(
            {
                "owner_id": self.owner_ids(),
                "name": self.names,
                "team": [teams[t] for t in self.team],
                "manager_id": [f"mgr-{t + 1:0{width}d}" for t in self.team],
                "region": [REGIONS[r] for r in self.region],
                "hired_at": clock.dates(np.floor_divide(self.hired, DAY), "hired_at"),
            }
        )


def _team_regions(n_teams: int) -> np.ndarray:
    """The region of each team: one team per region first (when there are enough), then
    each next team to the region with the highest share per team it already has (D'Hondt),
    numbered region by region."""
    counts = np.zeros(len(REGIONS), dtype=np.int64)
    for _ in range(n_teams):
        free = counts == 0
        if n_teams >= len(REGIONS) and free.any():
            counts[np.argmax(free)] += 1
        else:
            counts[np.argmax(REGION_SHARE / (counts + 1))] += 1
    return np.repeat(np.arange(len(REGIONS)), counts)


def rep_count(config: SimConfig) -> int:
    """30 reps by default; otherwise enough reps for ``deals_per_rep_month`` (~10) each."""
    if config.n_deals is None:
        return DEFAULT_REPS
    return max(5, round(config.n_deals / (config.months * config.deals_per_rep_month)))


def build_org(config: SimConfig, clock: Clock) -> Org:
    """Draw the organisation of ``config`` (its own random stream)."""
    rng = rng_for(config.seed, "org")
    n = rep_count(config)
    n_teams = max(1, math.floor(n / TEAM_SIZE + 0.5))
    team = (np.arange(n) * n_teams) // n
    team_region = _team_regions(n_teams)
    during = np.zeros(n, dtype=bool)
    during[rng.permutation(n)[: round(HIRED_DURING_SHARE * n)]] = True
    before = -rng.uniform(30, 6 * 365, n) * DAY
    inside = rng.uniform(0, 0.9, n) * clock.horizon
    hired = np.where(during, inside, before).astype(np.int64)
    hired = np.floor_divide(hired, DAY) * DAY  # hired on a day, 00:00
    names = [
        f"{_FIRST[i]} {_LAST[j]}"
        for i, j in zip(
            rng.integers(0, len(_FIRST), n), rng.integers(0, len(_LAST), n), strict=True
        )
    ]
    return Org(
        team=team,
        region=team_region[team].astype(np.int64),
        hired=hired,
        skill=rng.normal(0.0, SKILL_SD, n),
        habit=choose(rng, HABIT_SHARE, n),
        volume=np.exp(rng.normal(-(VOLUME_SD**2) / 2, VOLUME_SD, n)),
        names=names,
    )
