"""The sample chunk codec: one series' samples of one batch packed into blobs.

Storing one row per point caps SQLite near 150k points/s; storing one row per
series per batch makes the per-point cost that of ``array(...).tobytes()``.  A
chunk is three blobs:

- times: little-endian int64 nanoseconds (``array('q')``);
- values: one type byte, then ``q`` = all int64, ``d`` = all float64, or ``m`` =
  mixed: one kind byte per sample (0 None, 1 int, 2 float), then the int64s, then
  the float64s.  Ints stay ints, floats stay floats, NaN keeps its bits;
- texts: only when some sample has a text: a JSON list of str-or-null.

Duplicate (series, time) is resolved when reading, by `merge`: chunks are applied
in insertion order, so the last write wins.  It wins field by field: a sample
whose value is None (an ATSD text-only sample) keeps an earlier value, and a
sample without text keeps an earlier text (ATSD §4.1: "a later numeric-only
command at the same timestamp keeps the earlier text").  For samples that carry
a value and no text (every OpenTSDB point) that is plain last write wins.

Everything here is pure and backend-free, so any backend can reuse it.
"""

from __future__ import annotations

import itertools
import json
import operator
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from tsnet.model import Value

_INT = b"q"
_FLOAT = b"d"
_MIXED = b"m"
_K_NONE, _K_INT, _K_FLOAT = 0, 1, 2
_BIG_ENDIAN = sys.byteorder == "big"

#: times, values, texts-or-None of one chunk or of a merged series.
Samples = tuple[list[int], list[Value], "list[str | None] | None"]


class EncodedChunk(NamedTuple):
    """One chunk as stored: the row of a chunk table, less the series id."""

    min_time: int
    max_time: int
    count: int
    times: bytes
    values: bytes
    texts: bytes | None


def _pack(a: array) -> bytes:
    """Bytes of ``a`` in little-endian order, so files move between machines."""
    if _BIG_ENDIAN:  # pragma: no cover - no big-endian CI
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _unpack(typecode: str, data: bytes | memoryview) -> array:
    a = array(typecode)
    a.frombytes(data)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def encode_times(times: Sequence[int]) -> bytes:
    """Pack nanosecond times; OverflowError beyond int64 surfaces as ValueError."""
    try:
        return _pack(array("q", times))
    except OverflowError:
        raise ValueError("sample time outside int64 nanoseconds") from None


def decode_times(blob: bytes) -> list[int]:
    return _unpack("q", blob).tolist()


def encode_values(values: Sequence[Value]) -> bytes:
    """Pack values in the smallest exact form.

    The type test is ``set(map(type, values))``, one pass in C, so the common
    all-int and all-float cases never run Python code per sample.
    """
    kinds = set(map(type, values))
    if kinds <= {int}:
        try:
            return _INT + _pack(array("q", values))
        except OverflowError:
            raise ValueError("integer value outside int64") from None
    if kinds == {float}:
        return _FLOAT + _pack(array("d", values))
    return _encode_mixed(values)


def _encode_mixed(values: Sequence[Value]) -> bytes:
    kinds = bytearray()
    ints: list[int] = []
    floats: list[float] = []
    for v in values:
        if v is None:
            kinds.append(_K_NONE)
        elif isinstance(v, float):
            kinds.append(_K_FLOAT)
            floats.append(v)
        elif isinstance(v, int):
            kinds.append(_K_INT)
            ints.append(int(v))  # a bool is stored as 0/1
        else:
            raise TypeError(f"sample value must be int, float or None, not {type(v).__name__}")
    try:
        packed_ints = _pack(array("q", ints))
    except OverflowError:
        raise ValueError("integer value outside int64") from None
    return _MIXED + bytes(kinds) + packed_ints + _pack(array("d", floats))


def decode_values(blob: bytes, count: int) -> list[Value]:
    """Unpack what `encode_values` made of ``count`` samples."""
    tag = blob[:1]
    body = memoryview(blob)[1:]
    if tag == _INT:
        return _unpack("q", body).tolist()
    if tag == _FLOAT:
        return _unpack("d", body).tolist()
    if tag != _MIXED:
        raise ValueError(f"unknown value encoding {tag!r}")
    kinds = bytes(body[:count])
    n_ints = kinds.count(_K_INT)
    ints_end = count + 8 * n_ints
    ints = iter(_unpack("q", body[count:ints_end]).tolist())
    floats = iter(_unpack("d", body[ints_end:]).tolist())
    return [None if k == _K_NONE else next(ints) if k == _K_INT else next(floats) for k in kinds]


