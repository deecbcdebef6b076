"""Reads at high cardinality: ``/api/query`` and ``/api/suggest`` through the
tag index (`ITagIndex`) and keyed reads (`ISeriesByKey`), over real HTTP on
a real SQLite file (and Redis, which has keyed reads only).

Every answer is compared with the answer of the same solution's data read
the way a backend without those interfaces is read (the whole metric, then
filtered): `WithoutIndex` shows the same stored series through
``list_series`` and ``read_series`` alone, as a family's series view (the
server's own extension point for a reader), so the two paths run in one
server on one store.  The SQLite tests below them look at the file itself:
the migration of a schema-1 file, and that a read never touches the rows
of the series it does not select.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from zope.interface import implementer

from tsnet.auth import mint_token
from tsnet.interfaces import IBoundedReads, ISeriesByKey, IStorage, ITagIndex
from tsnet.model import Batch, Meta, Principal, series_key, series_tags
from tsnet.records import SolutionRecord
from tsnet.retention import DAY_NS
from tsnet.storage import sqlite_tags
from tsnet.storage.sqlite import SCHEMA_VERSION, SqliteEngine
from tsnet.testing.conformance import make_batch
from tsnet.testing.fixtures import STORAGE_SECTION

T0 = 1_356_998_400
S = 1_000_000_000
INDEXED, PLAIN = "idx", "plain"

CONFIG = f"""
[tsnet]
data_dir = var
flush_interval = 0.05
max_query_points = {{points}}

