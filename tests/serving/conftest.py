"""Shared fixtures of the API tests: one published small company, keys per role, a live server.

``published`` simulates 2,400 deals over 24 months, ingests them, trains (short gate), keeps a
forecast made three months before the end (so the accuracy history has closed months), and
publishes: the same commands a user runs. ``keys`` holds one key per role. ``client`` is an
in-process TestClient; ``live_server`` a real ``dealcast serve`` process on a free port, for
the contract (schemathesis) and browser tests.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.calendar import add_months, month_of
from features.snapshots import data_now
from features.store import Store
from pipelines.cli import app as cli
from pipelines.serve import child_server
from serving.app import create_app
from serving.auth import add_key
from serving.settings import ServeSettings

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@dataclass(frozen=True)
class Keys:
    leader: str
    ops: str
    rep: str  # rep_owner's key
    rep_owner: str
    other_owner: str  # another rep with open deals

    def headers(self, role: str | None) -> dict[str, str]:
        if role is None:
            return {}
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("published")
    src = data / "src"
    _ok("simulate", "--out", str(src), "--deals", "2400", "--months", "24")
    _ok("ingest", str(src), "--data", str(data))
    _ok("train", "--data", str(data), "--gate-origins", "2")
    end = data_now(Store(data).load())
    past = add_months(month_of(end), -3)
    _ok("forecast", "--data", str(data), "--as-of", past.isoformat(), "--by", "owner_id")
    _ok("publish", "--data", str(data), "--samples", "500")
    return data


@pytest.fixture(scope="session")
def keys(published: Path) -> Keys:
    path = ServeSettings(data=published).keys_path
    scores = pl.read_parquet(next((published / "published").glob("2*/scores.parquet")))
    owners = scores.group_by("owner_id").len().sort("len", descending=True)["owner_id"]
    rep, other = owners[0], owners[1]
    return Keys(
        leader=add_key(path, "leader")[0],
        ops=add_key(path, "ops")[0],
        rep=add_key(path, f"rep:{rep}")[0],
        rep_owner=rep,
        other_owner=other,
    )


@pytest.fixture
def client(published: Path, keys: Keys) -> Iterator[TestClient]:
    app = create_app(ServeSettings(data=published, reload_interval=0.2))
    with TestClient(app) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(
    published: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``dealcast serve`` in its own process group; its URL. MLflow points nowhere reachable:
    serving must not need it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--data", str(published)]
    url = f"http://127.0.0.1:{port}"
    with child_server([*cmd, "--port", str(port)], f"{url}/readyz", log, env=env, timeout=60):
        yield url
