"""ATSD command parsing (spec §3, §4): every command, field rule and error."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tsnet.model import Message, Meta, Property, SampleSet, series_key
from tsnet.protocols.atsd import ATSD_REVISION
from tsnet.protocols.atsd.parse import (
    MAX_TIME_MS,
    CommandError,
    Control,
    MessageCommand,
    MetaCommand,
    PropertyCommand,
    SeriesCommand,
    SeriesFastPath,
    _template,
    parse_command,
    parse_iso_ms,
    parse_series_fast,
    parse_slow,
    quote,
    valid_timezone,
)

NAN = math.nan


def cmd(text: str):
    debug, command = parse_command(text)
    assert debug is False
    return command


def error(text: str) -> CommandError:
    with pytest.raises(CommandError) as e:
        parse_command(text)
    return e.value


def same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN, -0.0 not equal to 0.0, dict order too (repr is exact)."""
    return repr(a) == repr(b)


def test_revision_is_a_bare_integer() -> None:
    assert ATSD_REVISION == 19320
    assert str(ATSD_REVISION).isdigit()


# -- control commands and debug ------------------------------------------------------


@pytest.mark.parametrize("name", ["ping", "time", "version", "exit"])
def test_control(name: str) -> None:
    assert parse_command(name) == (False, Control(name))
    assert parse_command(name + "  ") == (False, Control(name))
    assert parse_command("debug " + name) == (True, Control(name))
    e = error(name + " e:x")
    assert (str(e), e.reason) == (f"Invalid command: {name} e:x ({name} takes no fields)", "syntax")


def test_debug_prefix() -> None:
    debug, c = parse_command("debug series e:a m:b=1")
    assert debug is True
    assert c == SeriesCommand("a", [("b", 1.0, None)], {}, False, None)
    assert parse_command("debug  series e:a m:b=1")[0] is True  # extra spaces tolerated
    assert parse_command("  series e:a m:b=1")[1] == c  # leading spaces skipped
    assert parse_command("  debug series e:a m:b=1")[0] is True


@pytest.mark.parametrize(
    "text",
    [
        "unknown_command e:station_1 m:temperature=32.2",
        "my_command e:station_1 m:temperature=32.2",
        "SERIES e:a m:b=1",  # command names are lower case only (§10.9)
        "Series e:a m:b=1",
        "csv p:parser",  # extended commands are not implemented (§4.8)
        "nmon p:parser e:e f:file.nmon",
        "picomp2 e:e",
        "put sys.cpu 1 2 host=a",  # third-party formats (§4.9)
        "debug",
        "",
    ],
)
def test_unknown_commands(text: str) -> None:
    e = error(text)
    assert str(e) == f"Invalid command: {text}"
    assert e.reason == "unknown_command"
    e = error("debug " + text)
    assert str(e) == f"Invalid command: {text}"  # without the debug prefix


def test_error_text_is_one_line_and_bounded() -> None:
    e = error('bogus x:"a\nb\rc"')
    assert str(e) == 'Invalid command: bogus x:"a\\nb\\rc"'
    e = error("bogus " + "x" * 5000)
    assert str(e) == "Invalid command: bogus " + "x" * 994 + "..."


# -- series ------------------------------------------------------------------------------


S = SeriesCommand

SERIES_OK = [
    # §3.4 case folding example
    (
        "series e:nurSWG m:Temperature=38.5 t:Degrees=Celsius",
        S("nurswg", [("temperature", 38.5, None)], {"degrees": "Celsius"}, False, None),
    ),
    (
        "series e:station_1 m:temperature=32.2 m:humidity=81.4 d:2016-05-15T00:10:00Z",
        S(
            "station_1",
            [("temperature", 32.2, None), ("humidity", 81.4, None)],
            {},
            False,
            1463271000000,
        ),
    ),
    (
        "series e:station_2 m:temperature=32.2 s:1463271035",
        S("station_2", [("temperature", 32.2, None)], {}, False, 1463271035000),
    ),
    # fields in any order, several spaces, trailing spaces
    (
        "series  ms:1  t:b=2 m:x=1   e:E t:a=1  ",
        S("e", [("x", 1.0, None)], {"b": "2", "a": "1"}, False, 1),
    ),
    # x: text alone is NaN; with m: one sample; the prefix ends at the first colon
    ("series e:a x:BA:ACTIVE.1=Inactive", S("a", [("ba:active.1", NAN, "Inactive")], {})),
    ('series e:a m:m=1 x:m="a b"', S("a", [("m", 1.0, "a b")], {})),
    ('series e:a x:m="a b" m:m=1', S("a", [("m", 1.0, "a b")], {})),
    ('series e:a x:m=""', S("a", [("m", NAN, "")], {})),
    ("series e:a m:m=NaN", S("a", [("m", NAN, None)], {})),
    # append
    ("series e:a x:m=t a:true", S("a", [("m", NAN, "t")], {}, True)),
    ('series e:a x:m=t a:"false"', S("a", [("m", NAN, "t")], {}, False)),
    # tag values are kept as sent: case, spaces, CR, LF; names lower-cased, Unicode too
    ('series e:Сервер m:Темп=1 t:Ключ=" Зна \r\n чение "',
     S("сервер", [("темп", 1.0, None)], {"ключ": " Зна \r\n чение "})),
    # quoting (§3.3)
    ('series e:"ab\\=\\\\""cd" m:m=1', S('ab\\=\\\\"cd', [("m", 1.0, None)], {})),
    ("series e:back\\slash m:m=1", S("back\\slash", [("m", 1.0, None)], {})),
    ('series e:a m:m=1 t:tag="OFF- RAMP "" U"", I"',
     S("a", [("m", 1.0, None)], {"tag": 'OFF- RAMP " U", I'})),
    ('series e:a m:"m=x"=1 t:"a""b"=c', S("a", [("m=x", 1.0, None)], {'a"b': "c"})),
    ("series e:a m:m=1 t:a=b=c", S("a", [("m", 1.0, None)], {"a": "b=c"})),  # tolerated
    ('series e:a m:m="5"', S("a", [("m", 5.0, None)], {})),
    # reserved versioning tags are ordinary tags here (storage decides)
    ("series e:a m:m=1 t:$version_status=ok",
     S("a", [("m", 1.0, None)], {"$version_status": "ok"})),
    ("series e:a m:m=1 ms:0", S("a", [("m", 1.0, None)], {}, False, 0)),
    (f"series e:a m:m=1 ms:{MAX_TIME_MS}", S("a", [("m", 1.0, None)], {}, False, MAX_TIME_MS)),
    ("series e:a m:m=1 ms:00042", S("a", [("m", 1.0, None)], {}, False, 42)),
]


