"""Close timing: for a deal that will be won, the month it closes in, as seen at ``as_of``.

The target of a snapshot row is the number of calendar months between the month of ``as_of``
and the month of ``label_closed_at``, capped at ``max_months``: with the default 3 the classes
are 0 (closes this month), 1, 2 and 3 ("3 months on or later"). Only rows of deals that were
won (and whose win was known at the training cutoff) are used: timing is conditional on winning.

The model reads ``FEATURES`` (``models.deals.dataset``) plus ``as_of``, from which it derives the
calendar features that decide the month boundary (see :data:`DERIVED_FEATURES`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.validation import check_is_fitted

from features.contract import TS
from models.deals.dataset import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    STAGE_DEPENDENT,
    booster_matrix,
    category_levels,
    complete_features,
    select_features,
    stage_history_known,
)

__all__ = [
    "CloseTimingModel",
    "DERIVED_FEATURES",
    "TIMING_INPUTS",
    "p_slip",
    "timing_target",
    "timing_training_set",
]

TIMING_INPUTS: tuple[str, ...] = (*FEATURES, "as_of")
"""The columns :class:`CloseTimingModel` reads: the deal features and the snapshot time."""

DERIVED_FEATURES: tuple[str, ...] = (
    "days_left_in_month",
    "days_left_in_quarter",
    "month_of_quarter",
    "expected_close_month_offset",
    "days_expected_after_month_end",
)
"""Calendar features the model adds from ``as_of`` and ``days_to_expected_close``.

- ``days_left_in_month``: days from ``as_of`` to the first of the next month (fractional).
- ``days_left_in_quarter``: days from ``as_of`` to the first day of the next quarter.
- ``month_of_quarter``: 1, 2 or 3 (quarter-end months close more deals).
- ``expected_close_month_offset``: calendar months from the ``as_of`` month to the month of the
  expected close date (negative when past due; null when there is no expected close date).
- ``days_expected_after_month_end``: ``days_to_expected_close - days_left_in_month``: how far
  past the end of this month the deal is expected to close (negative: within this month).
"""


_STAGE_DEPENDENT: tuple[str, ...] = (
    *STAGE_DEPENDENT,
    "expected_close_month_offset",
    "days_expected_after_month_end",
)
"""Left out when the stage history is derived (the expected close date is the latest one)."""


def _month_index(col: pl.Expr) -> pl.Expr:
    return col.dt.year().cast(pl.Int64) * 12 + col.dt.month().cast(pl.Int64)


def timing_target(*, max_months: int = 3) -> pl.Expr:
    """The timing class of a snapshot row, as a polars expression named ``timing_class``.

    Parameters
    ----------
    max_months : int
        Cap: classes are ``0 .. max_months``, the last meaning "``max_months`` or later".

    Returns
    -------
    Expr
        ``min(month(label_closed_at) - month(as_of), max_months)`` in calendar months, as Int64.
        Null where ``label_closed_at`` is null.

    Examples
    --------
    >>> frame.with_columns(timing_target(max_months=3))  # doctest: +SKIP
    """
    months = _month_index(pl.col("label_closed_at")) - _month_index(pl.col("as_of"))
    return months.clip(0, max_months).alias("timing_class")


def timing_training_set(
    labelled: pl.DataFrame, *, max_months: int = 3
) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows of won deals and their timing classes, ready for :meth:`CloseTimingModel.fit`.

    Parameters
    ----------
    labelled : DataFrame
        Snapshot rows with known labels, e.g.
        ``models.deals.dataset.labelled_snapshots(...)``: needs
        ``TIMING_INPUTS``, ``label_won`` and ``label_closed_at``.
    max_months : int
        Cap of the timing class (see :func:`timing_target`).

    Returns
    -------
    X : DataFrame
        ``deal_id`` (when present: the calibration hold-out is split by deal) and the
        ``TIMING_INPUTS`` present, of the rows with ``label_won`` true.
    y : ndarray of int64
        Their timing classes.
    """
    missing = [c for c in ("as_of", "label_won", "label_closed_at") if c not in labelled]
    if missing:
        raise ValueError(
            f"timing_training_set: the frame lacks column(s) {', '.join(missing)}: pass rows of "
            "models.deals.dataset.labelled_snapshots(...)"
        )
    won = labelled.filter(pl.col("label_won") & pl.col("label_closed_at").is_not_null())
    y = won.select(timing_target(max_months=max_months)).to_series().to_numpy()
    keep = [c for c in ("deal_id", *TIMING_INPUTS) if c in won.columns]
    return won.select(keep), y.astype(np.int64)


