"""One port, two protocols: OpenTSDB's first-byte rule.

A connection whose first byte is an ASCII capital (every HTTP method) is HTTP
for its whole life; anything else is the telnet-style line protocol
(specs/opentsdb.md §1.1).  The switch stays the transport's protocol and hands
every event to the protocol it chose, so it works the same under TLS, where the
transport is itself a protocol wrapper.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

_HTTP_FIRST = frozenset(range(ord("A"), ord("Z") + 1))


@implementer(IHalfCloseableProtocol)
class FirstByteSwitch(Protocol, TimeoutMixin):
    """Chooses HTTP or telnet on the first byte, then delegates everything.
    A connection that sends nothing is closed after the idle timeout.  The
    switch is what the listener admits and counts; the protocol it chooses
    reports its requests or lines (and their deadlines) for it."""

    reports_progress = True

    def __init__(self, factory: Any, addr: Any) -> None:
        self.factory = factory
        self.addr = addr
        self.inner: Any = None

    def connectionMade(self) -> None:
        if not self.factory.admit(self):
            self.transport.loseConnection()
            return
        self.setTimeout(self.factory.listener.idle_timeout or None)

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.inner is None:
            if not data:
                return
            self.setTimeout(None)  # the chosen protocol keeps its own timeout
            if data[0] in _HTTP_FIRST and self.factory.site is not None:
                self.inner = self.factory.site.buildProtocol(self.addr)
                self.inner.watch(self.factory, self)
            else:
                self.inner = self.factory.build_telnet()
                self.inner.tracked = self
            self.inner.makeConnection(self.transport)
        self.inner.dataReceived(data)

    def take_over(self, protocol: Any) -> None:
        """An HTTP resource upgraded the connection (a WebSocket)."""
        take_over = getattr(self.inner, "take_over", None)
        if take_over is not None:
            take_over(protocol)
        else:
            self.inner = protocol
            protocol.makeConnection(self.transport)

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self.factory.forget(self)
        if self.inner is not None:
            self.inner.connectionLost(reason)

    def readConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.inner):
            self.inner.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.inner):
            self.inner.writeConnectionLost()
        else:
            self.transport.loseConnection()
