"""The ``memory`` storage backend: every item and the catalog in process memory.

NOT DURABLE.  Nothing is written to disk: a restart, a crash or ``kill -9``
loses every sample, solution and token.  It is a demo and test backend:

- it shows, in one file, that a third party can add a storage backend with
  nothing but ``tsnet.plugin`` (it passes the same conformance suite as SQLite);
- it serves throwaway servers (demos, tests, benchmarks of the protocol side)
  that should leave no files behind.

The data lives in a `MemoryStore` owned by the `MemoryBackend` plugin instance,
one per ``[storage:NAME]`` section, so a second `MemoryBackend.makeStorage` for
the same name (a close and reopen) sees what the first one wrote, as reopening a
file would; the store lives as long as the plugin instance, i.e. the process.
Servers of one process whose configs name the same section share it.

Everything runs synchronously on the caller's thread (the reactor's) and is
returned as an already-fired Deferred.  A write validates the whole batch before
it changes anything, so a batch commits whole or not at all.  The data-model
rules (tag and meta merging, ``$entity_tags``, implicit metric and entity
records) and the export lines come from ``tsnet.plugin``, never re-implemented.
"""

from __future__ import annotations

import copy
import hmac
import itertools
import json
import operator
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tsnet.plugin import (
    INT64_MAX,
    INT64_MIN,
    META_KINDS,
    Batch,
    Conflict,
    Credential,
    ICatalog,
    IStorage,
    Message,
    Meta,
    NotFound,
    Property,
    Record,
    SeriesKey,
    SolutionRecord,
    StorageBackend,
    StorageConfig,
    TokenRecord,
    Value,
    WriteBatch,
    check_meta_kind,
    check_tags,
    entity_tags_meta,
    implicit_entities,
    implicit_meta_of_series,
    merge_meta_fields,
    merge_tags,
    message_line,
    meta_line,
    property_line,
    record_line,
    series_lines,
    series_sort_key,
)

_NONE = type(None)
_EXACT_VALUES = frozenset((int, float, _NONE))
_TEXT_TYPES = frozenset((str, _NONE))

#: A series' samples in read order: times, values, texts (None when no text).
Samples = tuple[list[int], list[Value], list[str | None] | None]


