"""Counters of what tsnet received, wrote and rejected, and the `/metrics` resource.

Each server has its own `CollectorRegistry` (no module-level state), so tests can
run several servers in one process.  Counters are bumped once per batch with a
count, never once per point.

`/metrics` asks for a READ token when its listener's ``metrics_auth`` is
``token``; by default that key follows the listener's ``auth``, so a listener
that wants tokens tells nothing, not even traffic volumes, without one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsnet.errors import Forbidden, Unauthorized
from tsnet.http.credentials import core_of, listener_of, request_secrets
from tsnet.http.replies import PLAIN_ERRORS, send_body, send_error
from tsnet.interfaces import IMetrics
from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.model import READ

log = Logger(namespace="tsnet.metrics")

#: the kinds of `MetricsResource.logs` (fixed texts: what repeats is counted)
AUTH_FAILURES = "failed /metrics token lookups"
REPLY_FAILURES = "failed /metrics replies"

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
        self.storage_errors = Counter(
            "tsnet_storage_errors", "Failed storage writes: unavailable (kept and retried) "
            "or bad (items refused as invalid, dropped).", ["storage", "kind"], registry=r)
        self.storage_failing = Gauge(
            "tsnet_storage_failing", "1 while the storage's writes fail and are retried.",
            ["storage"], registry=r)
        self.storage_retry_delay = Gauge(
            "tsnet_storage_retry_delay_seconds", "Seconds between the failing storage's "
            "write attempts now (0 when it writes).", ["storage"], registry=r)
        self.listener_info = Gauge(
            "tsnet_listener_info", "1 for each listener's bound endpoint (its real address: "
            "port 0 resolved).", ["protocol", "listener", "endpoint"], registry=r)
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

    def storage_error(self, storage: str, kind: str) -> None:
        """A write to ``storage`` failed: ``unavailable`` or ``bad`` (ingest calls it)."""
        self.storage_errors.labels(storage, kind).inc()

    def storage_state(self, storage: str, failing: bool, retry_delay: float = 0.0) -> None:
        """Whether ``storage`` is failing now, and its retry delay (ingest calls it)."""
        self.storage_failing.labels(storage).set(1 if failing else 0)
        self.storage_retry_delay.labels(storage).set(retry_delay if failing else 0)

    def listener_bound(self, protocol: str, listener: str, endpoint: str) -> None:
        """``listener`` listens on ``endpoint`` (``tcp:127.0.0.1:40213``; the service
        tree calls it once each listener is bound)."""
        self.listener_info.labels(protocol, listener, endpoint).set(1)

    def connection_opened(self, protocol: str, listener: str) -> None:
        self.connections.labels(protocol, listener).inc()

    def connection_closed(self, protocol: str, listener: str) -> None:
        self.connections.labels(protocol, listener).dec()

    def watch_queue(self, ingest: Any) -> None:
        self.queued.set_function(lambda: ingest.queued)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_auth(listener: Any) -> str:
    """``none`` or ``token``: the listener's ``metrics_auth``, else its ``auth``."""
    return getattr(listener, "options", {}).get("metrics_auth") or listener.auth


class MetricsResource(Resource):
    """``GET /metrics``: the Prometheus text format, behind a READ token of any
    solution when `metrics_auth` says so (the counters are server-wide and name
    no solution, series or client)."""

    isLeaf = True
    #: seconds `logs` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics
        #: failures a client may repeat at will, once a request: logged once,
        #: then counted (made at the first, on the reactor of its server)
        self.logs: LogBound | None = None

    def render_GET(self, request: Any) -> Any:
        if metrics_auth(listener_of(request)) == "none":
            return self._text(request)
        secrets = request_secrets(request)
        d = (core_of(request).auth.authenticate_any(secrets, READ) if secrets
             else defer.fail(Unauthorized("no token")))
        d.addCallbacks(lambda _: self._text(request), self._refused,
                       errbackArgs=(request,))
        d.addCallback(lambda body: send_body(request, body))
        d.addErrback(lambda f: self._logs(request).failure(
            REPLY_FAILURES, "answering /metrics failed", f))
        return NOT_DONE_YET

    def _logs(self, request: Any) -> LogBound:
        if self.logs is None:
            self.logs = LogBound(log, core_of(request).reactor, self.log_period)
        return self.logs

    def _text(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.render()

    def _refused(self, f: Any, request: Any) -> bytes:
        if f.check(Forbidden):
            return send_error(request, PLAIN_ERRORS, 403, "Forbidden", "a READ token is needed")
        if not f.check(Unauthorized):  # the catalog could not be read: not the client's fault
            self._logs(request).failure(AUTH_FAILURES, "looking up a /metrics token failed", f)
            return send_error(request, PLAIN_ERRORS, 500, "Internal Server Error")
        request.setHeader(b"www-authenticate", b'Bearer realm="metrics"')
        return send_error(request, PLAIN_ERRORS, 401, "Unauthorized", "a READ token is needed")
