"""The read side's limits through real HTTP on a real server: the buckets,
points read, points returned and time one request may cost ([tsnet]
``max_query_*``, ``query_timeout``), refused with the protocol's own error
naming the key; heavy work off the reactor, so writes and other requests are
served while it runs, and stopped when its client goes away; bad numbers and
bodies answered with 400s that carry no interpreter detail."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from tests.helpers.clients import connect_line, wait_for
from tsnet.model import Batch, anonymous, series_key
from tsnet.testing.fixtures import BASE_CONFIG
from tsnet.testing.process import running, send_lines

T0 = 1_356_998_400  # 2013-01-01T00:00:00Z
S = 1_000_000_000
MS = 1_000_000

ATSD_HTTP = BASE_CONFIG.replace("apis = metrics", "apis = opentsdb atsd metrics")


def limits(**keys: Any) -> str:
    """BASE_CONFIG (with the atsd read API) and ``[tsnet]`` query limits."""
    lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return ATSD_HTTP.replace("flush_interval = 0.05\n", f"flush_interval = 0.05\n{lines}")


def url(server: Any, path: str, listener: str = "opentsdb") -> str:
    return f"http://127.0.0.1:{server.port(listener)}{path}"


async def call(method: str, target: str, body: Any = None, raw: bytes | None = None) -> Any:
    """(status, parsed JSON or None, response, raw body)."""
    if body is not None:
        raw = json.dumps(body).encode()
    resp = await treq.request(method, target, data=raw)
    content = await resp.content()
    parsed = json.loads(content) if content[:1] in (b"[", b"{") else None
    return resp.code, parsed, resp, content


async def write(server: Any, points: list[tuple]) -> None:
    """Commit (metric, tags, time_ns, value) points to the default solution."""
    b = Batch()
    for metric, tags, t, v in points:
        b.samples.add(series_key(metric, tags), t, v)
    await server.core.ingest.submit(b, anonymous("default"))


def interleaved(series: int, points: int, metric: str = "q.heavy") -> list[tuple]:
    """``series`` series of ``points`` points each, 1 ms apart and interleaved, so
    aggregating them interpolates every series at every other one's times:
    series times points squared of work for few points stored."""
    return [(metric, {"host": f"h{i:04d}"}, T0 * S + (j * series + i) * MS, j)
            for i in range(series) for j in range(points)]


def limit_error(got: Any, key: str) -> None:
    """An OpenTSDB error object whose message names the limit ``key``."""
    assert set(got) == {"error"}
    assert f"limit {key} = " in got["error"]["message"], got


# -- buckets ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fill_buckets_are_refused_before_any_work(server: Any) -> None:
    """The issue's query (10 M one-second buckets over one stored point) is a
    413 naming max_query_buckets, for GET and POST, before anything is read."""
    await write(server, [("q.one", {"host": "a"}, T0 * S, 1)])
    q = "/api/query?start=1346998400&end=1356998400&m=sum:1s-avg-zero:q.one"
    code, got, resp, _ = await call("GET", url(server, q))
    assert code == 413
    assert got["error"]["code"] == 413
    limit_error(got, "max_query_buckets")
    assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    body = {"start": 1346998400, "end": 1356998400, "queries": [
        {"aggregator": "sum", "metric": "q.one", "downsample": "1s-avg-zero"}]}
    code, got, _, _ = await call("POST", url(server, "/api/query"), body)
    assert code == 413
    limit_error(got, "max_query_buckets")
    # the same range at a coarser interval is a normal query
    code, got, _, _ = await call("GET", url(server, q.replace("1s-avg", "1d-avg")))
    assert code == 200
    assert got[0]["dps"][str(T0)] == 1.0
    assert len(got[0]["dps"]) == 116  # one bucket a day, zero-filled


@pytest_twisted.ensureDeferred
async def test_buckets_without_fill_are_counted_as_they_are_made(make_server: Any) -> None:
    server = await make_server(limits(max_query_buckets=50))
    await write(server, [("q.b", {"host": "a"}, (T0 + i) * S, i) for i in range(100)])
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 100}&m=sum:1s-avg:q.b"))
    assert code == 413
    limit_error(got, "max_query_buckets")
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 100}&m=sum:10s-avg:q.b"))
    assert (code, len(got[0]["dps"])) == (200, 10)


# -- points read and returned ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_points_read_limit(make_server: Any) -> None:
    server = await make_server(limits(max_query_points=100))
    await write(server, [("q.p", {"host": h}, (T0 + i) * S, i)
                         for h in ("a", "b") for i in range(80)])
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 100}&m=sum:q.p"))
    assert code == 413
    limit_error(got, "max_query_points")
    # a range that reads fewer points is answered (whole hours are read, as
    # OpenTSDB does, so the range must end an hour before the points)
    await write(server, [("q.p2", {"host": "a"}, (T0 + 7200 + i) * S, i) for i in range(10)])
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0 + 7200}&end={T0 + 7300}&m=sum:q.p2"))
    assert (code, len(got[0]["dps"])) == (200, 10)
    # ATSD's series query spends the same limit
    code, got, _, _ = await call("POST", url(server, "/api/v1/series/query", "http"), [{
        "entity": "*", "metric": "q.p", "startDate": T0 * 1000,
        "endDate": (T0 + 100) * 1000}])
    assert code == 413
    assert "limit max_query_points = 100" in got["error"]


@pytest_twisted.ensureDeferred
async def test_points_returned_limit_on_every_read_route(make_server: Any) -> None:
    server = await make_server(limits(max_query_output=20))
    await write(server, [("q.o", {"host": f"h{i:02d}"}, (T0 + i) * S, i) for i in range(30)])
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 100}&m=sum:q.o"))
    assert code == 413
    limit_error(got, "max_query_output")
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 10}&m=sum:q.o"))
    assert (code, len(got[0]["dps"])) == (200, 11)
    code, got, _, _ = await call("GET", url(server, "/api/suggest?type=tagv&max=100"))
    assert code == 413
    limit_error(got, "max_query_output")
    code, got, _, _ = await call("GET", url(server, "/api/suggest?type=tagv&max=5"))
    assert (code, got) == (200, ["h00", "h01", "h02", "h03", "h04"])
    code, got, _, _ = await call("GET", url(server, "/api/search/lookup?m=q.o&limit=0"))
    assert code == 413
    limit_error(got, "max_query_output")
    code, got, _, _ = await call("GET", url(server, "/api/search/lookup?m=q.o&limit=3"))
    assert (code, got["totalResults"], len(got["results"])) == (200, 30, 3)
    code, got, _, _ = await call("POST", url(server, "/api/v1/series/query", "http"), [{
        "entity": "*", "metric": "q.o", "startDate": T0 * 1000,
        "endDate": (T0 + 100) * 1000}])
    assert code == 413
    assert "limit max_query_output = 20" in got["error"]


# -- time, and the reactor ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_query_timeout_stops_the_work(make_server: Any) -> None:
    """A query that would compute for minutes is stopped at query_timeout: a
    503 naming the key, and no thread is left working on it."""
    server = await make_server(limits(query_timeout=0.5))
    await write(server, interleaved(1000, 100))
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 100}&m=sum:q.heavy&ms"))
    assert code == 503
    limit_error(got, "query_timeout")
    pool = server.core.reactor.getThreadPool()
    await wait_for(lambda: not pool.working, timeout=10)  # the thread let go of it


@pytest_twisted.ensureDeferred
async def test_heavy_query_does_not_block_writes_or_other_requests(make_server: Any) -> None:
    """While a query that computes for minutes runs, a telnet put is committed
    and read back, and other requests are answered; when its client goes away
    its work stops (long before its query_timeout)."""
    server = await make_server(limits(query_timeout=600))
    await write(server, interleaved(1000, 100))
    heavy = await connect_line(server.port("opentsdb"))
    heavy.send(f"GET /api/query?start={T0}&end={T0 + 100}&m=sum:q.heavy&ms HTTP/1.1\r\n"
               "Host: tsnet\r\n\r\n")
    pool = server.core.reactor.getThreadPool()
    await wait_for(lambda: pool.working)  # the engine is at work in the pool

    c = await connect_line(server.port("opentsdb"))
    c.send(f"put q.live {T0} 42 host=a\nversion\n")
    assert len(await c.wait_lines(2, timeout=60)) >= 2
    await server.flush()
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 1}&m=sum:q.live"))
    assert (code, got[0]["dps"]) == (200, {str(T0): 42})
    code, _, _, _ = await call("GET", url(server, "/api/version"))
    assert code == 200
    assert heavy.received == b""  # all that was served while the heavy query ran
    assert pool.working

    heavy.transport.abortConnection()
    await wait_for(lambda: not pool.working, timeout=60)
    c.close()


# -- bad numbers and bodies ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_times_and_numbers_beyond_what_storage_holds_are_400s(server: Any) -> None:
    await write(server, [("q.one", {"host": "a"}, T0 * S, 1)])
    many = "9" * 5000
    for path, message in [
        (f"/api/query?start={T0}&end=10000000000000&m=sum:q.one",
         "End time [10000000000000] is outside the times tsnet can store"),
        (f"/api/query?start={many}ms&m=sum:q.one", "Invalid time: 999999"),
        (f"/api/query?start={many}s-ago&m=sum:q.one", "Duration must be < Long.MAX_VALUE"),
        (f"/api/query?start={T0}&m=sum:{many}s-avg:q.one", "Duration must be < Long.MAX_VALUE"),
        (f"/api/query?start={T0}&m=sum:rate{{counter,{many}}}:q.one",
         "Max value of counter was not a number"),
        (f"/api/suggest?type=metrics&max={many}", "Unable to parse 'max' as a number"),
        (f"/api/search/lookup?m=q.one&limit={many}",
         "Unable to convert 'limit' to a valid number"),
    ]:
        code, got, _, raw = await call("GET", url(server, path))
        assert code == 400, (path, raw[:300])
        assert got["error"]["message"].startswith(message), (path, got)
        assert len(raw) < 1000  # the number is not echoed in full
    for body, details in [
        (b'{"start":' + many.encode() + b',"queries":[]}', "A number has more than"),
        (('{"start":"' + many + '","queries":[{"aggregator":"sum","metric":"q.one"}]}')
         .encode(), None),
        (b"[" * 100_000, "Arrays and objects are nested too deeply"),
        (b'{"start":1,"queries":[{"aggregator":"sum","metric":"q.one","rate":true,'
         b'"rateOptions":{"counterMax":"' + many.encode() + b'"}}]}', "counterMax must be"),
    ]:
        code, got, _, raw = await call("POST", url(server, "/api/query"), raw=body)
        assert code == 400, (body[:60], raw[:300])
        if details is None:
            assert got["error"]["message"].startswith("Invalid time: 999999")
        else:
            assert got["error"]["details"].startswith(details), got
        assert b"Traceback" not in raw and b"Error" not in raw and len(raw) < 1000


@pytest_twisted.ensureDeferred
async def test_atsd_bad_dates_and_bodies_are_400s(make_server: Any) -> None:
    server = await make_server(ATSD_HTTP)
    many = "9" * 5000
    for body in [
        b"[" * 100_000,
        b'[{"entity":"e","metric":"m","startDate":' + many.encode() + b',"endDate":1}]',
        ('[{"entity":"e","metric":"m","startDate":"' + many + '","endDate":1}]').encode(),
        b'[{"entity":"e","metric":"m","startDate":0,"endDate":10000000000000000}]',
        b'[{"entity":"e","metric":"m","startDate":0,"endDate":1e300}]',
        b'[{"entity":"e","metric":"m","interval":{"count":1e306,"unit":"week"}}]',
        b'[{"entity":"e","metric":"m","startDate":"now - 1e999 * day","endDate":"now"}]',
    ]:
        for path in ("/api/v1/series/query", "/api/v1/messages/query"):
            code, got, resp, raw = await call("POST", url(server, path, "http"), raw=body)
            assert code == 400, (path, body[:70], raw[:300])
            assert list(got) == ["error"] and len(raw) < 1000
            assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"]


@pytest_twisted.ensureDeferred
async def test_an_unexpected_failure_shows_no_internal_detail(server: Any) -> None:
    """A bug is a 500 whose body says nothing of the exception (here: storage
    closed under the request)."""
    await write(server, [("q.one", {"host": "a"}, T0 * S, 1)])
    await server.core.storages.backend_for("default").close()
    code, got, _, raw = await call("GET", url(server, f"/api/query?start={T0}&m=sum:q.one"))
    assert (code, got) == (500, {"error": {"code": 500, "message": "Unexpected exception"}})
    assert b"RuntimeError" not in raw and b"not open" not in raw


@pytest_twisted.ensureDeferred
async def test_limits_are_config_keys(make_server: Any) -> None:
    server = await make_server(limits(max_query_points=7, max_query_buckets=8,
                                      max_query_output=9, query_timeout=1.5,
                                      max_pattern_length=10))
    cfg = server.core.config
    assert (cfg.max_query_points, cfg.max_query_buckets, cfg.max_query_output,
            cfg.query_timeout, cfg.max_pattern_length) == (7, 8, 9, 1.5, 10)
    await write(server, [("q.one", {"host": "a"}, T0 * S, 1)])
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&m=sum:q.one{{host=regexp(abcdefghijk)}}"))
    assert code == 400
    assert "max_pattern_length = 10" in got["error"]["message"]
    code, got, _, _ = await call("GET", url(
        server, f"/api/query?start={T0}&m=sum:q.one{{host=regexp(^a$)}}"))
    assert (code, got[0]["dps"]) == (200, {str(T0): 1})


# -- a real twistd: pathological patterns, SIGTERM during a heavy query ----------------

PROCESS_CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05
query_timeout = 600

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = metrics
"""