def _key_text(d: dict[str, str]) -> str:
    """A property key as canonical JSON: its identity and its export order (the
    order SQLite's export has, so both backends export the same bytes)."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


# -- validation (phase one of a write: may raise, changes nothing) -----------


def _check_int64(ints: Sequence[int], what: str) -> None:
    """Refuse what SQLite could not store either (its columns are int64)."""
    if ints and (min(ints) < INT64_MIN or max(ints) > INT64_MAX):
        raise ValueError(f"{what} outside int64")


def _times(times: Sequence[int]) -> None:
    kinds = set(map(type, times))
    if kinds - {int}:
        bad = next(iter(kinds - {int}))
        raise TypeError(f"sample time must be int nanoseconds, not {bad.__name__}")
    _check_int64(times, "sample time")


def _values(values: Sequence[Value]) -> Sequence[Value]:
    """``values`` itself when every value has an exact type (the hot case), else
    a normalised copy (bool and int subclasses to int, float subclasses to float)."""
    kinds = set(map(type, values))
    if kinds <= _EXACT_VALUES:
        if kinds == {int}:
            _check_int64(values, "integer value")  # type: ignore[arg-type]
        elif int in kinds:
            _check_int64([v for v in values if v.__class__ is int], "integer value")
        return values
    out: list[Value] = []
    for v in values:
        if v is None or v.__class__ in (int, float):
            out.append(v)
        elif isinstance(v, float):
            out.append(float(v))
        elif isinstance(v, int):
            out.append(int(v))
        else:
            raise TypeError(f"sample value must be int, float or None, not {type(v).__name__}")
    _check_int64([v for v in out if v.__class__ is int], "integer value")
    return out


def _texts(texts: Sequence[str | None] | None, n: int) -> None:
    if texts is None:
        return
    if len(texts) != n:
        raise ValueError("times, values and texts differ in length")
    if set(map(type, texts)) - _TEXT_TYPES:
        raise TypeError("sample text must be str or None")


def _canonical(key: SeriesKey) -> SeriesKey:
    metric, entity, tags = key
    if not isinstance(metric, str) or not (entity is None or isinstance(entity, str)):
        raise TypeError(f"bad series key {key!r}")
    canon = tuple(sorted(tuple(p) for p in tags))
    for p in canon:
        if len(p) != 2 or not isinstance(p[0], str) or not isinstance(p[1], str):
            raise TypeError(f"bad tag {p!r} in series key {key!r}")
    return (metric, entity, canon)


def _int_time(t: Any, what: str) -> int:
    if t.__class__ is not int:
        raise TypeError(f"{what} time must be int nanoseconds")
    _check_int64((t,), f"{what} time")
    return t


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be str")
    return v


def _opt_str(v: Any, what: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{what} must be str or None")
    return v


# -- the store ---------------------------------------------------------------


class _Series:
    """One series: per time the last value given (a None value does not erase
    one) and the last text given (a None text does not erase one): ATSD §4.1,
    what `IStorage.read_series` returns merged."""

    __slots__ = ("_order", "texts", "values")

    def __init__(self) -> None:
        self.values: dict[int, Value] = {}
        self.texts: dict[int, str] = {}
        self._order: list[int] | None = []  # sorted times; None: sort on next read

    def add(self, times: Sequence[int], values: Sequence[Value],
            texts: Sequence[str | None] | None) -> None:
        vals = self.values
        before = len(vals)
        if None in values:
            for t, v in zip(times, values, strict=True):
                if v is not None or t not in vals:
                    vals[t] = v
        else:
            vals.update(zip(times, values, strict=True))
        if texts is not None:
            self.texts.update((t, x) for t, x in zip(times, texts, strict=True)
                              if x is not None)
        if len(vals) == before:
            return  # no new time: the order holds
        order = self._order
        if (order is not None and len(vals) - before == len(times)
                and (not order or times[0] > order[-1])
                and all(map(operator.lt, times, itertools.islice(times, 1, None)))):
            order.extend(times)  # the steady case: new times after the old ones
        else:
            self._order = None

    def order(self) -> list[int]:
        if self._order is None:
            self._order = sorted(self.values)
        return self._order

    def samples(self, start_ns: int | None = None, end_ns: int | None = None) -> Samples:
        order = self.order()
        lo = 0 if start_ns is None else bisect_left(order, start_ns)
        hi = len(order) if end_ns is None else bisect_right(order, end_ns)
        times = order[lo:hi]
        values = list(map(self.values.__getitem__, times))
        texts: list[str | None] | None = None
        if self.texts:
            texts = list(map(self.texts.get, times))
            if texts.count(None) == len(texts):
                texts = None
        return times, values, texts


class _Data:
    """One solution's items."""

    __slots__ = ("messages", "meta", "properties", "records", "series")

    def __init__(self) -> None:
        #: metric -> series key -> samples
        self.series: dict[str, dict[SeriesKey, _Series]] = {}
        #: (entity, type, key as JSON) -> Property with merged tags
        self.properties: dict[tuple[str, str, str], Property] = {}
        #: in export order: by time, then as written
        self.messages: list[Message] = []
        #: (kind, name) -> merged fields
        self.meta: dict[tuple[str, str], dict] = {}
        #: in export order: by time, then as written
        self.records: list[Record] = []

    def __bool__(self) -> bool:
        return bool(self.series or self.properties or self.messages or self.meta
                    or self.records)

    def has(self, key: SeriesKey) -> bool:
        return key in self.series.get(key[0], ())


