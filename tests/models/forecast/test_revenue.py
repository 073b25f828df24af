"""The monthly revenue forecast on a small simulated company: point in time (rows after the
as-of never change it), refusals, additivity of segments, months and quarter, deal scores, the
Monte Carlo draw on hand-made deals, targets and a mid-month as-of."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.calendar import instant
from features.contract import TS, DealHistory
from features.snapshots import snapshot_features
from models.deals.dataset import labelled_snapshots
from models.forecast.revenue import (
    DealModels,
    RevenueForecast,
    _draw_pipeline,
    fit_deal_models,
    revenue_forecast,
    training_rows,
)
from pipelines.simulate import SimConfig, simulate_company

WON = "Closed Won"
# History [2025-05-01, 2026-11-01): two regions, ~11 reps; a forecast fits in about a second.
CONFIG = SimConfig(n_deals=2000, months=18, seed=5, anomalies=False)
T_MONTH = datetime(2026, 10, 1, tzinfo=UTC)  # a quarter start: Nov and Dec lie past the data
T_MID = datetime(2026, 8, 19, 14, 30, tzinfo=UTC)  # mid-month, mid-quarter
SAMPLES = 300

Tables = dict[str, pl.DataFrame]


def _history(tables: Tables, pipeline: object) -> DealHistory:
    return DealHistory.from_frames(**tables, pipeline=pipeline)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def company() -> tuple[Tables, object]:
    sim = simulate_company(CONFIG)
    return dict(sim.tables), sim.pipeline


@pytest.fixture(scope="module")
def history(company: tuple[Tables, object]) -> DealHistory:
    return _history(*company)


@pytest.fixture(scope="module")
def models(history: DealHistory) -> dict[datetime, DealModels]:
    return {t: fit_deal_models(history, t, months=3) for t in (T_MONTH, T_MID)}


@pytest.fixture(scope="module")
def shaken(models: dict[datetime, DealModels]) -> DealModels:
    """The models at T_MONTH with a common win shock (this small company's own is 0)."""
    return replace(models[T_MONTH], win_shock=0.4)


@pytest.fixture(scope="module")
def by_region(history: DealHistory, shaken: DealModels) -> RevenueForecast:
    return revenue_forecast(history, T_MONTH, models=shaken, by="region", n_samples=SAMPLES, seed=3)


@pytest.fixture(scope="module")
def mid_month(history: DealHistory, models: dict[datetime, DealModels]) -> RevenueForecast:
    return revenue_forecast(
        history, T_MID, models=models[T_MID], by="region", n_samples=SAMPLES, seed=4
    )


# -- point in time -----------------------------------------------------------------------------

KINDS = (
    "drop_later_deals",
    "add_later_deals",
    "change_later_closes",
    "change_later_history",
    "change_later_activities",
)


def _shifted(frame: pl.DataFrame, columns: list[str], shift: pl.Expr) -> pl.DataFrame:
    return frame.with_columns(
        (pl.col(c) + shift).alias(c) if frame.schema[c] != pl.Date else pl.col(c) for c in columns
    )


def _mutate_after(tables: Tables, t: datetime, seed: int, kinds: frozenset[str]) -> Tables:
    """Add, drop and change rows dated after ``t``; every row dated at or before it stays."""
    rng = np.random.default_rng(seed)
    deals, hist, acts = tables["deals"], tables["stage_history"], tables["activities"]
    after = pl.lit(t).cast(TS)

    def coin(n: int, p: float = 0.5) -> pl.Series:
        return pl.Series(rng.random(n) < p)

    if "drop_later_deals" in kinds:
        later = deals.filter(pl.col("created_at") > after)["deal_id"]
        gone = later.filter(coin(later.len()))
        kept = ~pl.col("deal_id").is_in(gone.implode()).fill_null(False)
        deals, hist, acts = deals.filter(kept), hist.filter(kept), acts.filter(kept)

    if "add_later_deals" in kinds:
        # copies of random deals moved after t (won, lost and open ones, with their history and
        # activities), some in a region and with an owner nobody had at t
        picked = deals.sample(n=40, seed=seed, with_replacement=False)
        offset = pl.Series("_offset", rng.integers(1, 24 * 60, picked.height)).cast(pl.Int64)
        new = picked.with_columns(
            offset,
            (pl.lit("X-") + pl.col("deal_id")).alias("_new"),
            pl.Series("_apac", rng.random(picked.height) < 0.3),
        ).with_columns(
            (after + pl.duration(hours=pl.col("_offset")) - pl.col("created_at")).alias("_shift")
        )
        shift = new.select("deal_id", "_new", "_shift", "_apac")
        copied_deals = (
            _shifted(new, ["created_at", "closed_at"], pl.col("_shift"))
            .with_columns(
                pl.col("_new").alias("deal_id"),
                pl.when(pl.col("_apac")).then(pl.lit("APAC")).otherwise("region").alias("region"),
                pl.when(pl.col("_apac"))
                .then(pl.lit("rep-new"))
                .otherwise("owner_id")
                .alias("owner_id"),
            )
            .select(deals.columns)
        )
        copied_hist = (
            hist.join(shift, on="deal_id")
            .with_columns((pl.col("changed_at") + pl.col("_shift")).alias("changed_at"))
            .with_columns(pl.col("_new").alias("deal_id"))
            .select(hist.columns)
        )
        copied_acts = (
            acts.join(shift, on="deal_id")
            .with_columns(
                (pl.col("occurred_at") + pl.col("_shift")).alias("occurred_at"),
                (pl.lit("X-") + pl.col("activity_id")).alias("activity_id"),
                pl.col("_new").alias("deal_id"),
            )
            .select(acts.columns)
        )
        deals = pl.concat([deals, copied_deals])
        hist = pl.concat([hist, copied_hist])
        acts = pl.concat([acts, copied_acts])

    if "change_later_closes" in kinds:
        # deals not closed by t: win, lose, reopen or close them later, and rewrite their
        # latest-state columns as a CRM does
        pending = pl.col("closed_at").is_null() | (pl.col("closed_at") > after)
        n = deals.height
        choice = pl.Series(rng.integers(0, 4, n))
        # half of them within two hours of t (where an off-by-a-bit leak would look)
        minutes = np.where(rng.random(n) < 0.5, rng.integers(1, 120, n), rng.integers(1, 2e5, n))
        later_close = pl.max_horizontal("created_at", after) + pl.duration(
            minutes=pl.lit(pl.Series(minutes))
        )
        stage = (
            pl.when(choice == 0)
            .then(pl.lit(WON))
            .when(choice == 1)
            .then(pl.lit("Closed Lost"))
            .when(choice == 2)
            .then(pl.lit("Negotiation"))
            .otherwise(pl.col("stage"))
        )
        closed = (
            pl.when(choice <= 1)
            .then(later_close)
            .when(choice == 2)
            .then(pl.lit(None, dtype=TS))
            .otherwise(pl.col("closed_at"))
        )
        deals = deals.with_columns(
            pl.when(pending).then(stage).otherwise("stage").alias("stage"),
            pl.when(pending).then(closed).otherwise("closed_at").alias("closed_at"),
            pl.when(pending)
            .then(pl.col("amount") * pl.Series(rng.uniform(0.2, 5.0, n)))
            .otherwise("amount")
            .alias("amount"),
            pl.when(pending)
            .then(pl.lit(date(2031, 1, 1)))
            .otherwise("expected_close_date")
            .alias("expected_close_date"),
            pl.when(pending)
            .then(pl.lit("commit"))
            .otherwise("forecast_category")
            .alias("forecast_category"),
            pl.when(pending)
            .then(pl.lit(0.99))
            .otherwise("crm_probability")
            .alias("crm_probability"),
        )

    if "change_later_history" in kinds:
        is_later = pl.col("changed_at") > after
        keep = coin(hist.height, 0.6)
        hist = hist.filter(~is_later | keep)
        edit = coin(hist.height)
        hist = hist.with_columns(
            pl.when(is_later & edit).then(pl.lit("Proposal")).otherwise("stage").alias("stage"),
            pl.when(is_later & edit).then(pl.lit(1.0)).otherwise("amount").alias("amount"),
            pl.when(is_later & edit)
            .then(pl.lit(date(2029, 5, 5)))
            .otherwise("expected_close_date")
            .alias("expected_close_date"),
        )
        extra = deals.sample(n=200, seed=seed + 1).select(
            "deal_id",
            (
                pl.max_horizontal("created_at", after)
                + pl.duration(minutes=pl.lit(pl.Series(rng.integers(1, 60 * 24 * 30, 200))))
            ).alias("changed_at"),
            pl.lit("Demo").alias("stage"),
            pl.lit(7.0).alias("amount"),
            pl.lit(date(2027, 2, 1)).alias("expected_close_date"),
            pl.lit("best case").alias("forecast_category"),
        )
        hist = pl.concat([hist, extra.select(hist.columns)])

    if "change_later_activities" in kinds:
        is_later = pl.col("occurred_at") > after
        acts = acts.filter(~is_later | coin(acts.height))
        acts = acts.with_columns(
            pl.when(is_later & coin(acts.height))
            .then(pl.lit("demo"))
            .otherwise("type")
            .alias("type")
        )
        extra = deals.sample(n=300, seed=seed + 2).select(
            (pl.lit("Y-") + pl.int_range(pl.len()).cast(pl.String)).alias("activity_id"),
            (
                pl.max_horizontal("created_at", after)
                + pl.duration(minutes=pl.lit(pl.Series(rng.integers(1, 60 * 24 * 20, 300))))
            ).alias("occurred_at"),
            "owner_id",
            pl.lit("meeting").alias("type"),
            "deal_id",
            pl.lit(None, dtype=pl.String).alias("account_id"),
        )
        acts = pl.concat([acts, extra.select(acts.columns)])

    return {**tables, "deals": deals, "stage_history": hist, "activities": acts}


def _forecast_summary(history: DealHistory, t: datetime) -> pl.DataFrame:
    """The whole job at ``t``: models fitted here, by region (so segments are checked too)."""
    return revenue_forecast(history, t, by="region", n_samples=200, seed=11).summary()


@pytest.fixture(scope="module")
def unchanged(history: DealHistory) -> dict[datetime, pl.DataFrame]:
    return {t: _forecast_summary(history, t) for t in (T_MONTH, T_MID)}


def test_mutation_really_changes_the_future(company: tuple[Tables, object]) -> None:
    """The mutations are not no-ops: the data after T differs, the data before it does not."""
    tables, _ = company
    edited = _mutate_after(tables, T_MID, 0, frozenset(KINDS))
    before = pl.col("created_at") <= T_MID
    assert edited["deals"].height != tables["deals"].height
    assert (edited["deals"]["region"] == "APAC").any()
    assert_frame_equal(
        edited["deals"].filter(before & (pl.col("closed_at") <= T_MID)),
        tables["deals"].filter(before & (pl.col("closed_at") <= T_MID)),
    )
    assert not edited["deals"].filter(before).equals(tables["deals"].filter(before))
    for name, col in (("stage_history", "changed_at"), ("activities", "occurred_at")):
        old, new = tables[name], edited[name]
        assert_frame_equal(new.filter(pl.col(col) <= T_MID), old.filter(pl.col(col) <= T_MID))
        assert not new.filter(pl.col(col) > T_MID).equals(old.filter(pl.col(col) > T_MID))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    t=st.sampled_from([T_MONTH, T_MID]),
    seed=st.integers(0, 10_000),
    kinds=st.frozensets(st.sampled_from(KINDS), min_size=1),
)
@example(t=T_MONTH, seed=1, kinds=frozenset(KINDS))
@example(t=T_MID, seed=2, kinds=frozenset(KINDS))
def test_rows_after_as_of_never_change_the_forecast(
    company: tuple[Tables, object],
    unchanged: dict[datetime, pl.DataFrame],
    t: datetime,
    seed: int,
    kinds: frozenset[str],
) -> None:
    tables, pipeline = company
    edited = _history(_mutate_after(tables, t, seed, kinds), pipeline)
    assert_frame_equal(_forecast_summary(edited, t), unchanged[t], check_exact=True)


