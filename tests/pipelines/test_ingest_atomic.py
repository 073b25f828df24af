"""Re-ingesting replaces the store atomically: SIGKILL mid-write leaves the previous version.

A store is written (version A), then ``python -m pipelines.cli ingest BIG --data DIR`` runs
as a subprocess and is killed with SIGKILL while it writes the new version: right after its
staging directory appears, once ``deals.parquet`` is being written, and once
``stage_history.parquet`` is (so ``deals.parquet`` is complete). Each time the store must
still load version A with identical content, and ``current`` must still point at A.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.store import Store
from pipelines.ingest import ingest_sources

ROOT = Path(__file__).resolve().parents[2]
N_DEALS = 400_000
PER_DEAL = 10


def _big_source(folder: Path) -> Path:
    """A canonical Parquet source big enough that writing it takes a few hundred ms."""
    folder.mkdir()
    start = datetime(2023, 1, 1, tzinfo=UTC)
    i = pl.int_range(0, N_DEALS, eager=True)
    deals = pl.DataFrame(
        {
            "deal_id": ("D" + i.cast(pl.String)),
            "created_at": pl.datetime_range(
                start, start.replace(year=2025), interval="1m", eager=True, time_unit="us"
            ).head(N_DEALS),
            "owner_id": ("r" + (i % 997).cast(pl.String)),
            "stage": pl.Series(["Discovery", "Demo", "Proposal"]).gather(i % 3),
            "amount": (i % 1000).cast(pl.Float64) * 10.0,
        }
    )
    deals.write_parquet(folder / "deals.parquet")
    k = pl.int_ranges(0, PER_DEAL)
    base = deals.select("deal_id", "created_at", "owner_id").with_columns(k=k).explode("k")
    base.select(
        "deal_id",
        (pl.col("created_at") + pl.duration(hours=pl.col("k"))).alias("changed_at"),
        pl.lit("Discovery").alias("stage"),
        pl.col("k").cast(pl.Float64).alias("amount"),
    ).write_parquet(folder / "stage_history.parquet")
    base.select(
        (pl.col("deal_id") + "-" + pl.col("k").cast(pl.String)).alias("activity_id"),
        (pl.col("created_at") + pl.duration(minutes=pl.col("k"))).alias("occurred_at"),
        "owner_id",
        pl.lit("call").alias("type"),
        "deal_id",
    ).write_parquet(folder / "activities.parquet")
    return folder


def _version_a(data: Path, folder: Path) -> None:
    folder.mkdir()
    (folder / "deals.csv").write_text(
        "deal_id,created_at,owner_id,stage,amount,closed_at\n"
        "A1,2024-01-05T10:00:00Z,r1,Discovery,100,\n"
        "A2,2024-01-06T10:00:00Z,r2,Closed Won,250,2024-02-01T09:00:00Z\n",
        encoding="utf-8",
    )
    (folder / "stage_history.csv").write_text(
        "deal_id,changed_at,stage\n"
        "A1,2024-01-05T10:00:00Z,Discovery\n"
        "A2,2024-01-06T10:00:00Z,Discovery\n"
        "A2,2024-02-01T09:00:00Z,Closed Won\n",
        encoding="utf-8",
    )
    ingest_sources([folder], store=Store(data))


def _contents(store: Store) -> dict[str, pl.DataFrame]:
    history = store.load()
    return {
        "deals": history.deals.collect(),
        "stage_history": history.stage_history.collect(),
        "activities": history.activities.collect(),
        "manifest": pl.DataFrame([{"version": store.manifest()["version"]}]),
    }


def _kill_when(data: Path, big: Path, ready: str) -> None:
    """Start the CLI ingest, wait until ``ready`` exists in its staging dir, SIGKILL it."""
    versions = data / "store" / "versions"
    stale = set(versions.glob(".staging-*"))  # left by earlier kills: not this writer's
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "ingest", str(big), "--data", str(data)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            staging = [p for p in versions.glob(".staging-*") if p not in stale]
            if staging and (not ready or (staging[0] / ready).exists()):
                break
            if process.poll() is not None:
                pytest.fail(f"the ingest ended (code {process.returncode}) before {ready!r}")
            if time.monotonic() > deadline:
                pytest.fail(f"no staging {ready!r} within 60 s")
            time.sleep(0.001)
        assert process.poll() is None, "the ingest finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_during_reingest_leaves_the_previous_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _version_a(data, tmp_path / "a")
    store = Store(data)
    link_a = os.readlink(store.current_link)
    before = _contents(store)
    big = _big_source(tmp_path / "big")
    for ready in ("", "deals.parquet", "stage_history.parquet"):
        _kill_when(data, big, ready)
        # the killed writer left its staging directory behind: it was mid-write
        assert list((data / "store" / "versions").glob(".staging-*"))
        assert os.readlink(store.current_link) == link_a
        after = _contents(Store(data))
        for name, frame in before.items():
            assert_frame_equal(after[name], frame)
    # the next successful ingest replaces A and clears what the killed ones left
    report = ingest_sources([tmp_path / "a"], store=store)
    assert os.readlink(store.current_link) != link_a
    assert report.version_dir.name == os.path.basename(os.readlink(store.current_link))
    assert not list((data / "store" / "versions").glob(".staging-*"))
