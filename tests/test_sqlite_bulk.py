"""Rows inserted in one statement come back exactly as executemany's would, and
many small rows are one statement (one step: the interpreter lock let go once)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.storage import sqlite_bulk

_SCHEMA = """
CREATE TABLE t (a INTEGER, b TEXT, c TEXT);
CREATE TABLE chunks (id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL,
    min_time INTEGER NOT NULL, max_time INTEGER NOT NULL, count INTEGER NOT NULL,
    times BLOB NOT NULL, vals BLOB NOT NULL, texts BLOB);
"""

_int = st.integers(-(2**63), 2**63 - 1)
_text = st.text()  # (any code point but surrogates, which sqlite3 cannot store: NUL, escapes)
_row = st.tuples(_int, _text, st.one_of(st.none(), _text, st.sampled_from(["123", "null", "1.5"])))
_chunk = st.tuples(st.integers(0, 10**6), _int, _int, st.integers(0, 10**4),
                   st.binary(max_size=40), st.binary(max_size=40),
                   st.one_of(st.none(), st.binary(max_size=40)))


def _db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)
    return db


def _statements(db: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    return seen


@settings(max_examples=150, deadline=None)
@given(st.lists(_row, max_size=20))
def test_rows_come_back_as_executemany_wrote_them(tmp_path_factory, rows) -> None:
    bulk, plain = (_db(tmp_path_factory.mktemp("b") / "x.sqlite") for _ in range(2))
    sqlite_bulk.insert_rows(bulk, "t", ("a", "b", "c"), rows)
    plain.executemany("INSERT INTO t (a, b, c) VALUES (?, ?, ?)", rows)
    query = "SELECT rowid, a, typeof(a), b, typeof(b), c, typeof(c) FROM t ORDER BY rowid"
    assert bulk.execute(query).fetchall() == plain.execute(query).fetchall()


@settings(max_examples=150, deadline=None)
@given(st.lists(_chunk, max_size=20))
def test_chunk_rows_come_back_as_executemany_wrote_them(tmp_path_factory, rows) -> None:
    bulk, plain = (_db(tmp_path_factory.mktemp("c") / "x.sqlite") for _ in range(2))
    sqlite_bulk.insert_chunks(bulk, rows)
    plain.executemany("INSERT INTO chunks (series_id, min_time, max_time, count, times, vals,"
                      " texts) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    query = "SELECT *, typeof(times), typeof(texts) FROM chunks ORDER BY id"
    assert bulk.execute(query).fetchall() == plain.execute(query).fetchall()


def test_many_small_rows_are_one_statement(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    seen = _statements(db)
    sqlite_bulk.insert_rows(db, "t", ("a", "b", "c"), [(i, f"s{i}", None) for i in range(500)])
    sqlite_bulk.insert_chunks(db, [(i, i, i, 1, b"t" * 9, b"v" * 9, None) for i in range(500)])
    assert len([s for s in seen if s.startswith("INSERT")]) == 2
    assert db.execute("SELECT count(*) FROM t").fetchone() == (500,)
    assert db.execute("SELECT count(*), sum(length(times)) FROM chunks").fetchone() == (500, 4500)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), _int), max_size=20),
       st.lists(st.integers(0, 40), max_size=20))
def test_replacing_and_deleting_by_id_do_as_executemany(tmp_path_factory, rows, gone) -> None:
    """``replace``: a later row of an id wins, as ``INSERT OR REPLACE`` row by
    row; `delete_ids` deletes just those ids (absent ones, repeats: nothing)."""
    schema = "CREATE TABLE f (id INTEGER PRIMARY KEY, folded INTEGER NOT NULL)"
    bulk, plain = (sqlite3.connect(tmp_path_factory.mktemp("r") / "x.sqlite") for _ in range(2))
    for db in (bulk, plain):
        db.execute(schema)
    seen = _statements(bulk)
    sqlite_bulk.insert_rows(bulk, "f", ("id", "folded"), rows, replace=True)
    plain.executemany("INSERT OR REPLACE INTO f (id, folded) VALUES (?, ?)", rows)
    sqlite_bulk.delete_ids(bulk, "f", gone)
    plain.executemany("DELETE FROM f WHERE id = ?", [(i,) for i in gone])
    query = "SELECT id, folded FROM f ORDER BY id"
    assert bulk.execute(query).fetchall() == plain.execute(query).fetchall()
    writes = [s for s in seen if s.startswith(("INSERT", "DELETE"))]
    assert len(writes) == min(len(rows), 1) + min(len(gone), 1)  # (one statement each)


def test_large_chunks_and_texts_json_cannot_carry_go_row_by_row(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    seen = _statements(db)
    big = b"x" * (sqlite_bulk.BULK_BLOB_BYTES + 1)
    sqlite_bulk.insert_chunks(db, [(i, i, i, 1, big, b"", None) for i in range(3)])
    sqlite_bulk.insert_rows(db, "t", ("a", "b", "c"), [(1, "a\x00b", None), (2, "c", "d")])
    assert len([s for s in seen if s.startswith("INSERT")]) == 3 + 2
    assert db.execute("SELECT b FROM t ORDER BY a").fetchall() == [("a\x00b",), ("c",)]
