"""The serving benchmark's baseline: a bare FastAPI app with one endpoint returning a constant.

    .venv/bin/python bench/bare_app.py PORT

It runs under uvicorn with the settings ``dealcast serve`` uses (``pipelines.serve``: log level
warning, no access log, one worker, uvicorn's default loop and HTTP implementation), so the
difference to the dealcast API is the API's own work: routing among its routes, the metrics
middleware, the key check, the publication lookup and the bigger bodies.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

app = FastAPI(title="bare")

_BODY = {"status": "ok", "service": "bare"}


@app.get("/bare")
async def bare() -> dict[str, str]:
    return _BODY


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
