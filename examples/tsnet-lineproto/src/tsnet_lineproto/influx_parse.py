"""InfluxDB line protocol, accepted and rejected as InfluxDB 1.x does it.

``measurement[,tag=value...] field=value[,field=value...] [timestamp]``: clients (and
people reading a 400 reply) see InfluxDB's error texts, so the scanner below is
InfluxDB 1.x's ``models/points.go`` (``scanLine``, ``scanKey``, ``scanFields``,
``scanNumber``, ``scanBoolean``, ``scanTime``, then the ``FieldIterator`` that decodes
the values) step for step, with its quirks: each error is ``unable to parse 'LINE':
REASON`` with InfluxDB's REASON.  Parsing runs on the decoded text: every byte the
scanner looks at is ASCII and UTF-8 never puts an ASCII byte inside a multi-byte
character, so positions agree; the key-length limit counts UTF-8 bytes as InfluxDB does.

Where tsnet differs, on purpose:

* unsigned integers (``1u``) are accepted as in InfluxDB 2.x (1.x rejects them unless
  built with uint support), but only up to int64, which is all tsnet stores exactly;
  a larger one is ``unable to parse unsigned N: value out of int64 range``;
* a line ending in ``\\r`` (a CRLF body) loses the ``\\r``; 1.x would reject it;
* invalid UTF-8: a line that parses but holds bytes that are not UTF-8 is rejected with
  ``unable to parse 'LINE': invalid UTF-8`` (LINE shows them as U+FFFD, as InfluxDB's
  JSON reply would); InfluxDB would store the bytes, tsnet keeps text as str;
* precisions: 1.x's ``n u ms s m h`` and 2.x's ``ns us``; anything else is ValueError
  (InfluxDB answers 400 ``invalid precision "x" (use n, u, ms, s, m or h)``).

Not done here (InfluxDB does them when storing, not parsing): dropping a ``time`` tag or
field, field type conflicts, the 1 MiB string limit.

A fast path takes the common line (no quote, no backslash, single spaces, plain numbers)
with str.split; anything else goes to the scanner, the single source of truth for what is
accepted (tests/test_influx_parse.py proves the fast path agrees with it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from types import MappingProxyType
from typing import NamedTuple

from tsnet.plugin import INT64_MAX, INT64_MIN, SeriesKey

FieldValue = int | float | str | bool

#: InfluxDB keeps the two lowest and the highest int64 for itself.
MIN_NANO_TIME = INT64_MIN + 2
MAX_NANO_TIME = INT64_MAX - 1
#: The longest measurement + tags, and measurement + tags + 4 + field key, in bytes.
MAX_KEY_LENGTH = 65535
UINT64_MAX = 2**64 - 1

_PRECISION = MappingProxyType(
    {
        "": 1,
        "n": 1,
        "ns": 1,
        "u": 1_000,
        "us": 1_000,
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    }
)

_TIME_RANGE = f"time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}"
_INVALID_NUMBER = "invalid number"
_INVALID_BOOLEAN = "invalid boolean"
_WHITESPACE = " \t\x00"  # what InfluxDB's skipWhitespace skips
_DIGITS = "0123456789"
_NUMBER_START = "0123456789.-Nn"  # scanFields sends these to scanNumber
_NUMERIC_TYPES = "0123456789-.nNiIu"  # FieldIterator: these values are numbers
_BOOLS = MappingProxyType(
    {
        "t": True,
        "T": True,
        "true": True,
        "True": True,
        "TRUE": True,
        "f": False,
        "F": False,
        "false": False,
        "False": False,
        "FALSE": False,
    }
)
# strconv.ParseBool, which decodes a boolean once the scanner has let it through
_GO_BOOLS = MappingProxyType({**_BOOLS, "1": True, "0": False})
_KEY_UNESCAPE = re.compile(r'\\([," =])')  # measurement, field keys (pkg/escape)
_TAG_UNESCAPE = re.compile(r"\\([, =])")  # tag keys and values
_STRING_UNESCAPE = re.compile(r'\\(["\\])')  # string field values
_GO_INT = re.compile(r"-?[0-9]+")
_GO_FLOAT_CHARS = re.compile(r"[-+.0-9eE]+")
# the fast path's numbers: a subset of what scanNumber accepts
_FAST_FLOAT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FAST_INT = re.compile(r"-?[0-9]+i")
_FAST_UINT = re.compile(r"[0-9]+u")
_FAST_TIME = re.compile(r"-?[0-9]+")
_FAST_MAX_CHARS = (MAX_KEY_LENGTH - 4) // 4  # shorter lines cannot reach the key limit


class InfluxPoint(NamedTuple):
    """One parsed line: names unescaped, tags and fields as dicts, time in ns."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


