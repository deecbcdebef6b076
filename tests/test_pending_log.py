"""The SQLite pending log: its row codec (TSP4, and TSP3 and TSP2 rows as
users' files hold them), the numpy fold against the plain one and against the points
themselves, a part's fold reading only its part (from the file too), rows from
the first (JSON) form, row-form samples, and small writes committed on the
reactor thread."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import deferLater

from tsnet.model import INT64_MAX, INT64_MIN, Column, WriteBatch, series_key
from tsnet.storage import chunks, pending
from tsnet.storage.sqlite import INLINE_NEW_SERIES, PENDING_MAX_POINTS, SqliteStorage
from tsnet.testing.conformance import CPU, T0, S, make_batch, typed

values_st = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
)


@st.composite
def rows_st(draw: Any) -> list[tuple[list[int], list[int], list, list | None]]:
    """A few pending rows over a handful of series, with every value kind."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 25))
        # (40: several series a part, every part of the modulo; the blocks of
        # 64 ids: 1100 spans every part, the list holds neighbours and edges)
        ids = draw(st.sampled_from([st.integers(1, 6), st.integers(1, 40),
                                    st.integers(1, 1100),
                                    st.sampled_from([1, 2, 63, 64, 65, 127, 128, 1023, 1024])]))
        sids = draw(st.lists(ids, min_size=n, max_size=n))
        times = draw(st.lists(st.integers(-10, 10).map(lambda t: T0 + t), min_size=n, max_size=n))
        kind = draw(st.sampled_from(["int", "float", "any"]))
        one = {"int": st.integers(INT64_MIN, INT64_MAX), "float": st.floats(), "any": values_st}
        values = draw(st.lists(one[kind], min_size=n, max_size=n))
        texts = draw(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.text(max_size=3)),
                                                   min_size=n, max_size=n)))
        out.append((sids, times, values, texts))
    return out


def encode_v2(sids: list[int], times: list[int], values: list,
              texts: list | None = None) -> bytes:
    """A row of the form before TSP3, as tsnet wrote it (users' files hold
    them): ``TSP2``, N, the ids, times and values in log order, the texts."""
    blob = b"".join((b"TSP2", chunks.encode_times([len(sids)]), chunks.encode_times(sids),
                     chunks.encode_times(times), chunks.encode_values(values)))
    text_blob = chunks.encode_texts(texts)
    return blob if text_blob is None else blob + b"\n" + text_blob


def encode_v3(sids: list[int], times: list[int], values: list,
              texts: list | None = None) -> bytes:
    """A row of the form before TSP4 (users' files hold them): a series'
    part is its id modulo 16."""
    return pending._encode(sids, times, values, texts, pending.MAGIC_V3)


def bits_of(blob: bytes) -> int:
    """`pending.part_of`'s block bits for a row's form."""
    return 6 if blob[:4] == b"TSP4" else 0


def by_part(row: tuple, bits: int = 6) -> tuple:
    """A row's columns stably reordered by part: the order TSP4 (TSP3: 0
    bits) keeps."""
    order = sorted(range(len(row[0])), key=lambda i: pending.part_of(row[0][i], bits))
    return tuple(None if col is None else [col[i] for i in order] for col in row)


@settings(max_examples=150, deadline=None)
@given(rows_st())
def test_codec_round_trip(rows: list) -> None:
    """TSP4 keeps the points in part order (a series' part: its block of 64
    ids, modulo 16), each series' in log order, with an index entry (part,
    points, ints, floats) per part; TSP3 rows are the same with the id
    modulo 16 for the part, and TSP2 rows decode in log order."""
    for sids, times, values, texts in rows:
        for blob, bits in ((pending.encode(sids, times, values, texts), 6),
                           (encode_v3(sids, times, values, texts), 0)):
            assert blob[:4] == (b"TSP4" if bits else b"TSP3")
            s, t, v, x = pending.decode(blob)
            ws, wt, wv, wx = by_part((sids, times, values, texts), bits)
            assert (s, t, typed(v)) == (ws, wt, typed(wv))
            assert x == (wx if wx is not None and wx.count(None) != len(wx) else None)
            part = [pending.part_of(sid, bits) for sid in s]
            parts = sorted(set(part))
            entries = [(p, part.count(p),
                        sum(1 for i in range(len(s)) if part[i] == p and type(v[i]) is int),
                        sum(1 for i in range(len(s)) if part[i] == p and type(v[i]) is float))
                       for p in parts]
            assert blob[12:20] == len(parts).to_bytes(8, "little")
            assert blob[20:20 + 32 * len(parts)] == b"".join(
                chunks.encode_times(list(e)) for e in entries)
        s, t, v, x = pending.decode(encode_v2(sids, times, values, texts))
        assert (s, t, typed(v)) == (sids, times, typed(values))


@settings(max_examples=200, deadline=None)
@given(rows_st())
def test_numpy_fold_equals_the_plain_fold(rows: list) -> None:
    """Byte for byte: the same chunks (NaN bits, -0.0, None, ints past 2**53),
    one per series, points in log order."""
    blobs = [pending.encode(s, t, v) for s, t, v, _ in rows]  # numpy takes rows without texts
    blobs += [encode_v2(s, t, v) for s, t, v, _ in rows]  # (and TSP2 and TSP3 rows beside)
    blobs += [encode_v3(s, t, v) for s, t, v, _ in rows]
    rows = rows + rows + rows
    fast = sorted(pending.fold(blobs))
    plain = sorted(pending._fold_lists(blobs))
    assert fast == plain
    assert [r[0] for r in fast] == sorted({sid for s, *_ in rows for sid in s})
    assert sum(r[3] for r in fast) == sum(len(s) for s, *_ in rows)


