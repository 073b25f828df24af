"""The main job: simulate the default company, ingest it, show its KPIs and its pipeline, then
train the deal models, backtest 12 origins against the baselines, forecast the next months and
publish forecasts, deal scores and accuracy; then serve the API and dashboard on them."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import polars as pl
from rich.table import Table

from features.kpis.table import kpi_table
from features.snapshots import data_end, pipeline_as_of
from features.store import Store
from models.tracking import artifact_root, tracking_uri
from pipelines.anomalies import DETECTORS, print_anomalies
from pipelines.backtest import run_backtest_job
from pipelines.console import console, progress, render_table
from pipelines.ingest import ingest_sources, print_report
from pipelines.model_reports import print_forecast, print_league
from pipelines.publish import run_publish
from pipelines.reports import print_kpis
from pipelines.serve import run_server
from pipelines.simulate import SimConfig, simulate_company, write_company
from pipelines.train import run_train

__all__ = ["run_demo"]


def run_demo(
    data: Path,
    *,
    seed: int = 7,
    serve: bool = True,
    n_deals: int | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Simulate, ingest, then print the KPIs of the last four quarters and today's pipeline."""
    started = time.perf_counter()
    source = data / "demo-source"
    with progress() as bar:
        steps = bar.add_task("demo", total=4)
        bar.update(steps, description="simulating the default company")
        company = simulate_company(SimConfig(seed=seed, n_deals=n_deals))
        write_company(company, source)
        bar.advance(steps)
        bar.update(steps, description="ingesting it into the store")
        report = ingest_sources([source], store=Store(data), source_format="canonical")
        bar.advance(steps)
        bar.update(steps, description="computing KPIs")
        history = Store(data).load()
        end = data_end(history)
        first = _quarter_start(end, back=4)
        last = _quarter_start(end, back=0)
        kpis = kpi_table(history, period="quarter", start=first, end=last)
        kpis = kpis.filter(pl.col("period_start") < last)
        bar.advance(steps)
        bar.update(steps, description="building the pipeline as of the last day")
        pipeline = pipeline_as_of(history, end)
        bar.advance(steps)
    print_report(report)
    console.rule(f"KPIs of the last four complete quarters (data ends {end:%Y-%m-%d})")
    print_kpis(kpis, by=[])
    console.rule(f"Open pipeline as of {end:%Y-%m-%d %H:%M} UTC")
    console.print(_pipeline_by_stage(pipeline, history.pipeline.open_stages))
    top = pipeline.head(15).select(
        "deal_id",
        "owner_id",
        "stage",
        "amount",
        "expected_close_date",
        "forecast_category",
        pl.col("days_in_stage").round(0),
        "region",
        "product",
    )
    console.print(render_table(top, title="Late-stage deals, largest first"))
    _models(data)
    console.print(
        f"\n[bold]done[/] in {time.perf_counter() - started:.1f}s — store at {data / 'store'}; "
        f"try `dealcast forecast --data {data} --by region`, "
        f"`dealcast pipeline --data {data}` or `dealcast kpis --data {data} --by region`"
    )
    uri = tracking_uri(data)
    if uri.startswith("sqlite:"):
        console.print(
            f"MLflow: `.venv/bin/mlflow ui --backend-store-uri {uri} "
            f"--default-artifact-root {artifact_root(data)}` then open http://127.0.0.1:5000 "
            "(experiment 'dealcast': train, backtest and forecast runs; models in the registry)"
        )
    else:
        console.print(f"MLflow: runs and models are at {uri}")
    if serve:
        from serving.auth import add_key  # the entry point is the one place that reaches serving
        from serving.settings import ServeSettings

        key, _ = add_key(ServeSettings(data=data).keys_path, "leader", name="demo")
        console.rule("API and dashboard")
        console.print(
            f"leader key (shown once, stored hashed): [bold]{key}[/]\n"
            f"open http://{host}:{port}/ and paste it; or "
            f"`curl -H 'Authorization: Bearer {key}' http://{host}:{port}/v1/forecasts`\n"
            f"more keys: `dealcast keys add --role ops|rep:<owner_id> --data {data}`; "
            "Ctrl-C stops the server"
        )
        run_server(data, host=host, port=port)


def _models(data: Path) -> None:
    """Train (registering @champion), backtest the last 12 origins, forecast 3 months."""
    console.rule("Deal models")
    with console.status("training close probability and timing (evaluate, fit, gate, register)"):
        trained = run_train(data)
    console.print(
        f"close probability on the held-out months: Brier {trained['brier']:.3f} (stage rates "
        f"{trained['baseline_brier']:.3f}, CRM {trained.get('crm_brier', float('nan')):.3f}"
        + (
            f", oracle {trained['oracle_brier']:.3f}; gap closed {trained['gap_closed']:.0%}"
            if trained.get("oracle_brier") is not None
            else ""
        )
        + f"), AUC {trained['auc']:.3f}, ECE {trained['ece']:.3f}; registered "
        f"v{trained['version']} as @{trained['alias']}"
    )
    console.rule("Backtest: the last 12 months, every method refit at each origin")
    print_league(run_backtest_job(data, keep=True))
    console.rule("Forecast, deal scores and risk flags, published for the API")
    published = run_publish(data)
    print_forecast(published)
    console.rule("Anomalies of the last 6 months (published for the ops view)")
    print_anomalies(
        {**published, "counts": published["anomaly_counts"], "detectors": list(DETECTORS)},
        "table",
    )
    console.print(
        f"published {published['version']}: {published['open_deals']} open deals scored, "
        f"{published['flagged_deals']} with risk flags"
    )


def _quarter_start(moment: datetime, *, back: int) -> date:
    """First day of the quarter ``back`` quarters before the one holding ``moment``."""
    index = moment.year * 4 + (moment.month - 1) // 3 - back
    return date(index // 4, (index % 4) * 3 + 1, 1)


def _pipeline_by_stage(pipeline: pl.DataFrame, stages: tuple[str, ...]) -> Table:
    summary = (
        pipeline.group_by("stage")
        .agg(
            pl.len().alias("deals"),
            pl.col("amount").sum().alias("amount"),
            pl.col("days_in_stage").median().alias("median days in stage"),
        )
        .join(pl.DataFrame({"stage": list(stages), "_o": range(len(stages))}), on="stage")
        .sort("_o")
        .drop("_o")
    )
    total = pl.DataFrame(
        {
            "stage": ["total"],
            "deals": [pipeline.height],
            "amount": [pipeline["amount"].sum()],
            "median days in stage": [pipeline["days_in_stage"].median()],
        },
        schema=summary.schema,
    )
    return render_table(pl.concat([summary, total]), title="Open pipeline by stage")
