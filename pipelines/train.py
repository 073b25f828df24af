"""The train job: evaluate, fit on everything, backtest the recipe, register, gate.

1. Close probability's booster parameters and calibration are chosen for this company by
   time-series CV inside the training window (``models.deals.tuning``; ``tuning`` in the
   output and the run), then it is evaluated on a held-out later period
   (``models.deals.evaluation``) next to stage win rates, the CRM probability and, on
   simulated data, the oracle.
2. Close probability and timing are refitted on every snapshot known at the end of the data
   (``models.forecast.revenue.fit_deal_models``): these are the models ``dealcast forecast`` uses.
3. The recipe is backtested on the last ``gate_origins`` months next to every applicable
   baseline (all refit at each origin); dealcast's month-0 WAPE is the version's score. From
   the same backtest ``models.forecast.selection.choose`` picks, per horizon, what the
   forecast publishes: the deal-level forecast, a baseline, or their skill-weighted blend,
   whichever had the lowest WAPE there, with the choice replayed origin by origin from earlier
   origins only (``nested_wape``) to show what choosing is worth, and the chosen forecast's
   errors that make its P10/P90. The choice goes on the close-probability version
   (``dealcast.forecast_choice`` tag, JSON), the run (``forecast_choice.json``) and the output
   (``forecast_choice``, ``league``).
4. Both models are logged (signature, input example), registered, and each version gets
   ``@champion`` only if its score beats the sitting champion's, else ``@challenger``. A boosted
   close probability whose held-out Brier is not below the baseline's (stage win rates; the
   overall win rate without a stage history) is never registered, sitting champion or not: the
   baseline itself (``CloseProbabilityModel(booster=False)``) is fitted and registered in its
   place, so ``publish`` always has a champion that is at least as good as stage rates. The
   reason is in the output (``gate``), the run tag ``dealcast.gate_veto`` and the version tag
   ``dealcast.stage_rates_instead``.

Features a model left out (absent, all null, constant, or stage features without a stage
history) are in the output (``features_dropped``, ``timing_features_dropped``), the run's
params (``features.*``) and its ``features.json`` artifact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import polars.selectors as cs
from sklearn.inspection import permutation_importance

from features.snapshots import data_now
from features.store import Store
from models import metrics
from models.deals.dataset import FEATURES, describe_dropped
from models.deals.evaluation import ProbabilityEvaluation, evaluate_close_probability
from models.deals.probability import CloseProbabilityModel
from models.deals.timing import TIMING_INPUTS
from models.forecast.backtest import month_origins, run_backtest
from models.forecast.revenue import fit_deal_models
from models.forecast.selection import choose
from models.tracking import job_run, log_and_register, promote
from pipelines.backtest import default_origins, stage_methods
from pipelines.forecast import CHOICE_TAG, CUTOFF_TAG, PROBABILITY_MODEL, TIMING_MODEL

__all__ = ["PROBABILITY_MODEL", "TIMING_MODEL", "run_train"]

GATE_METRIC = "backtest WAPE, month 0"
STAGE_RATES_TAG = "dealcast.stage_rates_instead"
"""Version tag of a close probability that is the stage rates, registered because the boosted
model lost to them on held-out data (the value says by how much)."""


def stage_rate_veto(scores: Mapping[str, object]) -> str | None:
    """Why the close probability must not be champion: its held-out Brier is not below the
    baseline's (stage win rates, or the overall win rate without a stage history); else None.

    ``scores`` are :func:`models.deals.evaluation.evaluate_close_probability` metrics; without
    a held-out score (no test rows) there is nothing to judge and no veto.
    """
    brier, base = scores.get("brier"), scores.get("baseline_brier")
    if not isinstance(brier, int | float) or not isinstance(base, int | float):
        return None
    if not (math.isfinite(brier) and math.isfinite(base)) or brier < base:
        return None
    name = str(scores.get("baseline") or "stage win rates").split(" (")[0]
    return (
        f"close probability Brier {brier:.4f} on the held-out period is not below {name} {base:.4f}"
    )


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


def run_train(
    data: Path, *, test_months: int = 9, gate_origins: int = 9, months: int = 3, tune: bool = True
) -> dict[str, object]:
    """Evaluate, fit, backtest, log, register and gate both deal models; return the metrics."""
    store = Store(data)
    history = store.load()
    evaluation = evaluate_close_probability(
        history, truth=store.truth("truth_probabilities"), test_months=test_months, tune=tune
    )
    tuned = evaluation.tuning.params if evaluation.tuning is not None else {}
    scores = evaluation.metrics
    now = data_now(history)
    veto = stage_rate_veto(scores)
    # a boosted model that lost to stage rates on held-out data is never champion: the stage
    # rates themselves are fitted and registered in its place, so publish still has a champion
    probability = CloseProbabilityModel(booster=False) if veto else CloseProbabilityModel(**tuned)
    final = fit_deal_models(history, now, months=months, probability=probability)
    first_deal = history.deals.select(pl.col("created_at").min()).collect().item()
    first, last = default_origins(
        now.date(), gate_origins, first_deal=first_deal.date() if first_deal else None
    )
    gate = run_backtest(
        history,
        month_origins(min(first, last), last),
        horizons=range(months),
        methods=stage_methods("auto"),
        probability=probability,  # what is registered: tuned, or the stage rates it lost to
    )
    choice = choose(gate.frame.filter(pl.col("segment") == "total"))
    wape = {
        f"backtest_wape_h{r['horizon']}": r["wape"]
        for r in gate.summary.filter(pl.col("method") == "dealcast").iter_rows(named=True)
        if r["wape"] is not None
    }
    for h, made in choice.horizons.items():
        wape[f"published_wape_h{h}"] = made.wape
        if made.best_baseline_wape is not None:
            wape[f"best_baseline_wape_h{h}"] = made.best_baseline_wape
        if made.nested_wape is not None:
            wape[f"nested_wape_h{h}"] = made.nested_wape
        if made.nested_baseline_wape is not None:
            wape[f"nested_baseline_wape_h{h}"] = made.nested_baseline_wape
    for r in gate.summary.filter(pl.col("method") == "published").iter_rows(named=True):
        if r["coverage"] is not None:  # leave-one-origin-out: each origin's band from the others
            wape[f"published_coverage_h{r['horizon']}"] = r["coverage"]
    gate_score = wape.get("backtest_wape_h0")
    dropped = {  # the boosted model's choice, also when stage rates were registered instead
        "probability": evaluation.model.features_dropped_
        if veto
        else final.probability.features_dropped_,
        "timing": final.timing.features_dropped_,
    }
    params = {
        "features": {
            "probability_used": ",".join(final.probability.features_used_),
            "probability_dropped": describe_dropped(dropped["probability"]),
            "timing_used": ",".join(final.timing.features_used_),
            "timing_dropped": describe_dropped(dropped["timing"]),
            "stage_history": "derived" if history.history_is_derived else "known",
        },
        "test_months": test_months,
        "gate_origins": gate_origins,
        "months": months,
        "cutoff": now.isoformat(),
        "probability": evaluation.model.get_params(),
        "timing": final.timing.get_params(),
    }
    with job_run(data, "train", params=params) as run:
        numeric = {
            k: float(v)
            for k, v in {**scores, **wape, "win_shock": final.win_shock}.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        run.metrics(numeric)
        run.figure("reliability", metrics.reliability_plot(evaluation.reliability))
        for name, table in evaluation.reliability.items():
            run.frame(f"reliability_{name}", table)
        if evaluation.model.estimator_ is not None and evaluation.test.height:
            run.frame("feature_importance", _importances(evaluation))
        run.frame("gate_backtest", gate.frame)
        run.frame("forecast_league", choice.league)
        if evaluation.tuning is not None:
            run.frame("tuning", evaluation.tuning.table)
            run.tag("dealcast.tuning", evaluation.tuning.reason[:5000])
        run.json("forecast_choice", choice.to_json())
        for h, made in choice.horizons.items():
            run.tag(f"dealcast.published_h{h}", made.reason[:5000])
        run.json(
            "features",
            {
                "probability": {
                    "used": list(final.probability.features_used_),
                    "dropped": dropped["probability"],
                },
                "timing": {"used": list(final.timing.features_used_), "dropped": dropped["timing"]},
                "stage_history_derived": history.history_is_derived,
            },
        )
        tags = {CUTOFF_TAG: now.isoformat()}
        # what the forecast publishes with these models, and the league it was chosen from
        chosen = {CHOICE_TAG: json.dumps(choice.to_json())}
        example = evaluation.test.head(5) if evaluation.test.height else evaluation.train.head(5)
        # counts are floats in the signature: a missing count at scoring time must not break it
        example = example.with_columns(cs.integer().cast(pl.Float64))
        versions = {
            PROBABILITY_MODEL: log_and_register(
                run,
                final.probability,
                name=PROBABILITY_MODEL,
                input_example=example.select(FEATURES),
                tags={**tags, **chosen, STAGE_RATES_TAG: veto} if veto else {**tags, **chosen},
            ),
            TIMING_MODEL: log_and_register(
                run,
                final.timing,
                name=TIMING_MODEL,
                # MLflow signatures take naive datetimes; the model reads naive as UTC
                input_example=example.select(TIMING_INPUTS).with_columns(
                    pl.col("as_of").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
                ),
                tags=tags,
            ),
        }
        score = gate_score if gate_score is not None and math.isfinite(gate_score) else 1.0
        aliases = {
            name: promote(name, version, score=score, higher_is_better=False, data_dir=data)
            for name, version in versions.items()
        }

        run.tag("dealcast.gate_metric", GATE_METRIC)
        if veto:
            run.tag("dealcast.gate_veto", veto)
        run_id = run.run_id
    return {
        **scores,
        **wape,
        # the held-out scores of what was registered: the boosted model, or the stage rates
        "champion_brier": scores.get("baseline_brier" if veto else "brier"),
        "champion_ece": scores.get("baseline_ece" if veto else "ece"),
        "gate_metric": GATE_METRIC,
        "forecast_choice": choice.reasons,
        "league": choice.league.to_dicts(),
        "features_dropped": describe_dropped(dropped["probability"]),
        "timing_features_dropped": describe_dropped(dropped["timing"]),
        "gate": (
            f"stage win rates registered in place of the boosted model ({veto}); " if veto else ""
        )
        + f"{GATE_METRIC} {score:.4f}: {aliases[PROBABILITY_MODEL]}",
        "model": PROBABILITY_MODEL,
        "version": versions[PROBABILITY_MODEL],
        "alias": aliases[PROBABILITY_MODEL],
        "timing_version": versions[TIMING_MODEL],
        "timing_alias": aliases[TIMING_MODEL],
        "run_id": run_id,
    }
