"""Rolling-origin backtest of the monthly forecast against the baselines ops use today.

At each origin T (a month start) every method is refit on what was known before T and
forecasts months T+h. The long frame has one row per segment × origin × horizon: ``segment,
origin, target_month, horizon, actual`` and one column per method (``<method>__p10`` and
``<method>__p90`` for methods with an interval); ``models.metrics.summarise`` scores it.

Methods:

- ``dealcast`` — :func:`models.forecast.revenue.revenue_forecast` (deal models refit at T);
- ``stage_weighted_crm`` / ``stage_weighted_hist`` — the weighted pipeline by expected close month;
- ``prophet_only`` — Prophet on monthly bookings alone, from the first mature month;
- ``seasonal_naive`` — the same month a year before;
- ``run_rate`` — the mean of the last 3 months.

Only target months that closed before the end of the data are scored.

With more than one method, ``models.forecast.selection.published_columns`` adds ``blend``,
``published`` (the method or blend chosen per horizon on these origins, as ``dealcast train``
chooses what ``dealcast forecast`` publishes, with leave-one-origin-out conformal P10/P90) and
``published_nested`` (the choice at each origin made from the earlier origins only: the honest
figure for choosing by backtest).

A method without a basis at an origin is *not applicable* there: its forecast is null and
:attr:`Backtest.not_applicable` says why (seasonal naive whose year-ago month is before the
first booked month; stage-weighted CRM without stage probabilities in the pipeline config; a
stage-weighted forecast no open deal weighs in; run rate before 3 complete months; Prophet
with no month after its warm-up). The summary's ``note`` says so and :meth:`Backtest.league`
ranks only the methods scored on every row of a horizon. An origin no method can be refit at
(nothing won before it, no open pipeline, a deal model that cannot fit) is skipped with a note
(:attr:`Backtest.skipped`) and the others run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
from sklearn.base import clone

from features.calendar import add_months, instant
from features.contract import TS, DealHistory
from features.snapshots import data_now, pipeline_as_of, snapshot_features
from models.deals.probability import CloseProbabilityModel
from models.forecast.baselines import (
    RUN_RATE_MONTHS,
    first_booked_month,
    monthly_bookings,
    run_rate,
    seasonal_naive,
    stage_weighted,
)
from models.forecast.newbiz import BookingsProphet
from models.forecast.revenue import _mondays_before, fit_deal_models, revenue_forecast
from models.forecast.selection import DERIVED, published_columns
from models.metrics import P10, P90, summarise

__all__ = [
    "BASELINES",
    "METHODS",
    "WARMUP_MONTHS",
    "Backtest",
    "crm_probabilities_missing",
    "month_origins",
    "run_backtest",
]

_NA_SCHEMA = {
    "origin": pl.Date(),
    "horizon": pl.Int64(),
    "method": pl.String(),
    "reason": pl.String(),
}

METHODS: tuple[str, ...] = (
    "dealcast",
    "stage_weighted_crm",
    "stage_weighted_hist",
    "prophet_only",
    "seasonal_naive",
    "run_rate",
)
BASELINES: tuple[str, ...] = METHODS[1:]

_ONE_US = timedelta(microseconds=1)

WARMUP_MONTHS = 6
"""Months at the start of a history that ``prophet_only`` skips: a CRM history starts with an
empty pipeline, so its first months book less than the business does (the simulator's too)."""


def month_origins(start: date, end: date) -> list[date]:
    """Month starts from ``start``'s month to ``end``'s month, inclusive."""
    first, last = date(start.year, start.month, 1), date(end.year, end.month, 1)
    out = []
    while first <= last:
        out.append(first)
        first = add_months(first, 1)
    return out


@dataclass
class Backtest:
    """The long frame, its summary per method and horizon, and the origins run.

    ``not_applicable`` has one row per origin, horizon and method that had no basis there
    (``origin, horizon, method, reason``); ``skipped`` the origins that could not be used, with
    why (they are not in ``origins``).
    """

    frame: pl.DataFrame
    summary: pl.DataFrame
    origins: list[date]
    horizons: list[int]
    by: list[str]
    not_applicable: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_NA_SCHEMA))
    skipped: list[tuple[date, str]] = field(default_factory=list)

    def league(self) -> pl.DataFrame:
        """The summary with a rank per horizon (1 = lowest WAPE) among the ranked methods.

        A method is ranked at a horizon only when it was applicable on every scored row there
        (the summary's ``note`` is null); the others keep their figures, a null rank and the
        note ("n/a — <reason>"), and sort last.
        """
        summary = self.summary
        if "note" not in summary.columns:
            summary = summary.with_columns(
                pl.when(pl.col("n") == 0)
                .then(pl.lit("n/a — no forecast"))
                .otherwise(None)
                .alias("note")
            )
        ranked = pl.col("note").is_null() & pl.col("wape").is_not_null()
        rank = pl.when(ranked).then(pl.col("wape")).rank("min").over("horizon").cast(pl.Int64)
        return summary.with_columns(pl.when(ranked).then(rank).alias("rank")).sort(
            "horizon", "rank", nulls_last=True, maintain_order=True
        )


