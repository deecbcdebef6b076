"""ts-store's stores as tsnet solutions: creation, keys, opening, writes.

A store is a solution whose catalog attributes hold a ``tsstore`` object (its
type, block sizes, schema versions and outbound connections); its API keys are
single tokens with both scopes, ``tsstore_<uuid4>``, token id = ``key_id``.  The
records themselves go through ingest, the one write path, into whatever
storage holds the solution; nothing here knows which.

A `Store` is opened once per server (lazily, by the first request that names
it, as ts-store does) and kept: it owns the block `Ring`, rebuilt from the
stored records, which decides each record's ``block_num`` and what a full
store reclaims.  The ring is the store's one writer: a store takes its writes
through one node (reads work from any).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsnet.plugin import (
    READ,
    WRITE,
    Batch,
    Conflict,
    Credential,
    Forbidden,
    NotFound,
    Principal,
    Record,
    SolutionRecord,
    TokenRecord,
    Unauthorized,
)
from tsnet.protocols.tsstore.ring import Ring, RingError, valid_block_size
from tsnet.protocols.tsstore.schema import SchemaSet

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.tsstore")

STORE_TYPES = ("binary", "text", "json", "schema")
KEY_PREFIX = "tsstore_"
KEY_LENGTH = len(KEY_PREFIX) + 36
#: the ingest label of every ts-store input (metrics count records under it)
PROTOCOL = "tsstore"
#: attribute of a solution's catalog record that makes it a store
ATTRIBUTE = "tsstore"


class StoreError(Exception):
    """A refusal with ts-store's HTTP status and message (spec §0's error shape)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and its key_id (the uuid's first 8 hex digits)."""
    u = str(uuid.uuid4())
    return KEY_PREFIX + u, u[:8]


def key_token(store: str, key: str, key_id: str, note: str, now_ns: int) -> TokenRecord:
    """The token record of a store key: one credential, both scopes, hash only."""
    return TokenRecord(
        id=key_id, solution=store, description=note, created_ns=now_ns,
        credentials=[Credential(id=key_id, scopes=frozenset((READ, WRITE)),
                                secret_hash=hash_key(key))],
    )


@dataclass
class Settings:
    """The ``[tsstore]`` section: the admin key's hash and the store defaults."""

    admin_hash: str | None
    num_blocks: int = 1024
    data_block_size: int = 4096
    index_block_size: int = 4096

    def admin_ok(self, given: str) -> bool:
        """Constant-time check of an admin key against the one configured."""
        if self.admin_hash is None:
            return False
        return hmac.compare_digest(hash_key(given), self.admin_hash)


@dataclass(frozen=True)
class Ack:
    """What a committed write answers: ``{"timestamp","block_num","size"}``."""

    timestamp: int
    block_num: int
    size: int


@dataclass
class Store:
    """One open store: its settings, schema, ring and (outbound) connections."""

    name: str
    data_type: str
    num_blocks: int
    data_block_size: int
    index_block_size: int
    ring: Ring
    schema: SchemaSet = field(default_factory=SchemaSet)
    connections: list[dict] = field(default_factory=list)
    created_ns: int = 0
    #: fires when a reset or delete in progress is done; writes wait for it
    gate: defer.Deferred | None = None
    deleted: bool = False

    @cached_property
    def principal(self) -> Principal:  # (made once: every write passes it to ingest)
        return Principal(solution=self.name, scopes=frozenset((READ, WRITE)))

    def attributes(self) -> dict:
        """The catalog form (and the export's ``store`` line)."""
        out: dict[str, Any] = {
            "type": self.data_type, "num_blocks": self.num_blocks,
            "data_block_size": self.data_block_size,
            "index_block_size": self.index_block_size,
        }
        if self.schema.current_version:
            out["schema"] = self.schema.to_json()
        if self.connections:
            out["connections"] = [dict(c) for c in self.connections]
        return out

    @classmethod
    def from_attributes(cls, name: str, attrs: dict, created_ns: int, ring: Ring) -> Store:
        schema = SchemaSet.from_json(attrs["schema"]) if attrs.get("schema") else SchemaSet()
        return cls(name=name, data_type=attrs["type"], num_blocks=attrs["num_blocks"],
                   data_block_size=attrs["data_block_size"],
                   index_block_size=attrs["index_block_size"], ring=ring, schema=schema,
                   connections=[dict(c) for c in attrs.get("connections", ())],
                   created_ns=created_ns)


class Stores:
    """The stores of one server: create, open, authenticate, write, reset, delete.

    ``on_open`` / ``on_close`` are called with each store opened and closed
    (the outbound connections start and stop with their store, spec §1)."""

    def __init__(self, core: Core, settings: Settings,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.core = core
        self.settings = settings
        self.clock_ns = clock_ns
        self._open: dict[str, Store] = {}
        self._opening: dict[str, list[defer.Deferred]] = {}
        self.on_open: list[Callable[[Store], Any]] = []
        self.on_close: list[Callable[[Store], Any]] = []
        #: the open WebSocket writers (debugging and tests look here)
        self.writers: weakref.WeakSet = weakref.WeakSet()

    # -- the catalog -----------------------------------------------------------

    async def _record(self, name: str) -> SolutionRecord | None:
        rec = await self.core.catalog.get_solution(name)
        if rec is None or ATTRIBUTE not in rec.attributes:
            return None
        return rec

    async def names(self) -> list[str]:
        """Every store, by name."""
        recs = await self.core.catalog.list_solutions()
        return sorted(r.name for r in recs if ATTRIBUTE in r.attributes)

    async def create(self, name: Any, num_blocks: int = 0, data_block_size: int = 0,
                     index_block_size: int = 0, data_type: str = "json",
                     note: str = "Initial key") -> tuple[Store, str, str]:
        """A new store and its first key: (store, api_key, key_id).  StoreError
        500 with ts-store's texts for what ts-store refuses (spec §3)."""
        from tsnet.model import valid_solution_name

        s = self.settings
        num_blocks = num_blocks or s.num_blocks
        data_block_size = data_block_size or s.data_block_size
        index_block_size = index_block_size or s.index_block_size
        if data_type not in STORE_TYPES:
            raise StoreError(500, "invalid data type: must be binary, text, json, or schema")
        if not (valid_block_size(data_block_size) and valid_block_size(index_block_size)):
            raise StoreError(500, "invalid config: block size must be a power of 2 and at "
                                  "least 64 bytes")
        if not isinstance(name, str) or not valid_solution_name(name):
            raise StoreError(500, "invalid store name: use 1 to 64 letters, digits, "
                                  "'.', '_' or '-'")
        ring = Ring(num_blocks, data_block_size)
        now = self.clock_ns()
        store = Store(name, data_type, num_blocks, data_block_size, index_block_size, ring,
                      created_ns=now)
        rec = SolutionRecord(name, "ts-store store", "default", now,
                             {ATTRIBUTE: store.attributes()})
        try:
            await self.core.catalog.create_solution(rec)
        except Conflict:
            raise StoreError(500, "store already exists") from None
        key, key_id = new_key()
        await self.core.catalog.save_token(key_token(name, key, key_id, note, now))
        await self.core.storage.refresh()
        backend = self.core.storage.backend_for(name)
        await backend.delete_solution_data(name)  # a solution of that name left data
        self._open[name] = store
        log.info("created store {store} ({type}, {blocks} x {size} bytes)", store=name,
                 type=data_type, blocks=num_blocks, size=data_block_size)
        self._opened(store)
        return store, key, key_id

    async def save(self, store: Store) -> None:
        """Write the store's settings (schema, connections) to the catalog."""
        rec = await self.core.catalog.get_solution(store.name)
        if rec is None:
            raise NotFound(store.name)
        rec.attributes = {**rec.attributes, ATTRIBUTE: store.attributes()}
        await self.core.catalog.update_solution(rec)

    # -- opening ---------------------------------------------------------------

    def cached(self, name: str) -> Store | None:
        return self._open.get(name)

    def open(self, name: str) -> defer.Deferred:
        """Deferred[Store]: the open store, opened (ring rebuilt) if need be;
        fails with NotFound when there is no such store.  Requests that name a
        store while it opens wait for that one opening."""
        store = self._open.get(name)
        if store is not None:
            return defer.succeed(store)
        d: defer.Deferred = defer.Deferred()
        waiters = self._opening.get(name)
        if waiters is not None:
            waiters.append(d)
            return d
        self._opening[name] = [d]

        def settle(result: Any) -> None:
            for w in self._opening.pop(name):
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result)
        defer.ensureDeferred(self._load(name)).addBoth(settle)
        return d

    async def _load(self, name: str) -> Store:
        rec = await self._record(name)
        if rec is None:
            raise NotFound(name)
        attrs = rec.attributes[ATTRIBUTE]
        try:
            backend = self.core.storage.backend_for(name)
        except NotFound:
            await self.core.storage.refresh()
            backend = self.core.storage.backend_for(name)
        recs = await backend.read_records(name, include_deleted=True)
        ring = Ring.replay(attrs["num_blocks"], attrs["data_block_size"],
                           ((r.time_ns, r.size, r.block) for r in recs))
        store = Store.from_attributes(name, attrs, rec.created_ns, ring)
        if name in self._open:  # (created meanwhile)
            return self._open[name]
        self._open[name] = store
        log.info("opened store {store}: {n} records", store=name, n=len(recs))
        self._opened(store)
        return store

    def _opened(self, store: Store) -> None:
        for f in self.on_open:
            try:
                f(store)
            except Exception:
                log.failure("starting the connections of store {store} failed",
                            store=store.name)

    def close_all(self) -> list[Any]:
        """Close every open store (the server stops); what on_close returned."""
        out = []
        for store in list(self._open.values()):
            out.extend(self._closed(store))
        self._open.clear()
        return out

    def _closed(self, store: Store) -> list[Any]:
        out = []
        for f in self.on_close:
            try:
                out.append(f(store))
            except Exception:
                log.failure("stopping the connections of store {store} failed",
                            store=store.name)
        return out

    # -- keys --------------------------------------------------------------------

    async def authenticate(self, name: str, key: str | None,
                           check_format: bool = True) -> Store:
        """The open store that ``key`` opens, or StoreError 401 with ts-store's
        text (spec §2): the key's form, then the store, then the key."""
        if not key:
            raise StoreError(401, "API key required")
        if check_format and (len(key) < KEY_LENGTH or not key.startswith(KEY_PREFIX)):
            raise StoreError(401, "invalid API key format")
        if self._open.get(name) is None and await self._record(name) is None:
            raise StoreError(401, "authentication failed")
        try:
            principal = await self.core.auth.authenticate(key, WRITE)
        except (Unauthorized, Forbidden):
            raise StoreError(401, "invalid API key") from None
        if principal.solution != name or not principal.can(READ):
            raise StoreError(401, "invalid API key")
        try:
            return await self.open(name)
        except NotFound:
            raise StoreError(401, "authentication failed") from None

    async def keys(self, name: str) -> list[TokenRecord]:
        """The store's live keys, oldest first."""
        if await self._record(name) is None:
            raise NotFound(name)
        return [t for t in await self.core.catalog.list_tokens(name) if not t.revoked]

    async def regenerate_key(self, name: str, note: str = "Regenerated via CLI"
                             ) -> tuple[str, str]:
        """Replace every key of the store with one new key: (api_key, key_id)."""
        for t in await self.keys(name):
            t.revoked = True
            await self.core.catalog.save_token(t)
        key, key_id = new_key()
        await self.core.catalog.save_token(key_token(name, key, key_id, note,
                                                     self.clock_ns()))
        return key, key_id

    async def revoke_key(self, name: str, key_id: str) -> None:
        for t in await self.keys(name):
            if t.id == key_id:
                t.revoked = True
                await self.core.catalog.save_token(t)
                return
        raise StoreError(404, "API key not found")

    # -- writes ------------------------------------------------------------------

    def write(self, store: Store, data: bytes, time_ns: int | None) -> defer.Deferred:
        """Deferred[Ack] once the record is committed; StoreError 500 with
        ts-store's text when the store refuses it (order, capacity).  A missing
        or 0 time is the server's, never earlier than what the store holds."""
        if store.gate is not None:
            d: defer.Deferred = defer.Deferred()
            store.gate.addBoth(lambda r: (d.callback(None), r)[1])
            return d.addCallback(lambda _: self.write(store, data, time_ns))
        if store.deleted:
            return defer.fail(StoreError(500, "store is closed"))
        if not time_ns:
            time_ns = max(self.clock_ns(), store.ring.newest_ns + 1)
        try:
            placed = store.ring.place(time_ns, len(data))
        except RingError as e:
            return defer.fail(StoreError(500, str(e)))
        batch = Batch(records=[Record(time_ns, data, store.data_type, placed.block)],
                      reclaim_ns=placed.reclaim_ns)
        ack = Ack(time_ns, placed.block, len(data))
        d = self.core.ingest.submit(batch, store.principal, PROTOCOL)
        return d.addCallback(lambda _: ack)

    def write_many(self, store: Store, datas: list[bytes]) -> defer.Deferred:
        """Several records at server time in one batch (a stream's buffer of
        lines): Deferred[list of Ack or StoreError], one per record in order,
        once the batch is committed; a failed commit fails the Deferred."""
        if store.gate is not None:
            d: defer.Deferred = defer.Deferred()
            store.gate.addBoth(lambda r: (d.callback(None), r)[1])
            return d.addCallback(lambda _: self.write_many(store, datas))
        if store.deleted:
            return defer.succeed([StoreError(500, "store is closed")] * len(datas))
        ring, dtype, clock = store.ring, store.data_type, self.clock_ns
        results: list[Any] = []
        records = []
        reclaim = None
        for data in datas:
            time_ns = max(clock(), ring.newest_ns + 1)
            try:
                placed = ring.place(time_ns, len(data))
            except RingError as e:
                results.append(StoreError(500, str(e)))
                continue
            if placed.reclaim_ns is not None:
                reclaim = placed.reclaim_ns
            records.append(Record(time_ns, data, dtype, placed.block))
            results.append(Ack(time_ns, placed.block, len(data)))
        if not records:
            return defer.succeed(results)
        d = self.core.ingest.submit(Batch(records=records, reclaim_ns=reclaim),
                                    store.principal, PROTOCOL)
        return d.addCallback(lambda _: results)

    # -- reset and delete ----------------------------------------------------------

    async def _quiesce(self, store: Store) -> defer.Deferred:
        """Hold new writes, let what was accepted commit; the caller fires the gate."""
        while store.gate is not None:
            await store.gate
        gate = store.gate = defer.Deferred()
        await self.core.ingest.flush()
        return gate

    async def reset(self, store: Store) -> None:
        """Empty the store (every read), keeping its settings, schema and keys."""
        gate = await self._quiesce(store)
        try:
            await self.core.storage.backend_for(store.name).delete_solution_data(store.name)
            store.ring.reset()
        finally:
            store.gate = None
            gate.callback(None)

    async def delete(self, store: Store) -> None:
        """Stop the store's connections, remove its data, settings and keys."""
        gate = await self._quiesce(store)
        try:
            for d in self._closed(store):
                if isinstance(d, defer.Deferred):
                    await d
            store.deleted = True
            self._open.pop(store.name, None)
            await self.core.storage.backend_for(store.name).delete_solution_data(store.name)
            await self.core.catalog.delete_solution(store.name)
            await self.core.storage.refresh()
            log.info("deleted store {store}", store=store.name)
        finally:
            store.gate = None
            gate.callback(None)
