"""What every anomaly detector returns: one row per detection, in one schema.

The detectors (:mod:`models.anomalies.kpi`, :mod:`models.anomalies.reps`,
:mod:`models.anomalies.data_quality`, and the deal risk flags of :mod:`features.risk`) each build
plain records and pass them to :func:`anomaly_frame`, which checks them, gives each a stable
id and a severity, and returns the :data:`ANOMALY_SCHEMA` frame the pipeline publishes for
``/v1/anomalies``.

The score is on one scale for every detector: the two-sided normal deviate of the evidence
(``|z|``; :func:`z_of_p` turns a p-value into one), so a score of 3 is "as surprising as a
3-sigma deviation". Severity is read off it (:func:`severity_of`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import polars as pl
from scipy.stats import norm

__all__ = [
    "ANOMALY_SCHEMA",
    "KINDS",
    "SEVERITIES",
    "anomaly_frame",
    "anomaly_id",
    "severity_of",
    "z_of_p",
]

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "anomaly_id": pl.String(),
    "kind": pl.String(),  # kpi / deal / rep / data_quality
    "metric": pl.String(),
    "by": pl.String(),  # "" for the company
    "segment": pl.String(),  # "" for the company
    "period_start": pl.Date(),
    "period_end": pl.Date(),  # exclusive
    "observed": pl.Float64(),
    "expected": pl.Float64(),
    "band_low": pl.Float64(),
    "band_high": pl.Float64(),
    "score": pl.Float64(),
    "severity": pl.String(),  # low / medium / high
    "direction": pl.String(),  # up / down
    "summary": pl.String(),
    "drilldown": pl.String(),  # JSON list of {what, share, detail}
}
"""The ``anomalies`` table: one row per detection, whatever detector found it."""

KINDS: tuple[str, ...] = ("kpi", "rep", "data_quality", "deal")
"""Detector kinds, in the order they are listed."""

SEVERITIES: dict[str, float] = {"high": 6.0, "medium": 4.0, "low": 0.0}
"""Severity -> the lowest score that earns it."""

_REQUIRED = ("kind", "metric", "by", "segment", "period_start", "score", "direction", "summary")
_MAX_SCORE = 38.0  # norm.isf underflows past p ~ 1e-300: a cap keeps scores finite


def z_of_p(p: float) -> float:
    """The two-sided normal deviate of a p-value: 0.05 -> 1.96, 1e-6 -> 4.9 (capped at 38)."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be in [0, 1], got {p}")
    if p <= 0.0:
        return _MAX_SCORE
    return float(min(norm.isf(p / 2.0), _MAX_SCORE))


def severity_of(score: float) -> str:
    """``high`` from a score of 6, ``medium`` from 4, ``low`` below."""
    for name, floor in SEVERITIES.items():
        if score >= floor:
            return name
    return "low"


def anomaly_id(kind: str, metric: str, by: str, segment: str, period_start: date) -> str:
    """A stable id: the same detection on the same data gets the same id in every run."""
    key = f"{kind}|{metric}|{by}|{segment}|{period_start.isoformat()}"
    return "an-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def anomaly_frame(records: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Check detector records and return them as an :data:`ANOMALY_SCHEMA` frame.

    Parameters
    ----------
    records : mappings
        Each with ``kind, metric, by, segment, period_start, score, direction, summary`` and
        optionally ``period_end`` (default: ``period_start``), ``observed, expected, band_low,
        band_high`` and ``drilldown`` (a list of ``{what, share, detail}`` dicts).

    Returns
    -------
    DataFrame
        :data:`ANOMALY_SCHEMA`, sorted by score (highest first), then id.

    Raises
    ------
    ValueError
        A record misses a required key, has an unknown kind or direction, or a negative or
        non-finite score.
    """
    rows = []
    for i, record in enumerate(records):
        missing = [k for k in _REQUIRED if record.get(k) is None]
        if missing:
            raise ValueError(f"anomaly record {i} misses {missing}: {dict(record)}")
        if record["kind"] not in KINDS:
            raise ValueError(f"anomaly record {i}: kind {record['kind']!r} is not one of {KINDS}")
        if record["direction"] not in ("up", "down"):
            raise ValueError(f"anomaly record {i}: direction must be 'up' or 'down'")
        score = float(record["score"])
        if not math.isfinite(score) or score < 0:
            raise ValueError(f"anomaly record {i}: score must be finite and >= 0, got {score}")
        row = {name: record.get(name) for name in ANOMALY_SCHEMA}
        row["period_end"] = record.get("period_end") or record["period_start"]
        row["anomaly_id"] = anomaly_id(
            record["kind"],
            record["metric"],
            record["by"],
            record["segment"],
            record["period_start"],
        )
        row["severity"] = severity_of(score)
        row["score"] = round(score, 3)
        row["drilldown"] = json.dumps(list(record.get("drilldown") or []), default=str)
        rows.append(row)
    frame = pl.DataFrame(rows, schema=ANOMALY_SCHEMA, orient="row") if rows else None
    if frame is None:
        return pl.DataFrame(schema=ANOMALY_SCHEMA)
    return frame.sort(["score", "anomaly_id"], descending=[True, False])
