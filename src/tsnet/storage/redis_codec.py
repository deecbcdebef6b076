"""How the Redis backend turns items into bytes and back.

Samples travel as one blob per series per batch (`encode_samples`): times as
int64 and values as int64 or float64 when a column has one type (the common
case, packed by `array` with no per-point Python code; NaN and -0.0 survive),
and JSON otherwise.  A series is the list of its blobs in write order, folded
on read by `fold_samples` with the data model's rule: per time the last value
given wins, and a missing value (None) or text does not erase one.

Other items are appended as one blob per kind per batch and folded on read with
`tsnet.storage.rules`, so Redis stores the same thing SQLite does for a batch.
Everything written is checked first (`check_*`): a bad batch fails whole, with
TypeError or ValueError, before anything reaches Redis.
"""

from __future__ import annotations

import itertools
import math
import operator
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from tsnet.model import INT64_MAX, INT64_MIN, Message, Property, Record, SeriesKey, Value
from tsnet.storage.rules import check_tags

_HEAD = struct.Struct("<IBB")
_LEN = struct.Struct("<I")
_REC = struct.Struct("<qIIIB")
_NONE = type(None)
_TEXT_TYPES = frozenset((str, _NONE))
#: non-finite floats in a JSON value column (JSON has no NaN)
_SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

Samples = tuple[list[int], list[Value], list[str | None] | None]


def _int64(v: int, what: str) -> int:
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{what} outside int64")
    return v


def check_time(t: Any, what: str) -> int:
    """An item's time: an int in int64."""
    if t.__class__ is not int:
        raise TypeError(f"{what} time must be int nanoseconds")
    return _int64(t, f"{what} time")


def check_str(v: Any, what: str, optional: bool = False) -> Any:
    if not (isinstance(v, str) or (optional and v is None)):
        raise TypeError(f"{what} must be str" + (" or None" if optional else ""))
    return v


def series_key_bytes(key: SeriesKey) -> bytes:
    """A series' identity as canonical JSON (tags sorted), checked."""
    metric, entity, tags = key
    check_str(metric, "metric")
    check_str(entity, "entity", optional=True)
    pairs = sorted(tuple(p) for p in tags)
    for p in pairs:
        if len(p) != 2 or not isinstance(p[0], str) or not isinstance(p[1], str):
            raise TypeError(f"bad tag {p!r} in series key {key!r}")
    return orjson.dumps([metric, entity, pairs])


def series_key_of(data: bytes) -> SeriesKey:
    metric, entity, pairs = orjson.loads(data)
    return (metric, entity, tuple((k, v) for k, v in pairs))


# -- samples -----------------------------------------------------------------


def _pack_times(times: Sequence[int]) -> bytes:
    if set(map(type, times)) - {int}:
        bad = next(t for t in times if t.__class__ is not int)
        raise TypeError(f"sample time must be int nanoseconds, not {type(bad).__name__}")
    try:
        return array("q", times).tobytes()
    except OverflowError:
        raise ValueError("sample time outside int64") from None


def _json_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float):
        v = float(v)
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, int):
        return _int64(int(v), "integer value")
    raise TypeError(f"sample value must be int, float or None, not {type(v).__name__}")


def _pack_values(values: Sequence[Value]) -> tuple[int, bytes]:
    kinds = set(map(type, values))
    if kinds == {int}:
        try:
            return ord("q"), array("q", values).tobytes()
        except OverflowError:
            raise ValueError("integer value outside int64") from None
    if kinds == {float}:
        return ord("d"), array("d", values).tobytes()
    data = orjson.dumps([_json_value(v) for v in values])
    return ord("j"), _LEN.pack(len(data)) + data


def encode_samples(times: Sequence[int], values: Sequence[Value],
                   texts: Sequence[str | None] | None) -> bytes:
    """One column as a blob; TypeError/ValueError for what cannot be stored."""
    n = len(times)
    if len(values) != n or (texts is not None and len(texts) != n):
        raise ValueError("times, values and texts differ in length")
    t = _pack_times(times)
    vcode, v = _pack_values(values)
    x = b""
    tcode = 0
    if texts is not None:
        if set(map(type, texts)) - _TEXT_TYPES:
            raise TypeError("sample text must be str or None")
        tcode = ord("j")
        x = orjson.dumps(list(texts))
    return _HEAD.pack(n, vcode, tcode) + t + v + x


