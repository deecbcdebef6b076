"""SqliteStorage: the conformance suite on a real file, plus what is SQLite's own:
WAL mode, one chunk row per series per batch, the chunk codec, sharing the file
with a second connection (the ``tsnet`` command), compaction."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import assume, given
from hypothesis import strategies as st

from tsnet.model import INT64_MAX, INT64_MIN, Message, Meta, Property, Record, series_key
from tsnet.records import SolutionRecord
from tsnet.storage import chunks, sqlite_series
from tsnet.storage.sqlite import SqliteEngine, SqliteStorage
from tsnet.testing.conformance import CPU, T0, S, StorageConformance, collect, make_batch, typed


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "tsnet.sqlite")


@pytest.fixture
def factory(db_path: str) -> Callable[[], SqliteStorage]:
    from twisted.internet import reactor

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    return lambda: SqliteStorage("default", db_path, reactor)


class TestSqliteConformance(StorageConformance):
    """Small batches go through the pending log, as acked HTTP writes do."""

    @pytest.fixture
    def storage_factory(self, factory: Callable[[], SqliteStorage]) -> Callable[[], Any]:
        return factory


class TestSqliteConformanceChunksOnly(StorageConformance):
    """Every batch written straight as chunks, as the telnet path's are."""

    @pytest.fixture
    def storage_factory(self, db_path: str) -> Callable[[], Any]:
        from twisted.internet import reactor

        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        return lambda: SqliteStorage("default", db_path, reactor, pending_max_points=0)


@pytest_twisted.async_yield_fixture
async def storage(db_path: str) -> Any:
    """For the tests of the chunk layout: no pending log."""
    from twisted.internet import reactor

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    s = SqliteStorage("default", db_path, reactor, pending_max_points=0)
    await s.open()
    yield s
    await s.close()


def _raw(db_path: str, sql: str, args: tuple = ()) -> list:
    """Look into the file through a connection of our own, as another process would."""
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# -- the file ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wal_mode_and_tables(storage: SqliteStorage, db_path: str) -> None:
    assert _raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    tables = {r[0] for r in _raw(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"series", "chunks", "properties", "messages", "meta", "records"} <= tables
    assert {"solutions", "tokens", "credentials", "info"} <= tables
    assert storage.path == db_path
    # the writer keeps 64 MiB of pages (the chunks' index, for folds and
    # compaction), the reader SQLite's default
    from tsnet.storage.sqlite import WRITER_CACHE_KIB

    cache = await storage._run(lambda: storage._engine.db.execute("PRAGMA cache_size").fetchone())
    assert cache == (-WRITER_CACHE_KIB,) and WRITER_CACHE_KIB == 64 * 1024


@pytest_twisted.ensureDeferred
async def test_one_chunk_row_per_series_per_batch(storage: SqliteStorage, db_path: str) -> None:
    keys = [series_key("m", {"i": str(i)}) for i in range(3)]
    await storage.write(make_batch(samples=[(k, T0 + j, j) for j in range(1000) for k in keys]))
    await storage.write(make_batch(samples=[(keys[0], T0 + 5000, 1.5)]))
    rows = _raw(db_path, "SELECT series_id, min_time, max_time, count FROM chunks ORDER BY id")
    assert [r[1:] for r in rows] == [(T0, T0 + 999, 1000)] * 3 + [(T0 + 5000, T0 + 5000, 1)]
    assert rows[3][0] == rows[0][0]
    assert _raw(db_path, "SELECT count(*) FROM series") == [(3,)]
    assert _raw(db_path, "SELECT tags FROM series ORDER BY id LIMIT 1") == [('{"i":"0"}',)]


@pytest_twisted.ensureDeferred
async def test_small_batches_are_logged_whole_then_folded(factory: Callable[[], SqliteStorage],
                                                          db_path: str) -> None:
    """A small batch is one row of the pending log, not a row per series; reads
    fold the log into chunks first, and last-write-wins holds across the log and
    the big batches written straight as chunks (which fold the log first)."""
    s = factory()
    await s.open()
    try:
        keys = [series_key("m", {"i": str(i)}) for i in range(50)]
        await s.write(make_batch(samples=[(k, T0, 1) for k in keys]))
        await s.write(make_batch(samples=[(keys[0], T0, 2), (keys[0], T0 + 1, 3)]))
        assert _raw(db_path, "SELECT points FROM pending ORDER BY id") == [(50,), (2,)]
        assert _raw(db_path, "SELECT count(*) FROM chunks") == [(0,)]
        big = [(keys[0], T0 + 1, 4.5)] + [(keys[1], T0 + j, j) for j in range(1, 2500)]
        await s.write(make_batch(samples=big))  # over the limit: folds the log, then chunks
        assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]
        await s.write(make_batch(samples=[(keys[1], T0 + 7, -1)]))  # logged again
        series = {key: (times, values) for key, times, values, _ in
                  await s.read_series(S, "m", None, None)}
        assert series[keys[0]] == ([T0, T0 + 1], [2, 4.5])
        assert series[keys[1]][1][:8] == [1, 1, 2, 3, 4, 5, 6, -1]
        assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]  # the read folded it
        with pytest.raises((ValueError, OverflowError)):  # refused now, not when folding
            await s.write(make_batch(samples=[(keys[2], T0, 2**64)]))
        assert await s.count_points(S) == 50 + 1 + 2499
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_pending_log_survives_a_reopen(factory: Callable[[], SqliteStorage],
                                             db_path: str) -> None:
    s = factory()
    await s.open()
    await s.write(make_batch(samples=[(CPU, T0, 1), (CPU, T0 + 1, 2.5)]))
    s._engine._db.close()  # as a crash would: nothing folded, nothing closed cleanly
    s._engine._db = None
    await s.close()
    assert _raw(db_path, "SELECT points FROM pending") == [(2,)]
    again = factory()
    await again.open()
    try:
        [(_, times, values, _)] = await again.read_series(S, None, None, None)
        assert (times, values) == ([T0, T0 + 1], [1, 2.5])
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_open_fails_cleanly_on_a_bad_path(tmp_path: Path) -> None:
    from twisted.internet import reactor

    (tmp_path / "a-file").write_text("")  # a missing folder is made; this one cannot be
    s = SqliteStorage("bad", str(tmp_path / "a-file" / "x.sqlite"), reactor)
    with pytest.raises(OSError):
        await s.open()
    await s.close()  # nothing to close, and no thread left behind
    assert s._pool is None


