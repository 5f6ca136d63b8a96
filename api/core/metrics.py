"""Prometheus metrics of the service: requests, their latency, and the audit outboxes' backlog.

Requests are labelled by route *name* (the access matrix's key), never by raw path, so no pseudonym or model id
ends up in a label. The outbox gauges are read from the outboxes' SQLite files at scrape time, so they are right
whichever process delivers (the delivery process by default). Each app has its own registry: several apps in
one process (the tests) do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.ledger import LedgerHub

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class OutboxCollector(Collector):
    """`carefed_audit_outbox_depth` and `carefed_audit_outbox_oldest_age_seconds` per organisation."""

    def __init__(self, hub: LedgerHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "carefed_audit_outbox_depth", "Audit events queued for the ledger, not yet committed.", labels=["org"]
        )
        age = GaugeMetricFamily(
            "carefed_audit_outbox_oldest_age_seconds",
            "Age of the oldest audit event still queued (0 when none): a ledger that stopped accepting shows here.",
            labels=["org"],
        )
        for org, (pending, oldest_s) in sorted(self.hub.outbox_backlogs().items()):
            depth.add_metric([org], pending)
            age.add_metric([org], oldest_s)
        yield depth
        yield age


class Metrics:
    """The service's registry and the instruments the middleware feeds."""

    def __init__(self, hub: LedgerHub) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "carefed_api_requests",
            "Requests answered, by route name, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "carefed_api_request_duration_seconds",
            "Time from request to the response's start, by route name and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(OutboxCollector(hub))


class MetricsMiddleware:
    """Pure ASGI middleware: time each HTTP request and count its status under its route's name."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def observe(status: int) -> None:
            name = getattr(scope.get("route"), "name", None) or "unmatched"
            self.metrics.latency.labels(name, scope["method"]).observe(time.perf_counter() - started)
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not answered:  # the error page is sent further out: it is a 500
                observe(500)
            raise
