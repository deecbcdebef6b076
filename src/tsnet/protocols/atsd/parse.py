"""One ATSD logical command, parsed and validated (shared/specs/atsd.md §3, §4).

`parse_command` returns ``(debug, command)`` or raises `CommandError`, whose
text is the ``debug`` reply and whose ``reason`` labels the metrics.  The
whole grammar lives in `parse_slow`, the single source of truth.  Plain series
lines (no quotes, no ``x:``/``a:``/``d:``) take `parse_series_fast` first, a
single split with no regex per field; it accepts only what `parse_slow`
accepts, with the same result (tests prove it with hypothesis), and returns
None for everything else.  `SeriesFastPath` adds a bounded cache of validated
series, and `SeriesFastPath.take`, which appends a run of cached series lines
straight into a `SampleSet` without a command object per line.

Choices where the spec leaves one (§10, taking its recommendations):

* Command names and prefixes are lower case only; an unknown prefix, a
  repeated field, a repeated metric or tag name, or a second time field is
  rejected (§10.9, §10.10).  Spaces before the command name are skipped.
* An unquoted value runs to the next space and may hold ``=`` (``t:a=b=c`` is
  ``b=c``); a ``"`` inside an unquoted token, or text right after a closing
  quote, is a syntax error (§10.11).  An unquoted empty value (``z:``) is the
  same as ``""``.  Unquoted tokens may not hold control characters; names
  (entity, metric, type, tag and key names) may not hold whitespace or control
  characters even quoted (§3.3).  Unicode blocks are not enforced.
* Booleans are ``true``/``false`` in any letter case, optionally quoted.
* Numbers: the BigDecimal syntax of §3.5 or exactly ``NaN``; a number beyond
  float64 (``1e999``) is rejected, since it could only be stored as infinity.
* Time: at most one of ``d:``/``s:``/``ms:``; ``s:``/``ms:`` are ASCII digits
  (a sign is an error: negative -> ``time_range``, ``+`` -> ``bad_time``);
  ``d:`` offsets up to ±18:00; the result must be in 0..`MAX_TIME_MS`.
* Series, message tag values and property key values must not be empty.
  Property tag values that are blank (Java ``trim``) become ``""`` (delete).
  Meta tag values ``""`` delete the tag; ``l:`` ``d:`` ``u:`` ``f:`` ``z:``
  ``i:`` ``p:`` ``a:`` ``rd:`` ``min:`` ``max:`` set to ``""`` reset the field
  (value None); booleans cannot be reset.
* Message: ``m:""`` counts as no text; severity is a code 0-7 or a name
  (no aliases: INFO, WARN, ERROR are rejected); type and source are kept as
  sent (§10.2).  Meta tags are limited to 1024 too.
* Error texts: ``Invalid command: <command> (<detail>)``; the command is shown
  without ``debug ``, cut at 1000 characters, with CR and LF written as ``\\r``
  and ``\\n`` so the reply stays one line.
"""

from __future__ import annotations

import math
import re
import time
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from tsnet.model import Column, Message, Meta, Property, SampleSet, SeriesKey, series_key
from tsnet.protocols.atsd.framing import LIMIT, OTHER_LIMIT, Overlong, over_other_limit

#: The storable time range in Unix milliseconds (§3.7).
MAX_TIME_MS = 4_294_969_199_999
#: Tags per command (§3.8; properties count keys and tags together).
MAX_TAGS = 1024
#: Characters of the command shown in an error reply, and of one field.
ECHO_CHARS = 1000
FIELD_CHARS = 100

NAN = math.nan
CONTROLS = frozenset(("ping", "time", "version", "exit"))
SEVERITIES: tuple[str, ...] = (
    "UNDEFINED",
    "UNKNOWN",
    "NORMAL",
    "WARNING",
    "MINOR",
    "MAJOR",
    "CRITICAL",
    "FATAL",
)
DATA_TYPES = frozenset(("short", "integer", "long", "float", "double", "decimal"))
INTERPOLATIONS = frozenset(("linear", "previous"))
INVALID_ACTIONS = frozenset(("none", "transform", "discard", "raise_error", "set_version_status"))
#: Short time-zone IDs still accepted (§4.4); other all-capital 3-letter IDs are not.
SHORT_ZONES = frozenset(("GMT", "UTC", "UCT", "WET", "CET", "MET", "EET", "PRC", "ROK", "GMT0"))

#: What Java's String.trim removes: every character up to U+0020.
_TRIM = "".join(map(chr, range(0x21)))
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BAD_NAME = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:(Z)|([+-])([0-9]{2}):?([0-9]{2}))\Z"
)
_ZONE_ID = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*\Z")
_DEPRECATED_ZONE = re.compile(r"[A-Z]{3}\Z")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Field kinds: a single token, or NAME=VALUE.
ONE = 0
KV = 1

