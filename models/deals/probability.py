"""Close probability: P(won | the deal's state as of T), calibrated, with its reasons.

:class:`CloseProbabilityModel` is a scikit-learn classifier over snapshot rows
(``features.snapshots.snapshot_features``; the columns of ``models.deals.dataset.FEATURES`` plus
``deal_id`` and ``as_of``). ``fit`` splits by time itself: a later slice of deals calibrates a
gradient-boosted model fitted on the earlier ones, so calibration never sees a deal the booster
was fitted on.

The calibration slice: the deals first seen in the latest ``calibration_share`` of as-of dates,
used when it has ``min_calibration_deals`` won *and* as many lost deals and the earlier part
keeps both outcomes. With ``max_calibration_share`` set, a slice lacking them is widened to
earlier first-seen dates, one date at a time, until it has them, as long as it holds at most
that share of the labelled rows. Otherwise the sigmoid is cross-fitted: fitted on the
out-of-fold scores of ``cross_fit_folds`` folds that hold whole deals out, the booster refitted
on every row (sklearn's ``CalibratedClassifierCV(ensemble=False)``); only when no fold split
leaves both outcomes to train on is the booster left uncalibrated (``calibration_`` says why).
Why the latest slice is often one-sided: a labelled deal first seen late closed fast, and fast
outcomes are mostly losses (slow deals are still open, so unlabelled). That is also why
widening is off by default: on a 2,000-deal simulated company (24 months) the usual slice was
one-sided, and a sigmoid fitted on the widened slice (462 rows, 10 won / 66 lost deals) raised
the held-out Brier from 0.1557 (uncalibrated) to 0.161, worse than stage win rates (0.1602):
the slice's win rate is biased low by that censoring. Cross-fitted there: 0.1564.
``calibration="none"`` holds no slice out: the booster is fitted on every row and left
uncalibrated (one of the choices ``models.deals.tuning`` scores per company).

Features: a feature absent from the training rows, entirely null, or constant is left out
(``features_used_``, ``features_dropped_`` with the reason; see
``models.deals.dataset.select_features``), and so are the stage-dependent features when the
stage history is not known (``stage_history``; a derived history, see
``models.deals.dataset.STAGE_DEPENDENT``): then the stage prior is the overall win rate.
Scoring reads ``features_used_`` only.

Small data: with fewer than ``min_closed_deals`` distinct deals it falls back to smoothed
historical stage win rates (``fallback_`` says so); below ``shrink_deals`` it blends the model
with those rates, weight ``n / (n + shrink_deals)`` on the model (``model_weight_``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GroupKFold
from sklearn.utils.validation import check_is_fitted

from models.deals.dataset import (
    CATEGORICAL_FEATURES,
    DERIVED_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    booster_matrix,
    category_levels,
    complete_features,
    select_features,
    stage_history_known,
    time_split,
    with_derived,
)

__all__ = ["CloseProbabilityModel", "stage_win_rates"]

_PRIOR_STRENGTH = 5.0
"""Pseudo-deals of the overall win rate added to each stage's rate (smoothing)."""


def stage_win_rates(frame: pl.DataFrame, *, prior: float | None = None) -> dict[str, float]:
    """Smoothed win rate of snapshot rows per stage: (won + s·p) / (n + s·1).

    ``frame`` needs ``stage`` and ``label_won``; ``p`` is the overall rate (or ``prior``).
    """
    overall = float(frame["label_won"].cast(pl.Float64).to_numpy().mean()) if frame.height else 0.0
    base = overall if prior is None else prior
    # a row whose stage is unknown (no history row yet) has no stage to be a rate of; a None
    # key would also break the model's skops serialisation in MLflow
    rates = (
        frame.filter(pl.col("stage").is_not_null())
        .group_by("stage")
        .agg(
            (
                (pl.col("label_won").sum() + _PRIOR_STRENGTH * base) / (pl.len() + _PRIOR_STRENGTH)
            ).alias("rate")
        )
    )
    return dict(zip(rates["stage"].to_list(), rates["rate"].to_list(), strict=True))