@pytest.mark.parametrize(("text", "expected"), SERIES_OK)
def test_series(text: str, expected: SeriesCommand) -> None:
    got = cmd(text)
    assert same(got, expected)
    assert same(parse_slow(text), expected)
    assert same(SeriesFastPath().parse(text)[1], expected)


def test_series_keys() -> None:
    c = cmd("series e:E m:b=1 m:a=2 t:z=1 t:y=2")
    assert isinstance(c, SeriesCommand)
    tags = (("y", "2"), ("z", "1"))
    assert c.keys() == [("b", "e", tags), ("a", "e", tags)]
    assert c.keys()[0] == series_key("b", {"z": "1", "y": "2"}, "e")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("-1", -1.0),
        ("+5", 5.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("1.5e3", 1500.0),
        ("2E-2", 0.02),
        ("-1.2E+3", -1200.0),
        ("2.2E1", 22.0),
        ("0", 0.0),
        ("00012.50", 12.5),
        ("1" * 30, float("1" * 30)),  # beyond long: rounded (float metric)
    ],
)
def test_series_numbers(value: str, expected: float) -> None:
    c = cmd(f"series e:a m:m={value}")
    assert isinstance(c, SeriesCommand)
    assert c.samples == [("m", expected, None)]


@pytest.mark.parametrize(
    "value",
    ["32,2", "1,000.5", "abc", "1.2.3", "", "Infinity", "-Infinity", "inf", "nan", "NAN",
     "1_000", "0x10", "1e", "e5", ".", "+", "--1", "1e5.5", "\u0661", "1 ", "1d", "1f"],
)
def test_series_bad_numbers(value: str) -> None:
    text = f"series e:a m:cpu={quote(value) if ' ' in value else value}"
    e = error(text)
    assert e.reason == "bad_number"
    assert str(e).endswith(f"(bad number in m:cpu={value if ' ' not in value else quote(value)})")


def test_series_number_overflow() -> None:
    e = error("series e:a m:m=1e999")
    assert (str(e), e.reason) == (
        "Invalid command: series e:a m:m=1e999 (number out of range in m:m=1e999)",
        "bad_number",
    )


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ("series m:m=1", "missing_field", "no e: entity"),
        ("series e:a", "missing_field", "no m: or x: metric"),
        ("series e:a t:k=v", "missing_field", "no m: or x: metric"),
        ("series", "missing_field", "no e: entity"),
        ("series e:a m:m=1 e:b", "repeated_field", "repeated field in e:b"),
        ("series e:a m:m=1 m:M=2", "repeated_field", "repeated metric in m:M=2"),
        ("series e:a x:m=1 x:m=2", "repeated_field", "repeated metric in x:m=2"),
        ("series e:a m:m=1 t:k=1 t:K=2", "repeated_field", "repeated tag in t:K=2"),
        ("series e:a m:m=1 a:true a:true", "repeated_field", "repeated field in a:true"),
        ("series e:a m:m=1 ms:1 s:1", "repeated_field", "more than one time field in s:1"),
        ("series e:a m:m=1 ms:1 ms:1", "repeated_field", "more than one time field in ms:1"),
        ('series e:a m:m=1 t:k=""', "bad_value", 'empty tag value in t:k=""'),
        ("series e:a m:m=1 t:k=", "bad_value", "empty tag value in t:k="),
        ('series e:"a b" m:m=1', "bad_name", 'bad entity name in e:"a b"'),
        ('series e:"a\tb" m:m=1', "bad_name", 'bad entity name in e:"a\tb"'),
        ('series e:"" m:m=1', "bad_name", 'bad entity name in e:""'),
        ("series e: m:m=1", "bad_name", "bad entity name in e:"),
        ('series e:a m:"m m"=1', "bad_name", 'bad metric name in m:"m m"=1'),
        ('series e:a m:m=1 t:"k k"=v', "bad_name", 'bad tag name in t:"k k"=v'),
        ("series e:a m:m=1 t:=v", "bad_name", "bad tag name in t:=v"),
        ("series e:a m:=1", "bad_name", "bad metric name in m:=1"),
        ("series e:a m:m=1 a:yes", "bad_value", "bad boolean in a:yes"),
        ("series e:a m:m=1 q:1", "syntax", "unknown field q: in q:1"),
        ("series e:a m:m=1 E:b", "syntax", "unknown field E: in E:b"),
        ("series e:a m:m=1 p:true", "syntax", "unknown field p: in p:true"),
        ("series e:a m:m=1 loose", "syntax", "no prefix: in loose"),
        ("series e:a m:m=1 :x", "syntax", "unknown field : in :x"),
        ("series e:a m:m", "syntax", "no = after the name in m:m"),
        ('series e:a m:"m" =1', "syntax", 'no = after the name in m:"m"'),
        ('series e:a x:m="abc', "syntax", 'unterminated quote in x:m="abc'),
        ('series e:a x:m="a"b m:n=1', "syntax", 'text after a closing quote in x:m="a"b'),
        ('series e:a m:m=1 t:k=a"b"', "syntax", 'a quote inside unquoted text in t:k=a"b"'),
        ('series e:a"b m:m=1', "syntax", 'a quote inside unquoted text in e:a"b'),
        ("series e:a m:m=1 t:k=a\tb", "syntax", "a control character outside quotes in t:k=a\tb"),
        ("series e:a m:m=1 ms:-1", "time_range", "time out of range in ms:-1"),
        ("series e:a m:m=1 s:-5", "time_range", "time out of range in s:-5"),
        (f"series e:a m:m=1 ms:{MAX_TIME_MS + 1}", "time_range",
         f"time out of range in ms:{MAX_TIME_MS + 1}"),
        ("series e:a m:m=1 s:4294969200", "time_range", "time out of range in s:4294969200"),
        ("series e:a m:m=1 ms:" + "9" * 30, "time_range", "time out of range in ms:" + "9" * 30),
        ("series e:a m:m=1 ms:1.5", "bad_time", "bad time in ms:1.5"),
        ("series e:a m:m=1 ms:+1", "bad_time", "bad time in ms:+1"),
        ("series e:a m:m=1 ms:abc", "bad_time", "bad time in ms:abc"),
        ("series e:a m:m=1 ms:", "bad_time", "bad time in ms:"),
        ("series e:a m:m=1 s:1e3", "bad_time", "bad time in s:1e3"),
        ("series e:a m:m=1 d:1463271035000", "bad_time", "bad time in d:1463271035000"),
        ("series e:a m:m=1 d:1969-12-31T23:59:59.999Z", "time_range",
         "time out of range in d:1969-12-31T23:59:59.999Z"),
        ("series e:a m:m=1 d:2106-02-07T07:00:00Z", "time_range",
         "time out of range in d:2106-02-07T07:00:00Z"),
    ],
)
def test_series_errors(text: str, reason: str, detail: str) -> None:
    e = error(text)
    assert e.reason == reason
    assert str(e) == f"Invalid command: {text} ({detail})"
    e2 = error("debug " + text)
    assert str(e2) == str(e)


