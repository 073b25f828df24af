"""Kept forecasts: every forecast the forecast job makes, on disk, and their accuracy table.

Layout under the data directory::

    forecasts/
      kept/<forecast_id>.parquet     # one forecast each, rows of KEPT_SCHEMA, never rewritten
      kept/.tmp-*                    # a forecast being written; never read
      accuracy.parquet               # the scored forecasts (ACCURACY_SCHEMA), replaced whole

Both are written the way the store is (:mod:`features.store`): to a temporary file in the same
directory, fsynced, then moved into place with ``os.replace`` and the directory fsynced. A
process killed at any moment leaves every earlier forecast and the previous accuracy table
readable and unchanged.

A kept forecast has one row per method × segment × target period (``KEPT_SCHEMA``); it is
checked at the door (:meth:`ForecastLog.append`) so that scoring can trust it. Kept forecasts
are append-only: appending an identical copy of a forecast already kept is a no-op (a retried
job), appending a *different* frame under a kept ``forecast_id`` raises
:class:`ForecastExistsError`.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from features.contract import DIMENSIONS, TS
from features.store import _fsync

__all__ = [
    "ACCURACY_SCHEMA",
    "KEPT_KEY",
    "KEPT_SCHEMA",
    "METHODS",
    "NO_VALUE",
    "SEGMENT_SEPARATOR",
    "ForecastExistsError",
    "ForecastLog",
    "KeptForecastError",
    "accuracy_path",
    "new_forecast_id",
    "read_accuracy",
    "segment_label",
    "write_accuracy",
]

KEPT_SCHEMA: dict[str, pl.DataType] = {
    "forecast_id": pl.String(),
    "created_at": TS,
    "as_of": TS,
    "origin_month": pl.Date(),
    "period": pl.String(),
    "target_month": pl.Date(),
    "horizon": pl.Int64(),
    "by": pl.String(),
    "segment": pl.String(),
    "method": pl.String(),
    "mean": pl.Float64(),
    "p10": pl.Float64(),
    "p50": pl.Float64(),
    "p90": pl.Float64(),
    "pipeline_mean": pl.Float64(),
    "newbiz_mean": pl.Float64(),
    "booked_to_date": pl.Float64(),
    "target": pl.Float64(),
    "p_reach_target": pl.Float64(),
    "model_version": pl.String(),
}
"""One row per forecast × method × segment × target period.

- ``forecast_id``: one id per forecast (one run of the forecast job), see :func:`new_forecast_id`;
- ``created_at``: when it was made; ``as_of``: the instant it was made for (both UTC);
  ``origin_month``: the first day of ``as_of``'s month;
- ``period``: ``"month"`` or ``"quarter"`` (calendar); ``target_month``: the first day of the
  target month, or of the quarter's first month;
- ``horizon``: months from ``origin_month`` to ``target_month`` (0 = the origin's month). A
  quarter's horizon is that of its first month, so the quarter holding the origin has horizon
  0, -1 or -2;
- ``by``: ``""`` for the company total, else a dimension of ``features.contract.DIMENSIONS``
  (several joined by ``","``: ``"region,product"``); ``segment``: ``"total"`` for the company
  total, else the dimension's value (several joined by ``" · "``, a missing value as
  ``"(none)"``: :func:`segment_label`);
- ``method``: ``"dealcast"``, ``"stage_weighted_crm"``, ``"stage_weighted_hist"`` (or another
  lower-case name);
- ``mean, p10, p50, p90``: the forecast; a point method puts its number in ``mean`` and ``p50``
  and leaves ``p10``/``p90`` null;
- ``pipeline_mean, newbiz_mean, booked_to_date, target, p_reach_target, model_version``: context,
  nullable.
"""

ACCURACY_SCHEMA: dict[str, pl.DataType] = {
    **KEPT_SCHEMA,
    "actual": pl.Float64(),
    "forecast": pl.Float64(),
    "error": pl.Float64(),
    "abs_error": pl.Float64(),
    "accuracy": pl.Float64(),
    "covered": pl.Boolean(),
}
"""A kept row scored once its period closed (``models.forecast.accuracy.score_forecasts``).

