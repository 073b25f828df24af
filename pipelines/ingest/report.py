"""What an ingest did: rows read / loaded / quarantined per table, warnings, the version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from pipelines.console import console

__all__ = ["IngestReport", "TableCounts", "print_report"]


@dataclass(frozen=True)
class TableCounts:
    """Rows of one canonical table: ``loaded + quarantined == read`` always."""

    table: str
    source: str
    read: int
    loaded: int
    quarantined: int

    def __post_init__(self) -> None:
        if self.loaded + self.quarantined != self.read:
            raise AssertionError(
                f"{self.table} from {self.source}: loaded {self.loaded} + quarantined "
                f"{self.quarantined} != read {self.read} (an ingest bug: please report it)"
            )

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "read": self.read,
            "loaded": self.loaded,
            "quarantined": self.quarantined,
        }


@dataclass(frozen=True)
class IngestReport:
    """The outcome of :func:`pipelines.ingest.ingest_sources`.

    ``tables`` has one entry per canonical table read from the source, ``quarantine_file`` the
    CSV of rejected rows (``None`` when every row was loaded), ``version`` the store version
    written and ``pipeline_origin`` where the stage config came from.
    """

    source_format: str
    tables: tuple[TableCounts, ...]
    quarantine_file: Path | None
    warnings: tuple[str, ...]
    version: str
    version_dir: Path
    pipeline_origin: str

    def counts(self, table: str) -> TableCounts:
        """The counts of ``table`` (``KeyError`` when the source had no such table)."""
        for entry in self.tables:
            if entry.table == table:
                return entry
        raise KeyError(f"no {table} table in this ingest (tables: {self.table_names})")

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(entry.table for entry in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(entry.quarantined for entry in self.tables)


def print_report(report: IngestReport) -> None:
    """Print the per-table counts, the warnings and where things went, on the console."""
    table = Table(title=f"ingest ({report.source_format})", header_style="bold")
    table.add_column("table")
    table.add_column("source")
    for name in ("read", "loaded", "quarantined"):
        table.add_column(name, justify="right")
    for entry in report.tables:
        table.add_row(
            entry.table,
            escape(entry.source),
            f"{entry.read:,}",
            f"{entry.loaded:,}",
            f"[red]{entry.quarantined:,}[/]" if entry.quarantined else "0",
        )
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if report.quarantine_file is not None:
        rows = f"{report.quarantined:,} row" + ("" if report.quarantined == 1 else "s")
        where = escape(str(report.quarantine_file))
        console.print(f"{rows} quarantined: see {where}", highlight=False)
    console.print(f"pipeline config: {escape(report.pipeline_origin)}", highlight=False)
    console.print(
        f"store version {report.version} written to {escape(str(report.version_dir))}",
        highlight=False,
    )
