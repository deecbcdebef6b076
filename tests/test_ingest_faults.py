"""A storage fault pauses and retries, it does not drop: real servers on a real
SQLite file whose write lock another connection holds (``BEGIN EXCLUSIVE``), so
tsnet's writes fail with "database is locked" until it lets go."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tests.helpers.clients import connect_line, sleep, wait_for
from tests.test_ingest import samples, sqlite_count
from tsnet.errors import BadBatch, StorageUnavailable
from tsnet.ingest import failure_reason
from tsnet.model import Batch, Message, Meta, anonymous, series_key

T0 = 1_356_998_400
T_MS = T0 * 1000


def config(storage_wait: float = 30.0, extra: str = "") -> str:
    """busy_timeout 0.05: a write fails 50 ms after it meets the lock, not 5 s."""
    return f"""
[tsnet]
data_dir = var
flush_interval = 0.05
storage_wait = {storage_wait}
{extra}

[storage:default]
backend = sqlite
busy_timeout = 0.05

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb atsd metrics
"""


class Lock:
    """Another process's write lock on the server's database."""

    def __init__(self, server: Any) -> None:
        path = server.core.config.storages["default"].path
        self.db: sqlite3.Connection | None = sqlite3.connect(path, isolation_level=None)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.db is not None:
            self.db.execute("ROLLBACK")
            self.db.close()
            self.db = None


@pytest.fixture
def ingest_logs() -> Iterator[list[dict]]:
    """The events tsnet.ingest and tsnet.service log during the test."""
    events: list[dict] = []

    def observe(e: dict) -> None:
        if e.get("log_namespace") in ("tsnet.ingest", "tsnet.service"):
            events.append(e)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def logged(events: list[dict], text: str) -> list[dict]:
    return [e for e in events if text in e.get("log_format", "")]


class Recorder:
    """A registered stream producer that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")


def put_lines(first: int, last: int, metric: str = "outage") -> str:
    return "".join(f"put {metric} {T0 + i} {i} host=a\n" for i in range(first, last))


def put_body(n: int, metric: str = "acked", value: int = 1) -> bytes:
    return json.dumps([{"metric": metric, "timestamp": T0 + i, "value": value,
                        "tags": {"host": "a"}} for i in range(n)]).encode()


def test_failure_reasons_never_show_credentials() -> None:
    f = Failure(ConnectionError("cannot reach redis://user:s3cret@db.example:6379/0"))
    assert failure_reason(f) == "ConnectionError: cannot reach redis://***@db.example:6379/0"