def test_series_tag_limit() -> None:
    tags = " ".join(f"t:k{i}=v" for i in range(1024))
    c = cmd(f"series e:a m:m=1 {tags}")
    assert isinstance(c, SeriesCommand)
    assert len(c.tags) == 1024
    e = error(f"series e:a m:m=1 {tags} t:one=more")
    assert e.reason == "too_many_tags"
    assert str(e).endswith("(1025 tags, at most 1024)")


# -- time fields (§3.7) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2016-06-09T16:15:04.005Z", 1465488904005),
        ("2016-06-09T12:15:04.005-04:00", 1465488904005),
        ("2016-06-09T20:15:04.005+0400", 1465488904005),
        ("2016-06-09T16:15:04Z", 1465488904000),
        ("2016-06-09T16:15:04.0Z", 1465488904000),
        ("2016-06-09T16:15:04.1Z", 1465488904100),
        ("2016-06-09T16:15:04.12Z", 1465488904120),
        ("2016-06-09T16:15:45.003000005+00:00", 1465488945003),  # 9 digits, truncated
        ("2016-06-09T16:15:45.999999999Z", 1465488945999),
        ("2016-06-09T13:44:04-02:31", 1465488904000),
        ("2016-06-09T17:38:04+01:23", 1465488904000),
        ("2016-06-09T06:05:04-1010", 1465488904000),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000+00:00", 0),
        ("2106-02-07T06:59:59.999Z", MAX_TIME_MS),
        ("2000-02-29T00:00:00Z", 951782400000),
        ("1969-12-31T23:00:00-01:00", 0),
    ],
)
def test_iso_times(text: str, ms: int) -> None:
    assert parse_iso_ms(text) == ms
    c = cmd(f"series e:a m:m=1 d:{text}")
    assert isinstance(c, SeriesCommand)
    assert c.time_ms == ms


@pytest.mark.parametrize(
    "text",
    [
        "2016-06-09T16:15:04",  # no zone
        "2016-06-09T16:15Z",  # no seconds
        "2016-06-09 16:15:04Z",
        "2016-06-09T16:15:04PST",
        "2016-06-09t16:15:04z",
        "2016-06-09T16:15:04.1234567890Z",  # 10 fraction digits
        "2016-06-09T16:15:04.Z",
        "2016-13-09T16:15:04Z",
        "2016-02-30T16:15:04Z",
        "2015-02-29T16:15:04Z",
        "1900-02-29T00:00:00Z",
        "2016-06-09T24:00:00Z",
        "2016-06-09T23:60:00Z",
        "2016-06-09T23:59:60Z",
        "2016-06-09T16:15:04+5:00",
        "2016-06-09T16:15:04+05",
        "2016-06-09T16:15:04+05:60",
        "2016-06-09T16:15:04+18:01",
        "16-06-09T16:15:04Z",
        "\uff12016-06-09T16:15:04Z",
    ],
)
def test_bad_iso_times(text: str) -> None:
    assert parse_iso_ms(text) is None
    e = error(f"series e:a m:m=1 d:{text}" if " " not in text else f'series e:a m:m=1 d:"{text}"')
    assert e.reason == "bad_time"


# -- property (§4.2) -------------------------------------------------------------------


