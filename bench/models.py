"""Deal-model benchmark: training on 52 weekly snapshots and scoring 1,000,000 open deals,
each next to a baseline.

    .venv/bin/python bench/models.py                                  # the recorded run
    .venv/bin/python bench/models.py --deals 20000 --score-deals 50000  # a quicker look

Training: a company of ``--deals`` deals is simulated; its 52 weekly as-of Mondays before the
end of the data are labelled as known at that end (``models.deals.dataset.labelled_snapshots``), and
``CloseProbabilityModel`` (y = ``label_won``) and ``CloseTimingModel(max_months=3)`` (on
``timing_training_set``) are fitted on them. Baseline: a one-hot logistic regression on the
same rows.

Scoring: the feature rows of the deals open at the end of a simulated company of
``--score-company`` deals (default: ``--score-deals``, at most 1,000,000) are built with
``snapshot_features``. The simulator cannot give 1,000,000 deals open at once (a company has
~6 % of its deals open), so those rows are replicated with fresh ``deal_id`` values up to
``--score-deals``; the output says so. The fitted models then score them. Baselines: the
stage-win-rate lookup and the logistic regression.

Each step runs in its own child process so its wall time and peak memory (max RSS) are its
own; ``compute_s`` is the timed call alone (no interpreter start-up, no file reading or
writing). Results go to stdout and bench/out/models.json; bench/README.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from childstep import measure  # bench/ is still first on sys.path here

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's directory comes first on sys.path, and `import models` would
# find this file (bench/models.py) instead of the package: drop that entry.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

OUT = ROOT / "bench" / "out"
TABLES = ("deals", "stage_history", "activities", "reps", "targets")
TRAIN_TARGET_S = 180.0
SCORE_TARGET_S = 10.0


# -- helpers (run in the children) ---------------------------------------------------------


def _load_history(src: Path) -> Any:
    import polars as pl

    from features.contract import DealHistory, PipelineConfig

    return DealHistory.from_frames(
        **{name: pl.scan_parquet(src / f"{name}.parquet") for name in TABLES},
        pipeline=PipelineConfig.from_toml(src / "pipeline.toml"),
    )


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - started, 4)


def _save(obj: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _load(path: Path) -> Any:
    return pickle.loads(path.read_bytes())  # our own files, written by an earlier step


def _logistic_inputs(frame: Any) -> Any:
    """The baseline's input: FEATURES as pandas, categoricals as strings with "missing"."""
    import polars as pl

    from models.deals.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES

    return frame.select(
        *[pl.col(c).cast(pl.Float64) for c in NUMERIC_FEATURES],
        *[pl.col(c).cast(pl.String).fill_null("missing") for c in CATEGORICAL_FEATURES],
    ).to_pandas()


# -- steps (each runs in a child process) ---------------------------------------------------


def step_simulate(deals: int, out: Path) -> dict:
    from pipelines.simulate import SimConfig, simulate_company, write_company

    company, seconds = _timed(simulate_company, SimConfig(n_deals=deals))
    write_company(company, out)
    return {"compute_s": seconds, **{n: company.tables[n].height for n in TABLES[:3]}}


def step_labelled(src: Path, work: Path, weeks: int) -> dict:
    from features.snapshots import data_end
    from models.deals.dataset import labelled_snapshots
    from models.deals.evaluation import snapshot_grid

    history = _load_history(src)
    end = data_end(history)
    as_ofs = snapshot_grid(history, end=end)[-weeks:]
    frame, seconds = _timed(labelled_snapshots, history, as_ofs, cutoff=end)
    work.mkdir(parents=True, exist_ok=True)
    frame.write_ipc(work / "labelled.arrow")
    return {
        "compute_s": seconds,
        "rows": frame.height,
        "columns": frame.width,
        "deals": frame["deal_id"].n_unique(),
        "weeks": len(as_ofs),
        "first_as_of": f"{as_ofs[0]:%Y-%m-%d}",
        "cutoff": f"{end:%Y-%m-%d %H:%M}",
    }


