"""Row checks of ``dealcast ingest``: each bad row lands in the quarantine file with its reason.

Every test writes a few canonical CSV rows, ingests them and asserts the exact quarantine
lines (table, row number, column, value, reason), what was stored, and the warnings.
"""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from textwrap import dedent

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import DEFAULT_PIPELINE, DealHistory
from features.store import Store
from pipelines.ingest import IngestReport, ingest_sources

DEALS = "deal_id,created_at,owner_id,stage,amount,expected_close_date,closed_at\n"
Line = tuple[str, int, str, str | None, str]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run(
    tmp_path: Path, tables: dict[str, str], **kwargs: object
) -> tuple[IngestReport, list[Line], DealHistory]:
    """Write ``<table>.csv`` files, ingest the directory, return report, lines, stored data."""
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    for table, text in tables.items():
        (source / f"{table}.csv").write_text(dedent(text).lstrip(), encoding="utf-8")
    store = Store(tmp_path / "data")
    report = ingest_sources([source], store=store, **kwargs)  # type: ignore[arg-type]
    return report, quarantine_lines(report), store.load()


def quarantine_lines(report: IngestReport) -> list[Line]:
    if report.quarantine_file is None:
        return []
    frame = pl.read_csv(report.quarantine_file, infer_schema=False)
    assert frame.columns == ["source_file", "table", "row_number", "column", "value", "reason"]
    return [(t, int(n), c, v, r) for _, t, n, c, v, r in frame.iter_rows()]


def counts(report: IngestReport, table: str) -> tuple[int, int, int]:
    entry = report.counts(table)
    return entry.read, entry.loaded, entry.quarantined


def ids(history: DealHistory) -> list[str]:
    return history.deals.collect().get_column("deal_id").to_list()


# -- deals ------------------------------------------------------------------------------------


def test_unparseable_date_and_number_are_quarantined(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,2024-01-05,r1,Discovery,100,2024-03-01,\n"
            + "D2,2024-02-30,r1,Discovery,100,2024-03-01,\n"
            + "D3,2024-01-05,r1,Discovery,12k,2024-03-01,\n"
            + "D4,2024-01-05,r1,Discovery,100,31/03/2024,\n"
        },
    )
    assert lines == [
        (
            "deals",
            2,
            "created_at",
            "2024-02-30",
            "not a date/time (expected ISO 8601 like 2024-03-05T14:22:00Z)",
        ),
        ("deals", 3, "amount", "12k", "not a finite number"),
        (
            "deals",
            4,
            "expected_close_date",
            "31/03/2024",
            "not a date (expected ISO 8601 like 2024-03-05)",
        ),
    ]
    assert ids(stored) == ["D1"]
    assert counts(report, "deals") == (4, 1, 3)


def test_date_format_is_tried_before_iso(tmp_path: Path) -> None:
    _, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,05/01/2024,r1,Discovery,100,31/03/2024,\n"
            + "D2,2024-01-06T10:00:00+02:00,r1,Discovery,100,2024-03-31,\n"
        },
        date_format="%d/%m/%Y",
    )
    assert lines == []
    deals = stored.deals.collect().sort("deal_id")
    assert deals["created_at"].to_list() == [ts("2024-01-05T00:00:00"), ts("2024-01-06T08:00:00")]
    assert deals["expected_close_date"].to_list() == [date(2024, 3, 31)] * 2


def test_negative_amount_is_quarantined(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {"deals": DEALS + "D1,2024-01-05,r1,Discovery,-5,2024-03-01,\n"},
    )
    assert lines == [("deals", 1, "amount", "-5", "negative amount")]
    assert counts(report, "deals") == (1, 0, 1)


def test_duplicate_deal_id_keeps_the_first_row(tmp_path: Path) -> None:
    _, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,2024-01-05,r1,Discovery,100,2024-03-01,\n"
            + "D2,2024-01-05,r1,Discovery,200,2024-03-01,\n"
            + "D1,2024-01-06,r2,Demo,300,2024-03-01,\n"
            + "D1,2024-01-07,r3,Demo,400,2024-03-01,\n"
        },
    )
    assert lines == [
        ("deals", 3, "deal_id", "D1", "duplicate deal_id, first seen at row 1"),
        ("deals", 4, "deal_id", "D1", "duplicate deal_id, first seen at row 1"),
    ]
    deals = stored.deals.collect().sort("deal_id")
    assert deals.select("deal_id", "owner_id", "amount").rows() == [
        ("D1", "r1", 100.0),
        ("D2", "r1", 200.0),
    ]


