"""The simulated CRM export is point-in-time consistent, like a real one taken on ``end``."""

from __future__ import annotations

import polars as pl
import pytest

from features.contract import DEFAULT_PIPELINE, DealHistory
from features.snapshots import as_of_frame, deal_states
from pipelines.simulate import SimConfig, SimulatedCompany, simulate_company

END = pl.datetime(2026, 11, 1, time_zone="UTC")
OPEN = list(DEFAULT_PIPELINE.open_stages)
ORDER = DEFAULT_PIPELINE.order()


@pytest.fixture(scope="module")
def company() -> SimulatedCompany:
    return simulate_company(SimConfig(n_deals=2_500, months=24, seed=11))


@pytest.fixture(scope="module")
def history(company: SimulatedCompany) -> pl.DataFrame:
    """Stage history with each deal's row number, first row, and the deal's final state."""
    return (
        company.tables["stage_history"]
        .with_row_index("row")
        .join(
            company.tables["deals"].select(
                "deal_id", "created_at", "closed_at", pl.col("stage").alias("deal_stage")
            ),
            on="deal_id",
        )
        .sort("row")
    )


def test_history_rows_are_sorted_per_deal(company: SimulatedCompany) -> None:
    h = company.tables["stage_history"]
    assert h.equals(h.sort("deal_id", "changed_at", maintain_order=True))
    assert set(h["deal_id"]) == set(company.tables["deals"]["deal_id"])


def test_first_row_is_the_creation_in_qualification(history: pl.DataFrame) -> None:
    first = history.group_by("deal_id").first()
    assert first.select((pl.col("changed_at") == pl.col("created_at")).all()).item()
    assert first.select((pl.col("stage") == "Qualification").all()).item()
    assert first.select(pl.col("amount", "expected_close_date").is_not_null().all()).row(0) == (
        True,
        True,
    )


def test_nothing_after_the_close_or_the_end(
    company: SimulatedCompany, history: pl.DataFrame
) -> None:
    assert history.select((pl.col("changed_at") < END).all()).item()
    assert (
        history.filter(pl.col("closed_at").is_not_null())
        .select((pl.col("changed_at") <= pl.col("closed_at")).all())
        .item()
    )
    deals = company.tables["deals"]
    assert deals.select((pl.col("closed_at") < END).all()).item()
    assert deals.select((pl.col("closed_at") > pl.col("created_at")).all()).item()
    acts = company.tables["activities"]
    assert acts.select((pl.col("occurred_at") < END).all()).item()
    linked = acts.join(deals, on="deal_id", how="inner", suffix="_deal")
    assert linked.height == acts["deal_id"].drop_nulls().len()
    assert linked.select(
        after_creation=(pl.col("occurred_at") >= pl.col("created_at")).all(),
        before_close=(pl.col("occurred_at") < pl.col("closed_at").fill_null(END)).all(),
        same_owner=(pl.col("owner_id") == pl.col("owner_id_deal")).all(),
        same_account=(pl.col("account_id") == pl.col("account_id_deal")).all(),
    ).row(0) == (True, True, True, True)
    reps = company.tables["reps"].select("owner_id", "hired_at")
    assert (
        acts.join(reps, on="owner_id")
        .select((pl.col("occurred_at").dt.date() >= pl.col("hired_at")).all())
        .item()
    )


def test_closed_deals_end_on_their_won_or_lost_row(history: pl.DataFrame) -> None:
    last = history.group_by("deal_id").last()
    closed = last.filter(pl.col("closed_at").is_not_null())
    assert closed.height > 1_500
    assert closed.select(
        at_close=(pl.col("changed_at") == pl.col("closed_at")).all(),
        deal_stage=(pl.col("stage") == pl.col("deal_stage")).all(),
        closing=pl.col("stage").is_in(["Closed Won", "Closed Lost"]).all(),
    ).row(0) == (True, True, True)
    # won/lost rows appear only as a deal's last row
    closing = history.filter(pl.col("stage").is_in(["Closed Won", "Closed Lost"]))
    assert closing.height == closed.height
    still_open = last.filter(pl.col("closed_at").is_null())
    assert still_open.height > 50
    assert still_open.select(pl.col("stage").is_in(OPEN).all()).item()


