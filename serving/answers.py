"""The API's answers: pure functions of one publication, a principal's scope and the query.

Each returns the JSON bytes of a response model. Routes memoise them per publication
(``Published.memo``), so a repeated question costs a dictionary lookup, and a new publication
starts from an empty memo: answers never mix two publications.
"""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any

import polars as pl

from models.forecast.accuracy import accuracy_by_month, accuracy_summary
from serving.results import Published
from serving.schemas import (
    AccuracyPublic,
    AnomaliesPublic,
    DealPublic,
    DealScorePublic,
    ForecastsPublic,
    KpisPublic,
    PrioritiesPublic,
    WeightedPipelinePublic,
)

__all__ = [
    "accuracy",
    "anomalies",
    "deal",
    "forecasts",
    "kpis",
    "priorities",
    "weighted",
]

SEVERITY_ORDER = {"low": 0, "medium": 1, "high": 2}
_KEYS = ("period_start", "period", "by", "segment")


def _provenance(pub: Published) -> dict[str, Any]:
    return {"version": pub.version, "as_of": pub.as_of, "published_at": pub.published_at}


def _unit(frame: pl.DataFrame, by: str | None, segment: str | None) -> pl.DataFrame:
    """Rows of one ``by`` ("" = the company), optionally of one segment only."""
    rows = frame.filter(pl.col("by") == (by or ""))
    return rows.filter(pl.col("segment") == segment) if segment is not None else rows


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }


def forecasts(pub: Published, *, months: int, by: str | None, segment: str | None) -> bytes:
    rows = _unit(pub["forecasts"], by, segment).filter(
        (pl.col("period") == "quarter") | (pl.col("horizon") < months)
    )
    actuals = _unit(pub["actuals"], by, segment).sort("segment", "month")
    return (
        ForecastsPublic(
            **_provenance(pub),
            months=months,
            by=by,
            model_version=str(pub.manifest.get("model_version", "")),
            published=list(pub.manifest.get("published_reasons") or []),
            league=list((pub.manifest.get("published") or {}).get("league") or []),
            notes=list(pub.manifest.get("notes") or []),
            forecasts=[_clean(r) for r in rows.to_dicts()],  # type: ignore[misc]
            actuals=[_clean(r) for r in actuals.to_dicts()],  # type: ignore[misc]
        )
        .model_dump_json()
        .encode()
    )


def weighted(
    pub: Published, *, by: str | None, segment: str | None, close_month: date | None
) -> bytes:
    rows = _unit(pub["weighted"], by, segment)
    if close_month is not None:
        rows = rows.filter(pl.col("close_month") == close_month.replace(day=1))
    return (
        WeightedPipelinePublic(
            **_provenance(pub),
            by=by,
            rows=[_clean(r) for r in rows.to_dicts()],  # type: ignore[misc]
        )
        .model_dump_json()
        .encode()
    )


def _deal_details(pub: Published) -> dict[str, DealScorePublic]:
    """Every published deal's score with its reasons and flags (built once per publication)."""

    def build() -> dict[str, DealScorePublic]:
        reasons = dict(
            pub["reasons"]
            .sort("deal_id", "order")
            .group_by("deal_id", maintain_order=True)
            .agg(pl.struct("text", "effect").alias("items"))
            .iter_rows()
        )
        flags = pub["flags"]
        flags = dict(
            flags.sort("deal_id", "severity", descending=[False, True])
            .group_by("deal_id", maintain_order=True)
            .agg(pl.struct("flag", "evidence", "severity").alias("items"))
            .iter_rows()
            if flags.height
            else []
        )
        out = {}
        for r in pub["scores"].iter_rows(named=True):
            record = _clean({k: r.get(k) for k in DealScorePublic.model_fields})
            record["reasons"] = reasons.get(r["deal_id"], [])
            record["flags"] = flags.get(r["deal_id"], [])
            out[r["deal_id"]] = DealScorePublic.model_validate(record)
        return out

    return pub.memo("deal_details", build)  # type: ignore[no-any-return]


