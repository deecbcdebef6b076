"""RedisStorage: the conformance suite on a real redis-server, one shard and
two, plus what is Redis's own: the key layout, batches as few commands,
idempotent retries, compaction beside appends, timeouts on a dead server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tsnet.storage.redis import RedisStorage
from tsnet.storage.redis_shards import ShardOptions, parse_redis_urls
from tsnet.testing.conformance import StorageConformance


def redis_factory(urls: str) -> Callable[[], RedisStorage]:
    from twisted.internet import reactor

    return lambda: RedisStorage("default", parse_redis_urls(urls), reactor,
                                ShardOptions(timeout=5.0))


class TestRedisConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self, redis_server: Any) -> Callable[[], Any]:
        return redis_factory(redis_server.url)


class TestRedisShardedConformance(StorageConformance):
    """The same suite over two shards: every read merges both."""

    @pytest.fixture
    def storage_factory(self, redis_servers: Any) -> Callable[[], Any]:
        return redis_factory(" ".join(s.url for s in redis_servers(2)))


# -- what is Redis's own ---------------------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402

import pytest_twisted  # noqa: E402
from twisted.internet import defer  # noqa: E402

from tsnet.storage.redis_shards import RedisUnavailable  # noqa: E402
from tsnet.testing.conformance import CPU, T0, S, collect, make_batch  # noqa: E402


def make_storage(urls: str, **kw: Any) -> RedisStorage:
    from twisted.internet import reactor

    options = ShardOptions(timeout=kw.pop("timeout", 5.0), connect_timeout=2.0,
                           tls_ca=kw.pop("tls_ca", None))
    return RedisStorage("default", parse_redis_urls(urls), reactor, options, **kw)


def commandstats(server: Any, name: str) -> int:
    """How many times the server ran command ``name`` (INFO commandstats)."""
    info = server.command("INFO", "commandstats", decode=True)
    for line in info.splitlines():
        if line.startswith(f"cmdstat_{name}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest_twisted.ensureDeferred
async def test_a_batch_is_one_script_call_per_shard(redis_server: Any) -> None:
    storage = make_storage(redis_server.url)
    await storage.open()
    try:
        batch = make_batch(samples=[
            (("m", None, (("host", f"h{i % 1000}"),)), T0 + i, i) for i in range(50_000)])
        before = commandstats(redis_server, "eval") + commandstats(redis_server, "evalsha")
        await storage.write(batch)
        after = commandstats(redis_server, "eval") + commandstats(redis_server, "evalsha")
        assert after - before == 1
        # inside it, one append per series, not per point
        assert commandstats(redis_server, "rpush") == 1000
        assert await storage.count_points(S) == 50_000
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_large_read_folds_in_threads_and_stops_at_its_bound(redis_server: Any) -> None:
    """Chunks of series with more blob bytes than FOLD_INLINE fold off the
    reactor; the result is what one fold of each series gives, in order, and
    a bound stops the read a chunk after it passes."""
    from tsnet.errors import TooManyPoints
    from tsnet.storage import redis as redis_storage

    storage = make_storage(redis_server.url)
    await storage.open()
    try:
        n = redis_storage.READ_CHUNK * 2 + 7
        for part in range(2):  # two blobs per series, the second overwrites one point
            await storage.write(make_batch(samples=[
                (("m", None, (("host", f"h{i:05}"),)), T0 + t, i * 1000 + t + part)
                for i in range(n) for t in range(part * 39, 40 + part * 39)]))
        lists = await storage._lists(await storage._index(S, "m"), S)
        assert sum(len(b) for bl in lists[:redis_storage.READ_CHUNK] for b in bl) \
            > redis_storage.FOLD_INLINE
        rows = await storage.read_series(S, "m", T0 + 10, T0 + 60)
        assert [r[0][2] for r in rows] == [(("host", f"h{i:05}"),) for i in range(n)]
        for i, (_, times, values, _) in enumerate(rows):
            assert times == [T0 + t for t in range(10, 61)]
            assert values == [i * 1000 + t + (t >= 39) for t in range(10, 61)]
        with pytest.raises(TooManyPoints):
            await storage.read_series(S, "m", T0 + 10, T0 + 60, max_points=51 * n - 1)
        assert len(await storage.read_series(S, "m", None, None, max_points=79 * n)) == n
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_retried_part_is_not_appended_twice(redis_server: Any) -> None:
    """The marker makes a retry after a lost reply a no-op."""
    storage = make_storage(redis_server.url)
    await storage.open()
    try:
        ops: dict[int, list] = {}
        storage._plan(S, make_batch(samples=[(CPU, T0, 1)]).by_solution[S], ops)
        [(index, args)] = ops.items()
        marker = f"tsnet:batch:test:{index}:0"
        await storage._write_part(index, marker, args)
        await storage._write_part(index, marker, args)
        keys = redis_server.command("KEYS", "tsnet:s:default:d:*")
        assert len(keys) == 1
        assert redis_server.command("LLEN", keys[0]) == 1
        assert redis_server.command("TTL", marker) > 0
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_reclaimed_records_are_folded_out_of_the_list(redis_server: Any) -> None:
    """A fixed-size store stays fixed in Redis too: compaction folds the record
    list down to what a reclaim and the soft deletes left."""
    from tsnet.model import Record

    storage = make_storage(redis_server.url)
    await storage.open()
    try:
        for i in range(40):
            wb = make_batch("st", records=[Record(T0 + i, b"x" * 100, "text", i % 4)])
            wb.for_solution("st").reclaim_ns = T0 + i - 4 if i >= 4 else None
            await storage.write(wb)
        await storage.delete_record("st", T0 + 38)
        key = "tsnet:s:st:recs"
        assert redis_server.command("LLEN", key) == 41
        before = await storage.read_records("st", include_deleted=True)
        assert [r.time_ns - T0 for r in before] == [36, 37, 38, 39]
        assert await storage.compact(None, max_series=10) >= 1
        assert redis_server.command("LLEN", key) == 1
        assert len(redis_server.command("LINDEX", key, 0)) < 4 * 140
        assert await storage.read_records("st", include_deleted=True) == before
        assert [r.time_ns - T0 for r in await storage.read_records("st")] == [36, 37, 39]
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_compaction_folds_a_long_list_and_keeps_the_data(redis_server: Any) -> None:
    from tsnet.storage.redis import COMPACT_AT

    storage = make_storage(redis_server.url)
    await storage.open()
    try:
        for i in range(COMPACT_AT + 4):
            await storage.write(make_batch(samples=[(CPU, T0 + i, i), (CPU, T0, 100 + i)]))
        [key] = redis_server.command("KEYS", "tsnet:s:default:d:*")
        assert redis_server.command("LLEN", key) == COMPACT_AT + 4
        before = await storage.read_series(S, "cpu", None, None)
        assert await storage.compact(None, max_series=10) == 1
        assert redis_server.command("LLEN", key) == 1
        assert await storage.read_series(S, "cpu", None, None) == before
        assert before[0][2][0] == 100 + COMPACT_AT + 3  # the last write of T0 won
        assert await storage.compact(None, max_series=10) == 0
    finally:
        await storage.close()


def test_compaction_script_leaves_a_list_another_node_changed(redis_server: Any) -> None:
    """The head it replaces must be what the compactor read."""
    import hashlib

    from tsnet.storage import redis_scripts

    redis_server.command("RPUSH", "l", "a", "b", "c")
    sha = hashlib.sha1(b"ab").hexdigest()
    assert redis_server.command("EVAL", redis_scripts.COMPACT_LIST, 1, "l", 2,
                                hashlib.sha1(b"xy").hexdigest(), "AB") == 0
    assert redis_server.command("EVAL", redis_scripts.COMPACT_LIST, 1, "l", 2, sha, "AB") == 1
    assert redis_server.command("LRANGE", "l", 0, -1) == [b"AB", b"c"]


@pytest_twisted.ensureDeferred
async def test_a_hung_server_fails_calls_within_the_timeout(redis_server: Any) -> None:
    """SIGSTOP: the server accepts nothing and answers nothing.  Calls fail
    within the timeout instead of waiting forever, then work again."""
    from twisted.internet import reactor

    storage = make_storage(redis_server.url, timeout=0.5)
    await storage.open()
    try:
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            t0 = reactor.seconds()
            with pytest.raises(RedisUnavailable):
                await storage.write(make_batch(samples=[(CPU, T0, 1)]))
            assert reactor.seconds() - t0 < 3.0
            with pytest.raises(RedisUnavailable):
                await storage.read_series(S, "cpu", None, None)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        await until_up(lambda: storage.write(make_batch(samples=[(CPU, T0, 2)])))
        [(_, times, values, _)] = await until_up(
            lambda: storage.read_series(S, "cpu", None, None))
        assert (times, values) == ([T0], [2])
    finally:
        await storage.close()


async def until_up(call: Callable[[], Any], seconds: float = 10.0) -> Any:
    """``call()`` once the shards it needs answer again (txredisapi reconnects
    each pool by itself, the writer and the readers each on their own)."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + seconds
    while True:
        try:
            return await call()
        except RedisUnavailable:
            if reactor.seconds() > deadline:
                raise
            await deferLater(0.05)


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_open_names_an_unreachable_shard(redis_server: Any) -> None:
    port = redis_server.port
    redis_server.stop()
    storage = make_storage(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}"):
        await storage.open()


