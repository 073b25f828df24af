"""Robustness benchmark: the main path on every export profile and company of the simulator zoo.

    .venv/bin/python bench/robustness.py                       # the recorded matrix, 3 seeds
    .venv/bin/python bench/robustness.py --seeds 1 --only default:rich   # one cell

Each cell is one simulated company written the way one kind of export comes out
(``dealcast simulate --company C --export E --seed S``), then run through the commands a user
runs, each in its own process exactly as from a shell:

    ingest -> train --format json -> backtest --format json -> publish -> anomalies --format json

The rows are the default company in each export profile, and each other company profile in its
rich and its thinnest export. A cell records every step's exit status and wall time, whether
any step printed a traceback, and what part 2 of the real-exports work must improve:
dealcast's backtest WAPE at h0/h1 next to the best *applicable* baseline's, dealcast's P10-P90
coverage, and the close-probability Brier next to stage win rates' on the held-out period.

Results go to stdout (a markdown table, pasted into bench/README.md) and
bench/out/robustness.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DEALCAST = [sys.executable, "-m", "pipelines.cli"]

EXPORTS = (
    "rich",
    "current_state",
    "no_forecast_fields",
    "stale",
    "date_only",
    "missing_dims",
    "lead_funnel",
    "thinnest",
)
COMPANIES = ("small", "enterprise", "smb", "declining", "regime")
LARGE = ("default", "smb", "declining", "regime")
"""Profiles of 5,000+ deals: ``--max-deals`` caps them (small and enterprise keep their size)."""
LAST_ORIGIN = date(2026, 10, 1)  # the simulator's histories end on 2026-10-31
DERIVED = ("blend", "published", "published_nested")
"""Backtest rows that are not baselines (models.forecast.selection.DERIVED)."""
STEPS = ("simulate", "ingest", "train", "backtest", "publish", "anomalies")


@dataclass
class Cell:
    company: str
    export: str
    seed: int
    status: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    traceback: bool = False
    error: str = ""
    wape: dict[str, dict[str, float | None]] = field(default_factory=dict)
    best_baseline: dict[str, str] = field(default_factory=dict)
    coverage: dict[str, float | None] = field(default_factory=dict)
    coverage_n: dict[str, int] = field(default_factory=dict)
    brier_model: float | None = None
    brier_stage: float | None = None
    brier_champion: float | None = None
    ece: float | None = None
    gap_closed: float | None = None

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.status.values()) and not self.traceback


ROWS = [("default", e) for e in EXPORTS] + [(c, e) for c in COMPANIES for e in ("rich", "thinnest")]


def matrix(seeds: list[int]) -> list[Cell]:
    """Every row for the first seed, then every row for the next: a run cut short still has
    each row once."""
    return [Cell(c, e, s) for s in seeds for c, e in ROWS]


def _run(cell: Cell, step: str, args: list[str], env: dict[str, str]) -> str:
    started = time.perf_counter()
    proc = subprocess.run([*DEALCAST, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    cell.seconds[step] = round(time.perf_counter() - started, 1)
    cell.status[step] = proc.returncode
    if "Traceback (most recent call last)" in proc.stderr + proc.stdout:
        cell.traceback = True
    if proc.returncode and not cell.error:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        cell.error = f"{step}: {lines[-1] if lines else 'exit ' + str(proc.returncode)}"[:160]
    return proc.stdout


def _json(text: str) -> Any:
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else None


def _read_train(cell: Cell, out: str) -> None:
    result = _json(out)
    if not isinstance(result, dict):
        return
    cell.brier_model = result.get("brier")
    cell.brier_stage = result.get("baseline_brier")
    cell.ece = result.get("champion_ece", result.get("ece"))
    cell.brier_champion = result.get("champion_brier", cell.brier_model)
    cell.gap_closed = result.get("gap_closed")


def _read_backtest(cell: Cell, out: str) -> None:
    """Per horizon: published, its nested replay, the deal-level forecast, the best baseline."""
    result = _json(out)
    if not isinstance(result, dict):
        return
    rows = [r for r in result.get("summary", []) if r.get("segment", "total") == "total"]
    for h in (0, 1, 2):
        at = {r.get("method"): r for r in rows if r.get("horizon") == h}
        applicable = [
            r
            for m, r in at.items()
            if m not in ("dealcast", "oracle", *DERIVED)
            and r.get("wape") is not None
            and r.get("rank") is not None
        ]
        best = min(applicable, key=lambda r: r["wape"], default=None)
        cell.wape[f"h{h}"] = {
            "published": (at.get("published") or {}).get("wape"),
            "nested": (at.get("published_nested") or {}).get("wape"),
            "dealcast": (at.get("dealcast") or {}).get("wape"),
            "best_baseline": best["wape"] if best else None,
        }
        if best:
            cell.best_baseline[f"h{h}"] = best["method"]
        published = at.get("published") or {}
        cell.coverage[f"h{h}"] = published.get("coverage")
        cell.coverage_n[f"h{h}"] = published.get("n") or 0


def run_cell(
    cell: Cell,
    work: Path,
    *,
    months: int,
    origins: int,
    samples: int,
    max_deals: int,
    threads: dict[str, str],
) -> Cell:
    src, data = work / "export", work / "data"
    env = {**os.environ, "DEALCAST_DATA": str(data), "PYTHONWARNINGS": "ignore", **threads}
    sim = ["simulate", "--out", str(src), "--seed", str(cell.seed)]
    sim += ["--company", cell.company, "--export", cell.export]
    if months:
        sim += ["--months", str(months)]
    if max_deals and cell.company in LARGE:
        sim += ["--deals", str(max_deals)]
    _run(cell, "simulate", sim, env)
    if cell.status["simulate"]:
        return cell
    _run(cell, "ingest", ["ingest", str(src), "--source-format", "canonical"], env)
    if cell.status["ingest"]:
        return cell
    _read_train(cell, _run(cell, "train", ["train", "--format", "json"], env))
    bt = ["backtest", "--format", "json", "--samples", str(samples)]
    if origins:  # from `origins` months before the simulator's export day to the default end
        first = LAST_ORIGIN.year * 12 + LAST_ORIGIN.month - origins
        bt += ["--from", f"{first // 12}-{first % 12 + 1:02d}"]
    _read_backtest(cell, _run(cell, "backtest", bt, env))
    _run(cell, "publish", ["publish", "--samples", str(samples)], env)
    _run(cell, "anomalies", ["anomalies", "--format", "json"], env)
    return cell


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(cells: list[Cell]) -> str:
    head = (
        "| company | export | seed | exit (all 0) | wall s (ingest/train/backtest/publish/"
        "anomalies) | h0 WAPE published / nested / deal model / best baseline | h1 WAPE "
        "published / nested / deal model / best | published P10-P90 coverage h0/h1/h2 | "
        "Brier boosted / registered / stage | ECE registered |"
    )
    lines = [head, "|" + "---|" * 10]
    for c in cells:
        exits = "✔" if c.ok else "✘ " + c.error.replace("|", "/")
        secs = "/".join(f"{c.seconds.get(s, 0):.0f}" for s in STEPS[1:])
        cov = "/".join(
            "—" if c.coverage.get(f"h{h}") is None else f"{c.coverage[f'h{h}']:.0%}"
            for h in range(3)
        )

        def wapes(h: str, c: Cell = c) -> str:
            w = c.wape.get(h, {})
            return (
                f"{_fmt(w.get('published'))} / {_fmt(w.get('nested'))} / "
                f"{_fmt(w.get('dealcast'))} / {_fmt(w.get('best_baseline'))} "
                f"({c.best_baseline.get(h, '—')})"
            )

        lines.append(
            f"| {c.company} | {c.export} | {c.seed} | {exits} | {secs} | {wapes('h0')} | "
            f"{wapes('h1')} | {cov} | {_fmt(c.brier_model)} / {_fmt(c.brier_champion)} / "
            f"{_fmt(c.brier_stage)} | "
            f"{_fmt(c.ece)} |"
        )
    return "\n".join(lines)


def verdicts(cells: list[Cell]) -> str:
    """The part-2 bar, counted: published <= best baseline, pooled coverage, Brier, ECE."""
    lines = []
    for h in ("h0", "h1"):
        pairs = [
            (c.wape[h]["published"], c.wape[h]["best_baseline"], c.wape[h]["nested"])
            for c in cells
            if c.wape.get(h, {}).get("published") is not None
            and c.wape[h].get("best_baseline") is not None
        ]
        beat = sum(p <= b + 1e-12 for p, b, _ in pairs)
        honest = sum(n is not None and n <= b for _, b, n in pairs)
        lines.append(
            f"- {h}: published WAPE <= best applicable baseline in {beat} of {len(pairs)} cells; "
            f"the nested replay (choice from earlier origins only) in {honest} of {len(pairs)}"
        )
    companies = sorted({c.company for c in cells})
    for company in companies:
        mine = [c for c in cells if c.company == company]
        parts = []
        for h in ("h0", "h1", "h2"):
            n = sum(c.coverage_n.get(h, 0) for c in mine if c.coverage.get(h) is not None)
            hit = sum(
                c.coverage[h] * c.coverage_n.get(h, 0)  # type: ignore[operator]
                for c in mine
                if c.coverage.get(h) is not None
            )
            parts.append(f"{h} {hit / n:.0%} of {n}" if n else f"{h} —")
        lines.append(f"- pooled P10-P90 coverage, {company}: " + ", ".join(parts))
    briers = [c for c in cells if c.brier_champion is not None and c.brier_stage is not None]
    lines.append(
        f"- registered close-probability Brier <= stage rates: "
        f"{sum(c.brier_champion <= c.brier_stage for c in briers)} of {len(briers)}; "  # type: ignore[operator]
        f"the boosted model alone: {sum(c.brier_model <= c.brier_stage for c in briers)}"  # type: ignore[operator]
    )
    eces = [c.ece for c in cells if c.ece is not None]
    lines.append(
        f"- ECE <= 0.03: {sum(e <= 0.03 for e in eces)} of {len(eces)} "
        f"(median {sorted(eces)[len(eces) // 2]:.3f})"
        if eces
        else "- ECE: none"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (1, 2, 3, ...)")
    parser.add_argument(
        "--months", type=int, default=0, help="months of history (0: the profile's own)"
    )
    parser.add_argument("--origins", type=int, default=6, help="backtest origins (0: the default)")
    parser.add_argument("--samples", type=int, default=200, help="Monte Carlo samples")
    parser.add_argument("--only", default="", help="comma list of company:export cells")
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once")
    parser.add_argument(
        "--max-deals", type=int, default=1500, help="deals of the large profiles (0: own size)"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the table of bench/out/robustness.json (the cells done so far) and stop",
    )
    args = parser.parse_args()
    if args.report:
        saved = json.loads((OUT / "robustness.json").read_text())
        done = [Cell(**c) for c in saved if "anomalies" in c["status"] or c["error"]]
        print(table(sorted(done, key=lambda c: (ROWS.index((c.company, c.export)), c.seed))))
        print()
        print(verdicts(done))
        return
    cells = matrix(list(range(1, args.seeds + 1)))
    if args.only:
        wanted = {tuple(x.split(":")) for x in args.only.split(",")}
        cells = [c for c in cells if (c.company, c.export) in wanted]
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = 0
    # cells run side by side: one OpenMP thread each, or the boosters fight over the cores
    # (the first recorded run, without this, took 5x longer per cell than a cell alone)
    threads = {"OMP_NUM_THREADS": "1"} if args.jobs > 1 else {}

    def one(cell: Cell) -> Cell:
        with tempfile.TemporaryDirectory(prefix="dealcast-robust-") as tmp:
            return run_cell(
                cell,
                Path(tmp),
                months=args.months,
                origins=args.origins,
                samples=args.samples,
                max_deals=args.max_deals,
                threads=threads,
            )

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for cell in pool.map(one, cells):
            done += 1
            (OUT / "robustness.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
            print(
                f"[{done}/{len(cells)}] {cell.company}/{cell.export}/seed {cell.seed}: "
                f"{'ok' if cell.ok else 'FAILED ' + cell.error} in "
                f"{sum(cell.seconds.values()):.0f} s",
                flush=True,
            )
    (OUT / "robustness.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    print(
        f"\n{len(cells)} cells in {time.perf_counter() - started:.0f} s, "
        f"{sum(c.ok for c in cells)} with every step at exit 0 and no traceback\n"
    )
    print(table(sorted(cells, key=lambda c: (ROWS.index((c.company, c.export)), c.seed))))
    print()
    print(verdicts(cells))


if __name__ == "__main__":
    main()
