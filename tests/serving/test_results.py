"""Publications: written atomically, picked up without a restart, never mixed in an answer."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.publication import TABLES, current_version, published_root, write_publication
from serving.results import ResultsHolder, load_publication
from serving.settings import ServeSettings
from tests.serving.conftest import Keys


@pytest.fixture
def copy(published: Path, tmp_path: Path, keys: Keys) -> Path:
    """A private copy of the published company (publications and keys) to write into."""
    data = tmp_path / "data"
    data.mkdir()
    version = current_version(published)
    assert version is not None
    shutil.copytree(published_root(published) / version, published_root(data) / version)
    (published_root(data) / "CURRENT").write_text(version + "\n")
    shutil.copy(ServeSettings(data=published).keys_path, ServeSettings(data=data).keys_path)
    return data


def _marked(data: Path, marker: float) -> dict[str, object]:
    """The live publication's tables, every forecast number set to ``marker``."""
    live = load_publication(data, current_version(data) or "")
    tables = dict(live.tables)
    numbers = ["mean", "p10", "p50", "p90"]
    tables["forecasts"] = live["forecasts"].with_columns(pl.lit(marker).alias(c) for c in numbers)
    manifest = {k: v for k, v in live.manifest.items() if k not in ("version", "published_at")}
    return {"tables": tables, "manifest": {**manifest, "marker": marker}}


def test_a_new_publication_is_served_without_a_restart_and_never_mixed(
    copy: Path, keys: Keys
) -> None:
    app = create_app(ServeSettings(data=copy, reload_interval=0.01))
    seen: list[tuple[str, set[float]]] = []
    stop = threading.Event()
    errors: list[str] = []

    def hammer(client: TestClient) -> None:
        while not stop.is_set():
            response = client.get("/v1/forecasts", headers=keys.headers("leader"))
            if response.status_code != 200:
                errors.append(response.text)
                continue
            body = response.json()
            seen.append((body["version"], {r["p50"] for r in body["forecasts"]}))

    with TestClient(app) as client:
        threads = [threading.Thread(target=hammer, args=(client,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        versions = {}
        for marker in (1.0, 2.0, 3.0, 4.0, 5.0):
            new = _marked(copy, marker)
            version = write_publication(copy, new["tables"], new["manifest"])  # type: ignore[arg-type]
            versions[version] = marker
            deadline = threading.Event()
            for _ in range(500):  # the watcher swaps it in within its interval
                if client.app.state.results.current.version == version:  # type: ignore[attr-defined]
                    break
                deadline.wait(0.01)
            assert client.app.state.results.current.version == version  # type: ignore[attr-defined]
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    answered = {version for version, _ in seen}
    assert answered & set(versions), "the hammering never saw a new publication"
    for version, p50s in seen:
        if version in versions:  # each answer holds its own publication's numbers only
            assert p50s == {versions[version]}, (version, p50s)
    on_disk = [p for p in published_root(copy).iterdir() if p.is_dir()]
    assert len(on_disk) == 3, "older publications are pruned to the last three"


def test_a_crash_mid_write_leaves_the_previous_publication_live(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = current_version(copy)
    new = _marked(copy, 9.0)
    written: list[str] = []
    original = pl.DataFrame.write_parquet

    def dies_on_the_fifth(self: pl.DataFrame, file: object, *args: object, **kw: object) -> None:
        written.append(str(file))
        if len(written) == 5:
            raise OSError("disk full")
        original(self, file, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", dies_on_the_fifth)
    with pytest.raises(OSError, match="disk full"):
        write_publication(copy, new["tables"], new["manifest"])  # type: ignore[arg-type]
    monkeypatch.undo()
    assert current_version(copy) == before
    leftovers = [p.name for p in published_root(copy).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    holder = ResultsHolder(copy)
    holder.refresh()
    assert holder.current is not None and holder.current.version == before


def test_a_publication_needs_every_table(copy: Path) -> None:
    new = _marked(copy, 1.0)
    tables = dict(new["tables"])  # type: ignore[call-overload]
    del tables["scores"]
    with pytest.raises(ValueError, match="missing scores"):
        write_publication(copy, tables, {})
    assert set(TABLES) == set(load_publication(copy, current_version(copy) or "").tables)


def test_a_broken_publication_is_logged_and_the_old_one_kept(copy: Path) -> None:
    holder = ResultsHolder(copy)
    holder.refresh()
    good = holder.current
    broken = published_root(copy) / "29990101T000000000000Z-broken"
    broken.mkdir()
    (published_root(copy) / "CURRENT").write_text(broken.name)
    assert holder.refresh() is False
    assert holder.current is good
    assert holder.last_error and "broken" in holder.last_error


def test_the_refresh_job_publishes_and_the_server_serves_it(published: Path, keys: Keys) -> None:
    """The real refresh: `dealcast publish` in a child process, one at a time."""
    app = create_app(ServeSettings(data=published, reload_interval=0.05))
    with TestClient(app) as client:
        before = client.get("/v1/forecasts", headers=keys.headers("ops")).json()["version"]
        started = client.post("/v1/jobs/refresh", headers=keys.headers("ops"))
        assert started.status_code == 202 and started.json()["status"] in ("queued", "running")
        busy = client.post("/v1/jobs/refresh", headers=keys.headers("ops"))
        assert busy.status_code == 409 and started.json()["id"] in busy.json()["detail"]
        job_id = started.json()["id"]
        app.state.jobs.wait(job_id, timeout=300)
        job = client.get(f"/v1/jobs/{job_id}", headers=keys.headers("leader")).json()
        assert job["status"] == "succeeded", job["log_tail"]
        assert job["publication"] and job["publication"] != before
        assert "published" in job["log_tail"]
        for _ in range(200):
            if app.state.results.current.version == job["publication"]:
                break
            threading.Event().wait(0.05)
        after = client.get("/v1/forecasts", headers=keys.headers("ops")).json()
        assert after["version"] == job["publication"]
