"""Listeners bind what the config says and nothing wider: real sockets, read
back with getsockname and stat, and the bound-endpoint log line."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import globalLogPublisher

from tests.helpers.certs import make_certs
from tests.helpers.clients import LineClient, connect_line

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[storage:default]
backend = sqlite

[listener:a]
protocol = opentsdb
endpoint = {endpoint}
"""


def _bound(server: Any, name: str = "a") -> Any:
    return server.service.getServiceNamed(f"listener:{name}").port


@pytest.fixture
def bound_lines() -> Any:
    lines: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "tsnet.listener" and "address" in event:
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("endpoint", ["tcp6:0", "TCP6:0", "tcp6:port=0", "tcp6:0:backlog=5"])
@pytest_twisted.inlineCallbacks
def test_tcp6_defaults_to_ipv6_loopback(make_server: Any, endpoint: str,
                                        bound_lines: list[dict]) -> None:
    server = yield make_server(CONFIG.format(endpoint=endpoint))
    port = _bound(server)
    host = port.socket.getsockname()[0]
    assert host == "::1"
    assert port.getHost().host == "::1"
    assert [e["address"] for e in bound_lines] == [f"tcp:::1:{port.getHost().port}"]
    # Served there, and only there: ::1 answers, 127.0.0.1 (which "::" takes
    # too, as IPv4-mapped addresses) does not.
    c = yield connect_line(port.getHost().port, host="::1")
    c.send("version\n")
    assert "net.opentsdb" in " ".join((yield c.wait_lines(2)))
    c.close()
    with pytest.raises(ConnectionRefusedError):
        yield connect_line(port.getHost().port, host="127.0.0.1")


@pytest_twisted.inlineCallbacks
def test_tcp6_with_an_interface_binds_it(make_server: Any) -> None:
    server = yield make_server(CONFIG.format(endpoint="tcp6:0:interface=\\:\\:"))
    assert _bound(server).socket.getsockname()[0] == "::"


@pytest.mark.parametrize("endpoint", ["tcp:0", "tcp:port=0"])
@pytest_twisted.inlineCallbacks
def test_tcp_defaults_to_loopback(make_server: Any, endpoint: str) -> None:
    server = yield make_server(CONFIG.format(endpoint=endpoint))
    assert _bound(server).socket.getsockname()[0] == "127.0.0.1"


@pytest_twisted.inlineCallbacks
def test_ssl_defaults_to_loopback(make_server: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    server = yield make_server(CONFIG.format(
        endpoint=f"ssl:0:privateKey={certs['key']}:certKey={certs['cert']}"))
    assert _bound(server).socket.getsockname()[0] == "127.0.0.1"


@pytest.mark.parametrize("mode,expected", [("", 0o660), (":mode=600", 0o600),
                                           (":mode=0666", 0o666)])
@pytest_twisted.inlineCallbacks
def test_unix_socket_mode(make_server: Any, tmp_path: Path, mode: str, expected: int) -> None:
    path = tmp_path / "t.sock"
    server = yield make_server(CONFIG.format(endpoint=f"unix:{path}{mode}"))
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == expected
    c = yield connect_unix(str(path))
    c.send("version\n")
    assert "net.opentsdb" in " ".join((yield c.wait_lines(2)))
    c.close()
    yield server.stop()


def connect_unix(path: str) -> Any:
    from twisted.internet import endpoints, reactor

    return endpoints.connectProtocol(endpoints.UNIXClientEndpoint(reactor, path), LineClient())


def test_ipv6_loopback_is_there() -> None:
    """The tcp6 tests need ::1 (Linux has it unless IPv6 is disabled)."""
    s = socket.socket(socket.AF_INET6)
    try:
        s.bind(("::1", 0))
    finally:
        s.close()
