"""The monthly revenue forecast: the open pipeline deal by deal, plus deals not created yet.

For an ``as_of`` instant the forecast of a month is

    booked so far in that month (won at or before ``as_of``)
  + the open pipeline: each open deal is won with its calibrated close probability, in a month
    drawn from the close-timing distribution, for its amount times the stage's historical
    won/open amount ratio (deals get cut before they close)
  + bookings from deals not created yet (``models.forecast.newbiz``: one Prophet per horizon).

It is a Monte Carlo: every sample draws each deal's outcome and month independently and adds
a draw of the new-business Prophet, so a sample of the total is exactly the sum of the samples
of its parts (regions, owners...). P10/P50/P90 are sample quantiles; the quarter's samples are
the sums of its months' samples (plus what its closed months booked). Deals are not really
independent (a bad quarter hits every deal), so each sample also shifts the log-odds of every
deal by one common draw ``N(0, win_shock²)``; ``win_shock`` is learnt from how far each past
month's realised win rate strayed from what the model predicted for it (:func:`win_shock`).

Two sanity rules guard against what real CRM exports do to the models (both point in time,
both reported in :attr:`RevenueForecast.notes`):

- open deals older than the deals the company has ever won get at most the win rate such old
  deals really had (:func:`stale_deal_cap`): the close-probability model never saw them (they
  are never labelled) and extrapolated a large probability;
- when deal creation has collapsed, new business is scaled down with it
  (:func:`creation_ratio`): the new-business Prophet fits bookings, and bookings lag creation.

Everything is point in time: :func:`fit_deal_models` sees only snapshots before ``cutoff`` and
outcomes known at it; :func:`revenue_forecast` reads the pipeline as it was at ``as_of`` and
refuses models fitted on later data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from features.calendar import (
    Instant,
    add_months,
    check_dimensions,
    instant,
    month_of,
    quarter_start,
)
from features.contract import DIMENSIONS, TS, DealHistory
from features.snapshots import deal_dimensions, snapshot_features
from models.deals.dataset import labelled_snapshots, weekly_grid
from models.deals.probability import CloseProbabilityModel
from models.deals.timing import CloseTimingModel, timing_training_set
from models.forecast.newbiz import NewBusinessForecaster, newbiz_history

__all__ = [
    "DealModels",
    "RevenueForecast",
    "StaleCap",
    "amount_ratios",
    "creation_ratio",
    "deal_scores",
    "fit_deal_models",
    "revenue_forecast",
    "stale_deal_cap",
    "training_rows",
    "win_shock",
]

N_SAMPLES = 2000
"""Monte Carlo samples of a forecast (P10/P90 of 2,000 draws move by well under 1%)."""

TARGET_SCOPE: dict[str, str] = {"owner_id": "owner", "team": "team", "region": "region"}
"""Dimensions that have targets, and their ``targets.scope_type``."""


# -- time helpers ------------------------------------------------------------------------------


def _days(delta: pl.Expr) -> pl.Expr:
    """A Duration expression in (fractional) days, as ``deal_age_days`` counts them."""
    return delta.dt.total_microseconds().cast(pl.Float64) / 86_400_000_000


def _months_between(a: date, b: date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _mondays_before(history: DealHistory, cutoff: datetime, weeks: int | None) -> list[datetime]:
    """Weekly as-of Mondays (00:00 UTC) from the first deal (or ``weeks`` back) to ``cutoff``."""
    first = history.deals.select(pl.col("created_at").min()).collect().item()
    if first is None or first >= cutoff:
        return []
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    start += timedelta(days=(7 - start.weekday()) % 7)
    if weeks is not None:
        day = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
        last_monday = day - timedelta(days=day.weekday())  # the last Monday strictly before
        if last_monday >= cutoff:
            last_monday -= timedelta(weeks=1)
        start = max(start, last_monday - timedelta(weeks=weeks - 1))
    return weekly_grid(start, cutoff)


# -- the deal models ---------------------------------------------------------------------------


def training_rows(
    history: DealHistory,
    cutoff: Instant,
    *,
    snapshots: pl.DataFrame | None = None,
    weeks: int | None = None,
) -> pl.DataFrame:
    """Labelled weekly snapshots as known at ``cutoff``: as-of Mondays before it, outcomes by it.

    ``snapshots`` may hold precomputed ``snapshot_features`` rows of any Mondays (a backtest
    builds them once): the rows kept are exactly those ``labelled_snapshots`` would build at
    ``cutoff``, because a snapshot's features only read rows up to its ``as_of`` and a label
    is kept only when the deal closed at or before ``cutoff``.
    """
    limit = cutoff
    mondays = _mondays_before(history, limit, weeks)
    if not mondays:
        return labelled_snapshots(history, [], cutoff=limit)
    if snapshots is None:
        return labelled_snapshots(history, mondays, cutoff=limit)
    return snapshots.filter(
        pl.col("as_of").is_in(pl.Series(mondays).cast(TS).implode())
        & pl.col("label_closed_at").is_not_null()
        & (pl.col("label_closed_at") <= limit)
    )


def amount_ratios(history: DealHistory, rows: pl.DataFrame) -> dict[str, float]:
    """Per stage, the amount won / the amount open at the snapshot, over won deals' rows.

    Amount-weighted (sum over sum); 1.0 for a stage with no won rows. The won amount is the
    deal's latest amount, which the rows' cutoff already covers (the deal closed by then).
    """
    won = rows.filter(pl.col("label_won") & (pl.col("amount") > 0))
    if won.height == 0:
        return {}
    final = history.deals.select("deal_id", pl.col("amount").alias("_final")).collect()
    ratios = (
        won.join(final, on="deal_id", how="inner")
        .group_by("stage")
        .agg((pl.col("_final").sum() / pl.col("amount").sum()).alias("ratio"))
    )
    return dict(zip(ratios["stage"].to_list(), ratios["ratio"].to_list(), strict=True))


@dataclass
class DealModels:
    """What the forecast needs to know about open deals, fitted at ``cutoff``.

    ``win_shock`` is the standard deviation of the common log-odds shift of one Monte Carlo
    sample (see :func:`win_shock`); ``versions`` names the registered versions when the models
    came from the registry.
    """

    probability: CloseProbabilityModel
    timing: CloseTimingModel
    amount_ratio: dict[str, float]
    win_shock: float
    cutoff: datetime
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def max_months(self) -> int:
        return int(self.timing.max_months)


def win_shock(rows: pl.DataFrame, probability: np.ndarray, *, min_deals: int = 20) -> float:
    """How much a month's realised win rate strays from the predicted one, in log-odds.

    For the last snapshot of each closed deal, group deals by the month they closed in and
    compare the logit of the realised win rate with the logit of the mean predicted
    probability. The spread of those differences, minus what binomial noise alone explains
    (a delta-method variance ``1 / (n p (1 - p))``), is the variance of a common monthly shock.
    Months with fewer than ``min_deals`` deals are skipped. 0 when nothing is left.
    """
    if rows.height == 0:
        return 0.0
    last = (
        rows.with_columns(pl.Series("_p", probability))
        .sort("as_of")
        .group_by("deal_id")
        .agg(pl.all().last())
    )
    monthly = (
        last.group_by(pl.col("label_closed_at").dt.truncate("1mo"))
        .agg(
            pl.len().alias("n"),
            pl.col("label_won").cast(pl.Float64).mean().alias("won"),
            pl.col("_p").mean().alias("p"),
        )
        .filter(pl.col("n") >= min_deals)
    )
    if monthly.height < 3:
        return 0.0
    won = np.clip(monthly["won"].to_numpy(), 0.01, 0.99)
    p = np.clip(monthly["p"].to_numpy(), 0.01, 0.99)
    n = monthly["n"].to_numpy().astype(float)
    diff = np.log(won / (1 - won)) - np.log(p / (1 - p))
    noise = float(np.mean(1.0 / (n * p * (1 - p))))
    return float(np.sqrt(max(float(np.var(diff, ddof=1)) - noise, 0.0)))


PROBABILITY_FOLLOWUP_DAYS = 120
TIMING_FOLLOWUP_DAYS = 180
"""Days after a snapshot before its row trains the probability / timing model (censoring: a
recent snapshot is labelled only if its deal closed fast). Measured on the default company's
12-origin backtest (origins 2025-11..2026-10, 1,000 samples): with 0 / 0 the month-0 forecast
was 17% too high (WAPE 0.24); 0 / 180 gave WAPE 0.174 / 0.204 / 0.286 at h0 / h1 / h2 and
120 / 180 gave 0.166 / 0.210 / 0.291 with month-0 bias +0.9%. On a 2,000-deal, 24-month
company 0 days for probability under-predicted wins by a third (sum of P(won) 41-48 against
64-65 won); with 120 days it was 51-57."""


def _followed_up(rows: pl.DataFrame, cutoff: datetime, days: int) -> pl.DataFrame:
    """Rows whose as_of is at least ``days`` before ``cutoff`` (all rows if that leaves none).

    A snapshot taken shortly before the cutoff is labelled only if its deal closed quickly:
    training on it over-represents fast outcomes (censoring). Waiting ``days`` after each
    snapshot lets most of its deals close.
    """
    if days <= 0:
        return rows
    kept = rows.filter(pl.col("as_of") <= cutoff - timedelta(days=days))
    return kept if kept["label_won"].n_unique() == 2 else rows


def fit_deal_models(
    history: DealHistory,
    cutoff: Instant,
    *,
    months: int = 3,
    snapshots: pl.DataFrame | None = None,
    probability: CloseProbabilityModel | None = None,
    timing: CloseTimingModel | None = None,
    probability_followup_days: int = PROBABILITY_FOLLOWUP_DAYS,
    timing_followup_days: int = TIMING_FOLLOWUP_DAYS,
) -> DealModels:
    """Fit close probability and timing on what was known at ``cutoff``.

    Parameters
    ----------
    history : DealHistory
    cutoff : Instant
        Aware UTC (:func:`features.calendar.instant`). Nothing after it is read (snapshots
        before it, outcomes at or before it).
    months : int
        Months the forecast covers; the timing model's classes are ``0 .. months`` (the last
        means "later").
    snapshots : DataFrame, optional
        Precomputed ``snapshot_features`` rows (see :func:`training_rows`).
    probability, timing : unfitted estimators, optional
        To change their parameters.
    """
    limit = cutoff
    rows = training_rows(history, limit, snapshots=snapshots)
    if rows.height == 0:
        raise ValueError(
            f"no closed deal is known at {limit:%Y-%m-%d}: a forecast needs some history "
            "of won and lost deals before its as_of"
        )
    prob_rows = _followed_up(rows, limit, probability_followup_days)
    prob = (probability or CloseProbabilityModel()).fit(
        prob_rows, prob_rows["label_won"].to_numpy()
    )
    X, y = timing_training_set(_followed_up(rows, limit, timing_followup_days), max_months=months)
    tim = (timing or CloseTimingModel()).set_params(max_months=months).fit(X, y)
    # The shock is measured on the latest year of rows, with the fitted model (in-sample: a
    # lower bound of the out-of-sample spread, which the backtest's coverage checks).
    recent = rows.filter(pl.col("as_of") >= limit - timedelta(days=365))
    shock = win_shock(recent, prob.predict_proba(recent)[:, 1]) if recent.height else 0.0
    return DealModels(prob, tim, amount_ratios(history, rows), shock, limit)


def deal_scores(models: DealModels, rows: pl.DataFrame) -> pl.DataFrame:
    """Per open deal: P(won), the month distribution given won, P(slip) and expected value.

    ``rows`` are ``snapshot_features`` rows of one ``as_of``. Returns ``deal_id`` and the
    dimensions, ``stage, amount, deal_age_days``, ``p_won``, ``p_month_0 .. p_month_<M>``
    (P(closing in month +h | won), the last meaning "later"), ``p_slip`` (P(not this month |
    won)), ``amount_won`` (amount × the stage's won/open ratio), ``expected_value`` (``p_won ×
    amount_won``), ``expected_this_month`` and ``likely_close_month`` (the month of highest
    probability).
    """
    if rows.height == 0:
        return pl.DataFrame()
    p_won = models.probability.predict_proba(rows)[:, 1]
    q = models.timing.predict_proba(rows)
    ratio = np.array([models.amount_ratio.get(s, 1.0) for s in rows["stage"].to_list()])
    amount_won = rows["amount"].fill_null(0.0).to_numpy() * ratio
    as_of = rows["as_of"].to_list()
    likely = [add_months(month_of(t), int(k)) for t, k in zip(as_of, q.argmax(axis=1), strict=True)]
    keep = [
        c
        for c in ("deal_id", "as_of", *DIMENSIONS, "stage", "amount", "deal_age_days")
        if c in rows.columns
    ]
    return rows.select(keep).with_columns(
        pl.Series("p_won", p_won),
        *(pl.Series(f"p_month_{k}", q[:, k]) for k in range(q.shape[1])),
        pl.Series("p_slip", 1.0 - q[:, 0]),
        pl.Series("amount_won", amount_won),
        pl.Series("expected_value", p_won * amount_won),
        pl.Series("expected_this_month", p_won * q[:, 0] * amount_won),
        pl.Series("likely_close_month", likely, dtype=pl.Date),
    )


# -- sanity rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaleCap:
    """The close probability of open deals older than the deals a company has won.

    ``age_days`` is the age A of the oldest won deal; ``deals`` is how many deals had been open
    at age A before the as_of and ``won`` how many of those were won by it.
    """

    age_days: float
    deals: int
    won: int

    @property
    def p_old(self) -> float:
        """What a deal open at age A has done: ``(won + 0.5) / (deals + 1)``.

        The half win and the one deal (a Jeffreys-like prior) keep it above 0 with no old win
        and near 1/2 when few deals ever reached A.
        """
        return (self.won + 0.5) / (self.deals + 1)

    def apply(self, scores: pl.DataFrame) -> pl.DataFrame:
        """:func:`deal_scores` rows with ``stale`` (older than A) and P(won) capped at ``p_old``.

        ``expected_value`` and ``expected_this_month`` follow the capped ``p_won``.
        """
        stale = (pl.col("deal_age_days") > self.age_days).fill_null(False)
        return scores.with_columns(
            stale.alias("stale"),
            pl.when(stale)
            .then(pl.min_horizontal("p_won", pl.lit(self.p_old)))
            .otherwise("p_won")
            .alias("p_won"),
        ).with_columns(
            (pl.col("p_won") * pl.col("amount_won")).alias("expected_value"),
            (pl.col("p_won") * pl.col("p_month_0") * pl.col("amount_won")).alias(
                "expected_this_month"
            ),
        )


def stale_deal_cap(history: DealHistory, as_of: Instant) -> StaleCap | None:
    """The P(won) cap of open deals older than won deals get, as known at ``as_of``.

    Real exports keep open deals nobody closed, far older than any won deal. The probability
    model never learnt from them (training rows are deals that closed) and extrapolates, so
    their probability is taken from what such old deals really did. A is the age (created to
    closed) of the oldest deal won by ``as_of``; among the deals that had been open at age A
    before ``as_of`` (``created_at + A < as_of`` and not closed before reaching A) ``won`` were
    won by ``as_of``. Deals still open at ``as_of`` count as not won: at that age, not closing
    is what stale deals do.

    A is the max, not a high quantile. The max is fragile one way: a single deal revived after
    years and won sets A so far out that the rule caps nothing, and the forecast keeps the
    model's probabilities, as without the rule. A quantile fails the other way, and it did: on
    the simulated company of the backtest tests (2,000 deals, 18 months, 310 won by 2026-08-01)
    the 0.99 quantile put A at 201 days while won deals had reached 392, capped six open
    deals at 26% of which three were won within two weeks (one of 846k), and raised the
    backtest's WAPE at every horizon (origins 2026-08 and 2026-09: 0.47 / 0.26 / 0.16 to
    0.52 / 0.30 / 0.20). With the max it caps nothing there.

    Parameters
    ----------
    history : DealHistory
    as_of : Instant
        Aware UTC. Only deals created at or before it and outcomes with ``closed_at`` at or
        before it are read.

    Returns
    -------
    StaleCap or None
        None when no deal had been won by ``as_of``.
    """
    limit = pl.lit(as_of).cast(TS)
    known_close = pl.when(pl.col("closed_at") <= limit).then(pl.col("closed_at"))
    deals = (
        history.deals.filter(pl.col("created_at") <= limit)
        .select(
            _days(limit - pl.col("created_at")).alias("age"),
            _days(known_close - pl.col("created_at")).alias("closed_age"),
            (
                pl.col("stage").is_in(list(history.pipeline.names_of("won")))
                & (pl.col("closed_at") <= limit)
            )
            .fill_null(False)
            .alias("won"),
        )
        .collect()
    )
    age = deals.filter(pl.col("won")).select(pl.col("closed_age").max()).item()
    if age is None:
        return None
    reached = deals.filter(
        (pl.col("age") > age) & (pl.col("closed_age").is_null() | (pl.col("closed_age") >= age))
    )
    return StaleCap(age_days=age, deals=reached.height, won=int(reached["won"].sum()))


CREATION_WINDOW_DAYS = 60
CREATION_BASELINE_DAYS = 365
CREATION_MIN_BASELINE_DAYS = 120
CREATION_FLOOR = 0.5
"""Deal creation of the last ``CREATION_WINDOW_DAYS`` before the as_of is compared with its
mean per window over the ``CREATION_BASELINE_DAYS`` before (at least
``CREATION_MIN_BASELINE_DAYS`` of history, or no comparison); below ``CREATION_FLOOR`` of it,
new business is scaled by the ratio."""


def creation_ratio(history: DealHistory, as_of: Instant) -> float | None:
    """Deals created in the last 60 days before ``as_of`` / their usual count per 60 days.

    The usual count is the mean per 60 days over the 12 months before that window (or since the
    first deal when the history is shorter). New business comes from deals not created yet,
    and its Prophet fits past bookings, which lag creation by a sales cycle: a stop in
    creation shows here months before it shows in bookings.

    Parameters
    ----------
    history : DealHistory
    as_of : Instant
        Aware UTC. Only deals created at or before it are read.

    Returns
    -------
    float or None
        None when there are less than ``CREATION_MIN_BASELINE_DAYS`` of history before the
        window, or no deal was created in the 12 months before it (nothing to compare with).
    """
    window_start = as_of - timedelta(days=CREATION_WINDOW_DAYS)
    limit = pl.lit(as_of).cast(TS)
    window = pl.lit(window_start).cast(TS)
    baseline = pl.lit(window_start - timedelta(days=CREATION_BASELINE_DAYS)).cast(TS)
    counts = (
        history.deals.filter(pl.col("created_at") <= limit)
        .select(
            (pl.col("created_at") > window).sum().alias("recent"),
            ((pl.col("created_at") > baseline) & (pl.col("created_at") <= window))
            .sum()
            .alias("before"),
            _days(window - pl.max_horizontal(pl.col("created_at").min(), baseline)).alias("span"),
        )
        .collect()
        .row(0, named=True)
    )
    span = counts["span"]
    if span is None or span < CREATION_MIN_BASELINE_DAYS or counts["before"] == 0:
        return None
    return float(counts["recent"] / (counts["before"] * CREATION_WINDOW_DAYS / span))


# -- Monte Carlo -------------------------------------------------------------------------------


def _draw_pipeline(
    p_won: np.ndarray,
    q: np.ndarray,
    amount: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    horizons: int,
    shocks: np.ndarray,
    rng: np.random.Generator,
    *,
    chunk: int = 2048,
) -> np.ndarray:
    """Sampled bookings ``(n_groups, horizons, n_samples)`` of independent deals.

    A deal is won in sample ``s`` with probability ``expit(logit(p_won) + shocks[s])`` and then
    closes in month ``h`` with probability ``q[:, h]`` (the last column: after the window).
    """
    n_samples = shocks.size
    out = np.zeros(n_groups * horizons * n_samples)
    logit = np.log(np.clip(p_won, 1e-6, 1 - 1e-6) / np.clip(1 - p_won, 1e-6, 1))
    cum_q = np.cumsum(q[:, :horizons], axis=1)
    sample_index = np.arange(n_samples)
    for lo in range(0, p_won.size, chunk):
        hi = min(lo + chunk, p_won.size)
        won_p = 1.0 / (1.0 + np.exp(-(logit[lo:hi, None] + shocks[None, :])))  # (c, S)
        won = rng.random(won_p.shape) < won_p
        u = rng.random(won_p.shape)
        month = np.zeros(won_p.shape, dtype=np.int64)
        for h in range(horizons):
            month += u > cum_q[lo:hi, h, None]
        hit = won & (month < horizons)
        index = (group[lo:hi, None] * horizons + month) * n_samples + sample_index[None, :]
        weights = np.broadcast_to(amount[lo:hi, None], hit.shape)
        out += np.bincount(index[hit], weights=weights[hit], minlength=out.size)
    return out.reshape(n_groups, horizons, n_samples)


def _created_share(history: DealHistory, origin: datetime, horizons: int) -> np.ndarray:
    """Per horizon h, the share of new-business bookings ``y_h`` from deals created in month 0.

    Used when ``as_of`` is inside a month: the deals created earlier that month are already in
    the pipeline, so that part of ``y_h`` must not be added again.
    """
    won = history.pipeline.names_of("won")
    lags = (
        history.deals.filter(
            pl.col("stage").is_in(list(won)) & (pl.col("closed_at") < pl.lit(origin).cast(TS))
        )
        .select(
            (
                (pl.col("closed_at").dt.year() - pl.col("created_at").dt.year()) * 12
                + pl.col("closed_at").dt.month().cast(pl.Int64)
                - pl.col("created_at").dt.month().cast(pl.Int64)
            ).alias("lag"),
            "amount",
        )
        .collect()
    )
    share = np.ones(horizons)
    lag = lags["lag"].to_numpy()
    amount = lags["amount"].fill_null(0.0).to_numpy()
    for h in range(1, horizons):
        within = amount[lag <= h].sum()
        share[h] = amount[lag == h].sum() / within if within > 0 else 1.0 / (h + 1)
    return share


# -- the forecast ------------------------------------------------------------------------------


@dataclass
class RevenueForecast:
    """The samples of one forecast and what was known when it was made.

    ``pipeline`` and ``newbiz`` are ``(groups, months, samples)`` arrays; ``booked`` is
    ``(groups, months)``: what each month had booked by ``as_of`` (0 for later months);
    ``quarter_booked`` is ``(groups,)``: bookings of the quarter's months before the as-of month.
    ``notes`` say in words what the sanity rules changed; ``stale_cap`` (:func:`stale_deal_cap`)
    and ``creation_ratio`` (:func:`creation_ratio`) are what they measured (None when not
    measured or not applicable), ``deals["stale"]`` which open deals were capped.
    """

    as_of: datetime
    months: list[date]
    by: list[str]
    groups: pl.DataFrame
    pipeline: np.ndarray
    newbiz: np.ndarray
    booked: np.ndarray
    quarter_booked: np.ndarray
    targets: pl.DataFrame
    deals: pl.DataFrame = field(repr=False)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stale_cap: StaleCap | None = None
    creation_ratio: float | None = None

    @property
    def origin_month(self) -> date:
        return month_of(self.as_of)

    @property
    def quarter(self) -> list[int]:
        """Indexes into ``months`` of the as-of quarter's months from the as-of month on."""
        start = quarter_start(self.origin_month)
        return [i for i, m in enumerate(self.months) if quarter_start(m) == start]

    def samples(self) -> np.ndarray:
        """Total bookings per ``(group, month, sample)``: booked + pipeline + new business."""
        return self.booked[:, :, None] + self.pipeline + self.newbiz

    def summary(self, *, months: int | None = None) -> pl.DataFrame:
        """One row per segment (and the total) × month, plus the as-of quarter.

        Columns: ``by`` ("" for the total), ``segment`` ("total" for the total), ``period``
        (month/quarter), ``target_month``, ``horizon``, ``mean, p10, p50, p90``,
        ``booked_to_date, pipeline_mean, newbiz_mean``, ``target, gap`` (target − P50) and
        ``p_reach_target``. ``months`` limits the monthly rows to the first ``months``.
        """
        draws = self.samples()
        shown = len(self.months) if months is None else min(months, len(self.months))
        label = ",".join(self.by)
        seg = (
            self.groups.select(
                pl.concat_str(
                    [pl.col(c).cast(pl.String).fill_null("(none)") for c in self.by],
                    separator=" · ",
                )
            )
            .to_series()
            .to_list()
            if self.by
            else []
        )
        units: list[tuple[str, str, np.ndarray | slice]] = [("", "total", slice(None))]
        units += [(label, name, np.array([g])) for g, name in enumerate(seg)]
        rows = []
        quarter = self.quarter
        q_start = quarter_start(self.origin_month)
        q_complete = len(quarter) == 3 - _months_between(q_start, self.origin_month)
        for by, segment, index in units:
            total = draws[index].sum(axis=0)  # (months, samples)
            pipe = self.pipeline[index].sum(axis=0).mean(axis=1)
            new = self.newbiz[index].sum(axis=0).mean(axis=1)
            booked = self.booked[index].sum(axis=0)
            for h in range(shown):
                rows.append(
                    self._row(
                        by,
                        segment,
                        "month",
                        self.months[h],
                        h,
                        total[h],
                        booked[h],
                        pipe[h],
                        new[h],
                    )
                )
            if q_complete and quarter:
                q_draws = total[quarter].sum(axis=0) + float(self.quarter_booked[index].sum())
                rows.append(
                    self._row(
                        by,
                        segment,
                        "quarter",
                        q_start,
                        _months_between(self.origin_month, q_start),
                        q_draws,
                        float(booked[quarter].sum() + self.quarter_booked[index].sum()),
                        float(pipe[quarter].sum()),
                        float(new[quarter].sum()),
                    )
                )
        draws_of = [row[-1] for row in rows]
        frame = pl.DataFrame([row[:-1] for row in rows], orient="row", schema=_SUMMARY_SCHEMA)
        return self._with_targets(frame, draws_of)

    @staticmethod
    def _row(
        by: str,
        segment: str,
        period: str,
        month: date,
        horizon: int,
        draws: np.ndarray,
        booked: float,
        pipe: float,
        new: float,
    ) -> tuple:
        p10, p50, p90 = np.quantile(draws, [0.1, 0.5, 0.9])
        return (
            by,
            segment,
            period,
            month,
            horizon,
            float(draws.mean()),
            float(p10),
            float(p50),
            float(p90),
            float(booked),
            float(pipe),
            float(new),
            draws,
        )

    def _with_targets(self, frame: pl.DataFrame, draws: list[np.ndarray]) -> pl.DataFrame:
        """Add ``target, gap, p_reach_target`` where the targets table has the scope."""
        scope_type = (
            "company"
            if not self.by
            else TARGET_SCOPE.get(self.by[0])
            if len(self.by) == 1
            else None
        )
        months = self.targets.filter(pl.col("scope_type").is_in(["company", scope_type or ""]))
        keyed = months.select(
            pl.when(pl.col("scope_type") == "company")
            .then(pl.lit(""))
            .otherwise(pl.lit(",".join(self.by)))
            .alias("by"),
            pl.when(pl.col("scope_type") == "company")
            .then(pl.lit("total"))
            .otherwise(pl.col("scope_id"))
            .alias("segment"),
            pl.col("period").str.to_date("%Y-%m").alias("target_month"),
            pl.col("amount").alias("target"),
        )
        quarters = (
            keyed.with_columns(pl.col("target_month").dt.truncate("1q").alias("_q"))
            .group_by("by", "segment", "_q")
            .agg(pl.col("target").sum(), pl.len().alias("_n"))
            .filter(pl.col("_n") == 3)
            .select(
                "by",
                "segment",
                pl.col("_q").alias("target_month"),
                "target",
                pl.lit("quarter").alias("period"),
            )
        )
        targets = pl.concat(
            [keyed.with_columns(pl.lit("month").alias("period")), quarters], how="diagonal"
        )
        out = (
            frame.with_row_index("_i")
            .join(targets, on=["by", "segment", "period", "target_month"], how="left")
            .sort("_i")
        )
        reach = [
            None if t is None else float(np.mean(draws[i] >= t))
            for i, t in zip(out["_i"].to_list(), out["target"].to_list(), strict=True)
        ]
        return out.drop("_i").with_columns(
            (pl.col("target") - pl.col("p50")).alias("gap"),
            pl.Series("p_reach_target", reach, dtype=pl.Float64),
        )


