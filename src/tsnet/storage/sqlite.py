"""The embedded storage backend: one SQLite file, written from one dedicated thread.

`SqliteEngine` is the synchronous database code; the ``tsnet`` command can use it
directly.  `SqliteStorage` is what the server uses: the same engine behind
IStorage/ICatalog, every call run in a one-thread pool and returned as a Deferred,
so the reactor never waits for the disk and writes are never concurrent.

Samples are stored as chunks (`tsnet.storage.chunks`): one row per series per
batch, so a write costs a few SQL statements per series, not per point.
Properties, messages, meta and records have their own tables and are written in
the same transaction as the samples: one transaction per batch.

Durability: WAL with ``synchronous=NORMAL``.  A commit is in the WAL file when it
returns, so an acked batch survives ``kill -9`` of the process; only a power loss or
OS crash can lose the last commits, which DESIGN §6 does not ask for, and
``synchronous=FULL`` would cost an fsync per batch.  A checkpoint (copying the
WAL into the database, with an fsync) is costly, and SQLite runs it inside the
commit that crosses ``wal_autocheckpoint`` pages.  The ``tsnet`` command keeps
that, every `WAL_CHECKPOINT_PAGES` pages; the server turns it off and
`SqliteStorage` checkpoints in its writer thread instead, each time the WAL
passes `CHECKPOINT_BYTES`: small checkpoints that no reactor-thread commit
ever runs.  The WAL is trimmed back to `WAL_SIZE_LIMIT` bytes after a checkpoint.

Several processes may open the file (the server and the ``tsnet`` command): writes
take the lock with ``BEGIN IMMEDIATE`` and wait up to ``busy_timeout`` for it, and
counters in the ``info`` table tell each process when another one changed the
catalog (`catalog_generation`) or deleted data (the series-id cache is dropped).
"""

from __future__ import annotations

import bisect
import hmac
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import orjson
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from tsnet import export, export_text
from tsnet.errors import BadBatch, Conflict, NotFound
from tsnet.interfaces import (
    IBoundedReads,
    ICatalog,
    IExpiringStorage,
    IExportText,
    ISeriesByKey,
    IStorage,
    ITagIndex,
)
from tsnet.model import (
    Column,
    Message,
    Meta,
    Property,
    Record,
    SeriesKey,
    Value,
    WriteBatch,
)
from tsnet.records import Credential, SolutionRecord, TokenRecord
from tsnet.storage import chunks, rules, sqlite_bulk, sqlite_series, sqlite_tags
from tsnet.storage import pending as pending_log
from tsnet.storage.series_refs import SeriesRefs
from tsnet.storage.sqlite_series import dumps as _dumps
from tsnet.storage.sqlite_series import key_from_row as _key_from_row

log = Logger(namespace="tsnet.storage.sqlite")

#: 2: the tag index (`tsnet.storage.sqlite_tags`); 3: series rows without their
#: key texts (`tsnet.storage.sqlite_series`); an older file is migrated
SCHEMA_VERSION = sqlite_series.VERSION

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO info (key, value) VALUES
    ('schema_version', 1), ('catalog_generation', 0), ('data_generation', 0);

CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL,
    count INTEGER NOT NULL,
    times BLOB NOT NULL,
    vals BLOB NOT NULL,
    texts BLOB
);
CREATE INDEX IF NOT EXISTS chunks_series ON chunks (series_id);

CREATE TABLE IF NOT EXISTS properties (
    solution TEXT NOT NULL,
    entity TEXT NOT NULL,
    type TEXT NOT NULL,
    pkey TEXT NOT NULL,
    tags TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    PRIMARY KEY (solution, entity, type, pkey)
);

CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    solution TEXT NOT NULL,
    entity TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    type TEXT,
    source TEXT,
    severity TEXT,
    tags TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_time ON messages (solution, time_ns);

CREATE TABLE IF NOT EXISTS meta (
    solution TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (solution, kind, name)
);

