"""The OpenTSDB telnet `put` parser against shared/specs/opentsdb.md §1.3-§1.6 and §6.

Reply texts are compared exactly, except where OpenTSDB prints a Java HashMap
(`{...}`, unspecified order, A13): there only the text before the map is compared.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsnet.model import INT64_MAX, INT64_MIN, SampleSet
from tsnet.protocols.opentsdb.telnet_parse import (
    HELP_COMMANDS,
    UNAUTHENTICATED_PUT,
    PutError,
    PutParser,
    help_reply,
    name_error,
    parse_timestamp_ms,
    parse_value,
    split_words,
    unknown_command_reply,
)

IA = "put: illegal argument: "
IV = "put: invalid value: "
S = 1_000_000_000  # ns per second
MS = 1_000_000  # ns per millisecond


class Prefix(str):
    """An expected error of which only the start is fixed (a Java map follows)."""


def ok(metric, tags, time_ns, value, token=None):
    return ((metric, None, tuple(sorted(tags.items()))), time_ns, value, token)


H = {"h": "a"}

CASES = [
    # --- §1.3 / step 1: word count, single-space splitting -----------------------------
    ("put", IA + "not enough arguments (need least 4, got 0)"),
    ("put ", IA + "not enough arguments (need least 4, got 1)"),
    ("put m", IA + "not enough arguments (need least 4, got 1)"),
    ("put m 1", IA + "not enough arguments (need least 4, got 2)"),
    ("put m 1 2", IA + "not enough arguments (need least 4, got 3)"),
    ("put m 1 2 ", IA + "Need at least one tag (metric=m, tags={})"),
    ("put m 1 2    ", IA + "Need at least one tag (metric=m, tags={})"),
    ("put m 1 2 h=a", ok("m", H, 1 * S, 2)),
    ("put m 1 2  h=a   b=c  ", ok("m", {"h": "a", "b": "c"}, 1 * S, 2)),
    ("put m 1 2 h=a\tb=c", IA + "invalid tag: h=a\tb=c"),  # tabs stay inside words
    # --- step 2: empty metric (an extra space shifts the words) -------------------------
    ("put  m 1 2 h=a", IA + "empty metric name"),
    ("put  m 1 2", IA + "empty metric name"),
    # --- step 3: timestamp text ----------------------------------------------------------
    ("put m  1 2 h=a", IV + "Empty string"),
    ("put m . 2 h=a", IV + "Empty string"),  # every dot removed, nothing left
    ("put m abc 2 h=a", IV + "Invalid character 'a' in abc"),
    ("put m 1e9 2 h=a", IV + "Invalid character 'e' in 1e9"),
    ("put m notatime 42 host=web01", IV + "Invalid character 'n' in notatime"),
    ("put m 1_000 2 h=a", IV + "Invalid character '_' in 1_000"),
    ("put m \u0661\u0662 2 h=a", IV + "Invalid character '\u0661' in \u0661\u0662"),
    ("put m 12a.5 2 h=a", IV + "Invalid character 'a' in 12a5"),  # text after dot removal
    ("put m +-1 2 h=a", IV + "Invalid character '-' in +-1"),
    ("put m + 2 h=a", IV + "Just a sign, no value: +"),
    ("put m - 2 h=a", IV + "Just a sign, no value: -"),
    ("put m 12345678901234567890 2 h=a", IV + "Value too long: 12345678901234567890"),
    ("put m +12345678901234567890 2 h=a", IV + "Value too long: +12345678901234567890"),
    ("put m abcdefghijklmnopqrst 2 h=a", IV + "Value too long: abcdefghijklmnopqrst"),
    ("put m 9223372036854775808 2 h=a", IV + "Overflow in 9223372036854775808"),
    # --- step 4: timestamp <= 0 ------------------------------------------------------------
    ("put m 0 2 h=a", IA + "invalid timestamp: 0"),
    ("put m -1 2 h=a", IA + "invalid timestamp: -1"),
    ("put m -0 2 h=a", IA + "invalid timestamp: 0"),
    ("put m 0.0 2 h=a", IA + "invalid timestamp: 0"),
    ("put m -9223372036854775808 2 h=a", IA + "invalid timestamp: -9223372036854775808"),
    # --- §1.4 timestamp table ----------------------------------------------------------------
    ("put m 1356998400 2 h=a", ok("m", H, 1356998400 * S, 2)),
    ("put m 1356998400123 2 h=a", ok("m", H, 1356998400123 * MS, 2)),
    ("put m 1356998400.123 2 h=a", ok("m", H, 1356998400123 * MS, 2)),
    ("put m 1356998400.5 2 h=a", ok("m", H, 13569984005 * MS, 2)),  # quirk A1
    ("put m 1.3.5 2 h=a", ok("m", H, 135 * S, 2)),  # every dot removed
    ("put m 4294967295 2 h=a", ok("m", H, 4294967295 * S, 2)),
    ("put m 4294967296 2 h=a", ok("m", H, 4294967296 * MS, 2)),
    ("put m 9999999999 2 h=a", ok("m", H, 9999999999 * MS, 2)),
    ("put m 9223372036854 2 h=a", ok("m", H, 9223372036854 * MS, 2)),  # int64 ns end
    # divergent: OpenTSDB takes up to 9999999999999 ms; past 2262 is beyond int64 ns
    ("put m 9223372036855 2 h=a", Prefix(IA + "bad timestamp=9223372036855 when trying to add")),
    ("put m 9999999999999 2 h=a", Prefix(IA + "bad timestamp=9999999999999 when trying to add")),
    ("put m 789 2 h=a", ok("m", H, 789 * S, 2)),
    ("put m +1356998400 2 h=a", ok("m", H, 1356998400 * S, 2)),
    ("put m 0000000000001 2 h=a", ok("m", H, 1 * S, 2)),
    (
        "put m 1356998400.1234 42 h=a",
        IA + "bad timestamp=13569984001234 when trying to add value=[42]/0 to metric=m, tags={h=a}",
    ),
    ("put m 10000000000000 2 h=a", Prefix(IA + "bad timestamp=10000000000000 when trying to add")),
    (
        "put m 9223372036854775807 42.5 h=a",
        IA + "bad timestamp=9223372036854775807 when trying to add value=[66, 42, 0, 0]/11"
        " to metric=m, tags={h=a}",
    ),
    (
        "put m 99999999999999 100000 h=a",
        IA + "bad timestamp=99999999999999 when trying to add value=[0, 1, -122, -96]/3"
        " to metric=m, tags={h=a}",
    ),
    (
        "put m 99999999999999 0.1 h=a",
        IA + "bad timestamp=99999999999999 when trying to add"
        " value=[63, -71, -103, -103, -103, -103, -103, -102]/15 to metric=m, tags={h=a}",
    ),
    # --- step 5: empty value --------------------------------------------------------------
    ("put m 1  2 h=a", IA + "empty value"),
    ("put m 1  h=a", IA + "empty value"),
    # --- step 6: tags ----------------------------------------------------------------------
    ("put m 1 2 host", IA + "invalid tag: host"),
    ("put m 1 2 host=", IA + "invalid tag: host="),
    ("put m 1 2 =web01", IA + "invalid tag: =web01"),
    ("put m 1 2 a=b=c", IA + "invalid tag: a=b=c"),
    ("put m 1 2 a==b", IA + "invalid tag: a==b"),
    ("put m 1 2 =", IA + "invalid tag: ="),
    ("put m 1 2 h=a x", IA + "invalid tag: x"),
    ("put m 1 2 h=a h=a", ok("m", H, 1 * S, 2)),
    ("put m 1 2 h=a h=b", Prefix(IA + "duplicate tag: h=b, tags={")),
    ("put m 1 2 h=a h=b", IA + "duplicate tag: h=b, tags={h=a}"),
    ("put m 1 2 h=a h=b x", Prefix(IA + "duplicate tag: h=b, tags={")),  # left to right
    ("put m 1 2 x h=a h=b", IA + "invalid tag: x"),
    # --- step 7: value, §1.5 ----------------------------------------------------------------
    ("put m 1 42 h=a", ok("m", H, S, 42)),
    ("put m 1 -42 h=a", ok("m", H, S, -42)),
    ("put m 1 +42 h=a", ok("m", H, S, 42)),
    ("put m 1 007 h=a", ok("m", H, S, 7)),
    ("put m 1 9223372036854775807 h=a", ok("m", H, S, INT64_MAX)),
    ("put m 1 -9223372036854775808 h=a", ok("m", H, S, INT64_MIN)),
    ("put m 1 9223372036854775808 h=a", IV + "Overflow in 9223372036854775808"),
    ("put m 1 -9223372036854775809 h=a", IV + "Overflow in -9223372036854775809"),
    ("put m 1 +9223372036854775808 h=a", IV + "Overflow in +9223372036854775808"),
    ("put m 1 99999999999999999999 h=a", IV + "Value too long: 99999999999999999999"),
    ("put m 1 -99999999999999999999 h=a", IV + "Value too long: -99999999999999999999"),
    ("put m 1 - h=a", IV + "Just a sign, no value: -"),
    ("put m 1 NaN h=a", IV + "Invalid character 'N' in NaN"),
    ("put m 1 nan h=a", IV + "Invalid character 'n' in nan"),
    ("put m 1 Infinity h=a", IV + "Invalid character 'I' in Infinity"),
    ("put m 1 -Infinity h=a", IV + "Invalid character 'I' in -Infinity"),
    ("put m 1 inf h=a", IV + "Invalid character 'i' in inf"),
    ("put m 1 0x10 h=a", IV + "Invalid character 'x' in 0x10"),
    ("put m 1 1,5 h=a", IV + "Invalid character ',' in 1,5"),
    ("put m 1 12abc h=a", IV + "Invalid character 'a' in 12abc"),
    ("put m 1 1_000 h=a", IV + "Invalid character '_' in 1_000"),
    ("put m 1 \u0663 h=a", IV + "Invalid character '\u0663' in \u0663"),
    ("put m 1 1.5 h=a", ok("m", H, S, 1.5)),
    ("put m 1 .5 h=a", ok("m", H, S, 0.5)),
    ("put m 1 5. h=a", ok("m", H, S, 5.0)),
    ("put m 1 -.5 h=a", ok("m", H, S, -0.5)),
    ("put m 1 +1.5 h=a", ok("m", H, S, 1.5)),
    ("put m 1 -4.2e-3 h=a", ok("m", H, S, -4.2e-3)),
    ("put m 1 1.3E3 h=a", ok("m", H, S, 1300.0)),
    ("put m 1 1e3 h=a", ok("m", H, S, 1000.0)),
    ("put m 1 1e-999 h=a", ok("m", H, S, 0.0)),
    ("put m 1 1e999 h=a", IA + "value is NaN or Infinite: Infinity for metric=m timestamp=1"),
    ("put m 1 -1e999 h=a", IA + "value is NaN or Infinite: -Infinity for metric=m timestamp=1"),
    (
        "put m 1356998400.5 1e999 h=a",
        IA + "value is NaN or Infinite: Infinity for metric=m timestamp=13569984005",
    ),
    ("put m 1 1.2.3 h=a", IV + "multiple points"),
    ("put m 1 1.2.3x h=a", IV + "multiple points"),
    ("put m 1 -..5 h=a", IV + "multiple points"),
    ("put m 1 12e h=a", IV + 'For input string: "12e"'),
    ("put m 1 12e+ h=a", IV + 'For input string: "12e+"'),
    ("put m 1 . h=a", IV + 'For input string: "."'),
    ("put m 1 e5 h=a", IV + 'For input string: "e5"'),
    ("put m 1 1e5.5 h=a", IV + 'For input string: "1e5.5"'),
    ("put m 1 NaN.0 h=a", IV + 'For input string: "NaN.0"'),
    ("put m 1 Infinity.0 h=a", IV + 'For input string: "Infinity.0"'),
    ("put m 1 1_0.5 h=a", IV + 'For input string: "1_0.5"'),
    ("put m 1 \u0661.\u0665 h=a", IV + 'For input string: "\u0661.\u0665"'),
    # Java oddities deliberately not replicated (spec §1.5): suffixes, hex, whitespace
    ("put m 1 1.5f h=a", IV + 'For input string: "1.5f"'),
    ("put m 1 0x1.8p1 h=a", IV + 'For input string: "0x1.8p1"'),
    ("put m 1 1.5\t h=a", IV + 'For input string: "1.5\t"'),
    # --- order: the first failing step wins ---------------------------------------------------
    ("put m abc 2 h", IV + "Invalid character 'a' in abc"),  # ts before tags
    ("put m 0  h", IA + "invalid timestamp: 0"),  # ts <= 0 before empty value
    ("put m 1 x h", IA + "invalid tag: h"),  # tags before the value
    ("put m 1 x h=a", IV + "Invalid character 'x' in x"),
    ("put m 1 1e999 h=a h=b", Prefix(IA + "duplicate tag: h=b, tags={")),
    ("put m 99999999999999 x h=a", IV + "Invalid character 'x' in x"),  # value before range
    (
        "put m 99999999999999 1e999 h=a",
        IA + "value is NaN or Infinite: Infinity for metric=m timestamp=99999999999999",
    ),
    ("put m! 99999999999999 1 h=a", Prefix(IA + "bad timestamp=99999999999999 when")),
    ("put m! 1 1 ", IA + "Need at least one tag (metric=m!, tags={})"),
    (
        "put m! 1 1 a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1",
        Prefix(IA + "Too many tags: 9 maximum allowed: 8, tags: {"),
    ),
    ("put m! 1 1 a!=1", IA + 'Invalid metric name ("m!"): illegal character: !'),
    # --- step 9: tag count ---------------------------------------------------------------------
    (
        "put m 1 2 a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1",
        ok("m", {k: "1" for k in "abcdefgh"}, S, 2),
    ),
    (
        "put m 1 2 a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1",
        Prefix(IA + "Too many tags: 9 maximum allowed: 8, tags: {"),
    ),
    # --- step 10: characters -------------------------------------------------------------------
    (
        "put sys.cpu!user 1356998400 1 host=web01",
        IA + 'Invalid metric name ("sys.cpu!user"): illegal character: !',
    ),
    ("put a-b_c.d/E9 1 2 h=a", ok("a-b_c.d/E9", H, S, 2)),
    (
        "put temp\u00e9rature 1 2 h=\u00e9t\u00e9",
        ok("temp\u00e9rature", {"h": "\u00e9t\u00e9"}, S, 2),
    ),
    ("put \u6771\u4eac 1 2 \u03a9=\u0416", ok("\u6771\u4eac", {"\u03a9": "\u0416"}, S, 2)),
    ("put m 1 2 a:b=1", IA + 'Invalid tag name with value [1] ("a:b"): illegal character: :'),
    ("put m 1 2 h=a:b", IA + 'Invalid tag value with key [h] ("a:b"): illegal character: :'),
    ("put m 1 2 h=a! k!=v", IA + 'Invalid tag value with key [h] ("a!"): illegal character: !'),
    ("put m 1 2 k!=v! h=a", IA + 'Invalid tag name with value [v!] ("k!"): illegal character: !'),
    # letters outside the BMP fail (Java tests UTF-16 code units)
    (
        "put m\U0001d400 1 2 h=a",
        IA + 'Invalid metric name ("m\U0001d400"): illegal character: \U0001d400',
    ),
    (
        "put m 1 2 h=\u0663",
        IA + 'Invalid tag value with key [h] ("\u0663"): illegal character: \u0663',
    ),
    (
        "put m 1 2 h=\u00b2",
        IA + 'Invalid tag value with key [h] ("\u00b2"): illegal character: \u00b2',
    ),
    # UTF-8 read as Latin-1 (mojibake): the diaeresis is not a letter
    (
        "put m 1 2 h=\u00c3\u00a8",
        IA + 'Invalid tag value with key [h] ("\u00c3\u00a8"): illegal character: \u00a8',
    ),
    # --- ovh.auth pseudo-tag (§4, §6.6-6.7) -----------------------------------------------------
    ("put m 1 2 ovh.auth=id:key h=a", ok("m", H, S, 2, "id:key")),
    ("put m 1 2 h=a ovh.auth=id:key", ok("m", H, S, 2, "id:key")),
    (
        "put m 1 2 a=1 b=1 c=1 d=1 ovh.auth=i:k e=1 f=1 g=1 h=1",
        ok("m", {k: "1" for k in "abcdefgh"}, S, 2, "i:k"),
    ),
    ("put m 1 2 ovh.auth=id:key", IA + "Need at least one tag (metric=m, tags={})"),
    ("put m 1 2 ovh.auth=", IA + "invalid tag: ovh.auth="),
    ("put m 1 2 ovh.auth=a=b h=a", IA + "invalid tag: ovh.auth=a=b"),
    ("put m 1 2 ovh.auth=i:k ovh.auth=i:k h=a", ok("m", H, S, 2, "i:k")),
    ("put m 1 2 ovh.auth=i:k ovh.auth=j:l", IA + "duplicate tag: ovh.auth=j:l, tags={}"),
    ("put m 1 2 h=a h=b ovh.auth=i:k", IA + "duplicate tag: h=b, tags={h=a}"),
    ("put m 1 2 ovh.auth=i:k h=a h=b", IA + "duplicate tag: h=b, tags={h=a}"),  # token not shown
    (
        "put m 1 2 ovh.auth=i:k h=a!",
        IA + 'Invalid tag value with key [h] ("a!"): illegal character: !',
    ),
]


def _outcome(parser: PutParser, line: str, allow_no_tags: bool = False, slow: bool = False):
    try:
        fn = parser.parse_slow if slow else parser.parse
        return fn(line, allow_no_tags)
    except PutError as e:
        return str(e)


def _check(got, expected):
    if isinstance(expected, Prefix):
        assert isinstance(got, str) and got.startswith(expected), got
    elif isinstance(expected, str):
        assert got == expected
    else:
        assert got == expected
        assert type(got[2]) is type(expected[2])  # int stays int, float stays float
        assert repr(got[2]) == repr(expected[2])  # -0.0 etc.


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_put_line(line, expected):
    _check(_outcome(PutParser(cache_limit=0), line, slow=True), expected)
    parser = PutParser()
    _check(_outcome(parser, line), expected)
    try:  # (the telnet protocol's call for a line take_puts stopped at)
        got = PutParser().parse_new(line)
    except PutError as e:
        got = str(e)
    _check(got, expected)
    # Again once the line's series is known good, so that the fast path judges it.
    parts = line.split(" ", 4)
    if len(parts) == 5:
        _outcome(parser, f"put {parts[1]} 1 1 {parts[4]}")
    _check(_outcome(parser, line), expected)
    _check(_outcome(parser, line), expected)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("put m 1 2 ", ok("m", {}, S, 2)),
        ("put m 1 2 ovh.auth=id:key", ok("m", {}, S, 2, "id:key")),
        ("put m 1 2   ovh.auth=id:key  ", ok("m", {}, S, 2, "id:key")),
        ("put m 1 2 h=a", ok("m", H, S, 2)),
        ("put m 1 2", IA + "not enough arguments (need least 4, got 3)"),
        ("put m! 1 2 ", IA + 'Invalid metric name ("m!"): illegal character: !'),
    ],
)
def test_allow_no_tags(line, expected):
    """The iot profile accepts zero client tags (A8); the token adds its tags later."""
    parser = PutParser()
    for _ in range(2):
        _check(_outcome(parser, line, allow_no_tags=True), expected)
    # the cached zero-tag series must not leak into the strict mode
    got = _outcome(parser, line, allow_no_tags=False)
    if isinstance(expected, tuple) and not expected[0][2]:
        assert got == IA + "Need at least one tag (metric=m, tags={})"


def test_max_tags_is_configurable():
    parser = PutParser(max_tags=2)
    assert parser.parse("put m 1 2 a=1 b=2 ovh.auth=x")[0][2] == (("a", "1"), ("b", "2"))
    with pytest.raises(PutError) as err:
        parser.parse("put m 1 2 a=1 b=2 c=3")
    assert str(err.value).startswith(IA + "Too many tags: 3 maximum allowed: 2, tags: {")


def test_helpers():
    assert split_words(" put  m ") == ["", "put", "", "m", ""]
    assert parse_timestamp_ms("1356998400") == 1356998400000
    assert parse_timestamp_ms("1356998400.5") == 13569984005
    assert parse_timestamp_ms("4294967296") == 4294967296
    with pytest.raises(PutError, match=r"^put: illegal argument: bad timestamp=10000000000000$"):
        parse_timestamp_ms("10000000000000")
    with pytest.raises(PutError, match=r"^put: illegal argument: invalid timestamp: 0$"):
        parse_timestamp_ms("0")
    assert parse_value("42") == 42 and isinstance(parse_value("42"), int)
    assert parse_value("1e999") == float("inf")  # the caller words the NaN/Inf error
    with pytest.raises(PutError, match=r"^put: invalid value: multiple points$"):
        parse_value("1.2.3")
    with pytest.raises(PutError, match=r"^put: invalid value: Empty string$"):
        parse_value("")
    assert name_error("metric name", "") == "Invalid metric name: empty string"
    assert name_error("metric name", "ok") is None
    assert unknown_command_reply("bogus") == "unknown command: bogus.  Try `help'."
    assert unknown_command_reply("") == "unknown command: .  Try `help'."
    assert help_reply() == "available commands: " + " ".join(HELP_COMMANDS) + " "
    assert UNAUTHENTICATED_PUT == "put: illegal argument: Unauthenticated command: put"
    assert issubclass(PutError, ValueError)


@pytest.mark.parametrize("first", ["parse", "parse_new"])
def test_fast_path_is_taken(monkeypatch, first):
    """Once a series is validated, plain timestamps and values skip the slow path."""
    parser = PutParser()
    getattr(parser, first)("put m 1356998400 1 h=a t=b")

    def boom(*args):
        raise AssertionError("slow path used")

    monkeypatch.setattr(PutParser, "parse_slow", boom)
    line = "put m {} {} h=a t=b"
    for ts, value, t_ns, v in [
        ("1356998400", "42", 1356998400 * S, 42),
        ("1356998400", "-42", 1356998400 * S, -42),
        ("1356998401", "72.5", 1356998401 * S, 72.5),
        ("1356998401", "-0.5", 1356998401 * S, -0.5),
        ("1356998400123", ".5", 1356998400123 * MS, 0.5),
        ("4294967296", "5.", 4294967296 * MS, 5.0),
        ("789", "123456789012345678", 789 * S, 123456789012345678),
    ]:
        got = parser.parse(line.format(ts, value))
        assert got == ((("m", None, (("h", "a"), ("t", "b"))), t_ns, v, None))
        assert type(got[2]) is type(v)


def test_fresh_parser_fast_path_rejects_empty_timestamp():
    """The fast path's last-timestamp memo must not match an empty word at first."""
    parser = PutParser()
    parser.parse("put m 1 2 h=a")
    with pytest.raises(PutError, match=r"^put: invalid value: Empty string$"):
        parser.parse("put m  5 h=a")


