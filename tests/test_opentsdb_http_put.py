"""OpenTSDB HTTP /api/put: the pure body parser, then real HTTP requests to real
servers (an `opentsdb` listener, HTTP on the telnet port, and an `http` listener
mounting `opentsdb`) storing into a real store, SQLite and Redis.  specs/opentsdb.md
§2, §4, §6.8-6.10."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from tests.helpers.clients import connect_line
from tsnet.http.bodies import BodyTooLarge, inflate_body
from tsnet.protocols.opentsdb.http_put import content_charset
from tsnet.protocols.opentsdb.json_put import (
    PointError,
    PutBodyError,
    RawPoint,
    parse_put_body,
    validate_point,
)
from tsnet.testing.fixtures import BASE_CONFIG, make_token

TS = 1356998400
NS = 1_000_000_000
MiB = 1024 * 1024


def dp(**kw: Any) -> dict[str, Any]:
    """A good datapoint, with fields replaced (None values) or removed (...)."""
    d: dict[str, Any] = {"metric": "m", "timestamp": TS, "value": 1, "tags": {"h": "a"}}
    for k, v in kw.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return d


# -- the pure parser ------------------------------------------------------------------


def test_single_object_and_array() -> None:
    (p,) = parse_put_body(json.dumps(dp()).encode())
    assert p == RawPoint(metric="m", timestamp=TS, value="1", tags={"h": "a"})
    ps = parse_put_body(b' \n[{"metric":"a"}, null, {"metric":"b"}]\t')
    assert [p and p.metric for p in ps] == ["a", None, "b"]


@pytest.mark.parametrize(("body", "message"), [
    (b"", "Missing request content"),
    (b" \r\n ", "Missing request content"),
    (b"[]", "No datapoints found in content"),
    (b"Hello World", "The JSON must start as an object or an array"),
    (b'"x"', "The JSON must start as an object or an array"),
    (b'{"metric":"m","timestamp:1365465600,"value":42}', "Unable to parse the given JSON"),
    (b'[{"metric":"m","value":1},]', "Unable to parse the given JSON"),  # the IoT doc sample
    (b'{"value":Nan}', "Unable to parse the given JSON"),
    (b'{"value":INF}', "Unable to parse the given JSON"),
    (b'{"value":+inf}', "Unable to parse the given JSON"),
    (b'{"value":+INFINITY}', "Unable to parse the given JSON"),
    (b'[-+INF]', "Unable to parse the given JSON"),
    (b'{"value":+1}', "Unable to parse the given JSON"),
    (b"[1, 2]", "Unable to parse the given JSON"),
    (b'[{"metric":"m"}, "x"]', "Unable to parse the given JSON"),
    (b'{"timestamp":"abc"}', "Unable to parse the given JSON"),
    (b'{"timestamp":"1356998400.5"}', "Unable to parse the given JSON"),
    (b'{"timestamp":true}', "Unable to parse the given JSON"),
    (b'{"timestamp":1e300}', "Unable to parse the given JSON"),
    (b'{"timestamp":9223372036854775808}', "Unable to parse the given JSON"),
    (b'{"tags":"h=a"}', "Unable to parse the given JSON"),
    (b'{"tags":{"h":["a"]}}', "Unable to parse the given JSON"),
    (b'{"metric":{"a":1}}', "Unable to parse the given JSON"),
    (b'{"value":[1]}', "Unable to parse the given JSON"),
    (b"{} trailing", "Unable to parse the given JSON"),
    (b"[" * 100_000, "Unable to parse the given JSON"),
])
def test_whole_request_errors(body: bytes, message: str) -> None:
    with pytest.raises(PutBodyError) as e:
        parse_put_body(body)
    assert (e.value.code, e.value.message) == (400, message)
    assert bool(e.value.details) == (message == "Unable to parse the given JSON")


def test_jackson_coercions() -> None:
    body = (b'[{"metric":1,"timestamp":"1356998401","value":42.50,"tags":{"h":5,"b":true}},'
            b'{"metric":"m","timestamp":1356998402.9,"value":"7","tags":{"h":1.5e2}},'
            b'{"timestamp":" 12 "},{"timestamp":""},{"timestamp":null},{"timestamp":NaN},'
            b'{"timestamp":-1.9},{"unknown":[{"x":1}],"tsuid":"0001"}]')
    ps = parse_put_body(body)
    assert ps[0] == RawPoint(metric="1", timestamp=1356998401, value="42.50",
                             tags={"h": "5", "b": "true"})
    assert (ps[1].timestamp, ps[1].value, ps[1].tags) == (1356998402, "7", {"h": "1.5e2"})
    assert [p.timestamp for p in ps[2:7]] == [12, 0, 0, 0, -1]
    assert ps[7] == RawPoint(tsuid="0001")


def test_non_numeric_tokens_keep_their_spelling() -> None:
    ps = parse_put_body(b'[{"value":NaN},{"value":+INF},{"value":-INF},{"value":Infinity},'
                        b'{"value":+Infinity},{"value":-Infinity,"tags":{"x":"+INF, NaN"}}]')
    assert [p.value for p in ps] == ["NaN", "+INF", "-INF", "Infinity", "+Infinity", "-Infinity"]
    assert ps[5].tags == {"x": "+INF, NaN"}  # strings are never rewritten


def test_auth_tag_is_taken_out() -> None:
    (p,) = parse_put_body(b'{"tags":{"h":"a","ovh.auth":"id:key"}}')
    assert (p.tags, p.token) == ({"h": "a"}, "id:key")
    assert "ovh.auth" not in json.dumps(p.echo())


def test_charset() -> None:
    body = '{"metric":"température"}'.encode("latin-1")
    assert parse_put_body(body, "ISO-8859-1")[0].metric == "température"
    assert parse_put_body(body)[0].metric == "temp\ufffdrature"  # replaced, then rejected
    with pytest.raises(PutBodyError, match="Unsupported charset"):
        parse_put_body(body, "no-such-charset")
    assert content_charset(b"application/json; Charset=\"ISO-8859-1\"") == "ISO-8859-1"
    assert content_charset(b"application/x-www-form-urlencoded") == "utf-8"
    assert content_charset(None) == "utf-8"


def _check(point: dict | None, **kw: Any) -> Any:
    (p,) = parse_put_body(json.dumps([point]).encode())
    return validate_point(p, **kw)


def _error(point: dict | None, **kw: Any) -> str:
    with pytest.raises(PointError) as e:
        _check(point, **kw)
    return str(e.value)


NINE_TAGS = {f"k{i}": "v" for i in range(9)}

# (datapoint, OpenTSDB's details error string) -- specs/opentsdb.md §2.2, in its order
POINT_ERRORS: list[tuple[Any, str]] = [
    (None, "Unexpected null datapoint encountered in set."),
    (dp(metric=...), "Metric name was empty"),
    (dp(metric=None), "Metric name was empty"),
    (dp(metric=""), "Metric name was empty"),
    (dp(metric="", timestamp=0), "Metric name was empty"),  # first failure wins
    (dp(timestamp=...), "Invalid timestamp"),
    (dp(timestamp=None), "Invalid timestamp"),
    (dp(timestamp=0), "Invalid timestamp"),
    (dp(timestamp=-1), "Invalid timestamp"),
    (dp(timestamp=0.5), "Invalid timestamp"),
    (dp(value=...), "Empty value"),
    (dp(value=None), "Empty value"),
    (dp(value=""), "Empty value"),
    (dp(value="", tags={}), "Empty value"),
    (dp(tags=...), "Missing tags"),
    (dp(tags=None), "Missing tags"),
    (dp(tags={}), "Missing tags"),
    (dp(tags={}, value="x"), "Missing tags"),
    (dp(value="abc"), "Unable to parse value to a number"),
    (dp(value="0x1F"), "Unable to parse value to a number"),
    (dp(value=" 42"), "Unable to parse value to a number"),
    (dp(value="1.2.3"), "Unable to parse value to a number"),
    (dp(value=True), "Unable to parse value to a number"),
    (dp(value="NaN"), "Unable to parse value to a number"),
    (dp(value="-Infinity"), "Unable to parse value to a number"),
    (dp(value="1e999", metric="m!"),
     f"value is NaN or Infinite: Infinity for metric=m! timestamp={TS}"),
    (dp(value="-1e999"), f"value is NaN or Infinite: -Infinity for metric=m timestamp={TS}"),
    (dp(timestamp=10_000_000_000_000),
     "bad timestamp=10000000000000 when trying to add value=[1]/0 to metric=m, tags={h=a}"),
    (dp(tags=NINE_TAGS), "Too many tags: 9 maximum allowed: 8, tags: {"),
    (dp(metric="sys.cpu!user"), 'Invalid metric name ("sys.cpu!user"): illegal character: !'),
    (dp(tags={"h!": "a"}), 'Invalid tag name with value [a] ("h!"): illegal character: !'),
    (dp(tags={"h": "a b"}), 'Invalid tag value with key [h] ("a b"): illegal character:  '),
    (dp(tags={"h": ""}), "Invalid tag value with key [h]: empty string"),
    (dp(tags={"": "a"}), "Invalid tag name with value [a]: empty string"),
    (dp(tags={"h": None}), "Invalid tag value with key [h]: null"),
    (dp(tags={"h": "😀"}), 'Invalid tag value with key [h] ("😀"): illegal character: 😀'),
]


@pytest.mark.parametrize(("point", "error"), POINT_ERRORS)
def test_point_errors(point: Any, error: str) -> None:
    if error.endswith("{"):
        assert _error(point).startswith(error)
    else:
        assert _error(point) == error


def test_valid_points() -> None:
    assert _check(dp()) == (("m", None, (("h", "a"),)), TS * NS, 1)
    assert _check(dp(value="42.5", timestamp=1356998400123))[1:] == (1356998400123 * 1_000_000,
                                                                     42.5)
    assert _check(dp(value=4.2e-3, timestamp=4294967295))[1:] == (4294967295 * NS, 0.0042)
    assert _check(dp(timestamp=4294967296))[1] == 4294967296 * 1_000_000  # the 2^32 split
    assert _check(dp(metric="température", tags={"hôte": "é"}))[0][0] == "température"
    assert _check(dp(value=-9223372036854775808))[2] == -(2**63)
    assert _check(dp(tags={f"k{i}": "v" for i in range(8)}))[0][2][0] == ("k0", "v")


def test_zero_client_tags_when_the_token_adds_some() -> None:
    assert _check(dp(tags={}), allow_no_tags=True)[0] == ("m", None, ())
    assert _error(dp(tags={"ovh.auth": "x"})) == "Missing tags"  # the token is not a tag


def test_inflate() -> None:
    data = json.dumps([dp()] * 100).encode()
    raw = zlib.compressobj(wbits=-15)
    assert inflate_body([gzip.compress(data)], "gzip", MiB) == data
    assert inflate_body([gzip.compress(data) + gzip.compress(data)], "x-gzip", MiB) == data * 2
    assert inflate_body([zlib.compress(data)], "deflate", MiB) == data
    assert inflate_body([raw.compress(data) + raw.flush()], "Deflate", MiB) == data
    z = gzip.compress(data)
    assert inflate_body([z[i:i + 7] for i in range(0, len(z), 7)], "gzip", MiB) == data
    assert inflate_body([gzip.compress(gzip.compress(data))], "gzip, gzip", MiB) == data
    assert inflate_body([data], "identity", MiB) == data
    with pytest.raises(BodyTooLarge):
        inflate_body([gzip.compress(data)], "gzip", len(data) - 1)
    assert inflate_body([gzip.compress(data)], "gzip", len(data)) == data
    for bad, enc, code in ((b"garbage", "gzip", 400), (z[:-9], "gzip", 400), (z, "br", 415)):
        with pytest.raises(PutBodyError) as e:
            inflate_body([bad], enc, MiB)
        assert e.value.code == code


def gzip_bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * MiB
    return b"".join([*(c.compress(block) for _ in range(size // MiB)), c.flush()])


def test_inflate_bomb_never_allocates_past_the_cap() -> None:
    bomb = gzip_bomb(512 * MiB)
    assert len(bomb) < MiB
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            inflate_body([bomb[i:i + 65536] for i in range(0, len(bomb), 65536)], "gzip",
                         8 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * MiB


# -- real servers -----------------------------------------------------------------------

@pytest.fixture
def storage_config(each_backend: str) -> str:
    """Every test here on SQLite and on Redis."""
    return each_backend


PUT_CONFIG = BASE_CONFIG.replace("apis = metrics", "apis = opentsdb metrics")
TOKEN_CONFIG = PUT_CONFIG.replace("endpoint = tcp:0:interface=127.0.0.1\n",
                                  "endpoint = tcp:0:interface=127.0.0.1\nauth = token\n")
LISTENERS = ["opentsdb", "http"]  # HTTP on the telnet port, and the shared HTTP site


@defer.inlineCallbacks
def post(port: int, body: Any = b"", query: str = "", path: str = "/api/put",
         method: str = "POST", headers: dict | None = None, auth: Any = None) -> Any:
    """(status, headers, body) of one request on a fresh connection."""
    import treq

    url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    resp = yield treq.request(method, url, data=body, headers=headers, auth=auth,
                              persistent=False)
    content = yield treq.content(resp)
    return resp.code, resp.headers, content


def error_of(content: bytes) -> dict:
    return json.loads(content)["error"]


def rows_of(rows: list[dict]) -> list[tuple]:
    """(metric, tags, time_ms, value) of exported rows, in a stable order."""
    out = [(r["metric"], r["tags"], r["time_ms"], r["value"]) for r in rows]
    return sorted(out, key=lambda r: (r[0], sorted(r[1].items()), r[2]))


@pytest.fixture
def put_server(make_server: Any) -> Any:
    return pytest_twisted.blockon(make_server(PUT_CONFIG))


# (query, body, status, expected JSON body or None for empty) -- spec §2.3
GOOD, BAD = dp(), dp(value="x", tags={"h": "b"})
BAD_ECHO = {"datapoint": {"metric": "m", "timestamp": TS, "value": "x", "tags": {"h": "b"}},
            "error": "Unable to parse value to a number"}
SEE = 'Please see the TSD logs or append "details" to the put request'
STATUS_CASES = [
    ("", GOOD, 204, None),
    ("", [GOOD, dp(timestamp=TS + 1)], 204, None),
    ("sync", GOOD, 204, None),
    ("summary", GOOD, 200, {"success": 1, "failed": 0}),
    ("details", [GOOD], 200, {"success": 1, "failed": 0, "errors": []}),
    ("details=false", GOOD, 200, {"success": 1, "failed": 0, "errors": []}),
    ("summary&details", GOOD, 200, {"success": 1, "failed": 0, "errors": []}),
    ("summary&sync_timeout=10000", GOOD, 200, {"success": 1, "failed": 0, "timeouts": 0}),
    ("", [GOOD, BAD], 400, {"error": {"code": 400, "message": "One or more data points had errors",
                                       "details": SEE}}),
    ("summary", [GOOD, BAD], 400, {"success": 1, "failed": 1}),
    ("details", [GOOD, BAD], 400, {"success": 1, "failed": 1, "errors": [BAD_ECHO]}),
    ("details", [None, BAD], 400, {"success": 0, "failed": 2, "errors": [
        {"datapoint": None, "error": "Unexpected null datapoint encountered in set."},
        BAD_ECHO]}),
    ("", b"", 400, {"error": {"code": 400, "message": "Missing request content"}}),
    ("", b"[]", 400, {"error": {"code": 400, "message": "No datapoints found in content"}}),
    ("", b"Hello", 400, {"error": {"code": 400,
                                   "message": "The JSON must start as an object or an array"}}),
    ("summary&sync_timeout=abc", GOOD, 500, {"error": {"code": 500,
                                                       "message": 'For input string: "abc"'}}),
]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize(("query", "body", "status", "expected"), STATUS_CASES)
@pytest_twisted.inlineCallbacks
def test_status_codes_and_shapes(put_server: Any, listener: str, query: str, body: Any,
                                 status: int, expected: Any) -> None:
    code, headers, content = yield post(put_server.port(listener), body, query)
    assert code == status
    assert headers.getRawHeaders("content-type") == ["application/json; charset=UTF-8"]
    assert (json.loads(content) if content else None) == expected
    if expected and "error" not in expected:
        assert b'": ' not in content and b', "' not in content  # compact, as clients match


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_every_point_error_and_good_points_kept(put_server: Any, listener: str) -> None:
    goods = [
        dp(metric="good", timestamp=str(TS + 1)),  # string timestamp
        dp(metric="good", timestamp=TS + 2.9),  # fractional, truncated
        dp(metric="good", timestamp=1356998403123, value="42.5"),  # ms
        dp(metric="good", tags={"h": 5}, value=-7, unknown="ignored"),  # number -> "5"
        dp(metric="température", tags={"hôte": "é"}, value=4.2e-3),
    ]
    points = [goods[0], *(p for p, _ in POINT_ERRORS), *goods[1:]]
    code, _, content = yield post(put_server.port(listener), points, "details")
    assert code == 400
    reply = json.loads(content)
    assert (reply["success"], reply["failed"]) == (len(goods), len(POINT_ERRORS))
    errors = [e["error"] for e in reply["errors"]]
    for got, (_, want) in zip(errors, POINT_ERRORS, strict=True):
        assert got.startswith(want) if want.endswith("{") else got == want
    assert reply["errors"][0]["datapoint"] is None
    assert reply["errors"][1]["datapoint"] == {"timestamp": TS, "value": "1", "tags": {"h": "a"}}
    assert reply["errors"][5]["datapoint"] == {"metric": "m", "value": "1", "tags": {"h": "a"},
                                               "timestamp": 0}
    rows = yield put_server.export()
    assert rows_of(rows) == [
        ("good", {"h": "5"}, TS * 1000, -7),
        ("good", {"h": "a"}, (TS + 1) * 1000, 1),
        ("good", {"h": "a"}, (TS + 2) * 1000, 1),
        ("good", {"h": "a"}, 1356998403123, 42.5),
        ("température", {"hôte": "é"}, TS * 1000, 0.0042),
    ]


@pytest.mark.parametrize("body", [
    b'[{"metric":"m","timestamp":1356998400,"value":1,"tags":{"h":"a"}},]',
    b'[{"metric":"m","timestamp":1356998400,"value":Nan,"tags":{"h":"a"}}]',
    b'[{"metric":"m","timestamp":1356998400,"value":1,"tags":{"h":"a"}}, 2]',
])
@pytest_twisted.inlineCallbacks
def test_bad_json_stores_nothing(put_server: Any, body: bytes) -> None:
    code, _, content = yield post(put_server.port("http"), body, "details")
    assert code == 400
    err = error_of(content)
    assert (err["code"], err["message"]) == (400, "Unable to parse the given JSON")
    assert err["details"] and "trace" not in err
    yield put_server.flush()
    assert (yield put_server.export()) == []


#: what Python's JSON decoder says, which no reply may repeat (its messages
#: are the implementation's, not OpenTSDB's API)
DECODER_TEXTS = ("Expecting", "delimiter", "(char ", "Extra data", "Unterminated",
                 "Invalid control character", "JSONDecodeError")


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_unparseable_json_is_told_in_opentsdbs_words(put_server: Any, listener: str) -> None:
    """Bodies that are not JSON, each sent several times, with and without
    ``details``: OpenTSDB's message, and details that say where, never the
    decoder's own text."""
    port = put_server.port(listener)
    for body, details in (
        (b'{"metric":"m","timestamp:1365465600,"value":42}', "at line 1, column 38"),
        (b'[{"metric":"m","value":1},]', "at line 1, column 27"),
        (b'[{"metric":"m"}\n {"metric":"n"}]', "at line 2, column 2"),
        (b'{"metric":"m"} {"x":1}', "at line 1, column 16"),
        (b'{"metric":"m\x01"}', "at line 1, column 13"),
        (b'{"value":+INF, }', ""),  # (rewritten tokens: no position to tell)
    ):
        for query in ("details", "", "summary"):
            for _ in range(3):
                code, _, content = yield post(port, body, query)
                assert code == 400
                err = error_of(content)
                assert err == {"code": 400, "message": "Unable to parse the given JSON",
                               "details": f"malformed JSON {details}".strip()}
                assert not [t for t in DECODER_TEXTS if t in content.decode()]
    yield put_server.flush()
    assert (yield put_server.export()) == []


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_non_numeric_values_per_point(put_server: Any, listener: str) -> None:
    body = (b'[{"metric":"m","timestamp":1356998400,"value":NaN,"tags":{"h":"a"}},'
            b'{"metric":"m","timestamp":1356998400,"value":+INF,"tags":{"h":"a"}},'
            b'{"metric":"m","timestamp":1356998400,"value":-Infinity,"tags":{"h":"a"}},'
            b'{"metric":"m","timestamp":1356998400,"value":1e999,"tags":{"h":"a"}},'
            b'{"metric":"m","timestamp":1356998400,"value":3,"tags":{"h":"a"}}]')
    code, _, content = yield post(put_server.port(listener), body, "details")
    reply = json.loads(content)
    assert (code, reply["success"], reply["failed"]) == (400, 1, 4)
    assert [(e["datapoint"]["value"], e["error"]) for e in reply["errors"]] == [
        ("NaN", "Unable to parse value to a number"),
        ("+INF", "Unable to parse value to a number"),
        ("-Infinity", "Unable to parse value to a number"),
        ("1e999", f"value is NaN or Infinite: Infinity for metric=m timestamp={TS}"),
    ]
    assert [r["value"] for r in (yield put_server.export())] == [3]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_methods_and_paths(put_server: Any, listener: str) -> None:
    port = put_server.port(listener)
    for method in ("GET", "PUT", "DELETE"):
        code, headers, content = yield post(port, b"", method=method)
        assert code == 405
        assert headers.getRawHeaders("allow") == ["POST"]
        assert error_of(content) == {
            "code": 405, "message": "Method not allowed",
            "details": f"The HTTP method [{method}] is not permitted for this endpoint"}
    for i, path in enumerate(("/api/put/", "/api/v1/put", "/API/Put", "/api/v1/put/")):
        code, _, _ = yield post(port, dp(timestamp=TS + i), path=path)
        assert code == 204
    code, _, content = yield post(port, dp(), path="/api/putt")
    assert code == 404
    assert len((yield put_server.export())) == 4