@pytest_twisted.ensureDeferred
async def test_concurrent_close_waits_for_queued_writes(factory: Callable) -> None:
    s = factory()
    await s.open()
    writes = [s.write(make_batch(samples=[(CPU, T0 + i, i)])) for i in range(50)]
    await s.close()
    for d in writes:
        assert d.called
    s2 = factory()
    await s2.open()
    try:
        assert await s2.count_points(S) == 50
    finally:
        await s2.close()


@pytest_twisted.ensureDeferred
async def test_a_second_process_shares_the_file(storage: SqliteStorage, db_path: str) -> None:
    """What the ``tsnet`` command does while the server runs: its changes reach the
    server's catalog generation, and deleted data does not confuse its series cache."""
    await storage.write(make_batch(samples=[(CPU, T0, 1)]))
    gen = await storage.catalog_generation()

    cli = SqliteEngine(db_path)
    cli.open()
    try:
        cli.create_solution(SolutionRecord("made-by-cli"))
        assert await storage.catalog_generation() != gen
        assert (await storage.get_solution("made-by-cli")).name == "made-by-cli"
        assert [ln["value"] for ln in cli.iter_export(S)] == [1]
        cli.delete_solution_data(S)
    finally:
        cli.close()

    assert await storage.count_points(S) == 0
    await storage.write(make_batch(samples=[(CPU, T0 + 1, 2)]))  # series row made afresh
    [(key, times, values, _)] = await storage.read_series(S, "cpu", None, None)
    assert (key, times, values) == (CPU, [T0 + 1], [2])


