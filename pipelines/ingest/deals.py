"""Checks of the ``deals`` table.

Quarantined (one quarantine line per problem, the row once):

- a value that does not parse, or holds bytes that are not UTF-8;
- an empty ``deal_id``, ``created_at``, ``owner_id`` or ``stage``;
- a negative ``amount``; a ``crm_probability`` outside 0..1;
- a ``deal_type`` or ``forecast_category`` that is not one of the contract's values;
- an unknown stage (also one warning for all of them, with the TOML to add them);
- a won/lost deal without a close date; ``closed_at`` before ``created_at``;
- a duplicate ``deal_id``: the first row is kept, the others are quarantined;
- Salesforce only: ``IsClosed`` / ``IsWon`` contradicting the stage's kind, ``IsDeleted``.

Kept, with a warning giving the count:

- a null ``amount`` (the contract allows it but flags it);
- an open deal without ``expected_close_date``;
- an open deal with a ``closed_at``: the value cannot be a close (the deal is open), so it is
  read as the expected close date when that is empty (what a CRM's single "Close Date"
  means on an open deal) and dropped otherwise;
- a closed deal whose ``closed_at`` is a bare date (00:00 UTC) earlier than the moment its
  stage history records it entering its final stage: ``closed_at`` becomes that moment, so
  no point-in-time view sees the deal closed before the CRM recorded it (Salesforce's
  ``CloseDate`` is a date; its history has the time of the change).
"""

from __future__ import annotations

import polars as pl

from features.contract import SCHEMAS, PipelineConfig
from pipelines.ingest.checks import (
    Rows,
    checked_forecast_category,
    missing,
    plural,
    raw_of,
    ts_text,
)
from pipelines.ingest.mapping import CLOSE_DATE
from pipelines.ingest.parsing import normalise_deal_type, parse_bool
from pipelines.ingest.reading import ROW

__all__ = ["prepare_deals", "finish_deals", "stage_kind", "close_entries"]

_CLOSED = ("won", "lost")


def stage_kind(pipeline: PipelineConfig) -> pl.Expr:
    """The kind (open/won/lost) of ``stage`` by the pipeline config; null when unknown."""
    kinds = {s.name: s.kind for s in pipeline.stages}
    return pl.col("stage").replace_strict(kinds, default=None, return_dtype=pl.String)


def prepare_deals(rows: Rows, pipeline: PipelineConfig, aliases: dict[str, str]) -> None:
    """Row-local checks and normalisations of deals (everything but history and duplicates)."""
    rows.keep_raw("stage", "deal_type", "forecast_category")
    columns = rows.frame.columns
    if aliases:
        rows.update(pl.col("stage").replace(aliases))
    rows.update(stage_kind(pipeline).alias("_kind"))
    kind = pl.col("_kind")
    if CLOSE_DATE in columns:
        _resolve_close_date(rows)
    for column in ("deal_id", "created_at", "owner_id", "stage"):
        rows.flag(column, pl.when(missing(column, columns)).then(pl.lit(f"{column} is empty")))
    rows.flag(
        "stage",
        pl.when(pl.col("stage").is_not_null() & kind.is_null()).then(
            pl.format("unknown stage '{}': not in the pipeline config", pl.col("stage"))
        ),
    )
    rows.flag("amount", pl.when(pl.col("amount") < 0).then(pl.lit("negative amount")))
    hint = "" if rows.probability_scale else " (write 0.6 or 60%)"
    rows.flag(
        "crm_probability",
        pl.when(~pl.col("crm_probability").is_between(0.0, 1.0)).then(
            pl.format("crm_probability {} is outside 0..1" + hint, pl.col("crm_probability"))
        ),
    )
    _normalise_categories(rows)
    _salesforce_flags(rows, columns)
    closed = kind.is_in(_CLOSED)
    unmapped = "closed_at" not in rows.origin and CLOSE_DATE not in rows.origin
    where = (
        " (no column is mapped to closed_at or close_date: --map close_date=<your column name>)"
        if unmapped
        else ""
    )
    no_close = missing("closed_at", rows.frame.columns)
    rows.flag(
        "closed_at",
        pl.when(closed & pl.col("closed_at").is_null() & no_close).then(
            pl.format("closed deal (stage '{}') without a close date" + where, pl.col("stage"))
        ),
    )


