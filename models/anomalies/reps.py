"""Reps far from their peers: win rate, cycle, touches, pipeline created, activity volume.

Each rep is compared with the pooled value ``mu`` of the *other* reps of their peer group
(leave one out): their team, else their region when the team has fewer than ``min_peers``
other reps with enough volume, else the company. The tests are on the counts and know that
reps differ: a rep's true rate varies around ``mu`` with variance ``tau2 = c * scale(mu)``,
so a win count is beta-binomial, a weekly count negative binomial (exposure: active weeks)
and a mean over deals normal with variance ``v / n + tau2``. The dispersion ``c`` is one per
metric, a method-of-moments (DerSimonian-Laird) estimate from every other rep's deviation
from their own group's mean: five teammates cannot estimate a spread, the company can. Few
deals give a wide band, so no verdict; ``tau2`` keeps ordinary skill differences between
busy reps from being called anomalies. Cycles are compared on the log scale. All (rep,
metric) tests go through Benjamini-Hochberg; a rep is reported when the adjusted p-value is
below ``fdr`` and the value is at least ``min_effect`` away from the peers' (relative).
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
from scipy.stats import betabinom, binom, false_discovery_control, nbinom, norm, poisson

from features.calendar import instant
from features.contract import TS, DealHistory
from features.kpis.periods import days_between, known_at
from models.anomalies.detections import anomaly_frame, z_of_p

__all__ = ["REP_METRICS", "rep_outliers"]

REP_METRICS: dict[str, str] = {
    "win_rate": "binomial",
    "cycle_days": "mean",
    "touches_per_closed_deal": "mean",
    "pipeline_created": "poisson",
    "activity_volume": "poisson",
}
"""Metric -> the family of its test (``activity`` metrics need the ``activities`` table)."""

_SENTENCES = {
    "win_rate": "{owner_id} won {total:.0f} of {n:.0f} deals closed in the last {span} "
    "({observed:.0%}) against {expected:.0%} for {peers}",
    "cycle_days": "{owner_id}'s {n:.0f} deals won in the last {span} took {observed:.0f} days "
    "to close (geometric mean) against {expected:.0f} days for {peers}",
    "touches_per_closed_deal": "{owner_id}'s {n:.0f} deals closed in the last {span} had "
    "{observed:.1f} activities each against {expected:.1f} for {peers}",
    "pipeline_created": "{owner_id} created {total:.0f} deals in {weeks}the last {span} "
    "({observed:.1f} a week) against {expected:.1f} a week for {peers}",
    "activity_volume": "{owner_id} logged {total:.0f} activities in {weeks}the last {span} "
    "({observed:.1f} a week) against {expected:.1f} a week for {peers}",
}
_LEVELS = ("team", "region", "company")
_SUMS = ("_w", "_s", "_q", "_w2", "_ss", "_m")  # peer sums: n, total, total²/n, n², Σx², reps
_Z95 = float(norm.isf(0.025))
_ONE_US = timedelta(microseconds=1)
_SHOWN = 8  # peers listed in a drill-down
_TINY = 1e-6


def _reps(cut: DealHistory, start: datetime) -> pl.LazyFrame:
    """``owner_id, team, region, company, start_at, seen``: every rep known at the cutoff.

    ``start_at`` is ``hired_at`` (else the rep's first record); ``seen`` is true for a rep with
    a deal or an activity in the window (a rep without any may have left: no per-week verdict).
    """
    stamps = pl.concat(
        [
            cut.deals.select("owner_id", pl.col("created_at").alias("t")),
            cut.deals.select("owner_id", pl.col("closed_at").alias("t")),
            cut.activities.select("owner_id", pl.col("occurred_at").alias("t")),
        ]
    ).filter(pl.col("owner_id").is_not_null())
    seen = stamps.group_by("owner_id").agg(
        pl.col("t").min().alias("_first"), (pl.col("t").max() >= start).alias("seen")
    )
    table = cut.reps.unique("owner_id", keep="first").select(
        "owner_id", "team", "region", pl.col("hired_at").cast(TS).alias("_hired")
    )
    return (
        seen.join(table, on="owner_id", how="full", coalesce=True)
        .with_columns(
            pl.coalesce("_hired", "_first").alias("start_at"),
            pl.col("seen").fill_null(False),
            pl.lit("all").alias("company"),
        )
        .drop("_hired", "_first")
    )


def _rep_stats(cut: DealHistory, as_of: datetime, starts: dict[str, datetime]) -> pl.LazyFrame:
    """One row per (rep, metric): ``n`` units, ``total`` and ``total_sq`` of the unit values."""
    start = starts["win_rate"]
    kinds = cut.pipeline.frame().lazy().select("stage", "stage_kind")
    closed = (
        cut.deals.join(kinds, on="stage", how="left")
        .filter(
            pl.col("closed_at").is_not_null()
            & pl.col("stage_kind").is_in(["won", "lost"])
            & (pl.col("closed_at") >= start)
        )
        .with_columns((pl.col("stage_kind") == "won").cast(pl.Float64).alias("_won"))
    )
    touches = cut.activities.group_by("deal_id").agg(pl.len().cast(pl.Float64).alias("_touches"))
    log_days = days_between(pl.col("closed_at"), pl.col("created_at")).clip(1.0, None).log()

    def moments(metric: str, frame: pl.LazyFrame, x: pl.Expr) -> pl.LazyFrame:
        return frame.group_by("owner_id").agg(
            pl.lit(metric).alias("metric"),
            pl.len().cast(pl.Float64).alias("n"),
            x.sum().alias("total"),
            (x * x).sum().alias("total_sq"),
        )

    parts = [
        moments("win_rate", closed, pl.col("_won")),
        moments("cycle_days", closed.filter(pl.col("_won") == 1.0), log_days),
    ]
    per_week = {"pipeline_created": cut.deals.rename({"created_at": "t"})}
    if "activities" in cut.has:
        with_touches = closed.join(touches, on="deal_id", how="left")
        parts.append(
            moments("touches_per_closed_deal", with_touches, pl.col("_touches").fill_null(0.0))
        )
        per_week["activity_volume"] = cut.activities.rename({"occurred_at": "t"})
    reps = _reps(cut, start)
    for metric, rows in per_week.items():
        since = pl.lit(starts[metric]).cast(TS)
        counts = rows.filter(pl.col("t") >= since).group_by("owner_id").agg(pl.len().alias("k"))
        first = pl.max_horizontal(since, pl.col("start_at").fill_null(since))
        weeks = (days_between(pl.lit(as_of).cast(TS), first) / 7.0).clip(0.0, None)
        parts.append(
            reps.filter("seen")
            .join(counts, on="owner_id", how="left")
            .select(
                "owner_id",
                pl.lit(metric).alias("metric"),
                weeks.alias("n"),
                pl.col("k").fill_null(0).cast(pl.Float64).alias("total"),
            )
        )
    return (
        pl.concat(parts, how="diagonal_relaxed")
        .filter(pl.col("owner_id").is_not_null())
        .join(reps, on="owner_id", how="left")
    )


def _variances(
    mu: pl.Expr, w: pl.Expr, q: pl.Expr, ss: pl.Expr, m: pl.Expr
) -> tuple[pl.Expr, pl.Expr]:
    """The variance of one unit (a win, a week's count, a deal's value pooled within reps) and
    the between-rep variance per unit of dispersion (beta-binomial, gamma CV², additive)."""
    family = pl.col("metric").replace_strict(REP_METRICS)
    within = ((ss - q) / (w - m)).clip(0.0, None)  # clip: identical values give -1e-15
    binomial, poisson = family == "binomial", family == "poisson"
    unit = pl.when(binomial).then(mu * (1.0 - mu)).when(poisson).then(mu).otherwise(within)
    additive = pl.col("metric") == "cycle_days"  # log scale
    return unit, pl.when(binomial).then(mu * (1.0 - mu)).when(additive).then(1.0).otherwise(mu * mu)


def _tests(stats: pl.LazyFrame, minimum: dict[str, float], min_peers: int) -> pl.LazyFrame:
    """Each eligible rep with their peer group, its leave-one-out value and the dispersion.

    The dispersion ``c`` (between-rep variance = ``c * scale(mu)``) is one per metric, a
    moment estimate from every *other* rep's deviation from their own group's mean: a team of
    five cannot estimate a spread, the company can.
    """
    eligible = pl.col("n") >= pl.col("metric").replace_strict(minimum, return_dtype=pl.Float64)
    n, total = pl.col("n"), pl.col("total")
    unit = (n, total, total**2 / n, n**2, pl.col("total_sq").fill_null(0.0), pl.lit(1.0))
    frame = stats.with_columns(eligible.alias("eligible")).with_columns(
        pl.when("eligible").then(x).otherwise(0.0).alias(c)
        for c, x in zip(_SUMS, unit, strict=True)
    )
    frame = frame.with_columns(
        pl.when(pl.col(level).is_not_null())
        .then(pl.col(c).sum().over("metric", level) - pl.col(c))
        .otherwise(0.0)
        .alias(f"{c}{level}")
        for level in _LEVELS
        for c in _SUMS
    )
    ok = {level: pl.col(f"_m{level}") >= min_peers for level in _LEVELS}

    def chosen(value: Any) -> pl.Expr:
        return pl.coalesce(pl.when(ok[lv]).then(value(lv)) for lv in _LEVELS)

    frame = (
        frame.filter("eligible")
        .with_columns(
            chosen(lambda lv: pl.lit(lv)).alias("level"),
            chosen(lambda lv: pl.col(lv)).alias("group"),
            *(chosen(lambda lv, c=c: pl.col(f"{c}{lv}")).alias(f"p{c}") for c in _SUMS),
        )
        .filter(pl.col("level").is_not_null())
    )
    # The dispersion: each rep's deviation from the mean of their whole group (E[a] = c E[b]).
    gw, gs, gq, gw2, gss, gm = (pl.col(c).sum().over("metric", "level", "group") for c in _SUMS)
    g_mu = gs / gw
    g_unit, g_scale = _variances(g_mu, gw, gq, gss, gm)
    a = n * (total / n - g_mu) ** 2 - (1.0 - n / gw) * g_unit
    b = g_scale * n * (1.0 - 2.0 * n / gw + gw2 / (gw * gw))
    others_a, others_b = a.sum().over("metric") - a, b.sum().over("metric") - b
    dispersion = pl.when(others_b > 0).then(others_a / others_b).otherwise(0.0)
    dispersion = pl.when(dispersion > _TINY**2).then(dispersion).otherwise(0.0)
    # The test: the other reps' pooled value; a new rep's true rate varies by tau2 around it.
    w, s, q, w2, ss, m = (pl.col(f"p{c}") for c in _SUMS)
    mu = s / w
    unit_var, scale = _variances(mu, w, q, ss, m)
    tau2 = dispersion * scale
    return frame.with_columns(
        (total / n).alias("value"),
        mu.alias("peer"),
        unit_var.alias("unit_var"),
        (tau2 + unit_var / w + tau2 * w2 / (w * w)).alias("rate_var"),
    )


def _verdict(t: dict[str, Any]) -> tuple[float, float, float] | None:
    """Two-sided p-value and 95% band of the rep's value; None when the peers are degenerate.

    Win rate: beta-binomial; weekly counts: negative binomial (gamma-Poisson) with exposure
    ``n`` weeks; means: normal. The mixing distribution has the peers' mean and ``rate_var``.
    """
    family, n, k, mu, var = REP_METRICS[t["metric"]], t["n"], t["total"], t["peer"], t["rate_var"]
    if family == "mean":
        sd = math.sqrt(t["unit_var"] / n + var)
        if not sd > _TINY * (1.0 + abs(mu)):  # identical values: rounding, not spread
            return None
        low = mu - _Z95 * sd if t["metric"] == "cycle_days" else max(mu - _Z95 * sd, 0.0)
        return 2.0 * float(norm.sf(abs(t["value"] - mu) / sd)), low, mu + _Z95 * sd
    if family == "binomial":
        if not 0.0 < mu < 1.0:
            return None
        size = max(mu * (1.0 - mu) / var - 1.0, 0.5) if var > 0 else math.inf
        count: Any = (
            binom(int(n), mu) if size > 1e7 else betabinom(int(n), mu * size, (1 - mu) * size)
        )
    else:
        if not mu > 0.0:
            return None
        shape = mu * mu / var if var > 0 else math.inf
        mean = mu * n
        count = poisson(mean) if shape > 1e7 else nbinom(shape, shape / (shape + mean))
    p = min(1.0, 2.0 * min(float(count.cdf(k)), float(count.sf(k - 1))))
    return p, float(count.ppf(0.025)) / n, float(count.ppf(0.975)) / n


def _fmt(metric: str, x: float) -> str:
    if metric == "win_rate":
        return f"{x:.0%}"
    if metric == "cycle_days":
        return f"{x:.0f} days"
    return f"{x:.1f} a week" if REP_METRICS[metric] == "poisson" else f"{x:.1f}"


def _span(days: int) -> str:
    if days >= 56 and abs(days / 30.44 - round(days / 30.44)) < 0.1:
        return f"{round(days / 30.44)} months"
    return f"{days // 7} weeks" if days % 7 == 0 else f"{days} days"


def _summary(t: dict[str, Any], days: int) -> str:
    """One sentence with the rep's counts, value and the peers' value."""
    weeks = "" if t["n"] > days / 7.0 - 0.05 else f"{t['n']:.1f} active weeks of "
    return _SENTENCES[t["metric"]].format(**t, span=_span(days), weeks=weeks)


def _drilldown(t: dict[str, Any], tests: pl.DataFrame, back: Any) -> list[dict[str, Any]]:
    """The band the rep was expected in, then the peers' values (the busiest few, best first)."""
    same = (pl.col("metric") == t["metric"]) & (pl.col(t["level"]) == t["group"])
    others = tests.filter(same & (pl.col("owner_id") != t["owner_id"]))
    busiest = others.sort(["n", "owner_id"], descending=[True, False]).head(_SHOWN)
    peers = busiest.sort(["value", "owner_id"], descending=[True, False])
    band = " to ".join(_fmt(t["metric"], back(x)) for x in t["band"])
    rows = [{"what": "95% band at this volume", "share": None, "detail": band}]
    unit = "weeks" if REP_METRICS[t["metric"]] == "poisson" else "deals"
    for owner, value, n in peers.select("owner_id", "value", "n").iter_rows():
        detail = f"{_fmt(t['metric'], back(value))} ({n:.0f} {unit})"
        rows.append({"what": owner, "share": None, "detail": detail})
    return rows


def rep_outliers(
    history: DealHistory,
    as_of: datetime | date,
    *,
    window_days: int = 182,
    activity_window_days: int = 28,
    min_closed: int = 10,
    min_won: int = 5,
    min_weeks: float = 4.0,
    min_peers: int = 3,
    fdr: float = 0.05,
    min_effect: float = 0.25,
) -> pl.DataFrame:
    """Reps whose win rate, cycle, touches, pipeline created or activity volume stand out.

    Parameters
    ----------
    history : DealHistory
        Uses ``deals`` and, when supplied, ``reps`` (teams, regions, ``hired_at``; without it
        every rep is compared with the company) and ``activities`` (without it the two
        activity metrics are skipped). Only rows dated before ``as_of`` are read; ``reps`` is
        read as is (it has no history of team moves). A rep with no deal or activity in the
        window may have left and gets no weekly verdict.
    as_of : datetime or date
        The end of the windows (exclusive); a date means 00:00 UTC.
    window_days : int
        Deals closed (win rate, cycle, touches) or created (pipeline) in
        ``[as_of - window_days, as_of)``.
    activity_window_days : int
        The window of ``activity_volume``, shorter so that a recent stop shows.
    min_closed, min_won, min_weeks : int, int, float
        Least volume for a verdict (and to serve as a peer): closed deals for win rate and
        touches, won deals for cycle, active weeks in the window for the weekly rates. Active
        weeks run from ``hired_at`` (else the rep's first record) or the window start.
    min_peers : int
        Least number of other reps with enough volume in a peer group (team, then region,
        then company).
    fdr : float
        Benjamini-Hochberg false discovery rate over all (rep, metric) tests.
    min_effect : float
        Least relative difference from the peers' value (0.25: 25% above or below).

    Returns
    -------
    DataFrame
        :data:`models.anomalies.detections.ANOMALY_SCHEMA`: ``kind="rep"``, ``by="owner_id"``,
        ``segment`` the rep, ``metric`` one of :data:`REP_METRICS`; ``observed`` the rep's
        value, ``expected`` the peers' pooled value, ``band_low/high`` the 95% range of a rep
        with this volume among these peers; ``score`` from the BH-adjusted p-value;
        ``drilldown`` that band, then the values of (up to 8 of) the peers.

    Examples
    --------
    >>> rep_outliers(Store("/tmp/demo").load(), date(2026, 11, 1))  # doctest: +SKIP
    """
    checks = [
        ("window_days", window_days, window_days >= 7, "use at least 7 days"),
        ("activity_window_days", activity_window_days, activity_window_days >= 7, "use >= 7"),
        ("min_closed", min_closed, min_closed >= 1, "use at least 1"),
        ("min_won", min_won, min_won >= 2, "use at least 2 (a spread needs two deals)"),
        ("min_weeks", min_weeks, min_weeks > 0, "use a positive number of weeks"),
        ("min_peers", min_peers, min_peers >= 2, "use at least 2 (a spread needs two peers)"),
        ("fdr", fdr, 0.0 < fdr < 1.0, "use a rate such as 0.05"),
        ("min_effect", min_effect, min_effect >= 0.0, "use 0 to report any difference"),
    ]
    for name, value, good, fix in checks:
        if not good:
            raise ValueError(f"rep_outliers: {name}={value!r} is out of range: {fix}")
    end = instant(as_of)
    days = {m: activity_window_days if m == "activity_volume" else window_days for m in REP_METRICS}
    starts = {m: end - timedelta(days=d) for m, d in days.items()}
    least = {"win_rate": min_closed, "touches_per_closed_deal": min_closed, "cycle_days": min_won}
    minimum = {m: float(least.get(m, min_weeks)) for m in REP_METRICS}
    cut = known_at(history, end - _ONE_US)
    tests = _tests(_rep_stats(cut, end, starts), minimum, min_peers).collect()
    verdicts = [_verdict(t) for t in tests.iter_rows(named=True)]
    judged = tests.with_columns(
        pl.Series("verdict", verdicts, dtype=pl.List(pl.Float64), strict=False)
    ).filter(pl.col("verdict").is_not_null())
    if judged.is_empty():
        return anomaly_frame([])
    adjusted = false_discovery_control(judged["verdict"].list.get(0).to_numpy())
    records = []
    for t in judged.with_columns(pl.Series("p_adj", adjusted)).iter_rows(named=True):
        back = math.exp if t["metric"] == "cycle_days" else float  # cycles: log scale
        observed, expected = back(t["value"]), back(t["peer"])
        if t["p_adj"] >= fdr or abs(observed / max(expected, _TINY) - 1.0) < min_effect:
            continue
        place = "the company" if t["level"] == "company" else f"{t['level']} {t['group']}"
        t |= {"observed": observed, "expected": expected, "band": t["verdict"][1:]}
        t["peers"] = f"the {t['p_m']:.0f} other reps of {place}"
        records.append(
            {
                "kind": "rep",
                "metric": t["metric"],
                "by": "owner_id",
                "segment": t["owner_id"],
                "period_start": starts[t["metric"]].date(),
                "period_end": end.date(),
                "observed": observed,
                "expected": expected,
                "band_low": back(t["band"][0]),
                "band_high": back(t["band"][1]),
                "score": z_of_p(t["p_adj"]),
                "direction": "up" if observed > expected else "down",
                "summary": _summary(t, days[t["metric"]]),
                "drilldown": _drilldown(t, tests, back),
            }
        )
    return anomaly_frame(records)
