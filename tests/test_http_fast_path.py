"""The /api/put fast path: it takes a body only when every point is plainly
valid, and then stores exactly what the full path would; real servers answer
the same through either path."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.clients import connect_line, sleep, wait_for
from tsnet.protocols.opentsdb.json_put import (
    PointError,
    PutBodyError,
    SeriesCache,
    fast_put_samples,
    parse_put_body,
    validate_point,
)
from tsnet.testing.conformance import typed
from tsnet.testing.fixtures import BASE_CONFIG, make_token

TS = 1356998400

names = st.sampled_from(["m", "sys.cpu", "a/b-c_d", "température", "", "a b", "x=y", "日本"])
timestamps = st.one_of(
    st.sampled_from([TS, TS * 1000, 0, -1, 2**32 - 1, 2**32, 9223372036854, 9223372036855]),
    st.integers(-2**70, 2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["1356998400", "x"]),
)
values = st.one_of(
    st.integers(-2**70, 2**70),
    st.sampled_from([2**63 - 1, -2**63, 2**63, 2**64, 18446744073709551616, 0, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["42", "4.5", "x", "", True, None]),
)
tag_maps = st.one_of(
    st.dictionaries(names, names, max_size=9),
    st.just({"ovh.auth": "id:key", "h": "a"}),
    st.just({"h": None}),
    st.just({"h": 5}),
)


@st.composite
def point(draw: Any) -> Any:
    p: dict[str, Any] = {}
    for field, strategy in (("metric", names), ("timestamp", timestamps), ("value", values),
                            ("tags", tag_maps)):
        if draw(st.integers(0, 9)):  # usually present
            p[field] = draw(strategy)
    if not draw(st.integers(0, 30)):
        p["tsuid"] = "000001"
    return p


def full_path(body: bytes) -> list[tuple] | None:
    """(key, time, value) of every point the full path accepts, or None when any
    point (or the body) is refused."""
    try:
        points = parse_put_body(body)
    except PutBodyError:
        return None
    out: list[tuple] = []
    for p in points:
        if p is not None and p.token is not None:
            return None  # written with another principal: not comparable here
        try:
            out.append(validate_point(p, series={}))
        except PointError:
            return None
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(point(), min_size=1, max_size=6), st.booleans())
def test_fast_path_stores_what_the_full_path_stores(points: list, as_object: bool) -> None:
    body = json.dumps(points[0] if as_object else points).encode()
    fast = fast_put_samples(body, SeriesCache())
    if fast is None:
        return  # the full path answers it; test_plain_bodies_take_the_fast_path checks reach
    full = full_path(body)
    assert full is not None, body
    assert list(zip(fast.keys, fast.times, typed(fast.values), strict=True)) == [
        (k, t, typed([v])[0]) for k, t, v in full]
    assert fast.count == len(full)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["m", "sys.cpu", "température"]),
                          st.integers(1, 2**32 - 1),
                          st.one_of(st.integers(-2**63, 2**63 - 1),
                                    st.floats(-1e18, 1e18, allow_nan=False)),
                          st.dictionaries(st.sampled_from(["h", "dc", "rack"]),
                                          st.sampled_from(["a", "b-1", "ü"]), min_size=1)),
                min_size=1, max_size=20))
def test_plain_bodies_take_the_fast_path(points: list) -> None:
    body = json.dumps([{"metric": m, "timestamp": t, "value": v, "tags": tags}
                       for m, t, v, tags in points]).encode()
    fast = fast_put_samples(body, SeriesCache())
    assert fast is not None
    assert fast.times == [t * 1_000_000_000 for _, t, _, _ in points]


def test_bodies_the_fast_path_leaves_alone() -> None:
    cache = SeriesCache()
    good = {"metric": "m", "timestamp": TS, "value": 1, "tags": {"h": "a"}}
    for odd in (
        {**good, "value": 18446744073709551616},  # orjson reads this as a float
        {**good, "value": 2**63},
        {**good, "value": "1"},
        {**good, "timestamp": 1.5e9},
        {**good, "tags": {}},
        {**good, "tags": {"ovh.auth": "x"}},
        {**good, "metric": "a b"},
        {**good, "tsuid": "01"},
    ):
        assert fast_put_samples(json.dumps([good, odd]).encode(), cache) is None
    assert fast_put_samples(b'[{"metric":"m","timestamp":1,"value":NaN,"tags":{"h":"a"}}]',
                            cache) is None
    assert fast_put_samples(b"[]", cache) is None
    assert fast_put_samples("[1]".encode("utf-16"), cache) is None


def test_series_cache_is_bounded() -> None:
    cache = SeriesCache(limit=2)
    keys = [cache.key("m", {"h": str(i)}) for i in range(5)]
    assert len(cache.known) <= 2
    assert keys[4] == ("m", None, (("h", "4"),))
    assert cache.key("m", {"h": "bad value"}) is None


# -- real servers --------------------------------------------------------------------


TOKEN_CONFIG = BASE_CONFIG.replace(
    "flush_interval = 0.05", "flush_interval = 0.05\nauth_refresh = 0.1") + (
    "\n[listener:put]\nprotocol = opentsdb\nendpoint = tcp:0:interface=127.0.0.1\nauth = token\n")


def put_request(points: Any, auth: bytes = b"", extra: bytes = b"") -> bytes:
    body = json.dumps(points).encode()
    return (b"POST /api/put HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s%s\r\n%s" % (len(body), auth, extra, body))


def statuses(data: bytes) -> list[int]:
    """The status of each response (bodies here are JSON, never a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


@pytest_twisted.ensureDeferred
async def test_keep_alive_mix_of_fast_and_full_requests(make_server: Any) -> None:
    """A device's connection: plain puts (fast), a put with details (full: the
    connection is twisted.web's from there), a query, a put again."""
    server = await make_server(BASE_CONFIG)
    p = {"metric": "m", "timestamp": TS, "value": 1, "tags": {"h": "a"}}
    c = await connect_line(server.port("opentsdb"))
    bad = json.dumps([{**p, "value": "x"}]).encode()
    c.send(put_request([p]) + put_request([{**p, "timestamp": TS + 1}])
           + b"POST /api/put?details HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
           % (len(bad), bad) + b"GET /api/version HTTP/1.1\r\nHost: t\r\n\r\n")
    await wait_for(lambda: len(statuses(c.received)) == 4 and c.received.endswith(b"}"))
    # (not pipelined: twisted.web drops a pipelined request that says Connection: close)
    c.send(put_request([{**p, "timestamp": TS + 2}], extra=b"Connection: close\r\n"))
    data = await c.wait_closed()
    assert statuses(data) == [204, 204, 400, 200, 204]
    assert b'"error":"Unable to parse value to a number"' in data
    rows = await server.export()
    assert sorted(r["time_ms"] for r in rows) == [TS * 1000, (TS + 1) * 1000, (TS + 2) * 1000]


@pytest_twisted.ensureDeferred
async def test_token_requests_take_the_fast_path_once_known(make_server: Any) -> None:
    import base64

    server = await make_server(TOKEN_CONFIG)
    rec, sec = await make_token(server, tags={"device": "d1"})
    auth = b"Authorization: Basic %s\r\n" % base64.b64encode(sec["write"].encode())
    read = b"Authorization: Basic %s\r\n" % base64.b64encode(sec["read"].encode())
    p = {"metric": "m", "timestamp": TS, "value": 1, "tags": {"device": "spoof", "h": "a"}}
    c = await connect_line(server.port("put"))
    c.send(put_request([p], auth) + put_request([{**p, "timestamp": TS + 1}], auth)
           + put_request([{**p, "timestamp": TS + 2}], read, b"Connection: close\r\n"))
    data = await c.wait_closed()
    assert statuses(data) == [204, 204, 403]
    rec.revoked = True
    await server.core.catalog.save_token(rec)  # as `tsnet token revoke` does
    await sleep(0.5)  # five catalog polls
    c = await connect_line(server.port("put"))
    c.send(put_request([{**p, "timestamp": TS + 3}], auth, b"Connection: close\r\n"))
    assert statuses(await c.wait_closed()) == [401]
    rows = await server.export("iot")
    assert [(r["tags"], r["time_ms"]) for r in rows] == [
        ({"device": "d1", "h": "a"}, TS * 1000), ({"device": "d1", "h": "a"}, (TS + 1) * 1000)]


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_is_answered_as_the_full_path_answers_it(make_server: Any) -> None:
    """Ingest refusing (a stopping server) fails the commit: the fast reply is
    the full path's reply for the same request (``?sync`` takes the full path)."""
    server = await make_server(BASE_CONFIG)
    await server.core.ingest.stop()
    p = [{"metric": "m", "timestamp": TS, "value": 1, "tags": {"h": "a"}}]
    replies = []
    for query in (b"", b"?sync"):
        c = await connect_line(server.port("opentsdb"))
        c.send(put_request(p, extra=b"Connection: close\r\n").replace(
            b"/api/put ", b"/api/put" + query + b" ", 1))
        data = await c.wait_closed()
        replies.append((statuses(data), json.loads(data.partition(b"\r\n\r\n")[2])))
    assert replies[0] == replies[1] == ([400], {"error": {
        "code": 400, "message": "One or more data points had errors",
        "details": 'Please see the TSD logs or append "details" to the put request'}})
