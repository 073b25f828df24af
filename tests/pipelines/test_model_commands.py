"""`dealcast forecast`, `backtest`, `pipeline`, `evaluate` and `accuracy` through the CLI.

One small simulated store per module (two regions, data to 2026-10-31), trained once; what runs
before the training is a fixture the training fixture depends on, so it runs first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner, Result

from features.forecast_log import ForecastLog, read_accuracy
from features.store import Store
from models.forecast.backtest import METHODS
from models.forecast.baselines import monthly_bookings
from models.forecast.selection import DERIVED
from models.tracking import EXPERIMENT, tracking_uri
from pipelines.cli import app

runner = CliRunner()

SAMPLES = "200"
NOW = "2026-11-01T00:00:00+00:00"  # the simulated data ends 2026-10-31
POINT_METHODS = ("stage_weighted_crm", "stage_weighted_hist", "seasonal_naive", "run_rate")


def _ok(data: Path, *args: str) -> Result:
    result = runner.invoke(app, [*args, "--data", str(data)])
    assert result.exit_code == 0, result.output
    return result


def _json(data: Path, *args: str) -> Any:
    return json.loads(_ok(data, *args, "--format", "json").stdout)


def _clean_error(data: Path, *args: str) -> str:
    """Run a command that must fail as a user error: exit code 2, a message, no traceback."""
    result = runner.invoke(app, [*args, "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "error:" in result.output and "Traceback" not in result.output
    return result.output


def _forecast(data: Path, *args: str) -> dict[str, Any]:
    payload: dict[str, Any] = _json(data, "forecast", "--samples", SAMPLES, *args)
    return payload


def _units(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(r["period"], r["target_month"], r["horizon"]) for r in rows]


def _client(data: Path) -> MlflowClient:
    return MlflowClient(tracking_uri(data))


def _runs_named(data: Path, name: str) -> list[Any]:
    client = _client(data)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return list(
        client.search_runs(
            [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'"
        )
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("model-commands")
    src = data / "src"
    # 2400 deals over 24 months: 10 reps, two teams, two regions (NA and EMEA)
    sim = ["simulate", "--out", str(src), "--deals", "2400", "--months", "24"]
    assert runner.invoke(app, sim).exit_code == 0
    _ok(data, "ingest", str(src))
    return data


@pytest.fixture(scope="module")
def untrained(store: Path) -> dict[str, Any]:
    """What `forecast` and `pipeline` print before any `train`."""
    return {
        "forecast": _forecast(store),
        "pipeline": _json(store, "pipeline"),
    }


@pytest.fixture(scope="module")
def trained(store: Path, untrained: dict[str, Any]) -> dict[str, Any]:
    result = _ok(store, "train", "--format", "json", "--gate-origins", "2")
    out: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{") :])
    assert out["alias"] == "champion" and out["timing_alias"] == "champion"
    return out


# -- forecast ----------------------------------------------------------------------------------


def test_forecast_before_train_refits_and_is_kept_and_logged(
    store: Path, untrained: dict[str, Any]
) -> None:
    payload = untrained["forecast"]
    assert payload["as_of"] == NOW
    assert payload["models"] == "refitted at the as_of (no champion yet: run `dealcast train`)"
    assert payload["model_version"] == "refitted"
    rows = payload["forecast"]
    assert rows and all(r["p10"] <= r["p50"] <= r["p90"] for r in rows)
    # company total: the three coming months and the quarter the as-of is in (Q4 2026)
    assert {(r["by"], r["segment"]) for r in rows} == {("", "total")}
    assert _units(rows) == [
        ("month", "2026-11-01", 0),
        ("month", "2026-12-01", 1),
        ("month", "2027-01-01", 2),
        ("quarter", "2026-10-01", -1),
    ]
    months, quarter = rows[:3], rows[3]
    assert all(r["booked_to_date"] == 0.0 for r in months)
    assert quarter["booked_to_date"] > 0  # October is booked
    assert quarter["p10"] >= quarter["booked_to_date"]
    # the stage-weighted baselines, for the same units
    baseline = payload["baseline"]
    assert [r["method"] for r in baseline] == ["stage_weighted_crm"] * 4 + [
        "stage_weighted_hist"
    ] * 4
    for method in ("stage_weighted_crm", "stage_weighted_hist"):
        part = [r for r in baseline if r["method"] == method]
        assert _units(part) == _units(rows)
        assert all(r["p50"] > 0 for r in part)
        # the quarter: booked so far + the weighted pipeline of its months still to come
        assert part[3]["p50"] == pytest.approx(
            quarter["booked_to_date"] + part[0]["p50"] + part[1]["p50"]
        )

    # kept, under its id, with the baselines
    kept = ForecastLog(store).read().filter(pl.col("forecast_id") == payload["forecast_id"])
    assert kept.height == 12
    assert kept.group_by("method").len().sort("method").rows() == [
        ("dealcast", 4),
        ("stage_weighted_crm", 4),
        ("stage_weighted_hist", 4),
    ]
    ours = kept.filter(pl.col("method") == "dealcast").sort("period", "target_month")
    assert ours["p50"].to_list() == pytest.approx([r["p50"] for r in rows])

    # one MLflow run "forecast", tagged with the forecast, with the fan chart
    client = _client(store)
    run = client.get_run(payload["run_id"])
    assert run.info.run_name == "forecast" and run.info.status == "FINISHED"
    assert run.data.tags["dealcast.forecast_id"] == payload["forecast_id"]
    assert run.data.params["models"] == payload["models"]
    artifacts = {a.path for a in client.list_artifacts(payload["run_id"])}
    assert {"fan_chart.png", "forecast.csv", "kept.csv"} <= artifacts
    p50 = client.get_metric_history(payload["run_id"], "p50")
    assert sorted((m.step, m.value) for m in p50) == [
        (h, pytest.approx(r["p50"])) for h, r in enumerate(months)
    ]
    assert [r.info.run_id for r in _runs_named(store, "forecast")].count(payload["run_id"]) == 1


def test_forecast_after_train_uses_the_champion(store: Path, trained: dict[str, Any]) -> None:
    payload = _forecast(store)
    assert payload["models"] == "registry @champion"
    version = f"v{trained['version']}"
    assert f"dealcast-close-probability@{version}" in payload["model_version"]
    assert f"dealcast-close-timing@v{trained['timing_version']}" in payload["model_version"]
    assert all(r["p10"] <= r["p50"] <= r["p90"] for r in payload["forecast"])
    # the champion's backtest chose what each month publishes, and the output says so
    # (the fixture's train backtests 2 origins: h2 has no closed month, it takes h1's choice)
    chosen = {int(line[1]): line.split(", backtest WAPE")[0][4:] for line in payload["published"]}
    assert sorted(chosen) == [0, 1]
    months = [r for r in payload["forecast"] if r["period"] == "month" and r["by"] == ""]
    for r in months:
        used = chosen[min(r["horizon"], 1)]
        assert r["method"] == used or r["method"].startswith("blend("), (r["method"], used)
        if r["method"] == "dealcast":
            assert r["p50"] == pytest.approx(r["deal_model_p50"])
    kept = ForecastLog(store).read().filter(pl.col("forecast_id") == payload["forecast_id"])
    assert set(kept.filter(pl.col("method") == "dealcast")["model_version"]) == {
        payload["model_version"]
    }


def test_forecast_before_the_champion_cutoff_refits(store: Path, trained: dict[str, Any]) -> None:
    # the champion was fitted on data to 2026-11-01 00:00: as of 2026-10-31 it saw the future
    payload = _forecast(store, "--as-of", "2026-10-31")
    assert payload["as_of"] == "2026-10-31T00:00:00+00:00"
    assert payload["models"] == "refitted at the as_of (the champion was fitted after it)"
    assert payload["model_version"] == "refitted"
    assert _units(payload["forecast"]) == [
        ("month", "2026-10-01", 0),
        ("month", "2026-11-01", 1),
        ("month", "2026-12-01", 2),
        ("quarter", "2026-10-01", 0),
    ]


def test_forecast_by_region_parts_add_up_in_the_mean(store: Path, trained: dict[str, Any]) -> None:
    payload = _forecast(store, "--by", "region")
    rows = payload["forecast"]
    assert {(r["by"], r["segment"]) for r in rows} == {
        ("", "total"),
        ("region", "NA"),
        ("region", "EMEA"),
    }
    assert all(r["p10"] <= r["p50"] <= r["p90"] for r in rows)
    total = {(r["period"], r["target_month"]): r for r in rows if r["by"] == ""}
    assert len(total) == 4
    for key, row in total.items():
        parts = [r for r in rows if r["by"] == "region" and (r["period"], r["target_month"]) == key]
        assert len(parts) == 2
        # means add up (P50s of the parts need not: a median is not additive)
        assert sum(p["mean"] for p in parts) == pytest.approx(row["mean"], rel=1e-9)
        assert sum(p["booked_to_date"] for p in parts) == pytest.approx(row["booked_to_date"])
    # the stage-weighted baselines are sums: the regions add up to the total exactly
    baseline: dict[tuple[str, str, str], float] = defaultdict(float)
    for r in payload["baseline"]:
        if r["by"] == "region":
            baseline[(r["method"], r["period"], r["target_month"])] += r["p50"]
    for r in payload["baseline"]:
        if r["by"] == "":
            assert baseline[(r["method"], r["period"], r["target_month"])] == pytest.approx(
                r["p50"]
            )


def test_forecast_table_shows_the_quarter(store: Path, trained: dict[str, Any]) -> None:
    output = _ok(store, "forecast", "--samples", SAMPLES).output
    assert "Bookings forecast as of 2026-11-01 00:00 UTC" in output
    assert "P50" in output and "P10" in output and "P90" in output
    assert "Q4 2026" in output and "2026-12" in output
    assert "registry @champion" in output


def test_forecast_errors_are_clean(store: Path) -> None:
    late = _clean_error(store, "forecast", "--as-of", "2026-11-05", "--samples", SAMPLES)
    assert "as_of 2026-11-05 00:00 is after the end of the data (2026-11-01)" in late
    nonsense = _clean_error(store, "forecast", "--by", "nonsense", "--samples", SAMPLES)
    assert "--by must be one of owner_id" in nonsense and "'nonsense'" in nonsense
    bad_day = _clean_error(store, "forecast", "--as-of", "31/10/2026")
    assert "--as-of expects a date like 2026-06-30" in bad_day


# -- backtest ----------------------------------------------------------------------------------


def test_backtest_json_scores_every_method_and_logs_a_run(store: Path) -> None:
    payload = _json(
        store,
        "backtest",
        "--from",
        "2026-05",
        "--to",
        "2026-06",
        "--horizons",
        "0,1",
        "--samples",
        SAMPLES,
    )
    assert payload["origins"] == ["2026-05", "2026-06"] and payload["horizons"] == [0, 1]
    summary = payload["summary"]
    assert all({"method", "horizon", "wape", "bias", "coverage"} <= set(r) for r in summary)
    for h in (0, 1):
        methods = sorted(r["method"] for r in summary if r["horizon"] == h)
        assert methods == sorted((*METHODS, *DERIVED))
    for r in summary:
        assert isinstance(r["wape"], float) and r["wape"] >= 0
        if r["method"] in ("blend", "published_nested"):
            assert r["coverage"] is None, r
        if r["method"] in POINT_METHODS:
            assert r["coverage"] is None, r
        if r["method"] == "dealcast":
            assert 0.0 <= r["coverage"] <= 1.0
    assert "h0" in payload["acceptance"]

    client = _client(store)
    run = client.get_run(payload["run_id"])
    assert run.info.run_name == "backtest" and run.data.params["horizons"] == "0,1"
    assert "backtest.csv" in {a.path for a in client.list_artifacts(payload["run_id"])}
    history = client.get_metric_history(payload["run_id"], "ape__dealcast__h0")
    assert sorted(m.step for m in history) == [202605, 202606]
    # the logged per-origin errors and the summary come from the artifact's frame
    path = download_artifacts(
        run_id=payload["run_id"], artifact_path="backtest.csv", tracking_uri=tracking_uri(store)
    )
    frame = pl.read_csv(path, try_parse_dates=True)
    h0 = frame.filter(pl.col("horizon") == 0).sort("origin")
    ape = ((h0["dealcast"] - h0["actual"]).abs() / h0["actual"]).to_list()
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(ape)
    wape = next(r["wape"] for r in summary if r["method"] == "dealcast" and r["horizon"] == 0)
    errors = (h0["dealcast"] - h0["actual"]).abs()
    assert wape == pytest.approx(float(errors.sum()) / float(h0["actual"].sum()))


def test_backtest_errors_are_clean(store: Path) -> None:
    backwards = _clean_error(store, "backtest", "--from", "2026-07", "--to", "2026-05")
    assert "--from 2026-07 is after --to 2026-05" in backwards
    open_month = _clean_error(store, "backtest", "--to", "2026-11", "--horizons", "0")
    assert "the last origin 2026-11 has not closed" in open_month
    after_default = _clean_error(store, "backtest", "--from", "2026-12")
    assert "no backtest origins from 2026-12 to 2026-10" in after_default
    letters = _clean_error(store, "backtest", "--horizons", "a,b")
    assert "--horizons expects integers like 0,1,2, got 'a,b'" in letters
    assert "--from expects a month like 2026-06" in _clean_error(store, "backtest", "--from", "May")


# -- weighted pipeline -------------------------------------------------------------------------


def test_pipeline_before_train_has_no_model_column(untrained: dict[str, Any]) -> None:
    rows = untrained["pipeline"]
    months = [r["close_month"] for r in rows]
    dated = [m for m in months if m is not None]
    assert dated and dated == sorted(set(dated)) and dated[0] == "2026-11-01"
    for r in rows:
        assert r["model_weighted"] is None
        assert 0 < r["stage_weighted_crm"] <= r["amount"]
        assert 0 <= r["stage_weighted_hist"] <= r["amount"]
    # the forecast's baseline for November (nothing booked yet) is the weighted pipeline
    november = rows[0]
    baseline = {
        r["method"]: r["p50"]
        for r in untrained["forecast"]["baseline"]
        if r["target_month"] == "2026-11-01" and r["period"] == "month"
    }
    assert baseline["stage_weighted_crm"] == pytest.approx(november["stage_weighted_crm"])
    assert baseline["stage_weighted_hist"] == pytest.approx(november["stage_weighted_hist"])


def test_pipeline_after_train_has_the_model_column(
    store: Path, trained: dict[str, Any], untrained: dict[str, Any]
) -> None:
    rows = _json(store, "pipeline")
    before = untrained["pipeline"]
    assert [r["close_month"] for r in rows] == [r["close_month"] for r in before]
    for r, was in zip(rows, before, strict=True):
        assert 0 < r["model_weighted"] <= r["amount"]
        assert r["stage_weighted_crm"] == pytest.approx(was["stage_weighted_crm"])
    # by region: the regions add up to the total in every column
    by_region = _json(store, "pipeline", "--by", "region")
    assert {r["region"] for r in by_region} == {"NA", "EMEA"}
    summed: dict[str | None, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in by_region:
        for column in ("deals", "amount", "stage_weighted_crm", "model_weighted"):
            summed[r["close_month"]][column] += r[column]
    for r in rows:
        for column in ("deals", "amount", "stage_weighted_crm", "model_weighted"):
            assert summed[r["close_month"]][column] == pytest.approx(r[column])
    # as of a day before the champion's cutoff the model column is empty, with a hint
    earlier = _ok(store, "pipeline", "--as-of", "2026-10-31").output
    assert "Weighted pipeline as of 2026-10-31" in earlier
    assert "model column empty" in earlier


# -- evaluate and accuracy ---------------------------------------------------------------------


def test_evaluate_scores_closed_months_once(store: Path, trained: dict[str, Any]) -> None:
    old = _forecast(store, "--as-of", "2026-07-01")
    assert _units(old["forecast"]) == [
        ("month", "2026-07-01", 0),
        ("month", "2026-08-01", 1),
        ("month", "2026-09-01", 2),
        ("quarter", "2026-07-01", 0),
    ]
    runs_before = len(_runs_named(store, "evaluate"))

    first = _json(store, "evaluate")
    assert first["new_rows"] >= 12 and first["revised_rows"] == 0
    assert first["run_id"] is not None and first["closed_before"] == NOW
    assert len(_runs_named(store, "evaluate")) == runs_before + 1
    scored = read_accuracy(store).filter(pl.col("forecast_id") == old["forecast_id"])
    assert scored.height == 12  # every month of Q3 has closed: 4 units x 3 methods
    assert set(scored["method"]) == {"dealcast", "stage_weighted_crm", "stage_weighted_hist"}
    # actuals are the months' bookings
    bookings = dict(monthly_bookings(Store(store).load()).iter_rows())
    for row in scored.filter(pl.col("period") == "month").iter_rows(named=True):
        assert row["actual"] == pytest.approx(bookings[row["target_month"]])

    second = _json(store, "evaluate")
    assert second["new_rows"] == 0 and second["revised_rows"] == 0
    assert second["run_id"] is None and second["scored_rows"] == first["scored_rows"]
    assert len(_runs_named(store, "evaluate")) == runs_before + 1

    accuracy = _json(store, "accuracy")
    assert accuracy["rows"] >= 12
    wape = {
        (r["method"], r["horizon"]): r["wape"]
        for r in accuracy["summary"]
        if r["period"] == "month"
    }
    for method in ("dealcast", "stage_weighted_crm"):
        assert isinstance(wape[(method, 0)], float) and wape[(method, 0)] >= 0
    assert {m for m, _ in wape} >= {"dealcast", "stage_weighted_crm", "stage_weighted_hist"}
