"""The forecast job: forecast the coming months, keep the forecast, log it to MLflow.

``run_forecast`` uses the registered ``@champion`` close-probability and timing models when
they were fitted at or before the as-of (the usual case: ``dealcast train`` then ``dealcast
forecast`` on the same store). For an as-of before the champion's cutoff the champion has seen
the future, so the models are refitted at the as-of and the output says so.

Every forecast is kept (``features.forecast_log``) with, for the same months and segments, the
classic stage-weighted numbers (booked so far + weighted open pipeline by expected close
month), so ``dealcast evaluate`` scores dealcast and the baseline side by side.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from features.calendar import add_months, instant
from features.forecast_log import KEPT_SCHEMA, ForecastLog, new_forecast_id
from features.snapshots import data_now, snapshot_features
from features.store import Store
from models.forecast.backtest import baseline_points
from models.forecast.baselines import monthly_bookings
from models.forecast.revenue import (
    N_SAMPLES,
    DealModels,
    RevenueForecast,
    amount_ratios,
    fit_deal_models,
    revenue_forecast,
    training_rows,
    win_shock,
)
from models.forecast.selection import ForecastChoice, published_summary
from models.forecast.weighted import weighted_pipeline
from models.tracking import (
    NoChampionError,
    champion_tags,
    champion_version,
    job_run,
    load_champion,
)

__all__ = [
    "CHOICE_TAG",
    "PROBABILITY_MODEL",
    "champion_choice",
    "published",
    "TIMING_MODEL",
    "CUTOFF_TAG",
    "champion_models",
    "fan_chart",
    "kept_rows",
    "run_forecast",
]

PROBABILITY_MODEL = "dealcast-close-probability"
TIMING_MODEL = "dealcast-close-timing"
CUTOFF_TAG = "dealcast.cutoff"
"""Model version tag: the instant the model's training data ends (ISO, UTC)."""
CHOICE_TAG = "dealcast.forecast_choice"
"""Close-probability version tag: the published forecast chosen per horizon by ``dealcast
train``'s backtest (``models.forecast.selection.ForecastChoice`` as JSON)."""


def champion_choice(data: Path) -> ForecastChoice | None:
    """The forecast choice made with the ``@champion`` close probability (None: none made)."""
    raw = champion_tags(PROBABILITY_MODEL, data_dir=data).get(CHOICE_TAG)
    if not raw:
        return None
    try:
        return ForecastChoice.from_json(json.loads(raw))
    except (ValueError, TypeError, KeyError):
        return None


def published(
    history: Any,
    forecast: RevenueForecast,
    choice: ForecastChoice | None,
    *,
    months: int | None = None,
    n_samples: int = 500,
    points: dict[str, dict[int, float | None]] | None = None,
) -> pl.DataFrame:
    """``forecast``'s summary as published: the chosen method or blend per horizon, its
    conformal P10/P90 and range flags (``models.forecast.selection.published_summary``).

    ``points`` (the baselines' company forecasts) are computed when not given; pass them to
    reuse one computation across the segments of a publish.
    """
    origin = forecast.origin_month
    window = len(forecast.months)
    if points is None:
        points = choice_points(history, origin, window, choice, n_samples=n_samples)
    start = instant(origin)
    elapsed = (forecast.as_of - start).total_seconds() / (
        (instant(add_months(origin, 1)) - start).total_seconds()
    )
    booked = monthly_bookings(history, before=origin)["bookings"].to_list()
    out = published_summary(
        forecast.summary(), choice, points, elapsed=elapsed, booked_months=booked
    )
    if months is not None:
        out = out.filter((pl.col("period") == "quarter") | (pl.col("horizon") < months))
    return out