def test_training_rows_from_shared_snapshots_equal_labelled_snapshots(
    history: DealHistory,
) -> None:
    # The backtest's way: one snapshot table of every Monday before its last origin.
    first_monday = datetime(2025, 5, 5, tzinfo=UTC)  # the first Monday after the first deal
    assert history.deals.select(pl.col("created_at").min()).collect().item() < first_monday
    grid = [first_monday + timedelta(weeks=k) for k in range(80)]
    shared = snapshot_features(history, [m for m in grid if m < T_MONTH]).collect()
    for cutoff in (T_MID, datetime(2026, 3, 1, tzinfo=UTC)):
        mondays = [m for m in grid if m < cutoff]
        expected = labelled_snapshots(history, mondays, cutoff=cutoff)
        got = training_rows(history, cutoff, snapshots=shared)
        assert got.height == expected.height > 1000
        assert got["label_closed_at"].max() <= cutoff and got["as_of"].max() < cutoff
        assert_frame_equal(got.sort("deal_id", "as_of"), expected.sort("deal_id", "as_of"))
        assert_frame_equal(training_rows(history, cutoff), expected)


@pytest.mark.parametrize(
    "cutoff",
    [
        datetime(2026, 8, 17, 0, 0, tzinfo=UTC),  # a Monday at midnight: not before itself
        datetime(2026, 8, 17, 9, 0, tzinfo=UTC),  # a Monday morning: that Monday counts
        datetime(2026, 8, 19, 14, 30, tzinfo=UTC),
    ],
)
def test_training_rows_weeks_keeps_that_many_mondays(
    history: DealHistory, cutoff: datetime
) -> None:
    rows = training_rows(history, cutoff, weeks=3)
    mondays = sorted(rows["as_of"].unique().to_list())
    assert len(mondays) == 3
    assert all(m.weekday() == 0 and m < cutoff for m in mondays)
    assert cutoff - mondays[-1] <= timedelta(weeks=1)


