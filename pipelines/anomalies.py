"""The anomalies job: every detector over the store, one list by severity, one MLflow run.

The detectors (none reads the simulator's truth files):

- ``kpi`` — KPI series per segment against their own band (:mod:`models.anomalies.kpi`);
- ``rep`` — reps far from their peers (:mod:`models.anomalies.reps`);
- ``data_quality`` — data-quality breaks (:mod:`models.anomalies.data_quality`);
- ``deal`` — the deal risk flags of the open deals (:mod:`features.risk`).

``dealcast anomalies --evaluate`` runs the KPI detector over the second half of a simulated
history and scores it against ``truth_anomalies`` (:mod:`models.anomalies.evaluation`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from features.calendar import add_months, instant, month_of
from features.contract import DealHistory
from features.risk import risk_flags, risk_norms
from features.snapshots import data_now, snapshot_features
from features.store import Store
from models.anomalies.data_quality import data_quality
from models.anomalies.detections import ANOMALY_SCHEMA, KINDS, SEVERITIES, anomaly_frame
from models.anomalies.evaluation import evaluate_detections
from models.anomalies.kpi import DetectorConfig, detect_kpi_anomalies
from models.anomalies.reps import rep_outliers
from models.tracking import job_run
from pipelines.console import console, progress

__all__ = [
    "DETECTORS",
    "LOOKBACK_MONTHS",
    "deal_flag_anomalies",
    "detect_anomalies",
    "print_anomalies",
    "print_evaluation",
    "run_anomalies",
    "run_anomaly_evaluation",
]

DETECTORS: tuple[str, ...] = KINDS
"""The detectors of a run, in listing order."""

LOOKBACK_MONTHS = 6
"""Months of KPI periods a run judges by default (the ops view's recent history)."""

EVALUATION_WARMUP_MONTHS = 12
"""``--evaluate`` judges the second half of the history, and never its first this-many months:
the simulator places its anomalies in the second half, and a baseline needs a year behind it."""

_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}  # high first


