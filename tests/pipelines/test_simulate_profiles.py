"""Company profiles and export profiles of the simulator (pipelines/simulate/profiles, exports)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.contract import DEFAULT_PIPELINE, SCHEMAS
from features.store import Store
from pipelines.cli import app
from pipelines.ingest import ingest_sources
from pipelines.simulate import (
    COMPANY_PROFILES,
    EXPORT_PROFILES,
    SimConfig,
    SimulatedCompany,
    company_config,
    export_company,
    export_pipeline,
    export_profile,
    simulate_company,
    write_company,
)
from pipelines.simulate.exports import LEAD_PIPELINE, MISSING_SHARE, STALE_SHARE

runner = CliRunner()
BASE = SimConfig(n_deals=1_200, months=18, seed=3)
OPEN = list(DEFAULT_PIPELINE.open_stages)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _won_cycle_days(company: SimulatedCompany) -> float:
    won = company.tables["deals"].filter(pl.col("stage") == "Closed Won")
    days = (won["closed_at"] - won["created_at"]).dt.total_seconds() / 86_400
    return float(days.median())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def company() -> SimulatedCompany:
    return simulate_company(BASE)


# -- company profiles -------------------------------------------------------------------------


def test_default_profile_is_todays_config_and_unknown_names_fail() -> None:
    assert company_config("default", 7) == SimConfig()
    assert company_config("default", 3, n_deals=1_200, months=18) == BASE
    assert set(COMPANY_PROFILES) == {"default", "small", "enterprise", "smb", "declining", "regime"}
    with pytest.raises(ValueError, match="unknown company profile"):
        company_config("huge")


def test_small_has_300_to_1000_deals() -> None:
    deals = simulate_company(company_config("small", seed=1)).tables["deals"]
    assert 300 <= deals.height <= 1_000


def test_enterprise_cycles_are_6_to_12_months_and_bigger_than_smb() -> None:
    enterprise = simulate_company(company_config("enterprise", seed=2, n_deals=1_000))
    smb = simulate_company(company_config("smb", seed=2, n_deals=3_000))
    assert 183 <= _won_cycle_days(enterprise) <= 365
    assert 14 <= _won_cycle_days(smb) <= 28
    big = enterprise.tables["deals"]["amount"].median()
    small = smb.tables["deals"]["amount"].median()
    assert big is not None and small is not None and big > 10 * small  # type: ignore[operator]
    # the org: enterprise reps carry fewer deals, SMB reps many more
    assert enterprise.tables["reps"].height >= 10
    assert smb.tables["reps"].height <= 5 + 3_000 / (36 * 20)


def test_declining_creation_falls_then_stops_for_the_last_3_months() -> None:
    config = company_config("declining", seed=4, n_deals=3_000)
    deals = simulate_company(config).tables["deals"]
    month = deals["created_at"].dt.strftime("%Y-%m")
    per_month = month.value_counts().sort("created_at")["count"].to_list()
    last3 = deals.filter(pl.col("created_at") >= datetime(2026, 8, 1, tzinfo=UTC)).height
    assert last3 == 0
    first, last = sum(per_month[:6]), sum(per_month[-6:])  # the last 6 months with deals
    assert len(per_month) == 33 and last < 0.6 * first


def test_regime_cuts_the_win_rate_by_about_a_third_and_is_labelled() -> None:
    config = company_config("regime", seed=5)
    company = simulate_company(config)
    change = datetime(2025, 5, 1, tzinfo=UTC)  # the middle of 36 months ending 2026-11-01
    closed = company.tables["deals"].filter(pl.col("closed_at").is_not_null())
    won = pl.col("stage") == "Closed Won"
    before = closed.filter(pl.col("closed_at") < change).select(won.mean()).item()
    after = closed.filter(pl.col("created_at") >= change).select(won.mean()).item()
    assert 0.55 <= after / before <= 0.8
    row = company.truth["truth_anomalies"].row(0, named=True)
    assert company.truth["truth_anomalies"].height == 1
    assert (row["kind"], row["start"].isoformat()) == ("win_rate_regime", "2025-05-01")


# -- export profiles ----------------------------------------------------------------------------


def test_rich_is_the_input_and_unknown_exports_fail(company: SimulatedCompany) -> None:
    out = export_profile(company.tables, "rich")
    assert list(out) == list(company.tables)
    assert all(out[k].equals(company.tables[k]) for k in out)
    assert export_pipeline("rich") == DEFAULT_PIPELINE
    with pytest.raises(ValueError, match="unknown export profile"):
        export_profile(company.tables, "pdf")


def test_current_state_keeps_deals_reps_targets_only(company: SimulatedCompany) -> None:
    out = export_profile(company.tables, "current_state")
    assert sorted(out) == ["deals", "reps", "targets"]
    assert out["deals"].equals(company.tables["deals"])


def test_no_forecast_fields(company: SimulatedCompany) -> None:
    out = export_profile(company.tables, "no_forecast_fields")
    deals = out["deals"]
    is_open = pl.col("stage").is_in(OPEN)
    assert deals.filter(is_open)["expected_close_date"].null_count() == deals.filter(is_open).height
    assert deals.filter(~is_open)["expected_close_date"].null_count() == 0
    assert deals["forecast_category"].is_null().all() and deals["crm_probability"].is_null().all()
    assert out["stage_history"]["forecast_category"].is_null().all()
    assert all(s.probability is None for s in export_pipeline("no_forecast_fields").stages)
    assert deals.drop("expected_close_date", "forecast_category", "crm_probability").equals(
        company.tables["deals"].drop("expected_close_date", "forecast_category", "crm_probability")
    )


def test_stale_leaves_a_share_of_lost_deals_open(company: SimulatedCompany) -> None:
    rich = company.tables["deals"]
    out = export_profile(company.tables, "stale", seed=1)
    deals = out["deals"]
    joined = rich.join(deals, on="deal_id", suffix="_x")
    stale = joined.filter((pl.col("stage") == "Closed Lost") & pl.col("stage_x").is_in(OPEN))
    lost = rich.filter(pl.col("stage") == "Closed Lost").height
    assert 0.13 <= stale.height / lost <= 0.27, stale.height / lost
    assert STALE_SHARE == 0.2
    assert stale["closed_at_x"].is_null().all() and stale["lost_reason_x"].is_null().all()
    # nothing else changes: the won and open deals and the other lost deals are as they were
    others = deals.filter(~pl.col("deal_id").is_in(stale["deal_id"].implode()))
    assert others.equals(rich.filter(~pl.col("deal_id").is_in(stale["deal_id"].implode())))
    # their last open stage is the stage of their last open history row, and no close row
    history = out["stage_history"].filter(pl.col("deal_id").is_in(stale["deal_id"].implode()))
    last = history.group_by("deal_id").agg(pl.col("stage").sort_by("changed_at").last())
    check = last.join(stale.select("deal_id", "stage_x"), on="deal_id")
    assert check.height == stale.height and (check["stage"] == check["stage_x"]).all()
    assert company.truth["truth_probabilities"].height  # truth untouched (same company)


def test_date_only_truncates_every_timestamp(company: SimulatedCompany) -> None:
    out = export_profile(company.tables, "date_only")
    for table, column in (
        ("deals", "created_at"),
        ("deals", "closed_at"),
        ("stage_history", "changed_at"),
        ("activities", "occurred_at"),
    ):
        assert out[table].schema[column] == pl.Date, (table, column)
        assert out[table][column].equals(company.tables[table][column].dt.date())


def test_missing_dims_nulls_about_15_percent(company: SimulatedCompany) -> None:
    out = export_profile(company.tables, "missing_dims", seed=2)
    deals = out["deals"]
    for column in ("product", "region", "segment", "source", "deal_type", "account_id"):
        share = deals[column].null_count() / deals.height
        assert 0.10 <= share <= 0.20, (column, share)
    assert deals["owner_id"].null_count() == 0
    assert out["reps"].height < company.tables["reps"].height
    assert MISSING_SHARE == 0.15


def test_lead_funnel_is_unit_amounts_in_three_stages(company: SimulatedCompany) -> None:
    out = export_profile(company.tables, "lead_funnel")
    assert sorted(out) == ["deals", "reps", "targets"]
    deals = out["deals"]
    assert (deals["amount"] == 1.0).all()
    assert set(deals["stage"].unique()) <= {"Open", "Won", "Lost"}
    rich = company.tables["deals"]
    assert (deals["stage"] == "Won").sum() == (rich["stage"] == "Closed Won").sum()
    assert export_pipeline("lead_funnel") == LEAD_PIPELINE
    assert LEAD_PIPELINE.names == ("Open", "Won", "Lost")


def test_thinnest_applies_every_deal_degradation(company: SimulatedCompany) -> None:
    thin = export_company(company, "thinnest", seed=3)
    assert sorted(thin.tables) == ["deals", "reps", "targets"]
    deals = thin.tables["deals"]
    assert deals.schema["created_at"] == pl.Date and deals["forecast_category"].is_null().all()
    assert deals["region"].null_count() > 0
    open_now = deals.filter(pl.col("stage").is_in(OPEN)).height
    assert open_now > company.tables["deals"].filter(pl.col("stage").is_in(OPEN)).height
    assert thin.truth is company.truth
    assert all(s.probability is None for s in thin.pipeline.stages)


def test_exports_are_deterministic(company: SimulatedCompany) -> None:
    a = export_profile(company.tables, "thinnest", seed=9)
    b = export_profile(company.tables, "thinnest", seed=9)
    assert all(a[k].equals(b[k]) for k in a)


@pytest.mark.parametrize("name", list(EXPORT_PROFILES))
def test_ingest_accepts_every_export_without_quarantine(
    company: SimulatedCompany, name: str, tmp_path: Path
) -> None:
    exported = export_company(company, name, seed=3)
    source = tmp_path / "src"
    write_company(exported, source, file_format="csv" if name == "thinnest" else "parquet")
    report = ingest_sources([source], store=Store(tmp_path / "data"))
    assert report.quarantine_file is None
    counts = {c.table: (c.read, c.loaded) for c in report.tables}
    assert set(counts) == set(exported.tables)
    for table, frame in exported.tables.items():
        assert counts[table] == (frame.height, frame.height), table
    assert (source / "pipeline.toml").read_text() == exported.pipeline.to_toml()
    assert Store(tmp_path / "data").load().pipeline == exported.pipeline


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_company_default_is_byte_identical_to_no_flag(tmp_path: Path) -> None:
    args = ["simulate", "--deals", "600", "--months", "18", "--seed", "2"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    flagged = runner.invoke(
        app, [*args, "--out", str(tmp_path / "b"), "--company", "default", "--export", "rich"]
    )
    assert plain.exit_code == 0 and flagged.exit_code == 0, plain.output + flagged.output
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    company = simulate_company(SimConfig(n_deals=600, months=18, seed=2))
    write_company(company, tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "c")


def test_cli_company_and_export_then_ingest(tmp_path: Path) -> None:
    out = tmp_path / "thin"
    result = runner.invoke(
        app, ["simulate", "--out", str(out), "--company", "small", "--export", "thinnest"]
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert "stage_history.parquet" not in files and "activities.parquet" not in files
    assert "probability" not in (out / "pipeline.toml").read_text()
    deals = pl.read_parquet(out / "deals.parquet")
    assert 300 <= deals.height <= 1_000 and deals.schema["created_at"] == pl.Date
    assert dict(deals.schema).keys() == SCHEMAS["deals"].keys()
    ingested = runner.invoke(app, ["ingest", str(out), "--data", str(tmp_path / "data")])
    assert ingested.exit_code == 0, ingested.output


def test_cli_profile_values_yield_to_explicit_options(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["simulate", "--out", str(tmp_path), "--company", "small", "--months", "12"]
        + ["--no-anomalies"],
    )
    assert result.exit_code == 0, result.output
    deals = pl.read_parquet(tmp_path / "deals.parquet")
    assert deals.height == 600
    assert deals["created_at"].min() >= datetime(2025, 11, 1, tzinfo=UTC)  # type: ignore[operator]


def test_cli_refuses_unknown_profiles(tmp_path: Path) -> None:
    for flag in ("--company", "--export"):
        result = runner.invoke(app, ["simulate", "--out", str(tmp_path), flag, "nope"])
        assert result.exit_code != 0
        assert "must be one of" in result.output
