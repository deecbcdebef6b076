"""Graphite plaintext lines, ``path value timestamp``, accepted as carbon accepts them.

What carbon does (``MetricLineReceiver.lineReceived``, ``MetricReceiver.metricReceived``,
``TaggedSeries.parse``, ``TaggedSeries.encode``) and what this module does with it:

* The line is ``line.strip().split()``: any whitespace separates, exactly three words.
  Value and timestamp are Python ``float()`` (so ``1_000``, ``1e3``, ``inf`` are numbers).
* A NaN value is dropped silently (carbon filters it before anything else): ``None``.
  A blank line is ``None`` too; carbon logs it as an invalid line, but it loses nothing.
* ``+inf`` / ``-inf`` values are kept: carbon's only filter is NaN and whisper stores the
  IEEE value; tsnet's model carries non-finite floats (its exports spell them out).
* Timestamps are seconds.  carbon takes ``int(ts) == -1`` as "now", so anything in
  ``(-2, -1]`` is ``now_ns``.  A NaN or infinite timestamp makes carbon raise outside its
  error handling (the TCP connection drops); here it is a rejected line.  Integer seconds
  are exact; fractional seconds are rounded to the millisecond, the finest unit a double of
  epoch seconds carries exactly over the whole int64-nanosecond range (2262 and before).
  Timestamps whose nanoseconds do not fit int64 are rejected.
* Paths go through carbon's ``TaggedSeries.parse``: ``name;tag=value;...`` or the
  OpenMetrics form ``name{tag="value",...}``, with carbon's checks and messages (tag names
  without ``;!^=``, values non-empty, without ``;``, not starting with ``~``).  carbon
  only *logs* a path that fails them and stores it under its raw name, where neither the
  tag index nor the plain tree can find it; here such a line is rejected with carbon's
  message.  carbon strips leading ``~`` from every name and replaces a ``name`` tag with
  the name; so does this module (the name is the metric, never a tag here).
* carbon validates nothing else: an untagged path is stored as a file path (dots become
  directories), so ``a..b``, ``.a.b`` and ``a.b`` all land in ``a/b.wsp``.  This module
  gives them the same series by dropping empty dot components (``a.b.`` too, whose
  whisper file would be unreachable), and rejects a path that is only dots.  Tagged names
  are stored by carbon under a hash of the whole path, so they are kept as sent.

`parse_line` is the reference; `GraphiteParser.take` is the bulk form for a stream, with a
cache of validated paths; tests/test_graphite_parse.py proves they agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from tsnet.plugin import INT64_MAX, INT64_MIN, Column, SeriesKey

NS_PER_S = 1_000_000_000
#: The integer seconds whose nanoseconds fit int64.
MIN_SECONDS = -(-INT64_MIN // NS_PER_S)
MAX_SECONDS = INT64_MAX // NS_PER_S
#: carbon truncates a bad line to this many characters before logging it.
LOG_LINE_LIMIT = 400
#: Entries `GraphiteParser` keeps before it starts its path cache afresh.
CACHE_LIMIT = 100_000

_PROHIBITED_TAG_CHARS = ";!^="
# One OpenMetrics label as carbon's parse_openmetrics matches it; `:?,` (a typo for
# `?:` in carbon) makes it accept `:,` between labels as well, kept for fidelity.
_OPENMETRICS_LABEL = re.compile(r'([^=]+)="((?:\\["\\]|[^"\\])+)"(?::?,|$)')


class GraphiteLineError(ValueError):
    """A line carbon would not store; ``str(err)`` is a short reason for a log line."""


def _validate_tag(tag: str, value: str) -> None:
    """carbon's ``validateTagAndValue``: same checks, same order, same messages."""
    if not tag:
        raise GraphiteLineError("Tag may not be empty")
    if not value:
        raise GraphiteLineError(f'Value for tag "{tag}" may not be empty')
    for char in _PROHIBITED_TAG_CHARS:
        if char in tag:
            raise GraphiteLineError(f'Character "{char}" is not allowed in tag "{tag}"')
    if ";" in value:
        raise GraphiteLineError(f'Character ";" is not allowed in value "{value}" of tag {tag}')
    if value[0] == "~":
        raise GraphiteLineError(f'Tag values are not allowed to start with "~" in tag "{tag}"')


