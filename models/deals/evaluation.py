"""How good is the close probability? Fit on the past, score a later held-out period.

The held-out period is the deals first seen in the last ``test_months`` months of weekly
snapshots; the model is fitted (and calibrated) only on deals first seen before it. Every
score is put next to (a) historical stage win rates from the same training rows, (b) the
CRM's stage probability (the pipeline config's default), and on simulated data (c) the oracle,
the simulator's true probability of each snapshot.

Without a stage history (``history.history_is_derived``) the stage of a past snapshot is not
known: every closed deal sits in the first open stage until it closes, so "stage win rates"
would be the first stage's rate and the CRM probability the first stage's. The model then
leaves the stage features out, the baseline is the overall win rate of the training rows
(``baseline`` says which), and no CRM score is given.

With ``tune`` the model's booster and calibration are first chosen by time-series CV on the
training deals alone (``models.deals.tuning``); the held-out deals stay unseen until scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from features.contract import DealHistory
from features.snapshots import data_end
from models import metrics
from models.deals.dataset import describe_dropped, labelled_snapshots, time_split, weekly_grid
from models.deals.probability import CloseProbabilityModel, stage_win_rates
from models.deals.tuning import Tuning, describe_params, tune_close_probability

__all__ = ["ProbabilityEvaluation", "evaluate_close_probability", "snapshot_grid"]


def snapshot_grid(history: DealHistory, *, end: datetime | None = None) -> list[datetime]:
    """Weekly as-of dates (Mondays 00:00 UTC) from the first deal up to ``end`` (exclusive)."""
    stop = end or data_end(history)
    first = history.deals.select(pl.col("created_at").min()).collect().item()
    monday = datetime(first.year, first.month, first.day, tzinfo=UTC)
    monday += timedelta(days=(7 - monday.weekday()) % 7)
    return weekly_grid(monday, stop)


@dataclass
class ProbabilityEvaluation:
    """The fitted model, its held-out scores and what it was compared with.

    ``tuning`` is the cross-validated choice of its parameters (None when not tuned).
    """

    model: CloseProbabilityModel
    metrics: dict[str, float | int | str | None]
    reliability: dict[str, pl.DataFrame]
    test: pl.DataFrame = field(repr=False)
    train: pl.DataFrame = field(repr=False)
    tuning: Tuning | None = None


def evaluate_close_probability(
    history: DealHistory,
    *,
    truth: pl.LazyFrame | None = None,
    test_months: int = 9,
    model: CloseProbabilityModel | None = None,
    tune: bool = False,
) -> ProbabilityEvaluation:
    """Fit on deals first seen before the last ``test_months`` months, score those after.

    Returns metrics with at least ``brier, auc, ece, log_loss, baseline_brier`` (stage win
    rates), ``crm_brier`` and, when ``truth`` (``deal_id, as_of, probability``) is given,
    ``oracle_brier`` and ``gap_closed`` = (baseline − model) / (baseline − oracle).
    With ``tune``, ``model``'s parameters are first chosen on the training rows
    (:func:`models.deals.tuning.tune_close_probability`; ``model`` is changed in place) and the
    metrics add ``tuning`` (the reason) and ``tuned_params`` (what was set).
    """
    end = data_end(history)
    snaps = labelled_snapshots(history, snapshot_grid(history, end=end), cutoff=end)
    split = time_split(snaps, calibrate_from=end - timedelta(days=30 * test_months))
    train, test = split.fit, split.calibrate
    derived = history.history_is_derived
    estimator = model or CloseProbabilityModel()
    if derived and estimator.stage_history is None:
        estimator.set_params(stage_history=False)
    tuning = tune_close_probability(train, model=estimator) if tune else None
    if tuning is not None:
        estimator.set_params(**tuning.params)
    estimator.fit(train, train["label_won"].to_numpy())
    y = test["label_won"].cast(pl.Int8).to_numpy()
    scores: dict[str, np.ndarray] = {}
    if test.height:
        scores["model"] = estimator.predict_proba(test)[:, 1]
        overall = float(train["label_won"].cast(pl.Float64).to_numpy().mean())
        rates = {} if derived else stage_win_rates(train)
        scores["stage_rates"] = np.array([rates.get(s, overall) for s in test["stage"]])
        crm = test["stage_probability"].to_numpy()
        if not derived and not np.isnan(crm.astype(float)).any():
            scores["crm"] = crm.astype(float)
        if truth is not None:
            joined = (
                test.select("deal_id", "as_of")
                .with_row_index("_i")
                .join(truth.collect(), on=["deal_id", "as_of"], how="left")
                .sort("_i")["probability"]
                .to_numpy()
            )
            if not np.isnan(joined).any():
                scores["oracle"] = joined
    result: dict[str, float | int | str | None] = {
        "n_train_rows": train.height,
        "n_train_deals": train["deal_id"].n_unique(),
        "n_test_rows": test.height,
        "n_test_deals": test["deal_id"].n_unique(),
        "calibration": estimator.calibration_,
        "fallback": estimator.fallback_,
        "model_weight": estimator.model_weight_,
        "baseline": (
            "overall win rate (no stage history: stage rates would be the first stage's only)"
            if derived
            else "stage win rates"
        ),
        "features_dropped": describe_dropped(estimator.features_dropped_),
    }
    if tuning is not None:
        result |= {"tuning": tuning.reason, "tuned_params": describe_params(tuning.params)}
    if "model" in scores:
        p = scores["model"]
        result |= {
            "brier": metrics.brier(y, p),
            "auc": metrics.auc(y, p),
            "log_loss": metrics.log_loss(y, p),
            "ece": metrics.ece(y, p),
            "baseline_brier": metrics.brier(y, scores["stage_rates"]),
            "baseline_auc": metrics.auc(y, scores["stage_rates"]),
            "baseline_ece": metrics.ece(y, scores["stage_rates"]),
        }
        if "crm" in scores:
            result["crm_brier"] = metrics.brier(y, scores["crm"])
        if "oracle" in scores:
            oracle = metrics.brier(y, scores["oracle"])
            result["oracle_brier"] = oracle
            result["oracle_auc"] = metrics.auc(y, scores["oracle"])
            base = float(result["baseline_brier"])  # type: ignore[arg-type]
            result["gap_closed"] = (
                (base - float(result["brier"])) / (base - oracle)  # type: ignore[arg-type]
                if base > oracle
                else None
            )
    reliability = {name: metrics.reliability_table(y, p) for name, p in scores.items()}
    scored = (
        test.with_columns(*[pl.Series(f"p_{name}", p) for name, p in scores.items()])
        if scores
        else test
    )
    return ProbabilityEvaluation(estimator, result, reliability, scored, train, tuning)