@settings(max_examples=200, deadline=None)
@given(rows_st(), st.data())
def test_folding_part_by_part_gives_the_whole_fold(rows: list, data: Any) -> None:
    """Parts already folded out of a row are left out, a part's fold takes
    only its series, and the parts together are the whole fold (numpy and
    the plain path alike)."""
    blobs = [pending.encode(s, t, v) for s, t, v, _ in rows]
    masks = [data.draw(st.integers(0, pending.ALL_PARTS)) for _ in blobs]
    kept = [pending.encode(*_kept(pending.decode(b)[:3], m))
            for b, m in zip(blobs, masks, strict=True)]
    want = sorted(pending._fold_lists(kept))
    assert sorted(pending.fold(blobs, masks)) == want
    by_part = sorted(r for p in range(pending.PARTS) for r in pending.fold(blobs, masks, p))
    assert by_part == want
    for p in range(pending.PARTS):
        assert all(pending.part_of(r[0]) == p for r in pending._fold_lists(blobs, masks, p))


def expected(rows: list, masks: list[int], bits: list[int],
             part: int | None = None) -> list[tuple]:
    """The chunk rows a fold must give, straight from the points: per series
    (left out: parts in a row's mask, and other parts than ``part``, as the
    row's form parts series: ``bits``), its points in log order as one chunk."""
    out: dict[int, tuple[list, list, list]] = {}
    for (sids, times, values, texts), mask, b in zip(rows, masks, bits, strict=True):
        for i, sid in enumerate(sids):
            p = pending.part_of(sid, b)
            if not mask >> p & 1 and part in (None, p):
                col = out.setdefault(sid, ([], [], []))
                col[0].append(times[i])
                col[1].append(values[i])
                col[2].append(None if texts is None else texts[i])
    return sorted((sid, *chunks.encode_chunk(*col)) for sid, col in out.items())


@settings(max_examples=200, deadline=None)
@given(rows_st(), st.data())
def test_a_parts_fold_is_its_share_of_the_whole_fold(rows: list, data: Any) -> None:
    """TSP4, TSP3 and TSP2 rows side by side, every value kind, with texts or
    not, parts already folded out or not: the whole fold is the points' own
    chunks, and part p's fold (of whole rows, or of what `read_part` read of
    them) is exactly the points of part p, as each row's form parts series;
    in a log of one form, that is the whole fold's series of part p."""
    if not data.draw(st.booleans()):
        rows = [(s, t, v, None) for s, t, v, _ in rows]  # (the numpy path)
    forms = data.draw(st.sampled_from([[pending.encode], [encode_v3],
                                       [pending.encode, encode_v3, encode_v2]]))
    blobs = [data.draw(st.sampled_from(forms))(*row) for row in rows]
    bits = [bits_of(b) for b in blobs]
    masks = [data.draw(st.integers(0, pending.ALL_PARTS)) for _ in blobs]
    whole = sorted(pending.fold(blobs, masks))
    assert whole == expected(rows, masks, bits)
    for p in range(pending.PARTS):
        share = expected(rows, masks, bits, p)
        if len(set(bits)) == 1:
            assert share == [r for r in whole if pending.part_of(r[0], bits[0]) == p]
        assert sorted(pending.fold(blobs, masks, p)) == share
        read = [pending.read_part(b, p) for b in blobs]
        assert sorted(pending.fold(read, masks, p)) == share
        assert all(len(r) <= len(b) for r, b in zip(read, blobs, strict=True))


class CountingReads:
    """A row read through slices (as `read_part` reads an `sqlite3.Blob`),
    counting the bytes it hands out."""

    def __init__(self, row: Any) -> None:
        self.row, self.read = row, 0

    def __len__(self) -> int:
        return len(self.row)

    def __getitem__(self, key: slice) -> bytes:
        out = self.row[key]
        self.read += len(out)
        return out


def test_a_part_is_read_from_the_file_alone(tmp_path: Path) -> None:
    """From a row in an SQLite file (`sqlite3.Blob`), `read_part` reads the
    header and the part's slices: with every part about as big, about a
    sixteenth of the row; and what it read is what the bytes give, in the
    row's form (a TSP3 row's part stays TSP3).  A TSP2 row has no index: it is
    read whole."""
    sids = [1 + i % 1000 for i in range(8000)]
    times = [T0 + i for i in range(8000)]
    for values in ([i / 2 for i in range(8000)], [i if i % 3 else None for i in range(8000)]):
        db = sqlite3.connect(tmp_path / "rows.sqlite")
        db.execute("CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, batch BLOB)")
        db.execute("DELETE FROM pending")
        row, old = pending.encode(sids, times, values), encode_v2(sids, times, values)
        db.executemany("INSERT INTO pending (id, batch) VALUES (?, ?)", [(1, row), (2, old)])
        db.commit()
        for p in (0, 7, 15):
            with db.blobopen("pending", "batch", 1, readonly=True) as blob:
                counted = CountingReads(blob)
                got = pending.read_part(counted, p)
            assert got == pending.read_part(row, p)
            # (the header, index and type byte, then just what the part's row holds)
            assert counted.read <= 20 + 32 * pending.PARTS + 1 + len(got) - 20 - 32
            assert len(got) < len(row) / (pending.PARTS - 1)
            assert pending.decode(got)[0] == [s for s in sids if pending.part_of(s) == p]
            with db.blobopen("pending", "batch", 2, readonly=True) as blob:
                assert pending.read_part(blob, p) == old
            v3 = pending.read_part(encode_v3(sids, times, values), p)
            assert v3[:4] == b"TSP3"
            assert pending.decode(v3)[0] == [s for s in sids if s % pending.PARTS == p]
        db.close()


def _kept(row: tuple, mask: int) -> tuple:
    keep = [i for i, sid in enumerate(row[0]) if pending.in_part(sid, mask, None)]
    return tuple([col[i] for i in keep] for col in row)


def test_fold_keeps_log_order_within_a_series() -> None:
    a = pending.encode([7, 8, 7], [T0, T0, T0 + 1], [1, 2.5, 3])
    b = pending.encode([7], [T0], [None])
    rows = {r[0]: r for r in pending.fold([a, b])}
    assert rows[7][1:4] == (T0, T0 + 1, 3)
    assert pending.group_by_series([7, 8, 7, 7], [T0, T0, T0 + 1, T0],
                                   [1, 2.5, 3, None], None)[7].values == [1, 3, None]


