"""Point-in-time pipeline snapshots: the deals open as of T, and their features as of T.

Everything here is one lazy polars plan over all as-of dates at once: no Python loop over
dates or deals, no ``.collect()``. A value "as of T" reads only rows with a timestamp <= T
(the data contract's point-in-time rule); ``tests/features/test_snapshots_pit.py`` checks
that as a property. Label columns (``label_*``) are the only ones that look past T, and they
are kept apart so a model never trains on them by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta

import polars as pl

from features.contract import ACTIVITY_TYPES, TS, DealHistory

__all__ = [
    "as_of_frame",
    "data_end",
    "data_now",
    "deal_dimensions",
    "deal_states",
    "enriched_history",
    "pipeline_as_of",
    "snapshot_features",
    "weekly_as_ofs",
    "LABEL_COLUMNS",
    "STATIC_DIMENSIONS",
]

OWNER_WINDOW = timedelta(days=365)
"""Trailing window of the owner's win rate and median cycle."""

ACTIVITY_WINDOWS: tuple[int, ...] = (7, 30)

STATIC_DIMENSIONS: tuple[str, ...] = (
    "owner_id",
    "team",
    "region",
    "product",
    "segment",
    "source",
    "deal_type",
    "account_id",
)
LABEL_COLUMNS: tuple[str, ...] = ("label_outcome", "label_won", "label_closed_at")

_FAR_FUTURE = datetime(9999, 1, 1)
_DAY_US = 86_400_000_000


def _to_ts(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time())


def as_of_frame(as_ofs: Iterable[datetime | date] | pl.Series) -> pl.LazyFrame:
    """A sorted, de-duplicated one-column frame ``as_of`` (UTC timestamps).

    A bare date means 00:00 UTC of that day (the data contract). Naive datetimes are UTC.
    """
    values = as_ofs.to_list() if isinstance(as_ofs, pl.Series) else list(as_ofs)
    series = pl.Series("as_of", [_to_ts(v) for v in values])
    if series.dtype == pl.Datetime and getattr(series.dtype, "time_zone", None) is None:
        series = series.dt.replace_time_zone("UTC")
    return pl.DataFrame({"as_of": series.cast(TS)}).lazy().unique().sort("as_of")


def weekly_as_ofs(end: datetime | date, weeks: int) -> list[datetime]:
    """``weeks`` as-of timestamps, one week apart, the last one at ``end``."""
    last = _to_ts(end)
    return [last - timedelta(weeks=k) for k in reversed(range(weeks))]


def data_end(history: DealHistory) -> datetime:
    """The latest timestamp recorded anywhere in the history: "now" for that dataset."""
    latest = pl.concat(
        [
            history.deals.select(pl.max_horizontal("created_at", "closed_at").alias("t")),
            history.stage_history.select(pl.col("changed_at").alias("t")),
            history.activities.select(pl.col("occurred_at").alias("t")),
        ]
    ).select(pl.col("t").max())
    value = latest.collect().item()
    if value is None:
        raise ValueError("the history holds no timestamps: is the deals table empty?")
    return value


def data_now(history: DealHistory) -> datetime:
    """ "Now" for a forecast or a score: the end of the day of the latest timestamp (00:00 UTC).

    An export taken on a day holds that whole day: a store whose last row is 2026-10-31 23:53
    has October complete, and its next forecast is made as of 2026-11-01 00:00.
    """
    end = data_end(history)
    return end.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _days(delta: pl.Expr) -> pl.Expr:
    """A Duration expression in (fractional) days."""
    return delta.dt.total_microseconds().cast(pl.Float64) / _DAY_US