P = PropertyCommand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "property e:station_2 t:location v:city=Cupertino v:state=CA v:country=USA",
            P("station_2", "location", {}, {"city": "Cupertino", "state": "CA", "country": "USA"}),
        ),
        (
            "property e:Nurswg t:Disk k:Mount=/ v:FS=ext4 ms:1",
            P("nurswg", "disk", {"mount": "/"}, {"fs": "ext4"}, 1),
        ),
        ('property e:a t:os v:os="Ubuntu=""14"""', P("a", "os", {}, {"os": 'Ubuntu="14"'})),
        ('property e:a t:os v:"os=name"=Ubuntu', P("a", "os", {}, {"os=name": "Ubuntu"})),
        ('property e:a t:os v:"os""name"=Ubuntu', P("a", "os", {}, {'os"name': "Ubuntu"})),
        # merge: blank values are kept as "" (they delete the stored tag)
        (
            'property e:a t:t v:status=OK v:message="" v:conn_time=12:10 v:x=" " v:y="\r\n"',
            P("a", "t", {}, {"status": "OK", "message": "", "conn_time": "12:10", "x": "",
                             "y": ""}),
        ),
        ("property e:a t:t v:k=v p:false", P("a", "t", {}, {"k": "v"}, None, False)),
        ("property e:a t:t v:k=v p:true", P("a", "t", {}, {"k": "v"}, None, True)),
        ("property e:a t:$entity_tags v:k=v", P("a", "$entity_tags", {}, {"k": "v"})),
        ('property e:a t:t v:k=" v "', P("a", "t", {}, {"k": " v "})),  # not trimmed
        ("property v:k=v t:t e:a d:1970-01-01T00:00:01Z", P("a", "t", {}, {"k": "v"}, 1000)),
    ],
)
def test_property(text: str, expected: PropertyCommand) -> None:
    assert cmd(text) == expected


def test_property_to_model() -> None:
    c = cmd("property e:a t:disk k:m=/ v:fs=ext4 v:gone=\"\"")
    assert isinstance(c, PropertyCommand)
    assert c.to_property(5) == Property("a", "disk", {"m": "/"}, {"fs": "ext4", "gone": ""}, 5)


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ("property t:t v:k=v", "missing_field", "no e: entity"),
        ("property e:a v:k=v", "missing_field", "no t: type"),
        ("property e:a t:t t:u v:k=v", "repeated_field", "repeated field in t:u"),
        ("property e:a t:t v:k=v v:K=w", "repeated_field", "repeated tag in v:K=w"),
        ("property e:a t:t k:k=v k:K=w v:a=b", "repeated_field", "repeated key in k:K=w"),
        ("property e:a t:t v:k=v p:false p:false", "repeated_field", "repeated field in p:false"),
        ("property e:a t:t v:k=v ms:1 d:1970-01-01T00:00:00Z", "repeated_field",
         "more than one time field in d:1970-01-01T00:00:00Z"),
        ('property e:a t:"a b" v:k=v', "bad_name", 'bad type name in t:"a b"'),
        ('property e:a t:t k:"a b"=c v:k=v', "bad_name", 'bad key name in k:"a b"=c'),
        ('property e:a t:t k:a="" v:k=v', "bad_value", 'empty key value in k:a=""'),
        ("property e:a t:t v:k=v p:no", "bad_value", "bad boolean in p:no"),
        ("property e:a t:t v:k=v x:1", "syntax", "unknown field x: in x:1"),
        ("property e:a t:t v:k=v ms:-1", "time_range", "time out of range in ms:-1"),
    ],
)
def test_property_errors(text: str, reason: str, detail: str) -> None:
    e = error(text)
    assert (str(e), e.reason) == (f"Invalid command: {text} ({detail})", reason)


@pytest.mark.parametrize(
    "text",
    [
        'property e:a t:t v:fs_type=""',  # the doc's delete example (§10.4)
        "property e:a t:t k:a=b",
        "property e:a t:t",
        'property e:a t:t k:a=b v:x="" v:y=" " v:z="\n"',
    ],
)
def test_property_without_non_empty_tag(text: str) -> None:
    e = error("debug " + text)
    assert e.reason == "empty_tags"
    assert str(e) == "Empty tag values in command: " + text.replace("\n", "\\n")
    assert str(e).startswith("Empty tag values in command")


def test_property_limit_counts_keys_and_tags() -> None:
    keys = " ".join(f"k:k{i}=v" for i in range(512))
    tags = " ".join(f"v:t{i}=v" for i in range(512))
    assert len(cmd(f"property e:a t:t {keys} {tags}").tags) == 512
    e = error(f"property e:a t:t {keys} {tags} v:x=y")
    assert e.reason == "too_many_tags"
    assert str(e).endswith("(1025 keys and tags, at most 1024)")


# -- message (§4.3) -------------------------------------------------------------------------


M = MessageCommand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'message e:server001 d:2015-03-04T12:43:20Z t:subject="my subject" m:"Hello, world"',
            M("server001", tags={"subject": "my subject"}, message="Hello, world",
              time_ms=1425473000000),
        ),
        (
            "message e:a t:Type=Security t:source=Auth t:SEVERITY=warning t:x=Y m:text",
            M("a", "Security", "Auth", "WARNING", {"x": "Y"}, "text"),
        ),
        ("message e:a m:hi", M("a", message="hi")),
        ("message e:a t:type=t", M("a", type="t")),  # a tag alone is enough
        ('message e:a t:k=v m:""', M("a", tags={"k": "v"})),  # m:"" is no text
        ("message e:a m:x p:false", M("a", message="x", persist=False)),
        ('message e:a m:"  padded  "', M("a", message="  padded  ")),  # kept as sent
        ('message e:a m:"a\nb"', M("a", message="a\nb")),
        ("message e:a m:a=b", M("a", message="a=b")),
    ]
    + [(f"message e:a t:severity={c}", M("a", severity=n)) for c, n in enumerate(
        ["UNDEFINED", "UNKNOWN", "NORMAL", "WARNING", "MINOR", "MAJOR", "CRITICAL", "FATAL"])]
    + [(f"message e:a t:severity={n}", M("a", severity=n.upper())) for n in [
        "undefined", "Unknown", "NORMAL", "warning", "minor", "Major", "critical", "fatal"]],
)
def test_message(text: str, expected: MessageCommand) -> None:
    assert cmd(text) == expected


