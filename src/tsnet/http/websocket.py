"""WebSocket routes on the shared site: Autobahn protocols behind tsnet's auth.

A family mounts `WebSocketResource` at a path among its other routes, so
``ws://`` and ``wss://`` share the port (and the TLS listener) of its REST API.
The client is authenticated before the upgrade, from the token sources of
DESIGN §5 (``api_key`` in the query string included): without a valid token it
gets a plain HTTP 401 (403 for a token without the scope) and no WebSocket.
The protocol the factory builds finds its `Principal` in ``self.principal``
and the server's core in ``self.core`` before its ``connectionMade``.

The upgraded connection stays the listener's: counted in
``tsnet_connections``, under ``max_connections``, and dropped when the listener
stops.  Messages are bounded (``max_message``) unless the factory set a bound.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tsnet.errors import Forbidden, Unauthorized
from tsnet.http.credentials import core_of, principal_for
from tsnet.http.replies import PLAIN_ERRORS, send_error

log = Logger(namespace="tsnet.http.websocket")

#: bytes a WebSocket message may have unless the factory says otherwise
DEFAULT_MAX_MESSAGE = 1024 * 1024


class WebSocketResource(Resource):
    """Upgrades an authenticated request to a protocol of ``factory`` (an
    `autobahn.twisted.websocket.WebSocketServerFactory`).

    ``scope`` is what the token must grant (``"read"`` or ``"write"``); None
    lets every client in, as the listener's ``auth = none`` does anyway.
    ``errors`` answers the refusals (401, 403, 426) in the family's dialect.
    """

    isLeaf = True

    def __init__(self, factory: Any, scope: str | None = None, errors: Any = PLAIN_ERRORS,
                 max_message: int = DEFAULT_MAX_MESSAGE, realm: str = "tsnet") -> None:
        super().__init__()
        self.factory = factory
        self.scope = scope
        self.errors = errors
        self.realm = realm
        if not factory.maxMessagePayloadSize:
            factory.setProtocolOptions(maxMessagePayloadSize=max_message,
                                       maxFramePayloadSize=max_message)

    def render_GET(self, request: Any) -> Any:
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade != b"websocket" or request.channel.transport is None:
            request.setHeader(b"upgrade", b"websocket")
            return send_error(request, self.errors, 426, "Upgrade Required",
                              "this path speaks WebSocket only")
        if self.scope is None:
            from tsnet.model import anonymous

            self._upgrade(anonymous(request.channel.site.listener.solution), request)
            return NOT_DONE_YET
        d = principal_for(request, self.scope)
        d.addCallbacks(self._upgrade, self._refuse, callbackArgs=(request,),
                       errbackArgs=(request,))
        d.addErrback(lambda f: log.failure("WebSocket upgrade failed", f))
        return NOT_DONE_YET

    def _refuse(self, f: Failure, request: Any) -> None:
        if f.check(Unauthorized):
            request.setHeader(b"www-authenticate", f'Basic realm="{self.realm}"'.encode())
            body = send_error(request, self.errors, 401, "Unauthorized")
        elif f.check(Forbidden):
            body = send_error(request, self.errors, 403, "Forbidden")
        else:
            log.failure("authenticating a WebSocket client failed", f)
            body = send_error(request, self.errors, 500, "Internal Server Error")
        if not request.finished and request.channel is not None:
            # the client expected to switch protocols: it gets this answer, then EOF
            request.setHeader(b"connection", b"close")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
            request.transport.loseConnection()

    def _upgrade(self, principal: Any, request: Any) -> None:
        channel = request.channel
        if channel is None or channel.transport is None:
            return  # the client left while its token was looked up
        protocol = self.factory.buildProtocol(request.transport.getPeer())
        if protocol is None:
            request.setResponseCode(503)
            request.finish()
            return
        protocol.principal = principal
        protocol.core = core_of(request)
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