def test_a_new_plain_series_skips_the_slow_path(monkeypatch):
    """A line of a series never seen, with plain names, is taken by the fast
    path whole: its key is parse_slow's, with no call to it."""
    want = PutParser(cache_limit=0).parse_slow("put m 1356998400 1 t=b h=a")
    parser = PutParser()
    monkeypatch.setattr(PutParser, "parse_slow", lambda *a: pytest.fail("slow path used"))
    assert parser.parse("put m 1356998400 1 t=b h=a") == want


@pytest.mark.parametrize(("tags", "max_tags"), [
    ("a=1 b=2 c=3", 2),  # more than max_tags: parse_slow's error
    ("h=a h=a", 8),  # a key twice, same value: parse_slow accepts it once
    ("h=a h=b", 8),  # a key twice: parse_slow's duplicate error
    ("ovh.auth=i:k h=a", 8),  # a token (and a colon)
    ("ovh.auth=ik h=a", 8),  # a token of plain characters
    ("h=a  t=b", 8),  # two spaces: an empty word, skipped by parse_slow
    ("h=\u00e9", 8),  # a letter outside ASCII
])
def test_a_new_series_learn_refuses_goes_to_parse_slow(monkeypatch, tags, max_tags):
    """What `_learn` refuses is judged by parse_slow: same result, same text."""
    line = f"put m 1356998400 1 {tags}"
    want = _outcome(PutParser(max_tags, cache_limit=0), line, False, slow=True)
    calls = []
    slow = PutParser.parse_slow

    def counted(self, *args):
        calls.append(args)
        return slow(self, *args)

    monkeypatch.setattr(PutParser, "parse_slow", counted)
    assert _outcome(PutParser(max_tags), line, False) == want
    assert calls


