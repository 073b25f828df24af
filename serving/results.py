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

    def refresh(self) -> bool:
        """Load the live publication if it changed; True when a new one was swapped in."""
        with self._refresh_lock:
            version = current_version(self.data_dir)
            if version is None or (self.current and self.current.version == version):
                return False
            try:
                loaded = load_publication(self.data_dir, version)
            except Exception as exc:  # keep serving the previous publication
                self.last_error = f"publication {version} failed to load: {exc}"
                log.error(self.last_error)
                return False
            self.current = loaded
            self.last_error = None
            log.info("serving publication %s (as of %s)", version, loaded.manifest.get("as_of"))
            return True

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