def choice_points(
    history: Any, origin: date, window: int, choice: ForecastChoice | None, *, n_samples: int
) -> dict[str, dict[int, float | None]]:
    """The company forecasts of the baselines ``choice`` uses, made at ``origin``."""
    needed = sorted((choice.methods if choice else set()) - {"dealcast", "blend"})
    if not needed:
        return {}
    return baseline_points(history, origin, range(window), needed, n_samples=n_samples)


def champion_models(data: Path, history: Any, as_of: datetime) -> DealModels | None:
    """The ``@champion`` models as :class:`DealModels`, or None if absent or fitted after as_of.

    Amount ratios and the monthly win shock are statistics of the last year of closed deals,
    recomputed at ``as_of`` with the champion's probabilities.
    """
    tags = champion_tags(PROBABILITY_MODEL, data_dir=data)
    timing_tags = champion_tags(TIMING_MODEL, data_dir=data)
    if CUTOFF_TAG not in tags or CUTOFF_TAG not in timing_tags:
        return None
    cutoff = max(
        datetime.fromisoformat(tags[CUTOFF_TAG]), datetime.fromisoformat(timing_tags[CUTOFF_TAG])
    )
    if cutoff > as_of:
        return None
    try:
        probability = load_champion(PROBABILITY_MODEL, data_dir=data)
        timing = load_champion(TIMING_MODEL, data_dir=data)
    except NoChampionError:
        return None
    rows = training_rows(history, as_of, weeks=52)
    shock = win_shock(rows, probability.predict_proba(rows)[:, 1]) if rows.height else 0.0
    versions = {
        name: f"v{champion_version(name, data_dir=data)}"
        for name in (PROBABILITY_MODEL, TIMING_MODEL)
    }
    return DealModels(
        probability, timing, amount_ratios(history, rows), shock, cutoff, versions=versions
    )


def kept_rows(
    forecast: RevenueForecast,
    summary: pl.DataFrame,
    weighted: pl.DataFrame,
    *,
    forecast_id: str,
    created_at: datetime,
    model_version: str,
) -> pl.DataFrame:
    """The kept rows: dealcast's summary and the stage-weighted numbers of the same units."""
    origin = forecast.origin_month
    base = summary.with_columns(
        pl.lit(forecast_id).alias("forecast_id"),
        pl.lit(created_at).alias("created_at"),
        pl.lit(forecast.as_of).alias("as_of"),
        pl.lit(origin).alias("origin_month"),
        pl.lit("dealcast").alias("method"),
        pl.lit(model_version).alias("model_version"),
    )
    # stage-weighted: booked so far + weighted open pipeline expected in the month
    dims = forecast.by
    label = ",".join(dims)
    per_month = weighted.filter(pl.col("close_month").is_not_null())
    if dims:
        segment = pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("(none)") for c in dims], separator=" · "
        )
        per_segment = per_month.with_columns(segment.alias("segment"), pl.lit(label).alias("by"))
        totals = per_month.group_by("close_month").agg(
            pl.col("stage_weighted_crm", "stage_weighted_hist").sum()
        )
        per_month = pl.concat(
            [
                per_segment.select(
                    "by", "segment", "close_month", "stage_weighted_crm", "stage_weighted_hist"
                ),
                totals.select(
                    pl.lit("").alias("by"),
                    pl.lit("total").alias("segment"),
                    "close_month",
                    "stage_weighted_crm",
                    "stage_weighted_hist",
                ),
            ]
        )
    else:
        per_month = per_month.select(
            pl.lit("").alias("by"),
            pl.lit("total").alias("segment"),
            "close_month",
            "stage_weighted_crm",
            "stage_weighted_hist",
        )
    months = base.filter(pl.col("period") == "month").select(
        "by", "segment", "target_month", "horizon", "booked_to_date"
    )
    quarter_months = [forecast.months[i] for i in forecast.quarter]
    quarter = base.filter(pl.col("period") == "quarter")
    rows = []
    for method in ("stage_weighted_crm", "stage_weighted_hist"):
        monthly = months.join(
            per_month.select("by", "segment", pl.col("close_month").alias("target_month"), method),
            on=["by", "segment", "target_month"],
            how="left",
        ).with_columns(pl.col(method).fill_null(0.0))
        rows.append(
            monthly.select(
                "by",
                "segment",
                pl.lit("month").alias("period"),
                "target_month",
                "horizon",
                (pl.col("booked_to_date") + pl.col(method)).alias("p50"),
                pl.lit(method).alias("method"),
            )
        )
        if quarter.height:
            in_quarter = (
                monthly.filter(pl.col("target_month").is_in(quarter_months))
                .group_by("by", "segment")
                .agg(pl.col(method).sum().alias("_weighted"))
            )
            rows.append(
                quarter.join(in_quarter, on=["by", "segment"], how="left").select(
                    "by",
                    "segment",
                    "period",
                    "target_month",
                    "horizon",
                    (pl.col("booked_to_date") + pl.col("_weighted").fill_null(0.0)).alias("p50"),
                    pl.lit(method).alias("method"),
                )
            )
    baselines = pl.concat(rows).with_columns(
        pl.col("p50").alias("mean"),
        pl.lit(None, dtype=pl.Float64).alias("p10"),
        pl.lit(None, dtype=pl.Float64).alias("p90"),
    )
    baselines = baselines.join(
        base.select("by", "segment", "period", "target_month", "booked_to_date", "target"),
        on=["by", "segment", "period", "target_month"],
        how="left",
    ).with_columns(
        pl.lit(forecast_id).alias("forecast_id"),
        pl.lit(created_at).alias("created_at"),
        pl.lit(forecast.as_of).alias("as_of"),
        pl.lit(origin).alias("origin_month"),
        pl.lit(None, dtype=pl.Float64).alias("pipeline_mean"),
        pl.lit(None, dtype=pl.Float64).alias("newbiz_mean"),
        pl.lit(None, dtype=pl.Float64).alias("p_reach_target"),
        pl.lit(None, dtype=pl.String).alias("model_version"),
    )
    return pl.concat([base, baselines], how="diagonal_relaxed").select(list(KEPT_SCHEMA))


