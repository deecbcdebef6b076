"""The pending log's row format, and folding rows into per-series chunks.

A small acked batch (an HTTP request, or the few requests that share a commit)
holds about one point per series; written as chunks it would be a row per
point.  The SQLite backend logs it instead as one row of points tagged with
their series ids, and *folds* the log into chunks later, many batches at once.

Row layout (fixed, little-endian, so any later version reads it, unlike pickle
or marshal): ``TSP4``, the point count N (int64), the count P (int64) of the
parts the row has points of, and P index entries of four int64s (the part,
then its points, int values and float values); then N series ids (int64), N
times (int64 ns), the values as `chunks.encode_values` packs them, then only
when some sample has a text, a newline and the texts as a JSON list.  The
points are in part order, the entries too, and within a part in log order (a
stable reorder: a series' points are all in its part, so each keeps its
order).  A series' part is `part_of` its id: its block of `PART_BLOCK` (64)
consecutive ids, modulo `PARTS` (16); the form fixes both.  Part p's points
are then one slice of each array, found from the entries before it: its ids,
times and (``q``, ``d``) values, or (``m``) kinds, ints and floats.

The forms before still read and fold: ``TSP3`` rows are the same but for the
part, which is the id modulo 16; ``TSP2`` rows have neither P nor the
entries, points in log order, and their parts are those of ``TSP3``.  A log
that holds a row of a form before folds whole (`runs_by_form`), once.

Why blocks: the chunks' index on series id takes a fold's new chunks at
their series' places.  With the id modulo 16, a part's 6,250 series of
100,000 were spread over the whole index, and one part's fold dirtied 12.5
MB of index pages in 98 ms; in blocks of 64 ids they sit in runs, and the
same fold dirtied 2.9 MB in 22 ms (a micro-benchmark of the insert alone).

Folding is a stable group-by over every point of the log.  With numpy it is
array work (argsort, gathers, reductions per series), about 20 times cheaper
than per-point Python; rows with texts (rare: ATSD samples) take the plain
Python path.  Both keep each series' points in log order, so the last write
wins as it would have had the batches been written as chunks.

A log of a wide load holds a point or two of each of 100,000 series a row, so
folding all of it at once writes 100,000 chunk rows in one transaction (a
second with the writer held).  So the log can also be folded a *part* at a
time: a point's part is its series id modulo `PARTS`, and a series' points
are all in one part, so folding one part takes every pending point of its
series, in log order, and last-write-wins still holds.  A part's fold of a
``TSP3`` row decodes only the part's slices (`read_part` reads just those
bytes of a row still in the file), not the other fifteen sixteenths.  A row
remembers the parts already folded out of it (a bit mask, ``folded``), which
every later fold and read skips, and goes once every part is out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

from tsnet.model import Column, SeriesKey, Value
from tsnet.storage import chunks

MAGIC = b"TSP4"
#: the forms before (a series' part its id modulo 16; TSP2: no part index,
#: points in log order): read, never written
MAGIC_V3 = b"TSP3"
MAGIC_V2 = b"TSP2"
#: the parts a log is folded in (`fold` with ``part``), and a row's mask once
#: every part is folded out of it
PARTS = 16
ALL_PARTS = (1 << PARTS) - 1
#: consecutive series ids that share a part in a TSP4 row (log2: `_BLOCK_BITS`)
_BLOCK_BITS = 6
PART_BLOCK = 1 << _BLOCK_BITS
_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")
_K_INT, _K_FLOAT = 1, 2  # chunks' kind bytes of a mixed value blob
_HEAD = 20  # a TSP3 row's magic, N and P
_ENTRY = struct.Struct("<4q")  # one index entry: part, points, int values, float values
#: (points, ints, floats) before a part's slice, and in it
_Span = tuple[int, int, int, int, int, int]
_NOTHING: _Span = (0, 0, 0, 0, 0, 0)


class Sliceable(Protocol):
    """A row as `read_part` reads it: bytes, or an `sqlite3.Blob` open on a
    row still in the file (slicing one reads just those bytes)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...