def test_a_foreign_row_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pending-log row format"):
        pending.decode(b"XXXX" + bytes(16))
    with pytest.raises((ValueError, OverflowError)):
        pending.encode([1], [T0], [2**64])


# -- the engine ------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir()
    return str(tmp_path / "data" / "tsnet.sqlite")


@pytest_twisted.async_yield_fixture
async def storage(db_path: str) -> Any:
    from twisted.internet import reactor

    s = SqliteStorage("default", db_path, reactor, busy_timeout=5.0)
    await s.open()
    yield s
    await s.close()


#: each pending row's folded parts and points
FOLDED = ("SELECT COALESCE(f.folded, 0), p.points FROM pending p"
          " LEFT JOIN pending_folded f ON f.id = p.id ORDER BY p.id")


def _raw(db_path: str, sql: str) -> list:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def rows_batch(points: list[tuple]) -> WriteBatch:
    """A batch in the row form the HTTP fast path makes."""
    wb = WriteBatch()
    s = wb.for_solution(S).samples
    for key, t, v in points:
        s.keys.append(key)
        s.times.append(t)
        s.values.append(v)
    s.count = len(points)
    return wb


@pytest_twisted.ensureDeferred
async def test_rows_and_columns_in_one_batch(storage: SqliteStorage) -> None:
    """Row-form samples land as column-form ones do, in the pending log and (a
    big batch) straight as chunks; rows come after the columns they join."""
    other = series_key("cpu", {"host": "b"})
    wb = rows_batch([(CPU, T0 + 1, 1.5), (other, T0, 7), (CPU, T0 + 2, float("nan"))])
    wb.for_solution(S).samples.add(CPU, T0, 1)
    wb.for_solution(S).samples.columns[series_key("cpu", {"host": "empty"})] = Column()
    await storage.write(wb)  # (an empty column is no series)
    big = rows_batch([(other, T0 + i, i) for i in range(1, PENDING_MAX_POINTS + 10)])
    await storage.write(big)
    series = {k: (t, v) for k, t, v, _ in await storage.read_series(S, "cpu", None, None)}
    assert series[CPU][0] == [T0, T0 + 1, T0 + 2]
    assert typed(series[CPU][1])[:2] == typed([1, 1.5]) and math.isnan(series[CPU][1][2])
    assert series[other][1][:3] == [7, 1, 2]
    assert set(series) == {CPU, other}  # no series for the empty column
    assert await storage.count_points(S) == 4 + PENDING_MAX_POINTS + 9


@pytest_twisted.ensureDeferred
async def test_a_wide_batch_is_logged_whole_and_folded_many_at_once(
        storage: SqliteStorage, db_path: str, monkeypatch: Any) -> None:
    """A batch of few points per series (a fleet) would be a chunk row per
    point: it goes to the pending log however big it is, and when a batch
    would take the log past PENDING_FOLD_POINTS one part of the log is folded
    first (the series of the blocks of ids `part_of` puts in part 0), so a fold holds
    the writer a part's time; reads see every point either way."""
    from twisted.internet import reactor

    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_POINTS", 3 * PENDING_MAX_POINTS)
    monkeypatch.setattr(sqlite_storage, "FOLD_POINTS_PER_SERIES", 0)  # (the mark: that alone)
    n = PENDING_MAX_POINTS + 500
    keys = [series_key("fleet", {"device": f"d{i:05}"}) for i in range(n)]
    for round_ in range(2):
        await storage.write(make_batch(samples=[(k, T0 + round_, round_) for k in keys]))
    assert _raw(db_path, "SELECT count(*), sum(points) FROM pending") == [(2, 2 * n)]
    assert _raw(db_path, "SELECT count(*) FROM chunks") == [(0,)]
    # a third takes the log past the fold mark: once it is committed, part 0
    # of the log becomes chunks, in a transaction of its own
    await storage.write(make_batch(samples=[(k, T0 + 2, 2) for k in keys]))
    await storage._run(lambda: None)  # (the fold's first half, queued behind the write)
    assert _raw(db_path, FOLDED) == [(0, n), (0, n), (0, n)]  # (made, not committed)
    # (and its second, at its turn: no write comes, so TURN_WAIT seconds on)
    await deferLater(reactor, 2 * sqlite_storage.TURN_WAIT, lambda: None)
    await storage._run(lambda: None)
    in_part0 = sum(1 for sid in range(1, n + 1) if pending.part_of(sid) == 0)  # 1-63, 1024-...
    assert _raw(db_path, FOLDED) == [(1, n), (1, n), (1, n)]
    engine = storage._engine  # what is left to fold: the points not folded out
    assert engine._pending_points(engine.db) == 3 * n - 3 * in_part0
    engine._pending = None  # and counted again from the rows, about the same
    assert engine._pending_points(engine.db) == 3 * n - 3 * (n // pending.PARTS)
    assert _raw(db_path, "SELECT count(*), min(count), max(count), min((series_id >> 6) % 16),"
                         " max((series_id >> 6) % 16) FROM chunks") == [(in_part0, 3, 3, 0, 0)]
    assert engine.fold_due  # (still past the mark: the next write's commit folds part 1)
    rows = await storage.read_series(S, "fleet", None, None)  # (a read folds the rest)
    assert len(rows) == n
    assert all(r[1] == [T0, T0 + 1, T0 + 2] and r[2] == [0, 1, 2] for r in rows)
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]
    # a batch with many points per series is written as chunks, after the log
    await storage.write(make_batch(samples=[(k, T0 + 3, 3) for k in keys]))
    await storage.write(make_batch(samples=[(keys[0], T0 + t, t) for t in range(4, 3004)]))
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]
    rows = await storage.read_series(S, "fleet", None, None)
    assert len(rows) == n
    assert rows[0][1] == [T0 + t for t in range(3004)]
    assert rows[0][2] == [0, 1, 2, 3, *range(4, 3004)]
    assert all(r[1] == [T0, T0 + 1, T0 + 2, T0 + 3] and r[2] == [0, 1, 2, 3] for r in rows[1:])


