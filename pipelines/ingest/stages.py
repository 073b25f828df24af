"""Stage names of the data against the pipeline config.

A stage name of the data that matches a configured stage up to case, blanks and punctuation
(``closedwon``, ``CLOSED WON``, ``Closed-Won``) is read as that stage; anything else is an
unknown stage: its rows are quarantined and one warning lists every unknown name with its
count and the TOML to add to a pipeline config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

from features.contract import DEFAULT_PIPELINE, PipelineConfig
from pipelines.ingest.errors import IngestError

__all__ = [
    "stage_key",
    "stage_aliases",
    "stage_counts",
    "unknown_stages_warning",
    "load_pipeline",
    "guess_kind",
]


def stage_key(name: str) -> str:
    """``"Closed-Won "`` -> ``"closedwon"``: the key two spellings of one stage share."""
    return re.sub(r"[^0-9a-z]+", "", name.casefold())


def stage_aliases(observed: Iterable[str], pipeline: PipelineConfig) -> dict[str, str]:
    """Observed names that are configured stages spelled differently -> the configured name."""
    by_key: dict[str, list[str]] = {}
    for name in pipeline.names:
        by_key.setdefault(stage_key(name), []).append(name)
    out: dict[str, str] = {}
    for name in observed:
        if name in pipeline.names:
            continue
        hits = by_key.get(stage_key(name), [])
        if len(hits) == 1:
            out[name] = hits[0]
    return out


def guess_kind(name: str) -> str:
    """A first guess of a stage's kind from its name, for the suggested TOML only."""
    key = stage_key(name)
    if "won" in key or "win" in key or "signed" in key:
        return "won"
    if "lost" in key or "lose" in key or "dead" in key or "disqualif" in key:
        return "lost"
    return "open"


def unknown_stages_warning(counts: Mapping[str, int], origin: str) -> str:
    """One message: every unknown stage with its row count, and the TOML that adds them."""
    listed = ", ".join(f"{name!r} ({n:,} row{'' if n == 1 else 's'})" for name, n in counts.items())
    snippet = "\n".join(
        f'\n[[stages]]\nname = "{_escape(name)}"\nkind = "{guess_kind(name)}"  # open, won or lost'
        for name in counts
    )
    return (
        f"unknown stages, rows quarantined: {listed}. They are not in the pipeline config "
        f"({origin}). Add them, in funnel order, to a copy of the config (saved with every "
        "store version as store/current/pipeline.toml) and ingest again with --pipeline FILE:\n"
        + snippet.lstrip("\n")
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def load_pipeline(
    explicit: Path | None,
    source_dir: Path | None,
    default: PipelineConfig = DEFAULT_PIPELINE,
    default_label: str = "the default pipeline (features.contract.DEFAULT_PIPELINE)",
) -> tuple[PipelineConfig, str]:
    """``--pipeline`` if given, else ``pipeline.toml`` in the source directory, else ``default``.

    Returns the config and a phrase saying where it came from.
    """
    if explicit is not None:
        return _read(explicit, "--pipeline"), f"--pipeline {explicit}"
    if source_dir is not None and (source_dir / "pipeline.toml").is_file():
        path = source_dir / "pipeline.toml"
        return _read(path, "source"), str(path)
    return default, default_label


def _read(path: Path, what: str) -> PipelineConfig:
    if not path.is_file():
        raise IngestError(f"{what} {path}: no such pipeline config file")
    try:
        return PipelineConfig.from_toml(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise IngestError(
            f"{path}: not a valid pipeline config ({exc}); it needs a list of 'stages' "
            'tables, each with a name and a kind ("open", "won" or "lost"), in funnel order'
        ) from None


def stage_counts(frames: Iterable[pl.DataFrame]) -> dict[str, int]:
    """Row count per non-null ``stage`` value over several frames."""
    parts = [f.select("stage").drop_nulls() for f in frames if "stage" in f.columns]
    if not parts:
        return {}
    counts = pl.concat(parts).group_by("stage").len().sort("len", "stage", descending=[True, False])
    return dict(zip(counts["stage"].to_list(), counts["len"].to_list(), strict=True))
