"""Write a simulated company to a directory: one file per table, plus its pipeline config."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.simulate.company import CANONICAL, TRUTH, SimulatedCompany

__all__ = ["write_company"]

CSV_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""ISO-8601 UTC; simulator timestamps are whole seconds."""


def write_company(
    company: SimulatedCompany,
    out: Path | str,
    *,
    file_format: str = "parquet",
) -> list[Path]:
    """Write ``company`` into ``out`` (created if missing) and return the paths written.

    Writes ``deals, stage_history, activities, reps, targets, truth_probabilities,
    truth_anomalies`` as ``<name>.parquet`` or ``<name>.csv`` (timestamps ISO-8601 UTC), and
    ``pipeline.toml``; a canonical table missing from ``company.tables`` (an export profile
    without it, :func:`pipelines.simulate.exports.export_company`) is not written. The same
    company always gives byte-identical files.
    """
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = {
        **{n: company.tables[n] for n in CANONICAL if n in company.tables},
        **{n: company.truth[n] for n in TRUTH},
    }
    paths = []
    for name, frame in frames.items():
        path = out / f"{name}.{file_format}"
        _write(frame, path, file_format)
        paths.append(path)
    toml = out / "pipeline.toml"
    toml.write_text(company.pipeline.to_toml(), encoding="utf-8")
    paths.append(toml)
    return paths


def _write(frame: pl.DataFrame, path: Path, file_format: str) -> None:
    if file_format == "csv":
        frame.write_csv(path, datetime_format=CSV_DATETIME_FORMAT, date_format="%Y-%m-%d")
    else:
        frame.write_parquet(path, compression="zstd", statistics=True)