class _Plan:
    """What one solution's part of a batch will do, computed (and checked)
    before anything changes: sample columns to add, series to create, and the
    new state of every property and meta record it touches."""

    __slots__ = ("data", "messages", "meta", "new_series", "properties", "reclaim_ns",
                 "records", "samples")

    def __init__(self, data: _Data | None) -> None:
        self.data = data
        self.samples: list[tuple[SeriesKey, Sequence[int], Sequence[Value],
                                 Sequence[str | None] | None]] = []
        self.new_series: set[SeriesKey] = set()
        self.properties: dict[tuple[str, str, str], Property] = {}
        self.meta: dict[tuple[str, str], dict] = {}
        self.messages: list[Message] = []
        self.records: list[Record] = []
        self.reclaim_ns: int | None = None

    def stored_meta(self, kind: str, name: str) -> dict | None:
        k = (kind, name)
        if k in self.meta:
            return self.meta[k]
        if self.data is not None and k in self.data.meta:
            return self.data.meta[k]
        return None

    def upsert_meta(self, kind: str, name: str, fields: Any) -> None:
        check_meta_kind(kind)
        if not isinstance(name, str):
            raise TypeError("meta name must be str")
        if not isinstance(fields, dict):
            raise TypeError("meta fields must be a dict")
        if fields.get("tags") not in (None, ""):
            check_tags(fields["tags"], f"{kind} {name!r} tags", blanks=True)
        new = copy.deepcopy(fields)
        self.meta[(kind, name)] = merge_meta_fields(self.stored_meta(kind, name) or {}, new)

    def register(self, kind: str, name: str) -> None:
        """An implicit metric or entity record: created empty unless it exists."""
        if self.stored_meta(kind, name) is None:
            self.meta[(kind, name)] = {}

    def is_empty(self) -> bool:
        return not (self.samples or self.properties or self.meta or self.messages
                    or self.records or self.reclaim_ns is not None)


