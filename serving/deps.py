"""The API's dependencies, as ``Annotated`` aliases: who is asking, and what is published."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import KeyRing, Principal
from serving.results import Published, ResultsHolder
from serving.settings import ServeSettings

__all__ = [
    "ERRORS",
    "PrincipalDep",
    "PublishedDep",
    "SettingsDep",
    "authenticate",
    "bad_parameter",
    "forbidden",
    "not_found",
    "require_ops",
    "require_staff",
    "scope_by",
]

_bearer = HTTPBearer(auto_error=False, description="An API key from `dealcast keys add`.")
_DEV = Principal("ops", None, "dev-mode")


def _settings(request: Request) -> ServeSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _keys(request: Request) -> KeyRing:
    return request.app.state.keys  # type: ignore[no-any-return]


def _holder(request: Request) -> ResultsHolder:
    return request.app.state.results  # type: ignore[no-any-return]


async def _settings_dep(request: Request) -> ServeSettings:
    # dependencies are async: FastAPI runs a sync one in a worker thread, which cost a third of
    # the throughput and most of the p99 under load (bench/README.md, Serving)
    return _settings(request)


SettingsDep = Annotated[ServeSettings, Depends(_settings_dep)]


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal of the bearer key: 401 when there is none or it is unknown."""
    if credentials is None:
        if _settings(request).dev_mode:
            return _DEV
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send `Authorization: Bearer <key>` (create one with "
            "`dealcast keys add --role ...`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = _keys(request).lookup(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def forbidden(detail: str) -> NoReturn:
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail)


def not_found(detail: str) -> NoReturn:
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail)


def bad_parameter(name: str, message: str, value: Any = None) -> NoReturn:
    """A 422 in FastAPI's own validation-error shape, naming the query parameter."""
    raise RequestValidationError(
        [{"loc": ("query", name), "msg": message, "type": "value_error", "input": value}]
    )


async def require_ops(principal: PrincipalDep) -> Principal:
    if principal.role != "ops":
        forbidden(f"this needs the ops role; your key is {principal.label}")
    return principal


async def require_staff(principal: PrincipalDep) -> Principal:
    if principal.is_rep:
        forbidden(f"this needs the leader or ops role; your key is {principal.label}")
    return principal


async def _published(request: Request) -> Published:
    current = _holder(request).current
    if current is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "nothing published yet: run `dealcast publish` (or POST /v1/jobs/refresh as ops)",
        )
    return current


PublishedDep = Annotated[Published, Depends(_published)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown one."},
    403: {"description": "The key's role does not allow this."},
    503: {"description": "Nothing has been published yet."},
}
"""Error responses every data route documents (bodies are ``{"detail": "..."}``)."""


def scope_by(principal: Principal, by: str | None) -> tuple[str | None, str | None]:
    """(by, segment) a principal may see: a rep sees their own owner segment only."""
    if not principal.is_rep:
        return by, None
    if by not in (None, "owner_id"):
        forbidden(
            f"a rep sees their own numbers only: leave out by= or use by=owner_id (asked by={by})"
        )
    return "owner_id", principal.owner_id
