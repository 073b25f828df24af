"""The expected band of one KPI series point, and how surprising the observed value is.

For period ``t`` of a series, only the periods before ``t`` are used (a trailing window of
``window`` periods, from the series' first non-empty period on): the judgement of ``t`` is
what a detector running the day ``t`` closed would have said.

How each kind of metric (:data:`features.kpis.series.SERIES_METRICS`) is judged:

- **rate** (``k`` of ``n``: win rate, stage advance, slip rate): the expected rate is the
  pooled rate of the window's periods of the same season (quarter-end periods apart from the
  others, when there are enough of each: quarter ends close more and win more). The test is
  on the counts: beta-binomial, with the overdispersion between periods estimated from the
  window (Pearson chi-square, floored at binomial). A win rate from 4 deals cannot reach
  significance; no verdict below ``min_n``.
- **count** (deals created, activities): a log-linear trend + quarter-end fit of the window
  (refit once without the window's outliers), judged with a negative binomial whose extra
  variance comes from the window's residual scatter (Poisson at least).
- **amount** (bookings, pipeline amount): the same fit on ``log1p``; the residual is judged
  against the window's robust scatter (1.4826 x MAD) with a Student t.
- **mean** (deal size, cycle days): ``log`` of the mean against the window's ``n``-weighted
  centre; its standard error shrinks with ``sqrt(n)`` of the period.
- **Prophet** (:class:`ProphetBand`): monthly count and amount series with at least
  ``PROPHET_MIN_MONTHS`` of history get Prophet's interval instead (yearly seasonality and a
  quarter-end regressor, on ``log1p``), refit at each quarter start on the months before it.

Every judgement returns ``expected``, the 95% band, the p-value and the *deviation mass*
(observed minus expected in the metric's own units x items): the amount of the deviation, used
to say which segment accounts for a parent's deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from models.forecast.newbiz import no_prophet_deprecations, quarter_end_flags, quiet_prophet

__all__ = ["PROPHET_MIN_MONTHS", "Judgement", "ProphetBand", "judge"]

PROPHET_MIN_MONTHS = 24
"""Months of history (after the series' first non-empty month) before Prophet takes over."""

_Z95 = 1.959963984540054
_MAD = 1.4826


@dataclass(frozen=True)
class Judgement:
    """How one observed value compares with what its history expected."""

    expected: float
    band_low: float
    band_high: float
    p: float
    deviation: float  # observed - expected, in counts (rate, count), money, or mean x items
    method: str  # "counts", "robust" or "prophet"


def judge(
    kind: str,
    *,
    value: float,
    k: float | None,
    n: float | None,
    history_value: np.ndarray,
    history_k: np.ndarray,
    history_n: np.ndarray,
    history_qend: np.ndarray,
    qend: bool,
    min_n: float,
    min_count: float,
) -> Judgement | None:
    """Judge one period against the window before it; None when there is no verdict.

    ``history_*`` are the window's periods, oldest first (values, counts, quarter-end flags);
    ``k`` and ``n`` are the period's own counts as in :data:`features.kpis.series.SERIES_SCHEMA`.
    """
    if kind == "rate":
        return _rate(k, n, history_k, history_n, history_qend, qend, min_n)
    if kind == "count":
        return _count(value, history_value, history_qend, qend, min_count)
    if kind == "amount":
        if float(np.median(history_n)) < min_count:  # a sum of a handful of deals: no verdict
            return None
        return _amount(value, history_value, history_qend, qend, n)
    if kind == "mean":
        return _mean(value, n, history_value, history_n, min_n)
    raise ValueError(f"unknown metric kind {kind!r}: use rate, count, amount or mean")


def _seasonal(mask_same: np.ndarray, weight: np.ndarray, floor: float) -> np.ndarray | None:
    """The window's periods of the same season when they carry enough weight, else None."""
    return mask_same if weight[mask_same].sum() >= floor and mask_same.sum() >= 3 else None


def _rate(
    k: float | None,
    n: float | None,
    hk: np.ndarray,
    hn: np.ndarray,
    hq: np.ndarray,
    qend: bool,
    min_n: float,
) -> Judgement | None:
    ok = hn > 0
    if k is None or n is None or n < min_n or ok.sum() < 4 or hn[ok].sum() < 3 * min_n:
        return None
    hk, hn, hq = hk[ok], hn[ok], hq[ok]
    same = _seasonal(hq == qend, hn, 3 * min_n)
    use = same if same is not None else np.ones(len(hn), dtype=bool)
    # Farrington-style: a past anomaly in the window must not become the norm. Pool, drop the
    # periods more than 3 robust sigmas off, pool again; dispersion from the robust scatter.
    keep = np.ones(len(hn), dtype=bool)
    for _ in range(2):
        pooled = _pooled(hk, hn, use, keep)
        resid = (hk - hn * pooled) / np.sqrt(hn * pooled * (1 - pooled))
        phi = max((_MAD * float(np.median(np.abs(resid[keep])))) ** 2, 1.0)
        keep = np.abs(resid) <= 3 * math.sqrt(phi)
        if (use & keep).sum() < 3:
            keep = np.ones(len(hn), dtype=bool)
            break
    p0 = float(_pooled(hk, hn, use, keep)[use][0])
    phi = min(phi, 20.0)
    n_bar = float(hn.mean())
    rho = (phi - 1.0) / (n_bar - 1.0) if n_bar > 1 else 0.0
    n_int = int(round(n))
    k_int = int(round(k))
    if rho <= 1e-9:
        dist: Any = stats.binom(n_int, p0)
    else:
        rho = min(rho, 0.5)
        a, b = p0 * (1 / rho - 1), (1 - p0) * (1 / rho - 1)
        dist = stats.betabinom(n_int, a, b)
    p = min(1.0, 2 * min(float(dist.cdf(k_int)), float(dist.sf(k_int - 1))))
    low, high = dist.ppf(0.025), dist.ppf(0.975)
    return Judgement(p0, low / n, high / n, p, k - n * p0, "counts")


def _pooled(hk: np.ndarray, hn: np.ndarray, group: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each period's expected rate: the pooled rate of the kept periods of its season group."""
    total = max(hn[keep].sum(), 1.0)
    overall = hk[keep].sum() / total
    a, b = group & keep, ~group & keep
    ra = hk[a].sum() / hn[a].sum() if hn[a].sum() > 0 else overall
    rb = hk[b].sum() / hn[b].sum() if hn[b].sum() > 0 else overall
    return np.clip(np.where(group, ra, rb), 0.5 / total, 1 - 0.5 / total)


def _trend_fit(y: np.ndarray, hq: np.ndarray, qend: bool) -> tuple[float, np.ndarray]:
    """Prediction for the next period and the window's residuals: trend + quarter end."""
    m = len(y)
    t = np.arange(m, dtype=float) - m  # the judged period is t = 0
    columns = [np.ones(m)]
    if m >= 8:
        columns.append(t)
    if 0 < hq.sum() < m and min(hq.sum(), m - hq.sum()) >= 2:
        columns.append(hq.astype(float))
    x = np.column_stack(columns)
    keep = np.ones(m, dtype=bool)
    for _ in range(2):  # fit, drop the window's outliers (3 robust sigmas), refit
        beta, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
        resid = y - x @ beta
        scale = _MAD * float(np.median(np.abs(resid[keep] - np.median(resid[keep]))))
        if scale <= 0:
            break
        keep = np.abs(resid) <= 3 * scale
        if keep.sum() < len(columns) + 2:
            keep = np.ones(m, dtype=bool)
            break
    beta, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
    row = [1.0]
    if m >= 8:
        row.append(0.0)
    if len(columns) > len(row):
        row.append(1.0 if qend else 0.0)
    return float(np.array(row) @ beta), (y - x @ beta)[keep]


def _count(
    value: float, hv: np.ndarray, hq: np.ndarray, qend: bool, min_count: float
) -> Judgement | None:
    if len(hv) < 4:
        return None
    y = np.log(hv + 0.5)
    pred, resid = _trend_fit(y, hq, qend)
    mu = float(np.exp(pred) - 0.5)
    if mu < min_count:
        return None
    s2 = (_MAD * float(np.median(np.abs(resid - np.median(resid))))) ** 2
    alpha = max(s2 - 1.0 / mu, 0.0)  # var(log y) ~ 1/mu + alpha for a negative binomial
    if alpha <= 1e-9:
        dist: Any = stats.poisson(mu)
    else:
        size = 1.0 / alpha
        dist = stats.nbinom(size, size / (size + mu))
    obs = int(round(value))
    p = min(1.0, 2 * min(float(dist.cdf(obs)), float(dist.sf(obs - 1))))
    return Judgement(mu, float(dist.ppf(0.025)), float(dist.ppf(0.975)), p, value - mu, "robust")


def _amount(
    value: float, hv: np.ndarray, hq: np.ndarray, qend: bool, n: float | None
) -> Judgement | None:
    if len(hv) < 6 or float(np.median(hv)) <= 0:
        return None
    y = np.log1p(hv)
    pred, resid = _trend_fit(y, hq, qend)
    scale = max(_MAD * float(np.median(np.abs(resid - np.median(resid)))), 0.05)
    dof = max(len(resid) - 3, 2)
    z = (math.log1p(max(value, 0.0)) - pred) / scale
    p = float(2 * stats.t.sf(abs(z), dof))
    q = float(stats.t.isf(0.025, dof))
    expected = math.expm1(pred)
    return Judgement(
        expected,
        math.expm1(pred - q * scale),
        math.expm1(pred + q * scale),
        p,
        value - expected,
        "robust",
    )


def _mean(
    value: float, n: float | None, hv: np.ndarray, hn: np.ndarray, min_n: float
) -> Judgement | None:
    ok = (hn > 0) & (hv > 0)
    if n is None or n < min_n / 2 or value <= 0 or ok.sum() < 4:
        return None
    lv, w = np.log(hv[ok]), hn[ok]
    centre = float((lv * w).sum() / w.sum())
    # Per-item spread: n x (deviation of the period mean)^2 has the item variance as its mean.
    sigma2 = float(np.median(w * (lv - centre) ** 2)) / 0.455
    sigma = max(math.sqrt(sigma2), 0.05)
    se = sigma / math.sqrt(n)
    dof = max(int(ok.sum()) - 1, 2)
    z = (math.log(value) - centre) / se
    p = float(2 * stats.t.sf(abs(z), dof))
    q = float(stats.t.isf(0.025, dof))
    expected = math.exp(centre)
    return Judgement(
        expected,
        math.exp(centre - q * se),
        math.exp(centre + q * se),
        p,
        (value - expected) * n,
        "robust",
    )


class ProphetBand:
    """Prophet's 95% interval for the next months of one monthly series, on ``log1p``.

    Fit once on the months before an origin (``fit``); ``judge`` the months from the origin on.
    Yearly seasonality (Fourier order 3) and a quarter-end regressor, like the new-business
    model (:mod:`models.forecast.newbiz`).
    """

    def __init__(self, *, interval_samples: int = 300, seed: int = 0) -> None:
        self.interval_samples = interval_samples
        self.seed = seed

    def fit(self, months: list[date], values: np.ndarray) -> ProphetBand:
        quiet_prophet()
        from prophet import Prophet

        model = Prophet(
            growth="linear",
            yearly_seasonality=3 if len(months) >= 24 else False,
            weekly_seasonality=False,
            daily_seasonality=False,
            interval_width=0.95,
            uncertainty_samples=self.interval_samples,
        )
        model.add_regressor("quarter_end")
        frame = pd.DataFrame({"ds": pd.to_datetime(months), "y": np.log1p(values)})
        frame["quarter_end"] = quarter_end_flags(months)
        with no_prophet_deprecations():
            model.fit(frame)
        self.prophet_ = model
        return self

    def judge(self, months: list[date], values: np.ndarray) -> list[Judgement]:
        future = pd.DataFrame({"ds": pd.to_datetime(months)})
        future["quarter_end"] = quarter_end_flags(months)
        state = np.random.get_state()
        try:
            np.random.seed(self.seed)  # Prophet samples its interval from numpy's global RNG
            with no_prophet_deprecations():
                out = self.prophet_.predict(future)
        finally:
            np.random.set_state(state)
        result = []
        for value, (_, row) in zip(values, out.iterrows(), strict=True):
            scale = max((row["yhat_upper"] - row["yhat_lower"]) / (2 * _Z95), 0.02)
            z = (math.log1p(max(float(value), 0.0)) - row["yhat"]) / scale
            expected = math.expm1(row["yhat"])
            result.append(
                Judgement(
                    expected,
                    math.expm1(row["yhat_lower"]),
                    math.expm1(row["yhat_upper"]),
                    float(2 * stats.norm.sf(abs(z))),
                    float(value) - expected,
                    "prophet",
                )
            )
        return result
