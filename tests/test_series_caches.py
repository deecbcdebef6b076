"""Every per-series cache of the ingest path, filled past its limit through a
real server (loopback sockets, a real SQLite file or redis-server): later
points must still land on their own series, once each.

The limits are made tiny (a few series) so that 40 series evict each cache
many times, mid-batch and between batches; rounds send the series in other
orders, with their tags in another order (another cache entry, the same
series), and one round is narrow (60 points a series: chunks on SQLite, where
the others go to the pending log).  bench/memory.py measures what each cache
costs per series at its real limit."""

from __future__ import annotations

import gc
import json
import random
import re
import weakref
from typing import Any

import pytest
import pytest_twisted

from tests.helpers.clients import connect_line, wait_for
from tsnet.model import SampleSet
from tsnet.protocols.atsd import http_command as atsd_http
from tsnet.protocols.atsd import tcp as atsd_tcp
from tsnet.protocols.atsd.meta import MetaRules
from tsnet.protocols.atsd.parse import SeriesFastPath
from tsnet.protocols.opentsdb import http_put, telnet
from tsnet.storage import redis as redis_storage
from tsnet.storage import sqlite as sqlite_storage
from tsnet.testing.fixtures import BASE_CONFIG

SERIES = 40
#: entries each protocol cache may hold here (its real limit: 10,000 to 100,000)
PARSER_LIMIT = 7
#: series ids each storage remembers here (its real limit: 200,000)
ID_LIMIT = 10
TS = 1_356_998_400
NARROW = 60  # points a series in the narrow round

CONFIG = BASE_CONFIG + """
[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
"""


@pytest.fixture
def storage_config(each_backend: str) -> str:
    """Every test here on SQLite and on Redis: each has its own series-id cache."""
    return each_backend


def names(i: int) -> tuple[str, dict[str, str]]:
    return f"m{i % 3}", {"host": f"h{i:02}", "dc": f"d{i % 4}"}


def rounds() -> list[list[tuple[int, int, int, bool]]]:
    """Rounds of (series, time in s, value, tags reversed); each round a batch
    of its own (the narrow one perhaps several)."""
    shuffled = list(range(SERIES))
    random.Random(15).shuffle(shuffled)
    orders = [(list(range(SERIES)), False), (list(range(SERIES))[::-1], True),
              (list(range(0, SERIES, 3)), False), (shuffled, True)]
    out = [[(i, TS + r, i * 1000 + r, rev) for i in order] for r, (order, rev) in enumerate(orders)]
    out.append([(i, TS + 100 + k, i * 1000 + 100 + k, False)
                for k in range(NARROW) for i in range(SERIES)])
    return out


def tag_pairs(i: int, reverse: bool) -> list[tuple[str, str]]:
    pairs = list(names(i)[1].items())
    return pairs[::-1] if reverse else pairs


def expected(entity: Any = None) -> dict[tuple, list[tuple[int, int]]]:
    want: dict[tuple, list[tuple[int, int]]] = {}
    for batch in rounds():
        for i, t, v, _ in batch:
            metric, tags = names(i)
            key = (metric, entity(i) if entity else None, tuple(sorted(tags.items())))
            want.setdefault(key, []).append((t * 1000, v))
    return {k: sorted(v) for k, v in want.items()}


async def stored(server: Any, skip_entity: str | None = None) -> dict[tuple, list]:
    got: dict[tuple, list] = {}
    for r in await server.export():
        if r["kind"] != "series" or (skip_entity and r.get("entity") == skip_entity):
            continue
        key = (r["metric"], r.get("entity"), tuple(sorted(r["tags"].items())))
        got.setdefault(key, []).append((r["time_ms"], r["value"]))
    return {k: sorted(v) for k, v in got.items()}