def test_message_to_model() -> None:
    c = cmd("message e:a t:type=t t:source=s t:severity=6 t:k=v m:boom ms:7")
    assert isinstance(c, MessageCommand)
    assert c.to_message(7_000_000) == Message(
        "a", 7_000_000, "boom", "t", "s", "CRITICAL", {"k": "v"}
    )
    c = cmd("message e:a t:k=v")
    assert isinstance(c, MessageCommand)
    assert c.to_message(1) == Message("a", 1, "", None, None, None, {"k": "v"})


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ("message e:a", "missing_field", "no m: text and no t: tag"),
        ('message e:a m:""', "missing_field", "no m: text and no t: tag"),
        ("message m:x", "missing_field", "no e: entity"),
        ("message e:a m:x m:y", "repeated_field", "repeated field in m:y"),
        ("message e:a t:type=a t:TYPE=b", "repeated_field", "repeated tag in t:TYPE=b"),
        ("message e:a t:severity=8", "bad_value", "bad severity in t:severity=8"),
        ("message e:a t:severity=INFO", "bad_value", "bad severity in t:severity=INFO"),
        ("message e:a t:severity=-1", "bad_value", "bad severity in t:severity=-1"),
        ('message e:a t:k=""', "bad_value", 'empty tag value in t:k=""'),
        ("message e:a m:x p:1", "bad_value", "bad boolean in p:1"),
        ("message e:a m:x k:v", "syntax", "unknown field k: in k:v"),
        ("message e:a m:x s:1 ms:1", "repeated_field", "more than one time field in ms:1"),
    ],
)
def test_message_errors(text: str, reason: str, detail: str) -> None:
    e = error(text)
    assert (str(e), e.reason) == (f"Invalid command: {text} ({detail})", reason)


def test_message_tag_limit_counts_reserved_tags() -> None:
    tags = " ".join(f"t:k{i}=v" for i in range(1023))
    assert len(cmd(f"message e:a t:type=x {tags}").tags) == 1023
    assert error(f"message e:a t:type=x t:source=y {tags}").reason == "too_many_tags"


# -- metric and entity (§4.4, §4.5) -----------------------------------------------------------


def meta(text: str) -> dict:
    c = cmd(text)
    assert isinstance(c, MetaCommand)
    return c.fields


def test_metric_all_fields() -> None:
    c = cmd(
        'metric m:CPU_busy b:false l:"CPU Busy" d:"a\nb" p:DOUBLE i:Previous u:% f:"x=1"'
        " z:Europe/Berlin v:true a:Discard pe:false rd:30 min:-1.5 max:1e3"
        ' t:Team=Ops t:old=""'
    )
    assert c == MetaCommand(
        "metric",
        "cpu_busy",
        {
            "enabled": False,
            "label": "CPU Busy",
            "description": "a\nb",
            "data_type": "double",
            "interpolate": "previous",
            "units": "%",
            "filter": "x=1",
            "timezone": "Europe/Berlin",
            "versioned": True,
            "invalid_action": "discard",
            "persistent": False,
            "retention_days": 30,
            "min_value": -1.5,
            "max_value": 1000.0,
            "tags": {"team": "Ops", "old": ""},
        },
    )
    assert isinstance(c, MetaCommand)
    assert c.to_meta() == Meta("metric", "cpu_busy", c.fields)


def test_metric_resets_and_only_given_fields() -> None:
    assert meta("metric m:m") == {}
    assert meta('metric m:m l:"" d:"" u:"" f:"" z:"" i:"" p:"" a:"" rd:"" min:"" max:""') == {
        k: None
        for k in ("label", "description", "units", "filter", "timezone", "interpolate",
                  "data_type", "invalid_action", "retention_days", "min_value", "max_value")
    }
    assert meta("metric m:m z:") == {"timezone": None}  # unquoted empty is ""


@pytest.mark.parametrize("dt", ["short", "integer", "long", "float", "double", "decimal", "LONG"])
def test_metric_data_types(dt: str) -> None:
    assert meta(f"metric m:m p:{dt}") == {"data_type": dt.lower()}


@pytest.mark.parametrize(
    "action", ["none", "transform", "discard", "raise_error", "set_version_status", "RAISE_ERROR"]
)
def test_metric_invalid_actions(action: str) -> None:
    assert meta(f"metric m:m a:{action}") == {"invalid_action": action.lower()}


@pytest.mark.parametrize(
    "zone",
    ["UTC", "GMT", "GMT0", "UCT", "WET", "CET", "MET", "EET", "PRC", "ROK",
     "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata", "Etc/GMT+5"],
)
def test_time_zones_accepted(zone: str) -> None:
    assert valid_timezone(zone)
    assert meta(f"metric m:m z:{zone}") == {"timezone": zone}
    assert meta(f"entity e:e z:{zone}") == {"timezone": zone}