def encode_texts(texts: Sequence[str | None] | None) -> bytes | None:
    """A JSON list, or None when no sample has a text (the common case costs nothing)."""
    if texts is None or texts.count(None) == len(texts):
        return None
    return json.dumps(list(texts), separators=(",", ":")).encode("ascii")


def decode_texts(blob: bytes | None) -> list[str | None] | None:
    return None if blob is None else json.loads(blob)


def encode_chunk(
    times: Sequence[int], values: Sequence[Value], texts: Sequence[str | None] | None = None
) -> EncodedChunk:
    """Pack one series' samples of one batch (must not be empty)."""
    n = len(times)
    if not n:
        raise ValueError("empty chunk")
    if len(values) != n or (texts is not None and len(texts) != n):
        raise ValueError("times, values and texts differ in length")
    return EncodedChunk(
        min(times), max(times), n, encode_times(times), encode_values(values), encode_texts(texts)
    )


def decode_chunk(times: bytes, values: bytes, texts: bytes | None) -> Samples:
    t = decode_times(times)
    return t, decode_values(values, len(t)), decode_texts(texts)


def merge(chunks: Iterable[Samples]) -> Samples:
    """Merge a series' chunks, given in insertion order, into time order.

    Last write wins per time, field by field (see the module docstring).  All the
    per-sample work is dict/set updates and maps, which run in C.
    """
    chunk_list = chunks if isinstance(chunks, list) else list(chunks)
    if _in_order(chunk_list):
        times = list(itertools.chain.from_iterable(c[0] for c in chunk_list))
        values = list(itertools.chain.from_iterable(c[1] for c in chunk_list))
        return times, values, None
    all_times: set[int] = set()
    vals: dict[int, Value] = {}
    txts: dict[int, str] = {}
    for times, values, texts in chunk_list:
        all_times.update(times)
        if None in values:
            vals.update((t, v) for t, v in zip(times, values, strict=True) if v is not None)
        else:
            vals.update(zip(times, values, strict=True))
        if texts is not None:
            txts.update((t, x) for t, x in zip(times, texts, strict=True) if x is not None)
    out_times = sorted(all_times)
    out_values = list(map(vals.get, out_times))
    out_texts = list(map(txts.get, out_times)) if txts else None
    return out_times, out_values, out_texts


def merge_encoded(rows: Sequence[tuple[bytes, bytes, bytes | None]]) -> tuple:
    """`merge` of encoded chunks, ``(times, values, texts)`` blobs in insertion
    order.  When they are what steady ingestion writes (no texts, all int64 or
    all float64 values, times strictly increasing throughout), times and values
    come back as numpy arrays read straight from the blobs, with no Python
    object per sample (what an export of millions of points needs); otherwise
    as `merge` gives them, lists."""
    if rows and all(r[2] is None for r in rows):
        tags = {r[1][:1] for r in rows}
        if len(tags) == 1 and tags <= {_INT, _FLOAT}:
            times = np.frombuffer(b"".join(r[0] for r in rows), dtype="<i8")
            if times.size < 2 or bool((times[1:] > times[:-1]).all()):
                kind = "<i8" if _INT in tags else "<f8"
                values = np.frombuffer(b"".join(memoryview(r[1])[1:] for r in rows), dtype=kind)
                if values.size == times.size:
                    return times, values, None
    return merge([decode_chunk(*r) for r in rows])


def _in_order(chunk_list: list[Samples]) -> bool:
    """True when concatenating is merging: no texts, no None values, and times
    strictly increasing within and across chunks (what steady ingestion writes)."""
    last: int | None = None
    for times, values, texts in chunk_list:
        if texts is not None or not times or None in values:
            return False
        if last is not None and times[0] <= last:
            return False
        if not all(map(operator.lt, times, itertools.islice(times, 1, None))):
            return False
        last = times[-1]
    return True


def time_slice(samples: Samples, start_ns: int | None, end_ns: int | None) -> Samples:
    """The samples with start <= time <= end (None: unbounded) of time-sorted samples."""
    times, values, texts = samples
    lo = 0 if start_ns is None else bisect_left(times, start_ns)
    hi = len(times) if end_ns is None else bisect_right(times, end_ns)
    if lo == 0 and hi == len(times):
        return samples
    texts = texts[lo:hi] if texts is not None else None
    if texts is not None and texts.count(None) == len(texts):
        texts = None
    return times[lo:hi], values[lo:hi], texts


def count_distinct(time_lists: Iterable[Sequence[int]]) -> int:
    """Distinct times over a series' chunks: its number of points."""
    seen: set[int] = set()
    for times in time_lists:
        seen.update(times)
    return len(seen)
