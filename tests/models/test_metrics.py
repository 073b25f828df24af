"""Probability and forecast metrics against hand-computed answers, including edge cases."""

from __future__ import annotations

import io
import math
from datetime import date

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from models.metrics import (
    accuracy,
    auc,
    bias,
    brier,
    coverage,
    ece,
    log_loss,
    reliability_plot,
    reliability_table,
    summarise,
    wape,
)

# -- probabilities -----------------------------------------------------------------------------


def test_brier_log_loss_auc_by_hand() -> None:
    y, p = [1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]
    assert brier(y, p) == pytest.approx((0.01 + 0.04 + 0.16 + 0.25) / 4)
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    # Pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, *) ok: 3 of 4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # numpy arrays and polars Series work alike
    assert brier(np.array(y), pl.Series(p)) == pytest.approx(brier(y, p))


def test_perfect_and_single_class_edge_cases() -> None:
    assert brier([1, 0, 1], [1.0, 0.0, 1.0]) == 0.0
    assert log_loss([1, 0], [1.0, 0.0]) < 1e-12  # clipped, so finite
    assert auc([1, 0, 1], [0.9, 0.1, 0.8]) == 1.0
    assert math.isnan(auc([1, 1], [0.2, 0.9]))  # one class: AUC undefined
    assert log_loss([1, 1], [0.5, 0.5]) == pytest.approx(math.log(2))  # one class still scores


