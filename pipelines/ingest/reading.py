"""Reading one source file: CSV as all-string columns with 1-based row numbers, or Parquet.

A CSV is read with every column as a string (no type guessing), values stripped of
surrounding blanks, empty strings as nulls. ``_row`` numbers the data rows from 1 (the header
is not a row), so row N is line N + 1 of a file without multi-line values; blank lines keep
their number but are not rows (they are neither loaded nor quarantined).

File-level problems raise :class:`IngestError`: a 0-byte file, a header-only file of a
required table, a file that is not UTF-8 (UTF-16/32, or invalid bytes in the header or in
many rows), a NUL byte in the header (a NUL in a data row quarantines that row), an
unreadable CSV (e.g. a row with more fields than the header) and a file with one column
whose name holds another delimiter. Isolated invalid UTF-8 bytes are replaced by
U+FFFD and the file is marked ``lossy``: the validators quarantine those rows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines.ingest.errors import IngestError

__all__ = ["ROW", "REPLACEMENT", "SourceFile", "read_file", "is_table_file"]

ROW = "_row"
"""The row-number column: 1-based data rows, header excluded."""

REPLACEMENT = "\ufffd"
"""What an invalid UTF-8 byte becomes in a lossily read CSV."""

_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
_OTHER_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "pipes"}
_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class SourceFile:
    """The rows of one source file: ``_row`` first, then the file's own columns."""

    path: Path
    frame: pl.DataFrame
    lossy: bool = False
    """True when invalid UTF-8 bytes were replaced by U+FFFD (those rows get quarantined)."""

    @property
    def columns(self) -> list[str]:
        return [c for c in self.frame.columns if c != ROW]

    @property
    def label(self) -> str:
        return str(self.path)


def is_table_file(path: Path) -> bool:
    """Whether ``path`` is a file dealcast can read (``.csv`` or ``.parquet``)."""
    return path.is_file() and path.suffix.lower() in _SUFFIXES


def read_file(path: Path, *, required: bool) -> SourceFile:
    """Read ``path`` (``.csv`` or ``.parquet``) or raise :class:`IngestError` naming the fix.

    ``required`` says whether the file's table must have rows: a header-only file of a
    required table is an error, of an optional one an empty frame.
    """
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path} is empty (0 bytes): export it again, with its header row")
    if path.suffix.lower() == ".parquet":
        source = _read_parquet(path)
    else:
        source = _read_csv(path)
    if source.frame.height == 0 and required:
        raise IngestError(
            f"{path} has a header but no data rows: this table is required; "
            "export it again with its rows"
        )
    return source


def _read_parquet(path: Path) -> SourceFile:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise IngestError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from None
    return SourceFile(path, frame.with_row_index(ROW, offset=1))


def _read_csv(path: Path) -> SourceFile:
    with path.open("rb") as handle:
        head = handle.read(65536)
    for bom, name in _BOMS.items():
        if head.startswith(bom):
            raise IngestError(f"{path} is encoded as {name}, not UTF-8: re-export it as UTF-8")
    if _looks_utf16(head):
        raise IngestError(
            f"{path} holds NUL bytes between most characters: it looks UTF-16 encoded, not "
            "UTF-8; re-export it as UTF-8"
        )
    header_end = head.find(b"\n")
    header = head if header_end < 0 else head[:header_end]
    if 0 in header:
        raise IngestError(
            f"{path}, line 1 (the header) contains a NUL byte at byte {header.index(0)}: "
            "fix the file or re-export it"
        )
    lossy = False
    try:
        frame = _polars_csv(path, "utf8")
    except pl.exceptions.ComputeError as exc:
        if "utf-8" not in str(exc).lower() and "utf8" not in str(exc).lower():
            raise _unreadable(path, exc) from None
        frame, lossy = _polars_csv(path, "utf8-lossy"), True
    except pl.exceptions.PolarsError as exc:
        raise _unreadable(path, exc) from None
    frame = _tidy(frame)
    _check_delimiter(path, frame)
    if lossy:
        _check_mostly_utf8(path, frame)
    return SourceFile(path, frame, lossy=lossy)


def _looks_utf16(head: bytes) -> bool:
    """UTF-16/32 without a BOM: NUL bytes in a large share of the (mostly ASCII) text.

    A stray NUL in a UTF-8 file is not that: its rows are read and quarantined ("contains a
    NUL byte", with the row number).
    """
    if not head:
        return False
    sample = head[:4096]
    return sample.count(0) * 5 >= len(sample)


def _polars_csv(path: Path, encoding: str) -> pl.DataFrame:
    try:
        return pl.read_csv(
            path,
            infer_schema=False,
            row_index_name=ROW,
            row_index_offset=1,
            encoding=encoding,
        )
    except pl.exceptions.NoDataError:
        raise IngestError(f"{path} has no header row: export it again with one") from None
    except pl.exceptions.ComputeError as exc:
        if encoding != "utf8" or "utf" not in str(exc).lower():
            raise _unreadable(path, exc) from None
        raise


def _tidy(frame: pl.DataFrame) -> pl.DataFrame:
    """Strip names and values, empty values to null, drop blank lines."""
    frame = frame.rename({c: c.strip() for c in frame.columns if c != ROW and c != c.strip()})
    values = [c for c in frame.columns if c != ROW]
    frame = frame.with_columns(
        pl.when(pl.col(c).str.strip_chars() != "").then(pl.col(c).str.strip_chars()).alias(c)
        for c in values
    )
    if not values:
        return frame
    return frame.filter(pl.any_horizontal(pl.col(values).is_not_null()))


def _check_delimiter(path: Path, frame: pl.DataFrame) -> None:
    names = [c for c in frame.columns if c != ROW]
    if len(names) != 1:
        return
    for char, word in _OTHER_DELIMITERS.items():
        if char in names[0]:
            raise IngestError(
                f"{path} has one column only, {names[0][:60]!r}: its values are separated by "
                f"{word}, not commas; re-export it as comma-separated CSV"
            )


def _check_mostly_utf8(path: Path, frame: pl.DataFrame) -> None:
    names = [c for c in frame.columns if c != ROW]
    if any(REPLACEMENT in name for name in names):
        raise IngestError(
            f"{path} is not UTF-8 (its header holds bytes that are not UTF-8, e.g. Latin-1 "
            "or Windows-1252): re-export it as UTF-8"
        )
    bad = frame.select(
        pl.any_horizontal(pl.col(names).str.contains(REPLACEMENT, literal=True).fill_null(False))
        .sum()
        .alias("bad")
    ).item()
    if bad > 3 and bad * 10 > frame.height:
        raise IngestError(
            f"{path} is not UTF-8: {bad:,} of {frame.height:,} rows hold bytes that are not "
            "UTF-8 (e.g. Latin-1 or Windows-1252 text); re-export it as UTF-8"
        )


def _unreadable(path: Path, exc: Exception) -> IngestError:
    text = str(exc)
    if "more fields" in text:
        where = _first_ragged_row(path)
        at = f" (data row {where})" if where else ""
        return IngestError(
            f"{path}: a row has more fields than the header{at}; a value with a comma "
            "must be quoted: fix the row or re-export the file"
        )
    return IngestError(f"{path} cannot be read as CSV: {_first_line(exc)}")


def _first_ragged_row(path: Path) -> int | None:
    """The 1-based data row with more fields than the header (error path only)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    for number, row in enumerate((r for r in reader if any(v.strip() for v in r)), start=1):
        if len(row) > len(header):
            return number
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