# -- refusals ----------------------------------------------------------------------------------


def test_fit_refuses_a_cutoff_with_no_history(history: DealHistory) -> None:
    with pytest.raises(ValueError, match="no closed deal is known at 2025-05-01"):
        fit_deal_models(history, instant(date(2025, 5, 1)))
    with pytest.raises(ValueError, match="no closed deal is known at 2020-01-01"):
        revenue_forecast(history, instant(date(2020, 1, 1)))


def test_forecast_refuses_models_from_the_future_or_too_short(
    history: DealHistory, models: dict[datetime, DealModels]
) -> None:
    with pytest.raises(ValueError, match="after the as_of 2026-08-19 14:29.*see the future"):
        revenue_forecast(history, T_MID - timedelta(minutes=1), models=models[T_MONTH])
    # A quarter's first month needs three months, even when one is asked for.
    short = fit_deal_models(history, T_MID, months=2)
    with pytest.raises(ValueError, match="covers 2 months, the forecast needs 3: fit it with"):
        revenue_forecast(history, instant(date(2026, 10, 1)), models=short, months=1)
    with pytest.raises(ValueError, match="covers 2 months, the forecast needs 4"):
        revenue_forecast(history, T_MID, models=short, months=4)
    with pytest.raises(ValueError, match="unknown dimension 'colour'"):
        revenue_forecast(history, T_MID, models=short, by="colour")
    with pytest.raises(ValueError, match="months must be >= 1, got 0"):
        revenue_forecast(history, T_MID, models=short, months=0)


