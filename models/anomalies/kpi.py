"""KPI anomalies: every watched series judged against its own history, false alarms controlled.

Three steps, all point in time (a period is judged only on the periods before it):

1. :func:`judge_series` runs :func:`models.anomalies.kpi_baselines.judge` (or Prophet's
   band, for long monthly series) on every complete period from ``since`` of every series of
   :func:`features.kpis.series.kpi_series`: month and week, company and each segment.
2. The p-values of all those tests go through Benjamini-Hochberg together: a detection run
   tests thousands of series-periods, and at ``fdr`` = 1% about one in a hundred *reported*
   anomalies is expected to be chance. A finding must also be material (``min_effect``).
3. :func:`models.anomalies.findings.consolidate` turns the findings into anomalies a person can act
   on: one per root cause, with the rest as its drill-down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy.stats import false_discovery_control

from features.contract import DealHistory
from features.kpis.series import kpi_series
from models.anomalies.detections import anomaly_frame
from models.anomalies.findings import consolidate
from models.anomalies.kpi_baselines import PROPHET_MIN_MONTHS, Judgement, ProphetBand, judge
from models.forecast.newbiz import quarter_end_flags

__all__ = [
    "HARMFUL",
    "TEST_SCHEMA",
    "DetectorConfig",
    "calibrate",
    "detect_kpi_anomalies",
    "judge_series",
    "segment_tree",
    "significant",
]


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's tuning, with the defaults the evaluation in bench/README.md used."""

    window: dict[str, int] = field(default_factory=lambda: {"month": 12, "week": 26})
    """Trailing periods the robust baseline learns from."""
    min_history: dict[str, int] = field(default_factory=lambda: {"month": 6, "week": 12})
    """Periods a series needs (from its first non-empty one) before it is judged."""
    min_n: float = 12
    """Fewest items (deals closed, stage exits, deals due) behind a rate to judge it."""
    min_count: float = 8
    """Smallest expected count (deals created, activities) to judge it."""
    fdr: float = 0.01
    """Benjamini-Hochberg false discovery rate over all the tests of a run."""
    min_effect: dict[str, float] = field(
        default_factory=lambda: {"rate": 0.2, "count": 0.4, "amount": 0.35, "mean": 0.3}
    )
    """Smallest relative deviation (|observed / expected - 1|) reported, per metric kind."""
    kinds: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"month": ("rate", "count", "amount", "mean"), "week": ("count",)}
    )
    """Metric kinds judged per period: weeks are for volume breaks (a rep going quiet shows in
    a week); a weekly rate or mean rests on too few deals to say more than the month does."""
    min_effect_week: float = 0.5
    """Smallest relative deviation reported for a week (a week is noisier than a month)."""
    harmful_only: bool = True
    """Report only breaks in the direction that costs revenue (:data:`HARMFUL`)."""
    prophet: bool = True
    """Use Prophet's interval for long monthly count and amount series."""
    prophet_by: tuple[str, ...] = ("", "region", "team", "product")


HARMFUL: dict[str, str] = {
    "win_rate": "down",
    "stage_conversion": "down",
    "slip_rate": "up",
    "pipeline_created": "down",
    "activity_volume": "down",
    "bookings": "down",
    "deal_size": "down",
    "cycle_length": "up",
}
"""Per metric family, the direction that pulls revenue down: what ops must catch early. A rep
whose activity doubles or a month that books twice the usual is good news, not an alarm."""

TEST_SCHEMA: dict[str, pl.DataType] = {
    "period": pl.String(),
    "by": pl.String(),
    "segment": pl.String(),
    "metric": pl.String(),
    "family": pl.String(),
    "kind": pl.String(),
    "period_start": pl.Date(),
    "period_end": pl.Date(),
    "observed": pl.Float64(),
    "k": pl.Float64(),
    "n": pl.Float64(),
    "expected": pl.Float64(),
    "band_low": pl.Float64(),
    "band_high": pl.Float64(),
    "p": pl.Float64(),
    "deviation": pl.Float64(),
    "method": pl.String(),
}


