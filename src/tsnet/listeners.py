"""Listening services shared by every protocol family: bind an endpoint, log the
real address, bound connections, close everything on stop."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tsnet.config import Listener
from tsnet.errors import ListenError
from tsnet.tls import server_endpoint

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.listener")


def describe_address(addr: Any, endpoint: str = "") -> str:
    """``tcp:127.0.0.1:40213`` / ``ssl:...`` / ``unix:/path`` for the bound-endpoint
    log line (TLS ports report TCP addresses: the endpoint string says ssl)."""
    kind = getattr(addr, "type", None)
    if kind in ("TCP", "UDP"):
        scheme = "ssl" if endpoint.lower().startswith("ssl:") else kind.lower()
        return f"{scheme}:{addr.host}:{addr.port}"
    name = getattr(addr, "name", None)
    if name is not None:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    return str(addr)


#: seconds a connection may take over its first whole request or line (or a
#: later one) before a newcomer to a full listener may take its place
EVICT_AFTER = 0.5
#: seconds between the summary lines of a burst of refused, evicted or timed-out
#: connections (the first of a burst is logged at once)
REPORT_INTERVAL = 10.0
#: seconds a closed connection may take to flush before it is aborted
ABORT_AFTER = 5.0


def peer_host(transport: Any) -> str | None:
    """The client's IP address, or None for a peer without one (a Unix socket)."""
    try:
        return getattr(transport.getPeer(), "host", None)
    except Exception:  # a transport already gone
        return None


class _Reports:
    """Bounded logs of per-connection events: the first of a burst is logged at
    once, the rest are counted into one line every `REPORT_INTERVAL` seconds
    while the burst lasts (a flood of 10 000 connections writes two lines)."""

    TEXTS = {
        "full": "refused (the listener was full)",
        "address": "refused (over max_connections_per_address)",
        "evicted": "dropped to make room (no whole request or line in time)",
        "timeout": "closed (a request or line did not arrive in time)",
    }

    def __init__(self, listener: str, reactor: Any) -> None:
        self.listener = listener
        self.reactor = reactor
        self.counts: dict[str, int] = {}
        self.call: Any = None

    def note(self, kind: str, **fields: Any) -> None:
        if self.call is None:
            if kind in ("full", "address"):
                log.warn("listener {listener}: a connection from {host} " + self.TEXTS[kind]
                         + "; {limit} reached", listener=self.listener, kind=kind, **fields)
            else:
                log.info("listener {listener}: a connection from {host} " + self.TEXTS[kind],
                         listener=self.listener, kind=kind, **fields)
            self.call = self.reactor.callLater(REPORT_INTERVAL, self.flush)
            return
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def flush(self, final: bool = False) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if not self.counts:
            return
        counts, self.counts = self.counts, {}
        parts = ", ".join(f"{n} {self.TEXTS[k]}" for k, n in sorted(counts.items()))
        log.warn("listener {listener}: in the last {seconds:.0f} s, connections: {summary}",
                 listener=self.listener, seconds=REPORT_INTERVAL, summary=parts,
                 counts=counts)
        if not final:
            self.call = self.reactor.callLater(REPORT_INTERVAL, self.flush)


