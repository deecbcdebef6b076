"""Export lines (DESIGN §7) read back into items: the inverse of `tsnet.export`.

Pure functions, for ``tsnet import``: each takes one decoded line (a dict) and
returns the item it describes, or raises `LineError` saying what is wrong in
the line's own terms (a key, its value).  The checks are those of the data
model, the same every backend applies when it stores an item (`tsnet.model`
and `tsnet.storage.rules`: names, int64 times and integers, str tags, meta
kinds), plus the shape of the line itself: a key the format does not have is
refused rather than dropped, so nothing in a newer export is lost in silence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from tsnet.export import META_DEFAULTS
from tsnet.model import (
    INT64_MAX,
    INT64_MIN,
    Batch,
    Message,
    Meta,
    Property,
    SeriesKey,
    Value,
    valid_solution_name,
)
from tsnet.storage import rules

NS_PER_MS = 1_000_000
#: the kinds the core restores; a family restores its own (`IImportKinds`)
CORE_KINDS = frozenset(("series", "property", "message", "metric", "entity"))
#: what the export writes for numbers JSON cannot carry (`export.json_number`)
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: meta fields that hold numbers (a NaN one is exported as "NaN")
_NUMERIC_META = frozenset(("max_value", "min_value"))
_SERIES_KEYS = frozenset(("kind", "solution", "metric", "entity", "tags", "time_ms",
                          "value", "text"))
_PROPERTY_KEYS = frozenset(("kind", "solution", "entity", "type", "key", "tags", "time_ms"))
_MESSAGE_KEYS = frozenset(("kind", "solution", "entity", "type", "source", "severity",
                           "tags", "message", "time_ms"))


class LineError(ValueError):
    """A line that is not a valid export line; ``str()`` says why."""


class ImportStep(NamedTuple):
    """What an importer made of some lines (`IImporter.load`): the batches to
    write, by solution; how many lines are stored as they are already; the
    lines refused, as (line number, message); and notes on lines imported
    with a caveat, as (line number, message).  The lines neither unchanged
    nor refused are those the batches write."""

    batches: list[tuple[str, Batch]]
    unchanged: int
    refused: list[tuple[int, str]]
    notes: Sequence[tuple[int, str]] = ()


def _is_int(v: Any) -> bool:
    return v.__class__ is int  # (not bool, which JSON's true is)


def check_keys(line: dict, allowed: frozenset[str]) -> None:
    """Refuse a key the kind's lines do not have."""
    if not line.keys() <= allowed:
        extra = sorted(set(line) - allowed)
        raise LineError(f"unknown key {extra[0]!r} in a {line.get('kind')} line")


def text_field(line: dict, name: str, optional: bool = False, empty: bool = False) -> Any:
    """A str field (None when ``optional`` and absent; never ``""`` unless
    ``empty``: the export leaves an empty optional field out)."""
    if name not in line:
        if optional:
            return None
        raise LineError(f"{name!r} is missing")
    v = line[name]
    if not isinstance(v, str):
        raise LineError(f"{name!r} must be a string, not {_shown(v)}")
    if not v and not empty:
        raise LineError(f"{name!r} is empty")
    return v


