"""Prometheus metrics of the service (prometheus-client), in a registry of its own.

Exposed at ``GET /metrics`` in the Prometheus text format:

* ``bregnet_requests_total{endpoint, status}``: answered requests;
* ``bregnet_request_errors_total{endpoint, status}``: the subset answered with 4xx/5xx;
* ``bregnet_request_duration_seconds{endpoint}``: time from the request to the last byte sent;
* ``bregnet_batch_size``: faces per batch the batcher runs (the faces of one or more requests; the
  predictor feeds them to the network in chunks of at most ``max_batch``);
  ``bregnet_model_seconds``: time per batch;
* ``bregnet_faces_total``: faces through the model;
* ``bregnet_queue_length`` / ``bregnet_queue_capacity``: jobs waiting for the model, and room;
* ``bregnet_inflight_requests``: requests being processed;
* ``process_*``: the server's memory (``process_resident_memory_bytes``), CPU time, open files.
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["ServiceMetrics", "MetricsMiddleware"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's counters and histograms; :meth:`render` gives the text exposition."""

    def __init__(self, queue_length: Callable[[], float], queue_capacity: int) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("bregnet_requests_total", "Requests answered",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("bregnet_request_errors_total", "Requests answered with 4xx or 5xx",
                              ["endpoint", "status"], registry=r)
        self.latency = Histogram("bregnet_request_duration_seconds",
                                 "Time from the request to the last byte of the answer",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("bregnet_batch_size", "Faces per batch run by the batcher",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram("bregnet_model_seconds", "Seconds per batch in the model",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.faces = Counter("bregnet_faces_total", "Faces through the model", registry=r)
        self.inflight = Gauge("bregnet_inflight_requests", "Requests being processed", registry=r)
        queue = Gauge("bregnet_queue_length", "Jobs waiting for the model", registry=r)
        queue.set_function(queue_length)
        Gauge("bregnet_queue_capacity", "Most jobs that may wait for the model",
              registry=r).set(queue_capacity)

    def observe_batch(self, faces: int, seconds: float) -> None:
        self.batch_size.observe(faces)
        self.model_seconds.observe(seconds)
        self.faces.inc(faces)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by route (``endpoint``: the route's path, or
    ``other`` for unknown paths, so the label set stays bounded) and status, and times it to the
    last byte sent (streamed answers included)."""

    def __init__(self, app: Any, metrics: ServiceMetrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.inflight.dec()
            self.metrics.observe_request(endpoint, status, time.perf_counter() - t0)
