"""Per-company choice of the close-probability model's booster and calibration, by time CV.

The fixed parameters of :class:`~models.deals.probability.CloseProbabilityModel` were tuned on
one simulated company; on other companies its held-out ECE ranged 0.02-0.15 and its Brier was
sometimes not below stage win rates. :func:`tune_close_probability` scores a small grid on the
training rows themselves and returns the candidate with the lowest mean validation Brier.

The folds are in time, like the held-out evaluation (``models.deals.evaluation``): deals are
ordered by the date they are first seen, and fold k fits on the deals first seen before a cut
and validates on those first seen from it up to the next cut (an expanding window; with two
folds the cuts are the 60% and 80% quantiles of first-seen dates). A deal is on one side only,
with all its snapshots. A fold is skipped when either side holds fewer than ``min_deals`` deals
or its validation deals are all won or all lost (no Brier to compare then).

The grid crosses two boosters (the model's own parameters, and a more regularised one: fewer,
larger leaves, a stronger L2 penalty, half the iterations) with three calibrations (sigmoid,
isotonic, none): six fits per fold. The stage win rates (``booster=False``) are scored on the
same folds for reference and are never chosen: whether the booster beats them is the train
job's held-out gate to decide. Ties go to the simpler candidate (the earlier in the grid).
When a fold's later calibration slice is one-sided the model cross-fits a sigmoid whatever
its ``calibration`` (``models.deals.probability``): isotonic is then the sigmoid's model, and
is scored from that fit instead of refitted (the ``calibration`` column says what was done).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from sklearn.base import clone

from models import metrics
from models.deals.dataset import time_split
from models.deals.probability import CloseProbabilityModel

__all__ = [
    "BASELINE",
    "Tuning",
    "TuningFold",
    "default_candidates",
    "describe_params",
    "time_folds",
    "tune_close_probability",
]

VALIDATION_SHARE = 0.4
"""Share of the deals (latest first seen) the folds validate on, split evenly between them."""

BASELINE = "stage win rates"
"""The reference row of the table: ``CloseProbabilityModel(booster=False)``."""

_TABLE_SCHEMA = {
    "candidate": pl.String,
    "params": pl.String,
    "calibration": pl.String,
    "brier": pl.Float64,
    "ece": pl.Float64,
    "folds": pl.Int64,
    "chosen": pl.Boolean,
}


@dataclass(frozen=True)
class TuningFold:
    """One time fold: fit on deals first seen before ``cut``, validate on ``cut <= first < end``.

    ``end`` is None for the last fold (validation runs to the end of the rows).
    """

    cut: datetime
    end: datetime | None
    fit_deals: frozenset[str]
    validation_deals: frozenset[str]


@dataclass
class Tuning:
    """The chosen parameters, every candidate's cross-validated scores, and why.

    ``params`` go to ``CloseProbabilityModel.set_params`` (empty: keep the model's own);
    ``table`` has one row per candidate plus the stage-rate reference (``candidate, params,
    calibration, brier, ece, folds, chosen``: the calibration the fits did, their mean Brier
    and ECE over the folds); ``folds`` are the folds scored (none when there was too little
    data).
    """

    params: dict[str, Any]
    table: pl.DataFrame
    reason: str
    folds: list[TuningFold]


def default_candidates(rows: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """The grid, simplest first: a regularised booster and the model's own, each calibrated
    three ways. Parameters are changes to the model's (``{}`` is the model as given).

    The regularised booster's leaves are three times the model's default rule
    (``leaf_scale=3``): a deal's many snapshots are one piece of evidence. A scale, not a
    number of rows, so a refit on more or fewer rows (the final fit, a backtest origin) keeps
    the same regularisation.
    """
    regularised: dict[str, Any] = {
        "max_leaf_nodes": 7,
        "leaf_scale": 3.0,
        "l2_regularization": 5.0,
        "max_iter": 100,
    }
    grid: dict[str, dict[str, Any]] = {}
    for name, booster in (("regularised", regularised), ("defaults", {})):
        grid[f"{name}, uncalibrated"] = {**booster, "calibration": "none"}
        grid[name] = {**booster, "calibration": "sigmoid"} if booster else {}
        grid[f"{name}, isotonic"] = {**booster, "calibration": "isotonic"}
    return grid


def describe_params(params: Mapping[str, Any]) -> str:
    """``params`` as ``name=value, ...`` ("defaults" when empty)."""
    if not params:
        return "defaults"
    return ", ".join(f"{name}={value}" for name, value in params.items())


def time_folds(rows: pl.DataFrame, *, folds: int, min_deals: int) -> list[TuningFold]:
    """The usable expanding-window folds of ``rows`` by first-seen date (module docstring)."""
    first = (
        rows.group_by("deal_id")
        .agg(pl.col("as_of").min().alias("first"), pl.col("label_won").any().alias("won"))
        .sort("first", "deal_id")
    )
    n = first.height
    if n == 0 or folds < 1:
        return []
    shares = [1.0 - VALIDATION_SHARE + k * VALIDATION_SHARE / folds for k in range(folds)]
    cuts = sorted({first["first"][min(int(q * n), n - 1)] for q in shares})
    out = []
    for cut, end in zip(cuts, [*cuts[1:], None], strict=True):
        fit = first.filter(pl.col("first") < cut)
        later = pl.col("first") >= cut
        validation = first.filter(later if end is None else later & (pl.col("first") < end))
        if fit.height < min_deals or validation.height < min_deals:
            continue
        if validation["won"].all() or not validation["won"].any():
            continue
        out.append(
            TuningFold(
                cut=cut,
                end=end,
                fit_deals=frozenset(fit["deal_id"].to_list()),
                validation_deals=frozenset(validation["deal_id"].to_list()),
            )
        )
    return out


def _fold_scores(
    base: CloseProbabilityModel,
    candidates: Mapping[str, Mapping[str, Any]],
    fit: pl.DataFrame,
    validation: pl.DataFrame,
) -> dict[str, tuple[float, float, str]]:
    """Brier, ECE and the calibration done (``calibration_``) of each candidate on one fold.

    A model that calibrated on no later slice (its sigmoid cross-fitted, or left uncalibrated:
    ``calibration_`` is then neither "sigmoid" nor "isotonic") did the same whatever its
    ``calibration`` method: a later candidate differing from it only in that method (other than
    "none", which fits on every row) is the same model, scored once.
    """
    y = validation["label_won"].cast(pl.Int8).to_numpy()
    out: dict[str, tuple[float, float, str]] = {}
    method_free: dict[tuple[tuple[str, str], ...], tuple[float, float, str]] = {}
    for name, params in candidates.items():
        booster = tuple(sorted((k, repr(v)) for k, v in params.items() if k != "calibration"))
        calibrated = params.get("calibration", base.calibration) != "none"
        if calibrated and booster in method_free:
            out[name] = method_free[booster]
            continue
        model = clone(base).set_params(**params).fit(fit, fit["label_won"].to_numpy())
        p = model.predict_proba(validation)[:, 1]
        out[name] = (metrics.brier(y, p), metrics.ece(y, p), model.calibration_)
        if calibrated and model.calibration_ not in ("sigmoid", "isotonic"):
            method_free[booster] = out[name]
    return out


def tune_close_probability(
    rows: pl.DataFrame,
    *,
    candidates: Mapping[str, Mapping[str, Any]] | None = None,
    folds: int = 2,
    min_deals: int = 50,
    model: CloseProbabilityModel | None = None,
) -> Tuning:
    """Choose the close-probability parameters with the lowest time-CV Brier on ``rows``.

    Parameters
    ----------
    rows : DataFrame
        Labelled snapshot rows (``deal_id``, ``as_of``, the features and ``label_won``), as
        ``CloseProbabilityModel.fit`` takes them: only the training window, never test deals.
    candidates : dict of name -> params, optional
        Changes to ``model``'s parameters to score, simplest first (ties go to the earlier);
        :func:`default_candidates` when None.
    folds : int
        Time folds over the last ``VALIDATION_SHARE`` of deals (module docstring).
    min_deals : int
        Deals each side of a fold needs to be scored.
    model : CloseProbabilityModel, optional
        The estimator the candidates change (its other parameters, e.g. ``stage_history``,
        are kept); ``CloseProbabilityModel()`` when None. It is not fitted.

    Returns
    -------
    Tuning
        With no usable fold, the model's own parameters (``params == {}``) and a reason saying
        so.
    """
    base = model if model is not None else CloseProbabilityModel()
    grid = dict(candidates) if candidates is not None else default_candidates(rows)
    used = time_folds(rows, folds=folds, min_deals=min_deals)
    if not used:
        n = rows["deal_id"].n_unique()
        return Tuning(
            params={},
            table=pl.DataFrame(schema=_TABLE_SCHEMA),
            reason=(
                f"defaults: too little data to tune ({n} deals; no time fold has {min_deals} "
                "deals on each side and both outcomes among its validation deals)"
            ),
            folds=[],
        )
    splits = []
    for fold in used:
        parts = time_split(rows, calibrate_from=fold.cut, test_from=fold.end)
        splits.append((parts.fit, parts.calibrate))
    everything = {BASELINE: {"booster": False}, **grid}
    per_fold = [_fold_scores(base, everything, fit, validation) for fit, validation in splits]
    scored = {
        name: (
            float(np.mean([fold[name][0] for fold in per_fold])),
            float(np.mean([fold[name][1] for fold in per_fold])),
        )
        for name in everything
    }
    # rounded so float noise is not a win: an exact tie goes to the earlier (simpler) candidate
    chosen = min(grid, key=lambda name: round(scored[name][0], 9))
    table = pl.DataFrame(
        [
            {
                "candidate": name,
                "params": describe_params(params),
                "calibration": "; ".join(dict.fromkeys(fold[name][2] for fold in per_fold)),
                "brier": scored[name][0],
                "ece": scored[name][1],
                "folds": len(used),
                "chosen": name == chosen,
            }
            for name, params in everything.items()
        ],
        schema=_TABLE_SCHEMA,
    )
    return Tuning(
        params=dict(grid[chosen]),
        table=table,
        reason=_reason(chosen, grid, scored, len(used)),
        folds=used,
    )


def _reason(
    chosen: str,
    grid: Mapping[str, Mapping[str, Any]],
    scored: Mapping[str, tuple[float, float]],
    n_folds: int,
) -> str:
    """One line: the choice, its CV Brier against the defaults' and the stage rates'."""
    brier = scored[chosen][0]
    against = [f"{BASELINE} {scored[BASELINE][0]:.4f}"]
    defaults = next((name for name, params in grid.items() if not params), None)
    if defaults is not None and defaults != chosen:
        against.insert(0, f"defaults {scored[defaults][0]:.4f}")
    folds = f"{n_folds} time fold{'s' if n_folds != 1 else ''}"
    return (
        f"{describe_params(grid[chosen])}: CV Brier {brier:.4f} vs {', '.join(against)} ({folds})"
    )
