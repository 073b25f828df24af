"""The weighted pipeline as of any instant: classic (CRM or historical stage rates) and model.

Each deal open at ``as_of`` (its stage, amount and expected close date as they were then) is
placed in the month of its expected close date (without one, the month its stage historically
leads to); a past-due deal counts in the as-of month.
Per month and group it adds ``amount × p`` for three probabilities side by side:

- ``stage_weighted_crm`` — the stage probability of the pipeline config (what the CRM shows);
- ``stage_weighted_hist`` — each stage's historical win rate among deals closed by ``as_of``;
- ``model_weighted`` — dealcast's calibrated close probability of that deal (when models are
  given).

This is the number sales ops use today; dealcast's forecast (``models.forecast.revenue``) also moves
each deal to the month it is likely to close in, which this table deliberately does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from features.calendar import Instant, check_dimensions
from features.contract import DealHistory
from features.kpis.pipeline import stage_win_rates
from features.snapshots import as_of_frame, snapshot_features
from models.forecast.baselines import with_close_dates
from models.forecast.revenue import DealModels, deal_scores

__all__ = ["WEIGHTED_METHODS", "weighted_pipeline"]

WEIGHTED_METHODS: tuple[str, ...] = ("stage_weighted_crm", "stage_weighted_hist", "model_weighted")


def weighted_pipeline(
    history: DealHistory,
    as_of: Instant,
    *,
    by: str | Sequence[str] | None = None,
    models: DealModels | None = None,
    rows: pl.DataFrame | None = None,
    estimate_close_dates: bool = True,
) -> pl.DataFrame:
    """The open pipeline at ``as_of`` weighted three ways, by expected close month and group.

    Parameters
    ----------
    history : DealHistory
    as_of : Instant
        Aware UTC (:func:`features.calendar.instant`).
    by : dimension(s) of ``features.contract.DIMENSIONS``, optional
    models : DealModels, optional
        Fitted at or before ``as_of``; without them ``model_weighted`` is null.
    rows : DataFrame, optional
        ``snapshot_features`` rows at ``as_of`` when the caller already has them.
    estimate_close_dates : bool
        Place a deal without an expected close date in the month its stage historically leads
        to (:func:`models.forecast.baselines.with_close_dates`: the median days from entering
        the stage to being won among deals won by ``as_of``, else the company's median sales
        cycle minus the deal's age). Only when no deal had been won does it stay undated.

    Returns
    -------
    DataFrame
        ``*by, close_month, deals, amount, stage_weighted_crm, stage_weighted_hist,
        model_weighted``; ``close_month`` null for deals without an expected close date that
        none could be estimated for (or all of them with ``estimate_close_dates=False``): they
        are listed, and weigh in no month. Sorted by group and month.
    """
    moment = as_of
    dims = check_dimensions(by)
    if models is not None and models.cutoff > moment:
        raise ValueError(
            f"the models were fitted on data up to {models.cutoff:%Y-%m-%d}, after the as_of "
            f"{moment:%Y-%m-%d}: refit them at the as_of"
        )
    open_rows = rows if rows is not None else snapshot_features(history, [moment]).collect()
    if estimate_close_dates:
        open_rows = with_close_dates(history, open_rows, moment).drop("close_date_estimated")
    rates = (
        stage_win_rates(history, as_of_frame([moment]))
        .select("stage", pl.col("stage_win_rate_hist").alias("_hist"))
        .collect()
    )
    month = pl.date(moment.year, moment.month, 1)
    frame = open_rows.join(rates, on="stage", how="left").with_columns(
        pl.when(pl.col("expected_close_date") < month)
        .then(month)
        .otherwise(pl.col("expected_close_date").dt.truncate("1mo"))
        .alias("close_month")
    )
    if models is not None and frame.height:
        scores = deal_scores(models, frame)
        frame = frame.with_columns(scores["p_won"].alias("_model"))
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("_model"))
    amount = pl.col("amount").fill_null(0.0)
    return (
        frame.group_by(*dims, "close_month")
        .agg(
            pl.len().alias("deals"),
            amount.sum().alias("amount"),
            (amount * pl.col("stage_probability")).sum().alias("stage_weighted_crm"),
            (amount * pl.col("_hist")).sum().alias("stage_weighted_hist"),
            pl.when(pl.col("_model").is_not_null().any())
            .then((amount * pl.col("_model")).sum())
            .alias("model_weighted"),
        )
        .sort(*dims, "close_month", nulls_last=True)
    )