def deal_flag_anomalies(flags: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """The deal risk flags (:func:`features.risk.risk_flags`) as ``deal`` anomalies.

    Score ``2 + 2 log2(severity)``: a flag just past its threshold (severity 1) is low, twice
    past it (2) medium, four times (4) high.
    """
    records = [
        {
            "kind": "deal",
            "metric": r["flag"],
            "by": "deal_id",
            "segment": r["deal_id"],
            "period_start": as_of,
            "score": min(2.0 + 2.0 * math.log2(max(float(r["severity"]), 1.0)), 12.0),
            "direction": "up",
            "summary": f"{r['deal_id']}: {r['evidence']}",
        }
        for r in flags.iter_rows(named=True)
    ]
    return anomaly_frame(records)


def _by_severity(frame: pl.DataFrame) -> pl.DataFrame:
    rank = pl.col("severity").replace_strict(_SEVERITY_RANK, return_dtype=pl.Int32)
    return frame.sort(rank, -pl.col("score"), pl.col("anomaly_id"))


def detect_anomalies(
    history: DealHistory,
    *,
    moment: datetime,
    since: date,
    flags: pl.DataFrame | None = None,
    config: DetectorConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Run every detector as of ``moment``; return the anomalies by severity and counts.

    ``flags``: the deal risk flags when the caller has them already (the publish job).
    """
    as_of = (
        moment.date() + timedelta(days=1)
        if moment.time() != datetime.min.time()
        else (moment.date())
    )
    kpi, counts = detect_kpi_anomalies(
        history, as_of=as_of, since=since, config=config, progress=on_progress
    )
    rep = rep_outliers(history, moment)
    quality = data_quality(history, moment)
    if flags is None:
        rows = snapshot_features(history, [moment]).collect()
        flags = risk_flags(rows, risk_norms(history, moment))
    deals = deal_flag_anomalies(flags, moment.date())
    frame = pl.concat(
        [f.select(list(ANOMALY_SCHEMA)) for f in (kpi, rep, quality, deals)], how="vertical"
    )
    per_kind = dict(frame.group_by("kind").len().iter_rows())
    out = {
        **{f"{kind}_anomalies": int(per_kind.get(kind, 0)) for kind in DETECTORS},
        "kpi_tests": counts["tests"],
        "kpi_findings": counts["findings"],
        **{f"severity_{s}": int(frame.filter(pl.col("severity") == s).height) for s in SEVERITIES},
    }
    return _by_severity(frame), out


def _default_since(moment: datetime, months: int) -> date:
    return add_months(month_of(moment), -months)


def run_anomalies(
    data: Path,
    *,
    as_of: date | datetime | None = None,
    since: date | None = None,
    config: DetectorConfig | None = None,
) -> dict[str, Any]:
    """Detect anomalies in the store as of ``as_of`` (default: the end of the data).

    KPI periods from ``since`` (default: :data:`LOOKBACK_MONTHS` months back) are judged.
    Logs one MLflow run ``anomalies`` with the counts per detector and severity.
    """
    history = Store(data).load()
    now = data_now(history)
    moment = instant(as_of) if as_of is not None else now
    if moment > now:
        raise ValueError(
            f"as_of {moment:%Y-%m-%d} is after the end of the data ({now:%Y-%m-%d}): detect "
            "anomalies as of a time the store has data for"
        )
    start = since or _default_since(moment, LOOKBACK_MONTHS)
    with progress(transient=True) as bar:
        task = bar.add_task("judging KPI series", total=None)
        frame, counts = detect_anomalies(
            history,
            moment=moment,
            since=start,
            config=config,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    params = {"as_of": moment.isoformat(), "since": start.isoformat(), "detectors": DETECTORS}
    with job_run(data, "anomalies", params=params) as run:
        run.metrics({k: float(v) for k, v in counts.items()})
        run.frame("anomalies", frame)
        run_id = run.run_id
    return {
        "as_of": moment,
        "since": start,
        "anomalies": frame,
        "counts": counts,
        "detectors": list(DETECTORS),
        "run_id": run_id,
    }


def run_anomaly_evaluation(
    data: Path, *, since: date | None = None, config: DetectorConfig | None = None
) -> dict[str, Any]:
    """Detect KPI anomalies over a simulated history and score them against its truth.

    Raises
    ------
    ValueError
        The store holds no ``truth_anomalies`` (only simulated data has them).
    """
    store = Store(data)
    truth_frame = store.truth("truth_anomalies")
    if truth_frame is None:
        raise ValueError(
            f"{data} has no truth_anomalies: --evaluate needs simulated data "
            "(dealcast simulate, then dealcast ingest)"
        )
    truth = truth_frame.collect()
    history = store.load()
    first = history.deals.select(pl.col("created_at").min()).collect().item()
    moment = data_now(history)
    until = add_months(month_of(moment), 1) if moment.day > 27 else month_of(moment)
    span = (until.year - first.year) * 12 + until.month - first.month
    start = since or add_months(month_of(first), max(EVALUATION_WARMUP_MONTHS, span // 2))
    with progress(transient=True) as bar:
        task = bar.add_task("judging KPI series", total=None)
        detections, counts = detect_kpi_anomalies(
            history,
            as_of=until,
            since=start,
            config=config,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    result = evaluate_detections(detections, truth, since=start, until=until)
    with job_run(data, "anomaly_evaluation", params={"since": start, "until": until}) as run:
        run.metrics(
            {
                k: float(result[k])
                for k in ("precision", "recall", "false_alarms_per_month")
                if result[k] is not None
            }
            | {"kpi_tests": float(counts["tests"]), "kpi_findings": float(counts["findings"])}
        )
        run.frame("detections", detections)
        result["run_id"] = run.run_id
    result["kpi_tests"] = counts["tests"]
    result["kpi_findings"] = counts["findings"]
    return result


def print_anomalies(result: dict[str, Any], fmt: str, *, kinds: list[str] | None = None) -> None:
    """Print a run's anomalies (``table`` or ``json``), by severity."""
    frame: pl.DataFrame = result["anomalies"]
    if kinds:
        frame = frame.filter(pl.col("kind").is_in(kinds))
    if fmt == "json":
        records = []
        for r in frame.to_dicts():
            r["drilldown"] = json.loads(r["drilldown"] or "[]")
            records.append(r)
        payload = {
            "as_of": result["as_of"].isoformat(),
            "since": result["since"].isoformat(),
            "detectors": result["detectors"],
            "counts": result["counts"],
            "run_id": result["run_id"],
            "anomalies": records,
        }
        console.print_json(json.dumps(payload, default=str))
        return
    from rich.table import Table

    counts = result["counts"]
    console.print(
        f"anomalies as of {result['as_of']:%Y-%m-%d %H:%M} UTC (KPI periods from "
        f"{result['since']:%Y-%m-%d}): "
        + ", ".join(f"{counts[f'{k}_anomalies']} {k}" for k in DETECTORS)
        + f"; MLflow run {result['run_id']}"
    )
    table = Table(show_lines=False)
    for column in ("severity", "kind", "metric", "segment", "period", "summary"):
        table.add_column(column, overflow="fold")
    shown = frame if kinds else frame.filter(pl.col("kind") != "deal")
    for r in shown.iter_rows(named=True):
        segment = f"{r['by']} {r['segment']}".strip() or "company"
        table.add_row(
            r["severity"], r["kind"], r["metric"], segment, str(r["period_start"]), r["summary"]
        )
    console.print(table)
    if not kinds and counts["deal_anomalies"]:
        console.print(
            f"{counts['deal_anomalies']} deal risk flags not listed: --kind deal lists them"
        )


def print_evaluation(result: dict[str, Any], fmt: str) -> None:
    """Print an evaluation against the truth (``table`` or ``json``)."""
    if fmt == "json":
        console.print_json(json.dumps(result, default=str))
        return
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    console.print(
        f"KPI anomalies {result['since']} to {result['until']} ({result['months']} months, "
        f"tolerance {result['tolerance_days']} days after a labelled window): "
        f"precision {pct(result['precision'])}, recall {pct(result['recall'])}, "
        f"false alarms per month {pct(result['false_alarms_per_month'])} "
        f"({result['detections']} detections from {result['kpi_findings']} significant "
        f"series-periods of {result['kpi_tests']} judged)"
    )
    table = Table()
    for column in ("label", "metric", "segment", "window", "found"):
        table.add_column(column)
    for p in result["per_label"]:
        table.add_row(
            p["kind"],
            p["metric"],
            p["segment"],
            f"{p['start']} .. {p['end']}",
            "yes" if p["found"] else "no",
        )
    console.print(table)
    for f in result["false_alarms"]:
        console.print(f"false alarm: {f['summary']}")
