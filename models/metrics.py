"""Scores of probabilities (calibration) and of forecasts (backtest accuracy), as plain functions.

Probability metrics take the outcomes ``y`` (0/1) and the predicted probabilities ``p`` as
array-likes (lists, numpy arrays, polars Series) and return floats; :func:`reliability_table`
and :func:`reliability_plot` give the reliability diagram behind :func:`ece`.

Forecast metrics follow statsforecast: a backtest is one long frame and metrics are functions
over it. The frame contract (one row per segment, origin and target month)::

    segment, origin, target_month, horizon, actual, <method>, [<method>__p10, <method>__p90]

- ``actual``: what was booked in ``target_month``; ``horizon``: months from the origin's month
  to ``target_month`` (0 = the origin's own month);
- ``<method>``: the method's point forecast (its P50 when it has an interval);
- ``<method>__p10`` and ``<method>__p90``: the method's interval, present only for methods that
  have one (both or neither).

:func:`summarise` turns that frame into WAPE, bias and P10-P90 coverage per method and horizon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm

__all__ = [
    "P10",
    "P90",
    "brier",
    "log_loss",
    "auc",
    "ece",
    "reliability_table",
    "reliability_plot",
    "wape",
    "bias",
    "coverage",
    "accuracy",
    "summarise",
]

P10 = "__p10"
"""Suffix of a method's lower interval column in a backtest frame (``dealcast__p10``)."""
P90 = "__p90"
"""Suffix of a method's upper interval column in a backtest frame (``dealcast__p90``)."""

ArrayLike = Sequence[float] | npt.NDArray[Any] | pl.Series


# -- probabilities -----------------------------------------------------------------------------


