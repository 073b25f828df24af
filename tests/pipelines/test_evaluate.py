"""The evaluate job (one MLflow run, only when something new is scored) and the accuracy report."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

import pipelines.evaluate as evaluate
from features.contract import DEFAULT_PIPELINE
from features.forecast_log import ForecastLog, accuracy_path, read_accuracy, write_accuracy
from features.store import Store
from models.forecast.accuracy import actuals_for, score_forecasts
from models.forecast.baselines import monthly_bookings
from models.tracking import EXPERIMENT, tracking_uri
from pipelines.evaluate import metric_name, run_accuracy, run_evaluate
from pipelines.simulate import SimConfig, simulate_company
from tests.features.kept_forecasts import kept_frame, row

JUL, AUG, SEP, OCT, NOV = (date(2026, m, 1) for m in (7, 8, 9, 10, 11))


def _ts(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _deals(extra_september: float | None = None) -> pl.DataFrame:
    """Won: Jul 100, Aug 150, Sep 100 (EU), Oct 200; an open deal created 2 Nov ends the data."""
    rows = [
        ("a", _ts(2026, 6, 1), "Closed Won", 100.0, _ts(2026, 7, 5), "EU"),
        ("b", _ts(2026, 6, 2), "Closed Won", 150.0, _ts(2026, 8, 5), "NA"),
        ("c", _ts(2026, 6, 3), "Closed Won", 100.0, _ts(2026, 9, 5), "EU"),
        ("d", _ts(2026, 6, 4), "Closed Won", 200.0, _ts(2026, 10, 5), "NA"),
        ("e", _ts(2026, 11, 2), "Demo", 5.0, None, "EU"),
    ]
    if extra_september is not None:  # a deal entered late, in a later export
        rows.append(("f", _ts(2026, 6, 5), "Closed Won", extra_september, _ts(2026, 9, 9), "NA"))
    frame = pl.DataFrame(
        rows,
        schema=["deal_id", "created_at", "stage", "amount", "closed_at", "region"],
        orient="row",
    )
    return frame.with_columns(pl.lit("o1").alias("owner_id"))


def _forecast(forecast_id: str, as_of: datetime, rows: list[dict[str, object]]) -> pl.DataFrame:
    return kept_frame(rows, forecast_id=forecast_id, as_of=as_of)


FIRST = _forecast(
    "F1",
    _ts(2026, 9, 10),
    [
        row(SEP, "dealcast", 90.0, 80.0, 120.0),
        row(SEP, "stage_weighted_crm", 130.0),
        row(SEP, "stage_weighted_hist", 105.0),
        row(OCT, "dealcast", 210.0, 150.0, 260.0),
        row(OCT, "stage_weighted_crm", 150.0),
        row(OCT, "stage_weighted_hist", 180.0),
        row(NOV, "dealcast", 20.0, 0.0, 40.0),  # November has not closed
        row(JUL, "dealcast", 400.0, 300.0, 500.0, period="quarter"),
        row(SEP, "dealcast", 50.0, 40.0, 100.0, by="region", segment="EU"),
    ],
)
SECOND = _forecast(
    "F2",
    _ts(2026, 10, 3),
    [row(OCT, "dealcast", 190.0, 185.0, 195.0), row(OCT, "stage_weighted_crm", 170.0)],
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A hand-built store (known bookings); one data directory, since a new MLflow SQLite
    schema takes seconds."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("evaluate")
    Store(root).write({"deals": _deals()}, DEFAULT_PIPELINE)
    yield root
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def _evaluate_runs(data: Path) -> list[str]:
    client = MlflowClient(tracking_uri(data))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`dealcast.job` = 'evaluate'"
    )
    return [r.info.run_id for r in runs]


def _history(client: MlflowClient, run_id: str, name: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, name)}


def test_evaluate_scores_once_logs_once_and_then_does_nothing(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    nothing = run_evaluate(data)
    assert (nothing["new_rows"], nothing["kept_forecasts"], nothing["run_id"]) == (0, 0, None)
    assert not accuracy_path(data).exists() and not _evaluate_runs(data)

    ForecastLog(data).append(FIRST)
    first = run_evaluate(data)
    assert first["new_rows"] == 8 and first["revised_rows"] == 0
    assert first["waiting_rows"] == 1  # November
    # the end of the last day with data (a row at 2026-11-02 00:00)
    assert first["closed_before"] == "2026-11-03T00:00:00+00:00"
    assert _evaluate_runs(data) == [first["run_id"]]
    table = read_accuracy(data)
    assert table.height == 8 and first["accuracy_path"] == str(accuracy_path(data))

    client = MlflowClient(tracking_uri(data))
    run = client.get_run(str(first["run_id"]))
    assert run.info.run_name == "evaluate" and run.info.status == "FINISHED"
    assert run.data.params["new_rows"] == "8"
    assert _history(client, run.info.run_id, "accuracy__dealcast__h0") == {202609: 0.9}
    assert _history(client, run.info.run_id, "accuracy__dealcast__h1") == {202610: 0.95}
    assert _history(client, run.info.run_id, "wape__stage_weighted_crm__h1") == {202610: 0.25}
    assert _history(client, run.info.run_id, "bias__stage_weighted_hist__h0") == {
        202609: pytest.approx(0.05)
    }
    assert _history(client, run.info.run_id, "coverage__dealcast__h0") == {202609: 1.0}
    assert _history(client, run.info.run_id, "quarter_wape__dealcast__h-2") == {
        202607: pytest.approx(50 / 350)
    }
    assert "coverage__stage_weighted_crm__h0" not in run.data.metrics  # a point method
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"accuracy.csv", "accuracy_summary.csv", "accuracy_by_month.csv"}

    # the same data again: nothing written, nothing logged
    stat = accuracy_path(data).stat()
    content = accuracy_path(data).read_bytes()
    again = run_evaluate(data)
    assert (again["new_rows"], again["revised_rows"], again["run_id"]) == (0, 0, None)
    assert again["scored_rows"] == 8 and again["accuracy_path"] is None
    assert accuracy_path(data).read_bytes() == content
    assert accuracy_path(data).stat().st_mtime_ns == stat.st_mtime_ns
    assert _evaluate_runs(data) == [first["run_id"]]

    # a new forecast of a closed month: only its rows are new; the history holds both
    ForecastLog(data).append(SECOND)
    second = run_evaluate(data)
    assert second["new_rows"] == 2 and second["scored_rows"] == 10
    assert len(_evaluate_runs(data)) == 2
    october = _history(client, str(second["run_id"]), "accuracy__dealcast__h0")
    assert october == {202609: 0.9, 202610: 0.95}  # Sep from F1, Oct from F2 (190 vs 200)
    assert run_evaluate(data)["run_id"] is None

    # a later export with a deal entered late in September: its rows are re-scored
    Store(data).write({"deals": _deals(extra_september=25.0)}, DEFAULT_PIPELINE)
    revised = run_evaluate(data)
    assert (revised["new_rows"], revised["revised_rows"]) == (0, 4)  # 3 Sep + Q3
    september = read_accuracy(data).filter(
        (pl.col("target_month") == SEP) & (pl.col("by") == "") & (pl.col("period") == "month")
    )
    assert september["actual"].to_list() == [125.0, 125.0, 125.0]
    assert len(_evaluate_runs(data)) == 3
    assert run_evaluate(data)["run_id"] is None


def test_closed_before_is_never_past_the_end_of_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Store(tmp_path).write({"deals": _deals()}, DEFAULT_PIPELINE)
    ForecastLog(tmp_path).append(FIRST)
    early = run_evaluate(tmp_path, closed_before=date(2026, 10, 1))
    assert early["closed_before"] == "2026-10-01T00:00:00+00:00"
    assert read_accuracy(tmp_path)["target_month"].max() == SEP  # October had not closed
    late = run_evaluate(tmp_path, closed_before=date(2027, 6, 1))
    assert late["closed_before"] == "2026-11-03T00:00:00+00:00"  # data through 2 November
    assert late["new_rows"] == 3 and late["waiting_rows"] == 1  # October's; November waits


def test_metric_names() -> None:
    assert metric_name("accuracy", "dealcast", 0) == "accuracy__dealcast__h0"
    assert metric_name("wape", "stage_weighted_crm", 1) == "wape__stage_weighted_crm__h1"
    assert metric_name("coverage", "dealcast", -1, "quarter") == "quarter_coverage__dealcast__h-1"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Console:
    console = Console(record=True, width=140, force_terminal=False, color_system=None)
    monkeypatch.setattr(evaluate, "console", console)
    return console


def test_accuracy_report_puts_dealcast_next_to_the_baselines(
    tmp_path: Path, recorded: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = run_accuracy(tmp_path)
    evaluate.print_accuracy(empty)
    assert "no scored forecasts (company total) yet" in recorded.export_text()

    Store(tmp_path).write({"deals": _deals()}, DEFAULT_PIPELINE)
    ForecastLog(tmp_path).append(FIRST)
    ForecastLog(tmp_path).append(SECOND)
    history = Store(tmp_path).load()
    kept = ForecastLog(tmp_path).read()
    end = date(2026, 11, 2)
    write_accuracy(tmp_path, score_forecasts(kept, actuals_for(history, kept, end), end))

    result = run_accuracy(tmp_path)
    assert (result["rows"], result["forecasts"]) == (9, 2)
    summary = result["summary"]
    assert isinstance(summary, pl.DataFrame)
    h1 = summary.filter((pl.col("period") == "month") & (pl.col("horizon") == 1))
    assert h1["method"].to_list() == ["dealcast", "stage_weighted_crm", "stage_weighted_hist"]
    assert h1["wape"].to_list() == pytest.approx([0.05, 0.25, 0.1])
    h0 = summary.filter((pl.col("period") == "month") & (pl.col("horizon") == 0))
    dealcast_h0 = h0.row(0, named=True)  # Sep (F1: 90 vs 100) and Oct (F2: 190 vs 200)
    assert dealcast_h0["n"] == 2 and dealcast_h0["wape"] == pytest.approx(20 / 300)
    assert dealcast_h0["coverage"] == 0.5  # Oct's 200 is outside F2's 185-195

    evaluate.print_accuracy(result)
    text = recorded.export_text()
    for header in ("WAPE dealcast", "WAPE sw_crm", "bias sw_hist", "accuracy sw_hist"):
        assert header in text
    assert "coverage dealcast" in text
    assert "coverage sw_crm" not in text  # point methods have no interval
    assert "2026-10-01" in text and "forecast accuracy, company total: 2 forecast(s)" in text

    by_region = run_accuracy(tmp_path, by="region", horizon=0)
    assert by_region["rows"] == 1
    capsys.readouterr()  # drop the tables printed so far
    evaluate.print_accuracy(by_region, "json")
    payload = json.loads(capsys.readouterr().out)
    assert payload["by"] == "region" and payload["horizon"] == 0
    assert payload["summary"] == [
        {
            "period": "month",
            "horizon": 0,
            "segment": "EU",
            "method": "dealcast",
            "wape": 0.5,
            "bias": -0.5,
            "coverage": 1.0,
            "accuracy": 0.5,
            "n": 1,
        }
    ]
    with pytest.raises(ValueError, match="unknown dimension 'planet'"):
        run_accuracy(tmp_path, by="planet")


def test_evaluate_on_a_simulated_company(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forecasts by product on a simulated store: every closed month meets its bookings."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    company = simulate_company(SimConfig(n_deals=800, months=12, seed=5, anomalies=False))
    Store(tmp_path).write(company.tables, company.pipeline)
    history = Store(tmp_path).load()
    products = sorted(company.tables["deals"]["product"].drop_nulls().unique().to_list())
    rows = [row(m, "dealcast", 1000.0, 500.0, 2000.0) for m in (AUG, SEP, OCT)]
    rows += [row(m, "stage_weighted_crm", 900.0) for m in (AUG, SEP, OCT)]
    rows += [row(JUL, "dealcast", 3000.0, 2000.0, 4000.0, period="quarter")]
    rows += [row(SEP, "dealcast", 300.0, by="product", segment=p) for p in products]
    ForecastLog(tmp_path).append(_forecast("SIM", _ts(2026, 8, 3), rows))

    result = run_evaluate(tmp_path)
    # the simulated export holds every day of October: everything is scored
    assert result["waiting_rows"] == 0
    assert result["new_rows"] == len(rows) and result["run_id"] is not None
    scored = read_accuracy(tmp_path)
    booked = monthly_bookings(history, by="product")
    for r in scored.filter(pl.col("by") == "product").iter_rows(named=True):
        expected = booked.filter((pl.col("month") == SEP) & (pl.col("product") == r["segment"]))
        assert r["actual"] == pytest.approx(expected["bookings"].item())
    total = monthly_bookings(history)
    quarter = scored.filter(pl.col("period") == "quarter")["actual"].item()
    in_q3 = total.filter(pl.col("month").is_between(JUL, SEP))["bookings"].sum()
    assert quarter == pytest.approx(in_q3)
    assert run_evaluate(tmp_path)["run_id"] is None
