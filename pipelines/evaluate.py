"""The evaluate job and the accuracy report: kept forecasts scored once their month closed.

``dealcast evaluate`` should call :func:`run_evaluate` then :func:`print_evaluate`;
``dealcast accuracy [--by DIM] [--horizon H] [--format table|json]`` should call
:func:`run_accuracy` then :func:`print_accuracy`. Both raise ``StoreNotFoundError`` (evaluate
only) and ``ValueError`` with a message for the user.

Evaluate is idempotent: it scores every kept forecast whose target period has closed
(``models.forecast.accuracy.score_forecasts``), compares the result with the stored accuracy
table and,
only when some row is new (a period closed since) or revised (an actual changed, e.g. a deal
entered late in a new export), logs one MLflow run and replaces the table. Run twice on the
same data, the second run changes nothing and logs nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import polars as pl

from features.calendar import instant
from features.contract import DIMENSIONS
from features.forecast_log import KEPT_KEY, ForecastLog, read_accuracy, write_accuracy
from features.snapshots import data_now
from features.store import Store
from models.forecast.accuracy import (
    accuracy_by_month,
    accuracy_summary,
    actuals_for,
    score_forecasts,
)
from models.tracking import job_run
from pipelines.console import console, render_table

__all__ = [
    "JOB",
    "metric_name",
    "print_accuracy",
    "print_evaluate",
    "run_accuracy",
    "run_evaluate",
]

JOB = "evaluate"
"""The MLflow run name (and ``dealcast.job`` tag) of the evaluate job."""

_REVISED_TOLERANCE = 1e-9  # relative change of an actual that counts as a revision
_METRICS = ("accuracy", "wape", "bias", "coverage")
_LABELS = {"stage_weighted_crm": "sw_crm", "stage_weighted_hist": "sw_hist"}
_METRIC_LABELS = {"wape": "WAPE"}
_CAPTION = (
    "WAPE = Σ|F − A| / ΣA; bias = Σ(F − A) / ΣA (> 0: over-forecast); coverage = share of "
    "actuals inside P10-P90; accuracy = 1 − |F − A| / A; sw_crm / sw_hist: stage-weighted "
    "pipeline with CRM / historical stage probabilities"
)
_MONTHS_SHOWN = 36


def metric_name(metric: str, method: str, horizon: int, period: str = "month") -> str:
    """The MLflow metric of one accuracy series, e.g. ``accuracy__dealcast__h0``.

    Quarters get a ``quarter_`` prefix (``quarter_wape__dealcast__h-1``); the step of every
    value is its target month as ``yyyymm`` (``202610``).
    """
    prefix = "quarter_" if period == "quarter" else ""
    return f"{prefix}{metric}__{method}__h{horizon}"


def _merge(stored: pl.DataFrame, scored: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """The new accuracy table, and how many of its rows are new and how many revised.

    Rows scored now replace their stored copy; stored rows that cannot be scored any more
    (their segment left the store) are kept, so the history never loses a row.
    """
    key = list(KEPT_KEY)
    was = stored.select(*key, pl.col("actual").alias("_was"), pl.lit(True).alias("_known"))
    compared = scored.join(was, on=key, how="left")
    known = pl.col("_known").fill_null(False)
    change = (pl.col("actual") - pl.col("_was")).abs()
    revised = known & (change > _REVISED_TOLERANCE * pl.max_horizontal(1.0, pl.col("_was").abs()))
    counts = compared.select((~known).sum().alias("new"), revised.sum().alias("revised"))
    merged = pl.concat([stored.join(scored.select(key), on=key, how="anti"), scored])
    return merged, int(counts["new"][0]), int(counts["revised"][0])


def _log_history(run_metrics: pl.DataFrame) -> dict[int, dict[str, float]]:
    """``step (yyyymm) -> {metric name: value}`` from the company total's monthly history."""
    steps: dict[int, dict[str, float]] = {}
    for row in run_metrics.iter_rows(named=True):
        month: date = row["target_month"]
        values = steps.setdefault(month.year * 100 + month.month, {})
        for metric in _METRICS:
            value = row[metric]
            if value is not None and value == value:  # skip null and NaN
                name = metric_name(metric, row["method"], row["horizon"], row["period"])
                values[name] = float(value)
    return steps