class ConnectionTracker(Factory):
    """A factory base that counts, limits and can drop its connections.

    Limits: ``max_connections`` in all, ``max_connections_per_address`` from one
    client IP (peers without an address, on Unix sockets, are not capped by
    it).  Fairness: a connection that reports its progress (``reports_progress``:
    it makes its `Deadline` with `deadline`) is *slow* from the moment it is
    admitted, and again from the first byte of each request or line, until that
    is whole.  When the listener is full, the connection slow the longest (over
    `EVICT_AFTER` seconds) is dropped for the newcomer; only when none is, the
    newcomer is refused.  So silent and trickling sockets cannot lock out the
    clients that send whole requests, and established clients between requests
    are never dropped for newcomers.  Refusals, drops and timeouts are logged
    in bursts (`_Reports`), not once a socket.  `close` closes a connection
    that may not read its last reply.
    """

    noisy = False

    def __init__(self, listener: Listener, core: Core, protocol_name: str) -> None:
        self.listener = listener
        self.core = core
        self.protocol_name = protocol_name
        self.connections: set[Any] = set()
        self._hosts: dict[Any, str] = {}  # connection -> its client address
        self._per_host: dict[str, int] = {}
        #: connections waiting on the client for a whole request or line, the
        #: longest-waiting first (insertion order), with the time they began
        self._slow: dict[Any, float] = {}
        self._deadlines: dict[Any, Deadline] = {}
        self._reports = _Reports(listener.name, core.reactor)

    def admit(self, proto: Any) -> bool:
        """Called from connectionMade: False when the listener is full (or the
        client's address has its share); may drop a slow connection first."""
        listener = self.listener
        host = peer_host(proto.transport)
        cap = listener.max_connections_per_address
        if cap and host is not None and self._per_host.get(host, 0) >= cap:
            self._reports.note("address", host=host, limit=f"max_connections_per_address={cap}")
            return False
        now = self.core.reactor.seconds()
        if len(self.connections) >= listener.max_connections:
            victim = next(iter(self._slow.items()), None)
            if victim is None or now - victim[1] < EVICT_AFTER:
                self._reports.note("full", host=host,
                                   limit=f"max_connections={listener.max_connections}")
                return False
            self._evict(victim[0])
        self.connections.add(proto)
        if host is not None:
            self._hosts[proto] = host
            self._per_host[host] = self._per_host.get(host, 0) + 1
        if getattr(proto, "reports_progress", False):
            self._slow[proto] = now
        self.core.metrics.connection_opened(self.protocol_name, listener.name)
        return True

    def _evict(self, conn: Any) -> None:
        self._reports.note("evicted", host=self._hosts.get(conn))
        self.forget(conn)
        transport = conn.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()

    def forget(self, proto: Any) -> None:
        if proto in self.connections:
            self.connections.discard(proto)
            self._slow.pop(proto, None)
            deadline = self._deadlines.pop(proto, None)
            if deadline is not None:
                deadline.cancel()
            host = self._hosts.pop(proto, None)
            if host is not None:
                left = self._per_host[host] - 1
                if left:
                    self._per_host[host] = left
                else:
                    del self._per_host[host]
            self.core.metrics.connection_closed(self.protocol_name, self.listener.name)

    def deadline(self, conn: Any, timeout: float, expired: Callable[[], None]) -> Deadline:
        """The `Deadline` of the requests or lines of ``conn`` (an admitted
        connection), cancelled when it is forgotten; ``expired`` closes it."""
        d = Deadline(self, conn, timeout, self.listener.min_rate, expired)
        if conn in self.connections:
            old = self._deadlines.get(conn)
            if old is not None:
                old.cancel()
            self._deadlines[conn] = d
        return d

    def close(self, conn: Any, transport: Any = None) -> None:
        """Close ``conn`` once what is written to it is sent, and abort it
        after `ABORT_AFTER` seconds if the client does not read that."""
        transport = transport or conn.transport
        if transport is None:
            return
        transport.loseConnection()

        def late() -> None:
            if conn in self.connections:
                abort = getattr(transport, "abortConnection", None)
                if abort is not None:
                    abort()

        self.core.reactor.callLater(ABORT_AFTER, late)

    def close_all(self) -> None:
        self._reports.flush(final=True)
        for p in list(self.connections):
            if p.transport is not None:
                p.transport.loseConnection()


