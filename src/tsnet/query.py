"""The read-side query engine, shared by every protocol family.

Everything here is a pure function over decoded series -- ``(SeriesKey, times,
values)`` with integer-nanosecond times, as `IStorage.read_series` returns them
-- so the OpenTSDB HTTP API, ATSD's read-back and ts-store's reads can share one
implementation and tests need neither sockets nor storage.

The semantics are OpenTSDB 2.4's (specs/opentsdb.md §3), read from its
``Aggregators``, ``AggregationIterator``, ``Downsampler``, ``RateSpan``,
``TagVFilter`` and ``DateTime`` classes:

- a query selects the series of one metric whose tags pass every filter
  (filters AND together; a READ token's tags are more literal filters);
- series are grouped by the values of the group-by filters' keys, and each
  group is aggregated into one output series;
- per series, in this order: downsample (buckets aligned to epoch multiples of
  the interval, optional fill), then rate; then across the series of a group
  the aggregator runs at every timestamp any of them has, linearly
  interpolating the series that lack that timestamp (``sum avg min max dev``
  and the percentiles), counting them as 0 (``zimsum count first last``) or
  leaving them out (``mimmin mimmax``).  A series takes part only between its
  first and its last point: there is no extrapolation.  Like OpenTSDB, which
  scans whole hours, points read past ``end`` interpolate the last output
  timestamps and are then cut off;
- integers stay integers when every value aggregated at a timestamp is an
  integer (OpenTSDB's ``runLong``, so ``avg`` of integers truncates toward zero,
  as in OpenTSDB); downsampled and rate values are always floats.

Speed: downsampling, the hot path of dashboards, finds each bucket with
`bisect` and reduces a list slice with built-ins, so its Python work is per
bucket, not per point.  Nothing here keeps state between calls.

Bounds: the loops whose work grows with the data spend a `Budget` handed in
(`tsnet.query_limits.QueryBudget`: points, buckets, output, time), which
raises a `QueryError` as soon as one is gone, so a query over its time really
stops; `bucket_count` tells a fill policy's buckets before anything is read.
User patterns are matched in linear time (`tsnet.patterns`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Protocol

from tsnet.model import SeriesKey, Value, parse_java_long, series_tags
from tsnet.patterns import PatternError, compile_regex, glob_matcher

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
HOUR_NS = 3600 * NS_PER_S
INT64_MAX = 2**63 - 1
#: the query times storage can hold: int64 nanoseconds, whole milliseconds
#: (1677-09-21 to 2262-04-11 UTC)
MAX_TIME_MS = INT64_MAX // NS_PER_MS - 1
MIN_TIME_MS = -MAX_TIME_MS
#: digits a number in a query may have: more is never a valid time or count,
#: and Python refuses to convert over 4300 of them
MAX_DIGITS = 40
_SHOWN = 64


def shown(text: str) -> str:
    """``text`` as an error message may quote it: the first `_SHOWN` characters."""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class QueryError(ValueError):
    """A query that cannot run.  ``str(err)`` is the message clients see (the
    OpenTSDB text where OpenTSDB has one); ``details`` is optional context."""

    def __init__(self, message: str, details: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.status = status


# -- time ---------------------------------------------------------------------

_DURATION_MS = MappingProxyType({
    "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
    "w": 7 * 86_400_000, "n": 30 * 86_400_000, "y": 365 * 86_400_000,
})


def parse_duration_ms(text: str) -> int:
    """``30s``, ``5m``, ``1h``, ``100ms``, ``2w``, ``1n`` (30 d), ``1y`` (365 d) ->
    milliseconds, with OpenTSDB's ``DateTime.parseDuration`` errors."""
    unit = 0
    while unit < len(text) and "0" <= text[unit] <= "9":
        unit += 1
        if unit >= len(text):
            raise QueryError(
                f"Invalid duration, must have an integer and unit: {shown(text)}")
    if unit == 0:
        raise QueryError(f"Invalid duration (number): {shown(text)}")
    if unit > MAX_DIGITS:
        raise QueryError(f"Duration must be < Long.MAX_VALUE ms: {shown(text)}")
    interval = int(text[:unit])
    if interval <= 0:
        raise QueryError(f"Zero or negative duration: {shown(text)}")
    suffix = text[-1].lower()
    if suffix == "s" and text[-2] == "m":
        return interval
    if suffix not in _DURATION_MS:
        raise QueryError(f"Invalid duration (suffix): {shown(text)}")
    ms = interval * _DURATION_MS[suffix]
    if ms > INT64_MAX:
        raise QueryError(f"Duration must be < Long.MAX_VALUE ms: {shown(text)}")
    return ms