@pytest_twisted.ensureDeferred
async def test_a_folds_second_half_and_a_checkpoint_wait_for_the_next_writes_commit(
        storage: SqliteStorage, db_path: str, monkeypatch: Any) -> None:
    """A ready background job (a part fold's second half, a checkpoint) is
    queued just behind the next write's commit, ahead of the write after it,
    one job a write: the writer never runs two jobs between two commits.
    Closing the storage ends the jobs still waiting, which then do nothing."""
    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_POINTS", 3 * PENDING_MAX_POINTS)
    monkeypatch.setattr(sqlite_storage, "FOLD_POINTS_PER_SERIES", 0)
    monkeypatch.setattr(sqlite_storage, "TURN_WAIT", 30.0)  # (no turn by the clock here)
    storage._stop_checkpoints()  # (the checkpoints here are the test's own)
    jobs: list[str] = []
    locked = storage._locked

    def recorded(f: Any, *args: Any, **kwargs: Any) -> Any:
        jobs.append(f.__name__)
        return locked(f, *args, **kwargs)

    monkeypatch.setattr(storage, "_locked", recorded)
    keys = [series_key("fleet", {"device": f"d{i:05}"}) for i in range(PENDING_MAX_POINTS + 500)]

    def wide(t: int) -> WriteBatch:
        return make_batch(samples=[(k, T0 + t, t) for k in keys])

    for t in range(3):  # (the third takes the log past its mark: a fold is made)
        await storage.write(wide(t))
    await storage._run(lambda: None)
    assert jobs[-2:] == ["prepare_fold_part", "<lambda>"] and storage._folding
    storage._maybe_checkpoint()  # (the WAL is small: no checkpoint)
    wal = sqlite_storage.CHECKPOINT_BYTES
    monkeypatch.setattr(sqlite_storage, "CHECKPOINT_BYTES", 1)
    storage._maybe_checkpoint()
    monkeypatch.setattr(sqlite_storage, "CHECKPOINT_BYTES", wal)
    assert len(storage._turns) == 2  # the fold's second half, then the checkpoint
    del jobs[:]
    # each write's commit gives one waiting job its turn, ahead of the next write
    await storage.write(wide(3)).addCallback(lambda _: storage.write(wide(4))).addCallback(
        lambda _: storage.write(wide(5)))
    await storage._run(lambda: None)
    assert jobs[:6] == ["write", "commit_fold_part", "write", "checkpoint", "write",
                        "prepare_fold_part"]
    assert not storage._checkpointing and storage._turns  # (the next fold's second half)
    rows = await storage.read_series(S, "fleet", None, None)
    assert len(rows) == len(keys) and all(r[2] == [0, 1, 2, 3, 4, 5] for r in rows)
    timers = [timer for _d, timer in storage._turns]
    await storage.close()
    assert storage._turns == [] and not storage._folding
    assert timers and all(t.cancelled for t in timers)  # (no TURN_WAIT timer left behind)


def test_a_write_far_past_the_fold_mark_folds_a_part_first(
        db_path: str, monkeypatch: Any) -> None:
    """An engine alone (no storage folding after its writes, as ``tsnet
    import`` runs it) still bounds the log: a write that would take it past
    twice the mark folds a part first, in its own transaction."""
    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_POINTS", 2 * PENDING_MAX_POINTS)
    monkeypatch.setattr(sqlite_storage, "FOLD_POINTS_PER_SERIES", 0)  # (the mark: that alone)
    n = PENDING_MAX_POINTS + 500
    keys = [series_key("fleet", {"device": f"d{i:05}"}) for i in range(n)]
    engine = sqlite_storage.SqliteEngine(db_path)
    engine.open()
    for t in range(3):
        engine.write(make_batch(samples=[(k, T0 + t, t) for k in keys]))
    assert engine.fold_due and _raw(db_path, FOLDED) == [(0, n), (0, n), (0, n)]
    engine.write(make_batch(samples=[(k, T0 + 3, 3) for k in keys]))
    assert _raw(db_path, FOLDED) == [(1, n), (1, n), (1, n), (0, n)]
    engine.fold_due_part()
    assert _raw(db_path, FOLDED) == [(3, n), (3, n), (3, n), (2, n)]
    engine.close()


def _wide_engine(db_path: str, monkeypatch: Any, rounds: int) -> tuple[Any, list]:
    """An engine alone whose log is past its mark after ``rounds`` wide batches."""
    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_POINTS", 2 * PENDING_MAX_POINTS)
    monkeypatch.setattr(sqlite_storage, "FOLD_POINTS_PER_SERIES", 0)
    keys = [series_key("fleet", {"device": f"d{i:05}"}) for i in range(PENDING_MAX_POINTS + 500)]
    engine = sqlite_storage.SqliteEngine(db_path)
    engine.open()
    for t in range(rounds):
        engine.write(make_batch(samples=[(k, T0 + t, t) for k in keys]))
    return engine, keys


def _stored(db_path: str) -> int:
    """Points in chunks, and in the log's rows less the parts folded out of them."""
    from tsnet.storage.sqlite import _PENDING_ROWS

    (chunked,) = _raw(db_path, "SELECT COALESCE(sum(count), 0) FROM chunks")[0]
    return chunked + sum(pending.in_part(sid, mask, None)
                         for blob, mask in _raw(db_path, _PENDING_ROWS)
                         for sid in pending.decode(blob)[0])


def test_a_fold_made_ahead_commits_beside_the_writes_made_meanwhile(
        db_path: str, monkeypatch: Any) -> None:
    """A part's fold is made in one job and committed in the next, writes
    between them: what those writes logged stays in the log, untouched."""
    engine, keys = _wide_engine(db_path, monkeypatch, 3)
    assert engine.prepare_fold_part()
    assert _raw(db_path, FOLDED) == [(0, len(keys))] * 3  # (made, nothing written)
    engine.write(make_batch(samples=[(k, T0 + 3, 3) for k in keys[:100]]))
    engine.commit_fold_part()
    assert _raw(db_path, FOLDED) == [(1, len(keys))] * 3 + [(0, 100)]
    assert _stored(db_path) == 3 * len(keys) + 100
    engine.close()