class _LineError(Exception):
    """InfluxDB's reason for rejecting one line (without the ``unable to parse`` part)."""


def precision_multiplier(precision: str) -> int:
    """Nanoseconds per unit of ``precision``; ValueError with InfluxDB's text if unknown."""
    try:
        return _PRECISION[precision]
    except KeyError:
        raise ValueError(f'invalid precision "{precision}" (use n, u, ms, s, m or h)') from None


def parse_body(body: bytes, precision: str, now_ns: int) -> tuple[list[InfluxPoint], list[str]]:
    """Every line of a write body: (good points, one InfluxDB error text per bad line).

    A line without a timestamp gets ``now_ns`` truncated to ``precision``, as InfluxDB
    does.  InfluxDB's reply for a body with errors is 400 with
    ``partial write: <errors joined by \\n> dropped=0`` when some points were good, else
    the joined errors alone.  Raises ValueError for an unknown precision.
    """
    mult = precision_multiplier(precision)
    default_ns = now_ns - now_ns % mult
    try:
        text = body.decode("utf-8")
        dirty = False
    except UnicodeDecodeError:
        text = body.decode("utf-8", "surrogateescape")
        dirty = True
    points: list[InfluxPoint] = []
    errors: list[str] = []
    n = len(text)
    pos = 0
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        block = text[pos:end]
        if '"' in block or "\\" in block:  # quotes and escapes can carry a line on
            end = _scan_line(text, pos)
            block = text[pos:end]
        pos = end + 1
        if block and block[-1] == "\r":
            block = block[:-1]
        if not block:
            continue
        start = 0
        if block[0] in _WHITESPACE:
            start = _skip_whitespace(block, 0)
            if start >= len(block):
                continue
        if block[start] == "#":
            continue
        if block[-1] == "\n":
            block = block[:-1]
        line = block[start:] if start else block
        point = _parse_fast(line, default_ns, mult)
        if point is None:
            try:
                point = _parse_point(line, default_ns, mult)
            except _LineError as e:
                errors.append(f"unable to parse '{_display(line, dirty)}': {e}")
                continue
        if dirty and not _is_utf8(line):
            errors.append(f"unable to parse '{_display(line, dirty)}': invalid UTF-8")
            continue
        points.append(point)
    return points, errors


def to_samples(
    points: Iterable[InfluxPoint],
) -> Iterator[tuple[SeriesKey, int, int | float | None, str | None]]:
    """tsnet samples: (series, time_ns, value, text), one per field.

    Each field is its own series, metric ``measurement.field`` (the Graphite-style name
    Telegraf and InfluxDB's Graphite service use), tags kept, sorted.  Floats stay
    floats, integers ints, booleans become 1 / 0; a string is value None, text the string.
    """
    for p in points:
        tags = tuple(sorted(p.tags.items()))
        prefix = p.measurement + "."
        t = p.time_ns
        for name, v in p.fields.items():
            key = (prefix + name, None, tags)
            if isinstance(v, str):
                yield key, t, None, v
            elif isinstance(v, bool):  # before int: bool is an int subclass
                yield key, t, 1 if v else 0, None
            else:
                yield key, t, v, None


# -- helpers -------------------------------------------------------------------------------


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _display(line: str, dirty: bool) -> str:
    if dirty:
        return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return line


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogateescape"))


def _skip_whitespace(b: str, i: int) -> int:
    n = len(b)
    while i < n and b[i] in _WHITESPACE:
        i += 1
    return i


def _scan_to(b: str, i: int, stop: str, lo: int = 0) -> int:
    """Index of the first ``stop`` at or after i not preceded by a backslash (or len)."""
    n = len(b)
    while i < n:
        if b[i] == stop and (i == lo or b[i - 1] != "\\"):
            break
        i += 1
    return i


# -- the fast path -------------------------------------------------------------------------