@pytest_twisted.inlineCallbacks
def test_2xx_means_already_committed(make_server: Any) -> None:
    server = yield make_server(PUT_CONFIG.replace("flush_interval = 0.05",
                                                  "flush_interval = 0.4"))
    for listener in LISTENERS:
        code, _, _ = yield post(server.port(listener), [dp(metric=listener)])
        assert code == 204
        rows = yield server.export()  # no flush: the response waited for the commit
        assert listener in [r["metric"] for r in rows]


@contextmanager
def commits_stalled(server: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """While the block runs, the store takes writes but commits none: another
    process holds SQLite's write lock, or Redis pauses every writing client."""
    storage = server.core.config.storages["default"]
    if storage.backend == "sqlite":
        lock = sqlite3.connect(storage.path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
    else:
        redis = request.getfixturevalue("redis_server")  # the one each_backend started
        redis.command("CLIENT", "PAUSE", 30000, "WRITE")
        try:
            yield
        finally:
            redis.command("CLIENT", "UNPAUSE")


@pytest_twisted.inlineCallbacks
def test_sync_timeout_fires_before_the_commit(make_server: Any,
                                              request: pytest.FixtureRequest) -> None:
    server = yield make_server(PUT_CONFIG)
    port = server.port("http")
    with commits_stalled(server, request):
        code, _, content = yield post(port, [dp(), dp(tags={})], "sync&sync_timeout=50")
        assert code == 400
        assert error_of(content)["message"] == ("The put call has timedout with 0 successful "
                                                "writes, 0 failed writes and 1 timed out writes.")
        code, _, content = yield post(port, [dp(timestamp=TS + 1), dp(tags={})],
                                      "details&sync_timeout=50")
        assert code == 400
        reply = json.loads(content)
        assert (reply["success"], reply["failed"], reply["timeouts"]) == (0, 1, 1)
        assert [e["error"] for e in reply["errors"]] == ["Write timedout", "Missing tags"]
    yield server.flush()
    assert len((yield server.export())) == 2  # timed out, still written


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_compressed_bodies(put_server: Any, listener: str) -> None:
    port = put_server.port(listener)
    data = json.dumps([dp(timestamp=TS + i) for i in range(50)]).encode()
    raw = zlib.compressobj(wbits=-15)
    for i, (enc, body) in enumerate((
        ("gzip", gzip.compress(data)),
        ("deflate", zlib.compress(data.replace(b"\"m\"", b"\"d\""))),
        ("deflate", raw.compress(data.replace(b"\"m\"", b"\"r\"")) + raw.flush()),
    )):
        code, _, content = yield post(port, body, "summary",
                                      headers={"Content-Encoding": [enc]})
        assert (code, json.loads(content)) == (200, {"success": 50, "failed": 0}), i
    code, _, content = yield post(port, b"\x1f\x8bnot gzip", headers={"Content-Encoding":
                                                                       ["gzip"]})
    assert (code, error_of(content)["message"]) == (400, "Unable to decompress the request "
                                                         "content")
    code, _, content = yield post(port, data, headers={"Content-Encoding": ["br"]})
    assert code == 415
    assert len((yield put_server.export())) == 150


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_gzip_bomb_is_413_without_big_memory(put_server: Any, listener: str) -> None:
    bomb = gzip_bomb(256 * MiB)
    tracemalloc.start()
    try:
        code, headers, content = yield post(put_server.port(listener), bomb,
                                            headers={"Content-Encoding": ["gzip"]})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 413
    assert error_of(content)["message"] == "Request Entity Too Large"
    assert headers.getRawHeaders("content-type") == ["application/json; charset=UTF-8"]
    assert peak < 48 * MiB  # the cap is 8 MiB; inflating it all would be 256 MiB


@pytest_twisted.inlineCallbacks
def test_body_cap_applies_after_decompression(make_server: Any) -> None:
    server = yield make_server(PUT_CONFIG.replace("apis = opentsdb metrics",
                                                  "apis = opentsdb metrics\nmax_body = 4000"))
    port = server.port("http")
    data = json.dumps([dp(timestamp=TS + i) for i in range(100)]).encode()
    assert len(data) > 4000 and len(gzip.compress(data)) < 4000
    code, _, content = yield post(port, gzip.compress(data),
                                  headers={"Content-Encoding": ["gzip"]})
    assert (code, error_of(content)["code"]) == (413, 413)
    code, _, _ = yield post(port, gzip.compress(data[:3000].rsplit(b", {", 1)[0] + b"]"),
                            headers={"Content-Encoding": ["gzip"]})
    assert code == 204


@pytest_twisted.inlineCallbacks
def test_latin1_charset(put_server: Any) -> None:
    body = json.dumps(dp(metric="température"), ensure_ascii=False).encode("latin-1")
    code, _, _ = yield post(put_server.port("http"), body,
                            headers={"Content-Type": ["text/plain; charset=ISO-8859-1"]})
    assert code == 204
    assert [r["metric"] for r in (yield put_server.export())] == ["température"]


@defer.inlineCallbacks
def raw_http(port: int, head: bytes, parts: list[bytes], wait_continue: bool = False) -> Any:
    """Send a request by hand (chunked bodies, Expect: 100-continue); the reply text."""
    c = yield connect_line(port)
    c.send(head)
    if wait_continue:
        yield c.wait_lines(1)
        assert c.received.startswith(b"HTTP/1.1 100 Continue\r\n")
    for part in parts:
        c.send(part)
    data = yield c.wait_closed()
    return data


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_chunked_and_expect_continue(put_server: Any, listener: str) -> None:
    port = put_server.port(listener)
    body = json.dumps([dp(timestamp=TS + i) for i in range(20)]).encode()
    chunks = [body[i:i + 100] for i in range(0, len(body), 100)]
    data = yield raw_http(port, b"POST /api/put?summary HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                          [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"])
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b'{"success":20,"failed":0}')
    body = json.dumps(dp(metric="cont")).encode()
    data = yield raw_http(port, b"POST /api/put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
                          [body], wait_continue=True)
    assert b"\r\n\r\nHTTP/1.1 204 No Content\r\n" in data
    assert len((yield put_server.export())) == 21