def test_a_fold_made_ahead_is_dropped_when_the_log_changed_under_it(
        db_path: str, monkeypatch: Any) -> None:
    """A fold made before the log was folded here, or before another
    connection committed, is not written: its points would be in chunks
    twice.  The part is folded afresh if the log is still past its mark."""
    engine, keys = _wide_engine(db_path, monkeypatch, 3)
    assert engine.prepare_fold_part()
    engine.fold_pending()  # (a read's fold, between the two jobs)
    engine.commit_fold_part()
    assert _raw(db_path, FOLDED) == [] and _stored(db_path) == 3 * len(keys)
    for t in range(3, 6):
        engine.write(make_batch(samples=[(k, T0 + t, t) for k in keys]))
    assert engine.prepare_fold_part()
    other = sqlite3.connect(db_path)  # another process's commit
    other.execute("UPDATE info SET value = value WHERE key = 'schema_version'")
    other.commit()
    other.close()
    engine.commit_fold_part()  # (folded afresh: part 1, the turn after part 0's)
    assert _raw(db_path, FOLDED) == [(2, len(keys))] * 3
    assert _stored(db_path) == 6 * len(keys)
    engine.close()


def test_the_fold_mark_grows_with_the_series_up_to_its_most(
        db_path: str, monkeypatch: Any) -> None:
    """A file of many series folds its log later: FOLD_POINTS_PER_SERIES
    points a series (so a part's fold writes chunks of that many points, not
    one or two), never under PENDING_FOLD_POINTS nor over PENDING_FOLD_MAX;
    the series are counted again when the file is opened."""
    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_POINTS", 2 * PENDING_MAX_POINTS)
    monkeypatch.setattr(sqlite_storage, "FOLD_POINTS_PER_SERIES", 4)
    n = PENDING_MAX_POINTS + 500
    keys = [series_key("fleet", {"device": f"d{i:05}"}) for i in range(n)]
    engine = sqlite_storage.SqliteEngine(db_path)
    engine.open()
    assert engine.fold_mark == 2 * PENDING_MAX_POINTS  # (no series yet)
    for t in range(3):
        engine.write(make_batch(samples=[(k, T0 + t, t) for k in keys]))
    assert engine.fold_mark == 4 * n
    assert not engine.fold_due  # 3 n points: under 4 a series
    engine.fold_due_part()
    assert _raw(db_path, FOLDED) == [(0, n), (0, n), (0, n)]
    engine.write(make_batch(samples=[(k, T0 + 3, 3) for k in keys[:10]]))
    engine.write(make_batch(samples=[(k, T0 + 4, 4) for k in keys]))
    assert engine.fold_due  # (4 n + 10)
    engine.fold_due_part()
    assert [m for m, _ in _raw(db_path, FOLDED)] == [1] * 5
    engine.close()
    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_MAX", 3 * PENDING_MAX_POINTS)
    again = sqlite_storage.SqliteEngine(db_path)
    again.open()
    assert again.fold_mark == 3 * PENDING_MAX_POINTS  # (its most, from the file's series)
    again.close()


@pytest_twisted.ensureDeferred
async def test_parts_folded_in_turn_keep_last_write_wins_and_go_whole(
        storage: SqliteStorage, db_path: str, monkeypatch: Any) -> None:
    """A round of part folds while new batches keep coming: every row goes
    once all its parts are out, no point is folded twice, and a later write at
    the same time wins over an earlier one wherever the two were folded.  A
    part's fold is made after one write's commit and committed after the
    next (its turn), so a row goes after about two writes a part."""
    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "PENDING_FOLD_POINTS", 1)  # fold a part each write
    monkeypatch.setattr(sqlite_storage, "FOLD_POINTS_PER_SERIES", 0)  # (the mark: that alone)
    n = PENDING_MAX_POINTS + 100
    keys = [series_key("fleet", {"device": f"d{i:05}"}) for i in range(n)]
    for round_ in range(4 * pending.PARTS + 3):
        # every batch rewrites time T0 (the last value must win) and adds its own time
        await storage.write(make_batch(samples=[(k, t, round_) for k in keys
                                                for t in (T0, T0 + 1 + round_)]))
    left = _raw(db_path, FOLDED)
    assert len(left) <= 2 * pending.PARTS + 2 and pending.ALL_PARTS not in [m for m, _ in left]
    # (the masks of rows that went went with them)
    assert _raw(db_path, "SELECT count(*) FROM pending_folded WHERE id NOT IN"
                         " (SELECT id FROM pending)") == [(0,)]
    (stored,) = _raw(db_path, "SELECT sum(count) FROM chunks")[0]
    (logged,) = _raw(db_path, "SELECT sum(points) FROM pending")[0]
    assert stored <= 2 * n * (4 * pending.PARTS + 3)  # no point in a chunk twice
    assert stored + logged >= 2 * n * (4 * pending.PARTS + 3)  # and none lost
    rows = await storage.read_series(S, "fleet", None, None)
    last = 4 * pending.PARTS + 2
    assert all(r[1][0] == T0 and r[2][0] == last and len(r[1]) == last + 2 for r in rows)
    assert await storage.count_points(S) == n * (last + 2)


@pytest_twisted.ensureDeferred
async def test_the_series_id_cache_is_bounded_and_stays_correct(
        storage: SqliteStorage, db_path: str, monkeypatch: Any) -> None:
    """Past SERIES_ID_CACHE ids the cache starts again; a series it forgot is
    found in the series table, never created twice."""
    from tsnet.storage import sqlite as sqlite_storage

    monkeypatch.setattr(sqlite_storage, "SERIES_ID_CACHE", 10)
    keys = [series_key("fleet", {"device": f"d{i:03}"}) for i in range(40)]
    for round_, part in enumerate((keys[:25], keys[15:], keys[:40:3], keys)):
        await storage.write(make_batch(samples=[(k, T0 + round_, round_) for k in part]))
        assert len(storage._engine._ids[S]) <= 10 + len(part)
    assert _raw(db_path, "SELECT count(*) FROM series") == [(40,)]
    assert _raw(db_path, "SELECT count(*) FROM (SELECT DISTINCT solution, metric, tags,"
                         " entity FROM series)") == [(40,)]
    rows = {k: (t, v) for k, t, v, _ in await storage.read_series(S, "fleet", None, None)}
    for i, k in enumerate(keys):
        rounds = [r for r, part in enumerate((keys[:25], keys[15:], keys[:40:3], keys))
                  if k in part]
        assert rows[k] == ([T0 + r for r in rounds], rounds), i


