"""Rules of the data model that every storage backend applies the same way.

They belong to the items (ATSD's merge semantics, implicit registration), not
to any one kind of storage, so a new backend reuses them instead of re-reading
the spec: SQLite and Redis must store the same thing for the same batch, which
the conformance suite checks.
"""

from __future__ import annotations

from typing import Any

from tsnet.errors import TooManyPoints
from tsnet.model import INT64_MAX, Batch, Meta, Property, SeriesKey

#: the property type that carries an entity's own tags (ATSD §4.2)
ENTITY_TAGS = "$entity_tags"

#: the kinds of meta records (ATSD `metric` and `entity` commands)
META_KINDS = ("metric", "entity")


def series_sort_key(key: SeriesKey) -> tuple:
    """Order series by metric, entity (none first), tags: the order every read
    (`IStorage.read_series`, `list_series`) and the export return."""
    metric, entity, tags = key
    return (metric, entity is not None, entity or "", tags)


#: what separates the texts appended to one sample (ATSD's ``a:true``, §4.1)
TEXT_SEPARATOR = ";\n"


def append_text(stored: str | None, new: str) -> str:
    """ATSD's append: the new text after the stored one, joined by
    `TEXT_SEPARATOR`, unless it is one of the stored parts already; a sample
    without text (or with an empty one) takes the new text as it is."""
    if not stored:
        return new
    if new in stored.split(TEXT_SEPARATOR):
        return stored
    return stored + TEXT_SEPARATOR + new


def blank(v: Any) -> bool:
    """An empty or whitespace-only value: ATSD's way of deleting a tag or field."""
    return v is None or (isinstance(v, str) and not v.strip())


def merge_tags(stored: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """ATSD tag merge (§4.2, §4.4): new tags overwrite, blank values delete,
    others stay; the result is sorted by key."""
    out = dict(stored)
    for k, v in new.items():
        if blank(v):
            out.pop(k, None)
        else:
            out[k] = v
    return dict(sorted(out.items()))


def merge_meta_fields(stored: dict, new: dict) -> dict:
    """Meta upsert (ATSD §4.4/4.5): only the fields given change; a None or ``""``
    field resets it; ``tags`` merge tag by tag like property tags."""
    out = dict(stored)
    for k, v in new.items():
        if k == "tags":
            out["tags"] = merge_tags(out.get("tags") or {}, v or {})
        elif v is None or v == "":
            out.pop(k, None)
        else:
            out[k] = v
    return out


def check_tags(d: Any, what: str, blanks: bool = False) -> dict[str, str]:
    """A copy of a tag dict, checked before a backend stores it: str keys, str
    values (None too where a blank value means delete, as in `merge_tags`);
    TypeError naming ``what`` otherwise."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise TypeError(f"{what} must be a dict")
    for k, v in d.items():
        if not isinstance(k, str) or not (isinstance(v, str) or (blanks and v is None)):
            raise TypeError(f"{what}: {k!r}={v!r} is not a str tag")
    return dict(d)


def check_meta_kind(kind: str) -> None:
    """Refuse a meta record that is neither ``metric`` nor ``entity``."""
    if kind not in META_KINDS:
        raise ValueError(f"unknown meta kind {kind!r}")


def entity_tags_meta(p: Property) -> Meta | None:
    """A ``$entity_tags`` property is not stored as a property: it is an upsert
    of the entity's own tags.  None for every other property."""
    if p.type != ENTITY_TAGS:
        return None
    return Meta("entity", p.entity, {"tags": p.tags})


def implicit_meta_of_series(key: SeriesKey) -> tuple[tuple[str, str], ...]:
    """The (kind, name) meta records a new series registers implicitly: ATSD
    registers its metric and entity (§7); series without an entity none."""
    metric, entity, _ = key
    if entity is None:
        return ()
    return (("metric", metric), ("entity", entity))


def implicit_entities(batch: Batch) -> set[str]:
    """The entities a batch's properties and messages register implicitly
    (ATSD §4.2, §4.3): each becomes an entity record if it is not one yet."""
    return {p.entity for p in batch.properties} | {m.entity for m in batch.messages}


class ReadBudget:
    """The points a bounded read (`IBoundedReads`) may still return, and the
    series it returns: `take` adds a series' samples, or raises
    `TooManyPoints` once the read passes ``max_points`` (None: no bound)."""

    __slots__ = ("left", "max_points", "out")

    def __init__(self, max_points: int | None) -> None:
        self.max_points = max_points
        self.left = INT64_MAX if max_points is None else max_points
        self.out: list[tuple[SeriesKey, list, list, Any]] = []

    def take(self, key: SeriesKey, times: list, values: list, texts: Any) -> None:
        self.left -= len(times)
        if self.left < 0:
            raise TooManyPoints(self.max_points or 0)
        if times:
            self.out.append((key, times, values, texts))
