"""The train job: fit and evaluate the close-probability model, one MLflow run, registered.

The version is promoted to ``@champion`` only if it beats the current champion on held-out
Brier (lower is better). Issue 3 asks for the backtest as the gate; until the backtest job
exists the held-out Brier of the same evaluation is the gate, and the registry tag
``gate_metric`` says which one was used.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
from sklearn.inspection import permutation_importance

from features.store import Store
from models import metrics
from models.dataset import FEATURES
from models.evaluation import ProbabilityEvaluation, evaluate_close_probability
from models.tracking import job_run, log_and_register, promote

__all__ = ["PROBABILITY_MODEL", "run_train"]

PROBABILITY_MODEL = "dealcast-close-probability"


def _importances(evaluation: ProbabilityEvaluation, *, rows: int = 1500) -> pl.DataFrame:
    """Permutation importance (drop in Brier) of each feature on the held-out rows."""
    test = evaluation.test.head(rows)
    X = test.select(*FEATURES, "deal_id", "as_of").to_pandas()
    result = permutation_importance(
        evaluation.model,
        X,
        test["label_won"].to_numpy(),
        scoring="neg_brier_score",
        n_repeats=2,
        random_state=0,
        n_jobs=1,
    )
    return (
        pl.DataFrame(
            {
                "feature": list(X.columns),
                "brier_increase": result.importances_mean,
                "std": result.importances_std,
            }
        )
        .filter(pl.col("feature").is_in(FEATURES))
        .sort("brier_increase", descending=True)
    )


def run_train(data: Path, *, test_months: int = 9) -> dict[str, object]:
    """Fit, evaluate, log, register and gate the close-probability model; return the metrics."""
    store = Store(data)
    history = store.load()
    evaluation = evaluate_close_probability(
        history, truth=store.truth("truth_probabilities"), test_months=test_months
    )
    scores = evaluation.metrics
    params = {"test_months": test_months, **evaluation.model.get_params()}
    with job_run(data, "train", params=params) as run:
        numeric = {
            k: float(v)
            for k, v in scores.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        run.metrics(numeric)
        run.figure("reliability", metrics.reliability_plot(evaluation.reliability))
        for name, table in evaluation.reliability.items():
            run.frame(f"reliability_{name}", table)
        if evaluation.model.estimator_ is not None and evaluation.test.height:
            run.frame("feature_importance", _importances(evaluation))
        version = log_and_register(
            run,
            evaluation.model,
            name=PROBABILITY_MODEL,
            input_example=evaluation.test.head(5).select(FEATURES),
        )
        alias = promote(
            PROBABILITY_MODEL,
            version,
            score=float(scores.get("brier") or scores.get("baseline_brier") or 1.0),
            higher_is_better=False,
            data_dir=data,
        )
        run.tag("dealcast.gate_metric", "held-out brier")
        run_id = run.run_id
    return {
        **scores,
        "model": PROBABILITY_MODEL,
        "version": version,
        "alias": alias,
        "run_id": run_id,
    }