def decode_samples(blob: bytes) -> Samples:
    n, vcode, tcode = _HEAD.unpack_from(blob)
    view = memoryview(blob)
    pos = _HEAD.size
    times = array("q")
    times.frombytes(view[pos:pos + 8 * n])
    pos += 8 * n
    values: list[Value]
    if vcode == ord("j"):
        (size,) = _LEN.unpack_from(blob, pos)
        pos += _LEN.size
        values = [_SPECIAL.get(v, v) if isinstance(v, str) else v
                  for v in orjson.loads(view[pos:pos + size])]
        pos += size
    else:
        col = array(chr(vcode))
        col.frombytes(view[pos:pos + 8 * n])
        values = col.tolist()
        pos += 8 * n
    texts = orjson.loads(view[pos:]) if tcode else None
    return times.tolist(), values, texts


def fold_samples(blobs: Sequence[bytes], start_ns: int | None = None,
                 end_ns: int | None = None) -> Samples:
    """A series' blobs (in write order) merged: sorted by time, per time the
    last value and the last text that were not None; both ends inclusive."""
    parts = [decode_samples(b) for b in blobs]
    times: list[int]
    values: list[Value]
    texts: list[str | None] | None
    if len(parts) == 1 and _increasing(parts[0][0]):
        times, values, texts = parts[0]
    else:
        vals: dict[int, Value] = {}
        txts: dict[int, str] = {}
        for ts, vs, xs in parts:
            if None in vs:
                for t, v in zip(ts, vs, strict=True):
                    if v is not None or t not in vals:
                        vals[t] = v
            else:
                vals.update(zip(ts, vs, strict=True))
            if xs is not None:
                txts.update((t, x) for t, x in zip(ts, xs, strict=True) if x is not None)
        times = sorted(vals)
        values = list(map(vals.__getitem__, times))
        texts = list(map(txts.get, times)) if txts else None
    if start_ns is not None or end_ns is not None:
        lo = 0 if start_ns is None else bisect_left(times, start_ns)
        hi = len(times) if end_ns is None else bisect_right(times, end_ns)
        if lo or hi < len(times):
            times, values = times[lo:hi], values[lo:hi]
            texts = texts[lo:hi] if texts is not None else None
    if texts is not None and texts.count(None) == len(texts):
        texts = None
    return times, values, texts


def _increasing(times: list[int]) -> bool:
    return all(map(operator.lt, times, itertools.islice(times, 1, None)))


def samples_before(blob: bytes, cut: int) -> tuple[int, int]:
    """(points in a sample blob, how many of them are before ``cut``), without
    decoding its values (retention decides from this what to drop)."""
    n = _HEAD.unpack_from(blob)[0]
    times = np.frombuffer(blob, dtype="<i8", count=n, offset=_HEAD.size)
    return n, int(np.count_nonzero(times < cut))


def samples_from(blob: bytes, cut: int) -> bytes:
    """A sample blob without its points before ``cut``, the rest in the
    order they were (so folding it gives what folding the whole one did, from
    ``cut`` on)."""
    times, values, texts = decode_samples(blob)
    keep = [i for i, t in enumerate(times) if t >= cut]
    return encode_samples([times[i] for i in keep], [values[i] for i in keep],
                          [texts[i] for i in keep] if texts is not None else None)


# -- other items ------------------------------------------------------------


def property_key(p: Property) -> str:
    """A property's identity: entity, type and key as sorted compact JSON (the
    export's order)."""
    return orjson.dumps([p.entity, p.type, dict(sorted(p.key.items()))]).decode()


def encode_properties(props: Sequence[Property]) -> bytes:
    out = []
    for p in props:
        check_str(p.entity, "property entity")
        check_str(p.type, "property type")
        key = check_tags(p.key, "property key")
        tags = check_tags(p.tags, "property tags", blanks=True)
        out.append([p.entity, p.type, dict(sorted(key.items())), tags,
                    check_time(p.time_ns, "property")])
    return orjson.dumps(out)