``actual``: the bookings of the target period; ``forecast``: ``p50``; ``error``: forecast −
actual; ``abs_error``; ``accuracy``: 1 − |A − F| / A (null when A = 0); ``covered``:
``p10 <= A <= p90`` (null for a point method).
"""

KEPT_KEY: tuple[str, ...] = ("forecast_id", "method", "by", "segment", "period", "target_month")
"""The columns that identify a kept (and a scored) row."""

METHODS: tuple[str, ...] = ("dealcast", "stage_weighted_crm", "stage_weighted_hist")
"""The methods every forecast keeps, in the order reports show them."""

_REQUIRED = (
    "forecast_id",
    "created_at",
    "as_of",
    "origin_month",
    "period",
    "target_month",
    "horizon",
    "by",
    "segment",
    "method",
    "mean",
    "p50",
)
_PERIODS = ("month", "quarter")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_METHOD = re.compile(r"^[a-z][a-z0-9_]*$")
_EXAMPLES = 3


SEGMENT_SEPARATOR = " · "
"""Joins the values of several dimensions in a segment label (``"EU · SMB"``)."""
NO_VALUE = "(none)"
"""The segment label of a missing dimension value."""


def segment_label(dims: list[str] | tuple[str, ...]) -> pl.Expr:
    """The ``segment`` of a row grouped by ``dims``: their values as strings, joined.

    Examples
    --------
    >>> frame.select(segment_label(["region", "product"]))  # doctest: +SKIP
    """
    return pl.concat_str(
        [pl.col(d).cast(pl.String).fill_null(NO_VALUE) for d in dims], separator=SEGMENT_SEPARATOR
    ).alias("segment")


class KeptForecastError(ValueError):
    """A forecast frame does not follow ``KEPT_SCHEMA`` (or an accuracy frame its schema)."""


class ForecastExistsError(ValueError):
    """A different forecast is already kept under this ``forecast_id``."""


def new_forecast_id(created_at: datetime | None = None) -> str:
    """A fresh, sortable forecast id: ``<created_at UTC, to the µs>-<8 hex>``.

    Examples
    --------
    >>> new_forecast_id(datetime(2026, 10, 5, 8, 30, tzinfo=UTC))  # doctest: +SKIP
    '20261005T083000000000Z-1f3a9c2e'
    """
    moment = (created_at or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


class ForecastLog:
    """The kept forecasts under ``<data_dir>/forecasts/kept``.

    Examples
    --------
    >>> log = ForecastLog(data_dir)  # doctest: +SKIP
    >>> log.append(frame)            # doctest: +SKIP
    '20261005T083000000000Z-1f3a9c2e'
    >>> log.read().height            # doctest: +SKIP
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "forecasts"
        self.kept = self.root / "kept"

    def path_of(self, forecast_id: str) -> Path:
        """The file a forecast is kept in."""
        return self.kept / f"{forecast_id}.parquet"

    def append(self, frame: pl.DataFrame) -> str:
        """Keep one forecast; return its ``forecast_id``.

        Parameters
        ----------
        frame : DataFrame
            The rows of one forecast, following :data:`KEPT_SCHEMA` (columns in any order;
            integer/float widths and time zones are converted, anything else is refused).

        Returns
        -------
        str
            The forecast's id.

        Raises
        ------
        KeptForecastError
            The frame breaks the schema; the message names the column, the bad values and
            the fix.
        ForecastExistsError
            Another frame is already kept under this id. Appending the *same* frame again is a
            no-op, so a retried job is safe.
        """
        rows = _check_kept(frame)
        forecast_id = str(rows["forecast_id"][0])
        final = self.path_of(forecast_id)
        if final.exists():
            kept = _conform(pl.read_parquet(final), KEPT_SCHEMA, "kept forecast")
            if kept.equals(rows):
                return forecast_id
            raise ForecastExistsError(
                f"forecast_id {forecast_id!r} is already kept ({final}) with other rows: kept "
                "forecasts are never rewritten; give the new forecast a new id "
                "(features.forecast_log.new_forecast_id())"
            )
        _write_atomically(rows, final)
        return forecast_id

    def read(self) -> pl.DataFrame:
        """Every kept forecast, in ``created_at`` order.

        Returns
        -------
        DataFrame
            Rows of :data:`KEPT_SCHEMA`; empty (with the schema) when nothing is kept yet.
        """
        files = self.files()
        if not files:
            return pl.DataFrame(schema=KEPT_SCHEMA)
        frames = [_conform(pl.read_parquet(p), KEPT_SCHEMA, f"kept forecast {p}") for p in files]
        return pl.concat(frames).sort(["created_at", *KEPT_KEY])

    def files(self) -> list[Path]:
        """The kept forecast files (a forecast being written is not one yet)."""
        if not self.kept.is_dir():
            return []
        return sorted(p for p in self.kept.glob("*.parquet") if not p.name.startswith("."))


