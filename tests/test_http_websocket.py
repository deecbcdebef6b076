"""tsnet.http.websocket: Autobahn protocols on the shared site, behind tsnet's
auth, spoken to by a real Autobahn client over ws:// and wss:// (verified TLS)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from twisted.internet import defer, ssl
from twisted.logger import formatEvent

from tests.helpers.certs import make_certs
from tests.helpers.clients import connect_line, sleep, wait_for
from tests.helpers.logs import leaks, watching
from tsnet.http import websocket
from tsnet.http.websocket import WebSocketResource
from tsnet.plugin import ProtocolPlugin
from tsnet.testing.fixtures import make_token


class EchoServer(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(f"{self.principal.solution}:".encode() + payload, isBinary)


class WsPlugin(ProtocolPlugin):
    name = "wsecho"
    description = "a WebSocket route under test"
    provides_api = True

    def __init__(self) -> None:
        super().__init__()
        self.made: list[WebSocketResource] = []  # (tests reach the routes here)

    def resources(self, core: Any) -> dict:
        factory = WebSocketServerFactory()
        factory.setProtocolOptions(failByDrop=False)  # a closing handshake, with its code
        factory.protocol = EchoServer
        self.made.append(WebSocketResource(factory, scope="write", max_message=1000))
        return {b"/ws/echo": self.made[-1]}


CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:http]
protocol = http
endpoint = {endpoint}
auth = token
apis = wsecho metrics
"""


class Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append(payload)

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed before open: {reason}"))
        self.factory.closed.append(code)


def ws_connect(url: str, headers: dict | None = None, tls: Any = None) -> defer.Deferred:
    factory = WebSocketClientFactory(url, headers=headers or {})
    factory.protocol = Client
    factory.opened = defer.Deferred()
    factory.messages = []
    factory.closed = []
    connectWS(factory, contextFactory=tls)
    return factory.opened


@defer.inlineCallbacks
def token_server(make_server: Any, endpoint: str = "tcp:0:interface=127.0.0.1") -> Any:
    server = yield make_server(CONFIG.format(endpoint=endpoint), plugins={"wsecho": WsPlugin()})
    _, secrets = yield make_token(server, "iot")
    return server, secrets


def connections(server: Any) -> float:
    return server.core.metrics.connections.labels("http", "http")._value.get()


UPGRADE = ("GET /ws/echo{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n{extra}\r\n")


@pytest_twisted.inlineCallbacks
def test_no_token_is_a_plain_401_before_any_upgrade(make_server: Any) -> None:
    server, secrets = yield token_server(make_server)
    port = server.port("http")
    c = yield connect_line(port)
    c.send(UPGRADE.format(query="", extra=""))
    reply = (yield c.wait_closed()).decode()
    assert reply.startswith("HTTP/1.1 401 ")
    assert 'WWW-Authenticate: Basic realm="tsnet"' in reply
    assert reply.endswith("\r\n\r\n401 Unauthorized\n")
    c = yield connect_line(port)
    c.send(UPGRADE.format(query="", extra=f"X-API-Key: {secrets['read']}\r\n"))
    assert (yield c.wait_closed()).startswith(b"HTTP/1.1 403 ")  # a READ token cannot write
    c = yield connect_line(port)
    c.send(f"GET /ws/echo HTTP/1.1\r\nHost: x\r\nX-API-Key: {secrets['write']}\r\n"
           "Connection: close\r\n\r\n")
    assert (yield c.wait_closed()).startswith(b"HTTP/1.1 426 ")  # not an upgrade


@pytest_twisted.inlineCallbacks
def test_echo_with_a_write_token_on_the_listeners_count(make_server: Any) -> None:
    server, secrets = yield token_server(make_server)
    port = server.port("http")
    a = yield ws_connect(f"ws://127.0.0.1:{port}/ws/echo",
                         {"Authorization": f"Bearer {secrets['write']}"})
    b = yield ws_connect(f"ws://127.0.0.1:{port}/ws/echo?api_key={secrets['write']}")
    a.sendMessage(b"hello")
    b.sendMessage(b"world")
    yield wait_for(lambda: a.factory.messages and b.factory.messages)
    assert (a.factory.messages, b.factory.messages) == ([b"iot:hello"], [b"iot:world"])
    assert connections(server) == 2  # the upgraded connections are still the listener's
    a.sendMessage(b"x" * 1001)  # over max_message: Autobahn closes with 1009
    yield wait_for(lambda: a.factory.closed)
    assert a.factory.closed == [1009]
    yield wait_for(lambda: connections(server) == 1)
    yield server.service.getServiceNamed("listener:http").stopService()
    yield wait_for(lambda: b.factory.closed)  # a stopping listener drops its WebSockets
    yield sleep(0.05)
    assert connections(server) == 0


@pytest_twisted.inlineCallbacks
def test_wss_on_a_tls_listener_with_a_verifying_client(make_server: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    server, secrets = yield token_server(
        make_server, f"ssl:0:interface=127.0.0.1:privateKey={certs['key']}:certKey={certs['cert']}")
    port = server.port("http")
    tls = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(certs["ca"].read_bytes()))
    c = yield ws_connect(f"wss://localhost:{port}/ws/echo",
                         {"X-API-Key": secrets["write"]}, tls=tls)
    c.sendMessage(b"secure")
    yield wait_for(lambda: c.factory.messages)
    assert c.factory.messages == [b"iot:secure"]
    c.sendClose()
    yield wait_for(lambda: c.factory.closed)
    yield wait_for(lambda: connections(server) == 0)


@pytest_twisted.inlineCallbacks
def test_a_token_catalog_that_cannot_be_read_is_a_500_logged_once(make_server: Any) -> None:
    """The token's row is damaged (its tags are not JSON), so every upgrade's
    lookup fails: a plain 500 without the decoder's text, and one traceback
    in the log, then a count, however many clients try."""
    plugin = WsPlugin()
    server = yield make_server(CONFIG.format(endpoint="tcp:0:interface=127.0.0.1"),
                               plugins={"wsecho": plugin})
    rec, secrets = yield make_token(server, "iot")
    db = sqlite3.connect(server.core.config.storages["default"].path)
    db.execute("UPDATE tokens SET tags = 'not json' WHERE id = ?", (rec.id,))
    db.commit()
    db.close()
    n = 12
    with watching("tsnet.http.websocket") as events:
        for _ in range(n):
            c = yield connect_line(server.port("http"))
            c.send(UPGRADE.format(query="", extra=f"X-API-Key: {secrets['write']}\r\n"))
            reply = yield c.wait_closed()
            assert reply.startswith(b"HTTP/1.1 500 ")
            assert reply.endswith(b"\r\n\r\n500 Internal Server Error\n")
            assert not leaks(reply) and b"Expecting value" not in reply
        for resource in plugin.made:
            resource.bounded.flush()  # (a server's stop would, after the period)
    assert len(events.failures()) == 1
    assert formatEvent(events.full(websocket.UPGRADE_FAILURES)[0]) == (
        "authenticating a WebSocket client failed")
    assert events.summaries() == [f"{n - 1} more failed WebSocket upgrades in the last 0 s"]
