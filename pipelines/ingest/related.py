"""Checks of ``stage_history``, ``activities``, ``reps`` and ``targets``.

Quarantined, besides values that do not parse and empty required columns:

- stage_history: an unknown stage; a row for a deal that is not among the loaded deals
  ("history row for unknown deal"); a row before the deal's ``created_at`` or after its
  ``closed_at`` ("history out of order"); a negative amount; an unknown forecast category.
  Rows need not be sorted in the file: the stored table is sorted by deal and time.
- activities: a duplicate ``activity_id`` (first kept); a ``deal_id`` that is not among the
  loaded deals. ``type`` is lower-cased and mapped to call/email/meeting/demo/proposal/other
  (:data:`pipelines.ingest.parsing.ACTIVITY_TYPE_ALIASES`; ``Task`` -> other).
- reps: a duplicate ``owner_id`` (first kept).
- targets: a ``period`` that is not ``YYYY-MM`` (an ISO date counts as its month), a
  ``scope_type`` not in company/team/region/owner, an empty ``scope_id`` (except for
  company targets), a negative amount, the same (period, scope_type, scope_id) twice.
"""

from __future__ import annotations

import polars as pl

from features.contract import SCHEMAS, PipelineConfig
from pipelines.ingest.checks import Rows, checked_forecast_category, missing, ts_text
from pipelines.ingest.deals import stage_kind
from pipelines.ingest.parsing import normalise_activity_type
from pipelines.ingest.reading import ROW

__all__ = [
    "prepare_history",
    "finish_history",
    "check_activities",
    "check_reps",
    "check_targets",
]

_SCOPES = ("company", "team", "region", "owner")


def _required(rows: Rows, columns: tuple[str, ...]) -> None:
    present = rows.frame.columns
    for column in columns:
        rows.flag(column, pl.when(missing(column, present)).then(pl.lit(f"{column} is empty")))


def _duplicates(rows: Rows, keys: list[str], what: str, *, needed: int | None = None) -> None:
    """Flag every row whose key was seen on an earlier row (nulls in the last keys are equal)."""
    first = pl.col(ROW).min().over(keys)
    present = pl.all_horizontal(pl.col(keys[: needed or len(keys)]).is_not_null())
    rows.flag(
        keys[-1],
        pl.when(present & (pl.col(ROW) != first)).then(
            pl.format(f"duplicate {what}, first seen at row {{}}", first)
        ),
    )


def prepare_history(rows: Rows, pipeline: PipelineConfig, aliases: dict[str, str]) -> None:
    """Row-local checks of stage history (before the deals are known)."""
    rows.keep_raw("stage", "forecast_category")
    if aliases:
        rows.update(pl.col("stage").replace(aliases))
    _required(rows, ("deal_id", "changed_at", "stage"))
    rows.flag(
        "stage",
        pl.when(pl.col("stage").is_not_null() & stage_kind(pipeline).is_null()).then(
            pl.format("unknown stage '{}': not in the pipeline config", pl.col("stage"))
        ),
    )
    rows.flag("amount", pl.when(pl.col("amount") < 0).then(pl.lit("negative amount")))
    category = checked_forecast_category(rows)
    rows.update(category)


def finish_history(rows: Rows, deals: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Checks against the loaded deals; ``(clean rows sorted by deal and time, issues)``."""
    rows.join(
        deals.select(
            "deal_id",
            pl.col("created_at").alias("_created"),
            pl.col("closed_at").alias("_closed"),
            pl.lit(True).alias("_known"),
        ),
        "deal_id",
    )
    changed = pl.col("changed_at")
    rows.flag(
        "deal_id",
        pl.when(pl.col("deal_id").is_not_null() & pl.col("_known").is_null()).then(
            pl.format("history row for unknown deal '{}' (not among the loaded deals)", "deal_id")
        ),
    )
    rows.flag(
        "changed_at",
        pl.when(changed < pl.col("_created"))
        .then(
            pl.format(
                "history out of order: changed_at {} is before the deal's created_at {}",
                ts_text(changed),
                ts_text("_created"),
            )
        )
        .when(changed > pl.col("_closed"))
        .then(
            pl.format(
                "history out of order: changed_at {} is after the deal's closed_at {}",
                ts_text(changed),
                ts_text("_closed"),
            )
        ),
    )
    clean, issues = rows.split(list(SCHEMAS["stage_history"]))
    return clean.sort("deal_id", "changed_at", maintain_order=True), issues


def check_activities(rows: Rows, deals: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Required columns, unique ids, known deals, normalised types."""
    rows.keep_raw("type")
    _required(rows, ("activity_id", "occurred_at", "owner_id", "type"))
    _duplicates(rows, ["activity_id"], "activity_id")
    rows.update(normalise_activity_type(pl.col("type")).alias("type"))
    if rows.count(pl.col("deal_id").is_not_null()):
        rows.join(deals.select("deal_id", pl.lit(True).alias("_known")), "deal_id")
        rows.flag(
            "deal_id",
            pl.when(pl.col("deal_id").is_not_null() & pl.col("_known").is_null()).then(
                pl.format("activity for unknown deal '{}' (not among the loaded deals)", "deal_id")
            ),
        )
    return rows.split(list(SCHEMAS["activities"]))


def check_reps(rows: Rows) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A non-empty, unique ``owner_id`` per rep."""
    _required(rows, ("owner_id",))
    _duplicates(rows, ["owner_id"], "owner_id")
    return rows.split(list(SCHEMAS["reps"]))


def check_targets(rows: Rows) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``period`` YYYY-MM, ``scope_type`` in company/team/region/owner, ``amount`` >= 0."""
    period = pl.col("period").cast(pl.String)
    scope = pl.col("scope_type").cast(pl.String).str.to_lowercase()
    month = (
        pl.when(period.str.contains(r"^\d{4}-(0[1-9]|1[0-2])(-\d{2}([T ].*)?)?$"))
        .then(period.str.slice(0, 7))
        .otherwise(None)
    )
    rows.keep_raw("period", "scope_type")
    _required(rows, ("period", "scope_type", "amount"))
    rows.flag(
        "period",
        pl.when(period.is_not_null() & month.is_null()).then(
            pl.format("period '{}' is not a month like 2026-03 (YYYY-MM)", period)
        ),
    )
    rows.flag(
        "scope_type",
        pl.when(scope.is_not_null() & ~scope.is_in(_SCOPES)).then(
            pl.format("scope_type '{}' is not company, team, region or owner", "scope_type")
        ),
    )
    rows.flag(
        "scope_id",
        pl.when(pl.col("scope_id").is_null() & scope.is_in(_SCOPES) & (scope != "company")).then(
            pl.format("scope_id is empty (required for a {} target)", scope)
        ),
    )
    rows.flag("amount", pl.when(pl.col("amount") < 0).then(pl.lit("negative amount")))
    rows.update(month.alias("period"), scope.alias("scope_type"))
    _duplicates(
        rows,
        ["period", "scope_type", "scope_id"],
        "target (period, scope_type, scope_id)",
        needed=2,
    )
    return rows.split(list(SCHEMAS["targets"]))
