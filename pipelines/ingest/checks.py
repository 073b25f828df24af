"""Row checks: each check is a polars expression giving a reason (or null) per row.

:class:`Rows` holds one table under validation: the parsed canonical columns, the raw source
values of parsed columns (``_raw_<column>``), and one reason column per check. ``split``
returns the rows that pass every check and the quarantine lines of the others: one line per
problem (``source_file, table, row_number, column, value, reason``), while a row with
several problems counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from features.contract import SCHEMAS, TS
from pipelines.ingest.mapping import CLOSE_DATE, RawTable
from pipelines.ingest.parsing import (
    cast_typed,
    normalise_forecast_category,
    parse_date,
    parse_float,
    parse_timestamp,
)
from pipelines.ingest.reading import REPLACEMENT, ROW

__all__ = [
    "EARLIEST",
    "FUTURE_DAYS",
    "ISSUE_SCHEMA",
    "NUL",
    "TimeWindow",
    "time_window",
    "Rows",
    "checked_forecast_category",
    "parse_rows",
    "raw_of",
    "missing",
    "ts_text",
    "plural",
]

ISSUE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "table": pl.String(),
    "row_number": pl.Int64(),
    "column": pl.String(),
    "value": pl.String(),
    "reason": pl.String(),
}
"""Columns of the quarantine file."""


EARLIEST = date(1990, 1, 1)
"""No CRM timestamp or date before this is believed: older values are typos (1900, 0001)."""

FUTURE_DAYS = 731
"""How far after the export day a date may lie (about two years: expected close dates)."""

NUL = "\x00"


@dataclass(frozen=True)
class TimeWindow:
    """The sane range of every timestamp and date of an ingest: ``[start, end)``.

    A row outside it is quarantined, so one typo (``2100-01-01``, ``9999-12-31``) can never
    move "the end of the data" (the latest timestamp) that every command works from.
    """

    start: date
    end: date
    export_day: date

    def reason(self) -> str:
        return (
            f"outside the accepted window {self.start} to {self.end - timedelta(days=1)} "
            f"(from 1990 to about two years after the export day {self.export_day}): "
            "a typo? fix the value in the CRM or the export"
        )


def time_window(export_day: date) -> TimeWindow:
    """The window of an export taken on ``export_day`` (docs/operations.md)."""
    return TimeWindow(EARLIEST, export_day + timedelta(days=FUTURE_DAYS), export_day)


def _outside(column: str, dtype: pl.DataType, window: TimeWindow) -> pl.Expr:
    col = pl.col(column)
    if dtype == pl.Date():
        low, high = pl.lit(window.start), pl.lit(window.end)
    else:
        low = pl.lit(datetime.combine(window.start, datetime.min.time(), UTC))
        high = pl.lit(datetime.combine(window.end, datetime.min.time(), UTC))
    return pl.when(col.is_not_null() & ((col < low) | (col >= high))).then(pl.lit(window.reason()))


def _nul_reason(col: pl.Expr, label: str) -> pl.Expr:
    return pl.when(col.str.contains(NUL, literal=True)).then(
        pl.lit(f"contains a NUL byte in column {label!r}: fix the value or re-export the file")
    )


def ts_text(column: str | pl.Expr) -> pl.Expr:
    """A timestamp as ``2024-03-05T14:22:00Z`` for messages."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def plural(n: int, word: str) -> str:
    """``"1 deal"``, ``"1,204 deals"``."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def raw_of(column: str) -> str:
    """The name of the column holding ``column``'s raw source value."""
    return f"_raw_{column}"


