"""File-level failures of ``dealcast ingest``: one clear IngestError, and nothing changes."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.store import Store
from pipelines.ingest import IngestError, ingest_sources

DEALS = "deal_id,created_at,owner_id,stage,amount\n"
GOOD = DEALS + "D1,2024-01-05,r1,Discovery,100\nD2,2024-01-06,r2,Demo,200\n"


def source_dir(tmp_path: Path, files: dict[str, bytes | str]) -> Path:
    folder = tmp_path / "src"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def test_missing_required_column_names_it_and_the_map_option(tmp_path: Path) -> None:
    folder = source_dir(
        tmp_path, {"deals.csv": "deal_id,Created,owner_id,stage,amount\nD1,2024-01-05,r1,Demo,1\n"}
    )
    with pytest.raises(IngestError) as caught:
        ingest_sources([folder], store=Store(tmp_path / "data"))
    message = str(caught.value)
    assert message.startswith(f"{folder / 'deals.csv'}: required column 'created_at' of deals")
    assert "--map created_at=<your column name>" in message
    assert "'Created'" in message  # the columns found are listed
    # and the suggested mapping works
    report = ingest_sources(
        [folder], store=Store(tmp_path / "data"), mapping=["created_at=Created"]
    )
    assert report.counts("deals").loaded == 1


def test_missing_column_of_another_table_shows_the_table_prefix(tmp_path: Path) -> None:
    folder = source_dir(
        tmp_path,
        {"deals.csv": GOOD, "stage_history.csv": "deal_id,when,stage\nD1,2024-01-05,Demo\n"},
    )
    with pytest.raises(IngestError, match=r"--map stage_history\.changed_at=<your column name>"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_empty_file_fails(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": b""})
    with pytest.raises(IngestError, match=r"deals\.csv is empty \(0 bytes\)"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_header_only_deals_fail(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": DEALS + "\n"})
    with pytest.raises(IngestError, match=r"deals\.csv has a header but no data rows"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_header_only_optional_tables_load_empty_with_a_warning(tmp_path: Path) -> None:
    folder = source_dir(
        tmp_path,
        {
            "deals.csv": GOOD,
            "activities.csv": "activity_id,occurred_at,owner_id,type\n",
            "stage_history.csv": "deal_id,changed_at,stage\n",
        },
    )
    store = Store(tmp_path / "data")
    report = ingest_sources([folder], store=store)
    assert report.counts("activities").read == 0
    assert (
        f"{folder / 'activities.csv'} has a header but no rows: activities loaded as an empty table"
        in report.warnings
    )
    # an empty history would hide every deal's stage: the store derives one instead
    assert any("no stage_history row was loaded" in w for w in report.warnings)
    history = store.load()
    assert "activities" in history.has and history.activities.collect().height == 0
    assert history.history_is_derived
    assert history.stage_history.collect().height == 2


def test_utf16_file_fails_with_reexport_advice(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": GOOD.encode("utf-16")})
    with pytest.raises(IngestError, match=r"encoded as UTF-16, not UTF-8: re-export it as UTF-8"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_utf16_without_bom_fails(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": GOOD.encode("utf-16-le")})
    with pytest.raises(
        IngestError, match=r"looks UTF-16 encoded, not UTF-8; re-export it as UTF-8"
    ):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_latin1_file_fails_with_reexport_advice(tmp_path: Path) -> None:
    rows = "".join(f"D{i},2024-01-05,José Müller {i},Discovery,100\n" for i in range(10))
    folder = source_dir(tmp_path, {"deals.csv": (DEALS + rows).encode("latin-1")})
    with pytest.raises(IngestError) as caught:
        ingest_sources([folder], store=Store(tmp_path / "data"))
    assert "is not UTF-8: 10 of 10 rows hold bytes that are not UTF-8" in str(caught.value)
    assert str(caught.value).endswith("re-export it as UTF-8")


def test_semicolon_delimited_file_fails(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": GOOD.replace(",", ";")})
    with pytest.raises(IngestError, match=r"separated by semicolons, not commas; re-export"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_row_with_more_fields_than_the_header_fails_naming_the_row(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": GOOD + "D3,2024-01-07,r3,Demo,1,200\n"})
    with pytest.raises(IngestError, match=r"more fields than the header \(data row 3\)"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_no_deals_file_fails(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"activities.csv": "activity_id\nA1\n"})
    with pytest.raises(IngestError, match=r"no deals table in .*deals\.csv or deals\.parquet"):
        ingest_sources([folder], store=Store(tmp_path / "data"))


def test_bad_mapping_values_fail(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": GOOD})
    store = Store(tmp_path / "data")
    with pytest.raises(IngestError, match=r"'deal_idd' is not a column of deals; map one of"):
        ingest_sources([folder], store=store, mapping=["deal_idd=X"])
    with pytest.raises(
        IngestError, match=r"column 'Deal' \(mapped to deal_id\) is not in the file"
    ):
        ingest_sources([folder], store=store, mapping=["deal_id=Deal"])
    with pytest.raises(IngestError, match=r"expected a TOML mapping file or target=source"):
        ingest_sources([folder], store=store, mapping=["nonsense"])


def test_bad_pipeline_config_fails(tmp_path: Path) -> None:
    folder = source_dir(tmp_path, {"deals.csv": GOOD})
    config = tmp_path / "p.toml"
    config.write_text('[[stages]]\nname = "A"\nkind = "open"\n', encoding="utf-8")
    with pytest.raises(
        IngestError, match=r"not a valid pipeline config .*needs at least one 'won'"
    ):
        ingest_sources([folder], store=Store(tmp_path / "data"), pipeline_path=config)


def _snapshot(store: Store) -> tuple[str, list[str], dict[str, pl.DataFrame]]:
    link = os.readlink(store.current_link)
    versions = sorted(p.name for p in store.versions.iterdir())
    loaded = store.load()
    frames = {
        "deals": loaded.deals.collect(),
        "stage_history": loaded.stage_history.collect(),
    }
    return link, versions, frames


@pytest.mark.parametrize(
    "bad",
    [
        {"deals.csv": b""},
        {"deals.csv": DEALS},
        {"deals.csv": "deal_id,owner_id\nD9,r9\n"},
        {"deals.csv": GOOD.encode("utf-16")},
        {"deals.csv": GOOD.replace(",", ";")},
    ],
    ids=["empty", "header-only", "missing-column", "utf16", "semicolons"],
)
def test_failed_ingest_leaves_the_store_unchanged(tmp_path: Path, bad: dict[str, bytes]) -> None:
    store = Store(tmp_path / "data")
    good = source_dir(tmp_path / "good", {"deals.csv": GOOD})
    ingest_sources([good], store=store)
    before = _snapshot(store)
    broken = source_dir(tmp_path / "bad", bad)
    with pytest.raises(IngestError):
        ingest_sources([broken], store=store)
    after = _snapshot(store)
    assert after[:2] == before[:2]
    for table, frame in before[2].items():
        assert_frame_equal(after[2][table], frame)
    assert not (tmp_path / "data" / "quarantine").exists()
