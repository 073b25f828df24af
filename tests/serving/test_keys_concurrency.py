"""``dealcast keys add`` / ``keys remove`` from concurrent processes lose no update, and a full
disk gives one clear line and leaves no temporary file."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import serving.auth as auth
from pipelines.cli import app
from serving.auth import KeyRing, add_key, list_keys, remove_key

_CTX = multiprocessing.get_context("fork")


def _add(args: tuple[str, str]) -> tuple[str, str]:
    path, role = args
    key, entry = add_key(Path(path), role)
    return key, entry["id"]


def _remove(args: tuple[str, str]) -> bool:
    path, key_id = args
    return remove_key(Path(path), key_id)


def test_ten_concurrent_adds_store_ten_keys(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    with _CTX.Pool(10) as pool:
        made = pool.map(_add, [(str(path), "leader")] * 10, chunksize=1)
    ring = KeyRing(path)
    assert len(list_keys(path)) == 10
    assert all(ring.lookup(key) is not None for key, _ in made)
    assert not list(tmp_path.glob(".*.tmp"))


def test_concurrent_adds_and_removes_revoke_every_removed_key(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    for _ in range(3):  # several races
        old = [add_key(path, "ops") for _ in range(5)]
        with _CTX.Pool(10) as pool:
            removing = pool.map_async(
                _remove, [(str(path), entry["id"]) for _, entry in old], chunksize=1
            )
            adding = pool.map_async(_add, [(str(path), "rep:r1")] * 5, chunksize=1)
            removed, added = removing.get(60), adding.get(60)
        assert all(removed)
        ring = KeyRing(path)
        for key, _ in old:
            assert ring.lookup(key) is None  # said "removed": really revoked
        for key, _ in added:
            assert ring.lookup(key) is not None  # said "added": really stored
    assert len(list_keys(path)) == 15


def test_keys_add_on_a_full_disk_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    assert (
        CliRunner().invoke(app, ["keys", "add", "--role", "ops", "--data", str(data)]).exit_code
        == 0
    )
    before = (data / "api-keys.json").read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(auth.os, "fsync", full)
    result = CliRunner().invoke(app, ["keys", "add", "--role", "leader", "--data", str(data)])
    assert result.exit_code == 2
    assert "no space left on the device" in result.output
    assert "Traceback" not in result.output
    assert (data / "api-keys.json").read_bytes() == before
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(auth.os, "fsync", real_fsync)
    result = CliRunner().invoke(app, ["keys", "add", "--role", "leader", "--data", str(data)])
    assert result.exit_code == 0
    assert len(list_keys(data / "api-keys.json")) == 2
