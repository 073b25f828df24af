"""Adapters: a source on disk -> raw canonical tables plus the pipeline config to check them by.

- ``canonical``: a directory (or files) with ``<table>.csv|.parquet`` for the tables of the
  data contract, optionally ``pipeline.toml`` and the simulator's evaluation-only
  ``truth_*.csv|.parquet`` (stored unchanged as truth tables, keyed by file name).
- ``flat``: one "one row per opportunity" report. Columns are found by ``--map`` or by
  their canonical names (any case: ``Deal ID`` is ``deal_id``); a single "Close Date"
  maps to the ``close_date`` target (close date of won/lost deals, expected close date of
  open ones). Unmapped columns are listed in a warning and not stored. Columns of the
  ``reps`` table may be mapped too (``--map reps.team=Manager``): the reps table is then
  built from the deal rows, one rep per owner (see :func:`reps_from_deal_rows`).
- ``hubspot``: a HubSpot deals export (see :data:`HUBSPOT_COLUMNS`), checked by the
  shipped ``hubspot.toml`` pipeline unless ``--pipeline`` is given.
- ``salesforce``: see :mod:`pipelines.ingest.salesforce`.

The pipeline config is ``--pipeline`` if given, else ``pipeline.toml`` next to the source,
else the format's default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import polars as pl

from features.contract import REQUIRED, SCHEMAS, PipelineConfig
from pipelines.ingest.checks import plural
from pipelines.ingest.errors import IngestError
from pipelines.ingest.mapping import CLOSE_DATE, ColumnMap, RawTable, select_columns
from pipelines.ingest.reading import ROW, SourceFile, is_table_file, read_file
from pipelines.ingest.stages import load_pipeline

__all__ = [
    "Bundle",
    "HUBSPOT_COLUMNS",
    "read_canonical",
    "read_flat",
    "read_hubspot",
    "reps_from_deal_rows",
    "shipped_pipeline",
    "single_file",
]

_DEALS_REQUIRED = REQUIRED["deals"]


@dataclass
class Bundle:
    """What an adapter hands to validation."""

    tables: dict[str, RawTable]
    pipeline: PipelineConfig
    pipeline_origin: str
    truth: dict[str, pl.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def shipped_pipeline(name: str) -> PipelineConfig:
    """A pipeline config shipped with this package (``salesforce`` or ``hubspot``)."""
    text = resources.files("pipelines.ingest").joinpath(f"{name}.toml").read_text("utf-8")
    return PipelineConfig.from_dict(tomllib.loads(text), origin=f"{name}.toml")


def _table_required(table: str, rows: int) -> Sequence[str]:
    return REQUIRED[table] if rows else ()


# -- canonical ------------------------------------------------------------------------------


def read_canonical(
    sources: Sequence[Path], mapping: ColumnMap, pipeline_path: Path | None
) -> Bundle:
    """Read ``<table>.csv|.parquet`` files (and ``truth_*``) from directories or file paths."""
    files: dict[str, Path] = {}
    truth_files: dict[str, Path] = {}
    warnings: list[str] = []
    source_dir: Path | None = None
    for source in sources:
        if source.is_dir():
            candidates, listed = sorted(p for p in source.iterdir() if is_table_file(p)), False
            source_dir = source_dir or source
        elif source.is_file():
            candidates, listed = [source], True
        else:
            raise IngestError(f"{source}: no such file or directory")
        for path in candidates:
            stem = path.stem.lower()
            target = (
                files if stem in SCHEMAS else truth_files if stem.startswith("truth_") else None
            )
            if target is None:
                if listed:
                    raise IngestError(
                        f"{path}: not a canonical table name; name it <table>.csv or "
                        f"<table>.parquet with table one of {', '.join(SCHEMAS)} "
                        "(or use --source-format flat|salesforce|hubspot for a CRM export)"
                    )
                warnings.append(f"ignored {path}: not a canonical table name")
                continue
            if stem in target:
                raise IngestError(
                    f"two files for {stem}: {target[stem]} and {path}; keep one of them"
                )
            target[stem] = path
    if "deals" not in files:
        raise IngestError(
            f"no deals table in {', '.join(map(str, sources))}: the canonical format needs "
            "deals.csv or deals.parquet (one file per table); for a CRM export use "
            "--source-format flat, salesforce or hubspot"
        )
    if source_dir is None:
        source_dir = files["deals"].parent
    pipeline, origin = load_pipeline(pipeline_path, source_dir)
    tables: dict[str, RawTable] = {}
    for table in SCHEMAS:
        if table not in files:
            continue
        found = read_file(files[table], required=table == "deals")
        tables[table] = select_columns(
            found,
            table,
            explicit=mapping.for_table(table),
            required=_table_required(table, found.frame.height),
        )
        warnings += _unmapped(tables[table])
    truth = {name: _read_truth(path) for name, path in truth_files.items()}
    labels = [str(p) for p in (*files.values(), *truth_files.values())]
    return Bundle(tables, pipeline, origin, truth, warnings, labels)


def _read_truth(path: Path) -> pl.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, try_parse_dates=True, infer_schema_length=10000)
    except Exception as exc:  # any polars read error: the file is unusable as is
        raise IngestError(f"{path}: cannot read this truth table: {exc}") from None


# -- flat -----------------------------------------------------------------------------------


def single_file(sources: Sequence[Path], what: str) -> Path:
    """The one file of a single-file format (a directory must hold exactly one CSV/Parquet)."""
    if len(sources) != 1:
        raise IngestError(f"{what} takes one file, got {len(sources)}: ingest them one by one")
    source = sources[0]
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if is_table_file(p))
        if len(found) != 1:
            raise IngestError(
                f"{source}: {what} takes one CSV or Parquet file, this directory holds "
                f"{len(found)}; name the file instead"
            )
        return found[0]
    if not source.exists():
        raise IngestError(f"{source}: no such file")
    return source


def read_flat(sources: Sequence[Path], mapping: ColumnMap, pipeline_path: Path | None) -> Bundle:
    """A one-row-per-opportunity export, columns by ``--map`` or by canonical names."""
    path = single_file(sources, "--source-format flat")
    others = sorted(set(mapping.columns) - {"deals", "reps"})
    if others:
        raise IngestError(
            f"--source-format flat reads one row per deal: --map may name columns of deals and "
            f"reps (e.g. --map reps.team=Manager), not of {', '.join(others)}; ingest those "
            "tables with --source-format canonical"
        )
    source = read_file(path, required=True)
    raw = select_columns(
        source, "deals", explicit=mapping.for_table("deals"), required=_DEALS_REQUIRED
    )
    tables = {"deals": raw}
    warnings: list[str] = []
    rep_columns = mapping.for_table("reps")
    if rep_columns:
        tables["reps"], conflicts = reps_from_deal_rows(source, raw, rep_columns)
        warnings += conflicts
    pipeline, origin = load_pipeline(pipeline_path, path.parent)
    warnings = _unmapped(raw, ignore=tuple(rep_columns.values())) + warnings
    return Bundle(tables, pipeline, origin, warnings=warnings, sources=[str(path)])


def reps_from_deal_rows(
    source: SourceFile, deals: RawTable, columns: dict[str, str]
) -> tuple[RawTable, list[str]]:
    """The reps table of a flat export: one row per owner, from the deal rows it owns.

    ``columns`` maps canonical ``reps`` columns (``team``, ``manager_id``, ``region``,
    ``name``, ``hired_at``) to source columns; ``owner_id`` is the deals' owner column unless
    mapped too. Each owner gets, per column, the most frequent non-empty value on its rows
    (ties: the value of its latest row in the file); owners seen with several values are
    reported in a warning, one per column, not rejected. Rows without an owner add no rep
    (the deal itself is quarantined). A rep's ``_row`` is its first row in the file, so its
    quarantine lines point at a real row. Values are validated like any reps table.
    """
    explicit = {"owner_id": deals.origin["owner_id"], **columns}
    raw = select_columns(source, "reps", explicit=explicit, auto=False, required=("owner_id",))
    rows = raw.frame.filter(pl.col("owner_id").is_not_null())
    reps = rows.group_by("owner_id").agg(pl.col(ROW).min()).sort(ROW)
    warnings: list[str] = []
    for target in (t for t in raw.frame.columns if t not in (ROW, "owner_id")):
        seen = (
            rows.filter(pl.col(target).is_not_null())
            .group_by("owner_id", target)
            .agg(pl.len().alias("_n"), pl.col(ROW).max().alias("_last"))
            .sort(["owner_id", "_n", "_last"], descending=[False, True, True])
        )
        reps = reps.join(
            seen.group_by("owner_id", maintain_order=True).agg(pl.col(target).first()),
            on="owner_id",
            how="left",
        )
        warnings += _rep_conflicts(seen, target, raw.column_label(target), source.label)
    frame = reps.select(raw.frame.columns)
    return RawTable("reps", source, frame, raw.origin, raw.probability_scale), warnings


def _rep_conflicts(seen: pl.DataFrame, target: str, column: str, label: str) -> list[str]:
    """A warning naming the owners whose rows disagree on ``target`` (none if they agree)."""
    several = seen.filter(pl.len().over("owner_id") > 1)
    if several.is_empty():
        return []
    owners = several.get_column("owner_id").unique(maintain_order=True).to_list()
    examples = []
    for owner in owners[:3]:
        values = several.filter(pl.col("owner_id") == owner)
        shown = ", ".join(f"{v!r} x{n}" for v, n in values.select(target, "_n").rows())
        examples.append(f"{owner!r}: {shown}")
    more = f" and {len(owners) - 3} more" if len(owners) > 3 else ""
    return [
        f"{label}: {plural(len(owners), 'owner')} seen with several {column!r} values "
        f"(reps.{target}); each keeps its most frequent one (ties: its latest row): "
        + "; ".join(examples)
        + more
    ]


def _unmapped(raw: RawTable, ignore: Sequence[str] = ()) -> list[str]:
    used = set(raw.origin.values()) | set(ignore)
    rest = [c for c in raw.source.columns if c not in used]
    if not rest:
        return []
    shown = ", ".join(repr(c) for c in rest[:15]) + (" ..." if len(rest) > 15 else "")
    return [
        f"{raw.label}: {plural(len(rest), 'column')} not mapped, not stored: {shown} "
        "(map one with --map <column>=<source column>, e.g. --map region='Sales Region')"
    ]


# -- HubSpot --------------------------------------------------------------------------------

HUBSPOT_COLUMNS: dict[str, tuple[str, ...]] = {
    "deal_id": ("Record ID", "Deal ID", "hs_object_id"),
    "stage": ("Deal Stage", "dealstage"),
    "amount": ("Amount", "amount"),
    "created_at": ("Create Date", "createdate"),
    CLOSE_DATE: ("Close Date", "closedate"),
    "owner_id": ("Deal owner", "Deal Owner", "hubspot_owner_id"),
    "deal_type": ("Deal Type", "dealtype"),
    "forecast_category": ("Forecast category", "hs_manual_forecast_category"),
    "crm_probability": ("Deal probability", "hs_deal_stage_probability"),
    "lost_reason": ("Closed Lost Reason", "closed_lost_reason"),
    "account_id": ("Associated Company ID", "Associated Company"),
}
"""Canonical column -> HubSpot export column names (labels, then internal names)."""


def read_hubspot(sources: Sequence[Path], mapping: ColumnMap, pipeline_path: Path | None) -> Bundle:
    """A HubSpot deals export: "Close Date" is the close of won/lost deals, else expected."""
    path = single_file(sources, "--source-format hubspot")
    source = read_file(path, required=True)
    raw = select_columns(
        source,
        "deals",
        explicit=mapping.for_table("deals"),
        defaults=HUBSPOT_COLUMNS,
        auto=False,
        required=_DEALS_REQUIRED,
    )
    pipeline, origin = load_pipeline(
        pipeline_path, path.parent, shipped_pipeline("hubspot"), "HubSpot's default stages"
    )
    warnings = _unmapped(raw, ignore=("Deal Name", "Pipeline"))
    if "Pipeline" in source.columns:
        names = source.frame.get_column("Pipeline").drop_nulls().unique().sort().to_list()
        if len(names) > 1:
            warnings.append(
                f"{path}: the export holds {len(names)} HubSpot pipelines ({', '.join(names)}); "
                "their stages are all checked against one pipeline config: export one "
                "pipeline at a time if their stages differ"
            )
    return Bundle({"deals": raw}, pipeline, origin, warnings=warnings, sources=[str(path)])
