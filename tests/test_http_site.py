"""The shared HTTP site of `http` listeners: keys every listener takes apply."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.helpers.clients import connect_line
from tests.helpers.fixtures import BASE_CONFIG


@pytest_twisted.inlineCallbacks
def test_idle_timeout_closes_silent_http_connections(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG + "idle_timeout = 0.3\n")
    c = yield connect_line(server.port("http"))
    yield c.wait_closed(timeout=3)  # closed by the server, not by us
    c = yield connect_line(server.port("http"))
    c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (yield c.wait_lines(1))[0].startswith("HTTP/1.1 200")
    yield c.wait_closed(timeout=3)  # and once a keep-alive connection goes quiet
