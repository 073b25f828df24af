"""Run one benchmark step in a child process and measure it: wall time and peak RSS.

Both bench scripts call themselves with ``--child STEP ARGS...``; the child prints its result as
one JSON line (the last line of its stdout). A step's peak memory is then its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def measure(script: str, step: str, *args: str, cwd: Path) -> tuple[float, float, dict]:
    """Run ``script --child step args``; return (wall seconds, peak RSS in GB, its JSON result)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, script, "--child", step, *args],
        stdout=subprocess.PIPE,
        cwd=cwd,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    peak_gb = usage.ru_maxrss / 1024 / 1024  # ru_maxrss is in KiB on Linux
    return wall, peak_gb, result
