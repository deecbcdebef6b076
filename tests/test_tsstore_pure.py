"""Unit tests for the pure ts-store modules: gojson, schema, durations, aggregate.

Expected Go texts and encodings below were checked against Go's own
encoding/json, strconv and time packages (and the reference's schema and
aggregation code); the spec's error tables are quoted verbatim.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.protocols.tsstore import gojson
from tsnet.protocols.tsstore.aggregate import (
    AGG_FUNCS,
    AggregationError,
    AggSpec,
    WindowAggregator,
    aggregate,
    parse_spec,
)
from tsnet.protocols.tsstore.durations import DurationError, parse_duration
from tsnet.protocols.tsstore.gojson import (
    GoJSONError,
    check_json,
    decode_envelope,
    go_loads,
    go_loads_map,
    go_marshal,
    go_quote,
    go_trim_space,
)
from tsnet.protocols.tsstore.schema import (
    FIELD_TYPES,
    NUMERIC_TYPES,
    SchemaError,
    SchemaSet,
    compact,
    expand,
    expand_value,
    numeric_map,
    numeric_names,
)

S = 10**9
MIN = 60 * S
H = 60 * MIN
D = 24 * H

REST_TYPE = (
    'struct { Timestamp int64 "json:\\"timestamp,omitempty\\""; '
    'Data json.RawMessage "json:\\"data\\"" }'
)

FIELDS = [
    {"index": 1, "name": "temperature", "type": "float64"},
    {"index": 2, "name": "humidity", "type": "int32"},
    {"index": 3, "name": "sensor_id", "type": "string"},
]


def _err(fn, *args, exc=GoJSONError, **kwargs) -> str:
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------- gojson: syntax


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        (b"", "unexpected end of JSON input"),
        (b"  ", "unexpected end of JSON input"),
        (b"nul", "invalid character ' ' in literal null (expecting 'l')"),
        (b"nulx", "invalid character 'x' in literal null (expecting 'l')"),
        (b"nol", "invalid character 'o' in literal null (expecting 'u')"),
        (b"tru", "invalid character ' ' in literal true (expecting 'e')"),
        (b"fals", "invalid character ' ' in literal false (expecting 'e')"),
        (b"1.", "invalid character ' ' after decimal point in numeric literal"),
        (b"1.x", "invalid character 'x' after decimal point in numeric literal"),
        (b"-", "invalid character ' ' in numeric literal"),
        (b"-x", "invalid character 'x' in numeric literal"),
        (b"1e", "invalid character ' ' in exponent of numeric literal"),
        (b"1.5e+", "invalid character ' ' in exponent of numeric literal"),
        (b'"abc', "unexpected end of JSON input"),
        (b'"\\', "invalid character ' ' in string escape code"),
        (b'"\\x"', "invalid character 'x' in string escape code"),
        (b'"\\u12', "invalid character ' ' in \\u hexadecimal character escape"),
        (b'"\\uZZZZ"', "invalid character 'Z' in \\u hexadecimal character escape"),
        (b'"a\x01"', "invalid character '\\x01' in string literal"),
        (b'"a\nb"', "invalid character '\\n' in string literal"),
        (b"{", "unexpected end of JSON input"),
        (b"[1,", "unexpected end of JSON input"),
        (b"[1,]", "invalid character ']' looking for beginning of value"),
        (b'{"a":1,}', "invalid character '}' looking for beginning of object key string"),
        (b'{"a" 1}', "invalid character '1' after object key"),
        (b"{1:2}", "invalid character '1' looking for beginning of object key string"),
        (b'{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
        (b"[1 2]", "invalid character '2' after array element"),
        (b"01", "invalid character '1' after top-level value"),
        (b"[01]", "invalid character '1' after array element"),
        (b"1 2", "invalid character '2' after top-level value"),
        (b'{"a":1}}', "invalid character '}' after top-level value"),
        (b"x", "invalid character 'x' looking for beginning of value"),
        (b"'", "invalid character '\\'' looking for beginning of value"),
        (b"NaN", "invalid character 'N' looking for beginning of value"),
        (b"-Infinity", "invalid character 'I' in numeric literal"),
        (b"\xef\xbb\xbf{}", "invalid character '\u00ef' looking for beginning of value"),
        ("é".encode(), "invalid character '\u00c3' looking for beginning of value"),
        (b"\x7f", "invalid character '\\x7f' looking for beginning of value"),
        (b"\xc2\xa0", "invalid character '\u00c2' looking for beginning of value"),
        (b"\xff", "invalid character '\u00ff' looking for beginning of value"),
        (b"[1,\xfe]", "invalid character '\u00fe' looking for beginning of value"),
    ],
)
def test_check_json_go_syntax_errors(raw, msg):
    assert _err(check_json, raw) == msg


@pytest.mark.parametrize(
    "raw",
    [b"null", b"0", b"-0", b"1.5e-3", b' {"a": [1, "x", null, true]} ', b'"\\ud800"', b"[]",
     b"[" * 5000 + b"]" * 5000],
)
def test_check_json_accepts_valid(raw):
    check_json(raw)
    check_json(raw.decode())


def test_check_json_max_depth():
    check_json(b"[" * 10000 + b"]" * 10000)
    msg = _err(check_json, b"[" * 10001 + b"]" * 10001)
    assert msg == "invalid character '[' exceeded max depth"


def test_invalid_utf8_inside_string_is_rejected():
    # Go would accept and store it; we insist on UTF-8 (documented choice).
    assert "UTF-8" in _err(check_json, b'"\xff"')
    assert "UTF-8" in _err(decode_envelope, b'{"data":"\xc3"}')


# ----------------------------------------------------------- gojson: envelope


def test_envelope_raw_bytes_preserved():
    ts, data = decode_envelope(b'{"data": {"temperature": 72.5}}')
    assert ts is None
    assert data == b'{"temperature": 72.5}'
    assert len(data) == 21


def test_envelope_whitespace_and_escapes_inside_value_kept():
    body = b'{ "timestamp" : 17 ,\n "data" :\t[ 1 , "\\u00e9<", {"x" : null} ] }'
    assert decode_envelope(body) == (17, b'[ 1 , "\\u00e9<", {"x" : null} ]')
    assert decode_envelope('{"data":"héllo"}'.encode()) == (None, '"héllo"'.encode())


def test_envelope_null_absent_and_zero():
    assert decode_envelope(b'{"data": null}') == (None, b"null")
    assert decode_envelope(b'{"timestamp": 5}') == (5, None)
    assert decode_envelope(b'{"timestamp": null, "data": 1}') == (None, b"1")
    assert decode_envelope(b'{"timestamp": 0, "data": 1}') == (0, b"1")
    assert decode_envelope(b"{}") == (None, None)
    assert decode_envelope(b"null") == (None, None)  # null into a struct: no-op


def test_envelope_repeated_and_case_insensitive_keys():
    assert decode_envelope(b'{"data":1,"data":{"b":2}}') == (None, b'{"b":2}')
    assert decode_envelope(b'{"timestamp":1,"timestamp":2}') == (2, None)
    assert decode_envelope(b'{"TimeStamp":7,"DATA":"x"}') == (7, b'"x"')
    assert decode_envelope(b'{"\\u0064ata":3}') == (None, b"3")
    long_s = '{"time\u017ftamp":4}'.encode()
    assert decode_envelope(long_s) == (4, None)  # U+017F folds to s
    dotless_i = '{"t\u0131mestamp":4}'.encode()
    assert decode_envelope(dotless_i) == (None, None)  # dotless i does not
    assert decode_envelope(b'{"timestamp":5,"timestamp":null}') == (5, None)


def test_envelope_unknown_keys_ignored():
    assert decode_envelope(b'{"x":[1,{"y":2}],"data":true,"z":"q"}') == (None, b"true")


def test_envelope_int64_bounds():
    lo = -(2**63)
    assert decode_envelope(f'{{"timestamp":{lo}}}'.encode()) == (lo, None)
    assert decode_envelope(b'{"timestamp":9223372036854775807}') == (2**63 - 1, None)
    assert decode_envelope(b'{"timestamp":-0}') == (0, None)


@pytest.mark.parametrize(
    ("ts", "shown"),
    [
        ("1.5", "number 1.5"),
        ("1e3", "number 1e3"),
        ("9223372036854775808", "number 9223372036854775808"),
        # past Python's int-digit limit
        pytest.param("1" * 5000, "number " + "1" * 5000, id="5000 digits"),
        pytest.param("-" + "9" * 5000, "number -" + "9" * 5000, id="-5000 digits"),
        ('"5"', "string"),
        ("true", "bool"),
        ("[1]", "array"),
        ("{}", "object"),
    ],
)
def test_envelope_bad_timestamp(ts, shown):
    body = f'{{"timestamp":{ts},"data":1}}'.encode()
    assert _err(decode_envelope, body) == (
        f"json: cannot unmarshal {shown} into Go struct field WSWriteRequest.timestamp "
        "of type int64"
    )
    assert _err(decode_envelope, body, "EOF") == (
        f"json: cannot unmarshal {shown} into Go struct field .timestamp of type int64"
    )


def test_envelope_first_type_error_wins_even_if_later_value_is_fine():
    msg = _err(decode_envelope, b'{"timestamp":true,"timestamp":5}')
    assert msg.startswith("json: cannot unmarshal bool into Go struct field")


def test_envelope_custom_type_name():
    msg = _err(decode_envelope, b'{"timestamp":"x"}', type_name=gojson.PULL_ENVELOPE_TYPE)
    assert msg == (
        "json: cannot unmarshal string into Go struct field PullMessage.timestamp of type int64"
    )
    msg = _err(decode_envelope, b"[1]", type_name=gojson.PULL_ENVELOPE_TYPE)
    assert msg == "json: cannot unmarshal array into Go value of type ws.PullMessage"


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[1,2]", "array"), (b"5", "number"), (b'"str"', "string"), (b"true", "bool")],
)
def test_envelope_not_an_object(body, kind):
    assert _err(decode_envelope, body) == (
        f"json: cannot unmarshal {kind} into Go value of type handlers.WSWriteRequest"
    )
    assert _err(decode_envelope, body, "EOF") == (
        f"json: cannot unmarshal {kind} into Go value of type {REST_TYPE}"
    )


def test_envelope_empty_bodies():
    assert _err(decode_envelope, b"") == "unexpected end of JSON input"
    assert _err(decode_envelope, b" \n\t") == "unexpected end of JSON input"
    assert _err(decode_envelope, b"", "EOF") == "EOF"
    assert _err(decode_envelope, b"   ", "EOF") == "EOF"


def test_envelope_syntax_errors_ws_and_rest():
    body = b'{"data": nol}'
    expected = "invalid character 'o' in literal null (expecting 'u')"
    assert _err(decode_envelope, body) == expected
    assert _err(decode_envelope, body, "EOF") == expected
    # Truncation: Unmarshal vs gin's json.Decoder wording.
    assert _err(decode_envelope, b'{"data":') == "unexpected end of JSON input"
    assert _err(decode_envelope, b'{"data":', "EOF") == "unexpected EOF"
    assert _err(decode_envelope, b"5.", "EOF") == "unexpected EOF"
    assert _err(decode_envelope, b"5e{", "EOF") == (
        "invalid character '{' in exponent of numeric literal"
    )


def test_envelope_trailing_data_ws_error_rest_ignored():
    assert _err(decode_envelope, b'{"data":1} xyz') == (
        "invalid character 'x' after top-level value"
    )
    assert decode_envelope(b'{"data":1} xyz', "EOF") == (None, b"1")
    assert decode_envelope(b'{"data":1} \xff', "EOF") == (None, b"1")


def test_envelope_deeply_nested_data_is_kept():
    deep = b"[" * 5000 + b"]" * 5000
    assert decode_envelope(b'{"timestamp":3,"data":' + deep + b"}") == (3, deep)
    assert decode_envelope(b'{"data":' + deep + b"} tail", "EOF") == (None, deep)
    msg = _err(decode_envelope, b'{"data":' + b"[" * 10001 + b"]" * 10001 + b"}")
    assert msg == "invalid character '[' exceeded max depth"


def test_envelope_accepts_str():
    assert decode_envelope('{"data": 1}') == (None, b"1")


# ------------------------------------------------------------ gojson: marshal


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (45.0, "45"),
        (45, "45"),
        (72.5, "72.5"),
        (0.1, "0.1"),
        (1 / 3, "0.3333333333333333"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (123456789e15, "1.23456789e+23"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1e-10, "1e-10"),
        (-1.5e-300, "-1.5e-300"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (2**53, "9007199254740992"),
        (2**53 + 1, "9007199254740992"),  # float64 loses the last bit
        (123456789012345678901234567890, "1.2345678901234568e+29"),
        (-(2**63), "-9223372036854776000"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
    ],
)
def test_go_marshal_numbers(value, text):
    assert go_marshal(value) == text.encode()


def test_go_marshal_strings():
    assert go_marshal("<a & b>") == b'"\\u003ca \\u0026 b\\u003e"'
    assert go_marshal("\u2028\u2029") == b'"\\u2028\\u2029"'
    assert go_marshal('q"\\/') == b'"q\\"\\\\/"'
    assert go_marshal("\b\f\n\r\t\x00\x1f\x7f") == b'"\\b\\f\\n\\r\\t\\u0000\\u001f\x7f"'
    assert go_marshal("héllo 𝄞") == '"héllo 𝄞"'.encode()
    assert go_marshal("\ud800x") == '"\ufffdx"'.encode()  # lone surrogate -> U+FFFD


def test_go_marshal_containers():
    value = {"b": 1, "a": [1, {"d": 2, "c": 3}], "10": None, "2": "x", "1": True}
    assert go_marshal(value) == b'{"1":true,"10":null,"2":"x","a":[1,{"c":3,"d":2}],"b":1}'
    assert go_marshal((1, 2.5)) == b"[1,2.5]"
    assert go_marshal({}) == b"{}"
    assert go_marshal([]) == b"[]"
    assert go_marshal({"é": 1, "z": 2, "<": 3}) == '{"\\u003c":3,"z":2,"é":1}'.encode()


def test_go_marshal_unsupported():
    assert _err(go_marshal, math.nan) == "json: unsupported value: NaN"
    assert _err(go_marshal, math.inf) == "json: unsupported value: +Inf"
    assert _err(go_marshal, [-math.inf]) == "json: unsupported value: -Inf"
    assert _err(go_marshal, 10**400) == "json: unsupported value: +Inf"
    assert "unsupported type" in _err(go_marshal, {1, 2})


def test_go_marshal_deep_nesting():
    value: object = 1
    for _ in range(3000):
        value = [value]
    assert go_marshal(value) == b"[" * 3000 + b"1" + b"]" * 3000


# -------------------------------------------------------------- gojson: loads


def test_go_loads_go_semantics():
    out = go_marshal(go_loads(b'{"b":1,"a":[1,{"d":2,"c":3}]}'))
    assert out == b'{"a":[1,{"c":3,"d":2}],"b":1}'
    assert math.copysign(1, go_loads(b"-0")) == -1  # float64 -0 survives
    assert go_marshal(go_loads(b"-0")) == b"-0"
    assert go_loads(b'{"\\ud800":1,"\\ufffd":2}') == {"\ufffd": 2}
    assert _err(go_loads, b"[1e400]") == (
        "json: cannot unmarshal number 1e400 into Go value of type float64"
    )
    assert _err(go_loads, b"[" + b"9" * 400 + b"]").startswith("json: cannot unmarshal number 999")
    assert _err(go_loads, b"[1e400, x]") == "invalid character 'x' looking for beginning of value"
    deep = b"[" * 3000 + b"]" * 3000
    assert go_marshal(go_loads(deep)) == deep


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1]", "array"), (b"5", "number"), (b'"x"', "string"), (b"true", "bool")]
)
def test_go_loads_map_type_errors(raw, kind):
    assert _err(go_loads_map, raw) == (
        f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
    )


def test_go_loads_map_order_of_errors():
    assert go_loads_map(b"null") is None
    # the top-level kind is reported before a number out of range
    assert "array" in _err(go_loads_map, b"[1e400]")
    assert _err(go_loads_map, b'{"a":1e400}') == (
        "json: cannot unmarshal number 1e400 into Go value of type float64"
    )


def test_go_quote_and_trim_space():
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("x\n\x01\x7fé") == '"x\\n\\x01\\x7fé"'
    assert go_quote("\u00a0") == '"\\u00a0"'
    assert go_trim_space("\t\u00a0 x \u3000\n") == "x"
    assert go_trim_space("\x1cx") == "\x1cx"  # not Go whitespace (Python thinks it is)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _as_go(value: object) -> object:
    """What a value becomes after Go's interface{} decoding: numbers are float64."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_as_go(v) for v in value]
    return {k: _as_go(v) for k, v in value.items()}


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_go_marshal_round_trips(value):
    out = go_marshal(value)
    back = json.loads(out)
    assert _as_go(back) == _as_go(value)
    # Go's output is a fixed point: decoding and re-encoding changes nothing.
    assert go_marshal(go_loads(out)) == out
    check_json(out)


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans())
def test_envelope_returns_data_bytes_verbatim(value, ts, pretty):
    data = json.dumps(value, indent=1 if pretty else None, ensure_ascii=pretty)
    body = f'{{"junk": [1, {{}}], "timestamp" : {ts},  "data" : {data} }}'.encode()
    assert decode_envelope(body) == (ts, data.encode())
    assert decode_envelope(body, "EOF") == (ts, data.encode())


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_format_round_trips(f):
    text = go_marshal(f).decode()
    assert float(text) == f
    assert ("e" in text) == (f != 0 and (abs(f) < 1e-6 or abs(f) >= 1e21))
    assert not text.endswith(".0")
    assert "e-0" not in text