class _Layout(NamedTuple):
    """Where a row's arrays are: N series ids at ``at``, N times after them,
    the values (type byte ``tag``) after those, ending at ``end`` (the texts,
    if any, follow a newline); ``index`` is a TSP3 row's entries (part,
    points, ints, floats), None for a TSP2 row."""

    n: int
    at: int
    tag: bytes
    end: int
    index: list[tuple[int, int, int, int]] | None
    magic: bytes

    @property
    def block_bits(self) -> int:
        """`part_of`'s ``block_bits`` for the row's form."""
        return _block_bits(self.magic)

    @property
    def values_at(self) -> int:
        """Where the values begin, past their type byte."""
        return self.at + 16 * self.n + 1

    @property
    def floats_at(self) -> int:
        """Where a mixed packing's floats begin: after the kinds and every int."""
        return self.values_at + self.n + 8 * sum(e[2] for e in self.index or ())


class Points:
    """Points tagged with series ids, gathered part by part into the parallel
    lists `encode` takes; texts are kept only once some part has them."""

    __slots__ = ("sids", "texts", "times", "values")

    def __init__(self) -> None:
        self.sids: list[int] = []
        self.times: list[int] = []
        self.values: list[Value] = []
        self.texts: list | None = None

    def add(self, sids: list[int], times: list[int], values: list[Value],
            texts: list | None = None) -> None:
        if texts is not None or self.texts is not None:
            if self.texts is None:
                self.texts = [None] * len(self.times)
            self.texts += texts if texts is not None else [None] * len(times)
        self.sids += sids
        self.times += times
        self.values += values


def _block_bits(magic: bytes) -> int:
    """`part_of`'s ``block_bits`` for rows of the form ``magic`` (0 before TSP4)."""
    return _BLOCK_BITS if magic == MAGIC else 0


def part_of(sid: Any, block_bits: int = _BLOCK_BITS) -> Any:
    """The part of a series id (or of an array of them): its block of
    ``2 ** block_bits`` consecutive ids, modulo `PARTS` (0 bits: the id
    modulo `PARTS`, the part of the forms before TSP4)."""
    return (sid >> block_bits) % PARTS


def encode(sids: list[int], times: list[int], values: list[Value],
           texts: list | None = None) -> bytes:
    """Points tagged with series ids as one row.  Checks what a chunk would
    (int64 range, value types), so a bad sample fails its own write, not a later
    fold that every read waits for."""
    return _encode(sids, times, values, texts, MAGIC)


def _encode(sids: list[int], times: list[int], values: list[Value], texts: list | None,
            magic: bytes) -> bytes:
    """`encode` as the form ``magic`` (`MAGIC`, or TSP3 for the tests of old files)."""
    n = len(sids)
    if len(times) != n or len(values) != n or (texts is not None and len(texts) != n):
        raise ValueError("series ids, times, values and texts differ in length")
    sid_blob, time_blob = chunks.encode_times(sids), chunks.encode_times(times)
    value_blob = chunks.encode_values(values)  # (packed first: they check the values)
    ids = np.frombuffer(sid_blob, _I64)
    parts = part_of(ids, _block_bits(magic)).astype(np.uint8)
    counts = np.bincount(parts, minlength=PARTS)
    present = np.flatnonzero(counts)
    if len(present) > 1:  # points in part order (uint8 keys: a stable radix sort)
        order = np.argsort(parts, kind="stable")
        parts = parts[order]
        sid_blob = ids[order].tobytes()
        time_blob = np.frombuffer(time_blob, _I64)[order].tobytes()
        value_blob = _reorder_values(value_blob, n, order)
        if texts is not None:
            texts = list(map(texts.__getitem__, order.tolist()))
    tag = value_blob[:1]
    none = np.zeros(PARTS, np.int64)
    if tag == b"q":
        ints, floats = counts, none
    elif tag == b"d":
        ints, floats = none, counts
    else:
        kinds = np.frombuffer(value_blob, np.uint8, n, 1)
        ints = np.bincount(parts[kinds == _K_INT], minlength=PARTS)
        floats = np.bincount(parts[kinds == _K_FLOAT], minlength=PARTS)
    index = np.stack((present, counts[present], ints[present], floats[present]), axis=1)
    blob = b"".join((magic, chunks.encode_times([n, len(present)]),
                     index.astype(_I64).tobytes(), sid_blob, time_blob, value_blob))
    text_blob = chunks.encode_texts(texts)
    return blob if text_blob is None else blob + b"\n" + text_blob


