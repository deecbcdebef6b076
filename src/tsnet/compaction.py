"""Background compaction of sample chunks, so reads stay fast on long-lived data.

Every flush adds one small chunk per series written.  Every ``interval`` seconds
each backend that can compact is asked to merge up to ``step`` series; while a
call finds that much work it goes on after ``pause`` seconds, one step at a
time, so writes get the storage between steps (carbon's writer likewise trades
write latency against background work in small slices).  A step holds the
storage for a few milliseconds: acked writers wait at most that long.

A wide load (100,000 series, a point each now and then) makes a small chunk
per series at every fold of the pending log, far more than 16 series a step
can merge.  So while steps come back full and quick, a backend's step doubles
(up to `STEP_MAX` series), and it halves when one takes over twice
`STEP_SECONDS`: the backlog is worked off in slices of about that length.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from tsnet.periodic import Periodic

log = Logger(namespace="tsnet.compaction")

#: the longest a step should hold a storage, and the most series it merges
STEP_SECONDS = 0.02
STEP_MAX = 4096


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
        #: each backend's current step (grown while there is a backlog)
        self.steps: dict[str, int] = {}

    async def run(self) -> float | None:
        """A step; while steps find work, the next comes after ``pause``."""
        return self.pause if await self._compact_some() else None

    async def _compact_some(self) -> bool:
        more = False
        for name, backend in self.storages.backends.items():
            step = self.steps.get(name, self.step)
            started = self.reactor.seconds()
            n = await backend.compact(None, max_series=step)
            took = self.reactor.seconds() - started
            if n:
                log.debug("compacted {n} series in {storage}", n=n, storage=name)
            full = n >= step
            if not full:  # caught up
                step = self.step
            elif took > 2 * STEP_SECONDS:
                step = max(self.step, step // 2)
            elif took < STEP_SECONDS / 2:
                step = min(STEP_MAX, step * 2)
            self.steps[name] = step
            more = more or full
        return more