_SERIES = MappingProxyType(
    {"e": ONE, "m": KV, "x": KV, "t": KV, "a": ONE, "d": ONE, "s": ONE, "ms": ONE}
)
_PROPERTY = MappingProxyType(
    {"e": ONE, "t": ONE, "k": KV, "v": KV, "p": ONE, "d": ONE, "s": ONE, "ms": ONE}
)
_MESSAGE = MappingProxyType({"e": ONE, "t": KV, "m": ONE, "p": ONE, "d": ONE, "s": ONE, "ms": ONE})
#: metric and entity prefixes -> export field names (DESIGN §7)
_METRIC_NAMES = MappingProxyType(
    {
        "b": "enabled",
        "l": "label",
        "d": "description",
        "p": "data_type",
        "i": "interpolate",
        "u": "units",
        "f": "filter",
        "z": "timezone",
        "v": "versioned",
        "a": "invalid_action",
        "pe": "persistent",
        "rd": "retention_days",
        "min": "min_value",
        "max": "max_value",
    }
)
_ENTITY_NAMES = MappingProxyType(
    {"b": "enabled", "l": "label", "i": "interpolate", "z": "timezone"}
)
_METRIC = MappingProxyType({"m": ONE, "t": KV, **dict.fromkeys(_METRIC_NAMES, ONE)})
_ENTITY = MappingProxyType({"e": ONE, "t": KV, **dict.fromkeys(_ENTITY_NAMES, ONE)})


class CommandError(ValueError):
    """A rejected command.  ``str(e)`` is the debug reply; ``reason`` a metrics label:
    unknown_command, syntax, missing_field, bad_number, bad_time, time_range,
    bad_name, bad_value, too_many_tags, empty_tags, overlong or repeated_field."""

    def __init__(self, text: str, reason: str = "syntax") -> None:
        super().__init__(text)
        self.reason = reason


# -- commands ---------------------------------------------------------------------


@dataclass(slots=True)
class Control:
    """``ping``, ``time``, ``version`` or ``exit``: answered by the connection."""

    name: str


@dataclass(slots=True)
class SeriesCommand:
    """Samples of one entity at one time: (metric, value, text) per distinct metric.

    The value is NaN for an ``x:``-only metric or ``NaN``; text is None without ``x:``.
    """

    entity: str
    samples: list[tuple[str, float, str | None]]
    tags: dict[str, str]
    append: bool = False
    time_ms: int | None = None

    def keys(self) -> list[SeriesKey]:
        """The series key of each sample, in the order of `samples`."""
        entity, tags = self.entity, self.tags
        return [series_key(metric, tags, entity) for metric, _, _ in self.samples]


@dataclass(slots=True)
class PropertyCommand:
    """A property upsert; ``""`` in ``tags`` deletes that stored tag."""

    entity: str
    type: str
    key: dict[str, str]
    tags: dict[str, str]
    time_ms: int | None = None
    persist: bool = True

    def to_property(self, time_ns: int) -> Property:
        return Property(self.entity, self.type, self.key, self.tags, time_ns)


@dataclass(slots=True)
class MessageCommand:
    """A message; reserved tags type/source/severity are in their own fields."""

    entity: str
    type: str | None = None
    source: str | None = None
    severity: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    time_ms: int | None = None
    persist: bool = True

    def to_message(self, time_ns: int) -> Message:
        return Message(
            entity=self.entity,
            time_ns=time_ns,
            message=self.message if self.message is not None else "",
            type=self.type,
            source=self.source,
            severity=self.severity,
            tags=self.tags,
        )


@dataclass(slots=True)
class MetaCommand:
    """A metric or entity upsert: only the given fields; None resets one."""

    kind: Literal["metric", "entity"]
    name: str
    fields: dict = field(default_factory=dict)

    def to_meta(self) -> Meta:
        return Meta(self.kind, self.name, self.fields)


Command = Control | SeriesCommand | PropertyCommand | MessageCommand | MetaCommand


# -- error texts ---------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[:limit] + "..."
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text


def _invalid(body: str, reason: str, detail: str) -> CommandError:
    return CommandError(f"Invalid command: {_one_line(body, ECHO_CHARS)} ({detail})", reason)


class _Ctx:
    """The command being parsed, for error texts that name the field."""

    __slots__ = ("body", "end", "start")

    def __init__(self, body: str) -> None:
        self.body = body
        self.start = 0
        self.end = 0

    def field(self) -> str:
        return _one_line(self.body[self.start : self.end], FIELD_CHARS)

    def fail(self, reason: str, what: str) -> CommandError:
        return _invalid(self.body, reason, f"{what} in {self.field()}")


# -- tokens ----------------------------------------------------------------------------


