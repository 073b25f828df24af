"""``pipelines.reports.print_kpis`` renders the KPI table readably at 120 columns.

(It lives under tests/features with the other KPI tests; the numbers are those of
tests/features/kpis/test_table.py.)
"""

from __future__ import annotations

from datetime import date

import pytest
from rich.console import Console

import pipelines.reports as reports
from features.kpis.table import kpi_table
from tests.features.kpis.company_data import END, company


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Console:
    console = Console(record=True, width=120, force_terminal=False, color_system=None)
    monkeypatch.setattr(reports, "console", console)
    return console


def _lines(console: Console) -> list[str]:
    return console.export_text().splitlines()


def _line(lines: list[str], kpi: str) -> str:
    found = [line for line in lines if line.strip("│ ").startswith(kpi + " ")]
    assert len(found) == 1, f"{kpi}: {found}"
    return found[0]


def test_transposed_without_by(screen: Console) -> None:
    table = kpi_table(company(), period="month", start=date(2026, 1, 1), end=END)
    reports.print_kpis(table, by=[])
    lines = _lines(screen)
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if "KPI" in line)
    assert header.index("2026-01") < header.index("2026-02") < header.index("2026-03")
    # money with separators, rates as percentages, growth signed, days with one decimal
    assert _line(lines, "bookings").split("│")[2:5] == ["     500 ", "   1,000 ", "   4,200 "]
    assert "62.7%" in _line(lines, "win_rate_amount")  # 4200 / 6700
    assert "+320.0%" in _line(lines, "bookings_growth")
    assert "62.6" in _line(lines, "cycle_days_p90")
    assert "2.35" in _line(lines, "pipeline_coverage")
    assert "18.8" in _line(lines, "stage_duration_days_p90__qualification")
    # a null is a dash
    assert "—" in _line(lines, "slip_rate")


def test_only_the_latest_periods_that_fit(screen: Console) -> None:
    table = kpi_table(company(), period="week", end=END)
    reports.print_kpis(table, by=[])
    text = screen.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "2026-W14" in text  # the last week (Mar 30 - Apr 5, to date)
    assert "2024-W49" not in text  # the first one does not fit
    assert f"of {table.height} periods" in text


def test_one_table_per_group(screen: Console) -> None:
    table = kpi_table(company(), period="month", by=["region"], start=date(2026, 3, 1), end=END)
    reports.print_kpis(table, by=["region"])
    text = screen.export_text()
    assert "region = EU" in text and "region = NA" in text and "region = —" in text
    eu, na = text.index("region = EU"), text.index("region = NA")
    # EU booked 1,200 in March, NA 3,000
    assert "1,200" in text[eu:na] and "3,000" in text[na:]


def test_empty_table(screen: Console) -> None:
    table = kpi_table(company(), period="month", end=END).clear()
    reports.print_kpis(table, by=[])
    assert "no KPIs" in screen.export_text()