def _parse_fast(line: str, default_ns: int, mult: int) -> InfluxPoint | None:
    """The common line, or None to let `_parse_point` decide (and word any error)."""
    if (
        "\\" in line
        or '"' in line
        or "\t" in line
        or "\x00" in line
        or "\n" in line
        or len(line) > _FAST_MAX_CHARS
    ):
        return None
    parts = line.split(" ")
    nparts = len(parts)
    if nparts == 2:
        key, field_text = parts
        time_ns = default_ns
    elif nparts == 3:
        key, field_text, ts = parts
        if len(ts) > 20 or not _FAST_TIME.fullmatch(ts):
            return None
        time_ns = int(ts) * mult
        if not MIN_NANO_TIME <= time_ns <= MAX_NANO_TIME:
            return None
    else:
        return None
    segs = key.split(",")
    measurement = segs[0]
    if not measurement or not field_text:
        return None
    tags: dict[str, str] = {}
    if len(segs) > 1:
        for seg in segs[1:]:
            k, _, v = seg.partition("=")
            if not k or not v or "=" in v:
                return None
            tags[k] = v
        if len(tags) != len(segs) - 1:
            return None  # duplicate tags
    fields: dict[str, FieldValue] = {}
    for seg in field_text.split(","):
        k, _, v = seg.partition("=")
        if not k or not v or "=" in v:
            return None
        last = v[-1]
        if last == "i":
            if len(v) > 21 or not _FAST_INT.fullmatch(v):
                return None
            iv = int(v[:-1])
            if not INT64_MIN <= iv <= INT64_MAX:
                return None
            fields[k] = iv
        elif last == "u":
            if len(v) > 21 or not _FAST_UINT.fullmatch(v):
                return None
            iv = int(v[:-1])
            if iv > INT64_MAX:
                return None
            fields[k] = iv
        else:
            b = _BOOLS.get(v)
            if b is not None:
                fields[k] = b
                continue
            if not _FAST_FLOAT.fullmatch(v):
                return None
            fv = float(v)
            if math.isinf(fv):
                return None
            fields[k] = fv
    return InfluxPoint(measurement, tags, fields, time_ns)


# -- InfluxDB's scanner --------------------------------------------------------------------


def _scan_line(t: str, i: int) -> int:
    """scanLine: the end of the line starting at i, past newlines in quoted strings."""
    n = len(t)
    quoted = fields = False
    equals = commas = 0
    while i < n:
        c = t[i]
        if c == "\\" and i + 2 < n:
            i += 2
            continue
        if c == " ":
            fields = True
        if fields:
            if not quoted and c == "=":
                i += 1
                equals += 1
                continue
            if not quoted and c == ",":
                i += 1
                commas += 1
                continue
            if c == '"' and equals > commas:
                i += 1
                quoted = not quoted
                continue
        if c == "\n" and not quoted:
            break
        i += 1
    return i


def _parse_point(b: str, default_ns: int, mult: int) -> InfluxPoint:
    """parsePoint, then the field decoding of FieldIterator; raises _LineError."""
    key_end, meas_end, tag_spans = _scan_key(b)
    key_len = _utf8_len(b[:key_end])
    if key_len > MAX_KEY_LENGTH:
        raise _LineError(f"max key length exceeded: {key_len} > {MAX_KEY_LENGTH}")
    pos, fstart = _scan_fields(b, key_end)
    fields_text = b[fstart:pos]
    if not fields_text:
        raise _LineError("missing fields")
    _walk_fields(fields_text, key_len)
    pos, ts = _scan_time(b, pos)
    if not ts:
        time_ns = default_ns
    else:
        if ts == "-":
            raise _LineError(f'strconv.ParseInt: parsing "{ts}": invalid syntax')
        v = _go_int(ts)
        if not INT64_MIN <= v <= INT64_MAX:
            raise _LineError(f'strconv.ParseInt: parsing "{ts}": value out of range')
        time_ns = v * mult
        if not MIN_NANO_TIME <= time_ns <= MAX_NANO_TIME:
            raise _LineError(_TIME_RANGE)
        if b[pos:].strip(" "):
            raise _LineError("point is invalid")
    measurement = b[:meas_end]
    if "\\" in measurement:
        measurement = _KEY_UNESCAPE.sub(r"\1", measurement)
    tags: dict[str, str] = {}
    if tag_spans:
        escaped = "\\" in b[:key_end]
        for k0, k1, v1 in tag_spans:
            k, v = b[k0:k1], b[k1 + 1 : v1]
            if escaped:
                k = _TAG_UNESCAPE.sub(r"\1", k)
                v = _TAG_UNESCAPE.sub(r"\1", v)
            tags[k] = v
    return InfluxPoint(measurement, tags, _decode_fields(fields_text), time_ns)


