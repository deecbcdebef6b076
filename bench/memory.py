#!/usr/bin/env python3
"""Bytes per series of each per-series cache of the ingest path, measured in-process.

Each cache is the real object, filled with N series through the code the
server runs (a parser's parse, a storage's write of a batch of new series),
with the inputs made beforehand and every batch dropped afterwards;
tracemalloc then counts the Python memory the cache keeps alive by itself:
its tables and the keys, strings and numbers only it still holds.  Where two
caches hold the same key objects in a server (a parser's key is the one
storage caches), each is counted whole here, so a sum over-counts.  Each size
is measured --repeats times (a fresh object each), and the median printed
with the cache's limit and what it costs at that limit.

Series are bench/loadgen.py's: metric ``bench.m{i % 10}``, tags
``series=s{i}`` and ``k1=v...``; ATSD lines name the entity ``bench``.

    python bench/memory.py                        # every cache, 1000 / 100,000 / its limit
    python bench/memory.py --caches sqlite-ids --sizes 1000,limit --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tsnet.model import Meta, WriteBatch, series_key
from tsnet.protocols.atsd.meta import MetaRules
from tsnet.protocols.atsd.parse import SeriesFastPath
from tsnet.protocols.opentsdb.json_put import SeriesCache, fast_put_samples
from tsnet.protocols.opentsdb.telnet_parse import PutParser
from tsnet.storage import redis as redis_storage
from tsnet.storage import sqlite as sqlite_storage
from tsnet.storage.redis_shards import parse_redis_urls

TS = 1_700_000_000
METRICS = 10
#: series per storage batch when a storage cache is filled (a fleet's batch)
STORE_BATCH = 10_000
#: points per HTTP /api/put body (bench/loadgen.py's)
HTTP_BATCH = 50


def metric(i: int) -> str:
    return f"bench.m{i % METRICS}"


def tags(i: int) -> list[tuple[str, str]]:
    return [("series", f"s{i}"), ("k1", f"v{(2 * i + 1) % 10}")]


@dataclass
class Cache:
    """One cache: how to make it filled with ``n`` series, and its bound."""

    name: str
    what: str
    limit: int | None  # entries; None: no limit
    at_limit: str
    #: n -> (inputs made outside the measurement, or None)
    prepare: Callable[[int], Any]
    #: (n, inputs) -> the object holding the cache, filled
    fill: Callable[[int, Any], Any]
    #: the object -> entries it holds
    held: Callable[[Any], int]


# -- the OpenTSDB telnet parser ---------------------------------------------------------------


def telnet_lines(n: int) -> list[str]:
    return [f"put {metric(i)} {TS} 1 " + " ".join(f"{k}={v}" for k, v in tags(i))
            for i in range(n)]


def telnet_fill(n: int, lines: list[str]) -> PutParser:
    p = PutParser()
    for line in lines:
        p.parse(line)
    return p


# -- OpenTSDB HTTP /api/put -------------------------------------------------------------------


def http_bodies(n: int) -> list[bytes]:
    bodies = []
    for lo in range(0, n, HTTP_BATCH):
        points = [{"metric": metric(i), "timestamp": TS, "value": 1, "tags": dict(tags(i))}
                  for i in range(lo, min(n, lo + HTTP_BATCH))]
        bodies.append(json.dumps(points, separators=(",", ":")).encode())
    return bodies


def http_fill(n: int, bodies: list[bytes]) -> SeriesCache:
    cache = SeriesCache()
    for body in bodies:
        if fast_put_samples(body, cache) is None:
            raise SystemExit("a bench body left the fast path")
    return cache


# -- ATSD series commands ---------------------------------------------------------------------


def atsd_lines(n: int) -> list[str]:
    return [f"series e:bench m:{metric(i)}=1 " + " ".join(f"t:{k}={v}" for k, v in tags(i))
            + f" ms:{TS * 1000}" for i in range(n)]


def atsd_fill(n: int, lines: list[str]) -> SeriesFastPath:
    fp = SeriesFastPath()
    for line in lines:
        fp.parse(line)
    return fp


# -- storage: SQLite ----------------------------------------------------------------------------


class _Engine:
    """A `SqliteEngine` on a file of its own, removed when dropped."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="tsnet-memory-")
        self.engine = sqlite_storage.SqliteEngine(os.path.join(self.dir.name, "m.sqlite"))
        self.engine.open()

    def close(self) -> None:
        self.engine.close()
        self.dir.cleanup()


