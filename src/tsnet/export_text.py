"""The export rendered as text, as ``tsnet export`` prints it, at millions of lines a second.

An export is mostly series lines, and every line of one series starts with
the same text (kind, solution, metric, entity, tags).  So a series is
rendered once as a prefix, and its points as columns: the times and values
go through orjson in bulk (one C call a column, numpy arrays taken as they
are) and are joined with the prefix in C, with no dict and no Python code
per point.  The output is byte for byte what `line_text` gives for each
`tsnet.export.series_lines` line, which is what the command printed before
this module existed (the tests check both ways):

- numbers are Python's ``repr``: orjson writes the same digits, but not
  the same exponent form (``1e16`` for ``1e+16``, ``0.00001`` for
  ``1e-05``), so the few floats in Python's exponent range, and the
  non-finite ones (``"NaN"``, ``"Infinity"``), are written by ``repr``;
- a sample without a value has no ``value``, one with a text has ``text``
  (rare: ATSD); those series take a per-point path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson

from tsnet.export import json_number
from tsnet.model import SeriesKey, Value

#: how ``tsnet export`` has always written a line: compact, non-ASCII as is
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_VALUE = ',"value":'
_TEXT = ',"text":'
_END = "}\n"
_NS_PER_MS = 1_000_000
#: Python's repr writes floats below this (and not 0) or at/above the next
#: with an exponent, orjson does not (for the small ones) or spells it otherwise
_REPR_SMALL = 1e-4
_REPR_LARGE = 1e16


def line_text(line: dict) -> str:
    """One export line as ``tsnet export`` prints it, newline included."""
    return _encode(line) + "\n"


def series_prefix(solution: str, key: SeriesKey) -> str:
    """What every line of a series starts with, up to ``"time_ms":``."""
    metric, entity, tags = key
    head: dict[str, Any] = {"kind": "series", "solution": solution, "metric": metric}
    if entity is not None:
        head["entity"] = entity
    head["tags"] = dict(tags)
    return _encode(head)[:-1] + ',"time_ms":'


def _split(numbers: Any) -> list[str]:
    """The JSON texts of a column of numbers (orjson: ints as ints, floats
    with their shortest digits; NaN as null, fixed by the caller)."""
    return orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")


def _number(v: Any) -> str | None:
    """One value as the export writes it (None: the line has no value)."""
    return None if v is None else _encode(json_number(v))


def _floats(a: np.ndarray) -> list[str]:
    out = _split(a)
    mag = np.abs(a)
    odd = ~np.isfinite(a) | (mag >= _REPR_LARGE) | ((mag < _REPR_SMALL) & (mag != 0))
    for i in np.flatnonzero(odd).tolist():
        out[i] = _number(float(a[i]))
    return out


def _values(values: Sequence[Value] | np.ndarray) -> list[str | None]:
    """The value texts of a column: ints, floats, None (no value) mixed."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            return _floats(np.asarray(values, dtype=np.float64))
        return _split(np.asarray(values, dtype=np.int64))
    kinds = set(map(type, values))
    if kinds <= {int}:
        return _split(values)
    if kinds == {float}:
        return _floats(np.array(values, dtype=np.float64))
    return [_number(v) for v in values]


def series_text(prefix: str, times: Sequence[int] | np.ndarray,
                values: Sequence[Value] | np.ndarray,
                texts: Sequence[str | None] | None = None) -> str:
    """The lines of (a slice of) one merged series, in the order given:
    ``times`` in nanoseconds, ``values`` ints, floats or None, ``texts`` None
    or a str-or-None per point; ``prefix`` is `series_prefix` of the series."""
    n = len(times)
    if n != len(values) or (texts is not None and len(texts) != n):
        raise ValueError("times, values and texts differ in length")
    if not n:
        return ""
    ms = _split(np.floor_divide(np.asarray(times, dtype=np.int64), _NS_PER_MS))
    vals = _values(values)
    if texts is None and None not in vals:
        return "".join(chain.from_iterable(
            zip(repeat(prefix), ms, repeat(_VALUE), vals, repeat(_END))))
    out = []
    for t, v, x in zip(ms, vals, texts if texts is not None else [None] * n, strict=True):
        out.append("".join((prefix, t, "" if v is None else _VALUE + v,
                            "" if x is None else _TEXT + _encode(x), _END)))
    return "".join(out)


#: characters of one page of export text, and points of a series rendered at once
PAGE_CHARS = 1 << 20
SLICE = 1 << 16


class Pages:
    """Export text gathered into pages of whole lines, about `PAGE_CHARS`
    each: what an `IExportText` backend writes, so a long series is never
    one string, and the writer makes one call a page."""

    def __init__(self, size: int = PAGE_CHARS) -> None:
        self.size = size
        self._parts: list[str] = []
        self._chars = 0

    def add(self, text: str) -> str | None:
        """Add whole lines; a full page when there is one to write."""
        self._parts.append(text)
        self._chars += len(text)
        return self.take() if self._chars >= self.size else None

    def line(self, line: dict) -> str | None:
        """`add` one export line (a dict)."""
        return self.add(line_text(line))

    def series(self, prefix: str, times: Sequence[int] | np.ndarray,
               values: Sequence[Value] | np.ndarray,
               texts: Sequence[str | None] | None = None) -> Iterator[str]:
        """`add` the lines of a series (`series_text`, `SLICE` points at a
        time); yields the pages filled meanwhile."""
        for lo in range(0, len(times), SLICE):
            hi = lo + SLICE
            page = self.add(series_text(prefix, times[lo:hi], values[lo:hi],
                                        texts[lo:hi] if texts is not None else None))
            if page is not None:
                yield page

    def take(self) -> str:
        """What is gathered (maybe ""), and start a new page."""
        text = "".join(self._parts)
        self._parts, self._chars = [], 0
        return text
