"""GET /v1/deals/priorities and /v1/deals/{deal_id}: what a rep should work first, and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from serving import answers
from serving.deps import ERRORS, PrincipalDep, PublishedDep, authenticate, forbidden, not_found
from serving.routers import json_response
from serving.schemas import DealPublic, PrioritiesPublic

router = APIRouter(
    prefix="/v1/deals",
    tags=["deals"],
    dependencies=[Depends(authenticate)],
    responses={**ERRORS, 422: {"description": "A query parameter is invalid."}},
)


@router.get("/priorities", response_model=PrioritiesPublic, summary="A rep's deals, ranked")
async def get_priorities(
    pub: PublishedDep,
    principal: PrincipalDep,
    owner: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="The rep (a rep's key: themselves)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many deals.")] = 20,
) -> Response:
    """Open deals ranked by priority (expected value landing this quarter, raised by risk
    flags), each with P(won), expected value, likely close month, P(slip), the top reasons and
    the risk flags. Without ``owner``: every rep's deals ranked together."""
    if principal.is_rep:
        if owner not in (None, principal.owner_id):
            forbidden("a rep sees their own deals only: leave out owner= or use your own id")
        owner = principal.owner_id
    key = ("priorities", owner, limit)
    return json_response(pub.memo(key, lambda: answers.priorities(pub, owner=owner, limit=limit)))


@router.get(
    "/{deal_id:path}",
    response_model=DealPublic,
    summary="One deal",
    responses={404: {"description": "No such open deal (or not yours)."}},
)
async def get_deal(
    pub: PublishedDep,
    principal: PrincipalDep,
    deal_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> Response:
    """The deal's score, reasons and risk flags with its stage history. A rep asking for
    another rep's deal gets the same 404 as for a deal that does not exist. Any deal id
    works, ``/`` included (the dashboard sends it percent-encoded)."""
    found = pub.memo(("deal", deal_id), lambda: answers.deal(pub, deal_id))
    if found is None or (principal.is_rep and found[0] != principal.owner_id):
        not_found(f"no open deal {deal_id!r} in the results published as of {pub.as_of:%Y-%m-%d}")
    return json_response(found[1])
