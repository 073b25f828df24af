"""The store: the canonical tables of one dataset on disk, replaced atomically.

Layout under the data directory::

    store/
      current -> versions/<id>        # a symlink, swapped with one rename
      versions/<id>/
        deals.parquet  stage_history.parquet  [activities|reps|targets].parquet
        pipeline.toml  manifest.json
        truth/<name>.parquet          # evaluation-only tables (simulated data), never features
      versions/.staging-<id>-p<pid>/  # a version being written by process <pid>; never read
      .write.lock                     # one writer at a time (exclusive flock)
      .readers/<id>                   # readers of version <id> hold a shared flock on it

A writer builds a complete new version in a staging directory, fsyncs it, renames it into
``versions/`` and then swaps ``current`` with ``os.replace`` (atomic on POSIX). A process
killed at any point leaves ``current`` pointing at the previous, complete version.

Concurrency (docs/operations.md): writers take an exclusive ``fcntl.flock`` on
``store/.write.lock`` for the whole write, so two ingests run one after the other (the second
waits, and says so through ``on_wait``). A reader takes a shared flock on
``.readers/<id>`` for the life of its process; pruning keeps the newest
``KEEP_VERSIONS`` versions and deletes an older one only when it can take that lock
exclusively, i.e. no process still reads it. A staging directory is deleted only when the
process named in it is gone. A failed write (e.g. a full disk, ``ENOSPC``) removes its own
staging directory before raising, so the next write starts clean.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from features.contract import SCHEMAS, DealHistory, PipelineConfig, conform, derive_history

__all__ = ["KEEP_VERSIONS", "Store", "StoreNotFoundError", "StoreWriteError", "disk_full"]

KEEP_VERSIONS = 3
"""Complete versions kept on disk: the current one and two before it (readers may hold them)."""
_KEEP_VERSIONS = KEEP_VERSIONS  # the old name

_READER_LOCKS: dict[str, int] = {}
"""Per process: version directory -> the fd holding its shared reader lock (kept open)."""


class StoreNotFoundError(FileNotFoundError):
    """No store has been written under this data directory yet."""


class StoreWriteError(OSError):
    """A store version could not be written (e.g. the disk is full); nothing changed."""


class Store:
    """The canonical tables under ``<data>/store``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "store"
        self.versions = self.root / "versions"
        self.current_link = self.root / "current"
        self.lock_path = self.root / ".write.lock"
        self.loaded_version: str | None = None
        """The version the last :meth:`load` of this object read (publish records it)."""

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

    def _pinned_current(self) -> tuple[Path, dict]:
        """The current version, pinned with a shared reader lock, and its manifest.

        Retries when a concurrent writer pruned the version between resolving ``current``
        and locking it (only a version that just stopped being current can go).
        """
        for attempt in range(5):
            version = self.current()
            _pin_for_reading(version)
            try:
                return version, json.loads((version / "manifest.json").read_text())
            except FileNotFoundError:
                if attempt == 4:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def load(self) -> DealHistory:
        """The current version as a :class:`DealHistory` of lazy frames.

        The version stays pinned (a shared flock) until this process exits, so a concurrent
        ingest never deletes files the lazy frames still read.
        """
        version, manifest = self._pinned_current()
        self.loaded_version = version.name
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
        version, _ = self._pinned_current()
        path = version / "truth" / f"{name}.parquet"
        return pl.scan_parquet(path) if path.exists() else None

    # -- writing ----------------------------------------------------------------------------
    def write(
        self,
        tables: Mapping[str, pl.DataFrame],
        pipeline: PipelineConfig,
        *,
        truth: Mapping[str, pl.DataFrame] | None = None,
        meta: Mapping[str, object] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Path:
        """Write a complete new version and make it current atomically; return its directory.

        ``tables`` must hold ``deals`` and may hold any other canonical table; each is cast to
        its canonical schema. ``truth`` holds evaluation-only tables (simulator ground truth).
        Writers are serialised by :meth:`writer_lock` (``on_wait`` hears when this one waits).
        A full disk raises :class:`StoreWriteError` and leaves no debris.
        """
        if "deals" not in tables:
            raise ValueError("a store version needs a deals table")
        unknown = set(tables) - set(SCHEMAS)
        if unknown:
            raise ValueError(f"not canonical tables: {', '.join(sorted(unknown))}")
        self.root.mkdir(parents=True, exist_ok=True)
        with self.writer_lock(on_wait=on_wait):
            return self._write_locked(tables, pipeline, truth=truth, meta=meta)

    @contextmanager
    def writer_lock(self, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the store's writer lock (exclusive ``flock`` on ``store/.write.lock``).

        When another process holds it, ``on_wait`` is called once with a message, then this
        blocks until the other writer is done (a crashed writer's lock is released by the
        kernel).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(
                        f"another ingest is writing the store under {self.data_dir}; "
                        "waiting for it to finish"
                    )
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write_locked(
        self,
        tables: Mapping[str, pl.DataFrame],
        pipeline: PipelineConfig,
        *,
        truth: Mapping[str, pl.DataFrame] | None,
        meta: Mapping[str, object] | None,
    ) -> Path:
        version_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
        self.versions.mkdir(parents=True, exist_ok=True)
        staging = self.versions / f".staging-{version_id}-p{os.getpid()}"
        tmp_link = self.root / f".current-{version_id}"
        try:
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
            os.symlink(Path("versions") / version_id, tmp_link)
            os.replace(tmp_link, self.current_link)
            _fsync(self.root)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            tmp_link.unlink(missing_ok=True)
            if disk_full(exc):
                raise StoreWriteError(
                    errno.ENOSPC,
                    f"cannot write the store under {self.data_dir}: no space left on the "
                    "device; nothing changed (the previous version is still current): free "
                    "some space and run the command again",
                ) from exc
            if isinstance(exc, OSError) and not isinstance(exc, StoreWriteError):
                raise StoreWriteError(
                    exc.errno or errno.EIO,
                    f"cannot write the store under {self.data_dir}: {exc.strerror or exc}; "
                    "nothing changed (the previous version is still current)",
                ) from exc
            raise
        self._prune(keep=final)
        return final

    def _prune(self, *, keep: Path) -> None:
        """Drop old versions no reader holds, abandoned staging dirs and stray links.

        Runs under the writer lock. Keeps the newest ``KEEP_VERSIONS`` complete versions and
        whatever ``current`` points at; an older version goes only when no process holds its
        reader lock; a staging directory only when the process that made it is gone.
        """
        current = self.current_link.resolve()
        complete = sorted(
            (p for p in self.versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        for old in complete[:-KEEP_VERSIONS]:
            if old in (keep, current):
                continue
            _remove_unread(old)
        for stale in self.versions.glob(".staging-*"):
            if _staging_abandoned(stale):
                shutil.rmtree(stale, ignore_errors=True)
        for lock in (self.root / ".readers").glob("*"):
            if not (self.versions / lock.name).exists():
                _remove_unread_lock(lock)
        for link in self.root.glob(".current-*"):
            link.unlink(missing_ok=True)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or quota) is full, as an OSError or a polars error."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text


def _reader_lock_path(version: Path) -> Path:
    return version.parent.parent / ".readers" / version.name


def _pin_for_reading(version: Path) -> None:
    """Take (once per process) a shared flock on the version's reader lock file."""
    key = str(version)
    if key in _READER_LOCKS:
        return
    try:
        lock = _reader_lock_path(version)
        lock.parent.mkdir(exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # a read-only store: nobody can prune it from here either
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return
    _READER_LOCKS[key] = fd


def _remove_unread(version: Path) -> None:
    """Delete ``version`` unless some process (this one included) holds its reader lock."""
    if str(version) in _READER_LOCKS:
        return  # this process read it: its lazy frames may still scan it
    lock = _reader_lock_path(version)
    try:
        lock.parent.mkdir(exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a reader still uses it: the next write tries again
        shutil.rmtree(version, ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _remove_unread_lock(lock: Path) -> None:
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


STAGING_GRACE_SECONDS = 600
"""A staging dir without an owning pid in its name is removed only after this long."""


def _staging_abandoned(staging: Path) -> bool:
    """Whether the process that made ``staging`` is gone (or, without a pid, it is old)."""
    _, _, tail = staging.name.rpartition("-p")
    if tail.isdigit():
        pid = int(tail)
        if pid == os.getpid():
            return True  # this process holds the writer lock: it is not writing that one
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return not _alive(pid)
    try:
        age = time.time() - staging.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STAGING_GRACE_SECONDS


def _alive(pid: int) -> bool:
    """False for a zombie (killed, not yet reaped), True for a running process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _or_empty(frame: pl.LazyFrame | None, table: str) -> pl.LazyFrame:
    return frame if frame is not None else pl.DataFrame(schema=SCHEMAS[table]).lazy()


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    frame.write_parquet(path, compression="zstd", statistics=True)
    _fsync(path)
    _check_parquet(path, frame.height)


def _check_parquet(path: Path, rows: int) -> None:
    """Read the footer back: a short write (full disk) must fail here, not at the next read."""
    try:
        written = pl.scan_parquet(path).select(pl.len()).collect().item()
    except Exception as exc:  # polars raises several types for a truncated file
        raise OSError(errno.EIO, f"{path} was not written completely: {exc}") from exc
    if written != rows:
        raise OSError(errno.EIO, f"{path} holds {written} rows, {rows} were written")


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
