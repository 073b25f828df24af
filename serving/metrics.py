"""Prometheus metrics: request counts and latencies per route, and the published results' age.

A pure ASGI middleware (no per-request task or body buffering) labels each request with its
route template (``/v1/deals/{deal_id}``, not the raw path, so ids do not explode the series)
and its method, when it is a standard one (anything else is ``other``): every label is from
a fixed set, whatever clients send.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.results import ResultsHolder

__all__ = ["Metrics", "MetricsMiddleware"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods counted by name; any other (made up by a client) is counted as "other"."""

UNMATCHED = "(unmatched)"
"""The route label of a request no route matched (never the raw path: that is unbounded)."""

_CONVERTER = re.compile(r"\{(\w+):\w+\}")
"""A path parameter's converter (``{deal_id:path}``): left out of the label."""

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _PublishedCollector(Collector):
    def __init__(self, holder: ResultsHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        current = self.holder.current
        age = GaugeMetricFamily(
            "dealcast_published_age_seconds",
            "Seconds since the served results were published (absent: nothing published).",
        )
        as_of = GaugeMetricFamily(
            "dealcast_published_as_of_timestamp_seconds",
            "The as-of instant of the served results (Unix time).",
        )
        if current is not None:
            age.add_metric([], time.time() - current.published_at.timestamp())
            as_of.add_metric([], current.as_of.timestamp())
        yield age
        yield as_of


class Metrics:
    def __init__(self, holder: ResultsHolder) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dealcast_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dealcast_http_request_duration_seconds",
            "Time to answer, by method and route.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PublishedCollector(holder))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None)
            label = _CONVERTER.sub(r"{\1}", path) if isinstance(path, str) and path else UNMATCHED
            method = str(scope.get("method", "")).upper()
            method = method if method in METHODS else "other"
            self.metrics.observe(method, label, status, time.perf_counter() - started)
