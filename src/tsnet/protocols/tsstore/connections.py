"""ts-store's outbound WebSocket connections: pull and push, with resume (spec §8).

A store's connections are configured through ``/api/stores/:store/ws/connections``
(`Connections.create`, `statuses`, `status`, `delete`), kept in the store's
catalog attributes (``store.connections``: one entry per connection, the shape
of ts-store's ``ws_connections.json`` plus the extension keys below), started
when the store opens and stopped when it closes or is deleted.  Each one dials
through `tsnet.outbound.OutboundService` (verified TLS for ``wss://``, bounded
backoff, one log line per state change) with an Autobahn client; the custom
``headers`` go on the handshake and are never echoed.

Dial and reconnect (§8.2): a failed dial (TCP, TLS verification, or a refused
WebSocket handshake) sets ``status: "error"``, ``errors`` + 1 and ``last_error``
and is retried after 1 s, doubling to 60 s; a session that ends waits 1 s and
redials (``status: "disconnected"`` meanwhile).  `Connections.initial_delay`
and `Connections.max_delay` set the bounds (tests make them small).

**Pull** (§8.4): every frame ``{"timestamp": int64, "data": <value>}`` is
stored with `Stores.write` (missing or 0 timestamp: now).  ``format`` "full"
(the default) on a schema store means the remote sends names, which are
compacted; "compact" stores what was sent (the spec's [Q] recommendation).  A
bad or refused frame is ``status: "error"``, ``errors`` + 1, and the next frame
is read.  No read timeout: silence is normal (Autobahn answers pings, and sends
its own every `Connections.ping_interval` s to notice a dead peer).
Back-pressure: reading stops (the transport is paused) while more than
`Connections.max_pending` writes wait for their commit.

*Resume (pull).*  The connection's cursor is the newest timestamp it had
committed.  With ``"resume_param": NAME`` in the config, every dial after the
first record carries ``NAME=<cursor>`` in the query string (merged with the
URL's own query, replacing a parameter of that name): the remote is asked to
send what is *newer than* that timestamp.  Whatever it sends anyway at or
before the cursor is dropped silently (neither stored nor counted as an error).
Without ``resume_param`` the URL is dialed as given and only that
deduplication applies.  At start (and after a tsnet restart) the cursor is the
store's newest record: the persisted cursor (kept as well) can only be at or
before it, or after it when the store was reset since, and nothing at or
before the newest record can be stored anyway.  A reset lowers the cursor to
the (empty) store's newest, so what the remote sends again is taken again.

**Push** (§8.3): every `Connections.poll_interval` (100 ms) up to 100 records
after the cursor are read (cursor 0: the oldest) and each is sent as
``{"type":"data","timestamp":T,"data":<payload>}`` + ``\\n``: the stored JSON
(json), the expanded object (schema, ``format`` full) or the stored compact
JSON (schema, compact).  Records failing the substring ``filter`` are skipped
and passed.  ``agg_window`` / ``agg_fields`` / ``agg_default`` send one frame
per window instead (timestamp = window end; a timer flushes the open window as
partial every window; a bad aggregation config is logged and ignored, as
ts-store does).  A reader runs: pings are answered, a close is noticed, and
replies are read.

*Resume (push): acknowledgements.*  The cursor is the newest record whose fate
the remote has acknowledged; it is what survives reconnects and restarts, and
nothing at or before it is ever sent again.  A reply ``{"type":"ack",
"timestamp":T,...}`` acknowledges every frame in flight up to T (a reply
without a timestamp: the oldest one); ``{"type":"error","message":M}``
answers the oldest frame in flight: the remote refused it, resending would not
change that, so it counts as handled (``errors`` + 1, ``last_error`` =
``remote: M``).  These are the replies of ts-store's and tsnet's own
``/ws/write``, one per frame and in order, so a push into either resumes
exactly.  At most `Connections.window` (100) frames wait for their reply; when
a session ends, the frames not acknowledged are sent again on the next one.
Filtered records, and records inside an aggregated window, are acknowledged
with the frame after them (or at once when nothing is in flight).

The config key ``"ack"`` says what acknowledges a frame:

- ``"auto"`` (the default): each session starts waiting for replies.  If the
  remote answers, the session keeps waiting for them.  If the oldest frame
  in flight gets no reply within ``ack_timeout`` seconds (default 10) and the
  remote has not replied in that session, the remote is taken not to send
  acks: for the rest of the session a frame counts as delivered once written
  to the transport (ts-store's best effort), the frames in flight included.
- ``true``: only replies acknowledge.  A frame left without a reply for
  ``ack_timeout`` seconds ends the session (``last_error``), and the next one
  resends from the cursor.
- ``false``: written to the transport is delivered, from the first frame.

Before a stop (store close, delete, server stop) a push flushes its open
aggregation window and waits up to `Connections.drain_timeout` seconds for the
replies to what is in flight, so a clean restart resends nothing.

**Persistence.**  Configs, and each connection's ``cursor``, live in the
store's catalog entry (``store.connections`` and `Stores.save`).  A moving
cursor is written at most once per `Connections.persist_interval` (1 s) per
store, and once more when the store's connections stop.  After a crash the
persisted push cursor can lag by up to that interval: those frames are sent
again (at-least-once); a remote like ``/ws/write`` refuses them as older than
its newest entry.  The status object (§8.1) reports ``last_timestamp`` = the
cursor; the extension keys (``resume_param``, ``ack``, ``ack_timeout``) appear
in it only when they were given.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectingRequest
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.outbound import OutboundService, Target, backoff_policy, describe_failure, parse_target
from tsnet.plugin import NotFound, StorageUnavailable
from tsnet.protocols.tsstore import objects
from tsnet.protocols.tsstore.gojson import (
    PULL_ENVELOPE_TYPE,
    GoJSONError,
    check_json,
    decode_envelope,
    go_marshal,
)
from tsnet.protocols.tsstore.schema import SchemaError, compact, numeric_map
from tsnet.protocols.tsstore.stores import Store, StoreError

if TYPE_CHECKING:
    from tsnet.core import Core
    from tsnet.protocols.tsstore.stores import Stores

log = Logger(namespace="tsnet.tsstore.connections")

MODES = ("push", "pull")
NOT_FOUND = "connection not found"
INVALID_MODE = "invalid mode: must be 'push' or 'pull'"
MISSING_JSON = "unexpected end of JSON input"
UNAVAILABLE = "storage unavailable, retry later"
INTERNAL = "internal error"
#: the REST API's answers when the connections cannot be persisted (500, spec §8.1;
#: the cause is logged, never told)
SAVE_FAILED = "failed to save connection"
DELETE_FAILED = "failed to delete connection"
REQUEST_TYPE = "handlers.CreateRequest"
#: the kinds of `Connections.logs` (fixed texts: what repeats is counted)
WRITE_FAILURES = "failed writes of pulled records"
POLL_FAILURES = "failed push polls"
CURSOR_FAILURES = "failed saves of connection cursors"
PERSIST_FAILURES = "failed saves of connections"
#: the create request's fields and their Go types (spec §8.1), in struct order
FIELDS = {"mode": "string", "url": "string", "from": "int64", "format": "string",
          "headers": "map[string]string", "filter": "string", "filter_ignore_case": "bool",
          "agg_window": "string", "agg_fields": "string", "agg_default": "string"}
#: tsnet's extension keys of a create request
EXTENSIONS = ("resume_param", "ack", "ack_timeout")
#: headers the WebSocket handshake sets itself (gorilla refuses them as well)
RESERVED_HEADERS = frozenset({"host", "upgrade", "connection", "sec-websocket-key",
                              "sec-websocket-version", "sec-websocket-extensions",
                              "sec-websocket-protocol"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_INT64 = (-(1 << 63), (1 << 63) - 1)


def rfc3339nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC time: fraction without trailing zeros."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def _kind(value: Any) -> str:
    """The JSON kind Go names in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}" if isinstance(value, float) or not (
            _INT64[0] <= value <= _INT64[1]) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, field: str, go_type: str) -> StoreError:
    kind = _kind(value)
    if go_type != "int64" and kind.startswith("number"):
        kind = "number"
    return StoreError(400, f"json: cannot unmarshal {kind} into Go struct field "
                           f"CreateRequest.{field} of type {go_type}")