def step_fit_probability(work: Path) -> dict:
    import polars as pl

    from models.deals.probability import CloseProbabilityModel

    frame = pl.read_ipc(work / "labelled.arrow")
    model, seconds = _timed(CloseProbabilityModel().fit, frame, frame["label_won"].to_numpy())
    _save(model, work / "probability.pkl")
    return {"compute_s": seconds, "rows": frame.height, "fallback": model.fallback_}


def step_fit_timing(work: Path) -> dict:
    import polars as pl

    from models.deals.timing import CloseTimingModel, timing_training_set

    frame = pl.read_ipc(work / "labelled.arrow")
    started = time.perf_counter()
    X, y = timing_training_set(frame, max_months=3)
    model = CloseTimingModel(max_months=3).fit(X, y)
    seconds = round(time.perf_counter() - started, 4)
    _save(model, work / "timing.pkl")
    return {"compute_s": seconds, "rows": X.height, "fallback": bool(model.fallback_)}


def step_fit_logistic(work: Path) -> dict:
    import polars as pl
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from models.deals.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES

    frame = pl.read_ipc(work / "labelled.arrow")
    started = time.perf_counter()
    model = make_pipeline(
        ColumnTransformer(
            [
                (
                    "numeric",
                    make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                    list(NUMERIC_FEATURES),
                ),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
            ]
        ),
        LogisticRegression(max_iter=1000),
    ).fit(_logistic_inputs(frame), frame["label_won"].to_numpy())
    seconds = round(time.perf_counter() - started, 4)
    _save(model, work / "logistic.pkl")
    return {"compute_s": seconds, "rows": frame.height, "iterations": int(model[-1].n_iter_[0])}


