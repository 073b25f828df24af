"""The simulated company's catalogue: regions, products, segments, the funnel's parameters.

Every number that shapes the company lives here, named, so the modules that draw from them
read as the process they model. Index order of each tuple is the code used in the arrays.
"""

from __future__ import annotations

import numpy as np

from features.contract import ACTIVITY_TYPES

__all__: list[str] = []  # internal to pipelines.simulate

DAY = 86_400
"""Seconds per day: simulator times are int64 seconds since the start of the history."""

# -- organisation ---------------------------------------------------------------------------
REGIONS: tuple[str, ...] = ("NA", "EMEA", "APAC", "LATAM")
REGION_SHARE = np.array([0.40, 0.30, 0.20, 0.10])
OFFICE_START_UTC_H = np.array([14, 8, 1, 12])  # a region's working day starts (UTC hour)
OFFICE_HOURS = 9

DEFAULT_REPS = 30
TEAM_SIZE = 6.5
DEALS_PER_REP_MONTH = 9.0  # a ramped rep at the start of the history
REP_LOAD_FOR_SCALING = 10.0  # deals per rep-month used to size the org for a given n_deals
HIRED_DURING_SHARE = 0.2
RAMP_DAYS = 180.0
RAMP_CREATION_FLOOR = 0.3  # a brand-new hire creates 30% of a ramped rep's deals
RAMP_WIN_LOGIT = -1.0  # and wins less: this logit at day 0, fading to 0 at RAMP_DAYS
SKILL_SD = 0.35
VOLUME_SD = 0.2

HABITS: tuple[str, ...] = ("neutral", "optimistic", "sandbag")
HABIT_SHARE = np.array([0.60, 0.25, 0.15])
HABIT_ESTIMATE = np.array([1.0, 0.6, 1.5])  # × the typical cycle when setting a close date
HABIT_PUSH = np.array([1.0, 0.55, 1.8])  # × the typical push length

# -- demand -----------------------------------------------------------------------------------
GROWTH_PER_YEAR = 0.15
MONTH_SEASONALITY = np.array(
    [0.95, 1.00, 1.10, 1.05, 1.05, 1.00, 0.90, 0.80, 1.05, 1.10, 1.05, 0.85]
)  # deal creation by calendar month, January first

SEGMENTS: tuple[str, ...] = ("SMB", "Mid-Market", "Enterprise")
SEGMENT_SHARE = np.array([0.45, 0.35, 0.20])
SEGMENT_AMOUNT = np.array([0.6, 1.0, 2.2])
SEGMENT_CYCLE = np.array([0.8, 1.0, 1.35])

PRODUCTS: tuple[str, ...] = ("Add-on", "Core", "Analytics", "Enterprise Suite")
PRODUCT_AMOUNT = np.array([8_000.0, 25_000.0, 50_000.0, 150_000.0])
PRODUCT_CYCLE_DAYS = np.array([30.0, 60.0, 90.0, 150.0])
PRODUCT_SHARE_BY_SEGMENT = np.array(
    [
        [0.45, 0.40, 0.13, 0.02],  # SMB
        [0.25, 0.40, 0.25, 0.10],  # Mid-Market
        [0.10, 0.30, 0.30, 0.30],  # Enterprise
    ]
)
AMOUNT_LOG_SD = 0.45

SOURCES: tuple[str, ...] = ("inbound", "outbound", "partner", "event")
SOURCE_SHARE = np.array([0.35, 0.35, 0.15, 0.15])
SOURCE_INTENT = np.array([0.25, -0.25, 0.30, 0.0])  # shift of the buyer's latent intent

DEAL_TYPES: tuple[str, ...] = ("new", "expansion", "renewal")
DEAL_TYPE_SHARE = np.array([0.70, 0.20, 0.10])
DEAL_TYPE_LOGIT = np.array([0.0, 0.35, 0.7])  # added at every stage exit

ACCOUNTS_PER_DEAL = 0.35  # a rep's book holds this many accounts per deal it creates

# -- funnel -----------------------------------------------------------------------------------
# The open stages of features.contract.DEFAULT_PIPELINE, in order, then Closed Won/Lost.
STAGE_MEAN_DAYS = np.array([8.0, 18.0, 12.0, 22.0, 16.0])  # shares of a product's cycle
STAGE_SHAPE = 3.0  # gamma shape of stage durations
REFERENCE_CYCLE_DAYS = float(STAGE_MEAN_DAYS.sum())  # a product's cycle days divide this
CYCLE_STRETCH = 1.4  # keen buyers are fast: stretched so won deals take about the cycle
INTENT_SPEED = 0.5  # durations × exp(-INTENT_SPEED · intent)
MIN_STAGE_DAYS = 1.0 / 24.0
STAGE_ADVANCE = np.array([0.62, 0.68, 0.66, 0.72, 0.80])  # P(advance) at intent 0, skill 0
STAGE_BASE_LOGIT = np.log(STAGE_ADVANCE / (1.0 - STAGE_ADVANCE))
STAGE_INTENT = np.array([0.4, 0.6, 0.9, 1.1, 1.2])  # logit per unit of intent

QUARTER_PULL = 0.15  # share of final decisions in a quarter's months 1-2 moved to its end
QUARTER_PULL_DAYS = 14  # ... into its last two weeks

COOLING_DAYS = 14.0  # a buyer's mood shows this long before a stage exit (at most)
COOLING_SHARE = 0.4  # ... and at most this share of the stage's duration
COOLING_IF_LOST = 0.6  # share of buyers who cool down before a "no" at that exit
COOLING_IF_PASSED = 0.15  # ... and before a "yes"