def _scan_key(b: str) -> tuple[int, int, list[tuple[int, int, int]]]:
    """scanKey: (end of key, end of measurement, [(key start, '=' index, value end)])."""
    n = len(b)
    # scanMeasurement
    if n == 0 or b[0] == ",":
        raise _LineError("missing measurement")
    i = 0
    while True:
        i += 1
        if i >= n:
            raise _LineError("missing fields")
        if b[i - 1] == "\\":
            continue
        c = b[i]
        if c == ",":
            break
        if c == " ":
            return i, i, []
    meas_end = i
    i += 1
    spans: list[tuple[int, int, int]] = []
    while True:
        # scanTagsKey
        k0 = i
        if i >= n or b[i] in " ,=":
            raise _LineError("missing tag key")
        while True:
            i += 1
            if i >= n or (b[i] in " ," and b[i - 1] != "\\"):
                raise _LineError("missing tag value")
            if b[i] == "=" and b[i - 1] != "\\":
                break
        eq = i
        i += 1
        # scanTagsValue
        if i >= n or b[i] in ", ":
            raise _LineError("missing tag value")
        while True:
            i += 1
            if i >= n:
                raise _LineError("missing fields")
            c = b[i]
            if b[i - 1] == "\\":
                continue
            if c == "=":
                raise _LineError("invalid tag format")
            if c == "," or c == " ":
                break
        spans.append((k0, eq, i))
        if b[i] == " ":
            break
        i += 1
    if len(spans) > 1:
        names = [b[k0:eq] for k0, eq, _ in spans]
        if len(set(names)) != len(names):
            raise _LineError("duplicate tags")
    return i, meas_end, spans


def _scan_fields(b: str, i: int) -> tuple[int, int]:
    """scanFields: (end of the fields block, its start)."""
    n = len(b)
    start = i = _skip_whitespace(b, i)
    quoted = False
    equals = commas = 0
    while i < n:
        c = b[i]
        if c == "\\" and i + 1 < n:
            i += 2
            continue
        if c == '"' and equals > commas:
            quoted = not quoted
            i += 1
            continue
        if c == "=" and not quoted:
            equals += 1
            before = b[i - 1]
            if (before == " " or before == ",") and b[i - 2] != "\\":
                raise _LineError("missing field key")
            if i + 1 >= n:
                raise _LineError("missing field value")
            nxt = b[i + 1]
            if nxt == "," or nxt == " ":
                raise _LineError("missing field value")
            if nxt in _NUMBER_START:
                i = _scan_number(b, i + 1)
                continue
            if nxt != '"':
                i = _scan_boolean(b, i + 1)
                continue
        if c == "," and not quoted:
            commas += 1
        if c == " " and not quoted:
            break
        i += 1
    if quoted:
        raise _LineError("unbalanced quotes")
    if equals == 0 or commas != equals - 1:
        raise _LineError("invalid field format")
    return i, start


def _go_int(text: str) -> int:
    """The value of ``[-]DIGITS`` (leading zeros allowed, as Go's ParseInt does)
    without int()'s digit limit: past 20 digits it is out of every range tsnet
    checks, and stands as UINT64_MAX + 1 with its sign."""
    digits = text.lstrip("-").lstrip("0")
    v = int(digits or "0") if len(digits) <= 20 else UINT64_MAX + 1
    return -v if text[:1] == "-" else v


def _scan_number(b: str, i: int) -> int:
    """scanNumber, with uint support on (as InfluxDB 2.x)."""
    n = len(b)
    start = i
    is_int = is_uint = decimal = scientific = False
    if i < n and b[i] == "-":
        i += 1
        if i == n:
            raise _LineError(_INVALID_NUMBER)
    while i < n:
        c = b[i]
        if c == "," or c == " ":
            break
        if c == "i" and i > start and not (is_int or is_uint):
            is_int = True
            i += 1
            continue
        if c == "u" and i > start and not (is_int or is_uint):
            is_uint = True
            i += 1
            continue
        if c == ".":
            if decimal:
                raise _LineError(_INVALID_NUMBER)
            decimal = True
        if i > start and (c == "e" or c == "E"):
            scientific = True
            i += 1
            continue
        if (c == "+" or c == "-") and b[i - 1] in "eE":
            i += 1
            continue
        if i + 2 < n and (c == "N" or c == "n"):
            raise _LineError(_INVALID_NUMBER)
        if c not in _DIGITS and c != ".":
            raise _LineError(_INVALID_NUMBER)
        i += 1
    if (is_int or is_uint) and (decimal or scientific):
        raise _LineError(_INVALID_NUMBER)
    digits = i - start - is_int - decimal - (b[start] == "-")
    if digits == 0:
        raise _LineError(_INVALID_NUMBER)
    if is_int:
        if b[i - 1] != "i":
            raise _LineError(_INVALID_NUMBER)
        text = b[start : i - 1]
        if len(text) >= 19 and not INT64_MIN <= _go_int(text) <= INT64_MAX:
            raise _LineError(
                f"unable to parse integer {text}: strconv.ParseInt: parsing "
                f'"{text}": value out of range'
            )
    elif is_uint:
        if b[i - 1] != "u" or b[start] == "-":
            raise _LineError(_INVALID_NUMBER)
        text = b[start : i - 1]
        if len(text) >= 20 and _go_int(text) > UINT64_MAX:
            raise _LineError(
                f"unable to parse unsigned {text}: strconv.ParseUint: parsing "
                f'"{text}": value out of range'
            )
        if _go_int(text) > INT64_MAX:
            raise _LineError(f"unable to parse unsigned {text}: value out of int64 range")
    elif scientific or i - start >= 25:
        try:
            ok = math.isfinite(float(b[start:i]))
        except ValueError:
            ok = False
        if not ok:
            raise _LineError("invalid float")
    return i