{STORAGE_SECTION}
[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb
auth = token
"""


@pytest.fixture
def storage_config(each_backend: str) -> str:
    return each_backend


@implementer(IStorage, IBoundedReads)
class WithoutIndex:
    """A reader with neither `ISeriesByKey` nor `ITagIndex`: the series read
    side of the solution, through the two calls every backend has."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def list_series(self, *args: Any) -> defer.Deferred:
        return self._reader.list_series(*args)

    def read_series(self, *args: Any, **kw: Any) -> defer.Deferred:
        return self._reader.read_series(*args, **kw)


def series_set() -> list[tuple]:
    """(key, [(time_s, value)]): hosts, data centres (some without), entities
    (one beside a tag named ``entity``), and a second metric with the same tags."""
    out = []
    for i in range(30):
        tags = {"host": f"h{i % 10}"}
        if i % 4:
            tags["dc"] = f"d{i % 3}"
        if i >= 20:
            tags["rack"] = f"r{i}"
        out.append((series_key("m", tags), [(T0 + 10 * t + i % 7, t * (i + 1) + (i % 2) * 0.5)
                                            for t in range(6)]))
    out.append((series_key("m", {"host": "h1"}, entity="srv1"), [(T0 + 3, 7), (T0 + 33, 9)]))
    out.append((series_key("m", {"host": "h2", "entity": "tag"}, entity="srv2"),
                [(T0 + 4, 1.5)]))
    out.append((series_key("m", {}, entity="h1"), [(T0 + 5, 2)]))
    out += [(series_key("other", {"host": f"h{i}"}), [(T0 + i, i)]) for i in range(5)]
    return out


async def post_to(server: Any, solution: str, items: list[tuple]) -> None:
    b = Batch()
    for key, points in items:
        for t, v in points:
            b.samples.add(key, int(t * S), v)
    await server.core.ingest.submit(b, Principal(solution, frozenset(("read", "write"))))


async def two_solutions(make_server: Any, items: list[tuple], points: int = 10_000_000
                        ) -> tuple[Any, dict]:
    """A server whose solutions ``idx`` and ``plain`` hold ``items``, ``plain``
    read through `WithoutIndex`; READ tokens of each, without tags and with
    ``host=h1``."""
    server = await make_server(CONFIG.format(points=points))
    cat = server.core.catalog
    secrets = {}
    for name in (INDEXED, PLAIN):
        await cat.create_solution(SolutionRecord(name=name))
        for who, tags in (("all", {}), ("h1", {"host": "h1"})):
            rec, sec = mint_token(name, tags=tags)
            await cat.save_token(rec)
            secrets[name, who] = sec["read"]
    await server.core.storages.refresh()
    server.core.storages.add_series_view(
        lambda rec, backend: WithoutIndex(backend) if rec.name == PLAIN else None)
    for name in (INDEXED, PLAIN):
        await post_to(server, name, items)
    return server, secrets


async def get(server: Any, secret: str, path: str, body: Any = None) -> tuple[int, bytes]:
    target = f"http://127.0.0.1:{server.port('http')}{path}"
    user, _, key = secret.partition(":")
    if body is None:
        resp = await treq.get(target, auth=(user, key))
    else:
        resp = await treq.post(target, json.dumps(body).encode(), auth=(user, key))
    return resp.code, await resp.content()


QUERIES = [
    "sum:m{host=h1}", "sum:m{host=h1|h2|nope}", "max:m{dc=d1}{host=h1|h4|h7}",
    "none:m{host=h3|h4}", "first:m{}{host=h1|h2|h3}", "last:m{}{host=h2|h1}",
    "sum:m{host=h1}{host=h1|h2}", "sum:m{host=h1,dc=*}", "sum:m{dc=d0}{host=regexp(h[12])}",
    "sum:m{host=literal_or(h1|h2)}{dc=not_literal_or(d1)}", "sum:m{host=iliteral_or(H1|h2)}",
    "sum:m{entity=srv1|tag|h1}", "sum:m{entity=*}{host=h1|h2}", "sum:m{host=nope}",
    "sum:nosuch{host=h1}", "sum:other{host=h1|h3}", "sum:1m-avg-zero:m{host=h1|h2}",
    "sum:rate:m{host=h2}", "avg:m", "sum:m{host=*}", "sum:m{dc=wildcard(d*)}",
    "sum:m{rack=r21|r22}{dc=d1|d2}", "sum:m{host=h1}{dc=not_key()}",
    "count:30s-count:m{dc=d2}{host=h2|h5|h8}",
]
POSTS = [
    {"aggregator": "sum", "metric": "m", "explicitTags": True, "filters": [
        {"type": "literal_or", "tagk": "host", "filter": "h1|h4", "groupBy": True},
        {"type": "wildcard", "tagk": "dc", "filter": "*", "groupBy": False}]},
    {"aggregator": "min", "metric": "m", "tags": {"host": "h5|h6"}},
    {"aggregator": "sum", "metric": "m", "filters": [
        {"type": "literal_or", "tagk": "host", "filter": "h1", "groupBy": False},
        {"type": "literal_or", "tagk": "host", "filter": "h2", "groupBy": False}]},
]
SUGGESTS = ["type=metrics", "type=metrics&q=o", "type=metrics&q=m&max=1", "type=tagk",
            "type=tagk&q=r", "type=tagv", "type=tagv&q=h1", "type=tagv&q=r2&max=3",
            "type=tagv&q=srv", "type=tagv&q=zz", "type=tagx"]


@pytest_twisted.ensureDeferred
async def test_pushdown_answers_as_the_whole_metric_read_does(make_server: Any,
                                                              storage_config: str) -> None:
    """Every filter form, aggregator and READ-token tag limit: the same reply
    bytes, whether the series come from the index and keyed reads or from
    the whole metric filtered afterwards."""
    server, secrets = await two_solutions(make_server, series_set())
    reader = server.core.storages.series_reader(INDEXED)
    assert ITagIndex.providedBy(reader) == ("sqlite" in storage_config)  # (Redis: no index)
    assert ISeriesByKey.providedBy(reader)
    assert not ITagIndex.providedBy(server.core.storages.series_reader(PLAIN))
    window = f"start={T0}&end={T0 + 70}"
    answered = 0
    for who in ("all", "h1"):
        for m in QUERIES:
            path = f"/api/query?{window}&m={quote(m)}"
            got = await get(server, secrets[INDEXED, who], path)
            assert got == await get(server, secrets[PLAIN, who], path), (who, m)
            answered += got[0] == 200 and got[1] != b"[]"
        for sub in POSTS:
            body = {"start": T0, "end": T0 + 70, "msResolution": True, "queries": [sub]}
            got = await get(server, secrets[INDEXED, who], "/api/query", body)
            assert got == await get(server, secrets[PLAIN, who], "/api/query", body), (who, sub)
            assert got[0] == 200
        for q in SUGGESTS:
            path = f"/api/suggest?{q}"
            got = await get(server, secrets[INDEXED, who], path)
            assert got == await get(server, secrets[PLAIN, who], path), (who, q)
    assert answered >= 30  # (most of them hold data: the comparison is not of nothing)
    status, body = await get(server, secrets[INDEXED, "all"], "/api/suggest?type=tagv&q=h")
    assert (status, json.loads(body)) == (200, [f"h{i}" for i in range(10)])


@pytest_twisted.ensureDeferred
async def test_a_query_reads_only_the_series_it_selects(make_server: Any) -> None:
    """With ``max_query_points = 1000`` and 3000 points of other series of the
    metric stored, a query of one series is answered from the index and by
    key (and by key alone for a pattern), and refused where the whole metric
    is read."""
    items = [(series_key("m", {"host": "target"}), [(T0 + t, t) for t in range(10)])]
    items += [(series_key("m", {"host": f"other{i}"}), [(T0 + t, t) for t in range(100)])
              for i in range(30)]
    server, secrets = await two_solutions(make_server, items, points=1000)
    for m in ("sum:m{host=target}", "sum:m{host=wildcard(targ*)}"):
        path = f"/api/query?start={T0}&end={T0 + 200}&m={quote(m)}"
        status, body = await get(server, secrets[INDEXED, "all"], path)
        assert status == 200, body
        assert json.loads(body)[0]["dps"] == {str(T0 + t): t for t in range(10)}
        status, body = await get(server, secrets[PLAIN, "all"], path)
        assert status == 413 and b"max_query_points" in body
    # more than the limit in the selected series themselves is still refused
    eleven = "|".join(f"other{i}" for i in range(11))
    path = f"/api/query?start={T0}&end={T0 + 200}&m={quote(f'sum:m{{host={eleven}}}')}"
    status, body = await get(server, secrets[INDEXED, "all"], path)
    assert status == 413 and b"max_query_points" in body
    status, body = await get(server, secrets[INDEXED, "all"], "/api/suggest?type=tagv&max=40")
    assert (status, len(json.loads(body))) == (200, 31)


@pytest_twisted.ensureDeferred
async def test_keyed_reads_leave_out_expired_points(make_server: Any) -> None:
    """Retention (`tsnet.retained`) applies to reads by key as to reads by
    metric: from the cutoff of each series' metric."""
    server = await make_server(CONFIG.format(points=1000).replace(
        "max_query_points", "retention = 30d\nmax_query_points"))
    now = int(server.core.reactor.seconds()) * S
    old, new = now - 60 * DAY_NS, now - DAY_NS
    keys = [series_key("keep", {"h": "a"}), series_key("keep", {"h": "b"}),
            series_key("cpu", {"h": "a"})]
    wb = make_batch(samples=[(k, t, 1) for k in keys for t in (old, new)])
    wb.for_solution("default").meta.append(Meta("metric", "keep", {"retention_days": 90}))
    await server.core.storages.backend("default").write(wb)
    reader = server.core.storages.backend_for("default")
    assert ISeriesByKey.providedBy(reader)
    got = await reader.read_series_of("default", keys, None, None)
    assert [(r[0], r[1]) for r in got] == [(keys[2], [new]), (keys[0], [old, new]),
                                           (keys[1], [old, new])]
    assert got == [r for r in await reader.read_series("default", None, None, None)]
    got = await reader.read_series_of("default", keys[2:], None, None)
    assert [r[1] for r in got] == [[new]]
    assert await reader.read_series_of("default", keys[2:], None, new - 1) == []


# -- SQLite: the file ------------------------------------------------------------------


def fill(engine: SqliteEngine, n: int, metric: str = "m") -> list:
    keys = [series_key(metric, {"host": f"h{i}", "dc": f"d{i % 5}"}) for i in range(n)]
    keys += [series_key(metric, {"host": "x"}, entity="srv"),
             series_key(metric, {"entity": "t", "host": "y"}, entity="srv")]
    engine.write(make_batch(samples=[(k, T0 * S + t, t) for k in keys for t in range(10)]))
    return keys


def index_rows(path: Path) -> list:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM series_tags ORDER BY 1, 2, 3, 4, 5").fetchall()
    finally:
        db.close()


def test_a_schema_1_file_is_indexed_when_opened(tmp_path: Path) -> None:
    """A file written before the index (its tables dropped, version 1) gets
    the rows a new file has, and its reads go through them."""
    fresh, old = tmp_path / "fresh.sqlite", tmp_path / "old.sqlite"
    for path in (fresh, old):
        engine = SqliteEngine(str(path))
        engine.open()
        keys = fill(engine, 50)
        engine.write(make_batch("other", samples=[(keys[0], T0 * S, 1)]))
        engine.close()
    db = sqlite3.connect(old)
    db.executescript("DROP TABLE series_tags;"
                     " UPDATE info SET value = 1 WHERE key = 'schema_version';")
    db.close()
    engine = SqliteEngine(str(old))
    engine.open()
    try:
        version = engine.db.execute(
            "SELECT value FROM info WHERE key = 'schema_version'").fetchone()[0]
        assert (version, sqlite_tags.VERSION) == (SCHEMA_VERSION, 2)
        got = engine.list_series_where("default", "m", {"host": frozenset({"h3", "x", "y"})})
        assert got == [keys[3], keys[-1], keys[-2]]
        assert engine.list_series_where("default", "m", {"entity": frozenset({"srv"})}) == [
            keys[-2]]
        assert engine.suggest_names("default", "tagk", "", 9) == ["dc", "entity", "host"]
        assert engine.suggest_names("default", "tagv", "", 4) == ["d0", "d1", "d2", "d3"]
    finally:
        engine.close()
    assert index_rows(old) == index_rows(fresh)
    assert len(index_rows(old)) == 2 * 50 + 1 + 2 + 2  # (and "other"'s two)


def test_a_schema_2_file_drops_its_key_texts_and_keeps_every_series(tmp_path: Path) -> None:
    """A file whose ``series`` rows still hold ``skey`` (the whole key as a
    text, under a UNIQUE index) is rebuilt without it when opened: the same
    ids and reads, its series found by key (written again, none is made
    twice), and a new series gets the next id."""
    path = tmp_path / "old.sqlite"
    engine = SqliteEngine(str(path))
    engine.open()
    keys = fill(engine, 30)
    engine.close()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT id, solution, metric, entity, tags FROM series").fetchall()
    db.executescript(
        "DROP TABLE series; CREATE TABLE series (id INTEGER PRIMARY KEY, solution TEXT"
        " NOT NULL, metric TEXT NOT NULL, entity TEXT, tags TEXT NOT NULL,"
        " skey TEXT NOT NULL UNIQUE); CREATE INDEX series_metric ON series (solution, metric);"
        " UPDATE info SET value = 2 WHERE key = 'schema_version';")
    db.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?)", [
        (*row, json.dumps([row[1], row[2], row[3], sorted(json.loads(row[4]).items())],
                          separators=(",", ":"), sort_keys=True)) for row in rows])
    db.commit()
    db.close()
    engine = SqliteEngine(str(path))
    engine.open()
    try:
        db = engine.db
        assert db.execute("SELECT value FROM info WHERE key = 'schema_version'").fetchone() == (3,)
        assert [r[1] for r in db.execute("PRAGMA table_info(series)")] == [
            "id", "solution", "metric", "entity", "tags"]
        assert [r[1] for r in db.execute("PRAGMA index_list(series)")] == ["series_key"]
        assert db.execute("SELECT id, solution, metric, entity, tags FROM series"
                          " ORDER BY id").fetchall() == sorted(rows)
        before = engine.read_series("default", "m", None, None)
        assert len(before) == len(keys) and all(len(times) == 10 for _, times, _, _ in before)
        assert engine.list_series_where("default", "m", {"host": frozenset({"h3", "x"})}) == [
            keys[3], keys[-2]]
        new = series_key("m", {"host": "new"})
        engine.write(make_batch(samples=[(k, T0 * S + 99, 1) for k in [*keys, new]]))
        assert db.execute("SELECT count(*), max(id) FROM series").fetchone() == (
            len(keys) + 1, len(keys) + 1)
        assert engine.read_series_of("default", [new, keys[0]])[0][0] == keys[0]
        after = {k: len(times) for k, times, _, _ in engine.read_series("default", "m", None,
                                                                         None)}
        assert after == {**{k: 11 for k in keys}, new: 1}
    finally:
        engine.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = SqliteEngine(str(path))
    engine.open()
    engine.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE info SET value = 4 WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="unknown schema version 4"):
        SqliteEngine(str(path)).open()