def test_cache_is_bounded():
    parser = PutParser(cache_limit=3)
    for i in range(10):
        assert parser.parse(f"put m{i} 1 2 h=a")[0][0] == f"m{i}"
        assert len(parser._cache) <= 3
    assert parser.parse("put m9 2 3 h=a") == ok("m9", H, 2 * S, 3)


# --- fast path == slow path -------------------------------------------------------------------

_METRICS = ["m", "sys.cpu", "", "bad!", "temp\u00e9rature", "m\U0001d400", "\u0661"]
_TAG_WORDS = [
    "h=a", "h=b", "t=1", "ovh.auth=i:k", "ovh.auth=j:l", "", "x", "a=b=c", "=v", "k=",
    "\u00e9=\u00fc", "k!=v", "k=v!", "a:b=1", "h=a\tb",
]  # fmt: skip
_TS = [
    "1356998400", "1356998400123", "1356998400.5", "1356998400.123", "4294967295", "4294967296",
    "9999999999999", "10000000000000", "0", "-1", "+5", "00", "0000000000001", "", "abc",
    "\u0661\u0662", "1_0", "+", ".", "789", "12345678901234567890", "9223372036854775808",
]  # fmt: skip
_VALUES = [
    "42", "-42", "+42", "72.5", "-.5", "5.", ".", "-", "--5", "1.2.3", "1e999", "1.5e3", "nan",
    "inf", "NaN", "1_0.5", "\u0661.\u0665", "\u0663", "1.5\t", "\t1.5", "9" * 18, "9" * 19,
    "-" + "9" * 18, "", "+.5", "0.0", "-0.0", "-0", "1e5", "0x10", "1" + "0" * 400 + ".0",
]  # fmt: skip

