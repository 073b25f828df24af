"""Run the API server (``dealcast serve`` and the end of ``dealcast demo``).

The CLI is the one place in pipelines/ that reaches into serving/ (imported here, lazily from
the commands): the jobs themselves never depend on the API.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from pipelines.console import console

__all__ = ["run_server"]


def run_server(data: Path, *, host: str, port: int, dev_mode: bool = False) -> None:
    from serving.app import create_app
    from serving.settings import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(data=data, dev_mode=dev_mode)
    app = create_app(settings)
    console.print(
        f"dealcast API and dashboard on [bold]http://{host}:{port}/[/] "
        f"(OpenAPI at http://{host}:{port}/docs), results from {data / 'published'}"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
