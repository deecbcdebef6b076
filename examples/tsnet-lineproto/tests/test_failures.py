"""The example's families in-process when a client repeats what fails: an
influx write the storage refuses (a real SQLite trigger), a token the catalog
cannot read (its row damaged by hand) — one log entry and a count, a fixed
reply — and a Graphite line that never ends (``line_timeout``)."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, protocol, task, threads
from twisted.logger import formatEvent, globalLogPublisher

from tsnet.testing.fixtures import make_token
from tsnet_lineproto import influx
from tsnet_lineproto.graphite import GraphitePlugin
from tsnet_lineproto.influx import InfluxPlugin

T0 = 1_356_998_400
CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = {auth}
apis = influx
"""


def sql(server: Any, statement: str) -> None:
    """Run ``statement`` on the server's SQLite database, behind its back."""
    db = sqlite3.connect(server.core.config.storages["default"].path)
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


@contextmanager
def logged(namespace: str) -> Iterator[list[dict]]:
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == namespace:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    from twisted.internet import reactor

    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {predicate}")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class Client(protocol.Protocol):
    """Sends, collects what comes back, and says when the server closed."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(self.received)


async def connect(port: int) -> Client:
    from twisted.internet import reactor

    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await endpoints.connectProtocol(ep, Client())


def request(port: int, path: str, body: bytes, headers: dict | None = None) -> Any:
    """Deferred[(status, JSON body)]: urllib in a thread, so the server in
    this reactor can answer it."""

    def blocking() -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    return threads.deferToThread(blocking)


def only_summary(events: list[dict]) -> str:
    [line] = [formatEvent(e) for e in events if e.get("log_summary")]
    return line


@pytest_twisted.ensureDeferred
async def test_influx_writes_the_storage_refuses_log_once(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InfluxPlugin, "log_period", 1.0)
    server = await make_server(CONFIG.format(auth="none"))
    sql(server, "CREATE TRIGGER refuse BEFORE INSERT ON series BEGIN "
                "SELECT RAISE(ABORT, 'refused by the test'); END")
    port = server.port("http")
    n = 10
    with logged("tsnet.influx") as events:
        for i in range(n):
            path = "/write?db=d" if i % 2 else "/api/v2/write?bucket=b&org=o"
            code, body = await request(port, path, f"cpu{i},host=a v=1 {T0}000000000".encode())
            assert code == 503
            assert "the points could not be committed" in json.dumps(body)
            assert "refused by the test" not in json.dumps(body)
        await wait_for(lambda: any(e.get("log_summary") for e in events))
    [first] = [e for e in events if e.get("log_failure")]
    assert formatEvent(first) == "influx write of 1 points not committed"
    assert only_summary(events) == f"{n - 1} more {influx.NOT_COMMITTED} in the last 1 s"


@pytest_twisted.ensureDeferred
async def test_influx_requests_crashing_on_a_damaged_token_log_once(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InfluxPlugin, "log_period", 1.0)
    server = await make_server(CONFIG.format(auth="token"))
    _, secrets = await make_token(server)
    sql(server, "UPDATE tokens SET tags = 'not json'")
    port = server.port("http")
    n = 10
    with logged("tsnet.influx") as events:
        for _ in range(n):
            code, body = await request(port, "/write?db=d", f"cpu,host=a v=1 {T0}".encode(),
                                       {"Authorization": f"Token {secrets['write']}"})
            assert (code, body) == (500, {"error": "internal error"})
        await wait_for(lambda: any(e.get("log_summary") for e in events))
    assert len([e for e in events if e.get("log_failure")]) == 1
    assert only_summary(events) == f"{n - 1} more {influx.CRASHES} in the last 1 s"


@pytest_twisted.ensureDeferred
async def test_a_graphite_line_that_never_ends_is_dropped(serve_plugin: Any) -> None:
    """A client that trickles one line forever (so it is never idle) is
    closed at ``line_timeout``; the line before it is stored, the partial
    one is not."""
    from twisted.internet import reactor

    server = await serve_plugin(GraphitePlugin(), line_timeout="0.3")
    c = await connect(server.port("graphite"))
    c.transport.write(f"whole.line 1 {T0}\npartial.line 2 ".encode())
    sent = 0
    while not c.closed.called and sent < 100:  # a byte every 50 ms: never idle
        c.transport.write(b"9")
        sent += 1
        await task.deferLater(reactor, 0.05, lambda: None)
    assert c.closed.called and sent < 40
    await server.flush()
    rows = await server.export()
    assert [(r["metric"], r["value"]) for r in rows] == [("whole.line", 1)]