def _segment(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Replace the ``by`` columns with one ``segment`` string column ("total" without ``by``)."""
    if not by:
        return frame.with_columns(pl.lit("total").alias("segment"))
    label = pl.concat_str(
        [pl.col(c).cast(pl.String).fill_null("(none)") for c in by], separator=" · "
    )
    return frame.with_columns(label.alias("segment")).drop(by)


def _point(frame: pl.DataFrame, by: list[str], name: str) -> pl.DataFrame:
    return _segment(frame, by).select("segment", "horizon", pl.col("forecast").alias(name))


def _prophet_only(
    history: DealHistory, origin: date, horizons: list[int], by: list[str], n_samples: int
) -> pl.DataFrame:
    series = monthly_bookings(history, by=by or None, before=origin)
    if series.height:
        first = series["month"].min()
        series = series.filter(pl.col("month") >= add_months(first, WARMUP_MONTHS))  # type: ignore[arg-type]
    if series.height == 0:
        raise _NotApplicable(f"no complete month after the {WARMUP_MONTHS}-month warm-up")
    model = BookingsProphet().fit(series.select(*by, "month", "bookings"))
    draws = model.sample(origin, horizons, n_samples=n_samples, seed=0)
    return _segment(
        draws.group_by(*by, "horizon").agg(
            pl.col("bookings").mean().alias("prophet_only"),
            pl.col("bookings").quantile(0.1).alias(f"prophet_only{P10}"),
            pl.col("bookings").quantile(0.9).alias(f"prophet_only{P90}"),
        ),
        by,
    )


def _dealcast(
    history: DealHistory,
    origin: date,
    horizons: list[int],
    by: list[str],
    n_samples: int,
    snapshots: pl.DataFrame,
    probability: CloseProbabilityModel | None = None,
) -> pl.DataFrame:
    months = max(horizons) + 1
    models = None
    if probability is not None:  # the train job's tuned parameters, refit at the origin
        window = max(months, 3 - (origin.month - 1) % 3)
        models = fit_deal_models(
            history,
            instant(origin),
            months=window,
            snapshots=snapshots,
            probability=clone(probability),
        )
    forecast = revenue_forecast(
        history,
        instant(origin),
        models=models,
        months=months,
        by=by or None,
        n_samples=n_samples,
        snapshots=snapshots,
    )
    summary = forecast.summary().filter(
        (pl.col("period") == "month") & pl.col("horizon").is_in(horizons)
    )
    if by:
        summary = summary.filter(pl.col("by") != "")
    return summary.select(
        "segment",
        "horizon",
        pl.col("p50").alias("dealcast"),
        pl.col("p10").alias(f"dealcast{P10}"),
        pl.col("p90").alias(f"dealcast{P90}"),
    )


def crm_probabilities_missing(history: DealHistory) -> list[str]:
    """The open stages the pipeline config gives no probability for (empty: CRM is usable)."""
    return [s.name for s in history.pipeline.stages if s.kind == "open" and s.probability is None]


class _NotApplicable(Exception):
    """A method has no basis at an origin; ``args[0]`` says why."""


def _method_column(
    method: str,
    history: DealHistory,
    origin: date,
    series: pl.DataFrame,
    hs: list[int],
    dims: list[str],
    n_samples: int,
    snapshots: pl.DataFrame,
    probability: CloseProbabilityModel | None = None,
) -> pl.DataFrame:
    """``segment, horizon, <method>[, <method>__p10, <method>__p90]`` at one origin.

    Raises :class:`_NotApplicable` when the method has no basis at the origin.
    """
    if method == "run_rate":
        out = run_rate(series, origin, hs)
        if out["forecast"].is_null().all():
            raise _NotApplicable(f"fewer than {RUN_RATE_MONTHS} complete months before the origin")
        return _point(out, dims, method)
    if method in ("stage_weighted_crm", "stage_weighted_hist"):
        crm = method.endswith("crm")
        if crm and (unset := crm_probabilities_missing(history)):
            raise _NotApplicable(
                f"no CRM stage probabilities in the pipeline config ({', '.join(unset)})"
            )
        weighted = stage_weighted(
            history,
            origin,
            hs,
            probability="crm" if crm else "hist",
            by=dims or None,
            with_deals=True,
        )
        if int(weighted["deals"].sum()) == 0:
            raise _NotApplicable(
                "no open deal falls in the months forecast"
                if crm
                else "no open deal falls in the months forecast with a historical stage win "
                "rate (there is none without a stage history or before a deal closed)"
            )
        return _point(weighted.drop("deals"), dims, method)
    if method == "prophet_only":
        return _prophet_only(history, origin, hs, dims, n_samples)
    return _dealcast(history, origin, hs, dims, n_samples, snapshots, probability)


def _unusable(history: DealHistory, origin: date) -> str | None:
    """Why no method can be refit at ``origin`` (None: it can be used)."""
    moment = pl.lit(instant(origin)).cast(TS)
    won = list(history.pipeline.names_of("won"))
    closed_won = (
        history.deals.filter(
            pl.col("stage").is_in(won)
            & pl.col("closed_at").is_not_null()
            & (pl.col("closed_at") < moment)
        )
        .select(pl.len())
        .collect()
        .item()
    )
    if not closed_won:
        return "no deal had been won before it"
    if pipeline_as_of(history, instant(origin) - _ONE_US).height == 0:
        return "no deal was open at it"
    return None


def _seasonal_reasons(series: pl.DataFrame, origin: date, hs: list[int]) -> dict[int, str]:
    """Horizon → why seasonal naive has no basis there (horizons absent from it have one)."""
    first = first_booked_month(series, origin)
    out = {}
    for h in hs:
        target = add_months(origin, h)
        year_ago = add_months(target, -12)
        if year_ago >= origin:
            out[h] = "the month a year before has not closed at the origin"
        elif first is None:
            out[h] = "nothing booked before the origin"
        elif year_ago < first:
            out[h] = (
                f"no bookings a year before ({year_ago:%Y-%m} is before the first, {first:%Y-%m})"
            )
    return out


def run_backtest(
    history: DealHistory,
    origins: Sequence[date],
    *,
    horizons: Sequence[int] = (0, 1, 2),
    by: str | Sequence[str] | None = None,
    n_samples: int = 1000,
    methods: Sequence[str] = METHODS,
    on_origin: Callable[[date], None] | None = None,
    probability: CloseProbabilityModel | None = None,
) -> Backtest:
    """Refit every method at each origin and score it on the months that have closed.

    Parameters
    ----------
    history : DealHistory
    origins : sequence of date
        Month starts.
    horizons : sequence of int
        Months ahead (0 = the origin's month).
    by : dimension(s), optional
        Score per segment instead of the company total.
    n_samples : int
        Monte Carlo draws per origin.
    methods : sequence of str
        A subset of :data:`METHODS` (the train job's gate runs ``dealcast`` alone).
    on_origin : callable, optional
        Called after each origin, skipped or not (progress bars).
    probability : CloseProbabilityModel, optional
        Unfitted close-probability estimator dealcast refits at each origin (the train job's
        tuned parameters); the defaults when omitted.

    Raises
    ------
    ValueError
        For bad arguments, and when no origin can be used (the message lists why for each).
    """
    hs = sorted({int(h) for h in horizons})
    if not hs or hs[0] < 0:
        raise ValueError(f"horizons must be integers >= 0, got {list(horizons)}")
    if not origins:
        raise ValueError("no origins: give at least one month start")
    dims = [by] if isinstance(by, str) else list(by or ())
    chosen = [m for m in METHODS if m in set(methods)]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not chosen:
        raise ValueError(f"methods must be among {', '.join(METHODS)}, got {list(methods)}")
    end = data_now(history)
    ordered = sorted(set(origins))
    # one snapshot table for every origin: Mondays before the last origin, labels filtered per
    # origin in models.forecast.revenue.training_rows (only outcomes known at that origin are kept)
    last = datetime(ordered[-1].year, ordered[-1].month, 1, tzinfo=UTC)
    snapshots = (
        snapshot_features(history, _mondays_before(history, last, None)).collect()
        if "dealcast" in chosen
        else pl.DataFrame()
    )
    # actuals: every month closed before the end of the data
    actual_by = monthly_bookings(history, by=dims or None, before=end)
    actuals = _segment(actual_by, dims).select(
        "segment", pl.col("month").alias("target_month"), pl.col("bookings").alias("actual")
    )
    parts: list[pl.DataFrame] = []
    na: list[tuple[date, int, str, str]] = []
    skipped: list[tuple[date, str]] = []
    used: list[date] = []
    for origin in ordered:
        reason = _unusable(history, origin)
        series = monthly_bookings(history, by=dims or None, before=origin)
        origin_na: list[tuple[date, int, str, str]] = []
        columns = []
        if reason is None:
            for m in chosen:
                if m == "seasonal_naive":
                    continue
                try:
                    columns.append(
                        _method_column(
                            m, history, origin, series, hs, dims, n_samples, snapshots, probability
                        )
                    )
                except _NotApplicable as exc:
                    origin_na += [(origin, h, m, str(exc)) for h in hs]
                except ValueError as exc:
                    if m == "dealcast":
                        reason = f"dealcast cannot be refit: {exc}"
                        break
                    origin_na += [(origin, h, m, f"cannot be fitted: {exc}") for h in hs]
        if reason is not None:
            skipped.append((origin, reason))
            if on_origin is not None:
                on_origin(origin)
            continue
        grid = _segment(seasonal_naive(series, origin, hs), dims).select(
            "segment", "target_month", "horizon", pl.col("forecast").alias("seasonal_naive")
        )
        if "seasonal_naive" in chosen:
            origin_na += [
                (origin, h, "seasonal_naive", why)
                for h, why in _seasonal_reasons(series, origin, hs).items()
            ]
        else:
            grid = grid.drop("seasonal_naive")
        row = grid
        for column in columns:
            row = row.join(column, on=["segment", "horizon"], how="full", coalesce=True)
        row = row.with_columns(
            pl.lit(origin).alias("origin"),
            pl.lit(origin).dt.offset_by(pl.format("{}mo", pl.col("horizon"))).alias("target_month"),
        )
        parts.append(row)
        na += origin_na
        used.append(origin)
        if on_origin is not None:
            on_origin(origin)
    if not parts:
        notes = "; ".join(f"{o:%Y-%m}: {why}" for o, why in skipped)
        raise ValueError(f"no backtest origin can be used ({notes})")
    not_applicable = pl.DataFrame(na, schema=_NA_SCHEMA, orient="row")
    frame = (
        pl.concat(parts, how="diagonal")
        .join(actuals, on=["segment", "target_month"], how="left")
        .filter(pl.col("actual").is_not_null())
    )
    point = [m for m in METHODS if m in chosen]
    frame = frame.with_columns(
        pl.col(c).cast(pl.Float64)
        for m in point
        for c in (m, f"{m}{P10}", f"{m}{P90}")
        if c in frame.columns
    ).with_columns(pl.lit(None, dtype=pl.Float64).alias(m) for m in point if m not in frame.columns)
    # a method not applicable at (origin, horizon) forecasts null there, in every segment
    for m in point:
        cells = not_applicable.filter(pl.col("method") == m).select("origin", "horizon")
        if cells.height:
            hit = (
                frame.select("origin", "horizon")
                .join(
                    cells.with_columns(pl.lit(True).alias("_na")),
                    on=["origin", "horizon"],
                    how="left",
                )["_na"]
                .fill_null(False)
            )
            frame = frame.with_columns(
                pl.when(hit).then(None).otherwise(pl.col(c)).alias(c)
                for c in (m, f"{m}{P10}", f"{m}{P90}")
                if c in frame.columns
            )
    order = [
        "segment",
        "origin",
        "target_month",
        "horizon",
        "actual",
        *(c for m in METHODS for c in (m, f"{m}{P10}", f"{m}{P90}") if c in frame.columns),
    ]
    frame = frame.select(order).sort("segment", "origin", "horizon")
    scored = list(chosen)
    if len(chosen) > 1:  # the forecast dealcast publishes: chosen per horizon on these origins
        frame = published_columns(frame, chosen)
        scored += list(DERIVED)
    summary = _with_notes(summarise(frame, scored, by=("method", "horizon")), frame, not_applicable)
    return Backtest(frame, summary, used, hs, dims, not_applicable, skipped)


def _with_notes(summary: pl.DataFrame, frame: pl.DataFrame, na: pl.DataFrame) -> pl.DataFrame:
    """Add ``note``: null for a method scored on every row of its horizon, else why not."""
    rows = frame.group_by("horizon").agg(pl.len().alias("_rows"))
    scored = frame.select("origin", "horizon").unique()
    reasons = (
        na.join(scored, on=["origin", "horizon"], how="semi")
        .group_by("method", "horizon")
        .agg(pl.col("reason").unique(maintain_order=True).str.join("; ").alias("_why"))
    )
    why = pl.col("_why").fill_null("no forecast")
    note = (
        pl.when(pl.col("n") == 0)
        .then(pl.format("n/a — {}", why))
        .when(pl.col("n") < pl.col("_rows"))
        .then(pl.format("not ranked: scored on {} of {} rows; n/a — {}", "n", "_rows", why))
        .otherwise(None)
    )
    return (
        summary.join(rows, on="horizon", how="left")
        .join(reasons, on=["method", "horizon"], how="left")
        .with_columns(note.alias("note"))
        .drop("_rows", "_why")
    )


def acceptance(backtest: Backtest) -> dict[str, object]:
    """The issue's bar: lowest WAPE at every horizon, h0 30% below the best baseline, coverage.

    Returns the figures and a ``passed`` flag per check (the caller decides what to do).
    """
    summary = backtest.summary
    out: dict[str, object] = {}
    for h in backtest.horizons:
        part = summary.filter(pl.col("horizon") == h)
        ours = part.filter(pl.col("method") == "dealcast")
        # the best baseline is chosen among the ranked ones (applicable on every row)
        others = (
            backtest.league()
            .filter(
                (pl.col("horizon") == h) & ~pl.col("method").is_in(["dealcast", "oracle", *DERIVED])
            )
            .filter(pl.col("rank").is_not_null())
            .select(part.columns)
        )
        if ours.height == 0 or others.height == 0:
            continue
        wape = float(ours["wape"][0])
        best = others.sort("wape").row(0, named=True)
        out[f"h{h}"] = {
            "wape": wape,
            "best_baseline": best["method"],
            "best_baseline_wape": best["wape"],
            "improvement": 1.0 - wape / best["wape"] if best["wape"] else None,
            "lowest": wape < best["wape"],
            "coverage": ours["coverage"][0],
            **{
                f"{m}_{k}": r[k]
                for m in ("published", "published_nested")
                for r in part.filter(pl.col("method") == m).iter_rows(named=True)
                for k in ("wape", "coverage", "n")
            },
        }
    cover = summary.filter(pl.col("method") == "dealcast")["coverage"].drop_nulls().to_numpy()
    out["coverage"] = float(np.mean(cover)) if cover.size else None
    return out


def baseline_points(
    history: DealHistory,
    origin: date,
    horizons: Sequence[int],
    methods: Sequence[str],
    *,
    n_samples: int = 500,
) -> dict[str, dict[int, float | None]]:
    """Company-total forecasts of the baselines ``methods`` made at ``origin`` (a month start).

    What ``dealcast forecast`` and ``publish`` blend with the deal-level forecast when the
    backtest chose a baseline (``models.forecast.selection``). A method with no basis at the
    origin, or that cannot be fitted, forecasts None.
    """
    hs = sorted({int(h) for h in horizons})
    series = monthly_bookings(history, before=origin)
    out: dict[str, dict[int, float | None]] = {}
    for m in (m for m in BASELINES if m in set(methods)):
        if m == "seasonal_naive":
            frame = seasonal_naive(series, origin, hs)
            values = dict(zip(frame["horizon"].to_list(), frame["forecast"].to_list(), strict=True))
        else:
            try:
                column = _method_column(
                    m, history, origin, series, hs, [], n_samples, pl.DataFrame()
                )
            except (_NotApplicable, ValueError):
                values = {}
            else:
                values = dict(zip(column["horizon"].to_list(), column[m].to_list(), strict=True))
        out[m] = {h: None if values.get(h) is None else float(values[h]) for h in hs}
    return out