@pytest_twisted.ensureDeferred
async def test_export_is_a_snapshot_while_writes_go_on(storage: SqliteStorage) -> None:
    keys = [series_key("m", {"i": f"{i:02d}"}) for i in range(20)]
    await storage.write(make_batch(samples=[(k, T0 + j, j) for k in keys for j in range(1000)]))
    lines: list[dict] = []
    pending: list = []

    def emit(line: dict) -> None:
        if not pending:  # while the export runs, commit more data
            pending.append(storage.write(make_batch(samples=[(CPU, T0, 1)])))
        lines.append(line)

    await storage.export(S, emit)
    await pending[0]
    assert len(lines) == 20_000
    assert await storage.count_points(S) == 20_001


@pytest_twisted.ensureDeferred
async def test_compact_keeps_every_answer(storage: SqliteStorage, db_path: str) -> None:
    key = series_key("m", {}, entity="e")
    await storage.write(make_batch(samples=[(key, T0, 1, "a"), (key, T0 + 1, 2)]))
    await storage.write(make_batch(samples=[(key, T0, 1.5), (key, T0 + 2, None, "b")]))
    await storage.write(make_batch("other", samples=[(CPU, T0, 1)]))
    await storage.write(make_batch("other", samples=[(CPU, T0, 2)]))
    before = await collect(storage, None)
    assert await storage.compact(S, min_chunks=2) == 1
    assert _raw(db_path, "SELECT count(*) FROM chunks") == [(3,)]
    assert await storage.compact(None, min_chunks=2) == 1
    assert await storage.compact(None, min_chunks=2) == 0
    assert await collect(storage, None) == before
    [(_, _, values, texts)] = await storage.read_series(S, None, None, None)
    assert typed(values) == typed([1.5, 2, None])
    assert texts == ["a", None, "b"]


@pytest_twisted.ensureDeferred
async def test_compact_bounds_chunks_and_keeps_last_write_wins(
    storage: SqliteStorage, db_path: str
) -> None:
    """Runs of small chunks merge into chunks of at most ``target`` points, in
    place: a big chunk between two runs still overrides the run before it and is
    overridden by the run after it."""
    for i in range(6):  # run 1: six 1-point chunks at T0+i, values 0..5
        await storage.write(make_batch(samples=[(CPU, T0 + i, i)]))
    # a big chunk overwriting T0+0..T0+4 with 100..104
    await storage.write(make_batch(samples=[(CPU, T0 + i, 100 + i) for i in range(5)]))
    for i in range(3, 8):  # run 2: overwrites T0+3..T0+7 with 203..207
        await storage.write(make_batch(samples=[(CPU, T0 + i, 200 + i)]))
    before = await storage.read_series(S, None, None, None)
    assert await storage.compact(S, target=5, min_chunks=4) == 1
    counts = _raw(db_path, "SELECT count FROM chunks ORDER BY id")
    assert counts == [(5,), (1,), (5,), (5,)]
    assert max(c for (c,) in counts) <= 5
    after = await storage.read_series(S, None, None, None)
    assert after == before
    [(_, _, values, _)] = after
    assert values == [100, 101, 102, 203, 204, 205, 206, 207]
    assert await storage.compact(S, target=5, min_chunks=4) == 0  # nothing left worth it


@pytest_twisted.ensureDeferred
async def test_soft_deleted_records_are_not_exported(storage: SqliteStorage, db_path: str) -> None:
    await storage.write(make_batch("st", records=[Record(T0, b"1"), Record(T0 + 1, b"2")]))
    db = sqlite3.connect(db_path)
    db.execute("UPDATE records SET deleted = 1 WHERE time_ns = ?", (T0,))
    db.commit()
    db.close()
    assert [ln["time_ns"] for ln in await collect(storage, "st")] == [T0 + 1]


@pytest_twisted.ensureDeferred
async def test_everything_in_one_transaction(storage: SqliteStorage) -> None:
    """A bad meta kind fails the batch; none of the good items before it stay."""
    wb = make_batch(
        samples=[(CPU, T0, 1)],
        properties=[Property("e", "t", {}, {"a": "1"}, T0)],
        messages=[Message("e", T0, "m")],
        meta=[Meta("metric", "ok", {}), Meta("bogus", "x", {})],
    )
    with pytest.raises(ValueError):
        await storage.write(wb)
    assert not await storage.solution_has_data(S)


# -- the chunk codec -----------------------------------------------------------

