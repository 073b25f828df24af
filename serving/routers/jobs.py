"""POST /v1/jobs/refresh (ops) and GET /v1/jobs/{id}: refresh the published results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status

from serving.deps import ERRORS, not_found, require_ops, require_staff
from serving.jobs import JobBusyError, JobRunner
from serving.schemas import JobPublic

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses={401: ERRORS[401], 403: ERRORS[403]},
)


async def _runner(request: Request) -> JobRunner:
    return request.app.state.jobs  # type: ignore[no-any-return]


@router.post(
    "/refresh",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Score, forecast, evaluate and publish (ops)",
    dependencies=[Depends(require_ops)],
    responses={409: {"description": "A refresh is already queued or running."}},
)
async def refresh(runner: Annotated[JobRunner, Depends(_runner)]) -> JobPublic:
    """Starts ``dealcast publish`` on the current store with the ``@champion`` models (no
    training). One at a time; the new results are served as soon as it publishes them."""
    try:
        job = runner.submit("refresh")
    except JobBusyError as busy:
        raise HTTPException(status.HTTP_409_CONFLICT, str(busy)) from None
    return JobPublic.model_validate(job.public())


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="A job's status",
    dependencies=[Depends(require_staff)],
    responses={404: {"description": "No such job (since the server started)."}},
)
async def get_job(
    runner: Annotated[JobRunner, Depends(_runner)],
    job_id: Annotated[str, Path(min_length=1, max_length=100)],
) -> JobPublic:
    job = runner.get(job_id)
    if job is None:
        not_found(f"no job {job_id!r} since the server started")
    return JobPublic.model_validate(job.public())