def test_unknown_stages_are_listed_with_a_config_snippet_that_fixes_them(tmp_path: Path) -> None:
    deals = (
        DEALS
        + "D1,2024-01-05,r1,Discovery,100,2024-03-01,\n"
        + "D2,2024-01-05,r1,Negotiating,100,2024-03-01,\n"
        + "D3,2024-01-05,r1,Negotiating,100,2024-03-01,\n"
        + "D4,2024-01-05,r1,Signed,100,,2024-02-01\n"
    )
    report, lines, _ = run(tmp_path, {"deals": deals})
    assert lines == [
        (
            "deals",
            2,
            "stage",
            "Negotiating",
            "unknown stage 'Negotiating': not in the pipeline config",
        ),
        (
            "deals",
            3,
            "stage",
            "Negotiating",
            "unknown stage 'Negotiating': not in the pipeline config",
        ),
        ("deals", 4, "stage", "Signed", "unknown stage 'Signed': not in the pipeline config"),
    ]
    [warning] = [w for w in report.warnings if w.startswith("unknown stages")]
    assert "'Negotiating' (2 rows), 'Signed' (1 row)" in warning
    assert "--pipeline FILE" in warning
    snippet = warning.split("--pipeline FILE:\n", 1)[1]
    assert '[[stages]]\nname = "Negotiating"\nkind = "open"' in snippet
    assert '[[stages]]\nname = "Signed"\nkind = "won"' in snippet
    # the suggested TOML, added to the config in use, makes every row load
    config = tmp_path / "stages.toml"
    config.write_text(DEFAULT_PIPELINE.to_toml() + "\n" + snippet + "\n", encoding="utf-8")
    again = ingest_sources([tmp_path / "src"], store=Store(tmp_path / "data"), pipeline_path=config)
    assert counts(again, "deals") == (4, 4, 0)
    assert Store(tmp_path / "data").load().pipeline.kind_of("Signed") == "won"


def test_stage_names_differing_only_in_case_or_punctuation_are_the_configured_stage(
    tmp_path: Path,
) -> None:
    _, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,2024-01-05,r1,closed won,100,,2024-02-01T10:00:00Z\n"
            + "D2,2024-01-05,r1,CLOSED-LOST,100,,2024-02-01T10:00:00Z\n"
            + "D3,2024-01-05,r1,discovery,100,2024-03-01,\n"
        },
    )
    assert lines == []
    assert stored.deals.collect().sort("deal_id")["stage"].to_list() == [
        "Closed Won",
        "Closed Lost",
        "Discovery",
    ]


def test_closed_deal_without_close_date_is_quarantined(tmp_path: Path) -> None:
    _, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,2024-01-05,r1,Closed Won,100,2024-03-01,\n"
            + "D2,2024-01-05,r1,Closed Lost,100,,2024-02-01\n"
        },
    )
    assert lines == [
        ("deals", 1, "closed_at", None, "closed deal (stage 'Closed Won') without a close date")
    ]
    assert ids(stored) == ["D2"]


def test_close_before_create_is_quarantined(tmp_path: Path) -> None:
    _, lines, stored = run(
        tmp_path,
        {"deals": DEALS + "D1,2024-03-05T10:00:00Z,r1,Closed Won,100,,2024-03-01T09:00:00Z\n"},
    )
    assert lines == [
        (
            "deals",
            1,
            "closed_at",
            "2024-03-01T09:00:00Z",
            "closed_at 2024-03-01T09:00:00Z is before created_at 2024-03-05T10:00:00Z",
        )
    ]
    assert ids(stored) == []


