"""Background removal of expired data (retention, `tsnet.retention`).

Every ``interval`` seconds one pass goes over every solution of every storage
that can remove (`IExpiringStorage`): with the solution's cutoffs, read afresh
(a retention made longer since must never cost data), it asks the storage to
remove the whole chunks (SQLite) or blobs (Redis) whose every point is before
them, ``step`` series at a time, then the messages before the solution's
cutoff, ``limit`` at a time.  Between two steps it waits ``pause`` seconds,
so writes get the storage in between, as compaction does: a step holds the
writer for a few milliseconds, and ingest never waits for a whole pass.

What is left of a partly expired chunk stays stored until the rest of it
expires; reads leave it out meanwhile (`tsnet.retained`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from tsnet.interfaces import IExpiringStorage
from tsnet.periodic import Periodic

log = Logger(namespace="tsnet.expiry")

#: series one step looks at, and messages one step removes at most
STEP_SERIES = 256
STEP_MESSAGES = 4096


class Expirer(Periodic):
    """Runs `run_once` every ``interval`` seconds (0: never) on ``reactor``."""

    name = "expirer"
    log = log
    failed = "removing expired data failed; trying again later"

    def __init__(self, storages: Any, reactor: Any, interval: float,
                 step: int = STEP_SERIES, limit: int = STEP_MESSAGES,
                 pause: float = 0.02) -> None:
        super().__init__(reactor, interval)
        self.storages = storages
        self.step = step
        self.limit = limit
        self.pause = pause

    async def run(self) -> None:
        await self.run_once()

    async def run_once(self) -> dict[str, int]:
        """One pass over everything; returns what it removed: ``chunks``
        (chunks or blobs of series) and ``messages``."""
        storages = self.storages
        retention = storages.retention
        await storages.refresh()  # the solutions' retentions as they are now
        done = {"chunks": 0, "messages": 0}
        for name, backend in list(storages.backends.items()):
            if not IExpiringStorage.providedBy(backend):
                continue
            removed = {"chunks": 0, "messages": 0}
            for solution in storages.solutions_in(name):
                if not self._going():
                    return done
                cuts = await retention.cutoffs(solution, backend, fresh=True)
                if not cuts:
                    continue
                removed["chunks"] += await self._steps(
                    backend.expire_series, solution, cuts, self.step)
                if cuts.base is not None:
                    removed["messages"] += await self._steps(
                        backend.expire_messages, solution, cuts.base, self.limit)
            if any(removed.values()):
                log.info("retention: removed {chunks} expired chunks and {messages} messages "
                         "from storage {storage}", storage=name, **removed)
            for k, v in removed.items():
                done[k] += v
        return done

    def _going(self) -> bool:
        """Not stopped (a pass driven by hand, outside a running service, goes on)."""
        return self.running or self._running is None

    async def _steps(self, step: Callable[..., Any], solution: str, cut: Any,
                     size: int) -> int:
        """``step(solution, cut, cursor, size)`` until its cursor says it is
        done, pausing between steps."""
        total, cursor = 0, None
        while True:
            removed, cursor = await step(solution, cut, cursor, size)
            total += removed
            if cursor is None or not self._going():
                return total
            if self.pause > 0:
                await task.deferLater(self.reactor, self.pause, lambda: None)
