"""The simulated company behaves like a sales organisation: the patterns later models rely on."""

from __future__ import annotations

import polars as pl
import pytest

from features.contract import DEFAULT_PIPELINE
from pipelines.simulate import SimConfig, SimulatedCompany, simulate_company
from pipelines.simulate.clock import Clock
from pipelines.simulate.org import build_org
from pipelines.simulate.world import HABITS

CONFIG = SimConfig(n_deals=20_000, seed=4, anomalies=False)  # anomalies: their own tests
OPEN = DEFAULT_PIPELINE.open_stages
WON = pl.col("stage") == "Closed Won"


@pytest.fixture(scope="module")
def company() -> SimulatedCompany:
    return simulate_company(CONFIG)


@pytest.fixture(scope="module")
def closed(company: SimulatedCompany) -> pl.DataFrame:
    return company.tables["deals"].filter(pl.col("closed_at").is_not_null())


@pytest.fixture(scope="module")
def steps(company: SimulatedCompany) -> pl.DataFrame:
    """History rows with the deal's previous row alongside (``p_*``)."""
    return company.tables["stage_history"].with_columns(
        pl.col("stage", "amount", "expected_close_date").shift(1).over("deal_id").name.prefix("p_")
    )


def test_win_rate_of_closed_deals_is_realistic(closed: pl.DataFrame) -> None:
    assert 0.15 <= closed.select(WON.mean()).item() <= 0.35
    by_type = dict(closed.group_by("deal_type").agg(WON.mean()).iter_rows())
    assert by_type["new"] < by_type["expansion"] < by_type["renewal"]


def test_stages_convert_and_last_differently(
    company: SimulatedCompany, closed: pl.DataFrame
) -> None:
    entered = (
        company.tables["stage_history"]
        .filter(pl.col("stage").is_in(OPEN))
        .group_by("deal_id", "stage")
        .agg(pl.col("changed_at").min().alias("entered"))
    )
    conversion, days = [], []
    for here, after in zip(OPEN, [*OPEN[1:], None], strict=True):
        into = entered.filter(pl.col("stage") == here).join(closed.select("deal_id"), on="deal_id")
        if after is None:
            left = closed.filter(WON).select("deal_id", pl.col("closed_at").alias("left"))
        else:
            left = entered.filter(pl.col("stage") == after).select(
                "deal_id", pl.col("entered").alias("left")
            )
        path = into.join(left, on="deal_id", how="left")
        conversion.append(path["left"].is_not_null().mean())
        spent = path.select((pl.col("left") - pl.col("entered")).dt.total_hours() / 24)
        days.append(spent.to_series().drop_nulls().median())
    assert max(conversion) - min(conversion) > 0.15
    assert conversion[-1] == max(conversion)  # Negotiation converts best
    assert max(days) / min(days) > 1.5  # Discovery and Proposal take longest
    assert days[1] > days[0] and days[3] > days[2]


def test_bigger_products_are_bigger_and_slower(closed: pl.DataFrame) -> None:
    won = closed.filter(WON).with_columns(
        ((pl.col("closed_at") - pl.col("created_at")).dt.total_hours() / 24).alias("cycle")
    )
    stats = won.group_by("product").agg(pl.col("amount", "cycle").median())
    ordered = stats.sort("amount")
    assert ordered["product"].to_list() == ["Add-on", "Core", "Analytics", "Enterprise Suite"]
    assert ordered["cycle"].is_sorted()
    cycle = dict(stats.select("product", "cycle").iter_rows())
    assert 20 <= cycle["Add-on"] <= 40 and 120 <= cycle["Enterprise Suite"] <= 190


def test_activities_thin_out_before_a_loss(company: SimulatedCompany, closed: pl.DataFrame) -> None:
    acts = company.tables["activities"].join(
        closed.select("deal_id", "created_at", "closed_at", "stage"), on="deal_id"
    )
    before = pl.col("closed_at") - pl.col("occurred_at")
    last30 = acts.filter(before < pl.duration(days=30)).group_by("stage").len()
    per_deal = last30.join(closed.group_by("stage").len(), on="stage").select(
        "stage", pl.col("len") / pl.col("len_right")
    )
    rate = dict(per_deal.iter_rows())
    assert rate["Closed Lost"] < 0.5 * rate["Closed Won"]
    # the same deals, last 10 days against the 30 before: losses go quiet, wins do not
    old = acts.filter(pl.col("closed_at") - pl.col("created_at") > pl.duration(days=45))
    recent = old.filter(before < pl.duration(days=10)).group_by("stage").len()
    earlier = (
        old.filter(before.is_between(pl.duration(days=10), pl.duration(days=40)))
        .group_by("stage")
        .len()
    )
    ratio = dict(
        recent.join(earlier, on="stage")
        .select("stage", (pl.col("len") / 10) / (pl.col("len_right") / 30))
        .iter_rows()
    )
    assert ratio["Closed Lost"] < 0.8
    assert ratio["Closed Won"] > 0.9


