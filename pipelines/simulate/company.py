"""Simulate a company end to end: org, demand, funnel, CRM records, truth, canonical tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from features.contract import ACTIVITY_TYPES, DEFAULT_PIPELINE, PipelineConfig, conform
from pipelines.simulate.activities import Activities, build_activities
from pipelines.simulate.anomalies import plan_anomalies
from pipelines.simulate.clock import Clock
from pipelines.simulate.config import SimConfig
from pipelines.simulate.demand import Deals, create_deals
from pipelines.simulate.funnel import Funnel, run_funnel, win_shift_time
from pipelines.simulate.history import FORECAST_CATEGORIES, History, build_history
from pipelines.simulate.org import build_org
from pipelines.simulate.targets import build_targets
from pipelines.simulate.truth import weekly_truth
from pipelines.simulate.world import (
    DAY,
    DEAL_TYPES,
    LOST_REASONS,
    PRODUCTS,
    REGIONS,
    SEGMENTS,
    SOURCES,
)

__all__ = ["SimulatedCompany", "simulate_company"]

CANONICAL = ("deals", "stage_history", "activities", "reps", "targets")
TRUTH = ("truth_probabilities", "truth_anomalies")
_STEPS = 7  # the step() calls in simulate_company


@dataclass(frozen=True)
class SimulatedCompany:
    """A simulated company: its canonical tables, the ground truth, and its pipeline config.

    ``tables`` holds ``deals, stage_history, activities, reps, targets`` in the canonical
    schemas of ``features.contract.SCHEMAS``; ``truth`` holds ``truth_probabilities``
    (``deal_id, as_of, probability``: P(won | the simulator's state) every Monday a deal is
    open) and ``truth_anomalies`` (one row per injected anomaly).
    """

    tables: dict[str, pl.DataFrame]
    truth: dict[str, pl.DataFrame]
    pipeline: PipelineConfig


@contextmanager
def _steps(show: bool) -> Iterator[Callable[[str], None]]:
    """``step(name)`` announces the next step (a rich progress bar on stderr when shown)."""
    if not show:
        yield lambda _name: None
        return
    from pipelines.console import progress

    with progress(transient=True) as bar:
        task = bar.add_task("simulating", total=_STEPS)

        started = False

        def step(name: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=f"simulating {name}")

        yield step
        bar.advance(task)


def _ids(prefix: str, n: int, width: int) -> pl.Series:
    width = max(width, len(str(n)))
    return pl.select(
        pl.format(f"{prefix}{{}}", pl.int_range(1, n + 1).cast(pl.String).str.zfill(width))
    ).to_series()


def _labels(names: tuple[str, ...] | pl.Series, codes: np.ndarray) -> pl.Series:
    """``names[code]`` for each code; null where the code is negative."""
    index = pl.Series(codes)
    if (codes < 0).any():
        index = index.set(pl.Series(codes < 0), None)
    return pl.Series(names).gather(index)


def simulate_company(config: SimConfig, *, show_progress: bool = False) -> SimulatedCompany:
    """Simulate the company of ``config``.

    Parameters
    ----------
    config : SimConfig
        Size, history length, seed, anomalies, end date.
    show_progress : bool
        Show a rich progress display on stderr.

    Returns
    -------
    SimulatedCompany
        Same config, same tables (and byte-identical files from :func:`write_company`).

    Examples
    --------
    >>> company = simulate_company(SimConfig(n_deals=2_000, months=24))
    >>> sorted(company.tables)
    ['activities', 'deals', 'reps', 'stage_history', 'targets']
    """
    with _steps(show_progress) as step:
        step("the organisation")
        clock = Clock.of(config)
        org = build_org(config, clock)
        plan = plan_anomalies(config, clock, org)
        step("deals")
        deals = create_deals(config, clock, org, plan)
        step("the funnel")
        funnel = run_funnel(config, clock, org, deals, plan)
        step("stage history")
        history = build_history(config, clock, org, deals, funnel, plan)
        deal_ids = _ids("D-", deals.size, 7)
        reps = org.table(clock)
        owner_ids = reps["owner_id"]
        account_ids = _ids("acc-", deals.n_accounts, 6)
        tables = {
            "deals": _deals_table(clock, deals, funnel, history, deal_ids, owner_ids, account_ids),
            "stage_history": _history_table(clock, history, deal_ids),
        }
        del history  # the tables hold it now: keep the peak memory down
        step("activities")
        activities = build_activities(config, clock, org, deals, funnel, plan)
        tables["activities"] = _activities_table(
            clock, activities, deal_ids, owner_ids, account_ids
        )
        del activities
        step("truth and targets")
        truth = {
            "truth_probabilities": weekly_truth(clock, deals, funnel, deal_ids),
            "truth_anomalies": _with_regime(plan.table(clock, org), config, clock),
        }
        tables["reps"] = reps
        tables["targets"] = build_targets(clock, org, deals, funnel, reps, config)
        step("canonical tables")
        tables = {name: conform(tables[name], name).collect() for name in CANONICAL}
    return SimulatedCompany(tables=tables, truth=truth, pipeline=DEFAULT_PIPELINE)


def _with_regime(anomalies: pl.DataFrame, config: SimConfig, clock: Clock) -> pl.DataFrame:
    """``truth_anomalies`` plus one row for a win-rate regime change (``win_shift_at``).

    Its window runs from the change to the end of the history; ``magnitude`` is the shift of
    the advance logit at every stage exit.
    """
    at = win_shift_time(config, clock)
    if at is None:
        return anomalies
    start = clock.start + timedelta(days=at // DAY)
    row = pl.DataFrame(
        {
            "anomaly_id": [f"anomaly-{anomalies.height + 1}"],
            "kind": ["win_rate_regime"],
            "metric": ["win_rate"],
            "segment_type": ["company"],
            "segment_id": ["company"],
            "start": [start],
            "end": [clock.end],
            "magnitude": [float(config.win_shift_logit)],
            "description": [
                f"the win rate changes regime company-wide from {start.isoformat()}: advance "
                f"logit {config.win_shift_logit:+} at every stage exit until the end"
            ],
        },
        schema=anomalies.schema,
    )
    return pl.concat([anomalies, row])


def _deals_table(
    clock: Clock,
    deals: Deals,
    funnel: Funnel,
    history: History,
    deal_ids: pl.Series,
    owner_ids: pl.Series,
    account_ids: pl.Series,
) -> pl.DataFrame:
    latest = history.latest(deals.size)
    stage = history.stage[latest]
    closed = funnel.closed < clock.horizon
    lost = closed & ~funnel.won
    probability = np.array([s.probability for s in DEFAULT_PIPELINE.stages], dtype=np.float64)
    return pl.DataFrame(
        {
            "deal_id": deal_ids,
            "created_at": clock.timestamps(deals.created, "created_at"),
            "owner_id": owner_ids.gather(deals.owner),
            "stage": _labels(DEFAULT_PIPELINE.names, stage),
            "amount": history.amount[latest],
            "expected_close_date": clock.dates(history.ecd[latest], "expected_close_date"),
            "closed_at": clock.timestamps(funnel.closed, "closed_at").set(pl.Series(~closed), None),
            "account_id": account_ids.gather(deals.account),
            "product": _labels(PRODUCTS, deals.product),
            "region": _labels(REGIONS, deals.region),
            "segment": _labels(SEGMENTS, deals.segment),
            "source": _labels(SOURCES, deals.source),
            "deal_type": _labels(DEAL_TYPES, deals.deal_type),
            "lost_reason": _labels(LOST_REASONS, np.where(lost, funnel.lost_reason, -1)),
            "forecast_category": _labels(FORECAST_CATEGORIES, history.forecast[latest]),
            "crm_probability": probability[stage],
        }
    )


def _history_table(clock: Clock, history: History, deal_ids: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": deal_ids.gather(history.deal),
            "changed_at": clock.timestamps(history.t, "changed_at"),
            "stage": _labels(DEFAULT_PIPELINE.names, history.stage),
            "amount": history.amount,
            "expected_close_date": clock.dates(history.ecd, "expected_close_date"),
            "forecast_category": _labels(FORECAST_CATEGORIES, history.forecast),
        }
    )


def _activities_table(
    clock: Clock,
    activities: Activities,
    deal_ids: pl.Series,
    owner_ids: pl.Series,
    account_ids: pl.Series,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "activity_id": _ids("act-", activities.t.size, 8),
            "occurred_at": clock.timestamps(activities.t, "occurred_at"),
            "owner_id": owner_ids.gather(activities.owner),
            "type": _labels(ACTIVITY_TYPES, activities.kind),
            "deal_id": _labels(deal_ids, activities.deal),
            "account_id": _labels(account_ids, activities.account),
        }
    )