def store_batches(n: int, write: Callable[[WriteBatch], Any]) -> None:
    """Write ``n`` new series, `STORE_BATCH` a batch, a point each, as rows (what
    the telnet parser makes of a wide batch); each batch dropped after."""
    for lo in range(0, n, STORE_BATCH):
        wb = WriteBatch()
        s = wb.for_solution("default").samples
        for i in range(lo, min(n, lo + STORE_BATCH)):
            s.keys.append(series_key(metric(i), dict(tags(i))))
            s.times.append(TS * 1_000_000_000)
            s.values.append(1)
        s.count = len(s.keys)
        write(wb)
        del wb, s


def sqlite_prepare(n: int) -> _Engine:
    return _Engine()


def sqlite_fill(n: int, e: _Engine) -> _Engine:
    store_batches(n, e.engine.write)
    return e


def sqlite_held(e: _Engine) -> int:
    return len(e.engine._ids.get("default", {}))


def small_fill(ready: bool) -> Callable[[int, Any], Any]:
    """`_SmallChunks` as compaction keeps it: one small chunk a series, or
    enough of them that every series is ready to compact (its worst case)."""
    def fill(n: int, _: Any) -> Any:
        small = sqlite_storage._SmallChunks(sqlite_storage.COMPACT_MIN_CHUNKS)
        for _ in range(sqlite_storage.COMPACT_MIN_CHUNKS if ready else 1):
            for sid in range(1, n + 1):  # (ids are dense, from 1)
                small.add(sid)
        return small
    return fill


# -- storage: Redis (no server: only the write plan, which fills the caches) ----------------------


def redis_prepare(n: int) -> Any:
    return redis_storage.RedisStorage(
        "default", parse_redis_urls("redis://127.0.0.1:6379/0"), reactor=None)


def redis_plan(storage: Any, wb: WriteBatch, long_lists: bool) -> None:
    ops: dict[int, list] = {}
    storage._plan("default", wb.by_solution["default"], ops)
    if long_lists:  # as the write script answers when every list grew long
        for index, args in ops.items():
            storage._note_lengths(index, args, [redis_storage.COMPACT_AT] * args.count("S"))


def redis_fill(n: int, storage: Any) -> Any:
    store_batches(n, lambda wb: redis_plan(storage, wb, False))
    return storage


def redis_compact_fill(n: int, storage: Any) -> Any:
    store_batches(n, lambda wb: redis_plan(storage, wb, True))
    storage._series.clear()  # what is left is the list of series to compact
    return storage


# -- ATSD meta rules ----------------------------------------------------------------------------


def meta_fill(n: int, _: Any) -> MetaRules:
    """The rules of a solution whose series name ``n`` entities: each has the
    empty meta record storage makes for it, and `MetaRules.load` reads them all."""
    rules = MetaRules()
    rules.load([Meta("metric", metric(i), {}) for i in range(METRICS)],
               [Meta("entity", f"device{i}", {}) for i in range(n)], now=0.0)
    return rules


def _none(n: int) -> None:
    return None


CACHES = [
    Cache("telnet-parser", "OpenTSDB telnet PutParser._cache (one per listener): validated "
          "(tag text, metric) pairs", PutParser()._cache_limit,
          "clears whole", telnet_lines, telnet_fill, lambda p: len(p._cache)),
    Cache("http-put", "OpenTSDB /api/put SeriesCache.known (one per HTTP site): validated "
          "(metric, tags)", SeriesCache().limit, "clears whole", http_bodies, http_fill,
          lambda c: len(c.known)),
    Cache("atsd-series", "ATSD SeriesFastPath._cache + _split (one per listener and per HTTP "
          "resource): validated series lines", SeriesFastPath()._limit, "clears whole (both)",
          atsd_lines, atsd_fill, lambda f: len(f._cache)),
    Cache("sqlite-ids", "SqliteEngine._ids (per solution): series key -> id",
          sqlite_storage.SERIES_ID_CACHE,
          "clears at the next write past it, which then adds its batch's series",
          sqlite_prepare, sqlite_fill, sqlite_held),
    Cache("sqlite-small-chunks", "SqliteEngine._small (_SmallChunks), one small chunk a "
          "series: a byte a series id", None, "no limit: exact counts, not a cache",
          _none, small_fill(False), lambda s: len(s.counts)),
    Cache("sqlite-small-ready", "_SmallChunks with every series ready to compact (its worst "
          "case: + the ready list)", None, "no limit: compaction takes series off",
          _none, small_fill(True), lambda s: len(s.ready)),
    Cache("redis-ids", "RedisStorage._series (per solution): series key -> shard, sid, key",
          redis_storage.SERIES_CACHE, "clears whole", redis_prepare, redis_fill,
          lambda s: len(s._series.get("default", {}))),
    Cache("redis-compact", "RedisStorage._compact (per solution): series whose list grew "
          f"to {redis_storage.COMPACT_AT} blobs", None, "no limit: compaction takes them off",
          redis_prepare, redis_compact_fill, lambda s: len(s._compact.get("default", ()))),
    Cache("atsd-meta-rules", "ATSD MetaRules (per solution): entity and metric meta that can "
          "discard data", None, "no limit: only names with a rule field", _none, meta_fill,
          lambda r: len(r.entities) + len(r.metrics)),
]
BY_NAME = {c.name: c for c in CACHES}


