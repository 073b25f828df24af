"""The hand-built company of the KPI tests (no tests here: the data and how to read it).

Pipeline: DEFAULT_PIPELINE — Qualification (order 1, CRM p .1), Discovery (2, .2), Demo (3, .4),
Proposal (4, .6), Negotiation (5, .8), Closed Won (6), Closed Lost (0).
Reps: o1 (team A, EU), o2 (team A, EU), o3 (team B, NA). Every time is 12:00 UTC.

deal owner region type  amount created     stage history (-> closes)             expected close
Y1   o1    EU     new      400 2024-12-01  Q, Prop 01-05, Won 2025-01-15          2025-01-31
Z1   o3    NA     new      500 2025-11-01  Q, Demo 11-20, Won 2025-12-10          2025-12-15
D1   o1    EU     new     1000 2026-01-05  Q, Disc 01-10, Demo 01-20, Prop 02-03, 02-15
                                           Won 02-14
D2   o2    EU     exp.    2000 2026-01-08  Q, Disc 01-15, Lost 01-29              01-31
D3   o3    NA     new     3000 2026-01-12  Q, Demo 02-02, Demo 02-20 (expected    02-28, pushed
                                           close pushed), Neg 03-02, Won 03-20    to 03-25
D4   o1    EU     exp.     500 2026-01-20  Q, Won 01-30                           01-31
D5   o2    EU     new     1500 2026-02-03  Q, Disc 02-10, Q 02-17 (moved back),   03-15, pushed
                                           Disc 03-03 (expected close pushed);    to 04-30
                                           open
D6   o3    NA     new     2500 2026-02-10  Q, Disc 02-20, Lost 03-10              03-31
D7   o1    EU     new      800 2026-02-15  Q (amount unknown), Q 03-01 (amount    04-15
                                           800 recorded), Demo 03-05; open
D8   o2    EU     exp.    1200 2026-03-02  Q, Prop 03-09, Won 03-25               03-31
D9   o3    NA     new      600 2026-03-10  Q, [Demo 04-05: after the cutoff]      05-31
D10  o3    NA     new      700 2026-01-25  Q; open                                02-20
D11  o1    EU     new      900 [2026-04-02: after the cutoff]                     06-30

(exp. = expansion)

Activities (deal): A1 01-06 o1 call (D1), A2 01-09 o2 email (D2), A3 01-21 o1 demo (D1),
A4 01-22 o3 call (D3), A5 01-28 o2 call (D2), A6 02-04 o1 proposal (D1), A7 02-05 o3 demo (D3),
A8 02-12 o2 demo (D5), A9 02-16 o3 email (no deal), A10 03-03 o3 proposal (D3),
A11 03-08 o3 demo (D6), A12 03-15 o2 proposal (D8), [A13 04-02 o1 call (D7), after the cutoff].

Targets (monthly): company 1000 / 2000 / 4000 (Jan / Feb / Mar 2026); owner o1 400 / 1000 / 500,
o2 500 / 500 / 1000, o3 300 / 300 / 3000; team A 900 / 1500 / 1500, team B 300 / 300 / 3000.

The tests use ``end=2026-03-31``: the cutoff is 2026-03-31 23:59:59.999999 UTC, so D11, A13 and
D9's move to Demo are not seen.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from features.contract import DealHistory

__all__ = ["END", "at", "company_frames", "company"]

END = date(2026, 3, 31)
Q, DISC, DEMO, PROP, NEG = "Qualification", "Discovery", "Demo", "Proposal", "Negotiation"
WON, LOST = "Closed Won", "Closed Lost"


def at(month: int, day: int, year: int = 2026, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def _deals() -> pl.DataFrame:
    rows = [
        # deal_id, owner, region, type, amount, created, stage, closed_at, ecd
        ("Y1", "o1", "EU", "new", 400.0, at(12, 1, 2024), WON, at(1, 15, 2025), date(2025, 1, 31)),
        (
            "Z1",
            "o3",
            "NA",
            "new",
            500.0,
            at(11, 1, 2025),
            WON,
            at(12, 10, 2025),
            date(2025, 12, 15),
        ),
        ("D1", "o1", "EU", "new", 1000.0, at(1, 5), WON, at(2, 14), date(2026, 2, 15)),
        ("D2", "o2", "EU", "expansion", 2000.0, at(1, 8), LOST, at(1, 29), date(2026, 1, 31)),
        ("D3", "o3", "NA", "new", 3000.0, at(1, 12), WON, at(3, 20), date(2026, 3, 25)),
        ("D4", "o1", "EU", "expansion", 500.0, at(1, 20), WON, at(1, 30), date(2026, 1, 31)),
        ("D5", "o2", "EU", "new", 1500.0, at(2, 3), DISC, None, date(2026, 4, 30)),
        ("D6", "o3", "NA", "new", 2500.0, at(2, 10), LOST, at(3, 10), date(2026, 3, 31)),
        ("D7", "o1", "EU", "new", 800.0, at(2, 15), DEMO, None, date(2026, 4, 15)),
        ("D8", "o2", "EU", "expansion", 1200.0, at(3, 2), WON, at(3, 25), date(2026, 3, 31)),
        ("D9", "o3", "NA", "new", 600.0, at(3, 10), DEMO, None, date(2026, 5, 31)),
        ("D10", "o3", "NA", "new", 700.0, at(1, 25), Q, None, date(2026, 2, 20)),
        ("D11", "o1", "EU", "new", 900.0, at(4, 2), Q, None, date(2026, 6, 30)),
    ]
    names = ["deal_id", "owner_id", "region", "deal_type", "amount", "created_at", "stage"]
    names += ["closed_at", "expected_close_date"]
    return pl.DataFrame(rows, schema=names, orient="row")


def _history() -> pl.DataFrame:
    rows = [
        # deal_id, changed_at, stage, amount, expected_close_date
        ("Y1", at(12, 1, 2024), Q, 400.0, date(2025, 1, 31)),
        ("Y1", at(1, 5, 2025), PROP, None, None),
        ("Y1", at(1, 15, 2025), WON, None, None),
        ("Z1", at(11, 1, 2025), Q, 500.0, date(2025, 12, 15)),
        ("Z1", at(11, 20, 2025), DEMO, None, None),
        ("Z1", at(12, 10, 2025), WON, None, None),
        ("D1", at(1, 5), Q, 1000.0, date(2026, 2, 15)),
        ("D1", at(1, 10), DISC, None, None),
        ("D1", at(1, 20), DEMO, None, None),
        ("D1", at(2, 3), PROP, None, None),
        ("D1", at(2, 14), WON, None, None),
        ("D2", at(1, 8), Q, 2000.0, date(2026, 1, 31)),
        ("D2", at(1, 15), DISC, None, None),
        ("D2", at(1, 29), LOST, None, None),
        ("D3", at(1, 12), Q, 3000.0, date(2026, 2, 28)),
        ("D3", at(2, 2), DEMO, None, None),
        ("D3", at(2, 20), DEMO, None, date(2026, 3, 25)),
        ("D3", at(3, 2), NEG, None, None),
        ("D3", at(3, 20), WON, None, None),
        ("D4", at(1, 20), Q, 500.0, date(2026, 1, 31)),
        ("D4", at(1, 30), WON, None, None),
        ("D5", at(2, 3), Q, 1500.0, date(2026, 3, 15)),
        ("D5", at(2, 10), DISC, None, None),
        ("D5", at(2, 17), Q, None, None),
        ("D5", at(3, 3), DISC, None, date(2026, 4, 30)),
        ("D6", at(2, 10), Q, 2500.0, date(2026, 3, 31)),
        ("D6", at(2, 20), DISC, None, None),
        ("D6", at(3, 10), LOST, None, None),
        ("D7", at(2, 15), Q, None, date(2026, 4, 15)),
        ("D7", at(3, 1), Q, 800.0, None),
        ("D7", at(3, 5), DEMO, None, None),
        ("D8", at(3, 2), Q, 1200.0, date(2026, 3, 31)),
        ("D8", at(3, 9), PROP, None, None),
        ("D8", at(3, 25), WON, None, None),
        ("D9", at(3, 10), Q, 600.0, date(2026, 5, 31)),
        ("D9", at(4, 5), DEMO, None, None),
        ("D10", at(1, 25), Q, 700.0, date(2026, 2, 20)),
        ("D11", at(4, 2), Q, 900.0, date(2026, 6, 30)),
    ]
    names = ["deal_id", "changed_at", "stage", "amount", "expected_close_date"]
    return pl.DataFrame(rows, schema=names, orient="row")


def _activities() -> pl.DataFrame:
    rows = [
        ("A1", at(1, 6), "o1", "call", "D1"),
        ("A2", at(1, 9), "o2", "email", "D2"),
        ("A3", at(1, 21), "o1", "demo", "D1"),
        ("A4", at(1, 22), "o3", "call", "D3"),
        ("A5", at(1, 28), "o2", "call", "D2"),
        ("A6", at(2, 4), "o1", "proposal", "D1"),
        ("A7", at(2, 5), "o3", "demo", "D3"),
        ("A8", at(2, 12), "o2", "demo", "D5"),
        ("A9", at(2, 16), "o3", "email", None),
        ("A10", at(3, 3), "o3", "proposal", "D3"),
        ("A11", at(3, 8), "o3", "demo", "D6"),
        ("A12", at(3, 15), "o2", "proposal", "D8"),
        ("A13", at(4, 2), "o1", "call", "D7"),
    ]
    names = ["activity_id", "occurred_at", "owner_id", "type", "deal_id"]
    return pl.DataFrame(rows, schema=names, orient="row")


def _targets() -> pl.DataFrame:
    monthly = {
        ("company", "all"): (1000.0, 2000.0, 4000.0),
        ("owner", "o1"): (400.0, 1000.0, 500.0),
        ("owner", "o2"): (500.0, 500.0, 1000.0),
        ("owner", "o3"): (300.0, 300.0, 3000.0),
        ("team", "A"): (900.0, 1500.0, 1500.0),
        ("team", "B"): (300.0, 300.0, 3000.0),
    }
    rows = [
        (f"2026-0{m + 1}", scope, scope_id, amounts[m])
        for (scope, scope_id), amounts in monthly.items()
        for m in range(3)
    ]
    return pl.DataFrame(rows, schema=["period", "scope_type", "scope_id", "amount"], orient="row")


def _reps() -> pl.DataFrame:
    return pl.DataFrame(
        {"owner_id": ["o1", "o2", "o3"], "team": ["A", "A", "B"], "region": ["EU", "EU", "NA"]}
    )


def company_frames() -> dict[str, pl.DataFrame]:
    """The tables of the hand-built company, as keyword arguments of ``from_frames``."""
    return {
        "deals": _deals(),
        "stage_history": _history(),
        "activities": _activities(),
        "reps": _reps(),
        "targets": _targets(),
    }


def company(**replace: pl.DataFrame | None) -> DealHistory:
    """The hand-built company; pass a table (or None to leave it out) to replace it."""
    frames: dict[str, pl.DataFrame | None] = {**company_frames(), **replace}
    return DealHistory.from_frames(**frames)  # type: ignore[arg-type]
