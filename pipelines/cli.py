"""The ``dealcast`` command line. Each command is thin: parse, call a job, print."""

from __future__ import annotations

import json
import sys
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape

from pipelines.console import (
    DataOption,
    OutputFormat,
    console,
    data_dir,
    emit,
    err_console,
    fail,
)

app = typer.Typer(
    name="dealcast",
    help="Sales forecasting and anomalies from your CRM's deal history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


class SourceFormat(StrEnum):
    canonical = "canonical"
    flat = "flat"
    salesforce = "salesforce"
    hubspot = "hubspot"


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


class SnapshotFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"
    json = "json"


class Period(StrEnum):
    week = "week"
    month = "month"
    quarter = "quarter"
    year = "year"


def _os_error(exc: OSError, what: str) -> str:
    """One line for an OSError that stopped ``what`` (our own errors carry their message)."""
    from features.store import StoreWriteError

    if isinstance(exc, StoreWriteError) or type(exc).__name__ == "KeysFileError":
        return str(exc.strerror)
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{what} failed: {exc.strerror or exc}{where}; nothing was changed"


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} expects a date like 2026-06-30, got {value!r}") from None


@app.command()
def simulate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the tables into.")],
    deals: Annotated[
        int | None, typer.Option("--deals", help="Number of deals (default: ~30 reps' worth).")
    ] = None,
    months: Annotated[int, typer.Option("--months", help="Months of history.")] = 36,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bytes.")] = 7,
    anomalies: Annotated[
        bool, typer.Option("--anomalies/--no-anomalies", help="Inject labelled anomalies.")
    ] = True,
    file_format: Annotated[
        FileFormat, typer.Option("--file-format", help="Format of the files written.")
    ] = FileFormat.parquet,
    company_profile: Annotated[
        str,
        typer.Option(
            "--company",
            help="Company profile: default, small, enterprise, smb, declining or regime "
            "(docs/simulator.md). --deals, --months and --no-anomalies override its values.",
        ),
    ] = "default",
    export: Annotated[
        str,
        typer.Option(
            "--export",
            help="Export profile: rich, current_state, no_forecast_fields, stale, date_only, "
            "missing_dims, lead_funnel or thinnest: the same company written the way a real "
            "(thinner, dirtier) CRM export comes out; the truth tables stay the same.",
        ),
    ] = "rich",
) -> None:
    """Write the canonical tables (and ground truth) of a synthetic company."""
    from click.core import ParameterSource

    from pipelines.simulate import (
        COMPANY_PROFILES,
        EXPORT_PROFILES,
        company_config,
        export_company,
        simulate_company,
        write_company,
    )

    if company_profile not in COMPANY_PROFILES:
        raise fail(
            f"--company must be one of {', '.join(COMPANY_PROFILES)}, got {company_profile!r}"
        )
    if export not in EXPORT_PROFILES:
        raise fail(f"--export must be one of {', '.join(EXPORT_PROFILES)}, got {export!r}")
    given = {
        name
        for name in ("months", "anomalies")
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    try:
        config = company_config(
            company_profile,
            seed,
            n_deals=deals,
            months=months if "months" in given else None,
            anomalies=anomalies if "anomalies" in given else None,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    company = simulate_company(config, show_progress=True)
    if export != "rich":
        company = export_company(company, export, seed=seed)
    paths = write_company(company, out, file_format=file_format.value)
    for path in paths:
        console.print(f"wrote {path}")


@app.command()
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="Files or directories to ingest.")],
    source_format: Annotated[
        SourceFormat, typer.Option("--source-format", help="How the source is laid out.")
    ] = SourceFormat.canonical,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help='Column mapping: a TOML file ([columns] target = "Source Column", optional '
            "date_format), or target=source (repeatable), e.g. --map deal_id='Opportunity ID'. "
            "Targets are canonical deal columns, close_date (closed_at for won/lost deals, "
            "expected_close_date for open ones), or table.column for other tables.",
        ),
    ] = None,
    pipeline: Annotated[
        Path | None, typer.Option("--pipeline", help="Pipeline config TOML (stages and kinds).")
    ] = None,
    date_format: Annotated[
        str | None,
        typer.Option("--date-format", help="strftime format of the source's dates, e.g. %d/%m/%Y."),
    ] = None,
    data: DataOption = None,
) -> None:
    """Convert a CRM export into the canonical tables and replace the store atomically."""
    from features.store import Store
    from pipelines.ingest import IngestError, ingest_sources, print_report

    root = data_dir(data)
    try:
        report = ingest_sources(
            sources,
            store=Store(root),
            source_format=source_format.value,
            mapping=map_ or [],
            pipeline_path=pipeline,
            date_format=date_format,
            show_progress=True,
            on_wait=lambda message: err_console.print(f"[yellow]{escape(message)}[/]"),
        )
    except IngestError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # a full disk, a read-only data directory: one line, no traceback
        raise fail(_os_error(exc, "the ingest")) from None
    print_report(report)


