"""The publish job: score the open deals, forecast, evaluate, and publish it all for the API.

``run_publish`` uses the registered ``@champion`` models only: it never trains (the API's
refresh job calls it, and a request must not train a model). It

1. scores every open deal: P(won), timing, expected value, P(slip), the reasons behind the
   score (``models.deals.reasons``), risk flags (``features.risk``) and a priority;
2. forecasts the coming months and the quarter for the company and each published dimension,
   and keeps each forecast (``features.forecast_log``) so it is scored when its month closes;
3. weighs the open pipeline (stage-weighted and model-weighted) by expected close month;
4. scores the kept forecasts whose month has closed (``pipelines.evaluate.run_evaluate``);
5. computes the KPI tables, and the monthly bookings and targets behind the fan chart;
6. runs every anomaly detector (``pipelines.anomalies``) over the last
   ``LOOKBACK_MONTHS`` months;

then writes one publication (``serving.publication``) and logs one MLflow run.

Before any work it checks that the MLflow tracking server answers (a few seconds at most,
:func:`check_tracking`), so a refresh with MLflow down fails at once with one clear line. The
publication's manifest records the store version it was computed from (``store_version``).
The forecasts are kept (``features.forecast_log``) only once the publication is live: a
publish killed midway keeps nothing for a publication nobody saw.

Priority: a rep should first work the deals worth the most *this quarter*, and sooner those
that show risk. ``priority = expected_this_period × (1 + 0.25 × min(flags, 4))`` where
``expected_this_period = P(won) × P(closing by the quarter's end | won) × amount if won``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from features.calendar import add_months, instant, month_of, quarter_start
from features.contract import DealHistory
from features.forecast_log import ForecastLog, new_forecast_id, read_accuracy, segment_label
from features.kpis.table import kpi_table
from features.risk import risk_flags, risk_norms
from features.snapshots import data_now, snapshot_features
from features.store import Store
from models.deals.reasons import ReasonExplainer
from models.forecast.baselines import monthly_bookings
from models.forecast.revenue import (
    N_SAMPLES,
    TARGET_SCOPE,
    DealModels,
    deal_scores,
    revenue_forecast,
    stale_deal_cap,
    training_rows,
)
from models.forecast.weighted import weighted_pipeline
from models.tracking import NoChampionError, job_run
from pipelines.anomalies import DETECTORS, LOOKBACK_MONTHS, detect_anomalies
from pipelines.console import progress
from pipelines.evaluate import run_evaluate
from pipelines.forecast import champion_choice, champion_models, choice_points, kept_rows
from pipelines.forecast import published as published_forecast
from serving.publication import (
    PUBLISHED_DIMENSIONS,
    PUBLISHED_MONTHS,
    write_publication,
)

__all__ = ["MlflowUnreachableError", "check_tracking", "run_publish"]

TRACKING_TIMEOUT = 5.0
"""Seconds to wait for the MLflow tracking server before giving up (one clear error)."""


class MlflowUnreachableError(RuntimeError):
    """The MLflow tracking server does not answer: publishing needs its registry."""


def check_tracking(data: Path, *, timeout: float = TRACKING_TIMEOUT) -> None:
    """Raise :class:`MlflowUnreachableError` when an http(s) tracking server does not answer
    within ``timeout`` seconds (a local sqlite store needs no check)."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from models.tracking import tracking_uri

    uri = tracking_uri(data)
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout):  # noqa: S310 (http(s) only)
            return
    except urllib.error.HTTPError:
        return  # it answered: reachable (the registry calls say more if it is unwell)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MlflowUnreachableError(
            f"the MLflow tracking server {shown} (MLFLOW_TRACKING_URI) does not answer within "
            f"{timeout:g} s ({reason}): start it or fix MLFLOW_TRACKING_URI; nothing was "
            "published, the API keeps serving the current publication"
        ) from None


KPI_WEEKS = 104
"""Weekly KPIs published for this many weeks back (months and quarters: all the history)."""

