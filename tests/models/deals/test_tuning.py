"""Per-company tuning of the close-probability model by time-series CV inside the training window.

The histories are the hand-made exports of ``test_sparse_exports`` (a few hundred deals over 15
months, won deals the larger ones): few deals, so the default booster overfits them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest

from models.deals import evaluation as evaluation_module
from models.deals.dataset import time_split
from models.deals.evaluation import evaluate_close_probability
from models.deals.probability import CloseProbabilityModel
from models.deals.tuning import BASELINE, Tuning, tune_close_probability
from tests.models.deals.test_sparse_exports import export, labelled


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return labelled(export(n=360, derived=False))


@pytest.fixture(scope="module")
def tuning(rows: pl.DataFrame) -> Tuning:
    return tune_close_probability(rows)


def first_seen(rows: pl.DataFrame) -> dict[str, Any]:
    frame = rows.group_by("deal_id").agg(pl.col("as_of").min())
    return dict(zip(frame["deal_id"].to_list(), frame["as_of"].to_list(), strict=True))


def test_folds_split_whole_deals_in_time(rows: pl.DataFrame, tuning: Tuning) -> None:
    assert len(tuning.folds) == 2
    first = first_seen(rows)
    for fold in tuning.folds:
        assert fold.fit_deals and fold.validation_deals
        assert fold.fit_deals.isdisjoint(fold.validation_deals)
        assert max(first[d] for d in fold.fit_deals) < min(first[d] for d in fold.validation_deals)
        assert all(first[d] >= fold.cut for d in fold.validation_deals)
    # expanding window: the second fold fits on the first one's fit and validation deals
    one, two = tuning.folds
    assert two.fit_deals == one.fit_deals | one.validation_deals
    assert one.validation_deals.isdisjoint(two.validation_deals)


def test_models_see_only_their_folds_deals(
    rows: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fit is on one fold's fit deals and every score on that fold's validation deals."""
    fitted: list[frozenset[str]] = []
    scored: list[frozenset[str]] = []
    fit, predict = CloseProbabilityModel.fit, CloseProbabilityModel.predict_proba

    def spy(record: list[frozenset[str]], method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(self: CloseProbabilityModel, X: pl.DataFrame, *args: Any) -> Any:
            record.append(frozenset(X["deal_id"].to_list()))
            return method(self, X, *args)

        return wrapped

    monkeypatch.setattr(CloseProbabilityModel, "fit", spy(fitted, fit))
    monkeypatch.setattr(CloseProbabilityModel, "predict_proba", spy(scored, predict))
    tuned = tune_close_probability(
        rows, candidates={"defaults": {}, "uncalibrated": {"calibration": "none"}}
    )
    folds = {(f.fit_deals, f.validation_deals) for f in tuned.folds}
    assert len(folds) == 2
    assert len(fitted) == len(scored) == 3 * 2  # the stage rates too
    assert set(zip(fitted, scored, strict=True)) == folds


def test_choice_has_lowest_cv_brier_and_beats_overfit_defaults(tuning: Tuning) -> None:
    table = tuning.table
    assert table.columns == ["candidate", "params", "calibration", "brier", "ece", "folds"] + [
        "chosen"
    ]
    baseline = table.filter(pl.col("candidate") == BASELINE).row(0, named=True)
    assert baseline["params"] == "booster=False" and not baseline["chosen"]
    assert 0.0 < baseline["brier"] < 1.0 and 0.0 <= baseline["ece"] <= 1.0
    candidates = table.filter(pl.col("candidate") != BASELINE)
    assert candidates.height == 6 and (table["folds"] == 2).all()
    chosen = table.filter(pl.col("chosen")).row(0, named=True)
    defaults = table.filter(pl.col("candidate") == "defaults").row(0, named=True)
    assert table["chosen"].sum() == 1
    assert chosen["brier"] == candidates["brier"].min()
    # a few hundred deals: the default booster overfits and a regularised one wins
    assert chosen["brier"] < defaults["brier"]
    assert tuning.params["max_leaf_nodes"] == 7
    assert CloseProbabilityModel().set_params(**tuning.params).max_leaf_nodes == 7
    assert tuning.reason.startswith("max_leaf_nodes=7")
    assert f"CV Brier {chosen['brier']:.4f} vs defaults {defaults['brier']:.4f}" in tuning.reason
    assert "(2 time folds)" in tuning.reason


def test_isotonic_reuses_the_sigmoid_fit_only_when_it_cross_fits(
    rows: pl.DataFrame, tuning: Tuning
) -> None:
    """A cross-fitted calibration is a sigmoid whatever the method: the same model, scored once.

    On these rows the first fold's later slice is one-sided (cross-fitted), the second's is not.
    """
    done = tuning.table.filter(pl.col("candidate") == "defaults, isotonic")["calibration"].item()
    kinds = []
    for fold in tuning.folds:
        parts = time_split(rows, calibrate_from=fold.cut, test_from=fold.end)
        fit, validation = parts.fit, parts.calibrate
        y = fit["label_won"].to_numpy()
        sigmoid = CloseProbabilityModel().fit(fit, y)
        isotonic = CloseProbabilityModel(calibration="isotonic").fit(fit, y)
        same = np.array_equal(sigmoid.predict_proba(validation), isotonic.predict_proba(validation))
        cross_fitted = sigmoid.calibration_.startswith("sigmoid, cross-fitted")
        assert same == cross_fitted
        assert (sigmoid.calibration_ if cross_fitted else isotonic.calibration_) in done
        kinds.append(cross_fitted)
    assert kinds == [True, False]


def test_deterministic(rows: pl.DataFrame) -> None:
    grid = {"defaults": {}, "uncalibrated": {"calibration": "none"}}
    first = tune_close_probability(rows, candidates=grid)
    again = tune_close_probability(rows, candidates=grid)
    assert first.table.equals(again.table) and first.params == again.params


def test_too_little_data_keeps_the_defaults() -> None:
    few = labelled(export(n=60, derived=False))
    tuned = tune_close_probability(few)
    assert tuned.params == {} and tuned.folds == [] and tuned.table.height == 0
    assert tuned.reason.startswith("defaults: too little data to tune")
    assert f"{few['deal_id'].n_unique()} deals" in tuned.reason


def test_one_sided_validation_skips_the_fold(rows: pl.DataFrame) -> None:
    """A fold whose validation deals all lost has no Brier to compare candidates on.

    Without the won deals first seen in the last 30%, the last fold validates on lost deals
    only; the first one still has both outcomes.
    """
    cut = sorted(first_seen(rows).values())[int(0.7 * rows["deal_id"].n_unique())]
    won = rows.filter(pl.col("label_won")).group_by("deal_id").agg(pl.col("as_of").min())
    late_won = won.filter(pl.col("as_of") >= cut)["deal_id"].implode()
    tuned = tune_close_probability(
        rows.filter(~pl.col("deal_id").is_in(late_won)), candidates={"defaults": {}}
    )
    assert len(tuned.folds) == 1 and tuned.folds[0].end is not None


def test_evaluation_tunes_on_training_deals_only(monkeypatch: pytest.MonkeyPatch) -> None:
    history = export(n=480, derived=False)
    seen: list[pl.DataFrame] = []

    def spy(rows: pl.DataFrame, **kwargs: Any) -> Tuning:
        seen.append(rows)
        return tune_close_probability(rows, **kwargs)

    monkeypatch.setattr(evaluation_module, "tune_close_probability", spy)
    result = evaluate_close_probability(history, test_months=3, tune=True)
    tuned = result.tuning
    assert tuned is not None and tuned.folds and len(seen) == 1
    train = set(result.train["deal_id"].to_list())
    test = set(result.test["deal_id"].to_list())
    assert test and set(seen[0]["deal_id"].to_list()) == train
    for fold in tuned.folds:
        assert fold.fit_deals | fold.validation_deals <= train
        assert (fold.fit_deals | fold.validation_deals).isdisjoint(test)
    m = result.metrics
    assert m["tuning"] == tuned.reason
    assert m["tuned_params"] == tuned.table.filter(pl.col("chosen"))["params"].item()
    assert result.model.get_params() | tuned.params == result.model.get_params()
    assert m["brier"] is not None and "tuning" not in evaluate_close_probability(history).metrics