def decode(blob: bytes) -> tuple[list[int], list[int], list[Value], list | None]:
    """(series ids, times, values, texts or None) of a row, as Python lists, in
    the row's order (a TSP3 row's: by part, each series in log order)."""
    lay = _layout(blob)
    n, at = lay.n, lay.at
    sids = chunks.decode_times(blob[at:at + 8 * n])
    times = chunks.decode_times(blob[at + 8 * n:at + 16 * n])
    values = chunks.decode_values(blob[at + 16 * n:lay.end], n)
    texts = chunks.decode_texts(blob[lay.end + 1:]) if len(blob) > lay.end else None
    return sids, times, values, texts


def read_part(row: Sliceable, part: int) -> bytes:
    """The points of ``part`` in ``row`` as a row of their own, which `fold`
    takes as it would the whole row; only the header and the part's slices
    are read, so from an `sqlite3.Blob` a part costs a sixteenth of the row's
    bytes.  A TSP2 row (no index) or one with texts comes whole."""
    lay = _layout(row)
    if lay.index is None or lay.end < len(row):
        return row if isinstance(row, bytes) else row[0:len(row)]
    start, i0, f0, count, n_int, n_float = _span(lay.index, part)
    n, at, v = lay.n, lay.at, lay.values_at
    pieces = [lay.magic, chunks.encode_times([count, 1 if count else 0]),
              _ENTRY.pack(part, count, n_int, n_float) if count else b"",
              row[at + 8 * start:at + 8 * (start + count)],
              row[at + 8 * (n + start):at + 8 * (n + start + count)], lay.tag]
    if lay.tag == b"m":
        floats_at = lay.floats_at
        pieces += (row[v + start:v + start + count],
                   row[v + n + 8 * i0:v + n + 8 * (i0 + n_int)],
                   row[floats_at + 8 * f0:floats_at + 8 * (f0 + n_float)])
    else:
        pieces.append(row[v + 8 * start:v + 8 * (start + count)])
    return b"".join(pieces)