int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
floats = st.floats(allow_nan=True, allow_infinity=True)
values_st = st.one_of(st.none(), int64s, floats)
texts_st = st.one_of(st.none(), st.text(max_size=20))


def test_codec_examples() -> None:
    cases: list[tuple[list, list | None]] = [
        ([1, 2, INT64_MAX, INT64_MIN], None),
        ([1.0, float("nan"), -0.0, float("inf")], None),
        ([1, 2.0, None, True], ["a", None, "", "ü\u2603"]),
        ([None], ["only text"]),
        ([None, None], None),
    ]
    for values, texts in cases:
        times = list(range(len(values)))
        enc = chunks.encode_chunk(times, values, texts)
        assert (enc.min_time, enc.max_time, enc.count) == (0, len(values) - 1, len(values))
        t, v, x = chunks.decode_chunk(enc.times, enc.values, enc.texts)
        assert t == times
        assert typed(v) == typed([int(a) if isinstance(a, bool) else a for a in values])
        assert x == texts


def test_codec_sizes() -> None:
    ints = chunks.encode_values(list(range(100)))
    assert ints[:1] == b"q" and len(ints) == 1 + 800
    assert chunks.encode_values([0.5] * 100)[:1] == b"d"
    mixed = chunks.encode_values([1, 0.5, None] * 10)
    assert mixed[:1] == b"m" and len(mixed) == 1 + 30 + 8 * 20
    assert chunks.encode_texts([None, None]) is None
    assert chunks.encode_times([1, 2]) == b"\x01" + b"\x00" * 7 + b"\x02" + b"\x00" * 7


