"""The read side of a storage with retention applied: reads never return
expired points.

`RetainedReader` wraps what a read API reads from (a backend, the read side
`IStorages.backend_for` hands out) and applies the solution's cutoffs
(`tsnet.retention.Retention.cutoffs`) before and after the backend's read, so
every backend, built in or not, obeys without code of its own: a series read
starts at the cutoff, a read of every metric drops each series' points before
its own cutoff, a message read starts at the solution's cutoff, and the export
leaves out the series and message lines before them.  Everything else
(properties, meta, records, writes, upkeep) passes through untouched.

Points before the cutoff stay stored until the background removal
(`tsnet.expiry`) takes away the whole chunk or blob they are in; until then
this is what hides them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from zope.interface import alsoProvides, implementer

from tsnet.interfaces import IBoundedReads, IExportText, ISeriesByKey, ITagIndex
from tsnet.query_limits import read_at_most
from tsnet.retention import NS_PER_MS, Cutoffs, Retention, cutoff_of

#: characters of text export handed to ``write`` at once
TEXT_PAGE = 1 << 20


@implementer(IBoundedReads)
class RetainedReader:
    """``reader`` (a backend, or a family's view with ``read_series``) as reads
    see it; ``backend`` is the storage holding the solution, where metric
    retentions are read from."""

    def __init__(self, reader: Any, backend: Any, retention: Retention,
                 solutions: Callable[[], list[str]] = list) -> None:
        self._reader = reader
        self._backend = backend
        self._retention = retention
        #: the solutions of the catalog that live in ``backend`` (for the export)
        self._solutions = solutions
        # what the reader offers beside IStorage, retention applied where it
        # reads points (a tag index lists series and names: nothing to hide)
        for optional in (IExportText, ISeriesByKey, ITagIndex):
            if optional.providedBy(reader):
                alsoProvides(self, optional)

    def __getattr__(self, name: str) -> Any:
        # everything retention has nothing to hide in: the reader's own (not
        # dunders: copy and zope's adapter hooks must not see the reader's)
        if name.startswith("__") or name == "_reader":
            raise AttributeError(name)
        return getattr(self._reader, name)

    def __repr__(self) -> str:
        return f"<retained {self._reader!r}>"

    # -- series ---------------------------------------------------------------

    def read_series(self, solution: str, metric: str | None = None,
                    start_ns: int | None = None, end_ns: int | None = None,
                    max_points: int | None = None) -> defer.Deferred:
        """As `IStorage.read_series` (and `IBoundedReads`), without expired points."""
        return defer.ensureDeferred(
            self._read_series(solution, metric, start_ns, end_ns, max_points))

    async def _read_series(self, solution: str, metric: str | None, start_ns: int | None,
                           end_ns: int | None, max_points: int | None) -> list:
        cut = await self._retention.cutoffs(solution, self._backend)
        lo = (cut.series(metric) if metric is not None else cut.lowest) if cut else None
        if lo is not None and (start_ns is None or start_ns < lo):
            start_ns = lo
            if end_ns is not None and start_ns > end_ns:
                return []
        rows = await read_at_most(self._reader, solution, metric, start_ns, end_ns,
                                  max_points)
        if metric is None and cut.varies:
            rows = _drop_expired(rows, cut)
        return rows

    def read_series_of(self, solution: str, keys: list, start_ns: int | None = None,
                       end_ns: int | None = None, max_points: int | None = None
                       ) -> defer.Deferred:
        """As `ISeriesByKey.read_series_of` (provided when the reader provides
        it), without expired points: from the lowest cutoff of the keys'
        metrics, each series then from its own."""
        return defer.ensureDeferred(
            self._read_series_of(solution, keys, start_ns, end_ns, max_points))

    async def _read_series_of(self, solution: str, keys: list, start_ns: int | None,
                              end_ns: int | None, max_points: int | None) -> list:
        keys = list(keys)
        cut = await self._retention.cutoffs(solution, self._backend)
        if cut:
            cuts = [cut.series(m) for m in {k[0] for k in keys}]
            lo = None if not cuts or None in cuts else min(cuts)
            if lo is not None and (start_ns is None or start_ns < lo):
                start_ns = lo
                if end_ns is not None and start_ns > end_ns:
                    return []
        rows = await self._reader.read_series_of(solution, keys, start_ns, end_ns,
                                                 max_points=max_points)
        return _drop_expired(rows, cut) if cut.varies else rows

    # -- messages -------------------------------------------------------------

    def read_messages(self, solution: str, entity: str | None = None,
                      start_ns: int | None = None, end_ns: int | None = None,
                      type: str | None = None, limit: int | None = None) -> defer.Deferred:
        """As `IStorage.read_messages`, without messages before the cutoff."""
        return defer.ensureDeferred(
            self._read_messages(solution, entity, start_ns, end_ns, type, limit))

    async def _read_messages(self, solution: str, entity: str | None, start_ns: int | None,
                             end_ns: int | None, type: str | None, limit: int | None) -> list:
        cut = await self._retention.cutoffs(solution, self._backend)
        if cut.base is not None and (start_ns is None or start_ns < cut.base):
            start_ns = cut.base
            if end_ns is not None and start_ns >= end_ns:  # (end is exclusive)
                if limit is not None and limit < 0:
                    raise ValueError(f"negative limit {limit}")
                return []
        return await self._reader.read_messages(solution, entity, start_ns, end_ns, type,
                                                limit)

    # -- export ---------------------------------------------------------------

    def export(self, solution: str | None, emit: Callable[[dict], object]) -> defer.Deferred:
        """As `IStorage.export`, without the series and message lines that
        reads would not return (the export says nothing of them)."""
        return defer.ensureDeferred(self._export(solution, emit))

    async def _export(self, solution: str | None, emit: Callable[[dict], object]) -> None:
        retention = self._retention
        now = retention.now_ns()
        names = [solution] if solution is not None else self._solutions()
        cuts = {name: await retention.cutoffs(name, self._backend, now_ns=now)
                for name in names}
        # a solution the catalog does not know (its data outlived it) keeps
        # the server's retention
        other = Cutoffs(cutoff_of(now, retention.default_ns))
        if not other and not any(cuts.values()):
            await self._reader.export(solution, emit)
            return
        await self._reader.export(solution, _retained_emit(emit, cuts, other))

    def export_text(self, solution: str | None, write: Callable[[str], object]
                    ) -> defer.Deferred:
        """As `IExportText.export_text` (provided when the reader provides it),
        without the lines `export` leaves out.  With no retention in force it
        is the reader's own (rendered in bulk); with one, the lines go through
        `export` and are rendered one by one, in pages."""
        return defer.ensureDeferred(self._export_text(solution, write))

    async def _export_text(self, solution: str | None, write: Callable[[str], object]) -> None:
        from tsnet.export_text import line_text

        names = [solution] if solution is not None else self._solutions()
        retention = self._retention
        if retention.default_ns is None and not any(
                [await retention.cutoffs(name, self._backend) for name in names]):
            await self._reader.export_text(solution, write)
            return
        page: list[str] = []
        size = 0

        def emit(line: dict) -> None:
            nonlocal size
            text = line_text(line)
            page.append(text)
            size += len(text)
            if size >= TEXT_PAGE:
                write("".join(page))
                page.clear()
                size = 0

        await self._export(solution, emit)
        if page:
            write("".join(page))


def _drop_expired(rows: list, cut: Cutoffs) -> list:
    """Each series' points from its own cutoff on (rows sorted by time)."""
    out = []
    for row in rows:
        c = cut.series(row[0][0])
        if c is None or not row[1] or row[1][0] >= c:
            out.append(row)
            continue
        key, times, values, texts = row
        i = bisect_left(times, c)
        if i < len(times):
            out.append((key, times[i:], values[i:], texts[i:] if texts is not None else None))
    return out


def _retained_emit(emit: Callable[[dict], object], cuts: dict[str, Cutoffs],
                   other: Cutoffs) -> Callable[[dict], object]:
    """``emit`` for the lines at or after their cutoffs (whole milliseconds,
    as the lines' ``time_ms``)."""
    ms = {name: (None if c.base is None else c.base // NS_PER_MS,
                 {m: (None if v is None else v // NS_PER_MS) for m, v in c.metrics.items()})
          for name, c in cuts.items() if c}
    default = (None if other.base is None else other.base // NS_PER_MS, {})

    def keep(line: dict) -> object:
        kind = line.get("kind")
        if kind == "series" or kind == "message":
            base, metrics = ms.get(line["solution"], default)
            cut = metrics.get(line["metric"], base) if kind == "series" and metrics else base
            if cut is not None and line["time_ms"] < cut:
                return None
        return emit(line)

    return keep
