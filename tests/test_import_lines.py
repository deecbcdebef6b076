"""Export lines read back (`tsnet.import_lines`, ts-store's `restore`): pure
functions, each the inverse of the export line it reads."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.export import message_line, meta_line, property_line, record_line, series_line
from tsnet.export_text import line_text
from tsnet.import_lines import (
    LineError,
    meta_to_write,
    parse_message,
    parse_meta,
    parse_property,
    parse_series,
    same_value,
)
from tsnet.model import Message, Meta, Property, Record
from tsnet.protocols.tsstore.restore import _short_float, record_bytes, store_attributes

T = 1_704_067_200_000_000_000
KEY = ("cpu", "srv1", (("a", "1"), ("b", "2")))


@pytest.mark.parametrize("value,text", [(1, None), (2.5, None), (math.nan, None),
                                        (math.inf, "t"), (None, "only text"), (-0.0, "")])
def test_a_series_line_reads_back_as_its_sample(value: object, text: str | None) -> None:
    line = json.loads(line_text(series_line("s", KEY, T, value, text)))
    key, t, v, x = parse_series(line)
    assert (key, t, x) == (KEY, T, text)
    assert v is None if value is None else same_value(v, value)


@pytest.mark.parametrize("line,message", [
    ({"metric": "m", "tags": {}, "time_ms": 1}, "a series line needs a 'value' or a 'text'"),
    ({"metric": "m", "tags": {}, "time_ms": 1, "value": True}, "'value' must be a number"),
    ({"metric": "m", "tags": {}, "time_ms": 1, "value": 2**63}, "'value' 9223372036854775808 "
                                                                  "is outside int64"),
    ({"metric": "m", "tags": {}, "time_ms": 1.5, "value": 1}, "'time_ms' must be an integer"),
    ({"metric": "m", "tags": {}, "time_ms": 2**63 // 10**6 + 1, "value": 1}, "out of range"),
    ({"metric": "", "tags": {}, "time_ms": 1, "value": 1}, "'metric' is empty"),
    ({"metric": "m", "tags": [], "time_ms": 1, "value": 1}, "'tags' must be a dict"),
    ({"metric": "m", "tags": {"a": None}, "time_ms": 1, "value": 1}, "is not a str tag"),
    ({"metric": "m", "tags": {}, "time_ms": 1, "value": 1, "host": "x"}, "unknown key 'host'"),
])
def test_a_bad_series_line_says_what_is_wrong(line: dict, message: str) -> None:
    with pytest.raises(LineError, match=None) as e:
        parse_series({"kind": "series", "solution": "s", **line})
    assert message in str(e.value)


def test_property_message_and_meta_lines_read_back() -> None:
    prop = Property("e", "disk", {"mount": "/"}, {"fs": "ext4"}, T)
    assert parse_property(json.loads(line_text(property_line("s", prop)))) == prop
    msg = Message("e", T, "text", "security", None, "WARNING", {"k": "v"})
    assert parse_message(json.loads(line_text(message_line("s", msg)))) == msg
    bare = Message("e", T)
    assert parse_message(json.loads(line_text(message_line("s", bare)))) == bare
    meta = Meta("metric", "cpu", {"label": "CPU", "max_value": math.nan, "enabled": False})
    got = parse_meta(json.loads(line_text(meta_line("s", meta))))
    assert got.kind == "metric" and got.name == "cpu"
    assert math.isnan(got.fields.pop("max_value"))
    assert got.fields == {"data_type": "float", "enabled": False, "label": "CPU"}


def test_meta_defaults_the_export_filled_in_are_not_written() -> None:
    implicit = parse_meta(json.loads(line_text(meta_line("s", Meta("entity", "e", {})))))
    assert implicit.fields == {"enabled": True, "tags": {}}
    assert meta_to_write(implicit, None) == {}  # stays implicit
    assert meta_to_write(implicit, {"enabled": False}) == {"enabled": True}
    labelled = Meta("metric", "m", {"data_type": "float", "enabled": True, "label": "L"})
    assert meta_to_write(labelled, {}) == {"label": "L"}
    assert meta_to_write(labelled, {"data_type": "long"}) == {"data_type": "float", "label": "L"}


def test_same_value_tells_apart_what_the_export_does() -> None:
    assert same_value(1, 1) and same_value(math.nan, math.nan) and same_value(None, None)
    assert not same_value(1, 1.0) and not same_value(0.0, 1.0) and not same_value(None, 0)


def test_store_lines_are_checked_as_a_store_creation_is() -> None:
    line = {"kind": "store", "solution": "s", "type": "json", "num_blocks": 8,
            "data_block_size": 256, "index_block_size": 4096}
    assert store_attributes(line) == {"type": "json", "num_blocks": 8,
                                      "data_block_size": 256, "index_block_size": 4096}
    for bad, message in (({"type": "xml"}, "'type' must be one of"),
                         ({"num_blocks": 0}, "'num_blocks' 0 is out of range"),
                         ({"data_block_size": 100}, "must be a power of 2"),
                         ({"schema": {"schemas": "x"}}, "'schema'"),
                         ({"connections": {}}, "'connections' must be a list"),
                         ({"owner": "me"}, "unknown key 'owner'")):
        with pytest.raises(LineError) as e:
            store_attributes({**line, **bad})
        assert message in str(e.value)


def _line(data: bytes, data_type: str) -> dict:
    return json.loads(line_text(record_line("s", Record(T, data, data_type))))


@pytest.mark.parametrize("data", [
    b'{"temp":21.5,"site":"a"}', b'{"temp": 21.5, "site": "a"}', b'{"b":1e-7,"a":[1,2]}',
    b'{ "odd" :  1e5 ,"x":1}', b'{"s":"\\u00e9\\n"}', b'"just a string"', b'[1, 2.50]',
    b"not json at all", b'{"big":123456789012345678901234567890}', b"  {}  "])
def test_json_records_come_back_as_their_line(data: bytes) -> None:
    line = _line(data, "json")
    raw, exact = record_bytes("s", line, "json")
    assert exact
    assert line_text(record_line("s", Record(T, raw, "json"))) == line_text(line)
    if data in (b'{"temp":21.5,"site":"a"}', b'{"temp": 21.5, "site": "a"}'):
        assert raw == data  # the usual encodings come back as they were


def test_text_and_binary_records_come_back_as_their_bytes() -> None:
    for data, kind in ((b"plain", "text"), ("ünï ✓".encode(), "text"),
                       (b"\x00\xff binary", "binary"), (b"ok", "binary")):
        assert record_bytes("s", _line(data, kind), kind) == (data, True)
    raw, exact = record_bytes("s", _line(b"bad \xff utf-8", "text"), "text")
    assert not exact and raw == "bad \ufffd utf-8".encode()  # (the export replaced it)
    with pytest.raises(LineError, match="not base64"):
        record_bytes("s", {**_line(b"\x00\xff", "binary"), "data": "%%%"}, "binary")
    with pytest.raises(LineError, match="'encoding'"):
        record_bytes("s", {**_line(b"\x00\xff", "binary")}, "json")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c,
                                                                        max_size=3),
                    max_leaves=8),
       st.sampled_from([{}, {"separators": (" , ", " : ")}, {"indent": 1}]))
def test_any_json_layout_comes_back_as_its_line(value: object, layout: dict) -> None:
    data = json.dumps(value, **layout).encode()
    line = _line(data, "json")
    raw, exact = record_bytes("s", line, "json")
    assert exact and len(raw) == len(data)


def test_short_floats_read_back_as_the_same_float() -> None:
    rng = random.Random(7)
    for _ in range(20000):
        v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(v):
            text = _short_float(v)
            assert float(text) == v and len(text) <= len(repr(v))
            assert isinstance(json.loads(text), float)
    assert [_short_float(v) for v in (100000.0, 1e-7, 0.001, 72.5, 10.0, 1.0)] == [
        "1e5", "1e-7", "1e-3", "72.5", "1e1", "1.0"]


def test_lines_too_long_are_skipped_whole() -> None:
    import io

    from tsnet.importer import read_lines

    source = io.BytesIO(b"short\n" + b"x" * 25 + b"\nafter\nlast")
    assert list(read_lines(source, max_line=10)) == [(1, b"short\n"), (2, None),
                                                     (3, b"after\n"), (4, b"last")]


def test_decode_is_exact_where_orjson_is_not() -> None:
    from tsnet.importer import decode

    big = b'{"kind":"series","value":123456789012345678901234567890}'
    assert decode(big)["value"] == 123456789012345678901234567890  # an int, refused later
    record = b'{"kind":"record","data":{"n":123456789012345678901234567890}}'
    assert decode(record)["data"]["n"] == 123456789012345678901234567890
    assert decode(b'{"kind":"series","value":1.5}')["value"] == 1.5
    with pytest.raises(ValueError, match="NaN is not JSON"):
        decode(b'{"kind":"series","value":NaN}')
    with pytest.raises(ValueError):
        decode(b'{"kind":')
