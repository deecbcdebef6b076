"""The body of an OpenTSDB HTTP ``/api/put``, parsed the way OpenTSDB 2.4 parses it.

OpenTSDB deserialises the body with Jackson into ``IncomingDataPoint`` beans
(specs/opentsdb.md §2.1), and clients depend on Jackson's leniency: string
timestamps, fractional timestamps truncated, numbers where strings are expected,
and the non-numeric tokens ``NaN``, ``Infinity``, ``+INF``... parsed (to be
rejected later as values).  What Jackson cannot bind fails the *whole* request;
what binds but is invalid fails only its point (§2.2).  So this module has two
layers, both pure functions over bytes and values:

* `parse_put_body` -> a list of `RawPoint` (or None for a JSON ``null``), or a
  `PutBodyError` for the whole request;
* `validate_point` -> series key, time and value, or a `PointError` whose text is
  OpenTSDB's ``details`` error string.

Compressed bodies are inflated under a size cap by `tsnet.http.bodies`, the
same for every family.

The number and character rules are the telnet parser's (`telnet_parse`); only
the HTTP error strings differ.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from tsnet.http.bodies import BodyError
from tsnet.model import INT64_MAX, INT64_MIN, SampleSet, SeriesKey, series_key
from tsnet.protocols.opentsdb.telnet_parse import (
    AUTH_TAG,
    MAX_MS,
    SECONDS_LIMIT,
    PutError,
    _java_double,
    _java_map,
    _value_dump,
    name_error,
    parse_value,
)

#: OpenTSDB's ``tsd.storage.max_tags`` default.
MAX_TAGS = 8

# Whole-request messages (BadRequestException texts).
MISSING_CONTENT = "Missing request content"
NOT_OBJECT_OR_ARRAY = "The JSON must start as an object or an array"
BAD_JSON = "Unable to parse the given JSON"
NO_DATAPOINTS = "No datapoints found in content"

# Per-point messages, in OpenTSDB's order of checks.
NULL_POINT = "Unexpected null datapoint encountered in set."
EMPTY_METRIC = "Metric name was empty"
INVALID_TIMESTAMP = "Invalid timestamp"
EMPTY_VALUE = "Empty value"
MISSING_TAGS = "Missing tags"
BAD_VALUE = "Unable to parse value to a number"

#: Java's String.trim(): every char up to U+0020.
_JAVA_TRIM = "".join(map(chr, range(0x21)))
_LONG_TEXT = re.compile(r"[+-]?[0-9]+")
_JSON_INT = re.compile(r"-?[0-9]+")
# Jackson's non-numeric tokens that Python's json does not know (+Infinity, +INF,
# -INF), plus the ones it does (to keep every original spelling in order).  Strings
# are matched first so nothing inside them is touched; a token counts only where a
# JSON value may start, and only as a whole word (Jackson's _matchToken).
_ODD_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"'
    r"|(?<![^ \t\n\r\[:,])([+-](?:Infinity|INF)|NaN|Infinity)(?![\w$])",
    re.S,
)
_PYTHON_SPELLING = MappingProxyType(
    {"+Infinity": "Infinity", "+INF": "Infinity", "-INF": "-Infinity"})
# Jackson's bounds when it casts a double to long (Long.MAX_VALUE as a double).
_LONG_MAX_D = float(INT64_MAX)
# The most digits of a long, leading zeros aside.
_LONG_DIGITS = 19


#: the whole request is rejected: ``code``, ``message`` and optional ``details``
#: of OpenTSDB's JSON error object (the shared HTTP body error)
PutBodyError = BodyError


class PointError(ValueError):
    """One point is rejected; ``str(err)`` is OpenTSDB's ``details`` error string."""


class JsonText(str):
    """A JSON number or non-numeric token kept as its source text.

    Jackson hands a number to a String field as the text it was written with
    (``42.50`` stays ``"42.50"``, ``NaN`` stays ``"NaN"``), and the value
    classifier works on that text; the subclass also tells a number from a string
    where Jackson coerces them differently (timestamps)."""

    __slots__ = ()


