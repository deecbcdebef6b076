"""The shared HTTP site of `http` listeners: keys every listener takes apply."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.helpers.clients import connect_line, wait_for
from tsnet.testing.fixtures import BASE_CONFIG


@pytest_twisted.inlineCallbacks
def test_idle_timeout_closes_silent_http_connections(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG + "idle_timeout = 0.3\n")
    c = yield connect_line(server.port("http"))
    yield c.wait_closed(timeout=3)  # closed by the server, not by us
    c = yield connect_line(server.port("http"))
    c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (yield c.wait_lines(1))[0].startswith("HTTP/1.1 200")
    yield c.wait_closed(timeout=3)  # and once a keep-alive connection goes quiet


@pytest_twisted.inlineCallbacks
def test_max_connections_and_the_connection_gauge(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG + "max_connections = 2\n")
    port = server.port("http")
    a = yield connect_line(port)
    b = yield connect_line(port)
    c = yield connect_line(port)
    yield c.wait_closed(timeout=3)  # the third is refused at once
    a.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    yield wait_for(lambda: a.received.endswith(b"\n") and b"tsnet_connections" in a.received)
    assert b'tsnet_connections{listener="http",protocol="http"} 2.0' in a.received
    assert not b.closed.called
    b.close()
    yield b.wait_closed()
    d = yield connect_line(port)  # a place is free again
    d.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = yield d.wait_closed()
    assert b'tsnet_connections{listener="http",protocol="http"} 2.0' in text
    yield server.service.getServiceNamed("listener:http").stopService()
    yield a.wait_closed(timeout=3)  # a stopping listener drops its connections
