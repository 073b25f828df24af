"""The dealcast API: builds the app and includes one router per resource.

``create_app(settings)`` is what ``dealcast serve`` runs under uvicorn and what the tests use.
The app only reads published results (``serving.results``): no request trains a model or
touches MLflow; the refresh job runs ``dealcast publish`` in a child process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from serving.auth import KeyRing
from serving.hardening import SecurityHeadersMiddleware
from serving.jobs import JobRunner
from serving.metrics import Metrics, MetricsMiddleware
from serving.results import ResultsHolder
from serving.routers import accuracy, anomalies, deals, forecasts, health, jobs, kpis, pipeline
from serving.settings import ServeSettings, get_settings

__all__ = ["create_app"]

log = logging.getLogger("dealcast.serving")
STATIC = Path(__file__).parent / "static"


def create_app(
    settings: ServeSettings | None = None, *, runner: JobRunner | None = None
) -> FastAPI:
    settings = settings or get_settings()
    holder = ResultsHolder(settings.data, interval=settings.reload_interval)
    keys = KeyRing(settings.keys_path, settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.dev_mode:
            log.warning(
                "DEV MODE: requests without an API key are let in as ops. Never use this on a "
                "shared or reachable server."
            )
        elif len(keys) == 0:
            log.warning(
                "no API keys in %s or DEALCAST_API_KEYS: every request will get 401; create "
                "one with `dealcast keys add --role leader`",
                settings.keys_path,
            )
        holder.start(also=keys.refresh)
        if holder.current is None:
            log.warning("nothing published in %s yet: /readyz is 503", settings.data)
        yield
        holder.stop()

    app = FastAPI(
        title="dealcast",
        version="0.1.0",
        summary="Sales forecasts, deal priorities, accuracy history and anomalies.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.results = holder
    app.state.keys = keys
    app.state.jobs = runner or JobRunner(settings.data)
    app.state.metrics = Metrics(holder)
    app.add_middleware(SecurityHeadersMiddleware)  # inner: sees HEAD turned into GET
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outer: counts HEAD
    for module in (health, forecasts, pipeline, deals, accuracy, anomalies, kpis, jobs):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
