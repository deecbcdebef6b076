"""Listening services shared by every protocol family: bind an endpoint, log the
real address, bound connections, close everything on stop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tsnet.config import Listener

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


class ConnectionTracker(Factory):
    """A factory base that counts, limits and can drop its connections."""

    noisy = False

    def __init__(self, listener: Listener, core: Core, protocol_name: str) -> None:
        self.listener = listener
        self.core = core
        self.protocol_name = protocol_name
        self.connections: set[Any] = set()

    def admit(self, proto: Any) -> bool:
        """Called from connectionMade: False when the listener is full."""
        if len(self.connections) >= self.listener.max_connections:
            log.warn("listener {listener} full ({n} connections): refusing one",
                     listener=self.listener.name, n=len(self.connections))
            return False
        self.connections.add(proto)
        self.core.metrics.connection_opened(self.protocol_name, self.listener.name)
        return True

    def forget(self, proto: Any) -> None:
        if proto in self.connections:
            self.connections.discard(proto)
            self.core.metrics.connection_closed(self.protocol_name, self.listener.name)

    def close_all(self) -> None:
        for p in list(self.connections):
            if p.transport is not None:
                p.transport.loseConnection()


class FlowControlled:
    """Flow control of a stream protocol (a mixin beside ``Protocol`` and
    ``TimeoutMixin``): the write queue pauses it as an ``IPushProducer``, and
    it pauses itself while ``_waiting`` (on a token lookup, on a commit it
    must answer after).  Either reason keeps the transport paused, neither
    resumes what the other paused, and the idle timer stops meanwhile.  Call
    `_update_flow` after changing ``_waiting``."""

    _ingest_paused = False
    _waiting = False
    _transport_paused = False

    def pauseProducing(self) -> None:
        self._ingest_paused = True
        self._update_flow()

    def resumeProducing(self) -> None:
        self._ingest_paused = False
        self._update_flow()

    def stopProducing(self) -> None:
        self.transport.loseConnection()  # type: ignore[attr-defined]

    def _update_flow(self) -> None:
        transport = self.transport  # type: ignore[attr-defined]
        if transport is None:
            return
        want = self._ingest_paused or self._waiting
        if want and not self._transport_paused:
            self._transport_paused = True
            self.setTimeout(None)  # type: ignore[attr-defined]
            transport.pauseProducing()
        elif not want and self._transport_paused:
            self._transport_paused = False
            self.setTimeout(self.factory.listener.idle_timeout or None)  # type: ignore[attr-defined]
            transport.resumeProducing()


class StreamListenerService(Service):
    """Listens on a tcp:/ssl:/unix: endpoint with ``factory``."""

    def __init__(self, listener: Listener, factory: Any, reactor: Any) -> None:
        self.listener = listener
        self.factory = factory
        self.reactor = reactor
        self.port: Any = None
        self.setName(f"listener:{listener.name}")

    def whenListening(self) -> defer.Deferred:
        ep = serverFromString(self.reactor, self.listener.endpoint)
        d = ep.listen(self.factory)

        def bound(port: Any) -> Any:
            self.port = port
            log.info("listener {name} bound {address}", name=self.listener.name,
                     address=describe_address(port.getHost(), self.listener.endpoint))
            return port

        return d.addCallback(bound)

    def stopService(self) -> Any:
        super().stopService()
        d = defer.maybeDeferred(self.port.stopListening) if self.port else defer.succeed(None)
        close = getattr(self.factory, "close_all", None)
        if close is not None:
            close()
        return d


class DatagramListenerService(Service):
    """Listens on ``udp:PORT[:interface=IP]`` with a DatagramProtocol."""

    def __init__(self, listener: Listener, protocol: Any, reactor: Any,
                 max_datagram: int = 65535) -> None:
        self.listener = listener
        self.protocol = protocol
        self.reactor = reactor
        self.max_datagram = max_datagram
        self.port: Any = None
        self.setName(f"listener:{listener.name}")

    def whenListening(self) -> defer.Deferred:
        try:
            self.port = self.reactor.listenUDP(
                self.listener.udp_port, self.protocol, interface=self.listener.udp_interface,
                maxPacketSize=self.max_datagram)
        except Exception:
            return defer.fail()
        log.info("listener {name} bound {address}", name=self.listener.name,
                 address=describe_address(self.port.getHost()))
        return defer.succeed(self.port)

    def stopService(self) -> Any:
        super().stopService()
        return defer.maybeDeferred(self.port.stopListening) if self.port else None