async def serve_recording(make_server: Any, monkeypatch: Any, modules: tuple, cls: Any,
                          listener: str, **limit: int) -> tuple[Any, list, Any]:
    """A server whose ``modules`` make ``cls`` with a small limit, and a line
    client on its ``listener``: (server, the instances made, client)."""
    made: list = []

    def make(*args: Any, **kw: Any) -> Any:
        obj = cls(*args, **{**kw, **limit})
        made.append(obj)
        return obj

    for module in modules:
        monkeypatch.setattr(module, cls.__name__, make)
    server = await make_server(CONFIG)
    return server, made, await connect_line(server.port(listener))


def storage_ids(server: Any) -> int:
    """Series ids the default storage remembers for solution ``default``."""
    backend = server.core.storages.backend("default")
    if isinstance(backend, redis_storage.RedisStorage):
        return len(backend._series.get("default", {}))
    return len(backend._engine._ids.get("default", {}))


@pytest.fixture
def small_storage_caches(monkeypatch: Any) -> None:
    monkeypatch.setattr(sqlite_storage, "SERIES_ID_CACHE", ID_LIMIT)
    monkeypatch.setattr(redis_storage, "SERIES_CACHE", ID_LIMIT)


@pytest_twisted.ensureDeferred
async def test_telnet_parser_cache_and_series_ids_evict_and_stay_right(
        make_server: Any, monkeypatch: Any, small_storage_caches: None) -> None:
    server, made, c = await serve_recording(make_server, monkeypatch, (telnet,),
                                            telnet.PutParser, "opentsdb",
                                            cache_limit=PARSER_LIMIT)
    most = 0
    for n, batch in enumerate(rounds(), 1):
        c.send("".join(
            f"put {names(i)[0]} {t} {v} " + " ".join(f"{k}={x}" for k, x in tag_pairs(i, rev))
            + "\n" for i, t, v, rev in batch) + "version\n")
        lines = await c.wait_lines(2 * n, timeout=20)
        assert len(lines) == 2 * n, lines  # nothing but the version replies
        await server.flush()
        most = max(most, storage_ids(server))
    c.close()
    (parser,) = made
    assert len(parser._cache) <= PARSER_LIMIT
    assert most <= ID_LIMIT + SERIES
    assert await stored(server) == expected()