def decode_properties(blob: bytes) -> list[Property]:
    return [Property(e, t, k, tags, ts) for e, t, k, tags, ts in orjson.loads(blob)]


def encode_messages(msgs: Sequence[Message]) -> bytes:
    out = []
    for m in msgs:
        out.append([
            check_str(m.entity, "message entity"), check_time(m.time_ns, "message"),
            check_str(m.message, "message text", optional=True) or "",
            check_str(m.type, "message type", optional=True),
            check_str(m.source, "message source", optional=True),
            check_str(m.severity, "message severity", optional=True),
            check_tags(m.tags, "message tags"),
        ])
    return orjson.dumps(out)


def decode_messages(blob: bytes) -> list[Message]:
    return [Message(*fields) for fields in orjson.loads(blob)]


def messages_before(blob: bytes, cut: int) -> tuple[int, int]:
    """(messages in a message blob, how many of them are before ``cut``)."""
    times = [fields[1] for fields in orjson.loads(blob)]
    return len(times), sum(t < cut for t in times)


def messages_from(blob: bytes, cut: int) -> bytes:
    """A message blob without its messages before ``cut``."""
    return orjson.dumps([f for f in orjson.loads(blob) if f[1] >= cut])


def encode_meta(entries: Sequence[tuple[str, str, dict | None]]) -> bytes:
    """(kind, name, fields) upserts; fields None registers the record unless it
    exists (an implicit metric or entity)."""
    try:
        return orjson.dumps([list(e) for e in entries])
    except orjson.JSONEncodeError as e:
        raise TypeError(f"meta fields must be JSON: {e}") from None


def decode_meta(blob: bytes) -> list[list]:
    return orjson.loads(blob)


#: record list entries: a record, a soft-deleted record (after a fold), the
#: soft delete of the records at a time, and a reclaim of those at or before it
_RECORD, _DELETED, _DELETE, _RECLAIM = range(4)


def encode_records(records: Sequence[Record], reclaim_ns: int | None = None) -> bytes:
    """A batch's records as one blob of the solution's record list, then its
    reclaim (applied after them, as `IStorage` says)."""
    parts = []
    for r in records:
        data = r.data
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError("record data must be bytes or str")
        dtype = check_str(r.data_type, "record data_type").encode("utf-8")
        if not isinstance(r.block, int) or not 0 <= r.block < 2**32:
            raise ValueError(f"record block {r.block!r} is not a uint32")
        flag = _DELETED if r.deleted else _RECORD
        parts.append(_REC.pack(check_time(r.time_ns, "record"), len(dtype), len(data),
                               r.block, flag))
        parts.append(dtype)
        parts.append(data)
    if reclaim_ns is not None:
        parts.append(_REC.pack(check_time(reclaim_ns, "reclaim"), 0, 0, 0, _RECLAIM))
    return b"".join(parts)


def encode_record_delete(time_ns: int) -> bytes:
    """The soft delete of a solution's records at ``time_ns``."""
    return _REC.pack(check_time(time_ns, "record"), 0, 0, 0, _DELETE)


def fold_records(blobs: Sequence[bytes]) -> list[Record]:
    """A record list, in write order, to the records it holds (soft-deleted
    ones marked), sorted by time: deletes and reclaims apply to what came
    before them."""
    out: list[Record] = []
    for blob in blobs:
        pos = 0
        while pos < len(blob):
            t, dlen, size, block, flag = _REC.unpack_from(blob, pos)
            pos += _REC.size
            if flag == _DELETE:
                for r in out:
                    if r.time_ns == t:
                        r.deleted = True
            elif flag == _RECLAIM:
                out = [r for r in out if r.time_ns > t]
            else:
                dtype = blob[pos:pos + dlen].decode("utf-8")
                pos += dlen
                out.append(Record(t, blob[pos:pos + size], dtype, block, flag == _DELETED))
                pos += size
    out.sort(key=lambda r: r.time_ns)
    return out
