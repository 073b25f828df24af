"""Without a stage history, the KPIs that need one are unknown (null and a note), not 0%."""

from __future__ import annotations

from datetime import date

import polars as pl

from features.calendar import instant
from features.kpis.pipeline import stage_win_rates
from features.kpis.series import kpi_series
from features.kpis.table import kpi_notes, kpi_table
from features.snapshots import as_of_frame
from tests.features.kpis.company_data import END, company

STAGE_KPIS = "^(stage_conversion_rate|stage_duration_days_median|stage_duration_days_p90)__.*$"


def test_stage_kpis_are_null_with_a_note_without_stage_history() -> None:
    derived = company(stage_history=None, activities=None)
    assert derived.history_is_derived
    table = kpi_table(derived, period="quarter", end=END)
    stage = table.select(STAGE_KPIS)
    assert stage.width == 15  # 5 open stages x conversion, median, p90
    assert stage.null_count().row(0) == (table.height,) * stage.width
    assert table["stage_weighted_pipeline_hist"].null_count() == table.height
    assert table["proposals_sent"].null_count() == table.height
    # what a flat export does know is still there
    assert table["bookings"].sum() > 0
    assert table["stage_weighted_pipeline"].sum() > 0
    notes = kpi_notes(derived)
    assert "stage conversion: unknown without a stage history" in notes[0]
    assert [n.split(":")[0] for n in notes] == [
        "stage conversion",
        "stage durations",
        "historical stage win rates",
        "proposals sent",
    ]


def test_the_real_history_still_gives_values_and_no_note() -> None:
    history = company()
    table = kpi_table(history, period="quarter", end=END)
    assert kpi_notes(history) == ()
    assert table.select(STAGE_KPIS).null_count().row(0) != (table.height,) * 15
    assert table["stage_weighted_pipeline_hist"].null_count() < table.height
    # with activities but no stage history, proposals_sent counts the activities
    with_activities = company(stage_history=None)
    assert "proposals sent" not in " ".join(kpi_notes(with_activities))
    assert kpi_table(with_activities, period="quarter", end=END)["proposals_sent"].sum() > 0


def test_stage_win_rates_are_unknown_without_stage_history() -> None:
    as_ofs = as_of_frame([instant(date(2026, 3, 31))])
    derived = stage_win_rates(company(stage_history=None), as_ofs).collect()
    assert derived.height == 5 and derived["stage_win_rate_hist"].null_count() == 5
    real = stage_win_rates(company(), as_ofs).collect()
    assert real["stage_win_rate_hist"].null_count() < 5


def test_anomaly_series_skip_stage_advance_without_stage_history() -> None:
    derived = kpi_series(company(stage_history=None), periods=("month",), by=("",), end=END)
    metrics = set(derived["metric"].to_list())
    assert not any(m.startswith("stage_advance__") for m in metrics)
    assert {"win_rate", "bookings", "slip_rate"} <= metrics
    real = kpi_series(company(), periods=("month",), by=("",), end=END)
    assert any(m.startswith("stage_advance__") for m in real["metric"].to_list())
    assert (
        real.filter(pl.col("metric") == "win_rate").height
        == derived.filter(pl.col("metric") == "win_rate").height
    )