def parse_request(body: Any) -> dict:
    """A create request, checked as gin binds it (spec §8.1: Go's type errors,
    then the ``required`` tags, then the mode), then tsnet's own checks (the URL,
    the headers, the extension keys).  The new entry, without id and time."""
    if body is None:
        raise StoreError(400, "EOF")
    if not isinstance(body, dict):
        raise StoreError(400, f"json: cannot unmarshal {_kind(body).split()[0]} into Go "
                              f"value of type {REQUEST_TYPE}")
    got: dict[str, Any] = {}
    for key, value in body.items():  # Go: exact name, else case-insensitive; last wins
        name = key if key in FIELDS else next((f for f in FIELDS if f == key.lower()), None)
        if name is None or value is None:
            continue
        go_type = FIELDS[name]
        if go_type == "string":
            if not isinstance(value, str):
                raise _type_error(value, name, go_type)
        elif go_type == "int64":
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not _INT64[0] <= value <= _INT64[1]:
                raise _type_error(value, name, go_type)
        elif go_type == "bool":
            if not isinstance(value, bool):
                raise _type_error(value, name, go_type)
        else:  # headers
            if not isinstance(value, dict):
                raise _type_error(value, name, go_type)
            for k, v in value.items():
                if v is not None and not isinstance(v, str):
                    raise _type_error(v, f"headers.{k}", "string")
            value = {k: v or "" for k, v in value.items()}
        got[name] = value
    missing = [f"Key: 'CreateRequest.{n}' Error:Field validation for '{n}' failed on the "
               "'required' tag" for n, k in (("Mode", "mode"), ("URL", "url")) if not got.get(k)]
    if missing:
        raise StoreError(400, "\n".join(missing))
    mode = got["mode"]
    if mode not in MODES:
        raise StoreError(400, INVALID_MODE)
    check_url(got["url"])
    headers = got.get("headers") or None
    if headers:
        check_headers(headers)
    entry: dict[str, Any] = {
        "mode": mode, "url": got["url"], "from": got.get("from", 0),
        "format": got.get("format") or "full", "headers": headers,
    }
    for k in ("filter", "filter_ignore_case", "agg_window", "agg_fields", "agg_default"):
        if got.get(k):
            entry[k] = got[k]
    entry.update(_extensions(body, mode))
    return entry


def check_url(url: str) -> Target:
    """The URL's target; StoreError 400 naming what is wrong (an extension:
    ts-store takes any string and fails at each dial)."""
    if "://" not in url:
        raise StoreError(400, f"bad outbound URL {url!r}: expected ws://HOST[:PORT]/PATH "
                              "or wss://...")
    try:
        target = parse_target(url)
    except ValueError as e:
        raise StoreError(400, str(e)) from None
    if target.host == "unix":
        raise StoreError(400, f"bad outbound URL {url!r}: WebSocket over a Unix socket is "
                              "not supported")
    return target


