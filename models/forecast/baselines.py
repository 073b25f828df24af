"""The backtest's baseline forecasters of monthly bookings, each a pure function of the origin.

A backtest origin is a month start ``T`` (00:00 UTC). Every baseline reads only what was known
before ``T``: bookings of months that ended by ``T``, and the open pipeline as of the last
instant before ``T`` (``T - 1 µs``). Each returns one row per requested horizon ``h`` (and per
group): ``target_month`` is the month ``h`` months after the origin's (``h = 0`` is the
origin's own month).

- :func:`seasonal_naive` — the bookings of the same month a year before;
- :func:`run_rate` — the mean bookings of the last 3 complete months;
- :func:`stage_weighted` — the classic weighted pipeline: open amount × stage probability,
  placed in the month of the deal's expected close date (or, without one, of the close date
  the deal's stage historically leads to: :func:`close_date_estimates`).

A baseline without a basis at an origin forecasts null ("not applicable"), never a made-up 0:
seasonal naive for a month whose year-ago month is before the first booked month.

The Prophet-only baseline lives with the new-business model (``models.forecast.newbiz``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Literal

import polars as pl

from features.calendar import add_months, check_dimensions, instant
from features.contract import TS, DealHistory
from features.kpis.pipeline import stage_win_rates
from features.snapshots import as_of_frame, data_now, deal_dimensions, pipeline_as_of

__all__ = [
    "monthly_bookings",
    "seasonal_naive",
    "run_rate",
    "stage_weighted",
    "close_date_estimates",
    "with_close_dates",
    "first_booked_month",
    "RUN_RATE_MONTHS",
]

RUN_RATE_MONTHS = 3
"""Complete months averaged by :func:`run_rate`."""

_ONE_US = timedelta(microseconds=1)
_FORECAST_SCHEMA = {"target_month": pl.Date(), "horizon": pl.Int64(), "forecast": pl.Float64()}


# -- small helpers -----------------------------------------------------------------------------


def _month_start(origin: date | datetime) -> date:
    """``origin`` as the first day of its month; ValueError unless it is a month start."""
    moment = instant(origin)
    if moment.day != 1 or moment.timetz().replace(tzinfo=None) != time():
        raise ValueError(
            f"origin {moment:%Y-%m-%d %H:%M:%S} UTC is not a month start: backtest origins are "
            "the first day of a month at 00:00 UTC, e.g. date(2026, 7, 1)"
        )
    return moment.date()


def _month_index(expr: pl.Expr) -> pl.Expr:
    """Months since year 0 of a date expression (for month differences)."""
    return expr.dt.year().cast(pl.Int64) * 12 + expr.dt.month().cast(pl.Int64) - 1


def _horizons(horizons: Sequence[int], origin: date) -> pl.DataFrame:
    """``target_month, horizon`` for each requested horizon; ValueError for a negative one."""
    hs = list(dict.fromkeys(int(h) for h in horizons))
    bad = [h for h in hs if h < 0]
    if bad:
        raise ValueError(f"horizons must be 0 (the origin's month) or more, got {bad}")
    return pl.DataFrame(
        {"target_month": [add_months(origin, h) for h in hs], "horizon": hs},
        schema={"target_month": pl.Date(), "horizon": pl.Int64()},
    )


def _groups(series: pl.DataFrame) -> list[str]:
    """The grouping columns of a bookings series: all but ``month`` and ``bookings``."""
    missing = [c for c in ("month", "bookings") if c not in series.columns]
    if missing:
        raise ValueError(
            f"bookings series lacks {', '.join(missing)}: pass a frame of monthly_bookings"
        )
    return [c for c in series.columns if c not in ("month", "bookings")]


def _known_groups(history: DealHistory, dims: list[str], before: datetime) -> pl.LazyFrame:
    """The distinct ``dims`` values of the deals created before ``before``."""
    created = history.deals.filter(pl.col("created_at") < pl.lit(before).cast(TS))
    return (
        deal_dimensions(history)
        .join(created.select("deal_id"), on="deal_id", how="semi")
        .select(dims)
        .unique()
    )


# -- bookings ----------------------------------------------------------------------------------


def monthly_bookings(
    history: DealHistory,
    *,
    by: str | Sequence[str] | None = None,
    before: date | datetime | None = None,
) -> pl.DataFrame:
    """Bookings per calendar month, for the months complete before ``before``, zero-filled.

    Bookings of a month are the amounts of deals won with ``closed_at`` in it (the data
    contract). A month is complete when its end (the next month's start) is ``<= before``, so
    only deals closed before ``before`` count.

    Parameters
    ----------
    history : DealHistory
    by : str or sequence of str, optional
        Dimensions of ``features.contract.DIMENSIONS`` to group by (``team`` from ``reps``).
    before : date or datetime, optional
        The instant the series is known at (a bare date is 00:00 UTC); default the end of the
        data (:func:`features.snapshots.data_now`, the end of its last day).

    Returns
    -------
    DataFrame
        ``month`` (Date, first day), ``*by``, ``bookings`` (Float64): every month from the one
        of the first deal created before ``before`` to the last complete month, for every
        group of the deals created before ``before``, 0 where nothing was booked. Empty when
        no month is complete.

    Examples
    --------
    >>> monthly_bookings(history, by="region", before=date(2026, 7, 1))  # doctest: +SKIP
    """
    dims = check_dimensions(by)
    limit = instant(before) if before is not None else data_now(history)
    empty = pl.DataFrame(
        schema={"month": pl.Date(), **{d: pl.String() for d in dims}, "bookings": pl.Float64()}
    )
    first_created = (
        history.deals.filter(pl.col("created_at") < pl.lit(limit).cast(TS))
        .select(pl.col("created_at").min())
        .collect()
        .item()
    )
    # The month holding ``limit`` ends after it (even when ``limit`` is its first instant):
    # the last complete month is the one before.
    last = add_months(limit.date().replace(day=1), -1)
    if first_created is None or first_created.date().replace(day=1) > last:
        return empty
    months = pl.DataFrame(
        {"month": pl.date_range(first_created.date().replace(day=1), last, "1mo", eager=True)}
    )
    won = history.pipeline.names_of("won")
    booked = (
        history.deals.filter(
            pl.col("stage").is_in(list(won))
            & pl.col("closed_at").is_not_null()
            & (pl.col("closed_at") < pl.lit(instant(add_months(last, 1))).cast(TS))
        )
        .join(deal_dimensions(history).select("deal_id", *dims), on="deal_id", how="left")
        .group_by(pl.col("closed_at").dt.truncate("1mo").dt.date().alias("month"), *dims)
        .agg(pl.col("amount").sum().alias("bookings"))
    )
    grid = months.lazy()
    if dims:
        grid = grid.join(_known_groups(history, dims, limit), how="cross")
    return (
        grid.join(booked, on=["month", *dims], how="left", nulls_equal=True)
        .with_columns(pl.col("bookings").fill_null(0.0).cast(pl.Float64))
        .sort(["month", *dims], nulls_last=True)
        .collect()
    )


# -- series baselines --------------------------------------------------------------------------


def _known_series(series: pl.DataFrame, origin: date) -> pl.DataFrame:
    """The rows of complete months before the origin's month (nothing later is read)."""
    return series.filter(pl.col("month") < origin)


def first_booked_month(series: pl.DataFrame, origin: date | datetime) -> date | None:
    """The first month with bookings (any group) among the complete months before the origin's.

    ``None`` when nothing was booked before it: a seasonal naive forecast has no basis then.
    """
    start = _month_start(origin)
    _groups(series)
    booked = _known_series(series, start).filter(pl.col("bookings") != 0)
    first = booked["month"].min()
    return first if isinstance(first, date) else None


def seasonal_naive(
    series: pl.DataFrame, origin: date | datetime, horizons: Sequence[int]
) -> pl.DataFrame:
    """Forecast each target month by the bookings of the same month a year before.

    Parameters
    ----------
    series : DataFrame
        ``month, [*groups], bookings`` from :func:`monthly_bookings`; only months before the
        origin's are read, whatever the frame holds.
    origin : date or datetime
        A month start (00:00 UTC).
    horizons : sequence of int
        Months ahead, 0 = the origin's month.

    Returns
    -------
    DataFrame
        ``*groups, target_month, horizon, forecast``: null ("not applicable") where the month
        a year before the target is not before the origin (``horizon >= 12``) or is before the
        first month anything was booked (:func:`first_booked_month`): a CRM export's zero-filled
        months before its first won deal are no history to repeat.

    Examples
    --------
    >>> seasonal_naive(monthly_bookings(h, before=date(2026, 7, 1)), date(2026, 7, 1), range(3))
    ... # doctest: +SKIP
    """
    start = _month_start(origin)
    groups = _groups(series)
    first = first_booked_month(series, start)
    known = _known_series(series, start)
    known = known.filter(pl.lit(first is not None) & (pl.col("month") >= (first or start))).select(
        pl.col("month").dt.offset_by("1y").alias("target_month"),
        *groups,
        pl.col("bookings").cast(pl.Float64).alias("forecast"),
    )
    return (
        _on_grid(series, groups, _horizons(horizons, start))
        .join(known, on=["target_month", *groups], how="left", nulls_equal=True)
        .select(*groups, *_FORECAST_SCHEMA)
    )


def run_rate(
    series: pl.DataFrame, origin: date | datetime, horizons: Sequence[int]
) -> pl.DataFrame:
    """Forecast every target month by the mean bookings of the last 3 complete months.

    The months averaged are the three before the origin's month; the forecast is null when
    the series lacks any of them (a group or company younger than three months).

    Returns
    -------
    DataFrame
        ``*groups, target_month, horizon, forecast`` (one value repeated over the horizons).

    Examples
    --------
    >>> run_rate(monthly_bookings(h, before=date(2026, 7, 1)), date(2026, 7, 1), [0, 1, 2])
    ... # doctest: +SKIP
    """
    start = _month_start(origin)
    groups = _groups(series)
    window = _known_series(series, start).filter(
        pl.col("month") >= add_months(start, -RUN_RATE_MONTHS)
    )
    mean = pl.when(pl.col("month").n_unique() == RUN_RATE_MONTHS).then(
        pl.col("bookings").cast(pl.Float64).mean()
    )
    if groups:
        rates = window.group_by(groups).agg(mean.alias("forecast"))
    else:
        rates = window.select(mean.alias("forecast"))
    grid = _on_grid(series, groups, _horizons(horizons, start))
    joined = (
        grid.join(rates, on=groups, how="left", nulls_equal=True)
        if groups
        else grid.join(rates, how="cross")
    )
    return joined.select(*groups, *_FORECAST_SCHEMA)


def _on_grid(series: pl.DataFrame, groups: list[str], horizons: pl.DataFrame) -> pl.DataFrame:
    """Every group of the series (any month) × every horizon, in group then horizon order."""
    if not groups:
        return horizons
    return (
        series.select(groups)
        .unique()
        .join(horizons, how="cross")
        .sort([*groups, "horizon"], nulls_last=True)
    )


# -- weighted pipeline -------------------------------------------------------------------------


def close_date_estimates(
    history: DealHistory, as_of: datetime
) -> tuple[pl.DataFrame, float | None]:
    """How long deals took to be won, from what was known at ``as_of``.

    Only deals won at or before ``as_of`` (their won row in the stage history) count, and only
    stage-history rows up to ``as_of`` are read.

    Returns
    -------
    (DataFrame, float or None)
        ``stage, days_to_won``: per open stage, the median days from a deal's first entry into
        it to its win; and the company-wide median days from creation to win (``None`` when
        no deal had been won).
    """
    won = list(history.pipeline.names_of("won"))
    rows = history.stage_history.filter(pl.col("changed_at") <= pl.lit(as_of).cast(TS))
    won_at = (
        rows.filter(pl.col("stage").is_in(won))
        .group_by("deal_id")
        .agg(pl.col("changed_at").min().alias("_won_at"))
    )
    day = 86_400_000_000  # microseconds
    entered = (
        rows.filter(~pl.col("stage").is_in(won))
        .join(won_at, on="deal_id", how="inner")
        .filter(pl.col("changed_at") <= pl.col("_won_at"))
        .group_by("deal_id", "stage")
        .agg(pl.col("changed_at").min(), pl.col("_won_at").first())
    )
    per_stage = (
        entered.group_by("stage")
        .agg(
            ((pl.col("_won_at") - pl.col("changed_at")).dt.total_microseconds() / day)
            .median()
            .alias("days_to_won")
        )
        .sort("stage")
        .collect()
    )
    cycle = (
        history.deals.select("deal_id", "created_at")
        .join(won_at, on="deal_id", how="inner")
        .select(
            ((pl.col("_won_at") - pl.col("created_at")).dt.total_microseconds() / day)
            .clip(lower_bound=0)
            .median()
        )
        .collect()
        .item()
    )
    return per_stage, (float(cycle) if cycle is not None else None)


def with_close_dates(
    history: DealHistory, open_deals: pl.DataFrame, as_of: datetime
) -> pl.DataFrame:
    """``open_deals`` (``pipeline_as_of`` rows) with a missing ``expected_close_date`` estimated.

    A deal without one is expected ``as_of`` + its stage's median days from entering the stage
    to being won; for a stage no won deal had passed through, the company's median creation →
    win cycle minus the deal's age (``deal_age_days``), never before ``as_of``'s day. Only deals
    won by ``as_of`` are read; with none, the date stays missing. ``close_date_estimated`` says
    which dates were estimated.
    """
    missing = pl.col("expected_close_date").is_null()
    if open_deals.height == 0 or open_deals.filter(missing).height == 0:
        return open_deals.with_columns(pl.lit(False).alias("close_date_estimated"))
    per_stage, cycle = close_date_estimates(history, as_of)
    fallback = (
        (pl.lit(cycle) - pl.col("deal_age_days").cast(pl.Float64)).clip(lower_bound=0.0)
        if cycle is not None
        else pl.lit(None, dtype=pl.Float64)
    )
    days = pl.coalesce(pl.col("days_to_won"), fallback).round().cast(pl.Int64)
    estimate = (pl.lit(as_of.date()) + pl.duration(days=days)).cast(pl.Date)
    return (
        open_deals.join(per_stage, on="stage", how="left")
        .with_columns(
            pl.when(missing)
            .then(estimate)
            .otherwise(pl.col("expected_close_date"))
            .alias("expected_close_date"),
            (missing & estimate.is_not_null()).alias("close_date_estimated"),
        )
        .drop("days_to_won")
    )


def stage_weighted(
    history: DealHistory,
    origin: date | datetime,
    horizons: Sequence[int],
    *,
    probability: Literal["crm", "hist"] = "crm",
    by: str | Sequence[str] | None = None,
    with_deals: bool = False,
) -> pl.DataFrame:
    """The classic weighted pipeline as of the origin, by month of expected close.

    Each deal open just before the origin (``origin - 1 µs``, its stage, amount and expected
    close date as they were then) adds ``amount × stage probability`` to the month of its
    expected close date; a deal expected to close before the origin's month is past due and
    counts in horizon 0. A deal without an expected close date is placed where its stage
    historically leads (``with_close_dates``: the median days from entering the stage to
    being won, among deals won before the origin; else the company's median sales cycle minus
    the deal's age); deals expected after the last requested horizon add nothing.

    Parameters
    ----------
    history : DealHistory
    origin : date or datetime
        A month start (00:00 UTC).
    horizons : sequence of int
        Months ahead, 0 = the origin's month.
    probability : {"crm", "hist"}
        ``"crm"``: the stage probability of the pipeline config (the deals table's
        ``crm_probability`` is its latest value, unknown for a past origin, so it is not used).
        ``"hist"``: each stage's historical win rate among deals closed before the origin
        (:func:`features.kpis.pipeline.stage_win_rates`); a stage no closed deal had visited
        has no rate and its deals add nothing.
    by : str or sequence of str, optional
        Dimensions of ``features.contract.DIMENSIONS``.

    with_deals : bool
        Add ``deals``: the open deals with a probability that weigh in each row. When it is 0
        in every row, the forecast has no basis (no open deal in the months, or no stage
        rate yet) and the backtest calls the method not applicable at that origin.

    Returns
    -------
    DataFrame
        ``*by, target_month, horizon, forecast[, deals]``: every group of the deals created
        before the origin × every horizon, 0 where no open deal is expected.

    Examples
    --------
    >>> stage_weighted(history, date(2026, 7, 1), range(4), probability="hist")  # doctest: +SKIP
    """
    start = _month_start(origin)
    dims = check_dimensions(by)
    if probability not in ("crm", "hist"):
        raise ValueError(f"probability must be 'crm' or 'hist', got {probability!r}")
    as_of = instant(start) - _ONE_US
    if probability == "crm":
        config = history.pipeline
        unset = [s.name for s in config.stages if s.kind == "open" and s.probability is None]
        if unset:
            raise ValueError(
                f"the pipeline config gives no probability for stage(s) {', '.join(unset)}: "
                "add `probability = ...` to their [[stages]] or use probability='hist' "
                "(`dealcast backtest --stage-probability hist`)"
            )
        rates = config.frame().select("stage", pl.col("stage_probability").alias("_p"))
    else:
        rates = (
            stage_win_rates(history, as_of_frame([as_of]))
            .select("stage", pl.col("stage_win_rate_hist").alias("_p"))
            .collect()
        )
    grid = _horizons(horizons, start)
    last = max(grid["horizon"].to_list(), default=-1)
    weighted = (
        with_close_dates(history, pipeline_as_of(history, as_of), as_of)
        .join(rates, on="stage", how="left")
        .filter(pl.col("expected_close_date").is_not_null())
        .with_columns(
            (_month_index(pl.col("expected_close_date")) - (start.year * 12 + start.month - 1))
            .clip(lower_bound=0)
            .alias("horizon")
        )
        .filter(pl.col("horizon") <= last)
        .group_by("horizon", *dims)
        .agg(
            (pl.col("amount") * pl.col("_p")).sum().alias("forecast"),
            pl.col("_p").is_not_null().sum().cast(pl.Int64).alias("deals"),
        )
    )
    if dims:
        grid = (
            _known_groups(history, dims, instant(start))
            .collect()
            .join(grid, how="cross")
            .sort([*dims, "horizon"], nulls_last=True)
        )
    return (
        grid.join(weighted, on=["horizon", *dims], how="left", nulls_equal=True)
        .with_columns(
            pl.col("forecast").fill_null(0.0).cast(pl.Float64), pl.col("deals").fill_null(0)
        )
        .select(*dims, *_FORECAST_SCHEMA, *(["deals"] if with_deals else []))
    )
