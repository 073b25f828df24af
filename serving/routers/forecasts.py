"""GET /v1/forecasts: the monthly and quarter revenue forecast."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from serving import answers
from serving.deps import ERRORS, PrincipalDep, PublishedDep, authenticate, bad_parameter, scope_by
from serving.routers import By, json_response
from serving.schemas import ForecastsPublic

router = APIRouter(
    prefix="/v1/forecasts",
    tags=["forecasts"],
    dependencies=[Depends(authenticate)],
    responses={**ERRORS, 422: {"description": "A query parameter is invalid."}},
)


@router.get("", response_model=ForecastsPublic, summary="Monthly and quarter forecast")
async def get_forecasts(
    pub: PublishedDep,
    principal: PrincipalDep,
    months: Annotated[
        int | None, Query(ge=1, le=24, description="Months from this one (default: all).")
    ] = None,
    by: Annotated[By | None, Query(description="Split by this dimension.")] = None,
) -> Response:
    """P10/P50/P90 of each month and of the quarter, the open-pipeline and not-yet-created
    parts, target, gap and P(reaching it); with the actual bookings of past months. A rep gets
    their own numbers (``by=owner_id``, their segment)."""
    published = int(pub.manifest.get("months", 3))
    if months is not None and months > published:
        bad_parameter("months", f"at most {published} months are published", months)
    shown = months or published
    scope, segment = scope_by(principal, by)
    key = ("forecasts", shown, scope, segment)
    return json_response(
        pub.memo(key, lambda: answers.forecasts(pub, months=shown, by=scope, segment=segment))
    )