class MemoryStore:
    """The synchronous store behind `MemoryStorage`: the data of every solution
    and the catalog of one ``[storage:NAME]`` section.  Not thread-safe: the
    reactor thread is its only caller."""

    def __init__(self) -> None:
        self.data: dict[str, _Data] = {}
        self.solutions: dict[str, SolutionRecord] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.credential_owner: dict[str, str] = {}  # credential id -> token id
        self.hash_owner: dict[str, str] = {}  # secret hash -> credential id
        self.generation = 0

    # -- writing -------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Commit the whole batch or nothing: every check is in `_plan`, and
        `_apply` only assigns what the plans computed."""
        plans = {solution: self._plan(solution, b) for solution, b in batch.by_solution.items()}
        for solution, plan in plans.items():
            if not plan.is_empty():
                self._apply(solution, plan)

    def _plan(self, solution: str, b: Batch) -> _Plan:
        if not isinstance(solution, str):
            raise TypeError("solution name must be str")
        plan = _Plan(self.data.get(solution))
        self._plan_samples(plan, b)
        for key in sorted(plan.new_series, key=series_sort_key):
            for kind, name in implicit_meta_of_series(key):
                plan.register(kind, name)
        for p in b.properties:
            self._plan_property(plan, p)
        for m in b.messages:
            plan.messages.append(Message(
                _str(m.entity, "message entity"),
                _int_time(m.time_ns, "message"),
                _opt_str(m.message, "message text") or "",
                _opt_str(m.type, "message type"),
                _opt_str(m.source, "message source"),
                _opt_str(m.severity, "message severity"),
                check_tags(m.tags, "message tags"),
            ))
        for meta in b.meta:
            plan.upsert_meta(meta.kind, meta.name, meta.fields)
        for r in b.records:
            if not isinstance(r.data, (bytes, bytearray, memoryview, str)):
                raise TypeError("record data must be bytes or str")
            data = r.data.encode("utf-8") if isinstance(r.data, str) else bytes(r.data)
            if type(r.block) is not int or not 0 <= r.block < 2**32:
                raise ValueError(f"record block {r.block!r} is not a uint32")
            plan.records.append(Record(_int_time(r.time_ns, "record"), data,
                                       _str(r.data_type, "record data_type"), r.block))
        if b.reclaim_ns is not None:
            plan.reclaim_ns = _int_time(b.reclaim_ns, "reclaim")
        for entity in sorted(implicit_entities(b)):
            plan.register("entity", entity)
        return plan

    def _plan_samples(self, plan: _Plan, b: Batch) -> None:
        samples = b.samples
        data = plan.data
        canon: dict[SeriesKey, SeriesKey] = {}

        def canonical(key: SeriesKey) -> SeriesKey:
            c = canon.get(key)
            if c is None:
                c = canon[key] = _canonical(key)
                if data is None or not data.has(c):
                    plan.new_series.add(c)
            return c

        for key, col in samples.columns.items():
            n = len(col.times)
            if not n:
                continue  # an empty column makes no series
            if len(col.values) != n:
                raise ValueError("times, values and texts differ in length")
            _times(col.times)
            values = _values(col.values)
            _texts(col.texts, n)
            plan.samples.append((canonical(key), col.times, values, col.texts))
        if samples.keys:
            # rows: one point per entry, after the columns (what `columnar` does)
            if not len(samples.keys) == len(samples.times) == len(samples.values):
                raise ValueError("sample rows differ in length")
            _times(samples.times)
            values = _values(samples.values)
            rows: dict[SeriesKey, tuple[list[int], list[Value]]] = {}
            for key, t, v in zip(samples.keys, samples.times, values, strict=True):
                c = canonical(key)
                cols = rows.get(c)
                if cols is None:
                    cols = rows[c] = ([], [])
                cols[0].append(t)
                cols[1].append(v)
            plan.samples.extend((c, ts, vs, None) for c, (ts, vs) in rows.items())

    def _plan_property(self, plan: _Plan, p: Property) -> None:
        meta = entity_tags_meta(p)
        if meta is not None:
            plan.upsert_meta(meta.kind, meta.name, meta.fields)
            return
        _str(p.entity, "property entity")
        _str(p.type, "property type")
        key = check_tags(p.key, "property key")
        tags = check_tags(p.tags, "property tags", blanks=True)
        ident = (p.entity, p.type, _key_text(key))
        stored = plan.properties.get(ident)
        if stored is None and plan.data is not None:
            stored = plan.data.properties.get(ident)
        merged = merge_tags(stored.tags if stored is not None else {}, tags)
        plan.properties[ident] = Property(p.entity, p.type, key, merged,
                                          _int_time(p.time_ns, "property"))

    def _apply(self, solution: str, plan: _Plan) -> None:
        """Plain assignments of checked values: nothing here can fail halfway."""
        data = self.data.get(solution)
        if data is None:
            data = self.data[solution] = _Data()
        for key, times, values, texts in plan.samples:
            by_key = data.series.setdefault(key[0], {})
            series = by_key.get(key)
            if series is None:
                series = by_key[key] = _Series()
            series.add(times, values, texts)
        data.properties.update(plan.properties)
        data.meta.update(plan.meta)
        for m in plan.messages:
            insort(data.messages, m, key=_time_of)
        for r in plan.records:
            insort(data.records, r, key=_time_of)
        if plan.reclaim_ns is not None:  # after the batch's own records (IStorage)
            del data.records[:bisect_right(data.records, plan.reclaim_ns, key=_time_of)]

    # -- reading -------------------------------------------------------------

    def _series_of(self, solution: str, metric: str | None) -> list[tuple[SeriesKey, _Series]]:
        data = self.data.get(solution)
        if data is None:
            return []
        if metric is not None:
            items = list(data.series.get(metric, {}).items())
        else:
            items = [kv for by_key in data.series.values() for kv in by_key.items()]
        items.sort(key=lambda kv: series_sort_key(kv[0]))
        return items

    def read_series(self, solution: str, metric: str | None, start_ns: int | None,
                    end_ns: int | None) -> list[tuple[SeriesKey, list[int], list[Value],
                                                      list[str | None] | None]]:
        out = []
        for key, series in self._series_of(solution, metric):
            times, values, texts = series.samples(start_ns, end_ns)
            if times:
                out.append((key, times, values, texts))
        return out

    def list_series(self, solution: str, metric: str | None) -> list[SeriesKey]:
        return [key for key, _ in self._series_of(solution, metric)]

    def count_points(self, solution: str | None) -> int:
        datas = self.data.values() if solution is None else [self.data.get(solution)]
        return sum(len(s.values) for d in datas if d is not None
                   for by_key in d.series.values() for s in by_key.values())

    def read_properties(self, solution: str, entity: str | None,
                        type: str | None) -> list[Property]:
        """Copies (the caller owns them), in the order of their identities:
        entity, type, key JSON, as SQLite's primary key orders them."""
        data = self.data.get(solution)
        if data is None:
            return []
        out = []
        for ident in sorted(data.properties):
            if (entity is None or ident[0] == entity) and (type is None or ident[1] == type):
                p = data.properties[ident]
                out.append(Property(p.entity, p.type, dict(sorted(p.key.items())),
                                    dict(p.tags), p.time_ns))
        return out

    def read_messages(self, solution: str, entity: str | None, start_ns: int | None,
                      end_ns: int | None, type: str | None,
                      limit: int | None) -> list[Message]:
        """Copies of the first ``limit`` matches; the list is kept in time then
        write order, so the time range is two bisections (the end exclusive)."""
        if limit is not None and limit < 0:
            raise ValueError(f"negative limit {limit}")
        data = self.data.get(solution)
        if data is None or limit == 0:
            return []
        msgs = data.messages
        lo = 0 if start_ns is None else bisect_left(msgs, start_ns, key=_time_of)
        hi = len(msgs) if end_ns is None else bisect_left(msgs, end_ns, lo=lo, key=_time_of)
        found = (m for m in itertools.islice(msgs, lo, hi)
                 if (entity is None or m.entity == entity) and (type is None or m.type == type))
        return [Message(m.entity, m.time_ns, m.message, m.type, m.source, m.severity,
                        dict(m.tags)) for m in itertools.islice(found, limit)]

    def read_meta(self, solution: str, kind: str, name: str | None) -> list[Meta]:
        """Copies of one kind's records by name, fields as merged (no defaults)."""
        check_meta_kind(kind)
        data = self.data.get(solution)
        if data is None:
            return []
        if name is not None:
            names = [name] if (kind, name) in data.meta else []
        else:
            names = sorted(n for k, n in data.meta if k == kind)
        return [Meta(kind, n, copy.deepcopy(data.meta[(kind, n)])) for n in names]

    def read_records(self, solution: str, start_ns: int | None, end_ns: int | None,
                     limit: int | None, descending: bool,
                     include_deleted: bool) -> list[Record]:
        """Copies of the records in the range (both ends inclusive), the first
        ``limit`` of time order (newest first when ``descending``)."""
        if limit is not None and limit < 0:
            raise ValueError(f"negative limit {limit}")
        data = self.data.get(solution)
        if data is None:
            return []
        recs = data.records
        lo = 0 if start_ns is None else bisect_left(recs, start_ns, key=_time_of)
        hi = len(recs) if end_ns is None else bisect_right(recs, end_ns, lo=lo, key=_time_of)
        span = recs[lo:hi]
        if descending:
            span.reverse()
        found = (r for r in span if include_deleted or not r.deleted)
        return [Record(r.time_ns, r.data, r.data_type, r.block, r.deleted)
                for r in itertools.islice(found, limit)]

    def delete_record(self, solution: str, time_ns: int) -> bool:
        data = self.data.get(solution)
        found = False
        if data is not None:
            recs = data.records
            for r in recs[bisect_left(recs, time_ns, key=_time_of):
                          bisect_right(recs, time_ns, key=_time_of)]:
                found = found or not r.deleted
                r.deleted = True
        return found

    def solution_has_data(self, solution: str) -> bool:
        return bool(self.data.get(solution))

    def delete_solution_data(self, solution: str) -> None:
        self.data.pop(solution, None)

    def export(self, solution: str | None, emit: Callable[[dict], object]) -> None:
        """Emit every line as it is built (never the whole export in a list), in
        the suite's order: solutions by name; in each, series, properties,
        messages, metrics, entities, records.  Nothing else runs meanwhile, so the
        export is one consistent snapshot (``emit`` must not write here)."""
        names = [solution] if solution is not None else sorted(self.data)
        for name in names:
            data = self.data.get(name)
            if data:
                for line in self._lines(name, data):
                    emit(line)

    def _lines(self, solution: str, data: _Data) -> Iterator[dict]:
        for key, series in self._series_of(solution, None):
            yield from series_lines(solution, key, *series.samples())
        for ident in sorted(data.properties):
            yield property_line(solution, data.properties[ident])
        for m in data.messages:
            yield message_line(solution, m)
        for kind in META_KINDS:
            for name in sorted(n for k, n in data.meta if k == kind):
                yield meta_line(solution, Meta(kind, name, data.meta[(kind, name)]))
        for r in data.records:
            if not r.deleted:
                yield record_line(solution, r)

    # -- catalog -------------------------------------------------------------

    def _changed(self) -> None:
        self.generation += 1

    def create_solution(self, solution: SolutionRecord) -> SolutionRecord:
        if solution.name in self.solutions:
            raise Conflict(f"solution {solution.name!r} exists")
        rec = SolutionRecord(solution.name, solution.description, solution.storage,
                             solution.created_ns or time.time_ns(),
                             copy.deepcopy(solution.attributes))
        self.solutions[rec.name] = rec
        self._changed()
        return copy.deepcopy(rec)

    def update_solution(self, solution: SolutionRecord) -> None:
        rec = self.solutions.get(solution.name)
        if rec is None:
            raise NotFound(f"no solution {solution.name!r}")
        rec.description = solution.description
        rec.attributes = copy.deepcopy(solution.attributes)
        self._changed()

    def get_solution(self, name: str) -> SolutionRecord | None:
        rec = self.solutions.get(name)
        return copy.deepcopy(rec) if rec is not None else None

    def list_solutions(self) -> list[SolutionRecord]:
        return [copy.deepcopy(self.solutions[n]) for n in sorted(self.solutions)]

    def delete_solution(self, name: str) -> None:
        """The solution and its tokens (not its data); NotFound if absent."""
        if self.solutions.pop(name, None) is None:
            raise NotFound(f"no solution {name!r}")
        for tid in [t.id for t in self.tokens.values() if t.solution == name]:
            self._drop_token(tid)
        self._changed()

    def _drop_token(self, token_id: str) -> None:
        old = self.tokens.pop(token_id, None)
        if old is not None:
            for c in old.credentials:
                self.credential_owner.pop(c.id, None)
                self.hash_owner.pop(c.secret_hash, None)

    def save_token(self, token: TokenRecord) -> None:
        """Insert or replace; NotFound without its solution, Conflict when a
        credential id or secret hash is another token's (or repeats in this one)."""
        if token.solution not in self.solutions:
            raise NotFound(f"no solution {token.solution!r}")
        ids: set[str] = set()
        hashes: set[str] = set()
        for c in token.credentials:
            if c.id in ids or c.secret_hash in hashes:
                raise Conflict(f"token {token.id!r} repeats a credential")
            ids.add(c.id)
            hashes.add(c.secret_hash)
            owner = self.credential_owner.get(c.id)
            hash_cred = self.hash_owner.get(c.secret_hash)
            if (owner is not None and owner != token.id) or (
                    hash_cred is not None and self.credential_owner[hash_cred] != token.id):
                raise Conflict(f"credential of token {token.id!r} exists")
        creds = sorted((Credential(c.id, frozenset(c.scopes), c.secret_hash)
                        for c in token.credentials), key=lambda c: c.id)
        rec = TokenRecord(token.id, token.solution, creds, token.description,
                          token.expires_ns, dict(token.tags), bool(token.revoked),
                          token.created_ns or time.time_ns())
        self._drop_token(token.id)
        self.tokens[rec.id] = rec
        for c in creds:
            self.credential_owner[c.id] = rec.id
            self.hash_owner[c.secret_hash] = c.id
        self._changed()

    def get_token(self, token_id: str) -> TokenRecord | None:
        rec = self.tokens.get(token_id)
        return copy.deepcopy(rec) if rec is not None else None

    def list_tokens(self, solution: str) -> list[TokenRecord]:
        recs = [t for t in self.tokens.values() if t.solution == solution]
        recs.sort(key=lambda t: (t.created_ns, t.id))
        return copy.deepcopy(recs)

    def find_credential(self, credential_id: str | None, secret_hash: str) -> TokenRecord | None:
        """By credential id when given, else by hash; the stored hash is compared
        with `hmac.compare_digest`, so a near miss takes as long as a far one."""
        cid = credential_id if credential_id is not None else self.hash_owner.get(secret_hash)
        token_id = self.credential_owner.get(cid) if cid is not None else None
        if token_id is None:
            return None
        cred = self.tokens[token_id].credential(cid)
        if cred is None or not hmac.compare_digest(cred.secret_hash.encode("utf-8"),
                                                   secret_hash.encode("utf-8")):
            return None
        return self.get_token(token_id)


