"""The ``graphite`` family: Graphite plaintext over TCP and UDP, as carbon takes it.

Framing is carbon's: lines end with LF, a line longer than ``max_line``
(carbon's 16384 bytes) closes the connection, a bad line is logged and skipped;
and tsnet's: a line must come whole within ``line_timeout`` (`LineDeadline`).
Parsing is `graphite_parse`; points go into the write queue through one
`IPointSink` per connection, committed within the flush interval (carbon does
not acknowledge either).  UDP datagrams are read whole, and their points are
offered to the queue, which refuses them (counted) when it is full rather than
block the reactor.

Plaintext carries no credentials, so these listeners write into their
``solution`` (``auth = token`` is a config error), as carbon writes into one
tree.  Built on `tsnet.plugin` only, like any third-party family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from tsnet.plugin import (
    Batch,
    Config,
    ConnectionTracker,
    Core,
    DatagramListenerService,
    FlowControlled,
    IProtocolPlugin,
    Key,
    LineDeadline,
    Listener,
    ProtocolPlugin,
    SampleSet,
    StreamListenerService,
    anonymous,
    positive_int,
)
from tsnet_lineproto.graphite_parse import GraphiteParser

log = Logger(namespace="tsnet.graphite")

PROTOCOL = "graphite"
#: carbon's line limit (Twisted's LineOnlyReceiver.MAX_LENGTH)
MAX_LINE = 16384
#: seconds between two summaries of the bad lines one UDP listener received
COMPLAINT_INTERVAL = 60.0


def decode_lines(chunk: bytes, datagram: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """The lines of ``chunk`` as text, and the lines that are not UTF-8 (carbon
    decodes each line and drops those that fail).  A stream splits at LF only
    (carbon's LineOnlyReceiver); a datagram as ``str.splitlines`` does (carbon's
    MetricDatagramReceiver)."""
    try:
        text = chunk.decode("utf-8")
        return (text.splitlines() if datagram else text.split("\n")), []
    except UnicodeDecodeError:
        pass
    good: list[str] = []
    bad: list[tuple[str, str]] = []
    for raw in chunk.split(b"\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append((raw[:400].decode("utf-8", "replace"), "not UTF-8"))
            continue
        if datagram:
            good.extend(line.splitlines())
        else:
            good.append(line)
    return good, bad


class _Complaints:
    """Bad lines, logged the first time and then summed up, never once per line."""

    def __init__(self, where: str, reactor: Any, interval: float | None) -> None:
        self.where = where
        self.reactor = reactor
        self.interval = interval  # None: summed up only by `close`
        self.unreported = 0
        self.total = 0
        self.last = 0.0

    def note(self, bad: list[tuple[str, str]], peer: str) -> None:
        if not bad:
            return
        first = self.total == 0
        self.total += len(bad)
        self.unreported += len(bad)
        now = self.reactor.seconds()
        if first or (self.interval is not None and now - self.last >= self.interval):
            line, why = bad[0]
            log.warn(
                "{where}: invalid line from {peer} ignored ({why}): {line!r}; "
                "{n} such lines so far",
                where=self.where,
                peer=peer,
                why=why,
                line=line,
                n=self.total,
            )
            self.unreported = 0
            self.last = now

    def close(self, peer: str) -> None:
        if self.unreported:
            log.warn(
                "{where}: {n} invalid lines from {peer} ignored in all",
                where=self.where,
                peer=peer,
                n=self.total,
            )
            self.unreported = 0


def _peer(transport: Any) -> str:
    addr = transport.getPeer()
    host = getattr(addr, "host", None)
    return f"{host}:{addr.port}" if host is not None else str(addr)


class GraphiteLineProtocol(LineDeadline, FlowControlled, Protocol, TimeoutMixin):
    """One TCP (or TLS, or Unix) connection of plaintext lines; each line must
    come whole within the listener's ``line_timeout`` (and ``min_rate``)."""

    factory: GraphiteFactory

    def __init__(self) -> None:
        self._buf = b""
        self._sink: Any = None
        self._peer = "?"
        self._complaints: _Complaints | None = None
        self._closing = False

    def connectionMade(self) -> None:
        f = self.factory
        if not f.admit(self):
            self._closing = True
            self.transport.loseConnection()
            return
        self._peer = _peer(self.transport)
        self._complaints = _Complaints(f"listener {f.listener.name}", f.core.reactor, None)
        self._sink = f.core.ingest.sink(f.principal, PROTOCOL)
        self.callLater = f.core.reactor.callLater  # TimeoutMixin's clock
        self.setTimeout(f.listener.idle_timeout or None)
        f.core.ingest.registerProducer(self)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self.watch_lines(data)
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            self._buf = buf
        else:
            self._buf = buf[end + 1 :]
            self._lines(buf[:end])
        if not self._closing and len(self._buf) > self.factory.max_line:
            self._too_long(len(self._buf))

    def _lines(self, chunk: bytes) -> None:
        f = self.factory
        lines, bad = decode_lines(chunk)
        if len(chunk) > f.max_line:
            longest = max(map(len, lines))
            if longest > f.max_line:  # carbon closes the connection on such a line
                keep = []
                for line in lines:
                    if len(line) > f.max_line:
                        break
                    keep.append(line)
                self._take(keep, bad)
                self._too_long(longest)
                return
        self._take(lines, bad)

    def _take(self, lines: list[str], bad: list[tuple[str, str]]) -> None:
        f = self.factory
        now_ns = int(f.core.reactor.seconds() * 1e9)
        n, more = f.parser.take(lines, self._sink.columns(), now_ns)
        self._sink.added(n)
        bad += more
        if bad:
            f.core.metrics.rejected(PROTOCOL, "invalid", len(bad))
            assert self._complaints is not None
            self._complaints.note(bad, self._peer)

    def _too_long(self, length: int) -> None:
        f = self.factory
        f.core.metrics.rejected(PROTOCOL, "line_too_long")
        log.warn(
            "listener {listener}: a line of {length} bytes from {peer} is over {limit}: "
            "closing the connection, as carbon does",
            listener=f.listener.name,
            length=length,
            peer=self._peer,
            limit=f.max_line,
        )
        self._closing = True
        self._buf = b""
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def line_timed_out(self) -> None:
        self._closing = True  # (the partial line is not a line: it is not stored)
        self._buf = b""
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        f = self.factory
        if self._sink is None:  # refused at admission
            return
        if self._buf and not self._closing and reason is not None and reason.check(ConnectionDone):
            # the client closed cleanly after a last line without LF: it is whole
            self._take([self._buf.decode("utf-8", "replace")], [])
        self._buf = b""
        f.core.ingest.unregisterProducer(self)
        f.forget(self)
        if self._complaints is not None:
            self._complaints.close(self._peer)


