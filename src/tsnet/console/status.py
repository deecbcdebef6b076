"""``/console/api/access`` and ``/console/api/status``: what the console shows.

The numbers come from the server's metric registry, the very objects
``/metrics`` renders (`read_samples` collects them as the Prometheus
exposition does, sample names included): the page and a scraper never
disagree, and nothing is counted twice.  Rates (points a second) are the
page's to compute, from two polls and the server ``time`` each carries.

Who sees what: ``access`` tells anyone whether the listener wants a token
(as a 401 would).  ``status`` resolves a READ principal as the read APIs do:
on an ``auth = none`` listener it lists every solution (and marks the
listener's, the one its read APIs serve); on an ``auth = token`` listener it
wants a READ token (401 without one, 403 for a WRITE-only token) and lists
only the token's solution.  The server-wide counters are what ``/metrics``
shows a READ token of any solution.  A solution's point count reads all its
data, so it runs off the reactor (the storage's reader), one at a time, and is
reused for `COUNT_EVERY` seconds; a token limited by tags gets no count (the
solution's total would tell about series it cannot read).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.web.server import NOT_DONE_YET

from tsnet import __version__
from tsnet.console.assets import ConsoleResource
from tsnet.errors import Forbidden, Unauthorized
from tsnet.http.credentials import core_of, listener_of, principal_for
from tsnet.http.replies import send_body
from tsnet.logbound import LogBound
from tsnet.model import READ

if TYPE_CHECKING:
    from tsnet.config import Config, Listener
    from tsnet.core import Core

log = Logger(namespace="tsnet.console")

JSON_TYPE = b"application/json; charset=utf-8"
#: seconds between the page's status polls (the reply tells the page)
POLL_EVERY = 2.0
#: seconds a solution's point count is shown before it is counted again
COUNT_EVERY = 30.0
#: solutions one status lists at most (``more_solutions`` says how many were left out)
MAX_SOLUTIONS = 200

Samples = dict[str, list[tuple[dict[str, str], float]]]


def read_samples(registry: Any) -> Samples:
    """Every sample of ``registry`` by its exposed name (``tsnet_points_received_total``,
    ``tsnet_connections``...), as ``/metrics`` renders them."""
    out: Samples = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _by(samples: Samples, name: str, label: str) -> dict[str, int | float]:
    out: dict[str, float] = {}
    for labels, v in samples.get(name, ()):
        key = labels.get(label, "")
        out[key] = out.get(key, 0) + v
    return {k: _number(v) for k, v in sorted(out.items())}


def server_status(samples: Samples, config: Config, paused: bool) -> dict[str, Any]:
    """The server-wide part of a status: listeners, points, rejects, the write
    queue and the storages, from ``samples`` (`read_samples`) and the config."""
    bound = {labels["listener"]: labels["endpoint"]
             for labels, v in samples.get("tsnet_listener_info", ()) if v}
    connections = _by(samples, "tsnet_connections", "listener")
    received = _by(samples, "tsnet_points_received_total", "protocol")
    written = _by(samples, "tsnet_points_written_total", "protocol")
    rejected = [{"protocol": labels.get("protocol", ""), "reason": labels.get("reason", ""),
                 "count": _number(v)}
                for labels, v in samples.get("tsnet_points_rejected_total", ()) if v]
    rejected.sort(key=lambda r: (-r["count"], r["protocol"], r["reason"]))
    failing = _by(samples, "tsnet_storage_failing", "storage")
    delay = _by(samples, "tsnet_storage_retry_delay_seconds", "storage")
    errors: dict[str, dict[str, int | float]] = {}
    for labels, v in samples.get("tsnet_storage_errors_total", ()):
        errors.setdefault(labels.get("storage", ""), {})[labels.get("kind", "")] = _number(v)
    queued = sum(v for _, v in samples.get("tsnet_write_queue_items", ()))
    return {
        "listeners": [{"name": ln.name, "protocol": ln.protocol, "auth": ln.auth,
                       "endpoint": bound.get(ln.name),
                       "connections": connections.get(ln.name, 0)}
                      for ln in config.listeners.values()],
        "points": {"received": received, "written": written,
                   "received_total": _number(sum(received.values())),
                   "written_total": _number(sum(written.values())),
                   "rejected_total": _number(sum(r["count"] for r in rejected))},
        "items_written": _by(samples, "tsnet_items_written_total", "kind"),
        "rejected": rejected,
        "queue": {"items": _number(queued), "paused": paused,
                  "high_watermark": config.high_watermark,
                  "low_watermark": config.low_watermark, "max_queue": config.max_queue},
        "storages": [{"name": name, "backend": sc.backend,
                      "failing": bool(failing.get(name, 0)),
                      "retry_delay": delay.get(name, 0),
                      "errors": {"unavailable": errors.get(name, {}).get("unavailable", 0),
                                 "bad": errors.get(name, {}).get("bad", 0)}}
                     for name, sc in config.storages.items()],
    }


class PointCounts:
    """Point counts of solutions, counted off the reactor one at a time and
    reused for ``every`` seconds; `get` never waits (a solution not counted
    yet has no entry, and the page shows it as being counted)."""

    def __init__(self, core: Core, every: float = COUNT_EVERY) -> None:
        self.core = core
        self.every = every
        self._counts: dict[str, tuple[int | None, float]] = {}
        self._wanted: dict[str, None] = {}  # (ordered: counted in the order asked)
        self._running = False
        self._logs = LogBound(log, core.reactor)

    def get(self, names: list[str]) -> dict[str, int | None]:
        now = self.core.reactor.seconds()
        for n in names:
            found = self._counts.get(n)
            if found is None or now - found[1] >= self.every:
                self._wanted[n] = None
        if self._wanted and not self._running:
            self._running = True
            d = defer.ensureDeferred(self._count())
            d.addErrback(lambda f: self._logs.failure("console-count-failed",
                                                      "counting points failed", f))
        return {n: self._counts[n][0] for n in names if n in self._counts}

    async def _count(self) -> None:
        try:
            while self._wanted:
                name = next(iter(self._wanted))
                del self._wanted[name]
                try:
                    n = await self.core.storages.backend_for(name).count_points(name)
                except Exception as e:  # a failing storage, a solution gone: no count
                    self._logs.emit(LogLevel.warn, "console-count",
                                    "the console could not count the points of {solution}: "
                                    "{reason}", solution=name, reason=str(e) or type(e).__name__)
                    n = None
                if len(self._counts) >= 4 * MAX_SOLUTIONS:
                    self._counts.clear()  # (solutions deleted since: bounded)
                self._counts[name] = (n, self.core.reactor.seconds())
        finally:
            self._running = False


def _json(request: Any, code: int, obj: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def serves_queries(request: Any) -> bool:
    """Whether the site that received ``request`` mounts OpenTSDB's ``/api/query``
    (an ``opentsdb`` port, or an ``http`` listener whose apis name opentsdb)."""
    routes = getattr(request.channel.site.resource, "routes", {})
    return b"/api/query" in routes


class AccessResource(ConsoleResource):
    """``/console/api/access``: whether the page must ask for a READ token,
    and whether this port can answer queries (so the page asks nothing that
    would fail)."""

    def get(self, request: Any) -> bytes:
        listener = listener_of(request)
        return _json(request, 200, {"auth": listener.auth, "listener": listener.name,
                                    "explore": serves_queries(request)})


class StatusResource(ConsoleResource):
    """``/console/api/status``: the server's status as the caller may see it."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.counts = PointCounts(core)
        self._logs = LogBound(log, core.reactor)

    def get(self, request: Any) -> Any:
        d = principal_for(request, READ)
        d.addCallback(lambda p: self._status(request, p))
        d.addErrback(self._refused, request)
        d.addCallback(lambda body: send_body(request, body))
        d.addErrback(lambda f: self._logs.failure("console-status-reply",
                                                  "answering /console/api/status failed", f))
        return NOT_DONE_YET

    def _status(self, request: Any, principal: Any) -> bytes:
        core, listener = core_of(request), listener_of(request)
        out = server_status(read_samples(core.metrics.registry), core.config,
                            core.ingest.paused)
        out["time"] = core.reactor.seconds()
        out["version"] = __version__
        out["poll"] = POLL_EVERY
        out["principal"] = {"solution": principal.solution, "tags": dict(principal.tags),
                            "token": listener.auth != "none"}
        out["solutions"], out["more_solutions"] = self._solutions(core, listener, principal)
        return _json(request, 200, out)

    def _solutions(self, core: Core, listener: Listener, principal: Any,
                   ) -> tuple[list[dict[str, Any]], int]:
        if listener.auth == "none":
            records = core.storages.solutions()
        else:
            rec = core.storages.solution(principal.solution)
            records = [rec] if rec is not None else []
        more = max(0, len(records) - MAX_SOLUTIONS)
        records = records[:MAX_SOLUTIONS]
        counted = {} if principal.tags else self.counts.get([r.name for r in records])
        out = []
        for r in records:
            item: dict[str, Any] = {"name": r.name, "storage": r.storage,
                                    "description": r.description,
                                    "points": counted.get(r.name),
                                    "counted": r.name in counted,
                                    "read_here": r.name == principal.solution}
            if r.attributes.get("type"):
                item["store"] = r.attributes["type"]
            out.append(item)
        return out, more

    def _refused(self, f: Any, request: Any) -> bytes:
        if f.check(Unauthorized):
            request.setHeader(b"www-authenticate", b'Bearer realm="console"')
            return _json(request, 401, {"error": "a READ token is needed"})
        if f.check(Forbidden):
            return _json(request, 403, {"error": "a READ token is needed, not a WRITE token"})
        self._logs.failure("console-status-failed", "building the console status failed", f)
        return _json(request, 500, {"error": "the status could not be read"})
