"""The export as text (`tsnet.export_text`): byte for byte the dict lines as
``tsnet export`` printed them, from lists and from numpy arrays; the chunk
merge that reads blobs straight into arrays; and SQLite's export of a series
a bounded group of chunks at a time, pending log included."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.export import series_lines
from tsnet.export_text import Pages, line_text, series_prefix, series_text
from tsnet.model import INT64_MAX, INT64_MIN, series_key
from tsnet.storage import chunks
from tsnet.storage import sqlite as sqlite_mod
from tsnet.storage.sqlite import PENDING_MAX_POINTS, SqliteEngine
from tsnet.testing.conformance import T0, S, make_batch

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
keys = st.tuples(names, st.none() | names,
                 st.dictionaries(names, st.text(st.characters(blacklist_categories=("Cs",)),
                                                max_size=5), max_size=3)
                 .map(lambda d: tuple(sorted(d.items()))))
ints = st.integers(INT64_MIN, INT64_MAX)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e16, 1e-4, 1e-5, 9.999999999999998e15, 5e-324, 1.7976931348623157e308])
texts = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


def reference(solution: str, key: Any, times: list, values: list, txts: Any) -> str:
    return "".join(line_text(ln) for ln in series_lines(solution, key, times, values, txts))


@settings(max_examples=300, deadline=None)
@given(key=keys, data=st.data(), kind=st.sampled_from(["int", "float", "mixed", "text"]))
def test_series_text_is_series_lines_as_text(key: Any, data: Any, kind: str) -> None:
    n = data.draw(st.integers(0, 20))
    times = sorted(data.draw(st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=n,
                                      max_size=n, unique=True)))
    pool = {"int": ints, "float": floats, "mixed": st.none() | ints | floats,
            "text": st.none() | ints | floats}[kind]
    values = data.draw(st.lists(pool, min_size=n, max_size=n))
    txts = data.draw(st.lists(texts, min_size=n, max_size=n)) if kind == "text" else None
    if txts is None and None in values:
        txts = ["t" if v is None else None for v in values]  # (a sample has a value or a text)
    elif txts is not None:
        txts = [x if v is not None or x is not None else "t" for v, x in zip(values, txts,
                                                                           strict=True)]
    want = reference("sol", key, times, values, txts)
    prefix = series_prefix("sol", key)
    assert series_text(prefix, times, values, txts) == want
    if kind in ("int", "float"):
        arr = np.array(values, dtype=np.int64 if kind == "int" else np.float64)
        assert series_text(prefix, np.array(times, dtype=np.int64), arr) == want


def test_series_text_floats_that_orjson_writes_otherwise() -> None:
    values = [1e16, 1.5e-5, 1e-7, 2e21, -1e22, math.nan, math.inf, -math.inf, 0.5, -0.0]
    times = [T0 + i for i in range(len(values))]
    text = series_text(series_prefix("s", ("m", None, ())), times, values)
    assert text == reference("s", ("m", None, ()), times, values, None)
    assert '"value":1e+16}' in text and '"value":1.5e-05}' in text and '"NaN"' in text


def test_series_text_refuses_columns_of_other_lengths() -> None:
    with pytest.raises(ValueError):
        series_text("x", [1, 2], [1])


def test_pages_hold_whole_lines_of_about_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A series is rendered a slice at a time, so a page never holds much
    more than its size, however long the series."""
    from tsnet import export_text

    monkeypatch.setattr(export_text, "SLICE", 3)
    pages = Pages(size=100)
    prefix = series_prefix("s", ("m", None, ()))
    out = list(pages.series(prefix, list(range(50)), list(range(50))))
    out = [*out, pages.take()]
    out = [page for page in out if page]
    assert max(map(len, out)) < 100 + 3 * len(prefix + '1,"value":1}\n')
    assert "".join(out) == reference("s", ("m", None, ()), list(range(50)), list(range(50)), None)
    assert all(p.endswith("\n") for p in out) and len(out) > 10
    assert pages.line({"kind": "x"}) is None and pages.take() == '{"kind":"x"}\n'


chunk_values = st.lists(ints, min_size=1, max_size=6) | st.lists(floats, min_size=1,
                                                                  max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=6, unique=True),
                          st.data()), min_size=0, max_size=5))
def test_merge_encoded_is_merge(parts: list) -> None:
    rows, decoded = [], []
    for times, data in parts:
        values = data.draw(st.lists(ints, min_size=len(times), max_size=len(times))
                           | st.lists(floats, min_size=len(times), max_size=len(times))
                           | st.lists(st.none() | ints, min_size=len(times),
                                      max_size=len(times)))
        txts = data.draw(st.none() | st.lists(texts, min_size=len(times), max_size=len(times)))
        enc = chunks.encode_chunk(times, values, txts)
        rows.append((enc.times, enc.values, enc.texts))
        decoded.append(chunks.decode_chunk(enc.times, enc.values, enc.texts))
    got = chunks.merge_encoded(rows)
    want = chunks.merge(decoded)
    as_list = [x.tolist() if isinstance(x, np.ndarray) else x for x in got]
    assert [t for t in as_list[0]] == want[0]
    assert [(type(v), repr(v)) for v in as_list[1]] == [(type(v), repr(v)) for v in want[1]]
    assert as_list[2] == want[2]