def _as_polars(X: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    return X if isinstance(X, pl.DataFrame) else pl.from_pandas(X)


class CloseProbabilityModel(ClassifierMixin, BaseEstimator):
    """Gradient boosting on point-in-time deal features, calibrated on a later time slice.

    Parameters
    ----------
    calibration_share : float
        Share of the (sorted) as-of dates, latest first, whose new deals calibrate.
    min_calibration_deals : int
        Won and lost deals each that the calibration slice is widened to reach.
    cross_fit_folds : int
        Deal folds of the cross-fitted sigmoid used when no later slice qualifies.
    max_calibration_share : float or None
        Widen a calibration slice short of ``min_calibration_deals`` up to this share of the
        labelled rows (None: never widen; see the module docstring).
    booster : bool
        False fits the stage win rates alone (the overall win rate without a stage history):
        what ``dealcast train`` registers when the boosted model lost to them on held-out data.
    stage_history : bool or None
        Whether the stage of a past snapshot is known (False for a derived history: stage
        features are left out). None decides from the rows: known when some labelled row is
        past the first open stage (``models.deals.dataset.stage_history_known``).
    calibration : {"sigmoid", "isotonic", "auto", "none"}
        Sigmoid by default: on the default simulated company isotonic calibration on the later
        slice raised the test Brier (0.141 vs 0.137). "auto" is isotonic with >= 2,000
        calibration rows; "none" fits the booster on every row, uncalibrated.
    min_closed_deals, shrink_deals : int
        Small-data thresholds (see the module docstring).
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization : booster
        parameters of ``HistGradientBoostingClassifier``. A deal contributes many correlated
        snapshot rows, so leaves must be large: ``min_samples_leaf=None`` means
        ``clip(rows / 150, 20, 300) × leaf_scale``.
    leaf_scale : float
        Multiplies that rule (the per-company tuning's regularised booster uses 3): a scale
        rather than a number, so the leaf grows with the rows of each refit.
    random_state : int
    """

    def __init__(
        self,
        *,
        calibration_share: float = 0.25,
        calibration: str = "sigmoid",
        min_closed_deals: int = 40,
        shrink_deals: int = 50,
        learning_rate: float = 0.05,
        max_iter: int = 200,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int | None = None,
        leaf_scale: float = 1.0,
        l2_regularization: float = 1.0,
        random_state: int = 0,
        min_calibration_deals: int = 1,
        cross_fit_folds: int = 3,
        max_calibration_share: float | None = None,
        stage_history: bool | None = None,
        booster: bool = True,
    ) -> None:
        self.booster = booster
        self.min_calibration_deals = min_calibration_deals
        self.cross_fit_folds = cross_fit_folds
        self.max_calibration_share = max_calibration_share
        self.stage_history = stage_history
        self.calibration_share = calibration_share
        self.calibration = calibration
        self.min_closed_deals = min_closed_deals
        self.shrink_deals = shrink_deals
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.leaf_scale = leaf_scale
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    # -- fitting ----------------------------------------------------------------------------
    def fit(
        self, X: pl.DataFrame | pd.DataFrame, y: Sequence[bool] | np.ndarray
    ) -> CloseProbabilityModel:
        """Fit on snapshot rows ``X`` (FEATURES + ``deal_id`` + ``as_of``) labelled ``y``."""
        frame = _as_polars(X)
        missing = [c for c in ("deal_id", "as_of") if c not in frame.columns]
        if missing:
            raise ValueError(
                f"X lacks columns {missing}: pass rows of features.snapshots.snapshot_features"
            )
        labels = np.asarray(y, dtype=bool)
        if labels.shape[0] != frame.height:
            raise ValueError(f"y has {labels.shape[0]} labels for {frame.height} rows of X")
        if not 0.0 < self.calibration_share < 1.0:
            raise ValueError(f"calibration_share must be in (0, 1), not {self.calibration_share}")
        absent = tuple(c for c in FEATURES if c not in frame.columns)
        frame = complete_features(frame).with_columns(pl.Series("label_won", labels))
        self.classes_ = np.array([False, True])
        self.n_deals_ = frame["deal_id"].n_unique()
        known = (
            stage_history_known(frame) if self.stage_history is None else bool(self.stage_history)
        )
        self.stage_history_known_ = known
        self.base_rate_ = float(labels.mean()) if labels.size else 0.0
        # without a stage history every past snapshot is in the first stage: no stage rates
        self.stage_rates_ = stage_win_rates(frame) if known else {}
        self.categories_ = category_levels(frame)
        self.fallback_: str | None = None
        self.estimator_: object | None = None
        self.calibration_ = "none"
        self.features_used_: tuple[str, ...] = ()
        self.features_dropped_: dict[str, str] = {}
        if self.n_deals_ < self.min_closed_deals or labels.all() or not labels.any():
            self.fallback_ = (
                f"stage win rates: only {self.n_deals_} closed deals "
                f"(a model needs at least {self.min_closed_deals} and both outcomes)"
            )
            self.model_weight_ = 0.0
            return self
        if not self.booster:
            self.fallback_ = "stage win rates: the boosted model did not beat them (booster=False)"
            self.model_weight_ = 0.0
            return self
        self.model_weight_ = self.n_deals_ / (self.n_deals_ + self.shrink_deals)
        cal_from = None if self.calibration == "none" else self._calibration_from(frame)
        fit_part, cal_part = frame, frame.clear()
        if cal_from is not None:
            parts = time_split(frame, calibrate_from=cal_from)
            fit_part, cal_part = parts.fit, parts.calibrate
        self.features_used_, self.features_dropped_ = select_features(
            with_derived(fit_part),
            (*NUMERIC_FEATURES, *DERIVED_FEATURES, *CATEGORICAL_FEATURES),
            stage_known=known,
            absent=absent,
        )
        if not self.features_used_:
            self.fallback_ = "stage win rates: no usable feature"
            self.model_weight_ = 0.0
            return self
        booster = HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=(
                self.min_samples_leaf
                if self.min_samples_leaf is not None
                else int(np.clip(fit_part.height / 150, 20, 300) * self.leaf_scale)
            ),
            l2_regularization=self.l2_regularization,
            categorical_features=self._design(fit_part.head(0))[1],
            # No early stopping: its random validation rows share deals with the training
            # rows (many snapshots per deal), so it never stops; regularise by leaf size.
            early_stopping=False,
            random_state=self.random_state,
        ).fit(self._design(fit_part)[0], fit_part["label_won"].to_numpy())
        self.booster_ = booster
        if self.calibration == "none":
            self.estimator_ = booster
            return self
        if cal_part.height == 0:
            return self._cross_fitted(booster, fit_part)
        method = self.calibration
        if method == "auto":
            method = "isotonic" if cal_part.height >= 2000 else "sigmoid"
        self.calibration_ = method
        self.calibration_slice_ = {
            "from": cal_from.isoformat() if cal_from is not None else None,
            "rows": cal_part.height,
            "won_deals": cal_part.filter(pl.col("label_won"))["deal_id"].n_unique(),
            "lost_deals": cal_part.filter(~pl.col("label_won"))["deal_id"].n_unique(),
        }
        self.estimator_ = CalibratedClassifierCV(FrozenEstimator(booster), method=method).fit(
            self._design(cal_part)[0], cal_part["label_won"].to_numpy()
        )
        return self

    def _cross_fitted(
        self, booster: HistGradientBoostingClassifier, frame: pl.DataFrame
    ) -> CloseProbabilityModel:
        """Calibrate on out-of-fold scores when no later slice has both outcomes.

        The folds hold whole deals out (``GroupKFold`` on ``deal_id``: a deal's snapshots are
        correlated), sklearn's ``CalibratedClassifierCV(ensemble=False)`` fits one sigmoid on
        every row's out-of-fold score and refits the booster on all rows. The calibration
        rows are the training population itself, not a recent slice biased towards fast
        losses, so this is the fallback, not the rule: a later slice, when there is one, also
        checks the model on data after it.
        """
        deals = frame["deal_id"].to_numpy()
        won = frame["label_won"].to_numpy()
        folds = min(self.cross_fit_folds, int(frame["deal_id"].n_unique()))
        splits = (
            list(GroupKFold(n_splits=folds).split(deals, won, groups=deals)) if folds >= 2 else []
        )
        if not splits or any(won[train].all() or not won[train].any() for train, _ in splits):
            self.calibration_ = "none (too few deals of each outcome to hold any out)"
            self.estimator_ = booster
            return self
        self.calibration_ = f"sigmoid, cross-fitted ({len(splits)} deal folds)"
        self.calibration_slice_ = {
            "from": None,
            "rows": frame.height,
            "won_deals": frame.filter(pl.col("label_won"))["deal_id"].n_unique(),
            "lost_deals": frame.filter(~pl.col("label_won"))["deal_id"].n_unique(),
        }
        self.estimator_ = CalibratedClassifierCV(
            clone(booster), method="sigmoid", cv=splits, ensemble=False
        ).fit(self._design(frame)[0], won)
        return self

    def _calibration_from(self, frame: pl.DataFrame) -> Any:
        """The first-seen date from which deals calibrate (the module docstring's rule), or None.

        ``frame`` holds ``deal_id, as_of, label_won``; a deal's rows all share its label.
        """
        dates = frame["as_of"].unique().sort()
        start = dates[int(len(dates) * (1.0 - self.calibration_share))]
        per_date = (
            frame.group_by("deal_id")
            .agg(
                pl.col("as_of").min().alias("first"),
                pl.col("label_won").any().alias("won"),
                pl.len().alias("rows"),
            )
            .group_by("first")
            .agg(
                pl.col("won").sum().alias("won"),
                (~pl.col("won")).sum().alias("lost"),
                pl.col("rows").sum().alias("rows"),
            )
            .sort("first", descending=True)
            .with_columns(pl.col("won", "lost", "rows").cum_sum())
        )
        total_won = int(frame.filter(pl.col("label_won"))["deal_id"].n_unique())
        total_lost = int(frame.filter(~pl.col("label_won"))["deal_id"].n_unique())
        widest = self.max_calibration_share
        limit = max(widest or 0.0, self.calibration_share) * frame.height
        need = self.min_calibration_deals
        rows = per_date.to_dicts()
        later = [r for r in rows if r["first"] >= start]
        usual = later[-1] if later else {"won": 0, "lost": 0, "rows": 0}
        candidates = [(start, usual)] + [(r["first"], r) for r in rows if r["first"] < start]
        for first, r in candidates:
            if first < start and (widest is None or r["rows"] > limit):
                break  # not widened, or the booster keeps most rows
            if total_won - r["won"] < 1 or total_lost - r["lost"] < 1:
                break  # the earlier part must keep both outcomes
            if r["won"] >= need and r["lost"] >= need:
                return first
        return None

    # -- scoring ----------------------------------------------------------------------------
    def _design(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The booster's input (numeric and derived columns, categorical level codes) and mask."""
        used = getattr(self, "features_used_", None)
        if used is None:  # fitted before features were selected: it read them all
            used = (*NUMERIC_FEATURES, *DERIVED_FEATURES, *CATEGORICAL_FEATURES)
        return booster_matrix(
            with_derived(frame),
            numeric=tuple(c for c in used if c not in CATEGORICAL_FEATURES),
            levels=self.categories_,
            categorical=tuple(c for c in used if c in CATEGORICAL_FEATURES),
        )

    def _stage_prior(self, frame: pl.DataFrame) -> np.ndarray:
        if "stage" not in frame.columns or not self.stage_rates_:
            return np.full(frame.height, self.base_rate_, dtype=float)
        return np.array(
            [self.stage_rates_.get(s, self.base_rate_) for s in frame["stage"].to_list()],
            dtype=float,
        )

    def predict_proba(self, X: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """``[P(lost), P(won)]`` per row."""
        check_is_fitted(self, "stage_rates_")
        frame = _as_polars(X)
        prior = self._stage_prior(frame)
        if self.estimator_ is None:
            won = prior
        else:
            model = self.estimator_.predict_proba(self._design(frame)[0])[:, 1]  # type: ignore[attr-defined]
            won = self.model_weight_ * model + (1.0 - self.model_weight_) * prior
        won = np.clip(won, 0.0, 1.0)
        return np.column_stack([1.0 - won, won])

    def predict(self, X: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        return self.predict_proba(X)[:, 1] >= 0.5
