"""ts-store's WebSocket write (spec §6), spoken to by a real Autobahn client over
ws:// and wss:// (verified TLS), by raw sockets (the refusals, back-pressure) and
by the real ``websocat`` binary."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, endpoints, protocol, ssl, threads
from twisted.logger import formatEvent

from tests.helpers.certs import make_certs
from tests.helpers.clients import connect_line, sleep, wait_for
from tests.helpers.logs import leaks, refuse, watching
from tsnet.http.websocket import WebSocketResource
from tsnet.plugin import ProtocolPlugin, Unauthorized
from tsnet.protocols.tsstore import ws_write
from tsnet.protocols.tsstore.gojson import GoJSONError, check_json, decode_envelope
from tsnet.protocols.tsstore.ws_write import ack_reply, error_reply, fast_envelope

ADMIN = "admin-key-of-twenty-chars"

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[tsstore]
admin_key = {admin}

[listener:http]
protocol = http
endpoint = {endpoint}
apis = tsstore metrics
"""

TCP = "tcp:0:interface=127.0.0.1"
SCHEMA = [{"index": 1, "name": "temperature", "type": "float64"},
          {"index": 2, "name": "humidity", "type": "int32"},
          {"index": 3, "name": "sensor_id", "type": "string"}]


@defer.inlineCallbacks
def start(make_server: Any, endpoint: str = TCP) -> Any:
    server = yield make_server(CONFIG.format(admin=ADMIN, endpoint=endpoint))
    return server


def stores_of(server: Any) -> Any:
    return server.core.plugins["tsstore"].stores_for(server.core)


@defer.inlineCallbacks
def create(server: Any, name: str = "s1", data_type: str = "json", schema: Any = None,
           **kw: Any) -> Any:
    """A new store: its key."""
    stores = stores_of(server)
    store, key, _ = yield defer.ensureDeferred(stores.create(name, data_type=data_type, **kw))
    if schema is not None:
        store.schema = store.schema.evolve(schema)
        yield defer.ensureDeferred(stores.save(store))
    return key


def url(server: Any, store: str = "s1", key: str | None = None, query: str = "",
        scheme: str = "ws", host: str = "127.0.0.1") -> str:
    q = "&".join(p for p in (f"api_key={key}" if key else "", query) if p)
    return (f"{scheme}://{host}:{server.port('http')}/api/stores/{store}/ws/write"
            + (f"?{q}" if q else ""))


class Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append(payload)

    def onPong(self, payload: bytes) -> None:
        self.factory.pongs.append(payload)

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed before open: {reason}"))
        self.factory.closed.append(code)

    def send(self, message: Any, binary: bool = False) -> None:
        raw = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.sendMessage(raw, isBinary=binary)

    @property
    def replies(self) -> list[bytes]:
        return self.factory.messages

    def wait(self, n: int, timeout: float = 10.0) -> defer.Deferred:
        """All replies, parsed, once ``n`` have come."""
        d = wait_for(lambda: len(self.factory.messages) >= n, timeout=timeout)
        return d.addCallback(lambda _: [json.loads(m) for m in self.factory.messages])


def ws_connect(address: str, headers: dict | None = None, tls: Any = None) -> defer.Deferred:
    factory = WebSocketClientFactory(address, headers=headers or {})
    factory.protocol = Client
    factory.opened = defer.Deferred()
    factory.messages = []
    factory.pongs = []
    factory.closed = []
    connectWS(factory, contextFactory=tls)
    return factory.opened


def server_side(server: Any, store: str = "s1") -> list[Any]:
    """The open writers of ``store``."""
    writers = server.core.plugins["tsstore"].stores_for(server.core).writers
    return [p for p in list(writers) if p.store.name == store]


HANDSHAKE = ("GET /api/stores/{store}/ws/write{query} HTTP/1.1\r\nHost: x\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Origin: http://example.com\r\n{extra}\r\n")


