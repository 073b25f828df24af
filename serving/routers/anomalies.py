"""GET /v1/anomalies: what the anomaly detectors published."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from serving import answers
from serving.deps import ERRORS, PrincipalDep, PublishedDep, authenticate
from serving.routers import json_response
from serving.schemas import AnomaliesPublic, AnomalyKind, Severity

router = APIRouter(
    prefix="/v1/anomalies",
    tags=["anomalies"],
    dependencies=[Depends(authenticate)],
    responses={**ERRORS, 422: {"description": "A query parameter is invalid."}},
)


@router.get("", response_model=AnomaliesPublic, summary="Anomalies, most severe first")
async def get_anomalies(
    pub: PublishedDep,
    principal: PrincipalDep,
    since: Annotated[date | None, Query(description="Periods starting on or after.")] = None,
    severity: Annotated[Severity | None, Query(description="At least this severe.")] = None,
    kind: Annotated[
        list[AnomalyKind] | None, Query(description="Only these detectors' anomalies.")
    ] = None,
) -> Response:
    """``detectors`` lists the detectors that ran; an empty list means none did (and then
    ``anomalies`` is empty too). A rep sees the anomalies about themselves."""
    owner = principal.owner_id if principal.is_rep else None
    kinds = tuple(sorted(set(kind))) if kind else None
    key = ("anomalies", since, severity, owner, kinds)
    return json_response(
        pub.memo(
            key,
            lambda: answers.anomalies(
                pub, since=since, severity=severity, owner=owner, kinds=kinds
            ),
        )
    )
