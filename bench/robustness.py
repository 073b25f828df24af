"""Robustness benchmark: the main path on every export profile and company of the simulator zoo.

    .venv/bin/python bench/robustness.py                       # the recorded matrix, 3 seeds
    .venv/bin/python bench/robustness.py --seeds 1 --quick     # one seed, fewer origins

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
    brier_model: float | None = None
    brier_stage: float | None = None
    ece: float | None = None
    gap_closed: float | None = None

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.status.values()) and not self.traceback


def matrix(seeds: list[int]) -> list[Cell]:
    rows = [("default", e) for e in EXPORTS]
    rows += [(c, e) for c in COMPANIES for e in ("rich", "thinnest")]
    return [Cell(c, e, s) for c, e in rows for s in seeds]


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
    cell.ece = result.get("ece")
    cell.gap_closed = result.get("gap_closed")


def _read_backtest(cell: Cell, out: str) -> None:
    result = _json(out)
    if not isinstance(result, dict):
        return
    rows = [r for r in result.get("summary", []) if r.get("segment", "total") == "total"]
    for h in (0, 1, 2):
        at = [r for r in rows if r.get("horizon") == h]
        ours = next((r for r in at if r.get("method") == "dealcast"), None)
        applicable = [
            r
            for r in at
            if r.get("method") not in ("dealcast", "oracle")
            and r.get("wape") is not None
            and r.get("applicable", True)
        ]
        best = min(applicable, key=lambda r: r["wape"], default=None)
        cell.wape[f"h{h}"] = {
            "dealcast": ours.get("wape") if ours else None,
            "best_baseline": best["wape"] if best else None,
        }
        if best:
            cell.best_baseline[f"h{h}"] = best["method"]
        cell.coverage[f"h{h}"] = ours.get("coverage") if ours else None


def run_cell(
    cell: Cell, work: Path, *, months: int, origins: int, samples: int, max_deals: int
) -> Cell:
    src, data = work / "export", work / "data"
    env = {**os.environ, "DEALCAST_DATA": str(data), "PYTHONWARNINGS": "ignore"}
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
        "| company | export | seed | exit (all 0) | traceback | wall s (ingest/train/backtest/"
        "publish/anomalies) | h0 WAPE dealcast / best baseline | h1 WAPE dealcast / best | "
        "P10-P90 coverage h0/h1/h2 | Brier model / stage |"
    )
    lines = [head, "|" + "---|" * 10]
    for c in cells:
        exits = "✔" if c.ok else "✘ " + c.error.replace("|", "/")
        secs = "/".join(f"{c.seconds.get(s, 0):.0f}" for s in STEPS[1:])
        h0, h1 = c.wape.get("h0", {}), c.wape.get("h1", {})
        cov = "/".join(
            "—" if c.coverage.get(f"h{h}") is None else f"{c.coverage[f'h{h}']:.0%}"
            for h in range(3)
        )
        lines.append(
            f"| {c.company} | {c.export} | {c.seed} | {exits} | {'yes' if c.traceback else 'no'}"
            f" | {secs} | {_fmt(h0.get('dealcast'))} / {_fmt(h0.get('best_baseline'))}"
            f" ({c.best_baseline.get('h0', '—')}) | {_fmt(h1.get('dealcast'))} / "
            f"{_fmt(h1.get('best_baseline'))} | {cov} | {_fmt(c.brier_model)} / "
            f"{_fmt(c.brier_stage)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (1, 2, 3, ...)")
    parser.add_argument(
        "--months", type=int, default=0, help="months of history (0: the profile's own)"
    )
    parser.add_argument("--origins", type=int, default=6, help="backtest origins (0: the default)")
    parser.add_argument("--samples", type=int, default=300, help="Monte Carlo samples")
    parser.add_argument("--only", default="", help="comma list of company:export cells")
    parser.add_argument("--jobs", type=int, default=2, help="cells run at once")
    parser.add_argument(
        "--max-deals", type=int, default=3000, help="deals of the large profiles (0: own size)"
    )
    args = parser.parse_args()
    cells = matrix(list(range(1, args.seeds + 1)))
    if args.only:
        wanted = {tuple(x.split(":")) for x in args.only.split(",")}
        cells = [c for c in cells if (c.company, c.export) in wanted]
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = 0

    def one(cell: Cell) -> Cell:
        with tempfile.TemporaryDirectory(prefix="dealcast-robust-") as tmp:
            return run_cell(
                cell,
                Path(tmp),
                months=args.months,
                origins=args.origins,
                samples=args.samples,
                max_deals=args.max_deals,
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
    print(table(cells))


if __name__ == "__main__":
    main()