def finish_deals(
    rows: Rows, pipeline: PipelineConfig, entries: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """History-aware close times, ordering and duplicate checks; ``(clean, issues, warnings)``."""
    warnings: list[str] = []
    kind = pl.col("_kind")
    if entries is not None and entries.height:
        warnings += _close_from_history(rows, entries)
    rows.flag(
        "closed_at",
        pl.when(pl.col("closed_at") < pl.col("created_at")).then(
            pl.format(
                "closed_at {} is before created_at {}", ts_text("closed_at"), ts_text("created_at")
            )
        ),
    )
    first = pl.col(ROW).min().over("deal_id")
    rows.flag(
        "deal_id",
        pl.when(pl.col("deal_id").is_not_null() & (pl.col(ROW) != first)).then(
            pl.format("duplicate deal_id, first seen at row {}", first)
        ),
    )
    label = rows.label
    n_null = rows.count(pl.col("amount").is_null() & missing("amount", rows.frame.columns))
    if n_null:
        warnings.append(f"{label}: {plural(n_null, 'deal')} without an amount (loaded)")
    stray = (kind == "open") & pl.col("closed_at").is_not_null()
    n_stray = rows.count(stray)
    n_moved = rows.count(stray & pl.col("expected_close_date").is_null())
    if n_stray:
        warnings.append(
            f"{label}: {plural(n_stray, 'open deal')} with a closed_at; an open deal is not "
            f"closed, so it was read as the expected close date ({n_moved:,}) or dropped "
            f"where the deal has one ({n_stray - n_moved:,})"
        )
    rows.update(
        pl.coalesce(
            "expected_close_date", pl.when(stray).then(pl.col("closed_at").dt.date())
        ).alias("expected_close_date"),
        pl.when(stray).then(None).otherwise(pl.col("closed_at")).alias("closed_at"),
    )
    n_no_date = rows.count((kind == "open") & pl.col("expected_close_date").is_null())
    if n_no_date:
        warnings.append(
            f"{label}: {plural(n_no_date, 'open deal')} without an expected_close_date (loaded)"
        )
    clean, issues = rows.split(list(SCHEMAS["deals"]))
    return clean, issues, warnings


def close_entries(history: Rows) -> pl.DataFrame:
    """Per deal, the stage of its last run of history rows and when that run began.

    Only rows that pass their own checks count. Columns: ``deal_id, _final_stage, _final_at``.
    """
    frame = (
        history.frame.filter(history.passing())
        .select("deal_id", "changed_at", "stage")
        .sort("deal_id", "changed_at")
    )
    starts = (pl.col("stage") != pl.col("stage").shift(1)) | (
        pl.col("deal_id") != pl.col("deal_id").shift(1)
    )
    return (
        frame.filter(starts.fill_null(True))
        .group_by("deal_id")
        .agg(
            pl.col("stage").last().alias("_final_stage"),
            pl.col("changed_at").last().alias("_final_at"),
        )
    )


def _close_from_history(rows: Rows, entries: pl.DataFrame) -> list[str]:
    closed_at = pl.col("closed_at")
    bare = pl.col("_kind").is_in(_CLOSED) & (closed_at == closed_at.dt.truncate("1d"))
    if not rows.count(bare):
        return []
    rows.join(entries, "deal_id")
    move = bare & (pl.col("_final_stage") == pl.col("stage")) & (pl.col("_final_at") > closed_at)
    moved = rows.frame.filter(move.fill_null(False) & rows.passing())
    rows.update(
        pl.when(move.fill_null(False))
        .then(pl.col("_final_at"))
        .otherwise(closed_at)
        .alias("closed_at")
    )
    if not moved.height:
        return []
    example = moved.row(0, named=True)
    return [
        f"{rows.label}: {plural(moved.height, 'closed deal')} with a close date (no time "
        "of day) earlier than the moment the stage history records the close: closed_at is "
        "that moment instead, so no as-of view sees a deal closed before the CRM recorded it "
        f"(e.g. {example['deal_id']}: {example['closed_at']:%Y-%m-%d} -> "
        f"{example['_final_at']:%Y-%m-%d %H:%M} UTC)"
    ]


def _resolve_close_date(rows: Rows) -> None:
    """Fill ``closed_at`` (won/lost) or ``expected_close_date`` (open) from ``close_date``."""
    kind, value = pl.col("_kind"), pl.col(CLOSE_DATE)
    columns = rows.frame.columns
    source = rows.labels.get(CLOSE_DATE, CLOSE_DATE)
    exprs = [
        pl.coalesce("closed_at", pl.when(kind.is_in(_CLOSED)).then(value)).alias("closed_at"),
        pl.coalesce("expected_close_date", pl.when(kind == "open").then(value.dt.date())).alias(
            "expected_close_date"
        ),
    ]
    if raw_of(CLOSE_DATE) in columns:
        for target in ("closed_at", "expected_close_date"):
            if raw_of(target) not in columns:
                exprs.append(pl.col(raw_of(CLOSE_DATE)).alias(raw_of(target)))
            else:
                exprs.append(pl.coalesce(raw_of(target), raw_of(CLOSE_DATE)).alias(raw_of(target)))
    rows.update(*exprs)
    for target in ("closed_at", "expected_close_date"):
        rows.labels.setdefault(target, source)


def _normalise_categories(rows: Rows) -> None:
    value, ok = normalise_deal_type(pl.col("deal_type"))
    rows.flag(
        "deal_type",
        pl.when(~ok).then(
            pl.format("deal_type '{}' is not new, expansion or renewal", pl.col("deal_type"))
        ),
    )
    category = checked_forecast_category(rows)
    rows.update(value.alias("deal_type"), category)


def _salesforce_flags(rows: Rows, columns: list[str]) -> None:
    kind, stage = pl.col("_kind"), pl.col("stage")
    if "_is_closed" in columns:
        flag = parse_bool(pl.col("_is_closed"))
        rows.flag(
            "_is_closed",
            pl.when((kind == "open") & flag)
            .then(pl.format("IsClosed is true but stage '{}' is open", stage))
            .when(kind.is_in(_CLOSED) & ~flag)
            .then(pl.format("IsClosed is false but stage '{}' is closed", stage)),
        )
    if "_is_won" in columns:
        flag = parse_bool(pl.col("_is_won"))
        rows.flag(
            "_is_won",
            pl.when((kind != "won") & flag)
            .then(pl.format("IsWon is true but stage '{}' is not a won stage", stage))
            .when((kind == "won") & ~flag)
            .then(pl.format("IsWon is false but stage '{}' is a won stage", stage)),
        )
    if "_is_deleted" in columns:
        rows.flag(
            "_is_deleted",
            pl.when(parse_bool(pl.col("_is_deleted"))).then(
                pl.lit("deleted in the CRM (IsDeleted is true)")
            ),
        )
