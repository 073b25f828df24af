"""New-business bookings: the point-in-time series, the Prophet wrappers and their fallbacks."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.base import clone

from features.contract import DealHistory
from models.forecast.newbiz import (
    BookingsProphet,
    NewBusinessForecaster,
    monthly_bookings,
    newbiz_history,
)
from pipelines.simulate import SimConfig, simulate_company


def _ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# deal, created_at, stage, amount, closed_at, region
_DEALS = [
    ("A", _ts(2026, 1, 10), "Closed Won", 100.0, _ts(2026, 1, 20), "EMEA"),
    ("B", _ts(2026, 1, 5), "Closed Won", 200.0, _ts(2026, 3, 15), "NA"),
    ("C", _ts(2025, 12, 31, 23), "Closed Won", 50.0, _ts(2026, 2, 2), "NA"),
    ("D", _ts(2026, 2, 1), "Closed Lost", 999.0, _ts(2026, 2, 10), "NA"),
    ("E", _ts(2026, 2, 3), "Closed Won", 70.0, _ts(2026, 4, 1), "EMEA"),
    ("F", _ts(2025, 11, 15), "Closed Won", 30.0, _ts(2026, 1, 31, 23, 59, 59), "EMEA"),
    ("G", _ts(2026, 2, 20), "Demo", 500.0, None, "NA"),
]


def _history(rows: list[tuple]) -> DealHistory:
    deals = pl.DataFrame(
        {
            "deal_id": [r[0] for r in rows],
            "created_at": [r[1] for r in rows],
            "owner_id": ["rep-1"] * len(rows),
            "stage": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
            "closed_at": [r[4] for r in rows],
            "region": [r[5] for r in rows],
        },
        schema_overrides={"closed_at": pl.Datetime("us", "UTC")},
    )
    return DealHistory.from_frames(deals=deals)


def _wide(frame: pl.DataFrame) -> dict[tuple[date, int], float]:
    return {(r["origin_month"], r["horizon"]): r["bookings"] for r in frame.iter_rows(named=True)}


def test_series_values_by_hand() -> None:
    got = newbiz_history(_history(_DEALS), origin=date(2026, 4, 1))
    assert got.columns == ["origin_month", "horizon", "target_month", "bookings"]
    nov, dec, jan, feb, mar = (
        date(2025, 11, 1),
        date(2025, 12, 1),
        *[date(2026, m, 1) for m in (1, 2, 3)],
    )
    expected = {
        # h = 0: same-month deals created in the month; only A (Jan).
        (nov, 0): 0.0, (dec, 0): 0.0, (jan, 0): 100.0, (feb, 0): 0.0, (mar, 0): 0.0,
        # h = 1: A counts for T = Dec (created Jan >= Dec); F (created Nov) does not.
        (nov, 1): 0.0, (dec, 1): 100.0, (jan, 1): 0.0, (feb, 1): 0.0,
        # h = 2: T = Nov -> Jan: A + F; Dec -> Feb: C (created Dec 31); Jan -> Mar: B.
        (nov, 2): 130.0, (dec, 2): 50.0, (jan, 2): 200.0,
        # h = 3: Nov -> Feb: C; Dec -> Mar: B. The lost D and the open G never count; E closes
        # in April, which has not closed by the origin.
        (nov, 3): 50.0, (dec, 3): 200.0,
    }  # fmt: skip
    assert _wide(got) == expected
    assert got.filter(pl.col("horizon") == 2)["target_month"].to_list() == [jan, feb, mar]


def test_later_rows_never_change_known_values() -> None:
    early = newbiz_history(_history(_DEALS), origin=date(2026, 4, 1))
    more = [
        *_DEALS,
        ("H", _ts(2026, 3, 20), "Closed Won", 40.0, _ts(2026, 4, 5), "NA"),  # closes after T0
        ("I", _ts(2026, 4, 2), "Closed Won", 60.0, _ts(2026, 4, 9), "NA"),  # created after T0
    ]
    assert_frame_equal(newbiz_history(_history(more), origin=date(2026, 4, 1)), early)
    later = newbiz_history(_history(more), origin=date(2026, 5, 1))
    known = later.filter(pl.col("target_month") < date(2026, 4, 1))
    assert_frame_equal(known, early)
    new = _wide(later.filter(pl.col("target_month") == date(2026, 4, 1)))
    # April: E (created Feb) counts for T <= Feb, H (Mar) for T <= Mar, I (Apr) for T = Apr.
    assert new[(date(2026, 4, 1), 0)] == 60.0
    assert new[(date(2026, 3, 1), 1)] == 100.0
    assert new[(date(2026, 2, 1), 2)] == 170.0
    assert new[(date(2026, 1, 1), 3)] == 170.0


def test_segments_add_up_and_monthly_bookings() -> None:
    history = _history(_DEALS)
    by_region = newbiz_history(history, origin=date(2026, 4, 1), by="region")
    assert by_region.columns[0] == "region"
    total = by_region.group_by("origin_month", "horizon").agg(pl.col("bookings").sum())
    assert _wide(total) == _wide(newbiz_history(history, origin=date(2026, 4, 1)))
    assert _wide(by_region.filter(pl.col("region") == "EMEA"))[(date(2025, 11, 1), 2)] == 130.0
    monthly = monthly_bookings(history, origin=date(2026, 4, 1))
    assert dict(zip(monthly["month"], monthly["bookings"], strict=True)) == {
        date(2025, 11, 1): 0.0,
        date(2025, 12, 1): 0.0,
        date(2026, 1, 1): 130.0,
        date(2026, 2, 1): 50.0,
        date(2026, 3, 1): 200.0,
    }


def test_bad_arguments_name_the_fix() -> None:
    history = _history(_DEALS)
    with pytest.raises(ValueError, match="start of a month.*use 2026-04-01"):
        newbiz_history(history, origin=date(2026, 4, 15))
    with pytest.raises(ValueError, match="start of a month"):
        newbiz_history(history, origin=_ts(2026, 4, 1, 6))
    with pytest.raises(ValueError, match="unknown grouping column.*colour"):
        newbiz_history(history, origin=date(2026, 4, 1), by="colour")
    with pytest.raises(ValueError, match="non-negative"):
        newbiz_history(history, origin=date(2026, 4, 1), horizons=[-1])


def _short_series() -> pl.DataFrame:
    """Six months of horizon 0 and 1 values for two regions (too short for Prophet)."""
    months = [date(2026, m, 1) for m in range(1, 7)]
    rows = []
    for region, scale in (("EMEA", 1.0), ("NA", 3.0)):
        for h in (0, 1):
            for k, m in enumerate(months):
                value = scale * (100.0 + 10 * k + 50 * h)
                rows.append((region, m, h, m, value))  # origin_month is not read by the model
    return pl.DataFrame(
        rows, schema=["region", "origin_month", "horizon", "target_month", "bookings"], orient="row"
    )


def test_fallback_for_short_series() -> None:
    model = NewBusinessForecaster().fit(_short_series())
    assert model.fallback_ == {0: True, 1: True}
    assert model.shares_["share"].to_list() == pytest.approx([0.25, 0.75])
    mean = model.predict(date(2026, 7, 1))
    # Total h0 series: 4 x (100, 110, ..., 150): median 500; h1: 700.
    total = mean.group_by("horizon").agg(pl.col("bookings").sum()).sort("horizon")
    assert total["bookings"].to_list() == pytest.approx([500.0, 700.0])
    draws = model.sample(date(2026, 7, 1), n_samples=200, seed=5)
    assert draws.columns == [
        "region", "origin_month", "horizon", "target_month", "sample", "bookings"
    ]  # fmt: skip
    assert draws.height == 2 * 2 * 200 and (draws["bookings"] >= 0).all()
    # Draws resample the deviations of the last values from the median: within their range.
    h0 = draws.filter(pl.col("horizon") == 0).group_by("sample").agg(pl.col("bookings").sum())
    assert h0["bookings"].min() >= 400.0 - 1e-9 and h0["bookings"].max() <= 600.0 + 1e-9
    assert_frame_equal(draws, model.sample(date(2026, 7, 1), n_samples=200, seed=5))
    assert not draws.equals(model.sample(date(2026, 7, 1), n_samples=200, seed=6))
    with pytest.raises(ValueError, match="fitted on months up to 2026-06-01"):
        model.sample(date(2026, 6, 1))
    with pytest.raises(ValueError, match=r"horizon\(s\) \[2\] were not in the training frame"):
        model.predict(date(2026, 7, 1), horizons=[2])


@pytest.fixture(scope="module")
def sim_history() -> DealHistory:
    company = simulate_company(SimConfig(n_deals=3000, months=30, seed=3, anomalies=False))
    return DealHistory.from_frames(**company.tables, pipeline=company.pipeline)


def test_simulated_series_is_point_in_time(sim_history: DealHistory) -> None:
    full = newbiz_history(sim_history, origin=date(2026, 10, 1), by="region")
    for origin in (date(2025, 6, 1), date(2026, 1, 1), date(2026, 7, 1)):
        at = newbiz_history(sim_history, origin=origin, by="region")
        assert at["target_month"].max() < origin
        assert_frame_equal(full.filter(pl.col("target_month") < origin), at)


def test_prophet_per_horizon_with_segments(sim_history: DealHistory) -> None:
    origin = date(2026, 7, 1)
    series = newbiz_history(sim_history, origin=origin, horizons=[0, 2], by="region")
    model = NewBusinessForecaster()
    twin = clone(model)
    model.fit(series)
    assert model.fallback_ == {0: False, 2: False}
    assert "quarter_end" in model.series_[2].prophet.extra_regressors
    state = np.random.get_state()
    draws = model.sample(origin, n_samples=300, seed=1)
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # global RNG untouched
    regions = model.shares_.height
    assert draws.height == regions * 2 * 300 and (draws["bookings"] >= 0).all()
    assert_frame_equal(draws, model.sample(origin, n_samples=300, seed=1))
    # Parts are the total's draws times fixed shares: they add up draw by draw.
    by_draw = draws.group_by("horizon", "sample").agg(pl.col("bookings").sum())
    emea = draws.filter(pl.col("region") == "EMEA").join(
        by_draw, on=["horizon", "sample"], suffix="_total"
    )
    share = model.shares_.filter(pl.col("region") == "EMEA")["share"].item()
    np.testing.assert_allclose(emea["bookings"], share * emea["bookings_total"])
    # h = 2 (September, a quarter end) is far bigger than h = 0, as in the history.
    mean = model.predict(origin).group_by("horizon").agg(pl.col("bookings").sum()).sort("horizon")
    assert mean["bookings"][1] > 3 * mean["bookings"][0]
    # A refit of the same object equals a fresh fit of its clone (Prophet rebuilt each fit).
    model.fit(series.filter(pl.col("target_month") < date(2026, 3, 1)))
    model.fit(series)
    assert_frame_equal(model.predict(origin), twin.fit(series).predict(origin))


def test_bookings_prophet_sees_the_quarter_end() -> None:
    months = [date(2024 + (k // 12), k % 12 + 1, 1) for k in range(30)]
    rng = np.random.default_rng(0)
    values = [
        100.0 + 2 * k + (60.0 if m.month % 3 == 0 else 0.0) + rng.normal(0, 3)
        for k, m in enumerate(months)
    ]
    frame = pl.DataFrame({"month": months, "bookings": values})
    model = BookingsProphet(seasonality_mode="additive").fit(frame)
    assert model.fallback_ is False
    mean = model.predict(date(2026, 7, 1), horizons=range(4))
    july, aug, sep, octo = mean["bookings"].to_list()
    assert sep > max(july, aug) + 40  # the quarter-end lift, about 60
    assert 150 < july < 185  # trend: 100 + 2 * 30 = 160 (and a little yearly shape)
    draws = model.sample(date(2026, 7, 1), horizons=[0, 2], n_samples=400, seed=2)
    assert draws.height == 800 and (draws["bookings"] >= 0).all()
    assert draws.filter(pl.col("horizon") == 2)["bookings"].median() > sep - 20