@app.command()
def snapshot(
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot date (YYYY-MM-DD, 00:00 UTC).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default stdout).")
    ] = None,
    fmt: Annotated[SnapshotFormat, typer.Option("--format")] = SnapshotFormat.parquet,
    data: DataOption = None,
) -> None:
    """Features of every deal open as of a date, exactly as they were known then."""
    from features.snapshots import snapshot_features
    from features.store import Store, StoreNotFoundError

    day = _parse_day(as_of, "--as-of")
    assert day is not None
    try:
        history = Store(data_dir(data)).load()
    except StoreNotFoundError as exc:
        raise fail(str(exc)) from None
    frame = snapshot_features(history, [day]).collect()
    if fmt is SnapshotFormat.parquet:
        if out is None:
            raise fail("--format parquet needs --out FILE (use --format csv or json for stdout)")
        frame.write_parquet(out)
        console.print(f"wrote {frame.height} open deals as of {day} to {out}")
        return
    emit(frame, fmt.value, out=out)


@app.command()
def kpis(
    period: Annotated[Period, typer.Option("--period")] = Period.month,
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Group by a dimension (repeatable).")
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD).")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    data: DataOption = None,
) -> None:
    """The KPI catalogue per period, optionally grouped by a dimension."""
    from features.kpis.table import kpi_notes, kpi_table
    from features.store import Store, StoreNotFoundError
    from pipelines.reports import print_kpis

    try:
        history = Store(data_dir(data)).load()
        table = kpi_table(
            history,
            period=period.value,
            by=by or [],
            start=_parse_day(from_, "--from"),
            end=_parse_day(to, "--to"),
        )
    except StoreNotFoundError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    if fmt is OutputFormat.table:
        print_kpis(table, by=by or [])
    else:
        emit(table, fmt)
    for note in kpi_notes(history):  # stderr: json/csv on stdout stay clean
        err_console.print(f"note: {note}", markup=False, highlight=False)


def _parse_month(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(f"{value}-01")
    except ValueError:
        raise fail(f"{option} expects a month like 2026-06, got {value!r}") from None


def _parse_horizons(value: str) -> list[int]:
    try:
        out = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise fail(f"--horizons expects integers like 0,1,2, got {value!r}") from None
    if not out or min(out) < 0:
        raise fail(f"--horizons expects integers >= 0 like 0,1,2, got {value!r}")
    return out


def _one_dimension(by: str | None) -> str | None:
    from features.contract import DIMENSIONS

    if by is not None and by not in DIMENSIONS:
        raise fail(f"--by must be one of {', '.join(DIMENSIONS)}, got {by!r}")
    return by


@app.command()
def train(
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    test_months: Annotated[
        int, typer.Option("--test-months", help="Months of newest deals held out for scoring.")
    ] = 9,
    gate_origins: Annotated[
        int,
        typer.Option(
            "--gate-origins",
            help="Backtest origins that score the new version and choose what is published.",
        ),
    ] = 9,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune/--no-tune",
            help="Choose the close probability's parameters and calibration by time-series CV.",
        ),
    ] = True,
    data: DataOption = None,
) -> None:
    """Fit close probability and timing, score them, backtest, register them in MLflow."""
    from features.store import StoreNotFoundError
    from pipelines.train import run_train

    try:
        with console.status("training: tune, evaluate, fit, backtest every method, register"):
            result = run_train(
                data_dir(data), test_months=test_months, gate_origins=gate_origins, tune=tune
            )
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result, default=str, indent=1) + "\n")
        return
    rows = [
        {"metric": k, "value": str(round(v, 4) if isinstance(v, float) else v)}
        for k, v in result.items()
        if k not in ("league", "forecast_choice")
    ]
    emit(pl.DataFrame(rows), fmt, title="close probability (held-out period) and the gate")
    if fmt is OutputFormat.table:
        for line in result.get("forecast_choice") or []:  # type: ignore[attr-defined]
            console.print(f"published {line}")


