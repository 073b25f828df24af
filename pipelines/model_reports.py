"""Terminal rendering of the forecast, the backtest league table and the weighted pipeline."""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.table import Table

from pipelines.console import console

__all__ = ["print_forecast", "print_league", "print_weighted"]


def _money(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def _pct(value: object, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:+.1%}" if signed else f"{value:.1%}"  # type: ignore[str-format]


def _period(row: dict[str, Any]) -> str:
    month = row["target_month"]
    if row["period"] == "quarter":
        return f"Q{(month.month - 1) // 3 + 1} {month.year}"
    return f"{month:%Y-%m}"


def print_forecast(result: dict[str, Any]) -> None:
    """The total by month and quarter; then one table per segment when grouped."""
    summary: pl.DataFrame = result["summary"]
    kept: pl.DataFrame = result["kept"]
    crm = kept.filter(pl.col("method") == "stage_weighted_crm").select(
        "by", "segment", "period", "target_month", pl.col("p50").alias("_crm")
    )
    frame = summary.join(crm, on=["by", "segment", "period", "target_month"], how="left")
    as_of = result["as_of"]
    for (by, segment), part in frame.group_by(["by", "segment"], maintain_order=True):
        title = (
            f"Bookings forecast as of {as_of:%Y-%m-%d %H:%M} UTC"
            if by == ""
            else f"{by} = {segment}"
        )
        table = Table(title=title, header_style="bold", title_justify="left")
        for name in ("period", "P10", "P50", "P90", "booked", "open pipeline", "not yet created"):
            table.add_column(name, justify="left" if name == "period" else "right")
        has_target = part["target"].is_not_null().any()
        if has_target:
            for name in ("target", "gap", "P(reach)"):
                table.add_column(name, justify="right")
        table.add_column("stage-weighted (CRM)", justify="right", style="dim")
        has_method = "method" in part.columns and by == ""
        if has_method:
            table.add_column("published", justify="left", style="dim")
        for row in part.iter_rows(named=True):
            cells = [
                _period(row),
                _money(row["p10"]),
                f"[bold]{_money(row['p50'])}[/]",
                _money(row["p90"]),
                _money(row["booked_to_date"]),
                _money(row["pipeline_mean"]),
                _money(row["newbiz_mean"]),
            ]
            if has_target:
                cells += [_money(row["target"]), _money(row["gap"]), _pct(row["p_reach_target"])]
            cells.append(_money(row["_crm"]))
            if has_method:
                cells.append(str(row["method"]) + (" ⚠" if row.get("flag") else ""))
            table.add_row(*cells)
        console.print(table)
        if has_method:
            for row in part.filter(pl.col("flag").is_not_null()).iter_rows(named=True):
                console.print(f"[yellow]⚠ {_period(row)}: {row['flag']}[/]")
    for line in result.get("choice") or []:
        console.print(f"[dim]published {line}[/]")
    for line in result.get("notes") or []:
        console.print(f"[dim]note: {line}[/]")
    console.print(
        f"[dim]models: {result['models']} ({result['model_version']}); kept as forecast "
        f"{result['forecast_id']}; MLflow run {result['run_id']}[/]"
    )


def print_league(result: dict[str, Any]) -> None:
    """The league table: methods by WAPE per horizon, and the issue's acceptance bar."""
    backtest = result["backtest"]
    league = backtest.league()
    table = Table(
        title=(
            f"Backtest league table — origins {backtest.origins[0]:%Y-%m}..."
            f"{backtest.origins[-1]:%Y-%m}"
            + (f", by {', '.join(backtest.by)}" if backtest.by else "")
        ),
        header_style="bold",
        title_justify="left",
    )
    notes = "note" in league.columns and league["note"].is_not_null().any()
    for name in ("horizon", "rank", "method", "WAPE", "bias", "P10–P90 coverage", "n"):
        table.add_column(name, justify="left" if name == "method" else "right")
    if notes:
        table.add_column("note", justify="left", style="dim")
    previous = None
    for row in league.iter_rows(named=True):
        if previous is not None and row["horizon"] != previous:
            table.add_section()
        previous = row["horizon"]
        style = "bold green" if row["method"] in ("dealcast", "published") else None
        note = row.get("note")
        unscored = row["n"] == 0
        cells = [
            f"h{row['horizon']}",
            "—" if row["rank"] is None else str(row["rank"]),
            row["method"],
            "n/a" if unscored else _pct(row["wape"]),
            "" if unscored else _pct(row["bias"], signed=True),
            "" if unscored else _pct(row["coverage"]),
            str(row["n"]),
        ]
        if notes:
            cells.append(note or "")
        table.add_row(*cells, style="dim" if note and style is None else style)
    console.print(table)
    if league["method"].is_in(["published"]).any():
        console.print(
            "[dim]dealcast: the deal-level forecast; blend: the best three weighted by skill; "
            "published: what the forecast publishes, the method or blend with the lowest WAPE "
            "per horizon on these origins (its P10–P90 from the other origins' errors); "
            "published_nested: the same choice made at each origin from earlier origins only "
            "(what choosing is honestly worth)[/]"
        )
    for origin, why in getattr(backtest, "skipped", []):
        console.print(f"[yellow]origin {origin:%Y-%m} skipped: {why}[/]")
    verdict = result["acceptance"]
    lines = []
    for key, figures in verdict.items():
        if not isinstance(figures, dict):
            continue
        improvement = figures["improvement"]
        line = (
            f"{key}: dealcast WAPE {figures['wape']:.1%} vs best baseline "
            f"{figures['best_baseline']} {figures['best_baseline_wape']:.1%} "
            f"({'lowest' if figures['lowest'] else 'NOT lowest'}, "
            f"{_pct(improvement)} below)"
        )
        if figures.get("published_wape") is not None:
            line += f"; published {figures['published_wape']:.1%}"
            if figures.get("published_nested_wape") is not None:
                line += f", chosen from earlier origins only {figures['published_nested_wape']:.1%}"
        lines.append(line)
    if verdict.get("coverage") is not None:
        lines.append(f"dealcast P10–P90 coverage over all horizons: {verdict['coverage']:.1%}")
    console.print("\n".join(lines))
    console.print(f"[dim]MLflow run {result['run_id']} (frame and summary are its artifacts)[/]")


def print_weighted(frame: pl.DataFrame, *, by: list[str], as_of: object) -> None:
    """Classic and model-weighted pipeline side by side, by expected close month."""
    table = Table(
        title=f"Weighted pipeline as of {as_of:%Y-%m-%d} by expected close month",  # type: ignore[str-format]
        header_style="bold",
        title_justify="left",
    )
    for name in (
        *by,
        "close month",
        "deals",
        "amount",
        "CRM stage %",
        "historical stage %",
        "model",
    ):
        table.add_column(name, justify="left" if name in (*by, "close month") else "right")
    for row in frame.iter_rows(named=True):
        month = row["close_month"]
        table.add_row(
            *(str(row[d]) for d in by),
            "no date" if month is None else f"{month:%Y-%m}",
            str(row["deals"]),
            _money(row["amount"]),
            _money(row["stage_weighted_crm"]),
            _money(row["stage_weighted_hist"]),
            _money(row["model_weighted"]),
        )
    total = frame.select(
        pl.col(
            "deals", "amount", *("stage_weighted_crm", "stage_weighted_hist", "model_weighted")
        ).sum()
    )
    t = total.row(0, named=True)
    table.add_section()
    table.add_row(
        *([""] * len(by)),
        "total",
        str(t["deals"]),
        _money(t["amount"]),
        _money(t["stage_weighted_crm"]),
        _money(t["stage_weighted_hist"]),
        _money(t["model_weighted"]),
        style="bold",
    )
    console.print(table)
