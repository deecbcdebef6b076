"""ts-store's Unix-socket input (spec §7): ``AUTH <store> <key>``, then one
JSON record a line, each answered ``OK <timestamp>`` once committed.

Lines are framed from whole buffers (a partial line waits, however slowly it
comes), answered one a line in order while the commits run concurrently
(pipelining works), and bounded: a line is at most `MAX_LINE` bytes, and a
connection with `MAX_PENDING` lines unanswered stops being read until its
replies catch up (a client that never reads cannot grow the server).  The
socket file is made mode 0660 in a directory made if missing; a stale file is
replaced, and the file is removed when the listener stops.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from tsnet.logbound import DEFAULT_PERIOD
from tsnet.plugin import (
    ConnectionTracker,
    FlowControlled,
    LineDeadline,
    Listener,
    LogBound,
    StorageUnavailable,
    StreamListenerService,
)
from tsnet.protocols.tsstore.gojson import GoJSONError, check_json, go_trim_space
from tsnet.protocols.tsstore.schema import SchemaError, compact
from tsnet.protocols.tsstore.stores import PROTOCOL, StoreError
from tsnet.unix_socket import UnixReactor

if TYPE_CHECKING:
    from tsnet.core import Core
    from tsnet.protocols.tsstore.stores import Store, Stores

log = Logger(namespace="tsnet.tsstore.unix")

#: bytes a line may have; a longer one is refused and the connection closed
MAX_LINE = 1024 * 1024
#: unanswered lines above which the connection is no longer read
MAX_PENDING = 1000
AUTH_FORMAT = b"ERROR invalid auth format, expected: AUTH <store> <api-key>\n"
INTERNAL = b"ERROR store failed: internal error\n"
#: the kinds of `SocketFactory.logs` (fixed texts: what repeats is counted)
WRITE_FAILURES = "failed unix socket writes"
AUTH_FAILURES = "failed unix socket authentications"
REPLY_FAILURES = "unix socket lines that could not be answered"


def socket_endpoint(endpoint: str, override: str | None) -> tuple[str, str]:
    """(endpoint string, socket path): ``unix:PATH[:opts]`` with PATH replaced
    by ``override`` when given, and ``mode=660`` unless it says a mode."""
    kind, _, rest = endpoint.partition(":")
    parts = rest.split(":")
    path = parts[0]
    if override:
        path = override
    opts = [p for p in parts[1:] if p]
    if not any(p.startswith("mode=") for p in opts):
        opts.append("mode=660")
    return ":".join([kind, path.replace(":", "\\:"), *opts]), path


class SocketFactory(ConnectionTracker):
    #: seconds `logs` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    def __init__(self, listener: Listener, core: Core, stores: Stores) -> None:
        super().__init__(listener, core, PROTOCOL)
        self.stores = stores
        #: failures a client may repeat at will, once a line or a connection:
        #: logged once, then counted; the counts pending at stop are logged
        self.logs = LogBound(log, core.reactor, self.log_period)

    def close_all(self) -> None:
        super().close_all()
        self.logs.flush()

    def buildProtocol(self, addr: Any) -> SocketProtocol:
        p = SocketProtocol()
        p.factory = self
        return p


@implementer(IHalfCloseableProtocol)
class SocketProtocol(LineDeadline, FlowControlled, Protocol, TimeoutMixin):
    """One connection: AUTH first, then records.  A half-close (``nc -N``)
    ends the input: the last line, even without LF, is handled and answered,
    then the connection closes."""

    factory: SocketFactory

    def __init__(self) -> None:
        self._buf = b""
        self._store: Store | None = None
        self._authing = False
        self._early: list[bytes] = []  # lines that came while AUTH was checked
        self._replies: deque[Any] = deque()  # bytes, or a Deferred of bytes, in order
        self._closing = False
        self._write_full = False  # the transport's send buffer is full
        self._group = _Group()  # the record lines of the buffer being read

    def connectionMade(self) -> None:
        f = self.factory
        if not f.admit(self):
            self._closing = True
            self.transport.loseConnection()
            return
        self.callLater = f.core.reactor.callLater
        f.core.ingest.registerProducer(self)
        self.transport.registerProducer(_SendBuffer(self), True)

    def _recheck(self) -> None:
        """Read on only while replies can go out and few are pending."""
        pending = len(self._replies)
        want = self._authing or self._write_full or pending > MAX_PENDING or (
            self._waiting and pending > MAX_PENDING // 2)
        if want != self._waiting:
            self._waiting = want
            self._update_flow()

    def connectionLost(self, reason: Any = None) -> None:
        self._closing = True
        self.factory.core.ingest.unregisterProducer(self)
        self.factory.forget(self)

    def readConnectionLost(self) -> None:
        if not self._closing:
            tail, self._buf = self._buf, b""
            if tail:
                self._line(tail)
            if self._store is not None:
                self._submit()
            if self._authing:  # the AUTH reply is still to come: then close
                self._early.append(b"QUIT")
            else:
                self._closing = True
        self._flush()

    def writeConnectionLost(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    def line_timed_out(self) -> None:
        self._closing = True  # (the replies due go out first)
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.watch_lines(data)
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_LINE:
            self._buf = b""
            self._refuse(b"ERROR line too long\n")
            return
        for line in lines:
            if self._closing:
                return
            if len(line) > MAX_LINE:
                self._refuse(b"ERROR line too long\n")
                return
            self._line(line)
        self._submit()
        self._flush()

    def _refuse(self, reply: bytes) -> None:
        if self._store is not None:
            self._submit()
        self._replies.append(reply)
        self._closing = True
        self._flush()

    def _line(self, raw: bytes) -> None:
        if self._store is None:
            if self._authing:
                self._early.append(raw)
                return
            self._auth(raw)
            return
        line = go_trim_space(raw.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape")
        if not line:
            return
        if line.upper() == b"QUIT":
            self._refuse(b"OK bye\n")
            return
        store = self._store
        try:
            check_json(line)
            if store.data_type == "schema":
                line = compact(store.schema.current(), line)
        except GoJSONError as e:
            self._replies.append(f"ERROR invalid JSON: {e}\n".encode())
            return
        except SchemaError as e:
            self._replies.append(f"ERROR schema validation failed: {e}\n".encode())
            return
        slot = _Slot(self._group, len(self._group.datas))
        self._group.datas.append(line)
        self._replies.append(slot)

    def _submit(self) -> None:
        """Write the lines of this buffer in one batch (`Stores.write_many`)."""
        group = self._group
        if not group.datas:
            return
        self._group = _Group()
        logs = self.factory.logs
        d = self.factory.stores.write_many(self._store, group.datas)
        d.addCallbacks(group.settled, group.failed, errbackArgs=(logs,))
        d.addCallback(lambda _: self._flush())
        d.addErrback(lambda f: logs.failure(REPLY_FAILURES, "answering unix socket lines failed",
                                            f))
        if len(self._replies) > MAX_PENDING:
            self._recheck()

    def _auth(self, raw: bytes) -> None:
        parts = raw.strip().split(b" ", 2)
        if len(parts) != 3 or parts[0].upper() != b"AUTH" or not parts[1] or not parts[2]:
            self._refuse(AUTH_FORMAT)
            return
        name, key = parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
        self._authing = True
        self._recheck()
        d = defer.ensureDeferred(self.factory.stores.authenticate(name, key,
                                                                  check_format=False))
        d.addCallbacks(self._authed, self._auth_failed)

    def _authed(self, store: Store) -> None:
        self._authing = False
        if self._closing:
            return
        self._store = store
        self._replies.append(b"OK\n")
        log.debug("unix socket client authenticated for {store}", store=store.name)
        early, self._early = self._early, []
        for line in early:
            if self._closing:
                break
            self._line(line)
        self._submit()
        self._recheck()
        self._flush()

    def _auth_failed(self, f: Any) -> None:
        self._authing = False
        self._recheck()
        if not f.check(StoreError):
            self.factory.logs.failure(AUTH_FAILURES, "authenticating a unix socket client failed",
                                      f)
        self._refuse(b"ERROR authentication failed\n")

    def _flush(self) -> None:
        """Write every reply at the head that is ready, in order."""
        out = []
        replies = self._replies
        while replies:
            head = replies[0]
            if isinstance(head, _Slot):
                if head.group.replies is None:
                    break
                out.append(head.group.replies[head.index])
            else:
                out.append(head)
            replies.popleft()
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if self._waiting:
            self._recheck()
        if self._closing and not replies and self.transport is not None:
            self.transport.loseConnection()


class _Group:
    """Record lines written in one batch, and their replies once committed."""

    __slots__ = ("datas", "replies")

    def __init__(self) -> None:
        self.datas: list[bytes] = []
        self.replies: list[bytes] | None = None

    def settled(self, results: list[Any]) -> None:
        self.replies = [b"OK %d\n" % r.timestamp if not isinstance(r, StoreError)
                        else f"ERROR store failed: {r.message}\n".encode() for r in results]

    def failed(self, f: Any, logs: LogBound) -> None:
        self.replies = [_store_failed(f, logs)] * len(self.datas)


class _Slot:
    """A reply still to come: line ``index`` of ``group``."""

    __slots__ = ("group", "index")

    def __init__(self, group: _Group, index: int) -> None:
        self.group = group
        self.index = index


class _SendBuffer:
    """The transport's producer: it says when the send buffer is full (a
    client not reading its replies), and the connection stops reading."""

    def __init__(self, proto: SocketProtocol) -> None:
        self.proto = proto

    def pauseProducing(self) -> None:
        self.proto._write_full = True
        self.proto._recheck()

    def resumeProducing(self) -> None:
        self.proto._write_full = False
        self.proto._recheck()

    def stopProducing(self) -> None:
        pass


def _store_failed(f: Any, logs: LogBound) -> bytes:
    """The reply of each line of a batch that failed: the store's own error,
    else a fixed text (the cause is logged, bounded, never told)."""
    if f.check(StoreError):
        return f"ERROR store failed: {f.value.message}\n".encode()
    if f.check(StorageUnavailable):
        return b"ERROR store failed: storage unavailable, retry later\n"
    logs.failure(WRITE_FAILURES, "a unix socket write failed", f)
    return INTERNAL


class SocketService(StreamListenerService):
    """Listens on the socket file: its folder made, a stale file replaced,
    mode 0660 unless the endpoint says ``mode=``, removed at stop."""

    def __init__(self, listener: Listener, factory: Any, reactor: Any, path: str) -> None:
        super().__init__(listener, factory, reactor)
        self.path = path

    def listen(self) -> Any:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, mode=0o755, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.stat(self.path).st_mode):
                os.unlink(self.path)  # a stale socket: nothing listens on a file we bind
        except FileNotFoundError:
            pass
        # (Twisted's parser applies the endpoint's mode=; the port's connections
        # send each reply at once)
        return serverFromString(UnixReactor(self.reactor), self.listener.endpoint).listen(
            self.factory)

    def stopService(self) -> Any:
        d = super().stopService()

        def unlink(result: Any) -> Any:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return result
        return d.addBoth(unlink)


def make_socket_service(listener: Listener, core: Core, stores: Stores,
                        env_path: str | None) -> SocketService:
    """The service of a ``protocol = tsstore`` listener; ``env_path``
    (``TSSTORE_SOCKET_PATH``) replaces its path when it is the only one."""
    mine = [ln for ln in core.config.listeners.values() if ln.protocol == PROTOCOL]
    if env_path and len(mine) > 1:
        log.warn("TSSTORE_SOCKET_PATH ignored: {n} tsstore socket listeners", n=len(mine))
        env_path = None
    endpoint, path = socket_endpoint(listener.endpoint, env_path)
    from dataclasses import replace

    return SocketService(replace(listener, endpoint=endpoint),
                         SocketFactory(listener, core, stores), core.reactor, path)
