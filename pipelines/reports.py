"""Terminal rendering of the KPI table (``dealcast kpis``; JSON and CSV go through ``emit``).

The table is transposed for reading: one row per KPI, one column per period, KPIs in
sections (outcomes, pipeline, process, activities, targets). With ``--by``, one such table per
group. Only the latest periods that fit the terminal are shown (the caption says how many);
KPIs without any value in the shown periods are left out and counted in the caption.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from rich.table import Table

from features.kpis.definitions import KPIS
from features.kpis.table import kpi_unit
from pipelines.console import console, plain_text

__all__ = ["format_kpi", "kpi_panel", "print_kpis"]

_FAMILY = {kpi.name: kpi.family for kpi in KPIS}


def format_kpi(column: str, value: object) -> str:
    """A KPI value for a terminal: money ``1,234,567``, rates ``42.0%``, growth ``+5.0%``,
    days ``12.5``, counts ``1,234``, ratios ``1.25``; ``—`` for null."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if not isinstance(value, int | float):
        return plain_text(value)
    unit = kpi_unit(column)
    if unit == "rate":
        return f"{value:.1%}"
    if unit == "growth":
        return f"{value:+.1%}"
    if unit == "days":
        return f"{value:,.1f}"
    if unit == "ratio":
        return f"{value:,.2f}"
    return f"{value:,.0f}"  # money, count


def _family(column: str) -> str:
    head, sep, _ = column.rpartition("__")
    return _FAMILY.get(column) or _FAMILY.get(f"{head}__<stage>", "other")


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def kpi_panel(frame: pl.DataFrame, *, title: str | None = None, width: int = 120) -> Table:
    """One group's KPI rows as a rich table: a row per KPI, a column per period (latest last).

    ``frame`` holds one row per period (``period_start``, ``period`` and KPI columns; other
    columns are ignored). The latest periods that fit in ``width`` characters are shown.
    """
    frame = frame.sort("period_start")
    kpis = [c for c in frame.columns if kpi_unit(c) not in (None, "key")]
    cells = {c: [format_kpi(c, v) for v in frame[c].to_list()] for c in kpis}
    labels = [str(p) for p in frame["period"]]
    name_width = max((len(c) for c in kpis), default=3)
    room = width - name_width - 4  # the KPI column's padding and borders
    shown = 0
    for i in reversed(range(frame.height)):
        cell = max([len(labels[i]), *(len(cells[c][i]) for c in kpis)]) + 3
        if shown and cell > room:
            break
        room -= cell
        shown += 1
    first = frame.height - shown
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("KPI", no_wrap=True)
    for label in labels[first:]:
        table.add_column(label, justify="right", no_wrap=True)
    hidden = 0
    family = None
    for column in kpis:
        if all(_empty(v) for v in frame[column].to_list()[first:]):
            hidden += 1
            continue
        if family is not None and _family(column) != family:
            table.add_section()
        family = _family(column)
        table.add_row(plain_text(column), *cells[column][first:])
    notes = []
    if first:
        notes.append(f"latest {shown} of {frame.height} periods")
    if hidden:
        notes.append(f"{hidden} KPIs without a value hidden")
    if notes:
        table.caption = "; ".join(notes) + "; --format csv shows all"
    return table


def print_kpis(table: pl.DataFrame, by: Sequence[str] = ()) -> None:
    """Print a :func:`features.kpis.table.kpi_table` result for a terminal.

    Without ``by``: one table, a row per KPI and a column per period. With ``by``: one such
    table per group, titled with the group's values.
    """
    if table.is_empty():
        console.print("no KPIs: the store holds no data in the requested periods")
        return
    width = console.width
    groups = [c for c in by if c in table.columns]
    if not groups:
        console.print(kpi_panel(table, width=width))
        return
    ordered = table.sort([*groups, "period_start"], nulls_last=True)
    for key, part in ordered.group_by(groups, maintain_order=True):
        title = ", ".join(
            f"{plain_text(g)} = {'—' if v is None else plain_text(v)}"
            for g, v in zip(groups, key, strict=True)
        )
        console.print(kpi_panel(part, title=title, width=width))