def test_empty_required_values_are_quarantined_once_per_row(tmp_path: Path) -> None:
    report, lines, _ = run(
        tmp_path,
        {
            "deals": DEALS
            + ",2024-01-05,r1,Discovery,100,2024-03-01,\n"
            + "D2,,,Discovery,100,2024-03-01,\n"
            + "D3,2024-01-05,r1,,100,2024-03-01,\n"
        },
    )
    assert lines == [
        ("deals", 1, "deal_id", None, "deal_id is empty"),
        ("deals", 2, "created_at", None, "created_at is empty"),
        ("deals", 2, "owner_id", None, "owner_id is empty"),
        ("deals", 3, "stage", None, "stage is empty"),
    ]
    # row 2 has two problems: two quarantine lines, one quarantined row
    assert counts(report, "deals") == (3, 0, 3)


def test_null_amount_and_missing_expected_close_are_loaded_with_warnings(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,2024-01-05,r1,Discovery,,2024-03-01,\n"
            + "D2,2024-01-05,r1,Discovery,100,,\n"
            + "D3,2024-01-05,r1,Demo,,,\n"
        },
    )
    assert lines == []
    assert counts(report, "deals") == (3, 3, 0)
    label = str(tmp_path / "src" / "deals.csv")
    assert f"{label}: 2 deals without an amount (loaded)" in report.warnings
    assert f"{label}: 2 open deals without an expected_close_date (loaded)" in report.warnings


def test_open_deal_with_closed_at_keeps_it_as_expected_close_date(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS
            + "D1,2024-01-05,r1,Discovery,100,,2024-04-30\n"
            + "D2,2024-01-05,r1,Discovery,100,2024-03-31,2024-04-30\n"
        },
    )
    assert lines == []
    deals = stored.deals.collect().sort("deal_id")
    assert deals["closed_at"].to_list() == [None, None]
    assert deals["expected_close_date"].to_list() == [date(2024, 4, 30), date(2024, 3, 31)]
    label = tmp_path / "src" / "deals.csv"
    assert (
        f"{label}: 2 open deals with a closed_at; an open deal is not closed, so it was read as "
        "the expected close date (1) or dropped where the deal has one (1)"
    ) in report.warnings


def test_probability_deal_type_and_forecast_category_values(tmp_path: Path) -> None:
    header = (
        "deal_id,created_at,owner_id,stage,amount,crm_probability,deal_type,forecast_category\n"
    )
    _, lines, stored = run(
        tmp_path,
        {
            "deals": header
            + "D1,2024-01-05,r1,Discovery,100,0.2,New Business,Best Case\n"
            + "D2,2024-01-05,r1,Discovery,100,60%,Renewal,commit\n"
            + "D3,2024-01-05,r1,Discovery,100,60,new,pipeline\n"
            + "D4,2024-01-05,r1,Discovery,100,0.5,Partnership,pipeline\n"
            + "D5,2024-01-05,r1,Discovery,100,0.5,new,Upside Maybe\n"
        },
    )
    assert lines == [
        (
            "deals",
            3,
            "crm_probability",
            "60",
            "crm_probability 60.0 is outside 0..1 (write 0.6 or 60%)",
        ),
        (
            "deals",
            4,
            "deal_type",
            "Partnership",
            "deal_type 'Partnership' is not new, expansion or renewal",
        ),
        (
            "deals",
            5,
            "forecast_category",
            "Upside Maybe",
            "forecast_category 'Upside Maybe' is not pipeline, best_case, commit or omitted",
        ),
    ]
    deals = stored.deals.collect().sort("deal_id")
    assert deals.select("crm_probability", "deal_type", "forecast_category").rows() == [
        (0.2, "new", "best_case"),
        (0.6, "renewal", "commit"),
    ]


# -- stage history ----------------------------------------------------------------------------

HISTORY = "deal_id,changed_at,stage,amount\n"
TWO_DEALS = (
    DEALS
    + "D1,2024-01-05T09:00:00Z,r1,Closed Won,100,,2024-02-10T12:00:00Z\n"
    + "D2,2024-01-06T09:00:00Z,r1,Demo,50,2024-03-01,\n"
    + "D3,2024-01-07T09:00:00Z,r1,Demo,-1,2024-03-01,\n"
)


