"""Hand-built kept forecasts (rows of ``features.forecast_log.KEPT_SCHEMA``) for tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

from features.forecast_log import KEPT_SCHEMA


def row(
    target: date,
    method: str,
    p50: float,
    p10: float | None = None,
    p90: float | None = None,
    *,
    period: str = "month",
    by: str = "",
    segment: str = "total",
) -> dict[str, object]:
    """One forecast row; ``mean`` is ``p50`` and the context columns are null."""
    return {
        "period": period,
        "target_month": target,
        "by": by,
        "segment": segment,
        "method": method,
        "mean": p50,
        "p10": p10,
        "p50": p50,
        "p90": p90,
    }


def kept_frame(
    rows: list[dict[str, object]],
    *,
    forecast_id: str = "F1",
    as_of: datetime = datetime(2026, 9, 10, tzinfo=UTC),
    model_version: str | None = "3",
) -> pl.DataFrame:
    """The rows of one forecast made at ``as_of`` (created a minute later)."""
    origin = date(as_of.year, as_of.month, 1)
    full = []
    for r in rows:
        target = r["target_month"]
        assert isinstance(target, date)
        full.append(
            {
                "forecast_id": forecast_id,
                "created_at": as_of + timedelta(minutes=1),
                "as_of": as_of,
                "origin_month": origin,
                "horizon": (target.year - origin.year) * 12 + target.month - origin.month,
                "pipeline_mean": None,
                "newbiz_mean": None,
                "booked_to_date": None,
                "target": None,
                "p_reach_target": None,
                "model_version": model_version if r["method"] == "dealcast" else None,
                **r,
            }
        )
    return pl.DataFrame(full, schema=KEPT_SCHEMA)
