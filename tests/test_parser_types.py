"""Every write parser against values of the wrong type and numbers of any size.

Hypothesis builds JSON documents (and protocol lines) whose fields hold whatever
JSON can: arrays and objects where strings are expected, booleans, nulls, and
numbers of 5000 digits (past Python's int-digit limit of 4300).  A parser may
answer with its protocol's error and nothing else: never a TypeError, never a
ValueError with Python's text.  Then the same inputs through real servers,
whose replies and logs must not show an internal exception either.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher

from tests.helpers.tsstore import ADMIN, tsstore_config
from tsnet.protocols.atsd.parse import CommandError, SeriesFastPath, parse_command
from tsnet.protocols.opentsdb.http_put import sync_timeout_ms
from tsnet.protocols.opentsdb.json_put import (
    PointError,
    PutBodyError,
    SeriesCache,
    fast_put_samples,
    parse_put_body,
    validate_point,
)
from tsnet.protocols.opentsdb.telnet_parse import PutError, PutParser
from tsnet.protocols.tsstore import rest as tsstore_rest
from tsnet.protocols.tsstore.gojson import (
    GoJSONError,
    check_json,
    decode_envelope,
    go_loads,
    go_loads_map,
)
from tsnet.protocols.tsstore.schema import SchemaError, SchemaSet, compact, expand, expand_value
from tsnet.protocols.tsstore.stores import StoreError
from tsnet.testing.fixtures import BASE_CONFIG

SWEEP = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BIG = "1" * 5000
#: what Python says when a text is too long for int(); no reply may quote it
PYTHON_TEXTS = ("4300", "int_max_str_digits", "Traceback", "unhashable", "object has no",
                "NoneType", "Exceeds the limit")


class Raw(str):
    """A JSON number written as this very text (Python could not print it)."""


numbers = st.builds(
    lambda digit, minus, tail: Raw(("-" if minus else "") + digit * 5000 + tail),
    st.sampled_from("19"), st.booleans(), st.sampled_from(["", ".5", "e3", "e-99999"]),
) | st.sampled_from([Raw(str(2**63)), Raw(str(-(2**63) - 1)), Raw(str(2**64)), Raw("1e400"),
                     Raw("-0"), Raw("0.0")])
scalars = (st.none() | st.booleans() | st.integers() | numbers
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=6)
           | st.sampled_from([BIG, "-" + BIG, " 12 ", "NaN", "0" * 5000 + "1"]))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)


def dumps(v: Any) -> str:
    """JSON text, `Raw` numbers as written."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    return json.dumps(v)


def replaced(template: dict, fields: st.SearchStrategy) -> st.SearchStrategy:
    """``template`` with some of its fields (or their members) replaced by anything."""
    def build(changes: dict, drop: list[str]) -> dict:
        out = {**template, **changes}
        for k in drop:
            out.pop(k, None)
        return out
    return st.builds(build, st.dictionaries(fields, values, max_size=3),
                     st.lists(fields, max_size=2))


# -- OpenTSDB /api/put -------------------------------------------------------------------

GOOD_POINT = {"metric": "m", "timestamp": 1356998400, "value": 1, "tags": {"h": "a"}}
point_fields = st.sampled_from(["metric", "timestamp", "value", "tags", "tsuid"])
points = replaced(GOOD_POINT, point_fields) | st.builds(
    lambda tag_value, metric: {**GOOD_POINT, "metric": metric, "tags": {"h": tag_value}},
    values, values)


def put_errors_only(body: bytes) -> None:
    samples = fast_put_samples(body, SeriesCache())
    try:
        raw = parse_put_body(body)
    except PutBodyError as e:
        assert samples is None
        assert not any(t in (e.details or "") for t in PYTHON_TEXTS)
        return
    good = 0
    for p in raw:
        try:
            validate_point(p, series={})
            good += 1
        except PointError as e:
            assert not any(t in str(e) for t in PYTHON_TEXTS)
    if samples is not None:  # the fast path only takes what the full path takes
        assert samples.count == good == len(raw)


@SWEEP
@given(st.one_of(points, st.lists(points, min_size=1, max_size=3), values))
def test_json_put_answers_only_opentsdb_errors(doc: Any) -> None:
    put_errors_only(dumps(doc).encode())