_SUMMARY_SCHEMA = {
    "by": pl.String(),
    "segment": pl.String(),
    "period": pl.String(),
    "target_month": pl.Date(),
    "horizon": pl.Int64(),
    "mean": pl.Float64(),
    "p10": pl.Float64(),
    "p50": pl.Float64(),
    "p90": pl.Float64(),
    "booked_to_date": pl.Float64(),
    "pipeline_mean": pl.Float64(),
    "newbiz_mean": pl.Float64(),
}


def revenue_forecast(
    history: DealHistory,
    as_of: Instant,
    *,
    models: DealModels | None = None,
    months: int = 3,
    by: str | Sequence[str] | None = None,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
    snapshots: pl.DataFrame | None = None,
    newbiz: NewBusinessForecaster | None = None,
    stale_cap: bool = True,
    creation_scale: bool = True,
) -> RevenueForecast:
    """Forecast the bookings of the as-of month and the ones after it, with samples.

    Parameters
    ----------
    history : DealHistory
    as_of : Instant
        When the forecast is made, aware UTC (:func:`features.calendar.instant`). Month 0 is
        the month holding it.
    models : DealModels, optional
        Fitted at or before ``as_of``; fitted here at ``as_of`` when omitted.
    months : int
        Months forecast (0 .. months-1); extended internally to the end of the as-of quarter.
    by : str or sequence of str, optional
        Dimensions of ``features.contract.DIMENSIONS``; the parts add up to the total.
    n_samples, seed : Monte Carlo draws and their seed (same seed, same forecast).
    snapshots : precomputed snapshot rows for fitting (see :func:`training_rows`).
    newbiz : NewBusinessForecaster, optional
        Unfitted estimator with other parameters.
    stale_cap : bool
        Cap the P(won) of open deals older than the deals ever won (:func:`stale_deal_cap`).
    creation_scale : bool
        Scale new business by :func:`creation_ratio` when it is below ``CREATION_FLOOR``.
    """
    moment = as_of
    dims = check_dimensions(by)
    if months < 1:
        raise ValueError(f"months must be >= 1, got {months}")
    origin = month_of(moment)
    to_quarter_end = 3 - _months_between(quarter_start(origin), origin)
    window = max(months, to_quarter_end)
    if models is None:
        models = fit_deal_models(history, moment, months=window, snapshots=snapshots)
    if models.cutoff > moment:
        raise ValueError(
            f"the models were fitted on data up to {models.cutoff:%Y-%m-%d %H:%M} UTC, after the "
            f"as_of {moment:%Y-%m-%d %H:%M}: they would see the future; refit them at the as_of"
        )
    if models.max_months < window:
        raise ValueError(
            f"the timing model covers {models.max_months} months, the forecast needs {window}: "
            f"fit it with months={window}"
        )
    month_list = [add_months(origin, h) for h in range(window)]
    rng = np.random.default_rng(seed)

    # groups: every combination of the dimensions among deals created by the as_of
    dims_frame = deal_dimensions(history).join(
        history.deals.filter(pl.col("created_at") <= pl.lit(moment).cast(TS)).select("deal_id"),
        on="deal_id",
        how="semi",
    )
    if dims:
        groups = dims_frame.select(dims).unique().sort(dims, nulls_last=True).collect()
    else:
        groups = pl.DataFrame({"_all": [0]})
    n_groups = groups.height
    group_key = groups.with_row_index("_g")
    join_on = dims or ["_all"]

    # the open pipeline
    rows = snapshot_features(history, [moment]).collect()
    scores = deal_scores(models, rows)
    notes: list[str] = []
    cap = stale_deal_cap(history, moment) if stale_cap else None
    if scores.height:
        scores = cap.apply(scores) if cap else scores.with_columns(pl.lit(False).alias("stale"))
        n_stale = int(scores["stale"].sum())
        if cap and n_stale:
            notes.append(
                f"{n_stale} open deals are older than the deals won so far "
                f"({cap.age_days:.0f} days): P(won) capped at {cap.p_old:.1%}, what the "
                f"{cap.deals} deals that reached that age did ({cap.won} won)"
            )
        scored = scores.with_columns(pl.lit(0).alias("_all")) if not dims else scores
        group_of = scored.join(group_key, on=join_on, how="left", nulls_equal=True)["_g"].to_numpy()
        q = scores.select([f"p_month_{k}" for k in range(models.max_months + 1)]).to_numpy()
        shocks = (
            rng.normal(0.0, models.win_shock, n_samples)
            if models.win_shock > 0
            else np.zeros(n_samples)
        )
        pipeline = _draw_pipeline(
            scores["p_won"].to_numpy(),
            q,
            scores["amount_won"].to_numpy(),
            group_of.astype(np.int64),
            n_groups,
            window,
            shocks,
            rng,
        )
    else:
        pipeline = np.zeros((n_groups, window, n_samples))

    # booked so far: the months of the quarter before the as-of month, and the as-of month
    won_names = list(history.pipeline.names_of("won"))
    q_start = quarter_start(origin)
    booked_frame = (
        history.deals.filter(
            pl.col("stage").is_in(won_names)
            & (pl.col("closed_at") >= pl.lit(instant(q_start)).cast(TS))
            & (pl.col("closed_at") <= pl.lit(moment).cast(TS))
        )
        .join(dims_frame, on="deal_id", how="left", suffix="_dim")
        .with_columns(
            pl.lit(0).alias("_all"),
            (pl.col("closed_at") >= pl.lit(instant(origin)).cast(TS)).alias("_this"),
        )
        .collect()
    )
    booked = np.zeros((n_groups, window))
    quarter_booked = np.zeros(n_groups)
    if booked_frame.height:
        with_g = booked_frame.join(group_key, on=join_on, how="left", nulls_equal=True)
        g = with_g["_g"].to_numpy().astype(np.int64)
        amt = with_g["amount"].fill_null(0.0).to_numpy()
        this = with_g["_this"].to_numpy()
        booked[:, 0] = np.bincount(g[this], weights=amt[this], minlength=n_groups)
        quarter_booked[:] = np.bincount(g[~this], weights=amt[~this], minlength=n_groups)

    # deals not created yet
    start = instant(origin)
    series = newbiz_history(history, origin=origin, horizons=range(window), by=dims or None)
    forecaster = (newbiz or NewBusinessForecaster()).fit(series)
    draws = forecaster.sample(origin, range(window), n_samples=n_samples, seed=seed)
    elapsed = (moment - start).total_seconds() / (
        (instant(add_months(origin, 1)) - start).total_seconds()
    )
    keep = 1.0 - elapsed * _created_share(history, start, window)
    nb = np.zeros((n_groups, window, n_samples))
    if dims:
        draws = draws.join(group_key, on=dims, how="inner", nulls_equal=True)
    else:
        draws = draws.with_columns(pl.lit(0, dtype=pl.UInt32).alias("_g"))
    if draws.height:
        nb[
            draws["_g"].to_numpy().astype(np.int64),
            draws["horizon"].to_numpy(),
            draws["sample"].to_numpy(),
        ] = draws["bookings"].to_numpy()
    nb *= keep[None, :, None]
    ratio = creation_ratio(history, moment) if creation_scale else None
    if ratio is not None and ratio < CREATION_FLOOR:
        nb *= ratio
        notes.append(
            f"deal creation in the last {CREATION_WINDOW_DAYS} days is {ratio:.0%} of its usual "
            f"rate: new business scaled to {ratio:.0%}"
        )

    targets = history.targets.collect()
    return RevenueForecast(
        as_of=moment,
        months=month_list,
        by=dims,
        groups=groups if dims else groups.clear(),
        pipeline=pipeline,
        newbiz=nb,
        booked=booked,
        quarter_booked=quarter_booked,
        targets=targets,
        deals=scores,
        versions=models.versions,
        notes=notes,
        stale_cap=cap,
        creation_ratio=ratio,
    )