# ---------------------------------------------------------- schema: definition


def test_field_types():
    assert len(FIELD_TYPES) == 12
    assert NUMERIC_TYPES == FIELD_TYPES - {"bool", "string"}


@pytest.mark.parametrize(
    ("fields", "msg"),
    [
        ([], "invalid schema: no fields defined"),
        ([{"index": 0, "name": "a", "type": "int8"}],
         "invalid schema: field index must be positive: 0"),
        ([{"index": -3, "name": "a", "type": "int8"}],
         "invalid schema: field index must be positive: -3"),
        ([{"index": 1, "name": "", "type": "int8"}], "invalid schema: field name is required"),
        ([{"index": 1, "name": "a", "type": "foo"}], "invalid field type: foo"),
        ([{"index": 1, "name": "a", "type": "INT8"}], "invalid field type: INT8"),
        ([{"index": 1, "name": "a"}], "invalid field type: "),
        ([{"name": "a", "type": "int8"}], "invalid schema: field index must be positive: 0"),
        (
            [{"index": 1, "name": "a", "type": "int8"}, {"index": 1, "name": "b", "type": "int8"}],
            "invalid schema: duplicate field index: 1",
        ),
        (
            [{"index": 1, "name": "x", "type": "int8"}, {"index": 2, "name": "x", "type": "bool"}],
            "invalid schema: duplicate field name: x",
        ),
        ([None], "invalid schema: field index must be positive: 0"),
    ],
)
def test_schema_validation_errors(fields, msg):
    assert _err(SchemaSet().evolve, fields, exc=SchemaError) == msg