_ts_st = st.one_of(
    st.sampled_from(_TS),
    st.integers(-(2**64), 2**64).map(str),
    st.text(alphabet="0123456789.+-e_\u0661", max_size=15),
)
_value_st = st.one_of(
    st.sampled_from(_VALUES),
    st.integers(-(2**64), 2**64).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.-+eE_\tnaif\u0663", max_size=25),
)
_series_st = st.tuples(
    st.one_of(st.sampled_from(_METRICS[:2]), st.sampled_from(_METRICS)),
    st.one_of(
        # mostly valid series, so that the fast path gets to judge the ts and value
        st.sampled_from(["h=a", "h=a t=1", " h=a  t=1 ", "ovh.auth=i:k h=a", "", "ovh.auth=i:k"]),
        st.lists(st.sampled_from(_TAG_WORDS), max_size=10).map(" ".join),
    ),
)


@pytest.mark.parametrize("tags", ["h=a", "ovh.auth=i:k h=a", ""])
def test_fast_path_matches_slow_path_on_pools(tags):
    """Every timestamp x value of the pools below, on a series the fast path knows."""
    for allow in (False, True):
        cached = PutParser()
        reference = PutParser(cache_limit=0)
        _outcome(cached, f"put m 1356998400 1 {tags}", allow)
        for ts in _TS:
            for value in _VALUES:
                for line in (f"put m {ts} {value} {tags}", f"put m 789 {value} {tags}"):
                    got = _outcome(cached, line, allow)
                    want = _outcome(reference, line, allow, slow=True)
                    assert got == want, line
                    if isinstance(want, tuple):
                        assert repr(got[2]) == repr(want[2]), line


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    series=st.lists(_series_st, min_size=1, max_size=4),
    points=st.lists(
        st.tuples(st.integers(0, 3), _ts_st, _value_st, st.booleans()), min_size=1, max_size=30
    ),
)
def test_fast_path_matches_slow_path(series, points):
    """Whatever the fast path accepts, the slow path accepts with the same result,
    and every rejection carries the slow path's text."""
    cached = PutParser()
    reference = PutParser(cache_limit=0)
    lines = [(f"put {m} 1356998400 1 {tags}", allow) for m, tags in series for allow in (0, 1)]
    for i, ts, value, allow in points:
        m, tags = series[i % len(series)]
        lines.append((f"put {m} {ts} {value} {tags}", allow))
    for line, allow in lines:
        got = _outcome(cached, line, bool(allow))
        want = _outcome(reference, line, bool(allow), slow=True)
        assert got == want, line
        if isinstance(want, tuple):
            assert repr(got[2]) == repr(want[2]), line


