"""Graphite plaintext parsing: carbon's acceptance rules, messages, and the bulk path."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.plugin import INT64_MAX, INT64_MIN, Column
from tsnet_lineproto.graphite_parse import (
    MAX_SECONDS,
    MIN_SECONDS,
    GraphiteLineError,
    GraphiteParser,
    log_form,
    parse_line,
    series_key_of,
)

NOW = 1_700_000_123_456_789_012
S = 1_000_000_000


def key(metric, **tags):
    return (metric, None, tuple(sorted(tags.items())))


GOOD = [
    # line, series, time_ns, value
    ("carbon.foo 1 2", key("carbon.foo"), 2 * S, 1.0),  # carbon test_protocols
    ("жопа 42 -1", key("жопа"), NOW, 42.0),  # carbon: UTF-8 name, -1 is "now"
    ("a.b.c 3.5 1700000000", key("a.b.c"), 1_700_000_000 * S, 3.5),
    ("  a.b\t-7e3   1700000000 \r\n", key("a.b"), 1_700_000_000 * S, -7000.0),
    ("a 1_000 1_700", key("a"), 1700 * S, 1000.0),  # Python float() syntax, as carbon
    ("a inf 1", key("a"), S, math.inf),
    ("a -Infinity 1", key("a"), S, -math.inf),
    ("a 1 1700000000.5", key("a"), 1_700_000_000_500_000_000, 1.0),
    ("a 1 1700000000.123456", key("a"), 1_700_000_000_123_000_000, 1.0),  # to the ms
    ("a 1 1.7e9", key("a"), 1_700_000_000 * S, 1.0),
    ("a 1 -1.0", key("a"), NOW, 1.0),  # int(-1.0) == -1
    ("a 1 -1.9", key("a"), NOW, 1.0),  # int(-1.9) == -1 too
    ("a 1 -2", key("a"), -2 * S, 1.0),
    ("a 1 -0.5", key("a"), -500_000_000, 1.0),
    ("a 1 0", key("a"), 0, 1.0),
    (f"a 1 {MAX_SECONDS}", key("a"), MAX_SECONDS * S, 1.0),
    (f"a 1 {MIN_SECONDS}", key("a"), MIN_SECONDS * S, 1.0),
    # tags, as TaggedSeries.parse_carbon normalises them
    ("cpu;host=a;dc=eu 1 2", key("cpu", dc="eu", host="a"), 2 * S, 1.0),
    ("cpu;dc=eu;host=a 1 2", key("cpu", dc="eu", host="a"), 2 * S, 1.0),
    ("cpu;t=1;t=2 1 2", key("cpu", t="2"), 2 * S, 1.0),  # last one wins
    ("cpu;t=a=b 1 2", key("cpu", t="a=b"), 2 * S, 1.0),  # split on the first =
    ("cpu;name=other;t=1 1 2", key("cpu", t="1"), 2 * S, 1.0),  # name tag is the name
    ("cpu;name=other 1 2", key("cpu"), 2 * S, 1.0),
    ("~cpu;t=1 1 2", key("cpu", t="1"), 2 * S, 1.0),  # leading ~ stripped
    ("a..b;t=1 1 2", key("a..b", t="1"), 2 * S, 1.0),  # tagged names kept as sent
    ("cpu;t=v~ 1 2", key("cpu", t="v~"), 2 * S, 1.0),
    # OpenMetrics form, as TaggedSeries.parse_openmetrics
    ('cpu{host="a",dc="eu"} 1 2', key("cpu", dc="eu", host="a"), 2 * S, 1.0),
    ('cpu{v="a\\"b\\\\c"} 1 2', key("cpu", v='a"b\\c'), 2 * S, 1.0),
    ('cpu{a="1":,b="2"} 1 2', key("cpu", a="1", b="2"), 2 * S, 1.0),  # carbon's `:?,`
    ('cpu{a="x,y=z"} 1 2', key("cpu", a="x,y=z"), 2 * S, 1.0),
    # untagged paths: the series whisper stores them as
    ("a..b 1 2", key("a.b"), 2 * S, 1.0),
    (".a.b 1 2", key("a.b"), 2 * S, 1.0),
    ("a.b. 1 2", key("a.b"), 2 * S, 1.0),
    ("~.a 1 2", key("a"), 2 * S, 1.0),
    ("~~a~~.~~~b~~~.~~~c~~~ 1 2", key("a~~.~~~b~~~.~~~c~~~"), 2 * S, 1.0),  # carbon test
    ("my~.test.abc 1 2", key("my~.test.abc"), 2 * S, 1.0),  # carbon test
    ("a{b} 1 2", key("a{b}"), 2 * S, 1.0),  # not OpenMetrics: no closing `"}`
]

DROPPED = [
    "",
    "   ",
    "\r\n",
    "a nan 1",
    "a NaN 1",
    "a -nan 1",
    "a nan nan",  # carbon drops NaN values before it looks at the timestamp
    "bad;;path nan 1",  # ... and before the path is parsed
]

BAD = [
    ("a", "expected 3 fields (path value timestamp), got 1"),
    ("carbon.foo 1", "expected 3 fields (path value timestamp), got 2"),  # carbon test
    ("a 1 2 3", "expected 3 fields (path value timestamp), got 4"),
    ("c" * 401, "expected 3 fields (path value timestamp), got 1"),  # carbon test
    ("a one 2", "invalid value: one"),
    ("a 1 two", "invalid timestamp: two"),
    ("a x y", "invalid timestamp: y"),  # carbon converts the timestamp first
    ("a 1 0x10", "invalid timestamp: 0x10"),
    ("a 1 nan", "timestamp is not finite: nan"),
    ("a 1 inf", "timestamp is not finite: inf"),
    (f"a 1 {MAX_SECONDS + 1}", f"timestamp out of range: {MAX_SECONDS + 1}"),
    (f"a 1 {MIN_SECONDS - 1}", f"timestamp out of range: {MIN_SECONDS - 1}"),
    ("a 1 9223372036.9", "timestamp out of range: 9223372036.9"),
    ("a 1 1e300", "timestamp out of range: 1e300"),
    # TaggedSeries' own messages
    (";t=1 1 2", "Cannot parse path ;t=1, no metric found"),
    ("cpu; 1 2", "Cannot parse path cpu;, invalid segment "),
    ("cpu;t 1 2", "Cannot parse path cpu;t, invalid segment t"),
    ("cpu;=v 1 2", "Cannot parse path cpu;=v, invalid segment =v"),
    ("cpu;t= 1 2", 'Value for tag "t" may not be empty'),
    ("cpu;t!=v 1 2", 'Character "!" is not allowed in tag "t!"'),
    ("cpu;t^=v 1 2", 'Character "^" is not allowed in tag "t^"'),
    ("cpu;t=~v 1 2", 'Tag values are not allowed to start with "~" in tag "t"'),
    ("~;t=1 1 2", "Cannot use metric name ~ as tag value, results in an empty string"),
    ("~~~ 1 2", "Cannot use metric name ~~~ as tag value, results in an empty string"),
    ('{a="b"} 1 2', 'Cannot parse path {a="b"}, no metric found'),
    ('cpu{a=b"} 1 2', 'Cannot parse path cpu{a=b"}, invalid segment a=b"'),
    ('cpu{a=""} 1 2', 'Cannot parse path cpu{a=""}, invalid segment a=""'),
    ('cpu{a!="1"} 1 2', 'Character "!" is not allowed in tag "a!"'),
    ('cpu{a="1;2"} 1 2', 'Character ";" is not allowed in value "1;2" of tag a'),
    ('cpu{a="~1"} 1 2', 'Tag values are not allowed to start with "~" in tag "a"'),
    ('c{p{a="1"} 1 2', "Cannot parse path c{p{a=\"1\"}, more than one '{'"),
    # a path of dots only has no name to store
    (". 1 2", "Cannot parse path ., no metric found"),
    ("... 1 2", "Cannot parse path ..., no metric found"),
]


@pytest.mark.parametrize(("line", "series", "time_ns", "value"), GOOD)
def test_good_lines(line, series, time_ns, value):
    assert parse_line(line, NOW) == (series, time_ns, value)


@pytest.mark.parametrize("line", DROPPED)
def test_silently_dropped_lines(line):
    assert parse_line(line, NOW) is None


@pytest.mark.parametrize(("line", "reason"), BAD)
def test_bad_lines(line, reason):
    with pytest.raises(GraphiteLineError) as err:
        parse_line(line, NOW)
    assert str(err.value) == reason
    assert isinstance(err.value, ValueError)


def test_value_is_always_a_float():
    _, _, value = parse_line("a 7 1", NOW)
    assert type(value) is float and value == 7.0


def test_ns_fit_int64_at_both_ends():
    assert parse_line(f"a 1 {MAX_SECONDS}", 0)[1] <= INT64_MAX
    assert parse_line(f"a 1 {MIN_SECONDS}", 0)[1] >= INT64_MIN
    assert (MAX_SECONDS + 1) * 1_000_000_000 > INT64_MAX
    assert (MIN_SECONDS - 1) * 1_000_000_000 < INT64_MIN


def test_series_key_of_sorts_tags_and_drops_name():
    assert series_key_of("m;z=1;a=2;name=x") == ("m", None, (("a", "2"), ("z", "1")))


def test_log_form_truncates_like_carbon():
    assert log_form("x" * 401) == "x" * 400 + "..."
    assert log_form("  short \n") == "short"


def test_take_fills_columns_and_reports_bad_lines():
    parser = GraphiteParser()
    columns: dict = {}
    lines = [
        "a.b 1 10\n",
        "a.b 2 11\n",
        "a..b 3 12\n",  # same series as a.b
        "cpu;h=1 4 13",
        "cpu;h=1 5 -1",  # now
        "x nan 1",  # dropped
        "",  # dropped
        "broken",
        "cpu;h= 1 1",
        "y" * 500 + " 1",
    ]
    count, bad = parser.take(lines, columns, NOW)
    assert count == 5
    assert set(columns) == {key("a.b"), key("cpu", h="1")}
    ab = columns[key("a.b")]
    assert ab.times == [10 * S, 11 * S, 12 * S]
    assert ab.values == [1.0, 2.0, 3.0]
    assert ab.texts is None
    cpu = columns[key("cpu", h="1")]
    assert cpu.times == [13 * S, NOW] and cpu.values == [4.0, 5.0]
    assert bad == [
        ("broken", "expected 3 fields (path value timestamp), got 1"),
        ("cpu;h= 1 1", 'Value for tag "h" may not be empty'),
        ("y" * 400 + "...", "expected 3 fields (path value timestamp), got 2"),
    ]


def test_take_appends_to_existing_columns_and_keeps_texts_aligned():
    col = Column()
    col.add(1, None, "text")
    columns = {key("a"): col}
    count, bad = GraphiteParser().take(["a 2 3", "a 4 5"], columns, NOW)
    assert (count, bad) == (2, [])
    assert col.times == [1, 3 * S, 5 * S]
    assert col.values == [None, 2.0, 4.0]
    assert col.texts == ["text", None, None]


def test_take_cache_is_bounded():
    parser = GraphiteParser(limit=3)
    lines = [f"m{i} 1 1" for i in range(10)]
    columns: dict = {}
    assert parser.take(lines, columns, NOW) == (10, [])
    assert len(columns) == 10
    assert 1 <= len(parser._keys) <= 3
    # a cleared cache still gives the same series
    assert parser.take(lines, columns, NOW) == (10, [])
    assert all(len(c) == 2 for c in columns.values())


def test_take_only_caches_valid_paths():
    parser = GraphiteParser()
    parser.take(["a;b 1 1", "ok 1 1"], {}, NOW)
    assert list(parser._keys) == ["ok"]


# Lines built from the pieces that exercise every branch: good and bad paths, values,
# timestamps, odd whitespace, repeats (for the cache).
_PATHS = st.sampled_from(
    ["a.b", "a..b", ".a", "~a", "~", "...", "c;t=1", "c;t=", "c;t=~x", 'm{a="1"}', "m{a=1}"]
)
_VALUES = st.sampled_from(["1", "-2.5", "nan", "inf", "1e3", "x", "1_0", "0x1"])
_TIMES = st.sampled_from(
    ["0", "1700000000", "-1", "-1.5", "1.25", "nan", "1e10", str(MAX_SECONDS), "t", "9e99"]
)
_SEP = st.sampled_from([" ", "  ", "\t"])
_LINE = st.one_of(
    st.builds(
        lambda p, s1, v, s2, t, end: p + s1 + v + s2 + t + end,
        _PATHS,
        _SEP,
        _VALUES,
        _SEP,
        _TIMES,
        st.sampled_from(["", "\n", "\r\n", " x"]),
    ),
    st.text(st.sampled_from("ab .;=~1\t"), max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=40), st.lists(_LINE, max_size=10))
def test_take_equals_parse_line(lines, more):
    parser = GraphiteParser(limit=4)
    columns: dict = {}
    got = [parser.take(lines, columns, NOW), parser.take(more, columns, NOW)]

    expected_columns: dict = {}
    expected = []
    for batch in (lines, more):
        count, bad = 0, []
        for line in batch:
            try:
                point = parse_line(line, NOW)
            except GraphiteLineError as e:
                bad.append((log_form(line), str(e)))
                continue
            if point is not None:
                series, time_ns, value = point
                expected_columns.setdefault(series, Column()).add(time_ns, value)
                count += 1
        expected.append((count, bad))
    assert got == expected
    assert {k: (c.times, c.values, c.texts) for k, c in columns.items()} == {
        k: (c.times, c.values, c.texts) for k, c in expected_columns.items()
    }