@pytest.mark.parametrize(
    ("fields", "msg"),
    [
        (None, "Key: 'SchemaRequest.Fields' Error:Field validation for 'Fields' failed on the "
               "'required' tag"),
        ("x", "json: cannot unmarshal string into Go struct field SchemaRequest.fields of type "
              "[]schema.Field"),
        ({}, "json: cannot unmarshal object into Go struct field SchemaRequest.fields of type "
             "[]schema.Field"),
        ([5], "json: cannot unmarshal number into Go struct field SchemaRequest.fields of type "
              "schema.Field"),
        ([{"index": "1"}], "json: cannot unmarshal string into Go struct field Field.fields.index "
                           "of type int"),
        ([{"index": 1.5}], "json: cannot unmarshal number 1.5 into Go struct field "
                           "Field.fields.index of type int"),
        ([{"index": True}], "json: cannot unmarshal bool into Go struct field Field.fields.index "
                            "of type int"),
        ([{"index": 2**63}], "json: cannot unmarshal number 9223372036854775808 into Go struct "
                             "field Field.fields.index of type int"),
        ([{"index": 1, "name": 5}], "json: cannot unmarshal number into Go struct field "
                                    "Field.fields.name of type string"),
        ([{"index": 1, "name": "a", "type": [1]}], "json: cannot unmarshal array into Go struct "
                                                   "field Field.fields.type of type "
                                                   "schema.FieldType"),
    ],
)
def test_schema_shape_errors(fields, msg):
    assert _err(SchemaSet().evolve, fields, exc=SchemaError) == msg


