"""Concurrent writers and readers of the store, and a full disk.

- writers are serialised by a lock: concurrent ``dealcast ingest`` all succeed (the later ones
  wait and say so), never a traceback, and the store ends equal to one of the inputs;
- pruning never deletes a version a reader still reads, nor another live writer's staging;
- a write that hits ENOSPC leaves no debris and one clear error; the next write works.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import features.store as store_module
from features.contract import DEFAULT_PIPELINE
from features.store import Store, StoreWriteError
from tests.features.test_store import _deals

ROOT = Path(__file__).resolve().parents[2]
DEALS = "deal_id,created_at,owner_id,stage,amount\n"


def _source(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rows = "".join(f"D{n}-{i},2024-01-05,r{i % 3},Discovery,{i}\n" for i in range(n))
    (folder / "deals.csv").write_text(DEALS + rows)
    return folder


def test_concurrent_ingests_all_succeed_and_the_store_is_one_of_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sizes = list(range(3, 11))  # 8 concurrent writers, each a different number of deals
    sources = [_source(tmp_path / f"src{n}", n) for n in sizes]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "ingest", str(src), "--data", str(data)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in sources
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out + err
    store = Store(data)
    deals = store.load().deals.collect()
    assert deals.height in sizes
    assert set(deals["deal_id"]) == {f"D{deals.height}-{i}" for i in range(deals.height)}
    assert not list(store.versions.glob(".staging-*"))
    complete = [p for p in store.versions.iterdir() if not p.name.startswith(".")]
    assert len(complete) <= store_module.KEEP_VERSIONS


def test_a_waiting_writer_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write({"deals": _deals(1)}, DEFAULT_PIPELINE)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from features.store import Store
                with Store({str(tmp_path)!r}).writer_lock():
                    print("locked", flush=True)
                    time.sleep(1.0)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    heard: list[str] = []
    store.write({"deals": _deals(2)}, DEFAULT_PIPELINE, on_wait=heard.append)
    holder.wait(timeout=30)
    assert heard and "another ingest is writing the store" in heard[0]
    assert store.load().deals.collect().height == 2


def test_prune_keeps_a_version_another_process_reads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write({"deals": _deals(7)}, DEFAULT_PIPELINE)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from features.store import Store
                history = Store({str(tmp_path)!r}).load()
                print("loaded", flush=True)
                sys.stdin.readline()  # keep reading until told
                print(history.deals.collect().height, flush=True)
                """
            ),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline().strip() == "loaded"
    for n in range(1, 6):  # more writes than versions kept
        store.write({"deals": _deals(n)}, DEFAULT_PIPELINE)
    reader.stdin.write("go\n")
    reader.stdin.flush()
    assert reader.stdout.readline().strip() == "7"  # its version was still there
    reader.wait(timeout=30)
    store.write({"deals": _deals(1)}, DEFAULT_PIPELINE)  # now it may go
    complete = [p for p in store.versions.iterdir() if not p.name.startswith(".")]
    assert len(complete) == store_module.KEEP_VERSIONS


def test_prune_never_deletes_a_live_writers_staging(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write({"deals": _deals(1)}, DEFAULT_PIPELINE)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = store.versions / f".staging-20260101T000000000000Z-abc-p{sleeper.pid}"
        live.mkdir()
        dead = store.versions / ".staging-20260101T000000000000Z-def-p999999999"
        dead.mkdir()
        store.write({"deals": _deals(2)}, DEFAULT_PIPELINE)
        assert live.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def _enospc(frame: pl.DataFrame, path: Path) -> None:
    path.write_bytes(b"PAR1 truncated")
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_full_disk_cleans_up_and_the_next_write_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.write({"deals": _deals(2)}, DEFAULT_PIPELINE)
    before = store.current()
    monkeypatch.setattr(store_module, "_write_parquet", _enospc)
    with pytest.raises(StoreWriteError, match="no space left on the device; nothing changed"):
        store.write({"deals": _deals(5)}, DEFAULT_PIPELINE)
    assert store.current() == before
    assert not list(store.versions.glob(".staging-*"))
    assert not list(store.root.glob(".current-*"))
    monkeypatch.undo()
    store.write({"deals": _deals(3)}, DEFAULT_PIPELINE)
    assert store.load().deals.collect().height == 3


def test_a_short_parquet_write_is_caught_before_it_goes_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk can truncate a file without an error from the writer: read it back."""
    store = Store(tmp_path)
    store.write({"deals": _deals(2)}, DEFAULT_PIPELINE)

    def truncating(self: pl.DataFrame, path: Path, **_: object) -> None:
        Path(path).write_bytes(b"PAR1" + b"\0" * 20)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", truncating)
    with pytest.raises(StoreWriteError):
        store.write({"deals": _deals(5)}, DEFAULT_PIPELINE)
    monkeypatch.undo()
    assert store.load().deals.collect().height == 2
    assert not list(store.versions.glob(".staging-*"))


def test_cli_ingest_on_a_full_disk_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import app

    src = _source(tmp_path / "src", 3)
    data = tmp_path / "data"
    monkeypatch.setattr(store_module, "_write_parquet", _enospc)
    result = CliRunner().invoke(app, ["ingest", str(src), "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "no space left on the device" in result.output
    assert "Traceback" not in result.output
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["ingest", str(src), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert not list((data / "store" / "versions").glob(".staging-*"))
    assert os.path.exists(data / "store" / "current" / "deals.parquet")
