"""The Redis storage backend: several tsnet nodes sharing one store.

A write is one script per shard (`redis_scripts.WRITE`): a batch becomes a few
large commands, never one per point.  Each shard's part is atomic and carries
the batch's id (`WriteBatch.id`), so when the write queue retries a batch after
a fault (a timeout, a dropped connection, one shard down), the parts already
committed are skipped, not appended twice.  An ack comes after every shard answered, and after
``WAIT replicas`` when the section asks for replicas.

Reads fold what was appended (`redis_codec`) with the data model's rules
(`tsnet.storage.rules`), so the same batch reads back the same as on SQLite:
the conformance suite checks it.  `compact` folds long lists back into one
blob, safely beside other nodes' appends.  The key layout is in `redis_keys`.

Growing from N shards to N+1 needs no downtime for reads: a read gathers a
series (and a solution's item lists) from every shard that holds part of it,
the part on the shard the ring named before first.  `rebalance` then moves
those parts to their new shard, so reads touch one shard again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from tsnet import export, export_text
from tsnet.errors import ConfigError, Conflict, NotFound
from tsnet.interfaces import (
    IBoundedReads,
    ICatalog,
    IExpiringStorage,
    IExportText,
    ISeriesByKey,
    IStorage,
)
from tsnet.model import Batch, Message, Meta, Property, Record, SeriesKey, WriteBatch
from tsnet.records import Credential, SolutionRecord, TokenRecord
from tsnet.storage import redis_codec as codec
from tsnet.storage import redis_scripts as lua
from tsnet.storage.redis_keys import (
    CATALOG_ROUTE,
    DEFAULT_PREFIX,
    items_route,
    series_id,
    series_route,
)
from tsnet.storage.redis_shards import HashRing, RedisUnavailable, RedisURL, Shard, ShardOptions
from tsnet.storage.rules import (
    META_KINDS,
    ReadBudget,
    check_meta_kind,
    check_tags,
    entity_tags_meta,
    implicit_entities,
    merge_meta_fields,
    merge_tags,
    series_sort_key,
)

log = Logger(namespace="tsnet.storage.redis")

#: a committed batch's marker lives this long: far longer than any retry
MARKER_TTL = 3600
#: arguments per write script call (Redis takes millions; this bounds one call)
MAX_ARGS = 100_000
#: series read per script call
READ_CHUNK = 1000
#: a chunk of series with more blob bytes than this folds in a thread
FOLD_INLINE = 256 * 1024
#: a series with this many blobs is compacted by the next `compact` step
COMPACT_AT = 16
#: blobs at the head of a list that one retention step looks at
HEAD_BLOBS = 4
#: a head blob partly expired is rewritten without those points once they are
#: 1/REWRITE_SHARE of it or more (each point is rewritten a bounded number of times)
REWRITE_SHARE = 4
#: series ids remembered per solution (the write path's cache of key -> id)
SERIES_CACHE = 200_000

_Info = tuple[int, bytes, str, bytes]  # shard index, metric, sid, key JSON
_Entry = tuple[SeriesKey, str, tuple[int, ...]]  # key, sid, shards in write order
#: arguments of each write op, by its letter (see redis_scripts.WRITE)
_OP_WIDTH = {"G": 2, "S": 5, "L": 3}


def _fold_lists(lists: list[list[bytes]], start_ns: int | None,
                end_ns: int | None) -> list[codec.Samples]:
    """`codec.fold_samples` of each series' blobs: a pure function, so a large
    chunk of series folds in a thread, off the reactor."""
    return [codec.fold_samples(blobs, start_ns, end_ns) for blobs in lists]


def _token_json(t: TokenRecord) -> bytes:
    return orjson.dumps({
        "id": t.id, "solution": t.solution, "description": t.description,
        "expires_ns": t.expires_ns, "tags": t.tags, "revoked": bool(t.revoked),
        "created_ns": t.created_ns,
        "credentials": [{"id": c.id, "scopes": sorted(c.scopes), "hash": c.secret_hash}
                        for c in sorted(t.credentials, key=lambda c: c.id)],
    })


def _token_of(data: bytes) -> TokenRecord:
    d = orjson.loads(data)
    return TokenRecord(
        d["id"], d["solution"],
        [Credential(c["id"], frozenset(c["scopes"]), c["hash"]) for c in d["credentials"]],
        d["description"], d["expires_ns"], d["tags"], d["revoked"], d["created_ns"])


def _solution_json(s: SolutionRecord) -> bytes:
    return orjson.dumps({"name": s.name, "description": s.description, "storage": s.storage,
                         "created_ns": s.created_ns, "attributes": s.attributes})


def _solution_of(data: bytes) -> SolutionRecord:
    d = orjson.loads(data)
    return SolutionRecord(d["name"], d["description"], d["storage"], d["created_ns"],
                          d["attributes"])


@implementer(IStorage, IBoundedReads, IExpiringStorage, IExportText, ICatalog, ISeriesByKey)
class RedisStorage:
    """`IStorage` and `ICatalog` over one or several Redis shards."""

    def __init__(self, name: str, urls: list[RedisURL], reactor: Any,
                 options: ShardOptions | None = None, prefix: str = DEFAULT_PREFIX,
                 replicas: int = 0, replicas_timeout: float = 1.0) -> None:
        self.name = name
        self._reactor = reactor
        self._options = options or ShardOptions()
        self._urls = urls
        self._prefix = prefix
        self._p = prefix.encode()
        self._replicas = replicas
        self._replicas_ms = int(replicas_timeout * 1000)
        self._ring = HashRing([u.identity for u in urls])
        self._shards: list[Shard] = []
        self._catalog_at = 0
        self._series: dict[str, dict[SeriesKey, _Info]] = {}
        self._compact: dict[str, set[tuple[int, str]]] = {}
        #: solutions whose record list holds reclaimed or deleted entries to fold
        self._fold_records: set[str] = set()
        self._open = False

    # -- connections -----------------------------------------------------------

    @defer.inlineCallbacks
    def open(self) -> Any:
        """Connect every shard; fails (naming the shard) if one does not answer
        within the connect timeout."""
        if self._open:
            raise RuntimeError(f"storage {self.name!r} is open already")
        self._shards = [Shard(u, self._options, self._reactor) for u in self._urls]
        for s in self._shards:
            s.connect()
        try:
            yield defer.ensureDeferred(_gather(
                [s.wait_connected(self._options.connect_timeout) for s in self._shards]))
        except Exception:
            yield self._disconnect()
            raise
        try:
            self._catalog_at = yield defer.ensureDeferred(self._find_catalog())
        except Exception:
            yield self._disconnect()
            raise
        self._open = True
        log.info("storage {storage}: redis {shards}, catalog on {catalog}", storage=self.name,
                 shards=" ".join(u.display() for u in self._urls),
                 catalog=self._urls[self._catalog_at].display())

    async def _find_catalog(self) -> int:
        """The shard holding the catalog: the one that has it, else (a new
        deployment) the one the ring names for it.  Either way every node finds
        the same one whatever the order of its URLs, and adding shards never
        moves it."""
        marker = f"{self._prefix}c:gen"
        found = await _gather([s.call("exists", marker) for s in self._shards])
        holders = [i for i, n in enumerate(found) if n]
        if len(holders) > 1:
            raise ConfigError(
                f"[storage:{self.name}] url: the catalog ({marker}) is on several shards: "
                + " ".join(self._urls[i].display() for i in holders))
        return holders[0] if holders else self._ring.index(CATALOG_ROUTE)

    def _disconnect(self) -> defer.Deferred:
        shards, self._shards = self._shards, []
        return defer.DeferredList([s.disconnect() for s in shards])

    def close(self) -> defer.Deferred:
        """Drop the connections; every write has been answered (the ingest
        queue waits for its writes before storage closes)."""
        self._open = False
        return self._disconnect()

    def _shard(self, routing_key: bytes) -> Shard:
        return self._shards[self._ring.index(routing_key)]

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError(f"storage {self.name!r} is not open")

    def _eval(self, shard: Shard, script: str, args: Iterable[Any] = (),
              keys: Iterable[Any] = (), write: bool = False) -> defer.Deferred:
        return shard.call("eval", script, list(keys), list(args), write=write)

    def rebalance(self) -> defer.Deferred:
        """Deferred[dict]: move every series and item list that the ring now
        places on another shard there (after shards were added); counts."""
        from tsnet.storage.redis_rebalance import rebalance

        self._check_open()
        self._series.clear()
        return defer.ensureDeferred(rebalance(self._shards, self._ring, self._prefix))

    def _catalog(self, script: str, *args: Any) -> defer.Deferred:
        self._check_open()
        return self._eval(self._shards[self._catalog_at], script, (self._prefix, *args))

    # -- writing -----------------------------------------------------------------

    def write(self, batch: WriteBatch) -> defer.Deferred:
        """Deferred[None]: the batch committed on every shard it touches.  The
        whole batch is checked first, so a bad one fails with nothing written."""
        try:
            self._check_open()
            ops: dict[int, list] = {}
            for solution, b in batch.by_solution.items():
                self._plan(solution, b, ops)
        except Exception:
            return defer.fail()
        if not ops:
            return defer.succeed(None)
        return defer.ensureDeferred(self._commit(batch.id, ops))

    def _plan(self, solution: str, b: Batch, ops: dict[int, list]) -> None:
        codec.check_str(solution, "solution name")
        parts: dict[int, list] = {}

        def part(index: int) -> list:
            p = parts.get(index)
            if p is None:
                p = parts[index] = ["G", solution]
            return p

        infos = self._series.get(solution)
        if infos is None:
            infos = self._series[solution] = {}
        for key, col in b.samples.columnar().items():
            if not col.times:
                continue
            info = infos.get(key)
            if info is None:
                info = self._series_info(solution, key, infos)
            blob = codec.encode_samples(col.times, col.values, col.texts)
            part(info[0]).extend(("S", info[1], info[2], info[3], blob))
        lists: list[tuple[str, bytes]] = []
        meta: list[tuple[str, str, dict | None]] = []
        props: list[Property] = []
        for p in b.properties:
            m = entity_tags_meta(p)
            if m is None:
                props.append(p)
            else:
                codec.check_str(p.entity, "property entity")
                meta.append(self._meta_entry(m.kind, m.name, m.fields))
        if props:
            lists.append(("props", codec.encode_properties(props)))
        if b.messages:
            lists.append(("msgs", codec.encode_messages(b.messages)))
        for m in b.meta:
            meta.append(self._meta_entry(m.kind, m.name, m.fields))
        meta.extend(("entity", e, None) for e in sorted(implicit_entities(b)))
        if meta:
            lists.append(("meta", codec.encode_meta(meta)))
        if b.records or b.reclaim_ns is not None:
            lists.append(("recs", codec.encode_records(b.records, b.reclaim_ns)))
            if b.reclaim_ns is not None:  # the list keeps what was reclaimed until folded
                self._fold_records.add(solution)
        if lists:
            p = part(self._ring.index(items_route(solution)))
            for name, blob in lists:
                p.extend(("L", name, blob))
        for index, p in parts.items():
            ops.setdefault(index, []).extend(p)

    @staticmethod
    def _meta_entry(kind: str, name: Any, fields: Any) -> tuple[str, str, dict]:
        check_meta_kind(kind)
        codec.check_str(name, "meta name")
        if not isinstance(fields, dict):
            raise TypeError("meta fields must be a dict")
        if fields.get("tags") not in (None, ""):
            check_tags(fields["tags"], f"{kind} {name!r} tags", blanks=True)
        return (kind, name, fields)

    def _series_info(self, solution: str, key: SeriesKey,
                     infos: dict[SeriesKey, _Info]) -> _Info:
        key_json = codec.series_key_bytes(key)
        sid = series_id(key_json)
        info = (self._ring.index(series_route(solution, sid)), key[0].encode(), sid, key_json)
        if len(infos) >= SERIES_CACHE:
            infos.clear()
        infos[key] = info
        return info

    async def _commit(self, batch_id: str, ops: dict[int, list]) -> None:
        calls = []
        for index, args in ops.items():
            for n, chunk in enumerate(_chunks(args)):
                marker = f"{self._prefix}batch:{batch_id}:{index}:{n}"
                calls.append(defer.ensureDeferred(self._write_part(index, marker, chunk)))
        # every part settles before the write answers, so a retry never races
        # a part still in flight
        results = await defer.DeferredList(calls, consumeErrors=True)
        for ok, value in results:
            if not ok:
                value.raiseException()

    async def _write_part(self, index: int, marker: str, args: list) -> None:
        shard = self._shards[index]
        reply = await self._eval(shard, lua.WRITE, (marker, MARKER_TTL, self._prefix, *args),
                                 write=True)
        if self._replicas:
            acked = await shard.call("execute_command", "WAIT", self._replicas,
                                     self._replicas_ms, write=True)
            if acked < self._replicas:
                raise RedisUnavailable(
                    f"redis shard {shard.url.display()}: {acked} of {self._replicas} "
                    "replicas acknowledged the write")
        if reply and reply[0] == 1:
            self._note_lengths(index, args, reply[1:])

    def _note_lengths(self, index: int, args: list, lengths: list) -> None:
        """Remember the series whose lists grew long, for `compact`."""
        solution = None
        i = 0
        k = 0
        while i < len(args):
            op = args[i]
            if op == "G":
                solution = args[i + 1]
                i += 2
            elif op == "S":
                if lengths[k] >= COMPACT_AT:
                    self._compact.setdefault(solution, set()).add((index, args[i + 2]))
                k += 1
                i += 5
            else:
                i += 3

    # -- reading -------------------------------------------------------------------

    def _sp(self, solution: str) -> str:
        return f"{self._prefix}s:{solution}:"

    def _owner_last(self, route: bytes, shards: list[int]) -> tuple[int, ...]:
        """Where a key's parts are, in write order: a shard that held it before
        the ring grew first, the shard the ring names now last."""
        owner = self._ring.index(route)
        return tuple(sorted(shards, key=lambda i: i == owner))

    async def _index(self, solution: str, metric: str | None) -> list[_Entry]:
        """(key, sid, shards holding its blobs) of every series, in read order.
        A series is on one shard, or (after shards were added and before
        `rebalance`) on its old shard and its new one."""
        self._check_open()
        args = (self._sp(solution), "1", metric) if metric is not None else (
            self._sp(solution), "0")
        replies = await _gather(
            [self._eval(s, lua.SERIES_INDEX, args) for s in self._shards])
        found: dict[str, tuple[bytes, list[int]]] = {}
        for index, flat in enumerate(replies):
            for j in range(0, len(flat), 2):
                sid = flat[j].decode()
                seen = found.get(sid)
                if seen is None:
                    found[sid] = (flat[j + 1], [index])
                else:
                    seen[1].append(index)
        out = [(codec.series_key_of(key_json), sid,
                self._owner_last(series_route(solution, sid), shards) if len(shards) > 1
                else (shards[0],))
               for sid, (key_json, shards) in found.items()]
        out.sort(key=lambda e: series_sort_key(e[0]))
        return out

    async def _lists(self, entries: list[_Entry], solution: str) -> list[list[bytes]]:
        """The blobs of each series, in ``entries`` order, a chunk per call."""
        parts: list[dict[int, list[bytes]]] = [{} for _ in entries]
        by_shard: dict[int, list[int]] = {}
        for pos, (_, _, shards) in enumerate(entries):
            for index in shards:
                by_shard.setdefault(index, []).append(pos)
        sp = self._sp(solution)
        for index, positions in by_shard.items():
            for lo in range(0, len(positions), READ_CHUNK):
                chunk = positions[lo:lo + READ_CHUNK]
                keys = [f"{sp}d:{entries[p][1]}" for p in chunk]
                reply = await self._eval(self._shards[index], lua.READ_LISTS, keys=keys)
                for p, blobs in zip(chunk, reply, strict=True):
                    parts[p][index] = blobs
        return [part[shards[0]] if len(shards) == 1 else
                [b for index in shards for b in part[index]]
                for part, (_, _, shards) in zip(parts, entries, strict=True)]

    def read_series(self, solution: str, metric: str | None = None,
                    start_ns: int | None = None, end_ns: int | None = None,
                    max_points: int | None = None) -> defer.Deferred:
        """Deferred[list of (key, times, values, texts)]; see IStorage and
        IBoundedReads (``max_points`` is checked a chunk of series at a time)."""
        return defer.ensureDeferred(
            self._read_series(solution, metric, start_ns, end_ns, max_points))

    async def _read_series(self, solution: str, metric: str | None, start_ns: int | None,
                           end_ns: int | None, max_points: int | None = None) -> list:
        entries = await self._index(solution, metric)
        return await self._read_entries(solution, entries, start_ns, end_ns, max_points)

    def read_series_of(self, solution: str, keys: Iterable[SeriesKey],
                       start_ns: int | None = None, end_ns: int | None = None,
                       max_points: int | None = None) -> defer.Deferred:
        """`ISeriesByKey`: each series' lists where its id hashes, with no
        index read (on every shard, owner last, as a shard added before a
        `rebalance` may have left a part of it on another)."""
        return defer.ensureDeferred(
            self._read_keys(solution, list(keys), start_ns, end_ns, max_points))

    async def _read_keys(self, solution: str, keys: list[SeriesKey], start_ns: int | None,
                         end_ns: int | None, max_points: int | None) -> list:
        self._check_open()
        everywhere = list(range(len(self._shards)))
        found: dict[str, _Entry] = {}
        for metric, entity, tags in keys:
            key = (metric, entity, tuple(sorted(tags)))
            sid = series_id(codec.series_key_bytes(key))
            found[sid] = (key, sid, self._owner_last(series_route(solution, sid), everywhere))
        entries = sorted(found.values(), key=lambda e: series_sort_key(e[0]))
        return await self._read_entries(solution, entries, start_ns, end_ns, max_points)

    async def _read_entries(self, solution: str, entries: list[_Entry], start_ns: int | None,
                            end_ns: int | None, max_points: int | None) -> list:
        """The samples of ``entries`` (in their order), a chunk of series at a time."""
        budget = ReadBudget(max_points)
        for lo in range(0, len(entries), READ_CHUNK):
            chunk = entries[lo:lo + READ_CHUNK]
            lists = await self._lists(chunk, solution)
            for (_, sid, shards), blobs in zip(chunk, lists, strict=True):
                if len(blobs) >= COMPACT_AT and len(shards) == 1:
                    self._compact.setdefault(solution, set()).add((shards[0], sid))
            if sum(len(b) for blobs in lists for b in blobs) > FOLD_INLINE:
                folded = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                                 _fold_lists, lists, start_ns, end_ns)
            else:
                folded = _fold_lists(lists, start_ns, end_ns)
            for (key, _, _), samples in zip(chunk, folded, strict=True):
                budget.take(key, *samples)
        return budget.out

    def list_series(self, solution: str, metric: str | None = None) -> defer.Deferred:
        """Deferred[list[SeriesKey]] in read order, from the index alone."""
        d = defer.ensureDeferred(self._index(solution, metric))
        return d.addCallback(lambda entries: [e[0] for e in entries])

    def count_points(self, solution: str | None = None) -> defer.Deferred:
        """Deferred[int]: distinct (series, time) pairs."""
        return defer.ensureDeferred(self._count_points(solution))

    async def _count_points(self, solution: str | None) -> int:
        names = [solution] if solution is not None else await self._data_solutions()
        total = 0
        for name in names:
            for _, times, _, _ in await self._read_series(name, None, None, None):
                total += len(times)
        return total

    async def _data_solutions(self) -> list[str]:
        self._check_open()
        replies = await _gather(
            [s.call("smembers", self._prefix + "data") for s in self._shards])
        return sorted({n.decode() for r in replies for n in r})

    async def _solution_list(self, solution: str, name: str) -> list[bytes]:
        """One of the solution's item lists, in write order: read from every
        shard, as a shard added since may hold its newer part."""
        self._check_open()
        key = f"{self._sp(solution)}{name}"
        replies = await _gather([s.call("lrange", key, 0, -1) for s in self._shards])
        held = [i for i, r in enumerate(replies) if r]
        if len(held) <= 1:
            return replies[held[0]] if held else []
        return [b for i in self._owner_last(items_route(solution), held) for b in replies[i]]

    async def _properties(self, solution: str) -> dict[tuple[str, str, str], Property]:
        props: dict[tuple[str, str, str], Property] = {}
        for blob in await self._solution_list(solution, "props"):
            for p in codec.decode_properties(blob):
                ident = (p.entity, p.type, orjson.dumps(p.key).decode())
                old = props.get(ident)
                p.tags = merge_tags(old.tags if old is not None else {}, p.tags)
                props[ident] = p
        return props

    def read_properties(self, solution: str, entity: str | None = None,
                        type: str | None = None) -> defer.Deferred:
        """Deferred[list[Property]] by entity, type, key; see IStorage."""
        async def read() -> list[Property]:
            props = await self._properties(solution)
            return [props[i] for i in sorted(props)
                    if (entity is None or i[0] == entity) and (type is None or i[1] == type)]
        return defer.ensureDeferred(read())

    async def _messages(self, solution: str) -> list[Message]:
        msgs = [m for blob in await self._solution_list(solution, "msgs")
                for m in codec.decode_messages(blob)]
        msgs.sort(key=_time_of)
        return msgs

    def read_messages(self, solution: str, entity: str | None = None,
                      start_ns: int | None = None, end_ns: int | None = None,
                      type: str | None = None, limit: int | None = None) -> defer.Deferred:
        """Deferred[list[Message]] in time order, end exclusive; see IStorage."""
        if limit is not None and limit < 0:
            return defer.fail(ValueError(f"negative limit {limit}"))

        async def read() -> list[Message]:
            out = []
            for m in await self._messages(solution):
                if limit is not None and len(out) >= limit:
                    break
                if ((start_ns is None or m.time_ns >= start_ns)
                        and (end_ns is None or m.time_ns < end_ns)
                        and (entity is None or m.entity == entity)
                        and (type is None or m.type == type)):
                    out.append(m)
            return out
        return defer.ensureDeferred(read())

    async def _stored_meta(self, solution: str) -> dict[tuple[str, str], dict]:
        """The meta list folded: what was written, without what series imply."""
        meta: dict[tuple[str, str], dict] = {}
        for blob in await self._solution_list(solution, "meta"):
            for kind, name, fields in codec.decode_meta(blob):
                k = (kind, name)
                if fields is None:
                    meta.setdefault(k, {})
                else:
                    meta[k] = merge_meta_fields(meta.get(k, {}), fields)
        return meta

    async def _meta(self, solution: str) -> dict[tuple[str, str], dict]:
        meta = await self._stored_meta(solution)
        for key, _, _ in await self._index(solution, None):
            if key[1] is not None:  # a series with an entity registers both
                meta.setdefault(("metric", key[0]), {})
                meta.setdefault(("entity", key[1]), {})
        return meta

    def read_meta(self, solution: str, kind: str, name: str | None = None) -> defer.Deferred:
        """Deferred[list[Meta]] of one kind by name; see IStorage."""
        try:
            check_meta_kind(kind)
        except ValueError:
            return defer.fail()

        async def read() -> list[Meta]:
            meta = await self._meta(solution)
            names = sorted(n for k, n in meta if k == kind)
            return [Meta(kind, n, meta[(kind, n)]) for n in names if name is None or n == name]
        return defer.ensureDeferred(read())

    async def _records(self, solution: str) -> list[Record]:
        """Every record of the solution, soft-deleted ones marked, by time."""
        blobs = await self._solution_list(solution, "recs")
        if len(blobs) >= COMPACT_AT:
            self._fold_records.add(solution)
        return codec.fold_records(blobs)

    def read_records(self, solution: str, start_ns: int | None = None,
                     end_ns: int | None = None, limit: int | None = None,
                     descending: bool = False, include_deleted: bool = False
                     ) -> defer.Deferred:
        """Deferred[list[Record]]; see IStorage."""
        if limit is not None and limit < 0:
            return defer.fail(ValueError(f"negative limit {limit}"))

        async def read() -> list[Record]:
            recs = [r for r in await self._records(solution)
                    if (include_deleted or not r.deleted)
                    and (start_ns is None or r.time_ns >= start_ns)
                    and (end_ns is None or r.time_ns <= end_ns)]
            if descending:
                recs.reverse()
            return recs if limit is None else recs[:limit]
        return defer.ensureDeferred(read())

    def delete_record(self, solution: str, time_ns: int) -> defer.Deferred:
        """Deferred[bool]: a delete entry appended to the solution's record list."""
        async def delete() -> bool:
            found = any(r.time_ns == time_ns and not r.deleted
                        for r in await self._records(solution))
            if found:
                shard = self._shards[self._ring.index(items_route(solution))]
                await shard.call("rpush", f"{self._sp(solution)}recs",
                                 codec.encode_record_delete(time_ns), write=True)
            return found
        return defer.ensureDeferred(delete())

    async def _fold_record_list(self, solution: str) -> None:
        """Rewrite a record list as what it holds (reclaimed records and delete
        entries folded away), unless it changed meanwhile."""
        shard = self._shards[self._ring.index(items_route(solution))]
        key = f"{self._sp(solution)}recs"
        blobs = await shard.call("lrange", key, 0, -1)
        if blobs:
            folded = codec.encode_records(codec.fold_records(blobs))
            await self._eval(shard, lua.COMPACT_LIST, (len(blobs), _sha1(b"".join(blobs)),
                                                       folded), keys=(key,), write=True)

    def export(self, solution: str | None, emit: Callable[[dict], object]) -> defer.Deferred:
        """Emit every line of one solution (every solution when None), a chunk
        of series at a time; see IStorage."""
        return defer.ensureDeferred(self._export(solution, emit))

    def export_text(self, solution: str | None, write: Callable[[str], object]
                    ) -> defer.Deferred:
        """`IExportText`: the same lines as `export`, rendered a series at a
        time (`tsnet.export_text`), written a page at a time."""
        pages = export_text.Pages()

        def line(obj: dict) -> None:
            page = pages.line(obj)
            if page is not None:
                write(page)

        def series(name: str, key: SeriesKey, *samples: Any) -> None:
            for page in pages.series(export_text.series_prefix(name, key), *samples):
                write(page)

        def rest(_: Any) -> None:
            page = pages.take()
            if page:
                write(page)

        return defer.ensureDeferred(self._export(solution, line, series)).addCallback(rest)

    async def _export(self, solution: str | None, emit: Callable[[dict], object],
                      series: Callable[..., object] | None = None) -> None:
        """``emit`` every line, or with ``series``, hand it each series'
        merged samples instead: ``series(solution, key, times, values, texts)``."""
        names = [solution] if solution is not None else await self._data_solutions()
        for name in names:
            entries = await self._index(name, None)
            for lo in range(0, len(entries), READ_CHUNK):
                chunk = entries[lo:lo + READ_CHUNK]
                for (key, _, _), blobs in zip(chunk, await self._lists(chunk, name),
                                              strict=True):
                    times, values, texts = codec.fold_samples(blobs)
                    if series is not None:
                        series(name, key, times, values, texts)
                        continue
                    for line in export.series_lines(name, key, times, values, texts):
                        emit(line)
            props = await self._properties(name)
            for ident in sorted(props):
                emit(export.property_line(name, props[ident]))
            for m in await self._messages(name):
                emit(export.message_line(name, m))
            meta = await self._meta(name)
            for kind in META_KINDS:
                for n in sorted(n for k, n in meta if k == kind):
                    emit(export.meta_line(name, Meta(kind, n, meta[(kind, n)])))
            for r in await self._records(name):
                if not r.deleted:
                    emit(export.record_line(name, r))

    def solution_has_data(self, solution: str) -> defer.Deferred:
        """Deferred[bool]: any shard lists the solution as having data."""
        try:
            self._check_open()
        except RuntimeError:
            return defer.fail()
        d = defer.ensureDeferred(_gather(
            [s.call("sismember", self._prefix + "data", solution) for s in self._shards]))
        return d.addCallback(lambda found: any(found))

    def delete_solution_data(self, solution: str) -> defer.Deferred:
        """Deferred: every item of the solution gone from every shard."""
        try:
            self._check_open()
        except RuntimeError:
            return defer.fail()
        self._series.pop(solution, None)
        self._compact.pop(solution, None)
        self._fold_records.discard(solution)
        return defer.ensureDeferred(_gather(
            [self._eval(s, lua.DELETE_SOLUTION_DATA, (self._prefix, solution), write=True)
             for s in self._shards]))

    def compact(self, solution: str | None = None,
                max_series: int | None = None) -> defer.Deferred:
        """Deferred[int]: fold up to ``max_series`` long series lists into one
        blob each (those this node saw grow); 0 when none is due."""
        return defer.ensureDeferred(self._compact_step(solution, max_series))

    async def _compact_step(self, solution: str | None, max_series: int | None) -> int:
        if not self._open:
            return 0
        done = 0
        for name in [solution] if solution is not None else list(self._fold_records):
            if name in self._fold_records:
                self._fold_records.discard(name)
                await self._fold_record_list(name)
                done += 1
        names = [solution] if solution is not None else list(self._compact)
        for name in names:
            due = self._compact.get(name)
            while due and (max_series is None or done < max_series):
                index, sid = due.pop()
                key = f"{self._sp(name)}d:{sid}"
                shard = self._shards[index]
                blobs = await shard.call("lrange", key, 0, -1)
                if len(blobs) > 1:
                    folded = codec.encode_samples(*codec.fold_samples(blobs))
                    sha = _sha1(b"".join(blobs))
                    await self._eval(shard, lua.COMPACT_LIST, (len(blobs), sha, folded),
                                     keys=(key,), write=True)
                done += 1
            if not due:
                self._compact.pop(name, None)
        return done

    # -- retention (`IExpiringStorage`) --------------------------------------------

    def metric_retention(self, solution: str) -> defer.Deferred:
        """Deferred[dict]: metric -> ``retention_days`` as its meta stores it,
        from the meta list alone (the series index is not read)."""
        async def read() -> dict[str, Any]:
            meta = await self._stored_meta(solution)
            return {name: f["retention_days"] for (kind, name), f in meta.items()
                    if kind == "metric" and f.get("retention_days") is not None}
        return defer.ensureDeferred(read())

    def expire_series(self, solution: str, cutoffs: Any, cursor: Any = None,
                      max_series: int = 256) -> defer.Deferred:
        """Deferred[(blobs removed, cursor)]: the head of each series' list, up
        to `HEAD_BLOBS` blobs, loses the blobs whose every point is before the
        series' cutoff, and the first one it keeps is rewritten without its
        expired points once they are a `REWRITE_SHARE` of it or more (a
        compacted series is one blob: it would never expire whole).  One
        script per shard per step; the cursor is what is left to visit."""
        return defer.ensureDeferred(self._expire_series(solution, cutoffs, cursor, max_series))

    async def _expire_series(self, solution: str, cutoffs: Any, cursor: Any,
                             max_series: int) -> tuple[int, Any]:
        if not self._open:
            return 0, None
        if cursor is None:
            cursor = [(index, f"{self._sp(solution)}d:{sid}", cut)
                      for key, sid, shards in await self._index(solution, None)
                      if (cut := cutoffs.series(key[0])) is not None for index in shards]
        step, rest = cursor[:max_series], cursor[max_series:]
        by_shard: dict[int, list[tuple[int, str, int]]] = {}
        for item in step:
            by_shard.setdefault(item[0], []).append(item)
        removed = 0
        again = []
        for index, items in by_shard.items():
            blobs, _, more = await self._trim_heads(index, [(k, c) for _, k, c in items],
                                                    codec.samples_before, codec.samples_from)
            removed += blobs
            again.extend(items[i] for i in more)  # its list may hold more expired blobs
        rest = again + rest
        return removed, rest or None

    def expire_messages(self, solution: str, cutoff_ns: int, cursor: Any = None,
                        limit: int = 4096) -> defer.Deferred:
        """Deferred[(messages removed, cursor)]: the message list's head blobs
        (one per batch) as `expire_series` trims a series' list."""
        async def expire() -> tuple[int, Any]:
            if not self._open:
                return 0, None
            key = f"{self._sp(solution)}msgs"
            removed, again = 0, False
            for index in range(len(self._shards)):  # (a shard added since may hold a part)
                _, n, more = await self._trim_heads(index, [(key, cutoff_ns)],
                                                    codec.messages_before, codec.messages_from)
                removed += n
                again = again or bool(more)
            return removed, (True if again else None)
        return defer.ensureDeferred(expire())

    async def _trim_heads(self, index: int, lists: list[tuple[str, int]],
                          before: Callable[[bytes, int], tuple[int, int]],
                          rewrite: Callable[[bytes, int], bytes]
                          ) -> tuple[int, int, list[int]]:
        """Trim the expired head of each ``(list key, cutoff)`` on one shard:
        (blobs removed, items removed, the positions in ``lists`` whose whole
        head was removed, so more may be expired behind it)."""
        shard = self._shards[index]
        keys = [k for k, _ in lists]
        heads = await self._eval(shard, lua.READ_HEADS, (HEAD_BLOBS,), keys=keys)
        trim_keys: list[str] = []
        args: list[Any] = []
        plan: list[tuple[int, int, int]] = []  # position, blobs dropped, items removed
        for pos, ((key, cut), blobs) in enumerate(zip(lists, heads, strict=True)):
            drop = items = 0
            replace = b""
            for blob in blobs:
                n, old = before(blob, cut)
                if old == n:
                    drop += 1
                    items += n
                    continue
                if old and old * REWRITE_SHARE >= n:
                    replace = rewrite(blob, cut)
                    items += old
                break
            m = drop + (1 if replace else 0)
            if m:
                trim_keys.append(key)
                args.extend((m, _sha1(b"".join(blobs[:m])), replace))
                plan.append((pos, drop, items))
        if not trim_keys:
            return 0, 0, []
        done = await self._eval(shard, lua.TRIM_HEADS, args, keys=trim_keys, write=True)
        blobs_removed = items_removed = 0
        more = []
        for (pos, drop, items), ok in zip(plan, done, strict=True):
            if ok:
                blobs_removed += drop
                items_removed += items
                if drop == len(heads[pos]) == HEAD_BLOBS:
                    more.append(pos)
        return blobs_removed, items_removed, more

    # -- catalog -------------------------------------------------------------------

    def create_solution(self, solution: SolutionRecord) -> defer.Deferred:
        """Deferred[SolutionRecord] as stored; Conflict if the name exists."""
        rec = SolutionRecord(solution.name, solution.description, solution.storage,
                             solution.created_ns or time.time_ns(), dict(solution.attributes))

        def done(created: int) -> SolutionRecord:
            if not created:
                raise Conflict(f"solution {solution.name!r} exists")
            return rec
        return self._catalog(lua.CREATE_SOLUTION, rec.name, _solution_json(rec)).addCallback(done)

    def update_solution(self, solution: SolutionRecord) -> defer.Deferred:
        """Deferred; replaces description and attributes; NotFound if absent."""
        async def update() -> None:
            old = await self.get_solution(solution.name)
            if old is None:
                raise NotFound(f"no solution {solution.name!r}")
            old.description = solution.description
            old.attributes = dict(solution.attributes)
            if not await self._catalog(lua.UPDATE_SOLUTION, old.name, _solution_json(old)):
                raise NotFound(f"no solution {solution.name!r}")
        return defer.ensureDeferred(update())

    def get_solution(self, name: str) -> defer.Deferred:
        """Deferred[SolutionRecord | None]."""
        self._check_open()
        d = self._shards[self._catalog_at].call("get", f"{self._prefix}c:sol:{name}")
        return d.addCallback(lambda data: _solution_of(data) if data is not None else None)

    def list_solutions(self) -> defer.Deferred:
        """Deferred[list[SolutionRecord]] by name."""
        d = self._catalog(lua.RECORDS_OF_SET, "c:sols", "c:sol:")
        return d.addCallback(
            lambda recs: sorted((_solution_of(r) for r in recs), key=lambda s: s.name))

    def delete_solution(self, name: str) -> defer.Deferred:
        """Deferred; the solution and its tokens, not its data; NotFound if absent."""
        def done(deleted: int) -> None:
            if not deleted:
                raise NotFound(f"no solution {name!r}")
        return self._catalog(lua.DELETE_SOLUTION, name).addCallback(done)

    def save_token(self, token: TokenRecord) -> defer.Deferred:
        """Deferred; insert or replace a token; NotFound without its solution,
        Conflict when a credential id or secret hash is another token's."""
        ids = [c.id for c in token.credentials]
        hashes = [c.secret_hash for c in token.credentials]
        if len(set(ids)) != len(ids) or len(set(hashes)) != len(hashes):
            return defer.fail(Conflict(f"token {token.id!r} repeats a credential"))
        rec = TokenRecord(token.id, token.solution, list(token.credentials), token.description,
                          token.expires_ns, dict(token.tags), bool(token.revoked),
                          token.created_ns or time.time_ns())
        pairs = [x for c in token.credentials for x in (c.id, c.secret_hash)]

        def done(answer: bytes) -> None:
            if answer == b"nosolution":
                raise NotFound(f"no solution {token.solution!r}")
            if answer == b"conflict":
                raise Conflict(f"credential of token {token.id!r} exists")
        return self._catalog(lua.SAVE_TOKEN, rec.id, rec.solution, _token_json(rec),
                             *pairs).addCallback(done)

    def get_token(self, token_id: str) -> defer.Deferred:
        """Deferred[TokenRecord | None]."""
        self._check_open()
        d = self._shards[self._catalog_at].call("get", f"{self._prefix}c:tok:{token_id}")
        return d.addCallback(lambda data: _token_of(data) if data is not None else None)

    def list_tokens(self, solution: str) -> defer.Deferred:
        """Deferred[list[TokenRecord]] by creation time, then id."""
        d = self._catalog(lua.RECORDS_OF_SET, f"c:toks:{solution}", "c:tok:")
        return d.addCallback(lambda recs: sorted(
            (_token_of(r) for r in recs), key=lambda t: (t.created_ns, t.id)))

    def find_credential(self, credential_id: str | None, secret_hash: str) -> defer.Deferred:
        """Deferred[TokenRecord | None]: the token owning the credential, its
        stored hash compared in constant time."""
        by_id = credential_id is not None
        d = self._catalog(lua.FIND_CREDENTIAL, "1" if by_id else "0",
                          credential_id if by_id else secret_hash)

        def found(reply: Any) -> TokenRecord | None:
            if not reply or len(reply) < 2 or reply[1] is None:
                return None
            token = _token_of(reply[1])
            cred = token.credential(reply[0].decode())
            if cred is None or not hmac.compare_digest(cred.secret_hash.encode(),
                                                       secret_hash.encode()):
                return None
            return token
        return d.addCallback(found)

    def catalog_generation(self) -> defer.Deferred:
        """Deferred[int]: moves on every solution or token change, by any node."""
        self._check_open()
        d = self._shards[self._catalog_at].call("get", f"{self._prefix}c:gen")
        return d.addCallback(lambda v: int(v) if v is not None else 0)


async def _gather(calls: list) -> list:
    """Every result, or the first failure itself (not wrapped in FirstError)."""
    try:
        return await defer.gatherResults(calls, consumeErrors=True)
    except defer.FirstError as e:
        raise e.subFailure.value from None


def _time_of(item: Message | Record) -> int:
    return item.time_ns


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _chunks(args: list) -> Iterable[list]:
    """A shard's ops in calls of at most about MAX_ARGS arguments, each call
    starting with its solution's G op (an op never splits)."""
    if len(args) <= MAX_ARGS:
        yield args
        return
    chunk: list = []
    group: list = []
    i = 0
    while i < len(args):
        width = _OP_WIDTH[args[i]]
        item = args[i:i + width]
        i += width
        if item[0] == "G":
            group = item
            chunk.extend(item)
            continue
        if len(chunk) + width > MAX_ARGS and len(chunk) > len(group):
            yield chunk
            chunk = list(group)
        chunk.extend(item)
    if chunk:
        yield chunk