def enriched_history(history: DealHistory, *, deals: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Stage history with running, point-in-time counters per deal.

    Each row carries what is known about its deal from its own ``changed_at`` on: the
    carried-forward amount / expected close date / forecast category, when the current stage
    was entered, and running counts of stage regressions and close-date pushes. Every running
    value at row i depends on rows <= i only. ``deals`` (a frame with ``deal_id``) limits the
    work to those deals; every value is per deal, so the rows kept are unchanged by it.
    """
    stages = history.pipeline.frame().lazy().select("stage", "stage_order", "stage_kind")

    # Sorted once by deal and time (rows of one deal at one instant keep their file order), so
    # every window below is a plain ``over("deal_id")`` that runs in frame order.
    def by_deal(expr: pl.Expr) -> pl.Expr:
        return expr.over("deal_id")

    rows = history.stage_history
    if deals is not None:
        rows = rows.join(deals.select("deal_id"), on="deal_id", how="semi")
    h = (
        rows.select(
            "deal_id", "changed_at", "stage", "amount", "expected_close_date", "forecast_category"
        )
        .with_row_index("_seq")
        .sort("deal_id", "changed_at", "_seq")
        .join(stages, on="stage", how="left", maintain_order="left")
        .with_columns(
            by_deal(pl.col("amount", "expected_close_date", "forecast_category").forward_fill()),
            by_deal(pl.col("stage").shift(1)).alias("_prev_stage"),
            by_deal(pl.col("stage_order").shift(1)).alias("_prev_order"),
            by_deal(pl.col("stage_kind").shift(1)).alias("_prev_kind"),
        )
        .with_columns(
            by_deal(pl.col("expected_close_date").shift(1)).alias("_prev_close"),
            by_deal(pl.col("amount").drop_nulls().first()).alias("_first_amount"),
            (
                (pl.col("stage_kind") == "open")
                & (pl.col("_prev_kind") == "open")
                & (pl.col("stage_order") < pl.col("_prev_order"))
            )
            .fill_null(False)
            .alias("_regression"),
            pl.when(pl.col("_prev_stage").is_null() | (pl.col("stage") != pl.col("_prev_stage")))
            .then(pl.col("changed_at"))
            .alias("_entered"),
        )
        .with_columns(
            (pl.col("expected_close_date") > pl.col("_prev_close")).fill_null(False).alias("_push"),
        )
        .with_columns(
            by_deal(pl.col("_regression").cum_sum()).alias("stage_regressions"),
            by_deal(pl.col("_push").cum_sum()).alias("close_date_pushes"),
            pl.when(pl.col("_push"))
            .then((pl.col("expected_close_date") - pl.col("_prev_close")).dt.total_days())
            .otherwise(0)
            .pipe(lambda e: by_deal(e.cum_sum()))
            .alias("days_pushed_total"),
            by_deal(pl.col("_entered").forward_fill()).alias("stage_entered_at"),
            # The first amount ever recorded is known at row i only once some amount is: the
            # carried-forward amount is non-null exactly then.
            pl.when(pl.col("amount").is_not_null())
            .then(pl.col("_first_amount"))
            .alias("amount_initial"),
        )
        .select(
            "deal_id",
            "changed_at",
            "_seq",
            "stage",
            "stage_order",
            "amount",
            "amount_initial",
            "expected_close_date",
            "forecast_category",
            "stage_entered_at",
            "stage_regressions",
            "close_date_pushes",
            "days_pushed_total",
        )
    )
    # Several rows of one deal at one instant: the last one is the state from then on.
    return h.filter(_last_of_instant("changed_at")).drop("_seq").sort("changed_at")


def _last_of_instant(time_col: str) -> pl.Expr:
    """True on the last row of each run of one deal at one instant (frame sorted by both)."""
    nxt_deal, nxt_time = pl.col("deal_id").shift(-1), pl.col(time_col).shift(-1)
    return ((pl.col("deal_id") != nxt_deal) | (pl.col(time_col) != nxt_time)).fill_null(True)


def _open_pairs(history: DealHistory, as_ofs: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (deal, as_of) where the deal is open as of ``as_of``.

    Open as of T: ``created_at <= T`` and not closed at or before T (``closed_at`` null or
    ``> T``). An inequality join: no cross product is materialised.
    """
    deals = history.deals.select(
        "deal_id",
        "created_at",
        pl.col("closed_at").fill_null(pl.lit(_FAR_FUTURE).cast(TS)).alias("_closed_end"),
    )
    return deals.join_where(
        as_ofs,
        pl.col("created_at") <= pl.col("as_of"),
        pl.col("_closed_end") > pl.col("as_of"),
    ).select("deal_id", "as_of", "created_at")


def deal_states(history: DealHistory, as_ofs: pl.LazyFrame) -> pl.LazyFrame:
    """The open deals at each as-of date with their state as it was then.

    Parameters
    ----------
    history : DealHistory
    as_ofs : LazyFrame
        One column ``as_of`` (see :func:`as_of_frame`).

    Returns
    -------
    LazyFrame
        ``deal_id, as_of, created_at, stage, stage_order, amount, amount_initial,
        expected_close_date, forecast_category, stage_entered_at, stage_regressions,
        close_date_pushes, days_pushed_total`` — one row per deal open as of ``as_of``.
        State columns are null for a deal with no history row at or before ``as_of``.
    """
    pairs = _open_pairs(history, as_ofs).sort("as_of").cache()
    touched = pairs.select("deal_id").unique()
    return pairs.join_asof(
        enriched_history(history, deals=touched),
        left_on="as_of",
        right_on="changed_at",
        by="deal_id",
        strategy="backward",
        check_sortedness=False,
    ).drop("changed_at")


def pipeline_as_of(history: DealHistory, as_of: datetime | date) -> pl.DataFrame:
    """The open pipeline as of one timestamp: stage, amount and expected close as they were.

    Examples
    --------
    >>> pipeline_as_of(Store("dealcast-data").load(), date(2026, 6, 30))  # doctest: +SKIP

    Returns
    -------
    DataFrame
        ``deal_id, owner_id, stage, stage_order, amount, expected_close_date,
        forecast_category, days_in_stage, deal_age_days`` plus the deal's dimensions, sorted
        by stage order (late first) and amount.
    """
    dims = deal_dimensions(history)
    return (
        deal_states(history, as_of_frame([as_of]))
        .join(dims, on="deal_id", how="left")
        .select(
            "deal_id",
            "owner_id",
            "stage",
            "stage_order",
            "amount",
            "expected_close_date",
            "forecast_category",
            _days(pl.col("as_of") - pl.col("stage_entered_at")).alias("days_in_stage"),
            _days(pl.col("as_of") - pl.col("created_at")).alias("deal_age_days"),
            *[d for d in STATIC_DIMENSIONS if d != "owner_id"],
        )
        .sort(["stage_order", "amount", "deal_id"], descending=[True, True, False])
        .collect()
    )


def deal_dimensions(history: DealHistory) -> pl.LazyFrame:
    """Static grouping columns of each deal (``team`` from ``reps``)."""
    teams = history.reps.select("owner_id", "team").unique("owner_id", keep="first")
    return history.deals.select(
        "deal_id", "owner_id", "region", "product", "segment", "source", "deal_type", "account_id"
    ).join(teams, on="owner_id", how="left")


def _activity_counts(history: DealHistory, keys: pl.LazyFrame) -> pl.LazyFrame:
    """Activity counts in trailing windows and days since the last activity, per (deal, as_of).

    Running counts per deal (one per type) are looked up with backward as-of joins at T and at
    T - window: the count in (T - window, T] is their difference.
    """
    # Only activities of the deals asked about can matter.
    acts = history.activities.join(keys.select("deal_id").unique(), on="deal_id", how="semi")
    counters = ["all", *ACTIVITY_TYPES]
    # Running counts per deal in time order (``over`` keeps frame order within a deal). Of
    # several activities at one instant, a backward as-of join takes the last row, which
    # holds the counts after all of them.
    running = (
        acts.select(
            "deal_id",
            "occurred_at",
            *[
                (pl.col("occurred_at").is_not_null() if t == "all" else pl.col("type") == t)
                .cast(pl.Int64)
                .alias(f"_n__{t}")
                for t in counters
            ],
        )
        .sort("occurred_at")
        .with_columns(pl.col(f"_n__{t}").cum_sum().over("deal_id") for t in counters)
        .cache()  # looked up three times below
    )
    out = keys.sort("as_of").join_asof(
        running.rename({"occurred_at": "_last_activity_at"}),
        left_on="as_of",
        right_on="_last_activity_at",
        by="deal_id",
        strategy="backward",
        check_sortedness=False,
    )
    exprs: list[pl.Expr] = [
        _days(pl.col("as_of") - pl.col("_last_activity_at")).alias("days_since_last_activity"),
        pl.col("_n__all").fill_null(0).alias("activity_count__total"),
    ]
    for window in ACTIVITY_WINDOWS:
        suffix = f"_{window}"
        out = (
            out.with_columns((pl.col("as_of") - pl.duration(days=window)).alias("_from"))
            .sort("_from")
            .join_asof(
                running.select("deal_id", "occurred_at", *[f"_n__{c}" for c in counters]),
                left_on="_from",
                right_on="occurred_at",
                by="deal_id",
                strategy="backward",
                check_sortedness=False,
                suffix=suffix,
            )
            .drop("occurred_at", "_from")
        )
        for c in counters:
            name = f"activity_count__{window}d" + ("" if c == "all" else f"__{c}")
            exprs.append(
                (pl.col(f"_n__{c}").fill_null(0) - pl.col(f"_n__{c}{suffix}").fill_null(0)).alias(
                    name
                )
            )
    return out.select("deal_id", "as_of", *exprs)


def _owner_stats(history: DealHistory, keys: pl.LazyFrame) -> pl.LazyFrame:
    """Per (owner_id, as_of): trailing win rate, closed count, median cycle, and tenure."""
    kinds = history.pipeline.frame().lazy().select("stage", "stage_kind")
    closed = (
        history.deals.filter(pl.col("closed_at").is_not_null())
        .join(kinds, on="stage", how="left")
        .filter(pl.col("stage_kind").is_in(["won", "lost"]))
        .select(
            "owner_id",
            "closed_at",
            (pl.col("stage_kind") == "won").alias("_won"),
            _days(pl.col("closed_at") - pl.col("created_at")).alias("_cycle_days"),
        )
    )
    owners = keys.select("owner_id", "as_of").unique()
    in_window = (
        owners.join(closed, on="owner_id", how="inner")
        .filter(
            (pl.col("closed_at") <= pl.col("as_of"))
            & (pl.col("closed_at") > pl.col("as_of") - OWNER_WINDOW)
        )
        .group_by("owner_id", "as_of")
        .agg(
            pl.len().alias("owner_closed_count__365d"),
            pl.col("_won").mean().alias("owner_win_rate__365d"),
            pl.col("_cycle_days")
            .filter(pl.col("_won"))
            .median()
            .alias("owner_median_cycle_days__365d"),
        )
    )
    hired = history.reps.select("owner_id", "hired_at").unique("owner_id", keep="first")
    first_deal = history.deals.group_by("owner_id").agg(
        pl.col("created_at").min().alias("_first_deal_at")
    )
    start = pl.coalesce(pl.col("hired_at").cast(TS), pl.col("_first_deal_at"))
    return (
        owners.join(in_window, on=["owner_id", "as_of"], how="left")
        .join(hired, on="owner_id", how="left")
        .join(first_deal, on="owner_id", how="left")
        .with_columns(
            pl.col("owner_closed_count__365d").fill_null(0),
            _days(pl.col("as_of") - start).alias("owner_tenure_days"),
        )
        .drop("hired_at", "_first_deal_at")
    )


def snapshot_features(
    history: DealHistory,
    as_ofs: Sequence[datetime | date] | pl.Series | pl.LazyFrame,
) -> pl.LazyFrame:
    """Features of every deal open at every as-of date, as one lazy plan.

    Parameters
    ----------
    history : DealHistory
        The canonical tables (e.g. ``Store(...).load()``).
    as_ofs : dates, Series or LazyFrame with column ``as_of``
        The snapshot timestamps (a bare date is 00:00 UTC).

    Returns
    -------
    LazyFrame
        One row per (``deal_id``, ``as_of``) for deals open at ``as_of``:

        - state: ``stage, stage_order, stage_probability, amount, amount_initial,
          amount_change, expected_close_date, forecast_category``
        - process: ``days_in_stage, deal_age_days, stage_regressions, close_date_pushes,
          days_pushed_total, days_to_expected_close`` (negative when past due)
        - activity: ``activity_count__{7,30}d[__<type>]``, ``activity_count__total`` (since
          creation), ``days_since_last_activity``
        - owner: ``owner_win_rate__365d, owner_closed_count__365d,
          owner_median_cycle_days__365d, owner_tenure_days``
        - dimensions: ``owner_id, team, region, product, segment, source, deal_type,
          account_id``
        - labels (future, kept apart): ``label_outcome`` (won/lost/open as of the end of the
          data), ``label_won``, ``label_closed_at``

    Examples
    --------
    >>> lf = snapshot_features(history, weekly_as_ofs(date(2026, 6, 29), 52))  # doctest: +SKIP
    >>> lf.collect()  # doctest: +SKIP
    """
    keys_frame = as_ofs if isinstance(as_ofs, pl.LazyFrame) else as_of_frame(as_ofs)
    stage_probs = history.pipeline.frame().lazy().select("stage", "stage_probability")
    kinds = (
        history.pipeline.frame().lazy().select("stage", pl.col("stage_kind").alias("label_outcome"))
    )
    labels = (
        history.deals.select("deal_id", "stage", pl.col("closed_at").alias("label_closed_at"))
        .join(kinds, on="stage", how="left")
        .select(
            "deal_id",
            pl.col("label_outcome").fill_null("open"),
            (pl.col("label_outcome") == "won").fill_null(False).alias("label_won"),
            pl.when(pl.col("label_outcome").is_in(["won", "lost"]))
            .then(pl.col("label_closed_at"))
            .alias("label_closed_at"),
        )
    )
    # Three branches (activities, owner statistics, the main chain) read the states: cache()
    # makes the plan compute them once.
    states = (
        deal_states(history, keys_frame)
        .join(deal_dimensions(history), on="deal_id", how="left")
        .cache()
    )
    keys = states.select("deal_id", "as_of", "owner_id")
    frame = (
        states.join(stage_probs, on="stage", how="left")
        .join(_activity_counts(history, keys), on=["deal_id", "as_of"], how="left")
        .join(_owner_stats(history, keys), on=["owner_id", "as_of"], how="left")
        .join(labels, on="deal_id", how="left")
        .with_columns(
            _days(pl.col("as_of") - pl.col("stage_entered_at")).alias("days_in_stage"),
            _days(pl.col("as_of") - pl.col("created_at")).alias("deal_age_days"),
            (pl.col("amount") - pl.col("amount_initial")).alias("amount_change"),
            (pl.col("expected_close_date") - pl.col("as_of").dt.date())
            .dt.total_days()
            .alias("days_to_expected_close"),
        )
    )
    activity_cols = [
        f"activity_count__{w}d" + ("" if t is None else f"__{t}")
        for w in ACTIVITY_WINDOWS
        for t in (None, *ACTIVITY_TYPES)
    ]
    return frame.select(
        "deal_id",
        "as_of",
        "stage",
        "stage_order",
        "stage_probability",
        "amount",
        "amount_initial",
        "amount_change",
        "expected_close_date",
        "forecast_category",
        "days_in_stage",
        "deal_age_days",
        "stage_regressions",
        "close_date_pushes",
        "days_pushed_total",
        "days_to_expected_close",
        *activity_cols,
        "activity_count__total",
        "days_since_last_activity",
        "owner_win_rate__365d",
        "owner_closed_count__365d",
        "owner_median_cycle_days__365d",
        "owner_tenure_days",
        *STATIC_DIMENSIONS,
        *LABEL_COLUMNS,
    ).sort("as_of", "deal_id")