@pytest_twisted.inlineCallbacks
def test_keep_alive_after_204_and_metrics(put_server: Any) -> None:
    import treq
    from twisted.internet import reactor
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    port = put_server.port("http")
    try:
        for i in range(3):
            resp = yield treq.post(f"http://127.0.0.1:{port}/api/put",
                                   json.dumps([dp(timestamp=TS + i), BAD]).encode()
                                   if i == 2 else json.dumps(dp(timestamp=TS + i)).encode(),
                                   pool=pool)
            yield treq.content(resp)
            assert resp.code == (400 if i == 2 else 204)
        resp = yield treq.get(f"http://127.0.0.1:{port}/metrics", pool=pool)
        text = (yield treq.content(resp)).decode()
    finally:
        yield pool.closeCachedConnections()
    assert 'tsnet_points_received_total{protocol="opentsdb"} 3.0' in text
    assert 'tsnet_points_rejected_total{protocol="opentsdb",reason="invalid"} 1.0' in text


# -- the IoT token profile ----------------------------------------------------------------




def basic(secret: str) -> tuple[str, str]:
    """HTTP Basic as the IoT Lab documents it: user = token id, password = key."""
    user, _, key = secret.partition(":")
    return user, key


@pytest.fixture
def token_server(make_server: Any) -> Any:
    return pytest_twisted.blockon(make_server(TOKEN_CONFIG))


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_refusals(token_server: Any, listener: str) -> None:
    _, sec = yield make_token(token_server, tags={"device": "d1"})
    port = token_server.port(listener)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for auth, extra, want in (
            (None, {}, 401),
            (("nosuchid", "nosuchkey"), {}, 401),
            (None, {"ovh.auth": "nosuchid:nosuchkeynosuchkey"}, 401),
            (basic(sec["read"]), {}, 403),
            (None, {"ovh.auth": sec["read"]}, 403),
            (basic(sec["write"]), {"ovh.auth": "nosuchid:nosuchkey"}, 401),
        ):
            code, headers, content = yield post(port, [dp(tags={"h": "a", **extra})],
                                                "details", auth=auth)
            assert code == want
            if want == 401:
                assert headers.getRawHeaders("www-authenticate") == ['Basic realm="opentsdb"']
                assert json.loads(content) == {"error": {"code": 401, "message": "Unauthorized"}}
            else:
                assert json.loads(content) == {"error": {"code": 403, "message": "Forbidden"}}
        # without credentials nothing about the body is told; with them, it is
        code, _, _ = yield post(port, b"[{", "details")
        assert code == 401
        code, _, content = yield post(port, b"[{", "details", auth=basic(sec["write"]))
        assert (code, error_of(content)["message"]) == (400, "Unable to parse the given JSON")
    finally:
        globalLogPublisher.removeObserver(events)
    key = sec["read"].split(":")[1]
    assert not [e for e in events if key in repr(e) or "nosuchkey" in repr(e)]
    yield token_server.flush()
    assert (yield token_server.export("iot")) == []


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_write_token_basic_and_tags(token_server: Any, listener: str) -> None:
    _, sec = yield make_token(token_server, tags={"device": "d1"})
    port = token_server.port(listener)
    points = [dp(tags={"device": "spoofed", "room": "a"}), dp(timestamp=TS + 1, tags={})]
    code, _, _ = yield post(port, points, auth=basic(sec["write"]))  # id / key
    assert code == 204
    # OVH Metrics style: any user, the whole secret as the password
    code, _, _ = yield post(port, dp(timestamp=TS + 2), auth=("metrics", sec["write"]))
    assert code == 204
    code, _, _ = yield post(port, dp(timestamp=TS + 3),
                            headers={"Authorization": [
                                "Basic " + base64.b64encode(b":" + sec["write"].encode())
                                .decode()]})
    assert code == 204
    rows = yield token_server.export("iot")
    assert rows_of(rows) == [
        ("m", {"device": "d1"}, (TS + 1) * 1000, 1),  # no client tag: the token's (A8)
        ("m", {"device": "d1", "h": "a"}, (TS + 2) * 1000, 1),
        ("m", {"device": "d1", "h": "a"}, (TS + 3) * 1000, 1),
        ("m", {"device": "d1", "room": "a"}, TS * 1000, 1),  # the token overrides
    ]
    assert {r["solution"] for r in rows} == {"iot"}
    assert (yield token_server.export("default")) == []


