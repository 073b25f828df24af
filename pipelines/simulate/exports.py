"""Export profiles: the same simulated company written the way real CRM exports come out.

A degradation is applied to the rich canonical tables *after* simulating, so the truth
(``truth_probabilities``, ``truth_anomalies``) is still that of the same company: a model fit
on a thin export can be scored against what really happened.

- ``rich``: today's full output, unchanged.
- ``current_state``: only ``deals``, ``reps`` and ``targets``: no ``stage_history``, no
  ``activities`` (each deal's current stage and amount only).
- ``no_forecast_fields``: no ``expected_close_date`` on open deals (nor on open history rows),
  no ``forecast_category``, no ``crm_probability``, no stage probabilities in the pipeline.
- ``stale``: 20% of the deals really lost are never closed in the export: they stay open in
  their last open stage (its amount, close date and forecast category), without ``closed_at``
  or ``lost_reason``, and their Closed Lost history row is gone.
- ``date_only``: every timestamp (``created_at``, ``closed_at``, ``changed_at``,
  ``occurred_at``) truncated to its date (written as a ``Date`` column).
- ``missing_dims``: 15% nulls in each of the deals' ``account_id, product, region, segment,
  source, deal_type`` and the reps' ``team, manager_id, region``, and 15% of the reps (at
  least one) missing from ``reps`` (their deals' owner is unknown there). ``owner_id`` itself
  is never nulled: the contract requires it and ingest would quarantine the deal.
- ``lead_funnel``: a lead funnel: every amount 1 (targets become won-deal counts), stages
  ``Open`` / ``Won`` / ``Lost`` (a 3-stage pipeline without probabilities), no
  ``forecast_category`` or ``crm_probability``, no ``stage_history``, no ``activities``.
- ``thinnest``: ``stale`` + ``current_state`` + ``no_forecast_fields`` + ``date_only`` +
  ``missing_dims`` at once.

>>> company = simulate_company(SimConfig(n_deals=500, months=12, anomalies=False))  # doctest: +SKIP
>>> write_company(export_company(company, "thinnest"), "thin-export")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import polars as pl

from features.contract import DEFAULT_PIPELINE, PipelineConfig, Stage
from pipelines.simulate.company import SimulatedCompany
from pipelines.simulate.world import rng_for

__all__ = [
    "EXPORT_PROFILES",
    "STALE_SHARE",
    "MISSING_SHARE",
    "LEAD_PIPELINE",
    "export_company",
    "export_pipeline",
    "export_profile",
]

STALE_SHARE = 0.2
"""Share of the really lost deals that nobody closes in a ``stale`` export."""
MISSING_SHARE = 0.15
"""Share of nulls per dimension (and of reps missing) in a ``missing_dims`` export."""

LEAD_PIPELINE = PipelineConfig((Stage("Open", "open"), Stage("Won", "won"), Stage("Lost", "lost")))
"""The pipeline of a ``lead_funnel`` export."""

Tables = dict[str, pl.DataFrame]
_TIMESTAMPS = {
    "deals": ("created_at", "closed_at"),
    "stage_history": ("changed_at",),
    "activities": ("occurred_at",),
}
_DEAL_DIMS = ("account_id", "product", "region", "segment", "source", "deal_type")
_REP_DIMS = ("team", "manager_id", "region")


def _is_open(pipeline: PipelineConfig) -> pl.Expr:
    return pl.col("stage").is_in(list(pipeline.open_stages))


def _current_state(tables: Tables, pipeline: PipelineConfig, seed: int) -> Tables:
    return {k: v for k, v in tables.items() if k not in ("stage_history", "activities")}


def _no_forecast_fields(tables: Tables, pipeline: PipelineConfig, seed: int) -> Tables:
    out = dict(tables)
    out["deals"] = tables["deals"].with_columns(
        pl.when(_is_open(pipeline))
        .then(None)
        .otherwise(pl.col("expected_close_date"))
        .alias("expected_close_date"),
        pl.lit(None, pl.String).alias("forecast_category"),
        pl.lit(None, pl.Float64).alias("crm_probability"),
    )
    if "stage_history" in tables:
        out["stage_history"] = tables["stage_history"].with_columns(
            pl.when(_is_open(pipeline))
            .then(None)
            .otherwise(pl.col("expected_close_date"))
            .alias("expected_close_date"),
            pl.lit(None, pl.String).alias("forecast_category"),
        )
    return out


def _stale(tables: Tables, pipeline: PipelineConfig, seed: int) -> Tables:
    """Leave ``STALE_SHARE`` of the lost deals open in their last open stage."""
    if "stage_history" not in tables:
        raise ValueError("the stale export needs the stage_history of the rich tables")
    deals, history = tables["deals"], tables["stage_history"]
    lost = deals.filter(pl.col("stage").is_in(list(pipeline.names_of("lost"))))["deal_id"]
    rng = rng_for(seed, "export-stale")
    stale = lost.filter(pl.Series(rng.random(lost.len()) < STALE_SHARE))
    is_stale = pl.col("deal_id").is_in(stale.implode())
    last_open = (
        history.filter(is_stale & _is_open(pipeline))
        .group_by("deal_id", maintain_order=True)
        .last()
        .select(
            "deal_id",
            *(pl.col(c).alias(f"_last_{c}") for c in ("stage", "amount", "expected_close_date")),
            pl.col("forecast_category").alias("_last_forecast_category"),
        )
    )
    kept = ("stage", "amount", "expected_close_date", "forecast_category")
    probability = {s.name: s.probability for s in pipeline.stages}
    deals = (
        deals.join(last_open, on="deal_id", how="left", maintain_order="left")
        .with_columns(
            *(
                pl.when(is_stale).then(pl.col(f"_last_{c}")).otherwise(pl.col(c)).alias(c)
                for c in kept
            ),
            pl.when(is_stale).then(None).otherwise(pl.col("closed_at")).alias("closed_at"),
            pl.when(is_stale).then(None).otherwise(pl.col("lost_reason")).alias("lost_reason"),
        )
        .with_columns(
            pl.when(is_stale)
            .then(pl.col("stage").replace_strict(probability, return_dtype=pl.Float64))
            .otherwise(pl.col("crm_probability"))
            .alias("crm_probability")
        )
        .select(deals.columns)
    )
    out = dict(tables)
    out["deals"] = deals
    out["stage_history"] = history.filter(~(is_stale & ~_is_open(pipeline)))
    return out


def _date_only(tables: Tables, pipeline: PipelineConfig, seed: int) -> Tables:
    out = dict(tables)
    for table, columns in _TIMESTAMPS.items():
        if table in tables:
            out[table] = tables[table].with_columns(pl.col(c).dt.date() for c in columns)
    return out


def _nulled(
    frame: pl.DataFrame, columns: tuple[str, ...], rng: np.random.Generator
) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.Series(rng.random(frame.height) < MISSING_SHARE))
        .then(None)
        .otherwise(pl.col(c))
        .alias(c)
        for c in columns
    )


def _missing_dims(tables: Tables, pipeline: PipelineConfig, seed: int) -> Tables:
    rng = rng_for(seed, "export-missing")
    out = dict(tables)
    out["deals"] = _nulled(tables["deals"], _DEAL_DIMS, rng)
    reps = _nulled(tables["reps"], _REP_DIMS, rng)
    gone = max(1, round(MISSING_SHARE * reps.height)) if reps.height > 1 else 0
    dropped = np.zeros(reps.height, dtype=bool)
    dropped[rng.permutation(reps.height)[:gone]] = True
    out["reps"] = reps.filter(pl.Series(~dropped))
    return out


def _lead_funnel(tables: Tables, pipeline: PipelineConfig, seed: int) -> Tables:
    kinds = {s.name: s.kind for s in pipeline.stages}
    names = {"open": "Open", "won": "Won", "lost": "Lost"}
    deals = tables["deals"].with_columns(
        pl.col("stage").replace_strict({k: names[v] for k, v in kinds.items()}),
        pl.lit(1.0).alias("amount"),
        pl.lit(None, pl.String).alias("forecast_category"),
        pl.lit(None, pl.Float64).alias("crm_probability"),
    )
    won = tables["deals"].filter(pl.col("stage").is_in(list(pipeline.names_of("won"))))
    per_win = won["amount"].mean() if won.height else None
    out = {k: v for k, v in tables.items() if k not in ("stage_history", "activities")}
    out["deals"] = deals
    if "targets" in tables and isinstance(per_win, float) and per_win > 0:
        out["targets"] = tables["targets"].with_columns(
            (pl.col("amount") / per_win).round(1).alias("amount")
        )
    return out


_Step = Callable[[Tables, PipelineConfig, int], Tables]
EXPORT_PROFILES: dict[str, tuple[_Step, ...]] = {
    "rich": (),
    "current_state": (_current_state,),
    "no_forecast_fields": (_no_forecast_fields,),
    "stale": (_stale,),
    "date_only": (_date_only,),
    "missing_dims": (_missing_dims,),
    "lead_funnel": (_lead_funnel,),
    "thinnest": (_stale, _current_state, _no_forecast_fields, _date_only, _missing_dims),
}
"""Export profile name -> the degradations it applies, in order."""


def _check(name: str) -> None:
    if name not in EXPORT_PROFILES:
        raise ValueError(
            f"unknown export profile {name!r}: use one of {', '.join(EXPORT_PROFILES)}"
        )


def export_profile(
    tables: Mapping[str, pl.DataFrame],
    name: str,
    *,
    pipeline: PipelineConfig = DEFAULT_PIPELINE,
    seed: int = 0,
) -> dict[str, pl.DataFrame]:
    """The canonical tables of export profile ``name``, from the rich ``tables``.

    Tables the profile does not export are absent from the result; ``rich`` returns the
    tables unchanged. ``pipeline`` is the rich tables' stage config; ``seed`` draws which
    deals go stale and which values go missing (same seed, same export).
    """
    _check(name)
    out = dict(tables)
    for step in EXPORT_PROFILES[name]:
        out = step(out, pipeline, seed)
    return out


def export_pipeline(name: str, pipeline: PipelineConfig = DEFAULT_PIPELINE) -> PipelineConfig:
    """The pipeline config written with export profile ``name``."""
    _check(name)
    if name == "lead_funnel":
        return LEAD_PIPELINE
    if name in ("no_forecast_fields", "thinnest"):
        return PipelineConfig(tuple(replace(s, probability=None) for s in pipeline.stages))
    return pipeline


def export_company(
    company: SimulatedCompany, name: str, *, seed: int | None = None
) -> SimulatedCompany:
    """``company`` as export profile ``name`` writes it: degraded tables, matching pipeline
    config, the same truth. ``seed`` defaults to 0 (pass the simulation's for variety)."""
    return SimulatedCompany(
        tables=export_profile(
            company.tables, name, pipeline=company.pipeline, seed=0 if seed is None else seed
        ),
        truth=company.truth,
        pipeline=export_pipeline(name, company.pipeline),
    )
