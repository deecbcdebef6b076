"""The query engine (tsnet.query) as pure functions: OpenTSDB 2.4 semantics
(specs/opentsdb.md §3), table-driven, plus hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.query import (
    AGGREGATORS,
    FILTER_DOCS,
    MAX_TIME_MS,
    NS_PER_MS,
    NS_PER_S,
    QueryError,
    RateOptions,
    SubQuery,
    aggregate,
    bucket_count,
    common_tags,
    downsample,
    filter_examples,
    filter_from_tag_value,
    get_aggregator,
    literal_filters,
    make_filter,
    merge_resolution,
    parse_downsample,
    parse_duration_ms,
    parse_metric_and_filters,
    parse_time_ms,
    rate,
    reduce_values,
    run_sub_query,
    storable_time_ms,
    tags_to_filters,
)
from tsnet.query_limits import QueryBudget, QueryCancelled, QueryLimitExceeded, QueryLimits

S = NS_PER_S
NOW = 1_700_000_000_000  # ms
T0 = 1_356_998_400  # 2013-01-01T00:00:00Z, in s


def key(metric: str, **tags: str) -> tuple:
    return (metric, None, tuple(sorted(tags.items())))


def typed(values: list) -> list:
    return [(type(v).__name__, "nan" if isinstance(v, float) and v != v else v) for v in values]


# -- time -----------------------------------------------------------------------

TIMES = [
    ("now", NOW),
    ("NOW", NOW),
    ("1h-ago", NOW - 3_600_000),
    ("30m-ago", NOW - 1_800_000),
    ("10s-ago", NOW - 10_000),
    ("100ms-ago", NOW - 100),
    ("2d-ago", NOW - 2 * 86_400_000),
    ("1w-ago", NOW - 7 * 86_400_000),
    ("1n-ago", NOW - 30 * 86_400_000),
    ("1y-ago", NOW - 365 * 86_400_000),
    ("1000ms", 1000),
    ("1356998400", T0 * 1000),  # <= 10 characters: seconds
    ("789", 789_000),
    ("1356998400123", T0 * 1000 + 123),  # more: milliseconds
    ("1356998400.123", T0 * 1000 + 123),
    ("1356998400.5", T0 * 1000 + 500),
    ("2013/01/01", T0 * 1000),
    ("2013/01/01-00:01", (T0 + 60) * 1000),
    ("2013/01/01 00:01", (T0 + 60) * 1000),
    ("2013/01/01-01:02:03", (T0 + 3723) * 1000),
    ("2013/01/01 01:02:03", (T0 + 3723) * 1000),
    (T0, T0 * 1000),  # JSON numbers are read as their text
    (T0 * 1000, T0 * 1000),
    (float(T0), T0 * 1000),
]


@pytest.mark.parametrize(("text", "ms"), TIMES)
def test_parse_time(text: object, ms: int) -> None:
    assert parse_time_ms(text, NOW) == ms  # type: ignore[arg-type]


def test_parse_time_in_a_timezone() -> None:
    assert parse_time_ms("2013/01/01-01:00:00", NOW, "Europe/Paris") == T0 * 1000
    with pytest.raises(QueryError, match="Invalid timezone name: Nowhere/Else"):
        parse_time_ms("2013/01/01", NOW, "Nowhere/Else")


TIME_ERRORS = [
    ("x", "Invalid time: x. Invalid character 'x' in x"),
    ("12e5", "Invalid time: 12e5. Invalid character 'e' in 12e5"),
    ("-1", "Invalid time: -1. Negative timestamps are not supported."),
    ("99999999999999999999", "Invalid time: 99999999999999999999. Value too long: "
                             "99999999999999999999"),
    ("1.5", "Invalid time: 1.5. Millisecond timestamps must be in the format <seconds>.<ms> "
            "where the milliseconds are limited to 3 digits"),
    ("1356998400.1234", "Invalid time: 1356998400.1234. Millisecond timestamps must be in the "
                        "format <seconds>.<ms> where the milliseconds are limited to 3 digits"),
    ("1x-ago", "Invalid duration (suffix): 1x"),
    ("h-ago", "Invalid duration (number): h"),
    ("5-ago", "Invalid duration, must have an integer and unit: 5"),
    ("0h-ago", "Zero or negative duration: 0h"),
    ("2013/1/1", "Invalid absolute date: 2013/1/1"),
    ("2013/13/01", 'Invalid date: 2013/13/01. Unparseable date: "2013/13/01"'),
]


@pytest.mark.parametrize(("text", "message"), TIME_ERRORS)
def test_parse_time_errors(text: str, message: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_time_ms(text, NOW)
    assert str(e.value) == message
    assert e.value.status == 400


@pytest.mark.parametrize(("text", "ms"), [
    ("100ms", 100), ("1s", 1000), ("1S", 1000), ("90s", 90_000), ("1m", 60_000),
    ("2h", 7_200_000), ("1d", 86_400_000), ("1w", 604_800_000), ("1n", 2_592_000_000),
    ("1y", 31_536_000_000),
])
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@given(st.integers(min_value=0, max_value=9_999_999_999))
def test_epoch_text_digit_rule(n: int) -> None:
    """Up to 10 characters is seconds, more is milliseconds, whatever the value."""
    assert parse_time_ms(str(n), NOW) == n * 1000
    assert parse_time_ms(str(n).rjust(11, "0"), NOW) == n


# -- aggregators ----------------------------------------------------------------------

AGG_CASES = [
    ("sum", [1, 2, 3], 6),
    ("sum", [1, 2.5], 3.5),
    ("sum", [1.0, math.nan], 1.0),
    ("sum", [math.nan, math.nan], math.nan),
    ("zimsum", [4, 5], 9),
    ("avg", [1, 2], 1),  # integers: OpenTSDB's runLong truncates
    ("avg", [-1, -2], -1),  # toward zero, like Java
    ("avg", [1, 2.0], 1.5),
    ("avg", [3.0, math.nan, 5.0], 4.0),
    ("min", [3, 1, 2], 1),
    ("min", [math.nan, 2.0, 1.5], 1.5),
    ("max", [3, 1, 2], 3),
    ("max", [1.5, math.nan, 0.5], 1.5),
    ("mimmin", [3, 1], 1),
    ("mimmax", [3, 1], 3),
    ("dev", [2, 4, 4, 4, 5, 5, 7, 9], 2),  # population standard deviation
    ("dev", [2.0, 4, 4, 4, 5, 5, 7, 9], 2.0),
    ("dev", [5.0], 0.0),
    ("dev", [1, 2], 0),  # int(0.5)
    ("count", [7, 8, 9], 3),
    ("count", [7.0, math.nan], 1.0),
    ("first", [7, 8, 9], 7),
    ("last", [7, 8, 9], 9),
    ("median", [5, 1, 3, 2], 3),
    ("mult", [2, 3, 4], 24),
    ("diff", [1, 5, 3], 2),
    ("squareSum", [1, 2, 3], 14),
    ("p50", list(range(1, 11)), 5),  # int(5.5): integers truncate
    ("p50", [float(i) for i in range(1, 11)], 5.5),  # commons-math legacy estimation
    ("p90", [float(i) for i in range(1, 11)], 9.9),
    ("p999", [float(i) for i in range(1, 11)], 10.0),
    ("p75", [42.0], 42.0),
    ("ep50r3", [float(i) for i in range(1, 11)], 5.0),
    ("ep90r7", [float(i) for i in range(1, 11)], 9.1),
    ("ep50r7", [1.0, 2.0], 1.5),
    ("none", [1, 2], 2),  # only used to merge points of one output second
]


@pytest.mark.parametrize(("name", "values", "expected"), AGG_CASES)
def test_aggregator(name: str, values: list, expected: object) -> None:
    got = reduce_values(get_aggregator(name), values)
    assert typed([got]) == typed([expected]) or math.isclose(got, expected)  # type: ignore


def test_aggregator_names() -> None:
    needed = {"none", "sum", "zimsum", "avg", "min", "mimmin", "max", "mimmax", "count", "dev",
              "first", "last", "p50", "p75", "p90", "p95", "p99", "p999", "ep50r3", "ep99r7"}
    assert needed <= set(AGGREGATORS)
    with pytest.raises(QueryError, match=r"^No such aggregation function: nope$"):
        get_aggregator("nope")


# -- filters ---------------------------------------------------------------------------

FILTER_CASES = [
    # type, pattern, tag value (None: the series lacks the key), matches
    ("literal_or", "web01", "web01", True),
    ("literal_or", "web01|web02", "web02", True),
    ("literal_or", "web01|web02", "WEB02", False),
    ("literal_or", "web01", None, False),
    ("iliteral_or", "web01|web02", "WEB02", True),
    ("not_literal_or", "web01|web02", "web03", True),
    ("not_literal_or", "web01|web02", "web01", False),
    ("not_literal_or", "web01", None, True),  # no such key: not excluded
    ("not_iliteral_or", "web01", "WEB01", False),
    ("not_iliteral_or", "web01", "web03", True),
    ("wildcard", "*", "anything", True),
    ("wildcard", "*", None, False),
    ("wildcard", "web*", "web01", True),
    ("wildcard", "web*", "WEB01", False),
    ("wildcard", "*01", "web01", True),
    ("wildcard", "w*b*1", "web01", True),
    ("wildcard", "w*b*2", "web01", False),
    ("iwildcard", "WEB*", "web01", True),
    ("regexp", "^web0[12]$", "web02", True),
    ("regexp", "eb", "web02", True),  # found anywhere, as Java's find()
    ("regexp", "^db", "web02", False),
    ("not_key", "", None, True),
    ("not_key", "", "web01", False),
]


@pytest.mark.parametrize(("ftype", "pattern", "value", "expected"), FILTER_CASES)
def test_filter(ftype: str, pattern: str, value: str | None, expected: bool) -> None:
    f = make_filter(ftype, "host", pattern)
    tags = {"dc": "lga"} if value is None else {"host": value, "dc": "lga"}
    assert f.matches(tags) is expected


FILTER_ERRORS = [
    ("nope", "x", "Could not find a tag value filter of the type: nope"),
    ("", "x", "The filter type cannot be null or empty"),
    ("literal_or", "", "Filter cannot be null or empty"),
    ("literal_or", "|", "Filter must contain more than just a pipe"),
    ("wildcard", "web", "Filter must contain an asterisk"),
    ("not_key", "x", "The filter must be empty for the not_key filter"),
]


@pytest.mark.parametrize(("ftype", "pattern", "message"), FILTER_ERRORS)
def test_filter_errors(ftype: str, pattern: str, message: str) -> None:
    with pytest.raises(QueryError) as e:
        make_filter(ftype, "host", pattern)
    assert str(e.value) == message


@pytest.mark.parametrize(("value", "ftype", "pattern"), [
    ("*", "wildcard", "*"),
    ("web01", "literal_or", "web01"),
    ("web01|web02", "literal_or", "web01|web02"),
    ("web*", "wildcard", "web*"),
    ("regexp(web.*)", "regexp", "web.*"),
    ("LITERAL_OR(a|b)", "literal_or", "a|b"),
    ("not_key()", "not_key", ""),
])
def test_old_tags_syntax(value: str, ftype: str, pattern: str) -> None:
    f = filter_from_tag_value("host", value, True)
    assert (f.type, f.tagk, f.filter, f.group_by) == (ftype, "host", pattern, True)


def test_tags_shortcut_wildcard_ignores_case() -> None:
    assert filter_from_tag_value("host", "web*", True).matches({"host": "WEB01"})
    with pytest.raises(QueryError, match=r"Filter must end with a '\)': literal_or\(x"):
        filter_from_tag_value("host", "literal_or(x", True)


def test_parse_metric_and_filters() -> None:
    m, fs = parse_metric_and_filters("sys.cpu{host=*,dc=lga|nyc}{role=web*}")
    assert m == "sys.cpu"
    assert [(f.type, f.tagk, f.filter, f.group_by) for f in fs] == [
        ("wildcard", "role", "web*", False),
        ("wildcard", "host", "*", True),
        ("literal_or", "dc", "lga|nyc", True),
    ]
    assert parse_metric_and_filters("sys.cpu") == ("sys.cpu", [])
    assert parse_metric_and_filters("sys.cpu{}") == ("sys.cpu", [])
    m, fs = parse_metric_and_filters("sys.cpu{}{host=a}")
    assert (m, [(f.tagk, f.group_by) for f in fs]) == ("sys.cpu", [("host", False)])
    m, fs = parse_metric_and_filters("m{host=a}{host=a}")  # the same filter: becomes group-by
    assert [(f.tagk, f.group_by) for f in fs] == [("host", True)]
    for bad, message in [
        ("m{a=b", "Missing '}' at the end of: m{a=b"),
        ("m{host}", "When parsing tag 'host': invalid tag: host"),
        ("m{a=b}{c}", "When parsing filter 'c': invalid tag: c"),
        ("m{a=b=c}", "When parsing tag 'a=b=c': invalid tag: a=b=c"),
    ]:
        with pytest.raises(QueryError) as e:
            parse_metric_and_filters(bad)
        assert str(e.value) == message


def test_filter_docs_cover_every_type() -> None:
    for ftype in FILTER_DOCS:
        make_filter(ftype, "host", "" if ftype == "not_key" else "a*")
        assert f'"type":"{ftype}"' in filter_examples(ftype)


# -- downsampling ----------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "interval_ms", "agg", "fill"), [
    ("1m-avg", 60_000, "avg", "none"),
    ("1h-sum-zero", 3_600_000, "sum", "zero"),
    ("30s-max-nan", 30_000, "max", "nan"),
    ("10s-p99-null", 10_000, "p99", "null"),
    ("1dc-count-none", 86_400_000, "count", "none"),
    ("500ms-min", 500, "min", "none"),
    ("0all-max", 0, "max", "none"),
    ("0all-count-zero", 0, "count", "zero"),
])
def test_parse_downsample(spec: str, interval_ms: int, agg: str, fill: str) -> None:
    ds = parse_downsample(spec)
    assert (ds.interval_ns, ds.aggregator.name, ds.fill) == (interval_ms * NS_PER_MS, agg, fill)


@pytest.mark.parametrize(("spec", "message"), [
    ("1m", "Invalid downsampling specifier '1m': must provide at least interval and function"),
    ("1m-avg-zero-x", "Invalid downsampling specifier '1m-avg-zero-x': must consist of "
                      "interval, function, and optional fill policy"),
    ("1m-nope", "No such downsampling function: nope"),
    ("1m-none", "cannot use the NONE aggregator for downsampling"),
    ("1m-avg-sometimes", "Unrecognized fill policy: sometimes"),
    ("1x-avg", "Invalid duration (suffix): 1x"),
    ("m-avg", "Invalid duration (number): m"),
])
def test_parse_downsample_errors(spec: str, message: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_downsample(spec)
    assert str(e.value) == message


MIN = 60 * S
START = T0 * S


def test_downsample_buckets_align_to_the_epoch() -> None:
    times = [START + 10 * S, START + 50 * S, START + 70 * S, START + 200 * S]
    values = [1, 2, 6, 10]
    t, v = downsample(times, values, parse_downsample("1m-avg"), START, START + 10 * MIN)
    assert t == [START, START + MIN, START + 3 * MIN]
    assert typed(v) == typed([1.5, 6.0, 10.0])  # downsampled values are floats


def test_downsample_first_partial_bucket_dropped_last_reaches_past_end() -> None:
    """Buckets start in [start, end]: the bucket holding ``start`` but starting
    before it is left out; the last bucket takes its points after ``end``."""
    times = [START + 10 * S, START + 70 * S, START + 130 * S, START + 170 * S]
    t, v = downsample(times, [1, 2, 3, 4], parse_downsample("1m-sum"),
                      START + 30 * S, START + 125 * S)
    assert (t, v) == ([START + MIN, START + 2 * MIN], [2.0, 7.0])


@pytest.mark.parametrize(("fill", "missing"), [("nan", math.nan), ("null", math.nan),
                                               ("zero", 0.0)])
def test_downsample_fill(fill: str, missing: float) -> None:
    times = [START + 5 * S, START + 185 * S]
    t, v = downsample(times, [1, 2], parse_downsample(f"1m-sum-{fill}"), START, START + 4 * MIN)
    assert t == [START + i * MIN for i in range(5)]
    assert typed(v) == typed([1.0, missing, missing, 2.0, missing])


def test_downsample_all() -> None:
    times = [START + i * S for i in range(10)]
    ds = parse_downsample("0all-max")
    assert downsample(times, list(range(10)), ds, START + 2 * S, START + 5 * S) == (
        [START + 2 * S], [5.0])
    assert downsample([], [], ds, START, START + S) == ([], [])
    assert downsample([], [], parse_downsample("0all-count-zero"), START, START + S) == (
        [START], [0.0])


# -- rate ------------------------------------------------------------------------------


def test_rate() -> None:
    t = [0, 10 * S, 20 * S, 25 * S]
    assert rate(t, [100, 200, 250, 250]) == (t[1:], [10.0, 5.0, 0.0])
    assert rate(t[:1], [1]) == ([], [])


def test_rate_counter_options() -> None:
    t = [0, S, 2 * S, 3 * S]
    v = [10, 20, 5, 15]
    assert rate(t, v) == (t[1:], [10.0, -15.0, 10.0])
    assert rate(t, v, RateOptions(counter=True, counter_max=100)) == (t[1:], [10.0, 85.0, 10.0])
    # above the reset value after a roll-over: reported as 0
    assert rate(t, v, RateOptions(counter=True, counter_max=100, reset_value=50)) == (
        t[1:], [10.0, 0.0, 10.0])
    # dropResets: the point where the counter went down is dropped, the next rate
    # is taken from it
    assert rate(t, v, RateOptions(counter=True, drop_resets=True)) == ([S, 3 * S], [10.0, 10.0])


def test_rate_of_big_integers_is_exact() -> None:
    big = 2**62
    assert rate([0, S], [big, big + 3]) == ([S], [3.0])


# -- aggregation across series --------------------------------------------------------


A = ([10 * S, 20 * S, 30 * S], [1, 2, 3])
B = ([15 * S, 25 * S], [10, 20])


@pytest.mark.parametrize(("name", "times", "values"), [
    # a is interpolated at 15 and 25 (integers: Java long maths), b only inside [15, 25]
    ("sum", [10, 15, 20, 25, 30], [1, 11, 17, 22, 3]),
    ("zimsum", [10, 15, 20, 25, 30], [1, 10, 2, 20, 3]),
    ("pfsum", [10, 15, 20, 25, 30], [1, 11, 12, 22, 3]),
    ("max", [10, 15, 20, 25, 30], [1, 10, 15, 20, 3]),
    ("mimmin", [10, 15, 20, 25, 30], [1, 10, 2, 20, 3]),
    ("mimmax", [10, 15, 20, 25, 30], [1, 10, 2, 20, 3]),
    ("count", [10, 15, 20, 25, 30], [1, 2, 2, 2, 1]),  # series active at the time
    ("avg", [10, 15, 20, 25, 30], [1, 5, 8, 11, 3]),
])
def test_aggregate_interpolation(name: str, times: list, values: list) -> None:
    t, v = aggregate([A, B], get_aggregator(name))
    assert [x // S for x in t] == times
    assert v == values


def test_aggregate_float_interpolation() -> None:
    t, v = aggregate([([0, 10 * S], [0.0, 10.0]), ([5 * S], [1.0])], get_aggregator("sum"))
    assert (t, v) == ([0, 5 * S, 10 * S], [0.0, 6.0, 10.0])


def test_aggregate_one_series_is_itself() -> None:
    t, v = aggregate([A], get_aggregator("sum"))
    assert (t, v) == A
    assert aggregate([A], get_aggregator("dev")) == (A[0], [0, 0, 0])
    assert aggregate([A], get_aggregator("count")) == (A[0], [1, 1, 1])
    assert aggregate([], get_aggregator("sum")) == ([], [])


def test_merge_resolution() -> None:
    times = [S, S + 1, S + 2 * NS_PER_MS, 2 * S + 5]
    assert merge_resolution(times, [1, 2, 3, 4], S, get_aggregator("sum")) == (
        [S, 2 * S], [6, 4])
    assert merge_resolution(times, [1, 2, 3, 4], NS_PER_MS, get_aggregator("max")) == (
        [S, S + 2 * NS_PER_MS, 2 * S], [2, 3, 4])


def test_common_tags_quirk() -> None:
    """Keys whose values differ are aggregated; a key that only some series have,
    with one value, stays a tag (OpenTSDB SpanGroup.computeTags)."""
    assert common_tags([{"host": "a", "dc": "x"}, {"host": "b", "dc": "x", "rack": "1"}]) == (
        {"dc": "x", "rack": "1"}, ["host"])


# -- sub-queries -------------------------------------------------------------------------

SERIES = [
    (key("cpu", host="web01", dc="lga"), [START, START + 10 * S], [1, 2], None),
    (key("cpu", host="web02", dc="lga"), [START, START + 10 * S], [10, 20], None),
    (key("cpu", host="web03", dc="nyc"), [START, START + 10 * S], [100, 200], None),
    (key("mem", host="web01"), [START], [5], None),
]
END = START + MIN


def run(agg: str, filters: list | None = None, **kw: object) -> list[tuple]:
    sub = SubQuery(get_aggregator(agg), "cpu", filters or [], **kw)  # type: ignore[arg-type]
    return [(r.tags, r.aggregate_tags, [t // S - T0 for t in r.times], r.values)
            for r in run_sub_query(sub, SERIES, START, END, S)]


def test_sub_query_aggregates_all_series_of_the_metric() -> None:
    assert run("sum") == [({}, ["dc", "host"], [0, 10], [111, 222])]


def test_sub_query_group_by() -> None:
    assert run("sum", tags_to_filters({"dc": "*"})) == [
        ({"dc": "lga"}, ["host"], [0, 10], [11, 22]),
        ({"dc": "nyc", "host": "web03"}, [], [0, 10], [100, 200]),
    ]
    assert run("max", tags_to_filters({"host": "web01|web03"})) == [
        ({"dc": "lga", "host": "web01"}, [], [0, 10], [1, 2]),
        ({"dc": "nyc", "host": "web03"}, [], [0, 10], [100, 200]),
    ]


def test_sub_query_non_grouping_filters_and_token_tags() -> None:
    assert run("sum", [make_filter("literal_or", "host", "web01|web02")]) == [
        ({"dc": "lga"}, ["host"], [0, 10], [11, 22])]
    # a READ token's tags are literal filters ANDed in; contradicting one: no data
    token = literal_filters([("dc", "lga")])
    assert run("sum", [*tags_to_filters({"host": "*"}), *token]) == [
        ({"dc": "lga", "host": "web01"}, [], [0, 10], [1, 2]),
        ({"dc": "lga", "host": "web02"}, [], [0, 10], [10, 20]),
    ]
    assert run("sum", [make_filter("literal_or", "dc", "nyc"), *token]) == []


def test_sub_query_none_and_explicit_tags() -> None:
    assert [r[0]["host"] for r in run("none")] == ["web01", "web02", "web03"]
    assert run("sum", [make_filter("wildcard", "host", "*")], explicit_tags=True) == []
    both = [make_filter("wildcard", "host", "*"), make_filter("wildcard", "dc", "*")]
    assert run("sum", both, explicit_tags=True) == [({}, ["dc", "host"], [0, 10], [111, 222])]


def test_sub_query_downsample_then_rate() -> None:
    series = [(key("c", h="a"), [START + i * S for i in range(0, 300, 10)],
               [i * 2 for i in range(0, 300, 10)], None)]
    sub = SubQuery(get_aggregator("sum"), "c", downsample=parse_downsample("1m-max"), rate=True)
    [r] = run_sub_query(sub, series, START, START + 5 * MIN, S)
    assert [t // S - T0 for t in r.times] == [60, 120, 180, 240]
    assert r.values == [2.0, 2.0, 2.0, 2.0]  # (max of each minute) per second


def test_sub_query_texts_only_samples_are_skipped() -> None:
    series = [(key("m", h="a"), [START, START + S, START + 2 * S], [1, None, 3], None)]
    [r] = run_sub_query(SubQuery(get_aggregator("sum"), "m"), series, START, END, S)
    assert (r.times, r.values) == ([START, START + 2 * S], [1, 3])


def test_sub_query_output_range_and_seconds() -> None:
    series = [(key("m", h="a"), [START - S, START + 1, START + 2, START + S], [9, 1, 2, 3], None)]
    [r] = run_sub_query(SubQuery(get_aggregator("sum"), "m"), series, START, START + S, S)
    assert (r.times, r.values) == ([START, START + S], [3, 3])
    [r] = run_sub_query(SubQuery(get_aggregator("sum"), "m"), series, START, START + S, 1)
    assert (r.times, r.values) == ([START + 1, START + 2, START + S], [1, 2, 3])


def test_show_query_echo() -> None:
    sub = SubQuery(get_aggregator("sum"), "cpu", tags_to_filters({"host": "*"}),
                   parse_downsample("1m-avg"), True, RateOptions(counter=True), False, 3)
    assert sub.as_json() == {
        "aggregator": "sum", "metric": "cpu", "tsuids": None, "downsample": "1m-avg",
        "rate": True, "filters": [{"tagk": "host", "filter": "*", "group_by": True,
                                   "type": "wildcard"}],
        "explicitTags": False, "index": 3,
        "rateOptions": {"counter": True, "counterMax": 2**63 - 1, "resetValue": 0,
                        "dropResets": False},
        "tags": {"host": "wildcard(*)"},
    }


# -- properties ------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
numbers = st.one_of(st.integers(min_value=-(2**40), max_value=2**40), finite)


@st.composite
def one_series(draw: st.DrawFn, values: st.SearchStrategy = numbers) -> tuple[list, list]:
    offsets = draw(st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=60,
                            unique=True))
    times = sorted(START + o * NS_PER_MS for o in offsets)
    return times, [draw(values) for _ in times]


@given(one_series(), st.sampled_from(["sum", "zimsum", "avg", "min", "max", "mimmin",
                                      "mimmax", "first", "last", "p50", "p99"]))
def test_property_one_series_aggregates_to_itself(s: tuple, agg: str) -> None:
    times, values = s
    sub = SubQuery(get_aggregator(agg), "m")
    [r] = run_sub_query(sub, [(key("m", h="a"), times, values, None)], START,
                        START + 10**7 * NS_PER_MS, 1)
    assert r.times == times
    assert typed(r.values) == typed(values)


@given(one_series())
def test_property_all_count_is_the_number_of_points(s: tuple) -> None:
    times, values = s
    end = times[-1] + S
    t, v = downsample(times, values, parse_downsample("0all-count"), START, end)
    assert t == [START]
    assert v == [len(times)]


@given(one_series(st.integers(min_value=-(2**30), max_value=2**30)),
       st.sampled_from(["1s", "10s", "1m", "1h"]))
def test_property_downsampled_sums_add_up(s: tuple, interval: str) -> None:
    times, values = s
    ds = parse_downsample(f"{interval}-sum")
    t, v = downsample(times, values, ds, START, times[-1])
    assert sum(v) == sum(values)
    assert all(x % ds.interval_ns == 0 for x in t)
    assert t == sorted(set(t))


@given(one_series(finite), st.integers(min_value=2, max_value=5))
def test_property_copies_of_a_series(s: tuple, k: int) -> None:
    times, values = s
    t, v = aggregate([(times, values)] * k, get_aggregator("sum"))
    assert t == times
    assert all(math.isclose(a, k * b, rel_tol=1e-9, abs_tol=1e-6) for a, b in
               zip(v, values, strict=True))
    t, v = aggregate([(times, values)] * k, get_aggregator("avg"))
    assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) for a, b in
               zip(v, values, strict=True))


@settings(max_examples=50)
@given(st.floats(min_value=-100, max_value=100), st.floats(min_value=-100, max_value=100),
       st.lists(st.integers(min_value=0, max_value=1000), min_size=2, max_size=20, unique=True),
       st.lists(st.integers(min_value=0, max_value=1000), min_size=2, max_size=20, unique=True))
def test_property_lerp_of_lines_is_exact(a: float, b: float, xs: list, ys: list) -> None:
    """Two samplings of one line: where both are active, min == max == the line."""
    def line(t: int) -> float:
        return a * t + b

    s1 = (sorted(x * S for x in xs), [line(x) for x in sorted(xs)])
    s2 = (sorted(y * S for y in ys), [line(y) for y in sorted(ys)])
    lo, hi = max(min(xs), min(ys)) * S, min(max(xs), max(ys)) * S
    t_min, v_min = aggregate([s1, s2], get_aggregator("min"))
    _, v_max = aggregate([s1, s2], get_aggregator("max"))
    for t, x, y in zip(t_min, v_min, v_max, strict=True):
        if lo <= t <= hi:
            assert math.isclose(x, line(t // S), abs_tol=1e-6)
            assert math.isclose(y, line(t // S), abs_tol=1e-6)


@given(st.lists(st.sampled_from(["a", "b", "c", "A"]), max_size=3),
       st.sampled_from(["a", "b", "c", "A"]))
def test_property_not_literal_or_is_the_negation(literals: list, value: str) -> None:
    pattern = "|".join(literals) or "z"
    yes = make_filter("literal_or", "k", pattern).matches({"k": value})
    no = make_filter("not_literal_or", "k", pattern).matches({"k": value})
    assert yes is not no
    assert yes is (value in pattern.split("|"))


# -- bounds: numbers, times, and the budget the engine spends ------------------------


@pytest.mark.parametrize("text", ["9" * 5000 + "ms", "9" * 5000 + "s-ago", "9" * 41,
                                  "9" * 5000, "+" + "9" * 5000],
                         ids=["ms", "ago", "41", "5000", "signed"])
def test_times_of_thousands_of_digits_are_query_errors(text: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_time_ms(text, NOW)
    assert len(e.value.message) < 300  # the input is not echoed in full
    assert "int" not in e.value.message.lower()  # no interpreter detail


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10 ** 5000],
                         ids=["inf", "-inf", "nan", "5001-digits"])
def test_non_finite_and_huge_json_times_are_query_errors(value: float) -> None:
    with pytest.raises(QueryError, match="Invalid time"):
        parse_time_ms(value, NOW)


def test_durations_of_thousands_of_digits_are_query_errors() -> None:
    with pytest.raises(QueryError, match=r"Duration must be < Long\.MAX_VALUE ms"):
        parse_duration_ms("9" * 5000 + "s")
    with pytest.raises(QueryError, match=r"Duration must be < Long\.MAX_VALUE ms"):
        parse_downsample("9" * 5000 + "s-avg")


def test_storable_times() -> None:
    assert storable_time_ms(MAX_TIME_MS, "End time") == MAX_TIME_MS
    assert (MAX_TIME_MS * NS_PER_MS + NS_PER_MS - 1) < 2**63  # the end of its millisecond
    with pytest.raises(QueryError, match=r"End time \[10000000000000\] is outside"):
        storable_time_ms(10_000_000_000_000, "End time")


def test_bucket_count_is_known_before_reading() -> None:
    ds = parse_downsample("1s-avg-zero")
    sub = SubQuery(get_aggregator("sum"), "m", downsample=ds)
    start, end = 1346998400 * S, 1356998400 * S + S - 1
    assert bucket_count(ds, start, end) == 10_000_001
    # the buckets reach to the end of the hour past ``end``, as the points read do
    assert sub.planned_buckets(start, end) == 10_000_000 + 3600
    assert SubQuery(get_aggregator("sum"), "m",
                    downsample=parse_downsample("1s-avg")).planned_buckets(start, end) == 0
    assert bucket_count(parse_downsample("0all-sum"), start, end) == 1


def _interleaved(n: int, points: int) -> list:
    from tsnet.model import series_key

    return [(series_key("m", {"h": str(i)}), [(j * n + i) * NS_PER_MS for j in range(points)],
             list(range(points))) for i in range(n)]


def test_the_engine_stops_when_its_budget_is_spent() -> None:
    """A clock past the deadline stops aggregation inside its loops (not after
    them); a bucket limit stops downsampling; the output limit the results."""
    ticks = iter(range(10**9))
    budget = QueryBudget(QueryLimits(timeout=3), clock=lambda: next(ticks))
    sub = SubQuery(get_aggregator("sum"), "m")
    rows = _interleaved(50, 1000)
    with pytest.raises(QueryLimitExceeded) as e:
        run_sub_query(sub, rows, 0, 10**12, budget=budget)
    assert (e.value.key, e.value.status) == ("query_timeout", 503)
    assert budget.output == 0  # stopped before any result was made
    assert run_sub_query(sub, rows, 0, 10**12)[0].times  # unbounded, it completes

    budget = QueryBudget(QueryLimits(max_buckets=100))
    ds_sub = SubQuery(get_aggregator("sum"), "m", downsample=parse_downsample("1ms-sum"))
    with pytest.raises(QueryLimitExceeded) as e:
        run_sub_query(ds_sub, rows, 0, 10**12, budget=budget)
    assert (e.value.key, e.value.status) == ("max_query_buckets", 413)
    assert "max_query_buckets = 100" in e.value.message

    budget = QueryBudget(QueryLimits(max_output=10))
    with pytest.raises(QueryLimitExceeded, match="max_query_output = 10"):
        run_sub_query(sub, rows[:1], 0, 10**12, budget=budget)
    budget = QueryBudget(QueryLimits(max_points=10))
    with pytest.raises(QueryLimitExceeded, match="max_query_points = 10"):
        budget.read(11)


def test_a_cancelled_budget_stops_the_engine() -> None:
    budget = QueryBudget(QueryLimits())
    budget.cancelled = True
    with pytest.raises(QueryCancelled):
        run_sub_query(SubQuery(get_aggregator("sum"), "m"), _interleaved(50, 1000), 0,
                      10**12, budget=budget)