def _http(port: int, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
    """(status, parsed JSON) from a blocking client: the server is another process."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.subprocess
def test_pathological_patterns_answer_at_once_and_correctly(tmp_path: Path) -> None:
    """The issue's ReDoS inputs (and worse ones: Python's regex engine would take
    hours or years on them) are answered, right, well within the client's
    timeout: regexes run on RE2, globs never backtrack."""
    values = ["a" * 26 + "-", "a" * 40 + "-", "aaa", "a" * 2000, "a" * 1999 + "b"]
    with running(tmp_path, PROCESS_CONFIG, {"opentsdb", "http"}) as srv:
        port = srv.ports["opentsdb"]
        code, _ = _http(port, "POST", "/api/put?details", [
            {"metric": "q.re", "timestamp": T0 + i, "value": i, "tags": {"host": v}}
            for i, v in enumerate(values)])
        assert code == 200
        srv.wait_metric("tsnet_points_written_total", len(values))

        def hosts(ftype: str, pattern: str) -> list[str]:
            code, got = _http(port, "POST", "/api/query", {
                "start": T0, "end": T0 + 10, "queries": [{
                    "aggregator": "sum", "metric": "q.re", "filters": [
                        {"type": ftype, "tagk": "host", "filter": pattern,
                         "groupBy": True}]}]}, timeout=20)
            assert code == 200, got
            return [r["tags"]["host"] for r in got]

        assert hosts("regexp", "^(a+)+$") == ["aaa", "a" * 2000]
        assert hosts("wildcard", "*a*a*a*b") == ["a" * 1999 + "b"]
        assert hosts("iwildcard", "*A*A*A*B") == ["a" * 1999 + "b"]
        assert hosts("regexp", "(a|aa)+$") == ["aaa", "a" * 2000]
        # the GET form's shortcut glob, and a pattern RE2 cannot run
        code, got = _http(port, "GET", f"/api/query?start={T0}&m=sum:q.re%7Bhost=*a*a*a*b%7D",
                          timeout=20)
        assert (code, [r["tags"]["host"] for r in got]) == (200, ["a" * 1999 + "b"])
        code, got = _http(port, "GET",
                          f"/api/query?start={T0}&m=sum:q.re%7Bhost=regexp((a)%5C1)%7D")
        assert code == 400
        assert "Invalid regular expression '(a)\\\\1': invalid escape" in got["error"]["message"]


@pytest.mark.subprocess
def test_sigterm_stops_a_server_in_the_middle_of_a_heavy_query(tmp_path: Path) -> None:
    """A query that would compute for minutes does not hold up a SIGTERM: the
    reactor is free to stop, and stopping cancels the work in the pool."""
    import signal
    import threading

    with running(tmp_path, PROCESS_CONFIG, {"opentsdb", "http"}) as srv:
        port = srv.ports["opentsdb"]
        lines = [f"put q.heavy {T0 * 1000 + t} {j} host={h}\n"
                 for h, t, j in ((f"h{i:04d}", j * 1000 + i, j)
                                 for i in range(1000) for j in range(100))]
        assert send_lines(port, lines) == ""
        srv.wait_metric("tsnet_points_written_total", len(lines), timeout=60)
        answers: list[Any] = []

        def heavy() -> None:
            try:
                answers.append(_http(port, "GET", f"/api/query?start={T0}&end={T0 + 100}"
                                     "&m=sum:q.heavy&ms", timeout=120))
            except OSError as e:  # the server went away: what a stop does
                answers.append(e)

        client = threading.Thread(target=heavy, daemon=True)
        client.start()
        time.sleep(1.0)  # let the query reach the engine (not a timing assertion)
        assert not answers  # it is still computing
        srv.signal(signal.SIGTERM)
        assert srv.wait(timeout=30) == -signal.SIGTERM
        client.join(30)
    assert "tsnet stopped cleanly" in srv.text()