def _sanitize_name(name: str) -> str:
    """carbon's ``sanitize_name_as_tag_value``: the name without leading ``~``."""
    sanitized = name.lstrip("~")
    if not sanitized:
        raise GraphiteLineError(
            f"Cannot use metric name {name} as tag value, results in an empty string"
        )
    return sanitized


def _parse_carbon_tags(path: str) -> tuple[str, dict[str, str]]:
    segments = path.split(";")
    metric = segments[0]
    if not metric:
        raise GraphiteLineError(f"Cannot parse path {path}, no metric found")
    tags: dict[str, str] = {}
    for segment in segments[1:]:
        tag = segment.split("=", 1)
        if len(tag) != 2 or not tag[0]:
            raise GraphiteLineError(f"Cannot parse path {path}, invalid segment {segment}")
        _validate_tag(tag[0], tag[1])
        tags[tag[0]] = tag[1]
    return metric, tags


def _parse_openmetrics(path: str) -> tuple[str, dict[str, str]]:
    parts = path[:-1].split("{", 2)
    if len(parts) != 2:  # carbon fails here with a bare unpacking error
        raise GraphiteLineError(f"Cannot parse path {path}, more than one '{{'")
    metric, rawtags = parts
    if not metric:
        raise GraphiteLineError(f"Cannot parse path {path}, no metric found")
    tags: dict[str, str] = {}
    while rawtags:
        m = _OPENMETRICS_LABEL.match(rawtags)
        if m is None:
            raise GraphiteLineError(f"Cannot parse path {path}, invalid segment {rawtags}")
        tag = m.group(1)
        value = m.group(2).replace('\\"', '"').replace("\\\\", "\\")
        _validate_tag(tag, value)
        tags[tag] = value
        rawtags = rawtags[m.end() :]
    return metric, tags


def series_key_of(path: str) -> SeriesKey:
    """The series a carbon path is stored as (see the module notes), or GraphiteLineError."""
    if path[-2:] == '"}' and "{" in path:
        metric, tags = _parse_openmetrics(path)
    else:
        metric, tags = _parse_carbon_tags(path)
    name = _sanitize_name(metric)
    tags.pop("name", None)  # carbon overwrites it with the name
    if not tags and (".." in name or name[0] == "." or name[-1] == "."):
        name = ".".join(part for part in name.split(".") if part)
        if not name:
            raise GraphiteLineError(f"Cannot parse path {path}, no metric found")
    return (name, None, tuple(sorted(tags.items())))


def _time_ns(text: str, now_ns: int) -> int:
    """carbon's float(timestamp) and its ``int(ts) == -1`` rule, as int64 nanoseconds."""
    try:
        seconds = int(text)  # exact for the common case; float() accepts the same digits
    except ValueError:
        try:
            ts = float(text)
        except ValueError:
            raise GraphiteLineError(f"invalid timestamp: {text}") from None
        if not math.isfinite(ts):
            raise GraphiteLineError(f"timestamp is not finite: {text}") from None
        if -2.0 < ts <= -1.0:
            return now_ns
        if ts.is_integer():
            seconds = int(ts)
        else:
            ns = round(ts * 1000) * 1_000_000
            if not INT64_MIN <= ns <= INT64_MAX:
                raise GraphiteLineError(f"timestamp out of range: {text}") from None
            return ns
    if seconds == -1:
        return now_ns
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise GraphiteLineError(f"timestamp out of range: {text}")
    return seconds * NS_PER_S