class TableOrJson(StrEnum):
    table = "table"
    json = "json"


@app.command()
def forecast(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Forecast as of this day (default: the end of the data)."),
    ] = None,
    months: Annotated[int, typer.Option("--months", min=1, max=12)] = 3,
    by: Annotated[str | None, typer.Option("--by", help="Also forecast per dimension.")] = None,
    samples: Annotated[int, typer.Option("--samples", min=100)] = 2000,
    fmt: Annotated[TableOrJson, typer.Option("--format")] = TableOrJson.table,
    data: DataOption = None,
) -> None:
    """Monthly and quarter bookings forecast with P10/P50/P90, kept and logged to MLflow."""
    from features.store import StoreNotFoundError
    from pipelines.forecast import forecast_json, run_forecast
    from pipelines.model_reports import print_forecast

    day = _parse_day(as_of, "--as-of")
    try:
        with console.status("forecasting"):
            result = run_forecast(
                data_dir(data), as_of=day, months=months, by=_one_dimension(by), n_samples=samples
            )
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if fmt is TableOrJson.json:
        sys.stdout.write(forecast_json(result) + "\n")
    else:
        print_forecast(result)


@app.command()
def backtest(
    from_: Annotated[str | None, typer.Option("--from", help="First origin (YYYY-MM).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last origin (YYYY-MM).")] = None,
    horizons: Annotated[
        str, typer.Option("--horizons", help="Months ahead, e.g. 0,1,2.")
    ] = "0,1,2",
    by: Annotated[str | None, typer.Option("--by", help="Score per dimension.")] = None,
    samples: Annotated[int, typer.Option("--samples", min=100)] = 1000,
    stage_probability: Annotated[
        str,
        typer.Option(
            "--stage-probability",
            help="Stage-weighted baseline(s): crm (the pipeline config's stage probabilities; "
            "n/a without them), hist (historical stage win rates), auto (both when the config "
            "has probabilities, else hist).",
        ),
    ] = "auto",
    fmt: Annotated[TableOrJson, typer.Option("--format")] = TableOrJson.table,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Keep each origin's company forecasts in the forecast log (retrospective), "
            "so `evaluate` fills the accuracy history.",
        ),
    ] = False,
    data: DataOption = None,
) -> None:
    """Rolling-origin backtest of dealcast against five baselines; prints the league table.

    Needs at least 9 months of history; by default the origins are the last 12 closed months,
    from the 6th month after the first deal. Origins no method can be refit at are skipped with
    a note; a baseline without a basis at an origin is shown "n/a" and not ranked.
    """
    from features.store import StoreNotFoundError
    from pipelines.backtest import run_backtest_job
    from pipelines.model_reports import print_league

    start, end = _parse_month(from_, "--from"), _parse_month(to, "--to")
    if start and end and start > end:
        raise fail(f"--from {from_} is after --to {to}")
    if stage_probability not in ("auto", "crm", "hist"):
        raise fail(f"--stage-probability expects crm, hist or auto, got {stage_probability!r}")
    try:
        result = run_backtest_job(
            data_dir(data),
            start=start,
            end=end,
            horizons=_parse_horizons(horizons),
            by=_one_dimension(by),
            n_samples=samples,
            stage_probability=stage_probability,
            show_progress=fmt is TableOrJson.table,
            keep=keep,
        )
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if fmt is TableOrJson.json:
        bt = result["backtest"]
        payload = {
            "origins": [f"{o:%Y-%m}" for o in bt.origins],
            "horizons": bt.horizons,
            "by": bt.by,
            "summary": bt.league().to_dicts(),
            "skipped": [{"origin": f"{o:%Y-%m}", "reason": why} for o, why in bt.skipped],
            "acceptance": result["acceptance"],
            "run_id": result["run_id"],
        }
        sys.stdout.write(json.dumps(payload, default=str, indent=1) + "\n")
    else:
        print_league(result)


