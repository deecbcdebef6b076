"""Bounded logging for error paths a client can trigger at will.

A client repeating one bad request must not add a line (or a traceback) to the
log per request.  `LogBound` logs the first event of a kind in full, counts the
repeats for ``period`` seconds, then logs one summary line, ``N more <kind> in
the last T s``; the next event after that is logged in full again.  So a kind
costs at most two lines per period, whatever the rate.  Kinds are fixed texts
chosen by the code (never client input), so their number is bounded too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

#: seconds a kind's repeats are counted before their summary is logged
DEFAULT_PERIOD = 60.0


class _Kind:
    __slots__ = ("level", "more", "started", "timer")

    def __init__(self, started: float, level: LogLevel) -> None:
        self.started = started
        self.level = level
        self.more = 0
        self.timer: IDelayedCall | None = None


class LogBound:
    """Log-once-then-count for one logger; ``clock`` is the reactor (or a
    `twisted.internet.task.Clock` in tests)."""

    def __init__(self, log: Logger, clock: IReactorTime, period: float = DEFAULT_PERIOD,
                 ) -> None:
        self._log = log
        self._clock = clock
        self.period = period
        self._kinds: dict[str, _Kind] = {}

    def emit(self, level: LogLevel, kind: str, format: str, **fields: Any) -> bool:
        """``log.emit(level, format, **fields)`` unless ``kind`` was logged less
        than a period ago (then it is counted); True when it was logged."""
        if not self._first(kind, level):
            return False
        self._log.emit(level, format, log_kind=kind, **fields)
        return True

    def failure(self, kind: str, format: str, failure: Failure | None = None,
                **fields: Any) -> bool:
        """``log.failure`` (critical, with the traceback) bounded the same way."""
        if not self._first(kind, LogLevel.critical):
            return False
        self._log.failure(format, failure, log_kind=kind, **fields)
        return True

    def flush(self) -> None:
        """Log the pending summaries now (a stop), and forget every kind."""
        for kind in list(self._kinds):
            self._summarise(kind)

    def _first(self, kind: str, level: LogLevel) -> bool:
        now = self._clock.seconds()
        k = self._kinds.get(kind)
        if k is not None and now - k.started >= self.period:
            self._summarise(kind)
            k = None
        if k is None:
            self._kinds[kind] = _Kind(now, level)
            return True
        k.more += 1
        if k.timer is None:
            k.timer = self._clock.callLater(k.started + self.period - now, self._summarise,
                                            kind)
        return False

    def _summarise(self, kind: str) -> None:
        k = self._kinds.pop(kind, None)
        if k is None:
            return
        if k.timer is not None and k.timer.active():
            k.timer.cancel()
        if k.more:
            seconds = self._clock.seconds() - k.started
            self._log.emit(k.level, "{n} more {log_kind} in the last {seconds:.0f} s",
                           n=k.more, log_kind=kind, seconds=seconds, log_summary=True)