def measure(cache: Cache, n: int) -> tuple[int, int, float]:
    """(bytes kept, entries held, seconds to fill) for one fresh fill of ``n``."""
    inputs = cache.prepare(n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        obj = cache.fill(n, inputs)
        seconds = time.perf_counter() - t0
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    held = cache.held(obj)
    if isinstance(inputs, _Engine):
        inputs.close()
    del obj, inputs
    return kept, held, seconds


def sizes_for(cache: Cache, spec: list[str]) -> list[int]:
    out: list[int] = []
    for s in spec:
        if s == "limit":
            if cache.limit is None:
                continue
            n = cache.limit
        else:
            n = int(s)
        if n not in out:
            out.append(n)
    return sorted(out)


def mib(b: float) -> float:
    return round(b / 2**20, 2)


def run(cache: Cache, n: int, repeats: int) -> dict:
    runs = [measure(cache, n) for _ in range(repeats)]
    kept = statistics.median(r[0] for r in runs)
    held = runs[-1][1]
    row = {"cache": cache.name, "series": n, "held": held, "limit": cache.limit,
           "at_limit": cache.at_limit, "repeats": repeats,
           "bytes_per_series": round(kept / n, 1),
           "bytes_per_series_min": round(min(r[0] for r in runs) / n, 1),
           "bytes_per_series_max": round(max(r[0] for r in runs) / n, 1),
           "kept_mib": mib(kept), "fill_s": round(statistics.median(r[2] for r in runs), 2)}
    if cache.limit is not None and n == cache.limit:
        row["bound_mib"] = mib(kept)
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'cache':<20} {'series':>9} {'held':>9} {'limit':>9} {'B/series':>9} "
            f"{'kept MiB':>9}  at the limit")
    lines = [head, "-" * len(head)]
    for r in rows:
        limit = f"{r['limit']:,}" if r["limit"] is not None else "none"
        lines.append(f"{r['cache']:<20} {r['series']:>9,} {r['held']:>9,} {limit:>9} "
                     f"{r['bytes_per_series']:>9.1f} {r['kept_mib']:>9.2f}  {r['at_limit']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="caches:\n" + "\n".join(f"  {c.name:<20} {c.what}" for c in CACHES)
        + "\n\nOutput: a table (or --json: one JSON line a row) of the median bytes per "
          "series,\nthe entries held (a cache past its limit holds fewer), and kept MiB "
          "(at the\nlimit: the cache's bound).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--caches", default=",".join(BY_NAME),
                   help="comma-separated names, see below (default: all)")
    p.add_argument("--sizes", default="1000,100000,limit",
                   help="series counts to fill, comma-separated; 'limit' is each cache's own "
                        "(default 1000,100000,limit)")
    p.add_argument("--repeats", type=int, default=3,
                   help="fills per size, each a fresh object; the median is printed "
                        "(default 3)")
    p.add_argument("--json", action="store_true", help="one JSON line a row, no table")
    a = p.parse_args(argv)
    names = [n for n in a.caches.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown cache(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    spec = [s.strip() for s in a.sizes.split(",") if s.strip()]
    if not spec or any(s != "limit" and not (s.isdigit() and int(s) > 0) for s in spec):
        p.error("--sizes: positive integers or 'limit'")
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    rows = []
    for name in names:
        cache = BY_NAME[name]
        for n in sizes_for(cache, spec):
            row = run(cache, n, a.repeats)
            rows.append(row)
            if a.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"[memory] {name} {n:,}: {row['bytes_per_series']} B/series "
                      f"({row['fill_s']} s a fill)", file=sys.stderr, flush=True)
    if not a.json:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
