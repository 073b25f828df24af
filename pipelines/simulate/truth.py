"""Ground truth the CRM never sees: each open deal's true win probability, every Monday."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.simulate.clock import Clock
from pipelines.simulate.demand import Deals
from pipelines.simulate.funnel import Funnel

__all__: list[str] = []  # internal to pipelines.simulate

TRUTH_PROBABILITY_SCHEMA: dict[str, pl.DataType] = {
    "deal_id": pl.String(),
    "as_of": pl.Datetime("us", "UTC"),
    "probability": pl.Float64(),
}


def weekly_truth(clock: Clock, deals: Deals, funnel: Funnel, deal_ids: pl.Series) -> pl.DataFrame:
    """``deal_id, as_of, probability`` for every Monday 00:00 UTC a deal is open at.

    Open at T: ``created_at <= T`` and not closed at or before T, and T before the end.
    """
    mondays = clock.mondays()
    stop = np.minimum(funnel.closed, clock.horizon)
    first = np.searchsorted(mondays, deals.created, side="left")
    count = np.maximum(np.searchsorted(mondays, stop, side="left") - first, 0)
    deal = np.repeat(np.arange(deals.size), count)
    offset = np.cumsum(count) - count
    week = np.arange(deal.size) - offset[deal] + first[deal]
    as_of = mondays[week]
    return pl.DataFrame(
        {
            "deal_id": deal_ids.gather(deal),
            "as_of": clock.timestamps(as_of, "as_of"),
            "probability": funnel.probability(deal, as_of),
        },
        schema=TRUTH_PROBABILITY_SCHEMA,
    )