class Deadline:
    """The time a client has to send one whole request or line: ``timeout``
    seconds from its first byte, plus one second for every ``min_rate`` bytes
    of it that came, so a trickle cannot hold a connection (an idle timeout
    only measures silence).  ``begin`` at the first byte, ``add`` the bytes,
    ``end`` when it is whole; ``hold`` while the server does not read (its
    backpressure is not the client's slowness), ``release`` after.  A timeout
    of 0 sets no deadline, yet still tells the tracker which connections are
    slow.  One timer a connection, rescheduled only when it fires."""

    __slots__ = ("_call", "conn", "expired", "held", "min_rate", "received", "running",
                 "started", "timeout", "tracker")

    def __init__(self, tracker: ConnectionTracker, conn: Any, timeout: float, min_rate: float,
                 expired: Callable[[], None]) -> None:
        self.tracker = tracker
        self.conn = conn
        self.timeout = timeout
        self.min_rate = min_rate
        self.expired = expired
        self.running = False
        self.held = False
        self.started = 0.0
        self.received = 0
        self._call: Any = None

    def begin(self) -> None:
        """The first byte of a request or line came."""
        if self.running:
            return
        self.running = True
        tracker = self.tracker
        self.started = tracker.core.reactor.seconds()
        self.received = 0
        if self.held:
            return  # (release starts the clock)
        conn = self.conn
        if conn not in tracker._slow and conn in tracker.connections:
            tracker._slow[conn] = self.started
        if self.timeout:
            self._arm(self.timeout)

    def add(self, n: int) -> None:
        self.received += n

    def end(self) -> None:
        """The request or line is whole."""
        self.running = False
        self.tracker._slow.pop(self.conn, None)

    def hold(self) -> None:
        """The server stopped reading: the client is not slow meanwhile."""
        self.held = True
        self.tracker._slow.pop(self.conn, None)

    def release(self) -> None:
        """Reading again: a request or line under way gets its time anew."""
        if not self.held:
            return
        self.held = False
        if self.running:
            tracker = self.tracker
            self.started = tracker.core.reactor.seconds()
            self.received = 0
            if self.conn in tracker.connections:
                tracker._slow.setdefault(self.conn, self.started)
            if self.timeout:
                self._arm(self.timeout)

    def cancel(self) -> None:
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self, delay: float) -> None:
        if self._call is None or not self._call.active():
            self._call = self.tracker.core.reactor.callLater(max(delay, 0.0), self._fire)

    def _fire(self) -> None:
        self._call = None
        if not self.running or self.held:
            return
        due = self.started + self.timeout
        if self.min_rate:
            due += self.received / self.min_rate
        delay = due - self.tracker.core.reactor.seconds()
        if delay > 0:
            self._arm(delay)
            return
        self.running = False
        self.tracker._reports.note("timeout", host=self.tracker._hosts.get(self.conn))
        self.expired()


class LineDeadline:
    """A mixin for line protocols (beside `FlowControlled`): each line must
    arrive whole within the listener's ``line_timeout`` (and ``min_rate``)
    from its first byte, and a connection is *slow* for its tracker (the
    factory, a `ConnectionTracker`) until its first whole line.  Call
    `watch_lines` with every chunk at the top of ``dataReceived``; override
    `line_timed_out` to close the protocol's own way (the partial line is not
    a line).  ``tracked`` is the connection the tracker admitted, when a front
    (the OpenTSDB port's first-byte switch) admitted it for this protocol."""

    reports_progress = True
    tracked: Any = None
    _line_deadline: Deadline | None = None

    def watch_lines(self, data: bytes) -> None:
        d = self._line_deadline
        if d is None:
            f = self.factory  # type: ignore[attr-defined]
            d = self._line_deadline = f.deadline(self.tracked or self,
                                                 f.listener.line_timeout, self.line_timed_out)
        nl = data.rfind(b"\n")
        if nl < 0:
            d.begin()
            d.add(len(data))
            return
        d.end()
        tail = len(data) - nl - 1
        if tail:
            d.begin()
            d.add(tail)

    def line_timed_out(self) -> None:
        self.factory.close(self.tracked or self, self.transport)  # type: ignore[attr-defined]

    def hold_deadlines(self, held: bool) -> None:
        d = self._line_deadline
        if d is not None:
            d.hold() if held else d.release()


class FlowControlled:
    """Flow control of a stream protocol (a mixin beside ``Protocol`` and
    ``TimeoutMixin``): the write queue pauses it as an ``IPushProducer``, and
    it pauses itself while ``_waiting`` (on a token lookup, on a commit it
    must answer after).  Either reason keeps the transport paused, neither
    resumes what the other paused, and the idle timer (and a `LineDeadline`)
    stops meanwhile.  Call `_update_flow` after changing ``_waiting``."""

    _ingest_paused = False
    _waiting = False
    _transport_paused = False
    _saved_timeout: float | None = None

    def pauseProducing(self) -> None:
        self._ingest_paused = True
        self._update_flow()

    def resumeProducing(self) -> None:
        self._ingest_paused = False
        self._update_flow()

    def stopProducing(self) -> None:
        self.transport.loseConnection()  # type: ignore[attr-defined]

    def hold_deadlines(self, held: bool) -> None:
        """Stop (or restart) the protocol's deadlines while it is paused."""

    def _update_flow(self) -> None:
        transport = self.transport  # type: ignore[attr-defined]
        if transport is None:
            return
        want = self._ingest_paused or self._waiting
        if want and not self._transport_paused:
            self._transport_paused = True
            # (the protocol's own idle timeout, or none: back when it resumes)
            self._saved_timeout = self.setTimeout(None)  # type: ignore[attr-defined]
            self.hold_deadlines(True)
            transport.pauseProducing()
        elif not want and self._transport_paused:
            self._transport_paused = False
            self.setTimeout(self._saved_timeout)  # type: ignore[attr-defined]
            self.hold_deadlines(False)
            transport.resumeProducing()