def priorities(pub: Published, *, owner: str | None, limit: int) -> bytes:
    details = _deal_details(pub)
    scores = pub["scores"]
    if owner is not None:
        ranked = scores.filter(pl.col("owner_id") == owner).sort("rank")
    else:
        ranked = scores.sort("priority", descending=True)
    ids = ranked["deal_id"].to_list() if ranked.height else []
    return (
        PrioritiesPublic(
            **_provenance(pub),
            owner=owner,
            total=len(ids),
            deals=[details[i] for i in ids[:limit]],
        )
        .model_dump_json()
        .encode()
    )


def deal(pub: Published, deal_id: str) -> tuple[str, bytes] | None:
    """(owner, JSON) of one published deal, or None when it is not among them."""
    score = _deal_details(pub).get(deal_id)
    if score is None:
        return None
    history = pub["stage_history"].filter(pl.col("deal_id") == deal_id).drop("deal_id")
    body = DealPublic(
        **_provenance(pub),
        deal=score,
        stage_history=[_clean(r) for r in history.to_dicts()],  # type: ignore[misc]
    )
    return score.owner_id, body.model_dump_json().encode()


def accuracy(
    pub: Published,
    *,
    by: str | None,
    segment: str | None,
    horizon: int | None,
    start: date | None,
    end: date | None,
) -> bytes:
    rows = _unit(pub["accuracy"], by, segment) if pub["accuracy"].height else pub["accuracy"]
    if horizon is not None:
        rows = rows.filter(pl.col("horizon") == horizon)
    if start is not None:
        rows = rows.filter(pl.col("target_month") >= start.replace(day=1))
    if end is not None:
        rows = rows.filter(pl.col("target_month") <= end)
    keys = ("period", "horizon", *(("segment",) if by else ()), "method")
    summary = accuracy_summary(rows, by=keys) if rows.height else pl.DataFrame()
    history = accuracy_by_month(rows, by=by or "") if rows.height else pl.DataFrame()
    no_segment = {"segment": None}
    return (
        AccuracyPublic(
            **_provenance(pub),
            by=by,
            horizon=horizon,
            summary=[_clean({**no_segment, **r}) for r in summary.to_dicts()],  # type: ignore[misc]
            by_month=[_clean({**no_segment, **r}) for r in history.to_dicts()],  # type: ignore[misc]
        )
        .model_dump_json()
        .encode()
    )


def anomalies(
    pub: Published,
    *,
    since: date | None,
    severity: str | None,
    owner: str | None,
    kinds: tuple[str, ...] | None = None,
) -> bytes:
    rows = pub["anomalies"]
    if kinds:
        rows = rows.filter(pl.col("kind").is_in(list(kinds)))
    if since is not None:
        rows = rows.filter(pl.col("period_start") >= since)
    if severity is not None:
        wanted = [s for s, rank in SEVERITY_ORDER.items() if rank >= SEVERITY_ORDER[severity]]
        rows = rows.filter(pl.col("severity").is_in(wanted))
    if owner is not None:
        rows = rows.filter((pl.col("by") == "owner_id") & (pl.col("segment") == owner))
    records = []
    for r in rows.sort("score", descending=True).to_dicts():
        r["drilldown"] = json.loads(r["drilldown"] or "[]")
        records.append(_clean(r))
    return (
        AnomaliesPublic(
            **_provenance(pub),
            detectors=list(pub.manifest.get("detectors", [])),
            anomalies=records,  # type: ignore[arg-type]
        )
        .model_dump_json()
        .encode()
    )


def kpis(
    pub: Published,
    *,
    period: str,
    by: str | None,
    segment: str | None,
    start: date | None,
    end: date | None,
) -> bytes:
    table = pub[f"kpis_{period}"]
    rows = _unit(table, by, segment)
    if start is not None:
        rows = rows.filter(pl.col("period_start") >= start)
    if end is not None:
        rows = rows.filter(pl.col("period_start") <= end)
    columns = [c for c in table.columns if c not in _KEYS]
    rows = rows.with_columns(pl.col("period_start").cast(pl.String))
    return (
        KpisPublic(
            **_provenance(pub),
            period=period,  # type: ignore[arg-type]
            by=by,
            columns=columns,
            rows=[_clean(r) for r in rows.to_dicts()],
        )
        .model_dump_json()
        .encode()
    )
