"""Outbound connections over real loopback sockets: echo, reconnect, a server
that comes up late, TLS that verifies, one log line per state change, clean stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, error, protocol, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from tests.helpers.certs import make_certs, tls_endpoint
from tests.helpers.clients import LineClient, wait_for
from tsnet.outbound import (
    OutboundService,
    Target,
    backoff_policy,
    client_tls_options,
    parse_target,
)

# --- parse_target ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("tcp:localhost:4242", Target("tcp", "localhost", 4242)),
    ("tcp:host=DB.example.com:port=80:timeout=5", Target("tcp", "db.example.com", 80, timeout=5)),
    ("tcp:[::1]:8080", Target("tcp", "::1", 8080)),
    (r"tcp:\:\:1:8080", Target("tcp", "::1", 8080)),
    ("tls:ts.example.com:443", Target("tls", "ts.example.com", 443)),
    ("ws://ts.example.com", Target("ws", "ts.example.com", 80, "/")),
    ("wss://ts.example.com/ws/read?from=0&x=1", Target("wss", "ts.example.com", 443,
                                                        "/ws/read", "from=0&x=1")),
    ("WS://10.0.0.1:8080/p", Target("ws", "10.0.0.1", 8080, "/p")),
    ("wss://[2001:db8::1]:9443/", Target("wss", "2001:db8::1", 9443, "/")),
])
def test_parse_target(text: str, want: Target) -> None:
    got = parse_target(text)
    assert got == want
    assert parse_target(str(got)) == got  # str() is a canonical form that parses back


def test_target_helpers() -> None:
    t = parse_target("wss://[::1]:9443/ws/read?from=5")
    assert (t.tls, t.address, t.resource, str(t)) == (
        True, "[::1]:9443", "/ws/read?from=5", "wss://[::1]:9443/ws/read?from=5")
    assert not parse_target("tcp:h:1").tls and parse_target("tls:h:1").tls


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("http://h/", "scheme must be ws or wss"),
    ("ssl:h:443", "does not verify certificates; use tls:HOST:PORT"),
    ("unix:/tmp/s", "expected tcp:HOST:PORT"),
    ("tcp:h", "no port"),
    ("tcp::80", "no host"),
    ("tcp:h:0", "port must be an integer from 1 to 65535"),
    ("tcp:h:http", "port must be an integer from 1 to 65535"),
    ("tcp:h:1:2", "expected tcp:HOST:PORT"),
    ("tcp:h:1:bindAddress=x", "unknown option 'bindAddress'"),
    ("tcp:h:1:host=g", "host given twice"),
    ("tcp:h:1:timeout=soon", "timeout must be a positive number"),
    ("tcp:a b:1", "is not a host name"),
    ("tcp:1:2:3:80", "expected tcp:HOST:PORT"),
    ("ws://h:99999/", "Port out of range"),
    ("ws://h:/", "empty port"),
    ("ws:///path", "no host"),
    ("ws://user:pw@h/", "credentials"),
    ("ws://h/p#frag", "no #fragment"),
])
def test_parse_target_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^(bad outbound|outbound target)") as info:
        parse_target(text)
    assert message in str(info.value)


def test_backoff_policy_is_exponential_bounded_and_jittered_below_the_cap() -> None:
    policy = backoff_policy(1.0, 10.0, 2.0, jitter=0)
    assert [policy(n) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]
    assert policy(10_000) == 10
    jittered = backoff_policy(1.0, 10.0, 2.0, jitter=0.5, rand=lambda: 1.0)
    assert [jittered(n) for n in (1, 5)] == [0.5, 5.0]
    for bad in [(0, 1), (2, 1), (1, 2, 0.5), (1, 2, 2, 1.0)]:
        with pytest.raises(ValueError, match="backoff"):
            backoff_policy(*bad)


# --- servers and clients ------------------------------------------------------------------


class Echo(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.remove(self)


class Silent(Echo):
    def dataReceived(self, data: bytes) -> None:
        pass


class EchoFactory(protocol.Factory):
    protocol = Echo
    noisy = False

    def __init__(self) -> None:
        self.connections: list[Echo] = []


class Client(LineClient):
    def connectionMade(self) -> None:
        self.factory.made.append(self)


class ClientFactory(protocol.Factory):
    protocol = Client
    noisy = False

    def __init__(self) -> None:
        self.made: list[Client] = []


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def cleanup() -> Any:
    """Register listening ports and services; all are stopped after the test."""
    items: list[Any] = []
    yield items.append
    for item in reversed(items):
        stop = item.stopService if hasattr(item, "stopService") else item.stopListening
        pytest_twisted.blockon(defer.maybeDeferred(stop))


@pytest.fixture
def events() -> Any:
    """Every log event emitted during the test (all namespaces)."""
    captured: list[dict] = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)


def ours(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "tsnet.outbound"]


@defer.inlineCallbacks
def listen(factory: Any, port: int = 0, cleanup: Any = None, tls: dict | None = None) -> Any:
    ep = (tls_endpoint(reactor(), tls, port) if tls else
          endpoints.serverFromString(reactor(), f"tcp:{port}:interface=127.0.0.1"))
    lp = yield ep.listen(factory)
    if cleanup is not None:
        cleanup(lp)
    return lp


@defer.inlineCallbacks
def free_port() -> Any:
    """A loopback port nobody listens on (bound then released)."""
    lp = yield listen(EchoFactory())
    port = lp.getHost().port
    yield lp.stopListening()
    return port


@defer.inlineCallbacks
def expect_failure(d: defer.Deferred, *types: type) -> Any:
    try:
        result = yield d
    except Exception as e:
        assert isinstance(e, types), Failure().getTraceback()
        return e
    raise AssertionError(f"expected {types}, got {result!r}")


def delay_of_next_retry(clock: task.Clock) -> float:
    (call,) = clock.getDelayedCalls()
    return call.getTime() - clock.seconds()


# --- OutboundService over loopback ---------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_exchanges_bytes_and_stop_closes_the_connection(cleanup: Any, events: list) -> None:
    server = EchoFactory()
    lp = yield listen(server, cleanup=cleanup)
    svc = OutboundService(reactor(), f"tcp:127.0.0.1:{lp.getHost().port}", ClientFactory(),
                          "echo")
    svc.startService()
    cleanup(svc)
    client = yield svc.whenConnected()
    assert isinstance(client, Client) and svc.state == "connected"
    client.send(b"hello\nworld\n")
    assert (yield client.wait_lines(2)) == ["hello", "world"]
    assert (yield svc.whenConnected()) is client  # the current connection, not a new one

    yield svc.stopService()
    assert client.closed.called and svc.state == "stopped"
    yield wait_for(lambda: not server.connections)
    yield expect_failure(svc.whenConnected(), defer.CancelledError)
    address = f"127.0.0.1:{lp.getHost().port}"
    assert ours(events) == [f"connecting to echo at {address}", f"connected to echo at {address}",
                            f"stopped the connection to echo at {address}"]


@pytest_twisted.inlineCallbacks
def test_reconnects_after_the_server_drops_the_connection(cleanup: Any, events: list) -> None:
    server = EchoFactory()
    lp = yield listen(server, cleanup=cleanup)
    factory = ClientFactory()
    svc = OutboundService(reactor(), f"tcp:localhost:{lp.getHost().port}", factory, "echo",
                          initial_delay=0.01, max_delay=0.05)
    svc.startService()
    cleanup(svc)
    first = yield svc.whenConnected()
    yield wait_for(lambda: server.connections)
    server.connections[0].transport.loseConnection()
    yield first.wait_closed()
    second = yield wait_for(lambda: len(factory.made) == 2 and factory.made[1])
    assert second is not first and (yield svc.whenConnected()) is second
    second.send(b"again\n")
    assert (yield second.wait_lines(1)) == ["again"]
    address = f"localhost:{lp.getHost().port}"
    assert ours(events) == [
        f"connecting to echo at {address}", f"connected to echo at {address}",
        f"lost the connection to echo at {address}: Connection was closed cleanly; "
        "reconnecting",
        f"connected to echo at {address}"]


@pytest_twisted.inlineCallbacks
def test_retries_until_the_server_starts_and_logs_the_outage_once(cleanup: Any,
                                                                  events: list) -> None:
    port = yield free_port()
    clock = task.Clock()
    factory = ClientFactory()
    svc = OutboundService(reactor(), f"ws://127.0.0.1:{port}/feed", factory, "feed",
                          initial_delay=1, max_delay=4, jitter=0, clock=clock)
    first = len(events)
    svc.startService()
    cleanup(svc)
    delays = []
    for _ in range(5):  # five refused attempts: waits 1, 2, 4 and then the cap, 4
        yield expect_failure(svc.whenConnected(failAfterFailures=1),
                             error.ConnectionRefusedError)
        delays.append(delay_of_next_retry(clock))
        assert svc.state == "failing"
        if len(delays) < 5:
            clock.advance(delays[-1])
    assert delays == [1, 2, 4, 4, 4] and svc.failures == 5
    assert "refused" in svc.last_error

    during_outage = [formatEvent(e) for e in events[first:]
                     if e.get("log_namespace") != "tsnet.outbound"]
    assert during_outage == []  # nothing else once per attempt ("Scheduling retry ...")

    server = EchoFactory()
    yield listen(server, port, cleanup=cleanup)
    connected = svc.whenConnected()
    clock.advance(4)
    client = yield connected
    client.send(b"up\n")
    assert (yield client.wait_lines(1)) == ["up"]
    assert (svc.state, svc.failures) == ("connected", 0)

    address = f"127.0.0.1:{port}"
    assert ours(events) == [
        f"connecting to feed at {address}",
        f"cannot reach feed at {address}: {svc.last_error}, retrying",
        f"reached feed at {address} again after 5 failed attempts"]
    assert [e["log_level"].name for e in events if e.get("log_namespace") == "tsnet.outbound"
            ] == ["info", "warn", "info"]
    warn = next(e for e in events if e.get("log_namespace") == "tsnet.outbound"
                and e["log_level"].name == "warn")
    assert (warn["outbound"], warn["address"]) == ("feed", address)  # structured fields


@pytest_twisted.inlineCallbacks
def test_stop_service_while_waiting_stops_retrying(cleanup: Any) -> None:
    port = yield free_port()
    clock = task.Clock()
    factory = ClientFactory()
    svc = OutboundService(reactor(), f"tcp:127.0.0.1:{port}", factory, "late",
                          initial_delay=1, jitter=0, clock=clock)
    svc.startService()
    yield expect_failure(svc.whenConnected(failAfterFailures=1), error.ConnectionRefusedError)
    waiting = svc.whenConnected()
    assert len(clock.getDelayedCalls()) == 1

    yield svc.stopService()
    assert clock.getDelayedCalls() == [] and svc.state == "stopped"
    yield expect_failure(waiting, defer.CancelledError)
    server = EchoFactory()
    yield listen(server, port, cleanup=cleanup)
    clock.advance(120)
    yield task.deferLater(reactor(), 0.1, lambda: None)
    assert factory.made == [] and server.connections == []


@pytest_twisted.inlineCallbacks
def test_stop_service_during_an_attempt_abandons_it(cleanup: Any, tmp_path: Path) -> None:
    # A plain TCP server that never answers the TLS handshake: the attempt hangs.
    lp = yield listen(protocol.Factory.forProtocol(protocol.Protocol), cleanup=cleanup)
    certs = make_certs(tmp_path / "certs")
    factory = ClientFactory()
    svc = OutboundService(reactor(), f"tls:localhost:{lp.getHost().port}", factory, "hang",
                          ca_file=certs["ca"])
    svc.startService()
    waiting = svc.whenConnected()
    yield task.deferLater(reactor(), 0.1, lambda: None)
    yield svc.stopService()
    yield expect_failure(waiting, defer.CancelledError)
    assert factory.made == []


@pytest_twisted.inlineCallbacks
def test_an_attempt_that_hangs_times_out(cleanup: Any, tmp_path: Path) -> None:
    silent = EchoFactory()
    silent.protocol = Silent
    lp = yield listen(silent, cleanup=cleanup)
    certs = make_certs(tmp_path / "certs")
    clock = task.Clock()
    svc = OutboundService(reactor(), f"tls:localhost:{lp.getHost().port}", ClientFactory(),
                          "hang", ca_file=certs["ca"], connect_timeout=10, clock=clock)
    svc.startService()
    cleanup(svc)
    failed = svc.whenConnected(failAfterFailures=1)
    yield wait_for(lambda: silent.connections)  # TCP is up, the TLS handshake hangs
    clock.advance(10)
    e = yield expect_failure(failed, defer.TimeoutError)
    assert svc.last_error == "no connection within 10 s" == str(e)


# --- TLS ----------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_tls_verified_with_the_private_ca(cleanup: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    lp = yield listen(EchoFactory(), cleanup=cleanup, tls=certs)
    port = lp.getHost().port
    for target in (f"tls:localhost:{port}", f"wss://127.0.0.1:{port}/"):  # DNS and IP SANs
        svc = OutboundService(reactor(), target, ClientFactory(), "tls", ca_file=certs["ca"])
        svc.startService()
        cleanup(svc)
        client = yield svc.whenConnected()
        assert client.transport.getPeerCertificate() is not None  # connected after verifying
        client.send(b"secret\n")
        assert (yield client.wait_lines(1)) == ["secret"]


@pytest_twisted.inlineCallbacks
def test_tls_without_the_ca_fails_verification_and_is_a_failed_attempt(
        cleanup: Any, tmp_path: Path, events: list) -> None:
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")  # a CA that did not sign the server
    lp = yield listen(EchoFactory(), cleanup=cleanup, tls=certs)
    clock = task.Clock()
    for ca_file in (None, other["ca"]):  # platform trust store; the wrong private CA
        factory = ClientFactory()
        svc = OutboundService(reactor(), f"tls:localhost:{lp.getHost().port}", factory,
                              "untrusted", ca_file=ca_file, clock=clock)
        svc.startService()
        cleanup(svc)
        yield expect_failure(svc.whenConnected(failAfterFailures=1), Exception)
        assert svc.state == "failing" and "certificate verify failed" in svc.last_error
        assert factory.made == []  # the application protocol never saw the peer
        yield svc.stopService()
    texts = ours(events)
    assert not [t for t in texts if t.startswith("connected")]
    assert sum("cannot reach untrusted" in t and "certificate verify failed" in t
               for t in texts) == 2


@pytest_twisted.inlineCallbacks
def test_tls_to_an_address_the_certificate_does_not_name_fails(cleanup: Any,
                                                               tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")  # valid for localhost and 127.0.0.1 only
    try:
        lp = yield tls_endpoint(reactor(), certs, interface="127.0.0.2").listen(EchoFactory())
    except error.CannotListenError:
        pytest.skip("cannot listen on 127.0.0.2 here")
    cleanup(lp)
    factory = ClientFactory()
    svc = OutboundService(reactor(), f"tls:127.0.0.2:{lp.getHost().port}", factory, "wrong",
                          ca_file=certs["ca"], clock=task.Clock())
    svc.startService()
    cleanup(svc)
    yield expect_failure(svc.whenConnected(failAfterFailures=1), Exception)
    assert svc.last_error.startswith("certificate does not match the host name")
    assert "127.0.0.2" in svc.last_error and factory.made == []


class Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.lost: defer.Deferred = defer.Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(reason.value)


@defer.inlineCallbacks
def tls_exchange(port: int, options: Any) -> Any:
    """Connect with ``options`` (plain Twisted, no OutboundService), send a line;
    returns (bytes echoed, reason the connection ended)."""
    ep = endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(reactor(), "127.0.0.1",
                                                                       port))
    proto = yield endpoints.connectProtocol(ep, Recorder())
    proto.transport.write(b"ping\n")
    yield wait_for(lambda: proto.received or proto.lost.called)
    proto.transport.loseConnection()
    reason = yield proto.lost
    return proto.received, reason


@pytest_twisted.inlineCallbacks
def test_client_tls_options_verify_the_hostname(cleanup: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    lp = yield listen(EchoFactory(), cleanup=cleanup, tls=certs)
    port = lp.getHost().port
    data, _ = yield tls_exchange(port, client_tls_options("localhost", certs["ca"]))
    assert data == b"ping\n"
    data, reason = yield tls_exchange(port, client_tls_options("tsnet.invalid", certs["ca"]))
    assert data == b"" and "VerificationError" in repr(reason)
    data, reason = yield tls_exchange(port, client_tls_options("localhost"))
    assert data == b"" and "certificate verify failed" in str(reason)


def test_client_tls_options_rejects_a_ca_file_without_certificates(tmp_path: Path) -> None:
    bad = tmp_path / "empty.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        client_tls_options("localhost", bad)
    with pytest.raises(FileNotFoundError):
        client_tls_options("localhost", tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="hostname"):
        client_tls_options("")