def test_schema_evolution_and_normalization():
    s0 = SchemaSet()
    assert s0.current() is None
    s1 = s0.evolve([{"INDEX": 1, "Name": "temperature", "tYpe": "float64", "extra": 1}, FIELDS[1]])
    assert s0.current_version == 0 and s0.versions == {}  # original untouched
    assert s1.current_version == 1
    assert s1.current() == [
        {"index": 1, "name": "temperature", "type": "float64"},
        {"index": 2, "name": "humidity", "type": "int32"},
    ]
    s2 = s1.evolve([FIELDS[2], *FIELDS[:2]])  # append (order kept as given)
    assert s2.current_version == 2
    assert [f["index"] for f in s2.current()] == [3, 1, 2]
    assert s2.versions[1] == s1.current()
    msg = _err(s2.evolve, [{"index": 2, "name": "humidity", "type": "float64"}], exc=SchemaError)
    assert msg == "invalid schema: cannot modify existing field 2"
    msg = _err(s2.evolve, [{"index": 1, "name": "temp", "type": "float64"}], exc=SchemaError)
    assert msg == "invalid schema: cannot modify existing field 1"
    s3 = s2.evolve([FIELDS[0]])  # removal is allowed ([Q] in the spec)
    assert s3.current_version == 3 and s3.current() == [FIELDS[0]]
    # validation failures leave nothing behind
    with pytest.raises(SchemaError):
        s3.evolve([])
    assert s3.current_version == 3


