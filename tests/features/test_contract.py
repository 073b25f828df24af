from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from features.contract import (
    DEFAULT_PIPELINE,
    SCHEMAS,
    DealHistory,
    PipelineConfig,
    Stage,
    derive_history,
)


def test_pipeline_toml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(DEFAULT_PIPELINE.to_toml())
    assert PipelineConfig.from_toml(path) == DEFAULT_PIPELINE


def test_stage_order_puts_won_after_open_and_lost_at_zero() -> None:
    order = DEFAULT_PIPELINE.order()
    assert order["Qualification"] == 1
    assert order["Negotiation"] == 5
    assert order["Closed Won"] == 6
    assert order["Closed Lost"] == 0


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((Stage("A", "open"), Stage("A", "won"), Stage("L", "lost")), "more than once: A"),
        ((Stage("A", "open"), Stage("L", "lost")), "at least one 'won' stage"),
        ((Stage("A", "open", 1.5), Stage("W", "won"), Stage("L", "lost")), "probability"),
    ],
)
def test_bad_pipeline_configs_are_refused(stages: tuple[Stage, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineConfig(stages)


def test_pipeline_toml_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[stages]]\nname = "A"\n')
    with pytest.raises(ValueError, match=r"p.toml: stage #1 needs both 'name' and 'kind'"):
        PipelineConfig.from_toml(path)


def test_from_frames_conforms_and_derives_history() -> None:
    deals = pl.DataFrame(
        {
            "deal_id": ["a", "b"],
            "created_at": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
            "owner_id": ["o", "o"],
            "stage": ["Closed Won", "Demo"],
            "amount": [1, 2],
            "closed_at": [datetime(2024, 2, 1, tzinfo=UTC), None],
            "expected_close_date": [date(2024, 2, 1), date(2024, 3, 1)],
            "not_a_column": [1, 2],
        }
    )
    history = DealHistory.from_frames(deals=deals)
    assert history.history_is_derived
    assert history.has == frozenset({"deals"})
    assert history.deals.collect_schema() == pl.Schema(SCHEMAS["deals"])
    rows = history.stage_history.collect().select("deal_id", "stage").rows()
    # a won deal: first open stage at creation, then its final stage; an open deal: as it is now
    assert rows == [("a", "Qualification"), ("a", "Closed Won"), ("b", "Demo")]


def test_derive_history_skips_closed_deals_without_close_time() -> None:
    deals = pl.DataFrame(
        {
            "deal_id": ["a"],
            "created_at": [datetime(2024, 1, 1, tzinfo=UTC)],
            "owner_id": ["o"],
            "stage": ["Closed Lost"],
            "amount": [1.0],
        }
    )
    lf = DealHistory.from_frames(deals=deals).deals
    out = derive_history(lf, DEFAULT_PIPELINE).collect()
    assert out["stage"].to_list() == ["Qualification"]
