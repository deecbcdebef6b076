"""WebSocket routes on the shared site: Autobahn protocols behind tsnet's auth.

A family mounts `WebSocketResource` at a path among its other routes, so
``ws://`` and ``wss://`` share the port (and the TLS listener) of its REST API.
The client is authenticated before the upgrade, from the token sources of
DESIGN §5 (``api_key`` in the query string included): without a valid token it
gets a plain HTTP 401 (403 for a token without the scope) and no WebSocket.
The protocol the factory builds finds its `Principal` in ``self.principal``
and the server's core in ``self.core`` before its ``connectionMade``.

A family with its own keys and refusals (ts-store's store keys and JSON 401s)
subclasses it and overrides the public steps of `WebSocketResource.render_GET`:
`is_websocket`, `authenticate`, `refuse` and `not_websocket`, with
``authenticate_first`` when a plain GET must be authenticated before it is
told it is not a WebSocket.  Or it runs its own checks and calls `upgrade`
(and `send_answer` / `send_refusal` for what it refuses) itself.

The upgraded connection stays the listener's: counted in
``tsnet_connections``, under ``max_connections``, and dropped when the listener
stops.  Messages are bounded (``max_message``) unless the factory set a bound.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tsnet.errors import Forbidden, Unauthorized
from tsnet.http.credentials import core_of, principal_for
from tsnet.http.replies import PLAIN_ERRORS, send_body, send_error
from tsnet.logbound import LogBound

log = Logger(namespace="tsnet.http.websocket")

#: bytes a WebSocket message may have unless the factory says otherwise
DEFAULT_MAX_MESSAGE = 1024 * 1024
#: the kind of `WebSocketResource.bounded`'s events (what repeats is counted)
UPGRADE_FAILURES = "failed WebSocket upgrades"


class WebSocketResource(Resource):
    """Upgrades an authenticated request to a protocol of ``factory`` (an
    `autobahn.twisted.websocket.WebSocketServerFactory`).

    ``scope`` is what the token must grant (``"read"`` or ``"write"``); None
    lets every client in, as the listener's ``auth = none`` does anyway.
    ``errors`` answers the refusals (401, 403, 426) in the family's dialect.

    `render_GET` runs the public steps a subclass may override: `is_websocket`
    (else `not_websocket` answers), `authenticate` (a Deferred of what the
    protocol gets as ``principal``; its failure goes to `refuse`), then
    `upgrade`.  With ``authenticate_first`` the client is authenticated before
    the request is looked at, so a plain GET without a key hears the 401.
    """

    isLeaf = True
    #: authenticate before checking that the request asks for a WebSocket
    authenticate_first = False

    def __init__(self, factory: Any, scope: str | None = None, errors: Any = PLAIN_ERRORS,
                 max_message: int = DEFAULT_MAX_MESSAGE, realm: str = "tsnet") -> None:
        super().__init__()
        self.factory = factory
        self.scope = scope
        self.errors = errors
        self.realm = realm
        #: unexpected failures, which clients may repeat per request: logged
        #: once, then counted (on the factory's reactor: Autobahn's, or the one given it)
        self.bounded = LogBound(log, factory.reactor)
        if not factory.maxMessagePayloadSize:
            factory.setProtocolOptions(maxMessagePayloadSize=max_message,
                                       maxFramePayloadSize=max_message)

    # -- the steps of an upgrade (override these) ---------------------------------

    def is_websocket(self, request: Any) -> bool:
        """Whether ``request`` asks for a WebSocket, on a connection still open
        (Autobahn checks the rest of the handshake after the upgrade)."""
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        return upgrade == b"websocket" and request.channel.transport is not None

    def not_websocket(self, request: Any) -> bytes:
        """The answer to a request that is not a WebSocket one: sets its status
        and headers, returns the body (426 Upgrade Required here)."""
        request.setHeader(b"upgrade", b"websocket")
        return send_error(request, self.errors, 426, "Upgrade Required",
                          "this path speaks WebSocket only")

    def authenticate(self, request: Any) -> defer.Deferred:
        """Deferred[principal] for ``request``: a `Principal` with ``scope``
        (anonymous without one); fails with `Unauthorized` or `Forbidden`."""
        if self.scope is None:
            from tsnet.model import anonymous

            return defer.succeed(anonymous(request.channel.site.listener.solution))
        return principal_for(request, self.scope)

    def refuse(self, f: Failure, request: Any) -> None:
        """Answer a failed `authenticate` (401, 403, or 500 for anything else)."""
        if f.check(Unauthorized):
            request.setHeader(b"www-authenticate", f'Basic realm="{self.realm}"'.encode())
            body = send_error(request, self.errors, 401, "Unauthorized")
        elif f.check(Forbidden):
            body = send_error(request, self.errors, 403, "Forbidden")
        else:
            self.bounded.failure(UPGRADE_FAILURES, "authenticating a WebSocket client failed", f)
            body = send_error(request, self.errors, 500, "Internal Server Error")
        self.send_refusal(request, body)

    # -- the flow ---------------------------------------------------------------------

    def render_GET(self, request: Any) -> Any:
        if not self.authenticate_first and not self.is_websocket(request):
            return self.not_websocket(request)
        d = defer.maybeDeferred(self.authenticate, request)
        d.addCallbacks(self._authenticated, self.refuse, callbackArgs=(request,),
                       errbackArgs=(request,))
        d.addErrback(lambda f: self.bounded.failure(UPGRADE_FAILURES, "WebSocket upgrade failed",
                                                    f))
        return NOT_DONE_YET

    def _authenticated(self, principal: Any, request: Any) -> None:
        if self.authenticate_first and not self.is_websocket(request):
            self.send_answer(request, self.not_websocket(request))
            return
        self.upgrade(request, principal)

    # -- helpers a subclass (or a family's own flow) calls ------------------------------

    @staticmethod
    def send_answer(request: Any, body: bytes) -> bool:
        """Write ``body`` (status and content type already set) as the whole
        answer of a request answered off `render_GET`; False when the client
        already left."""
        return send_body(request, body)

    @classmethod
    def send_refusal(cls, request: Any, body: bytes) -> None:
        """`send_answer`, then close: the client expected to switch protocols."""
        if not request.finished and request.channel is not None:
            request.setHeader(b"connection", b"close")
            cls.send_answer(request, body)
            request.transport.loseConnection()

    def upgrade(self, request: Any, principal: Any, **attributes: Any) -> Any:
        """Hand ``request``'s connection to a new protocol of the factory, which
        gets ``principal``, ``core`` and each of ``attributes`` as attributes
        before its ``connectionMade``, then the request's head (Autobahn answers
        the handshake).  Returns the protocol, or None when the client left
        (or the factory refused it: 503)."""
        channel = request.channel
        if channel is None or channel.transport is None:
            return None  # the client left while its token was looked up
        protocol = self.factory.buildProtocol(request.transport.getPeer())
        if protocol is None:
            request.setResponseCode(503)
            request.finish()
            return None
        protocol.principal = principal
        protocol.core = core_of(request)
        for name, value in attributes.items():
            setattr(protocol, name, value)
        transport, channel.transport = channel.transport, None
        channel.setTimeout(None)  # twisted.web's channel lets the connection go
        transport.unregisterProducer()  # twisted.web's channel was its producer
        wrapped = isinstance(transport, ProtocolWrapper)  # TLS
        owner = transport.wrappedProtocol if wrapped else transport.protocol
        take_over = getattr(owner, "take_over", None)
        if take_over is not None:  # tsnet's lean channel (or the opentsdb port's switch)
            take_over(protocol)
        else:  # a bare twisted.web channel owns the transport: take its place
            if wrapped:
                transport.wrappedProtocol = protocol
            else:
                transport.protocol = protocol
            protocol.makeConnection(transport)
        transport.resumeProducing()  # twisted.web paused it while the request ran
        head = [request.method + b" " + request.uri + b" HTTP/1.1"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            head.append(name + b": " + b",".join(values))
        protocol.dataReceived(b"\r\n".join(head) + b"\r\n\r\n" + request.content.read())
        return protocol