@pytest_twisted.ensureDeferred
async def test_json_rows_of_the_first_form_still_fold(storage: SqliteStorage,
                                                      db_path: str) -> None:
    old = json.dumps([[S, "cpu", None, [["host", "a"]], [T0, T0 + 1], [1, 2.5], None]])
    db = sqlite3.connect(db_path)
    db.execute("INSERT INTO pending (points, batch) VALUES (2, ?)", (old,))
    db.commit()
    db.close()
    storage._engine._pending = None  # as after a restart: counted from the table
    await storage.write(make_batch(samples=[(series_key("cpu", {"host": "a"}), T0 + 1, 9)]))
    series = await storage.read_series(S, "cpu", None, None)
    assert [(k, t, v) for k, t, v, _ in series] == [
        (series_key("cpu", {"host": "a"}), [T0, T0 + 1], [1, 9])]  # the newer write wins
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_small_writes_commit_at_once_when_the_thread_is_idle(storage: SqliteStorage,
                                                                   db_path: str) -> None:
    await storage.write(make_batch(samples=[(CPU, T0, 1)]))  # learns the log's size
    d = storage.write(make_batch(samples=[(CPU, T0 + 1, 2)]))
    assert d.called  # committed before write() returned
    await d
    assert _raw(db_path, "SELECT points FROM pending ORDER BY id") == [(1,), (1,)]
    big = storage.write(make_batch(samples=[(CPU, T0 + i, i) for i in range(PENDING_MAX_POINTS
                                                                            + 1)]))
    assert not big.called  # the writer thread's work
    await big
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_a_small_write_that_creates_many_series_goes_to_the_thread(
        storage: SqliteStorage) -> None:
    """Creating many series is no commit of tens of microseconds (2000 of them
    held the reactor 30-60 ms): a small write with more than
    `INLINE_NEW_SERIES` series new to the id caches is the writer thread's,
    in columns or in rows; an HTTP request's few new ones commit at once, and
    so do the many once they exist."""
    await storage.write(make_batch(samples=[(CPU, T0, 1)]))  # learns the log's size
    many = [series_key("cpu", {"host": f"c{i}"}) for i in range(INLINE_NEW_SERIES + 1)]
    rows_keys = [series_key("cpu", {"host": f"r{i}"}) for i in range(INLINE_NEW_SERIES + 1)]

    def rows(t: int) -> WriteBatch:
        batch = make_batch()
        samples = batch.for_solution(S).samples
        samples.keys = [CPU, *rows_keys]
        samples.times = [t] * len(samples.keys)
        samples.values = [t] * len(samples.keys)
        samples.recount()
        return batch

    for make in (lambda t: make_batch(samples=[(k, t, t) for k in many]), rows):
        d = storage.write(make(T0 + 1))
        assert not d.called  # (the new series: the thread's)
        await d
        d = storage.write(make(T0 + 2))
        assert d.called  # (known now: at once)
        await d
    few = [series_key("cpu", {"host": f"f{i}"}) for i in range(INLINE_NEW_SERIES)]
    d = storage.write(make_batch(samples=[(k, T0 + 3, 3) for k in few]))
    assert d.called
    await d
    series = {dict(k[2])["host"]: t for k, t, _, _ in await storage.read_series(S, "cpu")}
    assert series["a"] == [T0, T0 + 1, T0 + 2]
    assert all(series[dict(k[2])["host"]] == [T0 + 1, T0 + 2] for k in many + rows_keys)
    assert all(series[dict(k[2])["host"]] == [T0 + 3] for k in few)
    assert len(series) == 1 + len(many) + len(rows_keys) + len(few)


@pytest_twisted.ensureDeferred
async def test_a_small_write_is_judged_whole_before_it_creates_series(
        storage: SqliteStorage) -> None:
    """The new series of every solution of a batch are counted before any is
    created: a solution's few new ones, made before another's many sent the
    batch to the thread, were rolled back with their ids still cached, and
    the thread's write logged their point under another series' id."""
    await storage.write(make_batch(samples=[(CPU, T0, 1)]))  # learns the log's size
    one = series_key("cpu", {"host": "one"})
    batch = make_batch(samples=[(one, T0, 1)])
    for i in range(INLINE_NEW_SERIES + 1):
        batch.for_solution("other").samples.add(series_key("cpu", {"host": f"o{i}"}), T0, i)
    d = storage.write(batch)
    assert not d.called
    await d
    series = {dict(k[2])["host"]: t for k, t, _, _ in await storage.read_series(S, "cpu")}
    assert series == {"a": [T0], "one": [T0]}
    assert len(await storage.read_series("other", "cpu")) == INLINE_NEW_SERIES + 1


@pytest_twisted.ensureDeferred
async def test_small_writes_queue_behind_the_thread(storage: SqliteStorage) -> None:
    from twisted.internet import reactor

    await storage.write(make_batch(samples=[(CPU, T0, 1)]))
    storage._engine.lock.acquire()  # as if a read or a fold were running
    try:
        d = storage.write(make_batch(samples=[(CPU, T0 + 1, 2)]))
        assert not d.called
    finally:
        reactor.callLater(0.05, storage._engine.lock.release)
    await d
    assert await storage.count_points(S) == 2


