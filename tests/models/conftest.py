"""Shared fixtures for model tests: a real local ``mlflow server`` process.

``mlflow_server`` starts one server per test session (SQLite backend and proxied artifact
directory in a temporary directory) and always stops it, with its whole process group, at the
end. ``mlflow_server_uri`` points ``MLFLOW_TRACKING_URI`` at it for one test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URL, where it keeps runs and artifacts, its start time."""

    url: str
    backend_db: Path
    artifacts_dir: Path
    log_file: Path
    startup_seconds: float


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it spawned (uvicorn workers) via its process group."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` on a free localhost port; stop it when the session ends."""
    root = tmp_path_factory.mktemp("mlflow-server")
    backend_db = root / "db.sqlite"
    artifacts_dir = root / "artifacts"
    log_file = root / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # The job-execution feature spawns huey consumer processes: not needed, slower start.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{backend_db}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts_dir),
    ]
    started = time.monotonic()
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {process.returncode} before answering "
                    f"/health; its log:\n{log_file.read_text(errors='replace')}"
                )
            if time.monotonic() - started > _STARTUP_TIMEOUT_S:
                raise RuntimeError(
                    f"mlflow server did not answer {url}/health within {_STARTUP_TIMEOUT_S:.0f}s;"
                    f" its log:\n{log_file.read_text(errors='replace')}"
                )
            time.sleep(0.2)
        yield MlflowServer(
            url=url,
            backend_db=backend_db,
            artifacts_dir=artifacts_dir,
            log_file=log_file,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        _stop(process)


@pytest.fixture
def mlflow_server_uri(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``MLFLOW_TRACKING_URI`` at the session's server for one test; returns its URL."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow_server.url
