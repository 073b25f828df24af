"""From significant series-periods to anomalies: one per root cause, the rest as drill-down.

A region whose win rate collapses also drags down the company's win rate, each of its teams
and reps, every stage's advance rate in it, and its bookings. Reporting each is noise; the
rules below keep the finding that explains the others and attach them to it:

1. **Where** (same metric, period and direction): walk company -> region -> team -> rep (and
   company -> product). A flagged parent with a flagged child holding at least half of its
   deviation is that child's problem: the child is kept, the parent becomes context. Otherwise
   the parent is kept and its children are its drill-down (their share of the deviation).
   A product finding overlapping a kept region/team/rep finding with a larger deviation is the
   same event seen along another dimension, and joins it.
2. **What** (same segment, same month): several stages breaking at once is a win-rate
   problem (the win rate leads, the stages explain it); a single stage with the win rate is
   a stage problem. Bookings, deal amounts created and deal size are the end of the funnel:
   their break joins an upstream break (win rate, stage, slip, deals created) of the same
   segment tree in the same or the two previous months.
3. **When**: a weekly finding inside a kept month of the same family and segment joins it;
   consecutive periods of the same finding merge into one anomaly.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import polars as pl

__all__ = ["consolidate"]

_UPSTREAM = ("win_rate", "stage_conversion", "slip_rate", "pipeline_created")
_DOWNSTREAM_METRICS = ("bookings", "avg_deal_size", "pipeline_created_amount")


def _months_between(a: date, b: date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def consolidate(
    findings: pl.DataFrame, tests: pl.DataFrame, tree: dict[tuple[str, str], tuple[str, str]]
) -> list[dict[str, Any]]:
    """Group significant findings into anomalies.

    Parameters
    ----------
    findings : DataFrame
        :func:`models.anomalies.kpi.significant` rows (with ``direction``, ``q``, ``z``,
        ``null_scale``).
    tests : DataFrame
        Every judged series-period (for the drill-down of parents).
    tree : dict
        ``(by, segment) -> (parent by, parent segment)``; the company is ``("", "")``.

    Returns
    -------
    list of dict
        One per anomaly: the lead finding's fields plus ``period_end`` (the last merged
        period's end), ``score``, ``members`` (the findings it absorbed) and ``children`` (the
        drill-down rows: segment, share of deviation, observed, expected).
    """
    rows = [dict(r, members=[], children=[], context=[]) for r in findings.to_dicts()]
    for r in rows:
        r["score"] = abs(r["z"]) / r["null_scale"]
    kept = _where(rows, tests, tree)
    kept = _what(kept, tree, tests)
    return _when(kept)


def _key(r: dict) -> tuple:
    return (r["period"], r["metric"], r["period_start"], r["direction"])


def _ancestors(node: tuple[str, str], tree: dict) -> list[tuple[str, str]]:
    out = []
    while node in tree:
        node = tree[node]
        out.append(node)
    return out


def _where(rows: list[dict], tests: pl.DataFrame, tree: dict) -> list[dict]:
    groups: dict[tuple, dict[tuple[str, str], dict]] = defaultdict(dict)
    for r in rows:
        groups[_key(r)][(r["by"], r["segment"])] = r
    kids: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for child, parent in tree.items():
        kids[parent].append(child)
    kept: list[dict] = []
    for flagged in groups.values():
        dropped: set[tuple[str, str]] = set()

        def resolve(node: tuple[str, str], flagged: dict = flagged, dropped: set = dropped) -> None:
            r = flagged.get(node)
            if r is None or node in dropped:
                for child in kids.get(node, []):
                    resolve(child)
                return
            children = [flagged[c] for c in kids.get(node, []) if c in flagged]
            best = max(children, key=lambda c: _concentration(r, c), default=None)
            if best is not None and _concentration(r, best) >= 1.0:
                best["context"].append(r)
                dropped.add(node)
                for child in kids.get(node, []):
                    resolve(child)
                return
            for d in _descendants(node, kids):
                if d in flagged:
                    r["members"].append(flagged[d])
                    dropped.add(d)
            r["children"] = _children(r, tests, kids.get(node, []))
            kept.append(r)

        resolve(("", ""))
        for node, r in flagged.items():  # nodes outside the tree (unknown team, ...)
            if node not in dropped and r not in kept and node != ("", "") and node not in tree:
                kept.append(r)
    # Products cut across the geography: the bigger overlapping finding absorbs the other.
    out = []
    for r in kept:
        if r["by"] == "product":
            rivals = [
                o
                for o in kept
                if o["by"] in ("region", "team", "owner_id")
                and _key(o) == _key(r)
                and abs(o["deviation"]) >= abs(r["deviation"])
            ]
            if rivals:
                rivals[0]["members"].append(r)
                continue
        out.append(r)
    return out


def _mass(r: dict) -> float:
    """What the finding's metric adds up: items for a rate or mean, the value for a sum."""
    if r["kind"] == "rate":
        return float(r["k"])
    if r["kind"] == "mean":
        return float(r["observed"]) * float(r["n"])
    return float(r["observed"])


def _concentration(parent: dict, child: dict) -> float:
    """>= 1 when the child holds the parent's deviation and the rest of the parent is normal.

    The child holds at least half of the parent's deviation, and the rest of the parent
    (parent minus child) deviates, relatively, less than half as much as the child does.
    """
    if not parent["deviation"] or child["direction"] != parent["direction"]:
        return 0.0
    share = child["deviation"] / parent["deviation"]
    child_expected = _mass(child) - child["deviation"]
    rest_expected = (_mass(parent) - parent["deviation"]) - child_expected
    if child_expected <= 0 or rest_expected <= 0.01 * (child_expected + rest_expected):
        return 0.0  # the child is (nearly) all of the parent: a region's only team

    child_rel = abs(child["deviation"] / child_expected)
    rest_rel = (
        abs((parent["deviation"] - child["deviation"]) / rest_expected)
        if rest_expected > 0
        else 0.0
    )
    return min(share / 0.5, (0.5 * child_rel) / rest_rel if rest_rel > 0 else 2.0)


