"""Hand-written histories with a real stage history, for exact weighted-pipeline checks."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from features.contract import DEFAULT_PIPELINE, DealHistory, PipelineConfig

WON, LOST = "Closed Won", "Closed Lost"
DealRow = tuple[str, datetime, str, datetime | None, float, date | None, str]
"""``deal_id, created_at, stage, closed_at, amount, expected_close_date, region``."""


def ts(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def stage_row(
    deal: str, at: datetime, stage: str, amount: float | None, close: date | None
) -> dict[str, object]:
    """One stage-history row."""
    return {
        "deal_id": deal,
        "changed_at": at,
        "stage": stage,
        "amount": amount,
        "expected_close_date": close,
    }


def tiny_history(
    deals: list[DealRow],
    stages: list[dict[str, object]],
    pipeline: PipelineConfig = DEFAULT_PIPELINE,
) -> DealHistory:
    """A ``DealHistory`` of ``deals`` (one owner, ``o1``) and their stage history."""
    frame = pl.DataFrame(
        deals,
        schema=[
            "deal_id",
            "created_at",
            "stage",
            "closed_at",
            "amount",
            "expected_close_date",
            "region",
        ],
        orient="row",
    ).with_columns(pl.lit("o1").alias("owner_id"))
    return DealHistory.from_frames(
        deals=frame, stage_history=pl.DataFrame(stages), pipeline=pipeline
    )