def fold(blobs: list[bytes], masks: list[int] | None = None,
         part: int | None = None) -> list[tuple]:
    """Rows, oldest first -> one chunk row ``(series id, *chunks.EncodedChunk)``
    per series, its points in log order.  ``masks`` (one a row) are the parts
    folded out of each row already, whose points are left out; with ``part``
    only that part's points are folded."""
    masks = masks or [0] * len(blobs)
    layouts = [_layout(b) for b in blobs]
    if any(lay.end < len(b) for b, lay in zip(blobs, layouts, strict=True)):
        return _fold_lists(blobs, masks, part)  # (rows with texts)
    pieces = [_points(b, lay, mask, part)
              for b, lay, mask in zip(blobs, layouts, masks, strict=True)]
    pieces = [p for p in pieces if p.sids]
    if not pieces:
        return []
    # One array of each from the rows' bytes joined: an array a row, as
    # numpy lets go of the GIL for one of over 500 items, cost the writer a
    # switch interval a row beside a busy reactor (a part's fold of a
    # 300-row log beside a spinning thread: 580 ms)
    sids = np.frombuffer(b"".join([p.sids for p in pieces]), _I64)
    order = np.argsort(sids, kind="stable")
    sids = sids[order]
    times = np.frombuffer(b"".join([p.times for p in pieces]), _I64)[order]
    tag = pieces[0].tag if all(p.tag == pieces[0].tag for p in pieces) else b"m"
    if tag == b"m":
        kinds, ints, floats = (np.frombuffer(b"".join(b), t)[order] for b, t in zip(
            zip(*(p.mixed() for p in pieces), strict=True), (np.uint8, _I64, _F64),
            strict=True))
    else:  # (as int64 bits: a float's bits are kept as they are; no kinds needed)
        kinds = None
        ints = floats = np.frombuffer(b"".join([p.values for p in pieces]), _I64)[order]
    starts = np.flatnonzero(np.concatenate(([True], sids[1:] != sids[:-1])))
    ends = np.append(starts[1:], len(sids))
    if tag == b"m":
        counts = ends - starts
        every_float = (np.add.reduceat(kinds == _K_FLOAT, starts) == counts).tolist()
        every_int = (np.add.reduceat(kinds == _K_INT, starts) == counts).tolist()
    else:
        every_float, every_int = [tag == b"d"] * len(starts), [tag == b"q"] * len(starts)
    lows = np.minimum.reduceat(times, starts).tolist()
    highs = np.maximum.reduceat(times, starts).tolist()
    # Per series, only list items and bytes slices (a numpy scalar or a small
    # array per series cost more than the rest of a part's fold).
    time_bytes, int_bytes = times.tobytes(), ints.tobytes()
    float_bytes = int_bytes if floats is ints else floats.tobytes()
    rows = []
    for a, b, sid, low, high, all_float, all_int in zip(
            starts.tolist(), ends.tolist(), sids[starts].tolist(), lows, highs,
            every_float, every_int, strict=True):
        if all_float:
            vblob = b"d" + float_bytes[8 * a:8 * b]
        elif all_int:
            vblob = b"q" + int_bytes[8 * a:8 * b]
        else:
            k = kinds[a:b]
            vblob = b"".join((b"m", k.tobytes(), ints[a:b][k == _K_INT].tobytes(),
                              floats[a:b][k == _K_FLOAT].tobytes()))
        rows.append((sid, low, high, b - a, time_bytes[8 * a:8 * b], vblob, None))
    return rows


def runs_by_form(blobs: list[bytes], masks: list[int]
                 ) -> Iterator[tuple[list[bytes], list[int]]]:
    """Rows (oldest first) and their masks, in runs of rows whose forms part
    series alike (TSP2 and TSP3 do).  A whole log's fold folds a run at a
    time, part by part: a series whose part changed between the forms still
    has its points written in log order (last-write-wins)."""
    run: list[bytes] = []
    run_masks: list[int] = []
    bits = None
    for blob, mask in zip(blobs, masks, strict=True):
        b = _layout(blob).block_bits
        if run and b != bits:
            yield run, run_masks
            run, run_masks = [], []
        bits = b
        run.append(blob)
        run_masks.append(mask)
    if run:
        yield run, run_masks


def group_by_series(
    sids: list[int], times: list[int], values: list[Value], texts: list | None
) -> dict[int, Column]:
    """Points tagged with series ids -> one column per series, each in the
    points' order (a stable sort), in plain Python."""
    order = sorted(range(len(sids)), key=sids.__getitem__)
    sids = list(map(sids.__getitem__, order))
    times = list(map(times.__getitem__, order))
    values = list(map(values.__getitem__, order))
    if texts is not None:
        texts = list(map(texts.__getitem__, order))
    out: dict[int, Column] = {}
    i, n = 0, len(sids)
    while i < n:
        sid = sids[i]
        j = i + 1
        while j < n and sids[j] == sid:
            j += 1
        col = out[sid] = Column()
        col.times, col.values = times[i:j], values[i:j]
        if texts is not None:
            part = texts[i:j]
            if part.count(None) != len(part):
                col.texts = part
        i = j
    return out


def decode_json(
    text: str,
) -> Iterator[tuple[str, SeriesKey, list[int], list[Value], list[str | None] | None]]:
    """Rows of the first pending-log form (tsnet 0.1): one JSON text per batch,
    series named by key."""
    for solution, metric, entity, tags, times, values, texts in json.loads(text):
        yield solution, (metric, entity, tuple((k, v) for k, v in tags)), times, values, texts


# -- helpers ------------------------------------------------------------------------


