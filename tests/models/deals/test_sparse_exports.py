"""Real CRM exports: missing columns, no stage history, calibration slices (failures 1, 7, 8).

The histories are hand-made with ``DealHistory.from_frames``: a few hundred deals over 15
months, one owner, no activities, no expected close dates, no forecast categories and (when
``derived``) no stage history at all, like a flat CRM export.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from features.contract import DealHistory
from models.deals.dataset import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NO_STAGE_HISTORY,
    labelled_snapshots,
)
from models.deals.evaluation import snapshot_grid
from models.deals.probability import CloseProbabilityModel
from models.deals.timing import CloseTimingModel, timing_training_set

OPEN = ("Qualification", "Discovery", "Demo", "Proposal", "Negotiation")
START = datetime(2025, 1, 6, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)


def export(*, n: int = 360, derived: bool, seed: int = 0) -> DealHistory:
    """``n`` deals created over 15 months; most closed, some still open at ``END``.

    Won deals are the larger ones (so a model has something to learn); no expected close date,
    no forecast category, no activities, all-null product/segment/source/deal type.
    """
    rng = np.random.default_rng(seed)
    deals, stages = [], []
    for i in range(n):
        created = START + timedelta(days=float(rng.uniform(0, 420)))
        amount = float(rng.lognormal(9, 0.6))
        won = rng.random() < (0.6 if amount > 8000 else 0.2)
        closed = created + timedelta(days=float(rng.uniform(10, 120)))
        is_open = closed >= END
        final = rng.integers(1, len(OPEN)) if is_open else None
        stage = OPEN[final] if final is not None else ("Closed Won" if won else "Closed Lost")
        deals.append(
            {
                "deal_id": f"d{i:04d}",
                "created_at": created,
                "owner_id": "o1",
                "stage": stage,
                "amount": amount,
                "closed_at": None if is_open else closed,
                "region": ["EMEA", "AMER"][i % 2],
            }
        )
        # a real stage history: the deal climbs a stage every ~2 weeks until it closes
        reached = len(OPEN) if not is_open else int(final) + 1  # type: ignore[arg-type]
        top = reached if won or is_open else int(rng.integers(1, len(OPEN) + 1))
        for k in range(top):
            at = created + timedelta(days=14 * k)
            if not is_open and at >= closed:
                break
            stages.append(
                {"deal_id": f"d{i:04d}", "changed_at": at, "stage": OPEN[k], "amount": amount}
            )
        if not is_open:
            stages.append(
                {"deal_id": f"d{i:04d}", "changed_at": closed, "stage": stage, "amount": amount}
            )
    frame = pl.DataFrame(deals)
    if derived:
        return DealHistory.from_frames(deals=frame)
    return DealHistory.from_frames(deals=frame, stage_history=pl.DataFrame(stages))


def labelled(history: DealHistory) -> pl.DataFrame:
    return labelled_snapshots(history, snapshot_grid(history, end=END), cutoff=END)


def open_rows(history: DealHistory) -> pl.DataFrame:
    from features.snapshots import snapshot_features

    return snapshot_features(history, [END]).collect()


def test_no_activities_no_close_dates_trains_and_scores() -> None:
    """Failure 1: an all-null feature column crashed the booster ("window shape ...")."""
    history = export(derived=False)
    rows = labelled(history)
    assert rows["days_to_expected_close"].null_count() == rows.height
    model = CloseProbabilityModel(min_closed_deals=20).fit(rows, rows["label_won"])
    assert model.fallback_ is None
    assert model.features_dropped_["days_to_expected_close"] == "all null"
    assert model.features_dropped_["days_since_last_activity"] == "all null"
    assert model.features_dropped_["product"] == "all null"
    assert "amount" in model.features_used_ and "stage" in model.features_used_
    assert not set(model.features_used_) & set(model.features_dropped_)
    scoring = open_rows(history)
    p = model.predict_proba(scoring)[:, 1]
    assert p.shape == (scoring.height,) and np.isfinite(p).all()
    # scoring needs only the features used: absent columns are not asked for
    assert np.allclose(model.predict_proba(scoring.drop("days_to_expected_close"))[:, 1], p)

    X, y = timing_training_set(rows)
    timing = CloseTimingModel(min_rows=20).fit(X, y)
    assert not timing.fallback_
    assert timing.features_dropped_["days_to_expected_close"] == "all null"
    assert "days_to_expected_close" not in timing.features_used_
    q = timing.predict_proba(scoring)
    assert np.allclose(q.sum(axis=1), 1.0)


def test_derived_history_leaves_stage_features_out() -> None:
    """Failure 7: without a stage history every closed deal was 'the first stage' in training."""
    history = export(derived=True)
    assert history.history_is_derived
    rows = labelled(history)
    assert rows["stage"].n_unique() == 1  # what a derived history shows of closed deals
    model = CloseProbabilityModel(min_closed_deals=20).fit(rows, rows["label_won"])
    assert not model.stage_history_known_ and model.stage_rates_ == {}
    for name in ("stage", "stage_order", "days_in_stage", "stage_probability", "stage_speed"):
        assert model.features_dropped_[name] == NO_STAGE_HISTORY
        assert name not in model.features_used_
    assert "amount" in model.features_used_ and "deal_age_days" in model.features_used_
    scoring = open_rows(history)
    assert scoring["stage"].n_unique() > 1  # open deals are in their current stage
    p = model.predict_proba(scoring)[:, 1]
    # the stage does not move a score: the same deal in another stage scores the same
    moved = scoring.with_columns(
        pl.lit("Negotiation").alias("stage"), pl.lit(5).alias("stage_order")
    )
    assert np.allclose(model.predict_proba(moved)[:, 1], p)

    X, y = timing_training_set(rows)
    timing = CloseTimingModel(min_rows=20).fit(X, y)
    assert timing.features_dropped_["stage"] == NO_STAGE_HISTORY
    assert timing.features_dropped_["expected_close_month_offset"] == NO_STAGE_HISTORY
    assert np.allclose(timing.predict_proba(moved), timing.predict_proba(scoring))

    # the explicit setting wins over what the rows show
    real = labelled(export(derived=False))
    forced = CloseProbabilityModel(min_closed_deals=20, stage_history=False).fit(
        real, real["label_won"]
    )
    assert forced.features_dropped_["stage"] == NO_STAGE_HISTORY


def _one_sided_latest(n_deals: int = 240) -> pl.DataFrame:
    """Snapshot rows (a few features) of deals first seen weekly; the latest quarter all lost."""
    rng = np.random.default_rng(1)
    rows = []
    weeks = 40
    for i in range(n_deals):
        first = i * weeks // n_deals
        late = first >= weeks * 3 // 4
        amount = float(rng.lognormal(9, 0.6))
        won = (not late) and rng.random() < (0.7 if amount > 8000 else 0.2)
        for k in range(first, min(weeks, first + 6)):
            rows.append(
                {
                    "deal_id": f"d{i:04d}",
                    "as_of": START + timedelta(weeks=k),
                    "stage": "Demo",
                    "stage_order": 3,
                    "amount": amount,
                    "deal_age_days": float(7 * (k - first)),
                    "label_won": won,
                }
            )
    return pl.DataFrame(rows)


def test_calibrates_when_a_later_slice_has_both_outcomes() -> None:
    """Failure 8: the latest 25% of as-of dates held only fast losses: calibration was skipped."""
    rows = _one_sided_latest()
    # every feature column present (constant), as snapshot_features gives them
    full = rows.with_columns(
        pl.lit("x" if name in CATEGORICAL_FEATURES else 0.0).alias(name)
        for name in FEATURES
        if name not in rows.columns
    )
    calibrated = CloseProbabilityModel(
        min_closed_deals=20, min_calibration_deals=10, max_calibration_share=0.5
    ).fit(full, full["label_won"])
    assert calibrated.calibration_ == "sigmoid"
    model = CloseProbabilityModel(
        min_closed_deals=20, min_calibration_deals=10, max_calibration_share=0.5
    ).fit(rows, rows["label_won"])
    assert model.calibration_ == "sigmoid"
    part = model.calibration_slice_
    assert part["won_deals"] >= 10 and part["lost_deals"] >= 10
    assert part["rows"] <= 0.5 * rows.height
    # absent features are left out, and say so
    assert model.features_dropped_["owner_tenure_days"] == "absent"
    assert "stage" in model.features_dropped_ and "stage" not in model.features_used_
    p = model.predict_proba(rows)[:, 1]
    assert np.isfinite(p).all()


def test_no_calibration_only_when_no_later_slice_has_both_outcomes() -> None:
    rows = _one_sided_latest()
    # every deal first seen in the later half is lost: no held-out slice within half the rows
    # has a win, so the booster stays uncalibrated (and says why)
    half = rows["as_of"].sort()[rows.height // 3]
    lost_late = rows.with_columns(
        pl.when(pl.col("as_of").min().over("deal_id") >= half)
        .then(False)
        .otherwise(pl.col("label_won"))
        .alias("label_won")
    )
    model = CloseProbabilityModel(
        min_closed_deals=20, min_calibration_deals=10, max_calibration_share=0.5
    ).fit(lost_late, lost_late["label_won"])
    # no later slice: the sigmoid is fitted on out-of-fold scores, whole deals held out
    assert model.calibration_.startswith("sigmoid, cross-fitted"), model.calibration_
    assert model.calibration_slice_["from"] is None
    assert model.calibration_slice_["won_deals"] > 0 and model.calibration_slice_["lost_deals"] > 0
    p = model.predict_proba(lost_late)[:, 1]
    assert np.all((p > 0) & (p < 1))
    # and with no deal folds allowed, it stays uncalibrated and says why
    bare = CloseProbabilityModel(
        min_closed_deals=20, min_calibration_deals=10, max_calibration_share=0.5, cross_fit_folds=1
    ).fit(lost_late, lost_late["label_won"])
    assert bare.calibration_.startswith("none")
