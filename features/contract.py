"""The canonical deal-history tables (docs/data-contract.md) as polars schemas.

Every source is converted into these tables by an adapter (``pipelines.ingest``); nothing
downstream reads a source format. Timestamps are ``Datetime("us", "UTC")``, bare dates are
``Date``, money is ``Float64``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

__all__ = [
    "TS",
    "SCHEMAS",
    "REQUIRED",
    "TABLES",
    "ACTIVITY_TYPES",
    "DIMENSIONS",
    "Stage",
    "PipelineConfig",
    "DealHistory",
    "DEFAULT_PIPELINE",
    "empty",
]

TS = pl.Datetime("us", "UTC")
"""The one timestamp type of the store: microseconds, UTC."""

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "deals": {
        "deal_id": pl.String(),
        "created_at": TS,
        "owner_id": pl.String(),
        "stage": pl.String(),
        "amount": pl.Float64(),
        "expected_close_date": pl.Date(),
        "closed_at": TS,
        "account_id": pl.String(),
        "product": pl.String(),
        "region": pl.String(),
        "segment": pl.String(),
        "source": pl.String(),
        "deal_type": pl.String(),
        "lost_reason": pl.String(),
        "forecast_category": pl.String(),
        "crm_probability": pl.Float64(),
    },
    "stage_history": {
        "deal_id": pl.String(),
        "changed_at": TS,
        "stage": pl.String(),
        "amount": pl.Float64(),
        "expected_close_date": pl.Date(),
        "forecast_category": pl.String(),
    },
    "activities": {
        "activity_id": pl.String(),
        "occurred_at": TS,
        "owner_id": pl.String(),
        "type": pl.String(),
        "deal_id": pl.String(),
        "account_id": pl.String(),
    },
    "reps": {
        "owner_id": pl.String(),
        "name": pl.String(),
        "team": pl.String(),
        "manager_id": pl.String(),
        "region": pl.String(),
        "hired_at": pl.Date(),
    },
    "targets": {
        "period": pl.String(),
        "scope_type": pl.String(),
        "scope_id": pl.String(),
        "amount": pl.Float64(),
    },
}
"""Column name -> polars dtype for each canonical table, in canonical column order."""

TABLES: tuple[str, ...] = tuple(SCHEMAS)

REQUIRED: dict[str, tuple[str, ...]] = {
    "deals": ("deal_id", "created_at", "owner_id", "stage", "amount"),
    "stage_history": ("deal_id", "changed_at", "stage"),
    "activities": ("activity_id", "occurred_at", "owner_id", "type"),
    "reps": ("owner_id",),
    "targets": ("period", "scope_type", "scope_id", "amount"),
}
"""Columns a source file must have for each table (values may still be null where allowed)."""

ACTIVITY_TYPES: tuple[str, ...] = ("call", "email", "meeting", "demo", "proposal", "other")
DEAL_TYPES: tuple[str, ...] = ("new", "expansion", "renewal")
FORECAST_CATEGORIES: tuple[str, ...] = ("pipeline", "best_case", "commit", "omitted")
TARGET_SCOPES: tuple[str, ...] = ("company", "team", "region", "owner")

DIMENSIONS: tuple[str, ...] = (
    "owner_id",
    "team",
    "region",
    "product",
    "segment",
    "source",
    "deal_type",
    "account_id",
)
"""Columns a KPI or a forecast may be grouped by (``team`` comes from ``reps``)."""

StageKind = Literal["open", "won", "lost"]


@dataclass(frozen=True)
class Stage:
    """One stage of the sales pipeline, in funnel order."""

    name: str
    kind: StageKind
    probability: float | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """The ordered stages of a pipeline: open stages in funnel order, then won and lost ones.

    ``order`` of an open stage is its 1-based position among open stages; won stages come after
    every open stage, lost stages get order 0 (they are not "forward" of anything).
    """

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pipeline config names stages more than once: {', '.join(dupes)}")
        kinds = {s.kind for s in self.stages}
        for needed in ("open", "won", "lost"):
            if needed not in kinds:
                raise ValueError(f"pipeline config needs at least one '{needed}' stage")
        for s in self.stages:
            if s.kind not in ("open", "won", "lost"):
                raise ValueError(
                    f"stage {s.name!r}: kind must be open, won or lost, not {s.kind!r}"
                )
            if s.probability is not None and not 0.0 <= s.probability <= 1.0:
                raise ValueError(f"stage {s.name!r}: probability must be in 0..1")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def kind_of(self, name: str) -> StageKind | None:
        return next((s.kind for s in self.stages if s.name == name), None)

    def names_of(self, kind: StageKind) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages if s.kind == kind)

    @property
    def open_stages(self) -> tuple[str, ...]:
        return self.names_of("open")

    def order(self) -> dict[str, int]:
        """Stage name -> funnel order (open 1..n, won n+1, lost 0)."""
        n_open = len(self.open_stages)
        out: dict[str, int] = {}
        for i, name in enumerate(self.open_stages, start=1):
            out[name] = i
        for name in self.names_of("won"):
            out[name] = n_open + 1
        for name in self.names_of("lost"):
            out[name] = 0
        return out

    def frame(self) -> pl.DataFrame:
        """One row per stage: ``stage, stage_kind, stage_order, stage_probability``."""
        order = self.order()
        return pl.DataFrame(
            {
                "stage": [s.name for s in self.stages],
                "stage_kind": [s.kind for s in self.stages],
                "stage_order": [order[s.name] for s in self.stages],
                "stage_probability": [s.probability for s in self.stages],
            },
            schema={
                "stage": pl.String(),
                "stage_kind": pl.String(),
                "stage_order": pl.Int32(),
                "stage_probability": pl.Float64(),
            },
        )

    # -- TOML -------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: Path | str) -> PipelineConfig:
        """Read ``[[stages]]`` tables with ``name``, ``kind`` and optional ``probability``."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read pipeline config {path}: {exc}") from exc
        return cls.from_dict(doc, origin=str(path))

    @classmethod
    def from_dict(cls, doc: dict, *, origin: str = "pipeline config") -> PipelineConfig:
        raw = doc.get("stages")
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"{origin}: expected a list of [[stages]] with name and kind")
        stages = []
        for i, item in enumerate(raw, start=1):
            if "name" not in item or "kind" not in item:
                raise ValueError(f"{origin}: stage #{i} needs both 'name' and 'kind'")
            prob = item.get("probability")
            stages.append(
                Stage(str(item["name"]), item["kind"], None if prob is None else float(prob))
            )
        return cls(tuple(stages))

    def to_toml(self) -> str:
        lines = ["# dealcast pipeline config: stages in funnel order; kind is open, won or lost."]
        for s in self.stages:
            lines += ["", "[[stages]]", f"name = {_toml_str(s.name)}", f'kind = "{s.kind}"']
            if s.probability is not None:
                lines.append(f"probability = {s.probability}")
        return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