def test_probability_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="one length"):
        brier([1, 0], [0.5])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], found \[1.2\]"):
        brier([1, 0], [1.2, 0.5])
    with pytest.raises(ValueError, match="outcomes 0 or 1"):
        ece([2, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match="empty"):
        auc([], [])


def test_reliability_table_by_hand() -> None:
    # p = 1.0 goes in the last bin; 0.1 starts bin 1.
    y = [1, 0, 0, 0, 1, 1, 0]
    p = [0.15, 0.12, 0.1, 0.19, 0.85, 1.0, 0.05]
    table = reliability_table(y, p, bins=10)
    expected = pl.DataFrame(
        {
            "bin": [0, 1, 8, 9],
            "mean_p": [0.05, (0.15 + 0.12 + 0.1 + 0.19) / 4, 0.85, 1.0],
            "frac_won": [0.0, 0.25, 1.0, 1.0],
            "count": [1, 4, 1, 1],
        },
        schema={"bin": pl.Int64, "mean_p": pl.Float64, "frac_won": pl.Float64, "count": pl.Int64},
    )
    assert_frame_equal(table, expected)
    # ECE weights each bin's gap by its count: (1*0.05 + 4*0.11 + 1*0.15 + 0) / 7.
    assert ece(y, p, bins=10) == pytest.approx((0.05 + 4 * 0.11 + 0.15) / 7)
    with pytest.raises(ValueError, match="bins must be a positive"):
        reliability_table(y, p, bins=0)


def _exactly_calibrated(shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """100 deals at each of p = 0.05, 0.15, ..., 0.85 with exactly 100 p of them won; the
    reported probability is p + shift."""
    ys, ps = [], []
    for k in range(9):
        p = 0.05 + 0.1 * k
        won = round(100 * p)
        ys += [1] * won + [0] * (100 - won)
        ps += [p + shift] * 100
    return np.array(ys), np.array(ps)


def test_ece_is_zero_when_calibrated_and_the_shift_when_shifted() -> None:
    assert ece(*_exactly_calibrated()) == pytest.approx(0.0, abs=1e-12)
    assert ece(*_exactly_calibrated(0.1)) == pytest.approx(0.1)
    assert ece(*_exactly_calibrated(-0.04)) == pytest.approx(0.04)


def test_ece_on_random_samples() -> None:
    rng = np.random.default_rng(7)
    q = rng.uniform(0.0, 0.9, 200_000)
    y = (rng.uniform(size=q.size) < q).astype(int)
    assert ece(y, q) < 0.005  # calibrated, up to sampling noise
    assert ece(y, q + 0.1) == pytest.approx(0.1, abs=0.005)  # every bin 0.1 too high


def test_reliability_plot_draws_each_curve_and_the_diagonal() -> None:
    y, p = _exactly_calibrated()
    tables = {"calibrated": reliability_table(y, p), "shifted": reliability_table(y, p * 0.5)}
    fig = reliability_plot(tables, title="test")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["perfect", "calibrated", "shifted"]
    assert list(lines[1].get_xdata()) == pytest.approx(tables["calibrated"]["mean_p"].to_list())
    assert list(lines[2].get_ydata()) == pytest.approx(tables["shifted"]["frac_won"].to_list())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks frac_won"):
        reliability_plot({"bad": tables["calibrated"].drop("frac_won")})


# -- forecasts ---------------------------------------------------------------------------------


def test_wape_bias_accuracy_by_hand() -> None:
    actual, forecast = [100.0, 200.0, 0.0], [110.0, 150.0, 10.0]
    assert wape(actual, forecast) == pytest.approx((10 + 50 + 10) / 300)
    assert bias(actual, forecast) == pytest.approx((10 - 50 + 10) / 300)
    assert accuracy(actual, forecast).to_list() == pytest.approx([0.9, 0.75, None])
    # An error larger than the actual gives a negative accuracy.
    assert accuracy([100.0], [250.0]).to_list() == [-0.5]


def test_perfect_forecast_and_zero_actuals() -> None:
    assert wape([5.0, 7.0], [5.0, 7.0]) == 0.0
    assert bias([5.0, 7.0], [5.0, 7.0]) == 0.0
    assert accuracy([5.0, 7.0], [5.0, 7.0]).to_list() == [1.0, 1.0]
    assert math.isnan(wape([0.0, 0.0], [1.0, 2.0]))
    assert math.isnan(bias([0.0, 0.0], [1.0, 2.0]))
    assert accuracy([0.0], [0.0]).to_list() == [None]


def test_missing_values_are_left_out_pairwise() -> None:
    assert wape([100.0, None, 50.0], [90.0, 5.0, None]) == pytest.approx(0.1)
    assert coverage([1.0, 2.0], [0.0, None], [2.0, 3.0]) == 1.0
    assert math.isnan(coverage([], [], []))
    with pytest.raises(ValueError, match="one length"):
        wape([1.0, 2.0], [1.0])


def test_coverage_all_in_all_out_and_bounds_included() -> None:
    assert coverage([1.0, 5.0, 10.0], [0.0, 6.0, 10.0], [2.0, 7.0, 10.0]) == pytest.approx(2 / 3)
    assert coverage([1.0, 2.0], [0.0, 2.0], [1.0, 3.0]) == 1.0
    assert coverage([1.0, 9.0], [2.0, 0.0], [3.0, 8.0]) == 0.0


def _backtest() -> pl.DataFrame:
    """Two origins x horizons 0 and 1; ``model`` has an interval, ``naive`` does not."""
    return pl.DataFrame(
        {
            "segment": ["all"] * 4,
            "origin": [date(2025, 1, 1)] * 2 + [date(2025, 2, 1)] * 2,
            "target_month": [
                date(2025, 1, 1),
                date(2025, 2, 1),
                date(2025, 2, 1),
                date(2025, 3, 1),
            ],
            "horizon": [0, 1, 0, 1],
            "actual": [100.0, 200.0, 200.0, 50.0],
            "model": [90.0, 230.0, 210.0, 50.0],
            "model__p10": [80.0, 210.0, 150.0, 60.0],
            "model__p90": [120.0, 260.0, 250.0, 90.0],
            "naive": [120.0, None, 160.0, 100.0],
        }
    )


def test_summarise_per_method_and_horizon() -> None:
    out = summarise(_backtest(), ["model", "naive"])
    expected = pl.DataFrame(
        {
            "method": ["model", "model", "naive", "naive"],
            "horizon": [0, 1, 0, 1],
            # model h0: |10| + |10| over 300; h1: |30| + 0 over 250
            # naive h0: |20| + |40| over 300; h1: only the second origin is forecast: 50 / 50
            "wape": [20 / 300, 30 / 250, 60 / 300, 1.0],
            "bias": [0.0, 30 / 250, -20 / 300, 1.0],
            # model h0: 100 in [80, 120], 200 in [150, 250]; h1: 200 out of [210, 260], 50 out
            "coverage": [1.0, 0.0, None, None],
            "n": [2, 2, 2, 1],
        },
        schema_overrides={"horizon": pl.Int64, "coverage": pl.Float64, "n": pl.Int64},
    )
    assert_frame_equal(out, expected)


def test_summarise_other_groupings_and_errors() -> None:
    frame = _backtest()
    by_method = summarise(frame, ["naive", "model"], by=("method",))
    assert by_method["method"].to_list() == ["naive", "model"]  # the order given
    assert by_method.row(1) == ("model", pytest.approx(50 / 550), pytest.approx(30 / 550), 0.5, 4)
    by_origin = summarise(frame, ["model"], by=("method", "origin"))
    assert by_origin["wape"].to_list() == pytest.approx([40 / 300, 10 / 250])
    # A group with nothing to score keeps its row, with n = 0 and null scores.
    empty = summarise(frame.with_columns(naive=pl.lit(None, pl.Float64)), ["naive"])
    assert empty.select("wape", "bias", "coverage", "n").rows() == [(None, None, None, 0)] * 2
    with pytest.raises(ValueError, match="lacks column.*prophet_only"):
        summarise(frame, ["prophet_only"])
    with pytest.raises(ValueError, match="only one of model__p10, model__p90"):
        summarise(frame.drop("model__p90"), ["model"])
    with pytest.raises(ValueError, match="lacks 'method'"):
        summarise(frame, ["model"], by=("horizon",))
