"""The one write path: principal enrichment, batching, flow control, acks.

Protocols hand parsed items to `Ingest.submit`; items wait in a per-backend
queue and are written in one storage transaction per batch, at most one write in
flight per backend (so batches grow by themselves under load, as in carbon's
cache).  A batch is written at once when a client waits for its ack and the
writer is idle (group commit), when it reaches ``batch_size`` items, when the
flush interval passes, or as soon as the previous write finishes if items
queued behind it.  A queue longer than the last writes' cost per item lets one
write take in `PART_SECONDS` is written in parts, one commit each, so that the
committed count keeps moving while a fleet's first points create their series
(a queue with an acked write in it goes whole).  The Deferred that `submit`
returns fires only after the write that holds its items has committed: that is
what every ack waits for.

Flow control: above ``high_watermark`` queued items every registered stream
producer is paused, and resumed below ``low_watermark``; what was read is kept.
UDP cannot be paused, so `offer` refuses items past ``max_queue`` instead.

A storage fault pauses and retries, it never drops: a write that fails with
anything but `BAD_BATCH` (the items themselves are bad, and would fail forever)
keeps its batch and retries it with a backoff, ahead of what queued meanwhile
(duplicates are last-write-wins, so the older items must commit first).  While
a storage is failing every stream producer is paused, and acked writes wait up
to ``ack_timeout`` seconds before they fail with `StorageUnavailable` (their
items stay queued and are retried); new acked writes are refused while the
queue is past ``max_queue``.  A stop gives up on a storage still failing
``ack_timeout`` seconds in, so it never hangs on one.  The log has one line
when a storage starts failing and one when it writes again; /metrics has the
errors and the retry state.

A batch the storage refuses as bad is written again in parts (`tsnet.isolate`)
until only the bad items are left: their acked writers get the error, bad
unacked items are dropped, every other item is committed once.  A backend must
commit nothing of a batch it refuses (one transaction, or a check first).
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsnet import batch_split, isolate
from tsnet.errors import BadBatch, NotFound, Overloaded, StorageUnavailable
from tsnet.interfaces import IIngest, IPointSink
from tsnet.model import Batch, Column, Principal, SampleSet, SeriesKey, WriteBatch

log = Logger(namespace="tsnet.ingest")

#: reactor turns an acked write may wait while acked requests keep arriving: a
#: turn with nothing to read costs microseconds, and each commit saved is a
#: transaction (4 synchronous HTTP clients went from 2 to about 4 requests a
#: commit, and 12 % more points per second)
GROUP_TURNS = 3

#: a request arriving alone after a commit with one waiter is written in its own
#: turn, except every LONE_PROBE-th, which waits for company as above: a lone
#: synchronous client saves a reactor turn a round trip (about a tenth of a Unix
#: socket round trip), concurrent clients keep sharing commits
LONE_PROBE = 8

#: seconds a write should take at most: when more is queued than the last
#: writes' cost per item fits in that, the queue is written in parts
#: (`tsnet.batch_split`), so the committed count advances every few tenths of a
#: second even while each point creates a series (a fleet's first 100 k series
#: made one 1.5 s write, 16 us an item, against 1-2 us once they exist)
PART_SECONDS = 0.1
#: items a part holds at least, and a write must hold to measure the cost per
#: item (a small write's cost is mostly the commit's own).  A fleet's first
#: write creates a series an item, beside a reactor parsing new lines at full
#: tilt: with 2000 it took 60-105 ms and the first commit came 0.17-0.22 s
#: after the first byte (a 0.1 s flush interval), with 1000 24-80 ms
PART_MIN = 1_000
#: writes whose cost per item is remembered
PART_COSTS = 5

#: item kinds counted in tsnet_items_written_total
ITEM_KINDS = ("properties", "messages", "meta", "records")

#: seconds before the first retry of a failed write; each failure doubles it,
#: up to RETRY_MAX, so an outage costs the storage a few attempts a second at most
RETRY_FIRST = 0.1
RETRY_MAX = 5.0

#: failures that mean the batch itself is bad: retrying it would fail forever.
#: Anything else (a full disk, a lock, a lost connection) is the storage
#: failing: the batch is kept and retried.
BAD_BATCH = (BadBatch, TypeError, ValueError, OverflowError)

#: seconds between two log lines about items a storage refused as bad (one
#: line, then a count of the refusals since in the next one)
REFUSALS_LOG_INTERVAL = 60.0

#: the least seconds between two checks for acks waiting past ``ack_timeout``: a
#: timer per request would cost the hot path, one per queue does not
EXPIRY_TICK = 0.25

_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


def failure_reason(f: Failure) -> str:
    """A failure for one log line: type and message, with any URL's user and
    password masked (a networked backend's error may quote its URL)."""
    return _CREDENTIALS.sub(r"\1***@", f"{f.type.__name__}: {f.getErrorMessage()}")


#: an acked write waiting for its commit: (reactor time of submit, Deferred,
#: (solution, its own Batch, protocol) for a split of a refused batch)
Waiter = tuple[float, defer.Deferred, tuple[str, Batch, str]]


def _take_late(waiters: list[Waiter], cutoff: float) -> list[defer.Deferred]:
    """Remove and return the waiters that started at or before ``cutoff``
    (the list is in submit order, so they are a prefix) and are not answered."""
    k = 0
    for w in waiters:
        if w[0] > cutoff:
            break
        k += 1
    late = [w[1] for w in waiters[:k] if not w[1].called]
    del waiters[:k]
    return late


def _retry_after(q: _Queue) -> int:
    """Seconds a client told "unavailable" should wait: until the next attempt."""
    return math.ceil(q.delay) if q.down is not None else 1


class _Unit:
    """A part of a refused batch (`tsnet.isolate`): one acked submission
    (``protocol`` and its ``waiter``) or some of the rest (no waiter)."""

    __slots__ = ("batch", "kinds", "protocol", "waiter")

    def __init__(self, batch: WriteBatch, waiter: Waiter | None = None) -> None:
        self.batch = batch
        self.waiter = waiter
        self.protocol = waiter[2][2] if waiter is not None else None
        self.kinds = isolate.kinds(batch)


def _part_items(q: _Queue) -> int | None:
    """The most items one write of ``q`` should take (None: no limit), by the
    median cost of the last writes (one slow write, a checkpoint's, must not
    shrink them all).  Until a write has been measured, `PART_MIN`: a fleet's
    first write, all new series, would otherwise take everything queued while
    the server started."""
    if not q.costs:
        return PART_MIN
    cost = statistics.median(q.costs)
    if not cost:  # (a clock that did not move: a test's)
        return None
    return max(PART_MIN, int(PART_SECONDS / cost))


def _next_parts(q: _Queue) -> WriteBatch:
    """The next of ``q.parts``, with those after it while they fit the most
    one write takes now (it grows once the series exist)."""
    most = _part_items(q)
    take = [q.parts.pop()]
    n = take[0].item_count()
    while q.parts:
        more = q.parts[-1].item_count()
        if most is not None and n + more > most:
            break
        n += more
        take.append(q.parts.pop())
    return isolate.merged(take)


def apply_token_tags(batch: Batch, tags: tuple[tuple[str, str], ...]) -> Batch:
    """Merge a WRITE token's tags into series and message tags, the token winning,
    so a device cannot write on behalf of another.  Properties and meta are kept
    as sent (DESIGN §7)."""
    if not tags:
        return batch
    token = dict(tags)
    samples = SampleSet()
    for (metric, entity, ktags), col in batch.samples.columnar().items():
        merged = dict(ktags)
        merged.update(token)
        key = (metric, entity, tuple(sorted(merged.items())))
        mine = samples.columns.get(key)
        if mine is None:
            samples.columns[key] = col
        else:
            mine.extend(col)
    samples.count = batch.samples.count
    for m in batch.messages:
        m.tags = {**m.tags, **token}
    batch.samples = samples
    return batch


class _Queue:
    """The items waiting for one storage backend: ``pending`` (what queued since
    the last write began) behind ``batch`` (the one being written, or kept for a
    retry after a fault)."""

    __slots__ = ("abandoned", "attempts", "batch", "batch_counts", "batch_waiters",
                 "by_protocol", "costs", "count", "delay", "down", "expiry", "group",
                 "grouping", "groups", "inflight", "lent", "lone", "parts", "pending", "postponed",
                 "reason", "rest_counts", "retry", "seen", "sent", "soon", "timer", "turns",
                 "waiters", "writing")

    def __init__(self) -> None:
        self.pending = WriteBatch()
        self.count = 0
        self.by_protocol: dict[str, list[int]] = {}  # protocol -> [points, p, m, meta, r]
        #: the acked writes in ``pending``, in submit order
        self.waiters: list[Waiter] = []
        self.inflight = 0  # items in ``batch`` (and in ``groups``)
        self.batch: WriteBatch | None = None
        self.batch_waiters: list[Waiter] = []
        self.batch_counts: dict[str, list[int]] = {}
        #: while a refused batch is written in parts: the parts in ``batch`` now
        #: (None: the whole batch is), those still to write, and the counts by
        #: protocol of what of the rest is not written yet
        self.group: list[_Unit] | None = None
        self.groups: list[list[_Unit]] = []
        self.rest_counts: dict[str, list[int]] = {}
        self.writing = False  # a storage.write of ``batch`` has not answered yet
        self.sent = 0.0  # reactor time of the last attempt at writing ``batch``
        #: a long queue cut into parts (`tsnet.batch_split`), last one first: each
        #: is written before ``pending``; ``count`` and ``by_protocol`` include them
        self.parts: list[WriteBatch] = []
        #: seconds an item cost in each of the last `PART_COSTS` writes of at
        #: least `PART_MIN` items, for the most one write takes (`_part_items`)
        self.costs: list[float] = []
        self.retry: Any = None  # the DelayedCall of the next attempt
        self.delay = RETRY_FIRST  # seconds before that attempt
        self.down: float | None = None  # reactor time of the first failure of an outage
        self.attempts = 0  # failed attempts in this outage
        self.reason = ""  # the last fault, for the logs
        self.abandoned = False  # a stop gave up on this storage: no more retries
        self.expiry: Any = None  # the DelayedCall that fails acks waiting too long
        self.timer: Any = None
        self.soon = False  # the timer is the end of this reactor turn, not the interval
        self.turns = 0  # reactor turns the acked write has waited for company
        self.seen = 0  # waiters at the last of those turns
        #: the last commit of acked writes had several waiters: a request
        #: arriving alone waits for company (see `Ingest._timer_fired`)
        self.grouping = True
        self.lone = 0  # lone requests written at once, for LONE_PROBE
        self.lent = 0  # sinks holding the pending columns between columns() and added()
        self.postponed: Any = None  # a write waiting for those sinks

    def counts(self, protocol: str) -> list[int]:
        """[points, properties, messages, meta, records] queued by ``protocol``."""
        c = self.by_protocol.get(protocol)
        if c is None:
            c = self.by_protocol[protocol] = [0, 0, 0, 0, 0]
        return c


@implementer(IIngest)
class Ingest:
    """Batches items per storage backend and writes them; see the module doc."""

    def __init__(
        self,
        storages: Any,
        reactor: Any,
        metrics: Any,
        flush_interval: float = 0.5,
        batch_size: int = 100_000,
        high_watermark: int = 400_000,
        low_watermark: int = 100_000,
        max_queue: int = 2_000_000,
        ack_timeout: float = 10.0,
    ) -> None:
        self._storages = storages
        self._reactor = reactor
        self._metrics = metrics
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.high_watermark = high_watermark
        self.low_watermark = low_watermark
        self.max_queue = max_queue
        #: seconds an acked write waits for its commit, and a stop for a failing storage
        self.ack_timeout = ack_timeout
        self._queues: dict[str, _Queue] = {}
        self._producers: set[Any] = set()
        self._paused = False
        self._stopping = False
        self._running = True
        self._drained: list[defer.Deferred] = []
        self._queued = 0
        self._down = 0  # storages failing now
        self._stop_check: Any = None
        #: storage -> [reactor time of the last line about refused items, refusals
        #: since, items in them]
        self._refusals: dict[str, list[float]] = {}

    # -- flow control ---------------------------------------------------------

    @property
    def queued(self) -> int:
        """Items accepted and not yet committed (pending and in flight)."""
        return self._queued

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def failing(self) -> list[str]:
        """The storages failing now (their writes are being retried)."""
        return [name for name, q in self._queues.items() if q.down is not None]

    def registerProducer(self, producer: Any) -> None:
        self._producers.add(producer)
        if self._paused:
            producer.pauseProducing()

    def unregisterProducer(self, producer: Any) -> None:
        self._producers.discard(producer)

    def _check_watermarks(self) -> None:
        queued = self._queued
        if not self._paused:
            if queued > self.high_watermark or self._down:
                self._paused = True
                if not self._down:  # (else the storage's "is failing" line says so)
                    log.info("write queue at {queued} items: pausing {n} inputs",
                             queued=queued, n=len(self._producers))
                for p in list(self._producers):
                    p.pauseProducing()
        elif queued < self.low_watermark and not self._down:
            self._paused = False
            log.info("write queue at {queued} items: resuming inputs", queued=queued)
            for p in list(self._producers):
                p.resumeProducing()

    # -- submitting -----------------------------------------------------------

    def submit(self, batch: Batch, principal: Principal, protocol: str = "") -> defer.Deferred:
        """Queue ``batch`` for the principal's solution; fires after commit."""
        n = batch.item_count()
        if n == 0:
            return defer.succeed(None)
        try:
            q, name, part = self._enqueue(batch, principal, protocol, acked=True)
        except NotFound:
            # A solution created since the last catalog poll: reload once, retry.
            return self._storages.refresh().addCallback(
                lambda _: self._submit_known(batch, principal, protocol))
        except Exception:
            return defer.fail()
        return self._wait_commit(q, name, part)

    def _submit_known(self, batch: Batch, principal: Principal, protocol: str) -> defer.Deferred:
        q, name, part = self._enqueue(batch, principal, protocol, acked=True)
        return self._wait_commit(q, name, part)

    def _wait_commit(self, q: _Queue, name: str, part: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        q.waiters.append((self._reactor.seconds(), d, part))
        if q.expiry is None:
            q.expiry = self._reactor.callLater(self.ack_timeout, self._expire, q, name)
        self._schedule(q, name)
        self._check_watermarks()
        return d

    def offer(self, batch: Batch, principal: Principal, protocol: str = "") -> bool:
        """Queue without an ack, for inputs that cannot be paused (UDP).  Returns
        False, and stores nothing, when the queue is past ``max_queue``."""
        n = batch.item_count()
        if self.queued + n > self.max_queue or not self._running:
            return False
        if n:
            q, name, _ = self._enqueue(batch, principal, protocol)
            self._schedule(q, name)
            self._check_watermarks()
        return True

    def _enqueue(self, batch: Batch, principal: Principal, protocol: str,
                 acked: bool = False) -> tuple[_Queue, str, Any]:
        """Merge ``batch`` into the queue of its storage.  An acked batch is
        kept as it is too (with the queue's own copies of its columns), so a
        refused batch can be written again without it: returns it as
        (solution, Batch, protocol), else None."""
        if self._stopping and not self._running:
            raise Overloaded("tsnet is stopping")
        solution = principal.solution
        name = self._storages.storage_name_for(solution)
        q = self._queue(name)
        n = batch.item_count()
        if acked and q.down is not None and self._queued + n > self.max_queue:
            # Streams are paused, UDP is refused; an acked write would only grow
            # the queue without bound: its client is told to come back.
            self._metrics.rejected(protocol, "storage", batch.samples.count)
            raise StorageUnavailable(
                f"storage unavailable and the write queue is full ({self._queued} items); "
                "retry later", kept=False, retry_after=_retry_after(q))
        batch = apply_token_tags(batch, principal.tags)
        target = q.pending.for_solution(solution)
        target.samples.merge(isolate.detached(batch.samples) if acked else batch.samples)
        target.properties.extend(batch.properties)
        target.messages.extend(batch.messages)
        target.meta.extend(batch.meta)
        target.records.extend(batch.records)
        if batch.reclaim_ns is not None:
            target.reclaim_ns = max(target.reclaim_ns or batch.reclaim_ns, batch.reclaim_ns)
        c = q.counts(protocol)
        c[0] += batch.samples.count
        c[1] += len(batch.properties)
        c[2] += len(batch.messages)
        c[3] += len(batch.meta)
        c[4] += len(batch.records)
        q.count += n
        self._queued += n
        return q, name, (solution, batch, protocol) if acked else None

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    # -- the hot path: appending straight into the queue ------------------------

    def sink(self, principal: Principal, protocol: str = "") -> PointSink:
        """A new `PointSink` for one connection's unacknowledged points."""
        return PointSink(self, principal, protocol)

    # -- writing --------------------------------------------------------------

    def _schedule(self, q: _Queue, name: str) -> None:
        if q.inflight:
            return  # the write in flight starts the next one when it is done
        if q.count >= self.batch_size or self._stopping:
            self._write(q, name)
        elif q.waiters:
            # Group commit: a client waiting for its ack is not kept waiting for
            # the timer while the writer is idle.  The write starts at the end of
            # a reactor turn that brought no new acked request (at most
            # GROUP_TURNS turns on), so requests arriving together share it;
            # what arrives during a write is batched behind it.  Only unacked
            # input (telnet, UDP) waits for the flush interval, which makes its
            # batches larger.
            if not q.soon:
                if q.timer is not None and q.timer.active():
                    q.timer.cancel()
                q.timer = self._reactor.callLater(0, self._timer_fired, q, name)
                q.soon = True
                q.turns = 0
                q.seen = 0
        elif q.timer is None:
            q.timer = self._reactor.callLater(self.flush_interval, self._timer_fired, q, name)

    def _timer_fired(self, q: _Queue, name: str) -> None:
        if q.soon:
            arrived = len(q.waiters) - q.seen
            if not q.turns and arrived == 1 and not q.grouping:
                # The last commit had one waiter: a lone client, which would pay
                # a reactor turn for company that never comes.  Every
                # LONE_PROBE-th lone request waits anyway, so clients that never
                # arrive in one turn still find each other.
                q.lone += 1
                if q.lone % LONE_PROBE:
                    arrived = 0
            if arrived > 0 and q.turns < GROUP_TURNS:
                # acked requests came in during this turn: others may be on their way
                q.seen = len(q.waiters)
                q.turns += 1
                q.timer = self._reactor.callLater(0, self._timer_fired, q, name)
                return
        q.timer = None
        q.soon = False
        if not q.inflight and q.count:
            self._write(q, name)

    def _write(self, q: _Queue, name: str) -> None:
        if q.lent:
            # A sink's caller is appending into these columns and has not said
            # how many yet: it will before this reactor turn ends.
            if q.postponed is None:
                q.postponed = self._reactor.callLater(0, self._postponed_write, q, name)
            return
        if q.timer is not None:
            if q.timer.active():
                q.timer.cancel()
            q.timer = None
            q.soon = False
        if q.waiters:
            q.grouping = len(q.waiters) > 1
        if not q.parts and not q.waiters:  # (an acked write is answered whole)
            most = _part_items(q)
            if most is not None and q.count > most:
                q.parts = batch_split.cut(q.pending, most)
                q.pending = WriteBatch()
                q.parts.reverse()  # (popped from the end)
        if q.parts:  # (they came before what is pending)
            part = _next_parts(q)
            kinds = isolate.kinds(part)
            q.batch, q.batch_waiters, q.inflight = part, [], sum(kinds)
            q.batch_counts = batch_split.take(q.by_protocol, kinds)
            q.count -= q.inflight
        else:
            q.batch, q.batch_waiters, q.batch_counts, q.inflight = (
                q.pending, q.waiters, q.by_protocol, q.count)
            q.pending, q.waiters, q.by_protocol, q.count = WriteBatch(), [], {}, 0
        self._send(q, name)

    def _send(self, q: _Queue, name: str) -> None:
        """One attempt at writing ``q.batch``."""
        q.writing = True
        q.sent = self._reactor.seconds()
        d = defer.maybeDeferred(self._storages.backend(name).write, q.batch)
        d.addCallbacks(self._written, self._failed, callbackArgs=(q, name),
                       errbackArgs=(q, name))

    def _postponed_write(self, q: _Queue, name: str) -> None:
        q.postponed = None
        if q.lent:
            log.error("a protocol kept {n} point sinks open across a reactor turn; their "
                      "uncounted points are written with the batch", n=q.lent)
            q.lent = 0  # those sinks' added() will find it so
        if not q.inflight and q.count:
            self._write(q, name)

    def _written(self, _: Any, q: _Queue, name: str) -> None:
        q.writing = False
        if q.group is not None:  # a part of a refused batch
            done = q.group
            if q.down is not None:
                self._recovered(q, name, sum(sum(u.kinds) for u in done))
            for u in done:
                self._settle(q, u, "written")
            self._next_part(q, name)
            for u in done:
                if u.waiter is not None and not u.waiter[1].called:
                    u.waiter[1].callback(None)
            return
        if q.inflight >= PART_MIN:
            q.costs.append((self._reactor.seconds() - q.sent) / q.inflight)
            del q.costs[:-PART_COSTS]
        waiters, counts = q.batch_waiters, q.batch_counts
        for protocol, c in counts.items():
            self._metrics.written(protocol, c[0], dict(zip(ITEM_KINDS, c[1:], strict=True)))
        if q.down is not None:
            self._recovered(q, name, q.inflight)
        self._finish(q, name)
        for w in waiters:
            if not w[1].called:  # (else answered "unavailable" already)
                w[1].callback(None)

    def _failed(self, f: Failure, q: _Queue, name: str) -> None:
        q.writing = False
        if f.check(*BAD_BATCH):
            self._metrics.storage_error(name, "bad")
            if q.down is not None:  # it answers: the outage is over (else nothing may end it)
                self._recovered(q, name, 0)
            self._refused(f, q, name)
            return
        self._metrics.storage_error(name, "unavailable")
        q.reason = failure_reason(f)
        if q.down is None:
            q.down = self._reactor.seconds()
            q.delay = RETRY_FIRST
            q.attempts = 1
            self._down += 1
            log.warn("storage {storage} is failing ({reason}): keeping {n} items, retrying, "
                     "stream inputs paused", storage=name, reason=q.reason,
                     n=q.inflight + q.count)
            self._check_watermarks()
        else:
            q.attempts += 1
            q.delay = min(q.delay * 2, RETRY_MAX)
        self._metrics.storage_state(name, True, q.delay)
        if q.abandoned:
            self._check_drained()
        else:
            q.retry = self._reactor.callLater(q.delay, self._retry, q, name)

    # -- a batch the storage refused ---------------------------------------------

    def _refused(self, f: Failure, q: _Queue, name: str) -> None:
        """The storage refused ``q.batch`` as bad: write it again in halves,
        until what it refuses is one acked submission or one unacked item."""
        group = q.group if q.group is not None else self._parts(q)
        dropped: _Unit | None = None
        if not group:  # (nothing left to write: every ack answered, no rest)
            pass
        elif len(group) > 1:
            mid = len(group) // 2
            q.groups[:0] = [group[:mid], group[mid:]]
        else:
            (unit,) = group
            halves = isolate.halve(unit.batch) if unit.waiter is None else None
            if halves is None:
                dropped = unit
                self._settle(q, unit, "refused")
                self._log_refusal(name, f, sum(unit.kinds))
            else:
                q.groups[:0] = [[_Unit(h)] for h in halves]
        self._next_part(q, name)
        if dropped is not None and dropped.waiter is not None:
            if not dropped.waiter[1].called:
                dropped.waiter[1].errback(f)

    def _parts(self, q: _Queue) -> list[_Unit]:
        """``q.batch`` as parts: the rest first, then each acked submission."""
        assert q.batch is not None
        acked = [_Unit(WriteBatch({w[2][0]: w[2][1]}), w) for w in q.batch_waiters
                 if not w[1].called]
        rest = isolate.rest(q.batch, [w[2][:2] for w in q.batch_waiters if not w[1].called])
        q.rest_counts = {p: c.copy() for p, c in q.batch_counts.items()}
        for u in acked:
            c = q.rest_counts.get(u.protocol or "")
            if c is not None:
                for i, n in enumerate(u.kinds):
                    c[i] = max(0, c[i] - n)
        return ([_Unit(rest)] if rest.by_solution else []) + acked

    def _settle(self, q: _Queue, unit: _Unit, how: str) -> None:
        """Count a part written or refused, by protocol: an acked part's own, the
        rest's from what is left of its counts.  (It stays in ``inflight`` until
        the whole batch is done, so no other write starts meanwhile.)"""
        if unit.protocol is not None:
            shares = {unit.protocol: unit.kinds}
        else:
            shares = batch_split.take(q.rest_counts, unit.kinds)
        for protocol, c in shares.items():
            if how == "written":
                self._metrics.written(protocol, c[0], dict(zip(ITEM_KINDS, c[1:], strict=True)))
            else:
                self._metrics.rejected(protocol, "storage", c[0])

    def _next_part(self, q: _Queue, name: str) -> None:
        """Write the next part of a refused batch, or end it."""
        if not q.groups:
            self._finish(q, name)
            return
        q.group = q.groups.pop(0)
        q.batch = isolate.merged([u.batch for u in q.group])
        self._send(q, name)

    def _log_refusal(self, name: str, f: Failure, items: int) -> None:
        """One line about refused items, then at most one a minute, counting
        those since (a client that keeps sending them must not flood the log)."""
        now = self._reactor.seconds()
        r = self._refusals.get(name)
        if r is not None and now - r[0] < REFUSALS_LOG_INTERVAL:
            r[1] += 1
            r[2] += items
            return
        before = (int(r[1]), int(r[2])) if r is not None else (0, 0)
        self._refusals[name] = [now, 0, 0]
        log.warn("storage {storage} refused {n} items as bad ({reason}): dropped, their "
                 "writer told; the rest of their batch is written ({refusals} refusals, "
                 "{refused} items, in the {interval:g} s before)", storage=name, n=items,
                 reason=failure_reason(f), refusals=before[0], refused=before[1],
                 interval=REFUSALS_LOG_INTERVAL)

    def _retry(self, q: _Queue, name: str) -> None:
        q.retry = None
        if q.inflight and not q.writing:
            self._send(q, name)

    def _recovered(self, q: _Queue, name: str, written: int) -> None:
        assert q.down is not None
        self._metrics.storage_state(name, False)
        log.info("storage {storage} writes again after {down:.1f} s and {attempts} failed "
                 "attempts: {n} kept items written, {behind} queued behind them",
                 storage=name, down=self._reactor.seconds() - q.down, attempts=q.attempts,
                 n=written, behind=q.count)
        q.down = None
        q.abandoned = False
        self._down -= 1

    def _finish(self, q: _Queue, name: str) -> None:
        self._queued -= q.inflight
        q.inflight = 0
        q.batch, q.batch_waiters, q.batch_counts = None, [], {}
        q.group, q.groups, q.rest_counts = None, [], {}
        if q.count:
            self._write(q, name)  # what queued behind the write has waited enough
        self._check_watermarks()
        self._check_drained()

    def _expire(self, q: _Queue, name: str) -> None:
        """Fail the acks that have waited ``ack_timeout`` for their commit; their
        items stay queued.  Runs once per queue at the next such deadline."""
        now = self._reactor.seconds()
        cutoff = now - self.ack_timeout + 1e-6  # (float sums of the deadline)
        late = _take_late(q.batch_waiters, cutoff)
        if not q.batch_waiters:
            late += _take_late(q.waiters, cutoff)
            q.seen = min(q.seen, len(q.waiters))
        first = q.batch_waiters or q.waiters
        q.expiry = None if not first else self._reactor.callLater(
            max(first[0][0] + self.ack_timeout - now, EXPIRY_TICK), self._expire, q, name)
        for d in late:  # (no log line each time: the outage has its two)
            d.errback(StorageUnavailable(
                f"storage unavailable: not committed within {self.ack_timeout:g} s; "
                "the data stays queued and is retried", retry_after=_retry_after(q)))

    def _settled(self, q: _Queue) -> bool:
        """Nothing left to write, or a stop gave up on it and no attempt is out."""
        return (not q.count and not q.inflight) or (q.abandoned and not q.writing)

    def _check_drained(self) -> None:
        if not self._drained:
            return
        if self._queued and not all(self._settled(q) for q in self._queues.values()):
            return
        drained, self._drained = self._drained, []
        for d in drained:
            d.callback(None)

    def flush(self) -> defer.Deferred:
        """Write everything queued now; fires when the queue is empty (while a
        storage is failing, that is after it writes again)."""
        if not self.queued:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._drained.append(d)
        for name, q in self._queues.items():
            if q.count and not q.inflight:
                self._write(q, name)
        return d

    def stop(self) -> defer.Deferred:
        """Refuse nothing already read; write it all, then refuse new items.

        A storage still failing ``ack_timeout`` seconds into the stop is given
        up on (its acks fail, its items are logged as lost), so a stop is
        bounded; a healthy one is waited for.  Fires with the number of items
        that could not be committed."""
        self._stopping = True
        d = self.flush()
        if not d.called:
            self._stop_check = self._reactor.callLater(self.ack_timeout, self._stop_bound)

        def done(_: Any) -> int:
            if self._stop_check is not None and self._stop_check.active():
                self._stop_check.cancel()
            self._stop_check = None
            self._running = False
            for q in self._queues.values():
                for call in (q.timer, q.postponed, q.retry, q.expiry):
                    if call is not None and call.active():
                        call.cancel()
                q.retry = q.expiry = None
            return self._give_up()

        return d.addCallback(done)

    def _stop_bound(self) -> None:
        """The stop has waited ``ack_timeout``: no more retries for the storages
        failing now; the others are waited for, and looked at again later."""
        self._stop_check = None
        for q in self._queues.values():
            if q.down is not None and not q.abandoned:
                q.abandoned = True
                if q.retry is not None and q.retry.active():
                    q.retry.cancel()
                q.retry = None
        self._check_drained()
        if self._drained:
            self._stop_check = self._reactor.callLater(self.ack_timeout, self._stop_bound)

    def _give_up(self) -> int:
        """At the end of a stop: fail the acks still waiting, log what is lost."""
        lost = 0
        for name, q in self._queues.items():
            n = q.inflight + q.count
            if q.group is not None:  # only the parts not written yet are lost
                n = sum(sum(u.kinds) for g in [q.group, *q.groups] for u in g) + q.count
            if not n:
                continue
            lost += n
            log.error("storage {storage} still failing at stop ({reason}): {n} items could "
                      "not be committed", storage=name, reason=q.reason, n=n)
            for counts in (self._inflight_counts(q), q.by_protocol):
                for protocol, c in counts.items():
                    self._metrics.rejected(protocol, "storage", c[0])
            waiters = q.batch_waiters + q.waiters
            q.batch_waiters, q.waiters = [], []
            for w in waiters:
                if not w[1].called:
                    w[1].errback(StorageUnavailable(
                        "storage unavailable: tsnet stopped before it came back; the data "
                        "was not committed", kept=False))
        return lost

    @staticmethod
    def _inflight_counts(q: _Queue) -> dict[str, list[int]]:
        """Counts by protocol of what is being written (and not settled)."""
        if q.group is None:
            return q.batch_counts
        out = {p: c.copy() for p, c in q.rest_counts.items()}
        for group in [q.group, *q.groups]:
            for u in group:
                if u.protocol is not None:
                    c = out.setdefault(u.protocol, [0, 0, 0, 0, 0])
                    for i, n in enumerate(u.kinds):
                        c[i] += n
        return out


@implementer(IPointSink)
class PointSink:
    """One connection's unacknowledged points (see `IPointSink`).

    For a principal without token tags whose solution is known, `columns` lends
    the write queue's own pending columns, so a line protocol appends points
    where storage will read them; the queue holds back a write while columns are
    lent.  Otherwise (token tags to merge, a solution created since the last
    catalog poll, a server stopping) the points collect in columns of the sink's
    own and `added` queues them as a batch.
    """

    __slots__ = ("_ingest", "_lent", "_name", "_own", "_pending", "_q", "_samples",
                 "principal", "protocol")

    def __init__(self, ingest: Ingest, principal: Principal, protocol: str) -> None:
        self._ingest = ingest
        self.principal = principal
        self.protocol = protocol
        self._q: _Queue | None = None
        self._name = ""
        self._pending: WriteBatch | None = None
        self._samples = SampleSet()
        self._own = True
        self._lent = False

    def _bind(self) -> bool:
        """Point at the write queue's live columns when that is allowed."""
        ing = self._ingest
        if self.principal.tags or not ing._running:
            return False
        if self._q is None:
            try:
                self._name = ing._storages.storage_name_for(self.principal.solution)
            except NotFound:
                return False
            self._q = ing._queue(self._name)
        q = self._q
        if q.pending is not self._pending:  # a write took the previous batch
            self._pending = q.pending
            self._samples = q.pending.for_solution(self.principal.solution).samples
        self._own = False
        return True

    def columns(self) -> dict[SeriesKey, Column]:
        return self.samples().columns

    def samples(self) -> SampleSet:
        if self._lent:
            return self._samples
        if not self._bind():
            if not self._own:
                self._samples, self._own = SampleSet(), True
            return self._samples
        self._lent = True
        self._q.lent += 1  # type: ignore[union-attr]
        return self._samples

    def added(self, n: int) -> None:
        ing = self._ingest
        q = self._q
        if self._lent:
            self._lent = False
            q.lent = max(0, q.lent - 1)  # type: ignore[union-attr]  # _postponed_write resets
        if n <= 0:
            return
        ing._metrics.received(self.protocol, n)
        if self._own:
            samples, self._samples = self._samples, SampleSet()
            samples.recount()
            self._queue_own(Batch(samples=samples))
            return
        assert q is not None
        self._samples.count += n
        q.counts(self.protocol)[0] += n
        q.count += n
        ing._queued += n
        ing._schedule(q, self._name)
        ing._check_watermarks()

    def _queue_own(self, batch: Batch, retry: bool = True) -> None:
        ing = self._ingest
        n = batch.samples.count
        try:
            q, name, _ = ing._enqueue(batch, self.principal, self.protocol)
        except NotFound:
            if not retry:
                raise
            # a solution created since the last catalog poll: reload once
            d = ing._storages.refresh().addCallback(lambda _: self._queue_own(batch, False))
            d.addErrback(self._failed, n)
            return
        except Exception:
            self._failed(Failure(), n)
            return
        ing._schedule(q, name)
        ing._check_watermarks()

    def _failed(self, f: Failure, n: int) -> None:
        self._ingest._metrics.rejected(self.protocol, "storage", n)
        log.error("{n} points of solution {solution} could not be queued: {reason}", n=n,
                  solution=self.principal.solution, reason=f.getErrorMessage())