# -- additivity --------------------------------------------------------------------------------


def test_regions_add_up_to_the_total_draw_by_draw(
    history: DealHistory, shaken: DealModels, by_region: RevenueForecast
) -> None:
    draws = by_region.samples()
    assert draws.shape == (2, 3, SAMPLES)
    assert by_region.groups["region"].to_list() == ["EMEA", "NA"]
    total = revenue_forecast(history, T_MONTH, models=shaken, n_samples=SAMPLES, seed=3)
    assert total.samples().shape == (1, 3, SAMPLES)
    # same seed, same deals: the regional draws are the total's draws split up
    np.testing.assert_allclose(draws.sum(axis=0), total.samples()[0], rtol=1e-9)
    summary = by_region.summary()
    assert_frame_equal(
        summary.filter(pl.col("by") == ""),
        total.summary(),
        check_exact=False,
        rel_tol=1e-9,
    )
    parts = (
        summary.filter(pl.col("by") == "region")
        .group_by("period", "target_month")
        .agg(pl.col("mean", "booked_to_date", "pipeline_mean", "newbiz_mean").sum())
    )
    both = summary.filter(pl.col("by") == "").join(
        parts, on=["period", "target_month"], suffix="_parts"
    )
    assert both.height == 4  # three months and the quarter
    for col in ("mean", "booked_to_date", "pipeline_mean", "newbiz_mean"):
        np.testing.assert_allclose(both[col], both[f"{col}_parts"], rtol=1e-9)


