"""Column mappings: which source column feeds which canonical column.

A mapping comes from ``--map`` values, each a TOML file or ``target=source``::

    --map deal_id="Opportunity ID" --map close_date="Close Date"
    --map stage_history.changed_at=ChangedOn        # other tables: prefix the table
    --map mapping.toml

    # mapping.toml
    date_format = "%d/%m/%Y"          # optional, same as --date-format
    [columns]
    deal_id = "Opportunity ID"
    owner_id = "Opportunity Owner"
    [columns.activities]              # optional, other tables
    occurred_at = "Date"

Targets are canonical columns (``features.contract.SCHEMAS``) plus ``close_date`` for deals:
the single "Close Date" of most CRM exports, which is the close date of won/lost deals and
the expected close date of open ones (it fills ``closed_at`` or ``expected_close_date`` by
the stage's kind, unless those are mapped themselves).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.contract import SCHEMAS
from pipelines.ingest.errors import IngestError
from pipelines.ingest.reading import ROW, SourceFile

__all__ = ["ColumnMap", "RawTable", "parse_mapping", "select_columns", "targets_of", "CLOSE_DATE"]

CLOSE_DATE = "close_date"
"""The pseudo target for a single close-date column (see the module docstring)."""


def targets_of(table: str) -> tuple[str, ...]:
    """The columns a mapping may name for ``table``."""
    extra = (CLOSE_DATE,) if table == "deals" else ()
    return (*SCHEMAS[table], *extra)


@dataclass(frozen=True)
class ColumnMap:
    """User mapping: ``columns[table][target] = source column``, and an optional date format."""

    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    date_format: str | None = None

    def for_table(self, table: str) -> dict[str, str]:
        return dict(self.columns.get(table, {}))


@dataclass(frozen=True)
class RawTable:
    """One source file's rows under canonical column names, values not yet validated.

    ``frame`` holds ``_row`` and one column per mapped target (strings from a CSV, typed
    from a Parquet file) plus adapter helper columns starting with ``_``. ``origin`` names
    the source column of each, for quarantine lines. ``probability_scale`` is the factor
    that turns the source's probabilities into 0..1 (0.01 for Salesforce's 0..100); when
    ``None``, values are 0..1 or written with ``%``.
    """

    table: str
    source: SourceFile
    frame: pl.DataFrame
    origin: Mapping[str, str]
    probability_scale: float | None = None

    @property
    def label(self) -> str:
        return self.source.label

    def column_label(self, column: str) -> str:
        return self.origin.get(column, column)


def parse_mapping(items: Sequence[str]) -> ColumnMap:
    """Merge ``--map`` values (TOML files and ``target=source`` pairs, later ones win)."""
    columns: dict[str, dict[str, str]] = {}
    date_format: str | None = None
    for item in items:
        path = Path(item)
        is_file = path.is_file()
        if is_file or ("=" not in item and path.suffix.lower() == ".toml"):
            doc = _read_toml(path)
            date_format = doc.get("date_format", date_format)
            for table, target, source in _toml_pairs(doc, path):
                columns.setdefault(table, {})[target] = source
        elif "=" in item:
            key, _, source = item.partition("=")
            table, target = _split_target(key.strip(), origin=f"--map {item}")
            columns.setdefault(table, {})[target] = source.strip().strip("'\"")
        else:
            raise IngestError(
                f"--map {item!r}: expected a TOML mapping file or target=source, "
                "e.g. --map deal_id='Opportunity ID'"
            )
    return ColumnMap(columns, date_format)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestError(f"--map {path}: no such mapping file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise IngestError(f"--map {path}: not a readable TOML mapping file: {exc}") from None


def _toml_pairs(doc: dict, path: Path) -> list[tuple[str, str, str]]:
    raw = doc.get("columns")
    if not isinstance(raw, dict):
        raise IngestError(
            f"{path}: a mapping file needs a 'columns' table from canonical columns to your "
            'column names, e.g. columns = { deal_id = "Opportunity ID", owner_id = "Owner" }'
        )
    pairs: list[tuple[str, str, str]] = []
    for key, value in raw.items():
        if isinstance(value, dict) and key in SCHEMAS:
            for target, source in value.items():
                pairs.append((key, *_checked(key, target, source, path)))
        else:
            table, target = _split_target(key, origin=str(path))
            pairs.append((table, *_checked(table, target, value, path)))
    return pairs


def _checked(table: str, target: str, source: object, path: Path) -> tuple[str, str]:
    if target not in targets_of(table):
        raise _unknown_target(table, target, str(path))
    if not isinstance(source, str) or not source:
        raise IngestError(f"{path}: {target} must name a source column, got {source!r}")
    return target, source


def _split_target(key: str, *, origin: str) -> tuple[str, str]:
    table, _, target = key.rpartition(".")
    table = table or "deals"
    if table not in SCHEMAS:
        raise IngestError(f"{origin}: unknown table {table!r}; tables are {', '.join(SCHEMAS)}")
    if target not in targets_of(table):
        raise _unknown_target(table, target, origin)
    return table, target


def _unknown_target(table: str, target: str, origin: str) -> IngestError:
    return IngestError(
        f"{origin}: {target!r} is not a column of {table}; "
        f"map one of: {', '.join(targets_of(table))}"
    )


def _auto_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def select_columns(
    source: SourceFile,
    table: str,
    *,
    explicit: Mapping[str, str],
    defaults: Mapping[str, Sequence[str]] | None = None,
    auto: bool = True,
    required: Sequence[str] = (),
    probability_scale: float | None = None,
) -> RawTable:
    """Pick the source column of each target and rename it; raise when a required one is missing.

    Order of precedence: the user's ``explicit`` mapping (its column must exist), the
    adapter's ``defaults`` (first candidate present), then with ``auto`` a column whose
    name is the target's (any case, spaces or dashes for underscores: ``Deal ID``).
    ``defaults`` may also name helper targets starting with ``_`` (e.g. ``_is_won``).
    """
    present = source.columns
    by_key: dict[str, str] = {}
    for name in present:
        by_key.setdefault(_auto_key(name), name)
    chosen: dict[str, str] = {}
    for target, column in explicit.items():
        if column not in present:
            raise IngestError(
                f"{source.label}: column {column!r} (mapped to {target}) is not in the file; "
                f"its columns are: {_listing(present)}"
            )
        chosen[target] = column
    for target, candidates in (defaults or {}).items():
        if target in chosen:
            continue
        hit = next((c for c in candidates if c in present), None)
        if hit is None:
            hit = next((by_key[_auto_key(c)] for c in candidates if _auto_key(c) in by_key), None)
        if hit is not None:
            chosen[target] = hit
    if auto:
        for target in targets_of(table):
            if target not in chosen and target in by_key:
                chosen[target] = by_key[target]
    missing = [t for t in required if t not in chosen]
    if missing:
        raise _missing_column(source, table, missing[0], defaults or {})
    frame = source.frame.select(
        pl.col(ROW), *(pl.col(column).alias(target) for target, column in chosen.items())
    )
    return RawTable(table, source, frame, dict(chosen), probability_scale)


def _missing_column(
    source: SourceFile, table: str, target: str, defaults: Mapping[str, Sequence[str]]
) -> IngestError:
    prefix = "" if table == "deals" else f"{table}."
    expected = defaults.get(target)
    wanted = f"{expected[0]!r} column" if expected else f"column for {target!r}"
    present = source.columns
    hint = ""
    if len(present) == 1:
        hint = " The file has one column only: is it comma-separated?"
    return IngestError(
        f"{source.label}: required column {target!r} of {table} is missing: the file has no "
        f"{wanted}. Map your column with --map {prefix}{target}=<your column name> "
        f"(columns found: {_listing(present)}).{hint}"
    )


def _listing(names: Sequence[str], limit: int = 25) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