def test_history_rows_for_unknown_deals_are_quarantined(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": TWO_DEALS,
            "stage_history": HISTORY
            + "D2,2024-01-06T09:00:00Z,Qualification,50\n"
            + "D9,2024-01-06T09:00:00Z,Qualification,50\n"
            + "D3,2024-01-07T09:00:00Z,Qualification,50\n",
        },
    )
    history_lines = [line for line in lines if line[0] == "stage_history"]
    assert history_lines == [
        (
            "stage_history",
            2,
            "deal_id",
            "D9",
            "history row for unknown deal 'D9' (not among the loaded deals)",
        ),
        # D3 exists in the file but was quarantined (negative amount): not loaded
        (
            "stage_history",
            3,
            "deal_id",
            "D3",
            "history row for unknown deal 'D3' (not among the loaded deals)",
        ),
    ]
    assert counts(report, "stage_history") == (3, 1, 2)


def test_history_out_of_order_is_quarantined(tmp_path: Path) -> None:
    _, lines, stored = run(
        tmp_path,
        {
            "deals": TWO_DEALS,
            "stage_history": HISTORY
            + "D1,2024-01-05T09:00:00Z,Qualification,100\n"
            + "D1,2024-01-04T23:59:00Z,Qualification,100\n"
            + "D1,2024-02-10T12:00:00Z,Closed Won,100\n"
            + "D1,2024-02-11T08:00:00Z,Closed Won,120\n",
        },
    )
    assert [line for line in lines if line[0] == "stage_history"] == [
        (
            "stage_history",
            2,
            "changed_at",
            "2024-01-04T23:59:00Z",
            "history out of order: changed_at 2024-01-04T23:59:00Z is before the deal's "
            "created_at 2024-01-05T09:00:00Z",
        ),
        (
            "stage_history",
            4,
            "changed_at",
            "2024-02-11T08:00:00Z",
            "history out of order: changed_at 2024-02-11T08:00:00Z is after the deal's "
            "closed_at 2024-02-10T12:00:00Z",
        ),
    ]
    assert stored.stage_history.collect().height == 2


def test_history_unknown_stage_and_unsorted_rows(tmp_path: Path) -> None:
    _, lines, stored = run(
        tmp_path,
        {
            "deals": TWO_DEALS,
            "stage_history": HISTORY
            + "D2,2024-01-20T09:00:00Z,Demo,50\n"
            + "D1,2024-02-10T12:00:00Z,Closed Won,100\n"
            + "D2,2024-01-06T09:00:00Z,Qualification,50\n"
            + "D1,2024-01-05T09:00:00Z,Qualification,100\n"
            + "D2,2024-01-10T09:00:00Z,Bogus,50\n",
        },
    )
    assert [line for line in lines if line[0] == "stage_history"] == [
        ("stage_history", 5, "stage", "Bogus", "unknown stage 'Bogus': not in the pipeline config")
    ]
    history = stored.stage_history.collect()
    assert history.select("deal_id", "changed_at", "stage").rows() == [
        ("D1", ts("2024-01-05T09:00:00"), "Qualification"),
        ("D1", ts("2024-02-10T12:00:00"), "Closed Won"),
        ("D2", ts("2024-01-06T09:00:00"), "Qualification"),
        ("D2", ts("2024-01-20T09:00:00"), "Demo"),
    ]
    assert not stored.history_is_derived


def test_bare_close_date_moves_to_the_recorded_close(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": DEALS + "D1,2024-01-05T09:00:00Z,r1,Closed Won,100,,2024-02-10\n",
            "stage_history": HISTORY
            + "D1,2024-01-05T09:00:00Z,Qualification,100\n"
            + "D1,2024-02-12T15:30:00Z,Closed Won,100\n",
        },
    )
    assert lines == []
    assert stored.deals.collect()["closed_at"].to_list() == [ts("2024-02-12T15:30:00")]
    assert any("(e.g. D1: 2024-02-10 -> 2024-02-12 15:30 UTC)" in w for w in report.warnings)


# -- activities, reps, targets ----------------------------------------------------------------