@pytest.mark.parametrize(
    "zone", ["HST", "PST", "EST", "MST", "Incorrect", "utc", "America", "../etc/passwd",
             "/etc/localtime", "Europe/Nowhere", "UTC "]
)
def test_time_zones_rejected(zone: str) -> None:
    assert not valid_timezone(zone)
    e = error(f"metric m:m z:{quote(zone)}")
    assert e.reason == "bad_value"
    assert "(unknown time zone in z:" in str(e)


@pytest.mark.parametrize(
    ("text", "reason", "detail"),
    [
        ("metric b:true", "missing_field", "no m: metric name"),
        ("metric m:a m:b", "repeated_field", "repeated field in m:b"),
        ("metric m:a l:x l:y", "repeated_field", "repeated field in l:y"),
        ("metric m:a t:k=1 t:K=2", "repeated_field", "repeated tag in t:K=2"),
        ("metric m:a p:int", "bad_value", "bad data type in p:int"),
        ("metric m:a p:lon", "bad_value", "bad data type in p:lon"),
        ("metric m:a i:PREVIOU", "bad_value", "bad interpolation in i:PREVIOU"),
        ("metric m:a i:bla", "bad_value", "bad interpolation in i:bla"),
        ("metric m:a a:drop", "bad_value", "bad invalid action in a:drop"),
        ("metric m:a v:tru", "bad_value", "bad boolean in v:tru"),
        ("metric m:a v:a", "bad_value", "bad boolean in v:a"),
        ("metric m:a b:yes", "bad_value", "bad boolean in b:yes"),
        ("metric m:a b:1", "bad_value", "bad boolean in b:1"),
        ("metric m:a b:'true'", "bad_value", "bad boolean in b:'true'"),
        ('metric m:a b:""', "bad_value", 'bad boolean in b:""'),
        ("metric m:a pe:Y", "bad_value", "bad boolean in pe:Y"),
        ("metric m:a rd:-1", "bad_number", "bad retention days in rd:-1"),
        ("metric m:a rd:1.5", "bad_number", "bad retention days in rd:1.5"),
        ("metric m:a rd:99999999999", "bad_number", "bad retention days in rd:99999999999"),
        ("metric m:a min:abc", "bad_number", "bad number in min:abc"),
        ("metric m:a max:NaN", "bad_number", "bad number in max:NaN"),
        ("metric m:a max:1e999", "bad_number", "number out of range in max:1e999"),
        ("metric m:a e:x", "syntax", "unknown field e: in e:x"),
        ("metric m:a ms:1", "syntax", "unknown field ms: in ms:1"),
        ('metric m:"a b"', "bad_name", 'bad metric name in m:"a b"'),
    ],
)
def test_metric_errors(text: str, reason: str, detail: str) -> None:
    e = error(text)
    assert (str(e), e.reason) == (f"Invalid command: {text} ({detail})", reason)


@pytest.mark.parametrize(
    "boolean",
    ["y", "Y", "yes", "1", "+", "'true'", '"tr\tue"', "non", "\u0442rue", "truee", "t"],
)
def test_strict_booleans(boolean: str) -> None:
    e = error(f"entity e:x b:{boolean}")
    assert (str(e), e.reason) == (f"Invalid command: entity e:x b:{boolean} (bad boolean in"
                                  f" b:{boolean})", "bad_value")


@pytest.mark.parametrize(("text", "value"), [("true", True), ('"true"', True), ("false", False),
                                            ('"false"', False), ("TRUE", True), ("False", False)])
def test_booleans(text: str, value: bool) -> None:
    assert meta(f"entity e:x b:{text}") == {"enabled": value}


def test_entity() -> None:
    assert cmd("entity e:x b:true") == MetaCommand("entity", "x", {"enabled": True})
    assert meta('entity e:X l:"Server X" i:LINEAR z:UTC t:Env=Prod t:gone=""') == {
        "label": "Server X",
        "interpolate": "linear",
        "timezone": "UTC",
        "tags": {"env": "Prod", "gone": ""},
    }
    assert meta('entity e:x l:"" i:"" z:""') == {
        "label": None, "interpolate": None, "timezone": None}
    assert cmd("entity e:Сервер").name == "сервер"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("entity b:true", "missing_field"),
        ('entity e:x t:"tag name"=v', "bad_name"),
        ("entity e:x b:yes", "bad_value"),
        ("entity e:x i:cubic", "bad_value"),
        ("entity e:x z:PST", "bad_value"),
        ("entity e:x p:float", "syntax"),
        ("entity e:x e:y", "repeated_field"),
    ],
)
def test_entity_errors(text: str, reason: str) -> None:
    assert error(text).reason == reason


# -- quoting round trips (§3.3) ---------------------------------------------------------------

# Names: anything without whitespace or control characters; values: anything.
_NAME = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="\x85"),
    min_size=1,
    max_size=20,
).filter(lambda s: not any(c.isspace() for c in s))
_VALUE = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


def _needs_quotes(s: str) -> bool:
    return not s or any(c in '=" ' or not c.isprintable() for c in s)


@settings(max_examples=300, deadline=None)
@given(_NAME, _NAME, _NAME, _VALUE, _VALUE, st.booleans())
def test_quoting_round_trip_series(
    entity: str, metric: str, tag: str, value: str, text: str, always: bool
) -> None:
    assume(value)
    q = quote if always else (lambda s: quote(s) if _needs_quotes(s) else s)
    line = f"series e:{q(entity)} x:{q(metric)}={q(text)} t:{q(tag)}={q(value)}"
    c = cmd(line)
    assert c == SeriesCommand(entity.lower(), [(metric.lower(), c.samples[0][1], text)],
                              {tag.lower(): value})
    assert math.isnan(c.samples[0][1])


