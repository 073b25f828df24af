"""/healthz, /readyz, /metrics (no key needed: they reveal no data) and /v1/me."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ERRORS, PrincipalDep
from serving.results import ResultsHolder
from serving.schemas import HealthPublic, MePublic, ReadyPublic

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, summary="The process is up")
async def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyPublic,
    summary="Ready when published results are loaded",
    responses={503: {"model": ReadyPublic, "description": "Nothing published yet."}},
)
async def readyz(request: Request) -> Response:
    holder: ResultsHolder = request.app.state.results
    current = holder.current
    if current is None:
        body = ReadyPublic(
            ready=False,
            version=None,
            as_of=None,
            published_at=None,
            detail=holder.last_error or "nothing published yet: run `dealcast publish`",
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    body = ReadyPublic(
        ready=True,
        version=current.version,
        as_of=current.as_of,
        published_at=current.published_at,
        detail=holder.last_error or "serving the latest publication",
    )
    return JSONResponse(body.model_dump(mode="json"))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get(
    "/v1/me", response_model=MePublic, summary="Who this key is", responses={401: ERRORS[401]}
)
async def me(principal: PrincipalDep) -> MePublic:
    return MePublic(role=principal.label, owner_id=principal.owner_id)