def test_activities_checks_and_type_mapping(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": TWO_DEALS,
            "activities": "activity_id,occurred_at,owner_id,type,deal_id\n"
            "A1,2024-01-07T10:00:00Z,r1,Meeting,D1\n"
            "A2,2024-01-07 11:00,r1,Task,\n"
            "A3,yesterday,r1,Call,D1\n"
            "A4,2024-01-08T10:00:00Z,r1,EMAIL,D9\n"
            "A1,2024-01-09T10:00:00Z,r1,call,D2\n"
            "A5,2024-01-09T10:00:00Z,r1,Phone Call,D2\n",
        },
    )
    assert [line for line in lines if line[0] == "activities"] == [
        (
            "activities",
            3,
            "occurred_at",
            "yesterday",
            "not a date/time (expected ISO 8601 like 2024-03-05T14:22:00Z)",
        ),
        (
            "activities",
            4,
            "deal_id",
            "D9",
            "activity for unknown deal 'D9' (not among the loaded deals)",
        ),
        ("activities", 5, "activity_id", "A1", "duplicate activity_id, first seen at row 1"),
    ]
    activities = stored.activities.collect().sort("activity_id")
    assert activities.select("activity_id", "type", "deal_id").rows() == [
        ("A1", "meeting", "D1"),
        ("A2", "other", None),
        ("A5", "call", "D2"),
    ]
    assert counts(report, "activities") == (6, 3, 3)


def test_reps_and_targets_checks(tmp_path: Path) -> None:
    report, lines, stored = run(
        tmp_path,
        {
            "deals": TWO_DEALS,
            "reps": "owner_id,name,team,hired_at\nr1,Ann,T1,2023-01-01\nr1,Bob,T1,2023-02-01\n"
            "r2,Cid,T2,not yet\n",
            "targets": "period,scope_type,scope_id,amount\n"
            "2024-01,company,,1000\n"
            "2024-02-01,Owner,r1,100\n"
            "2024-13,owner,r1,100\n"
            "2024-03,division,x,100\n"
            "2024-03,team,,100\n"
            "2024-03,team,T1,-1\n"
            "2024-01,company,,900\n",
        },
    )
    assert [line for line in lines if line[0] in ("reps", "targets")] == [
        ("reps", 2, "owner_id", "r1", "duplicate owner_id, first seen at row 1"),
        ("reps", 3, "hired_at", "not yet", "not a date (expected ISO 8601 like 2024-03-05)"),
        (
            "targets",
            3,
            "period",
            "2024-13",
            "period '2024-13' is not a month like 2026-03 (YYYY-MM)",
        ),
        (
            "targets",
            4,
            "scope_type",
            "division",
            "scope_type 'division' is not company, team, region or owner",
        ),
        ("targets", 5, "scope_id", None, "scope_id is empty (required for a team target)"),
        ("targets", 6, "amount", "-1", "negative amount"),
        (
            "targets",
            7,
            "scope_id",
            None,
            "duplicate target (period, scope_type, scope_id), first seen at row 1",
        ),
    ]
    targets = stored.targets.collect()
    assert targets.rows() == [
        ("2024-01", "company", None, 1000.0),
        ("2024-02", "owner", "r1", 100.0),
    ]
    assert counts(report, "reps") == (3, 1, 2)
    assert counts(report, "targets") == (7, 2, 5)


# -- encoding ---------------------------------------------------------------------------------


