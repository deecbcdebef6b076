"""Many rows inserted by one SQLite statement, not one step a row.

Python's sqlite3 lets go of the interpreter lock around every step of a
statement, and ``executemany`` steps once a row.  Each time, the reactor
thread takes the lock, and while it is busy (parsing a fleet's lines) the
writer waits up to the switch interval (5 ms) to get it back: beside a busy
thread, 2000 new series took 10 s to insert instead of 30 ms.  One ``INSERT
... SELECT ... FROM json_each(?)`` is one step, however many rows it holds;
the rows go as one JSON text (orjson), the chunks' blobs as one blob that
``substr`` cuts.

Rows that JSON cannot carry exactly (a NUL; a lone surrogate, which
sqlite3 refuses anyway) go through ``executemany`` as before; so do all
rows on an SQLite older than 3.38 (no ``->>``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

#: SQLite has ``->>`` from 3.38 on
HAS_JSON_ARROW = sqlite3.sqlite_version_info >= (3, 38, 0)


def json_rows(rows: Sequence[Sequence[object]]) -> bytes | None:
    """``rows`` as one JSON array, or None when JSON would not give them back
    exactly."""
    if not HAS_JSON_ARROW:
        return None
    try:
        out = orjson.dumps(rows)
    except orjson.JSONEncodeError:  # (a lone surrogate)
        return None
    return None if b"\\u0000" in out else out


def insert_rows(db: sqlite3.Connection, table: str, columns: Sequence[str],
                rows: Sequence[Sequence[int | str | None]], replace: bool = False) -> None:
    """``INSERT INTO table (columns) VALUES`` each of ``rows`` (ints, texts and
    NULLs only: floats and blobs would not come back exactly); ``INSERT OR
    REPLACE`` with ``replace``."""
    names = ", ".join(columns)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    text = json_rows(rows) if len(rows) > 1 else None
    if text is None:
        db.executemany(f"{verb} INTO {table} ({names}) VALUES"
                       f" ({', '.join('?' * len(columns))})", rows)
        return
    values = ", ".join(f"value->>{i}" for i in range(len(columns)))
    db.execute(f"{verb} INTO {table} ({names}) SELECT {values} FROM json_each(?)"
               " ORDER BY key", (text.decode(),))


def delete_ids(db: sqlite3.Connection, table: str, ids: Sequence[int]) -> None:
    """``DELETE FROM table WHERE id = ?`` for each of ``ids``, in one statement."""
    text = json_rows(list(ids)) if len(ids) > 1 else None
    if text is None:
        db.executemany(f"DELETE FROM {table} WHERE id = ?", [(i,) for i in ids])
        return
    db.execute(f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
               (text.decode(),))


#: the chunk rows `insert_chunks` writes: (series id, min time, max time,
#: count, times, vals, texts or None), as `tsnet.storage.chunks.EncodedChunk`
_CHUNK_COLUMNS = "series_id, min_time, max_time, count, times, vals, texts"


#: bytes of blobs a chunk row may hold on average for `insert_chunks` to join
#: them: copying blobs twice costs more than the steps it saves once they are
#: large (1000 rows of 2000 points: 24 us a row by executemany, 72 joined;
#: 100,000 rows of 20 points: 2.6 us against 4.2, but with the lock let go
#: once, not 100,000 times)
BULK_BLOB_BYTES = 1024


def insert_chunks(db: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    """Chunk rows (series id, *`chunks.EncodedChunk`) in one statement, when
    they are many and small (a wide fold's): their blobs joined into one,
    each row saying where its own are."""
    if (len(rows) < 2 or not HAS_JSON_ARROW
            or sum([len(r[4]) + len(r[5]) for r in rows]) > BULK_BLOB_BYTES * len(rows)):
        db.executemany(f"INSERT INTO chunks ({_CHUNK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       rows)
        return
    blobs: list[bytes] = []
    at = 1  # (substr counts from 1)
    index = []
    for sid, lo, hi, count, times, vals, texts in rows:
        blobs.append(times)
        blobs.append(vals)
        t_at, v_at = at, at + len(times)
        at = v_at + len(vals)
        if texts is None:
            index.append((sid, lo, hi, count, t_at, len(times), v_at, len(vals), None, 0))
        else:
            blobs.append(texts)
            index.append((sid, lo, hi, count, t_at, len(times), v_at, len(vals), at,
                          len(texts)))
            at += len(texts)
    db.execute(
        f"INSERT INTO chunks ({_CHUNK_COLUMNS}) SELECT value->>0, value->>1, value->>2,"
        " value->>3, substr(?2, value->>4, value->>5), substr(?2, value->>6, value->>7),"
        " CASE WHEN value->>8 IS NULL THEN NULL ELSE substr(?2, value->>8, value->>9) END"
        " FROM json_each(?1) ORDER BY key",
        # (an empty blob would be bound as NULL, and substr of NULL is NULL)
        (orjson.dumps(index).decode(), b"".join(blobs) or b"\0"))
