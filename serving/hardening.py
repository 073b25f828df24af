"""Response hardening: security headers on every response, and HEAD wherever GET is.

A pure ASGI middleware (like ``serving.metrics``): it adds

- ``Content-Security-Policy``: ``default-src 'self'`` and nothing inline, which the dashboard
  (its own ``/static/app.js`` and ``app.css``, no inline script or style) satisfies; the
  OpenAPI pages (``/docs``, ``/redoc``) load FastAPI's Swagger UI / ReDoc from its CDN with an
  inline bootstrap script, so they get a policy allowing exactly that;
- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``;

and answers ``HEAD`` as the ``GET`` of the same path without its body (FastAPI routes
declare GET only).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "DOCS_CSP", "SecurityHeadersMiddleware"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def _headers(path: str) -> list[tuple[bytes, bytes]]:
    csp = DOCS_CSP if path in _DOCS else CSP
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        inner = {**scope, "method": "GET"} if head else scope
        extra = _headers(scope.get("path", ""))

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, send_hardened)
        finally:
            if head and "route" in inner:  # the metrics label the HEAD by its route
                scope["route"] = inner["route"]