def _scan_boolean(b: str, i: int) -> int:
    n = len(b)
    start = i
    if i < n and b[i] not in "tfTF":
        raise _LineError(_INVALID_BOOLEAN)
    i += 1
    while i < n and b[i] != "," and b[i] != " ":
        i += 1
    if i - start > 1 and b[start:i] not in _BOOLS:
        raise _LineError(_INVALID_BOOLEAN)
    return i


def _scan_time(b: str, i: int) -> tuple[int, str]:
    n = len(b)
    start = i = _skip_whitespace(b, i)
    while i < n:
        c = b[i]
        if c == "\n" or c == " ":
            break
        if i == start and c == "-":
            i += 1
            continue
        if c not in _DIGITS:
            raise _LineError("bad timestamp")
        i += 1
    return i, b[start:i]


def _scan_field_value(f: str, i: int) -> int:
    """scanFieldValue: the end of a value (the next comma outside quotes)."""
    n = len(f)
    quoted = False
    while i < n:
        c = f[i]
        if c == "\\" and i + 1 < n and f[i + 1] in '"\\':
            i += 2
            continue
        if c == '"':
            i += 1
            quoted = not quoted
            continue
        if c == "," and not quoted:
            break
        i += 1
    return i


def _walk_fields(f: str, key_len: int) -> None:
    """walkFields as parsePoint runs it: the key-length limit for every field."""
    lo = 0
    n = len(f)
    while lo < n:
        i = _scan_to(f, lo, "=", lo)
        if i - lo > (n - lo) - 2:
            raise _LineError(f"invalid value: field-key={f[lo:i]}")
        size = key_len + 4 + _utf8_len(f[lo:i])
        if size > MAX_KEY_LENGTH:
            raise _LineError(f"max key length exceeded: {size} > {MAX_KEY_LENGTH}")
        lo = _scan_field_value(f, i + 1) + 1


def _decode_fields(f: str) -> dict[str, FieldValue]:
    """Point.Fields(): each key unescaped and value typed; empty keys and values skipped."""
    fields: dict[str, FieldValue] = {}
    n = len(f)
    start = 0
    while start < n:
        end = _scan_to(f, start, "=")
        key = f[start:end]
        vend = _scan_field_value(f, end + 1)
        raw = f[end + 1 : vend]
        start = vend + 1
        if not key or not raw:
            continue
        if "\\" in key:
            key = _KEY_UNESCAPE.sub(r"\1", key)
        c = raw[0]
        if c == '"':
            v = raw[1:-1]
            fields[key] = _STRING_UNESCAPE.sub(r"\1", v) if "\\" in v else v
        elif c in _NUMERIC_TYPES:
            last = raw[-1]
            if last == "i" or last == "u":
                digits = raw[:-1]
                if not _GO_INT.fullmatch(digits):
                    kind = "integer" if last == "i" else "unsigned"
                    raise _LineError(f"unable to parse {kind} value {digits!r}")
                fields[key] = _go_int(digits)
            else:
                if not _GO_FLOAT_CHARS.fullmatch(raw):
                    raise _LineError(f"unable to parse floating point value {raw!r}")
                try:
                    fields[key] = float(raw)
                except ValueError:
                    raise _LineError(f"unable to parse floating point value {raw!r}") from None
        else:
            b = _GO_BOOLS.get(raw)
            if b is None:
                raise _LineError(f"unable to parse bool value {raw!r}")
            fields[key] = b
    return fields