def _parse_words(
    line: str, now_ns: int, key_of: Callable[[str], SeriesKey]
) -> tuple[SeriesKey, int, float] | None:
    words = line.split()
    if len(words) != 3:
        if not words:
            return None
        raise GraphiteLineError(f"expected 3 fields (path value timestamp), got {len(words)}")
    path, value_text, time_text = words
    # carbon converts the timestamp first, then the value, then drops NaN values.
    try:
        float(time_text)
    except ValueError:
        raise GraphiteLineError(f"invalid timestamp: {time_text}") from None
    try:
        value = float(value_text)
    except ValueError:
        raise GraphiteLineError(f"invalid value: {value_text}") from None
    if value != value:
        return None
    time_ns = _time_ns(time_text, now_ns)
    return key_of(path), time_ns, value


def parse_line(line: str, now_ns: int) -> tuple[SeriesKey, int, float] | None:
    """One plaintext line: (series, time in ns, value), None when carbon drops it silently.

    ``now_ns`` is the time a ``-1`` timestamp stands for.  Raises GraphiteLineError.
    """
    return _parse_words(line, now_ns, series_key_of)


def log_form(line: str) -> str:
    """A bad line as carbon logs it: cut to 400 characters plus ``...``, stripped."""
    if len(line) > LOG_LINE_LIMIT:
        line = line[:LOG_LINE_LIMIT] + "..."
    return line.strip()


class GraphiteParser:
    """Parses batches of lines straight into columns, for one stream or many.

    Holds a cache of validated paths (raw path -> SeriesKey), started afresh past
    `CACHE_LIMIT` entries so that a client inventing paths cannot grow it without bound.
    """

    __slots__ = ("_keys", "limit")

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self._keys: dict[str, SeriesKey] = {}
        self.limit = limit

    def key_of(self, path: str) -> SeriesKey:
        """`series_key_of` through the cache; only valid paths are remembered."""
        keys = self._keys
        key = keys.get(path)
        if key is None:
            key = series_key_of(path)
            if len(keys) >= self.limit:
                keys.clear()
            keys[path] = key
        return key

    def take(
        self, lines: list[str], columns: dict[SeriesKey, Column], now_ns: int
    ) -> tuple[int, list[tuple[str, str]]]:
        """Append every good point of ``lines`` to ``columns``.

        Returns (points appended, [(bad line in `log_form`, reason), ...]).  Same results
        as `parse_line` line by line; the common line (cached path, float value, integer
        seconds) costs one split, one float, one int and one dict lookup.
        """
        keys = self._keys
        # raw path -> the appends of its column, for this call only (bounded by len(lines))
        sinks: dict[str, tuple] = {}
        bad: list[tuple[str, str]] = []
        count = 0
        lo, hi, ns_per_s = MIN_SECONDS, MAX_SECONDS, NS_PER_S
        for line in lines:
            words = line.split()
            if len(words) == 3:
                path, value_text, time_text = words
                sink = sinks.get(path)
                if sink is not None or path in keys:
                    try:
                        value = float(value_text)
                        seconds = int(time_text)
                    except ValueError:
                        pass
                    else:
                        if value == value and seconds != -1 and lo <= seconds <= hi:
                            if sink is None:
                                sink = sinks[path] = self._sink(keys[path], columns)
                            sink[0](seconds * ns_per_s)
                            sink[1](value)
                            if sink[2] is not None:
                                sink[2](None)
                            count += 1
                            continue
            try:
                point = _parse_words(line, now_ns, self.key_of)
            except GraphiteLineError as e:
                bad.append((log_form(line), str(e)))
                continue
            if point is None:
                continue
            key, time_ns, value = point
            path = words[0]
            sink = sinks.get(path)
            if sink is None:
                sink = sinks[path] = self._sink(key, columns)
            sink[0](time_ns)
            sink[1](value)
            if sink[2] is not None:
                sink[2](None)
            count += 1
        return count, bad

    @staticmethod
    def _sink(key: SeriesKey, columns: dict[SeriesKey, Column]) -> tuple:
        col = columns.get(key)
        if col is None:
            col = columns[key] = Column()
        texts = col.texts
        return (col.times.append, col.values.append, None if texts is None else texts.append)
