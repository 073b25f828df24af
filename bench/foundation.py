"""Foundation benchmark: simulate, ingest, 52 weekly snapshots and monthly KPIs at scale,
and the snapshot step against the way a pandas user would write it.

    .venv/bin/python bench/foundation.py                 # 1,000,000 deals + pandas at 100,000
    .venv/bin/python bench/foundation.py --deals 200000  # a quicker look

Each step runs in its own child process so its wall time and peak memory (max RSS) are its
own. Results go to stdout and bench/out/foundation.json; bench/README.md records a run.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

from childstep import measure  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


# -- steps (each runs in a child process) ---------------------------------------------------


def step_simulate(deals: int, out: Path) -> dict:
    from pipelines.simulate import SimConfig, simulate_company, write_company

    company = simulate_company(SimConfig(n_deals=deals))
    write_company(company, out)
    return {name: frame.height for name, frame in company.tables.items()}


def step_ingest(source: Path, data: Path) -> dict:
    from features.store import Store
    from pipelines.ingest import ingest_sources

    report = ingest_sources([source], store=Store(data), source_format="canonical")
    return {
        "rows_read": sum(t.read for t in report.tables),
        "rows_quarantined": sum(t.quarantined for t in report.tables),
    }


def step_snapshots(data: Path, weeks: int) -> dict:
    from features.snapshots import data_end, snapshot_features, weekly_as_ofs
    from features.store import Store

    history = Store(data).load()
    end = data_end(history)
    frame = snapshot_features(history, weekly_as_ofs(end, weeks)).collect()
    return {"rows": frame.height, "columns": frame.width}


def step_kpis(data: Path) -> dict:
    from features.kpis.table import kpi_table
    from features.store import Store

    table = kpi_table(Store(data).load(), period="month", by=["region"])
    return {"rows": table.height, "columns": table.width}


def step_pandas(data: Path, weeks: int) -> dict:
    from features.snapshots import data_end, weekly_as_ofs
    from features.store import Store

    history = Store(data).load()
    dates = weekly_as_ofs(data_end(history), weeks)
    rows = pandas_snapshots(history, dates)
    return {"rows": rows}


def pandas_snapshots(history, dates) -> int:  # noqa: ANN001 - a baseline, written plainly
    """The snapshot step the way a pandas user would write it: a loop over as-of dates with
    boolean filters, groupby and merge_asof on each date. Same features as the polars plan."""
    import pandas as pd

    deals = history.deals.collect().to_pandas()
    hist = history.stage_history.collect().to_pandas()
    acts = history.activities.collect().to_pandas()
    order = history.pipeline.order()
    kinds = {s.name: s.kind for s in history.pipeline.stages}
    hist["stage_order"] = hist["stage"].map(order)
    hist = hist.sort_values(["deal_id", "changed_at"], kind="stable")
    deals["kind"] = deals["stage"].map(kinds)
    total = 0
    for t in dates:
        t = pd.Timestamp(t)
        open_ = deals[(deals.created_at <= t) & (deals.closed_at.isna() | (deals.closed_at > t))]
        h = hist[hist.changed_at <= t].copy()
        g = h.groupby("deal_id", sort=False)
        h[["amount", "expected_close_date"]] = g[["amount", "expected_close_date"]].ffill()
        h["prev_order"] = g["stage_order"].shift()
        h["prev_close"] = h.groupby("deal_id", sort=False)["expected_close_date"].shift()
        h["regression"] = h.stage_order < h.prev_order
        h["push"] = h.expected_close_date > h.prev_close
        h["pushed_days"] = (h.expected_close_date - h.prev_close).dt.days.where(h.push, 0)
        h["new_stage"] = h.stage != g["stage"].shift()
        h["entered"] = h.changed_at.where(h.new_stage)
        state = h.groupby("deal_id", sort=False).agg(
            stage=("stage", "last"),
            amount=("amount", "last"),
            amount_initial=("amount", "first"),
            expected_close_date=("expected_close_date", "last"),
            entered=("entered", "max"),
            stage_regressions=("regression", "sum"),
            close_date_pushes=("push", "sum"),
            days_pushed_total=("pushed_days", "sum"),
        )
        snap = open_.merge(state, left_on="deal_id", right_index=True, how="left")
        snap["days_in_stage"] = (t - snap.entered).dt.total_seconds() / 86400
        snap["deal_age_days"] = (t - snap.created_at).dt.total_seconds() / 86400
        a = acts[(acts.occurred_at <= t) & acts.deal_id.notna()]
        last = a.groupby("deal_id").occurred_at.max().rename("last_activity")
        snap = snap.merge(last, left_on="deal_id", right_index=True, how="left")
        for days in (7, 30):
            w = a[a.occurred_at > t - timedelta(days=days)]
            counts = w.groupby(["deal_id", "type"]).size().unstack(fill_value=0)
            counts.columns = [f"activity_count__{days}d__{c}" for c in counts.columns]
            counts[f"activity_count__{days}d"] = counts.sum(axis=1)
            snap = snap.merge(counts, left_on="deal_id", right_index=True, how="left")
        closed = deals[
            deals.closed_at.notna()
            & (deals.closed_at <= t)
            & (deals.closed_at > t - timedelta(days=365))
            & deals.kind.isin(["won", "lost"])
        ].assign(
            won=lambda d: d.kind == "won",
            cycle=lambda d: (d.closed_at - d.created_at).dt.total_seconds() / 86400,
        )
        owners = closed.groupby("owner_id").agg(
            owner_win_rate=("won", "mean"), owner_closed=("won", "size")
        )
        owners["owner_median_cycle"] = closed[closed.won].groupby("owner_id").cycle.median()
        snap = snap.merge(owners, left_on="owner_id", right_index=True, how="left")
        total += len(snap)
    return total


STEPS = {
    "simulate": step_simulate,
    "ingest": step_ingest,
    "snapshots": step_snapshots,
    "kpis": step_kpis,
    "pandas": step_pandas,
}


# -- the driver -----------------------------------------------------------------------------


def run_child(step: str, *args: str) -> dict:
    """Run one step in a child process; return its wall time, peak RSS and result."""
    wall, peak_gb, result = measure(__file__, step, *args, cwd=ROOT)
    print(f"  {step:<10} {wall:8.1f} s   peak {peak_gb:5.2f} GB   {result}", flush=True)
    return {"step": step, "seconds": round(wall, 2), "peak_gb": round(peak_gb, 2), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--pandas-deals", type=int, default=100_000)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        fn = STEPS[step]
        typed = [int(a) if a.isdigit() else Path(a) for a in rest]
        started = time.perf_counter()
        result = fn(*typed)
        print(json.dumps({"compute_s": round(time.perf_counter() - started, 2), **result}))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for label, deals in (("big", args.deals), ("pandas-scale", args.pandas_deals)):
        src, data = OUT / f"sim-{deals}", OUT / f"data-{deals}"
        print(f"{deals:,} deals:", flush=True)
        rows = [
            run_child("simulate", str(deals), str(src)),
            run_child("ingest", str(src), str(data)),
            run_child("snapshots", str(data), str(args.weeks)),
        ]
        if label == "big":
            rows.append(run_child("kpis", str(data)))
        else:
            rows.append(run_child("pandas", str(data), str(args.weeks)))
        results[label] = rows
    small = {r["step"]: r for r in results["pandas-scale"]}
    ratio = small["pandas"]["compute_s"] / small["snapshots"]["compute_s"]
    print(
        f"\n{args.weeks} weekly snapshots at {args.pandas_deals:,} deals: polars "
        f"{small['snapshots']['compute_s']:.1f} s vs pandas {small['pandas']['compute_s']:.1f} s "
        f"-> {ratio:.1f}x (each reads the store and builds all {args.weeks} snapshots)"
    )
    results["ratio_pandas_over_polars"] = [{"ratio": round(ratio, 1)}]
    (OUT / "foundation.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
