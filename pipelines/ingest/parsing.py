"""Polars expressions that turn raw source values into canonical types.

Every parser is lenient per value (``strict=False``): a value that does not parse becomes
null, and the validators flag rows where a non-empty raw value became null.

Timestamps: ISO 8601 by default, i.e. ``2024-03-05``, ``2024-03-05 14:22``,
``2024-03-05T14:22:11.5``, with ``Z``, `` UTC`` or an offset (``+02:00``, ``+0200``), which
is converted to UTC; values without an offset are UTC; a bare date is 00:00 UTC. A user
``date_format`` (strftime, e.g. ``%d/%m/%Y``) is tried first. Dates take the calendar date as
written (``2024-03-05T23:00:00+02:00`` is 2024-03-05). Numbers: ``1234.5``, ``1,234.50``
(comma thousands separators), an optional leading currency sign (``$ € £ ¥``); NaN and
infinities are not numbers. Parquet columns that already have a type are cast (timestamps
with a zone converted to UTC, naive ones taken as UTC, dates as 00:00 UTC).
"""

from __future__ import annotations

import polars as pl

from features.contract import TS

__all__ = [
    "parse_timestamp",
    "parse_date",
    "parse_float",
    "parse_bool",
    "cast_typed",
    "normalise_forecast_category",
    "normalise_deal_type",
    "normalise_activity_type",
    "FORECAST_CATEGORY_ALIASES",
    "DEAL_TYPE_ALIASES",
    "ACTIVITY_TYPE_ALIASES",
]

_ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)


def parse_timestamp(raw: pl.Expr, date_format: str | None = None) -> pl.Expr:
    """A string expression parsed as ``Datetime("us", "UTC")`` (null where it does not parse)."""
    iso = (
        raw.str.replace(r"^(\d{4}-\d{2}-\d{2})[ ]+", "${1}T")
        .str.replace(r"(?i)\s*(z|utc|gmt)$", "+00:00")
        .str.replace(r"\s+([+-]\d{2}:?\d{2})$", "${1}")
    )
    attempts = [
        iso.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False, cache=False)
        for fmt in _ISO_FORMATS
    ]
    if date_format:
        user = raw.str.to_datetime(
            date_format, time_unit="us", time_zone="UTC", strict=False, cache=False
        )
        attempts.insert(0, user)
    return pl.coalesce(attempts)


def parse_date(raw: pl.Expr, date_format: str | None = None) -> pl.Expr:
    """A string expression parsed as a ``Date`` (the calendar date as written)."""
    attempts = [
        raw.str.to_date("%Y-%m-%d", strict=False, cache=False),
        pl.when(raw.str.contains(r"^\d{4}-\d{2}-\d{2}[T ]")).then(
            raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False, cache=False)
        ),
    ]
    if date_format:
        attempts.insert(0, raw.str.to_date(date_format, strict=False, cache=False))
    return pl.coalesce(attempts)


