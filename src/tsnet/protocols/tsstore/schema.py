"""Schema stores: versioned field lists and compact/full conversion (spec §5.2).

Mirrors ``pkg/schema/schema.go`` and ``pkg/store/schema.go``. Full form is
an object keyed by field name, compact form (the only one on disk) is keyed
by the decimal field index. Error texts are the reference's, because the
REST, WebSocket and Unix-socket layers pass them through verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tsnet.protocols.tsstore.gojson import (
    GoJSONError,
    go_kind,
    go_loads,
    go_loads_map,
    go_marshal,
)

__all__ = [
    "FIELD_TYPES",
    "NUMERIC_TYPES",
    "SchemaError",
    "SchemaSet",
    "compact",
    "expand",
    "expand_value",
    "numeric_map",
    "numeric_names",
]

NUMERIC_TYPES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float32", "float64"}
)
FIELD_TYPES = NUMERIC_TYPES | {"bool", "string"}

#: gin's message when the PUT body has no (or a null) ``fields``.
FIELDS_REQUIRED = (
    "Key: 'SchemaRequest.Fields' Error:Field validation for 'Fields' failed on the 'required' tag"
)
SCHEMA_REQUIRED = "schema is required for schema data type"

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_ATOI_RE = re.compile(r"[+-]?[0-9]+")


class SchemaError(ValueError):
    """A schema definition or validation failure; ``str()`` is the spec's text."""


def _type_error(value: object, where: str, go_type: str) -> SchemaError:
    shown = go_kind(value)
    if shown == "number" and go_type == "int":
        shown = f"number {value!r}"  # Go quotes the literal only for numeric targets
    return SchemaError(
        f"json: cannot unmarshal {shown} into Go struct field {where} of type {go_type}"
    )


def _field_key(key: str) -> str | None:
    """Which schema.Field member a JSON key sets (Go matches case-insensitively)."""
    folded = key.translate({0x017F: "s", 0x212A: "k"})
    if not folded.isascii():
        return None
    folded = folded.lower()
    return folded if folded in ("index", "name", "type") else None


def _decode_fields(fields: object) -> list[dict]:
    """Decode the request's ``fields`` the way encoding/json fills []schema.Field.

    Null members leave Go's zero values (0, ""); wrong JSON kinds are Go's
    UnmarshalTypeError texts. Returns normalized ``{index, name, type}`` dicts.
    """
    if fields is None:
        raise SchemaError(FIELDS_REQUIRED)
    if not isinstance(fields, (list, tuple)):
        raise _type_error(fields, "SchemaRequest.fields", "[]schema.Field")
    out: list[dict] = []
    first_error: SchemaError | None = None
    for item in fields:
        f = {"index": 0, "name": "", "type": ""}
        if item is None:
            out.append(f)
            continue
        if not isinstance(item, dict):
            first_error = first_error or _type_error(item, "SchemaRequest.fields", "schema.Field")
            continue
        for key, value in item.items():
            member = _field_key(str(key))
            if member is None or value is None:
                continue
            if member == "index":
                ok = (
                    isinstance(value, int)
                    and not isinstance(value, bool)
                    and _INT64_MIN <= value <= _INT64_MAX
                )
                if ok:
                    f["index"] = value
                else:
                    first_error = first_error or _type_error(value, "Field.fields.index", "int")
            elif isinstance(value, str):
                f[member] = value
            else:
                go_type = "string" if member == "name" else "schema.FieldType"
                first_error = first_error or _type_error(value, f"Field.fields.{member}", go_type)
        out.append(f)
    if first_error is not None:
        raise first_error
    return out


def _validate(fields: list[dict]) -> None:
    """``Schema.Validate``: the checks run in this order, field by field."""
    if not fields:
        raise SchemaError("invalid schema: no fields defined")
    seen_index: set[int] = set()
    seen_name: set[str] = set()
    for f in fields:
        index, name, ftype = f["index"], f["name"], f["type"]
        if index <= 0:
            raise SchemaError(f"invalid schema: field index must be positive: {index}")
        if name == "":
            raise SchemaError("invalid schema: field name is required")
        if ftype not in FIELD_TYPES:
            raise SchemaError(f"invalid field type: {ftype}")
        if index in seen_index:
            raise SchemaError(f"invalid schema: duplicate field index: {index}")
        if name in seen_name:
            raise SchemaError(f"invalid schema: duplicate field name: {name}")
        seen_index.add(index)
        seen_name.add(name)