def accuracy_path(data_dir: Path | str) -> Path:
    """Where the accuracy table is kept: ``<data_dir>/forecasts/accuracy.parquet``."""
    return Path(data_dir) / "forecasts" / "accuracy.parquet"


def write_accuracy(data_dir: Path | str, frame: pl.DataFrame) -> Path:
    """Replace the accuracy table atomically with ``frame``; return its path.

    Parameters
    ----------
    data_dir : Path or str
    frame : DataFrame
        Rows of :data:`ACCURACY_SCHEMA` (``models.forecast.accuracy.score_forecasts``), unique on
        :data:`KEPT_KEY`.
    """
    rows = _conform(frame, ACCURACY_SCHEMA, "accuracy table")
    duplicated = rows.filter(pl.struct(KEPT_KEY).is_duplicated())
    if duplicated.height:
        raise KeptForecastError(
            f"accuracy table holds {duplicated.height} rows that repeat a key "
            f"({', '.join(KEPT_KEY)}), e.g. {_examples(duplicated, KEPT_KEY)}: score each kept "
            "row once"
        )
    path = accuracy_path(data_dir)
    _write_atomically(rows.sort(["target_month", *KEPT_KEY]), path)
    return path


def read_accuracy(data_dir: Path | str) -> pl.DataFrame:
    """The accuracy table; empty (with :data:`ACCURACY_SCHEMA`) before the first evaluation."""
    path = accuracy_path(data_dir)
    if not path.exists():
        return pl.DataFrame(schema=ACCURACY_SCHEMA)
    return _conform(pl.read_parquet(path), ACCURACY_SCHEMA, f"accuracy table {path}")


# -- writing -----------------------------------------------------------------------------------


def _write_atomically(frame: pl.DataFrame, final: Path) -> None:
    """Write ``final`` through a temporary file in its directory, fsync, ``os.replace``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.stem}-{uuid.uuid4().hex[:8]}.parquet"
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        _fsync(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(final.parent)


# -- checking ----------------------------------------------------------------------------------


def _examples(frame: pl.DataFrame, columns: tuple[str, ...] | list[str]) -> str:
    rows = frame.select(columns).unique(maintain_order=True).head(_EXAMPLES).rows()

    def show(value: object) -> str:
        return repr(value) if isinstance(value, str) else str(value)

    shown = [show(r[0]) if len(r) == 1 else "(" + ", ".join(map(show, r)) + ")" for r in rows]
    return ", ".join(shown)


def _cast(series: pl.Series, dtype: pl.DataType, what: str) -> pl.Series:
    """``series`` as ``dtype``: numeric widths, time units/zones and all-null columns only."""
    have = series.dtype
    if have == dtype:
        return series
    name = series.name
    if have == pl.Null:
        return series.cast(dtype)
    if isinstance(dtype, pl.Datetime) and isinstance(have, pl.Datetime):
        if have.time_zone is None:
            raise KeptForecastError(
                f"{what}: column {name} is a naive Datetime: give it a time zone, e.g. "
                f"pl.col({name!r}).dt.replace_time_zone('UTC')"
            )
        return series.dt.convert_time_zone("UTC").cast(dtype)
    numeric_ok = dtype.is_numeric() and have.is_numeric()
    if numeric_ok and (dtype.is_float() or have.is_integer()):
        return series.cast(dtype)
    raise KeptForecastError(
        f"{what}: column {name} must be {dtype}, got {have}: cast it (e.g. "
        f"pl.col({name!r}).cast(pl.{dtype}))"
    )


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, in order and type; KeptForecastError else."""
    if not isinstance(frame, pl.DataFrame):
        raise KeptForecastError(
            f"{what}: expected a polars DataFrame, got {type(frame).__name__} "
            "(collect a LazyFrame first)"
        )
    missing = [c for c in schema if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in schema]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"lacks column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"has unknown column(s) {', '.join(unknown)}")
        raise KeptForecastError(
            f"{what} {' and '.join(parts)}: it must have exactly the columns "
            f"{', '.join(schema)} (nullable ones may be all null)"
        )
    return pl.DataFrame([_cast(frame[c], dtype, what) for c, dtype in schema.items()])


def _month_index(expr: pl.Expr) -> pl.Expr:
    return expr.dt.year().cast(pl.Int64) * 12 + expr.dt.month().cast(pl.Int64) - 1


