"""Bookings from deals not created yet, learned with Prophet; and Prophet on bookings alone.

The series, point in time. For an origin month T and a horizon h, ``y_h(T)`` is the bookings of
month T+h from deals created at or after T (won, ``closed_at`` in month T+h): what a forecast
made at T cannot see in its open pipeline. A forecast made at origin T0 knows ``y_h(T)`` only
once month T+h has fully closed before T0; :func:`newbiz_history` returns exactly those values,
so adding deals created or closed at or after T0 never changes it.

:class:`NewBusinessForecaster` fits one Prophet per horizon on the total ``y_h`` series, indexed
by target month (``ds = T+h``) so that yearly seasonality and the quarter-end regressor (1 in
March, June, September, December) describe the month being booked. By segment it is top-down:
each segment's samples are the total's samples times the segment's share of the trailing
``share_months`` months of new-business bookings. Every sample and every quantile of the parts
then add up to the total's exactly (a share is a constant, so segment P50 = share x total P50).
Forecasting each segment separately would keep samples additive too, but not the P50s, would
need a Prophet per segment x horizon, and would fit small, noisy series.

:class:`BookingsProphet` is the ``prophet_only`` baseline: one Prophet on total monthly bookings
(all won deals), forecasting months T0 .. T0+H from the months closed before T0.

Series shorter than ``min_points`` (or constant) are not given to Prophet: the forecast is the
median of the last ``min_points`` values and the samples resample their deviations from it
(``fallback_`` says which horizons used that).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from features.contract import DIMENSIONS, TS, DealHistory
from features.snapshots import deal_dimensions
from models.forecast.baselines import monthly_bookings as baseline_monthly_bookings

__all__ = [
    "BookingsProphet",
    "NewBusinessForecaster",
    "monthly_bookings",
    "newbiz_history",
    "no_prophet_deprecations",
    "quarter_end_flags",
    "quiet_prophet",
]

_SERIES_COLUMNS = ("origin_month", "horizon", "target_month", "bookings")
_MONTHLY_COLUMNS = ("month", "bookings")


# -- months ---------------------------------------------------------------------------------
def _origin_ts(origin: date | datetime) -> datetime:
    """Check that ``origin`` is 00:00 UTC on the first of a month; return it as a naive datetime.

    A naive datetime is taken as UTC (the data contract); an aware one is converted to UTC.
    """
    if isinstance(origin, datetime):
        value = origin.astimezone(UTC).replace(tzinfo=None) if origin.tzinfo else origin
    else:
        value = datetime(origin.year, origin.month, origin.day)
    if value != datetime(value.year, value.month, 1):
        raise ValueError(
            f"origin must be the start of a month (00:00 UTC on day 1), got {origin}: use "
            f"{value:%Y-%m}-01"
        )
    return value


def _month_idx(expr: pl.Expr) -> pl.Expr:
    return expr.dt.year().cast(pl.Int64) * 12 + expr.dt.month().cast(pl.Int64) - 1


def _idx_to_date(expr: pl.Expr) -> pl.Expr:
    return pl.date(expr // 12, expr % 12 + 1, 1)


def _idx(d: date | datetime) -> int:
    return d.year * 12 + d.month - 1


def _date_of(idx: int) -> date:
    return date(idx // 12, idx % 12 + 1, 1)


def _check_by(by: Sequence[str] | str | None) -> list[str]:
    cols = [by] if isinstance(by, str) else list(by or [])
    bad = [c for c in cols if c not in DIMENSIONS]
    if bad:
        raise ValueError(
            f"by: unknown grouping column(s) {', '.join(bad)}; choose from {', '.join(DIMENSIONS)}"
        )
    return cols


def _won_deals(history: DealHistory, origin: datetime, by: list[str]) -> pl.LazyFrame:
    """Won deals closed before ``origin``: ``*by, created_idx, closed_idx, amount``."""
    won = list(history.pipeline.names_of("won"))
    limit = pl.lit(origin).cast(TS)
    deals = history.deals
    if by:
        deals = deals.join(
            deal_dimensions(history).select("deal_id", *[c for c in by if c != "owner_id"]),
            on="deal_id",
            how="left",
        )
    return deals.filter(
        pl.col("stage").is_in(won)
        & pl.col("closed_at").is_not_null()
        & (pl.col("closed_at") < limit)
    ).select(
        *by,
        _month_idx(pl.col("created_at")).alias("_created"),
        _month_idx(pl.col("closed_at")).alias("_closed"),
        pl.col("amount").fill_null(0.0),
    )


def _segments(history: DealHistory, origin: datetime, by: list[str]) -> pl.LazyFrame:
    """Segment values of the deals created before ``origin`` (one empty row when ``by`` is [])."""
    created = history.deals.filter(pl.col("created_at") < pl.lit(origin).cast(TS))
    if not by:
        return pl.LazyFrame({"_one": [1]})
    created = created.join(
        deal_dimensions(history).select("deal_id", *[c for c in by if c != "owner_id"]),
        on="deal_id",
        how="left",
    )
    return (
        created.select(by).unique().sort(by, nulls_last=True).with_columns(pl.lit(1).alias("_one"))
    )


def _first_month(history: DealHistory, origin: datetime) -> int | None:
    value = (
        history.deals.filter(pl.col("created_at") < pl.lit(origin).cast(TS))
        .select(pl.col("created_at").min())
        .collect()
        .item()
    )
    return None if value is None else _idx(value)


def newbiz_history(
    history: DealHistory,
    *,
    origin: date | datetime,
    horizons: Iterable[int] = range(4),
    by: Sequence[str] | str | None = None,
) -> pl.DataFrame:
    """The new-business series ``y_h(T)`` as known at ``origin``.

    Parameters
    ----------
    history : DealHistory
    origin : date or datetime
        The forecast origin T0, the first of a month (00:00 UTC).
    horizons : iterable of int
        Horizons h >= 0.
    by : column name(s) from ``DIMENSIONS``, optional
        Segment columns; the segments are those of the deals created before ``origin``.

    Returns
    -------
    DataFrame
        ``*by, origin_month, horizon, target_month, bookings``: for every origin month T from the
        month of the first deal and every h with T+h before the month of ``origin``, the summed
        ``amount`` of deals won with ``closed_at`` in month T+h and ``created_at >= T`` (0 when
        none). ``origin_month`` and ``target_month`` are Dates (first of the month). Sorted by
        segment, horizon, origin month.

    Examples
    --------
    >>> newbiz_history(history, origin=date(2026, 6, 1), horizons=range(4))  # doctest: +SKIP
    """
    t0 = _origin_ts(origin)
    hs = sorted({int(h) for h in horizons})
    if not hs or hs[0] < 0:
        raise ValueError(f"horizons must be non-negative integers, got {hs}")
    cols = _check_by(by)
    schema: dict[str, Any] = {
        "origin_month": pl.Date(),
        "horizon": pl.Int64(),
        "target_month": pl.Date(),
        "bookings": pl.Float64(),
    }
    first = _first_month(history, t0)
    last = _idx(t0) - 1  # the last month fully closed before the origin
    if first is None or first > last:
        seg_schema = {c: pl.String() for c in cols}
        return pl.DataFrame(schema={**seg_schema, **schema})
    # A won deal created in month c and closed in month k counts for (T, h) with T + h = k and
    # T <= c (created at or after the start of T), i.e. for every h >= k - c, at T = k - h.
    horizon_frame = pl.LazyFrame({"horizon": hs}, schema={"horizon": pl.Int64()})
    sums = (
        _won_deals(history, t0, cols)
        .join(horizon_frame, how="cross")
        .filter(pl.col("horizon") >= pl.col("_closed") - pl.col("_created"))
        .with_columns((pl.col("_closed") - pl.col("horizon")).alias("_origin"))
        .group_by(*cols, "_origin", "horizon")
        .agg(pl.col("amount").sum().alias("bookings"))
    )
    grid = (
        pl.LazyFrame({"_origin": list(range(first, last + 1))}, schema={"_origin": pl.Int64()})
        .join(horizon_frame, how="cross")
        .filter(pl.col("_origin") + pl.col("horizon") <= last)
        .with_columns(pl.lit(1).alias("_one"))
        .join(_segments(history, t0, cols), on="_one")
        .drop("_one")
    )
    return (
        grid.join(sums, on=[*cols, "_origin", "horizon"], how="left", nulls_equal=True)
        .select(
            *cols,
            _idx_to_date(pl.col("_origin")).alias("origin_month"),
            "horizon",
            _idx_to_date(pl.col("_origin") + pl.col("horizon")).alias("target_month"),
            pl.col("bookings").fill_null(0.0),
        )
        .sort(*cols, "horizon", "origin_month", nulls_last=True)
        .collect()
    )


def monthly_bookings(
    history: DealHistory, *, origin: date | datetime, by: Sequence[str] | str | None = None
) -> pl.DataFrame:
    """Monthly bookings (all won deals) of the months closed before ``origin``.

    Returns
    -------
    DataFrame
        ``*by, month, bookings``: one row per segment and month from the month of the first deal
        to the month before ``origin`` (0 when nothing was won), ``month`` a Date.
    """
    t0 = _origin_ts(origin)
    cols = _check_by(by)
    series = baseline_monthly_bookings(history, by=cols or None, before=t0)
    return series.select(*cols, "month", "bookings").sort(*cols, "month", nulls_last=True)


# -- one series: Prophet or the robust fallback -----------------------------------------------
def quiet_prophet() -> None:
    """Silence cmdstanpy's per-fit INFO lines and Prophet's "plotly missing" notice."""
    # Prophet's plotting module logs an error at import when plotly is absent (we never plot
    # with plotly); set its level before the first import.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    from cmdstanpy.utils import get_logger

    # get_logger() sets the level to DEBUG on its first (cached) call: call it, then override.
    get_logger().setLevel(logging.WARNING)


@contextmanager
def no_prophet_deprecations() -> Iterator[None]:
    """Hide Prophet's own use of pandas arguments pandas is deprecating (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The inplace keyword", module="prophet")
        yield


