"""The publication format: what the pipeline jobs hand to the API.

A publication is a directory ``<data>/published/<version>/`` of parquet tables and a
``manifest.json``; ``<data>/published/CURRENT`` names the live one. :func:`write_publication`
writes the new directory completely (files fsynced) under a temporary name, renames it into
place, then swaps ``CURRENT`` with ``os.replace``: a reader sees the old publication or the new
one, never a mix, and a crash mid-write leaves the previous one live. ``serving.results`` reads
it (serving depends on pipelines, never the reverse).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from models.anomalies.detections import ANOMALY_SCHEMA

__all__ = [
    "ANOMALY_SCHEMA",
    "PUBLISHED_DIMENSIONS",
    "PUBLISHED_MONTHS",
    "TABLES",
    "current_version",
    "published_root",
    "write_publication",
]

TABLES: tuple[str, ...] = (
    "forecasts",
    "actuals",
    "weighted",
    "scores",
    "reasons",
    "flags",
    "stage_history",
    "accuracy",
    "kpis_week",
    "kpis_month",
    "kpis_quarter",
    "anomalies",
)
"""The tables of a publication (``<name>.parquet``); see ``docs/serving.md`` for columns."""

PUBLISHED_DIMENSIONS: tuple[str, ...] = ("owner_id", "team", "region", "product", "segment")
"""Dimensions the API answers ``by=`` for (forecasts, weighted pipeline, KPIs, accuracy)."""

PUBLISHED_MONTHS = 3
"""Months forecast and published by default (the API's ``months`` is 1 to this): the months
the champion timing model covers (``dealcast train`` fits 3)."""

KEEP_VERSIONS = 3
"""Publications kept on disk: the live one and two before it (a reader may still load them)."""


def published_root(data_dir: Path | str) -> Path:
    return Path(data_dir) / "published"


def current_version(data_dir: Path | str) -> str | None:
    """The live publication's version, or None when nothing was published."""
    pointer = published_root(data_dir) / "CURRENT"
    try:
        return pointer.read_text().strip() or None
    except FileNotFoundError:
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_publication(
    data_dir: Path | str, tables: Mapping[str, pl.DataFrame], manifest: Mapping[str, Any]
) -> str:
    """Write a publication and make it the live one; return its version.

    Parameters
    ----------
    data_dir : the dealcast data directory
    tables : one frame per name of :data:`TABLES` (all of them)
    manifest : JSON-serialisable facts about the publication (``as_of``, model versions, ...);
        ``version`` and ``published_at`` are added here.
    """
    missing = [name for name in TABLES if name not in tables]
    if missing:
        raise ValueError(f"a publication needs every table: missing {', '.join(missing)}")
    root = published_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    published_at = datetime.now(UTC)
    version = f"{published_at:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"
    staging = root / f".staging-{version}"
    pointer = root / f".CURRENT-{version}"
    try:
        staging.mkdir()
        for name in TABLES:
            path = staging / f"{name}.parquet"
            tables[name].write_parquet(path)
            _fsync(path)
            # read the footer back: a short write (full disk) fails here, not in the server
            pl.read_parquet_schema(path)
        meta = {**manifest, "version": version, "published_at": published_at.isoformat()}
        (staging / "manifest.json").write_text(json.dumps(meta, indent=1, default=str))
        _fsync(staging / "manifest.json")
        final = root / version
        os.rename(staging, final)
        pointer.write_text(version + "\n")
        _fsync(pointer)
        os.replace(pointer, root / "CURRENT")
        _fsync(root)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        pointer.unlink(missing_ok=True)
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
            "No space left on device" in str(exc)
        )
        if full or isinstance(exc, OSError):
            why = "no space left on the device" if full else str(exc)
            raise OSError(
                errno.ENOSPC if full else (getattr(exc, "errno", None) or errno.EIO),
                f"cannot write the publication under {root}: {why}; nothing changed (the "
                "previous publication is still live)",
            ) from exc
        raise
    _prune(root, keep=version)
    return version


def _prune(root: Path, *, keep: str) -> None:
    versions = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in versions[:-KEEP_VERSIONS]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