def test_schema_json_round_trip():
    s = SchemaSet().evolve(FIELDS[:2]).evolve(FIELDS)
    doc = s.to_json()
    assert doc == {
        "current_version": 2,
        "schemas": {
            "1": {"version": 1, "fields": FIELDS[:2]},
            "2": {"version": 2, "fields": FIELDS},
        },
    }
    back = SchemaSet.from_json(json.loads(json.dumps(doc)))
    assert back == s
    assert SchemaSet.from_json({}) == SchemaSet()
    with pytest.raises(SchemaError):
        SchemaSet.from_json({"schemas": {"x": {}}})
    with pytest.raises(SchemaError):
        SchemaSet.from_json([])  # type: ignore[arg-type]


def test_numeric_helpers():
    fields = [*FIELDS, {"index": 4, "name": "ok", "type": "bool"}]
    assert numeric_names(fields) == {"temperature", "humidity"}
    assert numeric_names(None) == set()
    assert numeric_map(fields) == {"temperature": True, "humidity": True, "sensor_id": False,
                                   "ok": False}
    assert numeric_map(None) is None


# --------------------------------------------------------- schema: compaction


def test_compact_spec_example():
    out = compact(FIELDS, b'{"temperature":72.5,"humidity":45,"sensor_id":"room-1"}')
    assert out == b'{"1":72.5,"2":45,"3":"room-1"}'
    assert len(out) == 30


def test_compact_go_map_semantics():
    fields = [{"index": i, "name": f"f{i}", "type": "float64"} for i in (1, 2, 10)]
    out = compact(fields, b'{"f2": 45.0, "f10": 9007199254740993, "f1": {"z": 1, "a": "<"}}')
    assert out == b'{"1":{"a":"\\u003c","z":1},"10":9007199254740992,"2":45}'
    assert compact(fields, b"{}") == b"{}"
    assert compact(fields, b"null") == b"{}"  # Go leaves the map nil: no error
    assert compact(fields, '{"f1": -0}') == b'{"1":-0}'


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"[1]", "invalid JSON: json: cannot unmarshal array into Go value of type "
                 "map[string]interface {}"),
        (b"5", "invalid JSON: json: cannot unmarshal number into Go value of type "
               "map[string]interface {}"),
        (b'"s"', "invalid JSON: json: cannot unmarshal string into Go value of type "
                 "map[string]interface {}"),
        (b"{bad", "invalid JSON: invalid character 'b' looking for beginning of object key "
                  "string"),
        (b"", "invalid JSON: unexpected end of JSON input"),
        (None, "invalid JSON: unexpected end of JSON input"),
        (b'{"temperature":1e400}', "invalid JSON: json: cannot unmarshal number 1e400 into Go "
                                   "value of type float64"),
        (b'{"x":1}', "field not found in schema: x"),
        (b'{"temperature":1,"Temperature":2}', "field not found in schema: Temperature"),
        (b'{"1":72.5}', "field not found in schema: 1"),  # compact input on a full path
        (b'{"9":1}', "field not found in schema: index 9"),
        (b'{"01":1}', "field not found in schema: 01"),
        (b'{"1":1,"x":2}', "invalid compact JSON key (must be numeric): x"),
    ],
)
def test_compact_errors(data, msg):
    assert _err(compact, FIELDS, data, exc=SchemaError) == msg


