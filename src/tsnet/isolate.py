"""Taking apart a batch that the storage refused, so that only the bad items fail.

A storage writes a batch in one transaction and refuses it whole when one item
is bad (`tsnet.errors.BadBatch`, TypeError, ValueError); it has then committed
nothing of it.  The write queue writes the batch again in parts, halving every
part that is refused, until each refused part is one acked submission (its
writer is told) or one unacked item (dropped).  Everything else is committed
once.  These are the pure functions it uses: no reactor, no storage.

The parts: each acked submission is a part of its own, never split (it is
answered as a whole); the rest of the batch (what streams and UDP queued, and
acks already answered "unavailable") is one part, split down to one item or
one point.  The rest goes first, then the acked parts in submit order; halves
keep their order, so within the rest, and within each submission, the last
write still wins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from tsnet.model import Batch, Column, SampleSet, WriteBatch

#: the list fields of a Batch, in the order a storage writes them
LISTS = ("properties", "messages", "meta", "records")


def detached(samples: SampleSet) -> SampleSet:
    """``samples`` with copies of its columns: what the write queue merges for
    an acked submission, so that the submission's own columns never grow with
    what others append to the queue's (rows are copied by the merge anyway)."""
    if not samples.columns:
        return samples
    out = SampleSet()
    for key, col in samples.columns.items():
        out.columns[key] = _copy(col)
    out.keys, out.times, out.values, out.count = (samples.keys, samples.times,
                                                  samples.values, samples.count)
    return out


def kinds(batch: WriteBatch) -> list[int]:
    """[points, properties, messages, meta, records] in ``batch``, counted."""
    out = [0, 0, 0, 0, 0]
    for b in batch.by_solution.values():
        out[0] += sum(len(c.times) for c in b.samples.columns.values()) + len(b.samples.keys)
        for i, name in enumerate(LISTS, 1):
            out[i] += len(getattr(b, name))
    return out


def rest(batch: WriteBatch, parts: list[tuple[str, Batch]]) -> WriteBatch:
    """What ``batch`` holds besides the (solution, Batch) ``parts`` merged into
    it, in its order: points by value (a point of a part matches one equal point
    of the batch), list items by identity.  The storage may have moved rows into
    columns meanwhile; every point is looked at in both forms."""
    out = WriteBatch()
    by_solution: dict[str, list[Batch]] = {}
    for solution, b in parts:
        by_solution.setdefault(solution, []).append(b)
    for solution, b in batch.by_solution.items():
        mine = by_solution.get(solution, [])
        target = out.for_solution(solution)
        taken = Counter(p for part in mine for p in _points(part.samples))
        samples = target.samples
        for key, t, v, x in _raw_points(b.samples):
            point = (key, t, _vkey(v), x)
            if taken[point]:
                taken[point] -= 1
                continue
            samples.add(key, t, v, x)
        for name in LISTS:
            ids = {id(item) for part in mine for item in getattr(part, name)}
            setattr(target, name, [item for item in getattr(b, name) if id(item) not in ids])
        if b.reclaim_ns is not None and all(
                p.reclaim_ns is None or p.reclaim_ns < b.reclaim_ns for p in mine):
            target.reclaim_ns = b.reclaim_ns  # (else it was a part's)
        if not target.item_count() and target.reclaim_ns is None:
            del out.by_solution[solution]
    return out


def merged(batches: list[WriteBatch]) -> WriteBatch:
    """One batch holding ``batches`` in order; none of them is changed (a column
    that two of them have is copied before it is extended)."""
    if len(batches) == 1:
        return batches[0]
    out = WriteBatch()
    own: set[int] = set()  # ids of the columns made here
    for wb in batches:
        for solution, b in wb.by_solution.items():
            t = out.for_solution(solution)
            cols = t.samples.columns
            for key, col in b.samples.columns.items():
                mine = cols.get(key)
                if mine is None:
                    cols[key] = col
                    continue
                if id(mine) not in own:
                    mine = cols[key] = _copy(mine)
                    own.add(id(mine))
                mine.extend(col)
            if b.samples.keys:
                t.samples.keys += b.samples.keys
                t.samples.times += b.samples.times
                t.samples.values += b.samples.values
            for name in LISTS:
                getattr(t, name).extend(getattr(b, name))
            if b.reclaim_ns is not None:
                t.reclaim_ns = max(t.reclaim_ns or b.reclaim_ns, b.reclaim_ns)
    for t in out.by_solution.values():
        t.samples.recount()
    return out


def halve(batch: WriteBatch) -> tuple[WriteBatch, WriteBatch] | None:
    """``batch`` as two batches, the first holding what comes first; None when it
    is one item or one point.  The pieces: each series (its column, then its
    rows, as a storage merges them), each list item, the reclaim; one series
    alone is split between its points."""
    pieces = list(_pieces(batch))
    if len(pieces) == 1:
        solution, kind, what = pieces[0]
        if kind != "series" or len(what[1].times) < 2:
            return None
        key, col = what
        mid = len(col.times) // 2
        return (_build([(solution, "series", (key, _slice(col, 0, mid)))]),
                _build([(solution, "series", (key, _slice(col, mid, len(col.times))))]))
    mid = len(pieces) // 2
    return _build(pieces[:mid]), _build(pieces[mid:])


# -- helpers ------------------------------------------------------------------------


def _copy(col: Column) -> Column:
    c = Column()
    c.times = col.times.copy()
    c.values = col.values.copy()
    c.texts = None if col.texts is None else col.texts.copy()
    return c


def _slice(col: Column, lo: int, hi: int) -> Column:
    c = Column()
    c.times = col.times[lo:hi]
    c.values = col.values[lo:hi]
    c.texts = None if col.texts is None else col.texts[lo:hi]
    return c


def _vkey(v: Any) -> Any:
    """A value as a dict key that tells 1 from 1.0 and -0.0 from 0.0, and matches NaN."""
    return (v.__class__, v.hex()) if v.__class__ is float else (v.__class__, v)


def _raw_points(samples: SampleSet) -> Iterator[tuple]:
    """(key, time, value, text) of every point, columns first, then rows."""
    for key, col in samples.columns.items():
        texts = col.texts if col.texts is not None else [None] * len(col.times)
        yield from zip([key] * len(col.times), col.times, col.values, texts, strict=True)
    yield from zip(samples.keys, samples.times, samples.values, [None] * len(samples.keys),
                   strict=True)


def _points(samples: SampleSet) -> Iterator[tuple]:
    for key, t, v, x in _raw_points(samples):
        yield key, t, _vkey(v), x


def _pieces(batch: WriteBatch) -> Iterator[tuple[str, str, Any]]:
    for solution, b in batch.by_solution.items():
        cols: dict[Any, Column] = {}
        for key, t, v, x in _raw_points(b.samples):
            col = cols.get(key)
            if col is None:
                col = cols[key] = Column()
            col.add(t, v, x)
        for key, col in cols.items():
            yield solution, "series", (key, col)
        for name in LISTS:
            for item in getattr(b, name):
                yield solution, name, item
        if b.reclaim_ns is not None:
            yield solution, "reclaim", b.reclaim_ns


def _build(pieces: list[tuple[str, str, Any]]) -> WriteBatch:
    out = WriteBatch()
    for solution, kind, what in pieces:
        b = out.for_solution(solution)
        if kind == "series":
            key, col = what
            b.samples.columns[key] = col
            b.samples.count += len(col.times)
        elif kind == "reclaim":
            b.reclaim_ns = what
        else:
            getattr(b, kind).append(what)
    return out