DEFAULT_PIPELINE = PipelineConfig(
    (
        Stage("Qualification", "open", 0.10),
        Stage("Discovery", "open", 0.20),
        Stage("Demo", "open", 0.40),
        Stage("Proposal", "open", 0.60),
        Stage("Negotiation", "open", 0.80),
        Stage("Closed Won", "won", 1.0),
        Stage("Closed Lost", "lost", 0.0),
    )
)
"""The pipeline of the simulated company, and a sensible default for flat exports."""


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the canonical schema of ``table``."""
    return pl.DataFrame(schema=SCHEMAS[table])


@dataclass(frozen=True)
class DealHistory:
    """The canonical tables of one dataset, as lazy frames, plus its pipeline config.

    ``stage_history`` is always present: when the source had none, it is derived from
    ``deals`` (first open stage at ``created_at``, final stage at ``closed_at``) and
    ``history_is_derived`` says so. Optional tables are empty frames when absent, and
    ``has`` tells which were supplied.
    """

    deals: pl.LazyFrame
    stage_history: pl.LazyFrame
    activities: pl.LazyFrame
    reps: pl.LazyFrame
    targets: pl.LazyFrame
    pipeline: PipelineConfig = DEFAULT_PIPELINE
    history_is_derived: bool = False
    has: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_frames(
        cls,
        *,
        deals: pl.DataFrame | pl.LazyFrame,
        stage_history: pl.DataFrame | pl.LazyFrame | None = None,
        activities: pl.DataFrame | pl.LazyFrame | None = None,
        reps: pl.DataFrame | pl.LazyFrame | None = None,
        targets: pl.DataFrame | pl.LazyFrame | None = None,
        pipeline: PipelineConfig = DEFAULT_PIPELINE,
    ) -> DealHistory:
        """Build from in-memory frames (tests, the simulator); casts to the canonical schema.

        Missing optional columns are added as nulls; unknown columns are dropped.
        """
        given = {
            "deals": deals,
            "stage_history": stage_history,
            "activities": activities,
            "reps": reps,
            "targets": targets,
        }
        lazy = {
            name: conform(frame, name) if frame is not None else empty(name).lazy()
            for name, frame in given.items()
        }
        derived = stage_history is None
        if derived:
            lazy["stage_history"] = derive_history(lazy["deals"], pipeline)
        return cls(
            pipeline=pipeline,
            history_is_derived=derived,
            has=frozenset(name for name, frame in given.items() if frame is not None),
            **lazy,
        )


def conform(frame: pl.DataFrame | pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Select and cast ``frame``'s columns to ``table``'s canonical schema (lazily)."""
    lf = frame.lazy()
    present = lf.collect_schema().names()
    return lf.select(
        [
            (pl.col(name) if name in present else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in SCHEMAS[table].items()
        ]
    )


def derive_history(deals: pl.LazyFrame, pipeline: PipelineConfig) -> pl.LazyFrame:
    """A minimal stage history from ``deals`` alone.

    Each deal is open in the first open stage at ``created_at`` with its (latest) amount and
    expected close date; closed deals get a second row with their final stage at ``closed_at``.
    Open deals get one row in their current stage instead of the first one, because without a
    history their current stage is the only one known. Amounts are the deal's latest ones: a
    store without real history cannot tell what they were before.
    """
    first_open = pipeline.open_stages[0]
    closed_kinds = {*pipeline.names_of("won"), *pipeline.names_of("lost")}
    is_closed = pl.col("stage").is_in(list(closed_kinds))
    opened = deals.select(
        "deal_id",
        pl.col("created_at").alias("changed_at"),
        pl.when(is_closed).then(pl.lit(first_open)).otherwise(pl.col("stage")).alias("stage"),
        "amount",
        "expected_close_date",
        pl.when(is_closed)
        .then(None)
        .otherwise(pl.col("forecast_category"))
        .alias("forecast_category"),
    )
    closed = deals.filter(is_closed & pl.col("closed_at").is_not_null()).select(
        "deal_id",
        pl.col("closed_at").alias("changed_at"),
        "stage",
        "amount",
        "expected_close_date",
        "forecast_category",
    )
    return pl.concat([opened, closed]).sort("deal_id", "changed_at")