class GraphiteFactory(ConnectionTracker):
    """One per stream listener: the settings and the shared parser cache."""

    def __init__(self, listener: Listener, core: Core) -> None:
        super().__init__(listener, core, PROTOCOL)
        self.parser = GraphiteParser()
        self.principal = anonymous(listener.solution)
        self.max_line = listener.options.get("max_line", MAX_LINE)

    def buildProtocol(self, addr: Any) -> GraphiteLineProtocol:
        p = GraphiteLineProtocol()
        p.factory = self
        return p


class GraphiteDatagramProtocol(DatagramProtocol):
    """A UDP listener: every datagram is lines (the last may lack its LF)."""

    noisy = False

    def __init__(self, listener: Listener, core: Core) -> None:
        self.listener = listener
        self.core = core
        self.parser = GraphiteParser()
        self.principal = anonymous(listener.solution)
        self.complaints = _Complaints(f"listener {listener.name}", core.reactor, COMPLAINT_INTERVAL)
        self.overloaded = False

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        core = self.core
        lines, bad = decode_lines(data, datagram=True)
        samples = SampleSet()
        n, more = self.parser.take(lines, samples.columns, int(core.reactor.seconds() * 1e9))
        bad += more
        peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        if bad:
            core.metrics.rejected(PROTOCOL, "invalid", len(bad))
            self.complaints.note(bad, peer)
        if not n:
            return
        samples.count = n
        core.metrics.received(PROTOCOL, n)
        if core.ingest.offer(Batch(samples=samples), self.principal, PROTOCOL):
            if self.overloaded:
                self.overloaded = False
                log.info(
                    "listener {listener}: the write queue takes datagrams again",
                    listener=self.listener.name,
                )
            return
        core.metrics.rejected(PROTOCOL, "overloaded", n)
        if not self.overloaded:
            self.overloaded = True
            log.warn(
                "listener {listener}: the write queue is full: dropping datagrams "
                "(counted in tsnet_points_rejected_total) until it drains",
                listener=self.listener.name,
            )


class GraphitePlugin(ProtocolPlugin):
    name = "graphite"
    description = "Graphite plaintext (path value timestamp) over TCP and UDP, as carbon"
    transports = frozenset({"stream", "udp"})
    listener_keys = {
        "max_line": Key(positive_int, MAX_LINE, "bytes a line may have (carbon: 16384)"),
    }

    def check(
        self, listener: Listener, config: Config, plugins: Mapping[str, IProtocolPlugin]
    ) -> None:
        if listener.auth == "token":
            raise ValueError(
                "auth: Graphite plaintext carries no credentials; use auth = none "
                "and the listener's solution"
            )

    def makeService(self, listener: Listener, core: Core) -> Any:
        if listener.kind == "udp":
            return DatagramListenerService(
                listener, GraphiteDatagramProtocol(listener, core), core.reactor
            )
        return StreamListenerService(listener, GraphiteFactory(listener, core), core.reactor)