@app.command()
def pipeline(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the end of the data).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Group by a dimension.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    data: DataOption = None,
) -> None:
    """The weighted pipeline: CRM stage %, historical stage %, and the model, side by side."""
    from features.calendar import instant
    from features.snapshots import data_now
    from features.store import Store, StoreNotFoundError
    from models.forecast.weighted import weighted_pipeline
    from pipelines.forecast import champion_models
    from pipelines.model_reports import print_weighted

    day = _parse_day(as_of, "--as-of")
    try:
        folder = data_dir(data)
        history = Store(folder).load()
        now = data_now(history)
        moment = now
        if day is not None:
            moment = instant(day)
            if moment > now:
                raise ValueError(
                    f"--as-of {day} is after the end of the data ({now:%Y-%m-%d}): the pipeline "
                    "of a day the store has no data for is unknown"
                )
        models = champion_models(folder, history, moment)
        frame = weighted_pipeline(history, moment, by=_one_dimension(by), models=models)
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if fmt is OutputFormat.table:
        print_weighted(frame, by=[by] if by else [], as_of=moment)
        if models is None:
            console.print(
                "[dim]model column empty: no @champion fitted at or before this day "
                "(run `dealcast train`)[/]"
            )
    else:
        emit(frame, fmt)


@app.command()
def evaluate(
    fmt: Annotated[TableOrJson, typer.Option("--format")] = TableOrJson.table,
    data: DataOption = None,
) -> None:
    """Score every kept forecast whose month has closed; log the accuracy history to MLflow."""
    from features.store import StoreNotFoundError
    from pipelines.evaluate import print_evaluate, run_evaluate

    try:
        result = run_evaluate(data_dir(data))
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    print_evaluate(result, fmt.value)


@app.command()
def accuracy(
    by: Annotated[str | None, typer.Option("--by", help="Per segment of a dimension.")] = None,
    horizon: Annotated[int | None, typer.Option("--horizon", min=0)] = None,
    fmt: Annotated[TableOrJson, typer.Option("--format")] = TableOrJson.table,
    data: DataOption = None,
) -> None:
    """Forecast accuracy over time, next to the stage-weighted baseline."""
    from features.store import StoreNotFoundError
    from pipelines.evaluate import print_accuracy, run_accuracy

    try:
        result = run_accuracy(data_dir(data), by=_one_dimension(by), horizon=horizon)
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    print_accuracy(result, fmt.value)


class AnomalyKind(StrEnum):
    kpi = "kpi"
    rep = "rep"
    data_quality = "data_quality"
    deal = "deal"


