"""The five labelled anomalies: where and when they strike, their effects, their truth rows.

They sit in month-aligned windows in the second half of the history, one after the other,
at fixed positions (their segments are drawn from the seed). Windows are half-open:
``[start, end)``, and ``truth_anomalies.end`` is the first day after the window.
``magnitude`` is the advance-logit shift (win_rate, stage_conversion), the share of the
usual activities still logged (activity_volume), the relative change in deals created
(pipeline_created) or the share of open deals pushed (slip_rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.org import Org
from pipelines.simulate.world import (
    ANOMALY_CREATED_FACTOR,
    ANOMALY_MIN_MONTHS,
    ANOMALY_SILENT_DAYS,
    ANOMALY_SILENT_KEEP,
    ANOMALY_SLIP_DAYS,
    ANOMALY_SLIP_SHARE,
    ANOMALY_STAGE,
    ANOMALY_STAGE_LOGIT,
    ANOMALY_WIN_LOGIT,
    DAY,
    REGIONS,
    rng_for,
)

__all__: list[str] = []  # internal to pipelines.simulate

TRUTH_ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "anomaly_id": pl.String(),
    "kind": pl.String(),
    "metric": pl.String(),
    "segment_type": pl.String(),
    "segment_id": pl.String(),
    "start": pl.Date(),
    "end": pl.Date(),
    "magnitude": pl.Float64(),
    "description": pl.String(),
}

# kind, metric, segment type, months reserved for the window
_LAYOUT: tuple[tuple[str, str, str, int], ...] = (
    ("win_rate_collapse", "win_rate", "region", 2),
    ("rep_silent", "activity_volume", "owner", 2),
    ("pipeline_drop", "pipeline_created", "region", 1),
    ("close_date_slip_wave", "slip_rate", "region", 1),
    ("stage_conversion_break", "stage_conversion", "stage", 2),
)
_NEEDED = sum(m for *_, m in _LAYOUT)
assert ANOMALY_MIN_MONTHS - ANOMALY_MIN_MONTHS // 2 - 1 == _NEEDED, "ANOMALY_MIN_MONTHS is stale"


@dataclass(frozen=True)
class Window:
    start: int  # simulator seconds
    end: int
    segment: int  # region, rep or stage code

    def hits(self, segment: np.ndarray | int, t: np.ndarray) -> np.ndarray:
        return (segment == self.segment) & (t >= self.start) & (t < self.end)


@dataclass(frozen=True)
class AnomalyPlan:
    """The windows of each anomaly (``None`` everywhere when anomalies are off)."""

    win_rate: Window | None = None
    silent: Window | None = None
    created: Window | None = None
    slip: Window | None = None
    stage: Window | None = None

    def exit_logit(self, stage: int, region: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Shift of the advance logit at the exit of ``stage`` at times ``t``."""
        out = np.zeros(t.shape)
        if self.win_rate is not None:
            out += np.where(self.win_rate.hits(region, t), ANOMALY_WIN_LOGIT, 0.0)
        if self.stage is not None and stage == self.stage.segment:
            out += np.where(self.stage.hits(stage, t), ANOMALY_STAGE_LOGIT, 0.0)
        return out

    def creation_factor(self, clock: Clock, org: Org) -> np.ndarray:
        """``[rep, month]`` multiplier of deal creation."""
        out = np.ones((org.size, clock.months))
        if self.created is not None:
            month = int(clock.month_of(np.array([self.created.start]))[0])
            out[org.region == self.created.segment, month] = ANOMALY_CREATED_FACTOR
        return out

    def activity_keep(self, owner: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Probability that an activity of ``owner`` at ``t`` is logged."""
        if self.silent is None:
            return np.ones(t.shape)
        return np.where(self.silent.hits(owner, t), ANOMALY_SILENT_KEEP, 1.0)

    def table(self, clock: Clock, org: Org) -> pl.DataFrame:
        """The ``truth_anomalies`` table (empty with its schema when anomalies are off)."""
        windows = (self.win_rate, self.silent, self.created, self.slip, self.stage)
        if any(w is None for w in windows):
            return pl.DataFrame(schema=TRUTH_ANOMALY_SCHEMA)
        owners = org.owner_ids()
        segments, descriptions, magnitudes = [], [], []
        for (kind, _, _, _), w in zip(_LAYOUT, windows, strict=True):
            assert w is not None
            if kind == "win_rate_collapse":
                seg = REGIONS[w.segment]
                mag = ANOMALY_WIN_LOGIT
                text = f"win rate collapses in region {seg}: advance logit {mag:+} at every exit"
            elif kind == "rep_silent":
                seg = owners[w.segment]
                mag = ANOMALY_SILENT_KEEP
                text = f"rep {seg} goes silent: {mag:.0%} of the usual activities are logged"
            elif kind == "pipeline_drop":
                seg = REGIONS[w.segment]
                mag = ANOMALY_CREATED_FACTOR - 1.0
                text = f"pipeline creation in region {seg} drops by {-mag:.0%} for a month"
            elif kind == "close_date_slip_wave":
                seg = REGIONS[w.segment]
                mag = ANOMALY_SLIP_SHARE
                lo, hi = ANOMALY_SLIP_DAYS
                text = (
                    f"{mag:.0%} of the open deals in region {seg} get their close date pushed "
                    f"{lo}-{hi} days"
                )
            else:
                seg = "Demo"
                mag = ANOMALY_STAGE_LOGIT
                text = f"Demo -> Proposal conversion breaks company-wide: advance logit {mag:+}"
            segments.append(seg)
            magnitudes.append(float(mag))
            descriptions.append(text)
        return pl.DataFrame(
            {
                "anomaly_id": [f"anomaly-{i + 1}" for i in range(len(_LAYOUT))],
                "kind": [k for k, *_ in _LAYOUT],
                "metric": [m for _, m, *_ in _LAYOUT],
                "segment_type": [s for _, _, s, _ in _LAYOUT],
                "segment_id": segments,
                "start": [clock.start + timedelta(days=w.start // DAY) for w in windows if w],
                "end": [clock.start + timedelta(days=w.end // DAY) for w in windows if w],
                "magnitude": magnitudes,
                "description": descriptions,
            },
            schema=TRUTH_ANOMALY_SCHEMA,
        )


def plan_anomalies(config: SimConfig, clock: Clock, org: Org) -> AnomalyPlan:
    """Place the anomalies of ``config`` (no effects at all when ``anomalies`` is off)."""
    if not config.anomalies:
        return AnomalyPlan()
    half = config.months // 2
    available = config.months - half - 1  # SimConfig checked it is at least _NEEDED
    gap = min(1, (available - _NEEDED) // (len(_LAYOUT) - 1))
    firsts, cursor = [], half + 1
    for *_, length in _LAYOUT:
        firsts.append(cursor)
        cursor += length + gap
    rng = rng_for(config.seed, "anomalies")
    ms = clock.month_starts

    def span(i: int) -> tuple[int, int]:
        return int(ms[firsts[i]]), int(ms[firsts[i] + _LAYOUT[i][3]])

    counts = np.bincount(org.region, minlength=len(REGIONS))
    ranked = [int(r) for r in np.argsort(-counts, kind="stable") if counts[r] > 0]
    # The silent rep: a tenured rep, outside the collapsing region when there is another.
    silent_start = span(1)[0]
    tenured = org.hired <= silent_start - 365 * DAY
    elsewhere = tenured & (org.region != ranked[0])
    pool = np.nonzero(elsewhere if elsewhere.any() else tenured)[0]
    silent_rep = int(rng.choice(pool)) if pool.size else int(np.argmin(org.hired))
    return AnomalyPlan(
        win_rate=Window(*span(0), segment=ranked[0]),
        silent=Window(silent_start, silent_start + ANOMALY_SILENT_DAYS * DAY, silent_rep),
        created=Window(*span(2), segment=ranked[1 % len(ranked)]),
        slip=Window(*span(3), segment=ranked[2 % len(ranked)]),
        stage=Window(*span(4), segment=ANOMALY_STAGE),
    )