@settings(max_examples=300, deadline=None)
@given(_NAME, _NAME, _NAME, _VALUE, _VALUE)
def test_quoting_round_trip_property_and_message(
    entity: str, ptype: str, name: str, key_value: str, value: str
) -> None:
    assume(key_value and value.strip("".join(map(chr, range(33)))))
    c = cmd(f"property e:{quote(entity)} t:{quote(ptype)} k:{quote(name)}={quote(key_value)}"
            f" v:{quote(name)}={quote(value)}")
    assert c == PropertyCommand(entity.lower(), ptype.lower(), {name.lower(): key_value},
                                {name.lower(): value})
    c = cmd(f"message e:{quote(entity)} m:{quote(value)}")
    assert c == MessageCommand(entity.lower(), message=value)


@given(st.text(max_size=30))
def test_quote_doubles_quotes(s: str) -> None:
    q = quote(s)
    assert q.startswith('"') and q.endswith('"')
    assert q[1:-1].replace('""', "").count('"') == 0
    assert q.count('"') % 2 == 0  # so TCP framing sees it closed


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
def test_parser_never_crashes(text: str) -> None:
    for prefix in ("series ", "property ", "message ", "metric ", "entity ", ""):
        try:
            debug, c = parse_command(prefix + text)
        except CommandError as e:
            assert e.reason in {"unknown_command", "syntax", "missing_field", "bad_number",
                                "bad_time", "time_range", "bad_name", "bad_value",
                                "too_many_tags", "empty_tags", "repeated_field"}
            assert "\n" not in str(e) and "\r" not in str(e)
        else:
            assert debug is (prefix + text).lstrip(" ").startswith("debug ")
            assert isinstance(c, (Control, SeriesCommand, PropertyCommand, MessageCommand,
                                  MetaCommand))


# -- the series fast path ---------------------------------------------------------------------

_WORDS = st.sampled_from(
    ["a", "B", "cpu", "Сервер", "x.y", "1", "-2.5", "+.5", "5.", "1e3", "NaN", "nan", "inf",
     "1_0", "", "=", "a=b", "0", "9" * 14, str(MAX_TIME_MS), str(MAX_TIME_MS + 1), "é", "\u0661",
     "\t", "\x00", "\u00a0", '"', "series", "ms", ":"]
)
_FIELD = st.one_of(
    st.builds(lambda w: "e:" + w, _WORDS),
    st.builds(lambda n, v: f"m:{n}={v}", _WORDS, _WORDS),
    st.builds(lambda n, v: f"t:{n}={v}", _WORDS, _WORDS),
    st.builds(lambda w: "ms:" + w, _WORDS),
    st.builds(lambda w: "s:" + w, _WORDS),
    st.builds(lambda w: "x:m=" + w, _WORDS),
    st.builds(lambda w: "a:" + w, _WORDS),
    _WORDS,
)
_LINE = st.builds(
    lambda fields, seps: "series " + "".join(f + s for f, s in zip(fields, seps, strict=False)),
    st.lists(_FIELD, max_size=7),
    st.lists(st.sampled_from([" ", "  "]), min_size=7, max_size=7),
)
# mostly well-formed lines, so that the fast path is exercised, not just skipped
_GOOD = st.builds(
    lambda e, m, v, tags, ts: [f"e:{e}", f"m:{m}={v}", *(f"t:{k}={tv}" for k, tv in tags),
                               f"ms:{ts}"],
    st.sampled_from(["srv", "SRV1", "Сервер", "e.1"]),
    st.sampled_from(["cpu", "Mem", "m:x", "диск"]),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
              st.integers(-(10**20), 10**20).map(str), st.just("NaN")),
    st.lists(st.tuples(st.sampled_from(["host", "Host", "dc", "k"]),
                       st.sampled_from(["a", "B", "x=y", "1"])), max_size=3),
    st.integers(0, MAX_TIME_MS + 10),
).flatmap(lambda fields: st.one_of(st.just(fields), st.permutations(fields))).map(
    lambda fields: "series " + " ".join(fields)
)

# a good line with one random field added: near misses, where a wrong acceptance hides
def _insert(good: str, extra: str, pos: int) -> str:
    words = good.split(" ")
    at = 1 + pos % len(words)
    return " ".join([*words[:at], extra, *words[at:]])


_NEAR = st.builds(_insert, _GOOD, _FIELD, st.integers(0, 10))
_ANY = st.one_of(_LINE, _GOOD, _NEAR)


def _slow_or_error(line: str) -> object:
    try:
        return parse_slow(line)
    except CommandError as e:
        return (e.reason, str(e))


@settings(max_examples=500, deadline=None)
@given(_ANY)
def test_fast_path_equals_full_parser(line: str) -> None:
    fast = parse_series_fast(line)
    expected = _slow_or_error(line)
    if fast is not None:
        assert same(fast, expected)
    try:
        got: object = parse_command(line)[1]
    except CommandError as e:
        got = (e.reason, str(e))
    assert same(got, expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ANY, min_size=1, max_size=6), st.booleans())
def test_cached_fast_path_equals_parse_command(lines: list[str], debug: bool) -> None:
    fp = SeriesFastPath(limit=4)
    for line in lines * 2:  # the second round hits the cache
        text = "debug " + line if debug else line
        try:
            expected = parse_command(text)
        except CommandError as e:
            with pytest.raises(CommandError) as got:
                fp.parse(text)
            assert (got.value.reason, str(got.value)) == (e.reason, str(e))
        else:
            assert same(fp.parse(text), expected)