LOST_REASONS: tuple[str, ...] = (
    "no budget",
    "no decision",
    "competitor",
    "timing",
    "price",
    "not a fit",
)
LOST_REASON_BY_STAGE = np.array(
    [
        [0.30, 0.20, 0.05, 0.10, 0.00, 0.35],  # Qualification
        [0.25, 0.25, 0.10, 0.15, 0.05, 0.20],  # Discovery
        [0.10, 0.25, 0.30, 0.10, 0.05, 0.20],  # Demo
        [0.15, 0.20, 0.25, 0.10, 0.30, 0.00],  # Proposal
        [0.05, 0.25, 0.25, 0.15, 0.30, 0.00],  # Negotiation
    ]
)

# -- what the CRM records -------------------------------------------------------------------
ESTIMATE_LOG_SD = 0.25  # noise of a rep's close-date estimate
REESTIMATE_AT_STAGE_CHANGE = 0.35
PERCEPTION_SD = 0.8  # a rep reads the buyer's intent with this much noise ...
PERCEPTION_LIFT = 0.8  # ... and calls a deal one level up (down) above (below) ± this
PUSH_LAG_DAYS = 7.0  # a passed close date is pushed within this many days
PUSH_MEAN_DAYS = 20.0  # typical push length (× the rep's HABIT_PUSH), gamma shape 2
MIN_PUSH_DAYS = 3
REGRESSION_STAGES = (2, 3, 4)  # Demo, Proposal, Negotiation can fall back one stage
REGRESSION_LOGIT = -2.2  # P(regression in a stage) = sigmoid(this - REGRESSION_INTENT · intent)
REGRESSION_INTENT = 1.0
AMOUNT_CHANGE_STAGES = (3, 4)  # Proposal and Negotiation renegotiate the amount
AMOUNT_CUT_LOGIT = -1.6  # P(cut) = sigmoid(this - AMOUNT_CUT_INTENT · intent)
AMOUNT_CUT_INTENT = 1.5
AMOUNT_CUT_RANGE = (0.65, 0.95)
AMOUNT_RAISE_P = 0.05
AMOUNT_RAISE_RANGE = (1.05, 1.30)

# -- activities -------------------------------------------------------------------------------
ACTIVITY_RATE = np.array([0.25, 0.32, 0.36, 0.36, 0.40])  # per day by stage at intent 0
ACTIVITY_INTENT = 1.0  # rate × exp(ACTIVITY_INTENT · intent)
ACTIVITY_CHATTINESS_SHAPE = 8.0  # gamma(shape, 1/shape) per deal: reps and buyers differ
ACTIVITY_LEVEL_CAP = 5.0  # the keenest buyers still get at most 5× the usual touches
ACTIVITY_COOLING = 0.1  # rate multiplier while the buyer is cooling down
KICKOFF_DAYS = 3.0  # a new deal gets a first flurry of touches over its first days ...
KICKOFF_RATE = 1.0  # ... at this extra rate per day (× the deal's level)
WEEKEND_KEEP = 0.2
PROSPECTING_PER_DAY = 0.8  # activities a rep logs per working day not linked to a deal
ACTIVITY_MIX_BY_STAGE = np.array(
    [  # call, email, meeting, demo, proposal, other
        [0.40, 0.45, 0.05, 0.00, 0.00, 0.10],
        [0.30, 0.35, 0.25, 0.02, 0.00, 0.08],
        [0.15, 0.30, 0.20, 0.30, 0.00, 0.05],
        [0.20, 0.35, 0.15, 0.05, 0.20, 0.05],
        [0.30, 0.35, 0.20, 0.00, 0.10, 0.05],
    ]
)
PROSPECTING_MIX = np.array([0.50, 0.45, 0.00, 0.00, 0.00, 0.05])
assert len(ACTIVITY_TYPES) == ACTIVITY_MIX_BY_STAGE.shape[1]

# -- targets ----------------------------------------------------------------------------------
TARGET_AMBITION = 1.1
TARGET_QUARTER_SHAPE = np.array([0.85, 0.85, 1.30])  # month 1, 2, 3 of a quarter
TARGET_LAG_MONTHS = 2  # bookings follow creation by about a cycle
TARGET_MONTHS_AHEAD = 6  # the plan covers the half year after the end of the history

# -- anomalies --------------------------------------------------------------------------------
ANOMALY_MIN_MONTHS = 17  # their windows (8 months) fit in the second half after a lead month
ANOMALY_WIN_LOGIT = -1.6
ANOMALY_SILENT_KEEP = 0.05
ANOMALY_SILENT_DAYS = 42
ANOMALY_CREATED_FACTOR = 0.4
ANOMALY_SLIP_SHARE = 0.4
ANOMALY_SLIP_DAYS = (30, 60)
ANOMALY_STAGE = 2  # Demo
ANOMALY_STAGE_LOGIT = -1.6


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent random stream per component, so one component's draws never shift
    another's (and tests can rebuild one part alone)."""
    key = int.from_bytes(stream.encode(), "little") % (2**63)
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def choose(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    """``size`` draws of an index with probabilities ``probs`` (int8)."""
    cum = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), len(probs) - 1).astype(
        np.int8
    )


def choose_rows(rng: np.random.Generator, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per element of ``rows`` from the distribution ``table[row]`` (int8)."""
    u = rng.random(rows.size)
    out = np.zeros(rows.size, dtype=np.int8)
    for r in range(table.shape[0]):
        at = np.nonzero(rows == r)[0]
        cum = np.cumsum(table[r] / table[r].sum())
        out[at] = np.minimum(np.searchsorted(cum, u[at], side="right"), table.shape[1] - 1)
    return out