def _word(body: str, i: int, stop: str, ctx: _Ctx) -> tuple[str, int]:
    """A NAME (``stop`` is ``=``) or VALUE (``stop`` is a space) from ``body[i]`` on:
    quoted with ``""`` for ``"``, or unquoted up to ``stop`` or a space."""
    n = len(body)
    if i < n and body[i] == '"':
        pieces = []
        j = i + 1
        while True:
            k = body.find('"', j)
            if k < 0:
                ctx.end = n
                raise ctx.fail("syntax", "unterminated quote")
            if k + 1 < n and body[k + 1] == '"':
                pieces.append(body[j : k + 1])
                j = k + 2
                continue
            pieces.append(body[j:k])
            i = k + 1
            break
        if i < n and body[i] != stop and body[i] != " ":
            end = body.find(" ", i)
            ctx.end = n if end < 0 else end
            raise ctx.fail("syntax", "text after a closing quote")
        return "".join(pieces), i
    end = body.find(" ", i)
    if end < 0:
        end = n
    if stop == "=":
        eq = body.find("=", i, end)
        if eq >= 0:
            end = eq
    token = body[i:end]
    if '"' in token:
        ctx.end = end
        raise ctx.fail("syntax", "a quote inside unquoted text")
    if not token.isprintable() and _CONTROL.search(token):
        ctx.end = end
        raise ctx.fail("syntax", "a control character outside quotes")
    return token, end


def tokenize(
    body: str, i: int, table: MappingProxyType, ctx: _Ctx | None = None
) -> list[tuple[str, str | None, str, int, int]]:
    """The fields of ``body`` from ``i`` on: (prefix, name or None, value, start, end).

    ``table`` maps each prefix the command knows to ONE or KV; the kind decides
    how the body after the colon is read, so it is needed to find where the
    field ends (a quoted value may hold spaces).
    """
    if ctx is None:
        ctx = _Ctx(body)
    out = []
    n = len(body)
    while True:
        while i < n and body[i] == " ":
            i += 1
        if i >= n:
            return out
        ctx.start = i
        colon = body.find(":", i)
        space = body.find(" ", i)
        if colon < 0 or 0 <= space < colon:
            ctx.end = n if space < 0 else space
            raise _invalid(body, "syntax", f"no prefix: in {ctx.field()}")
        prefix = body[i:colon]
        kind = table.get(prefix)
        if kind is None:
            ctx.end = n if space < 0 else space
            what = f"unknown field {_one_line(prefix, 20)}:"
            raise _invalid(body, "syntax", f"{what} in {ctx.field()}")
        name = None
        if kind == KV:
            name, i = _word(body, colon + 1, "=", ctx)
            if i >= n or body[i] != "=":
                ctx.end = i
                raise ctx.fail("syntax", "no = after the name")
            value, i = _word(body, i + 1, " ", ctx)
        else:
            value, i = _word(body, colon + 1, " ", ctx)
        ctx.end = i
        out.append((prefix, name, value, ctx.start, i))


# -- values ----------------------------------------------------------------------------


def quote(text: str) -> str:
    """``text`` as a quoted NAME or VALUE (§3.3): ``"`` doubled, in double quotes."""
    return '"' + text.replace('"', '""') + '"'


def _name(value: str, what: str, ctx: _Ctx) -> str:
    """A name, lower-cased (§3.4); no whitespace or control characters, even quoted."""
    if not value or _BAD_NAME.search(value):
        raise ctx.fail("bad_name", f"bad {what} name")
    return value.lower()


def parse_number(text: str) -> float | None:
    """Java BigDecimal syntax or exactly ``NaN`` (§3.5); None if not a finite number."""
    if text == "NaN":
        return NAN
    if not _NUMBER.match(text):
        return None
    v = float(text)
    return v if math.isfinite(v) else None


def _number(value: str, ctx: _Ctx, nan: bool = True) -> float:
    v = parse_number(value)
    if v is None or (not nan and v != v):
        if _NUMBER.match(value):
            raise ctx.fail("bad_number", "number out of range")
        raise ctx.fail("bad_number", "bad number")
    return v


def parse_bool(text: str) -> bool | None:
    """``true`` or ``false`` in any letter case (§3.6); None for anything else."""
    low = text.lower() if text.isascii() else text
    if low == "true":
        return True
    if low == "false":
        return False
    return None


def _bool(value: str, ctx: _Ctx) -> bool:
    b = parse_bool(value)
    if b is None:
        raise ctx.fail("bad_value", "bad boolean")
    return b