def run_evaluate(data: Path, *, closed_before: date | datetime | None = None) -> dict[str, object]:
    """Score every kept forecast whose period closed; store and log them when something is new.

    What ``dealcast evaluate`` should call.

    Parameters
    ----------
    data : Path
        The data directory (store, kept forecasts, MLflow).
    closed_before : date or datetime, optional
        The instant actuals are known at; default, and never later than, the end of the last
        day with data (``features.snapshots.data_now``): a month is scored once the store
        holds data through its last day.

    Returns
    -------
    dict
        ``new_rows``, ``revised_rows`` (0 and 0: nothing was written or logged),
        ``scored_rows`` (rows in the accuracy table), ``waiting_rows`` (kept rows not scored:
        their period is still open, or their segment has no bookings), ``kept_forecasts``,
        ``closed_before`` (ISO), ``run_id`` (None when nothing was logged) and
        ``accuracy_path`` (None when nothing was written).
    """
    kept = ForecastLog(data).read()
    stored = read_accuracy(data)
    result: dict[str, object] = {
        "new_rows": 0,
        "revised_rows": 0,
        "scored_rows": stored.height,
        "waiting_rows": kept.height,
        "kept_forecasts": kept["forecast_id"].n_unique(),
        "closed_before": None,
        "run_id": None,
        "accuracy_path": None,
    }
    if kept.height == 0:
        return result
    history = Store(data).load()
    end = data_now(history)
    before = end if closed_before is None else min(instant(closed_before), end)
    scored = score_forecasts(kept, actuals_for(history, kept, before), before)
    merged, new_rows, revised_rows = _merge(stored, scored)
    result.update(closed_before=before.isoformat(), waiting_rows=kept.height - scored.height)
    if not new_rows and not revised_rows:
        return result
    summary = accuracy_summary(merged)
    by_month = accuracy_by_month(merged)
    params = {
        "closed_before": before,
        "kept_forecasts": result["kept_forecasts"],
        "new_rows": new_rows,
        "revised_rows": revised_rows,
    }
    with job_run(data, JOB, params=params) as run:
        for step, values in sorted(_log_history(by_month).items()):
            run.metrics(values, step=step)
        run.frame("accuracy", merged)
        run.frame("accuracy_summary", summary)
        run.frame("accuracy_by_month", by_month)
        path = write_accuracy(data, merged)  # last: a failed run leaves the old table
        run_id = run.run_id
    result.update(
        new_rows=new_rows,
        revised_rows=revised_rows,
        scored_rows=merged.height,
        run_id=run_id,
        accuracy_path=str(path),
    )
    return result


def print_evaluate(result: dict[str, object], fmt: str = "table") -> None:
    """Print what :func:`run_evaluate` did (``fmt`` ``"table"``: a sentence; ``"json"``)."""
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=1, default=str) + "\n")
        return
    if not result["kept_forecasts"]:
        console.print("no kept forecasts yet: run `dealcast forecast` first")
        return
    if not result["new_rows"] and not result["revised_rows"]:
        console.print(
            f"nothing new to score: {result['scored_rows']} rows already scored, "
            f"{result['waiting_rows']} wait for their period to close"
        )
        return
    console.print(
        f"scored {result['new_rows']} new and {result['revised_rows']} revised forecast rows "
        f"(actuals known to {result['closed_before']}); {result['scored_rows']} in "
        f"{result['accuracy_path']}, {result['waiting_rows']} still waiting; "
        f"MLflow run {result['run_id']}"
    )