ACTUAL_MONTHS = 24
"""Months of actual bookings (and targets) published behind the fan chart."""

URGENCY_PER_FLAG = 0.25
MAX_FLAGS_COUNTED = 4


def _segment(dims: list[str]) -> pl.Expr:
    """The ``segment`` label of a unit: "total" for the company, else ``segment_label``."""
    return segment_label(dims) if dims else pl.lit("total")


def _scores(
    history: DealHistory, models: DealModels, rows: pl.DataFrame, moment: datetime
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per open deal: the score row, its reasons (long) and its risk flags (long).

    P(won) of an open deal older than any deal ever won is capped as in the forecast
    (``models.forecast.revenue.stale_deal_cap``; the ``stale`` column says which).
    """
    scored = deal_scores(models, rows)
    if scored.height:
        cap = stale_deal_cap(history, moment)
        scored = cap.apply(scored) if cap else scored.with_columns(pl.lit(False).alias("stale"))
    if scored.height == 0:
        empty = pl.DataFrame(schema={"deal_id": pl.String()})
        return scored, empty, empty
    origin = month_of(moment)
    in_quarter = 3 - (origin.month - quarter_start(origin).month)  # months 0..in_quarter-1
    p_cols = [f"p_month_{k}" for k in range(in_quarter) if f"p_month_{k}" in scored.columns]
    flags = risk_flags(rows, risk_norms(history, moment))
    counts = flags.group_by("deal_id").agg(pl.len().cast(pl.Int64).alias("n_flags"))
    extra = rows.select("deal_id", "expected_close_date", "forecast_category", "days_in_stage")
    scored = (
        scored.join(extra, on="deal_id", how="left")
        .join(counts, on="deal_id", how="left")
        .with_columns(
            pl.col("n_flags").fill_null(0),
            (pl.col("p_won") * pl.col("p_month_0")).alias("p_this_month"),
            (pl.col("p_won") * pl.sum_horizontal(p_cols) * pl.col("amount_won")).alias(
                "expected_this_period"
            ),
        )
        .with_columns(
            (
                pl.col("expected_this_period")
                * (1 + URGENCY_PER_FLAG * pl.col("n_flags").clip(0, MAX_FLAGS_COUNTED))
            ).alias("priority")
        )
        .with_columns(
            pl.col("priority")
            .rank("ordinal", descending=True)
            .over("owner_id")
            .cast(pl.Int64)
            .alias("rank")
        )
        .sort("owner_id", "rank")
    )
    reference = training_rows(history, moment, weeks=26)
    explainer = ReasonExplainer(models.probability, reference if reference.height else rows)
    explained = explainer.explain(rows, top=3)
    reasons = pl.DataFrame(
        [
            (deal, i, reason.text, reason.effect)
            for deal, found in zip(rows["deal_id"].to_list(), explained, strict=True)
            for i, reason in enumerate(found)
        ],
        schema={"deal_id": pl.String, "order": pl.Int64, "text": pl.String, "effect": pl.Float64},
        orient="row",
    )
    return scored, reasons, flags


def _actuals(history: DealHistory, moment: datetime) -> pl.DataFrame:
    """Monthly bookings of the last complete months and their targets, per published unit."""
    first = add_months(month_of(moment), -ACTUAL_MONTHS)
    targets = history.targets.collect() if "targets" in history.has else None
    frames = []
    for by in (None, *PUBLISHED_DIMENSIONS):
        dims = [by] if by else []
        booked = monthly_bookings(history, by=by, before=moment).filter(pl.col("month") >= first)
        frame = booked.select(
            pl.lit(by or "").alias("by"),
            _segment(dims).alias("segment"),
            "month",
            "bookings",
        )
        scope = "company" if by is None else TARGET_SCOPE.get(by)
        if targets is not None and scope is not None:
            keyed = targets.filter(pl.col("scope_type") == scope).select(
                pl.col("scope_id").cast(pl.String).fill_null("total").alias("segment")
                if by
                else pl.lit("total").alias("segment"),
                pl.col("period").str.to_date("%Y-%m").alias("month"),
                pl.col("amount").cast(pl.Float64).alias("target"),
            )
            frame = frame.join(keyed, on=["segment", "month"], how="left")
        else:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("target"))
        frames.append(frame)
    return pl.concat(frames, how="vertical_relaxed")


def _kpis(history: DealHistory, moment: datetime, period: str) -> pl.DataFrame:
    """The KPI table per published unit, as known at ``moment`` (its last full day is the end)."""
    end = (moment - timedelta(microseconds=1)).date()
    start = end - timedelta(weeks=KPI_WEEKS) if period == "week" else None
    frames = []
    for by in (None, *PUBLISHED_DIMENSIONS):
        dims = [by] if by else []
        table = kpi_table(history, period=period, by=dims, start=start, end=end)
        frames.append(
            table.with_columns(pl.lit(by or "").alias("by"), _segment(dims).alias("segment")).drop(
                dims
            )
        )
    return pl.concat(frames, how="diagonal_relaxed")


def run_publish(
    data: Path,
    *,
    as_of: date | datetime | None = None,
    months: int = PUBLISHED_MONTHS,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Score, forecast, evaluate and publish; return what to print.

    Raises
    ------
    NoChampionError
        No ``@champion`` fitted at or before the as-of: run ``dealcast train`` first (this job
        never trains).
    """
    check_tracking(data)
    store = Store(data)
    history = store.load()
    now = data_now(history)
    moment = instant(as_of) if as_of is not None else now
    if moment > now:
        raise ValueError(
            f"as_of {moment:%Y-%m-%d} is after the end of the data ({now:%Y-%m-%d}): publish "
            "results as of a time the store has data for"
        )
    origin = month_of(moment)
    window = max(months, 3 - (origin.month - quarter_start(origin).month))
    if months < 1:
        raise ValueError(f"months must be >= 1, got {months}")
    units: list[str | None] = [None, *PUBLISHED_DIMENSIONS]
    with progress() as bar:
        task = bar.add_task("loading the @champion models", total=len(units) + 6)
        models = champion_models(data, history, moment)
        if models is None or models.max_months < window:
            raise NoChampionError(
                f"no @champion models fitted at or before {moment:%Y-%m-%d} covering {window} "
                "months: run `dealcast train` (publishing never trains)"
            )
        bar.advance(task)
        bar.update(task, description="scoring the open deals")
        rows = snapshot_features(history, [moment]).collect()
        scores, reasons, flags = _scores(history, models, rows, moment)
        bar.advance(task)
        forecasts, weighted, kept = [], [], []
        version = ", ".join(f"{k}@{v}" for k, v in models.versions.items())
        choice = champion_choice(data)
        points = choice_points(history, origin, window, choice, n_samples=min(n_samples, 500))
        notes: list[str] = []
        for by in units:
            bar.update(task, description=f"forecasting {'the company' if by is None else by}")
            forecast = revenue_forecast(
                history, moment, models=models, months=window, by=by, n_samples=n_samples, seed=seed
            )
            summary = published_forecast(history, forecast, choice, months=months, points=points)
            notes += [n for n in getattr(forecast, "notes", []) if n not in notes]
            pipeline = weighted_pipeline(history, moment, by=by, models=models, rows=rows)
            created = datetime.now(UTC)
            keep = kept_rows(
                forecast,
                summary,
                pipeline,
                forecast_id=new_forecast_id(created),
                created_at=created,
                model_version=version,
            )
            if by is not None:  # the company total is kept once, from the by=None forecast
                summary = summary.filter(pl.col("by") != "")
                keep = keep.filter(pl.col("by") != "")
            forecasts.append(summary)
            kept.append(keep)
            dims = [by] if by else []
            weighted.append(
                pipeline.select(
                    pl.lit(by or "").alias("by"),
                    _segment(dims).alias("segment"),
                    pl.exclude(dims),
                )
            )
            bar.advance(task)
        bar.update(task, description="scoring the forecasts whose month has closed")
        evaluated = run_evaluate(data)
        bar.advance(task)
        bar.update(task, description="computing the KPIs")
        kpis = {period: _kpis(history, moment, period) for period in ("week", "month", "quarter")}
        bar.advance(task)
        bar.update(task, description="detecting anomalies")
        found, anomaly_counts = detect_anomalies(
            history,
            moment=moment,
            since=add_months(origin, -LOOKBACK_MONTHS),
            flags=flags,
        )
        bar.advance(task)
        bar.update(task, description="publishing")
        open_ids = scores["deal_id"] if scores.height else pl.Series("deal_id", [], pl.String)
        stage_history = (
            history.stage_history.filter(
                pl.col("deal_id").is_in(open_ids.implode()) & (pl.col("changed_at") <= moment)
            )
            .select("deal_id", "changed_at", "stage", "amount", "expected_close_date")
            .sort("deal_id", "changed_at")
            .collect()
        )
        tables = {
            "forecasts": pl.concat(forecasts, how="vertical_relaxed"),
            "actuals": _actuals(history, moment),
            "weighted": pl.concat(weighted, how="diagonal_relaxed"),
            "scores": scores,
            "reasons": reasons,
            "flags": flags,
            "stage_history": stage_history,
            "accuracy": read_accuracy(data),
            "kpis_week": kpis["week"],
            "kpis_month": kpis["month"],
            "kpis_quarter": kpis["quarter"],
            "anomalies": found,
        }
        manifest = {
            "as_of": moment.isoformat(),
            "data_end": now.isoformat(),
            "store_version": store.loaded_version,
            "months": months,
            "dimensions": list(PUBLISHED_DIMENSIONS),
            "model_version": version,
            "forecast_ids": [str(frame["forecast_id"][0]) for frame in kept if frame.height],
            "n_samples": n_samples,
            "detectors": list(DETECTORS),
            "anomaly_counts": anomaly_counts,
            "published": choice.to_json() if choice else None,
            "published_reasons": choice.reasons if choice else [],
            "notes": notes,
        }
        params = {
            k: v
            for k, v in manifest.items()
            if k
            not in (
                "forecast_ids",
                "detectors",
                "anomaly_counts",
                "published",
                "published_reasons",
                "notes",
            )
        }
        with job_run(data, "publish", params=params) as run:
            total = tables["forecasts"].filter((pl.col("by") == "") & (pl.col("period") == "month"))
            for r in total.iter_rows(named=True):
                run.metrics({"p50": r["p50"], "p10": r["p10"], "p90": r["p90"]}, step=r["horizon"])
            run.metrics(
                {
                    "open_deals": float(scores.height),
                    "flagged_deals": float(flags["deal_id"].n_unique()) if flags.height else 0.0,
                    **{f"anomalies_{k}": float(v) for k, v in anomaly_counts.items()},
                    **{
                        f"flags_{name}": float(n)
                        for name, n in (
                            flags.group_by("flag").len().iter_rows() if flags.height else []
                        )
                    },
                }
            )
            run.frame("scores", scores)
            if choice is not None:
                run.json("forecast_choice", choice.to_json())
            published = write_publication(data, tables, {**manifest, "run_id": run.run_id})
            run.tag("dealcast.publication", published)
            # kept only now that the publication is live (a kill before keeps nothing)
            log = ForecastLog(data)
            for frame in kept:
                log.append(frame)
        bar.advance(task)
    company = kept[0]
    return {
        "version": published,
        "summary": forecasts[0],
        "kept": company,
        "forecast_id": str(company["forecast_id"][0]) if company.height else "",
        "models": "registry @champion",
        "as_of": moment,
        "model_version": version,
        "open_deals": scores.height,
        "flagged_deals": flags["deal_id"].n_unique() if flags.height else 0,
        "forecasts": tables["forecasts"],
        "evaluated": evaluated,
        "anomalies": found,
        "anomaly_counts": anomaly_counts,
        "since": add_months(origin, -LOOKBACK_MONTHS),
        "run_id": run.run_id,
    }