def _outcomes_and_probabilities(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as 0/1 integers and ``p`` as floats in [0, 1], checked; ValueError otherwise."""
    ys = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y, dtype=float)
    ps = np.asarray(p.to_numpy() if isinstance(p, pl.Series) else p, dtype=float)
    if ys.ndim != 1 or ps.ndim != 1 or len(ys) != len(ps):
        raise ValueError(
            f"y and p must be 1-D and of one length, got shapes {ys.shape} and {ps.shape}"
        )
    if len(ys) == 0:
        raise ValueError("y and p are empty: score at least one prediction")
    if np.isnan(ys).any() or np.isnan(ps).any():
        raise ValueError("y or p holds missing values: drop unscored or unlabelled rows first")
    if not np.isin(ys, (0.0, 1.0)).all():
        raise ValueError("y must hold outcomes 0 or 1 (won = 1), found other values")
    if ((ps < 0.0) | (ps > 1.0)).any():
        bad = ps[(ps < 0.0) | (ps > 1.0)][:3].tolist()
        raise ValueError(f"p must be probabilities in [0, 1], found {bad}")
    return ys.astype(int), ps


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: the mean of ``(p - y)**2`` (0 is perfect; lower is better).

    Examples
    --------
    >>> brier([1, 0], [0.8, 0.4])
    0.1
    """
    ys, ps = _outcomes_and_probabilities(y, p)
    return float(skm.brier_score_loss(ys, ps, labels=[0, 1]))


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood of the outcomes (sklearn's, probabilities clipped near 0/1).

    Examples
    --------
    >>> round(log_loss([1, 0], [0.5, 0.5]), 6)
    0.693147
    """
    ys, ps = _outcomes_and_probabilities(y, p)
    return float(skm.log_loss(ys, ps, labels=[0, 1]))


def auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (sklearn's); NaN when ``y`` holds a single class.

    Examples
    --------
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    ys, ps = _outcomes_and_probabilities(y, p)
    if len(np.unique(ys)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(ys, ps))


def reliability_table(y: ArrayLike, p: ArrayLike, bins: int = 10) -> pl.DataFrame:
    """Predictions grouped in ``bins`` equal-width probability bins, with what happened.

    Bin ``b`` holds ``b / bins <= p < (b + 1) / bins``; ``p = 1`` falls in the last bin.

    Parameters
    ----------
    y : array-like of 0/1
    p : array-like of probabilities in [0, 1]
    bins : int
        Number of equal-width bins over [0, 1].

    Returns
    -------
    DataFrame
        ``bin`` (0-based, Int64), ``mean_p`` (mean predicted probability in the bin),
        ``frac_won`` (share of outcomes 1), ``count`` — one row per non-empty bin, by bin.

    Examples
    --------
    >>> reliability_table([1, 0, 1], [0.15, 0.12, 0.91], bins=10)  # doctest: +SKIP
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive number of bins, got {bins}")
    ys, ps = _outcomes_and_probabilities(y, p)
    return (
        pl.DataFrame({"y": ys.astype(float), "p": ps})
        .with_columns((pl.col("p") * bins).floor().cast(pl.Int64).clip(0, bins - 1).alias("bin"))
        .group_by("bin")
        .agg(
            pl.col("p").mean().alias("mean_p"),
            pl.col("y").mean().alias("frac_won"),
            pl.len().cast(pl.Int64).alias("count"),
        )
        .sort("bin")
    )


def ece(y: ArrayLike, p: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins, weighted by bin count.

    ``ECE = sum_b (n_b / n) * |mean_p_b - frac_won_b|`` over the bins of
    :func:`reliability_table`: 0 for perfectly calibrated probabilities, and ``d`` when every
    probability is ``d`` too high (or too low).

    Examples
    --------
    >>> ece([1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25])
    0.0
    """
    table = reliability_table(y, p, bins)
    gap = (pl.col("mean_p") - pl.col("frac_won")).abs()
    weighted = (gap * pl.col("count")).sum() / pl.col("count").sum()
    return _scalar(table, weighted)


def reliability_plot(tables: dict[str, pl.DataFrame], *, title: str | None = None) -> Figure:
    """A reliability diagram: one curve per table, and the diagonal of perfect calibration.

    Parameters
    ----------
    tables : dict of name -> DataFrame
        Frames of :func:`reliability_table` (``mean_p``, ``frac_won``, ``count``), e.g.
        ``{"calibrated": ..., "raw": ...}``; the name labels the curve.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Drawn on an Agg canvas (no display needed): ``fig.savefig("reliability.png")``.
    """
    fig = Figure(figsize=(5.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for name, table in tables.items():
        missing = [c for c in ("mean_p", "frac_won") if c not in table.columns]
        if missing:
            raise ValueError(
                f"reliability table {name!r} lacks {', '.join(missing)}: "
                "pass frames made by reliability_table"
            )
        ax.plot(table["mean_p"].to_numpy(), table["frac_won"].to_numpy(), marker="o", label=name)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="predicted probability (bin mean)",
        ylabel="observed win rate",
        title=title or "Reliability",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


# -- forecasts ---------------------------------------------------------------------------------


def _wape(actual: pl.Expr, forecast: pl.Expr) -> pl.Expr:
    denominator = actual.abs().sum()
    return pl.when(denominator > 0).then((actual - forecast).abs().sum() / denominator)


def _bias(actual: pl.Expr, forecast: pl.Expr) -> pl.Expr:
    denominator = actual.sum()
    return pl.when(denominator != 0).then((forecast - actual).sum() / denominator)


def _coverage(actual: pl.Expr, lo: pl.Expr, hi: pl.Expr) -> pl.Expr:
    return ((actual >= lo) & (actual <= hi)).cast(pl.Float64).mean()


def _frame(**columns: ArrayLike) -> pl.DataFrame:
    """Equal-length float columns; ValueError naming the lengths otherwise."""
    series = {
        name: pl.Series(name, values, dtype=pl.Float64, strict=False)
        for name, values in columns.items()
    }
    lengths = {name: len(s) for name, s in series.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must be of one length, got {lengths}")
    return pl.DataFrame(list(series.values()))


def _scalar(frame: pl.DataFrame, expr: pl.Expr) -> float:
    value = frame.select(expr.alias("v")).item()
    return float("nan") if value is None else float(value)


def wape(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Weighted absolute percentage error: ``sum|A - F| / sum|A|``.

    Rows where either value is missing are left out. NaN when every actual is 0 (or no row is
    left).

    Examples
    --------
    >>> wape([100, 200], [110, 150])
    0.2
    """
    frame = _frame(a=actual, f=forecast).drop_nulls()
    return _scalar(frame, _wape(pl.col("a"), pl.col("f")))


def bias(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Relative bias: ``sum(F - A) / sum(A)`` (positive = over-forecast).

    Rows where either value is missing are left out. NaN when the actuals sum to 0.

    Examples
    --------
    >>> bias([100, 200], [110, 150])
    -0.13333333333333333
    """
    frame = _frame(a=actual, f=forecast).drop_nulls()
    return _scalar(frame, _bias(pl.col("a"), pl.col("f")))


def coverage(actual: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of actuals inside their interval ``[lo, hi]`` (bounds included).

    Rows where any value is missing are left out; NaN when no row is left.

    Examples
    --------
    >>> coverage([1, 5, 10], [0, 6, 10], [2, 7, 10])
    0.6666666666666666
    """
    frame = _frame(a=actual, lo=lo, hi=hi).drop_nulls()
    return _scalar(frame, _coverage(pl.col("a"), pl.col("lo"), pl.col("hi")))


def accuracy(actual: ArrayLike, forecast: ArrayLike) -> pl.Series:
    """Per-row forecast accuracy ``1 - |A - F| / A`` (kpi-catalogue); null where ``A`` is 0.

    Returns
    -------
    Series
        ``accuracy`` (Float64), one value per row; null also where ``A`` or ``F`` is missing.
        It is negative when the error exceeds the actual.

    Examples
    --------
    >>> accuracy([100, 0], [90, 5]).to_list()
    [0.9, None]
    """
    frame = _frame(a=actual, f=forecast)
    expr = pl.when(pl.col("a") != 0).then(1 - (pl.col("a") - pl.col("f")).abs() / pl.col("a"))
    return frame.select(expr.alias("accuracy")).to_series()


def summarise(
    frame: pl.DataFrame,
    methods: Sequence[str],
    *,
    by: Sequence[str] = ("method", "horizon"),
) -> pl.DataFrame:
    """WAPE, bias and P10-P90 coverage of each method over a backtest frame.

    Parameters
    ----------
    frame : DataFrame
        A backtest frame (see the module docstring): ``actual``, one column per method and,
        for methods with an interval, ``<method>__p10`` and ``<method>__p90``.
    methods : sequence of str
        The method columns to score, e.g. ``("dealcast", "run_rate")``.
    by : sequence of str
        Grouping: ``"method"`` and any columns of ``frame`` (``horizon``, ``segment``, ...).

    Returns
    -------
    DataFrame
        ``*by, wape, bias, coverage, n``: one row per group, methods in the order given.
        ``coverage`` is null for a method without an interval. ``n`` counts the rows scored:
        rows where ``actual`` or the method's forecast is null are left out of its scores
        (e.g. ``seasonal_naive`` before a year of history), so compare methods on equal ``n``.
        A group with no scored row has ``n = 0`` and null scores.

    Examples
    --------
    >>> summarise(backtest, ["dealcast", "run_rate"])  # doctest: +SKIP
    """
    keys = list(dict.fromkeys(by))
    if "method" not in keys:
        raise ValueError(
            f"by={tuple(by)} lacks 'method': scores pooled across methods mean nothing"
        )
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("no methods to summarise: name at least one forecast column")
    columns = set(frame.columns)
    missing = [c for c in ("actual", *methods, *keys) if c not in columns and c != "method"]
    if missing:
        raise ValueError(
            f"backtest frame lacks column(s) {', '.join(missing)}: it needs actual, one column "
            f"per method and the by columns (has {', '.join(frame.columns)})"
        )
    group_cols = [k for k in keys if k != "method"]
    parts = []
    for method in methods:
        lo, hi = f"{method}{P10}", f"{method}{P90}"
        if (lo in columns) != (hi in columns):
            raise ValueError(
                f"method {method!r} has only one of {lo}, {hi}: give both interval columns or none"
            )
        has_interval = lo in columns
        parts.append(
            frame.select(
                *group_cols,
                pl.lit(method).alias("method"),
                pl.col("actual").cast(pl.Float64),
                pl.col(method).cast(pl.Float64).alias("_forecast"),
                (pl.col(lo) if has_interval else pl.lit(None)).cast(pl.Float64).alias("_lo"),
                (pl.col(hi) if has_interval else pl.lit(None)).cast(pl.Float64).alias("_hi"),
                pl.lit(has_interval).alias("_has_interval"),
            )
        )
    rank = pl.DataFrame({"method": methods, "_rank": list(range(len(methods)))})
    scored = pl.col("actual").is_not_null() & pl.col("_forecast").is_not_null()
    in_interval = scored & pl.col("_lo").is_not_null() & pl.col("_hi").is_not_null()
    actual, forecast = pl.col("actual").filter(scored), pl.col("_forecast").filter(scored)
    return (
        pl.concat(parts)
        .group_by(keys)
        .agg(
            _wape(actual, forecast).alias("wape"),
            _bias(actual, forecast).alias("bias"),
            pl.when(pl.col("_has_interval").first())
            .then(
                _coverage(
                    pl.col("actual").filter(in_interval),
                    pl.col("_lo").filter(in_interval),
                    pl.col("_hi").filter(in_interval),
                )
            )
            .alias("coverage"),
            scored.sum().cast(pl.Int64).alias("n"),
        )
        .join(rank, on="method", how="left")
        .sort(["_rank", *group_cols], nulls_last=True)
        .drop("_rank")
        .select(*keys, "wape", "bias", "coverage", "n")
    )