def test_compact_without_schema():
    assert _err(compact, None, b"{}", exc=SchemaError) == "schema is required for schema data type"
    assert _err(compact, [], b"{}", exc=SchemaError) == "invalid schema"


def test_compact_numeric_field_names():
    fields = [{"index": 1, "name": "1", "type": "int8"}, {"index": 2, "name": "5", "type": "int8"}]
    assert compact(fields, b'{"1": 3}') == b'{"1":3}'
    # "5" looks like an index and there is no field 5, as in the reference
    msg = _err(compact, fields, b'{"5": 3}', exc=SchemaError)
    assert msg == "field not found in schema: index 5"


def test_expand():
    stored = b'{"1":72.5,"2":45,"3":"room-1"}'
    assert expand(FIELDS, stored) == b'{"humidity":45,"sensor_id":"room-1","temperature":72.5}'
    assert expand(FIELDS, b'{"1":1,"99":2,"+2":3,"03":"z"}') == (
        b'{"humidity":3,"sensor_id":"z","temperature":1}'
    )
    assert expand(FIELDS, b"null") == b"{}"
    assert expand(FIELDS, b"{}") == b"{}"
    bad = (b'{"x":1}', b"[1]", b"", b"{bad", b'{"1e2":1}', b'{"99999999999999999999":1}')
    for stored_bad in bad:
        assert expand(FIELDS, stored_bad) == stored_bad
    assert expand(None, stored) == stored
    assert expand([], stored) == stored


def test_expand_round_trip_with_compact():
    full = b'{"humidity":45,"sensor_id":"room-1","temperature":72.5}'
    assert expand(FIELDS, compact(FIELDS, full)) == full


def test_expand_value():
    assert expand_value(FIELDS, b'{"1":72.5,"3":"a"}') == {"temperature": 72.5, "sensor_id": "a"}
    assert expand_value(FIELDS, b'{"x":1}') == {"x": 1}  # push path falls back to the raw value
    assert expand_value(FIELDS, b'{"x":1}', strict=True) is None  # REST aggregation skips it
    assert expand_value(FIELDS, b"not json") is None
    assert expand_value(None, b'{"1":2}') == {"1": 2}


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("30s", 30 * S),
        ("15m", 15 * MIN),
        ("2h", 2 * H),
        ("1h30m", 90 * MIN),
        ("2h45m", 165 * MIN),
        ("300ms", 300_000_000),
        ("1.5h", 90 * MIN),
        ("7ns", 7),
        ("3us", 3000),
        ("3\u00b5s", 3000),
        ("3\u03bcs", 3000),
        ("1.s", S),
        ("0", 0),
        ("-0", 0),
        ("+5m", 5 * MIN),
        ("-1h", -H),
        ("1.5d", 36 * H),
        ("7d", 7 * D),
        ("2w", 14 * D),
        (".5d", 12 * H),
        ("3.d", 3 * D),
        ("-1.5d", -36 * H),
        (" 2w ", 14 * D),
        ("\t2d\n", 2 * D),
        ("1_000d", 1000 * D),
        ("1e3d", 1000 * D),
        ("0x1p4d", 16 * D),
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
        ("2562047h", 2562047 * H),
        ("0.1234567890123456789012345h", 444444440444),
        # Go converts an out-of-range float64 to MinInt64 (amd64)
        ("1e10d", -(2**63)),
        ("infd", -(2**63)),
        ("nand", -(2**63)),
    ],
)
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("abc", 'time: invalid duration "abc"'),
        ("xd", "invalid duration: xd"),
        ("d", "invalid duration: d"),
        ("w", "invalid duration: w"),
        ("1h2d", "invalid duration: 1h2d"),
        ("1e400d", "invalid duration: 1e400d"),
        ("1_5h", 'time: unknown unit "_" in duration "1_5h"'),
        ("_1d", "invalid duration: _1d"),
        ("1__0d", "invalid duration: 1__0d"),
        ("+nand", "invalid duration: +nand"),
        ("", "empty duration string"),
        ("   ", "empty duration string"),
        ("1", 'time: missing unit in duration "1"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("1h 30m", 'time: unknown unit "h " in duration "1h 30m"'),
        ("1\u00b5", 'time: unknown unit "\\xc2\\xb5" in duration "1\\xc2\\xb5"'),
        ("\u00b5s", 'time: invalid duration "\\xc2\\xb5s"'),
        (".s", 'time: invalid duration ".s"'),
        ("+", 'time: invalid duration "+"'),
        ("1..5h", 'time: missing unit in duration "1..5h"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("2562048h", 'time: invalid duration "2562048h"'),
    ],
)
def test_parse_duration_errors(text, msg):
    assert _err(parse_duration, text, exc=DurationError) == msg


def test_duration_error_prefix_usage():
    with pytest.raises(DurationError) as info:
        parse_duration("abc")
    assert f"invalid since duration: {info.value}" == (
        'invalid since duration: time: invalid duration "abc"'
    )
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- aggregation