@pytest.mark.parametrize("body", [
    b'{"metric":"m","timestamp":1,"value":1,"tags":{"a":[1]}}',
    b'{"metric":["m"],"timestamp":1,"value":1,"tags":{"a":"b"}}',
    b'[{"metric":"m","timestamp":1,"value":1,"tags":{"a":"b"}},'
    b'{"metric":{"x":1},"timestamp":1,"value":1,"tags":{"a":"b"}}]',
    b'{"metric":"m","timestamp":1,"value":1,"tags":{"a":{"b":1}}}',
])
def test_fast_path_declines_unhashable_metric_or_tags(body: bytes) -> None:
    assert fast_put_samples(body, SeriesCache()) is None  # TypeError before the fix
    with pytest.raises(PutBodyError):
        parse_put_body(body)


@pytest.mark.parametrize("ts", [BIG, "-" + BIG, f'"{BIG}"', f'"-{BIG}"', f'" {BIG} "'],
                         ids=["number", "negative", "string", "negative string", "spaces"])
def test_json_put_timestamp_past_the_int_digit_limit(ts: str) -> None:
    body = b'{"metric":"m","timestamp":%s,"value":1,"tags":{"h":"a"}}' % ts.encode()
    with pytest.raises(PutBodyError) as e:  # ValueError before the fix
        parse_put_body(body)
    assert e.value.code == 400
    assert e.value.message == "Unable to parse the given JSON"
    assert "range of long" in e.value.details or "not a valid long" in e.value.details


def test_json_put_string_timestamp_with_java_leading_zeros() -> None:
    (p,) = parse_put_body(b'{"timestamp":"%s1356998400"}' % (b"0" * 5000))
    assert p.timestamp == 1356998400
    (p,) = parse_put_body(b'{"timestamp":"-%s9223372036854775808"}' % (b"0" * 30))
    assert p.timestamp == -(2**63)


@SWEEP
@given(st.text(max_size=30) | st.sampled_from([BIG, "-" + BIG, "+" + BIG, "2147483648"]))
def test_sync_timeout_is_javas_error_or_a_number(text: str) -> None:
    try:
        n = sync_timeout_ms({"sync_timeout": [text]})
    except ValueError as e:
        assert str(e) == f'For input string: "{text}"'
    else:
        assert -(2**31) <= n < 2**31


# -- OpenTSDB telnet put and ATSD commands ---------------------------------------------------

words = st.sampled_from([BIG, "-" + BIG, BIG + ".5", "1e" + BIG, "1356998400", "1", "x", "",
                         "NaN", "h=a", "a=" + BIG, "0" * 5000 + "1", "1." + BIG])


@SWEEP
@given(st.lists(words | st.text(max_size=5), min_size=0, max_size=6))
def test_telnet_put_answers_only_put_errors(parts: list[str]) -> None:
    line = " ".join(["put", *parts])
    parser = PutParser()
    for _ in range(2):  # the second time through the cache
        try:
            parser.parse(line)
        except PutError as e:
            assert str(e).startswith("put: ")
            assert not any(t in str(e) for t in PYTHON_TEXTS)


atsd_fields = st.sampled_from(["e:", "m:x=", "t:k=", "x:y=", "a:", "d:", "s:", "ms:", "v:k=",
                               "k:k=", "p:", "rd:", "min:", "max:", "l:", "z:", "i:", "b:"])


@SWEEP
@given(st.sampled_from(["series", "property", "message", "metric", "entity", "debug series"]),
       st.lists(st.tuples(atsd_fields, words | st.text(max_size=4)), max_size=5))
def test_atsd_commands_answer_only_command_errors(name: str, fields: list) -> None:
    line = " ".join([name, "e:ent", "m:met=1", *(f + v for f, v in fields)])
    for parse in (parse_command, SeriesFastPath().parse):
        try:
            parse(line)
        except CommandError as e:
            assert not any(t in str(e) for t in PYTHON_TEXTS)


# -- ts-store ------------------------------------------------------------------------------

envelopes = replaced({"timestamp": 1, "data": {"a": 1}},
                     st.sampled_from(["timestamp", "data", "Timestamp", "DATA"]))
