"""GET /v1/accuracy: forecast against actual, month after month, next to the baseline."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from serving import answers
from serving.deps import ERRORS, PrincipalDep, PublishedDep, authenticate, bad_parameter, scope_by
from serving.routers import By, json_response
from serving.schemas import AccuracyPublic

router = APIRouter(
    prefix="/v1/accuracy",
    tags=["accuracy"],
    dependencies=[Depends(authenticate)],
    responses={**ERRORS, 422: {"description": "A query parameter is invalid."}},
)


@router.get("", response_model=AccuracyPublic, summary="Forecast accuracy history")
async def get_accuracy(
    pub: PublishedDep,
    principal: PrincipalDep,
    start: Annotated[
        date | None, Query(alias="from", description="First target month (any day in it).")
    ] = None,
    end: Annotated[date | None, Query(alias="to", description="Last target month.")] = None,
    by: Annotated[By | None, Query(description="Segments of this dimension.")] = None,
    horizon: Annotated[
        int | None, Query(ge=0, le=24, description="Only forecasts made this many months ahead.")
    ] = None,
) -> Response:
    """Every kept forecast whose period has closed, scored: accuracy, WAPE, bias and P10–P90
    coverage per month and overall, for dealcast and the stage-weighted pipeline."""
    if start is not None and end is not None and end < start:
        bad_parameter("to", f"to ({end}) is before from ({start})", str(end))
    scope, segment = scope_by(principal, by)
    key = ("accuracy", scope, segment, horizon, start, end)
    return json_response(
        pub.memo(
            key,
            lambda: answers.accuracy(
                pub, by=scope, segment=segment, horizon=horizon, start=start, end=end
            ),
        )
    )
