"""Serving benchmark: the API under load on loopback with wrk, next to a bare FastAPI endpoint.

    .venv/bin/python bench/serving.py --data /tmp/demo             # a data dir with a publication
    .venv/bin/python bench/serving.py                              # builds one in a temp dir first
    .venv/bin/python bench/serving.py --data D --duration 5        # a quicker look

``dealcast serve --data D --port P`` and, as the baseline, ``bench/bare_app.py`` (one
``GET /bare`` returning a constant dict, under uvicorn with the same settings) run in their own
process groups. Each endpoint is checked for a 200 and warmed with a few requests, then loaded
with ``wrk -t2 -c50 -d30s --latency`` carrying a leader key (the bare endpoint gets the same
header): the bare endpoint, ``/v1/forecasts`` and ``/v1/deals/priorities?owner=<the owner with
the most scored deals>&limit=20``. Reported: requests/s, p50 and p99 latency, errors (non-2xx
responses and socket errors), throughput relative to the bare endpoint, and the server's CPU
time per request (from /proc, user + system). Targets: p99 < 50 ms, 0 errors, throughput at
least half of the bare endpoint's. wrk and the servers share the machine's cores, so the
figures are for this machine as it is; the 1-minute load before each run is printed.

Without ``--data`` the script builds a data dir in a temp dir with the CLI (simulate, ingest,
train, publish). The leader key it creates is removed at the end. Exit status 0 whatever the
figures (it is a measurement); 1 when wrk is missing. Results go to stdout and
bench/out/serving.json; bench/README.md records a run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's directory comes first on sys.path, and `import serving` would
# find this file (bench/serving.py) instead of the package: drop that entry.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from pipelines.serve import child_server  # noqa: E402  (after the sys.path fix above)

OUT = ROOT / "bench" / "out"
WRK = "wrk"
P99_TARGET_MS = 50.0
RATIO_TARGET = 0.5
WARMUP_REQUESTS = 20
_TICK = os.sysconf("SC_CLK_TCK")


# -- the data dir and the key ----------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``dealcast ARGS`` in a child process (stdout captured, stderr captured)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"dealcast {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def build_data(work: Path) -> Path:
    """A data dir with a publication of the default simulated company, made with the CLI."""
    src, data = work / "source", work / "data"
    steps = [
        ("simulate", "--out", str(src)),
        ("ingest", str(src), "--data", str(data)),
        ("train", "--data", str(data), "--gate-origins", "1"),
        ("publish", "--data", str(data)),
    ]
    print(f"no --data: building a data dir with a publication in {data}", flush=True)
    for step in steps:
        started = time.perf_counter()
        cli(*step)
        print(f"  dealcast {' '.join(step)}  ({time.perf_counter() - started:.0f} s)", flush=True)
    return data


def add_key(data: Path, role: str) -> tuple[str, str]:
    """(key, key id) of a new key for ``role`` in ``data``'s keys file."""
    proc = cli("keys", "add", "--role", role, "--name", "bench-serving", "--data", str(data))
    key = proc.stdout.strip().splitlines()[-1]
    found = re.search(r"\b(k_[0-9a-f]+)\b", proc.stderr)
    return key, found.group(1) if found else ""


def busiest_owner(data: Path) -> tuple[str, int, int]:
    """(owner_id, their scored deals, all scored deals) of the live publication."""
    import polars as pl

    from serving.publication import current_version, published_root

    version = current_version(data)
    if version is None:
        raise SystemExit(f"nothing published in {data}: run `dealcast publish --data {data}`")
    scores = pl.read_parquet(published_root(data) / version / "scores.parquet")
    counts = scores.group_by("owner_id").len().sort(["len", "owner_id"], descending=[True, False])
    return str(counts["owner_id"][0]), int(counts["len"][0]), scores.height


# -- the servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, key: str, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def server(name: str, cmd: list[str], ready_url: str) -> Any:
    """``cmd`` in its own process group until ``ready_url`` answers 200; killed after."""
    return child_server(cmd, ready_url, OUT / f"serving-{name}.log", cwd=ROOT)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores; /proc/stat minus idle, iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _TICK  # user … steal, less idle, iowait


# -- wrk -------------------------------------------------------------------------------------

_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text: str) -> float:
    """wrk's duration (``812.00us``, ``1.23ms``, ``2.00s``, ``1.00m``) in milliseconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _TO_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 (ms), request count and errors from ``wrk --latency`` output."""

    def number(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            if default is None:
                raise ValueError(f"no {pattern!r} in wrk's output:\n{output}")
            return default
        return match.group(1)

    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = dict(
        zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True)
        if sockets
        else dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    )
    non_2xx = int(number(r"Non-2xx or 3xx responses: (\d+)", "0"))
    return {
        "requests_per_s": float(number(r"^Requests/sec:\s+([0-9.]+)")),
        "p50_ms": to_ms(number(r"^\s+50%\s+(\S+)")),
        "p99_ms": to_ms(number(r"^\s+99%\s+(\S+)")),
        "requests": int(number(r"^\s+(\d+) requests in ")),
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "errors": non_2xx + sum(socket_errors.values()),
    }


