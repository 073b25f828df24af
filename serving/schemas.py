"""What the API returns, named for what it is. Every payload is built through these models."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

Period = Literal["month", "quarter"]
KpiPeriod = Literal["week", "month", "quarter"]
Severity = Literal["low", "medium", "high"]
AnomalyKind = Literal["kpi", "rep", "data_quality", "deal"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]


class Provenance(BaseModel):
    """Which publication answered: every data response carries it."""

    version: str = Field(description="The publication's version.")
    as_of: datetime = Field(description="The instant the published results are as of (UTC).")
    published_at: datetime


class ForecastPublic(BaseModel):
    """One segment × period of the revenue forecast."""

    by: str = Field(description='The dimension ("" for the company total).')
    segment: str = Field(description='The segment ("total" for the company).')
    period: Period
    target_month: date = Field(description="The month (or the quarter's first month).")
    horizon: int = Field(description="Months from the as-of month (0 = this month).")
    mean: float
    p10: float
    p50: float
    p90: float
    booked_to_date: float = Field(description="Already booked in the period at the as-of.")
    pipeline_mean: float = Field(description="Expected from deals open at the as-of.")
    newbiz_mean: float = Field(description="Expected from deals not yet created.")
    target: float | None
    gap: float | None = Field(description="target − P50")
    p_reach_target: float | None
    method: str = Field(
        default="dealcast",
        description="What the P50 is: the deal-level forecast (dealcast), a baseline, or a "
        "blend, as chosen per horizon by the company's own backtest (see `published`).",
    )
    deal_model_p50: float | None = Field(
        default=None, description="The deal-level Monte Carlo's own P50."
    )
    flag: str | None = Field(
        default=None, description="Set when the P50 is far outside anything ever booked."
    )


class ActualPublic(BaseModel):
    """Bookings of a complete past month, and its target when the targets table has it."""

    by: str
    segment: str
    month: date
    bookings: float
    target: float | None


class ForecastsPublic(Provenance):
    months: int
    by: str | None
    model_version: str
    published: list[str] = Field(
        default_factory=list,
        description="Per horizon: the method or blend published, its backtest WAPE next to "
        "the best baseline's, and the same choice replayed from earlier origins only.",
    )
    league: list[dict[str, object]] = Field(
        default_factory=list,
        description="The backtest league the choice was made on (horizon, method, wape, n).",
    )
    notes: list[str] = Field(
        default_factory=list, description="Sanity rules the forecast applied, in words."
    )
    forecasts: list[ForecastPublic]
    actuals: list[ActualPublic]


class WeightedRowPublic(BaseModel):
    by: str
    segment: str
    close_month: date | None = Field(description="null: deals without an expected close date.")
    deals: int
    amount: float
    stage_weighted_crm: float = Field(description="Amount × the CRM's stage probability.")
    stage_weighted_hist: float = Field(description="Amount × the stage's historical win rate.")
    model_weighted: float | None = Field(description="Amount × dealcast's P(won).")


class WeightedPipelinePublic(Provenance):
    by: str | None
    rows: list[WeightedRowPublic]


class ReasonPublic(BaseModel):
    text: str
    effect: float = Field(description="Probability points this reason adds (+) or removes (−).")


class RiskFlagPublic(BaseModel):
    flag: str
    evidence: str
    severity: float = Field(description="How far past the norm (1 = at the threshold).")


class DealScorePublic(BaseModel):
    deal_id: str
    owner_id: str
    team: str | None
    region: str | None
    product: str | None
    segment: str | None
    account_id: str | None
    stage: str
    amount: float | None
    expected_close_date: date | None
    forecast_category: str | None
    days_in_stage: float | None
    p_won: float = Field(description="Calibrated probability the deal is won (ever).")
    p_this_month: float = Field(description="P(won and closing this month).")
    p_slip: float = Field(description="P(not closing this month | won).")
    expected_value: float = Field(description="P(won) × the amount it would close at.")
    expected_this_period: float = Field(description="Expected value landing this quarter.")
    likely_close_month: date
    priority: float = Field(description="expected_this_period × (1 + 0.25 per risk flag, ≤ 4).")
    rank: int = Field(description="Rank among the owner's open deals (1 = work it first).")
    reasons: list[ReasonPublic]
    flags: list[RiskFlagPublic]


class PrioritiesPublic(Provenance):
    owner: str | None = Field(description="The rep; null: every rep's deals, ranked together.")
    total: int = Field(description="Open deals in scope (the list holds the first `limit`).")
    deals: list[DealScorePublic]


class StageChangePublic(BaseModel):
    changed_at: datetime
    stage: str
    amount: float | None
    expected_close_date: date | None


class DealPublic(Provenance):
    deal: DealScorePublic
    stage_history: list[StageChangePublic]


class AccuracySummaryPublic(BaseModel):
    period: Period
    horizon: int
    segment: str | None
    method: str = Field(description="dealcast, stage_weighted_crm or stage_weighted_hist.")
    wape: float | None
    bias: float | None
    coverage: float | None = Field(description="Share of actuals inside P10–P90 (dealcast).")
    accuracy: float | None
    n: int


class AccuracyMonthPublic(AccuracySummaryPublic):
    target_month: date


class AccuracyPublic(Provenance):
    by: str | None
    horizon: int | None
    summary: list[AccuracySummaryPublic]
    by_month: list[AccuracyMonthPublic]


class DrilldownPublic(BaseModel):
    what: str
    share: float | None
    detail: str


class AnomalyPublic(BaseModel):
    anomaly_id: str
    kind: AnomalyKind = Field(description="kpi, rep, data_quality or deal.")
    metric: str
    by: str
    segment: str
    period_start: date | None
    period_end: date | None = Field(
        default=None, description="First day after the anomaly's last period."
    )
    observed: float | None
    expected: float | None
    band_low: float | None
    band_high: float | None
    score: float
    severity: Severity
    direction: str
    summary: str
    drilldown: list[DrilldownPublic]


class AnomaliesPublic(Provenance):
    detectors: list[str] = Field(description="The detectors that ran; empty: none did.")
    anomalies: list[AnomalyPublic]


class KpisPublic(Provenance):
    period: KpiPeriod
    by: str | None
    columns: list[str] = Field(description="The KPI columns, as in the KPI catalogue.")
    rows: list[dict[str, float | int | str | None]]


class JobPublic(BaseModel):
    id: str
    kind: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    returncode: int | None
    publication: str | None = Field(description="The publication the job produced.")
    log_tail: str


class MePublic(BaseModel):
    role: str
    owner_id: str | None


class HealthPublic(BaseModel):
    status: str


class ReadyPublic(BaseModel):
    ready: bool
    version: str | None
    as_of: datetime | None
    published_at: datetime | None
    detail: str