@pytest_twisted.ensureDeferred
async def test_small_writes_never_wait_for_another_process(storage: SqliteStorage,
                                                           db_path: str) -> None:
    """Another process holding the write lock sends the write to the thread,
    which waits for it (busy_timeout); the reactor does not."""
    from twisted.internet import reactor

    await storage.write(make_batch(samples=[(CPU, T0, 1)]))
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        d = storage.write(make_batch(samples=[(CPU, T0 + 1, 2)]))
        returned = time.monotonic() - started
        assert not d.called
    finally:
        reactor.callLater(0.2, other.execute, "COMMIT")
    await d
    other.close()
    assert returned < 1.0  # busy_timeout is 5 s: nothing waited for it on this thread
    assert await storage.count_points(S) == 2


@pytest_twisted.ensureDeferred
async def test_a_failed_small_write_fails_alone(storage: SqliteStorage) -> None:
    await storage.write(make_batch(samples=[(CPU, T0, 1)]))
    with pytest.raises((ValueError, OverflowError)):
        await storage.write(make_batch(samples=[(CPU, T0 + 1, 2**64)]))
    await storage.write(make_batch(samples=[(CPU, T0 + 2, 3)]))
    series = await storage.read_series(S, "cpu", None, None)
    assert [v for _, _, v, _ in series] == [[1, 3]]


@pytest_twisted.ensureDeferred
async def test_requests_arriving_together_share_a_commit(make_server: Any) -> None:
    from tsnet.model import Batch, SampleSet, anonymous
    from tsnet.testing.fixtures import BASE_CONFIG

    server = await make_server(BASE_CONFIG)
    ingest = server.core.ingest
    who = anonymous("default")

    def batch(t: int) -> Batch:
        s = SampleSet()
        s.add(CPU, t, 1)
        return Batch(samples=s)

    from twisted.internet import reactor

    def next_turn() -> defer.Deferred:
        later: defer.Deferred = defer.Deferred()
        reactor.callLater(0, lambda: ingest.submit(batch(T0 + 5), who, "test").chainDeferred(
            later))
        return later

    await ingest.submit(batch(T0), who, "test")
    await defer.gatherResults([ingest.submit(batch(T0 + i), who, "test") for i in (1, 2, 3)])
    # a request of the next turn still joins, as long as requests keep coming
    await defer.gatherResults([ingest.submit(batch(T0 + 4), who, "test"), next_turn()])
    path = server.core.storages.backend("default").path
    assert _raw(path, "SELECT points FROM pending ORDER BY id") == [(1,), (3,), (2,)]


@pytest_twisted.ensureDeferred
async def test_a_lone_client_does_not_wait_for_company(make_server: Any) -> None:
    """Group commit adapts: after a commit with one waiter, a lone request is
    written in the turn it arrived; after one with several, it waits for the
    next turn's; every LONE_PROBE-th lone request waits anyway."""
    from twisted.internet import reactor

    from tsnet.ingest import LONE_PROBE
    from tsnet.model import Batch, SampleSet, anonymous
    from tsnet.testing.fixtures import BASE_CONFIG

    server = await make_server(BASE_CONFIG)
    ingest = server.core.ingest
    who = anonymous("default")
    t = iter(range(T0, T0 + 1000))

    def submit() -> defer.Deferred:
        s = SampleSet()
        s.add(CPU, next(t), 1)
        return ingest.submit(Batch(samples=s), who, "test")

    def next_turn() -> defer.Deferred:
        later: defer.Deferred = defer.Deferred()
        reactor.callLater(0, lambda: submit().chainDeferred(later))
        return later

    path = server.core.storages.backend("default").path

    def commits() -> list[int]:
        return [p for (p,) in _raw(path, "SELECT points FROM pending ORDER BY id")]

    await submit()  # the first waits a turn; nobody comes
    # lone now: the request of the next turn gets a commit of its own
    await defer.gatherResults([submit(), next_turn()])
    # two in one turn wait for company, and the next turn's request joins them
    await defer.gatherResults([submit(), submit(), next_turn()])
    # a commit with company: a lone request waits for the next turn's again
    await defer.gatherResults([submit(), next_turn()])
    assert commits() == [1, 1, 1, 3, 2]
    await submit()  # alone (it waited, as above): lone again
    await submit()  # (an odd count of lone requests so far: a pair's first is a probe)
    before = len(commits())
    for _ in range(LONE_PROBE + 1):
        await defer.gatherResults([submit(), next_turn()])
    probed = commits()[before:]
    # pairs are written one by one until a pair's first request is a probe,
    # waits, and finds the second; from then on they share commits
    first = probed.index(2)
    assert 2 <= first <= 2 * LONE_PROBE and set(probed[:first]) == {1}, probed
    assert set(probed[first:]) == {2}, probed


def test_reads_see_the_log_without_the_write_lock(db_path: str) -> None:
    """Reads fold the log first, which writes; with another process holding the
    write lock they read it as it is instead, at once, and see every commit."""
    from tsnet.storage.sqlite import SqliteEngine

    eng = SqliteEngine(db_path, busy_timeout=5.0)
    eng.open()
    other_key = series_key("cpu", {"host": "b"})
    eng.write(make_batch(samples=[(CPU, T0 + i, i) for i in range(PENDING_MAX_POINTS + 5)]))
    eng.write(make_batch(samples=[(CPU, T0 + 1, 100), (other_key, T0, 7)]))  # the log: newer
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        series = {k: (t, v) for k, t, v, _ in eng.read_series(S, "cpu", T0, T0 + 2)}
        assert series == {CPU: ([T0, T0 + 1, T0 + 2], [0, 100, 2]), other_key: ([T0], [7])}
        assert eng.count_points(S) == PENDING_MAX_POINTS + 6
        assert eng.list_series(S) == [CPU, other_key]
        lines = [line for line in eng.iter_export(S) if line["kind"] == "series"]
        assert len(lines) == PENDING_MAX_POINTS + 6
        assert [line["value"] for line in lines[:3]] == [0, 100, 2]
        assert time.monotonic() - started < 4.0  # none waited busy_timeout for the lock
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(1,)]  # not folded meanwhile
    eng.close()


