"""The write path: acks only after commit, batching, watermarks that pause and
resume real connections without losing what was read."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.clients import connect_line, sleep, wait_for
from tsnet import isolate
from tsnet.model import Batch, Meta, SampleSet, WriteBatch, anonymous, series_key
from tsnet.testing.fixtures import BASE_CONFIG


def sqlite_count(server: Any) -> int:
    """Points visible to another connection, so committed: in chunks, or in the
    pending log that small acked batches are written to first."""
    path = server.core.config.storages["default"].path
    with sqlite3.connect(path) as db:
        return (db.execute("SELECT COALESCE(SUM(count), 0) FROM chunks").fetchone()[0]
                + db.execute("SELECT COALESCE(SUM(points), 0) FROM pending").fetchone()[0])


def samples(n: int, metric: str = "m", t0: int = 1_356_998_400) -> Batch:
    s = SampleSet()
    for i in range(n):
        s.add(series_key(metric, {"host": f"h{i % 4}"}), (t0 + i) * 10**9, i)
    return Batch(samples=s)


@pytest_twisted.inlineCallbacks
def test_ack_fires_only_after_commit(make_server: Any) -> None:
    server = yield make_server()
    fired: list[int] = []
    # Another process holds the database's write lock: the commit has to wait.
    lock = sqlite3.connect(server.core.config.storages["default"].path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    d = server.core.ingest.submit(samples(10), anonymous("default"), "test")
    d.addCallback(lambda _: fired.append(sqlite_count(server)))
    yield sleep(0.5)
    assert fired == [] and sqlite_count(server) == 0
    lock.execute("ROLLBACK")
    lock.close()
    yield d
    assert fired == [10]  # committed, visible to another connection, when the ack fired


@pytest_twisted.inlineCallbacks
def test_acked_writes_do_not_wait_for_the_flush_interval(make_server: Any) -> None:
    """Group commit: an ack-waiting submit is written at once when the writer is
    idle; unacked input (UDP's offer, telnet) waits for the flush interval."""
    server = yield make_server(BASE_CONFIG.replace("flush_interval = 0.05",
                                                   "flush_interval = 30"))
    ingest = server.core.ingest
    assert ingest.offer(samples(5, metric="unacked"), anonymous("default"), "udp")
    yield sleep(0.3)
    assert sqlite_count(server) == 0  # waiting for the 30 s interval
    t0 = time.monotonic()
    yield ingest.submit(samples(10), anonymous("default"), "test")
    assert time.monotonic() - t0 < 5
    assert sqlite_count(server) == 15  # the queued unacked points went with it


@pytest_twisted.inlineCallbacks
def test_batch_size_writes_at_once(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace(
        "flush_interval = 0.05", "flush_interval = 30\nbatch_size = 100"))
    d = server.core.ingest.submit(samples(150), anonymous("default"), "test")
    yield d  # long before the 30 s interval
    assert sqlite_count(server) == 150


@pytest_twisted.inlineCallbacks
def test_watermarks_pause_and_resume_without_loss(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace(
        "flush_interval = 0.05",
        "flush_interval = 0.3\nbatch_size = 1000000\nhigh_watermark = 2000\n"
        "low_watermark = 1000"))
    ingest = server.core.ingest
    events: list[str] = []

    class Recorder:
        def pauseProducing(self) -> None:
            events.append("pause")

        def resumeProducing(self) -> None:
            events.append("resume")

    ingest.registerProducer(Recorder())
    conns = []
    for c in range(3):
        conn = yield connect_line(server.port("opentsdb"))
        conns.append(conn)
        conn.send("".join(f"put flow {1356998400 + i} {i} conn=c{c}\n" for i in range(5000)))
    yield wait_for(lambda: "pause" in events, timeout=10)
    assert ingest.paused or "resume" in events
    for conn in conns:
        conn.close()
    yield wait_for(lambda: sqlite_count(server) == 15000, timeout=30)
    assert "resume" in events and not ingest.paused
    assert (yield server.core.storages.backend("default").count_points("default")) == 15000


@pytest_twisted.inlineCallbacks
def test_offer_refuses_past_max_queue(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace(
        "flush_interval = 0.05",
        "flush_interval = 30\nbatch_size = 1000000\nmax_queue = 100\n"
        "high_watermark = 50\nlow_watermark = 10"))
    ingest = server.core.ingest
    assert ingest.offer(samples(80), anonymous("default"), "udp")
    assert not ingest.offer(samples(30, metric="n"), anonymous("default"), "udp")
    yield ingest.flush()
    assert sqlite_count(server) == 80


@pytest_twisted.inlineCallbacks
def test_stop_commits_everything_read(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace("flush_interval = 0.05",
                                                   "flush_interval = 30"))
    c = yield connect_line(server.port("opentsdb"))
    c.send("".join(f"put stop {1356998400 + i} {i} host=a\n" for i in range(1000)))
    yield wait_for(lambda: server.core.ingest.queued == 1000)
    yield server.service.stopService()
    assert sqlite_count(server) == 1000


@pytest_twisted.inlineCallbacks
def test_background_compaction_merges_small_chunks(make_server: Any) -> None:
    from tsnet.storage.sqlite import COMPACT_SMALL, COMPACT_TARGET, PENDING_MAX_POINTS

    server = yield make_server(BASE_CONFIG.replace(
        "flush_interval = 0.05", "flush_interval = 0.05\ncompact_interval = 3"))
    # the writes (well under a second) all land before the first compaction at 3 s
    n = PENDING_MAX_POINTS + 1  # over the pending log's limit: written as chunks
    small, big = series_key("m", {"host": "h0"}), series_key("m", {"host": "h1"})
    for i in range(12):  # twelve writes: twelve small chunks of h0, twelve bigger of h1
        s = SampleSet()
        for j in range(n):
            s.add(small if j < 200 else big, (1_356_998_400 + i * n + j) * 10**9, j)
        yield server.core.ingest.submit(Batch(samples=s), anonymous("default"), "test")
    path = server.core.config.storages["default"].path

    def chunk_counts() -> list[int]:
        with sqlite3.connect(path) as db:
            return [c for (c,) in db.execute("SELECT count FROM chunks ORDER BY id")]

    assert 200 < COMPACT_SMALL < n - 200 <= COMPACT_TARGET
    total = 12 * n
    # h0's small chunks merged into one; h1's (not small) left alone
    yield wait_for(lambda: sorted(chunk_counts()) == sorted([n - 200] * 12 + [12 * 200]),
                   timeout=20)
    rows = yield server.export()
    assert len(rows) == total
    assert sorted(r["time_ms"] // 1000 - 1_356_998_400 for r in rows) == list(range(total))


# -- IPointSink: the streaming path of line protocols ------------------------------


def append(cols: dict, n: int, metric: str = "sunk", t0: int = 1_356_998_400) -> None:
    from tsnet.model import Column

    for i in range(n):
        key = series_key(metric, {"host": f"h{i % 3}"})
        col = cols.get(key)
        if col is None:
            col = cols[key] = Column()
        col.times.append((t0 + i) * 10**9)
        col.values.append(i)


def written(server: Any, protocol: str) -> float:
    return server.core.metrics.points_written.labels(protocol)._value.get()


@pytest_twisted.inlineCallbacks
def test_sink_points_are_committed_and_counted(make_server: Any) -> None:
    server = yield make_server()
    sink = server.core.ingest.sink(anonymous("default"), "sinktest")
    for _ in range(3):
        append(sink.columns(), 100)
        sink.added(100)
    yield server.flush()
    assert sqlite_count(server) == 300
    rows = yield server.export()
    assert len(rows) == 100  # the same series and times three times: last write wins
    assert written(server, "sinktest") == 300
    assert server.core.ingest.queued == 0


@pytest_twisted.inlineCallbacks
def test_a_write_waits_while_sink_columns_are_lent(make_server: Any) -> None:
    """The old columns_for/appended pair lost the count when a submit started a
    write between them; a sink holds that write back until `added`."""
    server = yield make_server(BASE_CONFIG.replace(
        "flush_interval = 0.05", "flush_interval = 30\nbatch_size = 50"))
    ingest = server.core.ingest
    sink = ingest.sink(anonymous("default"), "sinktest")
    cols = sink.columns()
    append(cols, 40)
    # 60 acked points pass batch_size: without the lend this write would take the
    # 40 uncounted points with it
    d = ingest.submit(samples(60), anonymous("default"), "test")
    append(cols, 10, t0=1_356_999_000)
    sink.added(50)
    yield d
    # one write took both, counted: nothing is left for a later write to count
    assert sqlite_count(server) == 110
    assert written(server, "sinktest") == 50 and written(server, "test") == 60
    assert ingest.queued == 0


@pytest_twisted.inlineCallbacks
def test_sink_merges_token_tags_and_finds_new_solutions(make_server: Any) -> None:
    from tsnet.model import READ, WRITE, Principal
    from tsnet.records import SolutionRecord

    server = yield make_server()
    # created behind the server's back: the first batch reloads the solution list
    yield server.core.catalog.create_solution(SolutionRecord(name="later"))
    p = Principal(solution="later", scopes=frozenset((READ, WRITE)),
                  tags=(("host", "token-wins"), ("site", "s1")))
    sink = server.core.ingest.sink(p, "sinktest")
    append(sink.columns(), 6)
    sink.added(6)
    yield sleep(0.3)
    yield server.flush()
    rows = yield server.export("later")
    assert {tuple(sorted(r["tags"].items())) for r in rows} == {
        (("host", "token-wins"), ("site", "s1"))}
    assert sorted(r["time_ms"] for r in rows) == [(1_356_998_400 + i) * 1000 for i in range(6)]


@pytest_twisted.inlineCallbacks
def test_a_sink_left_open_is_written_anyway(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace(
        "flush_interval = 0.05", "flush_interval = 30\nbatch_size = 5"))
    ingest = server.core.ingest
    sink = ingest.sink(anonymous("default"), "careless")
    append(sink.columns(), 7)  # never calls added()
    yield ingest.submit(samples(10), anonymous("default"), "test")  # written a turn later
    assert sqlite_count(server) == 17


# -- taking a refused batch apart (tsnet.isolate) ---------------------------------------

_values = st.one_of(st.integers(-3, 3), st.sampled_from([0.0, -0.0, 1.0, float("nan")]),
                    st.none())
_point = st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), _values)


