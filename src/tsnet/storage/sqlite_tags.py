"""The tag index of the SQLite backend: find a few series among many, and list
names, without reading every ``series`` row (`tsnet.interfaces.ITagIndex`),
and read given series without touching the others (`ISeriesByKey`).

One table, ``series_tags``: a row per tag of each series (solution, tag key,
tag value, metric, series id), that order its primary key, ``WITHOUT ROWID``
(the key is the row).  It is filled in the transaction that creates a
series (`index_ids`, or `index_many` when a name has an escape, from
`SqliteEngine._many_series_ids`, for a batch's new series at once) and
emptied with the solution's data (`delete_solution`).  A file of schema 1
gets it from the ``series`` table's ``tags`` JSON when it is opened
(`migrate`, in one transaction).

What it answers, each by seeks of that key, never a scan of the solution:

- a literal filter of a query (``host=a|b`` on metric ``m``): one range per
  value, (solution, ``host``, ``a``, ``m``); several keys are intersected;
- the tag keys with a prefix: a seek per key, skipping from one key to the
  next (a loose index scan, in one recursive statement);
- the tag values with a prefix: the same under each key, merged: a seek per
  value per key, so it costs with the number of tag keys, which stays small
  (tens) in every schema seen;
- metric names come the same way from the ``series_key`` index (its prefix).

A new series costs one b-tree insert per tag (measured: about 7 us a series
of two tags, beside about 28 us for the rest of a new series); a table of
distinct names for ``/api/suggest`` cost 4-7 us more, for what the seeks
give anyway.
The entity is not in the table (its rows would show in the names): a filter
on ``entity`` is matched on the series the other keys find (or on the
metric's, when it is the only key).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from twisted.logger import Logger

from tsnet.model import INT64_MAX, INT64_MIN, SeriesKey, series_tags
from tsnet.storage import chunks, rules, sqlite_bulk

log = Logger(namespace="tsnet.storage.sqlite")

#: the schema version these tables came with
VERSION = 2

SCHEMA = """CREATE TABLE IF NOT EXISTS series_tags (
    solution TEXT NOT NULL,
    tagk TEXT NOT NULL,
    tagv TEXT NOT NULL,
    metric TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    PRIMARY KEY (solution, tagk, tagv, metric, series_id)
) WITHOUT ROWID"""

#: the index rows of series, made by SQLite from their ``tags`` column
_ROWS_OF_SERIES = ("SELECT s.solution, j.key, j.value, s.metric, s.id"
                   " FROM series s, json_each(s.tags) j")

#: schema 1 -> 2: every series' tags
_BACKFILL = ("INSERT OR IGNORE INTO series_tags (solution, tagk, tagv, metric, series_id) "
             + _ROWS_OF_SERIES + " ORDER BY 1, 2, 3, 4, 5")

#: the rows of the series with ids from ? to ?
_INDEX_IDS = ("INSERT INTO series_tags (solution, tagk, tagv, metric, series_id) "
              + _ROWS_OF_SERIES + " WHERE s.id BETWEEN ? AND ? ORDER BY 1, 2, 3, 4, 5")

SUGGEST_KINDS = ("metrics", "tagk", "tagv")

#: the tag an OpenTSDB read sees the entity as (`tsnet.model.series_tags`)
ENTITY = "entity"


def migrate(db: sqlite3.Connection) -> None:
    """Create the table, and fill it from the ``series`` table in a file of
    schema 1 (which a new file starts as), moving it to `VERSION`.  Runs in
    the caller's transaction (`SqliteEngine.open`)."""
    db.execute(SCHEMA)
    (version,) = db.execute("SELECT value FROM info WHERE key = 'schema_version'").fetchone()
    if version != 1:
        return  # (up to date; a newer one is refused by the caller)
    (series,) = db.execute("SELECT count(*) FROM series").fetchone()
    db.execute(_BACKFILL)
    db.execute("UPDATE info SET value = ? WHERE key = 'schema_version'", (VERSION,))
    if series:
        log.info("indexed the tags of {series} series (schema 1 -> {version})",
                 series=series, version=VERSION)


def index_many(db: sqlite3.Connection, solution: str,
               made: Iterable[tuple[int, SeriesKey]]) -> None:
    """The index rows of new series: ``made`` is (series id, canonical key)
    pairs.  One statement, rows in key order (an insert in order touches
    each b-tree page once)."""
    rows = [(solution, k, v, metric, sid) for sid, (metric, _, tags) in made for k, v in tags]
    if rows:
        rows.sort()
        sqlite_bulk.insert_rows(db, "series_tags",
                                ("solution", "tagk", "tagv", "metric", "series_id"), rows)


def index_ids(db: sqlite3.Connection, first: int, last: int) -> None:
    """`index_many` for the series rows with ids ``first`` to ``last`` (just
    inserted), made and sorted by SQLite from their ``tags`` column: half
    the time of building and sorting the rows in Python (100 k new series:
    about 0.3 s against 0.55 s).  Only for rows whose ``tags`` texts have no
    escape (no backslash): json_each then gives back exactly the names."""
    db.execute(_INDEX_IDS, (first, last))