-- Small acked batches, logged whole until folded into chunks (see write()).
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY,
    points INTEGER NOT NULL,
    batch TEXT NOT NULL
);
-- The parts folded out of a pending row so far (`_fold_part`): a table of its
-- own, as updating a column of a pending row rewrites its whole batch.
CREATE TABLE IF NOT EXISTS pending_folded (
    id INTEGER PRIMARY KEY,
    folded INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    solution TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    data BLOB NOT NULL,
    data_type TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    block INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_time ON records (solution, time_ns);

CREATE TABLE IF NOT EXISTS solutions (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    storage TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    attributes TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    solution TEXT NOT NULL,
    description TEXT NOT NULL,
    expires_ns INTEGER,
    tags TEXT NOT NULL,
    revoked INTEGER NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_solution ON tokens (solution);

CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS credentials_token ON credentials (token_id);
"""

_DATA_TABLES = ("series", "properties", "messages", "meta", "records")


#: records a batch may have to commit on the reactor (`write_small_now`)
INLINE_RECORDS = 512
#: new series a batch may create there: an HTTP request's few (a fleet's
#: requests each bring some), not a stream's 2000, which held the reactor
#: 30-60 ms a batch at a fleet's start
INLINE_NEW_SERIES = 100

#: WAL pages between automatic checkpoints (32 MiB of 4 KiB pages)
WAL_CHECKPOINT_PAGES = 8192
#: the WAL file is truncated to this after a checkpoint
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: KiB of pages the writer's connection keeps (SQLite's default: 2 MiB).  A
#: part's fold and compaction update pages all over the chunks' series index:
#: in the 10-minute wide soak a part's fold took 95 ms (median) with the
#: default and 74 ms with this, the server's CPU 401 -> 360 s, its peak RSS
#: 245 -> 283 MiB
WRITER_CACHE_KIB = 64 * 1024
#: the server checkpoints in the background once the WAL file is this big
CHECKPOINT_BYTES = 4 * 1024 * 1024
#: seconds between two looks at the WAL's size
CHECKPOINT_INTERVAL = 0.5
#: seconds a background job that is ready (a part fold's second half, a
#: checkpoint) waits for the next write's commit, to be queued just behind it
#: and so ahead of the write after (`SqliteStorage._turn`): under load a job
#: then holds one commit back by its own time only, where in the wide soak a
#: fold's two halves, or one and a checkpoint, ran back to back between two
#: commits (gaps of 190-250 ms).  With no write in that time (an idle
#: server, small writes committed on the reactor) the job runs anyway.
TURN_WAIT = 0.25

#: a batch of at most this many points is logged whole (one row), not as chunks
#: (an engine made with 0 logs none, wide or not: every batch is chunks at once)
PENDING_MAX_POINTS = 2000
#: series ids a solution's write path remembers (key -> id); past it the cache
#: starts again.  About 430 bytes a series: at 1,000,000 series (2 points each)
#: an unbounded cache took the server's peak RSS from 785 to 1405 MiB, and the
#: misses this bound adds did not lower the rate (30 k -> 33 k points/s)
SERIES_ID_CACHE = 200_000
#: a batch with fewer points per series than this on average is logged whole too
WIDE_POINTS = 8
#: pending points that are folded into chunks at once, without waiting for a read
#: (the least `SqliteEngine.fold_mark` is)
PENDING_FOLD_POINTS = 500_000
#: pending points a series the log may hold before it is folded, when the file
#: has many series: a part's fold costs with the chunk rows it writes, a row
#: per series, so a wide log folded at 500,000 points (5 a series at 100,000
#: series) spent a third of the writer in folds and made chunks of 5 points
#: for compaction to rewrite.  At 16 a series a part's fold of 1.6 M points
#: took 32 ms, of 0.9 M 31 ms (`bench/fold_part.py`, 100,000 series)
FOLD_POINTS_PER_SERIES = 16
#: the most pending points before a fold, however many series: what the row
#: cache holds (about 24 bytes a point)
PENDING_FOLD_MAX = 2_000_000
#: bytes of pending-log rows the writer keeps as it wrote them (`_log_pending`),
#: so that a part's fold slices them in memory: read from the file, a row's
#: part is five reads, each letting go of the GIL, and beside a busy reactor
#: each took the GIL back only at its switch interval (a fold 34 -> 560 ms
#: beside a spinning thread, reads 1 -> 260 ms of it).  The log's rows hold
#: about twice the points still to fold (a row goes once its last part is
#: out), 24 bytes each: at `PENDING_FOLD_MAX` about 96 MB.  With 48 MiB a
#: third of the wide soak's 300 rows were read from the file, and a part's
#: fold beside a spinning thread took 2.2 s, not 0.13
ROW_CACHE_BYTES = 96 * 1024 * 1024

#: points per chunk that compaction aims at, and small chunks that make it worth it
COMPACT_TARGET = 4096
COMPACT_MIN_CHUNKS = 8
#: chunks below this many points are "small": merged, once, when 8 of them
#: follow one another.  Below the target, so a merged chunk is not merged again
#: and again as new small chunks arrive (each point is rewritten at most once)
COMPACT_SMALL = 256
#: seconds without a write to the pending log after which compaction folds it
COMPACT_IDLE = 2.0
#: seconds reads leave the pending log as it is after a fold failed (a full
#: disk, another process's write lock) before they try folding it again
FOLD_RETRY = 1.0
#: points of one series an export merges at once (`SqliteEngine._series_groups`)
EXPORT_GROUP = 1 << 18
#: what a storage refuses the items themselves for (a constraint they break, a
#: value SQLite cannot hold): a retry would fail forever
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)
#: the pending log's rows, oldest first, with the parts folded out of each
_PENDING_ROWS = ("SELECT p.batch, COALESCE(f.folded, 0) FROM pending p"
                 " LEFT JOIN pending_folded f ON f.id = p.id ORDER BY p.id")


def _pending_part(db: sqlite3.Connection, rid: int, part: int) -> bytes:
    """Pending row ``rid``'s points of ``part`` (`pending_log.read_part`).  With
    `sqlite3.Connection.blobopen` (Python 3.11) only the row's header and the
    part's slices are read from the file: a part's fold of a 900,000-point log
    reads 1.4 MB, not 22 MB.  Without it (Python 3.10), the whole row."""
    blobopen = getattr(db, "blobopen", None)
    if blobopen is None:
        return db.execute("SELECT batch FROM pending WHERE id = ?", (rid,)).fetchone()[0]
    with blobopen("pending", "batch", rid, readonly=True) as blob:
        return pending_log.read_part(blob, part)


def _unfolded_rows(db: sqlite3.Connection, bit: int) -> list[tuple[int, bool, int]]:
    """(id, a text (the first form), folded parts) of each pending row with
    part ``bit`` still in it, oldest first: as one JSON text (one step, where
    a row a step let go of the GIL once a row).  A blob's form is in its
    first bytes, which `SqliteEngine._next_fold` reads anyway: ``substr``
    here loaded every row whole (26 ms a fold of a 300-row log)."""
    where = (" FROM pending p LEFT JOIN pending_folded f ON f.id = p.id"
             " WHERE COALESCE(f.folded, 0) & ? = 0")
    text = "typeof(p.batch) != 'blob'"
    if not sqlite_bulk.HAS_JSON_ARROW:
        return [(rid, bool(t), mask) for rid, t, mask in db.execute(
            f"SELECT p.id, {text}, COALESCE(f.folded, 0){where} ORDER BY p.id", (bit,))]
    (listing,) = db.execute(
        f"SELECT json_group_array(json_array(p.id, {text}, COALESCE(f.folded, 0))){where}",
        (bit,)).fetchone()
    return sorted((rid, bool(t), mask) for rid, t, mask in orjson.loads(listing))


def _where(*filters: tuple[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE`` text and arguments from ``(condition, value)`` pairs; a pair
    whose value is None is left out (an optional filter not given)."""
    given = [(sql, v) for sql, v in filters if v is not None]
    return " AND ".join(sql for sql, _ in given), [v for _, v in given]


#: the SQL function of `_tags_order`
_TAGS_ORDER = "tsnet_tags_order"


def _order_text(text: str) -> bytes:
    # (NUL escaped, then a NUL pair ends it: a prefix sorts first, as in Python)
    return text.encode("utf-8", "surrogatepass").replace(b"\0", b"\0\xff") + b"\0\0"


def _tags_order(tags: str) -> bytes:
    """A series' ``tags`` column as bytes that sort (by memcmp, as SQLite
    compares blobs) as its tags tuple does in `rules.series_sort_key`: each
    pair is ``\\x01``, its key and value; ``\\x00`` ends the tuple, so a
    shorter tuple sorts first.  UTF-8 keeps code-point order."""
    pairs = sorted(json.loads(tags).items())
    return b"".join([b"\1" + _order_text(k) + _order_text(v) for k, v in pairs] + [b"\0"])


class _Folded(NamedTuple):
    """A part's fold made from the log as it was (`SqliteEngine._next_fold`):
    the rows with points of ``part`` and their masks, the chunk rows, and
    the engine's ``_fold_epoch`` then; ``whole``: the log must fold whole."""

    part: int
    ids: list[int]
    masks: list[int]
    rows: list[tuple]
    epoch: int
    whole: bool = False


class _SmallChunks:
    """How many small chunks each series has, and which series have enough of
    them to be compacted, in the order they got there.

    The counts sit in a byte per series id (ids are dense: `_many_series_ids`
    gives max + 1), saturating at 255, so a million series
    take a megabyte, not the hundred a dict took; and compaction takes its next
    series from ``ready`` instead of scanning every count at every step (at
    100,000 series, tens of milliseconds a step with the GIL held).

    The chunks written since the counts began are counted as they are
    written; those of the series made before (ids up to ``scan_end``) are
    counted from the table a step at a time (`SqliteEngine._count_small`),
    from ``scan_at`` on.  Counting every series in one query held the writer
    for 124 ms at 100,000 series, a stall of the commits behind it."""

    __slots__ = ("counts", "ready", "ready_at", "scan_at", "scan_end")

    def __init__(self, ready_at: int, counts: Iterable[tuple[int, int]] = (),
                 scan_end: int = 0) -> None:
        self.ready_at = ready_at
        self.counts = bytearray()
        self.ready: dict[int, None] = {}
        for sid, n in counts:
            self.set(sid, n)
        self.scan_at = 1  # (series ids begin at 1)
        self.scan_end = scan_end

    @property
    def scanned(self) -> bool:
        """Every series made before the counts began has been counted."""
        return self.scan_at > self.scan_end

    def set(self, sid: int, n: int) -> None:
        counts = self.counts
        if sid >= len(counts):
            counts.extend(bytes(sid + 1 - len(counts) + len(counts) // 2))
        counts[sid] = min(n, 255)
        if n >= self.ready_at:
            self.ready[sid] = None
        else:
            self.ready.pop(sid, None)

    def add(self, sid: int) -> None:
        counts = self.counts
        if sid >= len(counts):
            self.set(sid, 1)
            return
        n = counts[sid] + 1
        if n < 256:
            counts[sid] = n
        if n == self.ready_at:
            self.ready[sid] = None

    def count(self, sid: int) -> int:
        return self.counts[sid] if sid < len(self.counts) else 0

    def take(self, most: int | None) -> list[int]:
        """Up to ``most`` ready series, oldest first (they stay ready until `set`)."""
        return list(itertools.islice(self.ready, most))


class SqliteEngine:
    """The synchronous database code.  Not thread-safe: one thread calls it."""

    def __init__(self, path: str, busy_timeout: float = 5.0,
                 pending_max_points: int = PENDING_MAX_POINTS) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.pending_max_points = pending_max_points
        self._db: sqlite3.Connection | None = None
        # solution -> SeriesKey -> series id; dropped when data_generation moves.
        self._ids: dict[str, dict[SeriesKey, int]] = {}
        # solution -> the same ids by key object (the parsers' cached keys),
        # dropped with `_ids`
        self._refs: dict[str, SeriesRefs] = {}
        # the series table's largest id while `_ids` holds every series (each
        # under its canonical key too), so a key not in it is new; None when it
        # may not (see `_many_series_ids`)
        self._top: int | None = None
        # the series table's largest id as last seen (ids are dense: about the
        # series it holds), for `fold_mark`
        self._id_span = 0
        self._data_generation: int | None = None
        # series id -> small chunks written since it was last compacted, so
        # compaction never scans the chunks table for candidates (a scan per
        # step made it quadratic in the number of chunks); made at open
        self._small: _SmallChunks | None = None
        self._pending: int | None = None  # points in the pending log; None: not read yet
        self._next_part = 0  # the part of the log `_fold_part` folds next
        # counts whatever changed the log's rows other than a new row (a fold,
        # a rollback, a deletion), so a fold made before it is not committed
        self._fold_epoch = 0
        self._prepared: tuple[_Folded, int] | None = None  # (`prepare_fold_part`)
        # pending-log rows as this engine wrote them (id -> row), while no
        # other connection changed the file (`PRAGMA data_version` as it was
        # then: another process's fold may give a new row a folded row's id)
        self._rows: dict[int, bytes] = {}
        self._rows_bytes = 0
        self._data_version: int | None = None
        self._pending_at_compact = -1  # the log's size when compact() last ran
        self._last_log = 0.0  # monotonic time of the last write to the pending log
        self._fold_again = 0.0  # monotonic time before which reads do not try to fold
        self._fold_failing = False  # the last fold a read tried failed (logged once)
        #: held by whichever thread uses the engine: `SqliteStorage`'s writer thread
        #: for everything, or the reactor for `write_small_now`, which never waits
        self.lock = threading.Lock()
        self._now_db: sqlite3.Connection | None = None  # write_small_now's connection
        #: a reader (`open_reader`): reads only, never folds the pending log
        self.reads_only = False

    # -- connection ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # transactions are explicit
            check_same_thread=False,  # opened by whichever pool thread runs open()
        )
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        db.create_function(_TAGS_ORDER, 1, _tags_order, deterministic=True)
        return db

    def open(self) -> None:
        """Open or create the file in WAL mode and create missing tables."""
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = self._connect()
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and self.path != ":memory:":
                raise RuntimeError(f"{self.path}: cannot use WAL mode (got {mode})")
            # NORMAL: durable across a process crash in WAL mode (see module docstring).
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            # executescript() would commit on its own; run the statements in one transaction.
            db.execute("BEGIN IMMEDIATE")
            for statement in [sqlite_series.SCHEMA, *_SCHEMA.split(";")]:
                if statement.strip():
                    db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
            if "block" not in columns:  # a file from before ts-store's blocks
                db.execute("ALTER TABLE records ADD COLUMN block INTEGER NOT NULL DEFAULT 0")
            sqlite_tags.migrate(db)
            sqlite_series.migrate(db)
            version = db.execute("SELECT value FROM info WHERE key='schema_version'").fetchone()
            if version[0] != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: unknown schema version {version[0]}")
            (self._id_span,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM series").fetchone()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            raise
        self._db = db
        self._small = self._new_small(COMPACT_MIN_CHUNKS)

    def open_reader(self) -> None:
        """Open the file for reads only, beside a writer engine that opened it
        (and made its tables): a WAL reader sees every commit made before its
        read began and waits for no writer, so a long read holds no commit."""
        db = self._connect()
        db.execute("PRAGMA query_only = ON")
        self._db = db
        self.reads_only = True

    def prepare_read(self) -> None:
        """Fold the pending log if that can be done at once (the writer's part
        of a read on a reader engine: the fold is bounded, the read is not)."""
        self._fold_for_read()

    def open_small_writes(self) -> None:
        """Open `write_small_now`'s own connection: it never waits for a lock
        (busy_timeout 0) and never checkpoints, so it cannot block its caller on
        another process or on an fsync.  No commit of this engine checkpoints
        from now on: the caller runs `checkpoint` in the background."""
        self.db.execute("PRAGMA wal_autocheckpoint = 0")
        if self._now_db is None:
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")
            self._now_db = db

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database (PASSIVE: never waits for another
        process).  Called with the engine's lock, so no write of this process
        runs meanwhile and the checkpoint can finish, letting the next write
        start the WAL over; under a stream of writes it would never finish and
        the WAL would grow without end.  Returns SQLite's (busy, WAL frames,
        frames checkpointed)."""
        return tuple(self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())

    def close(self) -> None:
        for db in (self._db, self._now_db):
            if db is not None:
                db.close()
        self._db = self._now_db = None
        self._drop_ids()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("storage is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        if self._rows:
            (version,) = db.execute("PRAGMA data_version").fetchone()
            if version != self._data_version:
                self._drop_rows()  # (another connection committed since)
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _bump(self, db: sqlite3.Connection, counter: str) -> None:
        db.execute("UPDATE info SET value = value + 1 WHERE key = ?", (counter,))

    def _generation(self, db: sqlite3.Connection, counter: str) -> int:
        return db.execute("SELECT value FROM info WHERE key = ?", (counter,)).fetchone()[0]

    # -- writing -------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Commit everything in ``batch`` in one transaction."""
        if not any(
            b.samples.columns or b.samples.keys or b.properties or b.messages or b.meta
            or b.records for b in batch.by_solution.values()
        ):
            return  # (not item_count(): a parser may fill columns without recounting)
        points = _points(batch)
        try:
            with self._transaction() as db:
                self._check_data_generation(db)
                pending = self._pending_points(db)
                if 0 < points and self.pending_max_points and (
                        points <= self.pending_max_points
                        or points < WIDE_POINTS * _series_count(batch)):
                    # A small acked batch (an HTTP request), or a wide one (a fleet:
                    # few points per series), as chunks would be a tiny row per
                    # series; one row holding the batch commits cheaply, and is
                    # folded into chunks later, many batches at once, a part at
                    # a time (a part's fold holds the writer a sixteenth as long),
                    # after this commit (`fold_due_part`), or first when the
                    # log is far behind (no storage folds after writes, or the
                    # load outruns the folds)
                    if pending + points > 2 * self.fold_mark:
                        self._fold_part(db)
                    self._log_pending(db, batch, points)
                    points = 0
                elif points:
                    self._fold(db)  # the pending batches are older: they go first
                for solution, b in batch.by_solution.items():
                    if points and (b.samples.columns or b.samples.keys):
                        self._write_samples(db, solution, b.samples.columnar())
                    for p in b.properties:
                        self._write_property(db, solution, p)
                    if b.messages:
                        self._write_messages(db, solution, b.messages)
                    for m in b.meta:
                        self._write_meta(db, solution, m.kind, m.name, m.fields)
                    if b.records:
                        self._write_records(db, solution, b.records)
                    if b.reclaim_ns is not None:
                        db.execute("DELETE FROM records WHERE solution = ? AND time_ns <= ?",
                                   (solution, b.reclaim_ns))
                    for entity in rules.implicit_entities(b):
                        self._register(db, solution, "entity", entity)
        except _REFUSED as e:
            self._forget()
            raise BadBatch(f"the storage refused the items: {e}") from e
        except BaseException:
            self._forget()
            raise

    @property
    def fold_mark(self) -> int:
        """Pending points past which the log is folded, a part after each write:
        `FOLD_POINTS_PER_SERIES` a series of the file, at least
        `PENDING_FOLD_POINTS` and at most `PENDING_FOLD_MAX`."""
        return max(PENDING_FOLD_POINTS, min(FOLD_POINTS_PER_SERIES * self._id_span,
                                            PENDING_FOLD_MAX))

    @property
    def fold_due(self) -> bool:
        """The pending log is past `fold_mark` (as last counted)."""
        return (self._pending or 0) > self.fold_mark

    def fold_due_part(self) -> None:
        """Fold the next part of the log in a transaction of its own, if it is
        past `fold_mark`: `prepare_fold_part`, then `commit_fold_part`.
        `SqliteStorage` runs it after a write's commit rather than in the
        write: a part's fold of a wide log takes 80-110 ms in a large file,
        and inside a write it delayed that write's commit by as much (a 200 ms
        gap between commits at a 0.1 s flush)."""
        if self.prepare_fold_part():
            self.commit_fold_part()

    def prepare_fold_part(self) -> bool:
        """The first half of `fold_due_part`, in no transaction: the next
        part's chunk rows, made from the log as it is and kept for
        `commit_fold_part`; True if there are some to commit.

        `SqliteStorage` runs the halves as two jobs of its writer thread,
        the second at its turn (just after the next write's commit), so a
        write commits between the two: in the 10-minute wide soak a part's
        fold took 120-190 ms, reading and folding about as long as
        inserting, and each write behind it waited for all of it."""
        self._prepared = None
        db = self.db
        if not self.fold_due:  # (no count yet is none due)
            return False
        (version,) = db.execute("PRAGMA data_version").fetchone()
        folded = self._next_fold(db)
        if folded is None:
            return False
        self._prepared = (folded, version)
        return True

    def commit_fold_part(self) -> None:
        """The second half of `fold_due_part`: the prepared chunk rows
        committed, if the log's rows are as they were (no fold or rollback
        here since, no commit by another connection); else the same part is
        folded afresh, if the log is still past its mark."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return
        folded, version = prepared
        try:
            with self._transaction() as db:
                self._check_data_generation(db)
                (now,) = db.execute("PRAGMA data_version").fetchone()
                if now == version and folded.epoch == self._fold_epoch:
                    self._apply_fold(db, folded)
                elif self._pending_points(db) > self.fold_mark:
                    self._next_part = folded.part  # (its turn, still)
                    self._fold_part(db)
        except BaseException:
            self._forget()  # (the caches were changed for a commit that did not happen)
            raise

    def _drop_ids(self) -> None:
        """Forget every cached series id (the series table is the truth)."""
        self._ids.clear()
        self._refs.clear()
        self._top = None
        self._fold_epoch += 1  # (data deleted: a prepared fold may name it)

    def _forget(self) -> None:
        """After a rolled-back write: series rows created in it are gone, and
        the pending log is as it was, whatever the cache says."""
        self._drop_ids()
        self._drop_rows()
        self._pending = None

    def _drop_rows(self) -> None:
        self._rows.clear()
        self._rows_bytes = 0
        self._fold_epoch += 1  # (the log's rows changed, or may have)

    def write_small_now(self, batch: WriteBatch) -> bool:
        """Commit a small batch of samples to the pending log on the caller's
        thread, if that can be done at once; False (nothing done) if not.

        At once means: the batch is only samples, of which at most
        `INLINE_NEW_SERIES` series are new to the id caches, and fits the
        pending log without a fold (or it is only a few records, written as
        they are), no thread holds the engine, and no process holds the
        database's write lock.
        The commit is then a WAL append with no fsync and no checkpoint, tens
        of microseconds, so a server may run it on its reactor rather than pay
        two thread switches per HTTP request."""
        db = self._now_db
        if db is None or not self.lock.acquire(blocking=False):
            return False
        try:
            points = _points(batch)
            if points == 0 and self._small_records(batch):
                return self._write_records_now(db, batch)
            pending = self._pending
            if (pending is None or not 0 < points <= self.pending_max_points
                    or pending + points > self.fold_mark
                    or any(b.properties or b.messages or b.meta or b.records
                           for b in batch.by_solution.values())):
                return False
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # another process is writing
                return False
            try:
                self._check_data_generation(db)
                if not self._log_pending(db, batch, points, INLINE_NEW_SERIES):
                    db.execute("ROLLBACK")
                    return False
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._drop_ids()
                self._pending = None
                raise
            return True
        except _REFUSED as e:  # (rolled back above)
            raise BadBatch(f"the storage refused the items: {e}") from e
        finally:
            self.lock.release()

    @staticmethod
    def _small_records(batch: WriteBatch) -> bool:
        """Only records, few of them: a stream's buffer or one acked request."""
        n = 0
        for b in batch.by_solution.values():
            if b.properties or b.messages or b.meta or b.samples.columns or b.samples.keys:
                return False
            n += len(b.records)
        return 0 < n <= INLINE_RECORDS

    def _write_records_now(self, db: sqlite3.Connection, batch: WriteBatch) -> bool:
        """A few records (and their reclaim) committed on the caller's thread:
        a WAL append without fsync or checkpoint, as the pending log's."""
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # another process is writing
            return False
        try:
            # (no data generation check: records use no cached series ids)
            for solution, b in batch.by_solution.items():
                self._write_records(db, solution, b.records)
                if b.reclaim_ns is not None:
                    db.execute("DELETE FROM records WHERE solution = ? AND time_ns <= ?",
                               (solution, b.reclaim_ns))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return True

    def _log_pending(self, db: sqlite3.Connection, batch: WriteBatch, points: int,
                     create: int | None = None) -> bool:
        """Log ``batch`` as one row; False (nothing done) if it would create
        more than ``create`` series (`_encode_pending`)."""
        row = self._encode_pending(db, batch, create)
        if row is None:
            return False
        rid = db.execute("INSERT INTO pending (points, batch) VALUES (?, ?)",
                         (points, row)).lastrowid
        if db is self._db and rid is not None \
                and self._rows_bytes + len(row) <= ROW_CACHE_BYTES:
            if not self._rows:
                (self._data_version,) = db.execute("PRAGMA data_version").fetchone()
            self._rows[rid] = row
            self._rows_bytes += len(row)
        self._last_log = time.monotonic()
        self._pending = self._pending_points(db) + points
        return True

    # -- the pending log ---------------------------------------------------------

    def _pending_points(self, db: sqlite3.Connection) -> int:
        """Points of the log still to fold (a partly folded row counts the
        share of its parts still in it: points spread evenly over parts)."""
        if self._pending is None:
            (total,) = db.execute("SELECT COALESCE(SUM(points), 0) FROM pending").fetchone()
            for points, mask in db.execute("SELECT p.points, f.folded FROM pending p"
                                           " JOIN pending_folded f ON f.id = p.id"):
                total -= points * mask.bit_count() // pending_log.PARTS
            self._pending = total
        return self._pending

    def _fold(self, db: sqlite3.Connection) -> None:
        """Write the pending batches as chunks, oldest first, inside ``db``'s
        transaction.  Chunks written later get higher ids, so last-write-wins
        holds: nothing is ever written as chunks while older batches are pending."""
        if not self._pending_points(db):
            return
        by_solution: dict[str, dict[SeriesKey, Column]] = {}
        blobs: list[bytes] = []
        masks: list[int] = []
        for row, mask in db.execute(_PENDING_ROWS).fetchall():
            if isinstance(row, str):  # a row written before the binary form
                for solution, key, t, v, x in pending_log.decode_json(row):
                    cols = by_solution.setdefault(solution, {})
                    col = cols.get(key)
                    if col is None:
                        col = cols[key] = Column()
                    part = Column()
                    part.times, part.values, part.texts = t, v, x
                    col.extend(part)
            else:
                blobs.append(row)
                masks.append(mask)
        for solution, cols in by_solution.items():  # older than any binary row
            self._write_samples(db, solution, cols)
        for run, run_masks in pending_log.runs_by_form(blobs, masks):
            for part in range(pending_log.PARTS):
                # (a part's chunk rows at a time: a million series' at once held 400 MB)
                self._insert_chunks(db, pending_log.fold(run, run_masks, part))
        db.execute("DELETE FROM pending")
        db.execute("DELETE FROM pending_folded")
        self._drop_rows()
        self._pending = 0

    def _fold_part(self, db: sqlite3.Connection) -> None:
        """Fold the next part of the pending log (`pending_log.PARTS`, in turn)
        inside ``db``'s transaction: every pending point of the part's series,
        oldest first, as chunks; the rows remember the part is out, and a row
        with every part out goes.  (A log with rows of a form before folds
        whole: their series are parted otherwise.)"""
        folded = self._next_fold(db)
        if folded is not None:
            self._apply_fold(db, folded)

    def _next_fold(self, db: sqlite3.Connection) -> _Folded | None:
        """The next part's fold, made from the log as ``db`` sees it and
        changing nothing in it (the part's turn passes); None if no row has
        points of the part."""
        part = self._next_part
        self._next_part = (part + 1) % pending_log.PARTS
        ids, masks, pieces = [], [], []
        cached = self._rows
        whole = _Folded(part, [], [], [], self._fold_epoch, whole=True)
        for rid, text, mask in _unfolded_rows(db, 1 << part):
            if text:  # a row of the first form
                return whole
            # (a row this engine logged is of the form now, and whole: the
            # fold slices its part; from the file, only the part is read)
            piece = cached.get(rid) or _pending_part(db, rid, part)
            if piece[:4] != pending_log.MAGIC:  # a row of a form before
                return whole
            ids.append(rid)
            masks.append(mask)
            pieces.append(piece)
        if not ids:
            return None
        rows = pending_log.fold(pieces, masks, part)
        return _Folded(part, ids, masks, rows, self._fold_epoch)

    def _apply_fold(self, db: sqlite3.Connection, folded: _Folded) -> None:
        """Write a part's fold (`_next_fold`) in ``db``'s transaction, the log
        being as it was when the fold was made."""
        if folded.whole:
            self._fold(db)
            return
        bit = 1 << folded.part
        rows, cached = folded.rows, self._rows
        left = self._pending_points(db)  # (counted before this fold changes the rows)
        self._insert_chunks(db, rows)
        now = [(rid, mask | bit) for rid, mask in zip(folded.ids, folded.masks, strict=True)]
        done = [rid for rid, mask in now if mask == pending_log.ALL_PARTS]
        sqlite_bulk.delete_ids(db, "pending", done)
        sqlite_bulk.delete_ids(db, "pending_folded", done)
        sqlite_bulk.insert_rows(db, "pending_folded", ("id", "folded"),
                                [(rid, mask) for rid, mask in now
                                 if mask != pending_log.ALL_PARTS], replace=True)
        for rid in done:
            row = cached.pop(rid, None)
            if row is not None:
                self._rows_bytes -= len(row)
        self._fold_epoch += 1
        # What is left to fold: a part's fold takes a sixteenth of the log, so
        # the next write folds again only once the log grew back past the bound
        # (folding at every write made chunks of a point or two per series).
        self._pending = max(0, left - sum(r[3] for r in rows))

    def fold_pending(self) -> None:
        """Fold the pending log into chunks now (reads try this first)."""
        if self._pending_points(self.db):
            try:
                with self._transaction() as db:
                    self._check_data_generation(db)
                    self._fold(db)
            except BaseException:
                self._forget()  # (_fold counted the log as empty before the commit)
                raise

    def _fold_for_read(self) -> None:
        """Fold the pending log before a read, if that can be done at once.

        A read must need neither free space nor the write lock, so when the
        fold fails (a full disk, another process writing) the read goes on
        without it (`_snapshot` merges the log in), and reads leave the log
        alone for `FOLD_RETRY` seconds.  Logged once when folds start failing
        and once when one works again."""
        if self.reads_only:
            return  # (the writer folds: `prepare_read`; `_snapshot` merges the rest)
        db = self.db
        if not self._pending_points(db) or time.monotonic() < self._fold_again:
            return
        db.execute("PRAGMA busy_timeout = 0")  # a read does not wait for a writer
        try:
            self.fold_pending()
        except sqlite3.OperationalError as e:
            self._fold_again = time.monotonic() + FOLD_RETRY
            if not self._fold_failing:
                self._fold_failing = True
                log.warn("{path}: reads cannot fold the pending log ({reason}); they read "
                         "it as it is meanwhile", path=self.path, reason=str(e))
            return
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if self._fold_failing:
            self._fold_failing = False
            log.info("{path}: reads fold the pending log again", path=self.path)

    @contextmanager
    def _snapshot(self, db: sqlite3.Connection | None = None,
                  ) -> Iterator[tuple[sqlite3.Connection, dict[int, list[chunks.Samples]]]]:
        """A read transaction on ``db``, and the pending log's points in it (what
        `_unfolded` gives), so a read sees every commit whether or not the log
        could be folded."""
        db = db or self.db
        own = not db.in_transaction
        if own:
            db.execute("BEGIN")
        try:
            yield db, self._unfolded(db)
        finally:
            if own and db.in_transaction:
                db.execute("COMMIT")  # (a read transaction: nothing to write)

    def _unfolded(self, db: sqlite3.Connection) -> dict[int, list[chunks.Samples]]:
        """The points of the pending log per series id, oldest first, as a fold
        would write them; reads add them after the series' chunks (the log is
        newer than every chunk, so last-write-wins holds).  Empty after a fold."""
        blobs: list[bytes] = []
        masks: list[int] = []
        out: dict[int, list[chunks.Samples]] = {}
        for row, mask in db.execute(_PENDING_ROWS):
            if isinstance(row, str):  # a row written before the binary form: older
                for solution, key, t, v, x in pending_log.decode_json(row):
                    sid = sqlite_series.find_id(db, solution, *sqlite_series.canonicals([key]))
                    if sid is not None:  # (else its fold creates the series)
                        out.setdefault(sid, []).append((t, v, x))
            else:
                blobs.append(row)
                masks.append(mask)
        if blobs:
            for sid, _, _, _, t, v, x in pending_log.fold(blobs, masks):
                out.setdefault(sid, []).append(chunks.decode_chunk(t, v, x))
        return out

    def _check_data_generation(self, db: sqlite3.Connection) -> None:
        """Drop the series-id cache if any process deleted data since we last looked."""
        gen = self._generation(db, "data_generation")
        if gen != self._data_generation:
            self._drop_ids()
            self._small = self._new_small(COMPACT_MIN_CHUNKS)  # (some counted may be gone)
            self._data_generation = gen

    def _write_samples(self, db: sqlite3.Connection, solution: str, columns: dict) -> None:
        live = {key: col for key, col in columns.items() if col.times}
        ids = self._series_ids(db, solution, live)
        self._write_chunks(db, {ids[key]: col for key, col in live.items()})

    def _series_ids(self, db: sqlite3.Connection, solution: str,
                    keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
        """The solution's series ids (known ones cached), ``keys`` created if new."""
        ids = self._ids.setdefault(solution, {})
        if len(ids) > SERIES_ID_CACHE:
            ids.clear()  # (the series table is the truth: a miss costs a lookup)
            self._top = None
        missing = [key for key in dict.fromkeys(keys) if key not in ids]
        if missing:
            ids.update(self._many_series_ids(db, solution, missing))
        return ids

    def _many_series_ids(self, db: sqlite3.Connection, solution: str,
                         keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        """The ids of ``keys`` (not cached), each series created if new: looked
        up in bulk (`sqlite_series.find_ids`), the new ones created by one insert
        with ids of our own (the write lock is ours: nobody else adds rows meanwhile),
        indexed and registered in bulk.  A fleet's first batch is mostly new
        series; statements per series cost several times what its point did.

        While the cache holds every series (`_top`: from an empty table, every
        series since made here, and the table's largest id is still the one
        we gave last, so no other process added one), a key not in it is new:
        no lookup at all."""
        canons = sqlite_series.canonicals(keys)
        wanted = list(dict.fromkeys(canons))  # (tags in another order: one series)
        (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM series").fetchone()
        self._id_span = top
        if self._top is None and not top and not any(self._ids.values()):
            self._top = 0  # (an empty table, nothing cached: every series is ours)
        if top == self._top:
            cached = self._ids.get(solution, {})
            found = {canon: cached[canon] for canon in wanted if canon in cached}
        else:
            self._top = None
            found = sqlite_series.find_ids(db, solution, wanted)
        made = [canon for canon in wanted if canon not in found] if found else wanted
        if made:
            first = top + 1
            escaped = sqlite_series.insert(db, solution, first, made)
            found.update(zip(made, range(first, first + len(made)), strict=True))
            if self._top == top:
                self._top = top + len(made)
            self._id_span = top + len(made)  # (a rollback leaves it high: a bound, not a count)
            if escaped:  # (an escaped name: json_each may differ)
                sqlite_tags.index_many(db, solution, list(enumerate(made, first)))
            else:
                sqlite_tags.index_ids(db, first, top + len(made))
            bare = {(c[0], c[1], ()) for c in made}
            for kind, name in sorted({m for key in bare
                                      for m in rules.implicit_meta_of_series(key)}):
                self._register(db, solution, kind, name)  # (a few names, however many series)
        out = dict(zip(keys, map(found.__getitem__, canons), strict=True))
        out.update(found)
        return out

    def _write_chunks(self, db: sqlite3.Connection, by_id: dict[int, Column]) -> None:
        self._insert_chunks(db, [(sid, *chunks.encode_chunk(col.times, col.values, col.texts))
                                 for sid, col in by_id.items() if col.times])

    def _insert_chunks(self, db: sqlite3.Connection, rows: list[tuple]) -> None:
        """Rows of (series id, *`chunks.EncodedChunk`)."""
        small = self._small
        if small is not None:
            add = small.add
            for row in rows:
                if row[3] < COMPACT_SMALL:
                    add(row[0])
        sqlite_bulk.insert_chunks(db, rows)

    def _encode_pending(self, db: sqlite3.Connection, batch: WriteBatch,
                        create: int | None = None) -> bytes | None:
        """A batch's samples as one pending-log row (`encode_pending`), its series
        created now so that the row can name them by id; None (nothing done)
        if the batch, all its solutions counted, has more than ``create``
        series that are not in the id caches (None: no limit)."""
        points = pending_log.Points()
        # (counted before anything is created: a rolled-back creation would
        # leave its ids in the caches)
        found_by = self._refs_found(batch) if create is not None else {}
        if create is not None and self._unknown(batch, found_by) > create:
            return None
        for solution, b in batch.by_solution.items():
            samples = b.samples
            if samples.columns:
                live = {key: col for key, col in samples.columns.items() if col.times}
                ids = self._series_ids(db, solution, live)
                for key, col in live.items():
                    points.add([ids[key]] * len(col.times), col.times, col.values, col.texts)
            if samples.keys:
                # one point per series: the ids by key object, in C; the keys
                # hashed only when one is new to the refs
                refs = self._refs.get(solution)
                if refs is None:
                    refs = self._refs[solution] = SeriesRefs(SERIES_ID_CACHE)
                found = found_by.get(solution) or refs.lookup(samples.keys)
                if None in found:  # (only those hashed: most of a batch is known)
                    new = [key for key, sid in zip(samples.keys, found, strict=True)
                           if sid is None]
                    ids = self._series_ids(db, solution, new)
                    sids = list(map(ids.__getitem__, new))
                    refs.learn(new, sids)
                    given = iter(sids)
                    found = [next(given) if sid is None else sid for sid in found]
                points.add(found, samples.times, samples.values)
        return pending_log.encode(points.sids, points.times, points.values, points.texts)

    def _refs_found(self, batch: WriteBatch) -> dict[str, list[int | None]]:
        """Each solution's row ids by key object (`SeriesRefs.lookup`), for
        the solutions with rows and refs."""
        found: dict[str, list[int | None]] = {}
        for solution, b in batch.by_solution.items():
            refs = self._refs.get(solution)
            if b.samples.keys and refs is not None:
                found[solution] = refs.lookup(b.samples.keys)
        return found

    def _unknown(self, batch: WriteBatch, found_by: dict[str, list[int | None]]) -> int:
        """Series of ``batch`` not in the id caches (a row's key object new to
        the refs counts, though its series may exist)."""
        n = 0
        for solution, b in batch.by_solution.items():
            samples = b.samples
            if samples.columns:
                known = self._ids.get(solution, {})
                n += sum(key not in known for key, col in samples.columns.items() if col.times)
            if samples.keys:
                found = found_by.get(solution)
                n += found.count(None) if found is not None else len(samples.keys)
        return n

    def _register(self, db: sqlite3.Connection, solution: str, kind: str, name: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO meta (solution, kind, name, fields) VALUES (?, ?, ?, '{}')",
            (solution, kind, name),
        )

    def _write_property(self, db: sqlite3.Connection, solution: str, p: Property) -> None:
        entity_tags = rules.entity_tags_meta(p)
        if entity_tags is not None:
            self._write_meta(db, solution, entity_tags.kind, entity_tags.name,
                             entity_tags.fields)
            return
        pkey = _dumps(p.key)
        row = db.execute(
            "SELECT tags FROM properties WHERE solution=? AND entity=? AND type=? AND pkey=?",
            (solution, p.entity, p.type, pkey),
        ).fetchone()
        tags = rules.merge_tags(json.loads(row[0]) if row else {}, p.tags)
        db.execute(
            "INSERT OR REPLACE INTO properties (solution, entity, type, pkey, tags, time_ns)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (solution, p.entity, p.type, pkey, _dumps(tags), p.time_ns),
        )

    def _write_messages(
        self, db: sqlite3.Connection, solution: str, messages: list[Message]
    ) -> None:
        db.executemany(
            "INSERT INTO messages (solution, entity, time_ns, type, source, severity, tags,"
            " message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    solution,
                    m.entity,
                    m.time_ns,
                    m.type,
                    m.source,
                    m.severity,
                    _dumps(m.tags or {}),
                    m.message or "",
                )
                for m in messages
            ],
        )

    def _write_meta(
        self, db: sqlite3.Connection, solution: str, kind: str, name: str, fields: dict
    ) -> None:
        rules.check_meta_kind(kind)
        row = db.execute(
            "SELECT fields FROM meta WHERE solution=? AND kind=? AND name=?",
            (solution, kind, name),
        ).fetchone()
        merged = rules.merge_meta_fields(json.loads(row[0]) if row else {}, fields)
        db.execute(
            "INSERT OR REPLACE INTO meta (solution, kind, name, fields) VALUES (?, ?, ?, ?)",
            (solution, kind, name, _dumps(merged)),
        )

    def _write_records(self, db: sqlite3.Connection, solution: str, records: list[Record]) -> None:
        db.executemany(
            "INSERT INTO records (solution, time_ns, data, data_type, block)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (
                    solution,
                    r.time_ns,
                    r.data.encode("utf-8") if isinstance(r.data, str) else bytes(r.data),
                    r.data_type,
                    r.block,
                )
                for r in records
            ],
        )

    # -- reading -------------------------------------------------------------

    def read_series(
        self,
        solution: str,
        metric: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        max_points: int | None = None,
    ) -> list[tuple[SeriesKey, list[int], list[Value], list[str | None] | None]]:
        """Merged samples per series, sorted by key then time; see IStorage and
        IBoundedReads (``max_points`` is checked series by series)."""
        self._fold_for_read()
        where, args = _where(("s.solution = ?", solution), ("s.metric = ?", metric),
                             ("c.max_time >= ?", start_ns), ("c.min_time <= ?", end_ns))
        budget = rules.ReadBudget(max_points)
        out = budget.out

        def add(m: str, e: str | None, tags: str, parts: list[chunks.Samples]) -> None:
            budget.take(_key_from_row(m, e, tags),
                        *chunks.time_slice(chunks.merge(parts), start_ns, end_ns))

        with self._snapshot() as (db, unfolded):
            rows = db.execute(
                "SELECT c.series_id, s.metric, s.entity, s.tags, c.times, c.vals, c.texts"
                f" FROM chunks c JOIN series s ON s.id = c.series_id WHERE {where}"
                " ORDER BY c.series_id, c.id",
                args,
            )
            for sid, group in itertools.groupby(rows, key=lambda r: r[0]):
                group = list(group)
                _, m, e, tags, *_ = group[0]
                parts = [chunks.decode_chunk(r[4], r[5], r[6]) for r in group]
                add(m, e, tags, parts + unfolded.pop(sid, []))
            if unfolded:  # series with points in the log only (none in a chunk in range)
                where, args = _where(("solution = ?", solution), ("metric = ?", metric))
                for sid, m, e, tags in db.execute(
                        f"SELECT id, metric, entity, tags FROM series WHERE {where}", args):
                    if sid in unfolded:
                        add(m, e, tags, unfolded[sid])
        out.sort(key=lambda item: rules.series_sort_key(item[0]))
        return out

    def list_series(self, solution: str, metric: str | None = None) -> list[SeriesKey]:
        """Every series of the solution (of one metric), sorted; see IStorage.
        (The log's series have their rows already: no fold is needed.)"""
        self._fold_for_read()
        where, args = _where(("solution = ?", solution), ("metric = ?", metric))
        rows = self.db.execute(f"SELECT metric, entity, tags FROM series WHERE {where}", args)
        keys = [_key_from_row(*row) for row in rows]
        keys.sort(key=rules.series_sort_key)
        return keys

    def list_series_where(self, solution: str, metric: str,
                          tags: dict[str, frozenset[str]]) -> list[SeriesKey]:
        """See ITagIndex (`sqlite_tags.series_where`)."""
        self._fold_for_read()
        return sqlite_tags.series_where(self.db, solution, metric, tags)

    def suggest_names(self, solution: str, kind: str, prefix: str, limit: int) -> list[str]:
        """See ITagIndex (`sqlite_tags.suggest`); the log's series have their rows."""
        return sqlite_tags.suggest(self.db, solution, kind, prefix, limit)

    def read_series_of(self, solution: str, keys: Iterable[SeriesKey],
                       start_ns: int | None = None, end_ns: int | None = None,
                       max_points: int | None = None) -> list:
        """See ISeriesByKey (`sqlite_tags.read_keys`)."""
        self._fold_for_read()
        canons = sorted(set(sqlite_series.canonicals(keys)), key=rules.series_sort_key)
        with self._snapshot() as (db, unfolded):
            ids = sqlite_series.find_ids(db, solution, canons)
            found = [(canon, ids[canon]) for canon in canons if canon in ids]
            return sqlite_tags.read_keys(db, unfolded, found, start_ns, end_ns, max_points)

    def count_points(self, solution: str | None = None) -> int:
        """Distinct (series, time) pairs of one solution, or of all when None."""
        self._fold_for_read()
        sql = "SELECT c.series_id, c.times FROM chunks c"
        args: tuple = ()
        if solution is not None:
            sql += " JOIN series s ON s.id = c.series_id WHERE s.solution = ?"
            args = (solution,)
        total = 0
        with self._snapshot() as (db, unfolded):
            rows = db.execute(sql + " ORDER BY c.series_id", args)
            for sid, group in itertools.groupby(rows, key=lambda r: r[0]):
                times = [chunks.decode_times(r[1]) for r in group]
                total += chunks.count_distinct(times + [p[0] for p in unfolded.pop(sid, [])])
            if unfolded and solution is not None:
                mine = {r[0] for r in db.execute("SELECT id FROM series WHERE solution = ?",
                                                 (solution,))}
                unfolded = {sid: p for sid, p in unfolded.items() if sid in mine}
            for parts in unfolded.values():  # series with points in the log only
                total += chunks.count_distinct(p[0] for p in parts)
        return total

    # Properties, messages and meta never go through the pending log (it holds
    # samples only, and a series' implicit meta is registered when its row is
    # logged), so these reads need no fold.  Each is one indexed search on the
    # solution's prefix of a primary key or of ``messages_time``.

    def read_properties(self, solution: str, entity: str | None = None,
                        type: str | None = None) -> list[Property]:
        """Properties by entity, type, key JSON (the primary key's order); see IStorage."""
        where, args = _where(("solution = ?", solution), ("entity = ?", entity),
                             ("type = ?", type))
        rows = self.db.execute(
            "SELECT entity, type, pkey, tags, time_ns FROM properties"
            f" WHERE {where} ORDER BY entity, type, pkey",
            args,
        )
        return [Property(e, t, json.loads(k), json.loads(tags), tn) for e, t, k, tags, tn in rows]

    def read_messages(self, solution: str, entity: str | None = None,
                      start_ns: int | None = None, end_ns: int | None = None,
                      type: str | None = None, limit: int | None = None) -> list[Message]:
        """Messages in (time, id) order, end exclusive, the first ``limit``; see IStorage."""
        if limit is not None and limit < 0:
            raise ValueError(f"negative limit {limit}")  # SQLite would read it as none
        where, args = _where(("solution = ?", solution), ("entity = ?", entity),
                             ("type = ?", type), ("time_ns >= ?", start_ns),
                             ("time_ns < ?", end_ns))
        sql = ("SELECT entity, time_ns, type, source, severity, tags, message FROM messages"
               f" WHERE {where} ORDER BY time_ns, id")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            Message(e, t, text, mtype, source, severity, json.loads(tags))
            for e, t, mtype, source, severity, tags, text in self.db.execute(sql, args)
        ]

    def read_records(self, solution: str, start_ns: int | None = None,
                     end_ns: int | None = None, limit: int | None = None,
                     descending: bool = False, include_deleted: bool = False) -> list[Record]:
        """Records in time order (write order on equal times); see IStorage."""
        if limit is not None and limit < 0:
            raise ValueError(f"negative limit {limit}")
        where, args = _where(("solution = ?", solution), ("time_ns >= ?", start_ns),
                             ("time_ns <= ?", end_ns))
        if not include_deleted:
            where += " AND deleted = 0"
        order = "DESC" if descending else "ASC"
        sql = ("SELECT time_ns, data, data_type, block, deleted FROM records"
               f" WHERE {where} ORDER BY time_ns {order}, id {order}")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [Record(t, bytes(data), dtype, block, bool(deleted))
                for t, data, dtype, block, deleted in self.db.execute(sql, args)]

    def delete_record(self, solution: str, time_ns: int) -> bool:
        """Soft-delete the visible records at ``time_ns``; see IStorage."""
        with self._transaction() as db:
            cur = db.execute("UPDATE records SET deleted = 1"
                             " WHERE solution = ? AND time_ns = ? AND deleted = 0",
                             (solution, time_ns))
            return cur.rowcount > 0

    def read_meta(self, solution: str, kind: str, name: str | None = None) -> list[Meta]:
        """One kind's records by name, fields as stored; see IStorage."""
        rules.check_meta_kind(kind)
        where, args = _where(("solution = ?", solution), ("kind = ?", kind),
                             ("name = ?", name))
        rows = self.db.execute(f"SELECT name, fields FROM meta WHERE {where} ORDER BY name",
                               args)
        return [Meta(kind, n, json.loads(fields)) for n, fields in rows]

    def data_solutions(self, db: sqlite3.Connection | None = None) -> list[str]:
        """Every solution that has data in this file, sorted."""
        db = db or self.db
        union = " UNION ".join(f"SELECT DISTINCT solution FROM {t}" for t in _DATA_TABLES)
        return sorted(r[0] for r in db.execute(union))

    def solution_has_data(self, solution: str) -> bool:
        self._fold_for_read()  # (the log's series have their rows already)
        return any(
            self.db.execute(f"SELECT 1 FROM {t} WHERE solution = ? LIMIT 1", (solution,)).fetchone()
            for t in _DATA_TABLES
        )

    def delete_solution_data(self, solution: str) -> None:
        """Remove every item of the solution; other processes drop their series ids."""
        self.fold_pending()
        with self._transaction() as db:
            db.execute(
                "DELETE FROM chunks WHERE series_id IN (SELECT id FROM series WHERE solution=?)",
                (solution,),
            )
            for table in _DATA_TABLES:
                db.execute(f"DELETE FROM {table} WHERE solution = ?", (solution,))
            sqlite_tags.delete_solution(db, solution)
            self._bump(db, "data_generation")
        self._ids.pop(solution, None)
        self._refs.pop(solution, None)
        self._top = None

    def compact(
        self,
        solution: str | None = None,
        max_series: int | None = None,
        target: int = COMPACT_TARGET,
        min_chunks: int = COMPACT_MIN_CHUNKS,
        small: int = COMPACT_SMALL,
    ) -> int:
        """Merge runs of small chunks (under ``small`` points) into time-ordered
        chunks of up to ``target`` points; returns how many series were compacted.

        Reads decode every chunk of a series and a series gains a chunk per flush,
        so small chunks are merged in the background.  Only runs of chunks that are
        consecutive in write order are merged, and the merged chunks take the ids
        of the chunks they replace: a run's merged chunks are disjoint in time and
        sit exactly where the run sat, so last-write-wins across chunks still
        holds.  Chunks never grow past ``target``, so a read of a time range
        decodes a bounded amount beyond it.  ``max_series`` bounds one call, so the
        writer thread returns to writes between calls.
        """
        pending = self._pending_points(self.db)
        if pending == self._pending_at_compact and (
                time.monotonic() - self._last_log >= COMPACT_IDLE):
            # No write to the log for a while: idle, the log may go now.  Under
            # load writes fold it (a part at a time, `fold_mark`):
            # folding it between compaction steps (20 ms apart, often with no
            # write between them) made a chunk of a point or two per series of a
            # wide load, and held the writer for a whole fold every few seconds.
            self.fold_pending()
        self._pending_at_compact = self._pending_points(self.db)
        # the background's call (every solution, the default sizes): its series
        # come from the counts, which first count the series made before them,
        # a step at a time; an explicit call scans the table
        if solution is None and target == COMPACT_TARGET and small == COMPACT_SMALL:
            if self._small is None or self._small.ready_at != min_chunks:
                self._small = self._new_small(min_chunks)
            if not self._small.scanned:
                counted = self._count_small(max_series)
                if max_series is not None:
                    return counted
            sids = self._small.take(max_series)
        else:
            small = min(small, target)
            sids = self._compaction_candidates(solution, small, min_chunks, max_series)
        done = 0
        if not sids:
            return 0
        with self._transaction() as db:  # one commit per call, not per series
            for sid in sids:
                rows = db.execute(
                    "SELECT id, count, times, vals, texts FROM chunks WHERE series_id = ?"
                    " ORDER BY id",
                    (sid,),
                ).fetchall()
                for run in _small_runs(rows, small):
                    merged = chunks.merge(chunks.decode_chunk(r[2], r[3], r[4]) for r in run)
                    ids = [r[0] for r in run]
                    db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])
                    times, values, texts = merged
                    pieces = []
                    for lo in range(0, len(times), target):
                        hi = lo + target
                        pieces.append(chunks.encode_chunk(
                            times[lo:hi], values[lo:hi], texts[lo:hi] if texts else None))
                    db.executemany(
                        "INSERT INTO chunks (id, series_id, min_time, max_time, count, times,"
                        " vals, texts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(i, sid, *piece) for i, piece in zip(ids, pieces, strict=False)],
                    )
                done += 1
        if self._small is not None:
            for sid in sids:
                self._small.set(sid, 0)
        return done

    def _new_small(self, ready_at: int) -> _SmallChunks:
        """Counts of small chunks that begin now: the series made so far are
        still to count (`_count_small`)."""
        (top,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM series").fetchone()
        return _SmallChunks(ready_at, scan_end=top)

    def _count_small(self, most: int | None) -> int:
        """Count the small chunks of the next ``most`` series ids still to
        count (None: all of them) from the table; returns how many ids that
        was.  Their counts so far (chunks written since the counts began) are
        in the table's too, so the table's replace them."""
        small = self._small
        assert small is not None
        lo = small.scan_at
        hi = small.scan_end + 1 if most is None else min(small.scan_end + 1, lo + most)
        found = dict(self.db.execute(
            "SELECT series_id, count(*) FROM chunks WHERE series_id >= ? AND series_id < ?"
            " AND count < ? GROUP BY series_id", (lo, hi, COMPACT_SMALL)))
        counts = small.counts
        for sid in range(lo, min(hi, len(counts))):
            if counts[sid] and sid not in found:  # (compacted, expired since)
                small.set(sid, 0)
        for sid, n in found.items():
            small.set(sid, n)
        small.scan_at = hi
        return hi - lo

    def _compaction_candidates(
        self, solution: str | None, small: int, min_chunks: int, max_series: int | None,
    ) -> list[int]:
        """Series worth compacting, found by a scan of the chunks (an explicit
        call; the background's come from `_SmallChunks`)."""
        sql = "SELECT c.series_id FROM chunks c"
        args: list[Any] = []
        if solution is not None:
            sql += " JOIN series s ON s.id = c.series_id WHERE s.solution = ? AND"
            args.append(solution)
        else:
            sql += " WHERE"
        sql += " c.count < ? GROUP BY c.series_id HAVING count(*) >= ?"
        args += [small, min_chunks]
        if max_series is not None:
            sql += " LIMIT ?"
            args.append(max_series)
        return [sid for (sid,) in self.db.execute(sql, args).fetchall()]

    # -- retention (`tsnet.retention`, `IExpiringStorage`) ---------------------

    def metric_retention(self, solution: str) -> dict[str, Any]:
        """metric -> ``retention_days`` as its meta stores it, where it has one."""
        rows = self.db.execute(
            "SELECT name, fields FROM meta WHERE solution = ? AND kind = 'metric'"
            " AND fields LIKE '%\"retention_days\"%'", (solution,))
        out = {}
        for name, fields in rows:
            days = json.loads(fields).get("retention_days")
            if days is not None:
                out[name] = days
        return out

    def expire_series(self, solution: str, cutoffs: Any, after: int | None,
                      max_series: int) -> tuple[int, int | None]:
        """Delete the chunks of up to ``max_series`` series (by id, after
        ``after``) whose newest point is before the series' cutoff, in one
        transaction.  Returns (chunks deleted, the last series id looked at, or
        None after the last series).  A chunk with a point at or after the
        cutoff is kept whole, and so are the pending log's points (they become
        chunks first), so every point kept reads back as before."""
        rows = self.db.execute(
            "SELECT id, metric FROM series WHERE solution = ? AND id > ? ORDER BY id LIMIT ?",
            (solution, after or 0, max_series)).fetchall()
        due = [(sid, cut) for sid, metric in rows
               if (cut := cutoffs.series(metric)) is not None]
        removed = 0
        if due:
            small = self._small
            with self._transaction() as db:
                for sid, cut in due:
                    n = db.execute("DELETE FROM chunks WHERE series_id = ? AND max_time < ?",
                                   (sid, cut)).rowcount
                    if n and small is not None and small.count(sid):  # compaction's count
                        small.set(sid, db.execute(
                            "SELECT count(*) FROM chunks WHERE series_id = ? AND count < ?",
                            (sid, COMPACT_SMALL)).fetchone()[0])
                    removed += n
        return removed, (rows[-1][0] if len(rows) >= max_series else None)

    def expire_messages(self, solution: str, cutoff_ns: int, limit: int) -> int:
        """Delete up to ``limit`` of the solution's messages before ``cutoff_ns``."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages"
                " WHERE solution = ? AND time_ns < ? LIMIT ?)",
                (solution, cutoff_ns, limit)).rowcount

    # -- export --------------------------------------------------------------

    @contextmanager
    def _export_snapshot(self, solution: str | None
                         ) -> Iterator[tuple[sqlite3.Connection, dict, list[str]]]:
        """A read transaction on a connection of its own for a whole export, the
        pending log as it sees it, and the solutions to export.  The export is
        consistent while the main connection keeps committing meanwhile."""
        self._fold_for_read()
        own = self.path != ":memory:"
        db = self._connect() if own else self.db
        try:
            if own:
                db.execute("BEGIN")
            # the log as this snapshot sees it: what another process logged since
            # the fold, or all of it when it could not be folded (a full disk)
            unfolded = self._unfolded(db)
            yield db, unfolded, [solution] if solution is not None else self.data_solutions(db)
        finally:
            if own:
                db.close()

    def export_pages(self, solution: str | None = None, page_size: int = 5000) -> Iterator[list]:
        """Export lines (DESIGN §7) in pages of dicts, from one consistent
        snapshot.  Call ``next`` on it from the engine's thread only."""
        with self._export_snapshot(solution) as (db, unfolded, solutions):
            page: list[dict] = []
            for sol in solutions:
                for line in self._export_solution(db, sol, unfolded):
                    page.append(line)
                    if len(page) >= page_size:
                        yield page
                        page = []
            if page:
                yield page

    def export_text_pages(self, solution: str | None = None) -> Iterator[str]:
        """The export as text (`tsnet.export_text`) in pages of whole lines,
        from one consistent snapshot: the same lines as `export_pages`,
        rendered a slice of a series at a time.  Call ``next`` on it from the
        engine's thread only."""
        pages = export_text.Pages()
        with self._export_snapshot(solution) as (db, unfolded, solutions):
            for sol in solutions:
                for key, sid in self._export_series(db, sol):
                    prefix = export_text.series_prefix(sol, key)
                    for samples in self._series_groups(db, sid, unfolded):
                        yield from pages.series(prefix, *samples)
                for line in self._export_items(db, sol):
                    page = pages.line(line)
                    if page is not None:
                        yield page
            rest = pages.take()
            if rest:
                yield rest

    def iter_export(self, solution: str | None = None) -> Iterator[dict]:
        """Every export line, one by one (for the ``tsnet export`` command)."""
        for page in self.export_pages(solution):
            yield from page

    def _export_solution(self, db: sqlite3.Connection, solution: str,
                         unfolded: dict[int, list[chunks.Samples]]) -> Iterator[dict]:
        for key, sid in self._export_series(db, solution):
            for times, values, texts in self._series_groups(db, sid, unfolded):
                if not isinstance(times, list):  # (numpy arrays: see merge_encoded)
                    times, values = times.tolist(), values.tolist()
                yield from export.series_lines(solution, key, times, values, texts)
        yield from self._export_items(db, solution)

    def _export_series(self, db: sqlite3.Connection, solution: str
                       ) -> Iterator[tuple[SeriesKey, int]]:
        """The solution's (series key, id) in export order (`rules.series_sort_key`),
        sorted by SQLite (which spills to a temporary file) and read as the
        export goes: a list of every key cost 540 bytes a series, 540 MB at a
        million series.  (In memory, where the export shares the connection
        that writes, the rows are read at once.)"""
        rows: Iterable[tuple] = db.execute(
            "SELECT id, metric, entity, tags FROM series WHERE solution = ? ORDER BY"
            f" metric, entity IS NOT NULL, COALESCE(entity, ''), {_TAGS_ORDER}(tags)",
            (solution,))
        if db is self._db:
            rows = rows.fetchall()
        for sid, m, e, t in rows:
            yield _key_from_row(m, e, t), sid

    @staticmethod
    def _series_groups(db: sqlite3.Connection, sid: int,
                       unfolded: dict[int, list[chunks.Samples]]) -> Iterator[tuple]:
        """A series' merged samples in time order, a bounded group of chunks at
        a time, so an export holds about `EXPORT_GROUP` points of a series
        however long it is.  Chunks are grouped by time: a group is whole runs
        of chunks that overlap one another (last-write-wins is settled inside
        it, chunks in write order), so groups are disjoint in time.  The
        pending log's points of the series (newer than every chunk) join the
        group of their time, after its chunks."""
        metas = db.execute("SELECT min_time, max_time, count FROM chunks WHERE series_id = ?"
                           " ORDER BY min_time", (sid,)).fetchall()
        starts: list[int] = []  # each group's first min_time (the first group: all before)
        top: int | None = None
        count = 0
        for lo, hi, n in metas:
            if top is not None and lo > top and count >= EXPORT_GROUP:
                starts.append(lo)
                count = 0
            top = hi if top is None else max(top, hi)
            count += n
        logged = unfolded.get(sid, [])
        by_group: list[list[chunks.Samples]] = [[] for _ in range(len(starts) + 1)]
        for t, v, x in logged:
            if not starts:
                by_group[0].append((t, v, x))
                continue
            parts: dict[int, chunks.Samples] = {}
            for i, ti in enumerate(t):
                part = parts.get(g := bisect.bisect_right(starts, ti))
                if part is None:
                    part = parts[g] = ([], [], [] if x is not None else None)
                part[0].append(ti)
                part[1].append(v[i])
                if x is not None:
                    part[2].append(x[i])
            for g, part in parts.items():
                by_group[g].append(part)
        bounds = [None, *starts, None]
        for g, extra in enumerate(by_group):
            where, args = _where(("series_id = ?", sid), ("min_time >= ?", bounds[g]),
                                 ("min_time < ?", bounds[g + 1]))
            rows = db.execute(f"SELECT times, vals, texts FROM chunks WHERE {where}"
                              " ORDER BY id", args).fetchall()
            if not extra:
                if rows:
                    yield chunks.merge_encoded(rows)
                continue
            merged = chunks.merge([chunks.decode_chunk(*r) for r in rows] + extra)
            if merged[0]:
                yield merged

    def _export_items(self, db: sqlite3.Connection, solution: str) -> Iterator[dict]:
        """The solution's export lines after its series: properties, messages,
        meta, records."""
        for entity, ptype, pkey, tags, t in db.execute(
            "SELECT entity, type, pkey, tags, time_ns FROM properties WHERE solution = ?"
            " ORDER BY entity, type, pkey",
            (solution,),
        ):
            prop = Property(entity, ptype, json.loads(pkey), json.loads(tags), t)
            yield export.property_line(solution, prop)
        for entity, t, mtype, source, severity, tags, text in db.execute(
            "SELECT entity, time_ns, type, source, severity, tags, message FROM messages"
            " WHERE solution = ? ORDER BY time_ns, id",
            (solution,),
        ):
            msg = Message(entity, t, text, mtype, source, severity, json.loads(tags))
            yield export.message_line(solution, msg)
        for kind, name, fields in db.execute(
            "SELECT kind, name, fields FROM meta WHERE solution = ? ORDER BY kind = 'entity', name",
            (solution,),
        ):
            yield export.meta_line(solution, Meta(kind, name, json.loads(fields)))
        for t, data, data_type in db.execute(
            "SELECT time_ns, data, data_type FROM records WHERE solution = ? AND deleted = 0"
            " ORDER BY time_ns, id",
            (solution,),
        ):
            yield export.record_line(solution, Record(t, data, data_type))

    # -- catalog -------------------------------------------------------------

    def create_solution(self, solution: SolutionRecord) -> SolutionRecord:
        """Insert a solution; Conflict if the name exists.  Returns it as stored."""
        if not solution.created_ns:
            solution = SolutionRecord(
                solution.name,
                solution.description,
                solution.storage,
                time.time_ns(),
                dict(solution.attributes),
            )
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM solutions WHERE name = ?", (solution.name,)).fetchone():
                raise Conflict(f"solution {solution.name!r} exists")
            db.execute(
                "INSERT INTO solutions (name, description, storage, created_ns, attributes)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    solution.name,
                    solution.description,
                    solution.storage,
                    solution.created_ns,
                    _dumps(solution.attributes),
                ),
            )
            self._bump(db, "catalog_generation")
        return solution

    def update_solution(self, solution: SolutionRecord) -> None:
        """Replace a solution's description and attributes (not in ICatalog yet:
        a ts-store store keeps its schema versions and connections there)."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE solutions SET description = ?, attributes = ? WHERE name = ?",
                (solution.description, _dumps(solution.attributes), solution.name),
            )
            if not cur.rowcount:
                raise NotFound(f"no solution {solution.name!r}")
            self._bump(db, "catalog_generation")

    def get_solution(self, name: str) -> SolutionRecord | None:
        row = self.db.execute(
            "SELECT name, description, storage, created_ns, attributes FROM solutions"
            " WHERE name = ?",
            (name,),
        ).fetchone()
        return _solution(row) if row else None

    def list_solutions(self) -> list[SolutionRecord]:
        return [
            _solution(row)
            for row in self.db.execute(
                "SELECT name, description, storage, created_ns, attributes FROM solutions"
                " ORDER BY name"
            )
        ]

    def delete_solution(self, name: str) -> None:
        """Remove the solution and its tokens (not its data); NotFound if absent."""
        with self._transaction() as db:
            if not db.execute("DELETE FROM solutions WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no solution {name!r}")
            db.execute(
                "DELETE FROM credentials WHERE token_id IN"
                " (SELECT id FROM tokens WHERE solution = ?)",
                (name,),
            )
            db.execute("DELETE FROM tokens WHERE solution = ?", (name,))
            self._bump(db, "catalog_generation")

    def save_token(self, token: TokenRecord) -> None:
        """Insert or replace a token and its credentials.

        NotFound if its solution does not exist; Conflict if a credential id or
        secret hash belongs to another token.
        """
        with self._transaction() as db:
            if not db.execute(
                "SELECT 1 FROM solutions WHERE name = ?", (token.solution,)
            ).fetchone():
                raise NotFound(f"no solution {token.solution!r}")
            db.execute("DELETE FROM credentials WHERE token_id = ?", (token.id,))
            db.execute(
                "INSERT OR REPLACE INTO tokens (id, solution, description, expires_ns, tags,"
                " revoked, created_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token.id,
                    token.solution,
                    token.description,
                    token.expires_ns,
                    _dumps(token.tags),
                    int(token.revoked),
                    token.created_ns or time.time_ns(),
                ),
            )
            try:
                db.executemany(
                    "INSERT INTO credentials (id, token_id, scopes, secret_hash)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (c.id, token.id, ",".join(sorted(c.scopes)), c.secret_hash)
                        for c in token.credentials
                    ],
                )
            except sqlite3.IntegrityError as e:
                raise Conflict(f"credential of token {token.id!r} exists: {e}") from None
            self._bump(db, "catalog_generation")

    def get_token(self, token_id: str) -> TokenRecord | None:
        row = self.db.execute(
            "SELECT id, solution, description, expires_ns, tags, revoked, created_ns"
            " FROM tokens WHERE id = ?",
            (token_id,),
        ).fetchone()
        return self._token(row) if row else None

    def list_tokens(self, solution: str) -> list[TokenRecord]:
        rows = self.db.execute(
            "SELECT id, solution, description, expires_ns, tags, revoked, created_ns"
            " FROM tokens WHERE solution = ? ORDER BY created_ns, id",
            (solution,),
        ).fetchall()
        return [self._token(row) for row in rows]

    def _token(self, row: tuple) -> TokenRecord:
        tid, solution, description, expires_ns, tags, revoked, created_ns = row
        creds = [
            Credential(cid, frozenset(s for s in scopes.split(",") if s), secret_hash)
            for cid, scopes, secret_hash in self.db.execute(
                "SELECT id, scopes, secret_hash FROM credentials WHERE token_id = ? ORDER BY id",
                (tid,),
            )
        ]
        return TokenRecord(
            tid,
            solution,
            creds,
            description,
            expires_ns,
            json.loads(tags),
            bool(revoked),
            created_ns,
        )

    def find_credential(self, credential_id: str | None, secret_hash: str) -> TokenRecord | None:
        """The token owning a credential, by credential id when given, else by hash.

        The stored hash is always compared with `hmac.compare_digest`, so the
        answer takes the same time however much of a wrong hash matches.
        """
        if credential_id is not None:
            row = self.db.execute(
                "SELECT token_id, secret_hash FROM credentials WHERE id = ?", (credential_id,)
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT token_id, secret_hash FROM credentials WHERE secret_hash = ?",
                (secret_hash,),
            ).fetchone()
        if row is None or not hmac.compare_digest(
            row[1].encode("utf-8"), secret_hash.encode("utf-8")
        ):
            return None
        return self.get_token(row[0])

    def catalog_generation(self) -> int:
        return self._generation(self.db, "catalog_generation")


def _series_count(batch: WriteBatch) -> int:
    """Series in the batch, at least (rows may repeat a series)."""
    return sum(len(b.samples.columns) + len(b.samples.keys) for b in batch.by_solution.values())


def _points(batch: WriteBatch) -> int:
    return sum(sum(map(len, b.samples.columns.values())) + len(b.samples.keys)
               for b in batch.by_solution.values())


def _small_runs(rows: list[tuple], small: int) -> Iterator[list[tuple]]:
    """Maximal runs (2 or more) of consecutive chunks holding fewer than ``small``
    points each; rows are (id, count, ...) in write order."""
    run: list[tuple] = []
    for r in rows:
        if r[1] < small:
            run.append(r)
            continue
        if len(run) > 1:
            yield run
        run = []
    if len(run) > 1:
        yield run


def _solution(row: tuple) -> SolutionRecord:
    name, description, storage, created_ns, attributes = row
    return SolutionRecord(name, description, storage, created_ns, json.loads(attributes))


class _Faults:
    """Background work on the file (checkpoints, compaction) fails while the
    disk is full or another process holds the lock, at every attempt: one log
    line when a kind of work starts failing and one when it works again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failing: dict[str, str] = {}

    def failed(self, what: str, f: Any) -> None:
        if what not in self.failing:
            self.failing[what] = reason = f.getErrorMessage()
            log.warn("{what} of {path} fails ({reason}); trying again later", what=what,
                     path=self.path, reason=reason)

    def worked(self, what: str) -> None:
        if self.failing.pop(what, None) is not None:
            log.info("{what} of {path} works again", what=what, path=self.path)


