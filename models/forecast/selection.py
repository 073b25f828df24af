"""Which forecast to publish, per horizon, chosen on the company's own backtest, with intervals
from the company's own errors.

**Candidates** at horizon ``h``: every backtest method scored on every origin at ``h`` (the
deal-level ``dealcast`` Monte Carlo and each applicable baseline), and ``blend``: the mean of
the best three of them weighted by skill (``1 / WAPE²`` on the same origins).

**The choice** is the candidate with the lowest WAPE over the backtest's origins (ties go to
the earlier of :data:`ORDER`). So on those origins the published forecast's WAPE is never above
the best applicable baseline's, by construction. Choosing the smallest of several errors on a
handful of origins flatters the winner, so the choice itself is also replayed **nested**: at
each origin, the candidates are ranked on the origins *before* it only (the blend's weights
too) and the one chosen there is scored there (``nested_wape``, next to the best baseline's WAPE
on the same origins). That is the honest figure for what choosing by backtest buys; the train
output, MLflow and ``dealcast backtest`` show both.

**Intervals** are conformal-style on the chosen forecast's log errors at ``h``,
``e = log((actual + s) / (forecast + s))`` with ``s`` = 5% of the mean monthly actual (so an
empty month does not blow up): P10/P90 = ``(forecast + s)·exp(mean(e) ∓ t·sd(e)·√(1 + 1/n)) − s``
with ``t`` Student's 90% quantile on ``n − 1`` degrees of freedom, the prediction interval of a
new draw from ``n`` errors. A method wrong by 40% on every origin gets a wide band, one right
every month a narrow one, whatever its own Monte Carlo said. The backtest scores these
intervals leave-one-origin-out (each origin's band from the other origins' errors), so its
coverage is not in-sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from features.calendar import add_months
from models.metrics import P10, P90

__all__ = [
    "BLEND_SIZE",
    "DERIVED",
    "ORDER",
    "ForecastChoice",
    "HorizonChoice",
    "choose",
    "interval",
    "published_columns",
]

ORDER: tuple[str, ...] = (
    "dealcast",
    "blend",
    "stage_weighted_crm",
    "stage_weighted_hist",
    "prophet_only",
    "seasonal_naive",
    "run_rate",
)
"""Candidates in tie-break order: the deal-level forecast first (it also has the segments)."""

DERIVED: tuple[str, ...] = ("blend", "published", "published_nested")
"""Backtest columns this module adds: never a "baseline" in a league."""

BLEND_SIZE = 3
"""Candidates in the skill-weighted blend."""

MIN_INTERVAL_ORIGINS = 3
"""Origins of errors below which no conformal interval is made (the method's own is kept)."""

SCALE_SHARE = 0.05
"""``s`` of the log error, as a share of the mean monthly actual."""


def _wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    denominator = float(np.abs(actual).sum())
    return float(np.abs(actual - forecast).sum() / denominator) if denominator > 0 else math.inf


@dataclass(frozen=True)
class HorizonChoice:
    """The published forecast of one horizon: which method (or blend), how good, how wide.

    ``weights`` maps each method used to its weight (one method: weight 1). ``wape`` is on the
    ``n`` backtest origins, next to ``best_baseline``'s; ``nested_wape`` replays the choice
    made at each origin from the earlier ones only (``nested_origins`` of them, next to the
    best baseline's WAPE on the same origins, ``nested_baseline_wape``). ``log_bias`` and
    ``log_sd`` are the mean and standard deviation of the chosen forecast's log errors,
    ``scale`` their ``s``.
    """

    horizon: int
    method: str
    weights: dict[str, float]
    wape: float
    n: int
    best_baseline: str | None
    best_baseline_wape: float | None
    nested_wape: float | None
    nested_baseline_wape: float | None
    nested_origins: int
    log_bias: float
    log_sd: float
    scale: float

    @property
    def reason(self) -> str:
        """One line: what is published at this horizon and why."""
        used = (
            self.method
            if len(self.weights) == 1
            else "blend of " + ", ".join(f"{m} {w:.0%}" for m, w in self.weights.items())
        )
        text = f"h{self.horizon}: {used}, backtest WAPE {self.wape:.3f} on {self.n} origins"
        if self.best_baseline is not None and self.best_baseline_wape is not None:
            text += f" (best baseline {self.best_baseline} {self.best_baseline_wape:.3f})"
        if self.nested_wape is not None and self.nested_baseline_wape is not None:
            text += (
                f"; chosen origin by origin from earlier origins only: {self.nested_wape:.3f} vs "
                f"{self.nested_baseline_wape:.3f} over {self.nested_origins} origins"
            )
        return text

    def interval(self, point: float) -> tuple[float, float] | None:
        """P10/P90 around ``point`` from the backtest's errors (None with too few origins)."""
        return interval(point, self.log_bias, self.log_sd, self.n, self.scale)

    def prob_at_least(self, point: float, level: float) -> float | None:
        """P(bookings >= ``level``) under the same error distribution (None: no interval)."""
        if self.n < MIN_INTERVAL_ORIGINS or not math.isfinite(self.log_sd):
            return None
        spread = max(self.log_sd, 1e-9) * math.sqrt(1 + 1 / self.n)
        centre = math.log(max(point, 0.0) + self.scale) + self.log_bias
        z = (math.log(max(level, 0.0) + self.scale) - centre) / spread
        return float(stats.t.sf(z, df=self.n - 1))


def interval(
    point: float, bias: float, sd: float, n: int, scale: float
) -> tuple[float, float] | None:
    """P10/P90 around ``point`` from ``n`` log errors of mean ``bias`` and deviation ``sd``.

    The band always holds the point (a strongly biased method can put it outside) and never
    goes below 0. None when ``n`` is below :data:`MIN_INTERVAL_ORIGINS`.
    """
    if n < MIN_INTERVAL_ORIGINS or not (math.isfinite(sd) and math.isfinite(point)):
        return None
    half = float(stats.t.ppf(0.9, df=n - 1)) * sd * math.sqrt(1 + 1 / n)
    base = max(point, 0.0) + scale
    lo = base * math.exp(bias - half) - scale
    hi = base * math.exp(bias + half) - scale
    return max(0.0, min(lo, point)), max(hi, point)


@dataclass
class ForecastChoice:
    """The choice per horizon, the league it came from and the origins it was made on.

    ``league`` has one row per horizon and candidate: ``horizon, method, wape, n, chosen``.
    Serialises to JSON (:meth:`to_json`) for MLflow and the registry.
    """

    horizons: dict[int, HorizonChoice]
    league: pl.DataFrame
    origins: list[date] = field(default_factory=list)

    def get(self, horizon: int) -> HorizonChoice | None:
        """The choice of ``horizon``, or of the furthest horizon chosen when beyond them."""
        if horizon in self.horizons:
            return self.horizons[horizon]
        later = [h for h in self.horizons if h <= horizon]
        return self.horizons[max(later)] if later else None

    @property
    def reasons(self) -> list[str]:
        return [self.horizons[h].reason for h in sorted(self.horizons)]

    @property
    def methods(self) -> set[str]:
        """Every method some horizon's published forecast uses."""
        return {m for c in self.horizons.values() for m in c.weights}

    def to_json(self) -> dict[str, Any]:
        return {
            "horizons": [asdict(self.horizons[h]) for h in sorted(self.horizons)],
            "league": self.league.to_dicts(),
            "origins": [o.isoformat() for o in self.origins],
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> ForecastChoice:
        horizons = {int(h["horizon"]): HorizonChoice(**h) for h in payload.get("horizons", [])}
        league = pl.DataFrame(payload.get("league") or [], schema=_LEAGUE_SCHEMA)
        origins = [date.fromisoformat(o) for o in payload.get("origins", [])]
        return cls(horizons, league, origins)

    def combine(self, horizon: int, points: Mapping[str, float | None]) -> tuple[float, str]:
        """The published point of ``horizon`` from each method's point, and what it used.

        A method chosen but without a forecast now (e.g. seasonal naive with no year-ago month)
        is left out and the others' weights renormalised; with none left, ``dealcast``.
        """
        choice = self.get(horizon)
        known = {m: float(v) for m, v in points.items() if v is not None and math.isfinite(v)}
        weights = {
            m: w for m, w in (choice.weights if choice else {"dealcast": 1.0}).items() if m in known
        }
        if not weights:
            return known.get("dealcast", 0.0), "dealcast"
        total = sum(weights.values())
        value = float(sum(known[m] * w / total for m, w in weights.items()))
        label = (
            next(iter(weights))
            if len(weights) == 1
            else "blend(" + ", ".join(f"{m} {w / total:.0%}" for m, w in weights.items()) + ")"
        )
        return value, label


_LEAGUE_SCHEMA = {
    "horizon": pl.Int64(),
    "method": pl.String(),
    "wape": pl.Float64(),
    "n": pl.Int64(),
    "chosen": pl.Boolean(),
}


def _candidates(frame: pl.DataFrame, methods: Sequence[str]) -> list[str]:
    """Methods with a forecast on every row of ``frame`` (one segment, one horizon)."""
    return [
        m
        for m in methods
        if m in frame.columns and m not in DERIVED and frame[m].null_count() == 0 and frame.height
    ]


def _blend(
    actual: np.ndarray, columns: Mapping[str, np.ndarray], fit: np.ndarray
) -> dict[str, float]:
    """Skill weights (``1 / WAPE²`` on the rows ``fit``) of the best :data:`BLEND_SIZE`."""
    scores = {m: _wape(actual[fit], f[fit]) for m, f in columns.items()}
    best = sorted((m for m in scores if math.isfinite(scores[m])), key=lambda m: scores[m])
    best = best[:BLEND_SIZE]
    if len(best) < 2:
        return {}
    raw = {m: 1.0 / max(scores[m], 1e-6) ** 2 for m in best}
    total = sum(raw.values())
    return {m: raw[m] / total for m in best}


def _pick(
    actual: np.ndarray, columns: Mapping[str, np.ndarray], fit: np.ndarray
) -> tuple[str, dict[str, float], dict[str, float]]:
    """The winner on the rows ``fit``: (name, weights, every candidate's WAPE there)."""
    weights = _blend(actual, columns, fit)
    options = dict(columns)
    if weights:
        options["blend"] = sum(columns[m] * w for m, w in weights.items())  # type: ignore[assignment]
    scores = {m: _wape(actual[fit], f[fit]) for m, f in options.items()}
    order = {m: i for i, m in enumerate(ORDER)}
    name = min(scores, key=lambda m: (scores[m], order.get(m, len(ORDER))))
    return name, (weights if name == "blend" else {name: 1.0}), scores


def _log_errors(actual: np.ndarray, forecast: np.ndarray, scale: float) -> np.ndarray:
    return np.log((np.maximum(actual, 0.0) + scale) / (np.maximum(forecast, 0.0) + scale))


def _horizon_choice(
    horizon: int, rows: pl.DataFrame, methods: Sequence[str]
) -> tuple[HorizonChoice, dict[str, float], np.ndarray, np.ndarray] | None:
    """The choice at one horizon from its rows (one per origin), plus the published and
    nested columns; None when no candidate has a forecast on every row."""
    rows = rows.sort("origin")
    names = _candidates(rows, methods)
    if not names:
        return None
    actual = rows["actual"].cast(pl.Float64).to_numpy()
    columns = {m: rows[m].cast(pl.Float64).to_numpy() for m in names}
    everything = np.ones(actual.size, dtype=bool)
    name, weights, scores = _pick(actual, columns, everything)
    published = sum(columns[m] * w for m, w in weights.items())
    baselines = {m: s for m, s in scores.items() if m not in ("dealcast", "blend")}
    best = min(baselines, key=lambda m: baselines[m], default=None)
    # nested: at origin i choose on origins < i only, score at i
    nested = np.full(actual.size, np.nan)
    for i in range(1, actual.size):
        before = np.arange(actual.size) < i
        pick, pick_weights, _ = _pick(actual, columns, before)
        nested[i] = sum(columns[m][i] * w for m, w in pick_weights.items())
    scored = ~np.isnan(nested)
    nested_wape = _wape(actual[scored], nested[scored]) if scored.any() else None
    nested_base = (
        _wape(actual[scored], columns[best][scored]) if best is not None and scored.any() else None
    )
    scale = SCALE_SHARE * max(float(np.abs(actual).mean()), 1e-9)
    errors = _log_errors(actual, np.asarray(published), scale)
    choice = HorizonChoice(
        horizon=horizon,
        method=name,
        weights=weights,
        wape=scores[name],
        n=int(actual.size),
        best_baseline=best,
        best_baseline_wape=baselines[best] if best is not None else None,
        nested_wape=nested_wape if nested_wape is None or math.isfinite(nested_wape) else None,
        nested_baseline_wape=nested_base
        if nested_base is None or math.isfinite(nested_base)
        else None,
        nested_origins=int(scored.sum()),
        log_bias=float(errors.mean()),
        log_sd=float(errors.std(ddof=1)) if errors.size > 1 else math.nan,
        scale=scale,
    )
    return choice, scores, np.asarray(published, dtype=float), nested


def choose(frame: pl.DataFrame, methods: Sequence[str] | None = None) -> ForecastChoice:
    """Choose the published forecast per horizon from one segment's backtest frame.

    ``frame`` has ``origin, horizon, actual`` and a column per method (a backtest frame of one
    segment, e.g. ``segment == "total"``). ``methods`` defaults to every column of
    :data:`ORDER` present.
    """
    names = [m for m in (methods or ORDER) if m in frame.columns and m not in DERIVED]
    horizons: dict[int, HorizonChoice] = {}
    league = []
    for (h,), rows in frame.group_by("horizon", maintain_order=True):
        out = _horizon_choice(int(h), rows, names)  # type: ignore[call-overload]
        if out is None:
            continue
        choice, scores, _, _ = out
        horizons[choice.horizon] = choice
        league += [
            (choice.horizon, m, s if math.isfinite(s) else None, choice.n, m == choice.method)
            for m, s in scores.items()
        ]
    table = pl.DataFrame(league, schema=_LEAGUE_SCHEMA, orient="row").sort("horizon", "wape")
    origins = sorted(set(frame["origin"].to_list())) if frame.height else []
    return ForecastChoice(horizons, table, origins)


def published_columns(frame: pl.DataFrame, methods: Sequence[str]) -> pl.DataFrame:
    """Add ``blend``, ``published`` (+ leave-one-origin-out P10/P90) and ``published_nested``.

    Per segment and horizon: ``published`` is the choice made on all of that segment's origins
    (in-sample, as ``dealcast train`` makes it), ``published_nested`` the choice made at each
    origin from the earlier ones only (null at the first), ``blend`` the skill-weighted blend
    on all origins. The interval of ``published`` at an origin comes from the log errors at the
    *other* origins, so its coverage is out of sample.
    """
    parts = []
    for _, rows in frame.group_by("segment", "horizon", maintain_order=True):
        rows = rows.sort("origin")
        names = [m for m in methods if m not in DERIVED]
        out = _horizon_choice(int(rows["horizon"][0]), rows, names)
        if out is None:
            parts.append(rows)
            continue
        choice, _, published, nested = out
        actual = rows["actual"].cast(pl.Float64).to_numpy()
        errors = _log_errors(actual, published, choice.scale)
        lo, hi = np.full(actual.size, np.nan), np.full(actual.size, np.nan)
        for i in range(actual.size):
            others = np.delete(errors, i)
            band = (
                interval(
                    float(published[i]),
                    float(others.mean()),
                    float(others.std(ddof=1)),
                    others.size,
                    choice.scale,
                )
                if others.size >= 2
                else None
            )
            if band is not None:
                lo[i], hi[i] = band
        blend_weights = _blend(
            actual,
            {m: rows[m].cast(pl.Float64).to_numpy() for m in _candidates(rows, names)},
            np.ones(actual.size, dtype=bool),
        )
        blend = np.full(actual.size, np.nan)
        if blend_weights:
            blend = np.sum(
                [rows[m].cast(pl.Float64).to_numpy() * w for m, w in blend_weights.items()], axis=0
            )
        parts.append(
            rows.with_columns(
                pl.Series("blend", blend, dtype=pl.Float64).fill_nan(None),
                pl.Series("published", published, dtype=pl.Float64),
                pl.Series(f"published{P10}", lo, dtype=pl.Float64).fill_nan(None),
                pl.Series(f"published{P90}", hi, dtype=pl.Float64).fill_nan(None),
                pl.Series("published_nested", nested, dtype=pl.Float64).fill_nan(None),
            )
        )
    joined = pl.concat(parts, how="diagonal_relaxed")
    for c in ("blend", "published", f"published{P10}", f"published{P90}", "published_nested"):
        if c not in joined.columns:
            joined = joined.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
    return joined.sort("segment", "origin", "horizon")


# -- applying the choice to a forecast ----------------------------------------------------------

OUTSIDE_HIGH = 1.5
"""A month's P50 above this multiple of the best month ever booked is flagged."""
OUTSIDE_LOW = 0.5
"""A month's P50 below this multiple of the lowest of the last 12 booked months is flagged."""


def booked_range_flag(p50: float, booked: Sequence[float]) -> str | None:
    """Why ``p50`` is far outside what the company ever booked in a month (None: it is not).

    ``booked`` are complete past months' bookings, oldest first.
    """
    past = [float(b) for b in booked if b is not None and math.isfinite(float(b))]
    if not past:
        return None
    best, recent = max(past), past[-12:]
    if best > 0 and p50 > OUTSIDE_HIGH * best:
        return f"P50 is {p50 / best:.1f}× the best month ever booked ({best:,.0f})"
    low = min(recent)
    if low > 0 and p50 < OUTSIDE_LOW * low:
        return f"P50 is {p50 / low:.0%} of the lowest month of the last {len(recent)} ({low:,.0f})"
    return None


def _moved(row: dict[str, Any], p10: float, p50: float, p90: float) -> dict[str, Any]:
    """``row`` with a new P10/P50/P90; its two parts (open pipeline, not yet created) scaled
    by how much the not-yet-booked P50 moved, so ``mean = booked + parts`` still holds."""
    booked, old = float(row["booked_to_date"]), float(row["p50"])
    k = (p50 - booked) / (old - booked) if old - booked > 1e-9 else 1.0
    k = max(k, 0.0)
    pipeline, newbiz = float(row["pipeline_mean"]) * k, float(row["newbiz_mean"]) * k
    return row | {
        "p10": min(p10, p50),
        "p50": p50,
        "p90": max(p90, p50),
        "pipeline_mean": pipeline,
        "newbiz_mean": newbiz,
        "mean": booked + pipeline + newbiz,
    }


def _reach(row: Mapping[str, Any]) -> float | None:
    """P(bookings >= target) of a moved row, from a normal through its P10/P50/P90."""
    if row.get("target") is None:
        return None
    spread = (float(row["p90"]) - float(row["p10"])) / (2 * 1.2815515655446004)
    if spread <= 0:
        return float(float(row["p50"]) >= float(row["target"]))
    return float(stats.norm.sf((float(row["target"]) - float(row["p50"])) / spread))


def published_summary(
    summary: pl.DataFrame,
    choice: ForecastChoice | None,
    points: Mapping[str, Mapping[int, float | None]],
    *,
    elapsed: float = 0.0,
    booked_months: Sequence[float] = (),
) -> pl.DataFrame:
    """The forecast summary as published: each month's P50 from the chosen method or blend.

    ``summary`` is :meth:`models.forecast.revenue.RevenueForecast.summary` (the deal-level
    Monte Carlo; the company rows have ``by == ""``). ``points`` are the other methods'
    company-total forecasts per horizon, made at the as-of month's start; month 0's are
    scaled to the part of the month still to come (``1 − elapsed``) on top of what it has
    booked. Per company month: ``p50`` is :meth:`ForecastChoice.combine`'s point, P10/P90 come
    from :meth:`HorizonChoice.interval` (month 0's band narrowed by ``1 − elapsed``; without
    enough origins the Monte Carlo band, moved with the point), ``p_reach_target`` from the same
    error distribution. Segment rows are the Monte Carlo's scaled by the company's
    published / Monte Carlo P50 of the month, so segments still add up to the company. A
    quarter row moves by the sum of its months' moves. Adds ``method`` (what was published),
    ``deal_model_p50`` (the Monte Carlo's own P50) and ``flag``
    (:func:`booked_range_flag`) columns. The two parts (``pipeline_mean``, ``newbiz_mean``) are
    the Monte Carlo's split, scaled by how much the not-yet-booked P50 moved, so ``mean`` is
    still booked + parts. Without a choice the Monte Carlo is published as is.
    """
    out = summary.with_columns(
        pl.lit("dealcast").alias("method"),
        pl.col("p50").alias("deal_model_p50"),
        pl.lit(None, dtype=pl.String).alias("flag"),
    )
    months = out.filter((pl.col("by") == "") & (pl.col("period") == "month")).sort("horizon")
    moves: dict[int, tuple[float, float, float, float, float, str, float | None]] = {}
    for r in months.iter_rows(named=True):
        h, mc = int(r["horizon"]), float(r["p50"])
        if choice is None or not choice.horizons:
            moves[h] = (1.0, r["p10"], mc, r["p90"], r["mean"], "dealcast", r["p_reach_target"])
            continue
        pts: dict[str, float | None] = {"dealcast": mc}
        for method, by_h in points.items():
            value = by_h.get(h)
            if value is not None and h == 0:
                value = r["booked_to_date"] + max(0.0, 1.0 - elapsed) * float(value)
            pts[method] = value
        value, label = choice.combine(h, pts)
        ratio = value / mc if mc > 0 else 1.0
        made = choice.get(h)
        band = made.interval(value) if made is not None else None
        if band is None:
            lo, hi = r["p10"] * ratio, r["p90"] * ratio
            reach = r["p_reach_target"]
        else:
            lo, hi = band
            reach = (
                made.prob_at_least(value, r["target"])
                if made is not None and r["target"] is not None
                else None
            )
        if h == 0 and elapsed > 0:
            narrow = max(0.0, 1.0 - elapsed)
            lo = max(r["booked_to_date"], value - (value - lo) * narrow)
            hi = value + (hi - value) * narrow
        moves[h] = (ratio, lo, value, hi, r["mean"] * ratio, label, reach)

    def month_value(row: dict[str, Any]) -> dict[str, Any]:
        h = int(row["horizon"])
        if h not in moves:
            return row
        ratio, lo, p50, hi, _, label, reach = moves[h]
        if row["by"] == "":
            row = _moved(row, lo, p50, hi)
            row["p_reach_target"] = reach
            row["flag"] = booked_range_flag(p50, booked_months)
        elif ratio != 1.0:
            row = _moved(row, row["p10"] * ratio, row["p50"] * ratio, row["p90"] * ratio)
            row["p_reach_target"] = _reach(row)
        row["method"] = label
        return row

    moved_keys = ("p10", "p50", "p90", "mean", "pipeline_mean", "newbiz_mean")
    # every month row once, old and new, by unit: the quarters read them from here
    months_of: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for row in out.filter(pl.col("period") == "month").iter_rows(named=True):
        months_of.setdefault((row["by"], row["segment"]), []).append((row, month_value(dict(row))))
    rows = []
    for row in out.iter_rows(named=True):
        unit = months_of.get((row["by"], row["segment"]), [])
        if row["period"] == "month":
            rows.append(next(new for old, new in unit if old["horizon"] == row["horizon"]))
            continue
        # a quarter: shift by the moves of its months (month rows of the same unit)
        end = add_months(row["target_month"], 3)
        shifted = dict(row)
        labels = set()
        for old, new in unit:
            if not row["target_month"] <= old["target_month"] < end:
                continue
            labels.add(new["method"])
            for k in moved_keys:
                shifted[k] += new[k] - old[k]
        shifted["method"] = labels.pop() if len(labels) == 1 else "per month"
        shifted["p10"] = min(shifted["p10"], shifted["p50"])
        shifted["p90"] = max(shifted["p90"], shifted["p50"])
        if shifted["p50"] != row["p50"]:
            shifted["p_reach_target"] = _reach(shifted)
        rows.append(shifted)
    frame = pl.DataFrame(rows, schema=out.schema)
    return frame.with_columns((pl.col("target") - pl.col("p50")).alias("gap"))
