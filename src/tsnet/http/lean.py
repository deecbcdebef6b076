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
answer, so replies stay in order.  A head no HTTP/1.x server may take (a
malformed line, a control character, a Content-Length that is not one) is not
handed over: it gets a 400 in the dialect of the route it names, where
twisted.web would answer a bare one, and the connection closes.  Fast requests
that fail are logged once a kind, then counted (`fast_logs`).

The channel is also where an ``http`` listener counts and limits its
connections (``max_connections``, the ``tsnet_connections`` gauge), whatever
they serve, and where each request gets its deadline (``request_timeout``,
from its first byte; the `tsnet.listeners.Deadline` goes on with the request
when twisted.web takes over).  A client that half-closes gets the answer to
every request it sent, then the connection closes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import version as SERVER_VERSION
from zope.interface import implementer

from tsnet.http.replies import PLAIN_ERRORS
from tsnet.http.site import CONTROLS, MAX_LENGTH_DIGITS, timeout_reply
from tsnet.logbound import DEFAULT_PERIOD, LogBound

log = Logger(namespace="tsnet.http")

#: the most bytes a request line plus headers may have before twisted.web judges it
MAX_HEAD = 16384
MAX_HEADERS = 100

#: A fast handler: (site, target, headers, body) -> Deferred[(status, headers, body)],
#: or None when the request is not one it answers (twisted.web then serves it).
FastHandler = Callable[[Any, bytes, dict[bytes, bytes], bytes], "defer.Deferred | None"]

_REASONS = http.RESPONSES

#: RFC 9110's tchar: what a method or a header name is made of
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: what a request target is made of (printable ASCII)
_TARGET_CHARS = bytes(range(0x21, 0x7F))
#: every byte but the control characters (HTAB is not one): what is left of a
#: head without them is its CRLFs, if it is well-formed (the head is split at
#: CRLF, so a CR or LF left in a line is a bare one)
_NOT_CONTROLS = bytes(b for b in range(256) if b not in CONTROLS)
#: a header line that is not a name (a token) and a colon: a fold, or malformed
_NOT_A_HEADER = re.compile(rb"\r\n(?![-!#$%&'*+.^_`|~0-9A-Za-z]+:)")

#: the kinds of `fast_logs` (fixed texts: what repeats is counted)
HANDLER_CRASHES = "fast handlers that raised"
FAILED_FAST = "failed fast requests"
UNANSWERED = "fast requests that could not be answered"


def _token(b: bytes) -> bool:
    return bool(b) and not b.translate(None, _TCHAR)


def parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]] | None:
    """(method, target, headers with lower-case names) of a plain HTTP/1.1
    request head, or None for anything this front leaves to twisted.web (or
    refuses, see `head_error`): another version, an absolute or odd target, a
    repeated, folded or malformed header.  Never raises, whatever the bytes."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[1][:1] != b"/" \
            or parts[1].translate(None, _TARGET_CHARS):
        return None
    n = len(lines)
    if n > MAX_HEADERS + 1 or len(head.translate(None, _NOT_CONTROLS)) != 2 * (n - 1) \
            or _NOT_A_HEADER.search(head):
        return None  # (a control character but CRLF; a line not a name and a colon)
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in headers:
            return None
        headers[name] = value.strip(b" \t")
    return parts[0], parts[1], headers


def head_error(head: bytes) -> str | None:
    """Why no HTTP/1.x server may take this request head (twisted.web would
    answer a bare 400 and hang up), or None when it is well-formed.  Asked
    only of the heads on their way to twisted.web: fast requests pay nothing."""
    lines = head.split(b"\r\n")
    if not lines[0]:
        return None  # an empty line before the request line: twisted.web skips it
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _token(parts[0]) or not parts[1] \
            or parts[1].translate(None, _TARGET_CHARS):
        return "malformed request line"
    if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return "unsupported HTTP version"
    framing = 0
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            continue  # an obsolete line folding: twisted.web joins it
        name, sep, value = line.partition(b":")
        if not sep or not _token(name):
            return "malformed header"
        value = value.strip(b" \t")
        if value.translate(None, CONTROLS) != value:
            return "invalid character in a header value"
        name = name.lower()
        if name == b"content-length":
            framing += 1
            if not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return "invalid Content-Length"
        elif name == b"transfer-encoding":
            coding = value.lower()
            if coding == b"chunked":
                framing += 1
            elif coding != b"identity":  # (which twisted.web, as HTTP/1.0, ignores)
                return "unsupported Transfer-Encoding"
    if framing > 1:
        return "conflicting Content-Length and Transfer-Encoding"
    return None


def fast_logs(site: Any) -> LogBound:
    """The site's bounded log of fast requests that failed: a client may
    repeat one at will, so the first of a kind is logged in full and the rest
    counted (one per site, made at its first use)."""
    logs = getattr(site, "fast_logs", None)
    if logs is None:
        logs = site.fast_logs = LogBound(log, site.reactor, LeanHTTPChannel.log_period)
    return logs


def _errors_of(site: Any, target: bytes) -> Any:
    """The error dialect of the route ``target`` names."""
    router = getattr(site, "resource", None)
    if not hasattr(router, "errors_for"):
        return PLAIN_ERRORS
    return router.errors_for(target.split(b"?", 1)[0] if target[:1] == b"/" else b"/")


@implementer(IHalfCloseableProtocol)
class LeanHTTPChannel(Protocol, TimeoutMixin):
    """Serves fast requests itself; hands the connection to ``site``'s
    twisted.web channel at the first request it does not serve."""

    reports_progress = True  # (to its ConnectionTracker: see `watch`)
    #: seconds `fast_logs` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

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
        self._eof = False  # the client half-closed: answer what was read, then close
        self.tracker: Any = None  # the listener's ConnectionTracker, once watched
        self.tracked: Any = None  # the connection it admitted (this one, or a front)
        self._deadline: Any = None  # of the request under way

    # -- connection events ------------------------------------------------------

    def connectionMade(self) -> None:
        self.callLater = self.site.reactor.callLater  # TimeoutMixin's clock
        tracker = self.site.tracker
        if tracker is not None:
            if not tracker.admit(self):
                self._gone = True
                self.transport.loseConnection()
                return
            self.watch(tracker, self)
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.site.timeOut)

    def watch(self, tracker: Any, conn: Any) -> None:
        """Give each request a deadline and report progress to ``tracker``,
        which admitted ``conn`` (this channel, or the front that built it)."""
        self.tracker = tracker
        self.tracked = conn
        self._deadline = tracker.deadline(conn, self.site.request_timeout, self._timed_out)

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

    def readConnectionLost(self) -> None:
        inner = self.inner
        if inner is not None:
            if IHalfCloseableProtocol.providedBy(inner):
                inner.readConnectionLost()
            else:
                self.transport.loseConnection()
            return
        self._eof = True
        if not self._busy:
            self._settle()

    def writeConnectionLost(self) -> None:
        self._gone = True
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def _timed_out(self) -> None:
        """The request under way did not arrive in time: 408, then close."""
        if self._gone or self.inner is not None or self._busy:
            return
        self._gone = True
        self.setTimeout(None)
        first = bytes(self._buf[:512]).split(b"\r\n", 1)[0].split(b" ")
        self.transport.write(timeout_reply(self.site, first[1] if len(first) > 1 else b"/"))
        self.tracker.close(self.tracked, self.transport)

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
        self._settle()

    def _settle(self) -> None:
        """Between requests: a partial one gets its deadline running; after a
        half-close, the connection closes once every whole request is answered."""
        if self._busy or self._gone or self.inner is not None:
            return
        if self._eof:
            self._gone = True
            if self.tracker is not None:  # the place is free now, not once the close is done
                self.tracker.forget(self.tracked)
            self.transport.loseConnection()
            return
        d = self._deadline
        if d is not None and self._buf:
            d.begin()
            d.received = len(self._buf)

    def _serve_buffered(self) -> None:
        buf = self._buf
        while not self._busy and self.inner is None and not self._gone:
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._hand_over()
                return
            head = bytes(buf[:end])
            parsed = parse_head(head)
            handler = None if parsed is None else self._handler(parsed)
            if handler is None or parsed is None:
                reason = head_error(head)  # (only on the way to twisted.web)
                if reason is not None:
                    self._bad_head(head, reason)
                else:
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
                fast_logs(self.site).failure(
                    HANDLER_CRASHES, "fast handler for {target} failed; twisted.web answers",
                    target=target.split(b"?", 1)[0].decode("latin-1"))
                d = None
            if d is None:
                self._hand_over()
                return
            del buf[:need]
            if self._deadline is not None:
                self._deadline.end()
            self._close_after = b"close" in headers.get(b"connection", b"").lower()
            self._busy = True
            d.addErrback(self._crashed, target).addCallback(self._answer)
            d.addErrback(lambda f: fast_logs(self.site).failure(
                UNANSWERED, "could not answer a fast request", f))

    def _handler(self, parsed: tuple) -> FastHandler | None:
        method, target, headers = parsed
        if method != b"POST" or b"transfer-encoding" in headers or b"expect" in headers:
            return None
        path = target.split(b"?", 1)[0].rstrip(b"/") or b"/"
        fast = self.site.fast_handlers
        return fast.get(path) or fast.get(path.lower())

    def _crashed(self, f: Failure, target: bytes) -> tuple[int, list, bytes]:
        fast_logs(self.site).failure(FAILED_FAST, "fast request for {target} failed", f,
                                     target=target.split(b"?", 1)[0].decode("latin-1"))
        content_type, body = _errors_of(self.site, target).error_reply(
            500, "Unexpected exception")
        return 500, [(b"Content-Type", content_type)], body

    def _bad_head(self, head: bytes, reason: str) -> None:
        """A head no server may take: 400 in the dialect of its route (when
        it names one), then the connection closes, as the bytes after it
        cannot be framed.  Nothing is logged: the client is told."""
        self._gone = True
        self.setTimeout(None)
        target = head[:512].split(b"\r\n", 1)[0].split(b" ")
        content_type, body = _errors_of(
            self.site, target[1] if len(target) > 1 else b"/").error_reply(
            400, "Bad Request", reason)
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nServer: %s\r\nDate: %s\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (SERVER_VERSION, self._date(), content_type, len(body), body))
        if self.tracker is not None:
            self.tracker.close(self.tracked, self.transport)
        else:
            self.transport.loseConnection()

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
        if not self._serving:  # (else _serve's loop goes on by itself)
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
        d = self._deadline
        if d is not None:  # the request under way keeps its deadline
            d.received = 0  # (twisted.web counts the bytes handed on)
            inner.watch(self.tracker, self.tracked, d)
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
