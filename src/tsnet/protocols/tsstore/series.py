"""A store's numeric fields as series, so OpenTSDB's ``/api/query`` (and
Grafana on it) can draw a store.

Every numeric top-level field ``F`` of a json or schema record at time ``T`` is
a point of metric ``<store>.F`` at ``T``, with no tags (schema records by
their field names).  Nothing is stored twice: `StoreSeries` reads the records
when a query asks, bounded like every listing (`reads.MAX_SCAN` records), and
decodes them off the reactor when there are many.  Booleans, strings and
nested objects are not series.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from tsnet.plugin import IBoundedReads, Record, SeriesKey, SolutionRecord, TooManyPoints
from tsnet.protocols.tsstore.reads import MAX_SCAN
from tsnet.protocols.tsstore.schema import expand_value
from tsnet.protocols.tsstore.stores import ATTRIBUTE

#: records decoded on the reactor; more go to a thread
INLINE_RECORDS = 2_000


def _fields_of(attrs: dict) -> list[dict] | None:
    schema = attrs.get("schema") or {}
    current = schema.get("current_version")
    if not current:
        return None
    return schema["schemas"][str(current)]["fields"]


def columns(store: str, data_type: str, fields: list[dict] | None,
            records: Iterable[Record], metric: str | None = None) -> dict[str, tuple]:
    """metric -> (times, values) from the records, in time order."""
    prefix = store + "."
    want = metric[len(prefix):] if metric is not None and metric.startswith(prefix) else None
    if metric is not None and want is None:
        return {}
    out: dict[str, tuple[list[int], list[Any]]] = {}
    for r in records:
        if data_type == "schema":
            value = expand_value(fields, bytes(r.data))
        else:
            try:
                value = json.loads(bytes(r.data))
            except ValueError:
                continue
        if not isinstance(value, dict):
            continue
        items = [(want, value[want])] if want is not None and want in value else (
            value.items() if want is None else ())
        for name, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            col = out.get(name)
            if col is None:
                col = out[name] = ([], [])
            col[0].append(r.time_ns)
            col[1].append(v)
    return {prefix + name: col for name, col in out.items()}


@implementer(IBoundedReads)
class StoreSeries:
    """The series reader of a store: its backend's own series, then the
    records' numeric fields (a store's records are bounded by its ring, so
    they count against ``max_points`` once read)."""

    def __init__(self, backend: Any, rec: SolutionRecord, reactor: Any) -> None:
        self.backend = backend
        self.store = rec.name
        attrs = rec.attributes[ATTRIBUTE]
        self.data_type = attrs["type"]
        self.fields = _fields_of(attrs) if self.data_type == "schema" else None
        self.reactor = reactor

    async def _columns(self, metric: str | None, lo: int | None, hi: int | None) -> dict:
        recs = await self.backend.read_records(self.store, lo, hi, MAX_SCAN)
        if len(recs) <= INLINE_RECORDS:
            return columns(self.store, self.data_type, self.fields, recs, metric)
        return await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), columns,
                                       self.store, self.data_type, self.fields, recs, metric)

    async def list_series(self, solution: str, metric: str | None = None) -> list[SeriesKey]:
        own = await self.backend.list_series(solution, metric)
        derived = await self._columns(metric, None, None)
        return own + [(m, None, ()) for m in sorted(derived) if (m, None, ()) not in own]

    async def read_series(self, solution: str, metric: str | None = None,
                          start_ns: int | None = None, end_ns: int | None = None,
                          max_points: int | None = None) -> list:
        if max_points is None or not IBoundedReads.providedBy(self.backend):
            own = await self.backend.read_series(solution, metric, start_ns, end_ns)
        else:
            own = await self.backend.read_series(solution, metric, start_ns, end_ns,
                                                 max_points=max_points)
        derived = await self._columns(metric, start_ns, end_ns)
        if max_points is not None and (sum(len(r[1]) for r in own)
                                       + sum(len(c[0]) for c in derived.values())
                                       > max_points):
            raise TooManyPoints(max_points)
        return own + [((m, None, ()), times, values, None)
                      for m, (times, values) in sorted(derived.items())]


def store_series_view(reactor: Any) -> Any:
    """The `IStorages.add_series_view` callable of the tsstore family."""
    def view(rec: SolutionRecord, backend: Any) -> StoreSeries | None:
        attrs = rec.attributes.get(ATTRIBUTE)
        if not attrs or attrs.get("type") not in ("json", "schema"):
            return None
        return StoreSeries(backend, rec, reactor)
    return view
