"""ts-store's WebSocket input: ``GET /api/stores/:store/ws/write`` (spec §6).

The REST resource hands the request to `WriteResource.render_store`, which
checks the store key (spec §2: a refusal is a plain HTTP 401 ``{"error": ...}``
with the CORS headers, and no upgrade), answers an authenticated request that
is not a WebSocket handshake with gorilla's 400 ``Bad Request``, and upgrades
the rest through `tsnet.http.websocket.WebSocketResource`, on the listener's
own port and TLS (``ws://`` and ``wss://``).  Any Origin; no subprotocol.

Each text or binary message is one ``{"timestamp"?: int64, "data": <value>}``
object, turned into a record as the table of spec §6 says and written with
`Stores.write`.  Every message gets one reply, a text frame of JSON and
``\\n``: ``{"type":"ack",...}`` (omitempty on every field but ``type``) once
the record is committed, or ``{"type":"error","message":...}``.  Commits are
asynchronous and clients pipeline, so replies wait in a queue of slots and go
out in the order of the messages.  A bad message never closes the connection.

Bounds:

- a message has at most ``max_message`` bytes (1 MiB); Autobahn closes the
  connection with 1009 on a bigger one (ts-store sets no limit at all);
- back-pressure: the connection stops reading (its transport is paused) while
  more than ``max_pending`` (1000) replies wait for a commit or for an earlier
  reply, while the transport's write buffer is over its high-water mark (a push
  producer registered on the transport says so; without one the buffer is
  polled past 1 MiB), or while ingest's write queue is full or its storage
  fails (a producer registered with ingest, as the stream inputs do).  It reads
  again once none holds and at most ``max_pending / 2`` replies wait.  So a
  client that never reads its acks costs at most one read chunk of messages
  past the bound, never an unbounded buffer;
- pings are answered (Autobahn); close 1000/1001 ends quietly; an idle writer
  is kept open (spec §6 leaves the 60 s read deadline to the implementation);
  a protocol violation is Autobahn's close (with its code), not an error frame.

Speed: Autobahn does the handshake, control frames, fragments and violations;
the common frames (complete, masked, unfragmented text or binary within the
bound) are cut by `WriteProtocol.dataReceived` itself, the common envelopes
(``{"data":D}`` with or without a leading or trailing ``"timestamp"``, no
spaces) are read by `fast_envelope` (orjson) and every other goes through
gojson's `decode_envelope`; the replies of one commit leave in one write.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsnet.http.websocket import DEFAULT_MAX_MESSAGE, WebSocketResource
from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.plugin import StorageUnavailable
from tsnet.protocols.tsstore.gojson import GoJSONError, check_json, decode_envelope
from tsnet.protocols.tsstore.rest import JSON_TYPE, error_body, set_cors, store_key
from tsnet.protocols.tsstore.schema import SchemaError, compact
from tsnet.protocols.tsstore.stores import Store, StoreError, Stores

log = Logger(namespace="tsnet.tsstore.ws")

#: replies that may wait (for a commit or for the client) before reading stops
DEFAULT_MAX_PENDING = 1000
UNAVAILABLE = "storage unavailable, retry later"
MISSING_JSON = "unexpected end of JSON input"
INTERNAL = "internal error"
#: the kinds of `WriteResource.logs` (fixed texts: what repeats is counted)
WRITE_FAILURES = "failed WebSocket writes"
UPGRADE_FAILURES = "failed WebSocket write upgrades"


def ack_reply(timestamp: int, block_num: int, size: int) -> bytes:
    """``{"type":"ack","timestamp":T,"block_num":B,"size":S}\n``, each 0 left out
    (Go's omitempty)."""
    if timestamp and block_num and size:
        return b'{"type":"ack","timestamp":%d,"block_num":%d,"size":%d}\n' % (
            timestamp, block_num, size)
    out = b'{"type":"ack"'
    if timestamp:
        out += b',"timestamp":%d' % timestamp
    if block_num:
        out += b',"block_num":%d' % block_num
    if size:
        out += b',"size":%d' % size
    return out + b"}\n"


def _go_text(s: str) -> bytes:
    """A JSON string as Go's encoding/json writes it (HTML-safe escapes)."""
    b = orjson.dumps(s)
    if b"<" in b or b">" in b or b"&" in b:
        b = b.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    if b"\xe2\x80\xa8" in b or b"\xe2\x80\xa9" in b:
        b = b.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return b


def error_reply(message: str) -> bytes:
    """``{"type":"error","message":"..."}\\n``."""
    return b'{"type":"error","message":' + _go_text(message) + b"}\n"


_INT = rb"(-?(?:0|[1-9][0-9]{0,18}))"  # a JSON integer of at most 19 digits
_TS_FIRST = re.compile(rb'\{"timestamp":' + _INT + rb',"data":')
_TS_LAST = re.compile(rb',"timestamp":' + _INT + rb"\}\Z")
_INT64 = 1 << 63
_SPACE = b" \t\r\n"


def fast_envelope(payload: bytes) -> tuple[int | None, bytes] | None:
    """``decode_envelope(payload)`` for the envelopes clients send most, written
    without spaces: ``{"data":D}``, ``{"data":D,"timestamp":N}`` and
    ``{"timestamp":N,"data":D}``; None for anything else (decode_envelope then
    decides).  Taken only when orjson accepts ``D`` alone as one JSON value with
    no space around it: the whole is then that object, with exactly those keys,
    ``D`` is the raw data Go keeps, and check_json would accept it."""
    if payload[-1:] != b"}":
        return None
    if payload.startswith(b'{"data":'):
        m = _TS_LAST.search(payload, max(8, len(payload) - 34))
        if m is None:
            ts, raw = None, payload[8:-1]
        else:
            ts, raw = int(m.group(1)), payload[8:m.start()]
    elif payload.startswith(b'{"timestamp":'):
        m = _TS_FIRST.match(payload)
        if m is None:
            return None
        ts, raw = int(m.group(1)), payload[m.end():-1]
    else:
        return None
    if not raw or raw[0] in _SPACE or raw[-1] in _SPACE:
        return None
    if ts is not None and not -_INT64 <= ts < _INT64:
        return None
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return ts, raw


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if n > 4096:
        return create_xor_masker(mask, n).process(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")


@implementer(IPushProducer)
class _Flow:
    """A push producer for one pause reason of a `WriteProtocol`: registered on
    its transport (a full write buffer) and with ingest (a full write queue or
    a failing storage)."""

    def __init__(self, protocol: WriteProtocol, reason: str) -> None:
        self.protocol = protocol
        self.reason = reason

    def pauseProducing(self) -> None:
        setattr(self.protocol, self.reason, True)
        self.protocol._update_flow()

    def resumeProducing(self) -> None:
        setattr(self.protocol, self.reason, False)
        self.protocol._update_flow()

    def stopProducing(self) -> None:
        pass


class WriteProtocol(WebSocketServerProtocol):
    """One WebSocket writer of one store.  `WebSocketResource.upgrade` sets
    ``store``, ``stores`` and ``full`` (``format`` was full) before it connects."""

    store: Store
    stores: Stores
    full: bool = True

    def __init__(self) -> None:
        super().__init__()
        self._slots: deque[list] = deque()  # [reply or None], in message order
        self._blocked = False  # the transport's write buffer is full
        self._ingest_paused = False  # ingest's write queue is full (or storage fails)
        self._paused = False  # we stopped reading, for one of those or too many pending
        self._producer: _Flow | None = None  # registered on the transport
        self._ingest_flow: _Flow | None = None  # registered with ingest
        self._poll: Any = None  # checks the write buffer when no producer could register
        self._gone = False
        self._partial = b""  # the start of a frame the fast path waits to complete
        self._flushing: Any = None  # the reactor call that sends known replies
        self.max_pending = DEFAULT_MAX_PENDING
        self.messages = 0  # messages received (tests and debugging)
        self.pauses = 0  # times reading was paused

    # -- connection -------------------------------------------------------------

    def onConnect(self, request: Any) -> None:
        return None  # any Origin, no subprotocol

    def onOpen(self) -> None:
        self.max_pending = getattr(self.factory, "max_pending", DEFAULT_MAX_PENDING)
        self.stores.writers.add(self)
        producer = _Flow(self, "_blocked")
        try:
            self.transport.registerProducer(producer, True)
            self._producer = producer
        except RuntimeError:  # another producer holds it: _send_many polls the buffer
            pass
        self._ingest_flow = _Flow(self, "_ingest_paused")
        self.core.ingest.registerProducer(self._ingest_flow)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._gone = True
        self._slots.clear()
        for call in (self._flushing, self._poll):
            if call is not None and call.active():
                call.cancel()
        self._flushing = self._poll = None
        self.stores.writers.discard(self)
        if self._ingest_flow is not None:
            self.core.ingest.unregisterProducer(self._ingest_flow)
            self._ingest_flow = None
        if self._producer is not None:
            self._producer = None
            transport = self.transport
            if transport is not None:
                try:
                    transport.unregisterProducer()
                except Exception:
                    pass

    # -- frames ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """The fast path of an open connection: the common frames (complete,
        masked, unfragmented text or binary frames within the bound) are cut
        here, straight to `onMessage`.  Anything else (the handshake, control
        frames, fragments, a violation, an over-size message), and all that
        follows it in the chunk, goes to Autobahn, whose buffer must be empty
        before the fast path takes over again."""
        if (self.state != self.STATE_OPEN or self.data or self.current_frame is not None
                or self.inside_message or self._perMessageCompress is not None):
            self._partial = b""
            super().dataReceived(data)
            return
        if self._partial:
            data, self._partial = self._partial + data, b""
        at, incomplete = self._frames(data)
        if at < len(data):
            if incomplete:
                self._partial = data[at:]  # the start of a frame of the fast kind
            elif self.state == self.STATE_OPEN:
                super().dataReceived(data[at:] if at else data)

    def _frames(self, buf: bytes) -> tuple[int, bool]:
        """Hand the complete fast-path frames at the start of ``buf`` to
        `onMessage`: (bytes used, whether what is left is a fast frame's start)."""
        n = len(buf)
        at = 0
        limit = self.maxMessagePayloadSize
        on_message = self.onMessage
        while at < n and self.state == self.STATE_OPEN:
            if n - at < 2:
                return at, buf[at] in (0x81, 0x82)
            b0 = buf[at]
            b1 = buf[at + 1]
            if (b0 != 0x81 and b0 != 0x82) or b1 < 0x80:  # not FIN text/binary, masked
                return at, False
            size = b1 & 0x7F
            if size < 126:
                head = at + 2
            elif size == 126:
                if n - at < 4:
                    return at, True
                size = int.from_bytes(buf[at + 2:at + 4], "big")
                head = at + 4
                if size < 126:
                    return at, False  # not minimal: Autobahn's violation
            else:
                if n - at < 10:
                    return at, True
                size = int.from_bytes(buf[at + 2:at + 10], "big")
                head = at + 10
                if size < 65536:
                    return at, False
            if limit and size > limit:
                return at, False  # Autobahn closes with 1009
            end = head + 4 + size
            if end > n:
                return at, True
            payload = _unmask(buf[head + 4:end], buf[head:head + 4])
            at = end
            on_message(payload, b0 == 0x82)
        return at, False

    # -- messages ---------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages += 1
        store = self.store
        try:
            fast = fast_envelope(payload)
            if fast is None:
                ts, raw = decode_envelope(payload)
                checked = False
            else:
                ts, raw = fast
                checked = True
            kind = store.data_type
            if kind == "json":
                if raw is None:
                    raise GoJSONError(MISSING_JSON)
                if not checked:
                    check_json(raw)
                data = raw
            elif kind == "schema" and self.full:
                data = compact(store.schema.current(), raw)
            else:  # schema sent compact, text, binary: the JSON text as sent
                data = raw or b""
        except (GoJSONError, SchemaError) as e:
            self._reply(error_reply(str(e)))
            return
        try:
            d = self.stores.write(store, data, ts or None)
        except Exception as e:  # (write answers with a Deferred; be safe)
            d = defer.fail(e)
        if d.called and not self._slots:  # refused at once: no need to queue
            d.addCallbacks(self._send_now, self._send_failure)
            return
        slot: list = [None]
        self._slots.append(slot)
        d.addCallbacks(self._acked, self._failed, callbackArgs=(slot,), errbackArgs=(slot,))
        if len(self._slots) > self.max_pending and not self._paused:
            self._update_flow()

    def _reply(self, reply: bytes) -> None:
        """A reply known now: sent unless earlier ones still wait."""
        if self._slots:
            self._slots.append([reply])
            if len(self._slots) > self.max_pending and not self._paused:
                self._update_flow()
        else:
            self._send(reply)

    def _send_now(self, ack: Any) -> None:
        self._send(ack_reply(ack.timestamp, ack.block_num, ack.size))

    def _send_failure(self, f: Failure) -> None:
        self._send(self._failure_reply(f))

    def _acked(self, ack: Any, slot: list) -> None:
        slot[0] = ack_reply(ack.timestamp, ack.block_num, ack.size)
        if self._flushing is None and self._slots and self._slots[0] is slot:
            self._flush_soon()

    def _failed(self, f: Failure, slot: list) -> None:
        slot[0] = self._failure_reply(f)
        if self._flushing is None and self._slots and self._slots[0] is slot:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Send at the end of this reactor turn: a commit acks a whole batch of
        writes one after the other, and their replies leave in one write."""
        self._flushing = self.core.reactor.callLater(0, self._flush)

    def _failure_reply(self, f: Failure) -> bytes:
        if f.check(StoreError):
            return error_reply(f.value.message)
        if f.check(StorageUnavailable):
            return error_reply(UNAVAILABLE)
        self.factory.logs.failure(WRITE_FAILURES, "a WebSocket write to store {store} failed",
                                  f, store=self.store.name)
        return error_reply(INTERNAL)

    def _flush(self) -> None:
        """Send the replies at the head of the queue that are known."""
        self._flushing = None
        slots = self._slots
        out = []
        while slots and slots[0][0] is not None:
            out.append(slots.popleft()[0])
        if out:
            self._send_many(out)
        if self._paused:
            self._update_flow()

    # -- sending ------------------------------------------------------------------

    def _send(self, reply: bytes) -> None:
        self._send_many([reply])

    def _send_many(self, replies: list[bytes]) -> None:
        """Text frames, written at once.  Server frames are unmasked and no
        extension is ever negotiated, so the frame is a 2-10 byte header."""
        if self._gone or self.state != self.STATE_OPEN:
            return
        if self._perMessageCompress is not None:  # (never accepted; be safe)
            for r in replies:
                self.sendMessage(r)
            return
        parts = []
        for r in replies:
            n = len(r)
            if n <= 125:
                parts.append(b"\x81" + bytes((n,)))
            elif n <= 0xFFFF:
                parts.append(b"\x81\x7e" + n.to_bytes(2, "big"))
            else:
                parts.append(b"\x81\x7f" + n.to_bytes(8, "big"))
            parts.append(r)
        self.trafficStats.outgoingWebSocketMessages += len(replies)
        self.transport.write(b"".join(parts))
        if self._producer is None and self._poll is None and self._buffered() > 1 << 20:
            self._blocked = True  # (no producer registered: watch the buffer itself)
            self._update_flow()
            self._poll = self.core.reactor.callLater(0.05, self._check_buffer)

    def _buffered(self) -> int:
        t = self.transport
        t = getattr(t, "transport", t) if hasattr(t, "wrappedProtocol") else t
        return len(getattr(t, "dataBuffer", b"")) + getattr(t, "_tempDataLen", 0)

    def _check_buffer(self) -> None:
        self._poll = None
        if self._gone:
            return
        if self._buffered() > 64 * 1024:
            self._poll = self.core.reactor.callLater(0.05, self._check_buffer)
            return
        self._blocked = False
        self._update_flow()

    # -- back-pressure ----------------------------------------------------------------

    def _update_flow(self) -> None:
        """Stop reading while the write buffer or ingest's queue is full, or more
        than ``max_pending`` replies wait; read again when neither is full and at
        most ``max_pending / 2`` wait."""
        transport = self.transport
        if self._gone or transport is None:
            return
        n = len(self._slots)
        if self._paused:
            if not (self._blocked or self._ingest_paused) and n <= self.max_pending // 2:
                self._paused = False
                transport.resumeProducing()
        elif self._blocked or self._ingest_paused or n > self.max_pending:
            self._paused = True
            self.pauses += 1
            transport.pauseProducing()

    @property
    def paused(self) -> bool:
        """Whether the connection stopped reading (back-pressure)."""
        return self._paused

    @property
    def pending(self) -> int:
        """Replies waiting for a commit or for an earlier reply."""
        return len(self._slots)


class WriteResource(WebSocketResource):
    """``/api/stores/:store/ws/write`` (`render_store`, from the REST resource)."""

    authenticate_first = True
    #: seconds `logs` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    def __init__(self, core: Any, stores: Stores, max_message: int = DEFAULT_MAX_MESSAGE,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        factory = WebSocketServerFactory()
        factory.protocol = WriteProtocol
        factory.max_pending = max_pending
        factory.setProtocolOptions(
            failByDrop=False,  # a close frame with its code (1009 for a big message)
            utf8validateIncoming=False,  # invalid UTF-8 is an error reply, not a close
            maxMessagePayloadSize=max_message, maxFramePayloadSize=max_message,
        )
        super().__init__(factory, scope=None, max_message=max_message)
        self.core = core
        self.stores = stores
        #: unexpected failures, logged once then counted (a client may repeat
        #: one per message); the counts pending are logged when a store closes,
        #: so a server's stop does not lose those of its writers
        self.logs = factory.logs = LogBound(log, core.reactor, self.log_period)
        stores.on_close.append(lambda store: self.logs.flush())

    def render_GET(self, request: Any) -> Any:  # mounted by itself at .../:store/ws/write
        set_cors(request)
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        return self.render_store(request, parts[0] if parts else "", self.stores)

    def render_store(self, request: Any, store_name: str, stores: Stores) -> Any:
        """What twisted.web's render returns (NOT_DONE_YET): the key is checked
        off the request, then the connection is upgraded (or refused)."""
        d = defer.ensureDeferred(stores.authenticate(store_name, store_key(request)))
        d.addCallbacks(self._open, self.refuse, callbackArgs=(request, stores),
                       errbackArgs=(request,))
        d.addErrback(lambda f: self.logs.failure(UPGRADE_FAILURES,
                                                 "WebSocket write upgrade failed", f))
        return NOT_DONE_YET

    def _open(self, store: Store, request: Any, stores: Stores) -> None:
        if not self.is_websocket(request):
            self.send_answer(request, self.not_websocket(request))
            return
        fmt = request.args.get(b"format", [b""])[0]
        self.upgrade(request, store.principal, store=store, stores=stores,
                     full=fmt in (b"", b"full"))

    def is_websocket(self, request: Any) -> bool:
        """gorilla's checks: Connection has ``upgrade``, Upgrade has ``websocket``,
        version 13 and a key (Autobahn checks the rest)."""
        if request.channel is None or request.channel.transport is None:
            return False

        def tokens(name: bytes) -> set[bytes]:
            raw = b",".join(request.requestHeaders.getRawHeaders(name, []))
            return {t.strip().lower() for t in raw.split(b",")}

        return (b"upgrade" in tokens(b"connection") and b"websocket" in tokens(b"upgrade")
                and request.getHeader(b"sec-websocket-version") == b"13"
                and bool(request.getHeader(b"sec-websocket-key")))

    def not_websocket(self, request: Any) -> bytes:
        """gorilla's refusal of a plain request: 400 ``Bad Request``."""
        request.setResponseCode(400)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"sec-websocket-version", b"13")
        return b"Bad Request\n"

    def refuse(self, f: Failure, request: Any) -> None:
        """A store-key refusal: HTTP 401 ``{"error": ...}`` (spec §2), no upgrade."""
        if f.check(StoreError):
            code, body = f.value.code, error_body(f.value.message)
        elif f.check(StorageUnavailable):
            code, body = 503, error_body(UNAVAILABLE)
        else:
            self.logs.failure(UPGRADE_FAILURES, "authenticating a WebSocket writer failed", f)
            code, body = 500, error_body(INTERNAL)
        set_cors(request)
        request.setResponseCode(code)
        request.setHeader(b"content-type", JSON_TYPE)
        self.send_refusal(request, body)
