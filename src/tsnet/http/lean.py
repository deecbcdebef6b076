"""A lean HTTP/1.1 front for the hot write endpoints, in front of twisted.web.

A device fleet posting small JSON batches spends most of the server's time in
the generic machinery of ``twisted.web`` (a Request object, header parsing
through the ``email`` package, resource traversal) rather than in its points.
This channel reads the common, simple requests itself and hands them to a
resource's *fast handler* (``fast_post``); everything else (another method or
path, chunked or compressed bodies, ``Expect``, HTTP/1.0, a query string the
handler does not take, odd headers) is served by the site's ordinary
``HTTPChannel``, which takes over the connection from that request on with the
bytes untouched.  So behaviour is twisted.web's except where a fast handler has
said "this one is mine", and a fast handler only takes what it answers exactly
as the resource would.

The hand-over happens only between requests, when no fast request awaits its
answer, so replies stay in order.

The channel is also where an ``http`` listener counts and limits its
connections (``max_connections``, the ``tsnet_connections`` gauge), whatever
they serve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import version as SERVER_VERSION

log = Logger(namespace="tsnet.http")

#: the most bytes a request line plus headers may have before twisted.web judges it
MAX_HEAD = 16384
MAX_HEADERS = 100

#: A fast handler: (site, target, headers, body) -> Deferred[(status, headers, body)],
#: or None when the request is not one it answers (twisted.web then serves it).
FastHandler = Callable[[Any, bytes, dict[bytes, bytes], bytes], "defer.Deferred | None"]

_REASONS = http.RESPONSES


def parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]] | None:
    """(method, target, headers with lower-case names) of a plain HTTP/1.1
    request head, or None for anything this front leaves to twisted.web: another
    version, an absolute or odd target, a repeated, folded or malformed header."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[1][:1] != b"/":
        return None
    if len(lines) > MAX_HEADERS + 1:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            return None
        name = name.lower()
        if name in headers:
            return None
        headers[name] = value.strip(b" \t")
    return parts[0], parts[1], headers


class LeanHTTPChannel(Protocol, TimeoutMixin):
    """Serves fast requests itself; hands the connection to ``site``'s
    twisted.web channel at the first request it does not serve."""

    def __init__(self, site: Any, addr: Any) -> None:
        self.site = site
        self.addr = addr
        self.inner: Any = None  # the twisted.web channel, once handed over
        self._buf = bytearray()
        self._busy = False  # a fast request awaits its answer
        self._close_after = False
        self._gone = False  # closed, or closing: nothing more is read or written
        self._paused = False
        self._serving = False  # in _serve's loop (an answer may come synchronously)

    # -- connection events ------------------------------------------------------

    def connectionMade(self) -> None:
        self.callLater = self.site.reactor.callLater  # TimeoutMixin's clock
        tracker = self.site.tracker
        if tracker is not None and not tracker.admit(self):
            self._gone = True
            self.transport.loseConnection()
            return
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.site.timeOut)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        if self._gone:
            return
        self.resetTimeout()
        self._buf += data
        if not self._busy:
            self._serve()
        elif len(self._buf) > MAX_HEAD + self.site.max_body and not self._paused:
            self._paused = True  # a pipelining client waits for the answers
            self.transport.pauseProducing()

    def connectionLost(self, reason: Any = None) -> None:
        self._gone = True
        self.setTimeout(None)
        if self.site.tracker is not None:
            self.site.tracker.forget(self)
        if self.inner is not None:
            self.inner.connectionLost(reason)

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def take_over(self, protocol: Any) -> None:
        """A resource upgraded the connection (`tsnet.http.websocket`): from now
        on its bytes go to ``protocol``, while this channel still counts the
        connection and drops it when the listener stops."""
        self.setTimeout(None)
        self.inner = protocol
        protocol.makeConnection(self.transport)

    # -- requests -----------------------------------------------------------------

    def _serve(self) -> None:
        """Answer the buffered fast requests in order until one must wait for its
        commit, more bytes are needed, or twisted.web must take over."""
        self._serving = True
        try:
            self._serve_buffered()
        finally:
            self._serving = False

    def _serve_buffered(self) -> None:
        buf = self._buf
        while not self._busy and self.inner is None and not self._gone:
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._hand_over()
                return
            parsed = parse_head(bytes(buf[:end]))
            handler = self._handler(parsed)
            if handler is None or parsed is None:
                self._hand_over()
                return
            _, target, headers = parsed
            length = _content_length(headers)
            if length is None or length > self.site.max_body:
                self._hand_over()
                return
            need = end + 4 + length
            if len(buf) < need:
                return
            body = bytes(buf[end + 4:need])
            try:
                d = handler(self.site, target, headers, body)
            except Exception:
                log.failure("fast handler for {target} failed; twisted.web answers",
                            target=target.decode("latin-1"))
                d = None
            if d is None:
                self._hand_over()
                return
            del buf[:need]
            self._close_after = b"close" in headers.get(b"connection", b"").lower()
            self._busy = True
            d.addErrback(self._crashed, target).addCallback(self._answer)
            d.addErrback(lambda f: log.failure("could not answer a fast request", f))

    def _handler(self, parsed: tuple | None) -> FastHandler | None:
        if parsed is None:
            return None
        method, target, headers = parsed
        if method != b"POST" or b"transfer-encoding" in headers or b"expect" in headers:
            return None
        path = target.split(b"?", 1)[0].rstrip(b"/") or b"/"
        fast = self.site.fast_handlers
        return fast.get(path) or fast.get(path.lower())

    def _crashed(self, f: Failure, target: bytes) -> tuple[int, list, bytes]:
        log.failure("fast request failed", f)
        errors = self.site.resource.errors_for(target)
        content_type, body = errors.error_reply(500, "Unexpected exception")
        return 500, [(b"Content-Type", content_type)], body

    def _answer(self, reply: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
        self._busy = False
        if self._gone:
            return
        code, headers, body = reply
        out = [b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n"
               % (code, _REASONS.get(code, b"Unknown"), SERVER_VERSION, self._date())]
        out.extend(b"%s: %s\r\n" % h for h in headers)
        if code != 204:
            out.append(b"Content-Length: %d\r\n" % len(body))
        if self._close_after:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        out.append(body)
        self.transport.write(b"".join(out))
        if self._close_after:
            self._gone = True
            self.transport.loseConnection()
            return
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self.resetTimeout()
        if self._buf and not self._serving:  # (else _serve's loop goes on by itself)
            self._serve()

    def _date(self) -> bytes:
        now = int(self.site.reactor.seconds())
        cached = self.site.date_cache
        if cached[0] != now:
            cached[:] = [now, http.datetimeToString(now)]
        return cached[1]

    # -- hand-over ----------------------------------------------------------------

    def _hand_over(self) -> None:
        """From this request on, the connection is twisted.web's."""
        self.setTimeout(None)
        inner = self.site.build_web_channel(self.addr)
        self.inner = inner
        inner.makeConnection(self.transport)
        data, self._buf = bytes(self._buf), bytearray()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if data:
            inner.dataReceived(data)


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    """The body length: 0 without the header, None when it is not plain digits."""
    v = headers.get(b"content-length")
    if v is None:
        return 0
    if not v.isdigit() or len(v) > 12:
        return None
    return int(v)