def _batch(points: list[tuple], rows: bool = False) -> Batch:
    b = Batch()
    for host, t, v in points:
        key = series_key("m", {"host": host})
        if rows:
            b.samples.keys.append(key)
            b.samples.times.append(t)
            b.samples.values.append(v)
            b.samples.count += 1
        else:
            b.samples.add(key, t, v)
    return b


def _flat(wb: WriteBatch) -> list[tuple]:
    """Every point as a storage would see it: per series, columns then rows."""
    out = []
    for solution, b in wb.by_solution.items():
        for key, t, v, x in isolate._raw_points(b.samples):
            out.append((solution, key, t, repr(v), x))
    return sorted(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(_point, max_size=6), st.booleans(), st.booleans()),
                min_size=1, max_size=5))
def test_the_rest_of_a_merged_batch_is_what_the_parts_do_not_hold(
    subs: list[tuple[list[tuple], bool, bool]],
) -> None:
    """Queue submissions as ingest does (acked ones detached), then take the acked
    ones back out: the rest is exactly the unacked points, none twice, none lost."""
    queue = WriteBatch()
    target = queue.for_solution("s")
    acked, unacked = [], WriteBatch()
    for points, is_acked, rows in subs:
        b = _batch(points, rows)
        target.samples.merge(isolate.detached(b.samples) if is_acked else b.samples)
        if is_acked:
            acked.append(("s", b))
        else:
            unacked.for_solution("s").samples.merge(_batch(points).samples)
    mine = [_flat(WriteBatch({"s": b})) for _, b in acked]  # before anything else runs
    queue.by_solution["s"].samples.columnar()  # as a storage may have done
    rest = isolate.rest(queue, acked)
    assert _flat(rest) == _flat(unacked)
    assert [_flat(WriteBatch({"s": b})) for _, b in acked] == mine  # parts never grew
    parts = [WriteBatch({"s": b}) for _, b in acked]
    assert _flat(isolate.merged([rest, *parts])) == _flat(queue)
    assert [_flat(p) for p in parts] == mine  # merged() changed none of them