@app.command()
def anomalies(
    since: Annotated[
        str | None,
        typer.Option("--since", help="First KPI period judged (default: 6 months back)."),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the end of the data).")
    ] = None,
    kind: Annotated[
        list[AnomalyKind] | None, typer.Option("--kind", help="Only these detectors' findings.")
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Simulated data only: score the KPI detector against the injected anomalies.",
        ),
    ] = False,
    fmt: Annotated[TableOrJson, typer.Option("--format")] = TableOrJson.table,
    data: DataOption = None,
) -> None:
    """KPI breaks, reps far from peers, data-quality breaks and deal risk flags, by severity."""
    from features.store import StoreNotFoundError
    from pipelines.anomalies import (
        print_anomalies,
        print_evaluation,
        run_anomalies,
        run_anomaly_evaluation,
    )

    first = _parse_day(since, "--since")
    try:
        if evaluate:
            print_evaluation(run_anomaly_evaluation(data_dir(data), since=first), fmt.value)
            return
        result = run_anomalies(data_dir(data), as_of=_parse_day(as_of, "--as-of"), since=first)
    except (StoreNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    print_anomalies(result, fmt.value, kinds=[k.value for k in kind] if kind else None)


@app.command()
def publish(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the end of the data).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=100)] = 1000,
    data: DataOption = None,
) -> None:
    """Score the open deals, forecast, evaluate, and publish it all for the API (no training)."""
    from features.store import StoreNotFoundError
    from models.tracking import NoChampionError
    from pipelines.publish import MlflowUnreachableError, run_publish

    day = _parse_day(as_of, "--as-of")
    try:
        result = run_publish(data_dir(data), as_of=day, n_samples=samples)
    except (StoreNotFoundError, NoChampionError, ValueError, MlflowUnreachableError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(_os_error(exc, "publish")) from None
    console.print(
        f"published {result['version']}: as of {result['as_of']:%Y-%m-%d %H:%M} UTC, "
        f"{result['open_deals']} open deals scored ({result['flagged_deals']} with risk flags), "
        f"models {result['model_version']}; MLflow run {result['run_id']}"
    )


@app.command()
def serve(
    data: DataOption = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    dev_mode: Annotated[
        bool,
        typer.Option(
            "--dev-mode", help="Let requests without a key in as ops (a laptop only; warns)."
        ),
    ] = False,
) -> None:
    """Serve the API and the dashboard on the published results (they reload by themselves)."""
    from pipelines.serve import run_server

    run_server(data_dir(data), host=host, port=port, dev_mode=dev_mode)


keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(
    role: Annotated[
        str, typer.Option("--role", help="leader, ops or rep:<owner_id> (e.g. rep:rep-0007).")
    ],
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")] = "",
    data: DataOption = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from serving.auth import add_key
    from serving.settings import ServeSettings

    path = ServeSettings(data=data_dir(data)).keys_path
    try:
        key, entry = add_key(path, role, name=name)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(_os_error(exc, "keys add")) from None
    sys.stdout.write(key + "\n")
    err_console.print(
        f"[dim]{entry['id']} ({entry['role']}) stored hashed in {path}; this is the only time "
        "the key is shown[/]"
    )


@keys_app.command("list")
def keys_list(data: DataOption = None) -> None:
    """The keys (ids, roles, names; never the keys)."""
    from serving.auth import list_keys
    from serving.settings import ServeSettings

    emit(pl.DataFrame(list_keys(ServeSettings(data=data_dir(data)).keys_path)), OutputFormat.table)


@keys_app.command("remove")
def keys_remove(key_id: Annotated[str, typer.Argument()], data: DataOption = None) -> None:
    """Revoke a key by its id (a running server stops accepting it within a second)."""
    from serving.auth import remove_key
    from serving.settings import ServeSettings

    try:
        removed = remove_key(ServeSettings(data=data_dir(data)).keys_path, key_id)
    except OSError as exc:
        raise fail(_os_error(exc, "keys remove")) from None
    if not removed:
        raise fail(f"no key {key_id!r}: see `dealcast keys list`")
    console.print(f"removed {key_id}")


@app.command()
def demo(
    data: DataOption = None,
    serve: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Serve the API and dashboard at the end."),
    ] = True,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    deals: Annotated[
        int | None, typer.Option("--deals", min=500, help="A smaller or larger company.")
    ] = None,
) -> None:
    """Simulate a company, show its KPIs and pipeline, train, backtest 12 months, forecast,
    publish; then serve the API and dashboard and print a leader key (--no-serve: stop)."""
    from pipelines.demo import run_demo

    run_demo(data_dir(data), seed=seed, serve=serve, n_deals=deals, host=host, port=port)


if __name__ == "__main__":  # pragma: no cover
    app()