def parse_iso_ms(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM|±HHMM)`` as Unix ms, the fraction
    truncated to ms (§3.7); None if malformed.  The range is not checked here."""
    m = _ISO.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, sec, frac, z, sign, oh, om = m.groups()
    y, mo, d, h, mi, s = int(year), int(month), int(day), int(hour), int(minute), int(sec)
    if not (1 <= mo <= 12 and 1 <= d <= _DAYS_IN_MONTH[mo - 1] and h < 24 and mi < 60 and s < 60):
        return None
    if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        return None
    offset = 0
    if z is None:
        ohi, omi = int(oh), int(om)
        if omi >= 60 or ohi * 60 + omi > 18 * 60:
            return None
        offset = ohi * 60 + omi
        if sign == "-":
            offset = -offset
    # days from the civil date (Howard Hinnant's algorithm)
    yy = y - (mo <= 2)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    ms = int(frac[:3].ljust(3, "0")) if frac else 0
    return ((days * 24 + h) * 60 + mi - offset) * 60_000 + s * 1000 + ms


def _time(prefix: str, value: str, ctx: _Ctx) -> int:
    if prefix == "d":
        t = parse_iso_ms(value)
        if t is None:
            raise ctx.fail("bad_time", "bad time")
    else:
        digits = value[1:] if value[:1] == "-" else value
        if not (digits.isascii() and digits.isdigit()):
            raise ctx.fail("bad_time", "bad time")
        if value[0] == "-":
            raise ctx.fail("time_range", "time out of range")
        if len(digits) > 20:
            raise ctx.fail("time_range", "time out of range")
        t = int(digits) * (1000 if prefix == "s" else 1)
    if not 0 <= t <= MAX_TIME_MS:
        raise ctx.fail("time_range", "time out of range")
    return t


def parse_severity(text: str) -> str | None:
    """A code 0-7 or a name in any case, as the upper-case name (§4.3); None if neither."""
    if len(text) == 1 and "0" <= text <= "7":
        return SEVERITIES[int(text)]
    up = text.upper() if text.isascii() else ""
    return up if up in SEVERITIES else None


def valid_timezone(name: str) -> bool:
    """A time-zone ID ATSD accepts (§4.4): the short list, or a region ID known to
    zoneinfo, but no other all-capital three-letter ID (HST, EST, PST)."""
    if name in SHORT_ZONES:
        return True
    if not _ZONE_ID.match(name) or _DEPRECATED_ZONE.match(name):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


# -- commands --------------------------------------------------------------------------


def parse_command(text: str) -> tuple[bool, Command]:
    """Parse one logical command: (``debug`` prefix present, command).

    Raises `CommandError`.  Plain series lines take `parse_series_fast`.
    """
    if text.startswith("debug "):
        body = text[6:]
        if body.startswith("series "):
            cmd = parse_series_fast(body)
            if cmd is not None:
                return True, cmd
        return True, parse_slow(body)
    if text.startswith("series "):
        cmd = parse_series_fast(text)
        if cmd is not None:
            return False, cmd
    if text.startswith(" "):
        stripped = text.lstrip(" ")
        if stripped.startswith("debug "):
            return True, parse_slow(stripped[6:])
        return False, parse_slow(stripped)
    return False, parse_slow(text)


def parse_slow(body: str) -> Command:
    """The whole grammar, for a command without its ``debug `` prefix."""
    i = len(body) - len(body.lstrip(" "))
    end = body.find(" ", i)
    if end < 0:
        end = len(body)
    name = body[i:end]
    parser = _PARSERS.get(name)
    if parser is not None:
        return parser(body, end)
    if name in CONTROLS:
        if body[end:].strip(" "):
            raise _invalid(body, "syntax", f"{name} takes no fields")
        return Control(name)
    raise CommandError(f"Invalid command: {_one_line(body, ECHO_CHARS)}", "unknown_command")


def _repeated(ctx: _Ctx, what: str = "repeated field") -> CommandError:
    return ctx.fail("repeated_field", what)


def _series(body: str, i: int) -> SeriesCommand:
    ctx = _Ctx(body)
    entity: str | None = None
    samples: dict[str, list] = {}
    tags: dict[str, str] = {}
    append: bool | None = None
    time_ms: int | None = None
    for prefix, name, value, start, end in tokenize(body, i, _SERIES, ctx):
        ctx.start, ctx.end = start, end
        if prefix == "m" or prefix == "x":
            metric = _name(name or "", "metric", ctx)
            sample = samples.get(metric)
            if sample is None:
                sample = samples[metric] = [metric, NAN, None, False]
            if prefix == "m":
                if sample[3]:
                    raise _repeated(ctx, "repeated metric")
                sample[1] = _number(value, ctx)
                sample[3] = True
            else:
                if sample[2] is not None:
                    raise _repeated(ctx, "repeated metric")
                sample[2] = value
        elif prefix == "t":
            tag = _name(name or "", "tag", ctx)
            if tag in tags:
                raise _repeated(ctx, "repeated tag")
            if not value:
                raise ctx.fail("bad_value", "empty tag value")
            tags[tag] = value
        elif prefix == "e":
            if entity is not None:
                raise _repeated(ctx)
            entity = _name(value, "entity", ctx)
        elif prefix == "a":
            if append is not None:
                raise _repeated(ctx)
            append = _bool(value, ctx)
        else:
            if time_ms is not None:
                raise _repeated(ctx, "more than one time field")
            time_ms = _time(prefix, value, ctx)
    if entity is None:
        raise _invalid(body, "missing_field", "no e: entity")
    if not samples:
        raise _invalid(body, "missing_field", "no m: or x: metric")
    if len(tags) > MAX_TAGS:
        raise _invalid(body, "too_many_tags", f"{len(tags)} tags, at most {MAX_TAGS}")
    return SeriesCommand(
        entity,
        [(m, v, x) for m, v, x, _ in samples.values()],
        tags,
        bool(append),
        time_ms,
    )


def _property(body: str, i: int) -> PropertyCommand:
    ctx = _Ctx(body)
    entity: str | None = None
    ptype: str | None = None
    key: dict[str, str] = {}
    tags: dict[str, str] = {}
    persist: bool | None = None
    time_ms: int | None = None
    for prefix, name, value, start, end in tokenize(body, i, _PROPERTY, ctx):
        ctx.start, ctx.end = start, end
        if prefix == "v":
            tag = _name(name or "", "tag", ctx)
            if tag in tags:
                raise _repeated(ctx, "repeated tag")
            tags[tag] = value if value.strip(_TRIM) else ""
        elif prefix == "k":
            k = _name(name or "", "key", ctx)
            if k in key:
                raise _repeated(ctx, "repeated key")
            if not value:
                raise ctx.fail("bad_value", "empty key value")
            key[k] = value
        elif prefix == "e":
            if entity is not None:
                raise _repeated(ctx)
            entity = _name(value, "entity", ctx)
        elif prefix == "t":
            if ptype is not None:
                raise _repeated(ctx)
            ptype = _name(value, "type", ctx)
        elif prefix == "p":
            if persist is not None:
                raise _repeated(ctx)
            persist = _bool(value, ctx)
        else:
            if time_ms is not None:
                raise _repeated(ctx, "more than one time field")
            time_ms = _time(prefix, value, ctx)
    if entity is None:
        raise _invalid(body, "missing_field", "no e: entity")
    if ptype is None:
        raise _invalid(body, "missing_field", "no t: type")
    if len(key) + len(tags) > MAX_TAGS:
        raise _invalid(
            body, "too_many_tags", f"{len(key) + len(tags)} keys and tags, at most {MAX_TAGS}"
        )
    if not any(tags.values()):
        raise CommandError(
            f"Empty tag values in command: {_one_line(body, ECHO_CHARS)}", "empty_tags"
        )
    return PropertyCommand(entity, ptype, key, tags, time_ms, persist is not False)


def _message(body: str, i: int) -> MessageCommand:
    ctx = _Ctx(body)
    entity: str | None = None
    tags: dict[str, str] = {}
    reserved: dict[str, str] = {}
    text: str | None = None
    seen_text = False
    persist: bool | None = None
    time_ms: int | None = None
    count = 0
    for prefix, name, value, start, end in tokenize(body, i, _MESSAGE, ctx):
        ctx.start, ctx.end = start, end
        if prefix == "t":
            tag = _name(name or "", "tag", ctx)
            if tag in tags or tag in reserved:
                raise _repeated(ctx, "repeated tag")
            if not value:
                raise ctx.fail("bad_value", "empty tag value")
            count += 1
            if tag == "severity":
                sev = parse_severity(value)
                if sev is None:
                    raise ctx.fail("bad_value", "bad severity")
                reserved[tag] = sev
            elif tag == "type" or tag == "source":
                reserved[tag] = value
            else:
                tags[tag] = value
        elif prefix == "m":
            if seen_text:
                raise _repeated(ctx)
            seen_text = True
            text = value or None
        elif prefix == "e":
            if entity is not None:
                raise _repeated(ctx)
            entity = _name(value, "entity", ctx)
        elif prefix == "p":
            if persist is not None:
                raise _repeated(ctx)
            persist = _bool(value, ctx)
        else:
            if time_ms is not None:
                raise _repeated(ctx, "more than one time field")
            time_ms = _time(prefix, value, ctx)
    if entity is None:
        raise _invalid(body, "missing_field", "no e: entity")
    if text is None and not count:
        raise _invalid(body, "missing_field", "no m: text and no t: tag")
    if count > MAX_TAGS:
        raise _invalid(body, "too_many_tags", f"{count} tags, at most {MAX_TAGS}")
    return MessageCommand(
        entity,
        reserved.get("type"),
        reserved.get("source"),
        reserved.get("severity"),
        tags,
        text,
        time_ms,
        persist is not False,
    )


def _meta_value(prefix: str, value: str, ctx: _Ctx) -> object:
    """One metric/entity field as the export writes it; None resets it."""
    if prefix in ("b", "v", "pe"):
        return _bool(value, ctx)
    if not value:
        return None
    if prefix in ("l", "d", "u", "f"):
        return value
    if prefix == "p":
        v = value.lower()
        if v not in DATA_TYPES:
            raise ctx.fail("bad_value", "bad data type")
        return v
    if prefix == "i":
        v = value.lower()
        if v not in INTERPOLATIONS:
            raise ctx.fail("bad_value", "bad interpolation")
        return v
    if prefix == "a":
        v = value.lower()
        if v not in INVALID_ACTIONS:
            raise ctx.fail("bad_value", "bad invalid action")
        return v
    if prefix == "z":
        if not valid_timezone(value):
            raise ctx.fail("bad_value", "unknown time zone")
        return value
    if prefix == "rd":
        if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) >= 2**31:
            raise ctx.fail("bad_number", "bad retention days")
        return int(value)
    return _number(value, ctx, nan=False)  # min, max


def _meta(kind: Literal["metric", "entity"], body: str, i: int) -> MetaCommand:
    ctx = _Ctx(body)
    table, names, name_prefix = (
        (_METRIC, _METRIC_NAMES, "m") if kind == "metric" else (_ENTITY, _ENTITY_NAMES, "e")
    )
    name: str | None = None
    fields: dict = {}
    tags: dict[str, str] | None = None
    for prefix, tag, value, start, end in tokenize(body, i, table, ctx):
        ctx.start, ctx.end = start, end
        if prefix == "t":
            t = _name(tag or "", "tag", ctx)
            if tags is None:
                tags = {}
            elif t in tags:
                raise _repeated(ctx, "repeated tag")
            tags[t] = value
        elif prefix == name_prefix:
            if name is not None:
                raise _repeated(ctx)
            name = _name(value, kind, ctx)
        else:
            key = names[prefix]
            if key in fields:
                raise _repeated(ctx)
            fields[key] = _meta_value(prefix, value, ctx)
    if name is None:
        raise _invalid(body, "missing_field", f"no {name_prefix}: {kind} name")
    if tags is not None:
        if len(tags) > MAX_TAGS:
            raise _invalid(body, "too_many_tags", f"{len(tags)} tags, at most {MAX_TAGS}")
        fields["tags"] = tags
    return MetaCommand(kind, name, fields)


_PARSERS = MappingProxyType(
    {
        "series": _series,
        "property": _property,
        "message": _message,
        "metric": lambda body, i: _meta("metric", body, i),
        "entity": lambda body, i: _meta("entity", body, i),
    }
)


# -- the series fast path ----------------------------------------------------------------


def parse_series_fast(body: str) -> SeriesCommand | None:
    """``series e:E m:M=V t:K=V ms:T`` in its plain form (fields in any order,
    unquoted, printable, ``m:`` ``t:`` ``e:`` ``ms:`` ``s:`` only): one split and
    no regex.  None for anything else, including every error, so that
    `parse_slow` decides (and words the error).  ``body`` starts ``series ``."""
    if '"' in body or not body.isprintable():
        return None  # also excludes whitespace and controls in every name and value
    entity = None
    samples: dict[str, tuple[str, float, None]] = {}
    tags: dict[str, str] = {}
    time_ms = None
    parts = body.split(" ")
    parts[0] = ""  # "series"
    for p in parts:
        c = p[:2]
        if c == "t:":
            name, _, val = p[2:].partition("=")
            if not name or not val:
                return None
            name = name.lower()
            if name in tags:
                return None
            tags[name] = val
        elif c == "m:":
            name, eq, val = p[2:].partition("=")
            if not name or not eq:
                return None
            name = name.lower()
            if name in samples:
                return None
            v = _plain_number(val)
            if v is None:
                return None
            samples[name] = (name, v, None)
        elif c == "e:":
            if entity is not None or len(p) == 2:
                return None
            entity = p[2:].lower()
        elif c == "ms" or c == "s:":
            if time_ms is not None:
                return None
            time_ms = _plain_time(p)
            if time_ms is None:
                return None
        elif p:  # "" is between two spaces
            return None
    if entity is None or not samples or len(tags) > MAX_TAGS:
        return None
    return SeriesCommand(entity, list(samples.values()), tags, False, time_ms)


def _plain_number(val: str) -> float | None:
    """A finite number or ``NaN`` in a token known to be printable and unquoted.

    There float() accepts exactly the BigDecimal syntax plus ``_`` separators,
    non-ASCII digits, inf and nan, which are left to the slow path."""
    if val == "NaN":
        return NAN
    if not val.isascii() or "_" in val:
        return None
    try:
        v = float(val)
    except ValueError:
        return None
    return v if v - v == 0.0 else None  # not inf, nan or an overflow


def _plain_time(p: str) -> int | None:
    """``ms:DIGITS`` or ``s:DIGITS`` within range, else None."""
    if p[1] == ":":
        ts, scale = p[2:], 1000
    elif p[2:3] == ":":
        ts, scale = p[3:], 1
    else:
        return None
    if not (ts.isdigit() and ts.isascii()) or len(ts) > 16:
        return None
    t = int(ts) * scale
    return t if t <= MAX_TIME_MS else None


def _template(body: str) -> tuple[str, int, int, int] | None:
    """For ``series ... m:M=V ... ms:T`` with ``ms:`` last: the line without V and
    `` ms:T`` (what identifies the series), and where V and T are.

    The template and (V, T) give back the line (neither holds a space), so equal
    templates mean equal entity, metric and tags.  Only a line with one metric
    is cached, so a template holding a second ``m:`` never hits.
    """
    sp = body.rfind(" ")
    if not body.startswith("ms:", sp + 1):
        return None
    m = body.find(" m:")
    eq = body.find("=", m + 3)
    vend = body.find(" ", m + 3)
    if m < 0 or not 0 <= eq < vend:
        return None
    return body[: eq + 1] + body[vend:sp], eq + 1, vend, sp + 4


def _cached_value(val: str, ts: str) -> tuple[float, int] | None:
    """The value and time of a line whose template is cached, if both are plain.

    float() takes exactly BigDecimal's syntax once ``_``, non-ASCII digits,
    surrounding whitespace (all <= U+0020 in ASCII), inf and nan are excluded."""
    if not (ts.isdigit() and ts.isascii()) or len(ts) > 16:
        return None
    t = int(ts)
    if t > MAX_TIME_MS:
        return None
    if val == "NaN":
        return NAN, t
    if not val or not val.isascii() or "_" in val or val[0] <= " " or val[-1] <= " ":
        return None
    try:
        v = float(val)
    except ValueError:
        return None
    if v - v != 0.0:
        return None
    return v, t


class _Known:
    """A cached series, and the column of a `SampleSet` its samples went to last."""

    __slots__ = ("col", "cols", "entity", "key", "metric", "tags")

    def __init__(self, entity: str, metric: str, tags: dict[str, str]) -> None:
        self.entity = entity
        self.metric = metric
        self.tags = tags
        self.key = series_key(metric, tags, entity)
        self.cols: dict | None = None  # the columns dict `col` lives in
        self.col: Column | None = None


class SeriesFastPath:
    """`parse_command` with a bounded cache of validated series; one per listener.

    Lines of one series differ only in value and time; for the usual shape
    ``series e:E [t:K=V...] m:M=V [t:K=V...] ms:T`` (one metric, ``ms:`` last)
    the rest of the line is looked up in the cache instead of being parsed
    again.  `parse` returns what `parse_command` returns; `take` goes further
    and appends a run of such lines straight into a `SampleSet`, without a
    command object per line.  ``limit`` bounds the cache (cleared when full);
    0 disables it.
    """

    __slots__ = ("_cache", "_cols", "_lent", "_limit", "_split")

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._cache: dict[str, _Known] = {}
        # the same series, for `take`: text before the value's ``=`` -> text
        # between the value and `` ms:`` -> series
        self._split: dict[str, dict[str, _Known]] = {}
        # the columns `take` last filled, and the series that point into them:
        # when a new batch comes, those let go of the old one (else each cached
        # series would keep alive the whole batch it last went to, written long ago)
        self._cols: dict | None = None
        self._lent: list[_Known] = []

    def parse(self, text: str) -> tuple[bool, Command]:
        """Exactly `parse_command` (tests prove it), faster on repeated series."""
        debug = text.startswith("debug ")
        body = text[6:] if debug else text
        if not body.startswith("series "):
            return parse_command(text)
        tpl = _template(body)
        if tpl is None:
            return parse_command(text)
        template, v0, v1, t0 = tpl
        hit = self._cache.get(template)
        if hit is not None:
            vt = _cached_value(body[v0:v1], body[t0:])
            if vt is None:
                return debug, parse_slow(body)
            return debug, SeriesCommand(
                hit.entity, [(hit.metric, vt[0], None)], dict(hit.tags), False, vt[1]
            )
        cmd = parse_series_fast(body)
        if cmd is None:
            return debug, parse_slow(body)
        self._remember(template, cmd, body, tpl)
        return debug, cmd

    def _remember(self, template: str, cmd: SeriesCommand, body: str,
                  tpl: tuple[str, int, int, int]) -> None:
        if self._limit and len(cmd.samples) == 1:
            if len(self._cache) >= self._limit:
                self._cache.clear()
                self._split.clear()
            known = self._cache[template] = _Known(cmd.entity, cmd.samples[0][0], dict(cmd.tags))
            _, v0, v1, t0 = tpl
            # `take`'s split lookup: the first ``=`` is the metric's, and some text
            # lies between the value and `` ms:`` (so its key is never "")
            if body.find("=") == v0 - 1 and v1 + 1 < t0 - 4:
                by_mid = self._split.get(body[: v0 - 1])
                if by_mid is None:
                    by_mid = self._split[body[: v0 - 1]] = {}
                by_mid[body[v1 + 1 : t0 - 4]] = known

    def take(self, commands: Sequence[object], i: int, samples: SampleSet) -> int:
        """Append to ``samples.columns`` the samples of ``commands[i]``, ``[i + 1]``...
        while they are plain series lines of cached series (no ``debug``); return
        the index of the first other one, for `parse`.

        Each line adds what `CommandBatch.add` would add for `parse_command`'s
        result (time in ns); ``samples.count`` is kept.  This loop is the TCP hot
        path.  A line ``PRE=VAL MID ms:TS`` (PRE free of ``=``) is cut by three
        partitions and found in ``_split[PRE][MID]``: for a cached template whose
        first ``=`` is the metric's, equal PRE and MID mean an equal template, since
        VAL and TS hold no space.  Other cached shapes take the template lookup.
        """
        cache = self._cache
        split = self._split
        cols = samples.columns
        lent = self._lent
        if cols is not self._cols:
            for known in lent:
                known.cols = known.col = None
            lent.clear()
            self._cols = cols
        last_ts, last_ns = " ", 0  # never equal to digits
        start = i
        n = len(commands)
        while i < n:
            body = commands[i]
            if type(body) is not str:
                break
            head, _, ts = body.rpartition(" ms:")
            pre, _, rest = head.partition("=")
            val, _, mid = rest.partition(" ")
            by_mid = split.get(pre)
            hit = None if by_mid is None else by_mid.get(mid)
            if hit is None:
                # the template lookup (_template, inlined)
                if not body.startswith("series "):
                    break
                sp = body.rfind(" ")
                if not body.startswith("ms:", sp + 1):
                    break
                m = body.find(" m:")
                eq = body.find("=", m + 3)
                vend = body.find(" ", m + 3)
                if m < 0 or not 0 <= eq < vend:
                    break
                hit = cache.get(body[: eq + 1] + body[vend:sp])
                if hit is None:
                    break
                ts = body[sp + 4 :]
                val = body[eq + 1 : vend]
            if ts == last_ts:
                t = last_ns
            else:
                # digits only: then the `` ms:`` found is at the last space
                if not (ts.isdigit() and ts.isascii()) or len(ts) > 16:
                    break
                t = int(ts)
                if t > MAX_TIME_MS:
                    break
                t *= 1_000_000
                last_ts, last_ns = ts, t
            if val == "NaN":
                v = NAN
            else:
                # ASCII and printable (no space either): float() then takes exactly
                # BigDecimal's syntax once `_`, inf and nan are excluded
                if not (val.isascii() and val.isprintable()) or "_" in val:
                    break
                try:
                    v = float(val)
                except ValueError:
                    break
                if v - v != 0.0:
                    break
            if hit.cols is cols:
                col = hit.col
            else:
                col = cols.get(hit.key)
                if col is None:
                    col = cols[hit.key] = Column()
                hit.cols = cols
                hit.col = col
                lent.append(hit)
            col.times.append(t)
            col.values.append(v)
            if col.texts is not None:
                col.texts.append(None)
            i += 1
        samples.count += i - start
        return i


# -- framed commands: their length limits, then the parser ----------------------------


def framed_text(item: str | Overlong) -> str:
    """What a framed command is in logs and replies (an over-long one's head)."""
    return item.head if isinstance(item, Overlong) else item


def parse_framed(
    item: str | Overlong,
    parse: Callable[[str], tuple[bool, Command]] = parse_command,
    other_limit: int = OTHER_LIMIT,
) -> tuple[bool, Command]:
    """``parse`` a command as a channel framed it, after the length limits:
    the framer's `LIMIT` (an `Overlong`), and ``other_limit`` bytes for a
    command other than series, property and message.  Both are `CommandError`
    with the reason ``overlong``."""
    if isinstance(item, Overlong):
        raise CommandError(f"Invalid command: the command has {item.length} characters, "
                           f"more than {LIMIT}", "overlong")
    if over_other_limit(item, other_limit):
        body = item[6:] if item.startswith("debug ") else item
        raise CommandError(f"Invalid command: {body[:100]}... is longer than {other_limit} "
                           "bytes", "overlong")
    return parse(item)


def iso_ms(time_ms: int) -> str:
    """``2017-08-01T00:00:00.000Z``: how ATSD writes a time back (its read-back
    replies and its command logs), the inverse of a ``d:`` field."""
    s, ms = divmod(time_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ms:03d}Z"