def test_summary_rows_are_the_quantiles_of_the_draws(by_region: RevenueForecast) -> None:
    summary = by_region.summary()
    draws = by_region.samples()
    for g, region in enumerate(["total", "EMEA", "NA"]):
        rows = summary.filter(pl.col("segment") == region)
        own = draws.sum(axis=0) if region == "total" else draws[g - 1]
        months = rows.filter(pl.col("period") == "month").sort("horizon")
        assert months["horizon"].to_list() == [0, 1, 2]
        assert months["target_month"].to_list() == [date(2026, m, 1) for m in (10, 11, 12)]
        for h, row in enumerate(months.iter_rows(named=True)):
            p10, p50, p90 = np.quantile(own[h], [0.1, 0.5, 0.9])
            assert row["mean"] == pytest.approx(own[h].mean(), rel=1e-12)
            assert (row["p10"], row["p50"], row["p90"]) == pytest.approx((p10, p50, p90))
        quarter = rows.filter(pl.col("period") == "quarter").row(0, named=True)
        q_draws = own.sum(axis=0)  # the quarter starts at the as-of month: nothing booked before
        assert quarter["target_month"] == date(2026, 10, 1)
        assert quarter["mean"] == pytest.approx(q_draws.mean(), rel=1e-12)
        assert quarter["p50"] == pytest.approx(np.quantile(q_draws, 0.5), rel=1e-12)
    assert (summary["p10"] <= summary["p50"]).all() and (summary["p50"] <= summary["p90"]).all()
    components = summary["booked_to_date"] + summary["pipeline_mean"] + summary["newbiz_mean"]
    np.testing.assert_allclose(components, summary["mean"], rtol=1e-9)
    assert (summary["pipeline_mean"] > 0).all() and (summary["newbiz_mean"] >= 0).all()
    assert summary.filter(pl.col("horizon") == 0)["newbiz_mean"].sum() > 0


def test_same_seed_same_forecast_other_seed_other_draws(
    history: DealHistory, shaken: DealModels, by_region: RevenueForecast
) -> None:
    again = revenue_forecast(
        history, T_MONTH, models=shaken, by="region", n_samples=SAMPLES, seed=3
    )
    np.testing.assert_array_equal(again.samples(), by_region.samples())
    other = revenue_forecast(
        history, T_MONTH, models=shaken, by="region", n_samples=SAMPLES, seed=4
    )
    assert not np.array_equal(other.samples(), by_region.samples())


# -- deal scores -------------------------------------------------------------------------------


def test_deal_scores_are_probabilities_of_the_open_pipeline(
    history: DealHistory, models: dict[datetime, DealModels], by_region: RevenueForecast
) -> None:
    scores = by_region.deals
    deals = history.deals.collect()
    open_at = deals.filter(
        (pl.col("created_at") <= T_MONTH)
        & (pl.col("closed_at").is_null() | (pl.col("closed_at") > T_MONTH))
    )
    assert sorted(scores["deal_id"].to_list()) == sorted(open_at["deal_id"].to_list())
    assert scores.height > 100
    p_won = scores["p_won"].to_numpy()
    assert ((p_won >= 0) & (p_won <= 1)).all() and p_won.std() > 0.05
    q = scores.select([f"p_month_{k}" for k in range(4)]).to_numpy()
    assert "p_month_4" not in scores.columns
    assert (q >= 0).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(scores["p_slip"], 1.0 - q[:, 0], atol=1e-12)
    ratio = np.array([models[T_MONTH].amount_ratio.get(s, 1.0) for s in scores["stage"]])
    np.testing.assert_allclose(scores["amount_won"], scores["amount"].fill_null(0.0) * ratio)
    np.testing.assert_allclose(scores["expected_value"], p_won * scores["amount_won"])
    np.testing.assert_allclose(
        scores["expected_this_month"], p_won * q[:, 0] * scores["amount_won"]
    )
    likely = [date(2026, 10 + k, 1) if k < 3 else date(2027, 1, 1) for k in q.argmax(axis=1)]
    assert scores["likely_close_month"].to_list() == likely
    # The pipeline's mean in month 0 is the deals' expected bookings this month.
    pipe = by_region.pipeline.sum(axis=0)[0].mean()
    assert pipe == pytest.approx(scores["expected_this_month"].sum(), rel=0.15)


# -- the Monte Carlo draw ----------------------------------------------------------------------