def test_codec_refuses_what_it_cannot_keep() -> None:
    with pytest.raises(ValueError):
        chunks.encode_values([INT64_MAX + 1])
    with pytest.raises(ValueError):
        chunks.encode_values([1.5, INT64_MIN - 1])
    with pytest.raises(TypeError):
        chunks.encode_values(["1"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        chunks.encode_chunk([], [])
    with pytest.raises(ValueError):
        chunks.encode_chunk([1, 2], [1])
    with pytest.raises(ValueError):
        chunks.decode_values(b"z", 0)


@given(st.lists(st.tuples(int64s, values_st, texts_st), max_size=60))
def test_codec_round_trip(samples: list) -> None:
    if not samples:
        return
    times = [s[0] for s in samples]
    values = [s[1] for s in samples]
    texts = [s[2] for s in samples]
    enc = chunks.encode_chunk(times, values, texts)
    assert (enc.min_time, enc.max_time, enc.count) == (min(times), max(times), len(times))
    t, v, x = chunks.decode_chunk(enc.times, enc.values, enc.texts)
    assert t == times
    assert typed(v) == typed(values)
    assert x == (None if all(a is None for a in texts) else texts)


@given(st.lists(st.lists(int64s, max_size=40), max_size=5))
def test_codec_round_trip_homogeneous(int_lists: list) -> None:
    for ints in int_lists:
        assert chunks.decode_values(chunks.encode_values(ints), len(ints)) == ints
        as_floats = [float(i) for i in ints]
        back = chunks.decode_values(chunks.encode_values(as_floats), len(ints))
        assert typed(back) == typed(as_floats)


def _reference_merge(chunk_list: list) -> tuple:
    """Obviously right and slow: apply every sample in order, field by field."""
    state: dict[int, list] = {}
    for times, values, texts in chunk_list:
        for i, t in enumerate(times):
            cur = state.setdefault(t, [None, None])
            if values[i] is not None:
                cur[0] = values[i]
            if texts is not None and texts[i] is not None:
                cur[1] = texts[i]
    ts = sorted(state)
    vs = [state[t][0] for t in ts]
    xs = [state[t][1] for t in ts]
    return ts, vs, (xs if any(x is not None for x in xs) else None)


small_times = st.integers(min_value=-5, max_value=15)
chunk_st = st.lists(st.tuples(small_times, values_st, texts_st), min_size=1, max_size=12)


@given(
    st.lists(chunk_st, max_size=6),
    st.one_of(st.none(), small_times),
    st.one_of(st.none(), small_times),
)
def test_merge_is_last_write_wins(chunk_samples: list, start: Any, end: Any) -> None:
    decoded = []
    for samples in chunk_samples:
        texts = [s[2] for s in samples]
        enc = chunks.encode_chunk([s[0] for s in samples], [s[1] for s in samples], texts)
        decoded.append(chunks.decode_chunk(enc.times, enc.values, enc.texts))
    merged = chunks.merge(decoded)
    ts, vs, xs = _reference_merge(decoded)
    assert merged[0] == ts
    assert typed(merged[1]) == typed(vs)
    assert merged[2] == xs
    assert chunks.count_distinct(d[0] for d in decoded) == len(ts)

    sliced = chunks.time_slice(merged, start, end)
    keep = [
        i for i, t in enumerate(ts) if (start is None or t >= start) and (end is None or t <= end)
    ]
    assert sliced[0] == [ts[i] for i in keep]
    assert typed(sliced[1]) == typed([vs[i] for i in keep])
    want_texts = [xs[i] for i in keep] if xs is not None else None
    if want_texts is not None and all(x is None for x in want_texts):
        want_texts = None
    assert sliced[2] == want_texts


def test_nan_merges_like_any_value() -> None:
    nan = float("nan")
    merged = chunks.merge([([1, 2], [nan, 1.0], None), ([1], [2.0], None), ([2], [nan], None)])
    assert merged[0] == [1, 2]
    assert merged[1][0] == 2.0 and math.isnan(merged[1][1])


@pytest_twisted.ensureDeferred
async def test_a_long_read_holds_no_commit(factory: Callable[[], SqliteStorage]) -> None:
    """Series reads run on their own connection and thread: a write issued
    while a read of a million points runs commits before that read is done,
    and a read issued after a write's Deferred fired sees the write."""
    from tests.helpers.clients import sleep

    storage = factory()
    await storage.open()
    try:
        keys = [series_key("big", {"host": f"h{i}"}) for i in range(100)]
        for part in range(10):
            await storage.write(make_batch(samples=[
                (k, T0 + (part * 1000 + j) * 1_000_000, float(j))
                for k in keys for j in range(1000)]))
        order: list[str] = []
        read = storage.read_series(S, "big", None, None)
        read.addCallback(lambda rows: order.append("read") or rows)
        await sleep(0.05)  # the read is under way in its thread
        assert order == []
        await storage.write(make_batch(samples=[(CPU, T0, 1.0)]))
        order.append("write")
        rows = await read
        assert order == ["write", "read"]
        assert sum(len(times) for _, times, _, _ in rows) == 1_000_000
        [(_, _, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert values == [1.0]
    finally:
        await storage.close()


_names = st.text(alphabet=st.characters(blacklist_categories=()), max_size=12)  # (surrogates too)


@given(_names, st.none() | _names, st.dictionaries(_names, _names, max_size=4))
def test_a_series_tags_text_is_the_same_whichever_encoder_wrote_it(
        metric: str, entity: str | None, tags: dict[str, str]) -> None:
    """Tags texts of plain names are written by orjson (a fleet's first batch
    creates 100 k of them), the others by json.dumps, and both must give the
    text json.dumps always gave: a lookup finds a series by it."""
    import json

    key = series_key(metric, tags, entity)
    assert sqlite_series.tags_text(key) == json.dumps(dict(key[2]), separators=(",", ":"),
                                                      sort_keys=True)


_plain = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8)
_any = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # (SQLite
_series = st.tuples(_plain | _any, st.none() | _plain,  # binds no lone surrogate)
                    st.dictionaries(_plain | _any, _plain | _any, max_size=3))


@given(_plain, st.lists(_series, min_size=1, max_size=6))
def test_new_series_rows_in_bulk_hold_the_texts_one_by_one_would(
        solution: str, made: list[tuple[str, str | None, dict[str, str]]]) -> None:
    """The rows of a batch's new series go in as one JSON text that SQLite
    cuts up (`sqlite_series.insert`), and their ``tags`` must be the text
    `sqlite_series.tags_text` gives, escaped names or not; the keys are
    found again, in bulk and one by one, and a key not written is not."""
    keys = list(dict.fromkeys(series_key(m, tags, e) for m, e, tags in made))
    absent = (keys[0][0] + "~", keys[0][1], keys[0][2])
    assume(absent not in keys)
    engine = SqliteEngine(":memory:")
    engine.open()
    db = engine.db
    sqlite_series.insert(db, solution, 1, keys)
    rows = db.execute("SELECT id, solution, metric, entity, tags FROM series ORDER BY id")
    assert rows.fetchall() == [(i, solution, key[0], key[1], sqlite_series.tags_text(key))
                               for i, key in enumerate(keys, 1)]
    assert sqlite_series.find_ids(db, solution, [*keys, absent]) == {
        key: i for i, key in enumerate(keys, 1)}
    assert [sqlite_series.find_id(db, solution, key) for key in [*keys, absent]] == [
        *range(1, len(keys) + 1), None]
    engine.close()


def test_many_new_series_in_one_batch_get_ids_rows_index_and_meta(tmp_path: Path) -> None:
    """A batch of many unknown series is created in bulk: every series once,
    with ids of its own, its tag index rows and (ATSD) implicit meta, and a
    later batch finds them all by key after the cache forgot them."""
    e = SqliteEngine(str(tmp_path / "x.db"))
    e.open()
    keys = [series_key("m", {"host": f"h{i}", "dc": "d" + "é" * (i % 2)},
                       "ent" if i % 3 == 0 else None) for i in range(3000)]
    wb = make_batch(S)
    samples = wb.for_solution(S).samples
    samples.keys, samples.times, samples.values = keys, [T0] * 3000, list(range(3000))
    samples.recount()
    e.write(wb)
    db = e.db
    ids = dict(zip(keys, map(e._ids[S].__getitem__, keys), strict=True))
    assert len(set(ids.values())) == 3000
    rows = {r[0]: r[1:] for r in db.execute("SELECT id, metric, entity, tags FROM series")}
    assert len(rows) == 3000
    for key, sid in ids.items():
        assert rows[sid][:2] == (key[0], key[1])
    (tagged,) = db.execute("SELECT count(DISTINCT series_id) FROM series_tags").fetchone()
    assert tagged == 3000
    assert {r[0] for r in db.execute("SELECT name FROM meta WHERE kind = 'entity'")} == {"ent"}
    e._drop_ids()
    again = make_batch(S)
    more = again.for_solution(S).samples
    more.keys, more.times, more.values = keys, [T0 + 1] * 3000, list(range(3000))
    more.recount()
    e.write(again)
    assert db.execute("SELECT count(*) FROM series").fetchone() == (3000,)
    assert {k: e._ids[S][k] for k in keys} == ids
    e.close()


def _write_keys(e: SqliteEngine, keys: list, t: int) -> None:
    wb = make_batch(S)
    samples = wb.for_solution(S).samples
    samples.keys, samples.times, samples.values = keys, [t] * len(keys), list(range(len(keys)))
    samples.recount()
    e.write(wb)


_any_name = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1,
                    max_size=6)
_plain_name = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                      min_size=1, max_size=6)


@given(st.lists(st.dictionaries(_plain_name | _any_name, _plain_name | _any_name,
                                max_size=3), min_size=1, max_size=20))
def test_the_tag_index_holds_each_new_series_names_as_given(tagsets: list) -> None:
    """A batch of new series gets its index rows from SQLite's json_each over
    the rows' ``tags`` texts when no name needs an escape, else from Python:
    either way the rows are exactly (tag key, tag value, metric, id) of each
    series, quotes, backslashes and characters past ASCII included."""
    e = SqliteEngine(":memory:")
    e.open()
    try:
        keys = list(dict.fromkeys(series_key("m", tags) for tags in tagsets))
        _write_keys(e, keys, T0)
        want = {(S, k, v, "m", e._ids[S][key]) for key in keys for k, v in key[2]}
        got = set(e.db.execute("SELECT solution, tagk, tagv, metric, series_id"
                               " FROM series_tags"))
        assert got == want
    finally:
        e.close()


def test_the_ids_by_key_object_go_with_the_series_they_name(tmp_path: Path) -> None:
    """The write path finds a point's series by its key object (`SeriesRefs`);
    when the series are deleted, here or by another process, those ids are
    gone, and the same key objects make new series that hold the new points."""
    path = str(tmp_path / "x.db")
    e = SqliteEngine(path)
    e.open()
    keys = [series_key("m", {"host": f"h{i}"}) for i in range(20)]
    _write_keys(e, keys, T0)
    assert len(e._refs[S]) == 20
    e.delete_solution_data(S)
    _write_keys(e, keys, T0 + 1)
    other = SqliteEngine(path)
    other.open()
    try:
        assert [len(t) for _, t, _, _ in other.read_series(S, "m")] == [1] * 20
        other.delete_solution_data(S)
    finally:
        other.close()
    _write_keys(e, keys, T0 + 2)
    read = e.read_series(S, "m")
    assert sorted(key for key, _, _, _ in read) == sorted(keys)
    assert {(tuple(t), tuple(v)) for _, t, v, _ in read} == {
        ((T0 + 2,), (i,)) for i in range(20)}
    e.close()


def test_a_cache_that_holds_every_series_skips_lookups_and_stays_right(
        tmp_path: Path) -> None:
    """From an empty file every series is made here, so an uncached key is new
    and needs no lookup; but a key with its tags in another order is an old
    series, and a series another process made (the ``tsnet`` command) is
    found, not made twice (the UNIQUE key would refuse the whole batch)."""
    path = str(tmp_path / "x.db")
    e = SqliteEngine(path)
    e.open()
    first = [("m", None, (("a", f"{i}"), ("b", "x"))) for i in range(50)]
    _write_keys(e, first, T0)
    assert e._top == 50  # every series cached: no lookup for the next new ones
    turned = [("m", None, (("b", "x"), ("a", f"{i}"))) for i in range(50)]
    _write_keys(e, [*turned, ("m", None, (("a", "new"),))], T0 + 1)
    assert e.db.execute("SELECT count(*) FROM series").fetchone() == (51,)
    assert [e._ids[S][k] for k in turned] == [e._ids[S][k] for k in first]
    other = SqliteEngine(path)
    other.open()
    try:
        _write_keys(other, [("m", None, (("a", "theirs"),))], T0 + 2)
    finally:
        other.close()
    _write_keys(e, [("m", None, (("a", "theirs"),)), ("m", None, (("a", "mine"),))], T0 + 3)
    rows = e.db.execute("SELECT tags, count(*) FROM series GROUP BY tags").fetchall()
    assert len(rows) == 53 and {n for _, n in rows} == {1}
    e.fold_pending()
    [(sid,)] = e.db.execute("SELECT id FROM series WHERE tags = ?", ('{"a":"theirs"}',))
    (count,) = e.db.execute("SELECT sum(count) FROM chunks WHERE series_id = ?", (sid,)).fetchone()
    assert count == 2  # both processes' points, on the one series
    e.close()


def test_small_chunk_counts_are_a_byte_a_series_and_ready_in_order() -> None:
    from tsnet.storage.sqlite import _SmallChunks

    small = _SmallChunks(3, [(5, 2), (1, 7)])
    assert small.take(None) == [1]
    small.add(9)
    small.add(5)  # 5 reaches 3: ready after 1
    for _ in range(300):
        small.add(2)  # saturates, stays ready once
    assert small.take(None) == [1, 5, 2] and small.take(2) == [1, 5]
    assert (small.count(2), small.count(9), small.count(10**6)) == (255, 1, 0)
    small.set(5, 0)
    assert small.take(None) == [1, 2] and len(small.counts) < 20


def test_compaction_takes_the_series_that_filled_up_first(tmp_path: Path) -> None:
    """Background compaction (no solution given) takes its series from the
    ready list, oldest first, instead of scanning every series' count."""
    SEC = 10**9
    e = SqliteEngine(str(tmp_path / "x.db"), pending_max_points=0)
    e.open()
    late, early = series_key("m", {"h": "late"}), series_key("m", {"h": "early"})
    for i in range(8):
        e.write(make_batch(S, [(early, T0 + i * SEC, i)]))
    assert e.compact(None, max_series=1) == 1  # early: counted as it was written
    for i in range(8):
        e.write(make_batch(S, [(late, T0 + i * SEC, i)]))
        e.write(make_batch(S, [(early, T0 + (20 + i) * SEC, i)]))
    ids = e._ids[S]
    assert e._small.take(None) == [ids[late], ids[early]]
    assert e.compact(None, max_series=1) == 1
    rows = dict(e.db.execute("SELECT series_id, count(*) FROM chunks GROUP BY series_id"))
    assert rows == {ids[late]: 1, ids[early]: 9}
    e.close()


def test_small_chunks_of_an_existing_file_are_counted_a_step_at_a_time(tmp_path: Path) -> None:
    """The series a file held when it was opened are counted from the table a
    step of ``max_series`` ids a call (each such step reports the ids it
    counted and compacts nothing); a chunk written before the count reached
    its series is counted once, not twice."""
    SEC = 10**9
    path = str(tmp_path / "x.db")
    keys = [series_key("m", {"h": str(i)}) for i in range(5)]
    e = SqliteEngine(path, pending_max_points=0)
    e.open()
    for i in range(7):  # 7 small chunks each: one short of compaction
        e.write(make_batch(S, [(k, T0 + i * SEC, i) for k in keys]))
    ids = dict(e._ids[S])
    e.close()

    e = SqliteEngine(path, pending_max_points=0)
    e.open()
    assert e._small is not None and not e._small.scanned
    e.write(make_batch(S, [(keys[4], T0 + 7 * SEC, 7)]))  # 8th chunk, before its count
    assert e.compact(None, max_series=2) == 2  # ids 1-2 counted, nothing compacted
    assert e.compact(None, max_series=2) == 2  # ids 3-4
    assert e.compact(None, max_series=2) == 1  # id 5, the last made before open
    assert e._small.scanned and e._small.take(None) == [ids[keys[4]]]
    assert e._small.count(ids[keys[4]]) == 8 and e._small.count(ids[keys[0]]) == 7
    assert e.compact(None, max_series=2) == 1  # the scan done, compaction goes on
    rows = dict(e.db.execute("SELECT series_id, count(*) FROM chunks GROUP BY series_id"))
    assert rows[ids[keys[4]]] == 1 and rows[ids[keys[0]]] == 7
    e.close()


_texts = st.text(alphabet=st.sampled_from(["a", "b", "\x00", "\x01", "\x7f", "é", "\ud800",
                                           "\U0001f600", "\uffff"]), max_size=4)
_tag_tuples = st.dictionaries(_texts, _texts, max_size=3).map(lambda d: tuple(sorted(d.items())))


@given(st.lists(_tag_tuples, min_size=2, max_size=8))
def test_the_tags_sort_bytes_sort_as_the_tags_do(tag_sets: list) -> None:
    """NUL, a prefix, an empty text, a lone surrogate, past the BMP: the bytes
    SQLite sorts the export's series by give `rules.series_sort_key`'s order."""
    from tsnet.storage.sqlite import _dumps, _tags_order

    by_bytes = sorted(tag_sets, key=lambda tags: _tags_order(_dumps(dict(tags))))
    assert by_bytes == sorted(tag_sets)


def test_the_export_lists_series_in_key_order_from_the_file(tmp_path: Path) -> None:
    """The export's series come sorted by SQLite (not a list of every key in
    memory), in `rules.series_sort_key` order: metric, no entity first, entity,
    tags; from a file and in memory."""
    from tsnet.storage.rules import series_sort_key

    keys = [("m", None, (("a", "b"),)), ("m", None, (("a", "b"), ("c", ""))),
            ("m", "", ()), ("m", None, ()), ("l", "z", (("a", "\x00"),)),
            ("m", "e", (("a", "b\x00"),)), ("m", "e", (("a", "b"),)),
            ("m", "e", (("ab", ""),)), ("m\x00", None, ()), ("é", None, (("k", "é"),))]
    for path in (str(tmp_path / "x.db"), ":memory:"):
        e = SqliteEngine(path)
        e.open()
        _write_keys(e, keys, T0)
        got = [(r["metric"], r.get("entity"), tuple(sorted(r["tags"].items())))
               for r in e.iter_export() if r["kind"] == "series"]
        assert got == sorted(keys, key=series_sort_key)
        e.close()
