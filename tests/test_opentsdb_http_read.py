"""OpenTSDB's HTTP read API through real HTTP on a real server (specs/opentsdb.md §3,
§4, §6): points are written through the ingest path (or telnet), committed, then
read back with treq."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from tests.helpers.clients import connect_line
from tsnet.model import Batch, Principal, anonymous, series_key
from tsnet.testing.fixtures import BASE_CONFIG

T0 = 1_356_998_400  # 2013-01-01T00:00:00Z
S = 1_000_000_000
MS = 1_000_000
JSON_TYPE = ["application/json; charset=UTF-8"]


@pytest.fixture
def storage_config(each_backend: str) -> str:
    """Every test here on SQLite and on Redis."""
    return each_backend


def url(server: Any, path: str, listener: str = "opentsdb") -> str:
    return f"http://127.0.0.1:{server.port(listener)}{path}"


@defer.inlineCallbacks
def call(method: str, target: str, body: Any = None, raw: bytes | None = None,
         **kw: Any) -> Any:
    """(status, parsed JSON body, response)."""
    if body is not None:
        raw = json.dumps(body).encode()
    resp = yield treq.request(method, target, data=raw, **kw)
    content = yield resp.content()
    parsed = json.loads(content) if content[:1] in (b"[", b"{") else None
    return resp.code, parsed, resp, content


def error(code: int, message: str, details: str | None = None) -> dict:
    e: dict = {"code": code, "message": message}
    if details is not None:
        e["details"] = details
    return {"error": e}


@defer.inlineCallbacks
def write(server: Any, points: list[tuple], solution: str = "default") -> Any:
    """Commit (metric, tags, time_s, value) points to a solution."""
    b = Batch()
    for metric, tags, t, v in points:
        b.samples.add(series_key(metric, tags), int(t * S), v)
    principal = anonymous(solution) if solution == "default" else Principal(
        solution, frozenset(("read", "write")))
    yield server.core.ingest.submit(b, principal)


CPU = [
    *[("sys.cpu.user", {"host": "web01", "dc": "lga"}, T0 + 10 * i, i) for i in range(12)],
    *[("sys.cpu.user", {"host": "web02", "dc": "lga"}, T0 + 10 * i + 5, i * 2.5)
      for i in range(12)],
    *[("sys.cpu.user", {"host": "web03", "dc": "nyc"}, T0 + 10 * i, 100 + i) for i in range(12)],
    ("sys.mem", {"host": "web01"}, T0, 512),
]


@pytest.fixture
def cpu_server(server: Any) -> Any:
    pytest_twisted.blockon(write(server, CPU))
    return server


# -- /api/query -------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_query_post_and_get_agree(cpu_server: Any) -> None:
    body = {"start": T0, "end": T0 + 120, "queries": [
        {"aggregator": "sum", "metric": "sys.cpu.user", "tags": {"host": "web01"}}]}
    code, got, resp, raw = yield call("POST", url(cpu_server, "/api/query"), body)
    assert code == 200
    assert resp.headers.getRawHeaders("content-type") == JSON_TYPE
    assert raw.startswith(b'[{"metric":"sys.cpu.user","tags":{"dc":"lga","host":"web01"},'
                          b'"aggregateTags":[],"dps":{"1356998400":0,"1356998410":1,')
    assert got == [{"metric": "sys.cpu.user", "tags": {"dc": "lga", "host": "web01"},
                    "aggregateTags": [],
                    "dps": {str(T0 + 10 * i): i for i in range(12)}}]
    code, _, _, raw_get = yield call(
        "GET", url(cpu_server, f"/api/query?start={T0}&end={T0 + 120}"
                   "&m=sum:sys.cpu.user%7Bhost=web01%7D"))
    assert (code, raw_get) == (200, raw)
    # /api/v1/, a trailing slash and the ms/seconds start forms are the same query
    code, got_v1, _, _ = yield call(
        "GET", url(cpu_server, f"/api/v1/query/?start={T0}000&end=2013/01/01-00:02:00"
                   "&m=sum:sys.cpu.user{host=web01}"))
    assert (code, got_v1) == (200, got)


@pytest_twisted.inlineCallbacks
def test_query_aggregates_and_groups(cpu_server: Any) -> None:
    q = url(cpu_server, f"/api/query?start={T0}&end={T0 + 20}&m=sum:sys.cpu.user")
    code, got, _, _ = yield call("GET", q)
    assert code == 200
    # web02 is interpolated at web01's times and the other way round (integers
    # interpolate with integer maths, as OpenTSDB); web02 starts at +5 (no
    # extrapolation), and its point at +25, past the end, interpolates it at +20
    assert got == [{"metric": "sys.cpu.user", "tags": {}, "aggregateTags": ["dc", "host"],
                    "dps": {str(T0): 100, str(T0 + 5): 100.0, str(T0 + 10): 103.25,
                            str(T0 + 15): 104.5, str(T0 + 20): 107.75}}]
    code, got, _, _ = yield call(
        "GET", url(cpu_server, f"/api/query?start={T0}&end={T0 + 20}"
                   "&m=max:sys.cpu.user{dc=*}{host=web01|web03}"))
    assert [(r["tags"], r["aggregateTags"], r["dps"][str(T0 + 20)]) for r in got] == [
        ({"dc": "lga", "host": "web01"}, [], 2),
        ({"dc": "nyc", "host": "web03"}, [], 102),
    ]
    body = {"start": T0, "end": T0 + 20, "queries": [{
        "aggregator": "avg", "metric": "sys.cpu.user",
        "filters": [{"type": "wildcard", "tagk": "host", "filter": "web0*", "groupBy": True},
                    {"type": "literal_or", "tagk": "dc", "filter": "lga", "groupBy": False}]}]}
    code, got, _, _ = yield call("POST", url(cpu_server, "/api/query"), body)
    assert [r["tags"]["host"] for r in got] == ["web01", "web02"]
    assert got[1]["dps"] == {str(T0 + 5): 0.0, str(T0 + 15): 2.5}


@pytest_twisted.inlineCallbacks
def test_query_downsample_and_fill_policies(cpu_server: Any) -> None:
    q = f"/api/query?start={T0}&end={T0 + 180}&m=sum:1m-avg:sys.cpu.user%7Bhost=web01%7D"
    code, got, _, _ = yield call("GET", url(cpu_server, q))
    assert got[0]["dps"] == {str(T0): 2.5, str(T0 + 60): 8.5}
    for fill, missing in (("null", None), ("nan", "NaN"), ("zero", 0.0)):
        body = {"start": T0, "end": T0 + 180, "queries": [{
            "aggregator": "sum", "metric": "sys.cpu.user", "downsample": f"1m-max-{fill}",
            "tags": {"host": "web01"}}]}
        code, got, _, _ = yield call("POST", url(cpu_server, "/api/query"), body)
        assert code == 200
        assert got[0]["dps"] == {str(T0): 5.0, str(T0 + 60): 11.0, str(T0 + 120): missing,
                                 str(T0 + 180): missing}
    code, got, _, _ = yield call("GET", url(
        cpu_server, f"/api/query?start={T0}&end={T0 + 600}&m=sum:0all-count:sys.cpu.user"))
    assert got[0]["dps"] == {str(T0): 36.0}


@pytest_twisted.inlineCallbacks
def test_query_ms_resolution(server: Any) -> None:
    yield write(server, [("m", {"h": "a"}, T0 + 0.1, 1), ("m", {"h": "a"}, T0 + 0.6, 2),
                         ("m", {"h": "a"}, T0 + 1, 4)])
    body = {"start": T0, "end": T0 + 2, "queries": [{"aggregator": "sum", "metric": "m"}]}
    code, got, _, _ = yield call("POST", url(server, "/api/query"), body)
    assert got[0]["dps"] == {str(T0): 3, str(T0 + 1): 4}  # merged within the second
    code, got, _, _ = yield call("POST", url(server, "/api/query"),
                                 {**body, "msResolution": True})
    assert got[0]["dps"] == {f"{T0}100": 1, f"{T0}600": 2, f"{T0 + 1}000": 4}
    code, got, _, _ = yield call("GET", url(server, f"/api/query?start={T0}&m=sum:m&ms"))
    assert code == 200
    assert list(got[0]["dps"]) == [f"{T0}100", f"{T0}600", f"{T0 + 1}000"]


@pytest_twisted.inlineCallbacks
def test_query_arrays_show_query_jsonp(cpu_server: Any) -> None:
    body = {"start": T0, "end": T0 + 20, "showQuery": True, "queries": [
        {"aggregator": "sum", "metric": "sys.mem"},
        {"aggregator": "sum", "metric": "sys.cpu.user", "tags": {"host": "web01"}},
        {"aggregator": "sum", "metric": "sys.mem"}]}  # a duplicate: dropped
    code, got, _, _ = yield call("POST", url(cpu_server, "/api/query?arrays=true"), body)
    assert [(r["metric"], r["query"]["index"], r["dps"]) for r in got] == [
        ("sys.mem", 0, [[T0, 512]]),
        ("sys.cpu.user", 1, [[T0, 0], [T0 + 10, 1], [T0 + 20, 2]])]
    assert got[1]["query"]["filters"] == [
        {"tagk": "host", "filter": "web01", "group_by": True, "type": "literal_or"}]
    code, _, _, raw = yield call("GET", url(
        cpu_server, f"/api/query?start={T0}&end={T0 + 1}&m=sum:sys.mem&arrays&jsonp=cb"))
    assert code == 200
    assert raw == b'cb([{"metric":"sys.mem","tags":{"host":"web01"},"aggregateTags":[],' \
                  b'"dps":[[1356998400,512]]}])'


@pytest_twisted.inlineCallbacks
def test_jsonp_callback_must_be_a_function_name(cpu_server: Any) -> None:
    """``jsonp`` is code in the reply: only a JavaScript identifier or dotted
    path of them (at most 128 characters) wraps it, sent as JavaScript; anything
    else is a 400, not wrapped; every read reply says ``nosniff``."""
    q = f"/api/query?start={T0}&end={T0 + 1}&m=sum:sys.mem&arrays&jsonp="
    code, _, resp, raw = yield call("GET", url(cpu_server, q + "window.app.cb_1"))
    assert code == 200
    assert raw.startswith(b'window.app.cb_1([{"metric":"sys.mem"') and raw.endswith(b"])")
    assert resp.headers.getRawHeaders("content-type") == [
        "application/javascript; charset=UTF-8"]
    assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    for bad in ["%3Cscript%3Ealert(1)%3C/script%3E", "alert(1)//", "a.", "1cb", "a..b",
                "cb%0A", "a" * 129]:
        code, got, resp, raw = yield call("GET", url(cpu_server, q + bad))
        assert code == 400, bad
        assert got == error(400, "Invalid jsonp callback",
                            "jsonp must be a JavaScript function name or dotted path of at "
                            "most 128 characters")
        assert resp.headers.getRawHeaders("content-type") == JSON_TYPE
        assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
        assert b"script" not in raw
    code, _, _, raw = yield call("GET", url(cpu_server, "/api/version?jsonp=" + "a" * 128))
    assert code == 200 and raw.startswith(b"a" * 128 + b"({")
    for path in ("/api/query", "/api/suggest?type=metrics", "/api/search/lookup?m=sys.mem",
                 "/api/version", "/api/aggregators", "/api/config/filters"):
        _, _, resp, _ = yield call("GET", url(cpu_server, path))
        assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"], path


@pytest_twisted.inlineCallbacks
def test_query_rate(server: Any) -> None:
    yield write(server, [("ctr", {"h": "a"}, T0 + i, v) for i, v in
                         enumerate([10, 20, 5, 15])])
    q = f"/api/query?start={T0}&end={T0 + 10}&m=sum:rate:ctr"
    code, got, _, _ = yield call("GET", url(server, q))
    assert got[0]["dps"] == {str(T0 + 1): 10.0, str(T0 + 2): -15.0, str(T0 + 3): 10.0}
    code, got, _, _ = yield call("GET", url(server, q.replace("rate:", "rate{counter,100}:")))
    assert got[0]["dps"] == {str(T0 + 1): 10.0, str(T0 + 2): 85.0, str(T0 + 3): 10.0}
    body = {"start": T0, "end": T0 + 10, "queries": [{
        "aggregator": "sum", "metric": "ctr", "rate": True,
        "rateOptions": {"counter": True, "dropResets": True}}]}
    code, got, _, _ = yield call("POST", url(server, "/api/query"), body)
    assert (code, got[0]["dps"]) == (200, {str(T0 + 1): 10.0, str(T0 + 3): 10.0})


@pytest_twisted.inlineCallbacks
def test_query_reads_what_telnet_wrote(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    c.send(f"put tel.m {T0} 7 host=a\nput tel.m {T0 + 1}.250 8.5 host=a\nexit\n")
    yield c.wait_closed()
    yield server.flush()
    code, got, _, _ = yield call("GET", url(server, f"/api/query?start={T0}&m=sum:tel.m&ms"))
    assert (code, got[0]["dps"]) == (200, {f"{T0}000": 7, f"{T0 + 1}250": 8.5})


@pytest_twisted.inlineCallbacks
def test_query_on_an_http_listener(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace("apis = metrics", "apis = opentsdb metrics"))
    yield write(server, CPU)
    code, got, _, _ = yield call("GET", url(
        server, f"/api/query?start={T0}&end={T0 + 1}&m=sum:sys.mem", "http"))
    assert (code, got[0]["dps"]) == (200, {str(T0): 512})
    code, got, _, _ = yield call("GET", url(server, "/api/suggest?type=metrics", "http"))
    assert got == ["sys.cpu.user", "sys.mem"]


QUERY_ERRORS = [
    ("GET", "/api/query", None, 400, "Missing parameter <code>start</code>", None),
    ("GET", "/api/query?start=1h-ago", None, 400, "Missing sub queries", None),
    ("GET", "/api/query?start=1h-ago&m=sum", None, 400,
     "Invalid parameter m=sum (not enough :-separated parts)", None),
    ("GET", "/api/query?start=1h-ago&m=sum:rate{:sys.mem", None, 400,
     "Invalid rate options specification: rate{", None),
    ("GET", "/api/query?start=1h-ago&m=sum:rate{counter,many}:sys.mem", None, 400,
     "Max value of counter was not a number, received 'many'", None),
    ("GET", "/api/query?start=1h-ago&m=sum:5m-avg-often:sys.mem", None, 400,
     "Unrecognized fill policy: often", None),
    ("GET", "/api/query?start=yesterday&m=sum:sys.mem", None, 400,
     "Invalid time: yesterday. Invalid character 'y' in yesterday", None),
    ("GET", "/api/query?start=1h-ago&m=sum:sys.mem{host}", None, 400,
     "When parsing tag 'host': invalid tag: host", None),
    ("POST", "/api/query", b"", 400, "Missing message content",
     "Supply valid JSON formatted data in the body of your request"),
    ("POST", "/api/query", b"{", 400, "Unable to parse the given JSON", ...),
    ("POST", "/api/query", {}, 400, "Missing start time", None),
    ("POST", "/api/query", {"start": "1h-ago"}, 400, "Missing queries", None),
    ("POST", "/api/query", {"start": 2, "end": 1, "queries": [{}]}, 400,
     "End time [1000] must be greater than or equal to the start time [2000]", None),
    ("POST", "/api/query", {"start": 1, "queries": [{"metric": "sys.mem"}]}, 400,
     "Missing the aggregation function", None),
    ("POST", "/api/query", {"start": 1, "queries": [{"aggregator": "nope", "metric": "x"}]},
     400, "No such aggregation function: nope", None),
    ("POST", "/api/query", {"start": 1, "queries": [{"aggregator": "sum"}]}, 400,
     "Missing the metric or tsuids, provide at least one", None),
    ("POST", "/api/query", {"start": 1, "queries": [{"aggregator": "sum", "metric": "nope"}]},
     400, "No such name for 'metrics': 'nope'", None),
    ("POST", "/api/query", {"start": 1, "queries": [
        {"aggregator": "sum", "metric": "sys.mem", "downsample": "1m-nope"}]},
     400, "No such downsampling function: nope", None),
    ("POST", "/api/query", {"start": 1, "queries": [
        {"aggregator": "sum", "metric": "sys.mem",
         "filters": [{"type": "nope", "tagk": "host", "filter": "x"}]}]},
     400, "Unable to parse the given JSON", "Could not find a tag value filter of the type: nope"),
    ("POST", "/api/query", {"start": 1, "queries": [
        {"aggregator": "sum", "metric": "sys.mem", "filters": 5}]},
     400, "Unable to parse the given JSON", "filters must be an array"),
    ("POST", "/api/search/lookup", {"metric": "sys.mem", "tags": 5},
     400, "Unable to parse the given JSON", "tags must be an array"),
    ("POST", "/api/query", b"[" * 100_000, 400, "Unable to parse the given JSON",
     "Arrays and objects are nested too deeply"),
    ("PUT", "/api/query", None, 405, "Method not allowed",
     "The HTTP method [PUT] is not permitted for this endpoint"),
    ("DELETE", "/api/query?start=1h-ago&m=sum:sys.mem", None, 400, "Bad request",
     "Deleting data is not enabled (tsd.http.query.allow_delete=false)"),
    ("GET", "/api/nope", None, 404, "Endpoint not found", None),
    ("GET", "/api/suggest", None, 400, "Missing parameter <code>type</code>", None),
    ("GET", "/api/suggest?type=hosts", None, 400, "Invalid 'type' parameter:hosts", None),
    ("GET", "/api/suggest?type=metrics&max=ten", None, 400,
     "Unable to parse 'max' as a number", None),
    ("POST", "/api/suggest", {"q": "sys"}, 400, "Missing 'type' parameter", None),
    ("POST", "/api/suggest", b"", 400, "Missing message content",
     "Supply valid JSON formatted data in the body of your request"),
    ("GET", "/api/search/lookup", None, 400, "Missing parameter <code>m</code>", None),
    ("GET", "/api/search/lookup?m=nope", None, 404, "Unable to resolve one or more UIDs",
     "No such name for 'metrics': 'nope'"),
    ("GET", "/api/search/lookup?m=sys.mem{rack=*}", None, 404,
     "Unable to resolve one or more UIDs", "No such name for 'tagk': 'rack'"),
    ("GET", "/api/search/lookup?m={}", None, 400, "Unable to parse query",
     "Missing metric and tags: {}"),
    ("GET", "/api/search/lookup?m=sys.mem&limit=all", None, 400,
     "Unable to convert 'limit' to a valid number", None),
    ("PUT", "/api/version", None, 405, "Method not allowed",
     "The HTTP method [PUT] is not permitted for this endpoint"),
]


@pytest.mark.parametrize(("method", "path", "body", "code", "message", "details"),
                         QUERY_ERRORS)
@pytest_twisted.inlineCallbacks
def test_errors(cpu_server: Any, method: str, path: str, body: Any, code: int, message: str,
                details: Any) -> None:
    raw = body if isinstance(body, bytes) else None
    got_code, got, resp, _ = yield call(method, url(cpu_server, path),
                                        None if raw is not None else body, raw=raw)
    assert got_code == code
    assert resp.headers.getRawHeaders("content-type") == JSON_TYPE
    if details is ...:  # a parser message: present, not compared
        assert got["error"].pop("details")
        details = None
    assert got == error(code, message, details)


# -- /api/suggest, /api/search/lookup -------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_suggest(cpu_server: Any) -> None:
    async_cases = [
        ("/api/suggest?type=metrics", ["sys.cpu.user", "sys.mem"]),
        ("/api/suggest?type=metrics&q=sys.c", ["sys.cpu.user"]),
        ("/api/suggest?type=metrics&q=Sys", []),  # case-sensitive prefix
        ("/api/suggest?type=metrics&max=1", ["sys.cpu.user"]),
        ("/api/suggest?type=tagk", ["dc", "host"]),
        ("/api/suggest?type=tagv&q=web", ["web01", "web02", "web03"]),
        ("/api/suggest?type=tagv&max=0", ["lga", "nyc", "web01", "web02", "web03"]),
        ("/api/v1/suggest?type=tagv&q=n", ["nyc"]),
    ]
    for path, expected in async_cases:
        code, got, _, _ = yield call("GET", url(cpu_server, path))
        assert (path, code, got) == (path, 200, expected)
    code, got, _, _ = yield call("POST", url(cpu_server, "/api/suggest"),
                                 {"type": "tagv", "q": "web", "max": 2})
    assert (code, got) == (200, ["web01", "web02"])


@pytest_twisted.inlineCallbacks
def test_search_lookup(cpu_server: Any) -> None:
    code, got, _, _ = yield call("GET", url(cpu_server, "/api/search/lookup?m=sys.cpu.user"))
    assert code == 200
    assert {k: got[k] for k in ("type", "metric", "tags", "limit", "startIndex",
                                "totalResults")} == {
        "type": "LOOKUP", "metric": "sys.cpu.user", "tags": [], "limit": 25, "startIndex": 0,
        "totalResults": 3}
    assert [(r["metric"], r["tags"]) for r in got["results"]] == [
        ("sys.cpu.user", {"dc": "lga", "host": "web01"}),
        ("sys.cpu.user", {"dc": "lga", "host": "web02"}),
        ("sys.cpu.user", {"dc": "nyc", "host": "web03"})]
    assert all(len(r["tsuid"]) == 18 for r in got["results"])
    cases = [
        ("sys.cpu.user{dc=lga}", ["web01", "web02"]),
        ("sys.cpu.user{dc=*,host=web03}", ["web03"]),
        ("sys.cpu.user{host=web01,host=web03}", ["web01", "web03"]),  # one key: ORed
        ("{host=web01}", ["web01", "web01"]),  # any metric
        ("{*=nyc}", ["web03"]),
        ("sys.cpu.user{dc=}", ["web01", "web02", "web03"]),
    ]
    for m, hosts in cases:
        code, got, _, _ = yield call("GET", url(cpu_server, f"/api/search/lookup?m={m}"))
        assert (m, code, [r["tags"]["host"] for r in got["results"]]) == (m, 200, hosts)
    code, got, _, _ = yield call("GET", url(cpu_server,
                                            "/api/search/lookup?m=sys.cpu.user&limit=1"))
    assert (len(got["results"]), got["totalResults"]) == (1, 3)
    code, got, _, _ = yield call("POST", url(cpu_server, "/api/search/lookup"), {
        "metric": "sys.cpu.user", "tags": [{"key": "dc", "value": "nyc"}], "limit": 0})
    assert [r["tags"]["host"] for r in got["results"]] == ["web03"]


# -- static endpoints --------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_version_aggregators_filters_get_and_post(server: Any) -> None:
    for method in ("GET", "POST"):
        code, got, _, _ = yield call(method, url(server, "/api/version"))
        assert code == 200
        assert got["version"] == "2.4.0" and got["repo_status"] == "MINT"
        assert all(isinstance(v, str) for v in got.values())
        assert set(got) == {"version", "short_revision", "full_revision", "timestamp",
                            "repo_status", "user", "host", "repo", "branch"}
        code, got, _, _ = yield call(method, url(server, "/api/aggregators"))
        assert code == 200
        assert {"sum", "avg", "min", "max", "count", "dev", "zimsum", "mimmin", "mimmax",
                "none", "p99", "first", "last"} <= set(got)
        code, got, _, _ = yield call(method, url(server, "/api/config/filters"))
        assert sorted(got) == ["iliteral_or", "iwildcard", "literal_or", "not_iliteral_or",
                               "not_key", "not_literal_or", "regexp", "wildcard"]
        assert set(got["literal_or"]) == {"examples", "description"}
    code, got, _, _ = yield call("GET", url(server, "/api/v1/aggregators"))
    assert code == 200 and "sum" in got


# -- the IoT profile: READ tokens ---------------------------------------------------------------

TOKEN_CONFIG = BASE_CONFIG.replace(
    "endpoint = tcp:0:interface=127.0.0.1\n\n[listener:http]",
    "endpoint = tcp:0:interface=127.0.0.1\nauth = token\n\n[listener:http]")
IOT = [
    ("temp", {"device": "d1", "room": "a"}, T0, 20),
    ("temp", {"device": "d1", "room": "a"}, T0 + 60, 21),
    ("temp", {"device": "d2", "room": "b"}, T0, 30),
    ("hum", {"device": "d2", "room": "b"}, T0, 55),
]


@defer.inlineCallbacks
def token_server(make_server: Any) -> Any:
    from tsnet.auth import mint_token
    from tsnet.records import SolutionRecord

    server = yield make_server(TOKEN_CONFIG)
    cat = server.core.catalog
    yield cat.create_solution(SolutionRecord(name="iot"))
    yield server.core.storages.refresh()
    secrets = {}
    for name, tags in (("d1", {"device": "d1"}), ("all", {})):
        rec, sec = mint_token("iot", tags=tags)
        yield cat.save_token(rec)
        secrets[name] = sec
    yield write(server, IOT, "iot")
    yield write(server, [("secret.metric", {"x": "y"}, T0, 1)])  # another solution
    return server, secrets


def basic(secret: str) -> tuple[str, str]:
    user, _, key = secret.partition(":")
    return user, key


@pytest_twisted.inlineCallbacks
def test_read_token_required(make_server: Any) -> None:
    server, sec = yield token_server(make_server)
    q = url(server, f"/api/query?start={T0}&m=sum:temp")
    for kw in ({}, {"auth": ("nosuchid", "nosuchkey")}, {"headers": {"X-API-Key": "x" * 20}}):
        code, got, resp, _ = yield call("GET", q, **kw)
        assert (code, got) == (401, error(401, "Unauthorized"))
        assert resp.headers.getRawHeaders("www-authenticate") == ['Basic realm="opentsdb"']
    for path in ("/api/query?start=1h-ago&m=sum:temp", "/api/suggest?type=metrics",
                 "/api/search/lookup?m=temp", "/api/version", "/api/aggregators"):
        code, got, _, _ = yield call("GET", url(server, path), auth=basic(sec["d1"]["write"]))
        assert (path, code, got) == (path, 403, error(403, "Forbidden"))
    code, got, _, _ = yield call("GET", q, auth=basic(sec["all"]["read"]))
    assert code == 200
    code, got, _, _ = yield call("GET", q, headers={"Authorization": "Bearer "
                                                    + sec["all"]["read"]})
    assert code == 200


@pytest_twisted.inlineCallbacks
def test_read_token_tags_filter_every_read(make_server: Any) -> None:
    server, sec = yield token_server(make_server)
    d1 = {"auth": basic(sec["d1"]["read"])}
    everything = {"auth": basic(sec["all"]["read"])}
    q = url(server, f"/api/query?start={T0}&end={T0 + 60}&m=sum:temp{{room=*}}")
    code, got, _, _ = yield call("GET", q, **d1)
    assert got == [{"metric": "temp", "tags": {"device": "d1", "room": "a"},
                    "aggregateTags": [], "dps": {str(T0): 20, str(T0 + 60): 21}}]
    code, got, _, _ = yield call("GET", q, **everything)
    assert [r["tags"]["room"] for r in got] == ["a", "b"]
    # a client filter contradicting the token's tag: no data, not an error
    body = {"start": T0, "queries": [{"aggregator": "sum", "metric": "temp",
                                      "tags": {"device": "d2"}}]}
    code, got, _, _ = yield call("POST", url(server, "/api/query"), body, **d1)
    assert (code, got) == (200, [])
    # the metric exists in the solution, only not for this device
    code, got, _, _ = yield call("GET", url(server, f"/api/query?start={T0}&m=sum:hum"), **d1)
    assert (code, got) == (200, [])
    # another solution's metric does not exist here
    code, got, _, _ = yield call(
        "GET", url(server, f"/api/query?start={T0}&m=sum:secret.metric"), **everything)
    assert (code, got) == (400, error(400, "No such name for 'metrics': 'secret.metric'"))
    for path, mine, theirs in [
        ("/api/suggest?type=metrics", ["temp"], ["hum", "temp"]),
        ("/api/suggest?type=tagv", ["a", "d1"], ["a", "b", "d1", "d2"]),
        ("/api/suggest?type=tagk", ["device", "room"], ["device", "room"]),
    ]:
        code, got, _, _ = yield call("GET", url(server, path), **d1)
        assert (path, got) == (path, mine)
        code, got, _, _ = yield call("GET", url(server, path), **everything)
        assert (path, got) == (path, theirs)
    code, got, _, _ = yield call("GET", url(server, "/api/search/lookup?m=temp"), **d1)
    assert [r["tags"] for r in got["results"]] == [{"device": "d1", "room": "a"}]
    code, got, _, _ = yield call("GET", url(server, "/api/search/lookup?m=hum"), **d1)
    assert (code, got["error"]["message"]) == (404, "Unable to resolve one or more UIDs")


@pytest_twisted.inlineCallbacks
def test_series_with_an_entity_show_it_as_the_entity_tag(make_server: Any) -> None:
    """ATSD series (entity, metric, tags) are read by OpenTSDB's API too: the
    entity is the tag ``entity``, to filter and group on like any tag."""
    from tsnet.model import SampleSet

    server = yield make_server(BASE_CONFIG.replace("apis = metrics", "apis = opentsdb"))
    s = SampleSet()
    s.add(series_key("cpu", {"core": "0"}, entity="srv1"), 1_356_998_400 * 10**9, 1.5)
    s.add(series_key("cpu", {"core": "0"}, entity="srv2"), 1_356_998_400 * 10**9, 2.5)
    yield server.core.ingest.submit(Batch(samples=s), anonymous("default"), "test")
    url = (f"http://127.0.0.1:{server.port('http')}/api/query?start=1356998000"
           "&m=sum:cpu{entity=srv1}")
    resp = yield treq.get(url)
    assert json.loads((yield treq.content(resp))) == [{
        "metric": "cpu", "tags": {"core": "0", "entity": "srv1"}, "aggregateTags": [],
        "dps": {"1356998400": 1.5}}]
    resp = yield treq.get(url.replace("{entity=srv1}", "{entity=*}"))
    assert [r["tags"]["entity"] for r in json.loads((yield treq.content(resp)))] == [
        "srv1", "srv2"]
