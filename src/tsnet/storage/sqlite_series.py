"""The ``series`` table of the SQLite backend: one row per series, its id the
one chunks and the pending log name it by, found by its key.

A row holds the series' solution, metric, entity and tags (a JSON object,
keys sorted: `tags_text`), and one index, ``series_key`` on (solution,
metric, tags, entity), finds a series by its key and lists a metric's
series (its prefix).  Up to schema 2 a row also held ``skey``, the whole key
as one JSON text under a UNIQUE index beside a (solution, metric) one: two
b-trees and a text of about 70 bytes a series, which made a new series cost
about a third more (100,000 new series, 5,000 a commit: 19.8 -> 15.6 us a
series in SQLite; `migrate` rebuilds such a table).  A series is created by
the one writer, under the write lock, after a lookup of its key in the same
transaction (`tsnet.storage.sqlite.SqliteEngine._many_series_ids`): the rows
are unique without a constraint to say so.

Texts are written by orjson where it gives what json.dumps always gave
(`dumps_fast`): a lookup compares the ``tags`` text, so the text of a key
must not depend on which of them wrote it.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from twisted.logger import Logger

from tsnet.model import SeriesKey
from tsnet.storage import sqlite_bulk

log = Logger(namespace="tsnet.storage.sqlite")

#: the schema version a migrated ``series`` table is at
VERSION = 3

SCHEMA = """CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    solution TEXT NOT NULL,
    metric TEXT NOT NULL,
    entity TEXT,
    tags TEXT NOT NULL
)"""

_INDEX = "CREATE INDEX IF NOT EXISTS series_key ON series (solution, metric, tags, entity)"

#: new series rows from one JSON array of [id, solution, metric, entity, tags
#: object] (`insert`): SQLite cuts out the tags text as orjson wrote it
_INSERT = ("INSERT INTO series (id, solution, metric, entity, tags)"
           " SELECT value->>0, value->>1, value->>2, value->>3, value->4"
           " FROM json_each(?) ORDER BY key")

#: the ids of keys given as one JSON array of [metric, tags text, entity]
_FIND = ("SELECT j.key, s.id FROM json_each(?2) j CROSS JOIN series s"
         " ON s.solution = ?1 AND s.metric = j.value->>0 AND s.tags = j.value->>1"
         " AND s.entity IS j.value->>2")

#: keys one `find_ids` statement looks up
FIND_KEYS = 2000


def dumps(obj: Any) -> str:
    """The JSON text of ``obj``: compact, keys sorted."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def dumps_fast(obj: Any) -> str:
    """`dumps`, by orjson when that gives the same text: when it escaped
    nothing and wrote only ASCII (json.dumps escapes DEL and every non-ASCII
    character, orjson neither).  A fleet's first batch creates 100 k series
    rows, and json.dumps with options costs several microseconds each."""
    try:
        out = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # (a lone surrogate, which json.dumps escapes)
        return dumps(obj)
    if _plain(out):
        return out.decode()
    return dumps(obj)


def _plain(text: bytes) -> bool:
    """Whether orjson's ``text`` is json.dumps': ASCII, nothing escaped."""
    return text.isascii() and b"\\" not in text and b"\x7f" not in text


def canonicals(keys: Iterable[SeriesKey]) -> list[SeriesKey]:
    """Each of ``keys`` with its tags sorted: one series whatever their order
    (one comprehension, no call a key: a fleet's first batch has thousands)."""
    return [(m, e, tuple(sorted(t))) for m, e, t in keys]


def tags_text(canon: SeriesKey) -> str:
    """The ``tags`` column of a series: its tags as a JSON object."""
    return dumps_fast(dict(canon[2]))


def key_from_row(metric: str, entity: str | None, tags: str) -> SeriesKey:
    """The canonical key of a row."""
    return (metric, entity, tuple(sorted(json.loads(tags).items())))


def migrate(db: sqlite3.Connection) -> None:
    """Give a file of schema 2 the table of schema 3 (no ``skey``, one index),
    in the caller's transaction (`SqliteEngine.open`); a new file's table
    just gets its index."""
    (version,) = db.execute("SELECT value FROM info WHERE key = 'schema_version'").fetchone()
    if version != 2:
        return  # (up to date; a newer one is refused by the caller, an older migrated first)
    columns = {row[1] for row in db.execute("PRAGMA table_info(series)")}
    if "skey" in columns:
        (n,) = db.execute("SELECT count(*) FROM series").fetchone()
        db.execute(SCHEMA.replace("IF NOT EXISTS series", "series_v3"))
        db.execute("INSERT INTO series_v3 (id, solution, metric, entity, tags)"
                   " SELECT id, solution, metric, entity, tags FROM series ORDER BY id")
        db.execute("DROP TABLE series")  # (and its two indexes)
        db.execute("ALTER TABLE series_v3 RENAME TO series")
        if n:
            log.info("rebuilt the series table of {series} series without its key texts"
                     " (schema 2 -> {version})", series=n, version=VERSION)
    db.execute(_INDEX)
    db.execute("UPDATE info SET value = ? WHERE key = 'schema_version'", (VERSION,))


def insert(db: sqlite3.Connection, solution: str, first: int,
           canons: Sequence[SeriesKey]) -> bool:
    """Insert the rows of new series, ids from ``first`` on; True if some name
    needed an escape in JSON.

    A fleet's first batches are mostly new series, and the ``tags`` text of
    each, built one by one, costs the writer interpreter time it shares with
    the reactor.  One orjson text of every row instead, and SQLite's ``->``
    gives each tags object back as orjson wrote it, which is `dumps_fast`'s
    text when nothing is escaped and all is ASCII (checked on the whole; else
    the rows go one by one)."""
    if len(canons) > 1 and sqlite_bulk.HAS_JSON_ARROW:
        try:
            text = orjson.dumps([(sid, solution, m, e, dict(tags))
                                 for sid, (m, e, tags) in zip(itertools.count(first), canons)],
                                option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # (a lone surrogate: json.dumps escapes it)
            text = None
        if text is not None and _plain(text):
            db.execute(_INSERT, (text.decode(),))
            return False
    rows = [(sid, solution, canon[0], canon[1], tags_text(canon))
            for sid, canon in zip(itertools.count(first), canons)]
    sqlite_bulk.insert_rows(db, "series", ("id", "solution", "metric", "entity", "tags"), rows)
    return any("\\" in row[4] for row in rows)


def find_id(db: sqlite3.Connection, solution: str, canon: SeriesKey) -> int | None:
    """The id of the series with canonical key ``canon``, None if it has none."""
    row = db.execute("SELECT id FROM series WHERE solution = ? AND metric = ? AND tags = ?"
                     " AND entity IS ?",
                     (solution, canon[0], tags_text(canon), canon[1])).fetchone()
    return None if row is None else row[0]


def find_ids(db: sqlite3.Connection, solution: str,
             canons: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
    """The ids of those of ``canons`` (canonical keys) that have a row: a seek
    of the index each, `FIND_KEYS` to a statement (one step, whatever their
    number: see `tsnet.storage.sqlite_bulk`)."""
    out: dict[SeriesKey, int] = {}
    for i in range(0, len(canons), FIND_KEYS):
        part = canons[i:i + FIND_KEYS]
        text = sqlite_bulk.json_rows([(m, tags_text((m, e, t)), e) for m, e, t in part])
        if text is None:  # (what JSON cannot carry exactly: one by one)
            out.update((c, sid) for c in part if (sid := find_id(db, solution, c)) is not None)
            continue
        out.update((part[at], sid) for at, sid in db.execute(_FIND, (solution, text.decode())))
    return out