def _layout(row: Sliceable) -> _Layout:
    """A row's `_Layout`, from its header alone (so from an `sqlite3.Blob`
    too)."""
    head = row[0:_HEAD]
    n = int.from_bytes(head[4:12], "little", signed=True)
    magic = bytes(head[:4])
    if magic in (MAGIC, MAGIC_V3):
        entries = int.from_bytes(head[12:20], "little", signed=True)
        at = _HEAD + _ENTRY.size * entries
        index = list(_ENTRY.iter_unpack(row[_HEAD:at]))
        v = at + 16 * n
        tag = row[v:v + 1]
        end = v + 1 + (8 * n if tag in (b"q", b"d") else n + 8 * sum(e[2] + e[3] for e in index))
    elif magic == MAGIC_V2:
        at, index = 12, None
        v = at + 16 * n
        tag = row[v:v + 1]
        end = v + _values_length(row[v:v + 1 + n], n)
    else:
        raise ValueError("unknown pending-log row format")
    if tag not in (b"q", b"d", b"m"):
        raise ValueError(f"unknown value encoding {tag!r}")
    return _Layout(n, at, tag, end, index, magic)


def _values_length(blob: bytes | memoryview, n: int) -> int:
    """The length of `chunks.encode_values`'s packing of ``n`` values at the
    start of ``blob`` (its type byte says how it is laid out)."""
    if bytes(blob[:1]) in (b"q", b"d"):
        return 1 + 8 * n
    return 1 + n + 8 * (n - bytes(blob[1:1 + n]).count(0))


def _span(index: list[tuple[int, int, int, int]], part: int) -> _Span:
    """(points, ints, floats) before ``part``'s slices of a TSP3 row, and in
    them (the entries are in part order; a part without points has none)."""
    start = i0 = f0 = 0
    for p, count, n_int, n_float in index:
        if p == part:
            return start, i0, f0, count, n_int, n_float
        if p > part:
            break
        start, i0, f0 = start + count, i0 + n_int, f0 + n_float
    return _NOTHING


class _Piece(NamedTuple):
    """The points of a row that a fold takes, as bytes: series ids and times
    (int64 each), and the values: ``tag`` ``q`` or ``d``, their 8-byte
    slice; ``m``, (kinds, ints, floats) with an int and a float slot a point."""

    sids: bytes
    times: bytes
    tag: bytes
    values: Any

    def mixed(self) -> tuple[bytes, bytes, bytes]:
        """(kinds, ints, floats) of the points, whatever their tag."""
        if self.tag == b"m":
            return self.values
        n = len(self.sids) // 8
        if self.tag == b"q":
            return bytes((_K_INT,)) * n, self.values, bytes(8 * n)
        return bytes((_K_FLOAT,)) * n, bytes(8 * n), self.values


def _points(blob: bytes, lay: _Layout, mask: int, part: int | None) -> _Piece:
    """The points of a row still to fold (not in ``mask``; in ``part``, when
    given): a TSP3 row's part is its slices alone, cut as bytes."""
    if part is None or lay.index is None:
        arrays = _only(_arrays(blob, lay), mask, part, lay.block_bits)
        return _Piece(arrays[0].tobytes(), arrays[1].tobytes(), b"m",
                      tuple(a.tobytes() for a in arrays[2:]))
    start, i0, f0, count = (_NOTHING if mask >> part & 1 else _span(lay.index, part))[:4]
    n, at, v = lay.n, lay.at, lay.values_at
    sids = blob[at + 8 * start:at + 8 * (start + count)]
    times = blob[at + 8 * (n + start):at + 8 * (n + start + count)]
    if lay.tag != b"m":
        return _Piece(sids, times, lay.tag, blob[v + 8 * start:v + 8 * (start + count)])
    kinds, ints, floats = _value_arrays(blob, lay.tag, count, v + start, v + n + 8 * i0,
                                        lay.floats_at + 8 * f0)
    return _Piece(sids, times, b"m", (kinds.tobytes(), ints.tobytes(), floats.tobytes()))