def _quarter_end_flags(period: str, starts: list[date]) -> np.ndarray:
    if period == "month":
        return quarter_end_flags(starts) > 0
    flags = []
    for s in starts:  # a week ending in the last 14 days of a quarter
        end = s.toordinal() + 6
        d = date.fromordinal(end)
        last = date(d.year + (d.month == 12), (d.month % 12) + 1, 1).toordinal() - 1
        flags.append(d.month % 3 == 0 and last - end < 14)
    return np.array(flags)


def judge_series(
    series: pl.DataFrame,
    *,
    config: DetectorConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Judge every period of every series against the periods before it.

    Parameters
    ----------
    series : DataFrame
        :func:`features.kpis.series.kpi_series` output.
    config : DetectorConfig
    progress : callable(done, total), optional

    Returns
    -------
    DataFrame
        :data:`TEST_SCHEMA`: one row per judged series-period (``p`` is the test's p-value,
        ``deviation`` the deviation mass, ``method`` counts / robust / prophet).
    """
    config = config or DetectorConfig()
    keys = ["period", "by", "segment", "metric"]
    groups = series.sort(*keys, "period_start").partition_by(keys, maintain_order=True)
    rows: list[dict] = []
    for done, g in enumerate(groups):
        rows += _judge_one(g, config)
        if progress is not None:
            progress(done + 1, len(groups))
    return (
        pl.DataFrame(rows, schema=TEST_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=TEST_SCHEMA)
    )


def _judge_one(g: pl.DataFrame, config: DetectorConfig) -> list[dict]:
    head = g.row(0, named=True)
    period, kind = head["period"], head["kind"]
    if period not in config.kinds or kind not in config.kinds[period]:
        return []
    starts: list[date] = g["period_start"].to_list()
    ends: list[date] = g["period_end"].to_list()
    value = g["value"].fill_null(0.0).to_numpy()
    k = g["k"].fill_null(0.0).to_numpy()
    n = g["n"].fill_null(0.0).to_numpy()
    qend = _quarter_end_flags(period, starts)
    alive = np.nonzero((n > 0) if kind in ("rate", "mean") else (value > 0))[0]
    if not len(alive):
        return []
    first = int(alive[0])
    window = config.window[period]
    use_prophet = (
        config.prophet
        and period == "month"
        and kind in ("count", "amount")
        and head["by"] in config.prophet_by
    )
    bands: dict[int, ProphetBand] = {}
    out = []
    for i in range(first + config.min_history[period], len(starts)):
        if kind in ("rate", "mean") and g["value"][i] is None:
            continue
        judgement: Judgement | None
        origin = i - (starts[i].month - 1) % 3 if period == "month" else i
        if use_prophet and origin - first >= PROPHET_MIN_MONTHS:
            if origin not in bands:
                bands[origin] = ProphetBand().fit(starts[first:origin], value[first:origin])
            judgement = bands[origin].judge([starts[i]], value[i : i + 1])[0]
        else:
            lo = max(first, i - window)
            judgement = judge(
                kind,
                value=float(value[i]),
                k=float(k[i]),
                n=float(n[i]),
                history_value=value[lo:i],
                history_k=k[lo:i],
                history_n=n[lo:i],
                history_qend=qend[lo:i],
                qend=bool(qend[i]),
                min_n=config.min_n,
                min_count=config.min_count,
            )
        if judgement is None:
            continue
        out.append(
            {
                "period": period,
                "by": head["by"],
                "segment": head["segment"],
                "metric": head["metric"],
                "family": head["family"],
                "kind": kind,
                "period_start": starts[i],
                "period_end": ends[i],
                "observed": float(value[i]),
                "k": float(k[i]),
                "n": float(n[i]),
                "expected": judgement.expected,
                "band_low": judgement.band_low,
                "band_high": judgement.band_high,
                "p": judgement.p,
                "deviation": judgement.deviation,
                "method": judgement.method,
            }
        )
    return out


def calibrate(tests: pl.DataFrame, *, min_prior: int = 20) -> pl.DataFrame:
    """Rescale each test by how its metric's tests have actually scattered before it.

    A model's band can be too narrow for a whole family of series (a rep's activity follows
    their pipeline, so it wanders more than counts would). Efron's *empirical null*: among
    many tests most are null, so the robust spread (1.4826 x MAD) of the signed deviates
    ``z`` of the same period type, segmentation and metric — over the periods *before* the
    judged one only, at least ``min_prior`` of them — is the spread a null deviate really has.
    ``z`` is divided by that spread when it is above 1 (never made more liberal) and ``p_adj``
    recomputed from it.
    """
    from scipy.stats import norm

    z = np.sign(tests["deviation"].to_numpy()) * norm.isf(
        np.clip(tests["p"].to_numpy(), 1e-300, 1) / 2
    )
    tests = tests.with_columns(pl.Series("z", z)).with_row_index("_row")
    scale = np.ones(tests.height)
    for _, g in tests.group_by("period", "by", "metric"):
        g = g.sort("period_start")
        starts = g["period_start"].to_numpy()
        zs = g["z"].to_numpy()
        rows = g["_row"].to_numpy()
        for start in np.unique(starts):
            prior = zs[starts < start]
            if len(prior) < min_prior:
                continue
            spread = 1.4826 * float(np.median(np.abs(prior - np.median(prior))))
            scale[rows[starts == start]] = max(spread, 1.0)
    adjusted = z / scale
    return tests.drop("_row").with_columns(
        pl.Series("null_scale", scale),
        pl.Series("p_adj", 2 * norm.sf(np.abs(adjusted))),
    )


def significant(
    tests: pl.DataFrame, *, since: date, config: DetectorConfig | None = None
) -> pl.DataFrame:
    """The calibrated tests from ``since`` that survive Benjamini-Hochberg and are material.

    Adds ``q`` (the BH-adjusted ``p_adj``) and ``effect`` (observed / expected - 1).
    """
    config = config or DetectorConfig()
    tests = calibrate(tests).filter(pl.col("period_start") >= since)
    if tests.is_empty():
        return tests.with_columns(
            pl.lit(None, pl.Float64).alias("q"), pl.lit(None, pl.Float64).alias("effect")
        )
    q = false_discovery_control(tests["p_adj"].to_numpy(), method="bh")
    floor = (
        pl.when(pl.col("period") == "week")
        .then(pl.lit(config.min_effect_week))
        .otherwise(pl.col("kind").replace_strict(config.min_effect, return_dtype=pl.Float64))
    )
    direction = pl.when(pl.col("deviation") < 0).then(pl.lit("down")).otherwise(pl.lit("up"))
    harmful = direction == pl.col("family").replace_strict(HARMFUL, default="both")
    effect = pl.when(pl.col("expected").abs() > 0).then(
        pl.col("observed") / pl.col("expected") - 1.0
    )
    return (
        tests.with_columns(pl.Series("q", q), effect.alias("effect"), direction.alias("direction"))
        .filter((pl.col("q") < config.fdr) & (pl.col("effect").abs() >= floor))
        .filter(harmful if config.harmful_only else pl.lit(True))
        .sort("q")
    )


def segment_tree(history: DealHistory) -> dict[tuple[str, str], tuple[str, str]]:
    """``(by, segment) -> parent``: rep -> team -> region -> company; product -> company.

    Without a reps table, reps hang off the company directly.
    """
    tree: dict[tuple[str, str], tuple[str, str]] = {}
    company = ("", "")
    reps = history.reps.collect() if "reps" in history.has else None
    if reps is not None and reps.height:
        for r in reps.iter_rows(named=True):
            team, region = r.get("team"), r.get("region")
            if region:
                tree[("region", region)] = company
            if team:
                tree[("team", team)] = ("region", region) if region else company
            parent = ("team", team) if team else ("region", region) if region else company
            tree[("owner_id", r["owner_id"])] = parent
    else:
        for owner in history.deals.select("owner_id").unique().collect()["owner_id"]:
            tree[("owner_id", owner)] = company
    products = history.deals.select("product").unique().collect()["product"].drop_nulls()
    for p in products:
        tree[("product", p)] = company
    for region in history.deals.select("region").unique().collect()["region"].drop_nulls():
        tree.setdefault(("region", region), company)
    return tree


def detect_kpi_anomalies(
    history: DealHistory,
    *,
    as_of: date,
    since: date,
    config: DetectorConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """KPI anomalies of the complete periods from ``since`` up to ``as_of``.

    Parameters
    ----------
    history : DealHistory
    as_of : date
        The detection date: the data is cut at the end of the day before, and only periods
        that closed by then are judged.
    since : date
        First period judged (earlier ones are the baselines' history).
    config : DetectorConfig
    progress : callable(done, total), optional

    Returns
    -------
    (DataFrame, dict)
        The anomalies (:data:`models.anomalies.detections.ANOMALY_SCHEMA`, kind ``kpi``) and counts:
        series-periods tested, significant findings, anomalies after consolidation.
    """
    config = config or DetectorConfig()
    cutoff = as_of - timedelta(days=1)
    series = kpi_series(history, end=cutoff)
    tests = judge_series(series, config=config, progress=progress)
    found = significant(tests, since=since, config=config)
    anomalies = consolidate(found, tests, segment_tree(history))
    counts = {
        "tests": int(tests.filter(pl.col("period_start") >= since).height),
        "findings": found.height,
        "anomalies": len(anomalies),
    }
    return anomaly_frame(_record(a) for a in anomalies), counts


def _label(by: str, segment: str) -> str:
    if not by:
        return "the company"
    name = {"owner_id": "rep", "region": "region", "team": "team", "product": "product"}
    return f"{name.get(by, by)} {segment}"


def _fmt(kind: str, metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if kind == "rate":
        return f"{value:.0%}"
    if metric in ("bookings", "avg_deal_size", "pipeline_created_amount"):
        return f"{value:,.0f}"
    if metric == "cycle_days":
        return f"{value:.0f} days"
    return f"{value:,.0f}"


def _period_text(a: dict) -> str:
    start, end = a["period_start"], a["period_end"]
    if a["period"] == "month":
        last = end - timedelta(days=1)
        if (start.year, start.month) == (last.year, last.month):
            return start.strftime("%B %Y")
        return f"{start.strftime('%B')}-{last.strftime('%B %Y')}"
    return f"the week{'s' if (end - start).days > 7 else ''} of {start.isoformat()}" + (
        f" to {(end - timedelta(days=7)).isoformat()}" if (end - start).days > 7 else ""
    )


def _record(a: dict) -> dict:
    metric, kind = a["metric"], a["kind"]
    what = metric.replace("__", " ").replace("_", " ")
    counts = ""
    if kind == "rate" and a.get("n"):
        counts = f" ({a['k']:.0f} of {a['n']:.0f})"
    summary = (
        f"{what.capitalize()} of {_label(a['by'], a['segment'])} "
        f"{'fell' if a['direction'] == 'down' else 'rose'} to "
        f"{_fmt(kind, metric, a['observed'])}{counts} in {_period_text(a)}, against "
        f"{_fmt(kind, metric, a['expected'])} expected (95% band "
        f"{_fmt(kind, metric, a['band_low'])}-{_fmt(kind, metric, a['band_high'])})."
    )
    drill: list[dict] = []
    for c in a["children"]:
        drill.append(
            {
                "what": _label(c["by"], c["segment"]),
                "share": round(float(c["share"]), 3),
                "detail": f"{_fmt(kind, metric, c['observed'])} vs "
                f"{_fmt(c['kind'], metric, c['expected'])} expected",
            }
        )
    for m in [*a["members"], *a["context"]]:
        if (m["metric"], m["by"], m["segment"]) == (metric, a["by"], a["segment"]):
            continue  # a merged period of this same anomaly
        drill.append(
            {
                "what": f"{m['metric']} of {_label(m['by'], m['segment'])}"
                + (f" ({m['period']} of {m['period_start']})" if m["period"] == "week" else ""),
                "share": None,
                "detail": f"{_fmt(m['kind'], m['metric'], m['observed'])} vs "
                f"{_fmt(m['kind'], m['metric'], m['expected'])} expected",
            }
        )
    unique: dict[str, dict] = {}
    for d in drill:
        unique.setdefault(d["what"], d)
    drill = list(unique.values())[:12]
    return {
        "kind": "kpi",
        "metric": metric,
        "by": a["by"],
        "segment": a["segment"],
        "period_start": a["period_start"],
        "period_end": a["period_end"],
        "observed": a["observed"],
        "expected": a["expected"],
        "band_low": a["band_low"],
        "band_high": a["band_high"],
        "score": a["score"],
        "direction": a["direction"],
        "summary": summary,
        "drilldown": drill,
    }
