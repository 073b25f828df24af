"""Each source format end to end: small realistic exports -> the canonical tables stored."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.contract import DEFAULT_PIPELINE, SCHEMAS, PipelineConfig, Stage, conform
from features.store import Store
from pipelines.ingest import IngestError, IngestReport, ingest_sources

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def lines(report: IngestReport) -> list[tuple[str, int, str, str | None, str]]:
    assert report.quarantine_file is not None
    frame = pl.read_csv(report.quarantine_file, infer_schema=False)
    return [(t, int(n), c, v, r) for _, t, n, c, v, r in frame.iter_rows()]


# -- canonical --------------------------------------------------------------------------------


def test_canonical_parquet_with_truth_and_pipeline(tmp_path: Path) -> None:
    source = tmp_path / "sim"
    source.mkdir()
    paris = ZoneInfo("Europe/Paris")
    pl.DataFrame(
        {
            "deal_id": ["D1", "D2"],
            "created_at": [
                datetime(2024, 1, 5, 10, tzinfo=paris),
                datetime(2024, 1, 6, tzinfo=paris),
            ],
            "owner_id": ["r1", "r2"],
            "stage": ["Won", "Pitch"],
            "amount": [100, 250],  # integers: cast to float
            "expected_close_date": [None, date(2024, 3, 1)],
            "closed_at": [datetime(2024, 2, 1, 12, tzinfo=paris), None],
            "region": ["EMEA", "NA"],
        }
    ).write_parquet(source / "deals.parquet")
    pl.DataFrame(
        {
            "deal_id": ["D1", "D1", "D2"],
            "changed_at": [
                datetime(2024, 1, 5, 9),
                datetime(2024, 2, 1, 11),
                datetime(2024, 1, 5, 23),
            ],
            "stage": ["Pitch", "Won", "Pitch"],
        }
    ).write_parquet(source / "stage_history.parquet")
    truth = pl.DataFrame({"deal_id": ["D2"], "probability": [0.25]})
    truth.write_parquet(source / "truth_probabilities.parquet")
    config = PipelineConfig(
        (Stage("Pitch", "open", 0.3), Stage("Won", "won"), Stage("Gone", "lost"))
    )
    (source / "pipeline.toml").write_text(config.to_toml(), encoding="utf-8")

    store = Store(tmp_path / "data")
    report = ingest_sources([source], store=store)

    assert report.quarantine_file is None
    assert report.pipeline_origin == str(source / "pipeline.toml")
    stored = store.load()
    assert stored.pipeline == config
    deals = stored.deals.collect()
    assert deals.select("deal_id", "created_at", "amount", "closed_at", "region").rows() == [
        ("D1", ts("2024-01-05T09:00:00"), 100.0, ts("2024-02-01T11:00:00"), "EMEA"),
        ("D2", ts("2024-01-05T23:00:00"), 250.0, None, "NA"),
    ]
    # naive timestamps are UTC
    assert stored.stage_history.collect()["changed_at"].to_list() == [
        ts("2024-01-05T09:00:00"),
        ts("2024-02-01T11:00:00"),
        ts("2024-01-05T23:00:00"),
    ]
    stored_truth = store.truth("truth_probabilities")
    assert stored_truth is not None
    assert_frame_equal(stored_truth.collect(), truth)
    manifest = store.manifest()
    assert manifest["ingest"]["tables"]["deals"] == {
        "source": str(source / "deals.parquet"),
        "read": 2,
        "loaded": 2,
        "quarantined": 0,
    }


def test_canonical_files_named_directly(tmp_path: Path) -> None:
    deals = tmp_path / "deals.csv"
    deals.write_text(
        "deal_id,created_at,owner_id,stage,amount\nD1,2024-01-05,r1,Demo,10\n", encoding="utf-8"
    )
    other = tmp_path / "export.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    report = ingest_sources([deals], store=Store(tmp_path / "data"))
    assert report.counts("deals").loaded == 1
    assert report.pipeline_origin.startswith("the default pipeline")
    with pytest.raises(IngestError, match=r"export\.csv: not a canonical table name"):
        ingest_sources([deals, other], store=Store(tmp_path / "data"))


# -- flat -------------------------------------------------------------------------------------


def test_flat_export_with_mapping_file_and_date_format(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    report = ingest_sources(
        [FIXTURES / "flat" / "opportunities.csv"],
        store=store,
        source_format="flat",
        mapping=[str(FIXTURES / "flat" / "mapping.toml")],
        pipeline_path=FIXTURES / "flat" / "stages.toml",
    )
    assert [(c.table, c.read, c.loaded, c.quarantined) for c in report.tables] == [
        ("deals", 6, 5, 1)
    ]
    assert lines(report) == [("deals", 6, "Amount", "abc", "not a finite number")]
    assert any("'Next Step'" in w and "not mapped" in w for w in report.warnings)
    stored = store.load()
    assert stored.history_is_derived
    deals = stored.deals.collect()
    assert deals.select(
        "deal_id",
        "owner_id",
        "stage",
        "amount",
        "created_at",
        "expected_close_date",
        "closed_at",
        "region",
        "product",
    ).rows() == [
        (
            "OPP-1",
            "alice",
            "Prospect",
            12000.0,
            ts("2024-01-05"),
            date(2024, 2, 28),
            None,
            "EMEA",
            "Core",
        ),
        ("OPP-2", "bob", "Won", 8000.0, ts("2024-01-10"), None, ts("2024-02-15"), "NA", "Add-on"),
        (
            "OPP-3",
            "alice",
            "Lost",
            5000.0,
            ts("2024-01-12"),
            None,
            ts("2024-02-20"),
            "EMEA",
            "Core",
        ),
        (
            "OPP-4",
            "carol",
            "Proposal Sent",
            20000.0,
            ts("2024-02-01"),
            date(2024, 3, 31),
            None,
            "APAC",
            "Suite",
        ),
        (
            "OPP-5",
            "carol",
            "Prospect",
            7000.0,
            ts("2024-02-03"),
            date(2024, 4, 30),
            None,
            "APAC",
            "Core",
        ),
    ]


def test_flat_export_with_map_flags_and_canonical_looking_names(tmp_path: Path) -> None:
    export = tmp_path / "report.csv"
    export.write_text(
        "Deal ID,Owner,Stage,Amount,Created At,Closing,Segment\n"
        "X1,ann,Discovery,$1,200.00,2024-01-05,2024-02-01,SMB\n".replace("$1,200.00", '"$1,200.00"')
        + "X2,ann,Closed Won,300,2024-01-06,2024-02-02 13:00,Enterprise\n",
        encoding="utf-8",
    )
    store = Store(tmp_path / "data")
    report = ingest_sources(
        [export],
        store=store,
        source_format="flat",
        mapping=["owner_id=Owner", "close_date=Closing"],
    )
    assert report.quarantine_file is None
    deals = store.load().deals.collect()
    assert deals.select(
        "deal_id", "owner_id", "amount", "expected_close_date", "closed_at", "segment"
    ).rows() == [
        ("X1", "ann", 1200.0, date(2024, 2, 1), None, "SMB"),
        ("X2", "ann", 300.0, None, ts("2024-02-02T13:00:00"), "Enterprise"),
    ]


# -- Salesforce -------------------------------------------------------------------------------


def test_salesforce_opportunities_and_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    report = ingest_sources([FIXTURES / "salesforce"], store=store, source_format="salesforce")
    assert [(c.table, c.read, c.loaded, c.quarantined) for c in report.tables] == [
        ("deals", 8, 5, 3),
        ("stage_history", 13, 10, 3),
    ]
    unknown = "history row for unknown deal '{}' (not among the loaded deals)"
    assert lines(report) == [
        ("deals", 5, "IsWon", "false", "IsWon is false but stage 'Closed Won' is a won stage"),
        ("deals", 6, "IsDeleted", "true", "deleted in the CRM (IsDeleted is true)"),
        ("deals", 7, "CloseDate", None, "closed deal (stage 'Closed Lost') without a close date"),
        ("stage_history", 11, "OpportunityId", "0061x00000A9", unknown.format("0061x00000A9")),
        (
            "stage_history",
            12,
            "CreatedDate",
            "2024-01-15T08:00:00.000Z",
            "history out of order: changed_at 2024-01-15T08:00:00Z is before the deal's "
            "created_at 2024-02-01T08:00:00Z",
        ),
        # A5 is in the export but was quarantined (IsWon contradicts its stage)
        ("stage_history", 13, "OpportunityId", "0061x00000A5", unknown.format("0061x00000A5")),
    ]
    stored = store.load()
    deals = stored.deals.collect()
    assert deals.select(
        "deal_id",
        "stage",
        "closed_at",
        "expected_close_date",
        "crm_probability",
        "forecast_category",
        "deal_type",
        "source",
        "account_id",
    ).rows() == [
        # closed on CloseDate 03-28 but recorded in the history on 03-29 17:05: the later one
        (
            "0061x00000A1",
            "Closed Won",
            ts("2024-03-29T17:05:00"),
            None,
            1.0,
            None,
            "new",
            "Web",
            "0011x001",
        ),
        (
            "0061x00000A2",
            "Closed Lost",
            ts("2024-02-15T09:30:00"),
            None,
            0.0,
            "omitted",
            "renewal",
            "Partner Referral",
            "0011x002",
        ),
        (
            "0061x00000A3",
            "Negotiation/Review",
            None,
            date(2024, 5, 31),
            0.9,
            "commit",
            "expansion",
            "Phone Inquiry",
            "0011x003",
        ),
        (
            "0061x00000A4",
            "Discovery Call",
            None,
            date(2024, 6, 30),
            0.15,
            "pipeline",
            "new",
            "Web",
            "0011x004",
        ),
        (
            "0061x00000A8",
            "Closed - Duplicate",
            ts("2024-03-20T00:00:00"),
            None,
            0.0,
            "omitted",
            "new",
            "Web",
            "0011x004",
        ),
    ]
    history = stored.stage_history.collect()
    assert history.filter(pl.col("deal_id") == "0061x00000A3").select(
        "changed_at", "stage", "amount", "expected_close_date", "forecast_category"
    ).rows() == [
        (ts("2024-02-01T08:00:00"), "Prospecting", 25000.0, date(2024, 4, 30), "pipeline"),
        (ts("2024-02-20T08:00:00"), "Discovery Call", 25000.0, date(2024, 4, 30), "pipeline"),
        (ts("2024-04-02T08:00:00"), "Negotiation/Review", 30000.0, date(2024, 5, 31), "commit"),
    ]
    # stages the org added: kind from IsClosed/IsWon, place from the history, probability
    pipeline = stored.pipeline
    assert pipeline.open_stages[:3] == ("Prospecting", "Discovery Call", "Qualification")
    assert pipeline.kind_of("Closed - Duplicate") == "lost"
    assert [s.probability for s in pipeline.stages if s.name == "Discovery Call"] == [0.15]
    assert any(
        "'Discovery Call' (open, after 'Prospecting', probability 0.15)" in w
        and "'Closed - Duplicate' (lost, from IsClosed/IsWon, probability 0)" in w
        for w in report.warnings
    )


def test_salesforce_with_an_explicit_pipeline_and_opportunities_only(tmp_path: Path) -> None:
    only = tmp_path / "Opportunity.csv"
    shutil.copy(FIXTURES / "salesforce" / "Opportunity.csv", only)
    config = tmp_path / "stages.toml"
    config.write_text(DEFAULT_PIPELINE.to_toml(), encoding="utf-8")
    store = Store(tmp_path / "data")
    report = ingest_sources([only], store=store, source_format="salesforce", pipeline_path=config)
    assert report.table_names == ("deals",)
    pipeline = store.load().pipeline
    # the default pipeline lacks Negotiation/Review, Discovery Call, Prospecting and
    # Closed - Duplicate; without history their place comes from the Probability column
    # (10 -> after Qualification's 0.1, 15 -> next, 90 -> after Negotiation's 0.8)
    assert pipeline.open_stages == (
        "Qualification",
        "Prospecting",
        "Discovery Call",
        "Discovery",
        "Demo",
        "Proposal",
        "Negotiation",
        "Negotiation/Review",
    )
    assert report.counts("deals").loaded == 5


# -- HubSpot ----------------------------------------------------------------------------------


def test_hubspot_deals_export(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    report = ingest_sources([FIXTURES / "hubspot"], store=store, source_format="hubspot")
    assert [(c.table, c.read, c.loaded, c.quarantined) for c in report.tables] == [
        ("deals", 7, 4, 3)
    ]
    assert lines(report) == [
        ("deals", 4, "Close Date", None, "closed deal (stage 'Closed Lost') without a close date"),
        (
            "deals",
            5,
            "Close Date",
            "2024-02-28 12:00",
            "closed_at 2024-02-28T12:00:00Z is before created_at 2024-03-01T12:00:00Z",
        ),
        (
            "deals",
            7,
            "Deal Stage",
            "Negotiation",
            "unknown stage 'Negotiation': not in the pipeline config",
        ),
    ]
    stored = store.load()
    assert stored.pipeline.open_stages[0] == "Appointment Scheduled"
    deals = stored.deals.collect()
    assert deals.select(
        "deal_id",
        "owner_id",
        "stage",
        "amount",
        "created_at",
        "expected_close_date",
        "closed_at",
        "deal_type",
    ).rows() == [
        (
            "9001",
            "Jane Doe",
            "Closed Won",
            12000.0,
            ts("2024-01-05T09:12:00"),
            None,
            ts("2024-02-20T16:40:00"),
            "expansion",
        ),
        (
            "9002",
            "John Roe",
            "Appointment Scheduled",
            5000.0,
            ts("2024-02-01T10:00:00"),
            date(2024, 4, 30),
            None,
            "new",
        ),
        (
            "9003",
            "Jane Doe",
            "Decision Maker Bought-In",
            None,
            ts("2024-02-03T11:30:00"),
            date(2024, 5, 15),
            None,
            "new",
        ),
        (
            "9006",
            "Max Mustermann",
            "Contract Sent",
            20000.0,
            ts("2024-03-02T09:00:00"),
            date(2024, 6, 30),
            None,
            "expansion",
        ),
    ]
    assert any("1 deal without an amount" in w for w in report.warnings)


def test_hubspot_missing_column_names_the_hubspot_field(tmp_path: Path) -> None:
    export = tmp_path / "deals.csv"
    export.write_text(
        "Record ID,Deal Stage,Amount,Deal owner\n1,Closed Won,5,Ann\n", encoding="utf-8"
    )
    with pytest.raises(IngestError) as caught:
        ingest_sources([export], store=Store(tmp_path / "data"), source_format="hubspot")
    assert (
        "required column 'created_at' of deals is missing: the file has no 'Create Date' column."
        in str(caught.value)
    )
    assert "--map created_at=<your column name>" in str(caught.value)


def test_hubspot_internal_names_deal_id_and_iso_dates(tmp_path: Path) -> None:
    export = tmp_path / "deals.csv"
    export.write_text(
        "Deal ID,Deal Stage,Amount,Create Date,Close Date,Deal owner,Deal Type\n"
        "77,closedlost,900,2024-01-02T08:00:00Z,2024-01-20T10:00:00Z,Ann,newbusiness\n"
        "78,qualifiedtobuy,400,2024-01-03,2024-02-01,Ann,existingbusiness\n",
        encoding="utf-8",
    )
    store = Store(tmp_path / "data")
    report = ingest_sources([export], store=store, source_format="hubspot")
    assert report.quarantine_file is None
    deals = store.load().deals.collect()
    assert deals.select(
        "deal_id", "stage", "closed_at", "expected_close_date", "deal_type"
    ).rows() == [
        ("77", "Closed Lost", ts("2024-01-20T10:00:00"), None, "new"),
        ("78", "Qualified To Buy", None, date(2024, 2, 1), "expansion"),
    ]


def test_canonical_csv_round_trip_equals_the_frames_written(tmp_path: Path) -> None:
    """Frames in the canonical schema, written as CSV by polars, come back identical."""
    frames = {
        "deals": pl.DataFrame(
            {
                "deal_id": ["D1", "D2", "D3"],
                "created_at": [
                    ts("2024-01-05T10:11:12.345678"),
                    ts("2024-01-06"),
                    ts("2024-01-07"),
                ],
                "owner_id": ["r1", "r2", "r1"],
                "stage": ["Closed Won", "Demo", "Closed Lost"],
                "amount": [1234.5, None, 0.0],
                "expected_close_date": [date(2024, 2, 1), date(2024, 3, 1), None],
                "closed_at": [ts("2024-02-02T09:00:00"), None, ts("2024-01-20T00:00:01")],
                "region": ["NA", "EMEA, North", None],
                "deal_type": ["new", "renewal", "expansion"],
                "lost_reason": [None, None, 'said "no"'],
                "forecast_category": [None, "commit", None],
                "crm_probability": [1.0, 0.4, 0.0],
            }
        ),
        "stage_history": pl.DataFrame(
            {
                "deal_id": ["D1", "D1", "D2", "D3", "D3"],
                "changed_at": [
                    ts("2024-01-05T10:11:12.345678"),
                    ts("2024-02-02T09:00:00"),
                    ts("2024-01-06"),
                    ts("2024-01-07"),
                    ts("2024-01-20T00:00:01"),
                ],
                "stage": ["Qualification", "Closed Won", "Demo", "Qualification", "Closed Lost"],
                "amount": [1000.0, 1234.5, None, 5.0, 0.0],
                "expected_close_date": [date(2024, 2, 1), None, date(2024, 3, 1), None, None],
                "forecast_category": ["pipeline", None, "commit", "omitted", None],
            }
        ),
        "activities": pl.DataFrame(
            {
                "activity_id": ["A1", "A2"],
                "occurred_at": [ts("2024-01-08T08:00:00"), ts("2024-01-09T08:00:00")],
                "owner_id": ["r1", "r2"],
                "type": ["demo", "email"],
                "deal_id": ["D1", None],
                "account_id": [None, "acc-9"],
            }
        ),
        "reps": pl.DataFrame(
            {"owner_id": ["r1", "r2"], "name": ["Ann", "Bo"], "hired_at": [date(2020, 1, 1), None]}
        ),
        "targets": pl.DataFrame(
            {
                "period": ["2024-01", "2024-01"],
                "scope_type": ["company", "owner"],
                "scope_id": ["acme", "r1"],
                "amount": [10000.0, 2500.0],
            }
        ),
    }
    expected = {name: conform(frame, name).collect() for name, frame in frames.items()}
    source = tmp_path / "src"
    source.mkdir()
    for name, frame in expected.items():
        frame.write_csv(source / f"{name}.csv")
    store = Store(tmp_path / "data")
    report = ingest_sources([source], store=store)
    assert report.quarantine_file is None
    stored = store.load()
    for name in SCHEMAS:
        assert_frame_equal(getattr(stored, name).collect(), expected[name], check_row_order=False)


def test_mapping_file_with_tables_renames_other_tables_columns(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "deals.csv").write_text(
        "Id,created_at,owner_id,stage,amount\nD1,2024-01-05,r1,Demo,10\n", encoding="utf-8"
    )
    (source / "stage_history.csv").write_text(
        "deal_id,When,stage\nD1,2024-01-05,Demo\n", encoding="utf-8"
    )
    mapping = tmp_path / "map.toml"
    mapping.write_text(
        '[columns]\ndeal_id = "Id"\n[columns.stage_history]\nchanged_at = "When"\n',
        encoding="utf-8",
    )
    store = Store(tmp_path / "data")
    ingest_sources([source], store=store, mapping=[str(mapping)])
    assert store.load().stage_history.collect()["changed_at"].to_list() == [ts("2024-01-05")]


def test_salesforce_parquet_export_gives_the_same_tables_as_csv(tmp_path: Path) -> None:
    typed = tmp_path / "sf"
    typed.mkdir()
    for name in ("Opportunity", "OpportunityHistory"):
        frame = pl.read_csv(FIXTURES / "salesforce" / f"{name}.csv", try_parse_dates=True)
        frame.write_parquet(typed / f"{name}.parquet")
    opportunities = pl.read_parquet(typed / "Opportunity.parquet")
    assert opportunities.schema["Probability"] == pl.Int64  # typed, still 0-100
    assert opportunities.schema["IsWon"] == pl.Boolean
    from_csv, from_parquet = Store(tmp_path / "csv"), Store(tmp_path / "parquet")
    ingest_sources([FIXTURES / "salesforce"], store=from_csv, source_format="salesforce")
    report = ingest_sources([typed], store=from_parquet, source_format="salesforce")
    assert [(c.read, c.loaded, c.quarantined) for c in report.tables] == [(8, 5, 3), (13, 10, 3)]
    for table in ("deals", "stage_history"):
        assert_frame_equal(
            getattr(from_parquet.load(), table).collect(),
            getattr(from_csv.load(), table).collect(),
        )