@dataclass(slots=True)
class RawPoint:
    """One datapoint as Jackson binds it: fields coerced, not yet validated.

    ``timestamp`` is 0 when missing or null (a Java ``long``); ``tags`` keeps
    null values (they fail validation with Java's ``null`` text); ``token`` is the
    ``ovh.auth`` tag, taken out of ``tags`` before anything else sees them."""

    metric: str | None = None
    timestamp: int = 0
    value: str | None = None
    tags: dict[str, str | None] | None = None
    tsuid: str | None = None
    token: str | None = None

    def echo(self) -> dict[str, Any]:
        """The ``datapoint`` of a details entry: null fields omitted, the token never."""
        d: dict[str, Any] = {}
        if self.metric is not None:
            d["metric"] = self.metric
        d["timestamp"] = self.timestamp
        if self.value is not None:
            d["value"] = self.value
        if self.tags is not None:
            d["tags"] = self.tags
        if self.tsuid is not None:
            d["tsuid"] = self.tsuid
        return d


# -- JSON -----------------------------------------------------------------------


def parse_put_body(body: bytes, charset: str = "utf-8") -> list[RawPoint | None]:
    """The points of a put body (one object or an array), or `PutBodyError`.

    Bytes are decoded with ``charset``, malformed sequences replaced (as Java's
    ``new String(bytes, charset)`` does), then trimmed like Java's ``trim()``."""
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        raise PutBodyError("Unsupported charset", charset) from None
    text = text.strip(_JAVA_TRIM)
    if not text:
        raise PutBodyError(MISSING_CONTENT)
    if text[0] not in "{[":
        raise PutBodyError(NOT_OBJECT_OR_ARRAY)
    doc = _loads(text)
    if isinstance(doc, dict):
        return [_bind(doc)]
    if not doc:
        raise PutBodyError(NO_DATAPOINTS)
    out: list[RawPoint | None] = []
    for i, el in enumerate(doc):
        if el is None:
            out.append(None)
        elif isinstance(el, dict):
            out.append(_bind(el, i))
        else:
            raise PutBodyError(BAD_JSON, f"[{i}]: a datapoint must be an object, "
                                         f"not {_kind(el)}")
    return out


def _decoder(parse_constant: Callable[[str], Any]) -> json.JSONDecoder:
    return json.JSONDecoder(parse_float=JsonText, parse_int=JsonText,
                            parse_constant=parse_constant)


def _loads(text: str) -> Any:
    """Strict JSON plus Jackson's ALLOW_NON_NUMERIC_NUMBERS tokens; numbers stay text.

    Python's C scanner knows ``NaN``, ``Infinity`` and ``-Infinity``; bodies with
    ``+Infinity``, ``+INF`` or ``-INF`` are rewritten to those spellings and the
    original spellings handed back in document order.  Trailing content after the
    root value is an error (Jackson would ignore it)."""
    try:
        return _decoder(JsonText).decode(text)
    except json.JSONDecodeError as e:
        first = e
    except RecursionError:
        raise PutBodyError(BAD_JSON, "nesting too deep") from None
    originals: list[str] = []
    rewritten = False

    def swap(m: re.Match) -> str:
        nonlocal rewritten
        tok = m.group(1)
        if tok is None:
            return m.group(0)
        originals.append(tok)
        py = _PYTHON_SPELLING.get(tok)
        if py is None:
            return tok
        rewritten = True
        return py

    text2 = _ODD_TOKENS.sub(swap, text)
    if not rewritten:
        raise PutBodyError(BAD_JSON, _syntax_error(first)) from None
    spelled = iter(originals)
    try:
        return _decoder(lambda name: JsonText(next(spelled, name))).decode(text2)
    except json.JSONDecodeError:  # (a position in the rewritten text would mislead)
        raise PutBodyError(BAD_JSON, "malformed JSON") from None
    except RecursionError:
        raise PutBodyError(BAD_JSON, "nesting too deep") from None


def _syntax_error(e: json.JSONDecodeError) -> str:
    """The details of a body that is not JSON: where it goes wrong, in words of
    our own (Python's decoder message is an implementation's, not the API's)."""
    return f"malformed JSON at line {e.lineno}, column {e.colno}"


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, JsonText):
        return "a number"
    return "a string" if isinstance(v, str) else "null"


def _where(field: str, index: int | None) -> str:
    return field if index is None else f"[{index}].{field}"