@settings(max_examples=100, deadline=None)
@given(st.lists(_point, min_size=1, max_size=12))
def test_halving_keeps_every_item_once_and_in_order(points: list[tuple]) -> None:
    wb = WriteBatch({"s": _batch(points)})
    meta = wb.by_solution["s"].meta  # the same record twice: the last one wins
    meta += [Meta(kind="metric", name="x", fields={"label": "old"}),
             Meta(kind="metric", name="x", fields={"label": "new"})]
    wb.by_solution["s"].reclaim_ns = 5
    leaves: list[WriteBatch] = []
    todo = [wb]
    while todo:
        b = todo.pop(0)
        halves = isolate.halve(b)
        if halves is None:
            leaves.append(b)
        else:
            todo[:0] = list(halves)
    assert all(sum(isolate.kinds(b)) + (b.by_solution["s"].reclaim_ns is not None) == 1
               for b in leaves)  # down to single items
    merged = isolate.merged(leaves)
    assert _flat(merged) == _flat(wb)
    for key, col in wb.by_solution["s"].samples.columns.items():  # order within a series
        assert [repr(v) for v in merged.by_solution["s"].samples.columns[key].values] == [
            repr(v) for v in col.values]
    assert merged.by_solution["s"].meta == wb.by_solution["s"].meta
    assert merged.by_solution["s"].reclaim_ns == 5
