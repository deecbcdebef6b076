"""The pending log's row format, and folding rows into per-series chunks.

A small acked batch (an HTTP request, or the few requests that share a commit)
holds about one point per series; written as chunks it would be a row per
point.  The SQLite backend logs it instead as one row of points tagged with
their series ids, and *folds* the log into chunks later, many batches at once.

Row layout (fixed, little-endian, so any later version reads it, unlike pickle
or marshal): ``TSP2``, the point count N (int64), N series ids (int64), N
times (int64 ns), the values as `chunks.encode_values` packs them, then only
when some sample has a text, a newline and the texts as a JSON list.

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
series, in log order, and last-write-wins still holds.  A row remembers the
parts already folded out of it (a bit mask, ``folded``), which every later
fold and read skips, and goes once every part is out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from tsnet.model import Column, SeriesKey, Value
from tsnet.storage import chunks

MAGIC = b"TSP2"
#: the parts a log is folded in (`fold` with ``part``), and a row's mask once
#: every part is folded out of it
PARTS = 16
ALL_PARTS = (1 << PARTS) - 1
_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")
_K_INT, _K_FLOAT = 1, 2  # chunks' kind bytes of a mixed value blob


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


def encode(sids: list[int], times: list[int], values: list[Value],
           texts: list | None = None) -> bytes:
    """Points tagged with series ids as one row.  Checks what a chunk would
    (int64 range, value types), so a bad sample fails its own write, not a later
    fold that every read waits for."""
    n = len(sids)
    if len(times) != n or len(values) != n or (texts is not None and len(texts) != n):
        raise ValueError("series ids, times, values and texts differ in length")
    blob = b"".join((MAGIC, chunks.encode_times([n]), chunks.encode_times(sids),
                     chunks.encode_times(times), chunks.encode_values(values)))
    text_blob = chunks.encode_texts(texts)
    return blob if text_blob is None else blob + b"\n" + text_blob


def decode(blob: bytes) -> tuple[list[int], list[int], list[Value], list | None]:
    """(series ids, times, values, texts or None) of a row, as Python lists."""
    n = _count(blob)
    sids = chunks.decode_times(blob[12:12 + 8 * n])
    times = chunks.decode_times(blob[12 + 8 * n:12 + 16 * n])
    rest = blob[12 + 16 * n:]
    vlen = _values_length(rest, n)
    values = chunks.decode_values(rest[:vlen], n)
    texts = chunks.decode_texts(rest[vlen + 1:]) if len(rest) > vlen else None
    return sids, times, values, texts


def fold(blobs: list[bytes], masks: list[int] | None = None,
         part: int | None = None) -> list[tuple]:
    """Rows, oldest first -> one chunk row ``(series id, *chunks.EncodedChunk)``
    per series, its points in log order.  ``masks`` (one a row) are the parts
    folded out of each row already, whose points are left out; with ``part``
    only that part's points are folded."""
    masks = masks or [0] * len(blobs)
    if any(_has_texts(b) for b in blobs):
        return _fold_lists(blobs, masks, part)
    parts = [_only(_arrays(b), mask, part) for b, mask in zip(blobs, masks, strict=True)]
    if not parts:
        return []
    sids = np.concatenate([p[0] for p in parts])
    if not len(sids):
        return []
    order = np.argsort(sids, kind="stable")
    sids = sids[order]
    times = np.concatenate([p[1] for p in parts])[order]
    kinds = np.concatenate([p[2] for p in parts])[order]
    ints = np.concatenate([p[3] for p in parts])[order]
    floats = np.concatenate([p[4] for p in parts])[order]
    starts = np.flatnonzero(np.concatenate(([True], sids[1:] != sids[:-1])))
    ends = np.append(starts[1:], len(sids))
    n_float = np.add.reduceat(kinds == _K_FLOAT, starts)
    n_int = np.add.reduceat(kinds == _K_INT, starts)
    lows = np.minimum.reduceat(times, starts)
    highs = np.maximum.reduceat(times, starts)
    rows = []
    for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        count = b - a
        if n_float[i] == count:
            vblob = b"d" + floats[a:b].tobytes()
        elif n_int[i] == count:
            vblob = b"q" + ints[a:b].tobytes()
        else:
            k = kinds[a:b]
            vblob = b"".join((b"m", k.tobytes(), ints[a:b][k == _K_INT].tobytes(),
                              floats[a:b][k == _K_FLOAT].tobytes()))
        rows.append((int(sids[a]), int(lows[i]), int(highs[i]), count,
                     times[a:b].tobytes(), vblob, None))
    return rows


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


