"""The five injected anomalies: labelled in truth_anomalies, visible in the data, and absent
when anomalies are off."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from features.contract import DEFAULT_PIPELINE
from pipelines.simulate import SimConfig, SimulatedCompany, simulate_company

SEED = 13
KINDS = {
    "win_rate_collapse": ("win_rate", "region"),
    "rep_silent": ("activity_volume", "owner"),
    "pipeline_drop": ("pipeline_created", "region"),
    "close_date_slip_wave": ("slip_rate", "region"),
    "stage_conversion_break": ("stage_conversion", "stage"),
}


@pytest.fixture(scope="module")
def with_anomalies() -> SimulatedCompany:
    return simulate_company(SimConfig(n_deals=6_000, months=24, seed=SEED))


@pytest.fixture(scope="module")
def without() -> SimulatedCompany:
    return simulate_company(SimConfig(n_deals=6_000, months=24, seed=SEED, anomalies=False))


@pytest.fixture(scope="module")
def labels(with_anomalies: SimulatedCompany) -> dict[str, dict]:
    return {row["kind"]: row for row in with_anomalies.truth["truth_anomalies"].to_dicts()}


def _ts(day: date) -> pl.Expr:
    return pl.lit(day).cast(pl.Datetime("us", "UTC"))


def _between(column: str, start: date, end: date) -> pl.Expr:
    return (pl.col(column) >= _ts(start)) & (pl.col(column) < _ts(end))


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def win_rates(company: SimulatedCompany, label: dict) -> tuple[float, float]:
    """The region's win rate of deals closed in the window, and in the six months before."""
    deals = company.tables["deals"].filter(
        pl.col("closed_at").is_not_null(), pl.col("region") == label["segment_id"]
    )
    won = (pl.col("stage") == "Closed Won").mean()
    inside = deals.filter(_between("closed_at", label["start"], label["end"])).select(won).item()
    before = deals.filter(
        _between("closed_at", _months_before(label["start"], 6), label["start"])
    ).select(won)
    return inside, before.item()


def activity_counts(company: SimulatedCompany, label: dict) -> tuple[int, int]:
    """The rep's activities in the window, and in as many days just before it."""
    acts = company.tables["activities"].filter(pl.col("owner_id") == label["segment_id"])
    days = label["end"] - label["start"]
    inside = acts.filter(_between("occurred_at", label["start"], label["end"])).height
    before = acts.filter(_between("occurred_at", label["start"] - days, label["start"])).height
    return inside, before


def created_counts(company: SimulatedCompany, label: dict) -> tuple[int, float]:
    """Deals created in the region in the window's month, and the mean of the 3 months before."""
    deals = company.tables["deals"].filter(pl.col("region") == label["segment_id"])
    inside = deals.filter(_between("created_at", label["start"], label["end"])).height
    before = deals.filter(
        _between("created_at", _months_before(label["start"], 3), label["start"])
    ).height
    return inside, before / 3


def slip_shares(company: SimulatedCompany, label: dict) -> tuple[float, float]:
    """Share of the region's deals open at a month's start that got their close date pushed by
    30 days or more in that month: the window's month, and the month before."""
    deals = company.tables["deals"].filter(pl.col("region") == label["segment_id"])
    big_push = (
        company.tables["stage_history"]
        .with_columns(
            pl.col("stage", "expected_close_date").shift(1).over("deal_id").name.prefix("p_")
        )
        .filter(
            pl.col("stage") == pl.col("p_stage"),
            pl.col("expected_close_date") >= pl.col("p_expected_close_date") + timedelta(days=30),
        )
    )

    def share(start: date, end: date) -> float:
        open_ = deals.filter(
            pl.col("created_at") < _ts(start),
            pl.col("closed_at").is_null() | (pl.col("closed_at") > _ts(start)),
        )
        pushed = big_push.filter(_between("changed_at", start, end)).select("deal_id").unique()
        return open_.join(pushed, on="deal_id").height / open_.height

    return share(label["start"], label["end"]), share(
        _months_before(label["start"], 1), label["start"]
    )