def quarter_end_flags(months: Sequence[date]) -> np.ndarray:
    return np.array([1.0 if m.month % 3 == 0 else 0.0 for m in months])


class _Series:
    """One monthly series: a fitted Prophet, or the median and deviations of its last values."""

    def __init__(self, months: list[date], y: np.ndarray, params: dict[str, Any]) -> None:
        self.prophet: Any = None
        self.last_month = months[-1] if months else None
        tail = y[-params["min_points"] :] if len(y) else y
        self.center = float(np.median(tail)) if len(tail) else 0.0
        self.deviations = (tail - self.center) if len(tail) else np.zeros(1)
        self.fallback = len(y) < params["min_points"] or float(np.ptp(y)) == 0.0
        if self.fallback:
            return
        quiet_prophet()
        from prophet import Prophet

        yearly = params["yearly_order"] if len(y) >= params["min_yearly_points"] else False
        model = Prophet(
            growth="linear",
            yearly_seasonality=yearly,
            weekly_seasonality=False,
            daily_seasonality=False,
            seasonality_mode=params["seasonality_mode"],
            changepoint_prior_scale=params["changepoint_prior_scale"],
            uncertainty_samples=0,
        )
        frame = pd.DataFrame({"ds": pd.to_datetime(months), "y": y})
        if params["quarter_end"]:
            model.add_regressor("quarter_end")
            frame["quarter_end"] = quarter_end_flags(months)
        with no_prophet_deprecations():
            model.fit(frame)
        self.prophet = model

    def _future(self, months: Sequence[date]) -> pd.DataFrame:
        frame = pd.DataFrame({"ds": pd.to_datetime(list(months))})
        if "quarter_end" in self.prophet.extra_regressors:
            frame["quarter_end"] = quarter_end_flags(months)
        return frame

    def mean(self, months: Sequence[date]) -> np.ndarray:
        if self.prophet is None:
            return np.full(len(months), max(self.center, 0.0))
        with no_prophet_deprecations():
            yhat = self.prophet.predict(self._future(months))["yhat"].to_numpy()
        return np.clip(yhat, 0.0, None)

    def samples(self, months: Sequence[date], n_samples: int, seed: int) -> np.ndarray:
        """``(len(months), n_samples)`` draws, clipped at 0."""
        if self.prophet is None:
            rng = np.random.default_rng(seed)
            draws = self.center + rng.choice(self.deviations, size=(len(months), n_samples))
            return np.clip(draws, 0.0, None)
        # Prophet draws from numpy's global generator: seed it, then put the caller's state back.
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            self.prophet.uncertainty_samples = n_samples
            with no_prophet_deprecations():
                draws = self.prophet.predictive_samples(self._future(months))["yhat"]
        finally:
            self.prophet.uncertainty_samples = 0
            np.random.set_state(state)
        return np.clip(np.asarray(draws, dtype=float).reshape(len(months), n_samples), 0.0, None)


