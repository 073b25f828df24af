"""GET /v1/kpis: the KPI catalogue per week, month or quarter."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from serving import answers
from serving.deps import ERRORS, PrincipalDep, PublishedDep, authenticate, bad_parameter, scope_by
from serving.routers import By, json_response
from serving.schemas import KpiPeriod, KpisPublic

router = APIRouter(
    prefix="/v1/kpis",
    tags=["kpis"],
    dependencies=[Depends(authenticate)],
    responses={**ERRORS, 422: {"description": "A query parameter is invalid."}},
)


@router.get("", response_model=KpisPublic, summary="KPIs per period")
async def get_kpis(
    pub: PublishedDep,
    principal: PrincipalDep,
    period: Annotated[KpiPeriod, Query(description="week, month or quarter.")] = "month",
    by: Annotated[By | None, Query(description="Split by this dimension.")] = None,
    start: Annotated[date | None, Query(alias="from", description="Periods from.")] = None,
    end: Annotated[date | None, Query(alias="to", description="Periods starting up to.")] = None,
) -> Response:
    """Every KPI of the catalogue (win rate, bookings, pipeline created, cycle length, ...),
    as known at the publication's as-of; the period holding it is period-to-date."""
    if start is not None and end is not None and end < start:
        bad_parameter("to", f"to ({end}) is before from ({start})", str(end))
    scope, segment = scope_by(principal, by)
    key = ("kpis", period, scope, segment, start, end)
    return json_response(
        pub.memo(
            key,
            lambda: answers.kpis(
                pub, period=period, by=scope, segment=segment, start=start, end=end
            ),
        )
    )