@pytest.mark.parametrize(("line", "reply"), [
    ("put m %s 1 h=a" % ("1" * 5000), IV + "Value too long: " + "1" * 5000),
    ("put m 1 %s h=a" % ("1" * 5000), IV + "Value too long: " + "1" * 5000),
    ("put m 1 -%s h=a" % ("1" * 5000), IV + "Value too long: -" + "1" * 5000),
    ("put m 1.%s 1 h=a" % ("1" * 5000), IV + "Value too long: 1" + "1" * 5000),
    ("put m 1 1.%s h=a" % ("1" * 5000), ok("m", H, S, float("1." + "1" * 5000))),
    ("put m 1 1e%s h=a" % ("1" * 5000),
     IA + "value is NaN or Infinite: Infinity for metric=m timestamp=1"),
], ids=["timestamp", "value", "negative value", "dotted timestamp", "long float",
        "float exponent"])
def test_numbers_past_pythons_int_digit_limit(line, reply):
    """5000 digits (Python's int() stops at 4300) get OpenTSDB's own replies."""
    test_put_line(line, reply)


def test_the_fast_path_holds_nothing_of_a_batch_it_is_done_with() -> None:
    """Once `take_puts` is given the next batch, the parser refers to no column
    of the batch before, so a committed batch is freed at once (with many
    series, a batch's columns stayed alive for as long as any of its series was
    not seen again)."""
    import gc

    p = PutParser()
    lines = [f"put m 1356998400 {i} host=h{i % 3}" for i in range(6)]
    for line in lines[:3]:
        p.parse(line)  # the slow path: the series are known from now on
    first = SampleSet()
    assert p.take_puts(lines, 0, first) == 6
    assert sorted(len(c) for c in first.columns.values()) == [2, 2, 2]
    columns = list(first.columns.values())
    second = SampleSet()
    assert p.take_puts(lines[:1], 0, second) == 1  # only host=h0 comes again
    del first
    for col in columns:
        assert gc.get_referrers(col) == [columns]
    # within a batch, a series' column is found again, not made again
    assert p.take_puts(lines, 0, second) == 6
    assert sorted(len(c) for c in second.columns.values()) == [2, 2, 3]