# -- the forecasters ------------------------------------------------------------------------
class _ProphetForecaster(BaseEstimator):
    """Shared parameters, segment shares and output frames of the two forecasters."""

    _value_columns: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        min_points: int = 12,
        yearly_order: int = 3,
        min_yearly_points: int = 25,
        quarter_end: bool = True,
        seasonality_mode: str = "multiplicative",
        changepoint_prior_scale: float = 0.05,
        share_months: int = 12,
    ) -> None:
        self.min_points = min_points
        self.yearly_order = yearly_order
        self.min_yearly_points = min_yearly_points
        self.quarter_end = quarter_end
        self.seasonality_mode = seasonality_mode
        self.changepoint_prior_scale = changepoint_prior_scale
        self.share_months = share_months

    def _params(self) -> dict[str, Any]:
        if self.min_points < 2:
            raise ValueError(f"min_points must be >= 2, got {self.min_points}")
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ValueError(
                f"seasonality_mode must be 'additive' or 'multiplicative', got "
                f"{self.seasonality_mode!r}"
            )
        if self.share_months < 1:
            raise ValueError(f"share_months must be >= 1, got {self.share_months}")
        return {
            "min_points": self.min_points,
            "yearly_order": self.yearly_order,
            "min_yearly_points": self.min_yearly_points,
            "quarter_end": self.quarter_end,
            "seasonality_mode": self.seasonality_mode,
            "changepoint_prior_scale": self.changepoint_prior_scale,
        }

    def _check_frame(self, X: Any) -> pl.DataFrame:
        if isinstance(X, pd.DataFrame):
            X = pl.from_pandas(X)
        if not isinstance(X, pl.DataFrame):
            raise TypeError(f"{type(self).__name__}.fit expects a polars DataFrame, got {type(X)}")
        missing = [c for c in self._value_columns if c not in X.columns]
        if missing:
            raise ValueError(
                f"{type(self).__name__}.fit: the frame lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(self._value_columns)} plus optional segment columns"
            )
        return X

    def _fit_shares(self, frame: pl.DataFrame, month_col: str) -> None:
        """Each segment's share of the bookings of the trailing ``share_months`` months."""
        segs = [c for c in frame.columns if c not in self._value_columns]
        self.segment_columns_ = tuple(segs)
        if not segs:
            self.shares_ = pl.DataFrame({"share": [1.0]})
            return
        last = frame[month_col].max()
        recent = frame
        if last is not None:
            start = _date_of(_idx(last) - self.share_months + 1)  # type: ignore[arg-type]
            recent = frame.filter(pl.col(month_col) >= start)
        shares = recent.group_by(segs).agg(pl.col("bookings").sum().alias("_b"))
        if shares["_b"].sum() <= 0:  # nothing recent: all history, then equal shares
            shares = frame.group_by(segs).agg(pl.col("bookings").sum().alias("_b"))
        total = shares["_b"].sum()
        share = pl.col("_b") / total if total > 0 else pl.lit(1.0 / max(shares.height, 1))
        self.shares_ = shares.select(*segs, share.alias("share")).sort(segs, nulls_last=True)

    def _check_origin(self, origin: date | datetime) -> date:
        check_is_fitted(self, "shares_")
        t0 = _origin_ts(origin).date()
        if self.last_month_ is not None and self.last_month_ >= t0:
            raise ValueError(
                f"{type(self).__name__} was fitted on months up to {self.last_month_}, not "
                f"before the origin {t0}: refit on newbiz_history/monthly_bookings built with "
                f"origin={t0}"
            )
        return t0

    def _frame(
        self, t0: date, hs: list[int], values: list[np.ndarray], sampled: bool
    ) -> pl.DataFrame:
        """Long output: one row per segment x horizon (x sample), parts summing to the total."""
        n = values[0].shape[-1] if sampled else 1
        rows = pl.DataFrame(
            {
                "origin_month": [t0] * (len(hs) * n),
                "horizon": np.repeat(np.array(hs, dtype=np.int64), n),
                "target_month": [_date_of(_idx(t0) + h) for h in hs for _ in range(n)],
                **({"sample": np.tile(np.arange(n, dtype=np.int64), len(hs))} if sampled else {}),
                "_total": np.concatenate([v.reshape(-1) for v in values]),
            },
            schema_overrides={"origin_month": pl.Date(), "target_month": pl.Date()},
        )
        segs = list(self.segment_columns_)
        out = rows.join(self.shares_, how="cross").with_columns(
            (pl.col("_total") * pl.col("share")).alias("bookings")
        )
        keys = ["horizon", *(["sample"] if sampled else [])]
        return out.select(*segs, "origin_month", *keys[:1], "target_month", *keys[1:], "bookings")