SCHEMA = [{"index": 1, "name": "a", "type": "int64"}, {"index": 2, "name": "b", "type": "string"}]


@SWEEP
@given(envelopes | values, st.booleans())
def test_tsstore_envelopes_answer_only_go_errors(doc: Any, rest: bool) -> None:
    body = dumps(doc).encode()
    try:
        decode_envelope(body, empty="EOF" if rest else "unexpected end of JSON input")
    except GoJSONError as e:
        assert not any(t in str(e) for t in PYTHON_TEXTS)
    for decode in (check_json, go_loads, go_loads_map, tsstore_rest.request_json):
        try:
            decode(body)
        except (GoJSONError, StoreError) as e:
            assert not any(t in str(e) for t in PYTHON_TEXTS)


@SWEEP
@given(values)
def test_tsstore_schemas_answer_only_schema_errors(doc: Any) -> None:
    body = dumps(doc).encode()
    try:
        value = go_loads(body)
    except GoJSONError:
        return
    for fields in (value, [value], [{"index": value, "name": "a", "type": "int64"}]):
        try:
            SchemaSet().evolve(fields)
        except SchemaError as e:
            assert not any(t in str(e) for t in PYTHON_TEXTS)
    try:
        compact(SCHEMA, body)
    except SchemaError as e:
        assert not any(t in str(e) for t in PYTHON_TEXTS)
    expand(SCHEMA, body)
    expand_value(SCHEMA, body)


@pytest.mark.parametrize("ts", [BIG, "-" + BIG], ids=["positive", "negative"])
@pytest.mark.parametrize("rest", [True, False], ids=["rest", "ws"])
def test_tsstore_timestamp_past_the_int_digit_limit(ts: str, rest: bool) -> None:
    with pytest.raises(GoJSONError) as e:  # ValueError before the fix
        decode_envelope(b'{"timestamp":%s,"data":1}' % ts.encode(),
                        empty="EOF" if rest else "unexpected end of JSON input")
    assert str(e.value).startswith(f"json: cannot unmarshal number {ts[:20]}")
    assert str(e.value).endswith(".timestamp of type int64")


def test_tsstore_compact_keys_past_the_int_digit_limit() -> None:
    with pytest.raises(SchemaError) as e:  # ValueError before the fix
        compact(SCHEMA, b'{"%s":1}' % BIG.encode())
    assert str(e.value) == f"field not found in schema: {BIG}"
    # Atoi allows leading zeros: this key is index 3 (not in the schema)
    with pytest.raises(SchemaError) as e:
        compact(SCHEMA, b'{"%s3":1}' % (b"0" * 5000))
    assert str(e.value) == "field not found in schema: index 3"


# -- through real servers --------------------------------------------------------------------


def no_internal_text(content: bytes) -> None:
    assert not any(t.encode() in content for t in PYTHON_TEXTS), content[:300]


class Events:
    """The server's log events while the block runs (a real observer)."""

    def __enter__(self) -> list[dict]:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        return self.events

    def __exit__(self, *_: Any) -> None:
        globalLogPublisher.removeObserver(self.events.append)


def loud(events: list[dict]) -> list[dict]:
    """The events that are failures, criticals or errors."""
    return [e for e in events if "log_failure" in e
            or e.get("log_level") in (LogLevel.critical, LogLevel.error)]


PUT_CONFIG = BASE_CONFIG.replace("apis = metrics", "apis = opentsdb metrics")


@pytest.mark.parametrize("bodies", [
    [b'{"metric":"m","timestamp":1,"value":1,"tags":{"a":[1]}}',
     b'{"metric":["m"],"timestamp":1,"value":1,"tags":{"a":"b"}}'],
    [b'{"metric":"m","timestamp":%s,"value":1,"tags":{"a":"b"}}' % BIG.encode(),
     b'{"metric":"m","timestamp":"%s","value":1,"tags":{"a":"b"}}' % BIG.encode()],
], ids=["unhashable", "5000 digits"])
@pytest_twisted.inlineCallbacks
def test_put_bad_types_are_400s_without_a_log_line_each(make_server: Any,
                                                        bodies: list[bytes]) -> None:
    server = yield make_server(PUT_CONFIG)
    with Events() as events:
        for listener in ("opentsdb", "http"):
            url = f"http://127.0.0.1:{server.port(listener)}/api/put"
            for body in bodies * 5:
                resp = yield treq.post(url, data=body, persistent=False)
                content = yield treq.content(resp)
                assert resp.code == 400, content
                assert json.loads(content)["error"]["message"] == \
                    "Unable to parse the given JSON"
                no_internal_text(content)
    # before the fix: a critical traceback per request (unhashable: a 400 still),
    # or a 500 (5000 digits)
    assert loud(events) == []


