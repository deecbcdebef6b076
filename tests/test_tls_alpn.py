"""TLS with ALPN on every ``ssl:`` listener: real servers, real certificates,
and clients that offer ALPN as curl, browsers and Go do (Python ``ssl`` with
``set_alpn_protocols``, and curl itself), beside line clients that offer none.

The clients block, so they run in a thread (Python ssl) or a child process
(curl, which tools/install-test-deps installs) while the reactor serves them."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, threads
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher

from tests.helpers.certs import make_certs
from tests.helpers.clients import LineClient

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[storage:default]
backend = sqlite

[tsstore]
admin_key = an-admin-key-for-the-tls-tests

[listener:opentsdb]
protocol = opentsdb
endpoint = ssl:0:privateKey={key}:certKey={cert}

[listener:http]
protocol = http
endpoint = ssl:0:privateKey={key}:certKey={cert}
apis = opentsdb metrics tsstore

[listener:atsd]
protocol = atsd
endpoint = ssl:0:privateKey={key}:certKey={cert}
"""

HTTP_GET = "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
PATHS = {"opentsdb": "/api/version", "http": "/metrics"}


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_server(make_server: Any, certs: dict[str, Path]) -> Any:
    return pytest_twisted.blockon(make_server(CONFIG.format(key=certs["key"],
                                                            cert=certs["cert"])))


@pytest.fixture
def tls_events() -> Any:
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "tsnet.tls":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def exchange(port: int, ca: Path, alpn: list[str] | None, payload: bytes) -> tuple[Any, bytes]:
    """A verified TLS connection offering ``alpn`` (None: no ALPN extension);
    sends ``payload`` and reads to the end. Returns (negotiated protocol, reply)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        chosen = s.selected_alpn_protocol()
        s.sendall(payload)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:  # closed without close_notify: still the end
                break
            if not chunk:
                break
            out += chunk
    return chosen, out


@pytest.mark.parametrize("listener", ["opentsdb", "http"])
@pytest.mark.parametrize("alpn,chosen", [
    (["http/1.1"], "http/1.1"),              # Python's set_alpn_protocols(["http/1.1"])
    (["h2", "http/1.1"], "http/1.1"),        # curl, browsers, Go: h2 is never chosen
    (["h2"], None),                          # nothing in common: no ALPN, not a failure
    (None, None),                            # a client without ALPN
])
@pytest_twisted.inlineCallbacks
def test_http_clients_offering_alpn(tls_server: Any, certs: dict[str, Path], listener: str,
                                    alpn: list[str] | None, chosen: str | None,
                                    tls_events: list[dict]) -> None:
    request = HTTP_GET.format(path=PATHS[listener]).encode()
    got, reply = yield threads.deferToThread(exchange, tls_server.port(listener), certs["ca"],
                                             alpn, request)
    assert got == chosen
    assert reply.startswith(b"HTTP/1.1 200 ")
    yield tls_server.stop()
    assert tls_events == []  # a handshake that worked is not logged as failed


@pytest.mark.parametrize("listener,lines,reply", [
    ("opentsdb", b"version\nexit\n", b"net.opentsdb"),
    ("atsd", b"ping\nexit\n", b"ok\nGoodbye\n"),
])
@pytest.mark.parametrize("alpn", [None, ["http/1.1"], ["x-line"]])
@pytest_twisted.inlineCallbacks
def test_line_clients(tls_server: Any, certs: dict[str, Path], listener: str, lines: bytes,
                      reply: bytes, alpn: list[str] | None, tls_events: list[dict]) -> None:
    """Telnet and ATSD line clients offer no ALPN and keep working; one that
    offers protocols of its own is not refused either."""
    _, out = yield threads.deferToThread(exchange, tls_server.port(listener), certs["ca"],
                                         alpn, lines)
    assert reply in out
    yield tls_server.stop()
    assert tls_events == []


@pytest.mark.parametrize("listener,path,expected", [
    ("opentsdb", "/api/version", '"version":"2.4.0"'),   # OpenTSDB's HTTP API
    ("http", "/metrics", "tsnet_connections"),          # the shared site
    ("http", "/api/version", '"version":"2.4.0"'),       # OpenTSDB mounted there
    ("http", "/health", '"status":"ok"'),                # ts-store's REST API
])
@pytest_twisted.inlineCallbacks
def test_curl(tls_server: Any, certs: dict[str, Path], listener: str, path: str,
              expected: str) -> None:
    """curl offers h2 and http/1.1 by default (the issue's ``tlsv1 alert
    internal error``); it verifies the certificate here, as in production."""
    url = f"https://localhost:{tls_server.port(listener)}{path}"
    out, err, code = yield getProcessOutputAndValue(
        shutil.which("curl"),
        ["-sS", "--cacert", str(certs["ca"]), "-w", "\n%{http_code} %{http_version}", url])
    assert code == 0, err
    body, _, status = out.decode().rpartition("\n")
    assert status == "200 1.1"
    assert expected in body


@pytest_twisted.inlineCallbacks
def test_curl_writes_and_reads_back(tls_server: Any, certs: dict[str, Path]) -> None:
    url = f"https://localhost:{tls_server.port('opentsdb')}/api/put?details"
    point = '{"metric":"t","timestamp":1356998400,"value":1,"tags":{"h":"a"}}'
    out, err, code = yield getProcessOutputAndValue(
        shutil.which("curl"), ["-sS", "--cacert", str(certs["ca"]), "-d", point, url])
    assert code == 0, err
    assert b'"success":1' in out
    yield tls_server.flush()
    rows = yield tls_server.export()
    assert [(r["metric"], r["value"]) for r in rows] == [("t", 1)]


# --- failed handshakes are logged, once per burst --------------------------------------


class _Plain(protocol.Protocol):
    """Speaks plain HTTP to a TLS port, as a misconfigured client does."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        if self.data:
            self.transport.write(self.data)
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)