def test_reads_never_touch_the_rows_of_other_series(tmp_path: Path) -> None:
    """The chunks and ``series`` rows of every series but the selected ones
    made unreadable: keyed reads and the index still answer, exactly, while
    the whole-metric reads fail on them."""
    engine = SqliteEngine(str(tmp_path / "db.sqlite"), pending_max_points=0)  # chunks only
    engine.open()
    keys = fill(engine, 200)
    want = engine.read_series("default", "m", None, None)
    chosen = [keys[7], keys[-1]]
    ids = [engine.db.execute("SELECT id FROM series WHERE metric = 'm' AND tags = ?",
                             (json.dumps(dict(k[2]), separators=(",", ":"), sort_keys=True),)
                             ).fetchone()[0] for k in chosen]
    marks = ",".join("?" * len(ids))
    db = sqlite3.connect(tmp_path / "db.sqlite")
    with db:
        db.execute(f"UPDATE chunks SET times = x'01', vals = x'02' WHERE series_id NOT IN "
                   f"({marks})", ids)
        db.execute(f"UPDATE series SET tags = '{{broken' WHERE id NOT IN ({marks})", ids)
    db.close()
    try:
        got = engine.read_series_of("default", chosen, None, None)
        assert got == [r for r in want if r[0] in chosen]
        assert engine.list_series_where(
            "default", "m", {"host": frozenset({"y", "z"}), "entity": frozenset({"t"})}) \
            == [keys[-1]]
        assert engine.list_series_where("default", "m", {"dc": frozenset({"d2"}),
                                                         "host": frozenset({"h7"})}) == [keys[7]]
        for read in (lambda: engine.read_series("default", "m", None, None),
                     lambda: engine.list_series("default", "m")):
            with pytest.raises(ValueError):  # (the bytes made unreadable above)
                read()
    finally:
        engine.close()