def test_isolated_invalid_utf8_bytes_quarantine_their_rows(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    rows = [f"D{i},2024-01-05,rep {i},Discovery,100,2024-03-01,".encode() for i in range(1, 21)]
    rows[6] = b"D7,2024-01-05,Jos\xe9 P\xe9rez,Discovery,100,2024-03-01,"  # Latin-1 bytes
    (source / "deals.csv").write_bytes(b"\xef\xbb\xbf" + DEALS.encode() + b"\n".join(rows) + b"\n")
    report = ingest_sources([source], store=Store(tmp_path / "data"))
    assert quarantine_lines(report) == [
        (
            "deals",
            7,
            "owner_id",
            "Jos\ufffd P\ufffdrez",
            "bytes that are not UTF-8 in column 'owner_id' (e.g. Latin-1 text): "
            "re-export the file as UTF-8",
        )
    ]
    assert counts(report, "deals") == (20, 19, 1)


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    text = DEALS + "D1,2024-01-05,r1,Discovery,100,2024-03-01,\n"
    (source / "deals.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    report = ingest_sources([source], store=Store(tmp_path / "data"))
    assert counts(report, "deals") == (1, 1, 0)


# -- the invariant ----------------------------------------------------------------------------

_VALUES = {
    "deal_id": ["D1", "D2", "D3", "D4", ""],
    "created_at": ["2024-01-05", "2024-01-05T10:00:00Z", "2024-02-30", "soon", ""],
    "owner_id": ["r1", "r2", ""],
    "stage": ["Discovery", "Demo", "Closed Won", "Closed Lost", "Bogus", ""],
    "amount": ["100", "1,000", "-5", "abc", ""],
    "expected_close_date": ["2024-03-01", "03/01/2024", ""],
    "closed_at": ["2024-01-04", "2024-02-01T10:00:00Z", "never", ""],
}
_HISTORY_VALUES = {
    "deal_id": ["D1", "D2", "D5", ""],
    "changed_at": ["2024-01-04", "2024-01-05T10:00:00Z", "2024-01-20", "2024-03-01", "x"],
    "stage": ["Discovery", "Closed Won", "Closed Lost", "Nope"],
    "amount": ["100", "-1", ""],
}


def _rows(values: dict[str, list[str]], size: int) -> st.SearchStrategy[list[list[str]]]:
    row = st.tuples(*(st.sampled_from(v) for v in values.values())).map(list)
    return st.lists(row, min_size=1, max_size=size)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deals=_rows(_VALUES, 12), history=_rows(_HISTORY_VALUES, 12))
def test_every_row_is_loaded_or_quarantined(
    deals: list[list[str]], history: list[list[str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        _write(source / "deals.csv", list(_VALUES), deals)
        _write(source / "stage_history.csv", list(_HISTORY_VALUES), history)
        store = Store(Path(tmp) / "data")
        # an all-blank row is not a row: drop those from the expected count
        nonblank = {
            "deals": sum(any(v for v in row) for row in deals),
            "stage_history": sum(any(v for v in row) for row in history),
        }
        report = ingest_sources([source], store=store)
        lines = quarantine_lines(report)
        stored = store.load()
        loaded = {
            "deals": stored.deals.collect(),
            "stage_history": stored.stage_history.collect(),
        }
        for table in ("deals", "stage_history"):
            entry = report.counts(table)
            assert entry.read == nonblank[table]
            assert entry.loaded + entry.quarantined == entry.read
            assert entry.quarantined == len({n for t, n, *_ in lines if t == table})
            if table == "stage_history" and entry.loaded == 0:
                continue  # nothing loaded: the store derives a history instead
            assert loaded[table].height == entry.loaded
        good = loaded["deals"]
        kinds = good.with_columns(
            kind=pl.col("stage").replace_strict(
                {s.name: s.kind for s in DEFAULT_PIPELINE.stages}, default=None
            )
        )
        assert good["deal_id"].is_unique().all()
        assert kinds["kind"].is_not_null().all()
        assert (good["amount"].fill_null(0) >= 0).all()
        closed = kinds.filter(pl.col("kind") != "open")
        assert closed["closed_at"].is_not_null().all()
        assert (closed["closed_at"] >= closed["created_at"]).all()
        assert kinds.filter(pl.col("kind") == "open")["closed_at"].is_null().all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_parquet_and_csv_values_that_cannot_be_cast(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    frame = pl.DataFrame(
        {
            "deal_id": ["D1", "D2"],
            "created_at": ["2024-01-05T00:00:00Z", "01.05.2024"],
            "owner_id": ["r1", "r1"],
            "stage": ["Discovery", "Discovery"],
            "amount": [100, 200],
        }
    )
    if fmt == "csv":
        frame.write_csv(source / "deals.csv")
    else:
        frame.write_parquet(source / "deals.parquet")
    report = ingest_sources([source], store=Store(tmp_path / "data"))
    assert quarantine_lines(report) == [
        (
            "deals",
            2,
            "created_at",
            "01.05.2024",
            "not a date/time (expected ISO 8601 like 2024-03-05T14:22:00Z)",
        )
    ]
