"""The shared HTTP site of `http` listeners: plugins mount resources by full path.

Routing is by the whole path (a trailing slash ignored), so families whose paths
share a prefix (`/api/put` and `/api/v1/command`) coexist on one port.  Request
bodies are capped while they arrive, so a client cannot make the server buffer
more than ``max_body`` bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import IResource, Resource

from tsnet.errors import ConfigError

log = Logger(namespace="tsnet.http")

DEFAULT_MAX_BODY = 8 * 1024 * 1024


JSON_CONTENT_TYPE = b"application/json; charset=UTF-8"


def error_body(code: int, message: str, **extra: Any) -> bytes:
    """An OpenTSDB-style JSON error body, compact as clients match it."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    return json.dumps({"error": body}, separators=(",", ":")).encode()


def json_error(request: Any, code: int, message: str, **extra: Any) -> bytes:
    """Write the status and return `error_body`."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_CONTENT_TYPE)
    return error_body(code, message, **extra)


def normalise_path(path: bytes) -> bytes:
    p = path.split(b"?", 1)[0].rstrip(b"/")
    return p or b"/"


class NotFound(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return json_error(request, 404, "Endpoint not found")


class Router(Resource):
    """Maps whole request paths to the resources plugins mounted."""

    def __init__(self, routes: Mapping[bytes, Any]) -> None:
        super().__init__()
        self.routes = {normalise_path(p): r for p, r in routes.items()}
        self._lower = {p.lower(): r for p, r in self.routes.items()}

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:
        path = normalise_path(request.path)
        r = self.routes.get(path) or self._lower.get(path.lower())
        if r is None:
            return NotFound()
        request.prepath = path.strip(b"/").split(b"/")
        request.postpath = []
        return r

    def render(self, request: Any) -> bytes:
        r = self.routes.get(b"/")
        if r is not None:
            return r.render(request)
        return NotFound().render(request)


class LimitedRequest(server.Request):
    """A request whose body is dropped, and answered 413, past the site's cap."""

    too_large = False

    def _limit(self) -> int:
        return getattr(self.channel.site, "max_body", DEFAULT_MAX_BODY)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        if self.content.tell() + len(data) > self._limit():
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self.too_large:
            self.setHeader(b"connection", b"close")
            body = json_error(self, 413, "Request Entity Too Large",
                              details=f"the body is over {self._limit()} bytes")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return
        super().process()


class Site(server.Site):
    """twisted.web's site, behind `tsnet.http.lean`'s channel when a resource
    has a fast handler (``fast_handlers``: request path -> handler)."""

    requestFactory = LimitedRequest
    noisy = False

    def __init__(self, resource: Any, max_body: int = DEFAULT_MAX_BODY, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.max_body = max_body
        self.fast_handlers: dict[bytes, Any] = {}
        self.date_cache: list[Any] = [None, b""]
        #: counts, limits and closes the connections when the site is a listener's
        #: factory (`tsnet.listeners.ConnectionTracker`); None behind the
        #: opentsdb listener's first-byte switch, which does that itself
        self.tracker: Any = None

    def buildProtocol(self, addr: Any) -> Any:
        if not self.fast_handlers and self.tracker is None:
            return self.build_web_channel(addr)
        from tsnet.http.lean import LeanHTTPChannel

        return LeanHTTPChannel(self, addr)

    def close_all(self) -> None:
        """Drop every connection (the listener is stopping)."""
        if self.tracker is not None:
            self.tracker.close_all()

    def build_web_channel(self, addr: Any) -> Any:
        """twisted.web's own channel, for every request no fast handler takes."""
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:  # access logs would drown the structured log
        pass


def make_site(listener: Any, core: Any, routes: Mapping[bytes, Any]) -> Site:
    """The HTTP site of one listener: its routes, body cap and idle timeout.
    Resources find the listener and the core through ``request.channel.site``."""
    site = Site(Router(routes), max_body=listener.options.get("max_body", DEFAULT_MAX_BODY),
                reactor=core.reactor)
    for path, res in routes.items():
        fast = getattr(res, "fast_post", None)
        if fast is not None:
            site.fast_handlers[normalise_path(path)] = fast
            site.fast_handlers.setdefault(normalise_path(path).lower(), fast)
    site.listener = listener
    site.core = core
    site.timeOut = listener.idle_timeout or None
    return site


def collect_routes(apis: list[str], plugins: Mapping[str, Any], core: Any) -> dict[bytes, Any]:
    """The routes of every named API; two plugins claiming a path is a config error."""
    routes: dict[bytes, Any] = {}
    owner: dict[bytes, str] = {}
    for name in apis:
        for path, res in plugins[name].resources(core).items():
            p = normalise_path(path)
            if p in routes:
                raise ConfigError(f"apis: {name!r} and {owner[p]!r} both serve {p.decode()}")
            if not IResource.providedBy(res):
                raise ConfigError(f"apis: {name!r} mounts a non-resource at {p.decode()}")
            routes[p] = res
            owner[p] = name
    return routes