def _check_take(fp: SeriesFastPath, lines: list[str]) -> None:
    """``take`` over ``lines`` (``parse`` taking each line it stops at) adds exactly
    the samples `parse_command` gives for the lines it took."""
    samples = SampleSet()
    i = 0
    taken: list[str] = []
    while i < len(lines):
        j = fp.take(lines, i, samples)
        taken += lines[i:j]
        if j < len(lines):
            try:
                fp.parse(lines[j])  # the one take stopped at is parse()'s
            except CommandError:
                pass
        i = j + 1
    expected = SampleSet()
    for line in taken:
        c = cmd(line)
        assert isinstance(c, SeriesCommand)
        assert c.time_ms is not None
        for key, (_, v, text) in zip(c.keys(), c.samples, strict=True):
            expected.add(key, c.time_ms * 1_000_000, v, text)
    assert samples.count == expected.count == len(taken)
    assert repr({k: (c.times, c.values, c.texts) for k, c in samples.columns.items()}) == repr(
        {k: (c.times, c.values, c.texts) for k, c in expected.columns.items()}
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_ANY, min_size=1, max_size=8))
def test_take_adds_what_parse_command_gives(lines: list[str]) -> None:
    fp = SeriesFastPath()
    for line in lines:  # warm the cache with what parse accepts
        try:
            fp.parse(line)
        except CommandError:
            pass
    _check_take(fp, lines)


_NEW_VALUES = st.one_of(
    _WORDS,
    st.sampled_from(["1 2", "1=2", "1e999", "-0", "1e-999", "\x7f", "1\t", " 1", "1 ms:2", "NaN ",
                     "0.5 t:k=v", "\u0661"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
_NEW_TIMES = st.one_of(
    _WORDS,
    st.sampled_from(["0", "01", "9" * 16, "9" * 17, "1 2", "1 ms:2", " 1", "1 ", "+1", "-1",
                     str(MAX_TIME_MS - 1)]),
    st.integers(0, MAX_TIME_MS + 10).map(str),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ANY, min_size=1, max_size=6),
       st.lists(st.tuples(st.integers(0, 5), _NEW_VALUES, _NEW_TIMES), max_size=12))
def test_take_on_new_values_and_times_of_cached_series(
    lines: list[str], changes: list[tuple[int, str, str]]
) -> None:
    """Cached series seen again with other values and times (the usual traffic):
    the split lookup and the time cache of `take` must give what parse_command gives."""
    fp = SeriesFastPath()
    for line in lines:
        try:
            fp.parse(line)
        except CommandError:
            pass
    new = list(lines)
    for k, value, ts in changes:
        line = lines[k % len(lines)]
        tpl = _template(line)
        if tpl is None:
            new.append(line)
        else:
            _, v0, v1, t0 = tpl
            new.append(line[:v0] + value + line[v1 : t0] + ts)
    _check_take(fp, new)


def test_take_runs_and_stops() -> None:
    fp = SeriesFastPath()
    line = "series e:E m:cpu=1 t:host=a ms:1000"
    fp.parse(line)
    lines = [line, "series e:E m:cpu=2.5 t:host=a ms:2000", "series e:E m:cpu=3 t:host=b ms:3",
             "series e:E m:cpu=4 t:host=a ms:4000"]
    samples = SampleSet()
    assert fp.take(lines, 0, samples) == 2  # host=b is not cached yet
    assert fp.take(lines, 3, samples) == 4
    key = ("cpu", "e", (("host", "a"),))
    col = samples.columns[key]
    assert (col.times, col.values, samples.count) == ([10**9, 2 * 10**9, 4 * 10**9],
                                                       [1.0, 2.5, 4.0], 3)
    # debug lines, other commands, bad values, Overlong items all stop it
    for other in ("debug " + line, "ping", "series e:E m:cpu=abc t:host=a ms:1",
                  "series e:E m:cpu=1 t:host=a ms:99999999999999"):
        assert fp.take([other], 0, samples) == 0
    assert samples.count == 3


def test_fast_path_declines_what_it_does_not_handle() -> None:
    for line in ('series e:a x:m="t"', "series e:a m:m=1 a:true", "series e:a m:m=1 d:x",
                 "series e:a m:m=inf", "series e:a m:m=1 t:k=\t", "series e:a m:m=1 series",
                 "series e:a m:m=1 m:m=2", "series e:a m:m=1 ms:1 ms:2"):
        assert parse_series_fast(line) is None
    assert parse_series_fast("series e:A m:M=1 t:K=v s:2") == SeriesCommand(
        "a", [("m", 1.0, None)], {"k": "v"}, False, 2000
    )


@pytest.mark.parametrize(("field", "reason"), [
    ("ms:" + "1" * 5000, "time_range"), ("s:" + "1" * 5000, "time_range"),
    ("ms:" + "0" * 5000 + "1", "time_range"), ("m:n=" + "1" * 5000, "bad_number"),
    ("m:n=-" + "1" * 5000 + ".5", "bad_number"), ("m:n=1e" + "1" * 5000, "bad_number"),
    ("d:" + "1" * 5000, "bad_time"),
])
def test_numbers_past_pythons_int_digit_limit(field: str, reason: str) -> None:
    """5000 digits (Python's int() stops at 4300): the command's own error, its
    reply cut to one line of bounded length."""
    for parse in (parse_command, SeriesFastPath().parse):
        with pytest.raises(CommandError) as e:
            parse(f"series e:a m:m=1 {field}" if field[0] != "m" else f"series e:a {field}")
        assert e.value.reason == reason
        assert len(str(e.value)) < 1200
    with pytest.raises(CommandError) as e:
        parse_command("metric m:a rd:" + "1" * 5000)
    assert e.value.reason == "bad_number"
