"""Detections against the simulator's labelled anomalies: precision, recall, false alarms.

Only the evaluation reads ``truth_anomalies``; no detector does.

A KPI detection *matches* a labelled anomaly when

- its metric family is the label's (``win_rate``, ``stage_conversion``, ``slip_rate``,
  ``pipeline_created``, ``activity_volume``; ``stage_advance__<stage>`` is the family
  ``stage_conversion``, ``pushed_share`` the family ``slip_rate``);
- its segment is the label's: the same region or rep; a label on a stage (``segment_type =
  stage``, a company-wide break) needs the company-level advance rate of that stage;
- its period overlaps the label's window ``[start, end)`` extended by :data:`TOLERANCE_DAYS`
  after the end (a break is seen when the period holding it closes; a weekly series can also
  see it the week it starts).

Precision is matched detections / KPI detections, recall is matched labels / labels, and
false alarms per month are the unmatched KPI detections / months scanned.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from features.kpis.periods import stage_slug
from features.kpis.series import SERIES_METRICS

__all__ = ["TOLERANCE_DAYS", "evaluate_detections", "family_of"]

TOLERANCE_DAYS = 31
"""Days after a labelled window's end that a detection may still start in."""

_FAMILIES = {m.name: m.family for m in SERIES_METRICS}
_SEGMENT_BY = {"region": "region", "owner": "owner_id", "team": "team", "product": "product"}


def family_of(metric: str) -> str:
    """The metric family of a KPI anomaly's metric (``stage_advance__demo`` -> stage_conversion)."""
    if metric.startswith("stage_advance__"):
        return "stage_conversion"
    return _FAMILIES.get(metric, metric)


def _matches(d: dict, t: dict) -> bool:
    if family_of(d["metric"]) != t["metric"]:
        return False
    if t["segment_type"] == "stage":
        if d["by"] != "" or d["metric"] != f"stage_advance__{stage_slug(t['segment_id'])}":
            return False
    elif (d["by"], d["segment"]) != (_SEGMENT_BY.get(t["segment_type"]), t["segment_id"]):
        return False
    late = t["end"] + timedelta(days=TOLERANCE_DAYS)
    return d["period_start"] < late and d["period_end"] > t["start"]


def evaluate_detections(
    detections: pl.DataFrame, truth: pl.DataFrame, *, since: date, until: date
) -> dict:
    """Precision, recall and false KPI alarms per month of ``detections`` against ``truth``.

    Parameters
    ----------
    detections : DataFrame
        :data:`models.anomalies.detections.ANOMALY_SCHEMA` rows; only ``kind == "kpi"`` ones
        are scored.
    truth : DataFrame
        The simulator's ``truth_anomalies``.
    since, until : date
        The months scanned (``until`` exclusive): labels outside are not expected.

    Returns
    -------
    dict
        ``precision, recall, false_alarms_per_month, detections, matched_detections, labels,
        found_labels, months`` and ``per_label``: each label with the ids that matched it,
        and ``false_alarms``: the unmatched detections (metric, segment, period, summary).
    """
    kpi = detections.filter(pl.col("kind") == "kpi").to_dicts()
    labels = truth.filter((pl.col("end") > since) & (pl.col("start") < until)).to_dicts()
    months = (until.year - since.year) * 12 + until.month - since.month
    matched: set[str] = set()
    per_label = []
    for t in labels:
        ids = [d["anomaly_id"] for d in kpi if _matches(d, t)]
        matched.update(ids)
        per_label.append(
            {
                "anomaly_id": t["anomaly_id"],
                "kind": t["kind"],
                "metric": t["metric"],
                "segment": f"{t['segment_type']} {t['segment_id']}",
                "start": t["start"].isoformat(),
                "end": t["end"].isoformat(),
                "found": bool(ids),
                "detections": ids,
            }
        )
    false = [d for d in kpi if d["anomaly_id"] not in matched]
    found = sum(1 for p in per_label if p["found"])
    return {
        "precision": len(matched) / len(kpi) if kpi else None,
        "recall": found / len(labels) if labels else None,
        "false_alarms_per_month": len(false) / months if months else None,
        "detections": len(kpi),
        "matched_detections": len(matched),
        "labels": len(labels),
        "found_labels": found,
        "months": months,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "tolerance_days": TOLERANCE_DAYS,
        "per_label": per_label,
        "false_alarms": [
            {
                "metric": d["metric"],
                "by": d["by"],
                "segment": d["segment"],
                "period_start": d["period_start"].isoformat(),
                "summary": d["summary"],
            }
            for d in false
        ],
    }
