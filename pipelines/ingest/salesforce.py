"""The Salesforce adapter: ``Opportunity`` + optional ``OpportunityHistory`` exports.

Files: a directory holding ``Opportunity.csv`` (or ``.parquet``) and optionally
``OpportunityHistory.csv``, or those files named directly (a single file with another name
is taken as the opportunities). Standard API field names are read (:data:`OPPORTUNITY` and
:data:`HISTORY`); ``--map`` overrides or adds any of them (``--map region=Region__c``,
``--map stage_history.changed_at=CreatedDate``).

Conversions:

- ``Probability`` (0-100) -> ``crm_probability`` (0-1); ``ForecastCategoryName`` Pipeline,
  Best Case, Commit, Omitted -> pipeline, best_case, commit, omitted, and Closed -> null
  (a closed deal's stage says it all); ``Type`` New Customer / Existing Customer - Upgrade /
  - Replacement / - Downgrade -> new / expansion / renewal / renewal; ``LeadSource`` ->
  ``source``.
- Salesforce has no "closed at" timestamp, only the ``CloseDate`` date: for won/lost deals
  ``closed_at`` is ``CloseDate`` at 00:00 UTC, moved to the time the history records the
  final stage when that is later (see :mod:`pipelines.ingest.deals`); for open deals
  ``CloseDate`` is the ``expected_close_date``. In the history, ``CreatedDate`` is the
  ``changed_at`` of each row and ``CloseDate`` its expected close date.
- ``IsClosed`` / ``IsWon`` must agree with the stage's kind (else the row is quarantined);
  ``IsDeleted`` rows are quarantined.

Stages: ``--pipeline`` (or ``pipeline.toml`` next to the export) else the shipped
``salesforce.toml`` (the standard stages). A stage of the data that the config lacks is
added with its kind from ``IsClosed`` / ``IsWon`` (consistent over its opportunities; a stage
seen only in the history is open when some deal moved on from it), its probability from the
median ``Probability``, and, if open, its place in the funnel from the order deals reach it
in the history (else from its probability). A warning lists what was added.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from features.contract import REQUIRED, TS, PipelineConfig, Stage, StageKind
from pipelines.ingest.errors import IngestError
from pipelines.ingest.mapping import CLOSE_DATE, ColumnMap, RawTable, select_columns
from pipelines.ingest.parsing import cast_typed, parse_bool, parse_float, parse_timestamp
from pipelines.ingest.reading import is_table_file, read_file
from pipelines.ingest.sources import Bundle, shipped_pipeline
from pipelines.ingest.stages import load_pipeline, stage_aliases

__all__ = ["OPPORTUNITY", "HISTORY", "read_salesforce", "derive_pipeline"]

OPPORTUNITY: dict[str, tuple[str, ...]] = {
    "deal_id": ("Id",),
    "owner_id": ("OwnerId",),
    "account_id": ("AccountId",),
    "stage": ("StageName",),
    "amount": ("Amount",),
    CLOSE_DATE: ("CloseDate",),
    "created_at": ("CreatedDate",),
    "crm_probability": ("Probability",),
    "forecast_category": ("ForecastCategoryName", "ForecastCategory"),
    "source": ("LeadSource",),
    "deal_type": ("Type",),
    "_is_closed": ("IsClosed",),
    "_is_won": ("IsWon",),
    "_is_deleted": ("IsDeleted",),
}
"""Canonical column -> Opportunity field."""

HISTORY: dict[str, tuple[str, ...]] = {
    "deal_id": ("OpportunityId",),
    "changed_at": ("CreatedDate",),
    "stage": ("StageName",),
    "amount": ("Amount",),
    "expected_close_date": ("CloseDate",),
    "forecast_category": ("ForecastCategory", "ForecastCategoryName"),
    "_probability": ("Probability",),
}
"""Canonical stage_history column -> OpportunityHistory field."""


def _kind_of_file(path: Path) -> str | None:
    key = re.sub(r"[^a-z]", "", path.stem.lower())
    if key in ("opportunity", "opportunities"):
        return "deals"
    if key in ("opportunityhistory", "opportunityhistories"):
        return "stage_history"
    return None


def _find_files(sources: Sequence[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    unnamed: list[Path] = []
    for source in sources:
        if source.is_dir():
            paths = [p for p in sorted(source.iterdir()) if is_table_file(p)]
            named = [(p, _kind_of_file(p)) for p in paths]
            listed = False
        elif source.is_file():
            named, listed = [(source, _kind_of_file(source))], True
        else:
            raise IngestError(f"{source}: no such file or directory")
        for path, table in named:
            if table is None:
                if listed:
                    unnamed.append(path)
                continue
            if table in found:
                raise IngestError(f"two files for {table}: {found[table]} and {path}")
            found[table] = path
    if unnamed and "deals" not in found and len(unnamed) == 1:
        found["deals"] = unnamed.pop()
    if unnamed:
        raise IngestError(
            f"{unnamed[0]}: not Opportunity or OpportunityHistory; name the files "
            "Opportunity.csv and OpportunityHistory.csv"
        )
    if "deals" not in found:
        raise IngestError(
            f"no Opportunity export in {', '.join(map(str, sources))}: "
            "expected Opportunity.csv (and optionally OpportunityHistory.csv)"
        )
    return found


def read_salesforce(
    sources: Sequence[Path],
    mapping: ColumnMap,
    pipeline_path: Path | None,
    date_format: str | None = None,
) -> Bundle:
    """Opportunity (+ OpportunityHistory) exports -> raw deals (+ stage_history)."""
    files = _find_files(sources)
    opportunities = read_file(files["deals"], required=True)
    tables = {
        "deals": select_columns(
            opportunities,
            "deals",
            explicit=mapping.for_table("deals"),
            defaults=OPPORTUNITY,
            auto=False,
            required=REQUIRED["deals"],
            probability_scale=0.01,
        )
    }
    if "stage_history" in files:
        history = read_file(files["stage_history"], required=False)
        tables["stage_history"] = select_columns(
            history,
            "stage_history",
            explicit=mapping.for_table("stage_history"),
            defaults=HISTORY,
            auto=False,
            required=REQUIRED["stage_history"] if history.frame.height else (),
        )
    base, origin = load_pipeline(
        pipeline_path,
        files["deals"].parent,
        shipped_pipeline("salesforce"),
        "Salesforce's standard stages",
    )
    pipeline, added = derive_pipeline(
        base, tables["deals"].frame, _frame(tables.get("stage_history")), date_format
    )
    warnings = []
    if added:
        warnings.append(
            f"the pipeline config ({origin}) lacked {len(added)} stage(s) of the data, added "
            "as: " + "; ".join(added) + ". Check them in store/current/pipeline.toml; to "
            "change them, edit a copy and ingest again with --pipeline FILE"
        )
        origin += " + stages derived from the data"
    return Bundle(
        tables, pipeline, origin, warnings=warnings, sources=[str(p) for p in files.values()]
    )


def _frame(raw: RawTable | None) -> pl.DataFrame | None:
    return raw.frame if raw is not None and raw.frame.height else None


def derive_pipeline(
    base: PipelineConfig,
    opportunities: pl.DataFrame,
    history: pl.DataFrame | None,
    date_format: str | None = None,
) -> tuple[PipelineConfig, list[str]]:
    """``base`` plus the stages of the data it lacks; and one phrase per added stage.

    ``opportunities`` has ``stage`` and, when exported, ``_is_closed``, ``_is_won`` and
    ``crm_probability`` (0-100 strings); ``history`` has ``deal_id, changed_at, stage`` and
    maybe ``_probability``. Stages whose kind cannot be told stay unknown (quarantined).
    """
    observed = set(opportunities.get_column("stage").drop_nulls().unique().to_list())
    if history is not None:
        observed |= set(history.get_column("stage").drop_nulls().unique().to_list())
    aliases = stage_aliases(observed, base)
    unknown = sorted(observed - set(base.names) - set(aliases))
    if not unknown:
        return base, []
    timeline = None
    if history is not None:
        timeline = (
            history.select("deal_id", "stage", _timestamps(history, "changed_at", date_format))
            .drop_nulls()
            .sort("deal_id", "changed_at")
        )
    kinds = _kinds(opportunities, timeline, unknown)
    probs = _probabilities(opportunities, history, unknown)
    position = _positions(timeline) if timeline is not None else {}
    new = [Stage(name, kinds[name], probs.get(name)) for name in unknown if name in kinds]
    if not new:
        return base, []
    opens = [s for s in base.stages if s.kind == "open"]

    def key(stage: Stage) -> float | None:
        if position:
            return position.get(stage.name)
        return stage.probability

    for stage in sorted((s for s in new if s.kind == "open"), key=lambda s: key(s) or 0.0):
        opens.insert(_slot(opens, key(stage), key), stage)
    closed = [s for s in (*base.stages, *new) if s.kind != "open"]
    config = PipelineConfig((*opens, *sorted(closed, key=lambda s: s.kind != "won")))
    notes = []
    for stage in new:
        prob = "" if stage.probability is None else f", probability {stage.probability:g}"
        if stage.kind == "open":
            i = [s.name for s in opens].index(stage.name)
            where = f"after {opens[i - 1].name!r}" if i else "first"
            notes.append(f"{stage.name!r} (open, {where}{prob})")
        else:
            notes.append(f"{stage.name!r} ({stage.kind}, from IsClosed/IsWon{prob})")
    return config, notes


def _timestamps(frame: pl.DataFrame, column: str, date_format: str | None) -> pl.Expr:
    """``column`` as UTC timestamps, whether the export holds strings or typed values."""
    dtype = frame.schema[column]
    if dtype == pl.String:
        return parse_timestamp(pl.col(column), date_format)
    return cast_typed(pl.col(column), dtype, TS)


def _slot(opens: list[Stage], mine: float | None, key: Callable[[Stage], float | None]) -> int:
    """Right after the last stage reached earlier; else before the first reached later."""
    if mine is None:
        return len(opens)
    before = [i for i, s in enumerate(opens) if (k := key(s)) is not None and k <= mine]
    if before:
        return before[-1] + 1
    after = [i for i, s in enumerate(opens) if (k := key(s)) is not None and k > mine]
    return after[0] if after else len(opens)


def _kinds(
    opportunities: pl.DataFrame, timeline: pl.DataFrame | None, unknown: list[str]
) -> dict[str, StageKind]:
    kinds: dict[str, StageKind] = {}
    if "_is_closed" in opportunities.columns:
        won = parse_bool(pl.col("_is_won")) if "_is_won" in opportunities.columns else None
        stats = (
            opportunities.filter(pl.col("stage").is_in(unknown))
            .group_by("stage")
            .agg(
                pl.len().alias("n"),
                parse_bool(pl.col("_is_closed")).fill_null(False).sum().alias("closed"),
                parse_bool(pl.col("_is_closed")).is_not_null().sum().alias("known"),
                (won.fill_null(False).sum() if won is not None else pl.lit(0)).alias("won"),
            )
        )
        for row in stats.iter_rows(named=True):  # one row per unknown stage name
            n, closed, won_n = row["n"], row["closed"], row["won"]
            if row["known"] != n:
                continue
            if closed == 0 and won_n == 0:
                kinds[row["stage"]] = "open"
            elif closed == n and won_n == n:
                kinds[row["stage"]] = "won"
            elif closed == n and won_n == 0 and won is not None:
                kinds[row["stage"]] = "lost"
    if timeline is not None:
        seen = set(opportunities.get_column("stage").drop_nulls().to_list())
        last = timeline.group_by("deal_id").agg(pl.col("stage").last()).get_column("stage")
        finals = set(last.drop_nulls().to_list())
        for name in unknown:
            if name not in kinds and name not in seen and name not in finals:
                kinds[name] = "open"
    return kinds


def _probabilities(
    opportunities: pl.DataFrame, history: pl.DataFrame | None, unknown: list[str]
) -> dict[str, float]:
    parts = []
    if "crm_probability" in opportunities.columns:
        parts.append(opportunities.select("stage", pl.col("crm_probability").alias("p")))
    if history is not None and "_probability" in history.columns:
        parts.append(history.select("stage", pl.col("_probability").alias("p")))
    if not parts:
        return {}
    medians = (
        pl.concat([p.with_columns(pl.col("p").cast(pl.String)) for p in parts])
        .filter(pl.col("stage").is_in(unknown))
        .group_by("stage")
        .agg((parse_float(pl.col("p")) / 100.0).clip(0.0, 1.0).median().alias("p"))
        .drop_nulls()
    )
    return dict(zip(medians["stage"].to_list(), medians["p"].to_list(), strict=True))


def _positions(timeline: pl.DataFrame) -> dict[str, float]:
    """Mean rank (0 = first) of each stage among the stages a deal reaches, in time order."""
    ordered = (
        timeline.group_by("deal_id", "stage")
        .agg(pl.col("changed_at").min())
        .with_columns((pl.col("changed_at").rank("ordinal").over("deal_id") - 1).alias("pos"))
        .group_by("stage")
        .agg(pl.col("pos").mean())
    )
    return dict(zip(ordered["stage"].to_list(), ordered["pos"].to_list(), strict=True))