def demo_conversion(company: SimulatedCompany, label: dict) -> tuple[float, float]:
    """Share of Demo exits that advanced to Proposal: decided in the window, and in the six
    months before. A Demo exit is the first Proposal row, or the loss of a deal that never
    reached Proposal but reached Demo."""
    history = company.tables["stage_history"]
    reached = history.filter(pl.col("stage") == "Demo").select("deal_id").unique()
    proposal = (
        history.filter(pl.col("stage") == "Proposal")
        .group_by("deal_id")
        .agg(pl.col("changed_at").min().alias("exit"))
        .with_columns(advanced=pl.lit(True))
    )
    lost_in_demo = (
        company.tables["deals"]
        .join(reached, on="deal_id")
        .join(proposal, on="deal_id", how="anti")
        .filter(pl.col("stage") == "Closed Lost")
        .select("deal_id", pl.col("closed_at").alias("exit"), advanced=pl.lit(False))
    )
    exits = pl.concat([proposal, lost_in_demo])
    advanced = pl.col("advanced").mean()
    inside = exits.filter(_between("exit", label["start"], label["end"])).select(advanced).item()
    before = exits.filter(_between("exit", _months_before(label["start"], 6), label["start"]))
    return inside, before.select(advanced).item()


def test_one_labelled_row_per_kind(with_anomalies: SimulatedCompany) -> None:
    table = with_anomalies.truth["truth_anomalies"]
    assert table.height == 5
    assert table["anomaly_id"].n_unique() == 5
    for row in table.to_dicts():
        assert (row["metric"], row["segment_type"]) == KINDS[row["kind"]]
        assert row["start"].day == 1  # month-aligned
        assert row["start"] >= date(2025, 11, 1)  # second half of 2024-11 .. 2026-11
        assert row["start"] < row["end"] <= date(2026, 11, 1)
        assert row["description"] and row["magnitude"] != 0
        if row["kind"] != "rep_silent":
            assert row["end"].day == 1
    reps = set(with_anomalies.tables["reps"]["owner_id"])
    regions = set(with_anomalies.tables["reps"]["region"])
    segments = {row["kind"]: row["segment_id"] for row in table.to_dicts()}
    assert segments["rep_silent"] in reps
    assert {segments[k] for k in ("win_rate_collapse", "pipeline_drop")} <= regions
    assert segments["stage_conversion_break"] == "Demo" in DEFAULT_PIPELINE.open_stages


def test_windows_do_not_overlap(labels: dict[str, dict]) -> None:
    spans = sorted((row["start"], row["end"]) for row in labels.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_off_gives_an_empty_table_with_its_schema(
    with_anomalies: SimulatedCompany, without: SimulatedCompany
) -> None:
    empty = without.truth["truth_anomalies"]
    assert empty.height == 0
    assert empty.schema == with_anomalies.truth["truth_anomalies"].schema


def test_region_win_rate_collapses(
    with_anomalies: SimulatedCompany, without: SimulatedCompany, labels: dict[str, dict]
) -> None:
    label = labels["win_rate_collapse"]
    inside, before = win_rates(with_anomalies, label)
    twin, twin_before = win_rates(without, label)  # same seed and org, no anomalies
    assert inside < 0.75 * twin and inside < 0.8 * before
    assert twin > 0.5 * twin_before


def test_silent_rep_logs_almost_nothing(
    with_anomalies: SimulatedCompany, without: SimulatedCompany, labels: dict[str, dict]
) -> None:
    label = labels["rep_silent"]
    assert (label["end"] - label["start"]).days == 42
    inside, before = activity_counts(with_anomalies, label)
    twin, twin_before = activity_counts(without, label)
    assert twin > 100 and inside < 0.2 * twin and inside < 0.25 * before
    assert twin > 0.4 * twin_before


def test_pipeline_creation_drops_for_a_month(
    with_anomalies: SimulatedCompany, without: SimulatedCompany, labels: dict[str, dict]
) -> None:
    label = labels["pipeline_drop"]
    inside, before = created_counts(with_anomalies, label)
    twin, twin_before = created_counts(without, label)
    assert twin > 30 and inside < 0.6 * twin and inside < 0.8 * before
    assert twin > 0.7 * twin_before


def test_close_dates_slip_in_a_wave(
    with_anomalies: SimulatedCompany, without: SimulatedCompany, labels: dict[str, dict]
) -> None:
    label = labels["close_date_slip_wave"]
    inside, before = slip_shares(with_anomalies, label)
    twin, _ = slip_shares(without, label)
    assert inside > 0.2 and inside > twin + 0.1 and inside > before + 0.1
    assert twin < 0.2


def test_demo_to_proposal_breaks(
    with_anomalies: SimulatedCompany, without: SimulatedCompany, labels: dict[str, dict]
) -> None:
    label = labels["stage_conversion_break"]
    inside, before = demo_conversion(with_anomalies, label)
    twin, twin_before = demo_conversion(without, label)
    assert inside < twin - 0.15 and inside < before - 0.1
    assert twin > twin_before - 0.15
