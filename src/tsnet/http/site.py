"""The shared HTTP site of `http` listeners: plugins mount resources by full path.

Routing is by the whole path (a trailing slash ignored), so families whose paths
share a prefix (`/api/put` and `/api/v1/command`) coexist on one port.  Request
bodies are capped while they arrive, so a client cannot make the server buffer
more than ``max_body`` bytes, and each request must arrive whole within the
listener's ``request_timeout`` (`WebChannel`, and `tsnet.http.lean` in front).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from tsnet.errors import ConfigError
from tsnet.http.replies import PLAIN_ERRORS, send_error
from tsnet.interfaces import IFastPost

if TYPE_CHECKING:
    from tsnet.config import Listener
    from tsnet.core import Core

log = Logger(namespace="tsnet.http")

DEFAULT_MAX_BODY = 8 * 1024 * 1024


def normalise_path(path: bytes) -> bytes:
    """A route or request path without its query and trailing slash."""
    p = path.split(b"?", 1)[0].rstrip(b"/")
    return p or b"/"


def is_prefix(route: bytes) -> bool:
    """A route ending in ``/*`` mounts every path below it (the resource finds
    the rest, still percent-encoded, in ``request.postpath``)."""
    return route.endswith(b"/*")


class NotFound(Resource):
    """What a path that no family mounted gets, in the site's default dialect."""

    isLeaf = True

    def __init__(self, errors: Any) -> None:
        super().__init__()
        self.errors = errors

    def render(self, request: Any) -> bytes:
        return send_error(request, self.errors, 404, "Endpoint not found")


class Router(Resource):
    """Maps whole request paths to the resources plugins mounted, and each
    path to the error dialect of the family that mounted it."""

    def __init__(self, routes: Mapping[bytes, Any],
                 errors: Mapping[bytes, Any] | None = None,
                 default_errors: Any = PLAIN_ERRORS) -> None:
        super().__init__()
        self.routes = {normalise_path(p): r for p, r in routes.items() if not is_prefix(p)}
        self._lower = {p.lower(): r for p, r in self.routes.items()}
        #: prefix routes (``/api/v1/entities/*``), longest first, lower-cased
        self.prefixes = sorted(((p[:-2].lower(), r) for p, r in routes.items() if is_prefix(p)),
                               key=lambda pr: -len(pr[0]))
        self.default_errors = default_errors
        self.errors = {normalise_path(p): e for p, e in (errors or {}).items()}
        self._lower_errors = {p.lower(): e for p, e in self.errors.items()}

    def _prefix(self, path: bytes) -> tuple[bytes, Any] | None:
        low = path.lower()
        for prefix, r in self.prefixes:
            if low.startswith(prefix + b"/") and len(low) > len(prefix) + 1:
                return prefix, r
        return None

    def errors_for(self, path: bytes) -> Any:
        """The error dialect of the route ``path`` names, or the site's default."""
        p = normalise_path(path)
        found = self.errors.get(p) or self._lower_errors.get(p.lower())
        if found is None:
            match = self._prefix(p)
            if match is not None:
                found = self._lower_errors.get(match[0] + b"/*")
        return found or self.default_errors

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:
        path = normalise_path(request.path)
        r = self.routes.get(path) or self._lower.get(path.lower())
        if r is not None:
            request.prepath = path.strip(b"/").split(b"/")
            request.postpath = []
            return r
        match = self._prefix(path)
        if match is None:
            return NotFound(self.default_errors)
        prefix, r = match
        request.prepath = path[:len(prefix)].strip(b"/").split(b"/")
        request.postpath = path[len(prefix) + 1:].split(b"/")
        return r

    def render(self, request: Any) -> bytes:
        r = self.routes.get(b"/")
        if r is not None:
            return r.render(request)
        return NotFound(self.default_errors).render(request)


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
            errors = self.channel.site.resource.errors_for(self.path)
            body = send_error(self, errors, 413, "Request Entity Too Large",
                              f"the body is over {self._limit()} bytes")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.write(body)
            self.finish()
            # What is left of the body must not be read as the next request.
            self.transport.loseConnection()
            return
        super().process()


def timeout_reply(site: Any, path: bytes) -> bytes:
    """The whole 408 response (then the connection closes) to a request that
    did not arrive in time, in the dialect of the route ``path`` names."""
    router = getattr(site, "resource", None)
    errors = router.errors_for(path) if hasattr(router, "errors_for") else PLAIN_ERRORS
    content_type, body = errors.error_reply(408, "Request Timeout")
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (content_type, len(body), body))


#: control characters, which a header value may not hold but HTAB (RFC 9110
#: §5.5); the lean channel's head checks use the same
CONTROLS = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"

#: digits of the longest Content-Length read as a number (int64's 19)
MAX_LENGTH_DIGITS = 19


@implementer(IHalfCloseableProtocol)
class WebChannel(http.HTTPChannel):
    """twisted.web's HTTP/1.1 channel with what a listener needs besides:

    - each request, head and body, must arrive within the site's
      ``request_timeout`` from its first byte (a `tsnet.listeners.Deadline`,
      once `watch` gave it a tracker): else 408 and the connection closes;
    - a client that half-closes gets an answer to every request it sent;
    - ``Expect: 100-continue`` with a body over the cap is answered 413 at
      once, not ``100 Continue``;
    - timed-out clients are not logged one line each.
    """

    tracker: Any = None  # the listener's ConnectionTracker
    tracked: Any = None  # the connection it admitted (the front: lean channel, switch)
    deadline: Any = None
    _eof = False
    _refuse_body = False

    def watch(self, tracker: Any, conn: Any, deadline: Any = None) -> None:
        """Give each request a deadline, from ``tracker`` for ``conn`` (or the
        ``deadline`` of a request already under way, from the lean channel)."""
        self.tracker = tracker
        self.tracked = conn
        if deadline is None:
            deadline = tracker.deadline(conn, self.site.request_timeout, self.request_timed_out)
        deadline.expired = self.request_timed_out
        self.deadline = deadline

    def dataReceived(self, data: bytes) -> None:
        d = self.deadline
        if d is not None and data and not self._handlingRequest:
            d.begin()
            d.add(len(data))
        super().dataReceived(data)

    def headerReceived(self, line: bytes) -> bool:
        # Refused as malformed (400, as twisted.web refuses the rest) before
        # twisted.web reads them: control characters in a value (the email
        # parser behind Content-Type takes \x0b for a line break and raises),
        # and a Content-Length past any body size (int() of 5000 digits raises).
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        if value.translate(None, CONTROLS) != value or (
                name.strip().lower() == b"content-length" and len(value) > MAX_LENGTH_DIGITS):
            self._respondToBadRequestAndDisconnect()
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        self._refuse_body = False
        super().allHeadersReceived()
        if self._refuse_body:
            self.length = 0  # the request is whole: the client waits, and hears the 413

    def _send100Continue(self) -> None:
        if getattr(self.requests[-1], "too_large", False):
            self._refuse_body = True
            return
        super()._send100Continue()

    def allContentReceived(self) -> None:
        if self.deadline is not None:
            self.deadline.end()
        super().allContentReceived()

    def request_timed_out(self) -> None:
        if self.transport is None or self._handlingRequest:
            return
        self.transport.write(timeout_reply(self.site, getattr(self, "_path", None) or b"/"))
        self.setTimeout(None)
        self.loseConnection()
        self.tracker.close(self.tracked, self.transport)

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self._eof and not self._handlingRequest:
            self._close_at_eof()  # every request read before the half-close is answered

    def readConnectionLost(self) -> None:
        self._eof = True
        if not self._handlingRequest:
            self._close_at_eof()

    def _close_at_eof(self) -> None:
        if self.transport is None:
            return
        if self.tracker is not None:  # the place is free now, not once the close is done
            self.tracker.forget(self.tracked)
        self.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.transport is not None:
            self.loseConnection()

    def timeoutConnection(self) -> None:  # (twisted.web logs each client)
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def forceAbortClient(self) -> None:
        self._abortingCall = None
        self.transport.abortConnection()


class Site(server.Site):
    """twisted.web's site, behind `tsnet.http.lean`'s channel when a resource
    has a fast handler (``fast_handlers``: request path -> handler)."""

    requestFactory = LimitedRequest
    protocol = WebChannel
    noisy = False
    #: seconds a request may take to arrive (`WebChannel`); 0: no limit
    request_timeout = 0.0

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
        """Drop every connection (the listener is stopping), and log what the
        fast path's bounded log still counts."""
        if self.tracker is not None:
            self.tracker.close_all()
        logs = getattr(self, "fast_logs", None)
        if logs is not None:
            logs.flush()

    def build_web_channel(self, addr: Any) -> Any:
        """twisted.web's own channel, for every request no fast handler takes."""
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:  # access logs would drown the structured log
        pass


def make_site(listener: Listener, core: Core, routes: Mapping[bytes, Any],
              errors: Mapping[bytes, Any] | None = None,
              default_errors: Any = PLAIN_ERRORS) -> Site:
    """The HTTP site of one listener: its routes, their error dialects
    (path -> IHTTPErrors; ``default_errors`` for the rest), the body cap and
    the idle timeout.  Resources find the listener and the core through
    ``request.channel.site`` (`tsnet.http.credentials.listener_of`)."""
    router = Router(routes, errors, default_errors)
    site = Site(router, max_body=listener.options.get("max_body", DEFAULT_MAX_BODY),
                reactor=core.reactor)
    for path, res in routes.items():
        if IFastPost.providedBy(res):
            p = normalise_path(path)
            site.fast_handlers[p] = res.fast_post
            site.fast_handlers.setdefault(p.lower(), res.fast_post)
    site.listener = listener
    site.core = core
    site.timeOut = listener.idle_timeout or None
    site.request_timeout = listener.request_timeout
    return site


def collect_routes(apis: list[str], plugins: Mapping[str, Any], core: Core,
                   ) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
    """The routes of every named API and their error dialects; two plugins
    claiming a path is a config error."""
    routes: dict[bytes, Any] = {}
    errors: dict[bytes, Any] = {}
    owner: dict[bytes, str] = {}
    for name in apis:
        plugin = plugins[name]
        for path, res in plugin.resources(core).items():
            p = normalise_path(path)
            if p in routes:
                raise ConfigError(f"apis: {name!r} and {owner[p]!r} both serve {p.decode()}")
            if not IResource.providedBy(res):
                raise ConfigError(f"apis: {name!r} mounts a non-resource at {p.decode()}")
            routes[p] = res
            owner[p] = name
            errors[p] = plugin.http_errors or PLAIN_ERRORS
    return routes, errors
