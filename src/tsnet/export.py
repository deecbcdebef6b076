"""The export lines of DESIGN §7, built from stored items by pure functions.

The export format is a fixed contract (scripts diff and restore it), so every
backend builds its lines here rather than on its own.  Rules that apply to all
kinds: optional fields that are absent are left out, never ``null`` or ``""``;
``time_ms`` is ``time_ns // 1_000_000``; a NaN number is the string ``"NaN"``;
ints stay ints and floats stay floats; tag dicts are sorted so that two exports of
the same data are byte-identical.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from tsnet.model import Message, Meta, Property, Record, SeriesKey, Value

#: Meta fields in the order DESIGN §7 lists them; unknown fields follow, sorted.
META_FIELDS = (
    "data_type",
    "enabled",
    "versioned",
    "label",
    "description",
    "units",
    "timezone",
    "interpolate",
    "max_value",
    "min_value",
    "invalid_action",
    "filter",
    "persistent",
    "retention_days",
    "tags",
)
#: Meta fields holding an enum, exported in lower case.
META_ENUMS = frozenset(("data_type", "interpolate", "invalid_action"))
#: What a metric or entity that was only registered implicitly exports.
META_DEFAULTS: dict[str, dict[str, Any]] = {
    "metric": {"data_type": "float", "enabled": True},
    "entity": {"enabled": True, "tags": {}},
}


def time_ms(time_ns: int) -> int:
    return time_ns // 1_000_000


def json_number(v: int | float) -> int | float | str:
    """Numbers JSON can carry; NaN and infinities become strings (JSON has none)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def _absent(v: Any) -> bool:
    return v is None or v == ""


def _sorted_tags(tags: dict[str, str] | None) -> dict[str, str]:
    return dict(sorted(tags.items())) if tags else {}


def series_line(
    solution: str, key: SeriesKey, time_ns: int, value: Value, text: str | None = None
) -> dict:
    metric, entity, tags = key
    line: dict[str, Any] = {"kind": "series", "solution": solution, "metric": metric}
    if entity is not None:
        line["entity"] = entity
    line["tags"] = dict(tags)
    line["time_ms"] = time_ms(time_ns)
    if value is not None:
        line["value"] = json_number(value)
    if text is not None:
        line["text"] = text
    return line


def series_lines(
    solution: str,
    key: SeriesKey,
    times: Sequence[int],
    values: Sequence[Value],
    texts: Sequence[str | None] | None = None,
) -> Iterator[dict]:
    """The lines of one merged series, in time order (same lines as `series_line`).

    Exports run to millions of lines, so the common case (a value, no text)
    builds each line from a prepared head instead of calling `series_line`.
    """
    if texts is not None:
        for t, v, x in zip(times, values, texts, strict=True):
            yield series_line(solution, key, t, v, x)
        return
    metric, entity, tags = key
    head: dict[str, Any] = {"kind": "series", "solution": solution, "metric": metric}
    if entity is not None:
        head["entity"] = entity
    tag_dict = dict(tags)
    for t, v in zip(times, values, strict=True):
        if v is None or (v.__class__ is float and not math.isfinite(v)):
            yield series_line(solution, key, t, v)
        else:
            yield {**head, "tags": dict(tag_dict), "time_ms": t // 1_000_000, "value": v}


def property_line(solution: str, prop: Property) -> dict:
    """The export line of a property (DESIGN §7)."""
    return {
        "kind": "property",
        "solution": solution,
        "entity": prop.entity,
        "type": prop.type,
        "key": _sorted_tags(prop.key),
        "tags": _sorted_tags(prop.tags),
        "time_ms": time_ms(prop.time_ns),
    }


def message_line(solution: str, msg: Message) -> dict:
    """The export line of a message (DESIGN §7)."""
    line: dict[str, Any] = {"kind": "message", "solution": solution, "entity": msg.entity}
    for name in ("type", "source", "severity"):
        v = getattr(msg, name)
        if not _absent(v):
            line[name] = v
    line["tags"] = _sorted_tags(msg.tags)
    if not _absent(msg.message):
        line["message"] = msg.message
    line["time_ms"] = time_ms(msg.time_ns)
    return line


def _meta_value(name: str, v: Any) -> Any:
    if name in META_ENUMS and isinstance(v, str):
        return v.lower()
    if name == "tags" and isinstance(v, dict):
        return _sorted_tags(v)
    if isinstance(v, float):
        return json_number(v)
    return v


def meta_line(solution: str, meta: Meta) -> dict:
    """A ``metric`` or ``entity`` line; defaults fill what was never set."""
    if meta.kind not in META_DEFAULTS:
        raise ValueError(f"unknown meta kind {meta.kind!r}")
    fields = {**META_DEFAULTS[meta.kind], **meta.fields}
    line: dict[str, Any] = {"kind": meta.kind, "solution": solution, meta.kind: meta.name}
    known = [f for f in META_FIELDS if f in fields]
    extra = sorted(f for f in fields if f not in META_FIELDS)
    for name in known + extra:
        v = fields[name]
        if not _absent(v):
            line[name] = _meta_value(name, v)
    return line


def record_line(solution: str, rec: Record) -> dict:
    """A ts-store record: ``data`` as JSON for json/schema stores, else a string.

    Binary data that is not UTF-8 is base64 with ``"encoding":"base64"`` added,
    so that every record survives a round trip through the export.
    """
    data: Any
    extra: dict[str, str] = {}
    raw = bytes(rec.data)
    if rec.data_type in ("json", "schema"):
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw.decode("utf-8", "replace")
    else:
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError:
            if rec.data_type == "text":
                data = raw.decode("utf-8", "replace")
            else:
                data = base64.b64encode(raw).decode("ascii")
                extra["encoding"] = "base64"
    return {
        "kind": "record",
        "solution": solution,
        "time_ns": rec.time_ns,
        "size": len(raw),
        "data": data,
        **extra,
    }


def store_line(solution: str, attributes: dict) -> dict:
    """A ``store`` line from a ts-store solution's settings (type, sizes, schema, ...).

    Emitted by whoever holds the catalog (the ``tsnet export`` command), before the
    store's records; the data backend does not know which solutions are stores.
    """
    line: dict[str, Any] = {"kind": "store", "solution": solution}
    for k, v in attributes.items():
        if not _absent(v):
            line[k] = v
    return line


def dumps(line: dict) -> str:
    """One export line as compact JSON; refuses NaN so the output is always JSON."""
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