@implementer(IStorage, IBoundedReads, IExpiringStorage, IExportText, ICatalog, ISeriesByKey,
             ITagIndex)
class SqliteStorage:
    """`SqliteEngine` behind Deferreds: every call runs in one dedicated thread,
    except small sample writes that can commit at once without waiting
    (`SqliteEngine.write_small_now`; ``small_writes_inline``), and the reads
    that grow with the data (series, messages, records), which run on a
    reader engine's own connection and thread (`_read`), so a long read holds
    no commit.

    The engine's lock makes it one writer at a time, and the order is strict: a
    read issued after a write's Deferred fired sees that write, and ``close``
    runs after everything queued.  Objects handed to `write` belong to the
    storage until its Deferred fires.
    """

    def __init__(self, name: str, path: str, reactor: Any, busy_timeout: float = 5.0,
                 pending_max_points: int = PENDING_MAX_POINTS,
                 small_writes_inline: bool = True) -> None:
        self.name = name
        self.path = path
        self._reactor = reactor
        self._engine = SqliteEngine(path, busy_timeout, pending_max_points)
        #: series reads run on their own connection and thread (`_read`)
        self._reader = SqliteEngine(path, busy_timeout, pending_max_points)
        self._read_pool: ThreadPool | None = None
        self.small_writes_inline = small_writes_inline
        self._checkpoints: Any = None  # LoopingCall, with small_writes_inline
        self._checkpointing = False
        self._folding = False
        #: background jobs waiting for their turn: (Deferred, its TURN_WAIT timer)
        self._turns: list[tuple[defer.Deferred, Any]] = []
        self._faults = _Faults(path)
        self._pool: ThreadPool | None = None
        self._closing: defer.Deferred | None = None
        self._trigger: Any = None

    def _run(self, f: Callable, *args: Any, **kwargs: Any) -> defer.Deferred:
        if self._pool is None or self._closing is not None:
            return defer.fail(RuntimeError(f"storage {self.name!r} is not open"))
        return deferToThreadPool(self._reactor, self._pool, self._locked, f, *args, **kwargs)

    def _locked(self, f: Callable, *args: Any, **kwargs: Any) -> Any:
        with self._engine.lock:
            return f(*args, **kwargs)

    def _read(self, method: str, *args: Any) -> defer.Deferred:
        """``method`` of the reader engine, after the writer folded what it could at
        once: a read of millions of points holds neither the writer thread
        (commits go on meanwhile) nor the reactor.  It sees every write whose
        Deferred fired before it was issued (WAL: a reader's snapshot begins
        with its read)."""
        if self._read_pool is None:  # (no reader: ":memory:", or not open)
            return self._run(getattr(self._engine, method), *args)
        pool, f = self._read_pool, getattr(self._reader, method)
        return self._run(self._engine.prepare_read).addCallback(
            lambda _: deferToThreadPool(self._reactor, pool, f, *args))

    def open(self) -> defer.Deferred:
        """Start the writer thread and open the file in it."""
        if self._pool is not None:
            return defer.fail(RuntimeError(f"storage {self.name!r} is open already"))
        self._closing = None
        pool = self._pool = ThreadPool(1, 1, name=f"tsnet-sqlite-{self.name}")
        pool.start()
        # If the reactor stops without close(), still end the thread so the process exits.
        self._trigger = self._reactor.addSystemEventTrigger("after", "shutdown",
                                                            self._reactor_stopped)

        def failed(f: Any) -> Any:
            self._stop_pool()
            return f

        def opened(_: Any) -> Any:
            if self.path != ":memory:":
                reads = self._read_pool = ThreadPool(1, 1, name=f"tsnet-sqlite-{self.name}-reads")
                reads.start()
                d = deferToThreadPool(self._reactor, reads, self._reader.open_reader)
                return d.addCallback(lambda _: small_writes())
            return small_writes()

        def small_writes() -> Any:
            if self.small_writes_inline:
                return self._run(self._engine.open_small_writes).addCallback(
                    lambda _: self._start_checkpoints())
            return None

        return self._run(self._engine.open).addCallback(opened).addErrback(failed)

    def _start_checkpoints(self) -> None:
        self._checkpoints = task.LoopingCall(self._maybe_checkpoint)
        self._checkpoints.clock = self._reactor
        self._checkpoints.start(CHECKPOINT_INTERVAL, now=False)

    def _stop_checkpoints(self) -> None:
        if self._checkpoints is not None and self._checkpoints.running:
            self._checkpoints.stop()
        self._checkpoints = None

    def _maybe_checkpoint(self) -> None:
        """Checkpoint in the writer thread once the WAL is big, at its turn
        (`_turn`): small and frequent, so the write behind one waits a few
        milliseconds."""
        if self._checkpointing or self._pool is None or self._closing is not None:
            return
        try:
            if os.path.getsize(self.path + "-wal") < CHECKPOINT_BYTES:
                return
        except OSError:
            return
        self._background("checkpoint", self._engine.checkpoint, "_checkpointing", wait=True)

    def _background(self, what: str, f: Callable[[], Any], flag: str,
                    then: Callable[[], Any] | None = None, wait: bool = False) -> None:
        """Run ``f`` on the writer thread as background work ``what``, the
        attribute ``flag`` true until it ends (one at a time): a full disk or a
        lock is logged once (`_background_failed`), anything else as a failure.
        With ``wait``, ``f`` waits for its `_turn`.  ``then``: a second job,
        run at its turn after ``f``, if ``f`` returned true."""
        setattr(self, flag, True)
        d = self._turn() if wait else defer.succeed(None)
        d.addCallback(lambda _: self._job(f))
        if then is not None:
            d.addCallback(lambda more: self._turn().addCallback(lambda _: self._job(then))
                          if more and self._closing is None else None)
        d.addCallbacks(lambda _: self._faults.worked(what), self._background_failed,
                       errbackArgs=(what,))
        d.addErrback(lambda fail: log.failure("{what} of {path} failed", fail, what=what,
                                              path=self.path))
        d.addBoth(lambda _: setattr(self, flag, False))

    def _job(self, f: Callable[[], Any]) -> Any:
        """``f`` queued on the writer thread, unless the storage is closing."""
        if self._pool is None or self._closing is not None:
            return None
        return self._run(f)

    def _turn(self) -> defer.Deferred:
        """Fires on the reactor just after the next write's commit (one
        waiting job a write: `_fold_after`), or `TURN_WAIT` seconds from now,
        or at close (the job then sees the storage closing)."""
        d: defer.Deferred = defer.Deferred()

        def late() -> None:
            self._turns[:] = [t for t in self._turns if t[0] is not d]
            d.callback(None)

        self._turns.append((d, self._reactor.callLater(TURN_WAIT, late)))
        return d

    def _give_turn(self) -> bool:
        """The oldest waiting job's turn now; False if none waits."""
        if not self._turns:
            return False
        d, timer = self._turns.pop(0)
        timer.cancel()
        d.callback(None)
        return True

    def _end_turns(self) -> None:
        while self._give_turn():
            pass

    def _background_failed(self, f: Any, what: str) -> int:
        """A checkpoint, a fold or a compaction step failed: a full disk or a lock is
        logged once (see `_Faults`) and tried again later; anything else is a
        bug, passed on."""
        f.trap(sqlite3.OperationalError)
        self._faults.failed(what, f)
        return 0

    def _reactor_stopped(self) -> None:
        """The reactor stopped without close(): the trigger firing is spent."""
        self._trigger = None
        self._stop_pool()

    def _stop_pool(self) -> None:
        self._stop_checkpoints()
        reads, self._read_pool = self._read_pool, None
        if reads is not None:
            reads.stop()  # (its reads are done: close() queued the reader's close last)
        pool, self._pool = self._pool, None
        self._end_turns()  # (their jobs see no pool)
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        if pool is not None:
            pool.stop()  # the queue is empty by now: joins at once

    def close(self) -> defer.Deferred:
        """Run everything already queued, close the file, stop the thread."""
        if self._closing is not None:
            waiter: defer.Deferred = defer.Deferred()

            def done(result: Any) -> Any:
                waiter.callback(None)
                return result

            self._closing.addBoth(done)
            return waiter
        if self._pool is None:
            return defer.succeed(None)
        self._stop_checkpoints()
        d = deferToThreadPool(self._reactor, self._pool, self._locked, self._engine.close)
        self._closing = d
        self._end_turns()  # (their jobs see the storage closing)
        if self._read_pool is not None:
            reads = self._read_pool
            d.addBoth(lambda r: deferToThreadPool(self._reactor, reads, self._reader.close)
                      .addBoth(lambda _: r))

        def stopped(result: Any) -> Any:
            self._stop_pool()
            self._closing = None
            return result

        return d.addBoth(stopped)

    # IStorage

    def write(self, batch: WriteBatch) -> defer.Deferred:
        """Small batches of samples commit at once on the reactor when the writer
        thread is idle (`SqliteEngine.write_small_now`); the rest in the thread."""
        if self.small_writes_inline and self._pool is not None and self._closing is None:
            try:
                if self._engine.write_small_now(batch):
                    return defer.succeed(None)
            except Exception:
                return defer.fail()
        return self._run(self._engine.write, batch).addCallback(self._fold_after)

    def _fold_after(self, result: Any) -> Any:
        """After a write's commit: the turn of a job waiting for one (`_turn`),
        queued ahead of the next write; else a part's fold when the log is
        past its mark, one at a time, and in two jobs
        (`SqliteEngine.prepare_fold_part`, then `commit_fold_part` at its
        turn), so that a write commits between the two.  A fault is logged
        once and the next write tries again."""
        if self._pool is None or self._closing is not None or self._give_turn() \
                or self._folding or not self._engine.fold_due:
            return result
        engine = self._engine
        self._background("fold", engine.prepare_fold_part, "_folding", engine.commit_fold_part)
        return result

    def read_series(
        self,
        solution: str,
        metric: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        max_points: int | None = None,
    ) -> defer.Deferred:
        return self._read("read_series", solution, metric, start_ns, end_ns, max_points)

    def list_series(self, solution: str, metric: str | None = None) -> defer.Deferred:
        return self._run(self._engine.list_series, solution, metric)

    def list_series_where(self, solution: str, metric: str,
                          tags: dict[str, frozenset[str]]) -> defer.Deferred:
        return self._read("list_series_where", solution, metric, tags)

    def suggest_names(self, solution: str, kind: str, prefix: str,
                      limit: int) -> defer.Deferred:
        return self._read("suggest_names", solution, kind, prefix, limit)

    def read_series_of(self, solution: str, keys: Iterable[SeriesKey],
                       start_ns: int | None = None, end_ns: int | None = None,
                       max_points: int | None = None) -> defer.Deferred:
        return self._read("read_series_of", solution, list(keys), start_ns, end_ns, max_points)

    def count_points(self, solution: str | None = None) -> defer.Deferred:
        # a count reads every chunk: on the reader, so it holds no commit
        return self._read("count_points", solution)

    def read_properties(self, solution: str, entity: str | None = None,
                        type: str | None = None) -> defer.Deferred:
        return self._run(self._engine.read_properties, solution, entity, type)

    def read_messages(self, solution: str, entity: str | None = None,
                      start_ns: int | None = None, end_ns: int | None = None,
                      type: str | None = None, limit: int | None = None) -> defer.Deferred:
        return self._read("read_messages", solution, entity, start_ns, end_ns,
                          type, limit)

    def read_meta(self, solution: str, kind: str, name: str | None = None) -> defer.Deferred:
        return self._run(self._engine.read_meta, solution, kind, name)

    def read_records(self, solution: str, start_ns: int | None = None,
                     end_ns: int | None = None, limit: int | None = None,
                     descending: bool = False, include_deleted: bool = False
                     ) -> defer.Deferred:
        return self._read("read_records", solution, start_ns, end_ns, limit,
                          descending, include_deleted)

    def delete_record(self, solution: str, time_ns: int) -> defer.Deferred:
        return self._run(self._engine.delete_record, solution, time_ns)

    def export(self, solution: str | None, emit: Callable[[dict], object]) -> defer.Deferred:
        """Call ``emit`` in the reactor thread, a page of lines at a time."""
        return defer.ensureDeferred(self._export(solution, emit))

    async def _export(self, solution: str | None, emit: Callable[[dict], object]) -> None:
        pages = self._engine.export_pages(solution)
        try:
            while True:
                page = await self._run(next, pages, None)
                if page is None:
                    return
                for line in page:
                    emit(line)
        finally:
            if self._pool is not None:
                await deferToThreadPool(self._reactor, self._pool, pages.close)

    def export_text(self, solution: str | None, write: Callable[[str], object]
                    ) -> defer.Deferred:
        """`IExportText`: ``write`` (in the reactor thread) gets pages of about
        1 MiB of text; the writer thread renders the next page meanwhile."""
        return defer.ensureDeferred(self._export_text(solution, write))

    async def _export_text(self, solution: str | None, write: Callable[[str], object]) -> None:
        pages = self._engine.export_text_pages(solution)
        ahead: defer.Deferred | None = None
        try:
            ahead = self._run(next, pages, None)
            while True:
                page = await ahead
                ahead = None
                if page is None:
                    return
                ahead = self._run(next, pages, None)
                write(page)
        finally:
            if ahead is not None:  # (a write failed: let the page in the making end)
                ahead.addErrback(lambda f: None)
            if self._pool is not None:  # (runs after it: the pool has one thread)
                await deferToThreadPool(self._reactor, self._pool, pages.close)

    def solution_has_data(self, solution: str) -> defer.Deferred:
        return self._run(self._engine.solution_has_data, solution)

    def delete_solution_data(self, solution: str) -> defer.Deferred:
        return self._run(self._engine.delete_solution_data, solution)

    def compact(self, solution: str | None = None, max_series: int | None = None,
                **kw: Any) -> defer.Deferred:
        """Deferred[int]: see `SqliteEngine.compact` (None: every series).  While
        it cannot be written (a full disk), a step compacts nothing (logged once)."""

        def done(n: int) -> int:
            self._faults.worked("compaction")
            return n

        return self._run(self._engine.compact, solution, max_series, **kw).addCallbacks(
            done, self._background_failed, errbackArgs=("compaction",))

    # IExpiringStorage

    def metric_retention(self, solution: str) -> defer.Deferred:
        return self._run(self._engine.metric_retention, solution)

    def expire_series(self, solution: str, cutoffs: Any, cursor: Any = None,
                      max_series: int = 256) -> defer.Deferred:
        """Deferred[(chunks deleted, cursor)]: see `SqliteEngine.expire_series`.
        While the file cannot be written (a full disk, another process's lock)
        a step removes nothing and ends the pass (logged once)."""
        return self._run(self._engine.expire_series, solution, cutoffs, cursor,
                         max_series).addCallbacks(self._expired, self._expiry_failed)

    def expire_messages(self, solution: str, cutoff_ns: int, cursor: Any = None,
                        limit: int = 4096) -> defer.Deferred:
        """Deferred[(messages deleted, cursor)]: the cursor is None once a step
        found fewer than ``limit`` to delete."""
        d = self._run(self._engine.expire_messages, solution, cutoff_ns, limit)
        return d.addCallback(lambda n: (n, True if n >= limit else None)).addCallbacks(
            self._expired, self._expiry_failed)

    def _expired(self, result: tuple) -> tuple:
        self._faults.worked("retention")
        return result

    def _expiry_failed(self, f: Any) -> tuple:
        self._background_failed(f, "retention")
        return 0, None

    # ICatalog

    def create_solution(self, solution: SolutionRecord) -> defer.Deferred:
        return self._run(self._engine.create_solution, solution)

    def update_solution(self, solution: SolutionRecord) -> defer.Deferred:
        return self._run(self._engine.update_solution, solution)

    def get_solution(self, name: str) -> defer.Deferred:
        return self._run(self._engine.get_solution, name)

    def list_solutions(self) -> defer.Deferred:
        return self._run(self._engine.list_solutions)

    def delete_solution(self, name: str) -> defer.Deferred:
        return self._run(self._engine.delete_solution, name)

    def save_token(self, token: TokenRecord) -> defer.Deferred:
        return self._run(self._engine.save_token, token)

    def get_token(self, token_id: str) -> defer.Deferred:
        return self._run(self._engine.get_token, token_id)

    def list_tokens(self, solution: str) -> defer.Deferred:
        return self._run(self._engine.list_tokens, solution)

    def find_credential(self, credential_id: str | None, secret_hash: str) -> defer.Deferred:
        return self._run(self._engine.find_credential, credential_id, secret_hash)

    def catalog_generation(self) -> defer.Deferred:
        return self._run(self._engine.catalog_generation)
