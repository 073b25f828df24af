"""The close-probability model on small simulated companies: time split, small-data paths,
calibration, reasons, and the held-out evaluation against stage rates, CRM and the oracle."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone

from features.contract import DealHistory
from models.deals.dataset import labelled_snapshots, time_split
from models.deals.evaluation import evaluate_close_probability, snapshot_grid
from models.deals.probability import CloseProbabilityModel, stage_win_rates
from models.deals.reasons import REASON_GROUPS, ReasonExplainer
from pipelines.simulate import SimConfig, simulate_company


@pytest.fixture(scope="module")
def company() -> tuple[DealHistory, pl.LazyFrame]:
    sim = simulate_company(SimConfig(n_deals=4000, months=30, seed=3))
    history = DealHistory.from_frames(**sim.tables, pipeline=sim.pipeline)
    return history, sim.truth["truth_probabilities"].lazy()


@pytest.fixture(scope="module")
def evaluation(company: tuple[DealHistory, pl.LazyFrame]):  # noqa: ANN201
    history, truth = company
    return evaluate_close_probability(history, truth=truth, test_months=9)


def test_beats_stage_rates_and_crm_and_is_calibrated(evaluation) -> None:  # noqa: ANN001
    m = evaluation.metrics
    assert m["fallback"] is None and m["n_test_rows"] > 1000
    assert m["brier"] < m["baseline_brier"]
    assert m["brier"] < m["crm_brier"]
    assert m["oracle_brier"] < m["brier"]  # the oracle is the bound
    assert m["auc"] > m["baseline_auc"]
    assert m["ece"] < 0.05


def test_test_deals_never_appear_in_training(evaluation) -> None:  # noqa: ANN001
    train_ids = set(evaluation.train["deal_id"].to_list())
    assert train_ids.isdisjoint(evaluation.test["deal_id"].to_list())
    assert evaluation.train["as_of"].min() < evaluation.test["as_of"].min()


def test_labels_only_from_outcomes_known_at_the_cutoff(
    company: tuple[DealHistory, pl.LazyFrame],
) -> None:
    history, _ = company
    grid = snapshot_grid(history)
    cutoff = grid[len(grid) // 2]
    rows = labelled_snapshots(history, grid[: len(grid) // 2], cutoff=cutoff)
    assert rows["label_closed_at"].max() <= cutoff
    with pytest.raises(ValueError, match="before the cutoff"):
        labelled_snapshots(history, grid, cutoff=cutoff)


def test_small_data_shrinks_then_falls_back(evaluation) -> None:  # noqa: ANN001
    train = evaluation.train
    ids = train["deal_id"].unique().sort().to_list()
    few = train.filter(pl.col("deal_id").is_in(ids[:100]))
    shrunk = CloseProbabilityModel().fit(few, few["label_won"])
    assert shrunk.fallback_ is None and 0.5 < shrunk.model_weight_ < 1.0
    tiny = train.filter(pl.col("deal_id").is_in(ids[:20]))
    fallback = CloseProbabilityModel().fit(tiny, tiny["label_won"])
    assert fallback.fallback_ is not None and "only 20 closed deals" in fallback.fallback_
    rates = stage_win_rates(tiny)
    got = fallback.predict_proba(tiny)[:, 1]
    assert np.allclose(got, [rates[s] for s in tiny["stage"]])


def test_clone_refits_the_same(evaluation) -> None:  # noqa: ANN001
    ids = evaluation.train["deal_id"].unique().sort().to_list()[:600]
    train = evaluation.train.filter(pl.col("deal_id").is_in(ids))
    test = evaluation.test.head(200)
    first = CloseProbabilityModel(max_iter=50).fit(train, train["label_won"])
    again = clone(first).fit(train, train["label_won"])
    assert np.allclose(again.predict_proba(test), first.predict_proba(test))


def test_fit_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="X lacks columns"):
        CloseProbabilityModel().fit(pl.DataFrame({"stage": ["Demo"]}), [True])


def test_reasons_are_model_effects_in_words(evaluation) -> None:  # noqa: ANN001
    explainer = ReasonExplainer(evaluation.model, evaluation.train)
    rows = evaluation.test.head(30)
    reasons = explainer.explain(rows, top=3)
    assert len(reasons) == 30 and all(len(r) == 3 for r in reasons)
    first = reasons[0]
    assert abs(first[0].effect) >= abs(first[1].effect) >= abs(first[2].effect)
    assert all(r.group in REASON_GROUPS for rs in reasons for r in rs)
    # an effect is what the model says when the group is set to a typical same-stage deal:
    # a model that ignores everything but the stage has no reasons worth a point
    assert any(abs(r.effect) > 0.01 for rs in reasons for r in rs)
    assert "chance by" in str(first[0])


def test_time_split_keeps_each_deal_on_one_side(evaluation) -> None:  # noqa: ANN001
    frame = evaluation.train
    middle = frame["as_of"].sort()[frame.height // 2]
    parts = time_split(frame, calibrate_from=middle)
    assert set(parts.fit["deal_id"]).isdisjoint(parts.calibrate["deal_id"])
    assert parts.fit.height + parts.calibrate.height <= frame.height


def test_stage_win_rates_ignore_rows_with_no_known_stage() -> None:
    """A snapshot before a deal's first history row has a null stage: it is no stage of its
    own, and a None key in ``stage_rates_`` broke the model's skops serialisation in MLflow
    (seen on the enterprise company of bench/robustness.py)."""
    from models.deals.probability import stage_win_rates

    frame = pl.DataFrame(
        {"stage": ["a", "a", None, "b"], "label_won": [True, False, True, False]},
        schema={"stage": pl.String, "label_won": pl.Boolean},
    )
    rates = stage_win_rates(frame)
    assert set(rates) == {"a", "b"}
    assert rates["a"] > rates["b"]