def listen_error(listener: Listener, error: BaseException) -> ListenError:
    """``listener NAME cannot listen on tcp:127.0.0.1:4242: Address already in
    use``: what a bind failure says, short enough for twistd's status pipe."""
    if isinstance(error, CannotListenError):
        scheme = "udp" if listener.endpoint.startswith("udp:") else \
            listener.endpoint.split(":", 1)[0]
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        port = os.fsdecode(error.port) if isinstance(error.port, bytes) else error.port
        where = f"{scheme}:{error.interface}:{port}" if error.interface else f"{scheme}:{port}"
        return ListenError(f"listener {listener.name} cannot listen on {where}: {reason}")
    return ListenError(f"listener {listener.name} cannot listen on {listener.endpoint}: "
                       f"{error}")


class _PausedListener(Service):
    """A listening service that binds early and accepts late.

    `bind` (which ``privilegedStartService`` calls: twistd calls that after it
    daemonised and before it sheds privileges and starts the application)
    binds the endpoint and stops reading it at once; `whenListening` starts
    reading it, once the storage and auth it serves are ready.  So a port that
    is taken fails the start before storage opens and before twistd reports
    the start; a port under 1024 can be bound by a server that runs as another
    user; and meanwhile clients wait in the kernel's backlog, unanswered."""

    listener: Listener
    reactor: Any
    port: Any = None
    _binding: defer.Deferred | None = None

    def listen(self) -> Any:
        """Bind: the port, or a Deferred of it.  A subclass that must prepare
        its endpoint (a socket's folder) does it here, then calls this."""
        raise NotImplementedError

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.bind()

    def bind(self) -> defer.Deferred:
        """Deferred[port], bound and not accepting; fails with `ListenError`.
        Called once or many times: it binds once."""
        if self._binding is None:
            self._binding = defer.maybeDeferred(self.listen).addCallbacks(
                self._hold, self._cannot)
        return self._binding

    def _hold(self, port: Any) -> Any:
        self.port = port
        port.stopReading()
        return port

    def _cannot(self, f: Any) -> Any:
        raise listen_error(self.listener, f.value)

    def whenListening(self) -> defer.Deferred:
        def accept(port: Any) -> Any:
            port.startReading()
            log.info("listener {name} bound {address}", name=self.listener.name,
                     address=describe_address(port.getHost(), self.listener.endpoint))
            return port

        return self.bind().addCallback(accept)

    def stopService(self) -> Any:
        super().stopService()
        return defer.maybeDeferred(self.port.stopListening) if self.port else defer.succeed(None)


class StreamListenerService(_PausedListener):
    """Listens on a tcp:/ssl:/unix: endpoint with ``factory``."""

    def __init__(self, listener: Listener, factory: Any, reactor: Any) -> None:
        self.listener = listener
        self.factory = factory
        self.reactor = reactor
        self.setName(f"listener:{listener.name}")

    def listen(self) -> Any:
        ep = server_endpoint(self.reactor, self.listener.endpoint, self.listener.name)
        return ep.listen(self.factory)

    def stopService(self) -> Any:
        d = super().stopService()
        close = getattr(self.factory, "close_all", None)
        if close is not None:
            close()
        return d


class DatagramListenerService(_PausedListener):
    """Listens on ``udp:PORT[:interface=IP]`` with a DatagramProtocol."""

    def __init__(self, listener: Listener, protocol: Any, reactor: Any,
                 max_datagram: int = 65535) -> None:
        self.listener = listener
        self.protocol = protocol
        self.reactor = reactor
        self.max_datagram = max_datagram
        self.setName(f"listener:{listener.name}")

    def listen(self) -> Any:
        return self.reactor.listenUDP(
            self.listener.udp_port, self.protocol, interface=self.listener.udp_interface,
            maxPacketSize=self.max_datagram)
