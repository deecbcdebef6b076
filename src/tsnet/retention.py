"""Retention: how long a series' points and a solution's messages are kept.

One rule, defined here once and used by the read side (`tsnet.retained`) and
the background removal (`tsnet.expiry`) alike: the retention of a series is
its metric's ``retention_days`` (ATSD's metric meta) when that is above 0,
else its solution's ``retention`` (``tsnet solution create/update
--retention``), else ``[tsnet] retention``, else none.  Messages follow the
solution's, else the server's.  Properties (state, not history), meta, and
ts-store records (bounded by their store's own block ring) are not subject to
it.

A point is expired when its time is before the *cutoff*, now minus the
retention, rounded down to a whole millisecond (so the export, which has
milliseconds, draws the line where reads do).  "Now" is the clock's (the
reactor's, a `task.Clock` in tests), never the module's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from tsnet.interfaces import IExpiringStorage
from tsnet.model import INT64_MIN

log = Logger(namespace="tsnet.retention")

NS_PER_MS = 1_000_000
DAY_NS = 86_400 * 1_000_000_000
#: the solution attribute (`SolutionRecord.attributes`) holding its retention text
ATTRIBUTE = "retention"
#: seconds a solution's metric retentions are read from its meta for again
#: (by reads; the background removal always reads them afresh)
METRIC_TTL = 5.0
_NONE = ("none", "0")
_DURATION = re.compile(r"[0-9]+(ms|[smhdwny])\Z", re.IGNORECASE)


def parse_retention(text: str) -> int | None:
    """``90d``, ``12h``, ``1w``, ``1y`` (an OpenTSDB duration: a whole number
    and one of ``ms s m h d w n y``, ``n`` 30 days, ``y`` 365) -> nanoseconds;
    ``none`` (or ``0``) -> None.  ValueError with a message saying so."""
    from tsnet.query import QueryError, parse_duration_ms  # (not for every config load)

    t = text.strip()
    if t.lower() in _NONE:
        return None
    why = "expected digits and then the unit"
    if _DURATION.match(t):  # (OpenTSDB's parser reads "1.5d" as 1d)
        try:
            return parse_duration_ms(t) * NS_PER_MS
        except QueryError as e:
            why = e.message
    raise ValueError(
        f"{text!r} is not a retention: give a whole number and a unit such as 90d, "
        f"12h or 1w (units ms, s, m, h, d, w, n = 30 days, y = 365 days), or none "
        f"({why})")


def days_ns(days: Any) -> int | None:
    """A metric's ``retention_days`` as nanoseconds; None unless it is a
    number above 0 (ATSD: 0 keeps the data for ever)."""
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0:
        return None
    return int(days * DAY_NS)


def effective_ns(metric_ns: int | None, solution_ns: int | None,
                 default_ns: int | None) -> int | None:
    """The rule: the metric's, else the solution's, else the server's."""
    if metric_ns is not None:
        return metric_ns
    return solution_ns if solution_ns is not None else default_ns


def cutoff_of(now_ns: int, retention_ns: int | None) -> int | None:
    """The first time that is kept (whole milliseconds), or None when nothing
    can be expired (no retention, or one reaching before int64 time)."""
    if retention_ns is None:
        return None
    cut = (now_ns - retention_ns) // NS_PER_MS * NS_PER_MS
    return cut if cut > INT64_MIN else None


@dataclass(frozen=True)
class Cutoffs:
    """The cutoffs of one solution at one moment: points (and messages) before
    them are expired.  ``base`` is for series whose metric sets no retention,
    and for messages; ``metrics`` holds the metrics that set their own (None:
    that metric keeps its points for ever, whatever ``base`` says)."""

    base: int | None = None
    metrics: Mapping[str, int | None] = field(default_factory=dict)

    def series(self, metric: str) -> int | None:
        """The cutoff of the series of ``metric``."""
        if metric in self.metrics:
            return self.metrics[metric]
        return self.base

    @property
    def lowest(self) -> int | None:
        """A cutoff no series of the solution keeps points before (None:
        some series keeps everything)."""
        if self.base is None or None in self.metrics.values():
            return None
        return min(self.base, *self.metrics.values())

    @property
    def varies(self) -> bool:
        """Series of different metrics have different cutoffs."""
        return bool(self.metrics)

    def __bool__(self) -> bool:
        return self.base is not None or any(c is not None for c in self.metrics.values())


NO_CUTOFFS = Cutoffs()


class Retention:
    """The retention rule of one server: ``[tsnet] retention`` (``default_ns``),
    each solution's (``solution_of(name)``, the cached catalog record), and
    each metric's ``retention_days`` (read from the solution's storage and
    kept `METRIC_TTL` seconds)."""

    def __init__(self, default_ns: int | None, clock: Any,
                 solution_of: Callable[[str], Any]) -> None:
        self.default_ns = default_ns
        #: what "now" is (``seconds()``): the reactor, or a `task.Clock` in tests
        self.clock = clock
        self._solution_of = solution_of
        #: solution -> (when read, metric -> retention ns)
        self._metrics: dict[str, tuple[float, dict[str, int]]] = {}
        self._bad: set[tuple[str, str]] = set()  # bad solution values, logged once

    def now_ns(self) -> int:
        return int(self.clock.seconds() * 1e9)

    def solution_ns(self, solution: str) -> int | None:
        """The solution's own retention (its cached catalog record's), or None."""
        rec = self._solution_of(solution)
        text = (rec.attributes or {}).get(ATTRIBUTE) if rec is not None else None
        if not text:
            return None
        try:
            return parse_retention(str(text))
        except ValueError:
            if (solution, str(text)) not in self._bad:
                self._bad.add((solution, str(text)))
                log.warn("solution {solution}: stored retention {text!r} is not a duration; "
                         "ignored", solution=solution, text=str(text))
            return None

    async def metric_ns(self, solution: str, backend: Any,
                        fresh: bool = False) -> dict[str, int]:
        """metric -> retention ns for the metrics of ``solution`` whose meta
        sets a ``retention_days`` above 0."""
        held = self._metrics.get(solution)
        if held is not None and not fresh and self.clock.seconds() - held[0] < METRIC_TTL:
            return held[1]
        at = self.clock.seconds()
        if IExpiringStorage.providedBy(backend):
            days = await backend.metric_retention(solution)
        else:  # any backend: its meta as stored
            days = {m.name: m.fields.get("retention_days")
                    for m in await backend.read_meta(solution, "metric")}
        out = {name: ns for name, ns in ((n, days_ns(v)) for n, v in days.items())
               if ns is not None}
        self._metrics[solution] = (at, out)
        return out

    async def cutoffs(self, solution: str, backend: Any, now_ns: int | None = None,
                      fresh: bool = False) -> Cutoffs:
        """The solution's cutoffs now (or at ``now_ns``); ``fresh`` reads the
        metric retentions from storage whatever the cache holds (what removal
        does: a retention made longer must never remove data)."""
        now = self.now_ns() if now_ns is None else now_ns
        metrics = await self.metric_ns(solution, backend, fresh=fresh)
        own = self.solution_ns(solution)
        base = cutoff_of(now, effective_ns(None, own, self.default_ns))
        if base is None and not metrics:
            return NO_CUTOFFS
        cuts = {m: cutoff_of(now, effective_ns(ns, own, self.default_ns))
                for m, ns in metrics.items()}
        return Cutoffs(base, {m: c for m, c in cuts.items() if c != base})