def check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise StoreError(400, f"invalid header name {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise StoreError(400, f"header {name!r} is set by the WebSocket handshake")
        if _BAD_VALUE.search(value):
            raise StoreError(400, f"invalid value for header {name!r}")


def _extensions(body: dict, mode: str) -> dict:
    out: dict[str, Any] = {}
    param = body.get("resume_param")
    if param is not None:
        if mode != "pull":
            raise StoreError(400, "resume_param applies to pull connections only")
        if not isinstance(param, str) or not _TOKEN.fullmatch(param):
            raise StoreError(400, "resume_param must be the name of a query parameter")
        out["resume_param"] = param
    ack = body.get("ack")
    if ack is not None:
        if mode != "push":
            raise StoreError(400, "ack applies to push connections only")
        if ack not in (True, False, "auto"):
            raise StoreError(400, "ack must be true, false or \"auto\"")
        out["ack"] = ack
    timeout = body.get("ack_timeout")
    if timeout is not None:
        if mode != "push":
            raise StoreError(400, "ack_timeout applies to push connections only")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout <= 3600:
            raise StoreError(400, "ack_timeout must be a number of seconds from 0 to 3600")
        out["ack_timeout"] = timeout
    return out


def with_param(resource: str, name: str, value: int) -> str:
    """``resource`` (a path and query) with the query parameter ``name`` set to
    ``value``; the query's other parameters are kept as they were written."""
    path, _, query = resource.partition("?")
    kept = [p for p in query.split("&") if p and unquote_plus(p.split("=", 1)[0]) != name]
    kept.append(f"{quote(name)}={value}")
    return f"{path}?{'&'.join(kept)}"


# --- the WebSocket client ------------------------------------------------------------------


@implementer(IPushProducer)
class _WriteBuffer:
    """Registered on a push session's transport: it says when the buffer is full."""

    def __init__(self, client: _Client) -> None:
        self.client = client

    def pauseProducing(self) -> None:
        self.client.writable = False

    def resumeProducing(self) -> None:
        self.client.writable = True

    def stopProducing(self) -> None:
        self.client.writable = False


class _Client(WebSocketClientProtocol):
    """One WebSocket session of one connection (``factory.conn``)."""

    opened = False
    writable = True

    def onConnecting(self, transport_details: Any) -> ConnectingRequest:
        conn = self.factory.conn
        target = conn.target
        host = f"[{target.host}]" if ":" in target.host else target.host
        headers = conn.headers
        agent = None if any(k.lower() == "user-agent" for k in headers) else "tsnet"
        return ConnectingRequest(host=host, port=target.port, resource=conn.resource(),
                                 headers=dict(headers), useragent=agent, origin=None,
                                 protocols=[])

    def onOpen(self) -> None:
        self.opened = True
        self.factory.conn.session_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.conn.message(self, payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.conn.session_closed(self, wasClean, code, reason)


class _Factory(WebSocketClientFactory):
    protocol = _Client
    noisy = False

    def __init__(self, conn: _Connection, url: str, reactor: Any) -> None:
        super().__init__(url, reactor=reactor)
        self.conn = conn

    def buildProtocol(self, addr: Any) -> _Client:
        self.conn.dialing()
        return super().buildProtocol(addr)


# --- one connection ----------------------------------------------------------------------


class _Connection:
    """What pull and push share: the entry, the status, the dial loop."""

    mode = ""

    def __init__(self, owner: Connections, store: Store, entry: dict) -> None:
        self.owner = owner
        self.store = store
        self.entry = entry
        self.id: str = entry["id"]
        self.target = parse_target(entry["url"])
        self.headers: dict[str, str] = dict(entry.get("headers") or {})
        self.status = "disconnected"
        self.errors = 0
        self.last_error: str | None = None
        self.cursor = 0
        self.session: _Client | None = None
        self.running = False
        self.service: OutboundService | None = None
        self._waiter: defer.Deferred | None = None
        self._retry: Any = None
        self._handshake_failures = 0
        self._stopping: defer.Deferred | None = None
        self._policy = backoff_policy(owner.initial_delay, owner.max_delay, jitter=owner.jitter)
        self.name = f"ts-store {self.mode} {store.name}/{self.id}"

    # -- the dial loop ----------------------------------------------------------------------

    def resource(self) -> str:
        """The handshake's request target (path and query) for the next dial."""
        return self.target.resource

    def start(self) -> None:
        owner = self.owner
        self.running = True
        self.status = "connecting"
        factory = _Factory(self, self.entry["url"], owner.reactor)
        options: dict[str, Any] = {"openHandshakeTimeout": owner.handshake_timeout,
                                   "closeHandshakeTimeout": 1.0, "failByDrop": False}
        if owner.ping_interval:
            options.update(autoPingInterval=owner.ping_interval,
                           autoPingTimeout=owner.ping_interval)
        options.update(self.protocol_options())
        factory.setProtocolOptions(**options)
        self.service = OutboundService(
            owner.reactor, self.target, factory, self.name, ca_file=owner.ca_file,
            initial_delay=owner.initial_delay, max_delay=owner.max_delay, jitter=owner.jitter,
            connect_timeout=owner.handshake_timeout)
        self._start_service()

    def protocol_options(self) -> dict:
        return {}

    def _start_service(self) -> None:
        self._retry = None
        if not self.running or self.service is None:
            return
        self.status = "connecting"
        self.service.startService()
        self._arm()

    def _arm(self) -> None:
        """Wait for the next failed dial (ClientService retries it by itself)."""
        svc = self.service
        if self._waiter is not None or svc is None or not svc.running:
            return
        d = self._waiter = svc.whenConnected(failAfterFailures=1)
        d.addCallbacks(self._dialed, self._dial_failed)

    def _dialed(self, client: Any) -> None:
        self._waiter = None
        if isinstance(client, _Client) and client.state == client.STATE_CLOSED:
            self._arm()  # that one is gone already: its close did not re-arm

    def _dial_failed(self, f: Failure) -> None:
        self._waiter = None
        if f.check(defer.CancelledError) or not self.running:
            return
        self.error(describe_failure(f))
        self._arm()

    def dialing(self) -> None:
        """TCP is up: the TLS and WebSocket handshakes follow."""
        if self.running:
            self.status = "connecting"

    def session_opened(self, client: _Client) -> None:
        if not self.running:
            client.dropConnection(abort=True)
            return
        self.session = client
        self.status = "connected"
        self.last_error = None
        if self._handshake_failures:
            log.info("{name}: WebSocket handshake with {url} succeeded again", name=self.name,
                     url=self.entry["url"])
        self._handshake_failures = 0
        self.opened(client)

    def session_closed(self, client: _Client, clean: bool, code: int | None,
                       reason: str | None) -> None:
        if client is not self.session:
            if client.opened or not self.running:
                return
            self._handshake_failed(client, reason)
            return
        self.session = None
        self.closed(client)
        if not self.running:
            return
        if not (clean and code in (1000, 1001)):
            if not clean:
                self.error(client.wasNotCleanReason or reason or "connection lost")
            else:
                self.error(f"websocket: close {code}" + (f": {reason}" if reason else ""))
        self.status = "disconnected"
        self._arm()

    def _handshake_failed(self, client: _Client, reason: str | None) -> None:
        """A refused handshake is a failed dial: back off (ClientService would
        redial at once, its TCP connection having succeeded)."""
        text = client.wasNotCleanReason or reason or "WebSocket handshake failed"
        self.error(text)
        self._handshake_failures += 1
        if self._handshake_failures == 1:
            log.warn("{name}: WebSocket handshake with {url} failed: {reason}; retrying",
                     name=self.name, url=self.entry["url"], reason=text)
        svc = self.service
        if svc is not None and svc.running:
            try:
                svc.stopService()
            except Exception:
                log.failure("{name}: stopping the dial loop failed", name=self.name)
        delay = self._policy(self._handshake_failures + 1)
        self._retry = self.owner.reactor.callLater(delay, self._start_service)

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        self.status = "error"

    # -- the mode's parts --------------------------------------------------------------------

    def opened(self, client: _Client) -> None:
        pass

    def message(self, client: _Client, payload: bytes) -> None:
        pass

    def closed(self, client: _Client) -> None:
        pass

    async def drain(self) -> None:
        """Before the socket closes on a stop."""

    def halt(self) -> None:
        """Once stopping: nothing more is taken in."""

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> defer.Deferred:
        """Interrupt any wait, let the session finish, close it; ``disconnected``.
        Fires once stopped (every caller gets the same stop)."""
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._stop())
        d: defer.Deferred = defer.Deferred()

        def settle(result: Any) -> None:
            (d.errback if isinstance(result, Failure) else d.callback)(result)
        self._stopping.addBoth(lambda r: settle(r) if not d.called else None)
        return d

    async def _stop(self) -> None:
        if not self.running:
            return
        if self.session is not None:
            try:
                await self.drain()
            except Exception:
                log.failure("{name}: draining failed", name=self.name)
        self.running = False
        self.halt()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        client = self.session
        if client is not None and client.state == client.STATE_OPEN:
            client.sendClose(1000)
            closed: defer.Deferred = defer.Deferred()

            def done(result: Any = None) -> Any:
                if not closed.called:
                    closed.callback(None)
                return result
            client.is_closed.addBoth(done)
            timer = self.owner.reactor.callLater(1.0, done)
            await closed
            if timer.active():
                timer.cancel()
        if self.service is not None and self.service.running:
            await self.service.stopService()
        self.session = None
        self.status = "disconnected"
        self.save_cursor()

    def save_cursor(self) -> None:
        if self.entry.get("cursor") != self.cursor:
            self.entry["cursor"] = self.cursor
            self.owner.dirty(self.store)

    # -- status ----------------------------------------------------------------------------------

    def status_object(self) -> dict:
        raise NotImplementedError

    def _tail(self, out: dict, counter: str, count: int) -> dict:
        if self.cursor:
            out["last_timestamp"] = self.cursor
        if count:
            out[counter] = count
        if self.errors:
            out["errors"] = self.errors
        if self.last_error:
            out["last_error"] = self.last_error
        return out


class _Pull(_Connection):
    """Receives frames from the remote and stores them (spec §8.4)."""

    mode = "pull"

    def __init__(self, owner: Connections, store: Store, entry: dict) -> None:
        super().__init__(owner, store, entry)
        # What the connection committed is in the store, so its persisted cursor
        # is at most the store's newest record (more only if the store was reset
        # since): resume after the newest record, as nothing at or before it
        # can be stored anyway.
        self.cursor = store.ring.newest_ns
        self.submitted = self.cursor  # the newest timestamp handed to Stores.write
        self.received = 0
        self.skipped = 0  # frames at or before the cursor, dropped (tests look)
        self.pending = 0  # writes not committed yet
        self.pauses = 0
        self.paused = False
        self.param: str | None = entry.get("resume_param")
        self.full = entry.get("format", "full") in ("", "full")

    def protocol_options(self) -> dict:
        limit = max(1 << 20, 2 * self.store.ring.capacity + 4096)
        return {"maxMessagePayloadSize": limit, "maxFramePayloadSize": limit,
                "utf8validateIncoming": False}

    def resource(self) -> str:
        self._clamp()
        if self.param and self.cursor:
            return with_param(self.target.resource, self.param, self.cursor)
        return self.target.resource

    def _clamp(self) -> None:
        newest = self.store.ring.newest_ns
        if newest < self.submitted:  # the store was reset
            self.submitted = self.cursor = newest

    def opened(self, client: _Client) -> None:
        self.paused = False

    def message(self, client: _Client, payload: bytes) -> None:
        if not self.running or client is not self.session:
            return
        store = self.store
        try:
            ts, raw = decode_envelope(payload, type_name=PULL_ENVELOPE_TYPE)
            if ts is not None and ts > 0:  # (0: now; below: refused as invalid)
                self._clamp()
                if ts <= self.submitted:
                    self.skipped += 1
                    return
            if store.data_type == "json":
                if raw is None:
                    raise GoJSONError(MISSING_JSON)
                check_json(raw)
                data = raw
            elif store.data_type == "schema" and self.full:
                data = compact(store.schema.current(), raw)
            else:  # schema as sent, text, binary: the JSON text of data
                data = raw or b""
        except (GoJSONError, SchemaError) as e:
            self.error(str(e))
            return
        try:
            d = self.owner.stores.write(store, data, ts or None)
        except Exception as e:  # (write answers with a Deferred; be safe)
            d = defer.fail(e)
        if ts is not None and ts > 0:
            self.submitted = max(self.submitted, ts)
        self.pending += 1
        d.addCallbacks(self._committed, self._refused)
        if self.pending > self.owner.max_pending and not self.paused:
            self.paused = True
            self.pauses += 1
            client.transport.pauseProducing()

    def _committed(self, ack: Any) -> None:
        self.pending -= 1
        self.received += 1
        if ack.timestamp > self.cursor:
            self.cursor = ack.timestamp
            self.submitted = max(self.submitted, self.cursor)
            if self.running:
                self.save_cursor()
        self._maybe_resume()

    def _refused(self, f: Failure) -> None:
        self.pending -= 1
        if f.check(StoreError):
            message = f.value.message
        elif f.check(StorageUnavailable):
            message = UNAVAILABLE
        else:
            self.owner.logs.failure(WRITE_FAILURES, "{name}: writing a record failed", f,
                                    name=self.name)
            message = INTERNAL
        if self.running:
            self.error(message)
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        client = self.session
        if self.paused and self.pending <= self.owner.max_pending // 2:
            self.paused = False
            if client is not None and client.transport is not None:
                client.transport.resumeProducing()

    def closed(self, client: _Client) -> None:
        self.paused = False

    def halt(self) -> None:
        self.paused = False  # read again, so that the close handshake is heard
        client = self.session
        if client is not None and client.transport is not None:
            client.transport.resumeProducing()

    def status_object(self) -> dict:
        e = self.entry
        out: dict[str, Any] = {"id": self.id, "mode": "pull", "url": e["url"],
                               "format": e.get("format") or "full"}
        if self.param:
            out["resume_param"] = self.param
        out["status"] = self.status
        out["created_at"] = e.get("created_at", "")
        return self._tail(out, "messages_received", self.received)


class _Frame:
    """A pushed frame waiting for its reply."""

    __slots__ = ("key", "sent", "upto")

    def __init__(self, key: int, upto: int, sent: float) -> None:
        self.key = key  # its timestamp: what an ack names
        self.upto = upto  # the cursor once it is acknowledged
        self.sent = sent


class _Push(_Connection):
    """Sends the store's records to the remote (spec §8.3), resuming from acks."""

    mode = "push"

    def __init__(self, owner: Connections, store: Store, entry: dict) -> None:
        super().__init__(owner, store, entry)
        start = entry.get("cursor")
        self.cursor = max(int(start if start is not None else entry.get("from") or 0), 0)
        self.ack_mode = entry.get("ack", "auto")
        self.ack_timeout = float(entry.get("ack_timeout") or owner.ack_timeout)
        self.compact = entry.get("format") == "compact"
        self.needle = entry.get("filter") or ""
        self.ignore_case = bool(entry.get("filter_ignore_case"))
        self.sent = 0
        self.read_pos = self.cursor  # the newest record read in this session
        self.in_flight: deque[_Frame] = deque()
        self.acking: bool | None = None  # None: waiting to learn (ack "auto")
        self.replied = False
        self.spec = None
        self.agg = None
        self._agg_before = 0
        self._poller: task.LoopingCall | None = None
        self._flusher: task.LoopingCall | None = None
        self._read_failing = False
        if entry.get("agg_window"):
            from tsnet.protocols.tsstore import aggregate

            try:
                self.spec = aggregate.parse_spec(entry["agg_window"],
                                                 entry.get("agg_fields", ""),
                                                 entry.get("agg_default", ""))
            except aggregate.AggregationError as e:
                log.warn("{name}: aggregation config ignored: {reason}", name=self.name,
                         reason=str(e))

    # -- a session ----------------------------------------------------------------------------

    def opened(self, client: _Client) -> None:
        self.read_pos = self.cursor
        self.in_flight.clear()
        self.acking = {True: True, False: False}.get(self.ack_mode)
        self.replied = False
        client.writable = True
        try:
            client.transport.registerProducer(_WriteBuffer(client), True)
        except Exception:
            pass  # another producer holds it
        if self.spec is not None:
            from tsnet.protocols.tsstore import aggregate

            fields = self.store.schema.current() if self.store.data_type == "schema" else None
            self.agg = aggregate.WindowAggregator(self.spec, numeric_map(fields))
            every = max(self.spec.window_ns / 1e9, 0.05)
            self._flusher = task.LoopingCall(self._flush_window, client)
            self._flusher.clock = self.owner.reactor
            self._flusher.start(every, now=False)
        self._poller = task.LoopingCall(lambda: defer.ensureDeferred(self._poll(client)))
        self._poller.clock = self.owner.reactor
        self._poller.start(self.owner.poll_interval, now=True)

    def closed(self, client: _Client) -> None:
        for loop in (self._poller, self._flusher):
            if loop is not None and loop.running:
                loop.stop()
        self._poller = self._flusher = None
        self.in_flight.clear()  # not acknowledged: sent again next session
        self.agg = None
        self.read_pos = self.cursor

    async def _poll(self, client: _Client) -> None:
        try:
            await self._poll_once(client)
        except Exception:
            self.owner.logs.failure(POLL_FAILURES, "{name}: a push poll failed",
                                    name=self.name)

    async def _poll_once(self, client: _Client) -> None:
        if client is not self.session or not client.writable:
            return
        owner = self.owner
        now = owner.reactor.seconds()
        if self.in_flight and now - self.in_flight[0].sent > self.ack_timeout:
            if self._ack_timed_out(client):
                return
        room = owner.batch if self.acking is False else min(
            owner.batch, owner.window - len(self.in_flight))
        if room <= 0:
            return
        store = self.store
        start = self.read_pos + 1 if self.read_pos else None
        end = owner.stores.clock_ns() if self.read_pos else None
        try:
            backend = owner.core.storage.backend_for(store.name)
            recs = await backend.read_records(store.name, start_ns=start, end_ns=end,
                                              limit=room)
        except Exception as e:
            if not self._read_failing:
                self._read_failing = True
                if isinstance(e, StorageUnavailable):
                    self.error(UNAVAILABLE)
                else:
                    log.failure("{name}: reading the store failed", name=self.name)
                    self.error("internal error")
            return
        self._read_failing = False
        if client is not self.session or not self.running:
            return
        fields = store.schema.current()
        for rec in recs:
            if client.state != client.STATE_OPEN:
                return  # closing: the rest is read again next session
            if self.needle and not objects.matches(rec, self.needle, self.ignore_case):
                self.read_pos = rec.time_ns
                self._passed()
                continue
            if self.agg is not None:
                self._aggregate(client, rec, fields)
                continue
            payload = objects.data_json(rec, store.data_type, fields, self.compact)
            self.read_pos = rec.time_ns
            self._send(client, rec.time_ns, payload, rec.time_ns)

    def _aggregate(self, client: _Client, rec: Any, fields: list[dict] | None) -> None:
        value = objects.data_value(rec, self.store.data_type, fields)
        before = self.read_pos
        self.read_pos = rec.time_ns
        if not isinstance(value, dict):
            self._passed()
            return
        if not self.agg.pending:
            self._agg_before = before
        windows = self.agg.add(rec.time_ns, value)
        if windows:
            for end, data in windows:
                self._send_window(client, end, data, before)
            self._agg_before = before

    def _flush_window(self, client: _Client) -> None:
        if client is not self.session or self.agg is None:
            return
        for end, data in self.agg.flush(partial=True):
            self._send_window(client, end, data, self.read_pos)

    def _send_window(self, client: _Client, end: int, data: dict, upto: int) -> None:
        try:
            payload = go_marshal(data)
        except GoJSONError as e:
            self.error(f"json: unsupported value: {e}")
            return
        self._send(client, end, payload, upto)

    def _send(self, client: _Client, ts: int, payload: bytes, upto: int) -> None:
        if client.state != client.STATE_OPEN:
            return  # not sent, not in flight: sent again next session
        client.sendMessage(b'{"type":"data","timestamp":%d,"data":%s}\n' % (ts, payload))
        self.sent += 1
        if self.acking is False:
            self._advance(upto)
        else:
            self.in_flight.append(_Frame(ts, upto, self.owner.reactor.seconds()))

    def _passed(self) -> None:
        """A record skipped (filter, not an object): acknowledged with what is
        in flight before it, or at once."""
        if self.agg is not None and self.agg.pending:
            return  # the window's frame covers it
        if self.in_flight:
            self.in_flight[-1].upto = self.read_pos
        else:
            self._advance(self.read_pos)

    def _advance(self, upto: int) -> None:
        if upto > self.cursor:
            self.cursor = upto
            self.save_cursor()

    def _settled(self) -> None:
        """Nothing in flight: everything read is acknowledged, bar an open window."""
        if self.in_flight:
            return
        if self.agg is not None and self.agg.pending:
            self._advance(self._agg_before)
        else:
            self._advance(self.read_pos)

    # -- replies ------------------------------------------------------------------------------

    def message(self, client: _Client, payload: bytes) -> None:
        if client is not self.session:
            return
        try:
            reply = json.loads(payload)
        except ValueError:
            return
        if not isinstance(reply, dict) or reply.get("type") not in ("ack", "error"):
            return  # not a reply to us
        if not self.replied:
            self.replied = True
            if self.acking is None:
                self.acking = True
                log.info("{name}: the remote acknowledges; resuming from its acks",
                         name=self.name)
        error = reply.get("message") if reply["type"] == "error" else None
        if reply["type"] == "error":
            self.error(f"remote: {error}")
        if self.acking is False or not self.in_flight:
            return
        ts = reply.get("timestamp") if reply["type"] == "ack" else None
        answered = 1  # a reply answers the oldest frame in flight ...
        if isinstance(ts, int) and not isinstance(ts, bool) and ts > 0:
            if ts < self.in_flight[0].key:
                return  # a late reply to something already settled
            # ... or, naming a later frame, every frame up to that one
            at = next((i for i, f in enumerate(self.in_flight) if f.key == ts), 0)
            answered = at + 1
        for _ in range(answered):
            frame = self.in_flight.popleft()
        self._advance(frame.upto)
        self._settled()

    def _ack_timed_out(self, client: _Client) -> bool:
        """The oldest frame waited too long; True when the session ends."""
        if self.acking is None and not self.replied:
            log.info("{name}: no reply from the remote within {t:g} s: frames written now "
                     "count as delivered", name=self.name, t=self.ack_timeout)
            self.acking = False
            if self.in_flight:
                self._advance(self.in_flight[-1].upto)
                self.in_flight.clear()
            self._settled()
            return False
        self.error(f"no ack from the remote within {self.ack_timeout:g} s")
        client.dropConnection(abort=True)
        return True

    async def drain(self) -> None:
        client = self.session
        if client is None:
            return
        if self.agg is not None:
            self._flush_window(client)
        if self.acking is False:
            return
        reactor = self.owner.reactor
        deadline = reactor.seconds() + self.owner.drain_timeout
        while self.in_flight and self.session is client and reactor.seconds() < deadline:
            await task.deferLater(reactor, 0.01, lambda: None)

    def status_object(self) -> dict:
        e = self.entry
        out: dict[str, Any] = {"id": self.id, "mode": "push", "url": e["url"]}
        if e.get("from"):
            out["from"] = e["from"]
        out["format"] = e.get("format") or "full"
        for k in ("filter", "filter_ignore_case", "agg_window", "agg_fields", "agg_default",
                  "ack", "ack_timeout"):
            if e.get(k) not in (None, "", False) or (k == "ack" and e.get(k) is False):
                out[k] = e[k]
        out["status"] = self.status
        out["created_at"] = e.get("created_at", "")
        return self._tail(out, "messages_sent", self.sent)


# --- the connections of a server ----------------------------------------------------------------

_BY_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Connections:
    """The outbound connections of one `Stores`: the REST API's back end, the
    start and stop with each store, the cursor persistence.  The class
    attributes are the timings (tests make them short)."""

    #: backoff of failed dials (seconds): initial, doubling up to the max
    initial_delay = 1.0
    max_delay = 60.0
    jitter = 0.1
    #: the handshake (TCP, TLS, WebSocket) must finish within this (gorilla: 10 s)
    handshake_timeout = 10.0
    #: seconds between pings that tell a dead peer (0: none)
    ping_interval = 30.0
    #: push: seconds between polls, records per poll, frames waiting for replies
    poll_interval = 0.1
    batch = 100
    window = 100
    #: push: default ``ack_timeout``; seconds a stop waits for replies in flight
    ack_timeout = 10.0
    drain_timeout = 2.0
    #: pull: uncommitted writes before reading stops
    max_pending = 1000
    #: seconds between writes of a moving cursor
    persist_interval = 1.0
    #: PEM CA certificates that wss:// peers are verified against (None: the
    #: platform's trust store); ``[tsstore] ca_file`` sets it when that key exists
    ca_file: str | None = None
    #: seconds `logs` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    @classmethod
    def for_stores(cls, core: Core, stores: Stores) -> Connections:
        """The one instance of ``stores`` (made, and hooked to it, on first use)."""
        found = _BY_STORES.get(stores)
        if found is None:
            found = _BY_STORES[stores] = cls(core, stores)
        return found

    def __init__(self, core: Core, stores: Stores) -> None:
        self.core = core
        self.stores = stores
        self.reactor = core.reactor
        section = core.config.sections.get("tsstore", {}) if core.config else {}
        if section.get("ca_file"):
            import os

            self.ca_file = os.path.join(core.config.directory, section["ca_file"])
        self._by_store: dict[str, dict[str, _Connection]] = {}
        self._dirty: set[str] = set()
        self._calls: dict[str, Any] = {}
        self._saving: dict[str, defer.Deferred] = {}
        #: failures a remote, a client or a timer may repeat at will: logged
        #: once, then counted; a store's close logs the counts pending
        self.logs = LogBound(log, self.reactor, self.log_period)
        stores.on_open.append(self._store_opened)
        stores.on_close.append(self._store_closed)

    # -- stores opening and closing ----------------------------------------------------------

    def _store_opened(self, store: Store) -> None:
        if store.name in self._by_store:
            return
        conns = self._by_store[store.name] = {}
        for entry in store.connections:
            try:
                conn = self._make(store, entry)
                conn.start()
            except Exception as e:
                log.warn("store {store}: skipping outbound connection {id}: {reason}",
                         store=store.name, id=entry.get("id"), reason=str(e))
                continue
            conns[conn.id] = conn
        if conns:
            log.info("store {store}: started {n} outbound connections", store=store.name,
                     n=len(conns))

    def _make(self, store: Store, entry: dict) -> _Connection:
        if not isinstance(entry.get("id"), str) or not isinstance(entry.get("url"), str):
            raise ValueError("no id or url")
        if entry.get("mode") == "pull":
            return _Pull(self, store, entry)
        if entry.get("mode") == "push":
            return _Push(self, store, entry)
        raise ValueError(INVALID_MODE)

    def _store_closed(self, store: Store) -> defer.Deferred:
        conns = self._by_store.pop(store.name, {})
        return defer.ensureDeferred(self._stop_all(store, list(conns.values())))

    async def _stop_all(self, store: Store, conns: list[_Connection]) -> None:
        results = await defer.DeferredList(
            [defer.ensureDeferred(c.stop()) for c in conns], consumeErrors=True)
        for ok, f in results:
            if not ok:
                log.failure("store {store}: stopping a connection failed", f,
                            store=store.name)
        call = self._calls.pop(store.name, None)
        if call is not None and call.active():
            call.cancel()
        saving = self._saving.get(store.name)
        if saving is not None:
            await saving
        if store.name in self._dirty and not store.deleted:
            await self._save(store)
        self._dirty.discard(store.name)
        self.logs.flush()

    def _of(self, store: Store) -> dict[str, _Connection]:
        if store.name not in self._by_store:
            self._store_opened(store)
        return self._by_store[store.name]

    # -- cursor persistence ----------------------------------------------------------------------

    def dirty(self, store: Store) -> None:
        """A cursor moved: write the store's entries within persist_interval."""
        self._dirty.add(store.name)
        if store.name in self._calls or store.name in self._saving \
                or store.name not in self._by_store:
            return
        self._calls[store.name] = self.reactor.callLater(self.persist_interval,
                                                         self._save_later, store)

    def _save_later(self, store: Store) -> None:
        self._calls.pop(store.name, None)
        d = self._saving[store.name] = defer.ensureDeferred(self._save(store))

        def done(_: Any) -> None:
            self._saving.pop(store.name, None)
            if store.name in self._dirty:
                self.dirty(store)
        d.addBoth(done)

    async def _save(self, store: Store) -> None:
        self._dirty.discard(store.name)
        try:
            await self.stores.save(store)
        except Exception as e:  # retried within persist_interval: logged once a period
            self._dirty.add(store.name)
            self.logs.emit(LogLevel.warn, CURSOR_FAILURES,
                           "store {store}: saving the connection cursors failed: {reason}",
                           store=store.name, reason=str(e) or type(e).__name__)

    # -- the REST API (spec §8.1) -----------------------------------------------------------------

    def statuses(self, store: Store) -> list[dict]:
        return [c.status_object() for c in self._of(store).values()]

    def status(self, store: Store, cid: str) -> dict:
        conn = self._of(store).get(cid)
        if conn is None:
            raise StoreError(404, NOT_FOUND)
        return conn.status_object()

    async def create(self, store: Store, body: Any) -> dict:
        entry = parse_request(body)
        conns = self._of(store)
        cid = uuid.uuid4().hex[:8]
        while cid in conns:
            cid = uuid.uuid4().hex[:8]
        entry = {"id": cid, **entry, "created_at": rfc3339nano(self.stores.clock_ns())}
        store.connections.append(entry)
        try:
            await self.stores.save(store)
        except Exception as e:
            store.connections.remove(entry)
            self._not_saved(store, e, "creating")
            raise StoreError(500, SAVE_FAILED) from None
        conn = self._make(store, entry)
        conns[cid] = conn
        conn.start()
        log.info("store {store}: created {mode} connection {id} to {url}", store=store.name,
                 mode=entry["mode"], id=cid, url=entry["url"])
        return conn.status_object()

    async def delete(self, store: Store, cid: str) -> None:
        conns = self._of(store)
        conn = conns.get(cid)
        if conn is None:
            raise StoreError(404, NOT_FOUND)
        at = next((i for i, e in enumerate(store.connections) if e is conn.entry), None)
        if at is not None:
            del store.connections[at]
        try:
            await self.stores.save(store)
        except Exception as e:
            if at is not None:
                store.connections.insert(at, conn.entry)
            self._not_saved(store, e, "deleting")
            raise StoreError(500, DELETE_FAILED) from None
        conns.pop(cid, None)
        await conn.stop()
        log.info("store {store}: deleted connection {id}", store=store.name, id=cid)

    def _not_saved(self, store: Store, e: Exception, what: str) -> None:
        """Log (bounded) why a request's change of the connections was not
        persisted: a failing storage by its text, anything else with its
        traceback (call it in the ``except`` block)."""
        if isinstance(e, (StorageUnavailable, StoreError, NotFound)):
            self.logs.emit(LogLevel.warn, PERSIST_FAILURES,
                           "store {store}: {what} a connection failed: {reason}",
                           store=store.name, what=what, reason=str(e) or type(e).__name__)
        else:
            self.logs.failure(PERSIST_FAILURES, "store {store}: {what} a connection failed",
                              store=store.name, what=what)

    def find(self, store: Store, cid: str) -> _Connection | None:
        """The running connection (tests and debugging)."""
        return self._by_store.get(store.name, {}).get(cid)