@pytest.mark.parametrize("listener", LISTENERS)
@pytest_twisted.inlineCallbacks
def test_ovh_auth_tag_per_point_never_stored(token_server: Any, listener: str) -> None:
    _, one = yield make_token(token_server, tags={"device": "d1"})
    _, two = yield make_token(token_server, "other", tags={"device": "d2"})
    _, bare = yield make_token(token_server)  # no tags: client tags are needed
    port = token_server.port(listener)
    points = [
        dp(tags={"h": "a", "ovh.auth": one["write"]}),
        dp(tags={"ovh.auth": two["write"]}, value=2),
        dp(tags={"h": "b", "ovh.auth": one["write"]}, value="x"),
        dp(tags={"ovh.auth": bare["write"]}, value=3),
        dp(tags={"h": "c", "ovh.auth": bare["write"]}, value=4),
    ]
    code, _, content = yield post(port, points, "details")
    assert code == 400
    reply = json.loads(content)
    assert (reply["success"], reply["failed"]) == (3, 2)
    assert [e["error"] for e in reply["errors"]] == ["Unable to parse value to a number",
                                                     "Missing tags"]
    assert reply["errors"][0]["datapoint"]["tags"] == {"h": "b"}
    assert one["write"].split(":")[1].encode() not in content
    assert rows_of((yield token_server.export("iot"))) == [
        ("m", {"device": "d1", "h": "a"}, TS * 1000, 1),
        ("m", {"h": "c"}, TS * 1000, 4),
    ]
    assert rows_of((yield token_server.export("other"))) == [
        ("m", {"device": "d2"}, TS * 1000, 2)]
    # a point without the tag rides on the request's credentials
    code, _, _ = yield post(port, [dp(timestamp=TS + 5), dp(tags={"ovh.auth": two["write"]},
                                                         timestamp=TS + 5)],
                            auth=basic(one["write"]))
    assert code == 204
    assert len((yield token_server.export("other"))) == 2