def p_slip(proba: np.ndarray) -> np.ndarray:
    """P(not closing in the ``as_of`` month | won) = 1 - P(class 0), per ``predict_proba`` row."""
    arr = np.asarray(proba, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(
            f"p_slip expects predict_proba output of shape (n, n_classes >= 2), got {arr.shape}"
        )
    return 1.0 - arr[:, 0]


def _temper(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their log-odds divided by ``temperature`` (>1 flattens, <1 sharpens)."""
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-12, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def _as_polars(X: Any) -> pl.DataFrame:
    if isinstance(X, pl.DataFrame):
        return X
    if isinstance(X, pd.DataFrame):
        return pl.from_pandas(X)
    raise TypeError(
        f"CloseTimingModel expects a polars or pandas DataFrame with columns TIMING_INPUTS, "
        f"got {type(X).__name__}"
    )


def _with_derived(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus :data:`DERIVED_FEATURES` (``as_of`` taken as UTC)."""
    as_of = pl.col("as_of")
    if frame.schema["as_of"] == pl.Date:
        as_of = as_of.cast(pl.Datetime("us"))
    dtype = frame.schema["as_of"]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        as_of = as_of.dt.replace_time_zone("UTC")
    as_of = as_of.cast(TS)
    next_month = as_of.dt.truncate("1mo").dt.offset_by("1mo")
    next_quarter = as_of.dt.truncate("1q").dt.offset_by("1q")
    day_us = 86_400_000_000.0
    days_left = (next_month - as_of).dt.total_microseconds().cast(pl.Float64) / day_us
    expected = as_of.dt.date() + pl.duration(days=pl.col("days_to_expected_close"))
    return frame.with_columns(
        days_left.alias("days_left_in_month"),
        ((next_quarter - as_of).dt.total_microseconds().cast(pl.Float64) / day_us).alias(
            "days_left_in_quarter"
        ),
        ((as_of.dt.month() - 1) % 3 + 1).cast(pl.Float64).alias("month_of_quarter"),
        (_month_index(expected) - _month_index(as_of))
        .cast(pl.Float64)
        .alias("expected_close_month_offset"),
        (pl.col("days_to_expected_close").cast(pl.Float64) - days_left).alias(
            "days_expected_after_month_end"
        ),
    )


class CloseTimingModel(ClassifierMixin, BaseEstimator):
    """Distribution over the month a won deal closes in: this month, +1, ..., ``max_months``+.

    A ``HistGradientBoostingClassifier`` with native categorical support for
    ``CATEGORICAL_FEATURES`` (ordinal codes learned in ``fit``; unseen categories become
    missing), on ``NUMERIC_FEATURES`` plus :data:`DERIVED_FEATURES`. Its probabilities are
    tempered and blended with the per-stage empirical distribution of classes. With
    ``calibrate`` (default) the temperature and the blend weight minimise log loss on the latest
    ``calibration_share`` of deals, held out by time: on small data the booster is
    overconfident and this shrinks it. Without ``calibrate`` the weight on the booster is
    ``n / (n + shrink_rows)``. With fewer than ``min_rows`` training rows no booster is fitted at
    all (``fallback_`` is True) and the per-stage distribution is the prediction.

    Features absent from the training rows, entirely null or constant are left out
    (``feature_names_in_model_``/``features_used_``, ``features_dropped_`` with the reason),
    and so are the stage-dependent ones (and the calendar features built from the expected
    close date) when the stage history is not known: then the per-stage distribution is the
    pooled one.

    The per-stage distribution is smoothed: ``(n_stage,c + prior_strength * pooled_c) /
    (n_stage + prior_strength)``, ``pooled_c`` the Laplace-smoothed share of class ``c`` over all
    rows; every class therefore gets some probability even if it never occurs in training.

    Parameters
    ----------
    max_months : int
        Last class; it means "``max_months`` months after the ``as_of`` month or later".
    min_rows : int
        Below this many training rows, fall back to the per-stage distribution.
    shrink_rows : float
        Pseudo-rows of the blend towards the per-stage distribution when ``calibrate`` is off
        (or the hold-out is too small); 0 means booster only.
    calibrate : bool
        Learn temperature and blend weight on a time-ordered hold-out (two booster fits).
    calibration_share : float
        Share of deals, latest first ``as_of``, held out for that (split by ``deal_id`` when X
        has it, else by row).
    prior_strength : float
        Pseudo-rows pulling each stage's distribution towards the pooled one.
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization
        Passed to ``HistGradientBoostingClassifier``.
    random_state : int
        Seed of the booster.
    stage_history : bool or None
        Whether the stage of a past snapshot is known (False for a derived history). None
        decides from the rows (``models.deals.dataset.stage_history_known``).

    Attributes
    ----------
    classes_ : ndarray
        ``0 .. max_months``.
    fallback_ : bool
        True when the per-stage distribution alone is used.
    n_rows_ : int
        Training rows.
    stage_distribution_ : DataFrame
        ``stage, p_0 .. p_<max_months>``: the smoothed per-stage distribution.
    pooled_distribution_ : ndarray
        Smoothed class shares over all rows (used for unseen stages).
    blend_weight_ : float
        Weight on the booster (0 when ``fallback_``).
    temperature_ : float
        Divides the booster's log-probabilities (1: unchanged).
    booster_ : HistGradientBoostingClassifier or None
    categories_ : dict[str, list[str]]
        Category levels of each categorical feature, in code order.
    feature_names_in_model_ : tuple[str, ...]
        Columns fed to the booster, in order.

    Examples
    --------
    >>> X, y = timing_training_set(labelled_snapshots(history, as_ofs, cutoff=c))  # doctest: +SKIP
    >>> model = CloseTimingModel().fit(X, y)  # doctest: +SKIP
    >>> p_slip(model.predict_proba(snapshot_rows))  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        max_months: int = 3,
        min_rows: int = 300,
        shrink_rows: float = 100.0,
        calibrate: bool = True,
        calibration_share: float = 0.25,
        prior_strength: float = 20.0,
        learning_rate: float = 0.1,
        max_iter: int = 100,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        random_state: int = 0,
        stage_history: bool | None = None,
    ) -> None:
        self.stage_history = stage_history
        self.max_months = max_months
        self.min_rows = min_rows
        self.shrink_rows = shrink_rows
        self.calibrate = calibrate
        self.calibration_share = calibration_share
        self.prior_strength = prior_strength
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> CloseTimingModel:
        """Fit on rows of won deals (``TIMING_INPUTS``) and their timing classes.

        Parameters
        ----------
        X : polars or pandas DataFrame
            ``TIMING_INPUTS`` columns (extra columns are ignored).
        y : array-like of int
            Timing classes in ``0 .. max_months`` (see :func:`timing_target`).
        """
        if not isinstance(self.max_months, int | np.integer) or self.max_months < 1:
            raise ValueError(f"max_months must be an integer >= 1, got {self.max_months!r}")
        if self.min_rows < 0 or self.shrink_rows < 0 or self.prior_strength < 0:
            raise ValueError(
                "min_rows, shrink_rows and prior_strength must be >= 0, got "
                f"{self.min_rows}, {self.shrink_rows}, {self.prior_strength}"
            )
        raw_frame = self._check_columns(_as_polars(X))
        absent = tuple(c for c in FEATURES if c not in raw_frame.columns)
        frame = complete_features(raw_frame)
        known = (
            stage_history_known(frame) if self.stage_history is None else bool(self.stage_history)
        )
        self.stage_history_known_ = known
        target = np.asarray(y)
        if target.ndim != 1 or len(target) != frame.height:
            raise ValueError(
                f"y must be 1-D with one class per row of X ({frame.height}), got shape "
                f"{target.shape}"
            )
        if frame.height and (
            not np.issubdtype(target.dtype, np.number)
            or np.any(target != np.round(target))
            or target.min() < 0
            or target.max() > self.max_months
        ):
            bad = sorted(set(target.tolist()) - set(range(self.max_months + 1)))[:5]
            raise ValueError(
                f"y holds values outside the classes 0..{self.max_months}: {bad}; build it "
                f"with timing_target(max_months={self.max_months})"
            )
        target = target.astype(np.int64)
        n_classes = self.max_months + 1
        self.classes_ = np.arange(n_classes)
        self.n_rows_ = frame.height
        self._fit_stage_distribution(frame, target)

        self.booster_: HistGradientBoostingClassifier | None = None
        self.blend_weight_ = 0.0
        self.categories_ = category_levels(frame)
        used, self.features_dropped_ = select_features(
            _with_derived(frame.select(TIMING_INPUTS)),
            (*NUMERIC_FEATURES, *DERIVED_FEATURES, *CATEGORICAL_FEATURES),
            stage_known=known,
            absent=absent,
            stage_dependent=_STAGE_DEPENDENT,
        )
        self.feature_names_in_model_: tuple[str, ...] = used
        self.features_used_ = used
        self.fallback_ = frame.height < self.min_rows or len(np.unique(target)) < 2 or not used
        self.temperature_ = 1.0
        if not self.fallback_:
            matrix = self._matrix(frame)
            if self.calibrate:
                self._fit_calibration(frame, matrix, target)
            else:
                self.blend_weight_ = frame.height / (frame.height + self.shrink_rows)
            self.booster_ = self._new_booster().fit(matrix, target)
        return self

    def _new_booster(self) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            categorical_features=self._categorical_mask(),
            early_stopping=False,
            random_state=self.random_state,
        )

    def _fit_calibration(self, frame: pl.DataFrame, matrix: np.ndarray, target: np.ndarray) -> None:
        """Temperature and blend weight that minimise log loss on the latest deals.

        Deals are ordered by their first ``as_of``; the last ``calibration_share`` of them are held
        out, a booster is fitted on the others, and a grid search picks the temperature applied
        to its log-probabilities and the weight of its blend with the per-stage distribution
        (fitted on the same earlier rows). The final booster is then refitted on every row.
        """
        if not 0.0 < self.calibration_share < 1.0:
            raise ValueError(f"calibration_share must be in (0, 1), got {self.calibration_share}")
        first = frame.select(
            pl.col("as_of").min().over("deal_id") if "deal_id" in frame.columns else pl.col("as_of")
        ).to_series()
        cut = first.quantile(1.0 - self.calibration_share, interpolation="lower")
        late = (first > cut).to_numpy()
        if late.sum() < 20 or (~late).sum() < 20 or len(np.unique(target[~late])) < 2:
            self.blend_weight_ = frame.height / (frame.height + self.shrink_rows)
            return
        early = CloseTimingModel(
            **{
                **self.get_params(),
                "calibrate": False,
                "shrink_rows": 0.0,
                "stage_history": self.stage_history_known_,
            }
        )
        early.fit(frame.filter(pl.Series(~late)), target[~late])
        held = frame.filter(pl.Series(late))
        booster = early.predict_proba(held)
        empirical = early._stage_proba(held)
        onehot = np.eye(len(self.classes_))[target[late]]
        best = (np.inf, 1.0, 1.0)
        for t in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0):
            tempered = _temper(booster, t)
            for w in np.linspace(0.0, 1.0, 21):
                mix = w * tempered + (1.0 - w) * empirical
                loss = -float(np.mean(np.log(np.clip((mix * onehot).sum(axis=1), 1e-12, None))))
                if loss < best[0]:
                    best = (loss, t, float(w))
        _, self.temperature_, self.blend_weight_ = best

    def _fit_stage_distribution(self, frame: pl.DataFrame, target: np.ndarray) -> None:
        n_classes = self.max_months + 1
        counts = np.bincount(target, minlength=n_classes).astype(float)
        self.pooled_distribution_ = (counts + 1.0) / (counts.sum() + n_classes)
        cols = [f"p_{k}" for k in range(n_classes)]
        # without a stage history the stage of a past snapshot is unknown: one pooled group
        stages = frame["stage"].cast(pl.String)
        if not self.stage_history_known_:
            stages = pl.Series("stage", [None] * frame.height, dtype=pl.String)
        per_stage = (
            pl.DataFrame({"stage": stages, "_c": target})
            .group_by("stage")
            .agg([(pl.col("_c") == k).sum().cast(pl.Float64).alias(c) for k, c in enumerate(cols)])
            .with_columns(pl.sum_horizontal(cols).alias("_n"))
        )
        a = float(self.prior_strength)
        self.stage_distribution_ = per_stage.select(
            "stage",
            *[
                ((pl.col(c) + a * float(self.pooled_distribution_[k])) / (pl.col("_n") + a)).alias(
                    c
                )
                for k, c in enumerate(cols)
            ],
        ).sort("stage", nulls_last=True)

    # -- prediction ------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of the classes ``0 .. max_months`` per row (rows sum to 1)."""
        check_is_fitted(self, "classes_")
        frame = self._check_columns(_as_polars(X))
        empirical = self._stage_proba(frame)
        if self.booster_ is None:
            return empirical
        raw = self.booster_.predict_proba(self._matrix(frame))
        full = np.zeros((frame.height, len(self.classes_)))
        full[:, self.booster_.classes_.astype(np.int64)] = raw
        w = self.blend_weight_
        out = w * _temper(full, self.temperature_) + (1.0 - w) * empirical
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The most likely timing class per row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _stage_proba(self, frame: pl.DataFrame) -> np.ndarray:
        cols = [f"p_{k}" for k in range(len(self.classes_))]
        if not getattr(self, "stage_history_known_", True) or "stage" not in frame.columns:
            pooled_rows = np.tile(self.pooled_distribution_, (frame.height, 1))
            if "stage" not in frame.columns or self.stage_distribution_.height == 0:
                return pooled_rows
            frame = frame.select(pl.lit(None, dtype=pl.String).alias("stage"))
        joined = (
            frame.select(pl.col("stage").cast(pl.String))
            .with_row_index("_row")
            .join(self.stage_distribution_, on="stage", how="left", nulls_equal=True)
            .sort("_row")
        )
        pooled = self.pooled_distribution_
        return joined.select(
            [pl.col(c).fill_null(float(pooled[k])) for k, c in enumerate(cols)]
        ).to_numpy()

    # -- helpers ---------------------------------------------------------------------------
    def _check_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        missing = [c for c in ("as_of",) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"CloseTimingModel: X lacks column(s) {', '.join(missing)}: pass snapshot_features "
                "rows selected with TIMING_INPUTS (FEATURES plus as_of)"
            )
        return frame

    def _categorical_mask(self) -> np.ndarray:
        names = self.feature_names_in_model_
        numeric = [n for n in names if n not in CATEGORICAL_FEATURES]
        return np.array([False] * len(numeric) + [True] * (len(names) - len(numeric)), dtype=bool)

    def _matrix(self, frame: pl.DataFrame) -> np.ndarray:
        names = self.feature_names_in_model_
        matrix, _ = booster_matrix(
            _with_derived(complete_features(frame).select(TIMING_INPUTS)),
            numeric=tuple(n for n in names if n not in CATEGORICAL_FEATURES),
            levels=self.categories_,
            categorical=tuple(n for n in names if n in CATEGORICAL_FEATURES),
        )
        return matrix