@dataclass
class SchemaSet:
    """All versions of a store's schema (``schema.json``).

    Immutable in use: :meth:`evolve` returns a new set, so a store can swap
    its reference atomically.
    """

    current_version: int = 0
    versions: dict[int, list[dict]] = field(default_factory=dict)

    def current(self) -> list[dict] | None:
        """The current version's fields, or None when no schema is defined."""
        if self.current_version <= 0:
            return None
        return self.versions.get(self.current_version)

    def evolve(self, fields: object) -> SchemaSet:
        """Validate a PUT's ``fields`` and return the set with version N+1.

        Indices kept from the current version must keep their name and type
        (append-only); dropping fields is allowed, as in the reference.
        """
        new = _decode_fields(fields)
        _validate(new)
        current = self.current()
        if current is not None:
            existing = {f["index"]: f for f in current}
            for f in new:
                old = existing.get(f["index"])
                if old is not None and (old["name"] != f["name"] or old["type"] != f["type"]):
                    raise SchemaError(f"invalid schema: cannot modify existing field {f['index']}")
        version = self.current_version + 1
        versions = dict(self.versions)
        versions[version] = new
        return SchemaSet(current_version=version, versions=versions)

    def to_json(self) -> dict:
        """The ``schema.json`` document."""
        return {
            "current_version": self.current_version,
            "schemas": {
                str(v): {"version": v, "fields": [dict(f) for f in fields]}
                for v, fields in sorted(self.versions.items())
            },
        }

    @classmethod
    def from_json(cls, d: Mapping) -> SchemaSet:
        """Load a ``schema.json`` document (as written by Go or :meth:`to_json`)."""
        if not isinstance(d, Mapping):
            raise SchemaError("invalid schema file: not an object")
        try:
            current = int(d.get("current_version") or 0)
            versions: dict[int, list[dict]] = {}
            for key, sch in (d.get("schemas") or {}).items():
                raw = (sch or {}).get("fields") or []
                versions[int(key)] = [
                    {
                        "index": int(f.get("index") or 0),
                        "name": str(f.get("name") or ""),
                        "type": str(f.get("type") or ""),
                    }
                    for f in raw
                ]
        except (AttributeError, TypeError, ValueError) as exc:
            raise SchemaError(f"invalid schema file: {exc}") from None
        return cls(current_version=current, versions=versions)


def numeric_names(fields: Iterable[dict] | None) -> set[str]:
    """Names of numeric fields; aggregation uses this to choose functions."""
    if not fields:
        return set()
    return {f["name"] for f in fields if f["type"] in NUMERIC_TYPES}


def numeric_map(fields: Iterable[dict] | None) -> dict[str, bool] | None:
    """Go's BuildNumericMap: name -> numeric, or None without a schema.

    Unlike :func:`numeric_names` it keeps "known but not numeric" apart from
    "unknown" (which the aggregator then sniffs), exactly as the reference.
    """
    if not fields:
        return None
    return {f["name"]: f["type"] in NUMERIC_TYPES for f in fields}


def _atoi(key: str) -> int | None:
    """``strconv.Atoi``: optional sign, ASCII digits, int64 range."""
    if not _ATOI_RE.fullmatch(key):
        return None
    digits = key.lstrip("+-").lstrip("0")
    if len(digits) > 19:  # out of range (and int() of a long enough text fails)
        return None
    value = int(digits or "0")
    if key[0] == "-":
        value = -value
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def compact(fields: list[dict] | None, data: bytes | str | None) -> bytes:
    """ValidateAndCompact: full-form JSON object to compact bytes.

    ``fields`` is the current schema (None: no schema yet; ``[]``: the
    reference's empty set left by a failed first PUT, which says only
    ``invalid schema``). Absent data (None or empty) is Go's empty input.
    ``null`` compacts to ``{}``, as in Go. Raises :class:`SchemaError`.
    """
    if fields is None:
        raise SchemaError(SCHEMA_REQUIRED)
    if not fields:
        raise SchemaError("invalid schema")
    try:
        obj = go_loads_map(data or b"")
    except GoJSONError as exc:
        raise SchemaError(f"invalid JSON: {exc}") from None
    obj = obj or {}
    name_to_index = {f["name"]: f["index"] for f in fields}
    # ValidateData sniffs the *first* key (Go: a random one) to tell compact
    # input from full; document order makes the choice deterministic.
    keys = list(obj)
    if keys and _atoi(keys[0]) is not None:
        indices = {f["index"] for f in fields}
        for key in keys:
            index = _atoi(key)
            if index is None:
                raise SchemaError(f"invalid compact JSON key (must be numeric): {key}")
            if index not in indices:
                raise SchemaError(f"field not found in schema: index {index}")
    out: dict[str, object] = {}
    for key, value in obj.items():
        index = name_to_index.get(key)
        if index is None:
            raise SchemaError(f"field not found in schema: {key}")
        out[str(index)] = value
    return go_marshal(out)


def _expand_obj(fields: list[dict] | None, stored: bytes | str) -> dict | None:
    """CompactToFull as a dict, or None when the reference's expansion fails."""
    if not fields:
        return None
    try:
        obj = go_loads_map(stored)
    except GoJSONError:
        return None
    index_to_name = {f["index"]: f["name"] for f in fields}
    full: dict[str, object] = {}
    for key, value in (obj or {}).items():
        index = _atoi(key)
        if index is None:
            return None  # "invalid compact JSON key": the whole expansion fails
        name = index_to_name.get(index)
        if name is not None:
            full[name] = value
    return full


def expand(fields: list[dict] | None, stored: bytes) -> bytes:
    """Compact bytes to the full object (sorted by name, unknown indices dropped).

    On any failure the stored bytes come back unchanged, as the read paths do.
    """
    full = _expand_obj(fields, stored)
    if full is None:
        return bytes(stored)
    try:
        return go_marshal(full)
    except GoJSONError:
        return bytes(stored)


def expand_value(fields: list[dict] | None, stored: bytes, *, strict: bool = False) -> object:
    """The expanded record as a Python value, for aggregation and reads.

    On failure: the parsed stored value (None if it does not parse), which is
    what the push path feeds its aggregator; with ``strict=True`` None, so
    the record is skipped, as REST aggregation does.
    """
    full = _expand_obj(fields, stored)
    if full is not None:
        return full
    if strict:
        return None
    try:
        return go_loads(stored)
    except GoJSONError:
        return None
