"""The weighted pipeline: exact answers on a hand-built history, point in time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.calendar import instant
from features.contract import DealHistory
from models.forecast.revenue import DealModels
from models.forecast.weighted import weighted_pipeline
from tests.models.tiny_history import LOST, WON, stage_row, tiny_history, ts

AS_OF = datetime(2025, 6, 15, tzinfo=UTC)
JUN, JUL, AUG = date(2025, 6, 1), date(2025, 7, 1), date(2025, 8, 1)


def weighted_history() -> DealHistory:
    """Open as of 2025-06-15 00:00 (stage, amount, expected close as they were then):

    - A: Demo, 1000, expected 2025-07-10 (July). On 2025-06-20 it moves to Negotiation, 5000,
      expected 2025-06-30: the deals row shows that later state, which must not be used.
    - B: Proposal, 2000, expected 2025-05-20: past due, counts in June.
    - C: Negotiation, 500, expected 2025-06-05: past due within June, stays in June.
    - H3: Negotiation, 700, expected 2025-06-28 (June); won on 2025-07-01, after the as-of.
    - D: Qualification, 3000, no expected close date.
    - E: Discovery, 800, expected 2025-08-05 (August).
    Not open: F is created after the as-of; G was lost on 2025-06-01.

    Closed by the as-of, for the historical rates: H1 Qualification > Demo > Proposal > won;
    H2 Qualification > Demo > Proposal > lost; G Qualification > Demo > lost; H4 Qualification
    > Negotiation > won. Rates: Qualification 2/4, Demo 1/3, Proposal 1/2, Negotiation 1/1,
    Discovery unknown. (Counting H3's later win would give Qualification 3/5, Demo 2/4.)
    Regions: A, B, D, G, H1, H2 EU; C, E, F, H3, H4 NA.
    """
    deal_rows = [
        ("A", ts(2025, 5, 1), "Negotiation", None, 5000.0, date(2025, 6, 30), "EU"),
        ("B", ts(2025, 3, 1), "Proposal", None, 2000.0, date(2025, 5, 20), "EU"),
        ("C", ts(2025, 4, 1), "Negotiation", None, 500.0, date(2025, 6, 5), "NA"),
        ("H3", ts(2025, 5, 1), WON, ts(2025, 7, 1), 700.0, date(2025, 6, 28), "NA"),
        ("D", ts(2025, 5, 10), "Qualification", None, 3000.0, None, "EU"),
        ("E", ts(2025, 6, 1), "Discovery", None, 800.0, date(2025, 8, 5), "NA"),
        ("F", ts(2025, 6, 20), "Negotiation", None, 900.0, date(2025, 6, 30), "NA"),
        ("G", ts(2025, 2, 1), LOST, ts(2025, 6, 1), 400.0, date(2025, 6, 1), "EU"),
        ("H1", ts(2025, 1, 1), WON, ts(2025, 3, 1), 10.0, date(2025, 3, 1), "EU"),
        ("H2", ts(2025, 1, 1), LOST, ts(2025, 4, 1), 10.0, date(2025, 4, 1), "EU"),
        ("H4", ts(2025, 2, 1), WON, ts(2025, 5, 10), 10.0, date(2025, 5, 10), "NA"),
    ]
    history = [
        stage_row("A", ts(2025, 5, 1), "Demo", 1000.0, date(2025, 7, 10)),
        stage_row("A", ts(2025, 6, 20), "Negotiation", 5000.0, date(2025, 6, 30)),
        stage_row("B", ts(2025, 3, 1), "Proposal", 2000.0, date(2025, 5, 20)),
        stage_row("C", ts(2025, 4, 1), "Negotiation", 500.0, date(2025, 6, 5)),
        stage_row("H3", ts(2025, 5, 1), "Qualification", 700.0, date(2025, 6, 28)),
        stage_row("H3", ts(2025, 5, 15), "Demo", None, None),
        stage_row("H3", ts(2025, 6, 1), "Negotiation", None, None),
        stage_row("H3", ts(2025, 7, 1), WON, None, None),
        stage_row("D", ts(2025, 5, 10), "Qualification", 3000.0, None),
        stage_row("E", ts(2025, 6, 1), "Discovery", 800.0, date(2025, 8, 5)),
        stage_row("F", ts(2025, 6, 20), "Negotiation", 900.0, date(2025, 6, 30)),
        stage_row("G", ts(2025, 2, 1), "Qualification", 400.0, date(2025, 6, 1)),
        stage_row("G", ts(2025, 3, 1), "Demo", None, None),
        stage_row("G", ts(2025, 6, 1), LOST, None, None),
        stage_row("H1", ts(2025, 1, 1), "Qualification", 10.0, date(2025, 3, 1)),
        stage_row("H1", ts(2025, 1, 15), "Demo", None, None),
        stage_row("H1", ts(2025, 2, 1), "Proposal", None, None),
        stage_row("H1", ts(2025, 3, 1), WON, None, None),
        stage_row("H2", ts(2025, 1, 1), "Qualification", 10.0, date(2025, 4, 1)),
        stage_row("H2", ts(2025, 1, 15), "Demo", None, None),
        stage_row("H2", ts(2025, 2, 1), "Proposal", None, None),
        stage_row("H2", ts(2025, 4, 1), LOST, None, None),
        stage_row("H4", ts(2025, 2, 1), "Qualification", 10.0, date(2025, 5, 10)),
        stage_row("H4", ts(2025, 3, 1), "Negotiation", None, None),
        stage_row("H4", ts(2025, 5, 10), WON, None, None),
    ]
    return tiny_history(deal_rows, history)


class _Constant:
    """A known-answer model: every deal gets the same class probabilities."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = np.asarray(probabilities)

    def predict_proba(self, rows: pl.DataFrame) -> np.ndarray:
        return np.tile(self.probabilities, (rows.height, 1))


def _models(cutoff: datetime, p_won: float = 0.25) -> DealModels:
    return DealModels(
        probability=cast(Any, _Constant([1.0 - p_won, p_won])),
        timing=cast(Any, _Constant([1.0, 0.0])),
        amount_ratio={},
        win_shock=0.0,
        cutoff=cutoff,
    )


def test_crm_weight_is_amount_times_config_probability_by_expected_close_month() -> None:
    out = weighted_pipeline(weighted_history(), AS_OF, estimate_close_dates=False)
    assert out.columns == [
        "close_month",
        "deals",
        "amount",
        "stage_weighted_crm",
        "stage_weighted_hist",
        "model_weighted",
    ]
    # June: B 2000 x 0.6 (past due) + C 500 x 0.8 + H3 700 x 0.8; July: A 1000 x 0.4 (Demo as
    # of then, not its later Negotiation 5000 in June); August: E 800 x 0.2; no date: D.
    # F (created later) and G (lost before) are not open.
    assert out.select("close_month", "deals", "amount", "stage_weighted_crm").rows() == [
        (JUN, 3, 3200.0, pytest.approx(2160.0)),
        (JUL, 1, 1000.0, pytest.approx(400.0)),
        (AUG, 1, 800.0, pytest.approx(160.0)),
        (None, 1, 3000.0, pytest.approx(300.0)),
    ]
    assert out["model_weighted"].null_count() == out.height  # no models given


def test_past_due_deals_count_in_the_as_of_month() -> None:
    # As of 1 May, B (expected 20 May) is not due yet: May, with H4 (Negotiation 10, won on
    # 10 May). As of mid-June B is past due: June.
    may = weighted_pipeline(
        weighted_history(), instant(date(2025, 5, 1)), estimate_close_dates=False
    )
    assert may.select("close_month", "deals", "amount", "stage_weighted_crm").row(0) == (
        date(2025, 5, 1),
        2,
        2010.0,
        pytest.approx(2000.0 * 0.6 + 10.0 * 0.8),
    )
    june = weighted_pipeline(weighted_history(), AS_OF, estimate_close_dates=False)
    assert june["close_month"].min() == JUN
    # As of 1 October every dated deal open then (A, B, C, E, F) is past due: all in October.
    october = weighted_pipeline(
        weighted_history(), instant(date(2025, 10, 1)), estimate_close_dates=False
    )
    assert october.select("close_month", "deals", "amount").rows() == [
        (date(2025, 10, 1), 5, 5000.0 + 2000.0 + 500.0 + 800.0 + 900.0),
        (None, 1, 3000.0),
    ]


def test_deals_without_expected_close_date_sit_in_the_null_month_last() -> None:
    out = weighted_pipeline(weighted_history(), AS_OF, estimate_close_dates=False)
    undated = out.filter(pl.col("close_month").is_null())
    assert undated.height == 1 and out.row(-1) == undated.row(0)
    assert undated.row(0, named=True) == {
        "close_month": None,
        "deals": 1,
        "amount": 3000.0,
        "stage_weighted_crm": pytest.approx(300.0),
        "stage_weighted_hist": pytest.approx(1500.0),  # Qualification 2/4
        "model_weighted": None,
    }


def test_hist_weight_uses_win_rates_known_at_the_as_of() -> None:
    out = weighted_pipeline(weighted_history(), AS_OF, estimate_close_dates=False)
    # Rates as of 2025-06-15: Qualification 1/2, Demo 1/3, Proposal 1/2, Negotiation 1,
    # Discovery unknown (E adds nothing). H3's win on 2025-07-01 is not known yet.
    assert out["stage_weighted_hist"].to_list() == pytest.approx(
        [2000.0 / 2 + 500.0 + 700.0, 1000.0 / 3, 0.0, 3000.0 / 2]
    )
    # On 2025-07-02 H3's win is known: Qualification 3/5, Demo 2/4, Negotiation 2/2.
    later = weighted_pipeline(
        weighted_history(), instant(date(2025, 7, 2)), estimate_close_dates=False
    )
    # Open then: A (Negotiation 5000, June 30: past due), B, C, E, F (all past due except E).
    assert later.select("close_month", "stage_weighted_hist").rows() == [
        (JUL, pytest.approx(5000.0 + 2000.0 / 2 + 500.0 + 900.0)),
        (AUG, pytest.approx(0.0)),
        (None, pytest.approx(3000.0 * 3 / 5)),
    ]


def test_a_bare_date_is_midnight_utc() -> None:
    assert_frame_equal(
        weighted_pipeline(weighted_history(), instant(date(2025, 6, 15))),
        weighted_pipeline(weighted_history(), AS_OF),
    )


def test_by_region_splits_the_total() -> None:
    history = weighted_history()
    out = weighted_pipeline(history, AS_OF, by="region", estimate_close_dates=False)
    assert out.columns[:2] == ["region", "close_month"]
    assert out.select("region", "close_month", "deals", "stage_weighted_crm").rows() == [
        ("EU", JUN, 1, pytest.approx(1200.0)),
        ("EU", JUL, 1, pytest.approx(400.0)),
        ("EU", None, 1, pytest.approx(300.0)),
        ("NA", JUN, 2, pytest.approx(960.0)),
        ("NA", AUG, 1, pytest.approx(160.0)),
    ]
    total = weighted_pipeline(history, AS_OF, estimate_close_dates=False)
    summed = out.group_by("close_month").agg(pl.exclude("region", "model_weighted").sum())
    assert_frame_equal(
        summed.sort("close_month", nulls_last=True),
        total.drop("model_weighted"),
        check_dtypes=False,
    )


def test_model_weight_is_amount_times_the_model_probability() -> None:
    out = weighted_pipeline(weighted_history(), AS_OF, models=_models(AS_OF))
    assert out["model_weighted"].to_list() == pytest.approx(
        [0.25 * 3200.0, 0.25 * 1000.0, 0.25 * 800.0, 0.25 * 3000.0]
    )


def test_models_fitted_after_the_as_of_are_refused() -> None:
    late = _models(AS_OF + timedelta(days=1))
    with pytest.raises(
        ValueError,
        match="fitted on data up to 2025-06-16, after the as_of 2025-06-15: refit them",
    ):
        weighted_pipeline(weighted_history(), AS_OF, models=late)


def test_unknown_dimension_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown dimension 'colour'.*one of owner_id"):
        weighted_pipeline(weighted_history(), AS_OF, by="colour")
