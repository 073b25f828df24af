"""What every CLI command shares: the console, the ``--data`` option, output formats."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.settings import Settings

__all__ = [
    "console",
    "err_console",
    "DataOption",
    "OutputFormat",
    "data_dir",
    "progress",
    "render_table",
    "emit",
    "fail",
    "csv_safe",
    "plain_text",
]

# Piped output (CI logs, files) gets a wide page instead of rich's 80 columns, so tables of
# several periods stay readable; a terminal keeps its own width.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Data directory (default ./dealcast-data, or $DEALCAST_DATA).",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def data_dir(data: Path | None) -> Path:
    """``--data`` if given, else the settings (``DEALCAST_DATA``, else ``./dealcast-data``)."""
    return data if data is not None else Settings().data


@contextmanager
def progress(*, transient: bool = False) -> Iterator[Progress]:
    """A rich progress display on stderr (so stdout stays clean for json/csv output)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    ) as bar:
        yield bar


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""Cell prefixes a spreadsheet may run as a formula (OWASP "CSV injection")."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Control characters (ANSI escapes start with ESC, \x1b) except tab and newline."""


def csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every text cell that starts like a formula prefixed with ``'``.

    Numbers stay numbers: numeric columns, and a text cell that is just a number (``-5``,
    ``+1.5e3``: no formula can hide in it), are left alone; so a spreadsheet shows
    ``=cmd|...`` as text instead of running it.
    """
    risky = "^[" + re.escape("".join(_FORMULA_START)) + "]"
    number = r"^[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(risky) & ~pl.col(name).str.contains(number))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )


def plain_text(value: object) -> str:
    """``value`` as text safe for a terminal: control characters (ANSI escapes) removed and
    rich markup escaped, so data cannot recolour, move the cursor or fake output."""
    return escape(_CONTROL.sub("", str(value)))


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.1f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return plain_text(value)


def render_table(frame: pl.DataFrame, *, title: str | None = None, limit: int = 50) -> Table:
    """A rich table of the first ``limit`` rows of ``frame``."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for name, dtype in frame.schema.items():
        table.add_column(plain_text(name), justify="right" if dtype.is_numeric() else "left")
    for row in frame.head(limit).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    if frame.height > limit:
        table.caption = f"{limit} of {frame.height} rows shown"
    return table


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def emit(
    frame: pl.DataFrame,
    fmt: OutputFormat | str,
    *,
    title: str | None = None,
    out: Path | None = None,
) -> None:
    """Write ``frame`` as a rich table, JSON records or CSV, to ``out`` or stdout."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.table:
        console.print(render_table(frame, title=title))
        return
    if fmt is OutputFormat.json:
        text = json.dumps(frame.to_dicts(), default=_json_default, indent=1)
    else:
        text = csv_safe(frame).write_csv()
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        out.write_text(text, encoding="utf-8")


def fail(message: str, *, code: int = 2) -> typer.Exit:
    """Print a clear error and return the ``typer.Exit`` to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
