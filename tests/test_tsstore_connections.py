"""ts-store's outbound WebSocket connections (spec §8), with resume: real tsnet
servers dialing real Autobahn servers on loopback (ws:// and verified wss://),
stopped and restarted mid-stream, and tsnet itself restarted mid-stream."""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, endpoints, task
from twisted.logger import formatEvent

from tests.helpers.certs import make_certs, tls_endpoint
from tests.helpers.clients import sleep, wait_for
from tests.helpers.logs import TRIGGER_TEXT, leaks, refuse, watching
from tsnet.protocols.tsstore import connections as conn_module
from tsnet.protocols.tsstore.connections import Connections, parse_request, with_param
from tsnet.protocols.tsstore.stores import StoreError

ADMIN = "admin-key-of-twenty-chars"
CONFIG = f"""
[tsnet]
data_dir = var
flush_interval = 0.02

[tsstore]
admin_key = {ADMIN}

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = tsstore metrics
"""
#: record times: 2023, in the past (push reads up to now), whole seconds
BASE = 1_700_000_000 * 10**9


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short timings, for every Connections (servers restarted mid-test too)."""
    for name, value in [("initial_delay", 0.05), ("max_delay", 0.2), ("poll_interval", 0.02),
                        ("persist_interval", 0.1), ("ack_timeout", 1.0),
                        ("drain_timeout", 0.3), ("handshake_timeout", 2.0)]:
        monkeypatch.setattr(Connections, name, value)


# --- tsnet side ------------------------------------------------------------------------------


def stores_of(server: Any) -> Any:
    return server.core.plugins["tsstore"].stores_for(server.core)


def connections_of(server: Any) -> Connections:
    stores = stores_of(server)
    return Connections.for_stores(server.core, stores)


async def new_store(server: Any, name: str = "s1", **kw: Any) -> tuple[Any, str]:
    store, key, _ = await stores_of(server).create(name, **kw)
    return store, key


async def write_records(server: Any, store: Any, n: int, start: int = 1) -> None:
    stores = stores_of(server)
    ds = [stores.write(store, json.dumps({"n": i}).encode(), BASE + i)
          for i in range(start, start + n)]
    await defer.gatherResults(ds)


async def stored(server: Any, name: str = "s1") -> list[int]:
    recs = await server.core.storage.backend_for(name).read_records(name)
    return [r.time_ns for r in recs]


async def api(server: Any, method: str, path: str, key: str | None, body: Any = None,
              raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"X-API-Key": key} if key else {}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        headers["Content-Type"] = "application/json"
    resp = await treq.request(method, f"http://127.0.0.1:{server.port('http')}/api/stores/"
                              f"{path}", data=data, headers=headers)
    content = await treq.content(resp)
    return resp.code, json.loads(content)


async def create(server: Any, key: str, body: dict, store: str = "s1") -> Any:
    code, reply = await api(server, "POST", f"{store}/ws/connections", key, body)
    assert code == 201, reply
    return reply


# --- the remote side: Autobahn servers on loopback ---------------------------------------------


class Remote:
    """A WebSocket server that tsnet dials; restartable on the same port."""

    def __init__(self, protocol: type, tls: dict | None = None) -> None:
        self.factory = WebSocketServerFactory()
        self.factory.protocol = protocol
        self.factory.remote = self
        self.tls = tls
        self.port = 0
        self.listening: Any = None
        self.sessions: list[Any] = []
        # pull source: what it serves
        self.records: list[tuple[int, Any]] = []
        self.limit: int | None = None  # records served at most (None: all)
        self.overlap = 0  # records at or before `from` sent again on a resume
        self.interval = 0.0  # seconds between frames (0: all at once)
        # push sink: what it keeps
        self.stored: list[int] = []
        self.held: list[int] = []  # frames received and neither stored nor acked
        self.refused: list[int] = []
        self.ack_limit: int | None = None  # stop acking once this many are stored
        self.frames: list[dict] = []

    async def start(self) -> None:
        ep = (tls_endpoint(reactor(), self.tls, self.port) if self.tls else
              endpoints.serverFromString(reactor(), f"tcp:{self.port}:interface=127.0.0.1"))
        self.listening = await ep.listen(self.factory)
        self.port = self.listening.getHost().port

    def url(self, path: str = "/") -> str:
        if self.tls:
            return f"wss://localhost:{self.port}{path}"
        return f"ws://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        """Crash: every session cut without a close frame, no more listening."""
        for s in self.sessions:
            if s.transport is not None and s.state != s.STATE_CLOSED:
                s.transport.abortConnection()
        if self.listening is not None:
            await self.listening.stopListening()
            self.listening = None
        await sleep(0.05)


@pytest.fixture
def remotes() -> Any:
    made: list[Remote] = []

    def make(protocol: type, tls: dict | None = None) -> Remote:
        made.append(Remote(protocol, tls))
        return made[-1]

    yield make
    for r in made:
        pytest_twisted.blockon(defer.ensureDeferred(r.stop()))


class Source(WebSocketServerProtocol):
    """Serves the remote's records newer than the ``from`` query parameter."""

    loop: Any = None

    def onConnect(self, request: Any) -> None:
        self.params = request.params
        self.headers = request.headers
        self.factory.remote.sessions.append(self)

    def onOpen(self) -> None:
        remote = self.factory.remote
        after = int(self.params.get("from", ["0"])[0])
        served = remote.records[:remote.limit]
        todo = [r for r in served if r[0] > after]
        if after and remote.overlap:
            todo = [r for r in served if r[0] <= after][-remote.overlap:] + todo
        self.todo = deque(todo)
        if remote.interval:
            self.loop = task.LoopingCall(self.send_one)
            self.loop.start(remote.interval)
        else:
            while self.todo:
                self.send_one()

    def send_one(self) -> None:
        if not self.todo:
            if self.loop is not None and self.loop.running:
                self.loop.stop()
            return
        ts, data = self.todo.popleft()
        self.sendMessage(json.dumps({"timestamp": ts, "data": data}).encode())

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()