def test_optimists_push_more_than_sandbaggers(
    company: SimulatedCompany, steps: pl.DataFrame
) -> None:
    org = build_org(CONFIG, Clock.of(CONFIG))
    habit = pl.DataFrame(
        {"owner_id": company.tables["reps"]["owner_id"], "habit": [HABITS[h] for h in org.habit]}
    )
    pushes = (
        steps.filter(
            (pl.col("stage") == pl.col("p_stage"))
            & (pl.col("expected_close_date") > pl.col("p_expected_close_date"))
        )
        .group_by("deal_id")
        .len()
    )
    per_deal = (
        company.tables["deals"]
        .join(pushes, on="deal_id", how="left")
        .join(habit, on="owner_id")
        .group_by("habit")
        .agg(pl.col("len").fill_null(0).mean())
    )
    push = dict(per_deal.iter_rows())
    assert push["optimistic"] > 1.5 * push["neutral"]
    assert push["neutral"] > 1.4 * push["sandbag"] > 0
    # sandbaggers also call late-stage deals more conservatively
    commit = (
        steps.filter(pl.col("stage") == "Negotiation")
        .join(company.tables["deals"].select("deal_id", "owner_id"), on="deal_id")
        .join(habit, on="owner_id")
        .group_by("habit")
        .agg((pl.col("forecast_category") == "commit").mean())
    )
    share = dict(commit.iter_rows())
    assert share["sandbag"] < share["neutral"] < share["optimistic"]


def test_quarter_end_months_book_more(closed: pl.DataFrame) -> None:
    monthly = (
        closed.filter(WON)
        .group_by(month=pl.col("closed_at").dt.strftime("%Y-%m"))
        .agg(pl.col("amount").sum().alias("booked"), pl.len().alias("won"))
        .sort("month")
        .slice(4)  # the first months only ramp up: the pipeline starts empty
        .with_columns(quarter_end=pl.col("month").str.slice(5).cast(pl.Int32) % 3 == 0)
    )
    means = monthly.group_by("quarter_end").agg(pl.col("booked", "won").mean())
    by = {row["quarter_end"]: row for row in means.to_dicts()}
    assert 1.2 < by[True]["booked"] / by[False]["booked"] < 1.8
    assert 1.2 < by[True]["won"] / by[False]["won"] < 1.8


def test_new_hires_ramp_up(company: SimulatedCompany) -> None:
    """Hires of the period create fewer deals at first, and their first deals have worse true
    odds than those tenured reps created in the same months."""
    reps = company.tables["reps"]
    hires = reps.filter(pl.col("hired_at").is_between(pl.date(2024, 1, 1), pl.date(2025, 10, 1)))
    assert hires.height >= 3
    deals = company.tables["deals"].join(reps.select("owner_id", "hired_at"), on="owner_id")
    deals = deals.with_columns(
        tenure=(pl.col("created_at").dt.date() - pl.col("hired_at")).dt.total_days(),
        month=pl.col("created_at").dt.strftime("%Y-%m"),
    )
    of_hires = deals.join(hires.select("owner_id"), on="owner_id")
    first = of_hires.filter(pl.col("tenure") < 61).height / (2 * hires.height)
    later = of_hires.filter(pl.col("tenure").is_between(240, 360, closed="left")).height
    assert first < 0.6 * later / (4 * hires.height)
    odds = (
        company.truth["truth_probabilities"]
        .sort("as_of")
        .group_by("deal_id")
        .agg(pl.col("probability").first())
        .join(deals, on="deal_id")
    )
    new = odds.filter(pl.col("tenure") < 61)
    tenured = odds.filter(pl.col("tenure") >= 365).join(new.select("month").unique(), on="month")
    assert new.height > 50
    assert new["probability"].mean() < tenured["probability"].mean() - 0.03


def test_demand_grows_with_a_yearly_season(company: SimulatedCompany) -> None:
    created = (
        company.tables["deals"]
        .group_by(month=pl.col("created_at").dt.strftime("%Y-%m"))
        .len()
        .sort("month")
    )
    counts = created["len"].to_numpy()
    assert counts[-12:].sum() > 1.2 * counts[1:13].sum()  # ~15%/year per rep, plus hires
    by_month = created.group_by(pl.col("month").str.slice(5)).agg(pl.col("len").mean())
    season = dict(by_month.iter_rows())
    assert season["08"] < 0.9 * season["10"] and season["12"] < 0.9 * season["11"]


def test_the_crm_shows_intent_only_partly(steps: pl.DataFrame, closed: pl.DataFrame) -> None:
    """Among deals that reached Proposal, losses fell back a stage and got cut more often; the
    signals are there, but wins show them too."""
    order = DEFAULT_PIPELINE.order()
    per_deal = (
        steps.with_columns(
            o=pl.col("stage").replace_strict(order, return_dtype=pl.Int32),
            p_o=pl.col("p_stage").replace_strict(order, default=None, return_dtype=pl.Int32),
        )
        .group_by("deal_id")
        .agg(
            regressed=((pl.col("o") < pl.col("p_o")) & (pl.col("o") > 0)).any(),
            cut=((pl.col("amount") < pl.col("p_amount")) & (pl.col("o") > 0)).any(),
            proposal=(pl.col("stage") == "Proposal").any(),
        )
        .filter("proposal")
        .join(closed.select("deal_id", won=WON), on="deal_id")
    )
    share = {
        won: (r, c)
        for won, r, c in per_deal.group_by("won").agg(pl.col("regressed", "cut").mean()).iter_rows()
    }
    assert share[False][0] > share[True][0] + 0.03 and share[False][1] > share[True][1] + 0.02
    assert share[True][0] > 0.1 and share[True][1] > 0.1


def test_accounts_recur(company: SimulatedCompany) -> None:
    deals = company.tables["deals"]
    per_account = deals.group_by("account_id").len()
    assert per_account["len"].max() > 5
    assert per_account.filter(pl.col("len") > 1).height > 0.3 * per_account.height
    again = (
        deals.join(per_account, on="account_id")
        .group_by("deal_type")
        .agg((pl.col("len") > 1).mean())
    )
    assert dict(again.iter_rows())["renewal"] > 0.9
