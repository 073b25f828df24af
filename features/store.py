"""The store: the canonical tables of one dataset on disk, replaced atomically.

Layout under the data directory::

    store/
      current -> versions/<id>        # a symlink, swapped with one rename
      versions/<id>/
        deals.parquet  stage_history.parquet  [activities|reps|targets].parquet
        pipeline.toml  manifest.json
        truth/<name>.parquet          # evaluation-only tables (simulated data), never features
      versions/.staging-<id>/         # a version being written; never read

A writer builds a complete new version in a staging directory, fsyncs it, renames it into
``versions/`` and then swaps ``current`` with ``os.replace`` (atomic on POSIX). A process
killed at any point leaves ``current`` pointing at the previous, complete version.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from features.contract import SCHEMAS, DealHistory, PipelineConfig, conform, derive_history

__all__ = ["Store", "StoreNotFoundError"]

_KEEP_VERSIONS = 2


class StoreNotFoundError(FileNotFoundError):
    """No store has been written under this data directory yet."""


class Store:
    """The canonical tables under ``<data>/store``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "store"
        self.versions = self.root / "versions"
        self.current_link = self.root / "current"

    # -- reading ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.current_link / "manifest.json").exists()

    def current(self) -> Path:
        """The directory of the current version (resolved once, so a reader sees one version)."""
        if not self.exists():
            raise StoreNotFoundError(
                f"no store under {self.data_dir}: run `dealcast ingest SOURCE` "
                "or `dealcast demo` first, or point --data / DEALCAST_DATA at one"
            )
        return self.current_link.resolve()

    def manifest(self) -> dict:
        return json.loads((self.current() / "manifest.json").read_text())

    def load(self) -> DealHistory:
        """The current version as a :class:`DealHistory` of lazy frames."""
        version = self.current()
        manifest = json.loads((version / "manifest.json").read_text())
        pipeline = PipelineConfig.from_toml(version / "pipeline.toml")
        frames: dict[str, pl.LazyFrame | None] = {}
        for table in SCHEMAS:
            path = version / f"{table}.parquet"
            frames[table] = conform(pl.scan_parquet(path), table) if path.exists() else None
        supplied = set(manifest.get("supplied", [t for t, f in frames.items() if f is not None]))
        deals = frames["deals"]
        assert deals is not None, f"store version {version} has no deals table"
        history = frames["stage_history"]
        derived = history is None or "stage_history" not in supplied
        return DealHistory(
            deals=deals,
            stage_history=derive_history(deals, pipeline) if history is None else history,
            activities=_or_empty(frames["activities"], "activities"),
            reps=_or_empty(frames["reps"], "reps"),
            targets=_or_empty(frames["targets"], "targets"),
            pipeline=pipeline,
            history_is_derived=derived,
            has=frozenset(supplied),
        )

    def truth(self, name: str) -> pl.LazyFrame | None:
        """An evaluation-only table written by the simulator (``None`` when absent)."""
        path = self.current() / "truth" / f"{name}.parquet"
        return pl.scan_parquet(path) if path.exists() else None

    # -- writing ----------------------------------------------------------------------------
    def write(
        self,
        tables: Mapping[str, pl.DataFrame],
        pipeline: PipelineConfig,
        *,
        truth: Mapping[str, pl.DataFrame] | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> Path:
        """Write a complete new version and make it current atomically; return its directory.

        ``tables`` must hold ``deals`` and may hold any other canonical table; each is cast to
        its canonical schema. ``truth`` holds evaluation-only tables (simulator ground truth).
        """
        if "deals" not in tables:
            raise ValueError("a store version needs a deals table")
        unknown = set(tables) - set(SCHEMAS)
        if unknown:
            raise ValueError(f"not canonical tables: {', '.join(sorted(unknown))}")
        version_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
        self.versions.mkdir(parents=True, exist_ok=True)
        staging = self.versions / f".staging-{version_id}"
        staging.mkdir()
        rows: dict[str, int] = {}
        for table, frame in tables.items():
            out = conform(frame, table).collect()
            _write_parquet(out, staging / f"{table}.parquet")
            rows[table] = out.height
        for name, frame in (truth or {}).items():
            (staging / "truth").mkdir(exist_ok=True)
            _write_parquet(frame, staging / "truth" / f"{name}.parquet")
        _write_text(staging / "pipeline.toml", pipeline.to_toml())
        manifest = {
            "version": version_id,
            "written_at": datetime.now(UTC).isoformat(),
            "supplied": sorted(tables),
            "rows": rows,
            "truth": sorted(truth or {}),
            **dict(meta or {}),
        }
        _write_text(staging / "manifest.json", json.dumps(manifest, indent=2, default=str))
        _fsync(staging)
        final = self.versions / version_id
        os.rename(staging, final)
        _fsync(self.versions)
        tmp_link = self.root / f".current-{version_id}"
        os.symlink(Path("versions") / version_id, tmp_link)
        os.replace(tmp_link, self.current_link)
        _fsync(self.root)
        self._prune(keep=final)
        return final

    def _prune(self, *, keep: Path) -> None:
        """Drop old versions and abandoned staging dirs; keep the newest few complete ones."""
        complete = sorted(
            (p for p in self.versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        for old in complete[:-_KEEP_VERSIONS]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
        for stale in self.versions.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for link in self.root.glob(".current-*"):
            link.unlink(missing_ok=True)


def _or_empty(frame: pl.LazyFrame | None, table: str) -> pl.LazyFrame:
    return frame if frame is not None else pl.DataFrame(schema=SCHEMAS[table]).lazy()


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    frame.write_parquet(path, compression="zstd", statistics=True)
    _fsync(path)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
