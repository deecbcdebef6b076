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

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="tsnet.compaction")


class Compactor(Service):
    """Calls ``backend.compact(max_series=step)`` on every backend (a backend
    with nothing to compact answers 0)."""

    name = "compactor"

    def __init__(self, storages: Any, reactor: Any, interval: float, step: int = 16,
                 pause: float = 0.02) -> None:
        self.storages = storages
        self.reactor = reactor
        self.interval = interval
        self.step = step
        self.pause = pause
        self._call: Any = None
        self._running: defer.Deferred | None = None

    def startService(self) -> None:
        super().startService()
        if self.interval > 0:
            self._schedule(self.interval)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._running = defer.ensureDeferred(self._compact_some())
        self._running.addBoth(self._done)

    async def _compact_some(self) -> bool:
        more = False
        for name, backend in self.storages.backends.items():
            n = await backend.compact(None, max_series=self.step)
            if n:
                log.debug("compacted {n} series in {storage}", n=n, storage=name)
            more = more or n >= self.step
        return more

    def _done(self, result: Any) -> None:
        self._running = None
        if isinstance(result, bool):
            self._schedule(self.pause if result else self.interval)
        else:
            log.failure("compaction failed; trying again later", result)
            self._schedule(self.interval)

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return self._running  # let a step in progress finish before storage closes
