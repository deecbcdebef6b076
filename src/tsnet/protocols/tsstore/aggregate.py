"""Time-windowed aggregation (``internal/aggregation``; spec §8.3, §9).

One engine serves both the REST read side (a batch whose last window is
flushed as partial) and the WebSocket push stream (windows close when a
record crosses their end, and a timer flushes the open one as partial).
The semantics follow the reference closely, quirks included:

* windows are epoch-aligned (Go integer division, truncating toward zero)
  and a window closes only when a record's timestamp reaches its end, so
  descending input merges into one window;
* a field's functions are chosen from its first value in each window;
  non-numeric fields, and numeric ones without configured functions, use
  ``last``;
* in a partial window ``sum`` is null; ``avg`` divides by every value
  counted, numeric or not; ``max``/``min`` of no numeric value stay at
  ``-MaxFloat64``/``MaxFloat64``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from tsnet.protocols.tsstore.durations import DurationError, parse_duration
from tsnet.protocols.tsstore.gojson import go_quote, go_trim_space

__all__ = [
    "AGG_FUNCS",
    "AggSpec",
    "AggregationError",
    "WindowAggregator",
    "aggregate",
    "parse_spec",
]

AGG_FUNCS = frozenset({"sum", "avg", "max", "min", "count", "last"})

_MAX_FLOAT = sys.float_info.max
_INT64_MIN = -(1 << 63)

Numeric = Mapping[str, bool] | AbstractSet[str] | None


class AggregationError(ValueError):
    """A bad aggregation parameter; ``str()`` is the reference's 400 text."""


@dataclass(frozen=True)
class AggSpec:
    """A validated aggregation config.

    ``fields`` holds the explicit ``(field, functions)`` pairs in request
    order (a repeated field: the last wins); ``defaults`` apply to numeric
    fields without explicit functions.
    """

    window_ns: int
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    defaults: tuple[str, ...] = ()

    def funcs_for(self, name: str, is_numeric: bool) -> tuple[str, ...]:
        """Functions for a field: explicit, else defaults if numeric, else last."""
        explicit = None
        for fname, funcs in self.fields:
            if fname == name:
                explicit = funcs
        if explicit:
            return explicit
        if is_numeric and self.defaults:
            return self.defaults
        return ("last",)


