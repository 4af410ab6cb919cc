"""Prometheus metrics: what the control plane is doing, for ``GET /metrics``.

Kept per application (a registry of its own, not the process-global one), so that several apps
in one process (tests, replicas in one interpreter) do not count into each other.

- HTTP requests and their latency, labelled by route *template* (``/api/instances/{instance_id}``),
  never by raw path: ids would make a series per instance and leak them to the scraper.
- Instances by status and provider, counted by the database at scrape time (one grouped query),
  so every replica reports the same, correct numbers.
- Open terminals, log follows and event follows of this process.
- How long instance operations (create, start, stop, restart, destroy) take, and how they end.
- How long a reconciler pass takes.

Per-instance CPU and memory are not exported: no compute provider reports them through its
interface today, and a number made up here would be worse than none.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gentity.server.db.database import Database
from gentity.server.db.orm import Instance
from gentity.server.revocation import CredentialWatch, StreamKind

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Any other method a client makes up is counted as "other": labels must stay a small set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route label of a request that matched no route (its path is not recorded)."""

# Long operations: creating an instance installs and boots an agent, which may take minutes.
_OPERATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The application's metrics and the registry they are exported from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gentity_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gentity_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body), by method and route",
            ["method", "route"],
            registry=self.registry,
        )
        self.instances = Gauge(
            "gentity_instances",
            "Instances (not destroyed) by status and compute provider",
            ["status", "provider"],
            registry=self.registry,
        )
        self.streams = Gauge(
            "gentity_open_streams",
            "Terminals, log follows and event follows open on this server",
            ["kind"],
            registry=self.registry,
        )
        self.operations = Histogram(
            "gentity_instance_operation_duration_seconds",
            "Time an instance operation took, by operation and outcome (ok, failed)",
            ["operation", "outcome"],
            buckets=_OPERATION_BUCKETS,
            registry=self.registry,
        )
        self.reconcile = Histogram(
            "gentity_reconcile_pass_duration_seconds",
            "Time one reconciler pass over every active instance took on this server",
            buckets=_PASS_BUCKETS,
            registry=self.registry,
        )

    @contextlib.contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """Time the block as operation ``name``; an exception out of it counts as failed."""
        started = time.perf_counter()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            self.operations.labels(name, outcome).observe(time.perf_counter() - started)

    async def render(self, db: Database, streams: CredentialWatch) -> bytes:
        """The exposition text, with the gauges read now."""
        async with db.session() as session:
            rows = (
                await session.execute(
                    select(Instance.status, Instance.provider, func.count())
                    .where(Instance.destroyed_at.is_(None))
                    .group_by(Instance.status, Instance.provider)
                )
            ).all()
        # Cleared first so a status nobody is in any more reads as absent, not as its old count.
        # Nothing awaits between here and generate_latest: a concurrent scrape cannot interleave.
        self.instances.clear()
        for status, provider, count in rows:
            self.instances.labels(status, provider).set(count)
        for kind in get_args(StreamKind):
            self.streams.labels(kind).set(streams.open_of(kind))
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The template of the route that answered (``/api/instances/{instance_id}``)."""
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str) and template:
            return template
    return UNMATCHED


class RequestMetrics:
    """Pure ASGI middleware that counts and times every HTTP request.

    Reads the route from the scope after the app has routed the request; the timer stops
    when the last body chunk has been sent (or the app fails), so a long stream is measured
    as long as it lasted.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled series, looked up once per label set: ``labels()`` takes a lock and
        # builds a key on every call, several times the cost of the update itself. Bounded,
        # since every label has a small set of values.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before starting a response

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (method, route_template(scope), status)
            series = self._series.get(key)
            if series is None:
                series = (
                    self.metrics.requests.labels(method, key[1], str(status)),
                    self.metrics.latency.labels(method, key[1]),
                )
                self._series[key] = series
            series[0].inc()
            series[1].observe(elapsed)
