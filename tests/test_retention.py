"""Retention on a real store, SQLite and Redis: what reads see (OpenTSDB
``/api/query``, ATSD's series and message queries, the export), and what the
background removal takes away (chunk rows, list blobs), with the rule's
precedence (metric, solution, server) and the config and command errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, task

from tests.helpers.clients import connect_line, sleep
from tsnet.config import load_config
from tsnet.errors import ConfigError
from tsnet.expiry import Expirer
from tsnet.plugins import load_plugins
from tsnet.records import SolutionRecord
from tsnet.retention import (
    DAY_NS,
    Cutoffs,
    cutoff_of,
    days_ns,
    effective_ns,
    parse_retention,
)
from tsnet.storage import redis_codec
from tsnet.testing.fixtures import STORAGE_SECTION
from tsnet.testing.process import tsnet as run_tsnet

MS = 1_000_000

CONFIG = f"""
[tsnet]
data_dir = var
flush_interval = 0.05
retention = 30d
retention_interval = 0

{STORAGE_SECTION}
[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1

[listener:short]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
solution = short

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = atsd opentsdb
"""


@pytest.fixture
def storage_config(each_backend: str) -> str:
    return each_backend


# -- the rule, pure --------------------------------------------------------------


def test_durations_and_none() -> None:
    assert parse_retention("90d") == 90 * DAY_NS
    assert parse_retention(" 12h ") == 12 * 3600 * 10**9
    assert parse_retention("1w") == 7 * DAY_NS
    assert parse_retention("none") is None and parse_retention("0") is None
    for bad in ("90", "d", "90x", "-1d", "1.5d", ""):
        with pytest.raises(ValueError, match="is not a retention"):
            parse_retention(bad)


def test_the_metric_wins_then_the_solution_then_the_server() -> None:
    assert effective_ns(1, 2, 3) == 1
    assert effective_ns(None, 2, 3) == 2
    assert effective_ns(None, None, 3) == 3
    assert effective_ns(None, None, None) is None
    assert days_ns(2) == 2 * DAY_NS and days_ns(0.5) == DAY_NS // 2
    assert days_ns(0) is None and days_ns(True) is None and days_ns("3") is None
    # whole milliseconds, and nothing before int64 time
    assert cutoff_of(10 * DAY_NS + 1_234_567, DAY_NS) == 9 * DAY_NS + MS
    assert cutoff_of(10, 2**63) is None
    cut = Cutoffs(100, {"long": 10, "ever": None})
    assert (cut.series("x"), cut.series("long"), cut.series("ever")) == (100, 10, None)
    assert cut.lowest is None and Cutoffs(100, {"long": 10}).lowest == 10
    assert cut and not Cutoffs() and not Cutoffs(None, {"ever": None})


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tsnet.ini"
    path.write_text(textwrap.dedent(body))
    return path


def test_bad_retention_in_the_config_names_the_key(tmp_path: Path) -> None:
    plugins = load_plugins()
    path = write_config(tmp_path, "[tsnet]\nretention = 90 days\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), plugins)
    assert "[tsnet] retention: '90 days' is not a retention" in str(caught.value)
    path = write_config(tmp_path, "[tsnet]\nretention_interval = -1\n")
    with pytest.raises(ConfigError, match=r"\[tsnet\] retention_interval"):
        load_config(str(path), plugins)
    path = write_config(tmp_path, "[tsnet]\nretention = 2w\nretention_interval = 5\n")
    config = load_config(str(path), plugins)
    assert (config.retention, config.retention_interval) == (14 * DAY_NS, 5.0)
    assert load_config(str(write_config(tmp_path, "[tsnet]\n")), plugins).retention is None


# -- a real server -----------------------------------------------------------------


def now_ms(server: Any) -> int:
    return int(server.core.reactor.seconds() * 1000)


async def send_acked(server: Any, listener: str, lines: list[str]) -> None:
    """ATSD commands, each with ``debug``: back once all are committed."""
    c = await connect_line(server.port(listener))
    c.send("".join(f"debug {line}\n" for line in lines))
    got = await c.wait_lines(len(lines), timeout=20)
    assert got == ["ok"] * len(lines), got
    c.close()


async def settle(server: Any, solution: str = "default") -> None:
    """What is committed so far into chunks of its own (SQLite folds its
    pending log before a read), so later writes make other chunks."""
    await server.flush()
    raw = server.core.storages.backend("default")
    await raw.read_series(solution, None, None, None)


async def post_json(server: Any, path: str, body: Any) -> Any:
    resp = await treq.post(f"http://127.0.0.1:{server.port('http')}{path}", json=body)
    assert resp.code == 200, await treq.content(resp)
    return json.loads(await treq.content(resp))


async def opentsdb_times(server: Any, metric: str) -> list[int]:
    resp = await treq.get(f"http://127.0.0.1:{server.port('opentsdb')}/api/query"
                          f"?start=0&m=none:{metric}&ms=true")
    body = json.loads(await treq.content(resp))
    if resp.code == 400:  # no such metric
        return []
    return sorted(int(t) for r in body for t in r["dps"])


async def atsd_times(server: Any, metric: str, entity: str = "e1") -> list[int]:
    got = await post_json(server, "/api/v1/series/query", [{
        "entity": entity, "metric": metric, "startDate": "1970-01-02T00:00:00Z",
        "endDate": "2200-01-01T00:00:00Z", "timeFormat": "milliseconds"}])
    return sorted(p["t"] for r in got for p in r["data"])


def export_times(lines: list[dict], kind: str = "series", metric: str | None = None) -> list[int]:
    return sorted(r["time_ms"] for r in lines
                  if r["kind"] == kind and (metric is None or r.get("metric") == metric))


async def raw_times(server: Any, solution: str, metric: str) -> list[int]:
    """What the storage holds, retention not applied."""
    rows = await server.core.storages.backend("default").read_series(solution, metric,
                                                                       None, None)
    return sorted(t // MS for r in rows for t in r[1])


def stored_pieces(server: Any, redis: Any, solution: str = "default") -> int:
    """Chunk rows (SQLite) or list blobs (Redis) of the solution's series, read
    from the store itself."""
    raw = server.core.storages.backend("default")
    if redis is None:
        with sqlite3.connect(raw.path) as db:
            return db.execute("SELECT count(*) FROM chunks c JOIN series s ON s.id ="
                              " c.series_id WHERE s.solution = ?", (solution,)).fetchone()[0]
    keys = redis.command("KEYS", f"tsnet:s:{solution}:d:*")
    return sum(redis.command("LLEN", k) for k in keys)


def redis_of(request: Any, storage_config: str) -> Any:
    return request.getfixturevalue("redis_server") if "redis" in storage_config else None


@pytest_twisted.ensureDeferred
async def test_reads_leave_out_expired_points_and_removal_takes_whole_chunks(
        make_server: Any, request: Any, storage_config: str) -> None:
    server = await make_server(CONFIG)
    redis = redis_of(request, storage_config)
    now = now_ms(server)
    day = 86_400_000
    old = [now - 60 * day + i * 1000 for i in range(5)]
    new = [now - day + i * 1000 for i in range(5)]
    await send_acked(server, "atsd", [f"series e:e1 m:cpu={i} ms:{t}" for i, t in enumerate(old)]
                     + [f"message e:e1 t:type=app m:old{i} ms:{t}" for i, t in enumerate(old)])
    await settle(server)
    await send_acked(server, "atsd", [f"series e:e1 m:cpu={i} ms:{t}" for i, t in enumerate(new)]
                     + [f"message e:e1 t:type=app m:new{i} ms:{t}" for i, t in enumerate(new)])
    await settle(server)

    # every read leaves the expired points out; storage still holds them
    assert await opentsdb_times(server, "cpu") == new
    assert await atsd_times(server, "cpu") == new
    messages = await post_json(server, "/api/v1/messages/query", [{
        "entity": "e1", "startDate": "1970-01-02T00:00:00Z", "endDate": "2200-01-01T00:00:00Z"}])
    assert sorted(m["message"] for m in messages) == [f"new{i}" for i in range(5)]
    lines = await server.export()
    assert export_times(lines) == new
    assert export_times(lines, "message") == new
    assert await raw_times(server, "default", "cpu") == old + new
    before = stored_pieces(server, redis)
    assert before >= 2

    # the background removal: whole chunks gone, the rest kept
    expirer = Expirer(server.core.storages, server.core.reactor, interval=0, pause=0)
    done = await expirer.run_once()
    assert done["chunks"] >= 1 and done["messages"] == 5
    assert await raw_times(server, "default", "cpu") == new
    assert 1 <= stored_pieces(server, redis) < before
    raw = server.core.storages.backend("default")
    assert sorted(m.message for m in await raw.read_messages("default")) == [
        f"new{i}" for i in range(5)]
    assert await opentsdb_times(server, "cpu") == new
    assert export_times(await server.export()) == new
    # a second pass finds nothing more
    assert await expirer.run_once() == {"chunks": 0, "messages": 0}


@pytest_twisted.ensureDeferred
async def test_solution_and_metric_retention_override_the_servers(
        make_server: Any, storage_config: str) -> None:
    server = await make_server(CONFIG)
    catalog = server.core.catalog
    short = await catalog.get_solution("short")
    short.attributes["retention"] = "7d"
    await catalog.update_solution(short)
    await server.core.storages.refresh()
    now = now_ms(server)
    day = 86_400_000
    t10, t45, t100 = now - 10 * day, now - 45 * day, now - 100 * day
    await send_acked(server, "atsd", [
        "metric m:keep rd:90", "metric m:brief rd:5", "metric m:plain rd:0"])
    for i, t in enumerate((t100, t45, t10)):  # a chunk each
        await send_acked(server, "atsd", [f"series e:e1 m:keep={i} m:brief={i} m:plain={i}"
                                          f" ms:{t}"])
        await settle(server)
    await send_acked(server, "short", [f"series e:e1 m:cpu=1 ms:{t10}",
                                       f"message e:e1 m:gone ms:{t10}"])
    await settle(server, "short")
    await send_acked(server, "short", [f"series e:e1 m:cpu=2 ms:{now - day}"])
    await settle(server, "short")
    assert await atsd_times(server, "keep") == [t45, t10]  # 90 days, not 30
    assert await atsd_times(server, "brief") == []  # 5 days
    assert await atsd_times(server, "plain") == [t10]  # 0: the solution's 30
    assert export_times(await server.export("short")) == [now - day]  # 7 days
    assert export_times(await server.export("short"), "message") == []
    lines = await server.export()
    assert export_times(lines, metric="keep") == [t45, t10]
    assert export_times(lines, metric="brief") == []
    assert [r["retention_days"] for r in lines if r["kind"] == "metric"
            and r["metric"] == "keep"] == [90]

    expirer = Expirer(server.core.storages, server.core.reactor, interval=0, pause=0)
    await expirer.run_once()
    assert await raw_times(server, "default", "keep") == [t45, t10]
    assert await raw_times(server, "default", "plain") == [t10]
    assert await raw_times(server, "default", "brief") == []  # nothing newer than 5 days
    assert await raw_times(server, "short", "cpu") == [now - day]
    assert await server.core.storages.backend("default").read_messages("short") == []
    # a metric's retention made longer is read afresh before anything goes
    await send_acked(server, "atsd", ["metric m:plain rd:200",
                                      f"series e:e1 m:plain=9 ms:{t100}"])
    await settle(server)
    await expirer.run_once()
    assert await raw_times(server, "default", "plain") == [t100, t10]


@pytest_twisted.ensureDeferred
async def test_a_clock_moves_data_past_its_retention(make_server: Any, request: Any,
                                                     storage_config: str) -> None:
    """Reads and the scheduled removal both follow the clock they are given."""
    server = await make_server(CONFIG)
    redis = redis_of(request, storage_config)
    storages = server.core.storages
    clock = task.Clock()
    clock.advance(server.core.reactor.seconds())
    storages.retention.clock = clock
    now = now_ms(server)
    day = 86_400_000
    times = [now - 20 * day, now - 10 * day]
    await send_acked(server, "atsd", [f"series e:e1 m:cpu=1 ms:{times[0]}"])
    await settle(server)
    await send_acked(server, "atsd", [f"series e:e1 m:cpu=2 ms:{times[1]}"])
    await settle(server)
    assert await atsd_times(server, "cpu") == times
    clock.advance(15 * 86_400)  # now the first is 35 days old
    assert await atsd_times(server, "cpu") == times[1:]
    before = stored_pieces(server, redis)

    expirer = Expirer(storages, clock, interval=60, pause=0)
    expirer.startService()
    try:
        clock.advance(59)
        assert expirer._running is None  # not due yet
        clock.advance(1)
        assert expirer._running is not None
        await expirer._running
    finally:
        await defer.maybeDeferred(expirer.stopService)
    assert await raw_times(server, "default", "cpu") == times[1:]
    assert stored_pieces(server, redis) < before


@pytest_twisted.ensureDeferred
async def test_ingest_goes_on_while_removal_runs(make_server: Any, storage_config: str) -> None:
    server = await make_server(CONFIG)
    now = now_ms(server)
    day = 86_400_000
    await send_acked(server, "atsd", [
        f"series e:e{i} m:cpu={i} ms:{now - 60 * day}" for i in range(600)])
    await settle(server)
    expirer = Expirer(server.core.storages, server.core.reactor, interval=0, step=8,
                      pause=0.02)
    running = defer.ensureDeferred(expirer.run_once())
    acked_during = 0
    for i in range(5):
        await send_acked(server, "atsd", [f"series e:live m:cpu={i} ms:{now - i}"])
        acked_during += not running.called
    done = await running
    assert done["chunks"] >= 600
    assert acked_during >= 3  # acks kept coming while the pass was under way
    assert await atsd_times(server, "cpu", "live") == sorted(now - i for i in range(5))
    await sleep(0)


# -- the command --------------------------------------------------------------


def tsnet(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_tsnet(config, *args, check=False)


@pytest.mark.subprocess
def test_solution_retention_from_the_command(tmp_path: Path, storage_config: str) -> None:
    config = write_config(tmp_path, f"[tsnet]\ndata_dir = var\n\n[storage:default]\n"
                                    f"{storage_config}")
    p = tsnet(config, "solution", "create", "plant", "--retention", "90d")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["retention"] == "90d"
    p = tsnet(config, "solution", "create", "other")
    assert json.loads(p.stdout)["retention"] is None
    p = tsnet(config, "solution", "update", "plant", "--retention", "30d",
              "--description", "sensors")
    assert p.returncode == 0, p.stderr
    listed = {s["name"]: s for s in map(json.loads, tsnet(config, "solution", "list")
                                        .stdout.splitlines())}
    assert (listed["plant"]["retention"], listed["plant"]["description"]) == ("30d", "sensors")
    assert listed["other"]["retention"] is None
    p = tsnet(config, "solution", "update", "plant", "--retention", "none")
    assert json.loads(p.stdout)["retention"] is None
    p = tsnet(config, "solution", "update", "plant", "--retention", "90 days")
    assert p.returncode == 2 and "'90 days' is not a retention" in p.stderr
    p = tsnet(config, "solution", "create", "bad", "--retention", "soon")
    assert p.returncode == 2 and "'soon' is not a retention" in p.stderr
    p = tsnet(config, "solution", "update", "nosuch", "--retention", "1d")
    assert p.returncode == 1 and "no solution 'nosuch'" in p.stderr
    p = tsnet(config, "solution", "update", "plant")
    assert p.returncode == 1 and "nothing to change" in p.stderr


@pytest_twisted.ensureDeferred
async def test_a_solution_retention_set_by_the_command_reaches_a_running_server(
        make_server: Any, storage_config: str) -> None:
    server = await make_server(CONFIG)
    now = now_ms(server)
    day = 86_400_000
    await send_acked(server, "atsd", [f"series e:e1 m:cpu=1 ms:{now - 10 * day}"])
    assert await atsd_times(server, "cpu") == [now - 10 * day]
    rec: SolutionRecord = await server.core.catalog.get_solution("default")
    rec.attributes["retention"] = "5d"
    await server.core.catalog.update_solution(rec)  # as `tsnet solution update` does
    for _ in range(100):
        if not await atsd_times(server, "cpu"):
            break
        await sleep(0.1)
    assert await atsd_times(server, "cpu") == []


def test_redis_blob_helpers() -> None:
    blob = redis_codec.encode_samples([30, 10, 20, 40], [3, 1, 2, 4], None)
    assert redis_codec.samples_before(blob, 25) == (4, 2)
    kept = redis_codec.samples_from(blob, 25)
    assert redis_codec.decode_samples(kept) == ([30, 40], [3, 4], None)
    from tsnet.model import Message

    msgs = redis_codec.encode_messages([Message("e", 5, "a"), Message("e", 50, "b")])
    assert redis_codec.messages_before(msgs, 10) == (2, 1)
    assert [m.message for m in redis_codec.decode_messages(
        redis_codec.messages_from(msgs, 10))] == ["b"]


# -- storage level: what one removal step does ---------------------------------


def redis_storage(url: str) -> Any:
    from twisted.internet import reactor

    from tsnet.storage.redis import RedisStorage
    from tsnet.storage.redis_shards import ShardOptions, parse_redis_urls

    return RedisStorage("default", parse_redis_urls(url), reactor, ShardOptions(timeout=5.0))


@pytest_twisted.ensureDeferred
async def test_redis_trims_whole_head_blobs_and_rewrites_a_mostly_expired_one(
        redis_server: Any) -> None:
    from tsnet.storage import redis as redis_module
    from tsnet.testing.conformance import CPU, T0, S, make_batch

    storage = redis_storage(redis_server.url)
    await storage.open()
    try:
        # blobs: [0..9] [10..19] ... [90..99], then one compacted-like blob 100..199
        for lo in range(0, 100, 10):
            await storage.write(make_batch(samples=[(CPU, T0 + t, t) for t in range(lo, lo + 10)]))
        await storage.write(make_batch(samples=[(CPU, T0 + t, t) for t in range(100, 200)]))
        key = f"tsnet:s:{S}:d:" + (await storage._index(S, "cpu"))[0][1]
        assert redis_server.command("LLEN", key) == 11
        cut = Cutoffs(T0 + 125)
        removed, cursor = await storage.expire_series(S, cut, None, 256)
        # one step drops HEAD_BLOBS whole blobs and comes back for the rest
        assert removed == redis_module.HEAD_BLOBS and cursor is not None
        while cursor is not None:
            n, cursor = await storage.expire_series(S, cut, cursor, 256)
            removed += n
        assert removed == 10
        # 25 of the last blob's 100 points were expired: a quarter, so rewritten
        [blob] = redis_server.command("LRANGE", key, 0, -1)
        assert redis_codec.decode_samples(blob)[0] == [T0 + t for t in range(125, 200)]
        # less than a quarter: left whole (reads hide it), nothing removed
        assert await storage.expire_series(S, Cutoffs(T0 + 130), None, 256) == (0, None)
        assert redis_server.command("LLEN", key) == 1
        [(_, times, _, _)] = await storage.read_series(S, "cpu", None, None)
        assert times == [T0 + t for t in range(125, 200)]
        # a list that changed between the read and the trim is left alone
        heads = redis_server.command("LRANGE", key, 0, 0)
        done = await storage._eval(storage._shards[0], redis_module.lua.TRIM_HEADS,
                                   (1, "0" * 40, b""), keys=[key], write=True)
        assert done == [0] and redis_server.command("LRANGE", key, 0, 0) == heads
        # messages: whole blobs (one per batch) from the head
        from tsnet.model import Message

        for t in (1, 2, 300):
            await storage.write(make_batch(messages=[Message("e", T0 + t, f"m{t}")]))
        assert await storage.expire_messages(S, T0 + 100, None, 10) == (2, None)
        assert [m.message for m in await storage.read_messages(S)] == ["m300"]
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_keeps_a_chunk_with_any_point_after_the_cutoff(tmp_path: Path) -> None:
    from twisted.internet import reactor

    from tsnet.storage.sqlite import SqliteStorage
    from tsnet.testing.conformance import CPU, T0, S, make_batch

    path = tmp_path / "x.sqlite"
    storage = SqliteStorage("default", str(path), reactor, pending_max_points=0)
    await storage.open()
    try:
        await storage.write(make_batch(samples=[(CPU, T0 + t, t) for t in range(0, 10)]))
        await storage.write(make_batch(samples=[(CPU, T0 + t, t) for t in range(10, 20)]))
        await storage.write(make_batch(samples=[(CPU, T0 + 5, 55), (CPU, T0 + 30, 30)]))
        assert await storage.expire_series(S, Cutoffs(T0 + 15), None, 256) == (1, None)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT min_time, max_time FROM chunks ORDER BY id").fetchall() \
                == [(T0 + 10, T0 + 19), (T0 + 5, T0 + 30)]
        # the points kept read back as before: the later write at T0+5 still wins
        [(_, times, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert list(zip(times, values, strict=True)) == [
            (T0 + 5, 55), *((T0 + t, t) for t in range(10, 20)),
            (T0 + 30, 30)]
        # a series whose metric keeps its points for ever is not touched
        assert await storage.expire_series(S, Cutoffs(T0 + 100, {"cpu": None}), None, 256) \
            == (0, None)
        # steps: max_series at a time, the cursor the last series id
        more = [(("m", None, (("h", str(i)),)), T0 + i, i) for i in range(5)]
        await storage.write(make_batch(samples=more))
        removed, cursor = await storage.expire_series(S, Cutoffs(T0 + 100), None, 4)
        assert cursor is not None
        rest, cursor = await storage.expire_series(S, Cutoffs(T0 + 100), cursor, 4)
        assert cursor is None and removed + rest == 2 + 5
        from tsnet.model import Message

        await storage.write(make_batch(messages=[Message("e", T0 + t, f"m{t}")
                                                 for t in range(10)]))
        assert await storage.expire_messages(S, T0 + 7, None, 4) == (4, True)
        assert await storage.expire_messages(S, T0 + 7, True, 4) == (3, None)
        assert [m.message for m in await storage.read_messages(S)] == ["m7", "m8", "m9"]
    finally:
        await storage.close()


@pytest.mark.subprocess
@pytest_twisted.ensureDeferred
async def test_tsnet_export_leaves_out_what_reads_leave_out(make_server: Any) -> None:
    """The command's export (the text fast path without a retention in force,
    line by line with one) is the full export less the expired lines, byte
    for byte."""
    server = await make_server(CONFIG)
    now = now_ms(server)
    day = 86_400_000
    await send_acked(server, "atsd", [
        "metric m:keep rd:90", f"series e:e1 m:cpu=1.5 m:keep=1 ms:{now - 60 * day}",
        f"series e:e1 m:cpu=2 m:keep=2 x:cpu=\"a text\" ms:{now - day}",
        f"message e:e1 m:old ms:{now - 60 * day}", f"message e:e1 m:new ms:{now - day}",
        f"property e:e1 t:disk k:mount=/ v:fs=ext4 ms:{now - 60 * day}"])
    await send_acked(server, "short", [f"series e:e1 m:cpu=3 ms:{now - 60 * day}"])
    await server.stop()
    config = server.config_path
    text = config.read_text()
    kept = run_tsnet(config, "export").stdout.splitlines()
    config.write_text(text.replace("retention = 30d", "retention = none"))
    everything = run_tsnet(config, "export").stdout.splitlines()
    old = now - 60 * day

    def expired(line: str) -> bool:
        obj = json.loads(line)
        return (obj["kind"] in ("series", "message") and obj["time_ms"] == old
                and obj.get("metric") != "keep")

    assert kept == [line for line in everything if not expired(line)]
    assert len(everything) - len(kept) == 3  # cpu in default and in short, a message
    config.write_text(text)
    one = run_tsnet(config, "export", "--solution", "default").stdout.splitlines()
    assert one == [line for line in kept if json.loads(line)["solution"] == "default"]


@pytest_twisted.ensureDeferred
async def test_a_failing_removal_is_logged_and_tried_again_later(tmp_path: Path) -> None:
    """A storage that refuses the removal (a trigger, for real, so SQLite) costs
    a log line; the job runs again at its next interval, and reads still hide."""
    from tsnet.testing.fixtures import start_server

    server = await start_server(tmp_path, CONFIG)
    try:
        await removal_fails_then_goes_on(server)
    finally:
        await server.stop()


async def removal_fails_then_goes_on(server: Any) -> None:
    from tests.helpers.logs import refuse, watching

    now = now_ms(server)
    await send_acked(server, "atsd", [f"series e:e1 m:cpu=1 ms:{now - 60 * 86_400_000}"])
    await settle(server)
    refuse(server, "chunks", "DELETE")
    clock = task.Clock()
    expirer = Expirer(server.core.storages, clock, interval=60, pause=0)
    with watching("tsnet.expiry") as events:
        expirer.startService()
        try:
            clock.advance(60)
            await expirer._running
            assert expirer._running is None and expirer._call.active()  # again in 60 s
        finally:
            await defer.maybeDeferred(expirer.stopService)
    assert len(events.failures()) == 1
    assert await raw_times(server, "default", "cpu") == [now - 60 * 86_400_000]
    assert await atsd_times(server, "cpu") == []
