"""The service's Prometheus metrics and the middleware that counts and times every request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

#: The endpoints counted by name; any other path is counted as "other" (bounded labels).
ENDPOINTS = ("/predict", "/embed", "/health", "/metadata", "/metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "resnetkit_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "resnetkit_request_latency_seconds",
            "Time from request to response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "resnetkit_batch_size",
            "Images per forward pass of the model",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "resnetkit_images_predicted", "Images classified", registry=self.registry
        )
        self.unsure = Counter(  # a share that climbs says the images have changed
            "resnetkit_images_unsure",
            "Images whose top probability is below the model's own min confidence",
            registry=self.registry,
        )
        self.embedded = Counter(
            "resnetkit_images_embedded",
            "Images turned into feature vectors",
            registry=self.registry,
        )
        self.rejected = Counter(
            "resnetkit_rejected_inputs",
            "Requests refused with a 4xx, by error code",
            ["reason"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it (plain ASGI, cheap)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server sends if the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"  # bounded label values
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