def split_reply(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


# -- before the upgrade (spec §2, §6) --------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_store_key_refusals_are_plain_401s_without_an_upgrade(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    other = "tsstore_00000000-0000-4000-8000-000000000000"
    cases = [
        ("s1", "", "", "API key required"),
        ("s1", "?api_key=nope", "", "invalid API key format"),
        ("s1", "", "X-API-Key: tsstore_short\r\n", "invalid API key format"),
        ("s1", f"?api_key={other}", "", "invalid API key"),
        ("s1", "", f"Authorization: Bearer {other}\r\n", "invalid API key"),
        ("nostore", f"?api_key={key}", "", "authentication failed"),
        # X-API-Key wins over a good api_key in the query
        ("s1", f"?api_key={key}", f"X-API-Key: {other}\r\n", "invalid API key"),
    ]
    for store, query, extra, message in cases:
        c = yield connect_line(server.port("http"))
        c.send(HANDSHAKE.format(store=store, query=query, extra=extra))
        status, headers, body = split_reply((yield c.wait_closed()))
        assert status == "HTTP/1.1 401 Unauthorized", (message, status)
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert headers["access-control-allow-origin"] == "http://example.com"
        assert headers["access-control-allow-credentials"] == "true"
        assert "sec-websocket-accept" not in headers
        assert json.loads(body) == {"error": message}
    assert server_side(server) == []


@pytest_twisted.inlineCallbacks
def test_a_plain_get_is_a_400_once_authenticated(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    resp = yield treq.get(url(server, key=key).replace("ws://", "http://"))
    assert resp.code == 400
    assert (yield treq.content(resp)) == b"Bad Request\n"
    assert resp.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert resp.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    resp = yield treq.get(url(server).replace("ws://", "http://"))
    assert resp.code == 401  # the key is checked first
    assert json.loads((yield treq.content(resp))) == {"error": "API key required"}


@pytest_twisted.inlineCallbacks
def test_keys_from_headers_and_any_origin(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    a = yield ws_connect(url(server), {"X-API-Key": key, "Origin": "https://elsewhere.example"})
    b = yield ws_connect(url(server), {"Authorization": f"Bearer {key}"})
    a.send({"timestamp": 10, "data": 1})
    yield a.wait(1)
    b.send({"timestamp": 20, "data": 2})
    assert (yield b.wait(1)) == [{"type": "ack", "timestamp": 20, "size": 1}]
    assert a.http_headers.get("sec-websocket-protocol") is None


# -- replies (spec §6) -------------------------------------------------------------------


def test_reply_shapes_are_omitempty() -> None:
    assert ack_reply(5, 0, 0) == b'{"type":"ack","timestamp":5}\n'
    assert ack_reply(5, 3, 7) == b'{"type":"ack","timestamp":5,"block_num":3,"size":7}\n'
    assert ack_reply(0, 0, 0) == b'{"type":"ack"}\n'
    assert error_reply('a "<b>" & c') == (
        b'{"type":"error","message":"a \\"\\u003cb\\u003e\\" \\u0026 c"}\n')


def decoded(payload: bytes) -> Any:
    """What the slow path makes of a message: (ts, raw, raw is valid JSON) or the error."""
    try:
        ts, raw = decode_envelope(payload)
    except GoJSONError as e:
        return str(e)
    try:
        if raw is not None:
            check_json(raw)
    except GoJSONError:
        return ts, raw, False
    return ts, raw, True


def agrees(payload: bytes) -> bool:
    """fast_envelope, when it answers, answers what decode_envelope + check_json do."""
    fast = fast_envelope(payload)
    if fast is None:
        return False
    assert (*fast, True) == decoded(payload), payload
    return True


TRICKY = [
    b'{"data":1,"data":2}', b'{"data":1,"timestamp":2,"timestamp":3}',
    b'{"data":{"a":1,"timestamp":5}}', b'{"data":"a\\","timestamp":5}',
    b'{"data":"x,\\"timestamp\\":5}"}', b'{"data":1 }', b'{"data": 1}',
    b'{"data":1,"timestamp":01}', b'{"data":1,"timestamp":-0}', b'{"data":1,"Timestamp":5}',
    b'{"timestamp":9223372036854775808,"data":1}', b'{"timestamp":-9223372036854775808,"data":1}',
    b'{"timestamp":9223372036854775807,"data":1}', b'{"timestamp":1.5,"data":1}',
    b'{"timestamp":5,"data":}', b'{"data":}', b'{"data":"\\ud800"}', b'{"data":1e400}',
    b'{"data":NaN}', b'{"data":"\xff"}', b'{"data":[1,2]]}', b'{"data":1}}', b'{"data":{}}',
    b'{"data":null}', b'{"data":"<&>"}', b'{"data":[' * 300 + b']' * 300 + b'}',
    b'{"DATA":1}', b'{"data":1,"x":2}', b'{"x":2,"data":1}', b'{"data":1,"timestamp":5 }',
]


def test_the_fast_envelope_path_agrees_with_decode_envelope() -> None:
    for payload in TRICKY:
        agrees(payload)
    # the common shapes take it
    assert all(agrees(p) for p in (b'{"data":{"v":1}}', b'{"data":1,"timestamp":5}',
                                   b'{"timestamp":5,"data":"x"}', b'{"timestamp":0,"data":1}',
                                   b'{"data":null}'))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                            allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(min_value=-(2**64), max_value=2**64) | st.none(),
       st.sampled_from(["first", "last"]), st.sampled_from([", ", ",", ""]))
def test_the_fast_envelope_path_agrees_on_any_envelope(data: Any, ts: Any, where: str,
                                                       sep: str) -> None:
    raw = json.dumps(data, separators=(sep or ",", ":"), ensure_ascii=bool(sep))
    if ts is None:
        payload = '{"data":' + raw + "}"
    elif where == "first":
        payload = '{"timestamp":' + str(ts) + ',"data":' + raw + "}"
    else:
        payload = '{"data":' + raw + ',"timestamp":' + str(ts) + "}"
    taken = agrees(payload.encode())
    if -(2**63) <= (ts or 0) < 2**63:
        assert taken


@pytest_twisted.inlineCallbacks
def test_acks_have_gos_shape(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server, "s1", "json", data_block_size=64)
    text_key = yield create(server, "t1", "text")
    c = yield ws_connect(url(server, key=key))
    c.sendMessage(b'{"timestamp": 1000, "data": {"t": 72.5}}')  # 11 bytes, as sent
    c.send({"timestamp": 2000, "data": 12})  # 48 + 11 + 24 + 2 > 64: block 1
    before = time.time_ns()
    c.send({"data": "x"})  # no timestamp: the server's time
    c.send({"timestamp": 0, "data": True}, binary=True)  # 0: the server's time too
    replies = yield c.wait(4)
    assert all(m.endswith(b"}\n") for m in c.replies)
    assert c.replies[0] == b'{"type":"ack","timestamp":1000,"size":11}\n'  # no block_num
    assert replies[1] == {"type": "ack", "timestamp": 2000, "block_num": 1, "size": 2}
    assert before <= replies[2]["timestamp"] < replies[3]["timestamp"] <= time.time_ns()
    assert (replies[2]["size"], replies[3]["size"]) == (3, 4)
    t = yield ws_connect(url(server, "t1", text_key))
    t.send({"timestamp": 5})  # a text store keeps the JSON text of data: nothing here
    t.send({"timestamp": 6, "data": "hi"})  # quotes included
    assert (yield t.wait(2)) == [{"type": "ack", "timestamp": 5},  # no size key
                                 {"type": "ack", "timestamp": 6, "size": 4}]
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert [(r.time_ns, r.data, r.block) for r in records[:2]] == [
        (1000, b'{"t": 72.5}', 0), (2000, b"12", 1)]
    assert [r.data for r in records[2:]] == [b'"x"', b"true"]
    records = yield server.core.storage.backend_for("t1").read_records("t1")
    assert [(r.time_ns, r.data) for r in records] == [(5, b""), (6, b'"hi"')]


@pytest_twisted.inlineCallbacks
def test_bad_messages_get_error_frames_and_the_connection_stays(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    c = yield ws_connect(url(server, key=key))
    cases = [
        (b"nope", "invalid character 'o' in literal null (expecting 'u')"),
        (b"", "unexpected end of JSON input"),
        (b'{"timestamp": 1, "data": {"a": 1}', "unexpected end of JSON input"),
        (b'{"timestamp": "1", "data": 1}',
         "json: cannot unmarshal string into Go struct field WSWriteRequest.timestamp "
         "of type int64"),
        (b"[1]", "json: cannot unmarshal array into Go value of type "
                 "handlers.WSWriteRequest"),
        (b'{"timestamp": 100}', "unexpected end of JSON input"),  # json store, no data
        (b'{"timestamp": -5, "data": 1}', "invalid timestamp"),
        (b'{"timestamp": 100, "data": 1}', None),
        (b'{"timestamp": 100, "data": 2}', "timestamp must be greater than newest entry"),
        (b'{"timestamp": 99, "data": 3}', "timestamp must be greater than newest entry"),
        (b'{"timestamp": 101, "data": 4}', None),
        (b"\xff\xfe", None),  # invalid UTF-8 in a text frame: an error frame, no close
    ]
    for raw, _ in cases:
        c.sendMessage(raw)
    replies = yield c.wait(len(cases))
    for (raw, message), reply in zip(cases[:-1], replies, strict=False):
        if message is None:
            assert reply["type"] == "ack", (raw, reply)
        else:
            assert reply == {"type": "error", "message": message}, raw
    assert replies[-1]["type"] == "error"
    assert c.factory.closed == []
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert [(r.time_ns, r.data) for r in records] == [(100, b"1"), (101, b"4")]


@pytest_twisted.inlineCallbacks
def test_a_storage_refusing_every_message_logs_once_and_tells_nothing(
        make_server: Any) -> None:
    """The storage refuses each record (a real SQLite trigger): every message
    gets ``internal error``, never the storage's text, and the log has one
    traceback plus, at stop, one line counting the rest."""
    server = yield start(make_server)
    key = yield create(server)
    refuse(server, "records")
    n = 40
    with watching("tsnet.tsstore") as events:
        c = yield ws_connect(url(server, key=key))
        for i in range(1, n + 1):
            c.send({"timestamp": i, "data": {"n": i}})
        replies = yield c.wait(n)
        assert replies == [{"type": "error", "message": "internal error"}] * n
        assert not [r for r in c.replies if leaks(r)]
        assert c.factory.closed == []  # the connection stays
        yield server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(ws_write.WRITE_FAILURES)
    assert formatEvent(first) == "a WebSocket write to store s1 failed"
    [summary] = events.summaries(ws_write.WRITE_FAILURES)
    assert summary.startswith(f"{n - 1} more failed WebSocket writes in the last ")


@pytest_twisted.inlineCallbacks
def test_a_store_that_cannot_open_refuses_writers_with_one_log_line(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store whose settings were damaged while tsnet was down: every writer
    hears HTTP 500 ``internal error``, the log one traceback and a count."""
    monkeypatch.setattr(ws_write.WriteResource, "log_period", 2.0)
    text = CONFIG.format(admin=ADMIN, endpoint=TCP)
    server = yield make_server(text)
    key = yield create(server)
    yield server.stop()
    db = sqlite3.connect(server.core.config.storages["default"].path)
    db.execute("UPDATE solutions SET attributes = json_set(attributes, "
               "'$.tsstore.num_blocks', 'many') WHERE name = 's1'")
    db.commit()
    db.close()
    server = yield make_server(text)  # the same folder, so the same database
    n = 12
    with watching("tsnet.tsstore") as events:
        for _ in range(n):
            c = yield connect_line(server.port("http"))
            c.send(HANDSHAKE.format(store="s1", query=f"?api_key={key}", extra=""))
            status, _, body = split_reply((yield c.wait_closed()))
            assert status == "HTTP/1.1 500 Internal Server Error"
            assert json.loads(body) == {"error": "internal error"}
        yield wait_for(lambda: events.summaries(), timeout=10)  # the period ends
    assert len(events.failures()) == 1
    assert formatEvent(events.full(ws_write.UPGRADE_FAILURES)[0]) == (
        "authenticating a WebSocket writer failed")
    [summary] = events.summaries()
    assert summary == f"{n - 1} more failed WebSocket write upgrades in the last 2 s"


@pytest_twisted.inlineCallbacks
def test_a_hundred_pipelined_messages_are_answered_in_order(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server, num_blocks=8, data_block_size=256)
    c = yield ws_connect(url(server, key=key))
    sent = []
    for i in range(100):
        if i % 10 == 9:
            c.sendMessage(b'{"timestamp": 1, "data": 0}')  # out of order: an error
            sent.append(None)
        else:
            ts = 1_000_000 + i
            c.send({"timestamp": ts, "data": {"i": i}})
            sent.append(ts)
    replies = yield c.wait(100)
    for ts, reply in zip(sent, replies, strict=True):
        if ts is None:
            assert reply == {"type": "error",
                             "message": "timestamp must be greater than newest entry"}
        else:
            assert reply["type"] == "ack" and reply["timestamp"] == ts
    stamps = [r["timestamp"] for r in replies if r["type"] == "ack"]
    assert stamps == sorted(stamps) and len(set(stamps)) == 90
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    # 8 blocks of 256 bytes hold 21 of these 35-byte records: the ring reclaimed the rest
    assert [r.time_ns for r in records] == stamps[-len(records):]
    assert [r.block for r in records] == [reply.get("block_num", 0) for reply in
                                          replies if reply["type"] == "ack"][-len(records):]


def hold_writes(stores: Any) -> list[tuple[defer.Deferred, defer.Deferred]]:
    """Make ``stores.write`` answer only when the test says: (held, real) pairs."""
    held: list[tuple[defer.Deferred, defer.Deferred]] = []
    real = stores.write

    def write(store: Any, data: bytes, time_ns: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        held.append((d, real(store, data, time_ns)))
        return d

    stores.write = write
    return held


@pytest_twisted.inlineCallbacks
def test_replies_keep_message_order_when_commits_do_not(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    held = hold_writes(stores_of(server))
    c = yield ws_connect(url(server, key=key))
    for i in range(1, 6):
        c.send({"timestamp": i, "data": i})
    c.sendMessage(b"{")  # an error known at once waits its turn
    c.send({"timestamp": 7, "data": 7})
    yield wait_for(lambda: len(held) == 6)
    yield defer.gatherResults([r for _, r in held])  # all committed
    yield sleep(0.1)
    assert c.replies == []  # nothing answered yet: the first ack is held
    for d, real in reversed(held):  # commits answered newest first
        real.chainDeferred(d)
    replies = yield c.wait(7)
    assert [r.get("timestamp") for r in replies] == [1, 2, 3, 4, 5, None, 7]
    assert replies[5] == {"type": "error", "message": "unexpected end of JSON input"}


@pytest_twisted.inlineCallbacks
def test_schema_full_and_compact(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server, "s1", "schema", schema=SCHEMA)
    full = yield ws_connect(url(server, key=key))
    full.send({"timestamp": 1, "data": {"temperature": 72.5, "humidity": 45,
                                        "sensor_id": "room-1"}})
    full.send({"timestamp": 2, "data": {"x": 1}})
    full.send({"timestamp": 3, "data": {"1": 1}})  # compact sent to the full form
    full.send({"timestamp": 4, "data": [1]})
    full.send({"timestamp": 5})
    replies = yield full.wait(5)
    assert replies[0] == {"type": "ack", "timestamp": 1, "size": 30}
    assert replies[1:] == [
        {"type": "error", "message": "field not found in schema: x"},  # no prefix
        {"type": "error", "message": "field not found in schema: 1"},
        {"type": "error", "message": "invalid JSON: json: cannot unmarshal array into Go "
                                     "value of type map[string]interface {}"},
        {"type": "error", "message": "invalid JSON: unexpected end of JSON input"},
    ]
    explicit = yield ws_connect(url(server, key=key, query="format=full"))
    explicit.send({"timestamp": 6, "data": {"humidity": 40}})
    assert (yield explicit.wait(1)) == [{"type": "ack", "timestamp": 6, "size": 8}]
    compact = yield ws_connect(url(server, key=key, query="format=compact"))
    compact.send({"timestamp": 7, "data": {"1": 70.0, "9": "not in the schema"}})
    compact.send({"timestamp": 8, "data": {"temperature": 1}})  # stored as sent, unchecked
    compact.send({"timestamp": 9})  # no data: 0 bytes
    other = yield ws_connect(url(server, key=key, query="format=anything"))  # = compact
    other.send({"timestamp": 10, "data": {"2": 1}})
    replies = yield compact.wait(3)
    assert replies == [{"type": "ack", "timestamp": 7, "size": 37},
                       {"type": "ack", "timestamp": 8, "size": 18},
                       {"type": "ack", "timestamp": 9}]
    assert (yield other.wait(1)) == [{"type": "ack", "timestamp": 10, "size": 8}]
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert [(r.time_ns, r.data) for r in records] == [
        (1, b'{"1":72.5,"2":45,"3":"room-1"}'), (6, b'{"2":40}'),
        (7, b'{"1": 70.0, "9": "not in the schema"}'), (8, b'{"temperature": 1}'),
        (9, b""), (10, b'{"2": 1}')]


@pytest_twisted.inlineCallbacks
def test_schema_store_without_a_schema(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server, "s1", "schema")
    c = yield ws_connect(url(server, key=key))
    c.send({"timestamp": 1, "data": {"a": 1}})
    assert (yield c.wait(1)) == [{"type": "error",
                                  "message": "schema is required for schema data type"}]


# -- the connection ----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_ping_close_and_an_oversized_message(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    c = yield ws_connect(url(server, key=key))
    c.sendPing(b"hello?")
    yield wait_for(lambda: c.factory.pongs)
    assert c.factory.pongs == [b"hello?"]
    assert len(server_side(server)) == 1
    c.sendClose(1000)
    yield wait_for(lambda: c.factory.closed)
    assert c.factory.closed == [1000]
    yield wait_for(lambda: not server_side(server))
    big = yield ws_connect(url(server, key=key))
    big.sendMessage(b'{"data":"' + b"x" * (1024 * 1024) + b'"}')  # over 1 MiB
    yield wait_for(lambda: big.factory.closed)
    assert big.factory.closed == [1009]
    assert big.replies == []
    again = yield ws_connect(url(server, key=key))  # the server is fine
    again.send({"timestamp": 1, "data": 1})
    assert (yield again.wait(1))[0]["type"] == "ack"
    again.sendCloseFrame(code=1001, isReply=False)  # going away (sendClose refuses 1001)
    yield wait_for(lambda: again.factory.closed)
    yield wait_for(lambda: not server_side(server))


@pytest_twisted.inlineCallbacks
def test_wss_with_a_verifying_client(make_server: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    server = yield start(make_server, f"ssl:0:interface=127.0.0.1:privateKey={certs['key']}"
                                      f":certKey={certs['cert']}")
    key = yield create(server)
    tls = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(certs["ca"].read_bytes()))
    c = yield ws_connect(url(server, key=key, scheme="wss", host="localhost"), tls=tls)
    for i in range(1, 51):
        c.send({"timestamp": i, "data": {"secure": i}})
    replies = yield c.wait(50)
    assert [r["timestamp"] for r in replies] == list(range(1, 51))
    c.sendPing(b"p")
    yield wait_for(lambda: c.factory.pongs)
    c.sendClose()
    yield wait_for(lambda: c.factory.closed)
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert len(records) == 50


# -- back-pressure -------------------------------------------------------------------------


class RawWriter(protocol.Protocol):
    """A WebSocket client by hand: masked frames out, replies parsed on demand."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.handshake: defer.Deferred = defer.Deferred()
        self.upgraded = False
        self.parsed: list[bytes] = []
        self._at = 0

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded and b"\r\n\r\n" in self.buf:
            head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
            self.buf = bytearray(rest)
            self.upgraded = True
            self.handshake.callback(head)

    @staticmethod
    def frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
        """A masked client frame (a random mask)."""
        n = len(payload)
        head = bytes((0x80 * fin | opcode,))
        if n <= 125:
            head += bytes((0x80 | n,))
        elif n <= 0xFFFF:
            head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
        else:
            head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
        return head + mask + masked

    def frames(self) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every server frame so far."""
        out, at, buf = [], 0, self.buf
        while len(buf) - at >= 2:
            n, start = buf[at + 1] & 0x7F, at + 2
            if n == 126:
                n, start = int.from_bytes(buf[at + 2:at + 4], "big"), at + 4
            elif n == 127:
                n, start = int.from_bytes(buf[at + 2:at + 10], "big"), at + 10
            if len(buf) < start + n:
                break
            out.append((buf[at] & 0x0F, bytes(buf[start:start + n])))
            at = start + n
        return out

    def replies(self) -> list[bytes]:
        """The server's frames so far (unmasked text frames)."""
        buf, at = self.buf, self._at
        while len(buf) - at >= 2:
            n, start = buf[at + 1] & 0x7F, at + 2
            if n == 126:
                n, start = int.from_bytes(buf[at + 2:at + 4], "big"), at + 4
            elif n == 127:
                n, start = int.from_bytes(buf[at + 2:at + 10], "big"), at + 10
            if len(buf) < start + n:
                break
            self.parsed.append(bytes(buf[start:start + n]))
            at = start + n
        self._at = at
        return self.parsed


@defer.inlineCallbacks
def raw_writer(server: Any, key: str, store: str = "s1") -> Any:
    from twisted.internet import reactor

    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("http"))
    raw = yield endpoints.connectProtocol(ep, RawWriter())
    raw.transport.write(HANDSHAKE.format(store=store, query=f"?api_key={key}",
                                         extra="").encode())
    head = yield raw.handshake
    assert head.startswith(b"HTTP/1.1 101 ")
    return raw


@pytest_twisted.inlineCallbacks
def test_every_kind_of_frame_and_split(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    raw = yield raw_writer(server, key)
    f = raw.frame

    def msg(ts: int, data: Any = 1) -> bytes:
        return json.dumps({"timestamp": ts, "data": data}).encode()

    first_half, second_half = msg(3)[:10], msg(3)[10:]
    raw.transport.write(
        f(msg(1)) + f(b"ping!", opcode=9) + f(msg(2), opcode=2)  # binary
        + f(first_half, fin=False) + f(second_half, opcode=0)  # a fragmented message
        + f(msg(4, "x" * 300)) + f(msg(5, "y" * 70000)))  # 16- and 64-bit lengths
    tail = f(msg(6)) + f(msg(7))
    for i in range(len(tail)):  # then one byte at a time
        raw.transport.write(tail[i:i + 1])
        yield sleep(0.001)
    yield wait_for(lambda: len(raw.frames()) >= 8)
    frames = raw.frames()
    assert frames[0] == (10, b"ping!")  # the pong comes first: acks wait for commits
    replies = [json.loads(p) for op, p in frames[1:]]
    assert all(op == 1 for op, _ in frames[1:])
    assert [r["timestamp"] for r in replies] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["size"] for r in replies] == [1, 1, 1, 302, 70002, 1, 1]
    raw.transport.write(f(b"\x03\xe8", opcode=8))  # close 1000
    yield wait_for(lambda: len(raw.frames()) == 9)
    assert raw.frames()[-1] == (8, b"\x03\xe8")
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert len(records) == 7


@pytest.mark.parametrize("watch", ["producer", "polled"])
@pytest_twisted.inlineCallbacks
def test_a_client_that_never_reads_is_paused_not_buffered(make_server: Any, watch: str,
                                                          monkeypatch: Any) -> None:
    if watch == "polled":  # the transport has a producer already: the buffer is polled
        on_open = ws_write.WriteProtocol.onOpen

        def taken(self: Any) -> None:
            def refuse(*args: Any) -> None:
                raise RuntimeError("Cannot register producer")
            self.transport.registerProducer = refuse
            on_open(self)
            del self.transport.registerProducer

        monkeypatch.setattr(ws_write.WriteProtocol, "onOpen", taken)
    server = yield start(make_server)
    key = yield create(server, "s1", "schema", schema=SCHEMA)
    raw = yield raw_writer(server, key)
    raw.transport.pauseProducing()  # from now on the client reads nothing
    [proto] = server_side(server)
    # each error frame repeats the 8 kB field name: 16 MB of replies nobody reads
    bad = raw.frame(json.dumps({"data": {"k" * 8000: 1}}).encode())
    n_bad, n_good = 2000, 500
    raw.transport.write(bad * n_bad)
    for i in range(n_good):
        raw.transport.write(raw.frame(json.dumps(
            {"timestamp": 1000 + i, "data": {"humidity": i}}).encode()))
    yield wait_for(lambda: proto.paused)
    yield sleep(0.3)
    read = proto.messages
    yield sleep(0.3)
    assert proto.paused and proto.messages == read < n_bad  # it stopped reading
    handle = proto.transport
    buffered = len(handle.dataBuffer) + handle._tempDataLen
    assert buffered < 4 * 1024 * 1024  # what waits in the server is bounded
    raw.transport.resumeProducing()  # the client reads: everything gets answered
    yield wait_for(lambda: len(raw.replies()) >= n_bad + n_good, timeout=30)
    replies = [json.loads(r) for r in raw.replies()]
    assert all(r["type"] == "error" for r in replies[:n_bad])
    assert replies[0]["message"] == "field not found in schema: " + "k" * 8000
    assert [r["timestamp"] for r in replies[n_bad:]] == [1000 + i for i in range(n_good)]
    assert proto.pauses >= 1 and not proto.paused
    assert (proto._producer is None) == (watch == "polled")
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert len(records) == n_good
    raw.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_a_full_write_queue_pauses_the_writers(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    ingest = server.core.ingest
    ingest.high_watermark, ingest.low_watermark = 20, 5
    c = yield ws_connect(url(server, key=key))
    [proto] = server_side(server)
    for i in range(1, 301):
        c.send({"timestamp": i, "data": i})
    replies = yield c.wait(300)
    assert [r["timestamp"] for r in replies] == list(range(1, 301))
    assert proto.pauses >= 1 and not proto.paused  # paused by ingest, then resumed
    assert ingest.queued == 0 and not ingest.paused


@pytest_twisted.inlineCallbacks
def test_too_many_uncommitted_replies_pause_reading(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)
    stores = stores_of(server)
    real_write = stores.write
    held = hold_writes(stores)
    c = yield ws_connect(url(server, key=key))
    total = 3000
    for i in range(total):
        c.send({"timestamp": i + 1, "data": i})
    [proto] = server_side(server)
    yield wait_for(lambda: proto.paused)
    yield sleep(0.3)
    assert proto.paused and proto.pending == proto.messages == len(held)
    assert proto.max_pending < proto.pending < total  # at most one read chunk past the bound
    stores.write = real_write
    for d, real in held:  # the commits come: reading goes on
        real.chainDeferred(d)
    replies = yield c.wait(total, timeout=30)
    assert [r["timestamp"] for r in replies] == list(range(1, total + 1))
    assert not proto.paused and proto.pending == 0
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert len(records) == total


# -- a real client ----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_websocat_binary(make_server: Any) -> None:
    server = yield start(make_server)
    key = yield create(server)

    def run(address: str, message: bytes) -> subprocess.CompletedProcess:
        return subprocess.run(["websocat", "-n1", address], input=message,
                              capture_output=True, timeout=20, env=dict(os.environ))

    done = yield threads.deferToThread(run, url(server, key=key),
                                       b'{"timestamp": 42, "data": {"via": "websocat"}}\n')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"type": "ack", "timestamp": 42, "size": 19}
    done = yield threads.deferToThread(run, url(server, key=key), b'{"timestamp": 41}\n')
    assert json.loads(done.stdout) == {"type": "error", "message":
                                       "unexpected end of JSON input"}
    done = yield threads.deferToThread(run, url(server, key="tsstore_nope"), b"{}\n")
    assert done.returncode != 0  # a 401: no WebSocket
    records = yield server.core.storage.backend_for("s1").read_records("s1")
    assert [(r.time_ns, r.data) for r in records] == [(42, b'{"via": "websocat"}')]


# -- the public hook of tsnet.http.websocket that this route uses ------------------------------


class HookEcho(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(f"{self.principal}:".encode() + payload, isBinary)


class HookResource(WebSocketResource):
    """A family's own authentication, before it looks at the Upgrade header."""

    authenticate_first = True

    def authenticate(self, request: Any) -> defer.Deferred:
        if request.args.get(b"pass") == [b"yes"]:
            return defer.succeed("guest")
        return defer.fail(Unauthorized("no pass"))


class HookPlugin(ProtocolPlugin):
    name = "wshook"
    description = "a WebSocket route with its own authentication"
    provides_api = True

    def resources(self, core: Any) -> dict:
        factory = WebSocketServerFactory()
        factory.protocol = HookEcho
        return {b"/ws/hook": HookResource(factory)}


@pytest_twisted.inlineCallbacks
def test_the_authenticate_first_hook(make_server: Any) -> None:
    server = yield make_server(CONFIG.format(admin=ADMIN, endpoint=TCP).replace(
        "apis = tsstore metrics", "apis = wshook metrics"), plugins={"wshook": HookPlugin()})
    base = f"127.0.0.1:{server.port('http')}/ws/hook"
    resp = yield treq.get(f"http://{base}")
    assert resp.code == 401  # authenticated first: no pass, no 426
    resp = yield treq.get(f"http://{base}?pass=yes")
    assert resp.code == 426
    c = yield ws_connect(f"ws://{base}?pass=yes")
    c.sendMessage(b"hi")
    yield wait_for(lambda: c.replies)
    assert c.replies == [b"guest:hi"]
