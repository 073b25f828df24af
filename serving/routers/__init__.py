"""One router per resource; ``serving.app`` includes them all."""

from __future__ import annotations

from typing import Literal

from fastapi import Response

from serving.publication import PUBLISHED_DIMENSIONS

__all__ = ["By", "json_response"]

By = Literal[PUBLISHED_DIMENSIONS]  # type: ignore[valid-type]
"""The dimensions the publication has answers for."""


def json_response(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")