class Rows:
    """One table's rows under validation (see the module docstring)."""

    def __init__(self, raw: RawTable, frame: pl.DataFrame) -> None:
        # keep what messages need, not the source frames (they are released after parsing)
        self.table = raw.table
        self.label = raw.label
        self.origin = dict(raw.origin)
        self.probability_scale = raw.probability_scale
        self._frame = frame
        self._pending: list[pl.Expr] = []
        self._checks: list[tuple[str, str]] = []
        self.labels: dict[str, str] = dict(raw.origin)

    @property
    def frame(self) -> pl.DataFrame:
        """The rows with every check flagged so far evaluated."""
        if self._pending:
            self._frame = self._frame.with_columns(self._pending)
            self._pending = []
        return self._frame

    @property
    def read(self) -> int:
        return self._frame.height

    def update(self, *exprs: pl.Expr) -> None:
        """Change data columns (checks flagged before see the values as they were)."""
        self._frame = self.frame.with_columns(*exprs)

    def keep_raw(self, *columns: str) -> None:
        """Keep the current values of ``columns`` as their source values (before normalising)."""
        frame = self.frame
        keep = [pl.col(c).alias(raw_of(c)) for c in columns if raw_of(c) not in frame.columns]
        if keep:
            self._frame = frame.with_columns(keep)

    def join(self, other: pl.DataFrame, on: str) -> None:
        """Left-join ``other`` (unique on ``on``), keeping the row order."""
        self._frame = self.frame.join(other, on=on, how="left", maintain_order="left")

    def count(self, condition: pl.Expr) -> int:
        """How many rows that pass every check so far satisfy ``condition``."""
        return int(self.frame.select((condition & self.passing()).fill_null(False).sum()).item())

    def adopt(self, checks: Sequence[tuple[str, str]]) -> None:
        """Register reason columns already in the frame, as ``(reason column, data column)``."""
        self._checks.extend(checks)

    def flag(self, column: str, reason: pl.Expr) -> None:
        """Add a check about ``column``: ``reason`` is a string expression, null when fine."""
        name = f"_check{len(self._checks)}"
        self._pending.append(reason.cast(pl.String).alias(name))
        self._checks.append((name, column))

    def passing(self) -> pl.Expr:
        """True for rows without a problem so far (evaluate on :attr:`frame`)."""
        if not self._checks:
            return pl.lit(True)
        return pl.all_horizontal([pl.col(name).is_null() for name, _ in self._checks])

    def split(self, columns: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``(clean rows with columns, quarantine lines)``."""
        frame = self.frame
        clean = frame.filter(self.passing()).select(columns)
        parts = []
        for order, (name, column) in enumerate(self._checks):
            if raw_of(column) in frame.columns:
                value = pl.col(raw_of(column)).cast(pl.String)
            elif column in frame.columns:
                value = pl.col(column).cast(pl.String)
            else:
                value = pl.lit(None, dtype=pl.String)
            parts.append(
                frame.lazy()
                .filter(pl.col(name).is_not_null())
                .select(
                    pl.lit(self.label).alias("source_file"),
                    pl.lit(self.table).alias("table"),
                    pl.col(ROW).cast(pl.Int64).alias("row_number"),
                    pl.lit(self.labels.get(column, column)).alias("column"),
                    value.alias("value"),
                    pl.col(name).alias("reason"),
                    pl.lit(order).alias("_order"),
                )
            )
        if not parts:
            return clean, pl.DataFrame(schema=ISSUE_SCHEMA)
        issues = pl.concat(parts).sort("row_number", "_order").drop("_order").collect()
        return clean, issues


def missing(column: str, frame_columns: Sequence[str]) -> pl.Expr:
    """True where ``column`` is empty in the source (not merely a value that did not parse)."""
    if raw_of(column) in frame_columns:
        return pl.col(raw_of(column)).is_null()
    return pl.col(column).is_null()


def parse_rows(raw: RawTable, date_format: str | None, *, window: TimeWindow | None = None) -> Rows:
    """Parse ``raw``'s canonical columns to their types and flag what does not parse.

    Flags, per column: invalid UTF-8 bytes (lossily read CSV), a NUL byte, a non-empty
    value that is not a date / timestamp / number, a typed value that cannot be cast, and a
    date or timestamp outside ``window`` (default: the window of an export taken today).
    Canonical columns the source lacks are added as nulls. Parsed columns keep their source
    value in ``_raw_<column>``.
    """
    window = window or time_window(datetime.now(UTC).date())
    schema = dict(SCHEMAS[raw.table])
    if raw.table == "deals":
        schema[CLOSE_DATE] = TS
    frame = raw.frame
    values: list[pl.Expr] = []
    reasons: list[tuple[str, pl.Expr]] = []
    fmt = f" or {date_format}" if date_format else ""
    for column in frame.columns:
        if column == ROW or column.startswith("_"):
            continue
        source, target = frame.schema[column], schema[column]
        col, kept = pl.col(column), pl.col(raw_of(column))
        if source == pl.String:
            text = kept if target != pl.String else col
            if raw.source.lossy:
                reasons.append((column, _utf8_reason(text, raw.column_label(column))))
            reasons.append((column, _nul_reason(text, raw.column_label(column))))
        if source == pl.String and target != pl.String:
            if target == TS:
                value = parse_timestamp(col, date_format)
                what = f"not a date/time (expected ISO 8601 like 2024-03-05T14:22:00Z{fmt})"
            elif target == pl.Date():
                value = parse_date(col, date_format)
                what = f"not a date (expected ISO 8601 like 2024-03-05{fmt})"
            else:
                percent = column == "crm_probability" and raw.probability_scale is None
                value = parse_float(col, percent=percent)
                what = "not a finite number"
        elif source != target:
            value = cast_typed(col, source, target)
            what = f"cannot be read as {target} (stored as {source})"
        else:
            scale = raw.probability_scale if column == "crm_probability" else None
            values.append(col if scale is None else (col * scale).alias(column))
            if target == TS or target == pl.Date():
                reasons.append((column, _outside(column, target, window)))
            continue
        if column == "crm_probability" and raw.probability_scale is not None:
            value = value * raw.probability_scale
        values += [col.alias(raw_of(column)), value.alias(column)]
        reasons.append((column, pl.when(kept.is_not_null() & col.is_null()).then(pl.lit(what))))
        if target == TS or target == pl.Date():
            reasons.append((column, _outside(column, target, window)))
    for column, dtype in SCHEMAS[raw.table].items():
        if column not in frame.columns:
            values.append(pl.lit(None, dtype=dtype).alias(column))
    parsed = frame.select(pl.col(ROW), *values, pl.col("^_.*$").exclude(ROW))
    names = [f"_why{i}" for i in range(len(reasons))]
    rows = Rows(
        raw,
        parsed.with_columns(
            r.cast(pl.String).alias(n) for n, (_, r) in zip(names, reasons, strict=True)
        ),
    )
    rows.adopt([(n, column) for n, (column, _) in zip(names, reasons, strict=True)])
    return rows


def _utf8_reason(col: pl.Expr, label: str) -> pl.Expr:
    return pl.when(col.str.contains(REPLACEMENT, literal=True)).then(
        pl.lit(
            f"bytes that are not UTF-8 in column {label!r} (e.g. Latin-1 text): "
            "re-export the file as UTF-8"
        )
    )


def checked_forecast_category(rows: Rows) -> pl.Expr:
    """Flag unrecognised ``forecast_category`` values; return the normalised column."""
    category, known = normalise_forecast_category(pl.col("forecast_category"))
    rows.flag(
        "forecast_category",
        pl.when(~known).then(
            pl.format(
                "forecast_category '{}' is not pipeline, best_case, commit or omitted",
                pl.col("forecast_category"),
            )
        ),
    )
    return category.alias("forecast_category")