_ABSOLUTE_FORMATS = MappingProxyType({
    (10, False): "%Y/%m/%d",
    (16, True): "%Y/%m/%d-%H:%M",
    (16, False): "%Y/%m/%d %H:%M",
    (19, True): "%Y/%m/%d-%H:%M:%S",
    (19, False): "%Y/%m/%d %H:%M:%S",
})
_DOTTED_MS = re.compile(r"[0-9]{10}\.[0-9]{1,3}\Z")
_MS_SUFFIX = re.compile(r"[0-9]+ms\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _zone(tz: str | None) -> Any:
    if not tz:
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    except Exception:
        raise QueryError(f"Invalid timezone name: {shown(tz)}") from None


def storable_time_ms(ms: int, what: str) -> int:
    """``ms`` if storage can hold it (int64 nanoseconds), else the 400 naming
    ``what`` (``Start time``, ``End time``)."""
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise QueryError(f"{what} [{shown(str(ms))}] is outside the times tsnet can store "
                         "(1677-09-21 to 2262-04-11 UTC)")
    return ms


def parse_time_ms(value: str | int | float, now_ms: int, tz: str | None = None) -> int:
    """An OpenTSDB time (``start``/``end``) -> epoch milliseconds.

    ``now``; ``<n><unit>-ago``; ``<n>ms``; an integer epoch whose *text* has at
    most 10 digits is seconds, more is milliseconds (a digit-count rule, unlike
    the 2^32 rule of writes); ``<10 digits>.<1-3 digits>`` is seconds with a
    fraction; ``yyyy/MM/dd[-HH:mm[:ss]]`` (or a space for ``-``) in ``tz``,
    UTC by default.  JSON numbers are read as their decimal text, as Jackson
    coerces them.
    """
    if isinstance(value, bool):
        raise QueryError(f"Invalid time: {value}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"Invalid time: {value}")
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, int) and abs(value) > 10 ** MAX_DIGITS:
        raise QueryError("Invalid time: the number has too many digits")
    else:
        text = str(value)
    if _MS_SUFFIX.match(text):
        if len(text) > MAX_DIGITS:
            raise QueryError(f"Invalid time: {shown(text)}. Value too long")
        return int(text[:-2])
    low = text.lower()
    if low == "now":
        return now_ms
    if low.endswith("-ago"):
        return now_ms - parse_duration_ms(text[:-4])
    if "/" in text or ":" in text:
        fmt = _ABSOLUTE_FORMATS.get((len(text), "-" in text))
        if fmt is None:
            raise QueryError(f"Invalid absolute date: {shown(text)}")
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            raise QueryError(f'Invalid date: {text}. Unparseable date: "{text}"') from None
        since = parsed.replace(tzinfo=_zone(tz)) - _EPOCH
        return (since.days * 86_400 + since.seconds) * 1000
    if "." in text:
        if not _DOTTED_MS.match(text):
            raise QueryError(
                f"Invalid time: {shown(text)}. Millisecond timestamps must be in the format "
                "<seconds>.<ms> where the milliseconds are limited to 3 digits")
        seconds, frac = text.split(".")
        return int(seconds) * 1000 + int(frac.ljust(3, "0"))
    try:
        t = parse_java_long(text)
    except ValueError as e:
        raise QueryError(f"Invalid time: {shown(text)}. {shown(str(e))}") from None
    if t < 0:
        raise QueryError(f"Invalid time: {text}. Negative timestamps are not supported.")
    return t * 1000 if len(text) <= 10 else t


# -- aggregators ----------------------------------------------------------------

LERP = "lerp"  # linear interpolation between a series' neighbours
ZIM = "zim"  # a missing value counts as zero
SKIP = "skip"  # a missing value is left out (mimmin, mimmax)
PREV = "prev"  # a missing value is the series' previous value


def _finite(vals: Sequence[float]) -> Sequence[float]:
    """``vals`` without NaN (OpenTSDB's double aggregators skip NaN)."""
    return [v for v in vals if v == v]


def _java_div(a: int, b: int) -> int:
    """Java's long division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _f_sum(vals: Sequence[float]) -> float:
    s = sum(vals)
    if s != s:
        vals = _finite(vals)
        return sum(vals) if vals else math.nan
    return s


def _f_avg(vals: Sequence[float]) -> float:
    s = sum(vals)
    if s != s:
        vals = _finite(vals)
        return sum(vals) / len(vals) if vals else math.nan
    return s / len(vals)


def _nan_skipping(pick: Callable[[Sequence[float]], float]) -> Callable[..., float]:
    """``pick`` (min or max) over the values that are not NaN, as OpenTSDB's
    double aggregators do; NaN when every value is."""

    def aggregate(vals: Sequence[float]) -> float:
        if any(map(math.isnan, vals)):
            vals = _finite(vals)
            return pick(vals) if vals else math.nan
        return pick(vals)

    return aggregate


_f_min = _nan_skipping(min)
_f_max = _nan_skipping(max)


def _welford(vals: Iterable[float]) -> float:
    """Population standard deviation, computed as OpenTSDB's ``StdDev`` does."""
    it = iter(vals)
    mean = float(next(it))
    n, m2 = 2, 0.0
    for x in it:
        new = mean + (x - mean) / n
        m2 += (x - mean) * (x - new)
        mean = new
        n += 1
    return 0.0 if n == 2 else math.sqrt(m2 / (n - 1))


def _f_dev(vals: Sequence[float]) -> float:
    vals = _finite(vals)
    return _welford(vals) if vals else math.nan


def _f_count(vals: Sequence[float]) -> float:
    return float(len(_finite(vals)))


def _f_median(vals: Sequence[float]) -> float:
    vals = sorted(_finite(vals))
    return vals[len(vals) // 2] if vals else math.nan


def _f_mult(vals: Sequence[float]) -> float:
    return float(math.prod(vals))


def _f_diff(vals: Sequence[float]) -> float:
    vals = _finite(vals)
    return float(vals[-1] - vals[0]) if vals else math.nan


def _f_squares(vals: Sequence[float]) -> float:
    vals = _finite(vals)
    return float(sum(v * v for v in vals)) if vals else math.nan


def _percentile(sorted_vals: Sequence[float], p: float, estimation: str) -> float:
    """Apache Commons Math ``Percentile`` (LEGACY, R_3 or R_7 estimation)."""
    n = len(sorted_vals)
    if n == 1:
        return sorted_vals[0]
    q = p / 100.0
    if estimation == "r3":
        pos: float = 0 if q <= 0.5 / n else round(n * q)  # round() is rint (half even)
    elif estimation == "r7":
        pos = n if q == 1 else 1 + (n - 1) * q
    else:
        pos = n if q == 1 else q * (n + 1)
    if pos < 1:
        return sorted_vals[0]
    if pos >= n:
        return sorted_vals[-1]
    lo = int(pos)
    lower, upper = sorted_vals[lo - 1], sorted_vals[lo]
    return lower + (pos - lo) * (upper - lower)


@dataclass(frozen=True)
class Aggregator:
    """One aggregation function, as OpenTSDB names it.

    ``reduce`` is OpenTSDB's ``runDouble`` (NaN skipped), ``reduce_int`` its
    ``runLong``, used when every value is an integer.  ``interpolation`` says
    what a series lacking a timestamp contributes when series are aggregated.
    """

    name: str
    interpolation: str
    reduce: Callable[[Sequence[float]], float]
    reduce_int: Callable[[Sequence[int]], int]
    #: f([v]) == v, so one series aggregates to itself without a call per point
    identity: bool = False


def _percentile_agg(name: str, p: float, estimation: str) -> Aggregator:
    def f(vals: Sequence[float]) -> float:
        vals = sorted(_finite(vals))
        return _percentile(vals, p, estimation) if vals else math.nan

    def i(vals: Sequence[int]) -> int:
        return int(_percentile(sorted(vals), p, estimation))

    return Aggregator(name, LERP, f, i, identity=True)


def _build_aggregators() -> Mapping[str, Aggregator]:
    first = (lambda v: v[0], lambda v: v[0])
    last = (lambda v: v[-1], lambda v: v[-1])
    aggs = [
        Aggregator("sum", LERP, _f_sum, sum, True),
        Aggregator("zimsum", ZIM, _f_sum, sum, True),
        Aggregator("pfsum", PREV, _f_sum, sum, True),
        Aggregator("avg", LERP, _f_avg, lambda v: _java_div(sum(v), len(v)), True),
        Aggregator("min", LERP, _f_min, min, True),
        Aggregator("mimmin", SKIP, _f_min, min, True),
        Aggregator("max", LERP, _f_max, max, True),
        Aggregator("mimmax", SKIP, _f_max, max, True),
        Aggregator("dev", LERP, _f_dev, lambda v: int(_welford(v))),
        Aggregator("count", ZIM, _f_count, len),
        Aggregator("first", ZIM, *first, True),
        Aggregator("last", ZIM, *last, True),
        Aggregator("median", LERP, _f_median, lambda v: sorted(v)[len(v) // 2], True),
        Aggregator("mult", LERP, _f_mult, math.prod, True),
        Aggregator("diff", LERP, _f_diff, lambda v: v[-1] - v[0]),
        Aggregator("squareSum", ZIM, _f_squares, lambda v: sum(x * x for x in v)),
        # "none" never aggregates: every series is its own group.  When points
        # must still be merged (several in one output second) the last one wins.
        Aggregator("none", ZIM, *last, True),
    ]
    for p, tag in ((99.9, "999"), (99.0, "99"), (95.0, "95"), (90.0, "90"), (75.0, "75"),
                   (50.0, "50")):
        aggs.append(_percentile_agg(f"p{tag}", p, "legacy"))
        aggs.append(_percentile_agg(f"ep{tag}r3", p, "r3"))
        aggs.append(_percentile_agg(f"ep{tag}r7", p, "r7"))
    return MappingProxyType({a.name: a for a in aggs})


#: every aggregator by its OpenTSDB name (what /api/aggregators lists)
AGGREGATORS: Mapping[str, Aggregator] = _build_aggregators()


def get_aggregator(name: str) -> Aggregator:
    agg = AGGREGATORS.get(name)
    if agg is None:
        raise QueryError(f"No such aggregation function: {name}")
    return agg


def reduce_values(agg: Aggregator, vals: Sequence[Value]) -> Value:
    """Aggregate the values of one timestamp: integer maths when all are ints."""
    if all(type(v) is int for v in vals):
        return agg.reduce_int(vals)  # type: ignore[arg-type]
    return agg.reduce(vals)  # type: ignore[arg-type]


# -- tag filters ----------------------------------------------------------------

FILTER_DOCS = MappingProxyType({
    "literal_or": "Matches when the tag value is one of the |-separated values "
                  "(case sensitive).",
    "iliteral_or": "Matches when the tag value is one of the |-separated values, "
                   "ignoring case.",
    "not_literal_or": "Matches when the series lacks the tag or its value is none of "
                      "the |-separated values (case sensitive).",
    "not_iliteral_or": "Matches when the series lacks the tag or its value is none of "
                       "the |-separated values, ignoring case.",
    "wildcard": "Glob match of the tag value with * (case sensitive); * alone matches "
                "any value of the key.",
    "iwildcard": "Glob match of the tag value with * ignoring case; * alone matches "
                 "any value of the key.",
    "regexp": "Matches when the regular expression is found in the tag value.",
    "not_key": "Matches series that do not have the tag key at all; the filter "
               "must be empty.",
})


def filter_examples(ftype: str) -> str:
    """The ``examples`` line of /api/config/filters, in OpenTSDB's format."""
    if ftype == "not_key":
        return ('host=not_key()  {"type":"not_key","tagk":"host","filter":"",'
                '"groupBy":false}')
    sample = {"wildcard": "web*", "iwildcard": "web*", "regexp": ".*"}.get(ftype, "web01")
    wide = {"wildcard": "web*.tsdb.net", "iwildcard": "web*.tsdb.net", "regexp": ".*"}.get(
        ftype, "web01|web02|web03")
    return (f"host={ftype}({sample}),  host={ftype}({wide})  "
            f'{{"type":"{ftype}","tagk":"host","filter":"{wide}","groupBy":false}}')


#: filter types whose pattern is matched against each value, not looked up
PATTERN_TYPES = frozenset({"regexp", "wildcard", "iwildcard"})


def _java_pipe_split(text: str) -> list[str]:
    """Java's ``split("\\\\|")``: trailing empty strings are dropped."""
    parts = text.split("|")
    while parts and parts[-1] == "":
        parts.pop()
    return parts


@dataclass(frozen=True)
class TagFilter:
    """One tag filter of a sub-query.  Build with `make_filter`."""

    type: str
    tagk: str
    filter: str
    group_by: bool = False
    match_value: Callable[[str | None], bool] = field(
        default=lambda v: True, compare=False, repr=False)

    def matches(self, tags: Mapping[str, str]) -> bool:
        return self.match_value(tags.get(self.tagk))

    def as_json(self) -> dict[str, Any]:
        """The filter as /api/query echoes it with ``showQuery``."""
        return {"tagk": self.tagk, "filter": self.filter, "group_by": self.group_by,
                "type": self.type}


def _literals(pattern: str, fold: bool) -> frozenset[str]:
    if not pattern:
        raise QueryError("Filter cannot be null or empty")
    if pattern == "|":
        raise QueryError("Filter must contain more than just a pipe")
    parts = _java_pipe_split(pattern)
    return frozenset(p.lower() for p in parts) if fold else frozenset(parts)


def _value_matcher(ftype: str, pattern: str) -> Callable[[str | None], bool]:
    if ftype in ("literal_or", "not_literal_or", "iliteral_or", "not_iliteral_or"):
        fold = ftype in ("iliteral_or", "not_iliteral_or")
        lits = _literals(pattern, fold)
        if ftype.startswith("not_"):
            if fold:
                return lambda v: v is None or v.lower() not in lits
            return lambda v: v is None or v not in lits
        if fold:
            return lambda v: v is not None and v.lower() in lits
        return lambda v: v is not None and v in lits
    if ftype in ("wildcard", "iwildcard"):
        if not pattern:
            raise QueryError("Filter cannot be null or empty")
        if "*" not in pattern:
            raise QueryError("Filter must contain an asterisk")
        if pattern.strip("*") == "":
            return lambda v: v is not None
        glob = glob_matcher(pattern, fold=ftype == "iwildcard")
        return lambda v: v is not None and glob(v)
    if ftype == "regexp":
        if not pattern:
            raise QueryError("Filter cannot be null or empty")
        try:
            found = compile_regex(pattern)
        except PatternError as e:
            raise QueryError(f"Invalid regular expression {shown(pattern)!r}: {e}") from None
        return lambda v: v is not None and found(v)
    if ftype == "not_key":
        if pattern:
            raise QueryError("The filter must be empty for the not_key filter")
        return lambda v: v is None
    raise QueryError(f"Could not find a tag value filter of the type: {ftype}")


def make_filter(ftype: str, tagk: str, pattern: str | None, group_by: bool = False) -> TagFilter:
    """A filter of a named type, as OpenTSDB's ``TagVFilter.Builder`` makes it."""
    if not ftype:
        raise QueryError("The filter type cannot be null or empty")
    if not tagk:
        raise QueryError("The tagk cannot be null or empty")
    pattern = pattern or ""
    return TagFilter(ftype, tagk, pattern, group_by, _value_matcher(ftype, pattern))


def filter_from_tag_value(tagk: str, value: str, group_by: bool) -> TagFilter:
    """The filter a ``{tagk: value}`` pair stands for (old ``tags`` syntax and the
    ``m=metric{...}`` braces): ``*`` groups by any value, ``type(x)`` names a
    filter, ``web*`` is a case-insensitive wildcard (as OpenTSDB's shortcut is),
    anything else is ``literal_or`` (so ``a|b`` is either value)."""
    if not tagk:
        raise QueryError("Tagk cannot be null or empty")
    if not value:
        raise QueryError("Filter cannot be null or empty")
    if value == "*":
        return make_filter("wildcard", tagk, "*", group_by)
    paren = value.find("(")
    if paren > -1:
        if not value.endswith(")"):
            raise QueryError(f"Filter must end with a ')': {value}")
        return make_filter(value[:paren].lower(), tagk, value[paren + 1:-1], group_by)
    if "*" in value:
        # OpenTSDB's shortcut builds a case-insensitive wildcard that calls itself
        # "wildcard".
        return TagFilter("wildcard", tagk, value, group_by, _value_matcher("iwildcard", value))
    return make_filter("literal_or", tagk, value, group_by)


def add_filters(filters: list[TagFilter], new: Iterable[TagFilter]) -> list[TagFilter]:
    """Append ``new`` to ``filters``; a group-by filter equal to one already there
    turns that one into a group-by filter instead (``TagVFilter.mapToFilters``)."""
    for f in new:
        same = next((i for i, g in enumerate(filters)
                     if (g.type, g.tagk, g.filter) == (f.type, f.tagk, f.filter)), None)
        if same is not None and f.group_by:
            g = filters[same]
            filters[same] = TagFilter(g.type, g.tagk, g.filter, True, g.match_value)
        else:
            filters.append(f)
    return filters


def tags_to_filters(tags: Mapping[str, Any], group_by: bool = True) -> list[TagFilter]:
    """The filters of an old-style ``tags`` map (group-by by default)."""
    out: list[TagFilter] = []
    for k, v in tags.items():
        add_filters(out, [filter_from_tag_value(str(k), "" if v is None else str(v), group_by)])
    return out


def literal_filters(tags: Iterable[tuple[str, str]]) -> list[TagFilter]:
    """Non-grouping literal filters, e.g. a READ token's tags ANDed to a query."""
    return [make_filter("literal_or", k, v, False) for k, v in tags]


def literal_tags(filters: Iterable[TagFilter]) -> dict[str, frozenset[str]]:
    """What a tag index can look up for ``filters`` (`ITagIndex.list_series_where`):
    tag key -> the values a selected series may have there, from the
    case-sensitive ``literal_or`` filters (``k=v``, ``k=a|b``, a READ token's
    tags), those of one key intersected.  The other types are left to the
    filters themselves, which still run on what the index finds: this only
    narrows which series are read."""
    out: dict[str, frozenset[str]] = {}
    for f in filters:
        if f.type == "literal_or":
            values = frozenset(_java_pipe_split(f.filter))
            out[f.tagk] = out[f.tagk] & values if f.tagk in out else values
    return out


def _tag_pair(text: str) -> tuple[str, str]:
    """OpenTSDB ``Tags.parse`` of one ``k=v``."""
    kv = text.split("=")
    if len(kv) != 2 or not kv[0] or not kv[1]:
        raise QueryError(f"invalid tag: {text}")
    return kv[0], kv[1]


def parse_metric_and_filters(text: str) -> tuple[str, list[TagFilter]]:
    """``metric{k=v,...}{k=filter,...}``: the first braces group by, the second
    filter only (OpenTSDB ``Tags.parseWithMetricAndFilters``)."""
    if not text:
        raise QueryError("Metric cannot be null or empty")
    curly = text.find("{")
    if curly < 0:
        return text, []
    if not text.endswith("}"):
        raise QueryError(f"Missing '}}' at the end of: {text}")
    if curly == len(text) - 2:
        return text[:-2], []
    close = text.find("}")
    filters: list[TagFilter] = []
    if close != len(text) - 1:
        for item in text[text.rfind("{") + 1:-1].split(","):
            if not item:
                break
            try:
                k, v = _tag_pair(item)
                add_filters(filters, [filter_from_tag_value(k, v, False)])
            except QueryError as e:
                raise QueryError(f"When parsing filter '{item}': {e}") from None
    for item in text[curly + 1:close].split(","):
        if not item and close != len(text) - 1:
            break
        try:
            k, v = _tag_pair(item)
            add_filters(filters, [filter_from_tag_value(k, v, True)])
        except QueryError as e:
            raise QueryError(f"When parsing tag '{item}': {e}") from None
    return text[:curly], filters


def matches_all(filters: Sequence[TagFilter], tags: Mapping[str, str]) -> bool:
    return all(f.matches(tags) for f in filters)


# -- budgets ----------------------------------------------------------------------


class Budget(Protocol):
    """What the engine spends while it works (`tsnet.query_limits.QueryBudget`):
    each call raises a `QueryError` once a limit or the time is gone."""

    def check(self) -> None: ...

    def spend(self, units: int = 1) -> None: ...

    def add_buckets(self, buckets: int) -> None: ...

    def add_output(self, items: int, what: str = "points") -> None: ...


class Unbounded:
    """The budget of a caller that sets no limits (the engine's own tests)."""

    def check(self) -> None:
        pass

    def spend(self, units: int = 1) -> None:
        pass

    def add_buckets(self, buckets: int) -> None:
        pass

    def add_output(self, items: int, what: str = "points") -> None:
        pass


#: how many steps of a Python loop run between two calls into the budget
STEPS = 1 << 12


# -- downsampling and rate ------------------------------------------------------

FILL_POLICIES = ("none", "nan", "null", "zero")


@dataclass(frozen=True)
class Downsample:
    """``<interval>[c]-<agg>[-<fill>]``; ``interval_ns`` 0 means ``0all``."""

    spec: str
    interval_ns: int
    aggregator: Aggregator
    fill: str = "none"


def parse_downsample(spec: str) -> Downsample:
    """Parse an OpenTSDB downsample spec, with ``DownsamplingSpecification``'s
    errors.  A calendar (``c``) interval is aligned to the epoch in UTC, which
    is the same thing for ms..days."""
    parts = spec.split("-")
    while parts and parts[-1] == "":
        parts.pop()
    if len(parts) < 2:
        raise QueryError(f"Invalid downsampling specifier '{spec}': must provide at least "
                         "interval and function")
    if len(parts) > 3:
        raise QueryError(f"Invalid downsampling specifier '{spec}': must consist of "
                         "interval, function, and optional fill policy")
    interval = parts[0]
    if "all" in interval:
        interval_ns = 0
    else:
        if interval.endswith("c"):
            interval = interval[:-1]
        interval_ns = parse_duration_ms(interval) * NS_PER_MS
    agg = AGGREGATORS.get(parts[1])
    if agg is None:
        raise QueryError(f"No such downsampling function: {parts[1]}")
    if agg.name == "none":
        raise QueryError("cannot use the NONE aggregator for downsampling")
    fill = "none"
    if len(parts) == 3:
        fill = parts[2].lower()
        if fill not in FILL_POLICIES:
            raise QueryError(f"Unrecognized fill policy: {parts[2]}")
    return Downsample(spec, interval_ns, agg, fill)


def bucket_count(ds: Downsample, start_ns: int, end_ns: int) -> int:
    """The buckets of [start, end] a fill policy makes: known before any point
    is read, so a query can be refused before it costs anything."""
    if ds.interval_ns == 0:
        return 1
    step = ds.interval_ns
    first = -(-start_ns // step) * step
    last = end_ns - end_ns % step
    return max(0, (last - first) // step + 1)


def downsample(
    times: Sequence[int], values: Sequence[Value], ds: Downsample, start_ns: int, end_ns: int,
    budget: Budget | None = None,
) -> tuple[list[int], list[Value]]:
    """Bucket a time-sorted series: one float per interval, at the interval's
    start, for the buckets starting in [start, end].

    A bucket holds the points of [b, b + interval), so the last one reaches past
    ``end`` (read that far).  ``0all`` is one bucket at ``start`` over
    [start, end].  With a fill policy every bucket of the range is present;
    missing ones are NaN (``nan``, ``null``) or 0.0 (``zero``).  Every bucket
    made is spent from ``budget``.
    """
    budget = budget or Unbounded()
    reduce = ds.aggregator.reduce
    if ds.interval_ns == 0:
        budget.add_buckets(1)
        lo, hi = bisect_left(times, start_ns), bisect_right(times, end_ns)
        if lo == hi:
            return ([start_ns], [0.0 if ds.fill == "zero" else math.nan]) \
                if ds.fill != "none" else ([], [])
        return [start_ns], [float(reduce(values[lo:hi]))]
    step = ds.interval_ns
    first_bucket = -(-start_ns // step) * step  # the first bucket starting at or after start
    out_t: list[int] = []
    out_v: list[Value] = []
    i = bisect_left(times, first_bucket)
    n = len(times)
    steps = 0
    while i < n:
        b = times[i] - times[i] % step
        if b > end_ns:
            break
        j = bisect_left(times, b + step, i)
        out_t.append(b)
        out_v.append(float(reduce(values[i:j])))
        i = j
        steps += 1
        if steps == STEPS:
            budget.add_buckets(steps)
            steps = 0
    budget.add_buckets(steps)
    if ds.fill == "none":
        return out_t, out_v
    missing: Value = 0.0 if ds.fill == "zero" else math.nan
    budget.add_buckets(bucket_count(ds, start_ns, end_ns) - len(out_t))
    have = dict(zip(out_t, out_v, strict=True))
    last_bucket = end_ns - end_ns % step
    all_t = list(range(first_bucket, last_bucket + 1, step))
    return all_t, [have.get(b, missing) for b in all_t]


@dataclass(frozen=True)
class RateOptions:
    """``rateOptions``: counters roll over at ``counter_max``; a rate above
    ``reset_value`` (when > 0) after a roll-over is reported as 0;
    ``drop_resets`` drops the point where a counter went down instead."""

    counter: bool = False
    counter_max: int | float = INT64_MAX
    reset_value: int | float = 0
    drop_resets: bool = False


def rate(times: Sequence[int], values: Sequence[Value],
         opts: RateOptions | None = None,
         budget: Budget | None = None) -> tuple[list[int], list[Value]]:
    """Per-second rate between consecutive points (OpenTSDB ``RateSpan``); the
    first point has none.  Integer differences are exact."""
    opts = opts or RateOptions()
    budget = budget or Unbounded()
    out_t: list[int] = []
    out_v: list[Value] = []
    if len(times) < 2:
        return out_t, out_v
    t0, v0 = times[0], values[0]
    steps = 0
    for t1, v1 in zip(times[1:], values[1:], strict=True):
        steps += 1
        if steps == STEPS:
            budget.spend(steps)
            steps = 0
        dt = (t1 - t0) / NS_PER_S
        diff = v1 - v0  # type: ignore[operator]
        if opts.counter and diff < 0:
            if opts.drop_resets:
                t0, v0 = t1, v1
                continue
            diff = opts.counter_max - v0 + v1  # type: ignore[operator]
            r = diff / dt
            if opts.reset_value > 0 and r > opts.reset_value:
                r = 0.0
        else:
            r = diff / dt
        out_t.append(t1)
        out_v.append(float(r))
        t0, v0 = t1, v1
    return out_t, out_v


# -- aggregation across series --------------------------------------------------


def _lerp(t: int, t0: int, y0: Value, t1: int, y1: Value) -> Value:
    if type(y0) is int and type(y1) is int:
        return y0 + _java_div((t - t0) * (y1 - y0), t1 - t0)
    return y0 + (t - t0) * (y1 - y0) / (t1 - t0)  # type: ignore[operator]


def _reduce_all(agg: Aggregator, columns: Sequence[Sequence[Value]],
                budget: Budget) -> list[Value]:
    """`reduce_values` of every column, spending the budget as it goes."""
    out: list[Value] = []
    for i in range(0, len(columns), STEPS):
        out.extend([reduce_values(agg, col) for col in columns[i:i + STEPS]])
        budget.spend(STEPS)
    return out


def aggregate(series: Sequence[tuple[Sequence[int], Sequence[Value]]],
              agg: Aggregator, budget: Budget | None = None) -> tuple[list[int], list[Value]]:
    """Aggregate time-sorted series into one, at every timestamp any of them has.

    A series contributes at timestamps between its first and last point: its
    own value, or per ``agg.interpolation`` a linear interpolation (``lerp``),
    0 (``zim``), its previous value (``prev``) or nothing (``skip``).  The work
    is series times timestamps, so it spends ``budget`` step by step.
    """
    budget = budget or Unbounded()
    series = [s for s in series if len(s[0])]
    if not series:
        return [], []
    if len(series) == 1:
        times, values = series[0]
        if agg.identity:
            return list(times), list(values)
        return list(times), _reduce_all(agg, [(v,) for v in values], budget)
    union = sorted(set().union(*(s[0] for s in series)))
    budget.spend(len(union))
    position = {t: i for i, t in enumerate(union)}
    columns: list[list[Value]] = [[] for _ in union]
    mode = agg.interpolation
    steps = 0
    for times, values in series:
        k, end = position[times[0]], position[times[-1]]
        j = 0  # index of the series' next point at or after union[k]
        while k <= end:
            steps += 1
            if steps == STEPS:
                budget.spend(steps)
                steps = 0
            t = union[k]
            if times[j] == t:
                columns[k].append(values[j])
                j += 1
            elif mode == LERP:
                columns[k].append(_lerp(t, times[j - 1], values[j - 1], times[j], values[j]))
            elif mode == ZIM:
                columns[k].append(0 if type(values[j - 1]) is int and type(values[j]) is int
                                  else 0.0)
            elif mode == PREV:
                columns[k].append(values[j - 1])
            k += 1
    return union, _reduce_all(agg, columns, budget)


def merge_resolution(times: Sequence[int], values: Sequence[Value], unit_ns: int,
                     agg: Aggregator,
                     budget: Budget | None = None) -> tuple[list[int], list[Value]]:
    """Points that fall in one output unit (a second without ``msResolution``)
    merged with the query's aggregator; times truncated to the unit."""
    budget = budget or Unbounded()
    keys = [t - t % unit_ns for t in times]
    budget.spend(len(keys))
    if len(set(keys)) == len(keys):
        return keys, list(values)
    out_t: list[int] = []
    out_v: list[Value] = []
    i, n = 0, len(keys)
    steps = 0
    while i < n:
        steps += 1
        if steps == STEPS:
            budget.spend(steps)
            steps = 0
        j = i + 1
        while j < n and keys[j] == keys[i]:
            j += 1
        out_t.append(keys[i])
        out_v.append(values[i] if j == i + 1 else reduce_values(agg, values[i:j]))
        i = j
    return out_t, out_v


# -- sub-queries ----------------------------------------------------------------


@dataclass
class SubQuery:
    """One metric query: what to select, how to group, transform and aggregate."""

    aggregator: Aggregator
    metric: str
    filters: list[TagFilter] = field(default_factory=list)
    downsample: Downsample | None = None
    rate: bool = False
    rate_options: RateOptions | None = None
    explicit_tags: bool = False
    index: int = 0

    def selects(self, tags: Mapping[str, str]) -> bool:
        """Whether a series with these tags belongs to the query."""
        if self.explicit_tags and set(tags) != {f.tagk for f in self.filters}:
            return False
        return matches_all(self.filters, tags)

    def group_keys(self) -> list[str]:
        out: list[str] = []
        for f in self.filters:
            if f.group_by and f.tagk not in out:
                out.append(f.tagk)
        return out

    def read_range(self, start_ns: int, end_ns: int) -> tuple[int, int]:
        """The stored time range the query needs.

        Past ``end``: the last downsampling bucket reaches past it, and, as
        OpenTSDB scans whole hours, points up to the next hour boundary
        interpolate the series that lack the last output timestamps.
        """
        ds = self.downsample
        if ds is not None and ds.interval_ns == 0:
            return start_ns, end_ns
        hi = end_ns
        if ds is not None:
            hi = end_ns - end_ns % ds.interval_ns + ds.interval_ns - 1
        return start_ns, hi - hi % HOUR_NS + HOUR_NS - 1

    def downsample_end(self, start_ns: int, end_ns: int) -> int:
        """The last time downsampling buckets start at (buckets reach past ``end``)."""
        ds = self.downsample
        if ds is None or ds.interval_ns == 0:
            return end_ns
        return self.read_range(start_ns, end_ns)[1]

    def planned_buckets(self, start_ns: int, end_ns: int) -> int:
        """The buckets a fill policy makes for each selected series (0 without
        one: then there are at most as many as points read)."""
        ds = self.downsample
        if ds is None or ds.fill == "none":
            return 0
        return bucket_count(ds, start_ns, self.downsample_end(start_ns, end_ns))

    def select(self, keys: Iterable[SeriesKey], budget: Budget | None = None) -> list[SeriesKey]:
        """The keys the sub-query selects, spending ``budget`` per key.  A
        pattern costs its length times the value's for every key, so with one
        the time is looked at for each key, not every `STEPS` of them."""
        budget = budget or Unbounded()
        patterned = any(f.type in PATTERN_TYPES for f in self.filters)
        out = []
        for i, key in enumerate(keys):
            if patterned:
                budget.check()
            elif not i % STEPS:
                budget.spend(STEPS)
            if self.selects(series_tags(key)):
                out.append(key)
        return out

    def as_json(self) -> dict[str, Any]:
        """The sub-query as /api/query echoes it (``showQuery``)."""
        ro = self.rate_options
        return {
            "aggregator": self.aggregator.name,
            "metric": self.metric,
            "tsuids": None,
            "downsample": self.downsample.spec if self.downsample else None,
            "rate": self.rate,
            "filters": [f.as_json() for f in self.filters],
            "explicitTags": self.explicit_tags,
            "index": self.index,
            "rateOptions": None if ro is None else {
                "counter": ro.counter, "counterMax": ro.counter_max,
                "resetValue": ro.reset_value, "dropResets": ro.drop_resets},
            "tags": {f.tagk: f"{f.type}({f.filter})" for f in self.filters if f.group_by},
        }


@dataclass
class Result:
    """One output series of a sub-query."""

    metric: str
    tags: dict[str, str]
    aggregate_tags: list[str]
    times: list[int]
    values: list[Value]
    index: int = 0


def common_tags(tag_sets: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], list[str]]:
    """OpenTSDB ``SpanGroup.computeTags``: keys whose values differ between the
    series are aggregated tags; the others (even when only some series have
    them) are the group's tags."""
    tags: dict[str, str] = {}
    aggregated: set[str] = set()
    for ts in tag_sets:
        for k, v in ts.items():
            if k in aggregated:
                continue
            have = tags.get(k)
            if have is None:
                tags[k] = v
            elif have != v:
                aggregated.add(k)
                del tags[k]
    return dict(sorted(tags.items())), sorted(aggregated)


def _prepare(times: Sequence[int], values: Sequence[Value], lo: int,
             hi: int) -> tuple[Sequence[int], Sequence[Value]]:
    """The points in [lo, hi] that carry a number (text-only samples have None)."""
    a, b = bisect_left(times, lo), bisect_right(times, hi)
    if a or b != len(times):
        times, values = times[a:b], values[a:b]
    if None in values:
        pairs = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
        times, values = [p[0] for p in pairs], [p[1] for p in pairs]
    return times, values


def run_sub_query(
    sub: SubQuery,
    series: Iterable[Sequence[Any]],
    start_ns: int,
    end_ns: int,
    unit_ns: int = 1,
    budget: Budget | None = None,
) -> list[Result]:
    """Run ``sub`` over ``series`` (``(SeriesKey, times, values, ...)`` as
    `read_series` returns them; other metrics are ignored).

    Output points are in [start, end], their times truncated to ``unit_ns``
    (points sharing a unit merged with the aggregator).  Results are ordered by
    their group's tag values.  The work and the output points are spent from
    ``budget``, which stops the run once a limit is passed.
    """
    budget = budget or Unbounded()
    lo, hi = sub.read_range(start_ns, end_ns)
    groups: dict[tuple, list[tuple[SeriesKey, Sequence[int], Sequence[Value]]]] = {}
    gkeys = sub.group_keys()
    for item in series:
        budget.spend()
        key: SeriesKey = item[0]
        if key[0] != sub.metric:
            continue
        tags = series_tags(key)
        if not sub.selects(tags):
            continue
        if sub.aggregator.name == "none":
            gid: tuple = (key[1] or "", key[2])
        else:
            gid = tuple(tags.get(k) or "" for k in gkeys)
        groups.setdefault(gid, []).append((key, item[1], item[2]))
    results: list[Result] = []
    for gid in sorted(groups):
        members = groups[gid]
        prepared = []
        for _, times, values in members:
            t, v = _prepare(times, values, lo, hi)
            budget.spend(len(t))
            if sub.downsample is not None:
                t, v = downsample(t, v, sub.downsample, start_ns,
                                  sub.downsample_end(start_ns, end_ns), budget)
            if sub.rate:
                t, v = rate(t, v, sub.rate_options, budget)
            prepared.append((t, v))
        times_out, values_out = aggregate(prepared, sub.aggregator, budget)
        a, b = bisect_left(times_out, start_ns), bisect_right(times_out, end_ns)
        times_out, values_out = times_out[a:b], values_out[a:b]
        if unit_ns > 1:
            times_out, values_out = merge_resolution(times_out, values_out, unit_ns,
                                                     sub.aggregator, budget)
        budget.add_output(len(times_out))
        tags, aggregated = common_tags([series_tags(k) for k, _, _ in members])
        results.append(Result(sub.metric, tags, aggregated, times_out, values_out, sub.index))
    return results