def _count(blob: bytes) -> int:
    if blob[:4] != MAGIC:
        raise ValueError("unknown pending-log row format")
    return int.from_bytes(blob[4:12], "little", signed=True)


def _values_length(blob: bytes | memoryview, n: int) -> int:
    """The length of `chunks.encode_values`'s packing of ``n`` values at the
    start of ``blob`` (its type byte says how it is laid out)."""
    if bytes(blob[:1]) in (b"q", b"d"):
        return 1 + 8 * n
    return 1 + n + 8 * (n - bytes(blob[1:1 + n]).count(0))


def _has_texts(blob: bytes) -> bool:
    n = _count(blob)
    return len(blob) > 12 + 16 * n + _values_length(memoryview(blob)[12 + 16 * n:], n)


def _arrays(blob: bytes) -> tuple[Any, Any, Any, Any, Any]:
    """(series ids, times, kinds, ints, floats) of a row without texts, as arrays
    of one entry per point; a point's int or float slot is 0 when it is not of
    that kind (kind 0: no value)."""
    n = _count(blob)
    sids = np.frombuffer(blob, _I64, n, 12)
    times = np.frombuffer(blob, _I64, n, 12 + 8 * n)
    v = 12 + 16 * n
    tag = blob[v:v + 1]
    if tag == b"q":
        ints = np.frombuffer(blob, _I64, n, v + 1)
        return sids, times, np.full(n, _K_INT, np.uint8), ints, np.zeros(n, _F64)
    if tag == b"d":
        floats = np.frombuffer(blob, _F64, n, v + 1)
        return sids, times, np.full(n, _K_FLOAT, np.uint8), np.zeros(n, _I64), floats
    if tag != b"m":
        raise ValueError(f"unknown value encoding {tag!r}")
    kinds = np.frombuffer(blob, np.uint8, n, v + 1)
    is_int = kinds == _K_INT
    is_float = kinds == _K_FLOAT
    n_int = int(is_int.sum())
    ints = np.zeros(n, _I64)
    floats = np.zeros(n, _F64)
    ints[is_int] = np.frombuffer(blob, _I64, n_int, v + 1 + n)
    floats[is_float] = np.frombuffer(blob, _F64, int(is_float.sum()), v + 1 + n + 8 * n_int)
    return sids, times, kinds, ints, floats


def in_part(sid: int, mask: int, part: int | None) -> bool:
    """Whether a point of series ``sid`` in a row whose folded parts are
    ``mask`` is still to fold (in ``part``, when given)."""
    p = sid % PARTS
    return not mask >> p & 1 and (part is None or p == part)


def _only(arrays: tuple, mask: int, part: int | None) -> tuple:
    """`_arrays`' arrays, less the points `in_part` leaves out."""
    if not mask and part is None:
        return arrays
    p = arrays[0] % PARTS
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
            keep = [i for i, sid in enumerate(sids) if in_part(sid, mask, part)]
            sids = [sids[i] for i in keep]
            times = [times[i] for i in keep]
            values = [values[i] for i in keep]
            texts = None if texts is None else [texts[i] for i in keep]
        points.add(sids, times, values, texts)
    grouped = group_by_series(points.sids, points.times, points.values, points.texts)
    return [(sid, *chunks.encode_chunk(col.times, col.values, col.texts))
            for sid, col in grouped.items()]
