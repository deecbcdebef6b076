"""A job the server runs in the background, again and again: compaction,
retention's removal.

Each run is scheduled on the reactor (a `task.Clock` in tests) once the one
before has ended, so runs never overlap however long one takes; the stop
waits for a run under way, so storage closes only after it.  A run that
fails is logged and the job goes on at its next interval.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure


class Periodic(Service):
    """Calls `run` every ``interval`` seconds (0: never).  `run` returns the
    delay before the next run, or None for ``interval``."""

    #: the logger and the line of a failed run (a subclass's own)
    log = Logger(namespace="tsnet.periodic")
    failed = "background job failed; trying again later"

    def __init__(self, reactor: Any, interval: float) -> None:
        self.reactor = reactor
        self.interval = interval
        self._call: Any = None
        self._running: defer.Deferred | None = None

    async def run(self) -> float | None:
        raise NotImplementedError

    def startService(self) -> None:
        super().startService()
        if self.interval > 0:
            self._schedule(self.interval)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._running = defer.ensureDeferred(self.run())
        self._running.addBoth(self._done)

    def _done(self, result: Any) -> None:
        self._running = None
        if isinstance(result, Failure):
            self.log.failure(self.failed, result)
            result = None
        self._schedule(self.interval if result is None else result)

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return self._running  # let a run in progress finish before storage closes
