"""ts-store's read side (spec §9) over the public storage API.

Each function takes the open `Store`, reads its records from the storage that
holds it (bounded: a listing reads at most `MAX_SCAN` records) and returns the
reply body; refusals are `StoreError` with ts-store's status and text.
"""

from __future__ import annotations

import time
from typing import Any

from tsnet.plugin import Record
from tsnet.protocols.tsstore.durations import DurationError, parse_duration
from tsnet.protocols.tsstore.objects import (
    data_json,
    data_value,
    matches,
    object_json,
    object_list_json,
)
from tsnet.protocols.tsstore.schema import numeric_names
from tsnet.protocols.tsstore.stores import Store, StoreError, Stores

#: records one listing reads at most (ts-store's aggregation cap, spec §9)
MAX_SCAN = 100_000


def _backend(stores: Stores, store: Store) -> Any:
    return stores.core.storage.backend_for(store.name)


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


async def stats(stores: Stores, store: Store) -> dict:
    """The ``stats`` object: the ring's head, tail and offset, and the true
    oldest and newest visible records (omitted when there are none)."""
    ring = store.ring
    out: dict[str, Any] = {
        "num_blocks": store.num_blocks, "data_block_size": store.data_block_size,
        "index_block_size": store.index_block_size, "data_type": store.data_type,
        "head_block": ring.head, "tail_block": ring.tail, "write_offset": ring.write_offset,
        "active_blocks": ring.active_blocks,
    }
    backend = _backend(stores, store)
    oldest = await backend.read_records(store.name, limit=1)
    newest = await backend.read_records(store.name, limit=1, descending=True)
    if oldest and newest:
        out["oldest_timestamp"] = oldest[0].time_ns
        out["oldest_time"] = _rfc3339(oldest[0].time_ns)
        out["newest_timestamp"] = newest[0].time_ns
        out["newest_time"] = _rfc3339(newest[0].time_ns)
    return out


def _int(text: str, message: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        raise StoreError(400, message) from None
    if not -2**63 <= v < 2**63 or not text.strip().lstrip("+-").isdigit():
        raise StoreError(400, message)
    return v


async def by_time(stores: Stores, store: Store, ts: str, fmt: str) -> bytes:
    """``GET data/time/:ts``: the object at that exact time."""
    t = _int(ts, "invalid timestamp")
    backend = _backend(stores, store)
    if not await backend.read_records(store.name, limit=1):
        raise StoreError(404, "store is empty")
    found = await backend.read_records(store.name, t, t, limit=1)
    if not found:
        raise StoreError(404, "timestamp not found")
    rec = found[0]
    return object_json(rec, data_json(rec, store.data_type, store.schema.current(),
                                      fmt == "compact"))


async def delete_by_time(stores: Stores, store: Store, ts: str) -> None:
    """``DELETE data/time/:ts``: soft delete, hidden from every read."""
    t = _int(ts, "invalid timestamp")
    backend = _backend(stores, store)
    if not await backend.read_records(store.name, limit=1):
        raise StoreError(500, "store is empty")
    if not await backend.delete_record(store.name, t):
        raise StoreError(404, "timestamp not found")


def _limit(params: dict[str, str], default: int) -> int:
    try:
        n = int(params.get("limit", ""), 10)
    except ValueError:
        return default
    return n if n > 0 else default


def _since(params: dict[str, str], now: int) -> int:
    try:
        return now - parse_duration(params["since"])
    except DurationError as e:
        raise StoreError(400, f"invalid since duration: {e}") from None


async def listing(stores: Stores, store: Store, which: str, params: dict[str, str],
                  now: int) -> bytes:
    """``data/oldest``, ``data/newest`` and ``data/range``, with their
    defaults, selectors, filter, ``format`` and aggregation."""
    limit = _limit(params, 100 if which == "range" else 10)
    needle = params.get("filter", "")
    ignore_case = params.get("filter_ignore_case") == "true"
    aggregating = which != "oldest" and bool(params.get("agg_window"))
    spec = None
    if aggregating:
        from tsnet.protocols.tsstore import aggregate as agg

        if store.data_type not in ("json", "schema"):
            raise StoreError(400, "aggregation is only supported for json and schema stores")
        try:
            spec = agg.parse_spec(params.get("agg_window", ""), params.get("agg_fields", ""),
                                  params.get("agg_default", ""))
        except agg.AggregationError as e:
            raise StoreError(400, str(e)) from None
    start = end = None
    descending = False
    if which == "oldest":
        pass
    elif which == "newest":
        if params.get("since"):
            start, end = _since(params, now), now
        else:
            descending = True
    elif params.get("since"):
        start, end = _since(params, now), now
    elif params.get("after"):
        start, end = _int(params["after"], "invalid after timestamp") + 1, now
    else:
        if not params.get("start_time") and not params.get("end_time"):
            raise StoreError(400, "start_time, end_time, after, or since parameter required")
        s = _int(params["start_time"], "invalid start_time") if params.get("start_time") \
            else 0
        e = _int(params["end_time"], "invalid end_time") if params.get("end_time") else 0
        start, end = s or None, e or now
        if start is not None and start > end:
            raise StoreError(500, "invalid timestamp")
    fetch = MAX_SCAN if (needle or aggregating) else limit
    recs = await _backend(stores, store).read_records(store.name, start, end, fetch,
                                                      descending)
    if needle:
        recs = [r for r in recs if matches(r, needle, ignore_case)]
    fields = store.schema.current()
    if spec is not None:
        return _aggregated(store, recs, spec, fields, limit, params.get("format") == "compact")
    if which == "range":
        include = params.get("include_data") == "true"
    else:
        include = params.get("include_data") != "false"
    compact = params.get("format") == "compact"
    return object_list_json([
        object_json(r, data_json(r, store.data_type, fields, compact) if include else None)
        for r in recs[:limit]])


def _aggregated(store: Store, recs: list[Record], spec: Any, fields: list[dict] | None,
                limit: int, compact: bool) -> bytes:
    import json

    from tsnet.protocols.tsstore import aggregate as agg

    numeric = numeric_names(fields) if store.data_type == "schema" and fields else None
    values = [(r.time_ns, data_value(r, store.data_type, fields)) for r in recs]
    windows = agg.aggregate([(t, v) for t, v in values if isinstance(v, dict)], spec,
                            numeric)[:limit]
    objects = []
    if compact and store.data_type == "schema":
        names = {str(f["index"]): f["name"] for f in fields or ()}
        objects.append(b'{"timestamp":0,"block_num":0,"size":0,"data":%s}'
                       % json.dumps({"_schema": names}, separators=(",", ":")).encode())
        index = {n: i for i, n in names.items()}
        windows = [(t, {index.get(k, k): v for k, v in d.items()}) for t, d in windows]
    for t, d in windows:
        body = json.dumps(d, separators=(",", ":"), sort_keys=True).encode()
        objects.append(b'{"timestamp":%d,"block_num":0,"size":0,"data":%s}' % (t, body))
    return object_list_json(objects)