def _descendants(node: tuple[str, str], kids: dict) -> list[tuple[str, str]]:
    out, stack = [], list(kids.get(node, []))
    while stack:
        n = stack.pop()
        out.append(n)
        stack += kids.get(n, [])
    return out


def _children(r: dict, tests: pl.DataFrame, children: list[tuple[str, str]]) -> list[dict]:
    if not children or not r["deviation"]:
        return []
    by_values = {c[0] for c in children}
    rows = tests.filter(
        (pl.col("period") == r["period"])
        & (pl.col("metric") == r["metric"])
        & (pl.col("period_start") == r["period_start"])
        & pl.col("by").is_in(list(by_values))
    )
    wanted = set(children)
    out = []
    for c in rows.to_dicts():
        if (c["by"], c["segment"]) not in wanted:
            continue
        share = c["deviation"] / r["deviation"]
        out.append({**c, "share": share})
    out.sort(key=lambda c: -c["share"])
    return out[:6]


def _related(a: dict, b: dict, tree: dict) -> bool:
    """Same segment, or one inside the other."""
    na, nb = (a["by"], a["segment"]), (b["by"], b["segment"])
    return na == nb or na in _ancestors(nb, tree) or nb in _ancestors(na, tree)


def _win_rate_of(cell: dict, tests: pl.DataFrame) -> dict | None:
    """The win-rate test of a finding's segment and month, as a lead for its stage breaks."""
    rows = tests.filter(
        (pl.col("period") == cell["period"])
        & (pl.col("metric") == "win_rate")
        & (pl.col("by") == cell["by"])
        & (pl.col("segment") == cell["segment"])
        & (pl.col("period_start") == cell["period_start"])
    ).to_dicts()
    if not rows or (rows[0]["deviation"] < 0) != (cell["direction"] == "down"):
        return None
    lead = dict(rows[0], members=[], children=[], context=[], direction=cell["direction"])
    lead["score"] = cell["score"]  # the evidence is the stages'
    return lead


def _what(rows: list[dict], tree: dict, tests: pl.DataFrame) -> list[dict]:
    monthly = [r for r in rows if r["period"] == "month"]
    weekly = [r for r in rows if r["period"] == "week"]
    out: list[dict] = []
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in monthly:
        by_cell[(r["by"], r["segment"], r["period_start"])].append(r)
    for cell in by_cell.values():
        stages = [r for r in cell if r["family"] == "stage_conversion"]
        wins = [r for r in cell if r["metric"] == "win_rate"]
        rest = [r for r in cell if r not in stages and r not in wins]
        if len(stages) >= 2 and wins:
            lead = wins[0]
            lead["members"] += stages
            out.append(lead)
        elif len(stages) >= 2:  # several stages at once: the win rate is what broke
            top = max(stages, key=lambda r: r["score"])
            lead = _win_rate_of(top, tests) or top
            lead["members"] += [s for s in stages if s is not lead]
            out.append(lead)
        elif stages and wins:
            stages[0]["members"] += wins
            out.append(stages[0])
        else:
            out += stages + wins
        out += rest
    # Downstream metrics join an upstream break of the same segment tree (same or 2 months).
    final = []
    for r in out:
        if r["metric"] in _DOWNSTREAM_METRICS:
            upstream: dict | None = next(
                (
                    u
                    for u in out
                    if u["family"] in _UPSTREAM
                    and u is not r
                    and 0 <= _months_between(u["period_start"], r["period_start"]) <= 2
                    and _related(u, r, tree)
                ),
                None,
            )
            if upstream is not None:
                upstream["members"].append(r)
                continue
        final.append(r)
    # Weeks inside a kept month of the same family and segment join it.
    for w in weekly:
        month: dict | None = next(
            (
                m
                for m in final
                if m["period"] == "month"
                and m["family"] == w["family"]
                and _related(m, w, tree)
                and m["period_start"] <= w["period_start"] < m["period_end"]
            ),
            None,
        )
        if month is not None:
            month["members"].append(w)
        else:
            final.append(w)
    return final


def _when(rows: list[dict]) -> list[dict]:
    """Merge consecutive periods of the same lead into one anomaly."""
    rows = sorted(
        rows, key=lambda r: (r["period"], r["family"], r["by"], r["segment"], r["period_start"])
    )
    out: list[dict] = []
    for r in rows:
        prev = out[-1] if out else None
        if (
            prev is not None
            and (prev["period"], prev["family"], prev["by"], prev["segment"], prev["direction"])
            == (r["period"], r["family"], r["by"], r["segment"], r["direction"])
            and prev["period_end"] >= r["period_start"]
        ):
            prev["members"] += [r, *r["members"]]
            prev["period_end"] = r["period_end"]
            if r["score"] > prev["score"]:  # the worst period speaks for the anomaly
                for field in (
                    "observed",
                    "expected",
                    "band_low",
                    "band_high",
                    "deviation",
                    "k",
                    "n",
                    "q",
                    "effect",
                    "children",
                ):
                    prev[field] = r[field]
                prev["score"] = r["score"]
                prev["worst_start"] = r["period_start"]
            continue
        r.setdefault("worst_start", r["period_start"])
        out.append(r)
    # A rep's single quiet week is a holiday: a rep's weekly break must last two weeks.
    return [
        r
        for r in out
        if not (r["period"] == "week" and r["by"] == "owner_id")
        or (r["period_end"] - r["period_start"]).days > 7
    ]
