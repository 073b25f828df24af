"""Data-quality breaks in CRM data as of one instant (:func:`data_quality`), as detections.

The history is cut at ``as_of`` first (:func:`features.kpis.periods.known_at`), so no row dated
after it changes a result. The count tests share one null: mean ``mu``, variance ``phi * mu``
(negative binomial; Poisson when ``phi = 1``). For a share of the open deals, ``mu = n * p0``
with ``p0`` the pooled share at the previous month starts and ``phi`` their Pearson
dispersion. For activities, ``mu`` is the mean weekly count times the window in weeks and
``phi`` the weekly variance-to-mean ratio, at least the median ratio of the groups tested at
that level (a rep whose baseline happened to be calm borrows the others' spread). Both are
at least 1 and widened for the error of the estimated baseline. Scores are ``z_of_p(2 p)`` of
the one-sided p-value, or a documented rule (see :func:`data_quality`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
from scipy.stats import false_discovery_control, nbinom, poisson

from features.contract import TS, DealHistory
from features.kpis.periods import days_between, known_at
from features.snapshots import as_of_frame, deal_states, enriched_history
from models.anomalies.detections import anomaly_frame, z_of_p

__all__ = ["DATA_QUALITY_CHECKS", "data_quality"]

DATA_QUALITY_CHECKS: tuple[str, ...] = (
    "past_due_open",
    "missing_amount",
    "stale_pipeline",
    "activity_logging_drop",
    "duplicate_deals",
)
"""The ``metric`` of every check :func:`data_quality` runs."""

RULE_HIGH_SHARE = 0.10
"""Share of the deals checked at which missing amounts or duplicates score high."""
_TOP = 10
_LEVELS = (("", "_all", "The company"), ("team", "team", "Team {}"), ("owner_id", "owner_id", "{}"))
"""Activity levels tested: ``by``, the grouping column, how a summary names the group."""
_FRACTIONS = ("alpha", "min_excess", "past_due_ceiling", "min_drop", "duplicate_tolerance")
Record = dict[str, Any]


@dataclass(frozen=True)
class _Options:
    """The keyword arguments of :func:`data_quality`, checked once."""

    alpha: float
    baseline_months: int
    min_excess: float
    past_due_ceiling: float
    stale_days: int
    recent_days: int
    window_days: int
    baseline_weeks: int
    min_weekly: float
    min_drop: float
    duplicate_days: int
    duplicate_tolerance: float

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name in _FRACTIONS and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), not {value}")
            floor = 0 if name == "min_weekly" else 1
            if name not in _FRACTIONS and value < floor:
                raise ValueError(f"{name} must be at least {floor}, not {value}")


def data_quality(
    history: DealHistory,
    as_of: datetime | date,
    *,
    alpha: float = 0.01,
    baseline_months: int = 6,
    min_excess: float = 0.03,
    past_due_ceiling: float = 0.20,
    stale_days: int = 90,
    recent_days: int = 90,
    window_days: int = 14,
    baseline_weeks: int = 12,
    min_weekly: float = 5.0,
    min_drop: float = 0.5,
    duplicate_days: int = 14,
    duplicate_tolerance: float = 0.01,
) -> pl.DataFrame:
    """The data-quality breaks of ``history`` as known at ``as_of``.

    - ``past_due_open``: open deals whose expected close date is before ``as_of``'s date.
      ``observed`` is their share of the open deals, ``expected`` the share at the
      ``baseline_months`` previous month starts. Flagged when the excess is significant at
      ``alpha`` and at least ``min_excess``, or when the share is above ``past_due_ceiling``.
    - ``stale_pipeline``: open deals without a stage-history row or an activity in over
      ``stale_days`` days; the same test, no ceiling. Skipped if the stage history is derived.
    - ``missing_amount``: deals open at ``as_of`` or created in the last ``recent_days`` with
      no amount, and open deals at 0 (amounts as known at ``as_of``). ``observed``: the count.
    - ``activity_logging_drop``: activities in the last ``window_days`` against the
      ``baseline_weeks`` weeks before, for the company, each team (needs ``reps``) and each rep
      with ``min_weekly`` activities a week who started before the baseline (``hired_at``,
      else the first activity). Flagged when the Benjamini-Hochberg adjusted p-value over all
      these tests is at most ``alpha`` and the count fell by ``min_drop`` or more.
    - ``duplicate_deals``: pairs of deals (each open at ``as_of`` or recent) of one account (one
      owner when it is unknown), amounts within ``duplicate_tolerance`` of each other, created
      within ``duplicate_days``. ``observed``: the number of pairs.

    Scores: the tests' ``|z|``; a past-due share above the ceiling scores at least
    ``4 * share / ceiling`` (medium at the ceiling, high at 1.5 times it); missing amounts and
    duplicates score ``2 + 4 * share / 10%`` of the deals checked (any is a low note, 5% is
    medium, 10% high). ``band_low, band_high``: the null's ``alpha`` and ``1 - alpha``
    quantiles. Drilldowns (10 entries at most) name the owners holding most flagged deals,
    the deal ids, the pairs, or the reps behind an activity drop (for a rep, the activity
    types) with their share of the summed shortfalls.

    Parameters
    ----------
    history : DealHistory
        The canonical tables; a check needing a table the history lacks is skipped.
    as_of : datetime or date
        The instant (UTC; a bare date is 00:00 UTC of that day).
    alpha, min_excess, past_due_ceiling, min_drop : float
        Test level; smallest rise of a share worth flagging (0.03: 3 points); past-due share
        flagged whatever the baseline; smallest fall of activities (0.5: half the usual).
    baseline_months, stale_days, recent_days : int
        Month starts setting the usual shares; days untouched that make a deal stale; days
        back a "recent" deal was created.
    window_days, baseline_weeks, min_weekly : int, int, float
        The activity window, the weeks before it, the fewest activities a week to be tested.
    duplicate_days, duplicate_tolerance : int, float
        Most days between the creation of two duplicates, and their largest amount gap.

    Returns
    -------
    DataFrame
        :data:`models.anomalies.detections.ANOMALY_SCHEMA`: one row per break, highest score first.

    Raises
    ------
    ValueError
        A fraction outside (0, 1), or a count of days, weeks or months below 1.

    Examples
    --------
    >>> found = data_quality(Store("/tmp/demo").load(), date(2025, 9, 15))  # doctest: +SKIP
    >>> found.select("metric", "segment", "severity", "summary").row(0)  # doctest: +SKIP
    ('activity_logging_drop', 'rep-0024', 'medium', 'rep-0024 logged 7 activities in the 14
     days to 2025-09-15; about 103 expected from the 12 weeks before (-93%)')
    """
    opts = _Options(**{k: v for k, v in locals().items() if k not in ("history", "as_of")})
    at: datetime = as_of_frame([as_of]).collect().item()  # a bare date is 00:00 UTC
    known = known_at(history, at)
    records = _share_checks(known, at, opts, stale=not history.history_is_derived)
    checked = _checked_deals(known, at, opts.recent_days).collect()
    records += _missing_amount(checked, at, opts)
    records += _duplicates(checked, at, opts)
    if "activities" in history.has:
        records += _activity_drop(known, at, opts)
    return anomaly_frame(records)


def _null_model(mu: float, phi: float) -> Any:
    """A count with mean ``mu`` and variance ``phi * mu``: Poisson or negative binomial."""
    if phi <= 1.0 + 1e-9:
        return poisson(mu)
    size = mu / (phi - 1.0)
    return nbinom(size, size / (size + mu))


def _record(metric: str, start: date, score: float, **fields: Any) -> Record:
    """A company-level detection; ``fields`` add or override the other columns."""
    base = {"kind": "data_quality", "metric": metric, "by": "", "segment": "", "direction": "up"}
    return {**base, "period_start": start, "score": score, **fields}


def _score(p_one_sided: float) -> float:
    return z_of_p(min(1.0, 2.0 * float(p_one_sided)))


def _entry(what: str, share: float, detail: str) -> Record:
    """One drilldown entry."""
    return {"what": what, "share": round(share, 3), "detail": detail}


def _money(value: Any) -> str:
    """``1.2M``, ``340K``, ``950`` (the dataset's one reporting currency)."""
    value = float(value or 0.0)
    for size, suffix in ((1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.1f}".removesuffix(".0") + suffix
    return f"{value:.0f}"


# -- past due and stale: shares of the open deals against earlier month starts ------------


def _share_checks(known: DealHistory, at: datetime, opts: _Options, *, stale: bool) -> list[Record]:
    last = (at - timedelta(microseconds=1)).date().replace(day=1)
    months = (last.year * 12 + last.month - 1 - k for k in range(opts.baseline_months))
    starts = [datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC) for m in months]
    closed = [*known.pipeline.names_of("won"), *known.pipeline.names_of("lost")]
    touched = pl.col("_touched")
    touches = pl.concat(
        [
            known.stage_history.select("deal_id", pl.col("changed_at").alias("_touched")),
            known.activities.filter(pl.col("deal_id").is_not_null()).select(
                "deal_id", pl.col("occurred_at").alias("_touched")
            ),
        ]
    ).sort(touched)
    untouched = days_between(pl.col("as_of"), pl.max_horizontal("created_at", touched))
    states = (
        deal_states(known, as_of_frame([at, *starts]))
        .filter(pl.col("stage").is_in(closed).not_().fill_null(True))
        .join_asof(
            touches,
            left_on="as_of",
            right_on="_touched",
            by="deal_id",
            strategy="backward",
            check_sortedness=False,
        )
        .join(known.deals.select("deal_id", "owner_id"), on="deal_id", how="left")
        .with_columns(
            (pl.col("expected_close_date") < pl.col("as_of").dt.date())
            .fill_null(False)
            .alias("past_due_open"),
            (untouched > opts.stale_days).alias("stale_pipeline"),
        )
        .collect()
    )
    says = {"past_due_open": f"have an expected close date before {at.date()}"}
    if stale:
        says["stale_pipeline"] = f"have had no stage change or activity in {opts.stale_days} days"
    found = [_share_record(states, metric, text, at, opts) for metric, text in says.items()]
    return [record for record in found if record is not None]


def _share_record(
    states: pl.DataFrame, metric: str, says: str, at: datetime, opts: _Options
) -> Record | None:
    """The record of one share check, or None when the share is as usual."""
    moments = states.group_by("as_of").agg(pl.len().alias("n"), pl.col(metric).sum().alias("x"))
    now = moments.filter(pl.col("as_of") == at)
    base = moments.filter(pl.col("as_of") < at)
    if now.height == 0:
        return None
    n, x = int(now["n"][0]), int(now["x"][0])
    share = x / n
    ceiling = opts.past_due_ceiling if metric == "past_due_open" else 1.0
    fields: Record = {"observed": share}
    p = 1.0
    if base.height > 0:
        base_n, base_x = base["n"].to_numpy(), base["x"].to_numpy()
        p0 = (base_x.sum() + 0.5) / (base_n.sum() + 1.0)
        pearson = ((base_x - base_n * p0) ** 2 / (base_n * p0 * (1.0 - p0))).sum()
        phi = max(1.0, pearson / (base.height - 1)) if base.height > 1 else 1.0
        null = _null_model(n * p0, phi * (1.0 + n / base_n.sum()))
        p = float(null.sf(x - 1)) if share - p0 >= opts.min_excess else 1.0
        fields |= {"expected": float(p0), "band_low": null.ppf(opts.alpha) / n}
        fields["band_high"] = null.isf(opts.alpha) / n
    if p > opts.alpha and share <= ceiling:
        return None
    flagged = states.filter((pl.col("as_of") == at) & pl.col(metric))
    usual = (
        f"; usually {fields['expected']:.1%} at the previous month starts" if base.height else ""
    )
    return _record(
        metric,
        at.date(),
        max(_score(p), 4.0 * share / ceiling if share > ceiling else 0.0),
        summary=f"{x} open deals ({share:.1%} of {n}, {_money(flagged['amount'].sum())}) "
        f"{says}{usual}",
        drilldown=_owners(flagged, x),
        **fields,
    )


def _owners(flagged: pl.DataFrame, total: int) -> list[Record]:
    top = (
        flagged.group_by("owner_id")
        .agg(pl.len().alias("n"), pl.col("amount").sum())
        .sort(["n", "amount", "owner_id"], descending=[True, True, False])
        .head(_TOP)
    )
    return [_entry(o, n / total, f"{n} deals, {_money(a)}") for o, n, a in top.iter_rows()]


# -- missing amounts and duplicates: deals open at as_of or created recently --------------


def _checked_deals(known: DealHistory, at: datetime, recent_days: int) -> pl.LazyFrame:
    """Deals open at ``at`` or created in the last ``recent_days``, with their state then.

    Stage and amount are the stage history's at ``at`` (carried forward), as everywhere: the
    deal's own columns are its latest state, which may postdate ``at``.
    """
    closed = [*known.pipeline.names_of("won"), *known.pipeline.names_of("lost")]
    then = (
        enriched_history(known)
        .group_by("deal_id")
        .agg(pl.col("stage", "amount").sort_by("changed_at").last())
    )
    is_open = pl.col("closed_at").is_null() & ~pl.col("stage").is_in(closed).fill_null(False)
    recent = pl.col("created_at") > at - timedelta(days=recent_days)
    return (
        known.deals.select("deal_id", "owner_id", "account_id", "created_at", "closed_at")
        .join(then, on="deal_id", how="left")
        .with_columns(is_open.alias("is_open"), pl.col("stage").fill_null("no stage yet"))
        .filter(pl.col("is_open") | recent)
    )


def _rule_record(
    metric: str, at: datetime, opts: _Options, found: int, share: float, **fields: Any
) -> Record:
    """A ``missing_amount`` or ``duplicate_deals`` record (``fields``: summary, drilldown)."""
    start = (at - timedelta(days=opts.recent_days)).date()
    score = 2.0 + 4.0 * share / RULE_HIGH_SHARE
    return _record(metric, start, score, period_end=at.date(), observed=float(found), **fields)


def _missing_amount(checked: pl.DataFrame, at: datetime, opts: _Options) -> list[Record]:
    bad = pl.col("amount").is_null() | (pl.col("is_open") & (pl.col("amount") == 0))
    missing = checked.filter(bad).sort("created_at", "deal_id")
    if missing.height == 0:
        return []
    found, nulls = missing.height, missing["amount"].null_count()
    share = found / checked.height
    summary = (
        f"{found} of the {checked.height} deals open or created in the last {opts.recent_days} "
        f"days ({share:.1%}) have no amount: {nulls} missing, {found - nulls} at 0 while open"
    )
    rows = missing.head(_TOP).select("deal_id", "owner_id", "stage", "created_at", "amount")
    drilldown = [
        _entry(
            deal,
            1 / found,
            f"owner {owner}, {stage}, created {day.date()}, amount "
            + ("missing" if amount is None else "0"),
        )
        for deal, owner, stage, day, amount in rows.iter_rows()
    ]
    record = _rule_record("missing_amount", at, opts, found, share, expected=0.0)
    return [record | {"summary": summary, "drilldown": drilldown}]


def _duplicates(checked: pl.DataFrame, at: datetime, opts: _Options) -> list[Record]:
    keyed = checked.filter(pl.col("amount") > 0).with_columns(
        pl.coalesce("account_id", pl.format("owner {}", "owner_id")).alias("_key")
    )
    gap = (pl.col("amount") - pl.col("amount_b")).abs()
    apart = (pl.col("created_at") - pl.col("created_at_b")).abs()
    pairs = (
        keyed.join(keyed, on="_key", suffix="_b")
        .filter(
            (pl.col("deal_id") < pl.col("deal_id_b"))
            & (apart <= timedelta(days=opts.duplicate_days))
            & (gap <= opts.duplicate_tolerance * pl.max_horizontal("amount", "amount_b"))
        )
        .sort("created_at", "deal_id", "deal_id_b")
        .with_columns(apart.dt.total_days().alias("_days"))
    )
    if pairs.height == 0:
        return []
    deals = pl.concat([pairs["deal_id"], pairs["deal_id_b"]]).n_unique()
    share = deals / checked.height
    summary = (
        f"{pairs.height} pair{'' if pairs.height == 1 else 's'} of deals look like duplicates "
        f"(one account or owner, amounts within "
        f"{opts.duplicate_tolerance:.0%}, created within {opts.duplicate_days} days): {deals} of "
        f"the {checked.height} deals open or created in the last {opts.recent_days} days "
        f"({share:.1%})"
    )
    rows = pairs.head(_TOP).select("deal_id", "deal_id_b", "_key", "amount", "amount_b", "_days")
    drilldown = [
        _entry(
            f"{a} / {b}",
            1 / pairs.height,
            f"{key}: amounts {x:,.0f} and {y:,.0f}, created {days} day"
            + ("" if days == 1 else "s")
            + " apart",
        )
        for a, b, key, x, y, days in rows.iter_rows()
    ]
    record = _rule_record("duplicate_deals", at, opts, pairs.height, share, expected=0.0)
    return [record | {"summary": summary, "drilldown": drilldown}]


# -- activity logging: the last window against the weeks before, by company, team, rep ----


def _weekly(counts: pl.DataFrame, key: str, weeks: int) -> pl.DataFrame:
    """Per ``key``: ``observed`` in the window (slot -1), mean and variance of the weeks."""
    per = counts.filter(pl.col(key).is_not_null()).group_by(key, "slot").agg(pl.col("n").sum())
    slots = pl.DataFrame({"slot": list(range(-1, weeks))}, schema={"slot": pl.Int64})
    week = pl.col("n").filter(pl.col("slot") >= 0)
    return (
        per.select(key)
        .unique()
        .join(slots, how="cross")
        .join(per, on=[key, "slot"], how="left")
        .group_by(key)
        .agg(
            pl.col("n").filter(pl.col("slot") < 0).sum().alias("observed"),
            week.fill_null(0).mean().alias("weekly"),
            week.fill_null(0).var().fill_null(0.0).alias("weekly_var"),
        )
        .sort(key)
    )


def _activity_drop(known: DealHistory, at: datetime, opts: _Options) -> list[Record]:
    window, weeks = opts.window_days, opts.baseline_weeks
    lag = days_between(pl.lit(at).cast(TS), pl.col("occurred_at"))
    slot = pl.when(lag < window).then(-1).otherwise(((lag - window) / 7).floor())
    reps = known.reps.unique("owner_id", keep="first")
    counts = (
        known.activities.with_columns(slot.cast(pl.Int64).alias("slot"), pl.lit("").alias("_all"))
        .filter(pl.col("slot") < weeks)
        .group_by("_all", "owner_id", "type", "slot")
        .agg(pl.len().alias("n"))
        .join(reps.select("owner_id", "team"), on="owner_id", how="left")
        .collect()
    )
    began = at - timedelta(days=window + 7 * weeks)
    started = (
        known.activities.group_by("owner_id")
        .agg(pl.col("occurred_at").min().alias("first"))
        .join(reps.select("owner_id", pl.col("hired_at").cast(TS)), on="owner_id", how="left")
        .select("owner_id", pl.coalesce("hired_at", "first").alias("started"))
        .collect()
    )
    in_weeks = window / 7
    tested = []
    for by, key, name in _LEVELS:
        groups = _weekly(counts, key, weeks).filter(pl.col("weekly") >= opts.min_weekly)
        if by == "owner_id":
            groups = groups.join(started, on=key).filter(pl.col("started") <= began)
        ratio = pl.col("weekly_var") / pl.col("weekly")
        spread = pl.max_horizontal(1.0, ratio, ratio.median()) * (1.0 + in_weeks / weeks)
        for segment, observed, weekly, phi in groups.select(
            key, "observed", "weekly", spread.alias("phi")
        ).rows():
            tested.append((by, key, segment, name, observed, _null_model(weekly * in_weeks, phi)))
    if not tested:
        return []
    q_values = false_discovery_control([null.cdf(observed) for *_, observed, null in tested])
    records = []
    for (by, key, segment, name, observed, null), q in zip(tested, q_values, strict=True):
        expected = float(null.mean())
        if q > opts.alpha or observed > (1.0 - opts.min_drop) * expected:
            continue
        summary = (
            f"{name.format(segment)} logged {observed} activities in the {window} days to "
            f"{at.date()}; about {expected:.0f} expected from the {weeks} weeks before "
            f"({observed / expected - 1:+.0%})"
        )
        records.append(
            _record(
                "activity_logging_drop",
                (at - timedelta(days=window)).date(),
                _score(q),
                by=by,
                segment=segment,
                period_end=at.date(),
                observed=float(observed),
                expected=expected,
                band_low=float(null.ppf(opts.alpha)),
                band_high=float(null.isf(opts.alpha)),
                direction="down",
                summary=summary,
                drilldown=_shortfall(counts.filter(pl.col(key) == segment), key, in_weeks, weeks),
            )
        )
    return records


def _shortfall(counts: pl.DataFrame, key: str, in_weeks: float, weeks: int) -> list[Record]:
    """The reps (for a rep, the activity types) behind a drop, by share of the shortfalls."""
    part = "type" if key == "owner_id" else "owner_id"
    parts = (
        _weekly(counts, part, weeks)
        .with_columns((pl.col("weekly") * in_weeks).alias("usual"))
        .with_columns((pl.col("usual") - pl.col("observed")).alias("short"))
        .filter(pl.col("short") > 0)
        .sort(["short", part], descending=[True, False])
    )
    total, rows = parts["short"].sum(), parts.head(_TOP).select(part, "observed", "usual", "short")
    return [
        _entry(what, short / total, f"{observed} logged; about {usual:.0f} expected")
        for what, observed, usual, short in rows.iter_rows()
    ]
