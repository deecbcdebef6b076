"""`tsnet.logbound.LogBound`: the first event of a kind in full, repeats counted and
summarised once a period, on a real `twisted.logger.Logger` and a
`twisted.internet.task.Clock`."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from tsnet.logbound import LogBound


def bound(period: float = 60.0) -> tuple[LogBound, Clock, list[dict]]:
    events: list[dict] = []
    clock = Clock()
    return LogBound(Logger(namespace="test", observer=events.append), clock, period), clock, \
        events


def crash() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        raise


def test_a_flood_is_one_event_and_one_summary_per_period() -> None:
    b, clock, events = bound()
    logged = []
    for i in range(1000):
        try:
            crash()
        except ZeroDivisionError:
            logged.append(b.failure("put crashes", "put {n} failed", n=i))
        if i == 499:
            clock.advance(10)
    assert logged == [True] + [False] * 999
    assert len(events) == 1
    assert events[0]["log_level"] is LogLevel.critical
    assert events[0]["log_failure"].check(ZeroDivisionError)
    assert formatEvent(events[0]) == "put 0 failed"
    clock.advance(50)  # the period ends: one summary, no traceback
    assert len(events) == 2
    assert formatEvent(events[1]) == "999 more put crashes in the last 60 s"
    assert "log_failure" not in events[1]
    assert events[1]["log_level"] is LogLevel.critical
    clock.advance(600)
    assert len(events) == 2  # nothing more to say
    assert b.emit(LogLevel.warn, "put crashes", "again") is True  # a new period
    assert formatEvent(events[2]) == "again"


def test_an_event_after_a_quiet_period_is_logged_in_full() -> None:
    b, clock, events = bound(period=10)
    assert b.emit(LogLevel.warn, "bad lines", "bad line {line!r}", line="x")
    clock.advance(11)
    assert b.emit(LogLevel.warn, "bad lines", "bad line {line!r}", line="y")
    assert [formatEvent(e) for e in events] == ["bad line 'x'", "bad line 'y'"]
    assert not clock.getDelayedCalls()  # no repeats, no timer


def test_kinds_are_counted_apart_and_flush_says_what_is_pending() -> None:
    b, clock, events = bound()
    for _ in range(3):
        b.emit(LogLevel.warn, "a", "a happened")
        b.emit(LogLevel.error, "b", "b happened")
    clock.advance(1)
    b.flush()
    assert [formatEvent(e) for e in events] == [
        "a happened", "b happened",
        "2 more a in the last 1 s", "2 more b in the last 1 s"]
    assert [e["log_level"] for e in events[2:]] == [LogLevel.warn, LogLevel.error]
    assert not clock.getDelayedCalls()
    assert b.emit(LogLevel.warn, "a", "a happened")  # forgotten: logged again