@pytest_twisted.ensureDeferred
async def test_password_in_the_url(redis_servers: Any) -> None:
    [srv] = redis_servers(1, password="s3cret-pass")
    storage = make_storage(srv.url)
    await storage.open()
    try:
        await storage.write(make_batch(samples=[(CPU, T0, 1)]))
        assert await storage.count_points(S) == 1
    finally:
        await storage.close()
    wrong = make_storage(f"redis://:nope@127.0.0.1:{srv.port}/0")
    with pytest.raises(RedisUnavailable, match="WRONGPASS") as e:
        await wrong.open()
    assert "nope" not in str(e.value)


@pytest_twisted.ensureDeferred
async def test_rediss_verifies_the_server_certificate(redis_servers: Any) -> None:
    [srv] = redis_servers(1, tls=True)
    assert srv.url.startswith("rediss://")
    storage = make_storage(srv.url, tls_ca=str(srv.ca_path))
    await storage.open()
    try:
        await storage.write(make_batch(samples=[(CPU, T0, 7)]))
        [(_, _, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert values == [7]
    finally:
        await storage.close()
    untrusted = make_storage(srv.url)  # the system's trust store does not know the CA
    with pytest.raises(RedisUnavailable):
        await untrusted.open()


@pytest_twisted.ensureDeferred
async def test_replicas_make_an_ack_wait_for_a_replica(redis_servers: Any) -> None:
    primary, replica = redis_servers(2)
    lonely = make_storage(primary.url, replicas=1, replicas_timeout=0.2)
    await lonely.open()
    try:
        with pytest.raises(RedisUnavailable, match="0 of 1 replicas"):
            await lonely.write(make_batch(samples=[(CPU, T0, 1)]))
    finally:
        await lonely.close()
    replica.command("REPLICAOF", "127.0.0.1", primary.port)
    for _ in range(200):
        if "master_link_status:up" in replica.command("INFO", "replication", decode=True):
            break
        await deferLater(0.05)
    storage = make_storage(primary.url, replicas=1, replicas_timeout=2.0)
    await storage.open()
    try:
        await storage.write(make_batch(samples=[(CPU, T0 + 1, 2)]))
        keys = replica.command("KEYS", "tsnet:s:default:d:*")
        assert len(keys) == 1 and replica.command("LLEN", keys[0]) >= 1
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_growing_a_shard_keeps_every_read_and_rebalance_moves_its_share(
        redis_servers: Any) -> None:
    from tsnet.model import Message

    a, b = redis_servers(2)
    keys = [("m", None, (("host", f"h{i}"),)) for i in range(200)]
    one = make_storage(a.url)
    await one.open()
    try:
        await one.write(make_batch(samples=[(k, T0, 1) for k in keys],
                                   messages=[Message("e", T0, "old")]))
        assert b.dbsize() == 0
    finally:
        await one.close()
    two = make_storage(f"{a.url} {b.url}")
    await two.open()
    try:
        # newer writes for the same times: where the ring sends them now
        await two.write(make_batch(samples=[(k, T0, 2) for k in keys] +
                                   [(k, T0 + 1, 3) for k in keys],
                                   messages=[Message("e", T0 + 1, "new")]))
        want = [(k, [T0, T0 + 1], [2, 3], None) for k in sorted(keys)]
        assert await two.read_series(S, "m", None, None) == want
        assert [m.message for m in await two.read_messages(S)] == ["old", "new"]
        before = await collect(two, None)

        moved = await two.rebalance()
        on_b = len(b.command("KEYS", "tsnet:s:default:d:*"))
        assert moved["series"] == on_b and 50 < on_b < 150  # about half moved, only to b
        assert len(a.command("KEYS", "tsnet:s:default:d:*")) == 200 - on_b
        assert await two.read_series(S, "m", None, None) == want
        assert await collect(two, None) == before
        assert (await two.rebalance())["series"] == 0
    finally:
        await two.close()


@pytest_twisted.ensureDeferred
async def test_the_catalog_stays_where_it_is_when_shards_are_added(redis_servers: Any) -> None:
    from tsnet.errors import ConfigError
    from tsnet.records import SolutionRecord

    a, b, c = redis_servers(3)
    one = make_storage(a.url)
    await one.open()
    await one.create_solution(SolutionRecord("fleet"))
    await one.close()
    for urls in (f"{b.url} {a.url} {c.url}", f"{c.url} {b.url} {a.url}"):
        grown = make_storage(urls)
        await grown.open()
        try:
            assert [s.name for s in await grown.list_solutions()] == ["fleet"]
        finally:
            await grown.close()
    assert b.command("KEYS", "tsnet:c:*") == [] and c.command("KEYS", "tsnet:c:*") == []
    b.command("SET", "tsnet:c:gen", "1")
    split = make_storage(f"{a.url} {b.url}")
    with pytest.raises(ConfigError, match=r"the catalog .* is on several shards"):
        await split.open()


@pytest_twisted.ensureDeferred
async def test_a_batch_retried_after_one_shard_failed_is_committed_once(
        redis_servers: Any) -> None:
    """One shard down: the write fails after the other shard committed its part.
    The write queue retries the same WriteBatch; the committed part is skipped."""
    from tsnet.model import Message

    a, b = redis_servers(2)
    storage = make_storage(f"{a.url} {b.url}", timeout=1.0)
    await storage.open()
    try:
        batch = make_batch(samples=[(("m", None, (("i", str(i)),)), T0, i) for i in range(50)],
                           messages=[Message("e", T0, "once")])
        b.stop()
        with pytest.raises(RedisUnavailable):
            await storage.write(batch)
        assert len(a.command("KEYS", "tsnet:s:default:d:*")) > 0  # a's part is in
        b.restart()
        await until_up(lambda: storage.write(batch))
        lines = await until_up(lambda: collect(storage, S))  # the read pool reconnects too
        assert sorted(x["value"] for x in lines if x["kind"] == "series") == list(range(50))
        assert [x["message"] for x in lines if x["kind"] == "message"] == ["once"]
        for server in (a, b):
            for key in server.command("KEYS", "tsnet:s:default:d:*"):
                assert server.command("LLEN", key) == 1
    finally:
        await storage.close()