def run_wrk(url: str, key: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """wrk against ``url``; its parsed figures, its own CPU time and the server's."""
    cmd = [
        WRK,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {key}",
        url,
    ]
    load = os.getloadavg()[0]
    server_before, busy_before = cpu_seconds(server_pid), machine_busy_seconds()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(server_pid) - server_before
    busy = machine_busy_seconds() - busy_before
    wrk_cpu = usage.ru_utime + usage.ru_stime
    if status != 0:
        raise SystemExit(f"wrk failed (status {status}):\n{output}")
    result = parse_wrk(output)
    result.update(
        load_1m_before=round(load, 2),
        wall_s=round(wall, 1),
        server_cpu_s=round(server_cpu, 2),
        server_cpu_us_per_request=round(1e6 * server_cpu / max(result["requests"], 1), 1),
        wrk_cpu_s=round(wrk_cpu, 2),
        # everything else the machine ran meanwhile (other agents, the idle second server,
        # this script), in cores on average over the run
        other_cores=round(max(busy - server_cpu - wrk_cpu, 0.0) / wall, 2),
        wrk_output=output,
    )
    return result


def warm(url: str, key: str) -> dict[str, Any]:
    """Check ``url`` answers 200 (exit otherwise), then warm it; the first request's time too."""
    started = time.perf_counter()
    status, body = get(url, key)
    first_ms = 1e3 * (time.perf_counter() - started)
    if status != 200:
        raise SystemExit(f"GET {url} answered {status}, not 200: {body[:500]!r}")
    for _ in range(WARMUP_REQUESTS):
        get(url, key)
    started = time.perf_counter()
    get(url, key)
    warm_ms = 1e3 * (time.perf_counter() - started)
    return {"status": status, "body_bytes": len(body), "first_ms": first_ms, "warm_ms": warm_ms}


# -- the report ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    wrk = subprocess.run([WRK, "--version"], capture_output=True, text=True)
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(total_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].strip(),
        **{name: version(name) for name in ("fastapi", "starlette", "uvicorn", "pydantic")},
        # what uvicorn's "auto" loop and http pick: uvloop / httptools when installed
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def verdict(row: dict[str, Any], bare: dict[str, Any]) -> tuple[str, list[str]]:
    missed = []
    if row["p99_ms"] >= P99_TARGET_MS:
        missed.append(f"p99 {row['p99_ms']:.1f} ms ≥ {P99_TARGET_MS:.0f} ms")
    if row["errors"]:
        missed.append(f"{row['errors']} errors")
    if row is not bare and row["ratio"] < RATIO_TARGET:
        missed.append(f"throughput {row['ratio']:.2f} × bare < {RATIO_TARGET}")
    return ("PASS" if not missed else "FAIL"), missed


def report(rows: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    bare = rows[0]
    for row in rows:
        row["ratio"] = row["requests_per_s"] / bare["requests_per_s"]
    table = Table(
        title=(
            f"dealcast API on loopback: wrk -t{args.threads} -c{args.connections} "
            f"-d{args.duration}s --latency"
        )
    )
    table.add_column("endpoint", no_wrap=True)
    for column in ("req/s", "p50 ms", "p99 ms", "errors", "vs bare"):
        table.add_column(column, justify="right")
    table.add_column("server CPU/req", justify="right")
    table.add_column("body", justify="right")
    table.add_column("other CPU", justify="right")
    table.add_column("targets")
    misses: list[str] = []
    for row in rows:
        result, missed = verdict(row, bare)
        row["verdict"], row["missed"] = result, missed
        misses += [f"{row['name']}: {m}" for m in missed]
        shown = result if row is not bare else f"{result} (baseline)"
        table.add_row(
            row["name"],
            f"{row['requests_per_s']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            str(row["errors"]),
            f"{row['ratio']:.2f}",
            f"{row['server_cpu_us_per_request']:,.0f} µs",
            f"{row['body_bytes']:,} B",
            f"{row['other_cores']:.2f} cores",
            f"[green]{shown}[/]" if result == "PASS" else f"[red]{shown}[/]",
        )
    console = Console(width=160)
    console.print(table)
    m = facts["machine"]
    console.print(
        f"machine: {m['cores']} cores, {m['memory_gib']} GiB; wrk ({args.threads} threads) and "
        f"the server share these {m['cores']} cores. Python {m['python']}, fastapi "
        f"{m['fastapi']}, starlette {m['starlette']}, uvicorn {m['uvicorn']} "
        f"(loop {m['loop']}, http {m['http']}), {m['wrk']}."
    )
    console.print(
        f"data: {facts['data']} (publication {facts['version']}, {facts['scored_deals']} scored "
        f"deals; owner {facts['owner']} has {facts['owner_deals']})."
    )
    for row in rows:
        console.print(
            f"  {row['name']}: first request {row['first_ms']:.1f} ms"
            f"{' (memo cold)' if row is not bare else ''}, warm "
            f"{row['warm_ms']:.1f} ms; {row['requests']:,} requests; server CPU "
            f"{row['server_cpu_s']:.1f} s of {row['wall_s']:.0f} s, "
            f"wrk CPU {row['wrk_cpu_s']:.1f} s; 1-minute load before it {row['load_1m_before']:.2f}"
        )
    console.print(
        "  other CPU: what the rest of the machine used during the run, in cores (busy time "
        "from /proc/stat less the server's and wrk's)."
    )
    cores = m["cores"] or 1
    busiest = max(row["other_cores"] for row in rows)
    if busiest > 0.25:
        console.print(
            f"[yellow]WARNING: other work used up to {busiest:.2f} of the {cores} cores during "
            "a run (the server needs one, wrk a little): the figures include contention[/]"
        )
    targets = f"targets: p99 < {P99_TARGET_MS:.0f} ms, 0 errors, throughput ≥ {RATIO_TARGET} × bare"
    if misses:
        console.print(f"[red bold]{targets}: MISSED[/]")
        for miss in misses:
            console.print(f"[red]  ✘ {miss}[/]")
    else:
        console.print(f"[green bold]{targets}: all met ✔[/]")


# -- the driver ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="A data dir with a publication (default: build)")
    parser.add_argument("--duration", type=int, default=30, help="Seconds per endpoint.")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads.")
    parser.add_argument("--limit", type=int, default=20, help="limit= of the priorities query.")
    args = parser.parse_args()

    if shutil.which(WRK) is None:
        print(
            "wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), then run this again.",
            file=sys.stderr,
        )
        return 1

    work = Path(tempfile.mkdtemp(prefix="dealcast-bench-serving-"))
    key_id = ""
    data: Path = args.data
    try:
        if data is None:
            data = build_data(work)
        data = data.resolve()
        owner, owner_deals, scored = busiest_owner(data)
        key, key_id = add_key(data, "leader")
        facts: dict[str, Any] = {
            "data": str(data),
            "version": (data / "published" / "CURRENT").read_text().strip(),
            "owner": owner,
            "owner_deals": owner_deals,
            "scored_deals": scored,
            "machine": machine(),
            "load_at_start": round(os.getloadavg()[0], 2),
        }
        print(
            f"load {facts['load_at_start']:.2f} on {facts['machine']['cores']} cores; leader key "
            f"{key_id} added to {data}; busiest owner {owner} ({owner_deals} of {scored} deals)",
            flush=True,
        )
        api_port, bare_port = free_port(), free_port()
        api = f"http://127.0.0.1:{api_port}"
        bare = f"http://127.0.0.1:{bare_port}"
        serve_cmd = [
            sys.executable, "-m", "pipelines.cli", "serve", "--data", str(data),
            "--port", str(api_port),
        ]  # fmt: skip
        bare_cmd = [sys.executable, str(ROOT / "bench" / "bare_app.py"), str(bare_port)]
        targets = [
            ("GET /bare (bare FastAPI)", f"{bare}/bare", "bare"),
            ("GET /v1/forecasts", f"{api}/v1/forecasts", "api"),
            (
                f"GET /v1/deals/priorities?owner={owner}&limit={args.limit}",
                f"{api}/v1/deals/priorities?owner={owner}&limit={args.limit}",
                "api",
            ),
        ]
        rows: list[dict[str, Any]] = []
        with (
            server("dealcast", serve_cmd, f"{api}/readyz") as api_proc,
            server("bare", bare_cmd, f"{bare}/bare") as bare_proc,
        ):
            pids = {"api": api_proc.pid, "bare": bare_proc.pid}
            checks = {url: warm(url, key) for _, url, _ in targets}
            for name, url, which in targets:
                print(f"wrk {args.duration} s: {name} ...", flush=True)
                result = run_wrk(url, key, args, pids[which])
                rows.append({"name": name, "url": url, **checks[url], **result})
                print(
                    f"  {result['requests_per_s']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                    f"p99 {result['p99_ms']:.2f} ms, {result['errors']} errors",
                    flush=True,
                )
        report(rows, facts, args)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "serving.json").write_text(
            json.dumps({"args": vars(args) | {"data": str(data)}, **facts, "rows": rows}, indent=2)
        )
    finally:
        if key_id and args.data is not None:
            cli("keys", "remove", key_id, "--data", str(data))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