def put_request(points: list[dict]) -> bytes:
    body = json.dumps(points).encode()
    return (b"POST /api/put HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest_twisted.ensureDeferred
async def test_http_put_series_cache_and_series_ids_evict_and_stay_right(
        make_server: Any, monkeypatch: Any, small_storage_caches: None) -> None:
    server, made, c = await serve_recording(make_server, monkeypatch, (http_put,),
                                            http_put.SeriesCache, "opentsdb",
                                            limit=PARSER_LIMIT)
    sent = 0
    for batch in rounds():
        points = [{"metric": names(i)[0], "timestamp": t, "value": v,
                   "tags": dict(tag_pairs(i, rev))} for i, t, v, rev in batch]
        requests = [points[k:k + 50] for k in range(0, len(points), 50)]
        c.send(b"".join(map(put_request, requests)))
        sent += len(requests)
        await wait_for(lambda want=sent: len(re.findall(rb"HTTP/1\.1 \d{3} ", c.received))
                       == want, timeout=30)
    c.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", c.received) == [b"204"] * sent
    assert made and all(len(cache.known) <= PARSER_LIMIT for cache in made)
    assert storage_ids(server) <= ID_LIMIT + SERIES
    assert await stored(server) == expected()


def device(i: int) -> str:
    return f"dev{i % 5}"


@pytest_twisted.ensureDeferred
async def test_atsd_series_cache_and_series_ids_evict_and_stay_right(
        make_server: Any, monkeypatch: Any, small_storage_caches: None) -> None:
    server, made, c = await serve_recording(make_server, monkeypatch, (atsd_tcp, atsd_http),
                                            SeriesFastPath, "atsd", limit=PARSER_LIMIT)
    for n, batch in enumerate(rounds(), 1):
        c.send("".join(
            f"series e:{device(i)} m:{names(i)[0]}={v} "
            + " ".join(f"t:{k}={x}" for k, x in tag_pairs(i, rev)) + f" ms:{t * 1000}\n"
            for i, t, v, rev in batch)
            + f"debug series e:barrier m:barrier={n} ms:{TS * 1000}\n")  # ok after commit
        assert await c.wait_lines(n, timeout=20) == ["ok"] * n
    c.close()
    tcp_cache = made[0]  # (the listener's; the HTTP resource has its own)
    assert len(tcp_cache._cache) <= PARSER_LIMIT
    assert storage_ids(server) <= ID_LIMIT + SERIES + 1
    got = await stored(server, skip_entity="barrier")
    assert {k: [(t, float(v)) for t, v in pts] for k, pts in got.items()} == {
        k: [(t, float(v)) for t, v in pts] for k, pts in expected(device).items()}


# -- what the ATSD caches keep alive ---------------------------------------------------------


class _Columns(dict):
    """A batch's columns dict that a test can hold weakly."""


def _take_all(fp: SeriesFastPath, lines: list[str], samples: SampleSet) -> None:
    i = 0
    while i < len(lines):
        i = fp.take(lines, i, samples)
        if i < len(lines):
            fp.parse(lines[i])
            i += 1


def test_the_atsd_fast_path_lets_go_of_written_batches() -> None:
    """A cached series points at the column it last went to, for the next line
    of the same batch; once another batch comes it must not keep the old one
    alive (else each rarely seen series held a written batch: 100 batches of
    18,000 points kept 268 MiB)."""
    fp = SeriesFastPath()
    rare = [f"series e:rare{i} m:m=1 ms:{TS * 1000}" for i in range(3)]
    busy = [f"series e:busy{i} m:m=1 ms:{TS * 1000}" for i in range(50)]
    for line in rare + busy:
        fp.parse(line)
    refs = []
    for b in range(3):
        samples = SampleSet()
        samples.columns = _Columns()
        _take_all(fp, [rare[b], *busy, *busy], samples)
        assert len(samples.columns) == 51 and samples.count == 101
        refs.append(weakref.ref(samples.columns))
        del samples
    gc.collect()
    # only the last batch is held (its columns stay lent until the next one)
    assert [r() is None for r in refs] == [True, True, False]


def test_atsd_meta_rules_keep_only_names_with_rules() -> None:
    """Every entity a series names has a meta record, empty as a rule; the
    rules keep only the names with a field that can discard, and an update
    merges as the whole record would."""
    from tsnet.model import Meta

    rules = MetaRules()
    rules.load([Meta("metric", "m", {"label": "x"}),
                Meta("metric", "bounded", {"min_value": 0, "units": "C"})],
               [Meta("entity", f"dev{i}", {}) for i in range(1000)]
               + [Meta("entity", "off", {"enabled": False, "tags": {"a": "b"}})], now=0.0)
    assert rules.entities == {"off": {"enabled": False}}
    assert rules.metrics == {"bounded": {"min_value": 0}}
    assert rules.active and rules.entity_disabled("off") and not rules.entity_disabled("dev1")
    rules.update(Meta("metric", "bounded", {"invalid_action": "discard", "max_value": 10}))
    assert rules.sample_verdict("x", "bounded", -1) == "out_of_range"
    assert rules.sample_verdict("x", "bounded", 5) is None
    rules.update(Meta("entity", "off", {"enabled": True}))
    rules.update(Meta("entity", "dev7", {"label": "seven"}))
    assert rules.entities == {"off": {"enabled": True}}
    rules.update(Meta("entity", "off", {"enabled": None}))  # a reset: nothing left
    assert rules.entities == {}
    rules.update(Meta("metric", "bounded", {"min_value": "", "max_value": "",
                                            "invalid_action": ""}))
    assert rules.metrics == {} and not rules.active