def _draw(
    p: list[float],
    q: list[list[float]],
    amount: list[float],
    group: list[int] | None = None,
    *,
    n_groups: int = 1,
    horizons: int = 3,
    shock: float = 0.0,
    n_samples: int = 4000,
    seed: int = 0,
    chunk: int = 2048,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, shock, n_samples) if shock > 0 else np.zeros(n_samples)
    return _draw_pipeline(
        np.array(p, dtype=float),
        np.array(q, dtype=float),
        np.array(amount, dtype=float),
        np.array(group or [0] * len(p), dtype=np.int64),
        n_groups,
        horizons,
        shocks,
        rng,
        chunk=chunk,
    )


def test_certain_deals_book_exactly_and_impossible_ones_never() -> None:
    out = _draw(
        [1.0, 0.0, 1.0, 1.0],
        [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        [100.0, 1e6, 7.0, 5e5],
        [0, 0, 1, 1],
        n_groups=2,
        chunk=3,  # the deals span two chunks
    )
    assert out.shape == (2, 3, 4000)
    np.testing.assert_array_equal(out[0, 0], 100.0)  # won, month 0; the p=0 deal never books
    np.testing.assert_array_equal(out[0, 1:], 0.0)
    np.testing.assert_array_equal(out[1, 2], 7.0)  # group 1, month 2
    np.testing.assert_array_equal(out[1, :2], 0.0)  # the "later" deal books in no month


def test_draws_match_probability_and_timing_on_average() -> None:
    n, amount, p = 20_000, 1000.0, 0.3
    out = _draw([p], [[0.5, 0.3, 0.15, 0.05]], [amount], n_samples=n, seed=1)[0]
    for h, share in enumerate([0.5, 0.3, 0.15]):
        rate = p * share
        booked = out[h]
        assert set(np.unique(booked)) <= {0.0, amount}
        se = amount * np.sqrt(rate * (1 - rate) / n)
        assert abs(booked.mean() - rate * amount) < 4 * se
    # a deal books in at most one month of a sample
    assert (out.sum(axis=0) <= amount).all()
    total = out.sum(axis=0)
    rate = p * 0.95
    assert abs(total.mean() - rate * amount) < 4 * amount * np.sqrt(rate * (1 - rate) / n)


def test_the_win_shock_widens_the_total() -> None:
    deals = 300
    args = ([0.3] * deals, [[1, 0, 0, 0]] * deals, [100.0] * deals)
    calm = _draw(*args, n_samples=3000, seed=2)[0, 0]
    shaken = _draw(*args, n_samples=3000, seed=2, shock=0.8)[0, 0]
    # independent deals: sd = 100 * sqrt(300 * 0.3 * 0.7) ~ 794
    assert calm.std() == pytest.approx(100 * np.sqrt(deals * 0.21), rel=0.1)
    assert shaken.std() > 2.5 * calm.std()
    # a common log-odds shift around 0 moves the mean only a little (logit-normal mean ~0.32)
    assert calm.mean() == pytest.approx(0.3 * 100 * deals, rel=0.02)
    assert shaken.mean() == pytest.approx(calm.mean(), rel=0.12)


# -- targets -----------------------------------------------------------------------------------


def _targets(company: tuple[Tables, object], scope: str) -> dict[tuple[str, date], float]:
    frame = company[0]["targets"].filter(pl.col("scope_type") == scope)
    return {
        (r["scope_id"], date.fromisoformat(r["period"] + "-01")): r["amount"]
        for r in frame.iter_rows(named=True)
    }


def test_company_and_region_rows_get_their_targets(
    company: tuple[Tables, object], by_region: RevenueForecast
) -> None:
    summary = by_region.summary()
    draws = {"total": by_region.samples().sum(axis=0)}
    draws |= {r: by_region.samples()[g] for g, r in enumerate(["EMEA", "NA"])}
    targets = {"total": _targets(company, "company"), **dict.fromkeys(["EMEA", "NA"])}
    regions = _targets(company, "region")
    months = [date(2026, m, 1) for m in (10, 11, 12)]  # Nov and Dec: after the data ends
    assert all(("EMEA", m) in regions and ("company", m) in targets["total"] for m in months)
    reached = []
    for row in summary.iter_rows(named=True):
        segment = row["segment"]
        table, name = (targets["total"], "company") if segment == "total" else (regions, segment)
        if row["period"] == "month":
            expected = table[(name, row["target_month"])]
            own = draws[segment][row["horizon"]]
        else:
            expected = sum(table[(name, m)] for m in months)
            own = draws[segment].sum(axis=0)
        assert row["target"] == pytest.approx(expected)
        assert row["gap"] == pytest.approx(expected - row["p50"])
        assert 0.0 <= row["p_reach_target"] <= 1.0
        assert row["p_reach_target"] == pytest.approx(np.mean(own >= expected))
        reached.append(row["p_reach_target"])
    assert summary.height == 12 and len(set(reached)) > 1


def test_product_rows_have_no_target(
    history: DealHistory, models: dict[datetime, DealModels]
) -> None:
    summary = revenue_forecast(
        history, T_MONTH, models=models[T_MONTH], by="product", n_samples=100, seed=0
    ).summary()
    products = summary.filter(pl.col("by") == "product")
    assert products["segment"].n_unique() == 4
    assert products["target"].null_count() == products.height
    assert products["gap"].null_count() == products.height
    assert products["p_reach_target"].null_count() == products.height
    total = summary.filter(pl.col("by") == "")
    assert total["target"].null_count() == 0 and total["p_reach_target"].null_count() == 0


# -- mid-month ---------------------------------------------------------------------------------


def test_mid_month_books_what_was_won_so_far(
    history: DealHistory, mid_month: RevenueForecast
) -> None:
    won = history.deals.filter(pl.col("stage") == WON).collect()

    def booked(lo: datetime, hi: datetime, region: str | None = None) -> float:
        part = won.filter((pl.col("closed_at") >= lo) & (pl.col("closed_at") <= hi))
        if region is not None:
            part = part.filter(pl.col("region") == region)
        return float(part["amount"].sum())

    aug, jul = datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    summary = mid_month.summary()
    shown = summary.filter(pl.col("period") == "month")["target_month"].unique().sort()
    assert shown.to_list() == [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)]
    for segment, region in (("total", None), ("EMEA", "EMEA"), ("NA", "NA")):
        rows = summary.filter(pl.col("segment") == segment)
        month0 = rows.filter((pl.col("period") == "month") & (pl.col("horizon") == 0)).row(
            0, named=True
        )
        so_far = booked(aug, T_MID, region)
        assert so_far > 0
        assert month0["booked_to_date"] == pytest.approx(so_far)
        assert month0["mean"] >= so_far and month0["p10"] >= so_far
        later = rows.filter((pl.col("period") == "month") & (pl.col("horizon") > 0))
        assert (later["booked_to_date"] == 0).all()
        quarter = rows.filter(pl.col("period") == "quarter").row(0, named=True)
        assert quarter["target_month"] == date(2026, 7, 1)
        july = booked(jul, aug - timedelta(microseconds=1), region)
        assert quarter["booked_to_date"] == pytest.approx(july + so_far)
        months = rows.filter(
            (pl.col("period") == "month")
            & pl.col("target_month").is_in([aug.date(), date(2026, 9, 1)])
        )
        assert quarter["mean"] == pytest.approx(july + months["mean"].sum(), rel=1e-9)
    assert (mid_month.samples()[:, 0, :] >= mid_month.booked[:, 0, None]).all()
    # quarter draws = July + August + September draws
    q_draws = mid_month.samples()[:, :2].sum(axis=(0, 1)) + mid_month.quarter_booked.sum()
    total_q = summary.filter((pl.col("segment") == "total") & (pl.col("period") == "quarter"))
    assert total_q["p10"][0] == pytest.approx(np.quantile(q_draws, 0.1), rel=1e-12)
    assert total_q["p90"][0] == pytest.approx(np.quantile(q_draws, 0.9), rel=1e-12)


def test_mid_month_pipeline_is_the_deals_open_at_as_of(
    history: DealHistory, mid_month: RevenueForecast
) -> None:
    deals = history.deals.collect()
    closed_this_month = deals.filter(
        (pl.col("closed_at") >= datetime(2026, 8, 1, tzinfo=UTC)) & (pl.col("closed_at") <= T_MID)
    )["deal_id"]
    created_this_month = deals.filter(
        (pl.col("created_at") >= datetime(2026, 8, 1, tzinfo=UTC))
        & (pl.col("created_at") <= T_MID)
        & (pl.col("closed_at").is_null() | (pl.col("closed_at") > T_MID))
    )["deal_id"]
    scored = set(mid_month.deals["deal_id"].to_list())
    assert mid_month.deals["as_of"].unique().to_list() == [T_MID]
    assert closed_this_month.len() > 0 and scored.isdisjoint(closed_this_month.to_list())
    assert created_this_month.len() > 0 and scored.issuperset(created_this_month.to_list())
