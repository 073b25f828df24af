"""Deal risk flags: what a rep should look at next to each open deal, with the evidence.

Two steps, both point in time:

1. :func:`risk_norms` learns what is *normal* from the history as it was known at ``as_of``
   (later rows dropped, later closes undone): how long deals stay in each stage, how long an
   open deal in each stage usually goes without activity, how large each owner's deals are.
2. :func:`risk_flags` compares the open deals at that ``as_of`` (rows of
   :func:`features.snapshots.snapshot_features`) with those norms and returns one row per
   flag raised, with a plain-English sentence holding the numbers and a severity.

The flags (:data:`RISK_FLAGS`):

- ``stalled``: days in the current stage beyond the stage's p90 of completed stays (stage
  spells that ended at or before ``as_of``; needs ``min_spells`` of them).
- ``pushed``: expected close date moved later at least twice.
- ``past_due``: expected close date before ``as_of``'s date, deal still open.
- ``silent``: longer without activity than the stage's silence norm (below). A deal with no
  activity yet has been silent since it was created.
- ``amount_cut``: amount at least 20% below the first amount recorded for the deal.
- ``stage_regression``: moved back to an earlier open stage at least once.
- ``large_for_owner``: amount above the p97.5 and at least twice the median of the amounts of
  the owner's deals created by ``as_of`` (needs ``min_owner_deals`` of them).

Severity is "how far past the threshold" and is >= 1 for every flag raised:
days / p90 for ``stalled`` and ``silent`` (a norm under one day counts as one day, and the
severity is at least 1), pushes / 2
for ``pushed``, 1 + days overdue / 30 for ``past_due``, cut / 20% for ``amount_cut``, the
number of regressions for ``stage_regression`` and amount / p97.5 for ``large_for_owner``.

Percentiles are linearly interpolated (as in the KPI engine's stage durations).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from features.calendar import instant
from features.contract import DealHistory
from features.kpis.periods import days_between, known_at
from features.snapshots import as_of_frame, deal_states, enriched_history

__all__ = ["RISK_FLAGS", "RiskNorms", "risk_flags", "risk_norms"]

RISK_FLAGS: tuple[str, ...] = (
    "stalled",
    "pushed",
    "past_due",
    "silent",
    "amount_cut",
    "stage_regression",
    "large_for_owner",
)
"""Every flag :func:`risk_flags` can raise, in the order it reports them."""

MIN_STAGE_SPELLS = 20
MIN_SILENCE_OBSERVATIONS = 20
MIN_OWNER_DEALS = 10
SILENCE_WEEKS = 52
"""Weekly snapshots (1..52 weeks before ``as_of``) that the silence norm is learnt from."""
PUSHES = 2
AMOUNT_CUT = 0.2
LARGE_MEDIAN_MULTIPLE = 2.0
LARGE_QUANTILE = 0.975
"""An open deal above this quantile of its owner's deal amounts is unusually large for them:
open deals run larger than closed ones, and at the p90 a quarter of open deals were flagged."""
PAST_DUE_DAYS_PER_SEVERITY = 30.0
_Q = 0.9

_ROW_COLUMNS: tuple[str, ...] = (
    "deal_id",
    "as_of",
    "owner_id",
    "stage",
    "amount",
    "amount_initial",
    "amount_change",
    "expected_close_date",
    "days_in_stage",
    "deal_age_days",
    "stage_regressions",
    "close_date_pushes",
    "days_to_expected_close",
    "days_since_last_activity",
)
_OUT_SCHEMA = {
    "deal_id": pl.String(),
    "flag": pl.String(),
    "evidence": pl.String(),
    "severity": pl.Float64(),
}


@dataclass(frozen=True, eq=False)
class RiskNorms:
    """What was normal as of ``as_of``, learnt by :func:`risk_norms`.

    Compare the frames one by one (``eq=False``: frames have no single truth value).

    Attributes
    ----------
    as_of : datetime
        The instant (UTC) the norms were learnt at; the rows given to :func:`risk_flags` must
        be as of the same instant.
    stage_days : DataFrame
        One row per open stage: ``stage, spells`` (completed stays in the stage), ``days_p90``
        (p90 of their length in days; null with fewer than ``min_spells``).
    silence : DataFrame
        One row per open stage: ``stage, observations`` (open deal-weeks with an activity
        before the snapshot), ``silence_days_p90`` (p90 of days since the last activity;
        null with fewer than ``min_observations``).
    owner_amounts : DataFrame
        One row per owner with a deal: ``owner_id, deals`` (created by ``as_of``, amount
        known), ``amount_high, amount_median`` (null with fewer than ``min_owner_deals``).
    """

    as_of: datetime
    stage_days: pl.DataFrame
    silence: pl.DataFrame
    owner_amounts: pl.DataFrame


def risk_norms(
    history: DealHistory,
    as_of: datetime | date,
    *,
    min_spells: int = MIN_STAGE_SPELLS,
    min_observations: int = MIN_SILENCE_OBSERVATIONS,
    min_owner_deals: int = MIN_OWNER_DEALS,
) -> RiskNorms:
    """Norms learnt only from what was known at ``as_of``.

    The history is first cut at ``as_of``: rows dated after it are dropped and deals closed
    after it are open again, so nothing later can change a norm.

    - Stage stays: a stay (spell) in an open stage starts when a deal's stage history enters
      the stage and ends at its next row in another stage (a later open stage, an earlier one,
      won or lost). ``days_p90`` is the p90 of the lengths of the spells that ended at or
      before ``as_of``, over the whole history.
    - Silence: at each of the weekly snapshots ``as_of - k weeks`` (k = 1..52), every deal
      open then, in an open stage and with at least one activity by then, gives one
      observation: its stage then and the days since its last activity. ``silence_days_p90``
      is the p90 per stage. Deals never touched are left out of the norm (their silence has
      no start but their creation); :func:`risk_flags` measures them from creation.
    - Owner amounts: the amount each deal had at ``as_of`` (the last one recorded in its
      stage history by then), over the owner's deals created at or before ``as_of``, open or
      closed.

    Parameters
    ----------
    history : DealHistory
        The canonical tables (e.g. ``Store(...).load()``). A derived stage history (no real
        one in the source) carries the deals' latest amounts and close dates, as everywhere.
    as_of : datetime or date
        The instant (a bare date is 00:00 UTC).
    min_spells, min_observations, min_owner_deals : int
        The fewest completed spells, silence observations and owner deals for a norm.

    Returns
    -------
    RiskNorms

    Examples
    --------
    >>> history = Store("dealcast-data").load()  # doctest: +SKIP
    >>> norms = risk_norms(history, data_now(history))  # doctest: +SKIP
    >>> norms.stage_days  # doctest: +SKIP
    """
    for name, value in (
        ("min_spells", min_spells),
        ("min_observations", min_observations),
        ("min_owner_deals", min_owner_deals),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    at = instant(as_of)
    known = known_at(history, at)
    stage_days, silence, owners = pl.collect_all(
        [
            _stage_days(known, min_spells),
            _silence(known, at, min_observations),
            _owner_amounts(known, min_owner_deals),
        ]
    )
    return RiskNorms(as_of=at, stage_days=stage_days, silence=silence, owner_amounts=owners)


def _per_open_stage(history: DealHistory, stats: pl.LazyFrame, count: str) -> pl.LazyFrame:
    """``stats`` (keyed by ``stage``) on every open stage, in funnel order, count 0 if none."""
    stages = pl.LazyFrame(
        {"stage": list(history.pipeline.open_stages)}, schema={"stage": pl.String}
    )
    return stages.join(stats, on="stage", how="left", maintain_order="left").with_columns(
        pl.col(count).fill_null(0).cast(pl.UInt32)
    )


def _stage_days(known: DealHistory, min_spells: int) -> pl.LazyFrame:
    """Per open stage: completed spells and the p90 of their length in days."""
    open_stages = list(known.pipeline.open_stages)
    left_at = pl.col("changed_at").shift(-1).over("deal_id", order_by="changed_at")
    spells = (
        enriched_history(known)
        .filter(pl.col("changed_at") == pl.col("stage_entered_at"))
        .with_columns(left_at.alias("_left_at"))
        .filter(pl.col("_left_at").is_not_null() & pl.col("stage").is_in(open_stages))
        .group_by("stage")
        .agg(
            pl.len().alias("spells"),
            days_between(pl.col("_left_at"), pl.col("changed_at"))
            .quantile(_Q, "linear")
            .alias("days_p90"),
        )
    )
    return _per_open_stage(known, spells, "spells").with_columns(
        pl.when(pl.col("spells") >= min_spells).then(pl.col("days_p90")).alias("days_p90")
    )


def _silence(known: DealHistory, at: datetime, min_observations: int) -> pl.LazyFrame:
    """Per open stage: open deal-weeks with an activity, and the p90 of days since the last."""
    snapshots = as_of_frame([at - timedelta(weeks=k) for k in range(1, SILENCE_WEEKS + 1)])
    activities = (
        known.activities.filter(pl.col("deal_id").is_not_null())
        .select("deal_id", pl.col("occurred_at").alias("_last_activity_at"))
        .sort("_last_activity_at")
    )
    observed = (
        deal_states(known, snapshots)
        .select("deal_id", "as_of", "stage")
        .filter(pl.col("stage").is_in(list(known.pipeline.open_stages)))
        .sort("as_of")
        .join_asof(
            activities,
            left_on="as_of",
            right_on="_last_activity_at",
            by="deal_id",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("_last_activity_at").is_not_null())
        .group_by("stage")
        .agg(
            pl.len().alias("observations"),
            days_between(pl.col("as_of"), pl.col("_last_activity_at"))
            .quantile(_Q, "linear")
            .alias("silence_days_p90"),
        )
    )
    return _per_open_stage(known, observed, "observations").with_columns(
        pl.when(pl.col("observations") >= min_observations)
        .then(pl.col("silence_days_p90"))
        .alias("silence_days_p90")
    )


def _owner_amounts(known: DealHistory, min_owner_deals: int) -> pl.LazyFrame:
    """Per owner: deals with a known amount, and the p90 and median of those amounts."""
    amounts = (
        enriched_history(known)
        .group_by("deal_id")
        .agg(pl.col("amount").sort_by("changed_at").last())
        .filter(pl.col("amount").is_not_null())
    )
    enough = pl.col("deals") >= min_owner_deals
    return (
        known.deals.select("deal_id", "owner_id")
        .join(amounts, on="deal_id", how="inner")
        .group_by("owner_id")
        .agg(
            pl.len().cast(pl.UInt32).alias("deals"),
            pl.col("amount").quantile(LARGE_QUANTILE, "linear").alias("amount_high"),
            pl.col("amount").median().alias("amount_median"),
        )
        .with_columns(
            pl.when(enough).then(pl.col("amount_high")).alias("amount_high"),
            pl.when(enough).then(pl.col("amount_median")).alias("amount_median"),
        )
        .sort("owner_id")
    )


# -- flags -------------------------------------------------------------------------------


def risk_flags(rows: pl.DataFrame, norms: RiskNorms) -> pl.DataFrame:
    """The risk flags of the open deals in ``rows``, judged against ``norms``.

    Parameters
    ----------
    rows : DataFrame
        Open deals at one ``as_of``: ``snapshot_features(history, [as_of]).collect()``. Reads
        ``deal_id, as_of, owner_id, stage, amount, amount_initial, amount_change,
        expected_close_date, days_in_stage, deal_age_days, stage_regressions,
        close_date_pushes, days_to_expected_close, days_since_last_activity`` and, when
        present, ``days_pushed_total``; never a label column.
    norms : RiskNorms
        ``risk_norms(history, as_of)`` at the same ``as_of``.

    Returns
    -------
    DataFrame
        ``deal_id`` (str), ``flag`` (str, one of :data:`RISK_FLAGS`), ``evidence`` (str, a
        sentence with the numbers), ``severity`` (float >= 1: how far past the threshold, see
        the module docstring); one row per flag raised, sorted by deal then flag order.

    Examples
    --------
    >>> as_of = data_now(history)  # doctest: +SKIP
    >>> rows = snapshot_features(history, [as_of]).collect()  # doctest: +SKIP
    >>> flags = risk_flags(rows, risk_norms(history, as_of))  # doctest: +SKIP
    >>> flags.filter(pl.col("deal_id") == "D-0005996").rows()  # doctest: +SKIP
    [('D-0005996', 'stalled', 'in Negotiation for 89.8 days; 90% of deals move on within 47 days',
      1.91),
     ('D-0005996', 'pushed', 'close date pushed 12 times, by 313 days in total', 6.0),
     ('D-0005996', 'large_for_owner', "amount 166,200 is 9.7× this owner's median deal of 17,200
      and above 97.5% of their 323 deals (97.5th percentile ...)", ...)]
    """
    missing = [c for c in _ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(
            f"risk_flags needs the snapshot column(s) {', '.join(missing)}: pass "
            "snapshot_features(history, [as_of]).collect()"
        )
    if rows.height == 0:
        return pl.DataFrame(schema=_OUT_SCHEMA)
    seen = set(rows["as_of"].unique().to_list())
    if seen != {norms.as_of}:
        shown = ", ".join(str(t) for t in sorted(seen, key=str))
        raise ValueError(
            f"rows are as of {shown} but the norms as of {norms.as_of}: build both at one "
            "as_of (snapshot_features(history, [as_of]) and risk_norms(history, as_of))"
        )
    pushed_total = (
        pl.col("days_pushed_total")
        if "days_pushed_total" in rows.columns
        else pl.lit(None, pl.Int64).alias("days_pushed_total")
    )
    judged = (
        rows.lazy()
        .select(*_ROW_COLUMNS, pushed_total)
        .join(norms.stage_days.lazy().drop("spells"), on="stage", how="left")
        .join(norms.silence.lazy().drop("observations"), on="stage", how="left")
        .join(norms.owner_amounts.lazy(), on="owner_id", how="left")
    )
    found = [
        judged.filter(when.fill_null(False)).select(
            "deal_id",
            pl.lit(flag).alias("flag"),
            evidence.alias("evidence"),
            severity.cast(pl.Float64).alias("severity"),
        )
        for flag, (when, evidence, severity) in _rules().items()
    ]
    order = pl.col("flag").replace_strict(list(RISK_FLAGS), list(range(len(RISK_FLAGS))))
    return pl.concat(found).sort(pl.col("deal_id"), order).collect()


def _rules() -> dict[str, tuple[pl.Expr, pl.Expr, pl.Expr]]:
    """flag -> (when it is raised, its evidence, its severity), over a judged row."""
    stage = pl.col("stage")
    in_stage = pl.col("days_in_stage")
    stage_p90 = pl.col("days_p90")
    untouched = pl.col("days_since_last_activity").is_null()
    silence = pl.coalesce("days_since_last_activity", "deal_age_days")
    silence_p90 = pl.col("silence_days_p90")
    pushes = pl.col("close_date_pushes")
    overdue = -pl.col("days_to_expected_close")
    cut = -pl.col("amount_change") / pl.col("amount_initial")
    regressions = pl.col("stage_regressions")
    amount = pl.col("amount")
    owner_high, owner_median = pl.col("amount_high"), pl.col("amount_median")
    norm_of_90 = "90% of open {} deals had one within {}"
    return {
        "stalled": (
            in_stage > stage_p90,
            pl.format(
                "in {} for {}; 90% of deals move on within {}",
                stage,
                _days_text(in_stage),
                _days_text(stage_p90),
            ),
            _past(in_stage, stage_p90),
        ),
        "pushed": (
            pushes >= PUSHES,
            pl.when(pl.col("days_pushed_total") > 0)
            .then(
                pl.format(
                    "close date pushed {}, by {} in total",
                    _times(pushes),
                    _days_text(pl.col("days_pushed_total")),
                )
            )
            .otherwise(pl.format("close date pushed {}", _times(pushes))),
            pushes / PUSHES,
        ),
        "past_due": (
            overdue > 0,
            pl.format(
                "expected to close on {} ({} ago) and still open",
                pl.col("expected_close_date").dt.to_string("%Y-%m-%d"),
                _days_text(overdue),
            ),
            1.0 + overdue / PAST_DUE_DAYS_PER_SEVERITY,
        ),
        "silent": (
            silence > silence_p90,
            pl.when(untouched)
            .then(
                pl.format(
                    "no activity logged in the {} since it was created; " + norm_of_90,
                    _days_text(silence),
                    stage,
                    _days_text(silence_p90),
                )
            )
            .otherwise(
                pl.format(
                    "no activity for {}; " + norm_of_90,
                    _days_text(silence),
                    stage,
                    _days_text(silence_p90),
                )
            ),
            _past(silence, silence_p90),
        ),
        "amount_cut": (
            (pl.col("amount_initial") > 0) & (cut >= AMOUNT_CUT),
            pl.format(
                "amount cut {}% from {} to {}",
                _number(cut * 100, decimals=0),
                _amount_text(pl.col("amount_initial")),
                _amount_text(amount),
            ),
            cut / AMOUNT_CUT,
        ),
        "stage_regression": (
            regressions >= 1,
            pl.format("moved back to an earlier stage {}; now in {}", _times(regressions), stage),
            regressions,
        ),
        "large_for_owner": (
            (owner_median > 0)
            & (amount > owner_high)
            & (amount >= LARGE_MEDIAN_MULTIPLE * owner_median),
            pl.format(
                "amount {} is {}× this owner's median deal of {} and above 97.5% of their {} "
                "deals (97.5th percentile {})",
                _amount_text(amount),
                _number(amount / owner_median),
                _amount_text(owner_median),
                pl.col("deals"),
                _amount_text(owner_high),
            ),
            amount / owner_high,
        ),
    }


def _past(days: pl.Expr, norm: pl.Expr) -> pl.Expr:
    """Severity of a day count over a day norm: ``days / norm``, the norm at least a day."""
    return pl.max_horizontal(days / pl.max_horizontal(norm, pl.lit(1.0)), pl.lit(1.0))


def _number(value: pl.Expr, *, decimals: int = 1) -> pl.Expr:
    """``41.3``, ``41`` (no trailing ``.0``)."""
    return value.round(decimals).cast(pl.String).str.strip_suffix(".0")


def _days_text(value: pl.Expr) -> pl.Expr:
    """``1 day``, ``41.3 days``."""
    shown = _number(value)
    return pl.when(shown == "1").then(pl.lit("1 day")).otherwise(pl.format("{} days", shown))


def _times(count: pl.Expr) -> pl.Expr:
    """``once``, ``twice``, ``3 times``."""
    return (
        pl.when(count == 1)
        .then(pl.lit("once"))
        .when(count == 2)
        .then(pl.lit("twice"))
        .otherwise(pl.format("{} times", count))
    )


def _amount_text(value: pl.Expr) -> pl.Expr:
    """A whole amount with thousands separators: ``1,234,567``."""
    digits = value.round(0).cast(pl.Int64).cast(pl.String)
    grouped = digits.str.reverse().str.replace_all(r"(\d{3})", "${1},")
    return grouped.str.replace(r",(-?)$", "${1}").str.reverse()