def test_a_single_line_parse_leaves_the_live_batch_columns_alone() -> None:
    """`parse` tries the fast path on a batch of its own: the batch being filled
    keeps its columns for every other series, and no generation is reused, so
    a column is never taken from the wrong batch."""
    p = PutParser()
    lines = [f"put m 1356998400 {i} host=h{i % 3}" for i in range(6)]
    for line in lines[:3]:
        p.parse(line)
    live = SampleSet()
    assert p.take_puts(lines, 0, live) == 6
    columns = dict(live.columns)
    generation = p._g
    key, t, v, _ = p.parse("put m 1356998460 9 host=h1")  # the fast path, apart
    assert (key[2], t, v) == ((("host", "h1"),), 1356998460 * S, 9)
    assert p._g is generation  # the live batch's columns are still known
    assert p.take_puts(lines, 0, live) == 6
    assert all(live.columns[k] is c and len(c) == 4 for k, c in columns.items())
    fresh = SampleSet()  # the next batch: its own columns, in the right places
    assert p.take_puts(lines[3:], 0, fresh) == 3
    assert {k[2][0][1]: c.values for k, c in fresh.columns.items()} == {
        "h0": [3], "h1": [4], "h2": [5]}


def _wide_lines(series: int, rounds: int, t0: int = 1356998400) -> list[str]:
    return [f"put m {t0 + r} {r * series + i} host=h{i}" for r in range(rounds)
            for i in range(series)]


