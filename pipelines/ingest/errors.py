"""The one exception of the ingest package."""

from __future__ import annotations

__all__ = ["IngestError"]


class IngestError(Exception):
    """A source that cannot be used at all; the message names the file and the fix.

    Raised before anything is written: the store keeps its previous version.
    """
