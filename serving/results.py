"""The API's side of the published results (``serving.publication`` writes them).

:class:`ResultsHolder` is the API's side: it loads a publication into memory (a
:class:`Published`, immutable), and a background thread swaps in a new one when ``CURRENT``
changes. A request takes one reference at its start and answers from it alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from serving.publication import TABLES, current_version, published_root

__all__ = ["Published", "ResultsHolder", "load_publication"]

log = logging.getLogger("dealcast.serving")


@dataclass(frozen=True, eq=False)
class Published:
    """One publication in memory. Never mutated: answers derived from it are memoised."""

    version: str
    manifest: dict[str, Any]
    tables: dict[str, pl.DataFrame]
    loaded_at: float = field(default_factory=time.time)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getitem__(self, name: str) -> pl.DataFrame:
        return self.tables[name]

    @property
    def as_of(self) -> datetime:
        return datetime.fromisoformat(self.manifest["as_of"])

    @property
    def published_at(self) -> datetime:
        return datetime.fromisoformat(self.manifest["published_at"])

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key for this publication (answers are pure functions of it)."""
        try:
            return self._memo[key]
        except KeyError:
            pass
        value = compute()
        with self._lock:
            if len(self._memo) > 4096:  # bounded: arbitrary query strings must not grow it
                self._memo.clear()
            self._memo[key] = value
        return value


RETRY_SECONDS = 30.0
"""A publication that failed to load is tried again after this long (it may be repaired)."""


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_publication(data_dir: Path | str, version: str) -> Published:
    folder = published_root(data_dir) / version
    manifest = json.loads((folder / "manifest.json").read_text())
    tables = {name: pl.read_parquet(folder / f"{name}.parquet") for name in TABLES}
    return Published(version=version, manifest=manifest, tables=tables)


class ResultsHolder:
    """The live publication of one data directory, swapped in when ``CURRENT`` changes.

    ``current`` is a plain attribute read: the swap replaces the reference in one step.
    ``refresh()`` checks the pointer and loads a new publication; ``start()`` runs it every
    ``interval`` seconds in a daemon thread. A publication that fails to load is logged and the
    previous one stays live.
    """

    def __init__(self, data_dir: Path | str, *, interval: float = 1.0) -> None:
        self.data_dir = Path(data_dir)
        self.interval = interval
        self.current: Published | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        self._also: Callable[[], None] | None = None
        self._failed: tuple[str, float] | None = None

    def refresh(self) -> bool:
        """Load the live publication if it changed; True when a new one was swapped in.

        When ``CURRENT`` cannot be loaded the previous publication stays live; with nothing
        live yet (a restart), the newest readable publication on disk is served instead and
        ``last_error`` says which one was skipped. Once ``CURRENT`` is served, the error is
        cleared. A failing version is retried every ``RETRY_SECONDS`` (not every second).
        """
        with self._refresh_lock:
            version = current_version(self.data_dir)
            if version is None:
                return False
            if self.current is not None and self.current.version == version:
                if self.last_error is not None:
                    log.info("serving publication %s; the earlier error is over", version)
                    self.last_error = None
                return False
            failed = self._failed
            if failed and failed[0] == version and time.time() - failed[1] < RETRY_SECONDS:
                return False
            try:
                loaded = load_publication(self.data_dir, version)
            except Exception as exc:  # keep serving the previous publication
                self._failed = (version, time.time())
                problem = f"publication {version} failed to load: {_one_line(exc)}"
                if self.current is None:
                    fallback = self._newest_readable(skip=version)
                    if fallback is not None:
                        self.current = fallback
                        self.last_error = (
                            f"{problem}; skipped it and serving {fallback.version}, the newest "
                            "readable publication (fix it or run `dealcast publish`)"
                        )
                        log.error(self.last_error)
                        return True
                    self.last_error = f"{problem}; no other readable publication on disk"
                else:
                    self.last_error = f"{problem}; still serving {self.current.version}"
                log.error(self.last_error)
                return False
            self.current = loaded
            self.last_error = None
            self._failed = None
            log.info("serving publication %s (as of %s)", version, loaded.manifest.get("as_of"))
            return True

    def _newest_readable(self, *, skip: str) -> Published | None:
        """The newest publication on disk other than ``skip`` that loads (newest first)."""
        root = published_root(self.data_dir)
        try:
            names = sorted(
                (p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                reverse=True,
            )
        except FileNotFoundError:
            return None
        for name in names:
            if name == skip:
                continue
            try:
                return load_publication(self.data_dir, name)
            except Exception as exc:
                log.error("publication %s is not readable either: %s", name, _one_line(exc))
        return None

    def start(self, *, also: Callable[[], None] | None = None) -> None:
        """Load now, then check every ``interval`` (and run ``also``, e.g. re-read the keys)."""
        self._also = also
        self.refresh()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="results-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
            if self._also is not None:
                try:
                    self._also()
                except Exception as exc:  # a bad keys file must not stop result reloads
                    log.error("%s", exc)