def _parse_field_aggs(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``ParseFieldAggs``: ``"temp:avg+min,events:sum"``."""
    if text == "":
        return ()
    out = []
    for raw in text.split(","):
        part = go_trim_space(raw)
        if part == "":
            continue
        name, sep, funcs_text = part.partition(":")
        if not sep:
            raise AggregationError(
                f"invalid agg_fields: invalid field aggregation: {go_quote(part)} "
                "(expected field:function)"
            )
        name = go_trim_space(name)
        funcs = []
        for fn_raw in go_trim_space(funcs_text).split("+"):
            fn = go_trim_space(fn_raw)
            if fn not in AGG_FUNCS:
                raise AggregationError(
                    f"invalid agg_fields: invalid aggregation function {go_quote(fn)} "
                    f"for field {go_quote(name)}"
                )
            funcs.append(fn)
        out.append((name, tuple(funcs)))
    return tuple(out)


def parse_spec(agg_window: str, agg_fields: str = "", agg_default: str = "") -> AggSpec | None:
    """Parse the ``agg_window``/``agg_fields``/``agg_default`` parameters.

    Returns None when ``agg_window`` is empty (no aggregation). With a
    window but no fields or default, every field uses ``last`` (as in Go).
    Checks run in the reference's order: window syntax, fields, window > 0
    (``aggregation window must be positive``, no prefix), defaults.
    """
    if agg_window == "":
        return None
    try:
        window = parse_duration(agg_window)
    except DurationError as exc:
        raise AggregationError(f"invalid agg_window: {exc}") from None
    fields = _parse_field_aggs(agg_fields)
    if window <= 0:
        raise AggregationError("aggregation window must be positive")
    defaults = []
    if agg_default != "":
        for raw in agg_default.split(","):
            fn = go_trim_space(raw)
            if fn not in AGG_FUNCS:
                raise AggregationError(f"invalid default aggregation function: {fn}")
            defaults.append(fn)
    return AggSpec(window_ns=window, fields=fields, defaults=tuple(defaults))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _go_trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _wrap64(v: int) -> int:
    return (v - _INT64_MIN) % (1 << 64) + _INT64_MIN


class _FieldState:
    __slots__ = ("count", "funcs", "last", "max", "min", "sum")

    def __init__(self, funcs: tuple[str, ...]) -> None:
        self.funcs = funcs
        self.sum = 0.0
        self.max = -_MAX_FLOAT
        self.min = _MAX_FLOAT
        self.count = 0
        self.last: object = None

    def add(self, value: object) -> None:
        self.last = value
        self.count += 1
        if _is_number(value):
            try:
                f = float(value)  # type: ignore[arg-type]
            except OverflowError:
                return
            self.sum += f
            if f > self.max:
                self.max = f
            if f < self.min:
                self.min = f

    def result(self, fn: str, partial: bool) -> object:
        if self.count == 0:
            return None
        if fn == "sum":
            return None if partial else self.sum
        if fn == "avg":
            return self.sum / self.count
        if fn == "max":
            return self.max
        if fn == "min":
            return self.min
        if fn == "count":
            return self.count
        return self.last


class WindowAggregator:
    """Streaming aggregation (Go's Accumulator) for the push path.

    ``numeric`` decides which fields are numeric: a mapping name -> bool
    (Go's numeric map; names not in it are sniffed), a set of numeric names
    (names not in it are not numeric), or None to sniff every value (JSON
    stores: int/float, not bool).
    """

    def __init__(self, spec: AggSpec, numeric: Numeric = None) -> None:
        self.spec = spec
        self.numeric = numeric
        self._window = spec.window_ns
        self._end = 0
        self._count = 0
        self._fields: dict[str, _FieldState] = {}
        self._funcs_cache: dict[tuple[str, bool], tuple[str, ...]] = {}

    @property
    def pending(self) -> int:
        """Records in the open window."""
        return self._count

    def _is_numeric(self, name: str, value: object) -> bool:
        numeric = self.numeric
        if isinstance(numeric, Mapping):
            known = numeric.get(name)
            if known is not None:
                return bool(known)
        elif numeric is not None:
            return name in numeric
        return _is_number(value)

    def _start(self, ts: int) -> None:
        start = _go_trunc_div(ts, self._window) * self._window
        self._end = _wrap64(start + self._window)
        self._fields = {}
        self._count = 0

    def _emit(self, partial: bool) -> list[tuple[int, dict]]:
        if self._count == 0:
            return []
        data: dict[str, object] = {}
        for name, state in self._fields.items():
            if len(state.funcs) == 1:
                data[name] = state.result(state.funcs[0], partial)
            else:
                for fn in state.funcs:
                    data[f"{name}_{fn}"] = state.result(fn, partial)
        self._fields = {}
        self._count = 0
        return [(self._end, data)]

    def add(self, ts: int, value: object) -> list[tuple[int, dict]]:
        """Feed one record; return the window it closed, if any.

        Values that are not JSON objects are skipped (the reference drops
        records that do not decode into a map).
        """
        if not isinstance(value, dict):
            return []
        out: list[tuple[int, dict]] = []
        if self._count == 0:
            self._start(ts)
        elif ts >= self._end:
            out = self._emit(partial=False)
            self._start(ts)
        self._count += 1
        for name, v in value.items():
            state = self._fields.get(name)
            if state is None:
                is_num = self._is_numeric(name, v)
                key = (name, is_num)
                funcs = self._funcs_cache.get(key)
                if funcs is None:
                    funcs = self._funcs_cache[key] = self.spec.funcs_for(name, is_num)
                state = self._fields[name] = _FieldState(funcs)
            state.add(v)
        return out

    def flush(self, partial: bool = True) -> list[tuple[int, dict]]:
        """Emit the open window (timer tick or stop); empty when nothing is open."""
        return self._emit(partial)


def aggregate(
    records: Iterable[tuple[int, object]],
    spec: AggSpec,
    numeric: Numeric = None,
    final_partial: bool = True,
) -> list[tuple[int, dict]]:
    """Batch aggregation (Go's AggregateBatch) over records in the given order.

    Returns ``(window end ns, data)`` per window. The last window is flushed
    as partial (``sum`` null) unless ``final_partial`` is False.
    """
    acc = WindowAggregator(spec, numeric)
    out: list[tuple[int, dict]] = []
    for ts, value in records:
        out.extend(acc.add(ts, value))
    out.extend(acc.flush(final_partial))
    return out
