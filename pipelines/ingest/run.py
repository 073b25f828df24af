"""``ingest_sources``: adapter -> validation -> quarantine file -> atomic store write."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
from rich.progress import Progress, TaskID

from features.contract import PipelineConfig
from features.store import Store, StoreWriteError, disk_full
from pipelines.console import csv_safe
from pipelines.ingest.checks import (
    ISSUE_SCHEMA,
    Rows,
    TimeWindow,
    parse_rows,
    plural,
    time_window,
)
from pipelines.ingest.deals import close_entries, finish_deals, prepare_deals
from pipelines.ingest.errors import IngestError
from pipelines.ingest.mapping import parse_mapping
from pipelines.ingest.related import (
    check_activities,
    check_reps,
    check_targets,
    finish_history,
    prepare_history,
)
from pipelines.ingest.report import IngestReport, TableCounts
from pipelines.ingest.salesforce import read_salesforce
from pipelines.ingest.sources import Bundle, read_canonical, read_flat, read_hubspot
from pipelines.ingest.stages import stage_aliases, stage_counts, unknown_stages_warning

__all__ = ["ingest_sources", "SOURCE_FORMATS"]

SOURCE_FORMATS = ("canonical", "flat", "salesforce", "hubspot")


def ingest_sources(
    sources: Sequence[Path | str],
    *,
    store: Store,
    source_format: str = "canonical",
    mapping: Sequence[str] = (),
    pipeline_path: Path | None = None,
    date_format: str | None = None,
    show_progress: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> IngestReport:
    """Convert ``sources`` into the canonical tables and make them the store's current version.

    Every row read ends in the store or in ``<data>/quarantine/<timestamp>.csv`` (one line per
    problem: ``source_file, table, row_number, column, value, reason``); the report gives
    read / loaded / quarantined per table, and the same counts go into the version's
    manifest (``ingest``). A source that cannot be used at all raises :class:`IngestError`
    before anything is written, so the previous version stays current.

    Parameters
    ----------
    sources
        Files or directories (see :mod:`pipelines.ingest.sources` per format).
    store
        Where to write; its ``data_dir`` also holds the quarantine files.
    source_format
        ``canonical``, ``flat``, ``salesforce`` or ``hubspot``.
    mapping
        ``--map`` values: TOML mapping files or ``target=source`` pairs.
    pipeline_path
        A pipeline config TOML; else ``pipeline.toml`` next to the source, else the
        format's default stages.
    date_format
        strftime format of the source's dates, tried before ISO 8601.
    show_progress
        Show a rich progress display on stderr.
    on_wait
        Called with a message when another ingest holds the store's writer lock (this one
        then waits for it; see docs/operations.md).

    Examples
    --------
    >>> report = ingest_sources(["export/"], store=Store("dealcast-data"))  # doctest: +SKIP
    >>> report.counts("deals").loaded  # doctest: +SKIP
    """
    if source_format not in SOURCE_FORMATS:
        raise IngestError(
            f"unknown source format {source_format!r}: use one of {', '.join(SOURCE_FORMATS)}"
        )
    paths = [Path(s) for s in sources]
    if not paths:
        raise IngestError("nothing to ingest: name a file or a directory")
    columns = parse_mapping(mapping)
    fmt = date_format or columns.date_format
    with _steps(show_progress) as steps:
        steps.note("reading " + ", ".join(str(p) for p in paths))
        if source_format == "canonical":
            bundle = read_canonical(paths, columns, pipeline_path)
        elif source_format == "flat":
            bundle = read_flat(paths, columns, pipeline_path)
        elif source_format == "hubspot":
            bundle = read_hubspot(paths, columns, pipeline_path)
        else:
            bundle = read_salesforce(paths, columns, pipeline_path, fmt)
        outcome = _validate(bundle, fmt, steps, export_day=_export_day(paths))
        quarantine = _write_quarantine(store.data_dir, outcome.issues)
        meta = {
            "ingest": {
                "source_format": source_format,
                "sources": bundle.sources,
                "tables": {c.table: c.as_dict() for c in outcome.counts},
                "quarantine_file": None if quarantine is None else str(quarantine),
                "warnings": outcome.warnings,
                "pipeline_origin": bundle.pipeline_origin,
            }
        }
        steps.note("writing the store")
        version_dir = store.write(
            outcome.tables, bundle.pipeline, truth=bundle.truth or None, meta=meta, on_wait=on_wait
        )
        steps.finish()
    return IngestReport(
        source_format=source_format,
        tables=tuple(outcome.counts),
        quarantine_file=quarantine,
        warnings=tuple(outcome.warnings),
        version=version_dir.name,
        version_dir=version_dir,
        pipeline_origin=bundle.pipeline_origin,
    )


@dataclass
class _Outcome:
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    counts: list[TableCounts] = field(default_factory=list)
    issues: list[pl.DataFrame] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, rows: Rows, clean: pl.DataFrame, issues: pl.DataFrame) -> None:
        quarantined = issues.get_column("row_number").n_unique() if issues.height else 0
        self.counts.append(
            TableCounts(rows.table, rows.label, rows.read, clean.height, quarantined)
        )
        self.issues.append(issues)


def _export_day(paths: Sequence[Path]) -> date:
    """The day the export was taken: the newest modification time of the sources, or today
    when that is later (a file restored from a backup keeps an old mtime)."""
    stamps = []
    for path in paths:
        try:
            stamps.append(path.stat().st_mtime)
            if path.is_dir():
                stamps += [p.stat().st_mtime for p in path.iterdir() if p.is_file()]
        except OSError:
            continue
    today = datetime.now(UTC).date()
    newest = max(stamps, default=None)
    if newest is None:
        return today
    return max(today, datetime.fromtimestamp(newest, UTC).date())


def _validate(
    bundle: Bundle, date_format: str | None, steps: _Steps, *, export_day: date | None = None
) -> _Outcome:
    """Check every table; each source frame is released once parsed (memory)."""
    window = time_window(export_day or datetime.now(UTC).date())
    out = _Outcome(warnings=list(bundle.warnings))
    clean_deals = _deals_and_history(bundle, date_format, steps, out, window)
    for table in ("activities", "reps", "targets"):
        if table not in bundle.tables:
            continue
        steps.note(f"checking {table}")
        rows = parse_rows(bundle.tables.pop(table), date_format, window=window)
        if table == "activities":
            clean, issues = check_activities(rows, clean_deals)
        elif table == "reps":
            clean, issues = check_reps(rows)
        else:
            clean, issues = check_targets(rows)
        out.add(rows, clean, issues)
        out.tables[table] = clean
        if rows.read == 0:
            out.warnings.append(
                f"{rows.label} has a header but no rows: {table} loaded as an empty table"
            )
        del rows
    return out


def _deals_and_history(
    bundle: Bundle,
    date_format: str | None,
    steps: _Steps,
    out: _Outcome,
    window: TimeWindow,
) -> pl.DataFrame:
    """Check deals and stage history together (close times, history order); clean deals."""
    pipeline = bundle.pipeline
    steps.note("checking deals")
    deals = parse_rows(bundle.tables.pop("deals"), date_format, window=window)
    history = None
    if "stage_history" in bundle.tables:
        history = parse_rows(bundle.tables.pop("stage_history"), date_format, window=window)
    stage_frames = [r.frame for r in (deals, history) if r is not None]
    aliases = stage_aliases(stage_counts(stage_frames), pipeline)
    prepare_deals(deals, pipeline, aliases)
    entries = None
    if history is not None:
        prepare_history(history, pipeline, aliases)
        entries = close_entries(history)
    unknown = _unknown_stages(stage_frames_after(deals, history), pipeline)
    clean_deals, issues, warnings = finish_deals(deals, pipeline, entries)
    out.add(deals, clean_deals, issues)
    out.tables["deals"] = clean_deals
    out.warnings += warnings
    if unknown:
        out.warnings.append(unknown_stages_warning(unknown, bundle.pipeline_origin))
    if history is None:
        out.warnings.append(
            "no stage_history in the source: the store derives a minimal one from deals "
            "(open at created_at, closed at closed_at); features that need real history say so"
        )
        return clean_deals
    steps.note("checking stage_history")
    clean, issues = finish_history(history, clean_deals)
    out.add(history, clean, issues)
    if not clean.height:
        out.warnings.append(
            f"{history.label}: no stage_history row was loaded; the store derives a "
            "minimal history from deals instead (features that need real history say so)"
        )
        return clean_deals
    out.tables["stage_history"] = clean
    without = clean_deals.join(clean, on="deal_id", how="anti").height
    if without:
        out.warnings.append(
            f"{plural(without, 'loaded deal')} without a stage_history row (none in the "
            "source, or all quarantined): as-of views cannot tell their stage over time"
        )
    return clean_deals


def stage_frames_after(deals: Rows, history: Rows | None) -> list[pl.DataFrame]:
    """The stage columns after aliasing, for the unknown-stage count."""
    return [r.frame.select("stage") for r in (deals, history) if r is not None]


def _unknown_stages(frames: list[pl.DataFrame], pipeline: PipelineConfig) -> dict[str, int]:
    counts = stage_counts(frames)
    return {name: n for name, n in counts.items() if name not in pipeline.names}


def _write_quarantine(data_dir: Path, issues: list[pl.DataFrame]) -> Path | None:
    """Write every quarantine line to ``<data>/quarantine/<UTC timestamp>.csv`` (or nothing)."""
    frames = [f for f in issues if f.height]
    if not frames:
        return None
    folder = data_dir / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}.csv"
    tmp = folder / f".{stamp}-p{os.getpid()}.csv.tmp"
    try:
        csv_safe(pl.concat(frames).select(list(ISSUE_SCHEMA))).write_csv(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc):
            raise StoreWriteError(
                errno.ENOSPC,
                f"cannot write the quarantine file in {folder}: no space left on the device; "
                "nothing changed (the previous store version is still current): free some "
                "space and run the ingest again",
            ) from exc
        raise
    return path


class _Steps:
    """A rich progress line per step (reading, each table's checks, the store write)."""

    def __init__(self, bar: Progress | None) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def note(self, description: str) -> None:
        if self._bar is None:
            return
        if self._task is not None:
            self._bar.update(self._task, completed=1)
        self._task = self._bar.add_task(description, total=1)

    def finish(self) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=1)


@contextmanager
def _steps(show: bool) -> Iterator[_Steps]:
    if not show:
        yield _Steps(None)
        return
    from pipelines.console import progress

    with progress(transient=True) as bar:
        yield _Steps(bar)