@pytest_twisted.inlineCallbacks
def test_tsstore_writes_with_huge_numbers_are_go_errors(make_server: Any) -> None:
    server = yield make_server(tsstore_config())
    base = f"http://127.0.0.1:{server.port('http')}/api/stores"
    admin = {"X-Admin-Key": ADMIN, "Content-Type": "application/json"}

    @defer.inlineCallbacks
    def call(method: str, path: str, body: bytes, headers: dict) -> Any:
        resp = yield treq.request(method, base + path, data=body, headers=headers,
                                  persistent=False)
        content = yield treq.content(resp)
        no_internal_text(content)
        return resp.code, json.loads(content)

    with Events() as events:
        code, made = yield call("POST", "", b'{"name":"s1","data_type":"schema"}', admin)
        assert code == 201
        key = {"X-API-Key": made["api_key"], "Content-Type": "application/json"}
        for body, error in [
            (b'{"name":"s2","num_blocks":%s}' % BIG.encode(),
             f"json: cannot unmarshal number {BIG} into Go value of type float64"),
            (b'{"name":"s2","num_blocks":-1}', "json: cannot unmarshal number -1 into Go "
                                                 "struct field CreateStoreRequest.num_blocks "
                                                 "of type uint32"),
            (b'{"name":"s2","num_blocks":"8"}', "json: cannot unmarshal string into Go "
                                                 "struct field CreateStoreRequest.num_blocks "
                                                 "of type uint32"),
            (b'{"name":["s2"]}', "json: cannot unmarshal array into Go struct field "
                                  "CreateStoreRequest.name of type string"),
            (b'{"name":"s2",', "unexpected end of JSON input"),
        ]:
            assert (yield call("POST", "", body, admin)) == (400, {"error": error})
        code, reply = yield call("PUT", "/s1/schema",
                                 b'{"fields":[{"index":%s,"name":"a","type":"int64"}]}'
                                 % BIG.encode(), key)
        assert (code, reply) == (400, {"error": f"json: cannot unmarshal number {BIG} into "
                                                "Go value of type float64"})
        code, _ = yield call("PUT", "/s1/schema",
                             b'{"fields":[{"index":1,"name":"a","type":"int64"}]}', key)
        assert code == 200
        code, reply = yield call("POST", "/s1/data",
                                 b'{"timestamp":%s,"data":{"a":1}}' % BIG.encode(), key)
        assert code == 400  # a 500 before the fix
        assert reply["error"].startswith("json: cannot unmarshal number 111")
        code, reply = yield call("POST", "/s1/data", b'{"data":{"%s":1}}' % BIG.encode(), key)
        assert (code, reply) == (400, {"error": "schema validation failed: field not found "
                                                f"in schema: {BIG}"})
    assert loud(events) == []


@pytest_twisted.inlineCallbacks
def test_tsstore_websocket_write_with_a_huge_timestamp_is_an_error_frame(
        make_server: Any) -> None:
    from tests.test_tsstore_ws_write import create, url, ws_connect

    server = yield make_server(tsstore_config())
    key = yield create(server)
    with Events() as events:
        client = yield ws_connect(url(server, key=key))
        client.send(b'{"timestamp":%s,"data":1}' % BIG.encode())  # crashed before the fix
        client.send({"timestamp": 5, "data": 1})  # and the connection is still there
        first, second = yield client.wait(2)
    assert first["type"] == "error"
    assert first["message"].startswith("json: cannot unmarshal number 111")
    assert first["message"].endswith(" into Go struct field WSWriteRequest.timestamp of type "
                                     "int64")
    assert second == {"type": "ack", "timestamp": 5, "size": 1}
    assert loud(events) == []
