"""The snapshot builder against a naive reference, a hand-checked example, and the
point-in-time property: rows dated after as_of never change a feature as of as_of."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.contract import DealHistory
from features.snapshots import (
    LABEL_COLUMNS,
    as_of_frame,
    data_end,
    pipeline_as_of,
    snapshot_features,
    weekly_as_ofs,
)
from tests.features.history_strategies import (
    Raw,
    as_of_hours,
    at,
    future_edits,
    raw_histories,
)
from tests.features.reference_features import computed_features, reference_features

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference_frame(raw: Raw, as_of: datetime, like: pl.DataFrame) -> pl.DataFrame:
    rows = reference_features(raw, as_of)
    return pl.DataFrame(rows, schema=like.schema) if rows else like.clear()


@FAST
@given(raw=raw_histories(), hours=as_of_hours())
def test_builder_matches_naive_reference(raw: Raw, hours: int) -> None:
    as_of = at(hours) + timedelta(minutes=30)  # between whole hours, and exactly on them below
    for t in (as_of, at(hours)):
        got = computed_features(raw, t)
        assert_frame_equal(got, _reference_frame(raw, t, got), check_exact=False, rel_tol=1e-9)


# -- the point-in-time property ------------------------------------------------------------


@FAST
@given(data=st.data(), raw=raw_histories(), hours=as_of_hours())
def test_rows_after_as_of_never_change_features(data: st.DataObject, raw: Raw, hours: int) -> None:
    as_of = at(hours) + timedelta(minutes=draw_minutes(data))
    before = computed_features(raw, as_of)
    edited = data.draw(future_edits(raw, as_of))
    after = computed_features(edited, as_of)
    assert_frame_equal(before, after)


def draw_minutes(data: st.DataObject) -> int:
    return data.draw(st.sampled_from([0, 1, 59]))


# -- a hand-checked example ----------------------------------------------------------------


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def small() -> DealHistory:
    deals = pl.DataFrame(
        {
            "deal_id": ["a", "b", "c"],
            "created_at": [_utc(2024, 1, 1), _utc(2024, 1, 5), _utc(2023, 10, 1)],
            "owner_id": ["o1", "o1", "o1"],
            "stage": ["Closed Won", "Demo", "Closed Won"],
            "amount": [100.0, 200.0, 50.0],
            "closed_at": [_utc(2024, 3, 1), None, _utc(2023, 12, 1)],
            "region": ["EU", "EU", "EU"],
        }
    )
    history = pl.DataFrame(
        {
            "deal_id": ["a", "a", "a", "a", "b", "c", "c"],
            "changed_at": [
                _utc(2024, 1, 1),
                _utc(2024, 1, 10),
                _utc(2024, 1, 20),
                _utc(2024, 3, 1),
                _utc(2024, 1, 5),
                _utc(2023, 10, 1),
                _utc(2023, 12, 1),
            ],
            "stage": [
                "Qualification",
                "Demo",
                "Discovery",
                "Closed Won",
                "Demo",
                "Qualification",
                "Closed Won",
            ],
            "amount": [90.0, None, 100.0, 100.0, 200.0, 50.0, 50.0],
            "expected_close_date": [
                date(2024, 2, 1),
                date(2024, 2, 15),
                None,
                None,
                date(2024, 1, 31),
                date(2023, 12, 1),
                None,
            ],
        }
    )
    activities = pl.DataFrame(
        {
            "activity_id": ["1", "2", "3", "4"],
            "occurred_at": [
                _utc(2024, 1, 2),
                _utc(2024, 1, 12),
                _utc(2024, 1, 19),
                _utc(2024, 1, 25),
            ],
            "owner_id": ["o1"] * 4,
            "type": ["call", "demo", "email", "email"],
            "deal_id": ["a", "a", "a", "b"],
        }
    )
    return DealHistory.from_frames(deals=deals, stage_history=history, activities=activities)


def test_hand_checked_features(small: DealHistory) -> None:
    row = (
        snapshot_features(small, [date(2024, 1, 21)])
        .filter(pl.col("deal_id") == "a")
        .collect()
        .to_dicts()[0]
    )
    assert row["stage"] == "Discovery"
    assert row["stage_order"] == 2
    assert row["days_in_stage"] == 1.0  # entered Discovery on Jan 20
    assert row["deal_age_days"] == 20.0
    assert row["stage_regressions"] == 1  # Demo (3) -> Discovery (2)
    assert row["close_date_pushes"] == 1  # Feb 1 -> Feb 15
    assert row["days_pushed_total"] == 14
    assert row["days_to_expected_close"] == 25  # Feb 15 - Jan 21, the Jan 20 row kept the date
    assert row["amount"] == 100.0 and row["amount_initial"] == 90.0
    assert row["amount_change"] == 10.0
    assert row["activity_count__7d"] == 1  # the email on Jan 19
    assert row["activity_count__30d"] == 3
    assert row["activity_count__30d__demo"] == 1
    assert row["days_since_last_activity"] == 2.0
    assert row["owner_closed_count__365d"] == 1  # c, won Dec 1
    assert row["owner_win_rate__365d"] == 1.0
    assert row["owner_median_cycle_days__365d"] == 61.0  # Oct 1 -> Dec 1
    assert row["owner_tenure_days"] == 112.0  # no reps table: from the first deal (Oct 1)
    assert row["label_outcome"] == "won" and row["label_won"] is True


def test_past_due_is_negative(small: DealHistory) -> None:
    row = (
        snapshot_features(small, [date(2024, 2, 10)])
        .filter(pl.col("deal_id") == "b")
        .collect()
        .row(0, named=True)
    )
    assert row["days_to_expected_close"] == -10  # expected Jan 31
    assert row["label_outcome"] == "open" and row["label_closed_at"] is None


def test_many_as_of_dates_equal_one_at_a_time(small: DealHistory) -> None:
    dates = weekly_as_ofs(date(2024, 3, 4), 10)
    together = snapshot_features(small, dates).collect()
    apart = pl.concat([snapshot_features(small, [d]).collect() for d in dates])
    assert together.height > 0
    assert_frame_equal(together, apart.sort("as_of", "deal_id"))


def test_pipeline_as_of_lists_open_deals_as_they_were(small: DealHistory) -> None:
    frame = pipeline_as_of(small, date(2024, 1, 21))
    assert frame["deal_id"].to_list() == ["b", "a"]  # Demo (3) before Discovery (2)
    assert frame["stage"].to_list() == ["Demo", "Discovery"]
    assert frame["amount"].to_list() == [200.0, 100.0]
    assert frame["expected_close_date"].to_list() == [date(2024, 1, 31), date(2024, 2, 15)]
    # c closed before, and a deal is out of the pipeline at the instant it closes
    assert pipeline_as_of(small, datetime(2024, 3, 1, tzinfo=UTC))["deal_id"].to_list() == ["b"]


def test_labels_are_kept_apart(small: DealHistory) -> None:
    cols = snapshot_features(small, [date(2024, 1, 21)]).collect_schema().names()
    assert [c for c in cols if c.startswith("label_")] == list(LABEL_COLUMNS)


def test_as_of_frame_accepts_dates_and_naive_datetimes() -> None:
    frame = as_of_frame([date(2024, 1, 2), datetime(2024, 1, 1, 12)]).collect()
    assert frame["as_of"].to_list() == [_utc(2024, 1, 1, 12), _utc(2024, 1, 2)]


def test_data_end_is_the_latest_timestamp_anywhere(small: DealHistory) -> None:
    assert data_end(small) == _utc(2024, 3, 1)  # a's close; the last activity is Jan 25
