"""Background compaction of sample chunks, so reads stay fast on long-lived data.

Every flush adds one small chunk per series written.  Every ``interval`` seconds
each backend that can compact is asked to merge up to ``step`` series; while a
call finds that much work it goes on after ``pause`` seconds, one step at a
time, so writes get the storage between steps (carbon's writer likewise trades
write latency against background work in small slices).  A step holds the
storage for a few milliseconds: acked writers wait at most that long.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from tsnet.periodic import Periodic

log = Logger(namespace="tsnet.compaction")


class Compactor(Periodic):
    """Calls ``backend.compact(max_series=step)`` on every backend (a backend
    with nothing to compact answers 0)."""

    name = "compactor"
    log = log
    failed = "compaction failed; trying again later"

    def __init__(self, storages: Any, reactor: Any, interval: float, step: int = 16,
                 pause: float = 0.02) -> None:
        super().__init__(reactor, interval)
        self.storages = storages
        self.step = step
        self.pause = pause

    async def run(self) -> float | None:
        """A step; while steps find work, the next comes after ``pause``."""
        return self.pause if await self._compact_some() else None

    async def _compact_some(self) -> bool:
        more = False
        for name, backend in self.storages.backends.items():
            n = await backend.compact(None, max_series=self.step)
            if n:
                log.debug("compacted {n} series in {storage}", n=n, storage=name)
            more = more or n >= self.step
        return more
