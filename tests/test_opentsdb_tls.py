"""The opentsdb listener behind ssl: (the IoT Lab's port 4243), with real TLS:
a certificate made here, a client that verifies it, telnet and HTTP alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, endpoints, ssl

from tests.helpers.certs import make_certs
from tests.helpers.clients import LineClient
from tsnet.testing.fixtures import make_token

TLS_CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:tls]
protocol = opentsdb
endpoint = ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}
auth = token
"""


def client_options(ca: Path, hostname: str = "localhost") -> Any:
    authority = ssl.Certificate.loadPEM(ca.read_bytes())
    return ssl.optionsForClientTLS(hostname, trustRoot=authority)


def connect_tls(port: int, options: Any) -> defer.Deferred:
    from twisted.internet import reactor

    ep = endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                       port))
    return endpoints.connectProtocol(ep, LineClient())


@pytest_twisted.inlineCallbacks
def test_telnet_over_tls_with_token(tmp_path: Path, make_server: Any) -> None:
    certs = make_certs(tmp_path / "certs")
    server = yield make_server(TLS_CONFIG.format(key=certs["key"], cert=certs["cert"]))
    _, sec = yield make_token(server, tags={"device": "d7"})
    c = yield connect_tls(server.port("tls"), client_options(certs["ca"]))
    c.send(f"auth {sec['write']}\nput temp 1356998400 21.5 room=kitchen\nbogus\n")
    assert (yield c.wait_lines(2)) == ["ok", "unknown command: bogus.  Try `help'."]
    c.close()
    yield server.flush()
    rows = yield server.export("iot")
    assert [(r["metric"], r["tags"], r["value"]) for r in rows] == [
        ("temp", {"device": "d7", "room": "kitchen"}, 21.5)]


@pytest_twisted.inlineCallbacks
def test_http_on_the_same_tls_port(tmp_path: Path, make_server: Any) -> None:
    certs = make_certs(tmp_path / "certs")
    server = yield make_server(TLS_CONFIG.format(key=certs["key"], cert=certs["cert"]))
    c = yield connect_tls(server.port("tls"), client_options(certs["ca"]))
    c.send("GET /api/nosuch HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = yield c.wait_closed()
    assert data.startswith(b"HTTP/1.1 404 ")


@pytest_twisted.inlineCallbacks
def test_client_refuses_a_certificate_it_cannot_verify(tmp_path: Path,
                                                       make_server: Any) -> None:
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")  # a CA that did not sign the server
    server = yield make_server(TLS_CONFIG.format(key=certs["key"], cert=certs["cert"]))
    c = yield connect_tls(server.port("tls"), client_options(other["ca"]))
    c.send("version\n")
    data = yield c.wait_closed()
    assert data == b""