def test_a_log_from_before_parts_folds_by_parts(db_path: str) -> None:
    """A file from before folding by parts (no ``pending_folded`` table) gets
    the table at open, its rows counted as nothing folded out yet."""
    from pathlib import Path

    from tsnet.storage.sqlite import SqliteEngine

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    e = SqliteEngine(db_path)
    e.open()
    keys = [series_key("fleet", {"device": f"d{i}"}) for i in range(3000)]
    e.write(make_batch(samples=[(k, T0, 1) for k in keys]))
    e.close()
    db = sqlite3.connect(db_path)
    db.execute("DROP TABLE pending_folded")
    db.close()
    e = SqliteEngine(db_path)
    e.open()
    assert _raw(db_path, FOLDED) == [(0, 3000)]
    e._fold_part(e.db)  # (the log not counted yet: it is, before the fold)
    assert _raw(db_path, FOLDED) == [(1, 3000)]
    assert e._pending_points(e.db) == 3000 - sum(1 for sid in range(1, 3001)
                                                 if pending.part_of(sid) == 0)
    assert len(e.read_series(S, "fleet")) == 3000
    assert e.count_points(S) == 3000
    e.close()


def test_a_log_with_rows_of_the_form_before_folds_whole_in_log_order(db_path: str) -> None:
    """A file written before TSP4 holds rows that part series by id modulo
    16 (TSP3), partly folded; the rows written after it part them by blocks
    of ids.  A series' points then sit in two parts, so the log folds whole,
    its TSP3 rows first, and the later write wins for every series."""
    from pathlib import Path

    from tsnet.storage.sqlite import SqliteEngine

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    e = SqliteEngine(db_path)
    e.open()
    keys = [series_key("fleet", {"device": f"d{i:03}"}) for i in range(100)]
    e.write(make_batch(samples=[(k, T0, 0) for k in keys]))  # (a small batch: logged)
    e.write(make_batch(samples=[(k, T0 + 1, 0) for k in keys]))
    # the two rows as tsnet wrote them before: TSP3, the first with part 5
    # folded out already (its points in chunks)
    db = sqlite3.connect(db_path)
    for rid, batch in db.execute("SELECT id, batch FROM pending").fetchall():
        db.execute("UPDATE pending SET batch = ? WHERE id = ?",
                   (encode_v3(*pending.decode(batch)[:3]), rid))
    (first,) = db.execute("SELECT min(id) FROM pending").fetchone()
    db.execute("INSERT INTO pending_folded (id, folded) VALUES (?, ?)", (first, 1 << 5))
    sids = [sid for (sid,) in db.execute("SELECT id FROM series ORDER BY id")]
    db.executemany("INSERT INTO chunks (series_id, min_time, max_time, count, times, vals)"
                   " VALUES (?, ?, ?, 1, ?, ?)",
                   [(sid, T0, T0, chunks.encode_times([T0]), chunks.encode_values([0]))
                    for sid in sids if sid % 16 == 5])
    db.commit()
    db.close()
    e.close()
    e = SqliteEngine(db_path)
    e.open()
    e.write(make_batch(samples=[(k, t, 1) for k in keys for t in (T0, T0 + 1)]))  # TSP4
    assert [m for (m,) in _raw(db_path, "SELECT substr(batch, 1, 4) FROM pending")] == [
        b"TSP3", b"TSP3", b"TSP4"]
    with e._transaction() as db:
        e._fold_part(db)
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]
    series = e.read_series(S, "fleet")
    assert len(series) == 100
    assert all(t == [T0, T0 + 1] and v == [1, 1] for _, t, v, _ in series)
    assert e.count_points(S) == 200
    e.close()


def test_a_part_fold_slices_the_rows_it_wrote_in_memory_until_another_connection_writes(
        db_path: str, monkeypatch: Any) -> None:
    """The writer keeps the rows it logged (up to ROW_CACHE_BYTES), and a
    part's fold slices those; once another connection committed (the
    ``tsnet`` command folding the log and logging a row of its own, which
    takes a folded row's id), the kept rows are dropped and the file's are
    folded: the later write wins."""
    from pathlib import Path

    from tsnet.storage import sqlite as sqlite_storage

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    keys = [series_key("fleet", {"device": f"d{i:04}"}) for i in range(1500)]
    a = sqlite_storage.SqliteEngine(db_path)
    a.open()
    monkeypatch.setattr(sqlite_storage, "ROW_CACHE_BYTES", 80_000)  # (two rows, not three)
    for t in range(3):
        a.write(make_batch(samples=[(k, T0 + t, 0) for k in keys]))
    ids = [rid for (rid,) in _raw(db_path, "SELECT id FROM pending ORDER BY id")]
    assert sorted(a._rows) == ids[:2] and a._rows_bytes <= 80_000
    for rid in ids[:2]:
        assert a._rows[rid] == _raw(db_path, f"SELECT batch FROM pending WHERE id = {rid}")[0][0]
    for _ in range(pending.PARTS):  # every part out: the rows go, from the file and memory
        with a._transaction() as db:
            a._fold_part(db)
    assert _raw(db_path, "SELECT count(*) FROM pending") == [(0,)]
    assert a._rows == {} and a._rows_bytes == 0
    a.write(make_batch(samples=[(k, T0 + 5, 0) for k in keys]))
    assert list(a._rows) == [ids[0]]  # (an empty table gives the first id again)

    b = sqlite_storage.SqliteEngine(db_path)  # another process
    b.open()
    b.fold_pending()
    b.write(make_batch(samples=[(k, T0 + 5, 1) for k in keys]))  # the same id, later
    assert [rid for (rid,) in _raw(db_path, "SELECT id FROM pending")] == [ids[0]]
    b.close()
    with a._transaction() as db:
        a._fold_part(db)
    assert a._rows == {}  # (dropped: not the row in the file any more)
    a.fold_pending()
    series = a.read_series(S, "fleet")
    assert len(series) == 1500
    assert all(t == [T0, T0 + 1, T0 + 2, T0 + 5] and v == [0, 0, 0, 1] for _, t, v, _ in series)
    a.close()
