"""The true win probability: every open deal every Monday, calibrated, far sharper than stages."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from features.contract import DealHistory
from features.snapshots import as_of_frame, deal_states
from pipelines.simulate import SimConfig, SimulatedCompany, simulate_company

START, END = date(2023, 11, 1), date(2026, 11, 1)  # 36 months


@pytest.fixture(scope="module")
def company() -> SimulatedCompany:
    return simulate_company(SimConfig(n_deals=3_000, months=36, seed=21))


@pytest.fixture(scope="module")
def scored(company: SimulatedCompany) -> pl.DataFrame:
    """Truth rows of deals that closed, with the outcome and the CRM stage as of then.

    Only snapshots at least a year before the end: a deal still open at the end is left out,
    and leaving out recent snapshots keeps that from favouring the deals lost early.
    """
    history = DealHistory.from_frames(**company.tables, pipeline=company.pipeline)
    truth = company.truth["truth_probabilities"]
    states = deal_states(history, as_of_frame(truth["as_of"].unique())).collect()
    deals = company.tables["deals"].select(
        "deal_id", "closed_at", (pl.col("stage") == "Closed Won").alias("won")
    )
    return (
        truth.join(states.select("deal_id", "as_of", "stage"), on=["deal_id", "as_of"])
        .join(deals, on="deal_id")
        .filter(
            pl.col("closed_at").is_not_null(),
            pl.col("as_of").dt.date() <= END - timedelta(days=365),
        )
    )


def test_probabilities_are_in_0_1_on_mondays_before_the_end(company: SimulatedCompany) -> None:
    truth = company.truth["truth_probabilities"]
    assert truth.height > 10_000
    assert truth.select(pl.col("probability").is_between(0.0, 1.0).all()).item()
    assert truth.null_count().sum_horizontal().item() == 0
    assert truth.select((pl.col("as_of").dt.weekday() == 1).all()).item()  # Monday
    assert truth.select((pl.col("as_of").dt.time() == pl.time(0)).all()).item()
    assert truth.select((pl.col("as_of").dt.date() < END).all()).item()
    assert not truth.select(pl.struct("deal_id", "as_of").is_duplicated().any()).item()


def test_one_row_per_open_deal_and_monday_no_more(company: SimulatedCompany) -> None:
    deals = company.tables["deals"]
    truth = company.truth["truth_probabilities"]
    joined = truth.join(deals, on="deal_id")
    assert joined.height == truth.height
    # every row is a week the deal was open: created_at <= as_of < closed_at (or the end)
    assert joined.select(
        (pl.col("created_at") <= pl.col("as_of")).all()
        & (
            pl.col("as_of")
            < pl.col("closed_at").fill_null(pl.lit(END).cast(pl.Datetime("us", "UTC")))
        ).all()
    ).item()
    # ... and every open week has its row
    first_monday = START + timedelta(days=(7 - START.weekday()) % 7)
    mondays = pl.datetime_range(first_monday, END, "1w", closed="left", eager=True, time_zone="UTC")
    mondays = mondays.cast(pl.Datetime("us", "UTC")).to_numpy()
    created = deals["created_at"].to_numpy()
    stop = deals["closed_at"].fill_null(pl.datetime(2026, 11, 1, time_zone="UTC")).to_numpy()
    expected = np.searchsorted(mondays, stop, "left") - np.searchsorted(mondays, created, "left")
    counted = deals.join(truth.group_by("deal_id").len(), on="deal_id", how="left")["len"]
    assert np.array_equal(counted.fill_null(0).to_numpy(), np.maximum(expected, 0))


def test_calibrated_on_closed_deals(scored: pl.DataFrame) -> None:
    """10-bin reliability: mean probability vs win frequency, weighted by bin size."""
    p = scored["probability"].to_numpy()
    won = scored["won"].to_numpy().astype(float)
    assert p.size > 6_000
    bins = np.minimum((p * 10).astype(int), 9)
    counts = np.bincount(bins, minlength=10)
    mean_p = np.bincount(bins, weights=p, minlength=10) / np.maximum(counts, 1)
    rate = np.bincount(bins, weights=won, minlength=10) / np.maximum(counts, 1)
    error = float(np.sum(counts * np.abs(mean_p - rate)) / counts.sum())
    assert error < 0.05
    assert (counts > 200).sum() >= 8  # the probabilities spread over the range
    assert abs(p.mean() - won.mean()) < 0.04


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = pl.Series(score).rank("average").to_numpy()
    pos = label.sum()
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * (label.size - pos)))


def test_far_better_than_stage_win_rates(scored: pl.DataFrame) -> None:
    """Brier and AUC of the truth against each stage's historical win rate (in-sample)."""
    rated = scored.with_columns(pl.col("won").mean().over("stage").alias("stage_rate"))
    won = rated["won"].to_numpy()
    truth, stage = rated["probability"].to_numpy(), rated["stage_rate"].to_numpy()
    brier_truth = float(np.mean((truth - won) ** 2))
    brier_stage = float(np.mean((stage - won) ** 2))
    assert brier_truth < 0.85 * brier_stage
    assert _auc(truth, won) > _auc(stage, won) + 0.07
    assert _auc(truth, won) > 0.8


def test_truth_sharpens_as_deals_progress(scored: pl.DataFrame) -> None:
    """From a deal's first to its last snapshot, the odds of wins and losses drift apart."""
    ends = (
        scored.sort("as_of")
        .group_by("deal_id")
        .agg(
            pl.col("probability").first().alias("first"),
            pl.col("probability").last().alias("last"),
            pl.col("won").first(),
        )
    )
    rows = ends.group_by("won").agg(pl.col("first", "last").mean()).iter_rows()
    means = {won: (first, last) for won, first, last in rows}
    gap_first = means[True][0] - means[False][0]
    gap_last = means[True][1] - means[False][1]
    assert gap_first > 0.15  # intent is part of the state from the start ...
    assert gap_last > gap_first + 0.2  # ... and every stage passed tells more
