"""The expected band of one series point: counts decide, seasons and past breaks are handled."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomalies.kpi_baselines import judge


def _rate(k: float, n: float, hk: list[float], hn: list[float], hq=None, qend=False):
    return judge(
        "rate",
        value=k / n,
        k=k,
        n=n,
        history_value=np.array(hk) / np.array(hn),
        history_k=np.array(hk, dtype=float),
        history_n=np.array(hn, dtype=float),
        history_qend=np.array(hq if hq is not None else [False] * len(hk)),
        qend=qend,
        min_n=12,
        min_count=8,
    )


def _count(value: float, history: list[float]):
    h = np.array(history, dtype=float)
    return judge(
        "count",
        value=value,
        k=value,
        n=None,
        history_value=h,
        history_k=h,
        history_n=np.zeros(len(h)),
        history_qend=np.zeros(len(h), dtype=bool),
        qend=False,
        min_n=12,
        min_count=8,
    )


STEADY_K = [30, 27, 33, 29, 31, 30, 28, 32, 30, 29, 31, 30]
STEADY_N = [100] * 12


def test_a_collapse_on_many_deals_is_surprising_and_its_deviation_is_in_deals() -> None:
    j = _rate(5, 100, STEADY_K, STEADY_N)
    assert j is not None
    assert j.expected == pytest.approx(0.30, abs=0.005)
    assert j.p < 1e-6
    assert j.deviation == pytest.approx(5 - 100 * j.expected)
    assert j.band_low < 0.30 < j.band_high


def test_a_win_rate_from_four_deals_gets_no_verdict() -> None:
    assert _rate(0, 4, STEADY_K, STEADY_N) is None  # below min_n


def test_a_small_sample_is_judged_by_its_counts_not_its_ratio() -> None:
    # 2 of 14 (14%) against 30%: the same ratio drop as 14 of 100 would be decisive
    small = _rate(2, 14, STEADY_K, STEADY_N)
    large = _rate(14, 100, STEADY_K, STEADY_N)
    assert small is not None and large is not None
    assert small.p > 0.1
    assert large.p < 1e-3


def test_quarter_end_months_are_compared_with_quarter_ends() -> None:
    # quarter ends win 45%, other months 25%: a quarter end at 45% is normal, at 25% is not
    hq = [m % 3 == 2 for m in range(12)]
    hk = [45 if q else 25 for q in hq]
    normal = _rate(45, 100, hk, STEADY_N, hq, qend=True)
    broken = _rate(25, 100, hk, STEADY_N, hq, qend=True)
    assert normal is not None and broken is not None
    assert normal.expected == pytest.approx(0.45, abs=0.01)
    assert normal.p > 0.5
    assert broken.p < 1e-4


def test_a_break_last_month_does_not_become_the_norm() -> None:
    hk = STEADY_K[:-1] + [5]  # the previous month collapsed already
    j = _rate(5, 100, hk, STEADY_N)
    assert j is not None
    assert j.expected == pytest.approx(0.30, abs=0.01)
    assert j.p < 1e-6


def test_counts_follow_the_trend_and_flag_a_drop() -> None:
    growing = [50 + 3 * i for i in range(12)]  # next expected ~86
    on_trend = _count(86, growing)
    dropped = _count(30, growing)
    assert on_trend is not None and dropped is not None
    assert on_trend.expected == pytest.approx(86, rel=0.08)
    assert on_trend.p > 0.3
    assert dropped.p < 1e-6
    assert dropped.deviation < -40


def test_tiny_expected_counts_get_no_verdict() -> None:
    assert _count(0, [2, 1, 3, 2, 2, 1, 2, 3]) is None


def test_unknown_kind_is_an_error_naming_the_kinds() -> None:
    with pytest.raises(ValueError, match="use rate, count, amount or mean"):
        judge(
            "ratio",
            value=1.0,
            k=None,
            n=None,
            history_value=np.ones(5),
            history_k=np.ones(5),
            history_n=np.ones(5),
            history_qend=np.zeros(5, dtype=bool),
            qend=False,
            min_n=1,
            min_count=1,
        )