def test_a_wide_batch_is_taken_as_rows_and_a_narrow_one_as_columns() -> None:
    """After a batch with fewer than WIDE_RATIO points per series, the next
    batch's points go in as rows, with the same points; a batch with many points
    per series turns the one after it back to columns."""
    from tsnet.protocols.opentsdb.telnet_parse import WIDE_JUDGED, WIDE_RATIO

    p = PutParser(cache_limit=10 * WIDE_JUDGED)
    wide = _wide_lines(2 * WIDE_JUDGED, 1)
    for line in wide:
        p.parse(line)
    first = SampleSet()
    assert p.take_puts(wide, 0, first) == len(wide)
    assert not first.keys and len(first.columns) == len(wide)  # nothing judged yet
    second = SampleSet()
    assert p.take_puts(wide, 0, second) == len(wide)
    assert not second.columns
    assert second.keys == [p.parse(line)[0] for line in wide]
    assert second.times == [1356998400 * S] * len(wide)
    assert second.values == list(range(len(wide)))
    narrow = _wide_lines(10, 2 * WIDE_RATIO * WIDE_JUDGED // 10)
    for line in narrow[:10]:
        p.parse(line)
    third = SampleSet()  # still wide (judged on the batch before), then narrow
    assert p.take_puts(narrow, 0, third) == len(narrow)
    assert len(third.keys) == len(narrow)
    fourth = SampleSet()
    assert p.take_puts(narrow, 0, fourth) == len(narrow)
    assert not fourth.keys and len(fourth.columns) == 10
    assert sorted(map(len, fourth.columns.values())) == [len(narrow) // 10] * 10


@pytest.mark.parametrize("host", ["h", "\u00e9"], ids=["plain", "letter"])
def test_a_batch_of_new_series_is_judged_too(host: str) -> None:
    """A fleet's first batch is all new series, taken by the fast path when
    their names are plain (`_learn`), else every line by the slow path
    (`add`); the batch must be judged either way, so the next one goes in as
    rows; a slow-path batch of one series, many points, turns it back."""
    from tsnet.protocols.opentsdb.telnet_parse import WIDE_JUDGED

    p = PutParser(cache_limit=10 * WIDE_JUDGED)
    wide = [line.replace("host=h", f"host={host}") for line in _wide_lines(2 * WIDE_JUDGED, 1)]
    first = SampleSet()
    for line in wide:  # as the protocol does: the fast path first, then the slow one
        taken = p.take_puts([line], 0, first)
        assert taken == (host == "h")
        if not taken:
            key, t, v, _ = p.parse(line)
            p.add(first, key, t, v)
    assert len(first.columns) == len(wide) and not first.keys
    second = SampleSet()
    assert p.take_puts(wide, 0, second) == len(wide)
    assert not second.columns and len(second.keys) == len(wide)
    narrow = [f"put one {1356998400 + r} {r} host=x" for r in range(2 * WIDE_JUDGED)]
    third = SampleSet()  # (rows: judged on the batch before)
    for line in narrow:
        if not p.take_puts([line], 0, third):
            p.add(third, *p.parse(line)[:3])
    assert len(third.keys) == len(narrow)
    fourth = SampleSet()
    assert p.take_puts(narrow, 0, fourth) == len(narrow)
    assert not fourth.keys and list(map(len, fourth.columns.values())) == [len(narrow)]


def test_a_batch_with_rows_stays_rows_and_add_follows_it() -> None:
    """Storage puts rows after columns, so once a batch holds rows its points
    never go to a column again: not when it comes back after another batch
    judged narrow, and not through `add` (the slow path's lines)."""
    from tsnet.protocols.opentsdb.telnet_parse import WIDE_JUDGED

    p = PutParser(cache_limit=10 * WIDE_JUDGED)
    wide = _wide_lines(2 * WIDE_JUDGED, 1)
    for line in wide:
        p.parse(line)
    p.take_puts(wide, 0, SampleSet())
    rows = SampleSet()
    p.take_puts(wide[:5], 0, rows)
    assert len(rows.keys) == 5 and not rows.columns
    key = p.parse(wide[5])[0]
    p.add(rows, key, 7 * S, 1.5)  # a slow path point of the same batch: a row too
    assert (rows.keys[-1], rows.times[-1], rows.values[-1]) == (key, 7 * S, 1.5)
    narrow = _wide_lines(1, 2 * WIDE_JUDGED)
    p.parse(narrow[0])
    other = SampleSet()
    p.take_puts(narrow, 0, other)
    p.take_puts(narrow, 0, SampleSet())  # judged narrow: columns from now on...
    p.take_puts(wide[:3], 0, rows)  # ...but not into the batch that has rows
    assert len(rows.keys) == 9 and not rows.columns
    apart = SampleSet()
    p.add(apart, key, 8 * S, 2)  # a batch the fast path never filled: a column
    assert not apart.keys and apart.columns[key].values == [2]