def test_deals_hold_the_latest_state(company: SimulatedCompany) -> None:
    deals = company.tables["deals"]
    last = company.tables["stage_history"].group_by("deal_id", maintain_order=True).last()
    both = deals.join(last, on="deal_id", suffix="_h")
    for column in ("stage", "amount", "expected_close_date", "forecast_category"):
        assert both.select((pl.col(column) == pl.col(f"{column}_h")).all()).item(), column
    probs = DEFAULT_PIPELINE.frame().select("stage", "stage_probability")
    assert (
        deals.join(probs, on="stage")
        .select((pl.col("crm_probability") == pl.col("stage_probability")).all())
        .item()
    )
    lost = pl.col("stage") == "Closed Lost"
    assert deals.select((pl.col("lost_reason").is_not_null() == lost).all()).item()
    open_ = deals.filter(pl.col("closed_at").is_null())
    assert open_.select(pl.col("stage").is_in(OPEN).all()).item()
    assert open_.select(pl.col("expected_close_date").is_not_null().all()).item()


def test_stages_belong_to_the_pipeline_and_move_in_order(history: pl.DataFrame) -> None:
    assert set(history["stage"]) <= set(DEFAULT_PIPELINE.names)
    steps = (
        history.with_columns(
            pl.col("stage").replace_strict(ORDER, return_dtype=pl.Int32).alias("order")
        )
        .with_columns(pl.col("order").shift(1).over("deal_id").alias("prev"))
        .filter(pl.col("prev").is_not_null() & pl.col("stage").is_in(OPEN))
    )
    # open stages move forward one at a time, fall back one stage (a detour) or stay
    change = steps["order"] - steps["prev"]
    assert set(change.unique()) == {-1, 0, 1}
    assert (change == -1).sum() > 30  # regressions happen
    won = history.filter(pl.col("stage") == "Closed Won")["deal_id"]
    reached = history.filter(
        pl.col("deal_id").is_in(won.implode()), pl.col("stage") == "Negotiation"
    )
    assert reached["deal_id"].n_unique() == won.len()  # every win went through every stage


def test_pushes_and_amount_changes_are_history_rows(history: pl.DataFrame) -> None:
    steps = history.with_columns(
        pl.col("stage", "amount", "expected_close_date").shift(1).over("deal_id").name.prefix("p_")
    ).filter(pl.col("p_stage").is_not_null() & pl.col("stage").is_in(OPEN))
    same_stage = steps.filter(pl.col("stage") == pl.col("p_stage"))
    pushes = same_stage.filter(pl.col("expected_close_date") > pl.col("p_expected_close_date"))
    amounts = same_stage.filter(pl.col("amount") != pl.col("p_amount"))
    assert pushes.height > 300
    assert amounts.height > 100
    # a rep pushes once the old date has passed (the others are the slip wave's pushes)
    passed = pl.col("changed_at").dt.date() > pl.col("p_expected_close_date")
    assert pushes.select(passed.mean()).item() > 0.85


def test_the_contract_snapshot_builder_reads_it(company: SimulatedCompany) -> None:
    """The point-in-time builder of features/ finds every open deal with a state."""
    tables = company.tables
    history = DealHistory.from_frames(**tables, pipeline=company.pipeline)
    truth = company.truth["truth_probabilities"]
    as_ofs = truth["as_of"].unique().sort()
    states = deal_states(history, as_of_frame(as_ofs)).collect()
    assert states.height == truth.height
    assert states["stage"].null_count() == 0
    assert states.select(pl.col("stage").is_in(OPEN).all()).item()
