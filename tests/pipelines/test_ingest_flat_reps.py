"""Flat exports may map reps columns (``--map reps.team=Manager``): reps built from deal rows."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.kpis.table import kpi_table
from features.store import Store
from pipelines.cli import app
from pipelines.ingest import IngestError, ingest_sources

EXPORT = (
    "Opportunity,Agent,Manager,Regional Office,Product,Created,Closed,Amount,Stage\n"
    "O1,ann,Melvin,Central,GTX,2024-01-05,2024-02-10,1000,Won\n"
    "O2,ann,Melvin,Central,GTX,2024-01-07,2024-03-01,500,Lost\n"
    "O3,ann,Rocco,East,GTX,2024-02-07,,700,Engaging\n"
    "O4,bob,Rocco,East,MG,2024-01-10,2024-02-20,300,Won\n"
    "O5,bob,,East,MG,2024-02-11,,900,Prospecting\n"
    "O6,,Rocco,East,MG,2024-02-11,,900,Prospecting\n"
    "O7,cid,Rocco,West,MG,2024-02-12,2024-01-01,400,Lost\n"
    "O8,dee,Ana,West,MG,2024-02-12,2024-03-01,400,Won\n"
    "O9,dee,Rocco,East,MG,2024-02-13,2024-03-02,400,Won\n"
)
STAGES = (
    "".join(
        f'[[stages]]\nname = "{name}"\nkind = "{kind}"\n'
        for name, kind in (("Prospecting", "open"), ("Engaging", "open"), ("Won", "won"))
    )
    + '[[stages]]\nname = "Lost"\nkind = "lost"\n'
)
MAP = [
    "deal_id=Opportunity",
    "owner_id=Agent",
    "created_at=Created",
    "close_date=Closed",
    "product=Product",
    "reps.team=Manager",
    "reps.manager_id=Manager",
    "reps.region=Regional Office",
]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "sales_pipeline.csv"
    path.write_text(EXPORT, encoding="utf-8")
    (tmp_path / "pipeline.toml").write_text(STAGES, encoding="utf-8")
    return path


def test_flat_export_builds_reps_from_deal_rows(export: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    report = ingest_sources([export], store=store, source_format="flat", mapping=MAP)
    counts = {c.table: (c.read, c.loaded, c.quarantined) for c in report.tables}
    # deals: O6 has no owner, O7 closes before it was created; every row stored or quarantined
    assert counts == {"deals": (9, 7, 2), "reps": (4, 4, 0)}
    assert report.quarantine_file is not None
    quarantined = pl.read_csv(report.quarantine_file)
    assert quarantined.select("table", "row_number").rows() == [("deals", 6), ("deals", 7)]
    history = store.load()
    reps = history.reps.collect().sort("owner_id")
    # ann: Melvin x2 over Rocco x1; dee: a tie, the latest row (O9) wins; bob's empty Manager
    # is no value; cid's only deal is quarantined but cid is still a rep
    assert reps.select("owner_id", "team", "manager_id", "region").rows() == [
        ("ann", "Melvin", "Melvin", "Central"),
        ("bob", "Rocco", "Rocco", "East"),
        ("cid", "Rocco", "Rocco", "West"),
        ("dee", "Rocco", "Rocco", "East"),
    ]
    conflicts = [w for w in report.warnings if "several" in w]
    assert len(conflicts) == 3  # team, manager_id and region: warnings, not errors
    assert "2 owners seen with several 'Manager' values (reps.team)" in conflicts[0]
    assert "'ann': 'Melvin' x2, 'Rocco' x1" in conflicts[0]
    assert not any("not mapped" in w for w in report.warnings)  # every column is used
    # the team dimension now works
    by_team = kpi_table(history, period="quarter", by=["team"])
    assert dict(zip(by_team["team"], by_team["bookings"], strict=True)) == {
        "Melvin": 1000.0,
        "Rocco": 300.0 + 400.0 + 400.0,  # bob's O4, dee's O8 (its deals count under Rocco) and O9
    }


def test_cli_accepts_reps_mappings_on_a_flat_export(export: Path, tmp_path: Path) -> None:
    args = ["ingest", str(export), "--source-format", "flat", "--data", str(tmp_path / "data")]
    for item in MAP:
        args += ["--map", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if "│" in line]
    counts = {cells[1]: cells[3:6] for cells in (re.split(r"\s*│\s*", t) for t in table)}
    assert counts["reps"] == ["4", "4", "0"]
    assert Store(tmp_path / "data").load().reps.collect().height == 4


def test_flat_export_still_refuses_other_tables_and_unknown_columns(
    export: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path / "data")
    with pytest.raises(IngestError, match=r"columns of deals and reps .* not of stage_history"):
        ingest_sources(
            [export], store=store, source_format="flat", mapping=[*MAP, "stage_history.stage=X"]
        )
    with pytest.raises(IngestError, match=r"'Team' \(mapped to team\) is not in the file"):
        ingest_sources(
            [export], store=store, source_format="flat", mapping=[*MAP, "reps.team=Team"]
        )
    with pytest.raises(IngestError, match=r"'boss' is not a column of reps"):
        ingest_sources(
            [export], store=store, source_format="flat", mapping=[*MAP, "reps.boss=Manager"]
        )
    assert not (tmp_path / "data" / "store").exists()
