"""The Redis servers of one ``[storage:NAME] backend = redis`` section.

``url`` holds one or several whitespace-separated Redis URLs; each is a shard.
A routing key (a series, a solution's other items) picks its shard
through a consistent-hash ring over the shards' identities (``host:port/db``),
so adding a shard moves only the share the new shard takes (about 1/N), and
every node with the same ``url`` (in any order) routes every key the same way.
txredisapi's own `ShardedConnection` is not used: its ring cannot pipeline or
run scripts, and it hashes with CRC32 over ``host:port`` only.

Each shard has two txredisapi handlers: a single-connection writer, so a
``WAIT`` follows the write it waits for on the same connection, and a pool for
reads and the catalog.  Every call has a deadline, and a call made while a
shard has no live connection fails at once with `RedisUnavailable` instead of
queueing behind txredisapi's reconnect loop (which would wait forever).
"""

from __future__ import annotations

import hashlib
from bisect import bisect
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="tsnet.storage.redis")

#: virtual points per shard on the ring: enough for an even spread of a few shards
RING_POINTS = 160
#: the longest pause between reconnect attempts: a shard back up is used soon
RECONNECT_MAX_DELAY = 2.0


class RedisUnavailable(ConnectionError):
    """A shard cannot answer now (down, unreachable, or past the deadline): a
    fault the write path retries, never a verdict on the data."""


@dataclass(frozen=True)
class RedisURL:
    """One parsed ``redis://`` or ``rediss://`` URL."""

    host: str
    port: int
    db: int
    password: str | None = None
    username: str | None = None
    tls: bool = False

    @property
    def identity(self) -> str:
        """What places the shard on the ring: stable across nodes and restarts,
        free of the password."""
        return f"{self.host}:{self.port}/{self.db}"

    def display(self) -> str:
        """The URL for logs and errors, password left out."""
        return f"{'rediss' if self.tls else 'redis'}://{self.identity}"


def parse_redis_url(text: str) -> RedisURL:
    """``redis://[[user]:password@]host[:port][/db]``; ValueError names the problem
    (never the password)."""
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected redis:// or rediss://, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise ValueError("a redis URL needs a host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("bad port in redis URL") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"redis database must be a number, got {path!r}")
    if parts.query or parts.fragment:
        raise ValueError("a redis URL takes no query or fragment; use the [storage:*] keys")
    return RedisURL(
        host=parts.hostname,
        port=port,
        db=int(path or 0),
        password=unquote(parts.password) if parts.password else None,
        username=unquote(parts.username) if parts.username else None,
        tls=parts.scheme == "rediss",
    )