def step_score_features(src: Path, out: Path, n: int) -> dict:
    import polars as pl

    from features.snapshots import data_end, snapshot_features

    history = _load_history(src)
    as_of = data_end(history)
    # snapshot_features yields only the deals open at as_of: one row each
    base, seconds = _timed(snapshot_features(history, [as_of]).collect)
    started = time.perf_counter()
    copies = -(-n // base.height)
    if copies > 1:
        rows = pl.concat(
            [base.with_columns(pl.col("deal_id") + f"~{k}") for k in range(copies)]
        ).head(n)
        source = f"{base.height:,} open deals replicated x{copies} with fresh deal_ids"
    else:
        rows = base.head(n)
        source = f"{rows.height:,} of {base.height:,} open deals, not replicated"
    replicate_s = round(time.perf_counter() - started, 4)
    rows.write_ipc(out)
    return {
        "compute_s": seconds,
        "open_deals": base.height,
        "rows": rows.height,
        "replicate_s": replicate_s,
        "as_of": f"{as_of:%Y-%m-%d %H:%M}",
        "source": source,
    }


def _score(work: Path, rows: Path, model_file: str) -> dict:
    import polars as pl

    frame = pl.read_ipc(rows)
    model = _load(work / model_file)
    proba, seconds = _timed(model.predict_proba, frame)
    return {"compute_s": seconds, "rows": int(proba.shape[0]), "classes": int(proba.shape[1])}


def step_score_probability(work: Path, rows: Path) -> dict:
    return _score(work, rows, "probability.pkl")


def step_score_timing(work: Path, rows: Path) -> dict:
    return _score(work, rows, "timing.pkl")


def step_score_stage_rates(work: Path, rows: Path) -> dict:
    import polars as pl

    frame = pl.read_ipc(rows)
    model = _load(work / "probability.pkl")  # its stage_rates_ are the training rows' rates
    rates, base = model.stage_rates_, model.base_rate_
    started = time.perf_counter()
    won = (
        frame.select(pl.col("stage").replace_strict(rates, default=base, return_dtype=pl.Float64))
        .to_series()
        .to_numpy()
    )
    seconds = round(time.perf_counter() - started, 4)
    return {"compute_s": seconds, "rows": int(won.shape[0]), "classes": 2}


def step_score_logistic(work: Path, rows: Path) -> dict:
    import polars as pl

    frame = pl.read_ipc(rows)
    model = _load(work / "logistic.pkl")
    started = time.perf_counter()
    proba = model.predict_proba(_logistic_inputs(frame))
    seconds = round(time.perf_counter() - started, 4)
    return {"compute_s": seconds, "rows": int(proba.shape[0]), "classes": int(proba.shape[1])}


STEPS = {
    "simulate": step_simulate,
    "labelled": step_labelled,
    "fit_probability": step_fit_probability,
    "fit_timing": step_fit_timing,
    "fit_logistic": step_fit_logistic,
    "score_features": step_score_features,
    "score_probability": step_score_probability,
    "score_timing": step_score_timing,
    "score_stage_rates": step_score_stage_rates,
    "score_logistic": step_score_logistic,
}


# -- the driver -----------------------------------------------------------------------------


def run_child(label: str, step: str, *args: str) -> dict:
    """Run one step in a child process; return its wall time, peak RSS, load and result."""
    load = os.getloadavg()[0]
    wall, peak_gb, result = measure(__file__, step, *args, cwd=ROOT)
    print(
        f"  {label:<22} {wall:7.1f} s wall  {result['compute_s']:7.2f} s compute  "
        f"peak {peak_gb:5.2f} GB  load {load:4.2f}  {result}",
        flush=True,
    )
    return {
        "step": label,
        "seconds": round(wall, 2),
        "peak_gb": round(peak_gb, 2),
        "load_1m_before": round(load, 2),
        **result,
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


WHAT = {
    "simulate": "simulate the training company (deals)",
    "labelled": "labelled snapshot table (rows x 47 columns)",
    "fit_probability": "fit CloseProbabilityModel",
    "fit_timing": "timing_training_set + fit CloseTimingModel(max_months=3)",
    "fit_logistic": "baseline: fit one-hot LogisticRegression",
    "simulate (scoring)": "simulate the scoring company (deals)",
    "score_features": "features of the open deals at the data end",
    "score_probability": "CloseProbabilityModel.predict_proba",
    "score_timing": "CloseTimingModel.predict_proba",
    "score_stage_rates": "baseline: stage-win-rate lookup",
    "score_logistic": "baseline: LogisticRegression.predict_proba",
}


def _rows(row: dict) -> str:
    if "open_deals" in row:
        return f"{row['open_deals']:,} -> {row['rows']:,}"
    return f"{row.get('rows', row.get('deals', 0)):,}"


def report(steps: dict[str, dict], args: argparse.Namespace) -> dict:
    """Print the table, targets and ratios; return the summary written to models.json."""
    from rich.console import Console
    from rich.table import Table

    def compute(step: str) -> float:
        return float(steps[step]["compute_s"])

    train = ("labelled", "fit_probability", "fit_timing")
    train_wall = sum(steps[s]["seconds"] for s in train)
    train_compute = sum(compute(s) for s in train)
    score_compute = compute("score_probability") + compute("score_timing")
    table = Table(title=f"Deal models: train on {args.deals:,} deals, score {args.score_deals:,}")
    for column in ("step", "what", "rows", "compute", "wall", "peak RSS"):
        table.add_column(column, justify="left" if column in ("step", "what") else "right")
    for label, row in steps.items():
        table.add_row(
            label,
            WHAT.get(label, ""),
            _rows(row),
            f"{row['compute_s']:.3f} s",
            f"{row['seconds']:.1f} s",
            f"{row['peak_gb']:.2f} GB",
        )
    Console(width=140).print(table)
    fit = compute("fit_probability") + compute("fit_timing")
    ratios = {
        "fit_probability_over_logistic": _ratio(
            compute("fit_probability"), compute("fit_logistic")
        ),
        "fit_both_models_over_logistic": _ratio(fit, compute("fit_logistic")),
        "score_probability_over_stage_rates": _ratio(
            compute("score_probability"), compute("score_stage_rates")
        ),
        "score_timing_over_stage_rates": _ratio(
            compute("score_timing"), compute("score_stage_rates")
        ),
        "score_probability_over_logistic": _ratio(
            compute("score_probability"), compute("score_logistic")
        ),
    }
    targets = {
        "train_wall_s": round(train_wall, 1),
        "train_compute_s": round(train_compute, 1),
        "train_target_s": TRAIN_TARGET_S,
        "train_ok": train_wall < TRAIN_TARGET_S,
        "score_models_compute_s": round(score_compute, 2),
        "score_target_s": SCORE_TARGET_S,
        "score_ok": score_compute < SCORE_TARGET_S,
    }
    print(
        f"\ntraining ({steps['labelled']['rows']:,} labelled rows from {args.deals:,} deals): "
        f"{train_compute:.1f} s compute, {train_wall:.1f} s wall "
        f"(target < {TRAIN_TARGET_S:.0f} s: {'ok' if targets['train_ok'] else 'MISSED'})"
    )
    print(
        f"scoring {steps['score_probability']['rows']:,} open deals, probability + timing: "
        f"{score_compute:.2f} s compute (target < {SCORE_TARGET_S:.0f} s: "
        f"{'ok' if targets['score_ok'] else 'MISSED'})\n"
        f"  rows scored: {steps['score_features']['source']}"
    )
    print("ratios of compute time, model / baseline:")
    for name, value in ratios.items():
        print(f"  {name:<36} {'-' if value is None else f'{value:,.1f}x'}")
    busiest = max(row["load_1m_before"] for row in steps.values())
    cores = os.cpu_count() or 1
    if busiest > 1.25 * cores:
        print(
            f"WARNING: the 1-minute load reached {busiest:.1f} on {cores} cores during the run: "
            "other processes shared the machine and the OpenMP fits and predictions slow down "
            "a lot then; rerun on an idle machine (or with OMP_NUM_THREADS=1 to compare)"
        )
    return {"targets": targets, "ratios": ratios, "max_load_1m": busiest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=100_000, help="training company size")
    parser.add_argument("--score-deals", type=int, default=1_000_000, help="open deals scored")
    parser.add_argument(
        "--score-company",
        type=int,
        default=None,
        help="deals of the company whose open deals are scored (default: --score-deals, "
        "at most 1,000,000)",
    )
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        typed = [int(a) if a.isdigit() else Path(a) for a in rest]
        print(json.dumps(STEPS[step](*typed)))
        return

    import polars as pl
    import sklearn

    OUT.mkdir(parents=True, exist_ok=True)
    company = args.score_company or min(args.score_deals, 1_000_000)
    src, work = OUT / f"models-sim-{args.deals}", OUT / f"models-{args.deals}"
    score_src = OUT / f"models-sim-{company}"
    score_rows = OUT / f"models-score-{args.score_deals}.arrow"
    print(
        f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"polars {pl.__version__}, scikit-learn {sklearn.__version__}, "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    steps: dict[str, dict] = {}
    print(f"training on {args.deals:,} deals, {args.weeks} weekly snapshots:", flush=True)
    steps["simulate"] = run_child("simulate", "simulate", str(args.deals), str(src))
    steps["labelled"] = run_child("labelled", "labelled", str(src), str(work), str(args.weeks))
    for step in ("fit_probability", "fit_timing", "fit_logistic"):
        steps[step] = run_child(step, step, str(work))
    print(f"scoring {args.score_deals:,} open deals (company of {company:,} deals):", flush=True)
    if company != args.deals:
        steps["simulate (scoring)"] = run_child(
            "simulate (scoring)", "simulate", str(company), str(score_src)
        )
    steps["score_features"] = run_child(
        "score_features", "score_features", str(score_src), str(score_rows), str(args.score_deals)
    )
    for step in ("score_probability", "score_timing", "score_stage_rates", "score_logistic"):
        steps[step] = run_child(step, step, str(work), str(score_rows))
    summary = report(steps, args)
    results = {
        "config": {
            "deals": args.deals,
            "score_deals": args.score_deals,
            "score_company": company,
            "weeks": args.weeks,
            "cores": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "polars": pl.__version__,
            "scikit_learn": sklearn.__version__,
            "load_1m_after": round(os.getloadavg()[0], 2),
        },
        "steps": list(steps.values()),
        **summary,
    }
    (OUT / "models.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
