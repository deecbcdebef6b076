"""What one read request may cost, and where its work runs.

Every read route (OpenTSDB's /api/query, /api/suggest, /api/search/lookup,
ATSD's series, properties and messages queries) takes the same `QueryLimits`
from ``[tsnet]`` and spends one `QueryBudget` per request: points read from
storage, downsampling buckets, points (or names, series) in the reply, and
time.  A limit is checked before the work it bounds where the work can be
foreseen (the buckets of a fill policy follow from range and interval), and
while it runs otherwise; the time limit is checked inside the engine's loops,
so a query over it really stops.  A request over a limit gets its protocol's
error naming the key (413; 503 for the time limit).

`QueryRunner` runs the engine's work in the reactor's thread pool (a bounded
pool that the reactor stops at shutdown), at most half of the pool's threads
at once so name resolution keeps its share, and cancels running work when
the reactor shuts down, so a heavy query delays neither other clients nor a
SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from tsnet.errors import TooManyPoints
from tsnet.interfaces import IBoundedReads
from tsnet.query import PATTERN_TYPES, QueryError


@dataclass(frozen=True)
class QueryLimits:
    """The ``[tsnet]`` query limits (see README "Limits and failure behaviour")."""

    max_points: int = 10_000_000
    max_buckets: int = 1_000_000
    max_output: int = 1_000_000
    timeout: float = 30.0
    max_pattern: int = 4096

    @classmethod
    def from_config(cls, config: Any) -> QueryLimits:
        return cls(max_points=config.max_query_points, max_buckets=config.max_query_buckets,
                   max_output=config.max_query_output, timeout=config.query_timeout,
                   max_pattern=config.max_pattern_length)

    def check_filters(self, filters: Iterable[Any]) -> None:
        """Refuse a regexp or wildcard filter whose pattern is over `max_pattern`:
        matching costs pattern length times value length for every series."""
        for f in filters:
            if f.type in PATTERN_TYPES and len(f.filter) > self.max_pattern:
                raise QueryError(
                    f"The {f.type} filter on {f.tagk!r} is longer than the server's limit "
                    f"max_pattern_length = {self.max_pattern} characters")


class QueryLimitExceeded(QueryError):
    """A request over one of the limits; the message names the config key."""

    def __init__(self, key: str, limit: Any, what: str, status: int = 413) -> None:
        super().__init__(
            f"Query exceeds the server's limit {key} = {limit}: {what}. Narrow the time "
            "range, use a coarser downsampling interval or filter on more tags", status=status)
        self.key = key


class QueryCancelled(QueryError):
    """The work was stopped from outside: the server is shutting down."""

    def __init__(self) -> None:
        super().__init__("The query was cancelled: the server is stopping", status=503)


class QueryBudget:
    """What one request has left; the engine spends it and raises when it is gone.

    ``spend`` is the cheap call of the engine's loops: it counts work units and
    looks at the clock only every `CHECK_EVERY` of them.
    """

    CHECK_EVERY = 1 << 14

    def __init__(self, limits: QueryLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._deadline = clock() + limits.timeout
        self.cancelled = False
        self.points = 0
        self.buckets = 0
        self.output = 0
        self._work = 0
        self._next_check = self.CHECK_EVERY

    def check(self) -> None:
        """Raise if the request was cancelled or its time is up."""
        if self.cancelled:
            raise QueryCancelled()
        if self._clock() > self._deadline:
            raise QueryLimitExceeded("query_timeout", self.limits.timeout,
                                     "the query ran out of time", status=503)

    def spend(self, units: int = 1) -> None:
        self._work += units
        if self._work >= self._next_check:
            self._next_check = self._work + self.CHECK_EVERY
            self.check()

    def read(self, points: int) -> None:
        """``points`` more were read from storage."""
        self.points += points
        if self.points > self.limits.max_points:
            raise QueryLimitExceeded("max_query_points", self.limits.max_points,
                                     f"it reads more than {self.limits.max_points} points")

    def points_left(self) -> int:
        """Points the request may still read."""
        return max(0, self.limits.max_points - self.points)

    def plan_buckets(self, buckets: int) -> None:
        """Refuse, before any work, a query that will need ``buckets`` more."""
        if self.buckets + buckets > self.limits.max_buckets:
            raise QueryLimitExceeded(
                "max_query_buckets", self.limits.max_buckets,
                f"it needs {self.buckets + buckets} downsampling buckets")

    def add_buckets(self, buckets: int) -> None:
        self.plan_buckets(buckets)
        self.buckets += buckets
        self.spend(buckets)

    def add_output(self, items: int, what: str = "points") -> None:
        """``items`` more go into the reply."""
        self.output += items
        if self.output > self.limits.max_output:
            raise QueryLimitExceeded("max_query_output", self.limits.max_output,
                                     f"the reply would hold more than "
                                     f"{self.limits.max_output} {what}")
        self.spend(items)



class QueryRunner:
    """Runs read work off the reactor, each piece under its request's budget.

    One per set of read routes; ``pool`` (default: the reactor's thread pool)
    must be bounded.  Use: ``budget = runner.start()``, ``await
    runner.call(budget, f, ...)`` for every heavy step, ``runner.finish(budget)``
    in a ``finally``.
    """

    def __init__(self, reactor: Any, limits: QueryLimits, pool: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reactor = reactor
        self.limits = limits
        self._pool = pool
        self._clock = clock
        self._slots: defer.DeferredSemaphore | None = None
        self._active: set[QueryBudget] = set()
        self._trigger: Any = None

    def start(self) -> QueryBudget:
        """A new request's budget; its time starts now."""
        budget = QueryBudget(self.limits, self._clock)
        if not self._active:
            self._trigger = self.reactor.addSystemEventTrigger("before", "shutdown",
                                                               self._shutting_down)
        self._active.add(budget)
        return budget

    def finish(self, budget: QueryBudget) -> None:
        self._active.discard(budget)
        if not self._active and self._trigger is not None:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None

    def _shutting_down(self) -> None:
        self._trigger = None  # a fired trigger is gone
        for budget in list(self._active):
            budget.cancelled = True

    def call(self, budget: QueryBudget, f: Callable[..., Any], *args: Any,
             **kwargs: Any) -> defer.Deferred:
        """Deferred[f(*args, **kwargs)], run in the pool once a slot is free."""
        try:
            budget.check()
        except QueryError:
            return defer.fail()
        if self._slots is None:
            if self._pool is None:
                self._pool = self.reactor.getThreadPool()
            self._slots = defer.DeferredSemaphore(max(1, self._pool.max // 2))
        pool = self._pool

        def run() -> defer.Deferred:
            budget.check()
            return deferToThreadPool(self.reactor, pool, f, *args, **kwargs)

        return self._slots.run(run)


async def _at_most(read: Callable[..., Any], bounded: bool, max_points: int | None) -> list:
    """``read()`` of at most ``max_points`` points (None: any number), else
    `TooManyPoints`: a ``bounded`` read is handed the limit and stops early,
    another is checked once it returns."""
    if max_points is None:
        return await read()
    if bounded:
        return await read(max_points=max_points)
    rows = await read()
    if sum(len(r[1]) for r in rows) > max_points:
        raise TooManyPoints(max_points)
    return rows


async def read_at_most(reader: Any, solution: str, metric: str | None, start_ns: int | None,
                       end_ns: int | None, max_points: int | None) -> list:
    """``reader.read_series(...)`` of at most ``max_points`` points (None: any
    number), else `TooManyPoints`: a reader with `IBoundedReads` stops early,
    one without is checked once its read returns."""
    return await _at_most(partial(reader.read_series, solution, metric, start_ns, end_ns),
                          IBoundedReads.providedBy(reader), max_points)


async def _spent(budget: QueryBudget, read: Callable[[int], Any]) -> list:
    """``read(points left)`` counted against the budget's points."""
    left = budget.points_left()
    try:
        rows = await read(left)
    except TooManyPoints:
        budget.read(left + 1)  # raises max_query_points
        raise
    budget.read(sum(len(r[1]) for r in rows))
    return rows


async def read_series(reader: Any, budget: QueryBudget, solution: str, metric: str | None,
                      start_ns: int | None, end_ns: int | None) -> list:
    """``reader.read_series(...)`` counted against the budget's points (see
    `read_at_most`): a query over too many never holds them all where the
    reader can stop early."""
    return await _spent(budget, partial(read_at_most, reader, solution, metric, start_ns,
                                        end_ns))


async def read_series_of(reader: Any, budget: QueryBudget, solution: str, keys: list,
                         start_ns: int | None, end_ns: int | None) -> list:
    """``reader.read_series_of(...)`` (`ISeriesByKey`, bounded by contract)
    counted against the budget's points, as `read_series` is."""
    return await _spent(budget, lambda left: reader.read_series_of(
        solution, keys, start_ns, end_ns, max_points=left))