def _string(v: Any, field: str, index: int | None = None) -> str | None:
    """Jackson's StringDeserializer: scalars become their text, null stays null."""
    if v is None or type(v) is str:
        return v
    if isinstance(v, str):
        return str(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    raise PutBodyError(BAD_JSON, f"{_where(field, index)}: cannot make a string of {_kind(v)}")


def _long(v: Any, index: int | None = None) -> int:
    """Jackson's primitive ``long``: null -> 0, integers exact, floats truncated
    toward zero (NaN -> 0), strings trimmed and parsed like Long.parseLong."""
    if v is None:
        return 0
    if isinstance(v, JsonText):
        if _JSON_INT.fullmatch(v):
            # (JSON numbers have no leading zeros: past a sign and 19 digits the
            # number is out of range, and int() of a long enough text fails)
            n = int(v) if len(v) <= _LONG_DIGITS + 1 else INT64_MAX + 1
            if INT64_MIN <= n <= INT64_MAX:
                return n
        else:
            f = float(v)  # also NaN and the infinities, in any of Jackson's spellings
            if f != f:
                return 0
            if -_LONG_MAX_D <= f <= _LONG_MAX_D:
                return max(INT64_MIN, min(INT64_MAX, int(f)))
        raise PutBodyError(BAD_JSON, f"{_where('timestamp', index)}: numeric value ({v}) "
                                     "out of range of long")
    if type(v) is str:
        t = v.strip(_JAVA_TRIM)
        if not t or t == "null":
            return 0
        if _LONG_TEXT.fullmatch(t) and t.isascii():
            # Java allows leading zeros; without them more than 19 digits is out
            # of range, and int() of a long enough text fails (its digit limit)
            digits = t.lstrip("+-").lstrip("0")
            if len(digits) <= _LONG_DIGITS:
                n = -int(digits or "0") if t[0] == "-" else int(digits or "0")
                if INT64_MIN <= n <= INT64_MAX:
                    return n
        raise PutBodyError(BAD_JSON, f"{_where('timestamp', index)}: not a valid long value: "
                                     f"{json.dumps(v)}")
    raise PutBodyError(BAD_JSON, f"{_where('timestamp', index)}: cannot make a long of "
                                 f"{_kind(v)}")


def _bind(obj: dict, index: int | None = None) -> RawPoint:
    """One JSON object -> `RawPoint`; unknown fields are ignored.  (A JSON null and
    a missing field are the same to Jackson's bean binding.)"""
    metric = obj.get("metric")
    if metric is not None and type(metric) is not str:
        metric = _string(metric, "metric", index)
    ts = obj.get("timestamp")
    if type(ts) is JsonText and ts.isdigit() and len(ts) < 19:  # the usual case
        ts = int(ts)
    else:
        ts = _long(ts, index)
    value = obj.get("value")
    if value is not None and type(value) is not str:
        value = _string(value, "value", index)
    p = RawPoint(metric, ts, value)
    if "tsuid" in obj:
        p.tsuid = _string(obj["tsuid"], "tsuid", index)
    tags = obj.get("tags")
    if tags is not None:
        if type(tags) is not dict:
            raise PutBodyError(BAD_JSON, f"{_where('tags', index)}: cannot make a map of "
                                         f"{_kind(tags)}")
        for v in tags.values():
            if type(v) is not str:
                tags = {k: _string(v, f"tags.{k}", index) for k, v in tags.items()}
                break
        if AUTH_TAG in tags:
            p.token = tags.pop(AUTH_TAG)
        p.tags = tags
    return p


# -- validation -------------------------------------------------------------------


def validate_point(
    p: RawPoint | None,
    allow_no_tags: bool = False,
    max_tags: int = MAX_TAGS,
    series: dict[tuple, SeriesKey] | None = None,
) -> tuple[SeriesKey, int, int | float]:
    """OpenTSDB's checks for one HTTP point, in its order; the first failure wins.

    Returns (series key, time in ns, value).  ``allow_no_tags`` is the `iot`
    profile's A8: a point without client tags is fine when the token adds some.
    The tag limit counts the client's tags only (A7).  ``series``, a dict the
    caller keeps for one request, remembers the (metric, tags) already found
    valid: the name checks are most of the cost, and a body repeats few series."""
    if p is None:
        raise PointError(NULL_POINT)
    metric = p.metric
    if not metric:
        raise PointError(EMPTY_METRIC)
    ts = p.timestamp
    if ts <= 0:
        raise PointError(INVALID_TIMESTAMP)
    if not p.value:
        raise PointError(EMPTY_VALUE)
    tags = p.tags or {}
    if not tags and not allow_no_tags:
        raise PointError(MISSING_TAGS)
    try:
        value = parse_value(p.value)
    except PutError:
        raise PointError(BAD_VALUE) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise PointError(f"value is NaN or Infinite: {_java_double(value)}"
                         f" for metric={metric} timestamp={ts}")
    if ts > MAX_MS:
        raise PointError(f"bad timestamp={ts} when trying to add value={_value_dump(value)}"
                         f" to metric={metric}, tags={_java_map(_java_tags(tags))}")
    memo = (metric, *tags.items()) if series is not None else None
    if memo is not None:
        key = series.get(memo)  # type: ignore[union-attr]
        if key is not None:  # count and names were checked for this very series
            return key, _time_ns(ts), value
    if len(tags) > max_tags:
        raise PointError(f"Too many tags: {len(tags)} maximum allowed: {max_tags},"
                         f" tags: {_java_map(_java_tags(tags))}")
    err = name_error("metric name", metric)
    if err:
        raise PointError(err)
    for k, v in tags.items():
        err = name_error(f"tag name with value [{'null' if v is None else v}]", k)
        if err:
            raise PointError(err)
        if v is None:
            raise PointError(f"Invalid tag value with key [{k}]: null")
        err = name_error(f"tag value with key [{k}]", v)
        if err:
            raise PointError(err)
    key = series_key(metric, tags)  # type: ignore[arg-type]
    if memo is not None:
        series[memo] = key  # type: ignore[index]
    return key, _time_ns(ts), value


def _time_ns(ts: int) -> int:
    """Seconds below 2**32, else milliseconds (the rule telnet uses too)."""
    return ts * 1_000_000_000 if ts < SECONDS_LIMIT else ts * 1_000_000


def _java_tags(tags: dict[str, str | None]) -> dict[str, str]:
    return {k: "null" if v is None else v for k, v in tags.items()}


# -- the fast path ------------------------------------------------------------------


class SeriesCache:
    """(metric, tags) pairs found valid, across requests, with their series key.

    A fleet repeats the same series in every request; their names are checked
    once, not once per point.  Bounded: when full it starts over."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        #: (metric, *tags.items()) -> series key, for the pairs already checked
        self.known: dict[tuple, SeriesKey] = {}

    def key(self, metric: Any, tags: dict) -> SeriesKey | None:
        """The series key, or None when the pair is not plainly valid (no tags,
        too many, an ``ovh.auth`` tag, a bad name or a non-string)."""
        memo = (metric, *tags.items())
        try:
            key = self.known.get(memo)
        except TypeError:  # an array or object among them: never plainly valid
            return None
        if key is not None:
            return key
        if type(metric) is not str or not tags or len(tags) > MAX_TAGS or AUTH_TAG in tags \
                or name_error("", metric):
            return None
        for k, v in tags.items():
            if type(v) is not str or name_error("", k) or name_error("", v):
                return None
        if len(self.known) >= self.limit:
            self.known.clear()
        key = self.known[memo] = series_key(metric, tags)
        return key


def fast_put_samples(body: bytes, cache: SeriesCache) -> SampleSet | None:
    """The samples of a body in which every point is plainly valid, or None.

    Plainly valid: UTF-8 JSON, an object or a non-empty array of objects, each
    with a string ``metric``, an integer ``timestamp`` in range, an int64 or
    finite float ``value`` below 2**63 in size, and a ``tags`` object that
    `SeriesCache` accepts; no ``tsuid``.  For such a body the result equals what
    `parse_put_body` plus `validate_point` give: orjson, like Python's json,
    tells ints from floats by the ``.``/``e`` test OpenTSDB applies to the
    value's text; the one exception, an integer literal past 2**64 that orjson
    reads as a float, is outside the size bound.  Any other body is None, and
    the full path answers it with OpenTSDB's errors.  The samples are rows: a
    request seldom holds two points of one series."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:  # also NaN, Infinity and bad UTF-8
        return None
    if type(doc) is dict:
        doc = [doc]
    elif type(doc) is not list or not doc:
        return None
    samples = SampleSet()
    keys = samples.keys
    times = samples.times
    values = samples.values
    known = cache.known
    for o in doc:
        if type(o) is not dict:
            return None
        metric = o.get("metric")
        ts = o.get("timestamp")
        value = o.get("value")
        tags = o.get("tags")
        if type(ts) is not int or type(tags) is not dict or "tsuid" in o:
            return None
        tv = type(value)
        if tv is float:
            if not -_LONG_MAX_D < value < _LONG_MAX_D:  # NaN fails too
                return None
        elif tv is not int or not INT64_MIN <= value <= INT64_MAX:
            return None
        if ts <= 0 or ts > MAX_MS:
            return None
        try:
            key = known.get((metric, *tags.items()))
        except TypeError:  # an array or object as the metric or a tag value
            return None
        if key is None:
            key = cache.key(metric, tags)
            if key is None:
                return None
        keys.append(key)
        times.append(ts * 1_000_000_000 if ts < SECONDS_LIMIT else ts * 1_000_000)
        values.append(value)
    samples.count = len(keys)
    return samples