def int_field(line: dict, name: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """An integer field in ``[low, high]``."""
    if name not in line:
        raise LineError(f"{name!r} is missing")
    v = line[name]
    if not _is_int(v):
        raise LineError(f"{name!r} must be an integer, not {_shown(v)}")
    if not low <= v <= high:
        raise LineError(f"{name!r} {v} is out of range")
    return v


def solution_of(line: dict) -> str:
    """The line's solution, a valid solution name (DESIGN §5)."""
    name = text_field(line, "solution")
    if not valid_solution_name(name):
        raise LineError(f"{name!r} is not a solution name (letters, digits, '-', '_', '.')")
    return name


def time_ns_of(line: dict) -> int:
    """``time_ms`` as integer nanoseconds, within what storage holds (int64)."""
    return int_field(line, "time_ms", INT64_MIN // NS_PER_MS, INT64_MAX // NS_PER_MS) * NS_PER_MS


def _tags(line: dict, name: str) -> dict[str, str]:
    v = line.get(name, {})
    try:
        return rules.check_tags(v, repr(name))
    except TypeError as e:
        raise LineError(str(e)) from None


def _value(line: dict) -> Value:
    if "value" not in line:
        return None  # (a sample with a text only)
    v = line["value"]
    if _is_int(v):
        if not INT64_MIN <= v <= INT64_MAX:
            raise LineError(f"'value' {v} is outside int64")
        return v
    if v.__class__ is float:
        return v
    if isinstance(v, str) and v in _SPECIAL:
        return _SPECIAL[v]
    raise LineError(f"'value' must be a number or \"NaN\", not {_shown(v)}")


def parse_series(line: dict) -> tuple[SeriesKey, int, Value, str | None]:
    """(series key, time in ns, value or None, text or None) of a series line."""
    check_keys(line, _SERIES_KEYS)
    metric = text_field(line, "metric")
    entity = text_field(line, "entity", optional=True)
    tags = _tags(line, "tags")
    value = _value(line)
    text = text_field(line, "text", optional=True, empty=True)
    if value is None and text is None:
        raise LineError("a series line needs a 'value' or a 'text'")
    return (metric, entity, tuple(sorted(tags.items()))), time_ns_of(line), value, text


def parse_property(line: dict) -> Property:
    check_keys(line, _PROPERTY_KEYS)
    return Property(entity=text_field(line, "entity"), type=text_field(line, "type"),
                    key=_tags(line, "key"), tags=_tags(line, "tags"),
                    time_ns=time_ns_of(line))


def parse_message(line: dict) -> Message:
    check_keys(line, _MESSAGE_KEYS)
    return Message(entity=text_field(line, "entity"), time_ns=time_ns_of(line),
                   message=text_field(line, "message", optional=True) or "",
                   type=text_field(line, "type", optional=True),
                   source=text_field(line, "source", optional=True),
                   severity=text_field(line, "severity", optional=True),
                   tags=_tags(line, "tags"))


def parse_meta(line: dict) -> Meta:
    """A ``metric`` or ``entity`` line; its fields are every other key (the
    export writes the known ones in a fixed order and any other after them)."""
    kind = line.get("kind")
    try:
        rules.check_meta_kind(kind)
    except ValueError as e:
        raise LineError(str(e)) from None
    name = text_field(line, kind)
    fields: dict[str, Any] = {}
    for k, v in line.items():
        if k in ("kind", "solution", kind):
            continue
        if v is None or v == "":
            raise LineError(f"{k!r} is empty (the export leaves out a field that is not set)")
        if k == "tags":
            v = _tags(line, "tags")
        elif k in _NUMERIC_META and isinstance(v, str) and v in _SPECIAL:
            v = _SPECIAL[v]
        fields[k] = v
    return Meta(kind, name, fields)


def meta_to_write(meta: Meta, stored: dict | None) -> dict:
    """The fields an imported meta line upserts onto ``stored`` (its fields
    as stored, None when it has no record yet): the line's, without the
    defaults the export filled in for fields that are not stored
    (`export.META_DEFAULTS`), so a metric the line shows as only implicitly
    registered stays so, and one whose stored field differs gets the line's."""
    defaults = META_DEFAULTS[meta.kind]
    have = stored or {}
    return {k: v for k, v in meta.fields.items()
            if not (k in defaults and k not in have and defaults[k] == v)}


def same_value(a: Value, b: Value) -> bool:
    """Equal as the export tells them apart: same type, same number (NaN is NaN)."""
    if a.__class__ is not b.__class__:
        return False
    return a == b or (a.__class__ is float and math.isnan(a) and math.isnan(b))


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