def test_merge_encoded_reads_steady_chunks_as_arrays() -> None:
    a = chunks.encode_chunk([1, 2, 3], [1.0, 2.0, 3.0])
    b = chunks.encode_chunk([4, 5], [4.0, 5.5])
    times, values, txts = chunks.merge_encoded([(a.times, a.values, None),
                                                (b.times, b.values, None)])
    assert isinstance(times, np.ndarray) and isinstance(values, np.ndarray) and txts is None
    assert times.tolist() == [1, 2, 3, 4, 5] and values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.5]
    c = chunks.encode_chunk([5, 6], [7, 8])  # an int chunk, and an overlap: the plain merge
    times, values, _ = chunks.merge_encoded([(b.times, b.values, None), (c.times, c.values, None)])
    assert times == [4, 5, 6] and values == [4.0, 7, 8]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(sqlite_mod, "EXPORT_GROUP", 5)  # groups of a few points
    eng = SqliteEngine(str(tmp_path / "t.sqlite"), busy_timeout=5.0)
    eng.open()
    yield eng
    eng.close()


def _rows(engine: SqliteEngine, sql: str) -> list:
    db = sqlite3.connect(engine.path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _series(engine: SqliteEngine) -> list[tuple]:
    return [(ln["tags"]["k"], ln["time_ms"], ln["value"]) for ln in engine.iter_export(S)
            if ln["kind"] == "series"]


def test_sqlite_exports_a_series_a_group_at_a_time(engine: SqliteEngine) -> None:
    """Chunks overlapping in time are merged together (the last write wins);
    disjoint runs of chunks are separate groups; the export is the same."""
    key, other = series_key("m", {"k": "a"}), series_key("m", {"k": "b"})
    ms = 1_000_000
    big = PENDING_MAX_POINTS + 1  # (batches past the pending log: chunks at once)
    filler = [(other, T0 + i * ms, i) for i in range(big)]
    engine.write(make_batch(samples=filler + [(key, T0 + i * ms, i) for i in range(0, 10)]))
    engine.write(make_batch(samples=filler + [(key, T0 + i * ms, 100 + i) for i in (5, 20, 30)]))
    engine.write(make_batch(samples=filler + [(key, T0 + i * ms, 200 + i) for i in (40, 41)]))
    engine.write(make_batch(samples=[*filler, (key, T0 + 41 * ms, 1.5)]))
    want = ([("a", T0 // ms + i, i) for i in range(10) if i != 5]
            + [("a", T0 // ms + 5, 105)])
    want.sort(key=lambda r: r[1])
    want += [("a", T0 // ms + 20, 120), ("a", T0 // ms + 30, 130), ("a", T0 // ms + 40, 240),
             ("a", T0 // ms + 41, 1.5)]
    got = [r for r in _series(engine) if r[0] == "a"]
    assert got == want
    text = "".join(engine.export_text_pages(S))
    assert text == "".join(line_text(ln) for ln in engine.iter_export(S))


def test_sqlite_export_groups_take_the_pending_log_in(engine: SqliteEngine,
                                                      tmp_path: Path) -> None:
    """Points still in the pending log (another process held the lock) join
    the group of their time, after its chunks: they are the newest writes."""
    key = series_key("m", {"k": "a"})
    ms = 1_000_000
    n = PENDING_MAX_POINTS + 1
    engine.write(make_batch(samples=[(key, T0 + i * ms, i) for i in range(n)]))
    engine.write(make_batch(samples=[(key, T0 + i * ms, i) for i in range(3000, 3000 + n)]))
    engine.write(make_batch(samples=[(key, T0 + i * ms, -i) for i in (3, 4000, 2500)]))
    assert _rows(engine, "SELECT count(*) FROM pending") == [(1,)]
    other = sqlite3.connect(engine.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the export cannot fold the log: it reads it as it is
    try:
        got = [r[1:] for r in _series(engine)]
        text = "".join(engine.export_text_pages(S))
    finally:
        other.execute("ROLLBACK")
        other.close()
    want = {T0 // ms + i: i for i in [*range(n), *range(3000, 3000 + n)]}
    want.update({T0 // ms + 3: -3, T0 // ms + 4000: -4000, T0 // ms + 2500: -2500})
    assert got == sorted(want.items())
    assert text == "".join(line_text(ln) for ln in engine.iter_export(S))