class NewBusinessForecaster(_ProphetForecaster):
    """Bookings of month T0+h from deals created at or after T0, per horizon h.

    Parameters
    ----------
    min_points : int
        Shortest series given to Prophet; shorter (or constant) ones use the fallback (median of
        the last ``min_points`` values, samples resampling their deviations from it).
    yearly_order : int
        Fourier order of Prophet's yearly seasonality, used once a series has
        ``min_yearly_points`` points (25 monthly points span two years, Prophet's own minimum
        for a yearly seasonality it can identify).
    min_yearly_points : int
    quarter_end : bool
        Add a regressor that is 1 in the last month of each quarter.
    seasonality_mode : {"multiplicative", "additive"}
    changepoint_prior_scale : float
        Prophet's trend flexibility.
    share_months : int
        Trailing months of new-business bookings that set each segment's share.

    Attributes
    ----------
    horizons_ : tuple[int, ...]
    fallback_ : dict[int, bool]
        Per horizon: True when the fallback replaced Prophet.
    segment_columns_ : tuple[str, ...]
    shares_ : DataFrame
        ``*segment_columns_, share`` (shares sum to 1).
    last_month_ : date or None
        Latest target month in the training frame.

    Examples
    --------
    >>> series = newbiz_history(history, origin=date(2026, 6, 1))  # doctest: +SKIP
    >>> model = NewBusinessForecaster().fit(series)  # doctest: +SKIP
    >>> model.sample(date(2026, 6, 1), range(4), n_samples=1000, seed=0)  # doctest: +SKIP
    """

    _value_columns = _SERIES_COLUMNS

    def fit(self, X: Any, y: Any = None) -> NewBusinessForecaster:
        """Fit on :func:`newbiz_history` output (segment columns are summed into the total)."""
        params = self._params()
        frame = self._check_frame(X)
        self._fit_shares(frame, "target_month")
        total = frame.group_by("horizon", "target_month").agg(pl.col("bookings").sum())
        self.horizons_ = tuple(sorted(int(h) for h in frame["horizon"].unique().to_list()))
        self.last_month_ = frame["target_month"].max() if frame.height else None
        self.series_: dict[int, _Series] = {}
        for h in self.horizons_:
            part = total.filter(pl.col("horizon") == h).sort("target_month")
            self.series_[h] = _Series(
                part["target_month"].to_list(), part["bookings"].to_numpy(), params
            )
        self.fallback_ = {h: s.fallback for h, s in self.series_.items()}
        return self

    def _series_for(self, horizons: Iterable[int] | None) -> list[int]:
        check_is_fitted(self, "series_")
        hs = list(self.horizons_) if horizons is None else [int(h) for h in horizons]
        unknown = [h for h in hs if h not in self.series_]
        if unknown:
            raise ValueError(
                f"horizon(s) {unknown} were not in the training frame (fitted: "
                f"{list(self.horizons_)}): build newbiz_history with those horizons"
            )
        return hs

    def predict(
        self, origin: date | datetime, horizons: Iterable[int] | None = None
    ) -> pl.DataFrame:
        """Expected new-business bookings: ``*segments, origin_month, horizon, target_month,
        bookings`` (Prophet's mean clipped at 0, or the fallback's median)."""
        t0 = self._check_origin(origin)
        hs = self._series_for(horizons)
        values = [self.series_[h].mean([_date_of(_idx(t0) + h)]) for h in hs]
        return self._frame(t0, hs, values, sampled=False)

    def sample(
        self,
        origin: date | datetime,
        horizons: Iterable[int] | None = None,
        n_samples: int = 1000,
        seed: int = 0,
    ) -> pl.DataFrame:
        """Draws of new-business bookings (Prophet's ``predictive_samples``, clipped at 0).

        Returns
        -------
        DataFrame
            ``*segments, origin_month, horizon, target_month, sample, bookings``: ``n_samples``
            rows per segment and horizon. Summing the segments of one (horizon, sample) gives the
            total's draw. The same ``seed`` gives the same draws.
        """
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        t0 = self._check_origin(origin)
        hs = self._series_for(horizons)
        values = [
            self.series_[h].samples([_date_of(_idx(t0) + h)], n_samples, seed + h) for h in hs
        ]
        return self._frame(t0, hs, values, sampled=True)