def _check_kept(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame conformed to KEPT_SCHEMA and checked row by row; KeptForecastError else."""
    rows = _conform(frame, KEPT_SCHEMA, "kept forecast")
    if rows.height == 0:
        raise KeptForecastError("kept forecast has no rows: keep at least one forecast row")
    nulls = [c for c in _REQUIRED if rows[c].null_count()]
    if nulls:
        raise KeptForecastError(
            f"kept forecast has nulls in required column(s) {', '.join(nulls)}: only p10, p90 "
            "and the context columns (pipeline_mean ... model_version) may be null"
        )
    ids = rows["forecast_id"].unique().sort().to_list()
    if len(ids) != 1:
        raise KeptForecastError(
            f"kept forecast holds {len(ids)} forecast_ids ({', '.join(ids[:_EXAMPLES])}, ...): "
            "append one forecast at a time"
        )
    if not _ID.match(ids[0]):
        raise KeptForecastError(
            f"forecast_id {ids[0]!r} is not a safe file name: use letters, digits, '_', '.', '-' "
            "(up to 128, not starting with '.'), e.g. new_forecast_id()"
        )
    for column in ("created_at", "as_of"):
        if rows[column].n_unique() != 1:
            raise KeptForecastError(
                f"kept forecast {ids[0]} has {rows[column].n_unique()} different {column} "
                "values: one forecast is made once, for one as_of"
            )
    problems: list[tuple[pl.Expr, tuple[str, ...], str]] = [
        (
            ~pl.col("period").is_in(_PERIODS),
            ("period",),
            "period must be 'month' or 'quarter'",
        ),
        (
            pl.col("origin_month") != pl.col("as_of").dt.truncate("1mo").dt.date(),
            ("as_of", "origin_month"),
            "origin_month must be the first day of as_of's month (UTC)",
        ),
        (
            pl.col("target_month").dt.day() != 1,
            ("target_month",),
            "target_month must be the first day of a month",
        ),
        (
            (pl.col("period") == "quarter") & ((pl.col("target_month").dt.month() - 1) % 3 != 0),
            ("target_month",),
            "a quarter's target_month must be its first month (Jan, Apr, Jul or Oct)",
        ),
        (
            pl.col("horizon")
            != _month_index(pl.col("target_month")) - _month_index(pl.col("origin_month")),
            ("origin_month", "target_month", "horizon"),
            "horizon must be the months from origin_month to target_month",
        ),
        (
            pl.when(pl.col("period") == "month")
            .then(pl.col("horizon") < 0)
            .otherwise(pl.col("horizon") < -2),
            ("period", "target_month", "horizon"),
            "the target period must not have ended before origin_month",
        ),
        (
            (pl.col("by") != "")
            & ~pl.col("by").str.split(",").list.eval(pl.element().is_in(DIMENSIONS)).list.all(),
            ("by",),
            f"by must be '' (company total) or dimensions of {', '.join(DIMENSIONS)} joined by ','",
        ),
        (
            (pl.col("by") == "") & (pl.col("segment") != "total"),
            ("by", "segment"),
            "the company total (by '') must have segment 'total'",
        ),
        (
            pl.col("segment") == "",
            ("by", "segment"),
            "segment must not be empty",
        ),
        (
            ~pl.col("method").str.contains(_METHOD.pattern),
            ("method",),
            "method must be a lower-case name like 'dealcast' or 'stage_weighted_crm'",
        ),
        (
            pl.col("p10").is_null() != pl.col("p90").is_null(),
            ("method", "p10", "p90"),
            "p10 and p90 must both be given (an interval) or both be null (a point method)",
        ),
        (
            (pl.col("p10") > pl.col("p50")) | (pl.col("p50") > pl.col("p90")),
            ("method", "p10", "p50", "p90"),
            "the interval must hold p10 <= p50 <= p90",
        ),
    ]
    for condition, columns, message in problems:
        bad = rows.filter(condition.fill_null(False))
        if bad.height:
            raise KeptForecastError(
                f"kept forecast {ids[0]}: {message}; {bad.height} row(s) break it, e.g. "
                f"({', '.join(columns)}) = {_examples(bad, list(columns))}"
            )
    key = [k for k in KEPT_KEY if k != "forecast_id"]
    duplicated = rows.filter(pl.struct(key).is_duplicated())
    if duplicated.height:
        raise KeptForecastError(
            f"kept forecast {ids[0]} repeats {duplicated.height} rows of one key "
            f"({', '.join(key)}), e.g. {_examples(duplicated, key)}: keep one row per method, "
            "segment and target period"
        )
    return rows.sort(list(key))