def parse_redis_urls(text: str) -> list[RedisURL]:
    """Every URL of a ``url`` value; the same shard twice is an error."""
    urls = [parse_redis_url(u) for u in text.split()]
    if not urls:
        raise ValueError("at least one redis:// URL is needed")
    seen: set[str] = set()
    for u in urls:
        if u.identity in seen:
            raise ValueError(f"shard {u.display()} is listed twice")
        seen.add(u.identity)
    return urls


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing of routing keys onto shard indexes."""

    def __init__(self, identities: list[str], points: int = RING_POINTS) -> None:
        ring = sorted(
            (_point(f"{ident}#{i}".encode()), n)
            for n, ident in enumerate(identities)
            for i in range(points)
        )
        self._hashes = [h for h, _ in ring]
        self._owners = [n for _, n in ring]
        self.size = len(identities)

    def index(self, routing_key: bytes) -> int:
        """The shard index owning ``routing_key``."""
        if self.size == 1:
            return 0
        i = bisect(self._hashes, _point(routing_key))
        return self._owners[i if i < len(self._owners) else 0]


@dataclass
class ShardOptions:
    pool_size: int = 4
    connect_timeout: float = 5.0
    timeout: float = 10.0
    tls_ca: str | None = None


class Shard:
    """One Redis server's connections, and calls on them with a deadline."""

    def __init__(self, url: RedisURL, options: ShardOptions, reactor: Any) -> None:
        self.url = url
        self.options = options
        self._reactor = reactor
        self._writer: Any = None
        self._readers: Any = None
        self._up: bool | None = None
        self._refusal = ""  # why the server refused a connection (AUTH, SELECT)

    def _handler(self, poolsize: int) -> Any:
        import txredisapi

        tls: Any = False
        if self.url.tls:
            from tsnet.outbound import client_tls_options

            tls = client_tls_options(self.url.host, self.options.tls_ca)
        # db 0 is every connection's database already: no SELECT to fail
        handler = txredisapi.makeConnection(
            self.url.host, self.url.port, self.url.db or None, poolsize, True, True, None,
            self.url.password, tls, self.options.connect_timeout, self.options.timeout,
            False, self.url.username)
        handler._factory.maxDelay = RECONNECT_MAX_DELAY
        if handler._factory.deferred is not None:  # fails once if AUTH or SELECT fails
            handler._factory.deferred.addErrback(self._refused)
        return handler

    def _refused(self, f: Any) -> None:
        self._refusal = f.getErrorMessage()

    def connect(self) -> None:
        """Start connecting (lazily: `ping` says when the shard answers)."""
        self._writer = self._handler(1)
        self._readers = self._handler(self.options.pool_size)

    def _revive(self, handler: Any, poolsize: int) -> Any:
        """A handler whose factory gave up (txredisapi stops reconnecting for
        good when AUTH or SELECT fails, even when the connection was merely
        lost during it) is replaced by a new one."""
        if handler is None or not getattr(handler._factory, "stopped", False):
            return handler
        handler.disconnect()
        return self._handler(poolsize)

    def disconnect(self) -> defer.Deferred:
        handlers = [h for h in (self._writer, self._readers) if h is not None]
        self._writer = self._readers = None
        return defer.DeferredList([defer.maybeDeferred(h.disconnect) for h in handlers],
                                  consumeErrors=True)

    @staticmethod
    def _live(handler: Any) -> bool:
        """Whether the handler has a connected connection to hand out now."""
        factory = getattr(handler, "_factory", None)
        if factory is None:
            return False
        return any(getattr(c, "connected", 0) for c in factory.connectionQueue.pending)

    def call(self, method: str, *args: Any, write: bool = False) -> defer.Deferred:
        """``handler.method(*args)`` on the writer or a reader, within
        ``timeout``; RedisUnavailable when the shard is down or too slow."""
        if self._writer is not None:
            self._writer = self._revive(self._writer, 1)
            self._readers = self._revive(self._readers, self.options.pool_size)
        handler = self._writer if write else self._readers
        if handler is None or not self._live(handler):
            why = f" ({self._refusal})" if self._refusal else ""
            self._mark(False, "not connected" + why)
            return defer.fail(RedisUnavailable(f"redis shard {self.url.display()} is not "
                                               f"connected{why}"))
        import txredisapi

        try:
            d = getattr(handler, method)(*args)
        except (txredisapi.ConnectionError, OSError) as e:
            return defer.fail(self._unavailable(e))
        except Exception:
            return defer.fail()
        d.addTimeout(self.options.timeout + 1.0, self._reactor)
        d.addCallbacks(self._answered, self._failed)
        return d

    def _answered(self, reply: Any) -> Any:
        self._refusal = ""
        self._mark(True, "")
        return reply

    def _failed(self, f: Any) -> Any:
        import txredisapi

        if f.check(txredisapi.ConnectionError, defer.TimeoutError, defer.CancelledError,
                   OSError):
            raise self._unavailable(f.value)
        return f  # Redis answered (and refused the command), or a bug: as it is

    def _unavailable(self, e: BaseException) -> RedisUnavailable:
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        self._mark(False, reason)
        return RedisUnavailable(f"redis shard {self.url.display()}: {reason}")

    def _mark(self, up: bool, reason: str) -> None:
        """Log a shard going down or coming back once, not once per call."""
        if up == self._up:
            return
        if up:
            log.info("redis shard {shard} answers", shard=self.url.display())
        elif self._up is not None:
            log.warn("redis shard {shard} is unavailable: {reason}", shard=self.url.display(),
                     reason=reason)
        self._up = up

    def wait_connected(self, deadline: float) -> defer.Deferred:
        """Deferred firing once the shard answers PING, or RedisUnavailable after
        ``deadline`` seconds."""
        from twisted.internet import task

        reactor = self._reactor
        give_up = reactor.seconds() + deadline

        @defer.inlineCallbacks
        def attempt() -> Any:
            while True:
                try:
                    reply = yield self.call("ping")
                    return reply
                except RedisUnavailable:
                    if reactor.seconds() >= give_up:
                        raise
                yield task.deferLater(reactor, 0.005, lambda: None)

        return attempt()