class Sink(WebSocketServerProtocol):
    """Stores pushed frames and answers as /ws/write does: an ack per frame,
    an error for a timestamp not newer than the newest stored."""

    def onConnect(self, request: Any) -> None:
        self.params = request.params
        self.headers = request.headers
        self.received: list[int] = []
        self.factory.remote.sessions.append(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        remote = self.factory.remote
        msg = json.loads(payload)
        ts = msg["timestamp"]
        self.received.append(ts)
        remote.frames.append(msg)
        if remote.ack_limit is not None and len(remote.stored) >= remote.ack_limit:
            remote.held.append(ts)  # as if the remote crashed before storing it
            return
        if remote.stored and ts <= remote.stored[-1]:
            remote.refused.append(ts)
            self.sendMessage(b'{"type":"error","message":"timestamp must be greater than '
                             b'newest entry"}\n')
            return
        remote.stored.append(ts)
        self.sendMessage(b'{"type":"ack","timestamp":%d,"size":%d}\n' % (ts, len(payload)))


class Deaf(Sink):
    """Takes every frame and never answers (a remote that does not ack)."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = json.loads(payload)
        self.received.append(msg["timestamp"])
        self.factory.remote.stored.append(msg["timestamp"])


class Refuser(Source):
    """Refuses every handshake with 403."""

    def onConnect(self, request: Any) -> None:
        super().onConnect(request)
        raise ConnectionDeny(403, "go away")


async def start(make_server: Any, name: str = "srv") -> Any:
    return await make_server(CONFIG, name=name)


# --- (1) pull: the remote stops and restarts mid-stream --------------------------------------


@pytest_twisted.ensureDeferred
async def test_pull_resumes_after_the_remote_restarts(remotes: Any, make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server)
    conns = connections_of(server)
    conns.max_pending = 8  # back-pressure: reading pauses behind the commits
    remote = remotes(Source)
    remote.records = [(BASE + i, {"n": i}) for i in range(1, 151)]
    remote.limit, remote.overlap, remote.interval = 80, 5, 0.004
    await remote.start()
    body = await create(server, key, {"mode": "pull", "url": remote.url("/feed?x=1&from=9"),
                                      "resume_param": "from"})
    assert body["status"] == "connecting" and body["resume_param"] == "from"
    conn = conns.find(store, body["id"])
    await wait_for(lambda: conn.cursor >= BASE + 25)
    await remote.stop()  # mid-stream: frames in flight are lost with the socket
    await wait_for(lambda: conn.pending == 0)
    held = conn.cursor
    assert held < BASE + 80
    await wait_for(lambda: conn.status == "error" and conn.errors >= 2)  # the redials fail

    remote.limit, remote.interval = None, 0.0  # the rest, in one burst
    await remote.start()
    await wait_for(lambda: conn.cursor == BASE + 150)
    assert await stored(server) == [BASE + i for i in range(1, 151)]  # no loss, no duplicate
    first, *others = remote.sessions
    assert first.params["from"] == ["9"] and first.params["x"] == ["1"]  # the URL's own
    resumed = others[-1].params
    assert resumed["x"] == ["1"] and resumed["from"] == [str(held)]  # replaced, not added
    assert conn.skipped == 5  # the overlap the remote sent again: dropped silently
    assert conn.pauses >= 1  # the burst outran the commits
    status = conns.status(store, body["id"])
    assert status["status"] == "connected" and "last_error" not in status
    assert status["messages_received"] == 150 and status["last_timestamp"] == BASE + 150


@pytest_twisted.ensureDeferred
async def test_pull_frames_errors_and_formats(remotes: Any, make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server, data_type="schema")
    store.schema = store.schema.evolve([{"index": 1, "name": "t", "type": "float64"},
                                        {"index": 2, "name": "s", "type": "string"}])
    await stores_of(server).save(store)
    remote = remotes(Source)
    remote.records = [(BASE + 1, {"t": 1.5, "s": "a"}), (BASE + 2, {"nope": 1}),
                      (BASE + 2, {"t": 2}), (BASE + 3, {"t": 3})]
    await remote.start()
    body = await create(server, key, {"mode": "pull", "url": remote.url()})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.cursor == BASE + 3)
    recs = await server.core.storage.backend_for("s1").read_records("s1")
    assert [(r.time_ns, bytes(r.data)) for r in recs] == [
        (BASE + 1, b'{"1":1.5,"2":"a"}'), (BASE + 2, b'{"1":2}'), (BASE + 3, b'{"1":3}')]
    assert conn.errors == 1 and conn.last_error == "field not found in schema: nope"
    assert conn.status == "error"  # a message-level error, while connected
    assert set(conns_status := conn.status_object()) == {
        "id", "mode", "url", "format", "status", "created_at", "last_timestamp",
        "messages_received", "errors", "last_error"}
    assert conns_status["format"] == "full"
    # a reset empties the store: what the remote sends again is taken again
    await stores_of(server).reset(store)
    remote.records = remote.records[2:]
    for s in remote.sessions:
        s.transport.abortConnection()
    await wait_for(lambda: len(remote.sessions) == 2 and conn.cursor == BASE + 3)
    assert await stored(server) == [BASE + 2, BASE + 3] and conn.skipped == 0


# --- (2) push: the remote stops and restarts mid-stream --------------------------------------


@pytest_twisted.ensureDeferred
async def test_push_resumes_after_the_remote_restarts(remotes: Any, make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server)
    await write_records(server, store, 250)
    sink = remotes(Sink)
    sink.ack_limit = 120
    await sink.start()
    body = await create(server, key, {"mode": "push", "url": sink.url("/ws?api_key=k"),
                                      "ack_timeout": 30})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: len(sink.held) == 100 and len(conn.in_flight) == 100)
    assert len(sink.stored) == 120 and conn.cursor == BASE + 120 and conn.acking is True
    await sink.stop()  # the unacknowledged frames die with it
    sink.ack_limit = None
    await sink.start()
    await wait_for(lambda: len(sink.stored) == 250)
    assert sink.stored == [BASE + i for i in range(1, 251)] and sink.refused == []
    again = sink.sessions[-1].received
    assert again[0] == BASE + 121  # nothing acknowledged was sent again
    await wait_for(lambda: conn.cursor == BASE + 250)
    status = conn.status_object()
    assert status["status"] == "connected" and status["last_timestamp"] == BASE + 250
    assert status["messages_sent"] == 120 + len(sink.held) + 130
    frame = sink.frames[0]
    assert frame == {"type": "data", "timestamp": BASE + 1, "data": {"n": 1}}
    assert sink.sessions[0].params == {"api_key": ["k"]}


@pytest_twisted.ensureDeferred
async def test_push_filter_and_aggregation_resume_at_window_edges(remotes: Any,
                                                                   make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server)
    stores = stores_of(server)
    sec = 10**9
    points = [(BASE + sec // 10, {"v": 1, "keep": 1}), (BASE + sec // 2, {"v": 2, "keep": 1}),
              (BASE + sec * 6 // 10, {"v": 100}),  # filtered out
              (BASE + sec * 12 // 10, {"v": 3, "keep": 1}),
              (BASE + sec * 17 // 10, {"v": 4, "keep": 1}),
              (BASE + sec * 23 // 10, {"v": 5, "keep": 1})]
    for ts, data in points:
        await stores.write(store, json.dumps(data).encode(), ts)
    sink = remotes(Sink)
    await sink.start()
    body = await create(server, key, {"mode": "push", "url": sink.url(), "filter": "keep",
                                      "agg_window": "10s", "agg_fields": "v:sum"})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.read_pos == points[-1][0])
    code, _ = await api(server, "DELETE", f"s1/ws/connections/{body['id']}", key)
    assert code == 200
    # a 10 s window: nothing closes it but the stop, which flushes it (partial: sum null)
    assert [f["data"] for f in sink.frames] == [{"v": None, "keep": 1}]
    assert [f["timestamp"] for f in sink.frames] == [BASE + 10 * sec]

    sink.frames.clear()
    sink.stored.clear()
    body = await create(server, key, {"mode": "push", "url": sink.url(), "filter": "KEEP",
                                      "filter_ignore_case": True, "agg_window": "1s",
                                      "agg_fields": "v:sum+count", "ack": True})
    assert body["agg_window"] == "1s" and body["filter_ignore_case"] is True
    assert body["ack"] is True
    conn = connections_of(server).find(store, body["id"])
    # both windows acknowledged; the open window (2.3 s) is not: resume before it
    await wait_for(lambda: conn.cursor == BASE + sec * 17 // 10)
    assert [(f["timestamp"], f["data"]) for f in sink.frames[:2]] == [
        (BASE + sec, {"v_sum": 3, "v_count": 2, "keep": 1}),
        (BASE + 2 * sec, {"v_sum": 7, "v_count": 2, "keep": 1})]


@pytest_twisted.ensureDeferred
async def test_push_to_a_remote_that_never_acks(remotes: Any, make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server)
    await write_records(server, store, 150)
    deaf = remotes(Deaf)
    await deaf.start()
    body = await create(server, key, {"mode": "push", "url": deaf.url(), "ack_timeout": 0.2})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: len(deaf.stored) == 150)  # past the window of 100, after 0.2 s
    await wait_for(lambda: conn.cursor == BASE + 150)
    assert conn.acking is False and deaf.stored == [BASE + i for i in range(1, 151)]
    body = await create(server, key, {"mode": "push", "url": deaf.url(), "ack": False,
                                      "from": BASE + 140, "format": "compact"})
    assert body["from"] == BASE + 140 and body["ack"] is False
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.cursor == BASE + 150)
    assert deaf.sessions[-1].received == [BASE + i for i in range(141, 151)]


@pytest_twisted.ensureDeferred
async def test_push_into_another_tsnet_ws_write(make_server: Any) -> None:
    a = await start(make_server, "a")
    b = await start(make_server, "b")
    store, key_a = await new_store(a)
    _, key_b = await new_store(b, "s2")
    await write_records(a, store, 60)
    url = f"ws://127.0.0.1:{b.port('http')}/api/stores/s2/ws/write?api_key={key_b}"
    body = await create(a, key_a, {"mode": "push", "url": url})
    conn = connections_of(a).find(store, body["id"])
    await wait_for(lambda: conn.cursor == BASE + 60)
    assert conn.acking is True and conn.errors == 0  # tsnet's acks drove the cursor
    assert await stored(b, "s2") == [BASE + i for i in range(1, 61)]


# --- (3) tsnet restarts mid-stream ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pull_resumes_after_tsnet_restarts(remotes: Any, make_server: Any) -> None:
    server = await start(make_server, "t")
    store, key = await new_store(server)
    remote = remotes(Source)
    remote.records = [(BASE + i, {"n": i}) for i in range(1, 121)]
    remote.interval = 0.004
    await remote.start()
    body = await create(server, key, {"mode": "pull", "url": remote.url("/feed"),
                                      "resume_param": "from"})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.cursor >= BASE + 30)
    await server.stop()
    assert conn.status == "disconnected" and conn.cursor < BASE + 120

    server = await start(make_server, "t")  # the same directory: the same storage
    stores = stores_of(server)
    store = stores.cached("s1")
    assert store is not None  # opened at start: it has connections
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.cursor == BASE + 120)
    got = await stored(server)
    assert got == [BASE + i for i in range(1, 121)]
    resumed = int(remote.sessions[-1].params["from"][0])
    assert BASE + 30 <= resumed < BASE + 120
    assert store.connections[0]["cursor"] >= resumed
    status = conn.status_object()
    assert (status["id"], status["created_at"]) == (body["id"], body["created_at"])


@pytest_twisted.ensureDeferred
async def test_push_resumes_after_tsnet_restarts(remotes: Any, make_server: Any) -> None:
    server = await start(make_server, "t")
    store, key = await new_store(server)
    await write_records(server, store, 250)
    sink = remotes(Sink)
    sink.ack_limit = 100
    await sink.start()
    body = await create(server, key, {"mode": "push", "url": sink.url(), "ack_timeout": 30})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: len(sink.stored) == 100 and sink.held)
    await server.stop()  # waits drain_timeout for acks that never come, then saves
    assert conn.cursor == BASE + 100 and conn.status == "disconnected"
    sink.ack_limit = None

    server = await start(make_server, "t")
    store = stores_of(server).cached("s1")
    assert store.connections[0]["cursor"] == BASE + 100
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: len(sink.stored) == 250)
    assert sink.stored == [BASE + i for i in range(1, 251)] and sink.refused == []
    assert sink.sessions[-1].received[0] == BASE + 101
    await wait_for(lambda: conn.cursor == BASE + 250)
    # a clean stop with everything acknowledged: the next start sends nothing
    await server.stop()
    server = await start(make_server, "t")
    store = stores_of(server).cached("s1")
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.status == "connected")
    await sleep(0.2)
    assert sink.sessions[-1].received == [] and len(sink.stored) == 250


# --- (4) the REST API ---------------------------------------------------------------------------


CREATE_ERRORS = [
    ({}, "Key: 'CreateRequest.Mode' Error:Field validation for 'Mode' failed on the "
         "'required' tag\nKey: 'CreateRequest.URL' Error:Field validation for 'URL' failed "
         "on the 'required' tag"),
    ({"mode": "push"}, "Key: 'CreateRequest.URL' Error:Field validation for 'URL' failed on "
                       "the 'required' tag"),
    ({"url": "ws://h/", "mode": ""}, "Key: 'CreateRequest.Mode' Error:Field validation for "
                                     "'Mode' failed on the 'required' tag"),
    ({"mode": "both", "url": "ws://h/"}, "invalid mode: must be 'push' or 'pull'"),
    ({"mode": "pull", "url": 5}, "json: cannot unmarshal number into Go struct field "
                                 "CreateRequest.url of type string"),
    ({"mode": "push", "url": "ws://h/", "from": "1"},
     "json: cannot unmarshal string into Go struct field CreateRequest.from of type int64"),
    ({"mode": "push", "url": "ws://h/", "from": 1.5},
     "json: cannot unmarshal number 1.5 into Go struct field CreateRequest.from of type int64"),
    ({"mode": "push", "url": "ws://h/", "filter_ignore_case": "yes"},
     "json: cannot unmarshal string into Go struct field CreateRequest.filter_ignore_case of "
     "type bool"),
    ({"mode": "push", "url": "ws://h/", "headers": []},
     "json: cannot unmarshal array into Go struct field CreateRequest.headers of type "
     "map[string]string"),
    ([1], "json: cannot unmarshal array into Go value of type handlers.CreateRequest"),
    ({"mode": "pull", "url": "http://h/"},
     "bad outbound URL 'http://h/': scheme must be ws or wss, not 'http'"),
    ({"mode": "pull", "url": "h:80"},
     "bad outbound URL 'h:80': expected ws://HOST[:PORT]/PATH or wss://..."),
    ({"mode": "pull", "url": "ws://h:99999/"}, "bad outbound URL"),
    ({"mode": "pull", "url": "ws://h/", "headers": {"X-A": "1\r\nX-B: 2"}},
     "invalid value for header 'X-A'"),
    ({"mode": "pull", "url": "ws://h/", "headers": {"Sec-WebSocket-Key": "x"}},
     "header 'Sec-WebSocket-Key' is set by the WebSocket handshake"),
    ({"mode": "push", "url": "ws://h/", "resume_param": "from"},
     "resume_param applies to pull connections only"),
    ({"mode": "push", "url": "ws://h/", "ack": "maybe"}, 'ack must be true, false or "auto"'),
]


@pytest_twisted.ensureDeferred
async def test_rest_api_statuses_and_errors(remotes: Any, make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server)
    path = "s1/ws/connections"
    assert await api(server, "GET", path, None) == (401, {"error": "API key required"})
    assert await api(server, "GET", path, key) == (200, {"connections": []})
    for body, message in CREATE_ERRORS:
        code, reply = await api(server, "POST", path, key, body)
        assert code == 400 and reply["error"].startswith(message), (body, reply)
    assert await api(server, "POST", path, key, raw=b"") == (400, {"error": "EOF"})
    assert store.connections == []

    port = await free_port()
    refused = f"ws://127.0.0.1:{port}/in"
    body = await create(server, key, {"MODE": "push", "url": refused, "from": -1,
                                      "headers": {"Authorization": "Bearer secret"},
                                      "filter": "x", "rules": [{"name": "r"}]})
    assert set(body) == {"id", "mode", "url", "from", "format", "filter", "status",
                         "created_at"}
    assert re.fullmatch(r"[0-9a-f]{8}", body["id"]) and body["status"] == "connecting"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", body["created_at"])
    assert (body["mode"], body["url"], body["format"]) == ("push", refused, "full")
    cid = body["id"]
    rec = await server.core.catalog.get_solution("s1")
    (saved,) = rec.attributes["tsstore"]["connections"]
    assert {k: saved[k] for k in ("id", "mode", "url", "from", "format", "headers", "filter",
                                  "created_at")} == {
        "id": cid, "mode": "push", "url": refused, "from": -1, "format": "full",
        "headers": {"Authorization": "Bearer secret"}, "filter": "x",
        "created_at": body["created_at"]}
    assert "rules" not in saved  # dropped, as ts-store does

    conn = connections_of(server).find(store, cid)
    await wait_for(lambda: conn.errors >= 2)
    code, status = await api(server, "GET", f"{path}/{cid}", key)
    assert code == 200 and status["status"] in ("error", "connecting")
    assert "refused" in status["last_error"] and "headers" not in status
    assert status["from"] == -1  # omitempty drops only 0 (and -1 pushes from the oldest)
    code, listed = await api(server, "GET", path, key)
    assert code == 200 and [c["id"] for c in listed["connections"]] == [cid]

    pull = await create(server, key, {"mode": "pull", "url": refused, "format": "compact"})
    assert set(pull) == {"id", "mode", "url", "format", "status", "created_at"}
    code, listed = await api(server, "GET", path, key)
    assert sorted(c["id"] for c in listed["connections"]) == sorted([cid, pull["id"]])

    assert await api(server, "GET", f"{path}/nope", key) == (404, {"error": "connection "
                                                                             "not found"})
    assert await api(server, "DELETE", f"{path}/nope", key) == (404, {"error": "connection "
                                                                                "not found"})
    assert await api(server, "DELETE", f"{path}/{cid}", key) == (
        200, {"message": "connection deleted"})
    assert conn.status == "disconnected" and not conn.service.running
    assert await api(server, "GET", f"{path}/{cid}", key) == (404, {"error": "connection "
                                                                              "not found"})
    rec = await server.core.catalog.get_solution("s1")
    assert [c["id"] for c in rec.attributes["tsstore"]["connections"]] == [pull["id"]]

    # a refused handshake: status error, its reason, the custom headers were sent
    deny = remotes(Refuser)
    await deny.start()
    body = await create(server, key, {"mode": "pull", "url": deny.url("/x"),
                                      "headers": {"Authorization": "Bearer t"}})
    conn = connections_of(server).find(store, body["id"])
    await wait_for(lambda: conn.errors >= 2)
    assert conn.status == "error" and "403" in conn.last_error
    assert deny.sessions[0].headers["authorization"] == "Bearer t"
    # deleting the store stops its connections
    code, _ = await api(server, "DELETE", "s1", key)
    assert code == 200 and not conn.running and not conn.service.running


# --- failures a client or a remote repeats: fixed replies, bounded logs ---------------------


@pytest_twisted.ensureDeferred
async def test_a_catalog_refusing_every_change_is_a_fixed_500_logged_once(
        make_server: Any) -> None:
    """The catalog refuses to persist the connections (a real SQLite trigger):
    each create and delete is ts-store's 500 with a fixed text, never the
    storage's; the log has one traceback and, at stop, one count."""
    server = await start(make_server)
    store, key = await new_store(server)
    path = "s1/ws/connections"
    kept = await create(server, key, {"mode": "pull", "url": f"ws://127.0.0.1:"
                                                              f"{await free_port()}/"})
    refuse(server, "solutions", "UPDATE")
    n = 15
    with watching("tsnet.tsstore") as events:
        for _ in range(n):
            code, reply = await api(server, "POST", path, key,
                                    {"mode": "push", "url": "ws://127.0.0.1:9/"})
            assert (code, reply) == (500, {"error": "failed to save connection"})
            assert not leaks(json.dumps(reply))
            code, reply = await api(server, "DELETE", f"{path}/{kept['id']}", key)
            assert (code, reply) == (500, {"error": "failed to delete connection"})
            assert not leaks(json.dumps(reply))
        assert [c["id"] for c in store.connections] == [kept["id"]]  # as it was
        code, listed = await api(server, "GET", path, key)
        assert [c["id"] for c in listed["connections"]] == [kept["id"]]
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(conn_module.PERSIST_FAILURES)
    assert formatEvent(first) == "store s1: creating a connection failed"
    [summary] = events.summaries(conn_module.PERSIST_FAILURES)
    assert summary.startswith(f"{2 * n - 1} more failed saves of connections in the last ")


@pytest_twisted.ensureDeferred
async def test_a_storage_refusing_pulled_records_logs_once(remotes: Any,
                                                          make_server: Any) -> None:
    server = await start(make_server)
    store, key = await new_store(server)
    refuse(server, "records")
    remote = remotes(Source)
    n = 30
    remote.records = [(BASE + i, {"n": i}) for i in range(1, n + 1)]
    await remote.start()
    with watching("tsnet.tsstore") as events:
        body = await create(server, key, {"mode": "pull", "url": remote.url()})
        conn = connections_of(server).find(store, body["id"])
        await wait_for(lambda: conn.errors == n)
        code, status = await api(server, "GET", f"s1/ws/connections/{body['id']}", key)
        assert code == 200 and status["last_error"] == "internal error"
        assert not leaks(json.dumps(status))
        assert await stored(server) == []
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(conn_module.WRITE_FAILURES)
    assert formatEvent(first) == f"ts-store pull s1/{body['id']}: writing a record failed"
    [summary] = events.summaries(conn_module.WRITE_FAILURES)
    assert summary.startswith(f"{n - 1} more failed writes of pulled records in the last ")


@pytest_twisted.ensureDeferred
async def test_cursor_saves_failing_again_and_again_log_once(remotes: Any,
                                                              make_server: Any) -> None:
    """The cursor is saved again every persist_interval while saving fails:
    one warning, then a count, not a line per attempt."""
    server = await start(make_server)
    store, key = await new_store(server)
    remote = remotes(Source)
    n = 20
    remote.records = [(BASE + i, {"n": i}) for i in range(1, n + 1)]
    remote.interval = 0.03  # the cursor moves for 0.6 s: several saves
    await remote.start()
    body = await create(server, key, {"mode": "pull", "url": remote.url()})
    refuse(server, "solutions", "UPDATE")
    conn = connections_of(server).find(store, body["id"])
    with watching("tsnet.tsstore") as events:
        await wait_for(lambda: conn.cursor == BASE + n)
        await sleep(5 * Connections.persist_interval)  # retried, and failing, meanwhile
        assert await stored(server) == [BASE + i for i in range(1, n + 1)]
        await server.stop()
    warned = [e for e in events.full() if "cursors failed" in e["log_format"]]
    assert len(warned) == 1
    assert formatEvent(warned[0]) == (f"store s1: saving the connection cursors failed: "
                                      f"{TRIGGER_TEXT}")
    [summary] = events.summaries(conn_module.CURSOR_FAILURES)
    assert re.fullmatch(r"\d+ more failed saves of connection cursors in the last \d+ s",
                        summary)


async def free_port() -> int:
    lp = await endpoints.serverFromString(reactor(), "tcp:0:interface=127.0.0.1").listen(
        WebSocketServerFactory())
    port = lp.getHost().port
    await lp.stopListening()
    return port


def test_parse_request_and_resume_urls() -> None:
    entry = parse_request({"mode": "pull", "url": "wss://h/p?a=1", "resume_param": "since",
                           "headers": {"X-K": None}})
    assert entry == {"mode": "pull", "url": "wss://h/p?a=1", "from": 0, "format": "full",
                     "headers": {"X-K": ""}, "resume_param": "since"}
    with pytest.raises(StoreError) as info:
        parse_request(None)
    assert (info.value.code, info.value.message) == (400, "EOF")
    assert with_param("/p?a=1&from=2&b", "from", 7) == "/p?a=1&b&from=7"
    assert with_param("/p", "from", 7) == "/p?from=7"
    assert conn_module.rfc3339nano(BASE + 120_000_000) == "2023-11-14T22:13:20.12Z"


# --- (5) wss:// --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wss_is_verified(remotes: Any, make_server: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")  # a CA that did not sign the remote
    server = await start(make_server)
    store, key = await new_store(server)
    remote = remotes(Source, tls=certs)
    remote.records = [(BASE + i, {"n": i}) for i in range(1, 11)]
    await remote.start()
    conns = connections_of(server)
    conns.ca_file = str(other["ca"])
    bad = await create(server, key, {"mode": "pull", "url": remote.url("/tls")})
    bad_conn = conns.find(store, bad["id"])
    await wait_for(lambda: bad_conn.errors >= 1)
    status = conns.status(store, bad["id"])
    assert status["status"] == "error" and "certificate verify failed" in status["last_error"]
    assert remote.sessions == []  # never got past TLS

    conns.ca_file = str(certs["ca"])
    good = await create(server, key, {"mode": "pull", "url": remote.url("/tls")})
    good_conn = conns.find(store, good["id"])
    await wait_for(lambda: good_conn.cursor == BASE + 10)
    assert good_conn.status == "connected" and good_conn.errors == 0
    assert await stored(server) == [BASE + i for i in range(1, 11)]
    assert bad_conn.status == "error" and bad_conn.cursor == 0
