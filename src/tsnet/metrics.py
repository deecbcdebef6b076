"""Counters of what tsnet received, wrote and rejected, and the `/metrics` resource.

Each server has its own `CollectorRegistry` (no module-level state), so tests can
run several servers in one process.  Counters are bumped once per batch with a
count, never once per point.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from zope.interface import implementer

from tsnet.interfaces import IMetrics

KIND_LABELS = {"properties": "property", "messages": "message", "meta": "meta", "records": "record"}


@implementer(IMetrics)
class Metrics:
    """The server's counters; protocols and ingest call these with counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.points_received = Counter(
            "tsnet_points_received", "Series samples parsed from clients.", ["protocol"],
            registry=r)
        self.points_written = Counter(
            "tsnet_points_written", "Series samples committed to storage.", ["protocol"],
            registry=r)
        self.points_rejected = Counter(
            "tsnet_points_rejected", "Series samples refused, by reason.",
            ["protocol", "reason"], registry=r)
        self.items_written = Counter(
            "tsnet_items_written", "Properties, messages, meta and records committed.",
            ["protocol", "kind"], registry=r)
        self.connections = Gauge(
            "tsnet_connections", "Open client connections.", ["protocol", "listener"],
            registry=r)
        self.queued = Gauge(
            "tsnet_write_queue_items", "Items accepted and not yet committed.", registry=r)
        # labelled children by protocol: labels() costs microseconds, and the
        # HTTP path bumps these once per request
        self._received: dict[str, Any] = {}
        self._written: dict[Any, Any] = {}  # protocol, or (protocol, item kind)

    def received(self, protocol: str, n: int) -> None:
        if n:
            c = self._received.get(protocol)
            if c is None:
                c = self._received[protocol] = self.points_received.labels(protocol)
            c.inc(n)

    def written(self, protocol: str, points: int, items: dict[str, int]) -> None:
        if points:
            c = self._written.get(protocol)
            if c is None:
                c = self._written[protocol] = self.points_written.labels(protocol)
            c.inc(points)
        for kind, n in items.items():
            if n:
                c = self._written.get((protocol, kind))
                if c is None:
                    c = self._written[(protocol, kind)] = self.items_written.labels(
                        protocol, KIND_LABELS.get(kind, kind))
                c.inc(n)

    def rejected(self, protocol: str, reason: str, n: int = 1) -> None:
        if n:
            self.points_rejected.labels(protocol, reason).inc(n)

    def connection_opened(self, protocol: str, listener: str) -> None:
        self.connections.labels(protocol, listener).inc()

    def connection_closed(self, protocol: str, listener: str) -> None:
        self.connections.labels(protocol, listener).dec()

    def watch_queue(self, ingest: Any) -> None:
        self.queued.set_function(lambda: ingest.queued)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """``GET /metrics``: the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.render()
