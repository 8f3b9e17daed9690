"""`GET /metrics`: the service's counters in the Prometheus text format, through prometheus-client.

Each app has a registry of its own (never the library's global one), so tests and benchmarks
build as many apps as they like without their counters meeting. With several server
processes, each counts what it served and a scrape reads the one that took the connection
(docs/serve.md says how to scrape such a server).
"""
from __future__ import annotations

import time
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match

# Keystrokes take milliseconds and generations seconds: the buckets span both.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OTHER = "other"  # the label of paths no route serves and of odd methods: a scanner cannot make a series per path
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

router = APIRouter()


class Metrics:
    """The counters one app keeps, on a registry of its own."""

    def __init__(self, live_sessions: Callable[[], int]):
        self.registry = CollectorRegistry()
        self.requests = Counter("lm_http_requests", "HTTP requests answered, by route, method and status.",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("lm_http_request_duration_seconds", "Time from a request's arrival to the end "
                                 "of its answer (a stream's last event), by route.", ("route",),
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sessions = Gauge("lm_sessions", "Keystroke sessions kept in this server process.", registry=self.registry)
        self.sessions.set_function(live_sessions)  # read at each scrape
        self.generated_tokens = Counter("lm_generated_tokens", "Tokens generated (one model step each) by "
                                        "/generate and /v1/completions.", registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """The counters in the Prometheus text format."""
    return Response(request.app.state.service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts every answer by route template and status, and times it; outermost, so answers
    the other middleware gives (401, 413, CORS preflights) are counted too."""

    def __init__(self, app, metrics: Metrics, routes: list):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's routes, to label a request by its template (/v1/models/{model})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # an app that raises before answering is a 500

        async def counted_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            route = self._route(scope)
            method = scope["method"] if scope["method"] in METHODS else OTHER
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _route(self, scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:  # PARTIAL: the path is served, the method is not (405)
                return route.path
        return OTHER