@pytest_twisted.ensureDeferred
async def test_an_outage_pauses_streams_and_commits_every_point_once(
    make_server: Any, ingest_logs: list[dict]
) -> None:
    server = await make_server(config())
    ingest = server.core.ingest
    producer = Recorder()
    ingest.registerProducer(producer)
    lock = Lock(server)
    try:
        c = await connect_line(server.port("opentsdb"))
        c.send(put_lines(0, 1000))
        await wait_for(lambda: ingest.failing == ["default"] and ingest.queued == 1000)
        assert ingest.paused and producer.events == ["pause"]
        c.send(put_lines(1000, 2000))  # read once the connection is resumed
        # newer values for the first ten times queue behind the kept batch
        newer = samples(0)
        for i in range(10):
            newer.samples.add(series_key("outage", {"host": "a"}), (T0 + i) * 10**9, -1)
        assert ingest.offer(newer, anonymous("default"), "udp")
        await sleep(0.8)  # several attempts, all failing
        assert sqlite_count(server) == 0 and ingest.failing == ["default"]
    finally:
        lock.release()
    await wait_for(lambda: sqlite_count(server) == 2010 and not ingest.paused, timeout=20)
    assert producer.events == ["pause", "resume"] and ingest.failing == []
    rows = await server.export()
    values = {r["time_ms"] // 1000 - T0: r["value"] for r in rows if r["metric"] == "outage"}
    # every point once; the newer duplicates won over the older, retried ones
    assert len(rows) == 2000 and sorted(values) == list(range(2000))
    assert [values[i] for i in range(12)] == [-1] * 10 + [10, 11]
    assert server.core.metrics.points_written.labels("opentsdb")._value.get() == 2000
    # one line when it started failing, one when it wrote again: not one per retry
    (down,) = logged(ingest_logs, "is failing")
    assert down["storage"] == "default" and "database is locked" in down["reason"]
    assert down["n"] == 1000
    (up,) = logged(ingest_logs, "writes again")
    assert up["storage"] == "default" and up["down"] >= 0.8
    assert 2 <= up["attempts"] <= 10  # a backoff, not a busy loop
    c.close()


@pytest_twisted.ensureDeferred
async def test_an_acked_write_waits_through_a_short_outage(make_server: Any) -> None:
    server = await make_server(config(storage_wait=30))
    port = server.port("http")
    lock = Lock(server)
    try:
        # (a stream connection made after the storage failed would not be read
        # until it writes again: this one is read at once)
        atsd = await connect_line(server.port("atsd"))
        atsd.send(f"debug series e:dev m:t=21.5 ms:{T_MS}\n")
        answered: list[Any] = []
        put = treq.post(f"http://127.0.0.1:{port}/api/put", data=put_body(5))
        put.addBoth(lambda r: answered.append(r) or r)
        await wait_for(lambda: server.core.ingest.failing == ["default"])
        await sleep(0.5)
        assert answered == [] and atsd.lines() == []
    finally:
        lock.release()
    resp = await put
    assert resp.code == 204
    await treq.content(resp)
    assert await atsd.wait_lines(1) == ["ok"]
    rows = [r for r in await server.export() if r["kind"] == "series"]
    assert sorted((r["metric"], r["value"]) for r in rows) == [("acked", 1)] * 5 + [("t", 21.5)]
    atsd.close()


@pytest_twisted.ensureDeferred
async def test_past_storage_wait_each_protocol_answers_its_error_and_keeps_the_data(
    make_server: Any,
) -> None:
    server = await make_server(config(storage_wait=0.3))
    port = server.port("http")
    lock = Lock(server)
    try:
        # ATSD's TCP debug: an error line instead of "ok", the connection kept
        atsd = await connect_line(server.port("atsd"))
        atsd.send(f"debug series e:dev m:tcp=2 ms:{T_MS}\n")
        (line,) = await atsd.wait_lines(1)
        assert line.startswith("Error: storage unavailable")
        # OpenTSDB's plain put (the lean fast path) and with flags (twisted.web)
        fast = await treq.post(f"http://127.0.0.1:{port}/api/put", data=put_body(3, "fast"))
        slow = await treq.post(f"http://127.0.0.1:{port}/api/put?details",
                               data=put_body(3, "slow"))
        for resp in (fast, slow):
            assert resp.code == 503
            assert resp.headers.getRawHeaders("content-type") == [
                "application/json; charset=UTF-8"]
            error = json.loads(await treq.content(resp))["error"]
            assert error["code"] == 503
            assert error["message"] == "Storage unavailable, please retry later"
            assert "stays queued" in error["details"]
        # ATSD's HTTP API: its own {"error": ...}
        resp = await treq.post(f"http://127.0.0.1:{port}/api/v1/command",
                               data=f"series e:dev m:h=1 ms:{T_MS}\n".encode())
        assert resp.code == 503
        assert "storage unavailable" in json.loads(await treq.content(resp))["error"]
        assert sqlite_count(server) == 0
    finally:
        lock.release()
    # what was answered as unavailable is committed once the storage is back
    await wait_for(lambda: sqlite_count(server) == 8)
    rows = [r for r in await server.export() if r["kind"] == "series"]
    assert sorted({r["metric"] for r in rows}) == ["fast", "h", "slow", "tcp"]
    atsd.send(f"debug series e:dev m:tcp=3 ms:{T_MS + 1}\n")
    assert (await atsd.wait_lines(2))[1] == "ok"
    atsd.close()


@pytest_twisted.ensureDeferred
async def test_while_down_a_full_queue_refuses_new_acked_writes(make_server: Any) -> None:
    server = await make_server(config(extra="max_queue = 100"))
    ingest = server.core.ingest
    lock = Lock(server)
    try:
        first = ingest.submit(samples(60, metric="a"), anonymous("default"), "test")
        await wait_for(lambda: ingest.failing == ["default"])
        refused = ingest.submit(samples(60, metric="b"), anonymous("default"), "test")
        assert refused.called  # at once, not after storage_wait
        with pytest.raises(StorageUnavailable) as e:
            await refused
        assert not e.value.kept
        assert not ingest.offer(samples(60, metric="c"), anonymous("default"), "udp")
        fits = ingest.submit(samples(30, metric="d"), anonymous("default"), "test")
        assert ingest.queued == 90
    finally:
        lock.release()
    await first
    await fits
    rows = await server.export()
    assert sorted({r["metric"] for r in rows}) == ["a", "d"] and len(rows) == 90


@pytest_twisted.ensureDeferred
async def test_a_bad_batch_is_answered_and_dropped_not_retried(
    make_server: Any, ingest_logs: list[dict]
) -> None:
    server = await make_server(config())
    ingest = server.core.ingest
    producer = Recorder()
    ingest.registerProducer(producer)
    bad = Batch(meta=[Meta(kind="bogus", name="x")])  # the storage raises ValueError
    with pytest.raises(ValueError, match="unknown meta kind"):
        await ingest.submit(bad, anonymous("default"), "test")
    assert ingest.queued == 0 and ingest.failing == [] and producer.events == []
    await sleep(0.5)
    (refused,) = logged(ingest_logs, "refused")
    assert "unknown meta kind" in refused["reason"] and "log_failure" not in refused
    assert logged(ingest_logs, "is failing") == []
    await ingest.submit(samples(10), anonymous("default"), "test")
    assert sqlite_count(server) == 10


def bogus_meta() -> Batch:
    return Batch(meta=[Meta(kind="bogus", name="x")])  # the storage raises ValueError


def written(server: Any, protocol: str) -> float:
    return server.core.metrics.points_written.labels(protocol)._value.get()


@pytest_twisted.ensureDeferred
async def test_a_bad_item_fails_only_its_own_writer_not_the_batch(make_server: Any) -> None:
    """Two HTTP clients' puts and two other writers share a batch with one bad
    item: only the bad item's writer fails, every other item is committed once."""
    server = await make_server(config())
    ingest = server.core.ingest
    port = server.port("http")
    lock = Lock(server)
    try:
        first = ingest.submit(samples(5, metric="first"), anonymous("default"), "test")
        await wait_for(lambda: ingest.failing == ["default"])
        # what queues meanwhile is written as one batch when the storage is back
        puts = [treq.post(f"http://127.0.0.1:{port}/api/put", data=put_body(3, f"http{i}"))
                for i in range(2)]
        await wait_for(lambda: ingest.queued == 5 + 6)
        bad = ingest.submit(bogus_meta(), anonymous("default"), "test")
        good = ingest.submit(samples(4, metric="good"), anonymous("default"), "atsd")
        assert ingest.queued == 5 + 6 + 1 + 4
    finally:
        lock.release()
    await first
    await good
    with pytest.raises(ValueError, match="unknown meta kind"):
        await bad
    for put in puts:
        resp = await put
        assert resp.code == 204, await treq.content(resp)
    rows = await server.export()
    assert sorted((r["metric"], r["time_ms"]) for r in rows if r["kind"] == "series") == sorted(
        [("first", (T0 + i) * 1000) for i in range(5)]
        + [(f"http{k}", (T0 + i) * 1000) for k in range(2) for i in range(3)]
        + [("good", (T0 + i) * 1000) for i in range(4)])
    assert sqlite_count(server) == 15  # stored once each: a point written twice counts twice
    assert written(server, "opentsdb") == 6 and written(server, "atsd") == 4
    assert ingest.queued == 0 and ingest.failing == []


@pytest_twisted.ensureDeferred
async def test_a_bad_unacked_item_drops_only_itself(make_server: Any) -> None:
    """Telnet points of two connections share a batch (and one series) with a
    bad point and a bad item offered without an ack: only those two are dropped."""
    server = await make_server(config().replace("flush_interval = 0.05",
                                                "flush_interval = 30"))
    ingest = server.core.ingest
    c1 = await connect_line(server.port("opentsdb"))
    c2 = await connect_line(server.port("opentsdb"))
    c1.send(put_lines(0, 50, "t1"))
    c2.send(put_lines(0, 50, "t2"))
    await wait_for(lambda: ingest.queued == 100)  # read, waiting for the 30 s interval
    bad = samples(0)
    bad.samples.add(series_key("t1", {"host": "a"}), (T0 + 99) * 10**9, 2**70)  # over int64
    assert ingest.offer(bad, anonymous("default"), "udp")
    assert ingest.offer(bogus_meta(), anonymous("default"), "udp")
    await ingest.submit(samples(4, metric="good"), anonymous("default"), "test")  # written now
    await wait_for(lambda: ingest.queued == 0)
    rows = [r for r in await server.export() if r["kind"] == "series"]
    got = sorted((r["metric"], r["time_ms"] // 1000 - T0, r["value"]) for r in rows)
    assert got == sorted([(m, i, i) for m in ("t1", "t2") for i in range(50)]
                         + [("good", i, i) for i in range(4)])
    assert sqlite_count(server) == 104
    # (the unacked rest is counted by protocol from its totals: which protocol
    # the one refused point is counted for is not known)
    assert written(server, "opentsdb") + written(server, "udp") == 100
    rejected = server.core.metrics.points_rejected
    assert sum(rejected.labels(p, "storage")._value.get() for p in ("opentsdb", "udp")) == 1
    c1.close()
    c2.close()


@pytest_twisted.ensureDeferred
async def test_a_constraint_the_items_break_is_a_bad_batch_not_an_outage(
    make_server: Any,
) -> None:
    """SQLite's own refusals of the items (a NOT NULL column) are not retried
    forever as if the storage were failing: the writer is told at once."""
    server = await make_server(config())
    ingest = server.core.ingest
    d = ingest.submit(Batch(messages=[Message(entity=None, time_ns=T0 * 10**9)]),  # type: ignore[arg-type]
                      anonymous("default"), "test")
    await wait_for(lambda: d.called, timeout=5)
    with pytest.raises(BadBatch, match="NOT NULL"):
        await d
    assert ingest.failing == [] and ingest.queued == 0
    await ingest.submit(samples(3), anonymous("default"), "test")
    assert sqlite_count(server) == 3


@pytest_twisted.ensureDeferred
async def test_a_stop_while_the_storage_is_down_is_bounded(
    make_server: Any, ingest_logs: list[dict]
) -> None:
    server = await make_server(config(storage_wait=0.5))
    ingest = server.core.ingest
    lock = Lock(server)
    try:
        acked = ingest.submit(samples(40), anonymous("default"), "test")
        acked.addErrback(lambda f: f.trap(StorageUnavailable))
        assert ingest.offer(samples(25, metric="udp"), anonymous("default"), "udp")
        await wait_for(lambda: ingest.failing == ["default"])
        t0 = time.monotonic()
        await server.stop()
        assert time.monotonic() - t0 < 5
        assert acked.called
    finally:
        lock.release()
    assert sqlite_count(server) == 0
    (lost,) = logged(ingest_logs, "still failing at stop")
    assert lost["storage"] == "default" and lost["n"] == 65
    (stopped,) = logged(ingest_logs, "tsnet stopped")
    assert stopped["lost"] == 65 and "cleanly" not in stopped["log_format"]
