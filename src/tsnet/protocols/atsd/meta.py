"""What ATSD's metric and entity meta does to incoming data (spec §4.1, §4.4,
§4.5): a disabled entity (``b:false``) discards its series, properties and
messages, a disabled metric its samples, and a metric whose invalid action is
``discard`` drops a value outside its ``min``/``max``.

One `MetaRules` per solution, shared by every ATSD listener and request of the
server: loaded from storage before the first command of the solution is
handled, then kept current by the meta commands that pass through, in order,
so ``entity e:x b:false`` followed by ``series e:x ...`` on one connection
discards that series.  Meta written by another node takes effect here when
the rules are next loaded (`MetaRules.stale`, every `RELOAD_SECONDS`).
"""

from __future__ import annotations

import math
from typing import Any

from tsnet.model import Meta
from tsnet.storage.rules import merge_meta_fields

RELOAD_SECONDS = 10.0
#: the only fields a discard depends on; every other field is left out
RULE_FIELDS = ("enabled", "invalid_action", "min_value", "max_value")


def _rule_fields(fields: dict) -> dict:
    return {k: fields[k] for k in RULE_FIELDS if k in fields}


class MetaRules:
    """The metric and entity fields of one solution that decide discards.

    Only `RULE_FIELDS` are kept, and only for the names that have one: every
    entity a series names has a meta record (empty, as a rule), and a fleet
    of a million devices would otherwise cost a dict each here.  Merging an
    update into the kept fields gives the rule fields merging into the whole
    record would (`merge_meta_fields` works field by field)."""

    def __init__(self) -> None:
        self.metrics: dict[str, dict] = {}
        self.entities: dict[str, dict] = {}
        self.loaded_at: float | None = None
        #: any rule that can discard: when False, data needs no look-up at all
        self.active = False

    def load(self, metrics: list[Meta], entities: list[Meta], now: float) -> None:
        """Replace the rules with the stored records."""
        self.metrics = {m.name: f for m in metrics if (f := _rule_fields(m.fields))}
        self.entities = {m.name: f for m in entities if (f := _rule_fields(m.fields))}
        self.loaded_at = now
        self._recompute()

    def stale(self, now: float) -> bool:
        return self.loaded_at is None or now - self.loaded_at >= RELOAD_SECONDS

    def update(self, meta: Meta) -> None:
        """A meta command was accepted: merge it as storage will."""
        table = self.metrics if meta.kind == "metric" else self.entities
        fields = _rule_fields(merge_meta_fields(table.get(meta.name, {}), meta.fields))
        if fields:
            table[meta.name] = fields
        else:
            table.pop(meta.name, None)
        self._recompute()

    def _recompute(self) -> None:
        self.active = any(f.get("enabled") is False for f in self.entities.values()) or any(
            f.get("enabled") is False or _discards(f) for f in self.metrics.values())

    def entity_disabled(self, entity: str) -> bool:
        return self.active and self.entities.get(entity, {}).get("enabled") is False

    def sample_verdict(self, entity: str, metric: str, value: Any) -> str | None:
        """Why a sample is discarded (``disabled_entity``, ``disabled_metric``,
        ``out_of_range``), or None to keep it."""
        if not self.active:
            return None
        if self.entity_disabled(entity):
            return "disabled_entity"
        fields = self.metrics.get(metric)
        if fields is None:
            return None
        if fields.get("enabled") is False:
            return "disabled_metric"
        if _discards(fields) and isinstance(value, int | float) and not math.isnan(value):
            lo, hi = fields.get("min_value"), fields.get("max_value")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                return "out_of_range"
        return None


def _discards(fields: dict) -> bool:
    return fields.get("invalid_action") == "discard" and (
        fields.get("min_value") is not None or fields.get("max_value") is not None)
