"""The simulator's public surface: config, schemas, the organisation, targets, the files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from features.contract import DEFAULT_PIPELINE, SCHEMAS, PipelineConfig
from pipelines.simulate import SimConfig, SimulatedCompany, simulate_company, write_company
from pipelines.simulate.world import TARGET_MONTHS_AHEAD

TABLES = ("deals", "stage_history", "activities", "reps", "targets")
TRUTH_SCHEMAS = {
    "truth_probabilities": {
        "deal_id": pl.String(),
        "as_of": pl.Datetime("us", "UTC"),
        "probability": pl.Float64(),
    },
    "truth_anomalies": {
        "anomaly_id": pl.String(),
        "kind": pl.String(),
        "metric": pl.String(),
        "segment_type": pl.String(),
        "segment_id": pl.String(),
        "start": pl.Date(),
        "end": pl.Date(),
        "magnitude": pl.Float64(),
        "description": pl.String(),
    },
}
SMALL = SimConfig(n_deals=1_500, months=18, seed=3)


@pytest.fixture(scope="module")
def company() -> SimulatedCompany:
    return simulate_company(SMALL)


@pytest.fixture(scope="module")
def default_company() -> SimulatedCompany:
    return simulate_company(SimConfig())


def test_tables_match_the_canonical_schemas_exactly(company: SimulatedCompany) -> None:
    assert tuple(company.tables) == TABLES
    for name in TABLES:
        assert dict(company.tables[name].schema) == SCHEMAS[name], name
    for name, schema in TRUTH_SCHEMAS.items():
        assert dict(company.truth[name].schema) == schema, name
    assert company.pipeline == DEFAULT_PIPELINE


def test_n_deals_is_exact_and_ids_are_unique(company: SimulatedCompany) -> None:
    deals = company.tables["deals"]
    assert deals.height == 1_500
    assert deals["deal_id"].n_unique() == 1_500
    assert company.tables["activities"]["activity_id"].n_unique() == (
        company.tables["activities"].height
    )
    assert deals["deal_id"].to_list() == sorted(deals["deal_id"].to_list())


def test_history_covers_the_months_before_end(company: SimulatedCompany) -> None:
    deals = company.tables["deals"]
    start = pl.datetime(2025, 5, 1, time_zone="UTC")  # 18 months before 2026-11-01
    end = pl.datetime(2026, 11, 1, time_zone="UTC")
    assert deals.select((pl.col("created_at") >= start).all()).item()
    assert deals.select((pl.col("created_at") < end).all()).item()
    months = deals.select(pl.col("created_at").dt.strftime("%Y-%m").n_unique()).item()
    assert months == 18


def test_same_seed_same_bytes_parquet_and_csv(tmp_path: Path) -> None:
    config = SimConfig(n_deals=1_500, months=18, seed=5)
    for file_format in ("parquet", "csv"):
        first = write_company(
            simulate_company(config), tmp_path / f"a-{file_format}", file_format=file_format
        )
        second = write_company(
            simulate_company(config), tmp_path / f"b-{file_format}", file_format=file_format
        )
        assert [p.name for p in first] == [p.name for p in second]
        for a, b in zip(first, second, strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name
    other = write_company(
        simulate_company(SimConfig(n_deals=1_500, months=18, seed=6)), tmp_path / "c"
    )
    assert (tmp_path / "c" / "deals.parquet").read_bytes() != (
        tmp_path / "a-parquet" / "deals.parquet"
    ).read_bytes()
    assert len(other) == 8


def test_write_company_files_read_back(tmp_path: Path, company: SimulatedCompany) -> None:
    out = tmp_path / "nested" / "sim"  # created if missing
    paths = write_company(company, out, file_format="csv")
    names = [p.name for p in paths]
    assert names == [f"{t}.csv" for t in (*TABLES, *TRUTH_SCHEMAS)] + ["pipeline.toml"]
    assert PipelineConfig.from_toml(out / "pipeline.toml") == DEFAULT_PIPELINE
    header = (out / "stage_history.csv").read_text().splitlines()[1]
    assert header.split(",")[1].endswith("Z")  # ISO-8601 UTC timestamps
    back = pl.read_csv(out / "deals.csv", try_parse_dates=True, schema_overrides=SCHEMAS["deals"])
    assert back.equals(company.tables["deals"])
    truth = pl.read_csv(out / "truth_probabilities.csv", try_parse_dates=True)
    assert truth.equals(company.truth["truth_probabilities"])
    paths = write_company(company, out, file_format="parquet")
    for name in TABLES:
        assert pl.read_parquet(out / f"{name}.parquet").equals(company.tables[name])


def test_write_company_rejects_unknown_format(tmp_path: Path, company: SimulatedCompany) -> None:
    with pytest.raises(ValueError, match="file_format must be 'parquet' or 'csv', got 'xlsx'"):
        write_company(company, tmp_path, file_format="xlsx")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_deals": 0}, "n_deals must be a positive number of deals, got 0"),
        ({"months": 2, "anomalies": False}, "months must be at least 3"),
        ({"months": 12}, "anomalies need at least 17 months of history, got months=12"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"end": date(2026, 11, 15)}, "end must be the first day of a month.*use 2026-11-01"),
    ],
)
def test_config_errors_name_the_value_and_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimConfig(**kwargs)


def test_default_company_has_about_30_reps_in_teams_and_regions(
    default_company: SimulatedCompany,
) -> None:
    reps = default_company.tables["reps"]
    deals = default_company.tables["deals"]
    assert reps.height == 30
    sizes = reps.group_by("team").len()["len"]
    assert sizes.min() >= 5 and sizes.max() <= 8
    # one region and one manager per team; the default company spans the four regions
    per_team = reps.group_by("team").agg(pl.col("region", "manager_id").n_unique())
    assert per_team["region"].max() == 1 and per_team["manager_id"].max() == 1
    assert set(reps["region"]) == {"NA", "EMEA", "APAC", "LATAM"}
    # some reps hired years before the start, some during the history
    start, end = date(2023, 11, 1), date(2026, 11, 1)
    assert reps.filter(pl.col("hired_at") < date(2022, 1, 1)).height >= 10
    assert reps.filter(pl.col("hired_at").is_between(start, end)).height >= 3
    # ~10-12 new deals per rep and month (ramping hires included)
    rep_months = reps.select(
        (
            (pl.lit(end) - pl.max_horizontal(pl.col("hired_at"), pl.lit(start))).dt.total_days()
            / 30.44
        ).sum()
    ).item()
    assert 9.0 <= deals.height / rep_months <= 13.0


def test_rep_count_scales_with_n_deals() -> None:
    from pipelines.simulate.org import rep_count

    assert rep_count(SimConfig()) == 30
    assert rep_count(SimConfig(n_deals=1_000_000)) == 2778  # ~10 deals per rep-month
    assert rep_count(SimConfig(n_deals=3_000, months=24)) == 12
    assert rep_count(SimConfig(n_deals=10, months=24)) == 5


def test_targets_roll_up_from_reps(company: SimulatedCompany) -> None:
    targets = company.tables["targets"]
    reps = company.tables["reps"]
    assert set(targets["scope_type"]) == {"company", "team", "region", "owner"}
    assert targets.select(pl.col("period").str.contains(r"^\d{4}-\d{2}$").all()).item()
    # the 18 months of history and the plan for the 6 after its end
    assert targets["period"].n_unique() == 18 + TARGET_MONTHS_AHEAD
    assert targets.select((pl.col("amount") > 0).all()).item()
    owner = targets.filter(pl.col("scope_type") == "owner").join(
        reps.select(pl.col("owner_id").alias("scope_id"), "team", "region"), on="scope_id"
    )
    for scope in ("team", "region"):
        summed = owner.group_by("period", scope).agg(pl.col("amount").sum().alias("sum"))
        stated = targets.filter(pl.col("scope_type") == scope).select(
            "period", pl.col("scope_id").alias(scope), "amount"
        )
        both = summed.join(stated, on=["period", scope], how="full", coalesce=True)
        assert both.height == stated.height
        assert both.select((pl.col("sum") == pl.col("amount")).all()).item(), scope
    company_rows = targets.filter(pl.col("scope_type") == "company")
    totals = owner.group_by("period").agg(pl.col("amount").sum().alias("sum"))
    assert (
        company_rows.join(totals, on="period")
        .select((pl.col("sum") == pl.col("amount")).all())
        .item()
    )
    # a new hire's target starts small (ramp) and a rep has none before being hired
    hired = owner.join(reps.select(pl.col("owner_id").alias("scope_id"), "hired_at"), on="scope_id")
    assert hired.select((pl.col("period") >= pl.col("hired_at").dt.strftime("%Y-%m")).all()).item()


def test_targets_are_a_bit_ambitious(default_company: SimulatedCompany) -> None:
    """Company bookings over the last two years land below target, but not absurdly."""
    deals = default_company.tables["deals"]
    targets = default_company.tables["targets"].filter(pl.col("scope_type") == "company")
    booked = (
        deals.filter(pl.col("stage") == "Closed Won")
        .group_by(period=pl.col("closed_at").dt.strftime("%Y-%m"))
        .agg(pl.col("amount").sum().alias("booked"))
    )
    recent = targets.join(booked, on="period").filter(pl.col("period") >= "2024-11")
    attainment = recent["booked"].sum() / recent["amount"].sum()
    assert 0.7 <= attainment <= 1.0
