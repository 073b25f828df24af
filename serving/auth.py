"""API keys and roles.

A key is a random token shown once (``dealcast keys add``); the keys file keeps only its
SHA-256 (a high-entropy token needs no slow hash: there is nothing to guess from it) with the
role: ``leader`` reads everything, ``ops`` reads everything and runs jobs, ``rep:<owner_id>``
reads that rep's deals and numbers only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "KeyRing",
    "KeysFileError",
    "Principal",
    "add_key",
    "hash_key",
    "list_keys",
    "parse_role",
    "remove_key",
]

Role = Literal["leader", "ops", "rep"]
_ROLE = re.compile(r"^(leader|ops|rep:(?P<owner>[A-Za-z0-9_.@-]+))$")
KEY_PREFIX = "dc_"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a role, and for a rep the owner id they are."""

    role: Role
    owner_id: str | None = None
    key_id: str = ""

    @property
    def label(self) -> str:
        return f"rep:{self.owner_id}" if self.role == "rep" else self.role

    @property
    def is_rep(self) -> bool:
        return self.role == "rep"


def parse_role(text: str) -> Principal:
    """``leader``, ``ops`` or ``rep:<owner_id>`` as a :class:`Principal`; ValueError otherwise."""
    match = _ROLE.match(text.strip())
    if not match:
        raise ValueError(
            f"role must be leader, ops or rep:<owner_id> (e.g. rep:rep-0007), got {text!r}"
        )
    owner = match.group("owner")
    return Principal("rep", owner) if owner else Principal(text.strip())  # type: ignore[arg-type]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    entries = json.loads(path.read_text()).get("keys", [])
    return [e for e in entries if isinstance(e, dict)]


class KeysFileError(OSError):
    """The keys file could not be written (e.g. a full disk); it is unchanged."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<keys file>.lock`` (one read-modify-write at a time).

    Every change reads the file, edits the list and replaces the file under this lock, so
    concurrent ``keys add`` / ``keys remove`` never lose each other's updates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, entries: list[dict[str, str]]) -> None:
    """Replace ``path`` atomically (temporary file, fsync, ``os.replace``); the caller holds
    :func:`_locked`. On failure the temporary file is removed and the file is unchanged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"keys": entries}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            why = (
                "no space left on the device"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else (exc.strerror or str(exc))
            )
            raise KeysFileError(
                exc.errno or errno.EIO,
                f"cannot write the keys file {path}: {why}; it is unchanged (free some space "
                "and run the command again)",
            ) from exc
        raise


def add_key(path: Path, role: str, *, name: str = "") -> tuple[str, dict[str, str]]:
    """Create a key for ``role``, store its hash in ``path``; return (key, stored entry)."""
    principal = parse_role(role)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = {
        "id": "k_" + secrets.token_hex(4),
        "sha256": hash_key(key),
        "role": principal.label,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with _locked(path):
        _write(path, [*_read(path), entry])
    return key, entry


def remove_key(path: Path, key_id: str) -> bool:
    with _locked(path):
        entries = _read(path)
        kept = [e for e in entries if e.get("id") != key_id]
        if len(kept) == len(entries):
            return False
        _write(path, kept)
    return True


def list_keys(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in e.items() if k != "sha256"} for e in _read(path)]


class KeyRing:
    """The hashes the server accepts: the keys file (re-read when it changes) and the env."""

    def __init__(self, path: Path, extra: dict[str, str] | None = None) -> None:
        self.path = path
        self._extra = {h.lower(): parse_role(r) for h, r in (extra or {}).items()}
        self._keys: dict[str, Principal] = dict(self._extra)
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        try:
            stat = self.path.stat()
            # the inode changes with every os.replace: a rewrite of the same size and second
            # is still seen
            stamp: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        with self._lock:
            keys = dict(self._extra)
            for entry in _read(self.path) if stamp else []:
                principal = parse_role(entry["role"])
                keys[entry["sha256"].lower()] = Principal(
                    principal.role, principal.owner_id, entry.get("id", "")
                )
            self._keys, self._stamp = keys, stamp

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str) -> Principal | None:
        """The principal of a presented key. Looked up by its hash: the key itself is never
        compared, so response times say nothing about how close a guess was."""
        return self._keys.get(hash_key(key))