@defer.inlineCallbacks
def _connect_plain(port: int, data: bytes) -> Any:
    from twisted.internet import reactor

    p = _Plain(data)
    yield protocol.ClientCreator(reactor, lambda: p).connectTCP("127.0.0.1", port)
    yield p.done


@pytest_twisted.inlineCallbacks
def test_failed_handshakes_are_logged_once_per_burst(tls_server: Any, certs: dict[str, Path],
                                                     tls_events: list[dict]) -> None:
    port = tls_server.port("opentsdb")
    for _ in range(5):
        yield _connect_plain(port, b"GET / HTTP/1.0\r\n\r\n")
    assert len(tls_events) == 1
    first = tls_events[0]
    assert first["listener"] == "opentsdb"
    assert first["peer"].startswith("127.0.0.1:")
    assert "http request" in first["reason"]  # OpenSSL's word for plain HTTP on TLS
    assert "Traceback" not in first["reason"]
    # A verified client works in the middle of the burst.
    c = yield _connect_line(port, certs["ca"])
    c.send("version\n")
    assert "net.opentsdb" in " ".join((yield c.wait_lines(2)))
    c.close()
    yield tls_server.stop()  # the burst's summary is not lost at stop
    summary = tls_events[1:]
    assert [e["n"] for e in summary] == [4]
    assert "listener opentsdb" in summary[0]["log_kind"]


@pytest_twisted.inlineCallbacks
def test_connections_that_send_nothing_are_not_handshake_failures(
        tls_server: Any, tls_events: list[dict]) -> None:
    """A TCP health check (connect, close) is not a TLS failure."""
    for _ in range(3):
        yield _connect_plain(tls_server.port("http"), b"")
    yield tls_server.stop()
    assert tls_events == []


def _connect_line(port: int, ca_path: Path) -> defer.Deferred:
    from twisted.internet import endpoints, reactor
    from twisted.internet import ssl as tssl

    ca = tssl.Certificate.loadPEM(ca_path.read_bytes())
    ep = endpoints.wrapClientTLS(tssl.optionsForClientTLS("localhost", trustRoot=ca),
                                 endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    return endpoints.connectProtocol(ep, LineClient())