def vm_steps(engine: SqliteEngine, call: Any, *args: Any) -> int:
    """SQLite virtual-machine instructions (in hundreds) that ``call(*args)`` runs."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    engine.db.set_progress_handler(tick, 100)
    try:
        call(*args)
    finally:
        engine.db.set_progress_handler(None, 100)
    return steps[0]


CALLS = [("suggest_names", "default", "tagv", "h5", 10),
         ("suggest_names", "default", "tagk", "", 10),
         ("suggest_names", "default", "metrics", "", 10),
         ("list_series_where", "default", "m", {"host": frozenset({"h1", "h2", "h3"})}),
         ("list_series", "default", "m")]


def test_index_work_does_not_grow_with_the_series_count(tmp_path: Path) -> None:
    """Suggest and a literal lookup cost the same with 100 and 10,000 series
    of the metric; listing the metric costs about 100 times more."""
    costs = []
    for n in (100, 10_000):
        engine = SqliteEngine(str(tmp_path / f"{n}.sqlite"), pending_max_points=0)
        engine.open()
        try:
            fill(engine, n)
            costs.append([vm_steps(engine, getattr(engine, c[0]), *c[1:]) for c in CALLS])
        finally:
            engine.close()
    small, large = costs
    for a, b in zip(small[:-1], large[:-1], strict=True):
        assert b <= 2 * a + 5, costs
    assert large[-1] > 50 * small[-1], costs


def test_deleting_a_solution_drops_its_index_rows(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = SqliteEngine(str(path))
    engine.open()
    keys = fill(engine, 5)
    engine.write(make_batch("other", samples=[(keys[0], T0 * S, 1)]))
    engine.delete_solution_data("default")
    assert {r[0] for r in index_rows(path)} == {"other"}
    assert engine.list_series_where("default", "m", {"host": frozenset({"h0"})}) == []
    # a series made again after the delete is indexed again
    engine.write(make_batch(samples=[(keys[1], T0 * S, 1)]))
    assert engine.list_series_where("default", "m", {"host": frozenset({"h1"})}) == [keys[1]]
    assert series_tags(keys[1]) == {"host": "h1", "dc": "d1"}
    engine.close()
