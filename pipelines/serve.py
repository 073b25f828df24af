"""Run the API server (``dealcast serve`` and the end of ``dealcast demo``).

The CLI is the one place in pipelines/ that reaches into serving/ (imported here, lazily from
the commands): the jobs themselves never depend on the API.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from pipelines.console import console

__all__ = ["child_server", "run_server"]


def run_server(data: Path, *, host: str, port: int, dev_mode: bool = False) -> None:
    from serving.app import create_app
    from serving.settings import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(data=data, dev_mode=dev_mode)
    app = create_app(settings)
    console.print(
        f"dealcast API and dashboard on [bold]http://{host}:{port}/[/] "
        f"(OpenAPI at http://{host}:{port}/docs), results from {data / 'published'}"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def child_server(
    cmd: list[str],
    ready_url: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server ``cmd`` in its own process group until ``ready_url`` answers 200; stop the
    whole group on exit (SIGTERM, then SIGKILL after 15 s). For tests and benchmarks that need
    a real ``dealcast serve``; its output goes to ``log``, shown if it fails to start."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd)} did not start; its log:\n{log.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