def test_parse_spec_none_and_defaults():
    assert parse_spec("", "temp:avg", "avg") is None
    spec = parse_spec("1m", "", "")
    assert spec == AggSpec(window_ns=MIN)
    assert spec.funcs_for("x", True) == ("last",)
    spec = parse_spec("1m", "temp:avg+min+max, events:sum ,", " avg , sum")
    assert spec.fields == (("temp", ("avg", "min", "max")), ("events", ("sum",)))
    assert spec.defaults == ("avg", "sum")
    assert spec.funcs_for("temp", False) == ("avg", "min", "max")
    assert spec.funcs_for("other", True) == ("avg", "sum")
    assert spec.funcs_for("other", False) == ("last",)
    assert parse_spec("1m", "t:max,t:min").funcs_for("t", True) == ("min",)  # last one wins
    assert AGG_FUNCS == {"sum", "avg", "max", "min", "count", "last"}


@pytest.mark.parametrize(
    ("window", "fields", "default", "msg"),
    [
        ("abc", "", "", 'invalid agg_window: time: invalid duration "abc"'),
        ("xd", "", "", "invalid agg_window: invalid duration: xd"),
        (" ", "", "", "invalid agg_window: empty duration string"),
        ("1m", "bad", "", 'invalid agg_fields: invalid field aggregation: "bad" (expected '
                          'field:function)'),
        ("1m", "temp:bogus", "", 'invalid agg_fields: invalid aggregation function "bogus" for '
                                 'field "temp"'),
        ("1m", "temp:", "", 'invalid agg_fields: invalid aggregation function "" for field '
                            '"temp"'),
        ("1m", "temp:avg+", "", 'invalid agg_fields: invalid aggregation function "" for field '
                                '"temp"'),
        ("1m", "", "bogus", "invalid default aggregation function: bogus"),
        ("1m", "", "avg,", "invalid default aggregation function: "),
        ("0s", "", "avg", "aggregation window must be positive"),
        ("-1m", "", "", "aggregation window must be positive"),
        # the reference checks fields before the window's sign, the sign before defaults
        ("0s", "bad", "", 'invalid agg_fields: invalid field aggregation: "bad" (expected '
                          'field:function)'),
        ("0s", "", "bogus", "aggregation window must be positive"),
    ],
)
def test_parse_spec_errors(window, fields, default, msg):
    assert _err(parse_spec, window, fields, default, exc=AggregationError) == msg


def test_aggregate_alignment_and_partial_last_window():
    spec = parse_spec("1m", "", "sum")
    records = [
        (MIN + 1, {"v": 10}),
        (MIN + 2, {"v": 20}),
        (2 * MIN, {"v": 5}),
        (2 * MIN + 7, {"v": 1}),
    ]
    assert aggregate(records, spec) == [(2 * MIN, {"v": 30.0}), (3 * MIN, {"v": None})]
    assert aggregate(records, spec, final_partial=False) == [
        (2 * MIN, {"v": 30.0}),
        (3 * MIN, {"v": 6.0}),
    ]
    # a gap of several windows emits nothing for the empty ones
    out = aggregate([(5, {"v": 1}), (10 * MIN + 5, {"v": 2})], spec, final_partial=False)
    assert out == [(MIN, {"v": 1.0}), (11 * MIN, {"v": 2.0})]


def test_aggregate_multiple_functions_suffixes():
    spec = parse_spec("1m", "temp:avg+min+max,events:sum", "avg")
    records = [
        (MIN + 1, {"temp": 10, "events": 1, "name": "a"}),
        (MIN + 2, {"temp": 20, "events": 2, "name": "b"}),
        (2 * MIN, {"temp": 5, "events": 3}),
    ]
    out = aggregate(records, spec)
    assert out == [
        (2 * MIN, {"temp_avg": 15.0, "temp_min": 10.0, "temp_max": 20.0, "events": 3.0,
                   "name": "b"}),
        (3 * MIN, {"temp_avg": 5.0, "temp_min": 5.0, "temp_max": 5.0, "events": None}),
    ]
    assert go_marshal(out[0][1]) == (
        b'{"events":3,"name":"b","temp_avg":15,"temp_max":20,"temp_min":10}'
    )


def test_aggregate_default_functions_and_partial_sum():
    spec = parse_spec("10s", "", "avg,sum,min,max,count,last")
    out = aggregate([(1, {"x": 1}), (2, {"x": 4})], spec)
    assert out == [(10 * S, {"x_avg": 2.5, "x_sum": None, "x_min": 1.0, "x_max": 4.0,
                             "x_count": 2, "x_last": 4})]


def test_aggregate_count_and_last_on_strings():
    spec = parse_spec("1m", "name:count+last,flag:count", "avg")
    records = [(1, {"name": "a", "flag": True, "n": 2}), (2, {"name": "b", "flag": False, "n": 4})]
    out = aggregate(records, spec)
    assert out == [(MIN, {"name_count": 2, "name_last": "b", "flag": 2, "n": 3.0})]
    # non-numeric fields without explicit functions use last
    out = aggregate([(1, {"s": "x", "b": True, "z": None}), (2, {"s": "y"})], spec)
    assert out == [(MIN, {"s": "y", "b": True, "z": None})]


