"""InfluxDB line protocol: InfluxDB 1.x's results and error texts, and tsnet's mapping.

The GOOD / BAD tables are the cases of InfluxDB's models/points_test.go (plus a few
more), each with the result or error InfluxDB 1.11's parser gives for it.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb.line_protocol import make_lines

from tsnet.plugin import INT64_MAX, INT64_MIN
from tsnet_lineproto.influx_parse import (
    MAX_NANO_TIME,
    MIN_NANO_TIME,
    InfluxPoint,
    _parse_fast,
    _parse_point,
    parse_body,
    precision_multiplier,
    to_samples,
)

NOW = 946_730_096_789_012_345  # 2000-01-01T12:34:56.789012345Z, as points_test.go


def parse(text: str, precision: str = "", now: int = NOW):
    return parse_body(text.encode(), precision, now)


GOOD = [
    # line, measurement, tags, fields, time_ns (NOW when the line has none)
    (r"foo\,bar value=1i", "foo,bar", {}, {"value": 1}, NOW),
    (r"cpu\,main,regions=east value=1.0", "cpu,main", {"regions": "east"}, {"value": 1.0}, NOW),
    (r"cpu\ load,region=east value=1.0", "cpu load", {"region": "east"}, {"value": 1.0}, NOW),
    (r"cpu\=load,region=east value=1.0", "cpu=load", {"region": "east"}, {"value": 1.0}, NOW),
    ("cpu=load,region=east value=1.0", "cpu=load", {"region": "east"}, {"value": 1.0}, NOW),
    (r"cpu,region\,zone=east value=1.0", "cpu", {"region,zone": "east"}, {"value": 1.0}, NOW),
    (r"cpu,region\ zone=east value=1.0", "cpu", {"region zone": "east"}, {"value": 1.0}, NOW),
    (r"cpu,reg\\=ion=east value=1.0", "cpu", {"reg\\=ion": "east"}, {"value": 1.0}, NOW),
    (r"cpu,\ =east value=1.0", "cpu", {" ": "east"}, {"value": 1.0}, NOW),
    (r"cpu,regions=east\,west value=1.0", "cpu", {"regions": "east,west"}, {"value": 1.0}, NOW),
    (r"cpu,regions=\\ east value=1.0", "cpu", {"regions": "\\ east"}, {"value": 1.0}, NOW),
    (r"cpu,regions=eas\\ t value=1.0", "cpu", {"regions": "eas\\ t"}, {"value": 1.0}, NOW),
    (r"cpu,regions=east\\  value=1.0", "cpu", {"regions": "east\\ "}, {"value": 1.0}, NOW),
    (r"cpu,regions=east\ west value=1.0", "cpu", {"regions": "east west"}, {"value": 1.0}, NOW),
    (r"cpu,regions=east value\,ms=1.0", "cpu", {"regions": "east"}, {"value,ms": 1.0}, NOW),
    (r"cpu,regions=east value\ ms=1.0", "cpu", {"regions": "east"}, {"value ms": 1.0}, NOW),
    ('cpu,regions=east value="1,0"', "cpu", {"regions": "east"}, {"value": "1,0"}, NOW),
    (r"cpu,regions=eas\t value=1.0", "cpu", {"regions": "eas\\t"}, {"value": 1.0}, NOW),
    (r"cpu,regions=\\,\,\=east value=1.0", "cpu", {"regions": "\\,,=east"}, {"value": 1.0}, NOW),
    (r"cpu \a=1i", "cpu", {}, {"\\a": 1}, NOW),
    (
        r"cpu=load,equals\=foo=tag\=value value=1i",
        "cpu=load",
        {"equals=foo": "tag=value"},
        {"value": 1},
        NOW,
    ),
    (
        'cpu,host=serverA,region=us-east value=1.0,str="foo bar" 1000000000',
        "cpu",
        {"host": "serverA", "region": "us-east"},
        {"value": 1.0, "str": "foo bar"},
        1_000_000_000,
    ),
    (r'cpu value=1.0,str="foo\,bar" 1', "cpu", {}, {"value": 1.0, "str": "foo\\,bar"}, 1),
    (r'cpu str="foo\\",str2="bar" 1', "cpu", {}, {"str": "foo\\", "str2": "bar"}, 1),
    ('"cpu",host=serverA value=1.0 1', '"cpu"', {"host": "serverA"}, {"value": 1.0}, 1),
    ('cpu,"host"="serverA" value=1.0 1', "cpu", {'"host"': '"serverA"'}, {"value": 1.0}, 1),
    (r'cpu value="{Hello\"{,}\" World}" 1', "cpu", {}, {"value": '{Hello"{,}" World}'}, 1),
    (r'cpu value="{Hello\"{\,}\" World}" 1', "cpu", {}, {"value": '{Hello"{\\,}" World}'}, 1),
    ('cpu str="foo=bar",value=1.0 1', "cpu", {}, {"str": "foo=bar", "value": 1.0}, 1),
    (r'cpu value="test\\\"" 1', "cpu", {}, {"value": 'test\\"'}, 1),
    (r'cpu value="test\\" 1', "cpu", {}, {"value": "test\\"}, 1),
    (r'cpu value="test\"" 1', "cpu", {}, {"value": 'test"'}, 1),
    (r'm s="a\nb\\c\"d"', "m", {}, {"s": 'a\\nb\\c"d'}, NOW),  # only \" and \\ are escapes
    (
        "cpu true=true,t=t,T=T,TRUE=TRUE,True=True,false=false,f=f,F=F,FALSE=FALSE,False=False",
        "cpu",
        {},
        {
            **dict.fromkeys(["true", "t", "T", "TRUE", "True"], True),
            **dict.fromkeys(["false", "f", "F", "FALSE", "False"], False),
        },
        NOW,
    ),
    ('cpu value="wè" 1', "cpu", {}, {"value": "wè"}, 1),
    ("cpu value=1 -1", "cpu", {}, {"value": 1.0}, -1),
    (f"cpu value=1 {MAX_NANO_TIME}", "cpu", {}, {"value": 1.0}, MAX_NANO_TIME),
    (f"cpu value=1 {MIN_NANO_TIME}", "cpu", {}, {"value": 1.0}, MIN_NANO_TIME),
    ("cpu value=-9223372036854775808i", "cpu", {}, {"value": INT64_MIN}, NOW),
    ("cpu value=-0009223372036854775808i", "cpu", {}, {"value": INT64_MIN}, NOW),
    ("cpu value=9223372036854775807i", "cpu", {}, {"value": INT64_MAX}, NOW),
    ("cpu value=1.0e4", "cpu", {}, {"value": 10000.0}, NOW),
    ("cpu value=1E4", "cpu", {}, {"value": 10000.0}, NOW),
    ("cpu value=-1.0e-4", "cpu", {}, {"value": -0.0001}, NOW),
    ("cpu value=.5", "cpu", {}, {"value": 0.5}, NOW),
    ("cpu value=5.", "cpu", {}, {"value": 5.0}, NOW),
    ("cpu value=1.e5", "cpu", {}, {"value": 100000.0}, NOW),
    ("cpu value=1e-400", "cpu", {}, {"value": 0.0}, NOW),  # underflow is not an error
    ("cpu value=0u", "cpu", {}, {"value": 0}, NOW),
    ("cpu value=0000u", "cpu", {}, {"value": 0}, NOW),
    ("cpu value=9223372036854775807u", "cpu", {}, {"value": INT64_MAX}, NOW),
    ("cpu,last=1,first=2 value=1i", "cpu", {"first": "2", "last": "1"}, {"value": 1}, NOW),
    ('cpu "a=1', "cpu", {}, {'"a': 1.0}, NOW),
    ("cpu    value=1.0 1257894000000000000", "cpu", {}, {"value": 1.0}, 1257894000000000000),
    ("cpu value=1.0     1257894000000000000", "cpu", {}, {"value": 1.0}, 1257894000000000000),
    ("cpu value=1.0 1257894000000000000   ", "cpu", {}, {"value": 1.0}, 1257894000000000000),
    ("cpu value=1,value=2i", "cpu", {}, {"value": 2}, NOW),  # the last one wins
    ('m a="x"y', "m", {}, {"a": 'x"'}, NOW),  # InfluxDB's quirk: the value is text[1:-1]
    ("m\x00 a=1", "m\x00", {}, {"a": 1.0}, NOW),
]

BAD = [
    # line, InfluxDB's reason
    ("cpu_load_short,host=server01,region=us-west", "missing fields"),
    ("cpu", "missing fields"),
    ("cpu,host==", "missing fields"),
    ("=", "missing fields"),
    (",cpu value=1", "missing measurement"),
    ('cpu,host=serverA value="test', "unbalanced quotes"),
    ('cpu,host=serverA value="test""', "unbalanced quotes"),
    ("cpu, value=1", "missing tag key"),
    ("cpu,", "missing tag key"),
    ("cpu,,,", "missing tag key"),
    ("cpu,host=serverA,=us-east value=1i", "missing tag key"),
    (r"cpu,host=serverAa\,,=us-east value=1i", "missing tag key"),
    ("cpu, =serverA value=1i", "missing tag key"),
    ("cpu,host", "missing tag value"),
    ("cpu,host,", "missing tag value"),
    ("cpu,host=", "missing tag value"),
    ("cpu,host value=1i", "missing tag value"),
    ("cpu,host=serverA,region value=1i", "missing tag value"),
    ("cpu,host=serverA,region= value=1i", "missing tag value"),
    ("cpu,host=serverA,region=,zone=us-west value=1i", "missing tag value"),
    ("cpu,host=f=o,", "invalid tag format"),
    (r"cpu,host=f\==o,", "invalid tag format"),
    ("cpu,host=serverA,host=serverB value=1i 1000000000", "duplicate tags"),
    ("cpu,b=2,b=1,c=3 value=1i 1000000000", "duplicate tags"),
    ("cpu,b=2,c=3,b=1 value=1i 1000000000", "duplicate tags"),
    ("cpu,host=serverA,region=us-west =", "missing field key"),
    ("cpu,host=serverA,region=us-west =123i", "missing field key"),
    ("cpu,host=serverA,region=us-west value=123i,=456i", "missing field key"),
    ("cpu,host=serverA,region=us-west value=", "missing field value"),
    ("cpu,host=serverA,region=us-west value= 1000000000i", "missing field value"),
    ("cpu,host=serverA,region=us-west value=,value2=1i", "missing field value"),
    ("cpu v= ", "missing field value"),
    ("cpu,host=server01,region=us-west 1434055562000000000i", "invalid field format"),
    ("cpu,host=server01,region=us-west value=1i,b", "invalid field format"),
    ("cpu ", "invalid field format"),
    (r'cpu "\, ' + "'= " + r'"\ v=1.0', "invalid field format"),
    ('m f="blah"=123,r 1531703600000000000', "invalid value: field-key=r"),
    ("cpu v=- ", "invalid number"),
    ("cpu v=-i ", "invalid number"),
    ("cpu v=-. ", "invalid number"),
    ("cpu v=. ", "invalid number"),
    ("cpu v=1.0i ", "invalid number"),
    ("cpu v=1ii ", "invalid number"),
    ("cpu v=1a ", "invalid number"),
    ("cpu v=42+3 ", "invalid number"),
    ("cpu v=-123u", "invalid number"),
    ("cpu value=.1a", "invalid number"),
    ("cpu value=0.-1", "invalid number"),
    ("cpu value=-", "invalid number"),
    ("cpu value=1.1.1", "invalid number"),
    ("cpu value=9ie10", "invalid number"),
    ("cpu value=9e10i", "invalid number"),
    ("cpu value=NaN 1000000000", "invalid number"),
    ("cpu value=nAn 1000000000", "invalid number"),
    ("cpu value=NaN", "invalid number"),
    ("cpu value=1\t", "invalid number"),
    ("cpu v=-e-e-e ", "invalid float"),
    ("cpu value=1e400", "invalid float"),
    (
        "cpu value=9223372036854775808i",
        "unable to parse integer 9223372036854775808: strconv.ParseInt: parsing "
        '"9223372036854775808": value out of range',
    ),
    (
        "cpu value=-9223372036854775809i",
        "unable to parse integer -9223372036854775809: strconv.ParseInt: parsing "
        '"-9223372036854775809": value out of range',
    ),
    (
        "cpu value=18446744073709551616u",
        "unable to parse unsigned 18446744073709551616: strconv.ParseUint: parsing "
        '"18446744073709551616": value out of range',
    ),
    ("cpu value=a", "invalid boolean"),
    ("cpu value=tru", "invalid boolean"),
    ("cpu value=truE", "invalid boolean"),
    ("cpu value=+1", "invalid boolean"),
    ("a v=1 0\\", "bad timestamp"),
    ("cpu value=1 -/", "bad timestamp"),
    ("cpu value=1 -1?", "bad timestamp"),
    ("cpu value=1 1-", "bad timestamp"),
    ("cpu value=1 12\t", "bad timestamp"),
    ("cpu value=1 12 x", "point is invalid"),
    (
        "cpu value=1 9223372036854775808",
        'strconv.ParseInt: parsing "9223372036854775808": value out of range',
    ),
    (
        "cpu value=1 -92233720368547758078",
        'strconv.ParseInt: parsing "-92233720368547758078": value out of range',
    ),
    ("cpu value=1 -", 'strconv.ParseInt: parsing "-": invalid syntax'),
    (
        "cpu value=1 9223372036854775807",
        "time outside range -9223372036854775806 - 9223372036854775806",
    ),
    (
        "cpu value=1 -9223372036854775807",
        "time outside range -9223372036854775806 - 9223372036854775806",
    ),
    (
        "cpu value=1 9223372036854775807 12",
        "time outside range -9223372036854775806 - 9223372036854775806",
    ),
    ("m" * 65536 + " v=1", "max key length exceeded: 65536 > 65535"),
    ("é" * 32768 + " v=1", "max key length exceeded: 65536 > 65535"),  # bytes, not chars
    ("m" * 65535 + " v=1", "max key length exceeded: 65540 > 65535"),  # + 4 + field key
    ("m" * 65000 + " " + "f" * 532 + "=1", "max key length exceeded: 65536 > 65535"),
    # tsnet: unsigned beyond int64 cannot be stored exactly
    (
        "cpu value=9223372036854775808u",
        "unable to parse unsigned 9223372036854775808: value out of int64 range",
    ),
]


@pytest.mark.parametrize(("line", "measurement", "tags", "fields", "time_ns"), GOOD)
def test_good_lines(line, measurement, tags, fields, time_ns):
    points, errors = parse(line)
    assert errors == []
    assert points == [InfluxPoint(measurement, tags, fields, time_ns)]
    # and the types InfluxDB gives them (1 == 1.0 == True in Python)
    assert [type(v) for v in points[0].fields.values()] == [type(v) for v in fields.values()]


@pytest.mark.parametrize(("line", "reason"), BAD)
def test_bad_lines(line, reason):
    assert parse(line) == ([], [f"unable to parse '{line}': {reason}"])


def test_key_length_limit_is_inclusive():
    points, errors = parse("m" * 65000 + " " + "f" * 531 + "=1")
    assert errors == [] and len(points) == 1


BODIES = [
    # body, points as (measurement, tags, fields, time), errors
    (
        'cpu,host=serverA value=1.0,str="foo\nbar" 1000000000',
        [("cpu", {"host": "serverA"}, {"value": 1.0, "str": "foo\nbar"}, 1_000_000_000)],
        [],
    ),
    (  # a quote in a tag value is a plain character and does not swallow the next line
        'baz,mytag="a x=1 1441103862125\nbaz,mytag=a z=1 1441103862126',
        [
            ("baz", {"mytag": '"a'}, {"x": 1.0}, 1441103862125),
            ("baz", {"mytag": "a"}, {"z": 1.0}, 1441103862126),
        ],
        [],
    ),
    (
        'cpu "a=1\ncpu value=2 1',
        [("cpu", {}, {'"a': 1.0}, NOW), ("cpu", {}, {"value": 2.0}, 1)],
        [],
    ),
    (
        't159,label=hey\\ "ya a=1i,value=0i\nt159,label=another a=2i,value=1i 1',
        [
            ("t159", {"label": 'hey "ya'}, {"a": 1, "value": 0}, NOW),
            ("t159", {"label": "another"}, {"a": 2, "value": 1}, 1),
        ],
        [],
    ),
    (
        "cpu value=1i 1000000000\n\ncpu value=2i 2000000000\n",
        [("cpu", {}, {"value": 1}, 1_000_000_000), ("cpu", {}, {"value": 2}, 2_000_000_000)],
        [],
    ),
    ("# comment only", [], []),
    ("\t# a point is below\ncpu value=1 5\n   \n# end", [("cpu", {}, {"value": 1.0}, 5)], []),
    ("\x00" * 10 + "cpu value=1 1\n", [("cpu", {}, {"value": 1.0}, 1)], []),
    ("  \t cpu value=1 1", [("cpu", {}, {"value": 1.0}, 1)], []),
    # a backslash before a newline escapes it (scanLine skips two bytes)
    ("m v=1\\\nm v=2", [], ["unable to parse 'm v=1\\\nm v=2': invalid number"]),
    # ... except at the very end of the body
    ("m v=1 1\\\n", [], ["unable to parse 'm v=1 1\\': bad timestamp"]),
    # an unbalanced quote in a field value runs to the end of the body
    ('m s="x\nm v=1\nm v=2', [], ["unable to parse 'm s=\"x\nm v=1\nm v=2': unbalanced quotes"]),
    # tsnet: CRLF line ends are tolerated
    (
        "cpu v=1 1\r\ncpu v=2\r\n\r\n",
        [("cpu", {}, {"v": 1.0}, 1), ("cpu", {}, {"v": 2.0}, NOW)],
        [],
    ),
]


@pytest.mark.parametrize(("body", "points", "errors"), BODIES)
def test_bodies(body, points, errors):
    got_points, got_errors = parse(body)
    assert [tuple(p) for p in got_points] == points
    assert got_errors == errors


def test_bad_line_costs_only_itself():
    body = "a v=1 1\nbad\nb v=2 2\nc v=x 3\nd v=4 4"
    points, errors = parse(body)
    assert [p.measurement for p in points] == ["a", "b", "d"]
    assert errors == [
        "unable to parse 'bad': missing fields",
        "unable to parse 'c v=x 3': invalid boolean",
    ]


PRECISIONS = [
    # precision, timestamp in the line, time_ns (points_test.go TestParsePointsWithPrecision)
    ("", "946730096789012345", 946730096789012345),
    ("n", "946730096789012345", 946730096789012345),
    ("ns", "946730096789012345", 946730096789012345),
    ("u", "946730096789012", 946730096789012000),
    ("us", "946730096789012", 946730096789012000),
    ("ms", "946730096789", 946730096789000000),
    ("s", "946730096", 946730096000000000),
    ("m", "15778834", 946730040000000000),
    ("h", "262980", 946728000000000000),
    ("h", "2562047", 9223369200000000000),
    ("h", "-2562047", -9223369200000000000),
]


@pytest.mark.parametrize(("precision", "ts", "time_ns"), PRECISIONS)
def test_precision_of_timestamps(precision, ts, time_ns):
    points, errors = parse(f"cpu value=1.0 {ts}", precision)
    assert errors == [] and points[0].time_ns == time_ns


NO_TIME = [
    # precision, the now it gets (TestParsePointsWithPrecisionNoTime): truncated, not rounded
    ("", 946730096789012345),
    ("n", 946730096789012345),
    ("u", 946730096789012000),
    ("ms", 946730096789000000),
    ("s", 946730096000000000),
    ("m", 946730040000000000),
    ("h", 946728000000000000),
]


@pytest.mark.parametrize(("precision", "time_ns"), NO_TIME)
def test_missing_timestamp_is_now_truncated(precision, time_ns):
    points, errors = parse("cpu value=1.0", precision)
    assert errors == [] and points[0].time_ns == time_ns


def test_now_truncation_floors_before_1970():
    points, _ = parse("cpu value=1.0", "h", now=-1)
    assert points[0].time_ns == -3_600_000_000_000


def test_precision_overflow_is_time_outside_range():
    assert parse("cpu value=1 2562048", "h")[1] == [
        "unable to parse 'cpu value=1 2562048': "
        "time outside range -9223372036854775806 - 9223372036854775806"
    ]


@pytest.mark.parametrize("precision", ["x", "N", "sec", "MS", "d"])
def test_unknown_precision_is_value_error(precision):
    with pytest.raises(ValueError) as err:
        parse_body(b"cpu value=1", precision, NOW)
    assert str(err.value) == f'invalid precision "{precision}" (use n, u, ms, s, m or h)'


def test_precision_multiplier():
    assert precision_multiplier("us") == 1_000
    assert precision_multiplier("m") == 60 * 1_000_000_000


def test_invalid_utf8_rejects_only_its_line():
    body = b"m v=1 1\nm\xff v=2 2\nm v=\xff\nm,t=\xc3\xa9 v=3 3"
    points, errors = parse_body(body, "", NOW)
    assert [tuple(p) for p in points] == [
        ("m", {}, {"v": 1.0}, 1),
        ("m", {"t": "é"}, {"v": 3.0}, 3),
    ]
    assert errors == [
        "unable to parse 'm\ufffd v=2 2': invalid UTF-8",
        # a line InfluxDB itself rejects keeps InfluxDB's reason
        "unable to parse 'm v=\ufffd': invalid boolean",
    ]


def test_to_samples_maps_each_field_to_a_series():
    points, _ = parse('cpu,z=1,host=a f=1.5,i=-3i,u=7u,b=true,c=F,s="hi" 10')
    assert list(to_samples(points)) == [
        (("cpu.f", None, (("host", "a"), ("z", "1"))), 10, 1.5, None),
        (("cpu.i", None, (("host", "a"), ("z", "1"))), 10, -3, None),
        (("cpu.u", None, (("host", "a"), ("z", "1"))), 10, 7, None),
        (("cpu.b", None, (("host", "a"), ("z", "1"))), 10, 1, None),
        (("cpu.c", None, (("host", "a"), ("z", "1"))), 10, 0, None),
        (("cpu.s", None, (("host", "a"), ("z", "1"))), 10, None, "hi"),
    ]
    kinds = [type(v) for _, _, v, _ in to_samples(points)]
    assert kinds == [float, int, int, int, int, type(None)]


def test_to_samples_of_nothing():
    assert list(to_samples([])) == []


# -- properties ------------------------------------------------------------------------

_TRICKY = st.text(st.sampled_from(list('ab=,\\" \t\x001.-+eEiuTtfFn#\né')), max_size=30)
_PLAIN_NAME = st.text(st.sampled_from(list("abc=xé_.")), min_size=1, max_size=4)
_PLAIN_VALUE = st.sampled_from(
    [
        *["1", "-2.5", "1e5", "1.e-3", ".5", "7.", "3i", "-9223372036854775808i", "5u", "t"],
        *["True", "FALSE", "-", "1e999", "9223372036854775808i", "9223372036854775808u", "00"],
    ]
)
_PLAIN_TIME = st.sampled_from(
    ["", " 0", " -5", " 1600000000", " 9223372036854775806", " 99999999999999999999"]
)
_PLAIN_LINE = st.builds(
    lambda m, tags, fields, ts: m + "".join(tags) + " " + ",".join(fields) + ts,
    _PLAIN_NAME,
    st.lists(st.builds(lambda k, v: f",{k}={v}", _PLAIN_NAME, _PLAIN_NAME), max_size=3),
    st.lists(st.builds(lambda k, v: f"{k}={v}", _PLAIN_NAME, _PLAIN_VALUE), min_size=1, max_size=3),
    _PLAIN_TIME,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_TRICKY, _PLAIN_LINE), st.sampled_from([1, 1_000_000_000, 3_600_000_000_000]))
def test_fast_path_agrees_with_the_scanner(line, mult):
    fast = _parse_fast(line, NOW, mult)
    if fast is None:
        return
    assert _parse_point(line, NOW, mult) == fast
    assert [type(v) for v in fast.fields.values()] == [
        type(v) for v in _parse_point(line, NOW, mult).fields.values()
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.sampled_from(["", "s", "h"]))
def test_any_body_gives_points_and_errors_never_an_exception(body, precision):
    points, errors = parse_body(body, precision, NOW)
    assert all(isinstance(p, InfluxPoint) and p.fields is not None for p in points)
    assert all(e.startswith("unable to parse '") for e in errors)


# What make_lines (influxdb-python) escapes the way InfluxDB unescapes: it writes `\\` for a
# backslash and `\n` for a newline in names and tag values, which InfluxDB keeps as two
# characters (see test_make_lines_backslash_is_not_unescaped); a name starting with tab or
# NUL loses it to InfluxDB's whitespace skipping; a measurement starting with `#` is a comment.
_NAME_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\\\n\t\x00")
_NAME = st.text(_NAME_CHARS, min_size=1, max_size=8)
_MEASUREMENT = _NAME.filter(lambda s: not s.startswith("#"))
_FIELD_VALUE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(INT64_MIN, INT64_MAX),
    st.booleans(),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), max_size=8),
)
_POINT = st.fixed_dictionaries(
    {
        "measurement": _MEASUREMENT,
        "tags": st.dictionaries(_NAME, _NAME, max_size=3),
        "fields": st.dictionaries(_NAME, _FIELD_VALUE, min_size=1, max_size=3),
        "time": st.one_of(st.none(), st.integers(MIN_NANO_TIME, MAX_NANO_TIME)),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_POINT, min_size=1, max_size=4))
def test_make_lines_output_parses_back(points):
    body = make_lines({"points": points}).encode()
    got, errors = parse_body(body, "n", NOW)
    assert errors == []
    expected = [
        InfluxPoint(
            p["measurement"],
            p["tags"],
            p["fields"],
            NOW if p["time"] is None else p["time"],
        )
        for p in points
    ]
    assert got == expected
    for g, e in zip(got, expected, strict=True):
        for name, want in e.fields.items():
            have = g.fields[name]
            assert type(have) is type(want)
            if isinstance(want, float):
                assert math.copysign(1, have) == math.copysign(1, want)  # -0.0 stays -0.0


def test_make_lines_with_precision_parses_back():
    data = {"points": [{"measurement": "m", "fields": {"v": 1}, "time": 1600000000}]}
    points, errors = parse_body(make_lines(data, "s").encode(), "s", NOW)
    assert errors == [] and points[0].time_ns == 1_600_000_000 * 1_000_000_000


def test_make_lines_backslash_is_not_unescaped():
    """make_lines doubles backslashes in tags; InfluxDB (and so tsnet) keeps both."""
    line = make_lines({"points": [{"measurement": "m", "tags": {"t": "a\\b"}, "fields": {"v": 1}}]})
    assert line == "m,t=a\\\\b v=1i\n"
    points, errors = parse_body(line.encode(), "", NOW)
    assert errors == [] and points[0].tags == {"t": "a\\\\b"}


BIG = "1" * 5000  # past Python's int-digit limit (4300)


@pytest.mark.parametrize(("line", "error"), [
    pytest.param(f"m v=1 {BIG}", f'strconv.ParseInt: parsing "{BIG}": value out of range',
                 id="time"),
    pytest.param(f"m v=1 -{BIG}", f'strconv.ParseInt: parsing "-{BIG}": value out of range',
                 id="negative time"),
    pytest.param(f"m v={BIG}i", f'unable to parse integer {BIG}: strconv.ParseInt: parsing '
                                f'"{BIG}": value out of range', id="integer"),
    pytest.param(f"m v=-{BIG}i", f'unable to parse integer -{BIG}: strconv.ParseInt: parsing '
                                 f'"-{BIG}": value out of range', id="negative integer"),
    pytest.param(f"m v={BIG}u", f'unable to parse unsigned {BIG}: strconv.ParseUint: parsing '
                                f'"{BIG}": value out of range', id="unsigned"),
])
def test_numbers_past_the_int_digit_limit_are_line_errors(line: str, error: str) -> None:
    points, errors = parse(line)  # a ValueError with Python's text before the fix
    assert points == []
    assert len(errors) == 1 and errors[0].endswith(error)


def test_leading_zeros_of_any_length_are_go_numbers() -> None:
    zeros = "0" * 5000
    points, errors = parse(f"m a={zeros}12i,b=-{zeros}3i,c={zeros}4u 0{zeros}7")
    assert errors == []
    assert (points[0].fields, points[0].time_ns) == ({"a": 12, "b": -3, "c": 4}, 7)