def parse_float(raw: pl.Expr, *, percent: bool = False) -> pl.Expr:
    """A string expression parsed as ``Float64``; finite values only.

    With ``percent``, a trailing ``%`` divides by 100 (``"60%"`` -> 0.6).
    """
    text = raw.str.replace(r"^[+]?[$€£¥]\s*", "")
    text = (
        pl.when(text.str.contains(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$"))
        .then(text.str.replace_all(",", "", literal=True))
        .otherwise(text)
    )
    if percent:
        is_pct = text.str.ends_with("%")
        number = text.str.strip_suffix("%").str.strip_chars().cast(pl.Float64, strict=False)
        value = pl.when(is_pct).then(number / 100.0).otherwise(number)
    else:
        value = text.cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value)


_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")


def parse_bool(raw: pl.Expr) -> pl.Expr:
    """``true/false``, ``1/0``, ``yes/no`` (any case) as Boolean; anything else null."""
    low = raw.cast(pl.String).str.to_lowercase()
    return (
        pl.when(low.is_in(_TRUE))
        .then(pl.lit(True))
        .when(low.is_in(_FALSE))
        .then(pl.lit(False))
        .otherwise(pl.lit(None, dtype=pl.Boolean))
    )


def cast_typed(column: pl.Expr, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Cast an already typed (Parquet) column to its canonical type, lenient per value."""
    if target == TS:
        if isinstance(source, pl.Datetime):
            if source.time_zone is None:
                return column.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
            return column.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if isinstance(source, pl.Date):
            return column.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if target == pl.Date() and isinstance(source, pl.Datetime):
        return column.dt.date()
    if target == pl.Float64():
        value = column.cast(pl.Float64, strict=False)
        return pl.when(value.is_finite()).then(value)
    return column.cast(target, strict=False)


# -- categorical values -----------------------------------------------------------------------

FORECAST_CATEGORY_ALIASES: dict[str, str | None] = {
    "pipeline": "pipeline",
    "best_case": "best_case",
    "bestcase": "best_case",
    "upside": "best_case",
    "commit": "commit",
    "omitted": "omitted",
    "omit": "omitted",
    "not_forecasted": "omitted",
    "closed": None,
    "closed_won": None,
}
"""Lower-cased, ``_``-joined source value -> canonical forecast category.

``Closed`` (Salesforce) and ``Closed won`` (HubSpot) only say that the deal is won, which its
stage already says: they become null (in stage history, null means "unchanged").
"""

DEAL_TYPE_ALIASES: dict[str, str] = {
    "new": "new",
    "new_business": "new",
    "newbusiness": "new",
    "new_customer": "new",
    "expansion": "expansion",
    "upsell": "expansion",
    "cross_sell": "expansion",
    "existing_business": "expansion",
    "existingbusiness": "expansion",
    "existing_customer_upgrade": "expansion",
    "renewal": "renewal",
    "existing_customer_replacement": "renewal",
    "existing_customer_downgrade": "renewal",
}
"""Source deal types (Salesforce ``Type``, HubSpot ``Deal Type``) -> new/expansion/renewal."""

ACTIVITY_TYPE_ALIASES: dict[str, str] = {
    "call": "call",
    "phone": "call",
    "phone_call": "call",
    "email": "email",
    "e_mail": "email",
    "mail": "email",
    "meeting": "meeting",
    "appointment": "meeting",
    "event": "meeting",
    "demo": "demo",
    "demonstration": "demo",
    "proposal": "proposal",
    "quote": "proposal",
}
"""Activity types; any other non-empty type (``Task``, ``Note``, ``LinkedIn``...) is ``other``."""


def _key(raw: pl.Expr) -> pl.Expr:
    return (
        raw.cast(pl.String)
        .str.to_lowercase()
        .str.replace_all(r"[^0-9a-z]+", "_")
        .str.strip_chars("_")
    )


def normalise_forecast_category(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """``(value, ok)``: the canonical category, and whether a non-null value was recognised."""
    key = _key(raw)
    known = key.is_in(list(FORECAST_CATEGORY_ALIASES))
    value = key.replace_strict(FORECAST_CATEGORY_ALIASES, default=None, return_dtype=pl.String)
    return value, raw.is_null() | known


def normalise_deal_type(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """``(value, ok)``: ``new``/``expansion``/``renewal``, and whether it was recognised."""
    key = _key(raw)
    value = key.replace_strict(DEAL_TYPE_ALIASES, default=None, return_dtype=pl.String)
    return value, raw.is_null() | value.is_not_null()


def normalise_activity_type(raw: pl.Expr) -> pl.Expr:
    """One of ``call email meeting demo proposal other`` (null stays null)."""
    key = _key(raw)
    return (
        pl.when(raw.is_null())
        .then(None)
        .otherwise(
            key.replace_strict(ACTIVITY_TYPE_ALIASES, default="other", return_dtype=pl.String)
        )
    )
