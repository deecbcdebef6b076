"""OpenTSDB's telnet-style line protocol: framing, command dispatch, replies.

Framing splits a whole received buffer at once (a per-line LineReceiver costs
several times more at these rates); parsing is `telnet_parse`; storage is
`ingest`.  Lines are handled strictly in order: when a line needs a token looked
up (an `auth` command, or an `ovh.auth` tag not seen recently) the lines behind
it wait, and the transport is paused, until the answer is in.  Successful puts
are silent; each failing line gets one reply line, in order (specs/opentsdb.md
§1 and §6).
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from tsnet.errors import Forbidden, StorageUnavailable, Unauthorized
from tsnet.listeners import ConnectionTracker, FlowControlled, LineDeadline
from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.model import WRITE, Batch, Principal, SampleSet, anonymous
from tsnet.protocols.opentsdb import BUILD_TIMESTAMP, OPENTSDB_VERSION
from tsnet.protocols.opentsdb.telnet_parse import (
    HELP_COMMANDS,
    IOT_HELP_COMMANDS,
    UNAUTHENTICATED_PUT,
    PutError,
    PutParser,
    help_reply,
    unknown_command_reply,
)

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.opentsdb")

PROTOCOL = "opentsdb"
MAX_LINE = 8192
INVALID_TOKEN = "auth: invalid token"
#: the kinds of `TelnetFactory.logs` (fixed texts: what repeats is counted)
WRITE_FAILURES = "telnet batches not stored"
LOOKUP_FAILURES = "failed telnet token lookups"


def version_reply(tsnet_version: str) -> str:
    return (
        f"net.opentsdb.tools {OPENTSDB_VERSION} built at revision tsnet-{tsnet_version} (MINT)\n"
        f"Built on {time.strftime('%Y/%m/%d %H:%M:%S', time.gmtime(BUILD_TIMESTAMP))} +0000"
        f" by tsnet@{socket.gethostname()}:tsnet\n"
    )


def no_tags_error(metric: str) -> str:
    return f"put: illegal argument: Need at least one tag (metric={metric}, tags={{}})"


class _Direct:
    """Points of the session principal appended by `_process` into its sink's
    columns and not yet accounted."""

    __slots__ = ("n", "sink")

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.n = 0


class TelnetFactory(ConnectionTracker):
    """One per listener: the shared parser (and its cache) and settings."""

    #: seconds `logs` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    def __init__(self, listener: Any, core: Core, site: Any = None) -> None:
        super().__init__(listener, core, PROTOCOL)
        #: failures a client may repeat at will (a batch the storage refuses, a
        #: token the catalog cannot look up): logged once, then counted
        self.logs = LogBound(log, core.reactor, self.log_period)
        self.site = site  # HTTP on the same port (first byte A-Z), when APIs exist
        self.parser = PutParser()
        self.close_on_error = bool(listener.options.get("close_on_error", False))
        self.token_auth = listener.auth == "token"
        self.anonymous = None if self.token_auth else anonymous(listener.solution)
        from tsnet import __version__

        self.version_text = version_reply(__version__)
        self.help_text = help_reply(IOT_HELP_COMMANDS if self.token_auth else HELP_COMMANDS)

    def buildProtocol(self, addr: Any) -> Any:
        from tsnet.protocols.opentsdb.switch import FirstByteSwitch

        return FirstByteSwitch(self, addr)

    def close_all(self) -> None:
        """The listener stops: its connections close, and the counts of the
        failures not summed up yet are logged (the HTTP site's on this port too)."""
        super().close_all()
        self.logs.flush()
        site_logs = getattr(self.site, "fast_logs", None)
        if site_logs is not None:
            site_logs.flush()

    def build_telnet(self) -> TelnetProtocol:
        p = TelnetProtocol()
        p.factory = self
        return p

    def stats_lines(self) -> str:
        m = self.core.metrics
        now = int(self.core.reactor.seconds())
        host = socket.gethostname()

        def total(counter: Any) -> int:
            return int(sum(s.value for mf in counter.collect() for s in mf.samples
                           if s.name.endswith("_total")))

        rows = [
            ("tsd.connectionmgr.connections", len(self.connections), "type=open"),
            ("tsd.rpc.received", total(m.points_received), "type=put"),
            ("tsd.rpc.errors", total(m.points_rejected), "type=invalid_values"),
            ("tsd.datapoints.added", total(m.points_written), "type=all"),
            ("tsd.write.queue", self.core.ingest.queued, "type=items"),
        ]
        return "".join(f"{name} {now} {v} {tag} host={host}\n" for name, v, tag in rows)


@implementer(IHalfCloseableProtocol)
class TelnetProtocol(LineDeadline, FlowControlled, Protocol, TimeoutMixin):
    """One connection.  A client that half-closes (``printf ... | nc -N``) gets its
    remaining lines handled and every reply before the server closes."""

    factory: TelnetFactory

    def __init__(self) -> None:
        self._buf = b""
        self._lines: list[str] = []
        self._pos = 0
        self._waiting = False  # a token lookup is in progress
        self._closing = False
        self._ingest_paused = False
        self._transport_paused = False
        self._principal: Principal | None = None
        self._sink: Any = None  # the session principal's IPointSink
        self._secret: str | None = None
        self._pending_secret: str | None = None
        self._close_when_done = False  # EOF or an overlong line: finish, then close

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory  # admitted (and counted) by the FirstByteSwitch
        self._principal = f.anonymous
        self.setTimeout(f.listener.idle_timeout or None)
        f.core.ingest.registerProducer(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self.factory.core.ingest.unregisterProducer(self)

    def readConnectionLost(self) -> None:
        self._close_when_done = True
        if not self._waiting:  # everything read is handled: dataReceived is synchronous
            self._close()

    def writeConnectionLost(self) -> None:
        self._close()

    def timeoutConnection(self) -> None:
        log.debug("closing idle connection")
        self.transport.loseConnection()

    def line_timed_out(self) -> None:
        self._close()

    # -- framing -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._close_when_done:
            return
        self.resetTimeout()
        self.watch_lines(data)
        buf = self._buf + data if self._buf else data
        nl = buf.rfind(b"\n")
        if nl < 0:
            self._buf = buf
            if len(buf) > MAX_LINE:
                self._too_long()
                self._close()
            return
        self._buf = buf[nl + 1 :]
        lines = _split_lines(buf[:nl])
        # A line over MAX_LINE bytes has over MAX_LINE // 4 characters (UTF-8): screen
        # cheaply in characters, then check in bytes, where the limit is defined.
        if len(self._buf) > MAX_LINE or (nl > MAX_LINE // 4
                                         and max(map(len, lines)) > MAX_LINE // 4):
            raw = buf[:nl].split(b"\n")
            k = next((j for j, b in enumerate(raw) if len(b) > MAX_LINE), None)
            if k is not None:
                lines = lines[:k]
            if k is not None or len(self._buf) > MAX_LINE:
                self._buf = b""
                self._too_long()
        if self._pos < len(self._lines):
            self._lines = self._lines[self._pos :] + lines
        else:
            self._lines = lines
        self._pos = 0
        if not self._waiting:
            self._process()

    def _too_long(self) -> None:
        """Lines over the limit close the connection, after the lines before them."""
        self.factory.logs.emit(LogLevel.info, "connections closed for a line too long",
                               "closing connection: a line is longer than {max} bytes",
                               max=MAX_LINE)
        self.factory.core.metrics.rejected(PROTOCOL, "line_too_long")
        self._close_when_done = True

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._buf = b""
        self.transport.loseConnection()

    # -- processing ----------------------------------------------------------------

    def _process(self) -> None:
        """Handle queued lines in order until done, closing, or waiting on a token.

        Points of the session's principal go into the connection's point sink
        (`Ingest.sink`: the write queue's own columns), runs of plain lines
        through the parser's bulk fast path; points of per-line tokens are submitted per principal.
        """
        f = self.factory
        core = f.core
        lines = self._lines
        n = len(lines)
        i = self._pos
        out: list[str] = []
        sets: dict[Principal, SampleSet] = {}
        rejected = 0

        session = self._principal
        if self._secret is not None:
            try:
                session = core.auth.cached(self._secret, WRITE)
            except (Unauthorized, Forbidden):
                session = self._principal = None
                self._secret = None
            else:
                if session is None:  # cache dropped: look the session token up again
                    return self._wait(core.auth.authenticate(self._secret, WRITE), i,
                                      self._session_checked)
        token_auth = f.token_auth
        allow_no_tags = token_auth or bool(session and session.tags)
        samples = sink = None
        if session is not None:
            sink = self._sink
            if sink is None or sink.principal is not session:
                sink = self._sink = core.ingest.sink(session, PROTOCOL)
            samples = sink.samples()
        direct = _Direct(sink)
        take = f.parser.take_puts
        # (a line take() stopped at; a line of a session without one, parse in full)
        parse_new, parse = f.parser.parse_new, f.parser.parse
        close = False

        while i < n:
            if samples is not None:
                j = take(lines, i, samples)
                direct.n += j - i
                i = j
                if i == n:
                    break
            line = lines[i]
            i += 1
            if line[:4] == "put " or line == "put":
                try:
                    key, t, v, tok = (parse_new if samples is not None else parse)(
                        line, allow_no_tags)
                except PutError as e:
                    out.append(str(e))
                    rejected += 1
                    if f.close_on_error:
                        close = True
                        break
                    continue
                target = samples
                if tok is not None and token_auth:
                    try:
                        p = core.auth.cached(tok, WRITE)
                    except (Unauthorized, Forbidden):
                        p = None
                        out.append(UNAUTHENTICATED_PUT)
                        rejected += 1
                        if session is None or f.close_on_error:
                            close = True
                            break
                        continue
                    if p is None:  # not seen recently: look it up, then redo this line
                        self._flush(out, sets, rejected, direct)
                        return self._wait(core.auth.authenticate(tok, WRITE), i - 1,
                                          self._line_token_checked)
                    if not key[2] and not p.tags:
                        out.append(no_tags_error(key[0]))
                        rejected += 1
                        continue
                    target = sets.setdefault(p, SampleSet())
                elif target is None:
                    out.append(UNAUTHENTICATED_PUT)
                    rejected += 1
                    close = True
                    break
                elif not key[2] and not session.tags:  # type: ignore[union-attr]
                    out.append(no_tags_error(key[0]))
                    rejected += 1
                    continue
                else:
                    direct.n += 1
                f.parser.add(target, key, t, v)
                continue
            word = line.split(" ", 1)[0]
            if word == "auth":
                if not token_auth:
                    out.append("ok")  # auth = none: every write goes to the listener's solution
                    continue
                self._flush(out, sets, rejected, direct)
                self._pending_secret = line[5:].strip()
                return self._wait(core.auth.authenticate(self._pending_secret, WRITE), i,
                                  self._authed)
            if word == "version":
                out.append(f.version_text[:-1])
            elif word == "help":
                out.append(f.help_text)
            elif word == "exit":
                close = True
                break
            elif word == "stats":
                out.append(f.stats_lines()[:-1])
            elif word == "dropcaches":
                f.parser = PutParser()
                parse = f.parser.parse
                take = f.parser.take_puts
                out.append("Caches dropped.")
            else:
                out.append(unknown_command_reply(word))
        self._pos = i
        self._flush(out, sets, rejected, direct)
        if close or self._close_when_done:
            self._close()

    def _flush(self, out: list[str], sets: dict[Principal, SampleSet], rejected: int,
               direct: _Direct) -> None:
        """Send the replies, account for the points appended into the session's
        sink, and submit the points of per-line tokens."""
        core = self.factory.core
        if out:
            self.transport.write(("\n".join(out) + "\n").encode("utf-8"))
            out.clear()
        if rejected:
            core.metrics.rejected(PROTOCOL, "invalid", rejected)
        if direct.sink is not None:
            direct.sink.added(direct.n)
        direct.n = 0
        for principal, samples in sets.items():
            if samples.recount():
                core.metrics.received(PROTOCOL, samples.count)
                d = core.ingest.submit(Batch(samples=samples), principal, PROTOCOL)
                d.addErrback(self._write_failed, samples.count)
        sets.clear()

    def _write_failed(self, f: Any, n: int) -> None:
        if f.check(StorageUnavailable) and f.value.kept:
            return  # still queued and retried (telnet has no ack); ingest logs the outage
        self.factory.logs.emit(LogLevel.error, WRITE_FAILURES,
                               "{n} points could not be stored: {reason}", n=n,
                               reason=f.getErrorMessage())

    # -- waiting on token lookups ----------------------------------------------------

    def _wait(self, d: defer.Deferred, resume_at: int, then: Any) -> None:
        self._pos = resume_at
        self._waiting = True
        self._update_flow()

        def done(result: Any) -> None:
            self._waiting = False
            self._update_flow()
            if self._closing:
                return
            try:
                then(result)
            except Exception:
                self.factory.logs.failure(LOOKUP_FAILURES, "handling a token lookup failed")
                self._close()
                return
            if not self._closing and not self._waiting:
                self._process()
            if self._close_when_done and not self._waiting:
                self._close()

        d.addBoth(done)

    def _authed(self, result: Any) -> None:
        if isinstance(result, Principal):
            self._principal = result
            self._secret = self._pending_secret
            self.transport.write(b"ok\n")
        else:
            if not result.check(Unauthorized, Forbidden):
                self.factory.logs.failure(LOOKUP_FAILURES, "token lookup failed", result)
            self.transport.write(INVALID_TOKEN.encode() + b"\n")
            self._close()

    def _session_checked(self, result: Any) -> None:
        if not isinstance(result, Principal):
            self._principal = None
            self._secret = None

    def _line_token_checked(self, result: Any) -> None:
        """The token is now in the auth cache either way, and the line is redone;
        if the catalog could not be read at all, give up on the connection."""
        if not isinstance(result, Principal) and not result.check(Unauthorized, Forbidden):
            self.factory.logs.failure(LOOKUP_FAILURES, "token lookup failed", result)
            self.transport.write(UNAUTHENTICATED_PUT.encode() + b"\n")
            self._close()


def _split_lines(chunk: bytes) -> list[str]:
    """Complete lines of a buffer (without its last newline); ``\\r\\n`` too."""
    try:
        lines = chunk.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = [_decode(b) for b in chunk.split(b"\n")]
    if b"\r" in chunk:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return lines


def _decode(b: bytes) -> str:
    """UTF-8, else ISO-8859-1 (specs/opentsdb.md §6.4)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")