def _arrays(blob: bytes, lay: _Layout) -> tuple[Any, Any, Any, Any, Any]:
    """(series ids, times, kinds, ints, floats) of a row without texts, as
    arrays of one entry per point; a point's int or float slot is 0 when it
    is not of that kind (kind 0: no value)."""
    n, at = lay.n, lay.at
    return (np.frombuffer(blob, _I64, n, at), np.frombuffer(blob, _I64, n, at + 8 * n),
            *_value_arrays(blob, lay.tag, n, lay.values_at))


def _value_arrays(blob: bytes, tag: bytes, n: int, at: int, ints_at: int | None = None,
                  floats_at: int | None = None) -> tuple[Any, Any, Any]:
    """(kinds, ints, floats) of ``n`` values packed as `chunks.encode_values`
    does from ``at`` (past the type byte ``tag``), one entry per value; a mixed
    packing's ints and floats are at ``ints_at`` and ``floats_at`` (default:
    where one packing of ``n`` values has them)."""
    if tag == b"q":
        return np.full(n, _K_INT, np.uint8), np.frombuffer(blob, _I64, n, at), np.zeros(n, _F64)
    if tag == b"d":
        return np.full(n, _K_FLOAT, np.uint8), np.zeros(n, _I64), np.frombuffer(blob, _F64, n, at)
    kinds = np.frombuffer(blob, np.uint8, n, at)
    is_int = kinds == _K_INT
    is_float = kinds == _K_FLOAT
    n_int = int(is_int.sum())
    ints_at = at + n if ints_at is None else ints_at
    floats_at = ints_at + 8 * n_int if floats_at is None else floats_at
    ints = np.zeros(n, _I64)
    floats = np.zeros(n, _F64)
    ints[is_int] = np.frombuffer(blob, _I64, n_int, ints_at)
    floats[is_float] = np.frombuffer(blob, _F64, int(is_float.sum()), floats_at)
    return kinds, ints, floats


def _reorder_values(blob: bytes, n: int, order: Any) -> bytes:
    """`chunks.encode_values`' packing ``blob`` of ``n`` values, reordered by
    ``order`` (an index array) without a Python object per value."""
    tag = blob[:1]
    if tag in (b"q", b"d"):  # (as int64 bits: a float's bits, NaN's, are kept)
        return tag + np.frombuffer(blob, _I64, n, 1)[order].tobytes()
    kinds, ints, floats = (a[order] for a in _value_arrays(blob, tag, n, 1))
    return b"".join((tag, kinds.tobytes(), ints[kinds == _K_INT].tobytes(),
                     floats[kinds == _K_FLOAT].tobytes()))


def in_part(sid: int, mask: int, part: int | None, block_bits: int = _BLOCK_BITS) -> bool:
    """Whether a point of series ``sid`` in a row whose folded parts are
    ``mask`` is still to fold (in ``part``, when given); ``block_bits`` as
    the row's form has it (`part_of`)."""
    p = part_of(sid, block_bits)
    return not mask >> p & 1 and (part is None or p == part)


def _only(arrays: tuple, mask: int, part: int | None, block_bits: int) -> tuple:
    """`_arrays`' arrays, less the points `in_part` leaves out."""
    if not mask and part is None:
        return arrays
    p = part_of(arrays[0], block_bits)
    keep = (mask >> p & 1) == 0
    if part is not None:
        keep &= p == part
    return tuple(a[keep] for a in arrays)


def _fold_lists(blobs: list[bytes], masks: list[int] | None = None,
                part: int | None = None) -> list[tuple]:
    """`fold` in plain Python, for rows with texts."""
    points = Points()
    for blob, mask in zip(blobs, masks or [0] * len(blobs), strict=True):
        sids, times, values, texts = decode(blob)
        if mask or part is not None:
            bits = _layout(blob).block_bits
            keep = [i for i, sid in enumerate(sids) if in_part(sid, mask, part, bits)]
            sids = [sids[i] for i in keep]
            times = [times[i] for i in keep]
            values = [values[i] for i in keep]
            texts = None if texts is None else [texts[i] for i in keep]
        points.add(sids, times, values, texts)
    grouped = group_by_series(points.sids, points.times, points.values, points.texts)
    return [(sid, *chunks.encode_chunk(col.times, col.values, col.texts))
            for sid, col in grouped.items()]