def _time_of(item: Message | Record) -> int:
    return item.time_ns


@implementer(IStorage, ICatalog)
class MemoryStorage:
    """`IStorage` and `ICatalog` over a `MemoryStore`: each call runs at once and
    returns a fired Deferred (failed after `close`, or when the call raises)."""

    def __init__(self, name: str, store: MemoryStore) -> None:
        self.name = name
        self._store = store
        self._open = False

    def _call(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        if not self._open:
            return defer.fail(RuntimeError(f"storage {self.name!r} is not open"))
        try:
            return defer.succeed(f(*args))
        except Exception:
            return defer.fail()

    def open(self) -> defer.Deferred:
        """Nothing to create: the store exists as long as its backend."""
        if self._open:
            return defer.fail(RuntimeError(f"storage {self.name!r} is open already"))
        self._open = True
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        """Stop answering; the data stays in the store for the next open."""
        self._open = False
        return defer.succeed(None)

    # IStorage

    def write(self, batch: WriteBatch) -> defer.Deferred:
        """Deferred[None]: the whole batch committed, or a failure and nothing."""
        return self._call(self._store.write, batch)

    def read_series(self, solution: str, metric: str | None = None,
                    start_ns: int | None = None, end_ns: int | None = None) -> defer.Deferred:
        """Deferred[list of (key, times, values, texts)], see IStorage."""
        return self._call(self._store.read_series, solution, metric, start_ns, end_ns)

    def list_series(self, solution: str, metric: str | None = None) -> defer.Deferred:
        """Deferred[list[SeriesKey]] in read order, without copying samples."""
        return self._call(self._store.list_series, solution, metric)

    def count_points(self, solution: str | None = None) -> defer.Deferred:
        """Deferred[int]: distinct (series, time) pairs."""
        return self._call(self._store.count_points, solution)

    def read_properties(self, solution: str, entity: str | None = None,
                        type: str | None = None) -> defer.Deferred:
        """Deferred[list[Property]] by entity, type, key; see IStorage."""
        return self._call(self._store.read_properties, solution, entity, type)

    def read_messages(self, solution: str, entity: str | None = None,
                      start_ns: int | None = None, end_ns: int | None = None,
                      type: str | None = None, limit: int | None = None) -> defer.Deferred:
        """Deferred[list[Message]] in time order, end exclusive; see IStorage."""
        return self._call(self._store.read_messages, solution, entity, start_ns, end_ns,
                          type, limit)

    def read_meta(self, solution: str, kind: str, name: str | None = None) -> defer.Deferred:
        """Deferred[list[Meta]] of one kind by name; see IStorage."""
        return self._call(self._store.read_meta, solution, kind, name)

    def read_records(self, solution: str, start_ns: int | None = None,
                     end_ns: int | None = None, limit: int | None = None,
                     descending: bool = False, include_deleted: bool = False
                     ) -> defer.Deferred:
        """Deferred[list[Record]] in time order, both ends inclusive; see IStorage."""
        return self._call(self._store.read_records, solution, start_ns, end_ns, limit,
                          descending, include_deleted)

    def delete_record(self, solution: str, time_ns: int) -> defer.Deferred:
        """Deferred[bool]: soft-delete the records at ``time_ns``."""
        return self._call(self._store.delete_record, solution, time_ns)

    def export(self, solution: str | None, emit: Callable[[dict], object]) -> defer.Deferred:
        """Deferred[None] once ``emit`` had every line, one by one."""
        return self._call(self._store.export, solution, emit)

    def solution_has_data(self, solution: str) -> defer.Deferred:
        """Deferred[bool]."""
        return self._call(self._store.solution_has_data, solution)

    def delete_solution_data(self, solution: str) -> defer.Deferred:
        """Deferred[None]: every item of the solution gone."""
        return self._call(self._store.delete_solution_data, solution)

    def compact(self, solution: str | None = None,
                max_series: int | None = None) -> defer.Deferred:
        """Deferred[0]: dicts need no upkeep."""
        return self._call(lambda: 0)

    # ICatalog

    def create_solution(self, solution: SolutionRecord) -> defer.Deferred:
        """Deferred[SolutionRecord] as stored; Conflict if the name exists."""
        return self._call(self._store.create_solution, solution)

    def update_solution(self, solution: SolutionRecord) -> defer.Deferred:
        """Deferred; NotFound if the solution does not exist."""
        return self._call(self._store.update_solution, solution)

    def get_solution(self, name: str) -> defer.Deferred:
        """Deferred[SolutionRecord | None] (a copy)."""
        return self._call(self._store.get_solution, name)

    def list_solutions(self) -> defer.Deferred:
        """Deferred[list[SolutionRecord]] by name."""
        return self._call(self._store.list_solutions)

    def delete_solution(self, name: str) -> defer.Deferred:
        """Deferred; the solution and its tokens, not its data."""
        return self._call(self._store.delete_solution, name)

    def save_token(self, token: TokenRecord) -> defer.Deferred:
        """Deferred; insert or replace a token and its credentials."""
        return self._call(self._store.save_token, token)

    def get_token(self, token_id: str) -> defer.Deferred:
        """Deferred[TokenRecord | None] (a copy)."""
        return self._call(self._store.get_token, token_id)

    def list_tokens(self, solution: str) -> defer.Deferred:
        """Deferred[list[TokenRecord]] by creation time, then id."""
        return self._call(self._store.list_tokens, solution)

    def find_credential(self, credential_id: str | None, secret_hash: str) -> defer.Deferred:
        """Deferred[TokenRecord | None]: the token owning the credential."""
        return self._call(self._store.find_credential, credential_id, secret_hash)

    def catalog_generation(self) -> defer.Deferred:
        """Deferred[int]: moves on every solution or token change."""
        return self._call(lambda: self._store.generation)


class MemoryBackend(StorageBackend):
    """``backend = memory``: one `MemoryStore` per ``[storage:NAME]``, owned by
    this plugin instance (no module state), so reopening a name finds its data."""

    name = "memory"
    description = "process memory, lost when the process exits (demos and tests; not durable)"

    def __init__(self) -> None:
        self._stores: dict[str, MemoryStore] = {}

    def makeStorage(self, storage: StorageConfig, reactor: Any) -> MemoryStorage:
        """The storage of ``[storage:NAME]``; ``reactor`` is unused: nothing here
        waits or is scheduled."""
        store = self._stores.get(storage.name)
        if store is None:
            store = self._stores[storage.name] = MemoryStore()
        return MemoryStorage(storage.name, store)