class BookingsProphet(_ProphetForecaster):
    """The ``prophet_only`` baseline: one Prophet on total monthly bookings.

    Fitted on :func:`monthly_bookings` output (``*segments, month, bookings``; segments are
    summed and get their trailing shares, as in :class:`NewBusinessForecaster`). Forecasts
    months ``origin + h``. Same parameters and attributes as :class:`NewBusinessForecaster`,
    with a single ``fallback_`` bool.
    """

    _value_columns = _MONTHLY_COLUMNS

    def fit(self, X: Any, y: Any = None) -> BookingsProphet:
        """Fit on :func:`monthly_bookings` output."""
        params = self._params()
        frame = self._check_frame(X)
        self._fit_shares(frame, "month")
        total = frame.group_by("month").agg(pl.col("bookings").sum()).sort("month")
        self.last_month_ = total["month"].max() if total.height else None
        self.series_ = _Series(total["month"].to_list(), total["bookings"].to_numpy(), params)
        self.fallback_ = self.series_.fallback
        return self

    def predict(self, origin: date | datetime, horizons: Iterable[int] = range(4)) -> pl.DataFrame:
        """Expected bookings of months ``origin + h``: ``*segments, origin_month, horizon,
        target_month, bookings``."""
        t0 = self._check_origin(origin)
        hs = [int(h) for h in horizons]
        months = [_date_of(_idx(t0) + h) for h in hs]
        mean = self.series_.mean(months)
        return self._frame(t0, hs, [mean[i : i + 1] for i in range(len(hs))], sampled=False)

    def sample(
        self,
        origin: date | datetime,
        horizons: Iterable[int] = range(4),
        n_samples: int = 1000,
        seed: int = 0,
    ) -> pl.DataFrame:
        """Draws of monthly bookings, shaped as :meth:`NewBusinessForecaster.sample`'s."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        t0 = self._check_origin(origin)
        hs = [int(h) for h in horizons]
        draws = self.series_.samples([_date_of(_idx(t0) + h) for h in hs], n_samples, seed)
        return self._frame(t0, hs, list(draws), sampled=True)