def delete_solution(db: sqlite3.Connection, solution: str) -> None:
    """Drop the solution's index rows (with its series, in the same transaction)."""
    db.execute("DELETE FROM series_tags WHERE solution = ?", (solution,))


def _keys(rows: Iterable[tuple[str, str | None, str]]) -> list[SeriesKey]:
    keys = [(m, e, tuple(sorted(json.loads(tags).items()))) for m, e, tags in rows]
    keys.sort(key=rules.series_sort_key)
    return keys


def series_where(db: sqlite3.Connection, solution: str, metric: str,
                 tags: Mapping[str, Iterable[str]]) -> list[SeriesKey]:
    """`ITagIndex.list_series_where`: one range of ``series_tags`` per value
    (the values go in as one JSON array, however many), the keys intersected;
    ``entity`` matched on what they find."""
    wanted = {k: frozenset(v) for k, v in tags.items()}
    if not all(wanted.values()):
        return []
    entity = wanted.pop(ENTITY, None)
    if not wanted:
        rows = db.execute("SELECT metric, entity, tags FROM series"
                          " WHERE solution = ? AND metric = ?", (solution, metric))
    else:
        parts, args = [], []
        for k, values in wanted.items():
            parts.append("SELECT series_id FROM series_tags WHERE solution = ? AND tagk = ?"
                         " AND tagv IN (SELECT value FROM json_each(?)) AND metric = ?")
            args += [solution, k, json.dumps(sorted(values)), metric]
        rows = db.execute("SELECT metric, entity, tags FROM series WHERE id IN ("
                          + " INTERSECT ".join(parts) + ")", args)
    keys = _keys(rows)
    if entity is not None:
        keys = [k for k in keys if series_tags(k).get(ENTITY) in entity]
    return keys


def _distinct(db: sqlite3.Connection, column: str, table: str, where: str, args: tuple,
              prefix: str, limit: int) -> list[str]:
    """The first ``limit`` (-1: all) distinct values of ``column`` that start
    with ``prefix``, where an index orders ``column`` right after the
    ``where`` equalities: a loose index scan, each value one seek past the
    one before (``min`` of what follows it), in one recursive statement."""
    step = f"SELECT min({column}) FROM {table} WHERE {where} AND {column}"
    sql = (f"WITH RECURSIVE v(x) AS (SELECT ({step} >= ?) UNION ALL"
           f" SELECT ({step} > v.x) FROM v"
           " WHERE v.x IS NOT NULL AND substr(v.x, 1, ?) = ? LIMIT ?)"
           " SELECT x FROM v WHERE x IS NOT NULL")
    most = -1 if limit < 0 else limit + 1  # (-1: SQLite's no limit)
    rows = db.execute(sql, (*args, prefix, *args, len(prefix), prefix, most))
    # (sorted: the values with the prefix first, then at most one other)
    out = [x for (x,) in rows if x.startswith(prefix)]
    return out if limit < 0 else out[:limit]


def suggest(db: sqlite3.Connection, solution: str, kind: str, prefix: str,
            limit: int) -> list[str]:
    """`ITagIndex.suggest_names` by loose index scans (see the module's doc)."""
    if kind not in SUGGEST_KINDS:
        raise ValueError(f"unknown kind of name {kind!r}")
    if limit < 0:
        raise ValueError(f"negative limit {limit}")
    if kind == "metrics":
        return _distinct(db, "metric", "series", "solution = ?", (solution,), prefix, limit)
    if kind == "tagk":
        return _distinct(db, "tagk", "series_tags", "solution = ?", (solution,), prefix, limit)
    found: set[str] = set()
    for key in _distinct(db, "tagk", "series_tags", "solution = ?", (solution,), "", -1):
        found.update(_distinct(db, "tagv", "series_tags", "solution = ? AND tagk = ?",
                               (solution, key), prefix, limit))
    return sorted(found)[:limit]


def read_keys(db: sqlite3.Connection, unfolded: dict[int, list[chunks.Samples]],
              found: Iterable[tuple[SeriesKey, int]], start_ns: int | None,
              end_ns: int | None, max_points: int | None) -> list[tuple]:
    """`ISeriesByKey.read_series_of` in a read snapshot: ``found`` is the
    (canonical key, id) of each series that exists, in the order of the
    answer; ``unfolded`` is the pending log's points by series id
    (`SqliteEngine._snapshot`).  Each series is its chunks in range in write
    order (the log's after them, as it is newer), merged last write winning."""
    lo = INT64_MIN if start_ns is None else start_ns
    hi = INT64_MAX if end_ns is None else end_ns
    budget = rules.ReadBudget(max_points)
    for key, sid in found:
        parts = [chunks.decode_chunk(t, v, x) for t, v, x in db.execute(
            "SELECT times, vals, texts FROM chunks WHERE series_id = ? AND max_time >= ?"
            " AND min_time <= ? ORDER BY id", (sid, lo, hi))]
        merged = chunks.merge(parts + unfolded.get(sid, []))
        budget.take(key, *chunks.time_slice(merged, start_ns, end_ns))
    return budget.out