def run_accuracy(
    data: Path, *, by: str | None = None, horizon: int | None = None
) -> dict[str, object]:
    """The stored accuracy history, summarised, for the report (no scoring: see evaluate).

    What ``dealcast accuracy [--by DIM] [--horizon H]`` should call, before
    :func:`print_accuracy`.

    Parameters
    ----------
    data : Path
    by : str, optional
        A grouping the forecasts were kept by (``region``, ``region,product``): its segments
        instead of the company total.
    horizon : int, optional
        Only forecasts made this many months ahead.

    Returns
    -------
    dict
        ``by`` (None for the total), ``horizon``, ``rows`` and ``forecasts`` (scored rows and
        forecasts shown), ``summary`` (``period, horizon, [segment], method, wape, bias,
        coverage, accuracy, n``) and ``by_month`` (``models.forecast.accuracy.accuracy_by_month``).
    """
    unknown = [d for d in (by or "").split(",") if by and d not in DIMENSIONS]
    if unknown:
        raise ValueError(
            f"unknown dimension {', '.join(map(repr, unknown))}: use one of "
            f"{', '.join(DIMENSIONS)} (several joined by ',', as the forecast was grouped)"
        )
    rows = read_accuracy(Path(data)).filter(pl.col("by") == (by or ""))
    if horizon is not None:
        rows = rows.filter(pl.col("horizon") == horizon)
    keys = ("period", "horizon", *(("segment",) if by else ()), "method")
    return {
        "by": by,
        "horizon": horizon,
        "rows": rows.height,
        "forecasts": rows["forecast_id"].n_unique(),
        "summary": accuracy_summary(rows, by=keys),
        "by_month": accuracy_by_month(rows, by=by or ""),
    }


def _side_by_side(frame: pl.DataFrame, keys: list[str], shown: Sequence[str]) -> pl.DataFrame:
    """One row per ``keys``, one column per metric × method (``wape dealcast``, ...)."""
    methods = list(dict.fromkeys(frame["method"].to_list()))
    wide = frame.group_by(keys, maintain_order=True).agg(pl.col("n").max())
    for metric in shown:
        table = frame.pivot(on="method", index=keys, values=metric)
        for method in methods:
            if method not in table.columns:
                continue
            if table[method].null_count() == table.height:  # e.g. a point method's coverage
                table = table.drop(method)
            else:
                label = f"{_METRIC_LABELS.get(metric, metric)} {_LABELS.get(method, method)}"
                table = table.rename({method: label})
        wide = wide.join(table, on=keys, how="left", nulls_equal=True)
    return wide.select(*keys, pl.exclude(*keys, "n"), "n")


def print_accuracy(result: dict[str, object], fmt: str = "table") -> None:
    """Print :func:`run_accuracy`'s result: rich tables (dealcast next to the stage-weighted
    baselines) for ``fmt="table"``, ``{"summary": [...], "by_month": [...]}`` for ``"json"``."""
    summary = result["summary"]
    by_month = result["by_month"]
    assert isinstance(summary, pl.DataFrame) and isinstance(by_month, pl.DataFrame)
    if fmt == "json":
        payload = {
            **{k: v for k, v in result.items() if not isinstance(v, pl.DataFrame)},
            "summary": summary.to_dicts(),
            "by_month": by_month.to_dicts(),
        }
        sys.stdout.write(json.dumps(payload, indent=1, default=str) + "\n")
        return
    if fmt != "table":
        raise ValueError(f"--format must be table or json, got {fmt!r}")
    scope = f"by {result['by']}" if result["by"] else "company total"
    if summary.height == 0:
        console.print(
            f"no scored forecasts ({scope}) yet: keep forecasts with `dealcast forecast` and, "
            "once their month has closed, score them with `dealcast evaluate`"
        )
        return
    segment = ["segment"] if result["by"] else []
    table = render_table(
        _side_by_side(summary, ["period", "horizon", *segment], ("wape", "bias", "coverage")),
        title=f"forecast accuracy, {scope}: {result['forecasts']} forecast(s), "
        f"{result['rows']} scored rows",
    )
    table.caption = table.caption or _CAPTION
    console.print(table)
    keys = ["period", "target_month", *segment, "horizon"]
    history = _side_by_side(by_month, keys, ("accuracy", "coverage"))
    shown = min(history.height, _MONTHS_SHOWN)
    console.print(
        render_table(
            history.tail(_MONTHS_SHOWN),
            title=f"accuracy per closed period, {scope} (latest {shown})",
            limit=_MONTHS_SHOWN,
        )
    )