@pytest_twisted.inlineCallbacks
def test_ovh_auth_tag_ignored_without_token_auth(put_server: Any) -> None:
    code, _, _ = yield post(put_server.port("http"), dp(tags={"h": "a", "ovh.auth": "x:y"}))
    assert code == 204
    assert [r["tags"] for r in (yield put_server.export())] == [{"h": "a"}]


@pytest_twisted.inlineCallbacks
def test_time_past_int64_nanoseconds_is_refused_alone(put_server: Any) -> None:
    """tsnet keeps int64 nanoseconds (to 2262-04-11): a later point gets OpenTSDB's
    range error, and the point beside it is stored (it must not fail the batch)."""
    port = put_server.port("http")
    code, _, content = yield post(port, [dp(timestamp=9223372036854),
                                         dp(timestamp=9223372036855)], "details")
    assert code == 400
    reply = json.loads(content)
    assert (reply["success"], reply["failed"]) == (1, 1)
    assert reply["errors"][0]["error"].startswith("bad timestamp=9223372036855 when trying")
    assert [r["time_ms"] for r in (yield put_server.export())] == [9223372036854]


# -- /metrics on token listeners (README "Metrics") ---------------------------------------


def get_metrics(port: int, **kw: Any) -> Any:
    return post(port, path="/metrics", method="GET", **kw)