def fan_chart(
    actual: pl.DataFrame, summary: pl.DataFrame, *, title: str, months_back: int = 18
) -> Figure:
    """Monthly bookings so far and the forecast's P10–P90 band, P50 and targets (total)."""
    fig = Figure(figsize=(8.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    past = actual.tail(months_back)
    ax.plot(
        past["month"].to_list(), past["bookings"].to_numpy(), "o-", color="#333", label="booked"
    )
    months = summary.filter((pl.col("period") == "month") & (pl.col("by") == ""))
    x = months["target_month"].to_list()
    ax.fill_between(
        x,
        months["p10"].to_numpy(),
        months["p90"].to_numpy(),
        color="#4c78a8",
        alpha=0.25,
        label="P10–P90",
    )
    ax.plot(x, months["p50"].to_numpy(), "o-", color="#4c78a8", label="P50")
    targets = summary.filter(pl.col("period") == "month")
    targets = targets.filter((pl.col("by") == "") & pl.col("target").is_not_null())
    if targets.height:
        ax.plot(
            targets["target_month"].to_list(),
            targets["target"].to_numpy(),
            "_",
            color="#e45756",
            markersize=18,
            markeredgewidth=2,
            label="target",
        )
    ax.set_title(title)
    ax.set_ylabel("bookings")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def run_forecast(
    data: Path,
    *,
    as_of: date | datetime | None = None,
    months: int = 3,
    by: str | None = None,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Forecast, keep the forecast, log one MLflow run; return what to print.

    Returns
    -------
    dict
        ``forecast_id, as_of, models`` (where the models came from), ``summary`` (DataFrame,
        :meth:`models.forecast.revenue.RevenueForecast.summary` rows of the shown months and the
        quarter), ``baseline`` (the stage-weighted rows), ``run_id``.
    """
    history = Store(data).load()
    now = data_now(history)
    moment = instant(as_of) if as_of is not None else now
    if moment > now:
        raise ValueError(
            f"as_of {moment:%Y-%m-%d %H:%M} is after the end of the data ({now:%Y-%m-%d}): "
            "forecasts are made as of a time the store has data for"
        )
    origin = date(moment.year, moment.month, 1)
    window = max(months, 3 - (origin.month - 1) % 3)
    models = champion_models(data, history, moment)
    source = "registry @champion"
    if models is None or models.max_months < window:
        source = (
            "refitted at the as_of (the champion was fitted after it)"
            if champion_tags(PROBABILITY_MODEL, data_dir=data)
            else "refitted at the as_of (no champion yet: run `dealcast train`)"
        )
        models = fit_deal_models(history, moment, months=window)
    forecast = revenue_forecast(
        history, moment, models=models, months=window, by=by, n_samples=n_samples, seed=seed
    )
    # the choice belongs to the champion: a forecast from refitted models publishes them as is
    choice = champion_choice(data) if source == "registry @champion" else None
    summary = published(history, forecast, choice, months=months)
    rows = snapshot_features(history, [moment]).collect()
    weighted = weighted_pipeline(history, moment, by=by, rows=rows)
    created = datetime.now(UTC)
    forecast_id = new_forecast_id(created)
    version = ", ".join(f"{k}@{v}" for k, v in models.versions.items()) or "refitted"
    kept = kept_rows(
        forecast,
        summary,
        weighted,
        forecast_id=forecast_id,
        created_at=created,
        model_version=version,
    )
    params = {
        "as_of": moment.isoformat(),
        "months": months,
        "by": by or "",
        "n_samples": n_samples,
        "seed": seed,
        "models": source,
        "model_version": version,
        "win_shock": round(models.win_shock, 4),
        "published": "; ".join(choice.reasons) if choice else "dealcast (no backtest choice)",
    }
    actual = monthly_bookings(history, before=moment)
    with job_run(
        data, "forecast", params=params, tags={"dealcast.forecast_id": forecast_id}
    ) as run:
        totals = summary.filter((pl.col("by") == "") & (pl.col("period") == "month"))
        for r in totals.iter_rows(named=True):
            run.metrics(
                {"p10": r["p10"], "p50": r["p50"], "p90": r["p90"], "mean": r["mean"]},
                step=int(r["horizon"]),
            )
        run.frame("forecast", summary)
        run.frame("kept", kept)
        run.frame("weighted_pipeline", weighted)
        run.figure(
            "fan_chart",
            fan_chart(actual, summary, title=f"Monthly bookings, forecast as of {moment:%Y-%m-%d}"),
        )
        ForecastLog(data).append(kept)
        run_id = run.run_id
    return {
        "forecast_id": forecast_id,
        "as_of": moment,
        "models": source,
        "model_version": version,
        "summary": summary,
        "weighted": weighted,
        "kept": kept,
        "run_id": run_id,
        "deals": forecast.deals,
        "choice": choice.reasons if choice else [],
        "notes": list(getattr(forecast, "notes", [])),
    }


def forecast_json(result: dict[str, Any]) -> str:
    """The JSON the CLI prints: ids, provenance, and the summary rows."""
    summary = result["summary"]
    baseline = result["kept"].filter(pl.col("method") != "dealcast")
    payload = {
        "forecast_id": result["forecast_id"],
        "as_of": result["as_of"].isoformat(),
        "models": result["models"],
        "model_version": result["model_version"],
        "run_id": result["run_id"],
        "published": result.get("choice", []),
        "notes": result.get("notes", []),
        "forecast": summary.to_dicts(),
        "baseline": baseline.select(
            "method", "by", "segment", "period", "target_month", "horizon", "p50"
        ).to_dicts(),
    }
    return json.dumps(payload, default=_json_default, indent=2)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
