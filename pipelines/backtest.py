"""The backtest job: rolling origins, every method refit at each, one MLflow run, a league table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
from sklearn.base import clone

from features.contract import DealHistory
from features.forecast_log import KEPT_SCHEMA, ForecastLog
from features.forecast_log import METHODS as KEPT_METHODS
from features.snapshots import data_now
from features.store import Store
from models.deals.probability import CloseProbabilityModel
from models.forecast.backtest import METHODS, Backtest, acceptance, month_origins, run_backtest
from models.metrics import P10, P90
from models.tracking import NoChampionError, champion_version, job_run, load_champion
from pipelines.console import progress
from pipelines.forecast import PROBABILITY_MODEL

__all__ = ["MIN_HISTORY_MONTHS", "default_origins", "run_backtest_job", "stage_methods"]


def _step(month: date) -> int:
    """An origin or target month as an MLflow step: ``yyyymm``."""
    return month.year * 100 + month.month


MIN_HISTORY_MONTHS = 9
"""Months of history (first deal's month to the last complete one) the backtest needs."""

PAST_MONTHS = 6
"""Months of past the first default origin has: it is the 6th month after the first deal's."""

STAGE_PROBABILITIES = ("auto", "crm", "hist")


def default_origins(
    now: date, count: int = 12, *, first_deal: date | None = None
) -> tuple[date, date]:
    """The last ``count`` month starts whose month-0 has closed by ``now``.

    With ``first_deal`` (the month of the first deal), the first origin is no earlier than
    the :data:`PAST_MONTHS`-th month after it, so every origin has that much past.
    """
    last = date(now.year, now.month, 1)
    index = last.year * 12 + last.month - 1 - 1  # the month before now's month
    first = index - count + 1
    if first_deal is not None:
        first = max(first, first_deal.year * 12 + first_deal.month - 1 + PAST_MONTHS)
    return date(first // 12, first % 12 + 1, 1), date(index // 12, index % 12 + 1, 1)


def stage_methods(stage_probability: str) -> list[str]:
    """The backtest methods for a ``--stage-probability`` choice.

    ``crm``: stage-weighted with the pipeline config's probabilities (not applicable without
    them); ``hist``: with historical stage win rates; ``auto``: both when the config has
    probabilities, else ``hist`` (and CRM listed as not applicable).
    """
    if stage_probability not in STAGE_PROBABILITIES:
        raise ValueError(
            f"stage probability must be one of {', '.join(STAGE_PROBABILITIES)}, "
            f"got {stage_probability!r}"
        )
    drop = {"crm": "stage_weighted_hist", "hist": "stage_weighted_crm"}.get(stage_probability)
    return [m for m in METHODS if m != drop]


def _history_months(history: DealHistory, now: datetime) -> tuple[date, int]:
    """The first deal's month and the months from it to the last complete month."""
    first = history.deals.select(pl.col("created_at").min()).collect().item()
    if first is None:
        raise ValueError("the store holds no deal: nothing to backtest")
    start = date(first.year, first.month, 1)
    months = (now.year * 12 + now.month - 1) - (start.year * 12 + start.month - 1)
    return start, months


def run_backtest_job(
    data: Path,
    *,
    start: date | None = None,
    end: date | None = None,
    horizons: Sequence[int] = (0, 1, 2),
    by: str | None = None,
    n_samples: int = 1000,
    methods: Sequence[str] | None = None,
    stage_probability: str = "auto",
    show_progress: bool = True,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the backtest on the store at ``data``, log it, return the backtest and its verdict.

    ``start``/``end`` are the first and last origins (month starts); the default is the last
    12 origins whose first month has closed, starting no earlier than the 6th month after the
    first deal. A history shorter than :data:`MIN_HISTORY_MONTHS` is refused. Origins no method
    can be refit at are skipped (``result["backtest"].skipped`` says why). ``methods`` default
    to every method; the stage-weighted ones among them are chosen by ``stage_probability``
    (``auto``, ``crm`` or ``hist``: :func:`stage_methods`). ``keep`` also keeps each origin's
    company-total forecasts (dealcast and the stage-weighted baselines) in the forecast log,
    as retrospective forecasts (:func:`kept_from_backtest`), so the accuracy history starts
    filled.
    """
    history = Store(data).load()
    now = data_now(history)
    first_deal, months = _history_months(history, now)
    if months < MIN_HISTORY_MONTHS:
        raise ValueError(
            f"the backtest needs at least {MIN_HISTORY_MONTHS} months of history: the deals "
            f"start {first_deal:%Y-%m} and the data ends {now:%Y-%m-%d}, {months} complete "
            f"month(s)"
        )
    allowed = stage_methods(stage_probability)
    methods = [m for m in (methods if methods is not None else METHODS) if m in allowed]
    first, last = default_origins(now.date(), first_deal=first_deal)
    origins = month_origins(start or first, end or last)
    if not origins:
        raise ValueError(
            f"no backtest origins from {start or first:%Y-%m} to {end or last:%Y-%m}: the first "
            f"origin must not be after the last (by default {last:%Y-%m}, the last month that "
            f"ended before the data ends {now:%Y-%m-%d})"
        )
    if origins[-1] >= date(now.year, now.month, 1):
        raise ValueError(
            f"the last origin {origins[-1]:%Y-%m} has not closed: the data ends {now:%Y-%m-%d}; "
            "backtest origins must be months that ended before it"
        )
    recipe, recipe_name = champion_recipe(data)
    params = {
        "recipe": recipe_name,
        "from": f"{origins[0]:%Y-%m}",
        "to": f"{origins[-1]:%Y-%m}",
        "horizons": ",".join(str(h) for h in horizons),
        "by": by or "",
        "n_samples": n_samples,
        "methods": ",".join(methods),
        "stage_probability": stage_probability,
    }
    with job_run(data, "backtest", params=params) as run:
        refit = partial(
            run_backtest,
            history,
            origins,
            horizons=horizons,
            by=by,
            n_samples=n_samples,
            methods=methods,
            probability=recipe,
        )
        if show_progress:
            with progress() as bar:
                task = bar.add_task("backtest: refitting every method", total=len(origins))
                result = refit(
                    on_origin=lambda o: bar.update(
                        task, advance=1, description=f"backtest: origin {o:%Y-%m} done"
                    )
                )
        else:
            result = refit()
        _log(run, result)
        if keep:
            log = ForecastLog(data)
            kept = [
                f
                for f in kept_from_backtest(result)
                if not log.path_of(f["forecast_id"][0]).exists()
            ]
            for frame in kept:
                log.append(frame)
            run.metric("kept_forecasts", float(len(kept)))
        verdict = acceptance(result)
        run.json("acceptance", verdict)
        run_id = run.run_id
    return {"backtest": result, "acceptance": verdict, "run_id": run_id}


def champion_recipe(data: Path) -> tuple[CloseProbabilityModel | None, str]:
    """The ``@champion`` close probability's parameters, unfitted, and what they are.

    The backtest refits dealcast at each origin with them (the tuned parameters ``train``
    registered, or the stage rates it registered instead); the defaults without a champion.
    """
    try:
        champion = load_champion(PROBABILITY_MODEL, data_dir=data)
    except NoChampionError:
        return None, "close probability defaults (no @champion)"
    version = champion_version(PROBABILITY_MODEL, data_dir=data)
    return clone(champion), f"close probability parameters of {PROBABILITY_MODEL}@v{version}"


def _log(run: Any, result: Backtest) -> None:
    """Per origin: each method's absolute % error by horizon (step = yyyymm); then summaries."""
    methods = [m for m in METHODS if m in result.frame.columns]
    # a method not applicable at an origin has null forecasts: its sum stays null, not 0
    total = result.frame.group_by("origin", "horizon").agg(
        pl.col("actual").sum(),
        *(pl.when(pl.col(m).is_not_null().all()).then(pl.col(m).sum()).alias(m) for m in methods),
    )
    for row in total.sort("origin").iter_rows(named=True):
        if not row["actual"]:
            continue
        run.metrics(
            {
                f"ape__{m}__h{row['horizon']}": abs(row[m] - row["actual"]) / row["actual"]
                for m in methods
                if row[m] is not None
            },
            step=_step(row["origin"]),
        )
    for row in result.summary.iter_rows(named=True):
        for name in ("wape", "bias", "coverage"):
            if row[name] is not None:
                run.metric(f"{name}__{row['method']}__h{row['horizon']}", row[name])
    run.frame("backtest", result.frame)
    run.frame("summary", result.league())
    if result.not_applicable.height:
        run.frame("not_applicable", result.not_applicable)
    if result.skipped:
        run.json("skipped_origins", {f"{o:%Y-%m}": why for o, why in result.skipped})
    if f"dealcast{P10}" in result.frame.columns:
        run.tag("dealcast.interval", f"dealcast{P10}..dealcast{P90}")


RETROSPECTIVE = "backtest (refit at the origin)"
"""``model_version`` of a forecast kept from a backtest: made after the fact, point in time."""


def kept_from_backtest(result: Backtest) -> list[pl.DataFrame]:
    """Each origin's company-total forecasts as kept forecasts (``KEPT_SCHEMA``), one per origin.

    Every method was refit with only what was known at the origin, so these are the forecasts
    that would have been made then; ``model_version`` says they are retrospective and the
    forecast id (``backtest-YYYY-MM``) makes keeping them twice a no-op. Per-segment backtests
    keep nothing (their company total is not a forecast of its own).
    """
    if result.by:
        return []
    created = datetime.now(UTC)
    frames = []
    for origin in result.origins:
        rows = result.frame.filter(pl.col("origin") == origin)
        if rows.height == 0:
            continue
        parts = []
        for method in KEPT_METHODS:
            if method not in rows.columns:
                continue
            interval = f"{method}{P10}" in rows.columns
            parts.append(
                rows.select(
                    pl.lit("month").alias("period"),
                    "target_month",
                    "horizon",
                    pl.lit("").alias("by"),
                    "segment",
                    pl.lit(method).alias("method"),
                    pl.col(method).alias("mean"),
                    pl.col(f"{method}{P10}").alias("p10")
                    if interval
                    else pl.lit(None, dtype=pl.Float64).alias("p10"),
                    pl.col(method).alias("p50"),
                    pl.col(f"{method}{P90}").alias("p90")
                    if interval
                    else pl.lit(None, dtype=pl.Float64).alias("p90"),
                )
            )
        moment = datetime(origin.year, origin.month, 1, tzinfo=UTC)
        frame = pl.concat(parts).with_columns(
            pl.lit(f"backtest-{origin:%Y-%m}").alias("forecast_id"),
            pl.lit(created).alias("created_at"),
            pl.lit(moment).alias("as_of"),
            pl.lit(origin).alias("origin_month"),
            pl.lit(RETROSPECTIVE).alias("model_version"),
        )
        empty = pl.DataFrame(schema=KEPT_SCHEMA)  # the context columns stay null
        frames.append(pl.concat([empty, frame], how="diagonal_relaxed").select(list(KEPT_SCHEMA)))
    return frames