def test_aggregate_numeric_from_schema():
    spec = parse_spec("1m", "", "max")
    records = [(1, {"t": "hot", "u": 3}), (2, {"t": 5, "u": 4})]
    # sniffing: "t" is first seen as a string, so it is not numeric in this window
    assert aggregate(records, spec) == [(MIN, {"t": 5, "u": 4.0})]
    # a schema says "t" is numeric; the string value counts but has no numeric effect
    out = aggregate(records, spec, numeric={"t", "u"})
    assert out == [(MIN, {"t": 5.0, "u": 4.0})]
    # set semantics: names not in the set are not numeric
    assert aggregate(records, spec, numeric={"t"}) == [(MIN, {"t": 5.0, "u": 4})]
    # mapping semantics (Go's numeric map): unknown names are sniffed
    assert aggregate(records, spec, numeric={"t": True}) == [(MIN, {"t": 5.0, "u": 4.0})]
    assert aggregate(records, spec, numeric={"u": False}) == [(MIN, {"t": 5, "u": 4})]


def test_aggregate_reference_quirks():
    spec = parse_spec("1m", "t:avg+max+min", "")
    out = aggregate([(1, {"t": "a"}), (2, {"t": "b"})], spec, numeric={"t"})
    # no numeric value: avg is 0/2, max/min keep Go's initial -MaxFloat64/MaxFloat64
    assert out == [(MIN, {"t_avg": 0.0, "t_max": -sys.float_info.max, "t_min": sys.float_info.max})]
    assert go_marshal(out[0][1]) == (
        b'{"t_avg":0,"t_max":-1.7976931348623157e+308,"t_min":1.7976931348623157e+308}'
    )
    # avg divides by every value counted, numeric or not
    out = aggregate([(1, {"t": 6}), (2, {"t": "x"})], parse_spec("1m", "t:avg"), numeric={"t"})
    assert out == [(MIN, {"t": 3.0})]


def test_aggregate_descending_input_merges_into_one_window():
    spec = parse_spec("1m", "", "count")
    records = [(5 * MIN + 1, {"v": 1}), (3 * MIN, {"v": 1}), (MIN, {"v": 1})]
    assert aggregate(records, spec) == [(6 * MIN, {"v": 3})]


def test_aggregate_skips_non_objects_and_handles_empty():
    spec = parse_spec("1m", "", "sum")
    assert aggregate([], spec) == []
    records = [(1, [1]), (2, "x"), (3, None), (4, 5), (MIN + 1, {"v": 1})]
    assert aggregate(records, spec) == [(2 * MIN, {"v": None})]
    # empty objects still count as records and shape windows
    assert aggregate([(1, {}), (MIN + 1, {"v": 2})], spec, final_partial=False) == [
        (MIN, {}),
        (2 * MIN, {"v": 2.0}),
    ]


def test_aggregate_window_alignment_is_epoch_based():
    spec = parse_spec("1h", "", "count")
    t0 = 1_700_000_123 * S
    start = t0 - t0 % H
    out = aggregate([(t0, {"v": 1}), (start + H - 1, {"v": 1}), (start + H, {"v": 1})], spec)
    assert out == [(start + H, {"v": 2}), (start + 2 * H, {"v": 1})]


def test_window_aggregator_stream():
    agg = WindowAggregator(parse_spec("1m", "v:sum+count", ""))
    assert agg.flush() == []
    assert agg.add(MIN + 1, {"v": 1}) == []
    assert agg.add(MIN + 2, {"v": 2}) == []
    assert agg.pending == 2
    assert agg.add(2 * MIN + 3, {"v": 4}) == [(2 * MIN, {"v_sum": 3.0, "v_count": 2})]
    # timer tick: partial, sum null
    assert agg.flush() == [(3 * MIN, {"v_sum": None, "v_count": 1})]
    assert agg.flush() == []
    # after a flush the next record opens a fresh window, even the same one
    assert agg.add(2 * MIN + 9, {"v": 8}) == []
    assert agg.flush(partial=False) == [(3 * MIN, {"v_sum": 8.0, "v_count": 1})]
    assert agg.add(7, "not an object") == []
    assert agg.pending == 0


def test_window_aggregator_functions_chosen_per_window():
    agg = WindowAggregator(parse_spec("1m", "", "max"))
    agg.add(1, {"t": "s"})
    agg.add(2, {"t": 9})
    assert agg.flush() == [(MIN, {"t": 9})]  # first value was a string: last
    agg.add(MIN + 1, {"t": 9})
    agg.add(MIN + 2, {"t": "s"})
    assert agg.flush() == [(2 * MIN, {"t": 9.0})]  # first value numeric: max


def test_aggregate_then_marshal_inf_sum():
    spec = parse_spec("1m", "", "sum")
    out = aggregate([(1, {"v": 1e308}), (2, {"v": 1e308}), (MIN, {"v": 1})], spec)
    assert out[0] == (MIN, {"v": math.inf})
    with pytest.raises(GoJSONError):
        go_marshal(out[0][1])  # Go's Marshal fails the same way