@pytest_twisted.inlineCallbacks
def test_metrics_want_a_read_token_on_a_token_listener(token_server: Any) -> None:
    port = token_server.port("http")
    _, sec = yield make_token(token_server)
    code, headers, content = yield get_metrics(port)  # a 200 before metrics_auth
    assert (code, content) == (401, b"401 Unauthorized: a READ token is needed\n")
    assert headers.getRawHeaders("www-authenticate") == ['Bearer realm="metrics"']
    code, _, content = yield get_metrics(port, auth=("nosuchid", "nosuchkey"))
    assert code == 401
    code, _, content = yield get_metrics(port, auth=basic(sec["write"]))
    assert (code, content) == (403, b"403 Forbidden: a READ token is needed\n")
    for kw in ({"auth": basic(sec["read"])},
               {"headers": {"Authorization": f"Bearer {sec['read']}"}},
               {"headers": {"X-API-Key": sec["read"]}}):
        code, headers, content = yield get_metrics(port, **kw)
        assert code == 200
        assert b"tsnet_points_received_total" in content
        assert headers.getRawHeaders("content-type")[0].startswith("text/plain")


@pytest.mark.parametrize(("auth", "metrics_auth", "open_"), [
    ("none", "", True), ("none", "token", False), ("token", "none", True)])
@pytest_twisted.inlineCallbacks
def test_metrics_auth_key(make_server: Any, auth: str, metrics_auth: str, open_: bool) -> None:
    keys = f"auth = {auth}\n" + (f"metrics_auth = {metrics_auth}\n" if metrics_auth else "")
    server = yield make_server(BASE_CONFIG.replace("apis = metrics\n", "apis = metrics\n" + keys))
    code, _, content = yield get_metrics(server.port("http"))
    assert code == (200 if open_ else 401)
    assert (b"tsnet_write_queue_items" in content) is open_
    if not open_:
        _, sec = yield make_token(server)
        code, _, _ = yield get_metrics(server.port("http"), auth=basic(sec["read"]))
        assert code == 200


def test_metrics_auth_values(tmp_path: Any) -> None:
    from tsnet.config import load_config
    from tsnet.errors import ConfigError
    from tsnet.plugins import load_plugins

    path = tmp_path / "tsnet.ini"
    path.write_text(BASE_CONFIG.replace("apis = metrics\n", "apis = metrics\nmetrics_auth = yes\n"))
    with pytest.raises(ConfigError) as e:
        load_config(str(path), load_plugins())
    assert "[listener:http] metrics_auth: must be one of none, token, got 'yes'" in str(e.value)
