"""TLS for every ``ssl:`` listener: ALPN that clients can use, and failed
handshakes in the log.

Twisted's server ALPN callback answers an offer it shares nothing with (a
telnet factory offers no protocol; twisted.web offers ``http/1.1``) by
selecting an empty protocol, which OpenSSL 3 turns into a fatal ``internal
error`` alert: curl, browsers, Go and Python clients could not connect to an
``opentsdb`` port, and nothing was logged.  Here every TLS listener selects
``http/1.1`` when the client offers it and otherwise no protocol, so line
clients (which offer none) and clients offering only protocols of their own
connect as well.  ``h2`` is never selected: no tsnet listener speaks it, even
when the ``h2`` package would let twisted.web try.

The options stay Twisted's (`CertificateOptions`: versions, ciphers, no
session tickets), built by `tsnet.certs.server_options` from the endpoint's
PEM files read with `cryptography` (Twisted's ``ssl:`` parser makes pyOpenSSL
objects that pyOpenSSL deprecates).  The endpoint is Twisted's
`SSL4ServerEndpoint`, listening through `_TLSReactor`, whose ``listenSSL``
wraps the factory in `TLSFactory` instead of Twisted's own.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IStreamServerEndpoint
from twisted.logger import Logger, LogLevel
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from tsnet.certs import server_options
from tsnet.config import endpoint_arguments
from tsnet.logbound import LogBound

log = Logger(namespace="tsnet.tls")

#: the one application protocol a tsnet TLS listener negotiates
ALPN = b"http/1.1"

#: OpenSSL's state of a connection that has not received a byte
_UNTOUCHED = b"before SSL initialization"


def select_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """The ALPN choice: ``http/1.1`` if offered, else none (not a failure)."""
    return ALPN if ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLServerConnectionCreator)
class ServerConnections:
    """Server connections from ``options``' context, with tsnet's ALPN."""

    def __init__(self, options: Any) -> None:
        self._context = options.getContext()
        self._context.set_alpn_select_callback(select_alpn)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def describe_failure(reason: Any) -> str:
    """OpenSSL's reasons (``http request``, ``no shared cipher``, ``tlsv1 alert
    unknown ca``...) without a traceback."""
    value = getattr(reason, "value", reason)
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        texts = [str(e[-1]) for e in value.args[0] if isinstance(e, tuple) and e]
        if texts:
            return "; ".join(texts)
    if isinstance(value, (ConnectionDone, ConnectionLost)) or value is None:
        return "the client closed the connection during the handshake"
    return type(value).__name__


class _TLSProtocol(BufferingTLSTransport):
    """Tells its factory when a handshake the client started did not finish
    (and the server did not close it: a full listener, an idle timeout)."""

    def connectionLost(self, reason: Any = None) -> None:
        conn = self.getHandle()
        if (conn is not None and not self.disconnecting
                and conn.get_peer_finished() is None
                and conn.get_state_string() != _UNTOUCHED):
            # Twisted keeps the TLS error that ended the connection in _reason.
            self.factory.handshake_failed(self.transport.getPeer(),
                                          getattr(self, "_reason", None) or reason)
        super().connectionLost(reason)


class TLSFactory(TLSMemoryBIOFactory):
    """Twisted's server-side TLS wrapper with tsnet's ALPN, logging failed
    handshakes once per burst (`LogBound`) under the listener's name."""

    protocol = _TLSProtocol

    def __init__(self, options: Any, wrapped: Any, reactor: Any, listener: str) -> None:
        super().__init__(ServerConnections(options), False, wrapped, clock=reactor)
        self.listener = listener
        self._bounded = LogBound(log, reactor)

    def handshake_failed(self, peer: Any, reason: Any) -> None:
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        self._bounded.emit(
            LogLevel.warn, f"failed TLS handshakes on listener {self.listener}",
            "listener {listener}: TLS handshake with {peer} failed: {reason}",
            listener=self.listener, peer=f"{host}:{port}" if host else str(peer),
            reason=describe_failure(reason))

    def stopFactory(self) -> None:
        self._bounded.flush()  # a burst's count is not lost at stop
        super().stopFactory()


class _TLSReactor:
    """The reactor, with ``listenSSL`` listening through `TLSFactory`."""

    def __init__(self, reactor: Any, listener: str) -> None:
        self._reactor = reactor
        self._listener = listener

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        tls = TLSFactory(contextFactory, factory, self._reactor, self._listener)
        return self._reactor.listenTCP(port, tls, backlog, interface)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def server_endpoint(reactor: Any, endpoint: str, listener: str) -> IStreamServerEndpoint:
    """``serverFromString(reactor, endpoint)``, with tsnet's TLS for ``ssl:``
    (``endpoint`` is the normalised string of `tsnet.config.check_endpoint`)."""
    if not endpoint.startswith("ssl:"):
        return serverFromString(reactor, endpoint)
    _, args = endpoint_arguments(endpoint)
    return SSL4ServerEndpoint(_TLSReactor(reactor, listener), int(args["port"]),
                              server_options(args), backlog=int(args.get("backlog", 50)),
                              interface=args.get("interface", ""))
