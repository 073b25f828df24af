"""GET /v1/pipeline/weighted: the open pipeline weighted by stage and by the model."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from serving import answers
from serving.deps import ERRORS, PrincipalDep, PublishedDep, authenticate, scope_by
from serving.routers import By, json_response
from serving.schemas import WeightedPipelinePublic

router = APIRouter(
    prefix="/v1/pipeline",
    tags=["pipeline"],
    dependencies=[Depends(authenticate)],
    responses={**ERRORS, 422: {"description": "A query parameter is invalid."}},
)


@router.get("/weighted", response_model=WeightedPipelinePublic, summary="Weighted pipeline")
async def get_weighted(
    pub: PublishedDep,
    principal: PrincipalDep,
    by: Annotated[By | None, Query(description="Split by this dimension.")] = None,
    close_month: Annotated[
        date | None, Query(description="Only this expected close month (any day in it).")
    ] = None,
) -> Response:
    """Open deals by expected close month: amount × CRM stage %, × historical stage win rate,
    and × dealcast's P(won), side by side."""
    scope, segment = scope_by(principal, by)
    key = ("weighted", scope, segment, close_month)
    return json_response(
        pub.memo(
            key,
            lambda: answers.weighted(pub, by=scope, segment=segment, close_month=close_month),
        )
    )
