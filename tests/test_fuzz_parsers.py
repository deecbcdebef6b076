"""Every pure parser, fuzzed in-process: each input parses or raises the error
its callers catch, never anything else (an uncaught exception is a 500, a
traceback in the log or a dropped connection on the wire).

The error each parser may raise is the one its callers handle:

* OpenTSDB telnet `PutParser.parse`: `PutError` (telnet.py writes its text);
  ``/api/put`` `parse_put_body`: `PutBodyError`, `validate_point`: `PointError`,
  `fast_put_samples`: nothing (None means "take the full path"); `sync_timeout_ms`:
  ValueError (answered 500 as OpenTSDB does).
* ATSD `parse_command`, `SeriesFastPath.parse`, `parse_framed`: `CommandError`;
  the framers and `CommandBatch.add` of a parsed command: nothing; the read-back
  dates: `http_read.QueryError`.
* ts-store JSON (`go_loads`, `check_json`, `decode_envelope`...): `GoJSONError`;
  schemas: `SchemaError`; durations: `DurationError`; aggregation specs:
  `AggregationError`; read parameters: `StoreError`; outbound connection
  requests: `StoreError`.
* Queries (`tsnet.query`, OpenTSDB's ``m=``, JSON bodies, lookups): `QueryError`.
* HTTP framing (`lean.parse_head`), bodies (`inflate_body`): None / `BodyError`.
* The example plugin's Graphite (`GraphiteLineError`) and InfluxDB parsers
  (errors are returned, never raised).

Hypothesis runs derandomized, with a bounded number of examples and no
database, so CI replays the same inputs every time.
"""

from __future__ import annotations

import json
import types
import zlib
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers.fuzz import HUGE_NUMBERS, INSERTS, JSON_VALUES, load_seeds, scaled
from tsnet.http.bodies import BodyError, inflate_body
from tsnet.http.credentials import header_secrets
from tsnet.http.lean import _content_length, parse_head
from tsnet.model import SampleSet, parse_java_long
from tsnet.protocols.atsd.framing import Overlong, TcpFramer, frame_datagram, frame_http_body
from tsnet.protocols.atsd.http_read import QueryError as AtsdQueryError
from tsnet.protocols.atsd.http_read import date_range, parse_date
from tsnet.protocols.atsd.items import CommandBatch
from tsnet.protocols.atsd.parse import CommandError, SeriesFastPath, parse_command, parse_framed
from tsnet.protocols.opentsdb.http_put import content_charset, sync_timeout_ms
from tsnet.protocols.opentsdb.http_read import (
    Params,
    parse_lookup_m,
    parse_m,
    parse_query_get,
    parse_query_post,
    parse_rate_spec,
)
from tsnet.protocols.opentsdb.json_put import (
    PointError,
    PutBodyError,
    SeriesCache,
    fast_put_samples,
    parse_put_body,
    validate_point,
)
from tsnet.protocols.opentsdb.telnet_parse import PutError, PutParser, parse_timestamp_ms
from tsnet.protocols.tsstore import aggregate
from tsnet.protocols.tsstore.connections import parse_request
from tsnet.protocols.tsstore.durations import DurationError, parse_duration
from tsnet.protocols.tsstore.gojson import (
    GoJSONError,
    check_json,
    decode_envelope,
    go_loads,
    go_loads_map,
    go_marshal,
)
from tsnet.protocols.tsstore.reads import _int as read_int
from tsnet.protocols.tsstore.schema import SchemaError, SchemaSet, compact, expand, expand_value
from tsnet.protocols.tsstore.stores import StoreError
from tsnet.protocols.tsstore.ws_write import fast_envelope
from tsnet.query import (
    QueryError,
    filter_from_tag_value,
    parse_downsample,
    parse_duration_ms,
    parse_metric_and_filters,
    parse_time_ms,
)
from tsnet_lineproto.graphite import decode_lines
from tsnet_lineproto.graphite_parse import GraphiteLineError, GraphiteParser, parse_line
from tsnet_lineproto.influx_parse import parse_body, precision_multiplier


def fuzz(n: int) -> settings:
    """Bounded, reproducible: ``n`` examples (times ``TSNET_FUZZ_SCALE``),
    derandomized, no example database."""
    return settings(max_examples=scaled(n), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.large_base_example])


NOW_MS = 1_700_000_000_000
#: 5000 digits: past Python's int/str conversion limit (4300)
DIGITS = "9" * 5000
NOW_NS = NOW_MS * 1_000_000

# -- strategies -------------------------------------------------------------------------

#: pieces that an edit inserts in text: numbers at every edge, delimiters, junk
TEXT_TOKENS: tuple[str, ...] = tuple(
    sorted({b.decode("latin-1") for b in HUGE_NUMBERS + INSERTS}
           | {" ", "=", ":", '"', "\n", "\r", "put", "series", "debug ", "m:", "e:", "t:",
              "x:", "ms:", "s:", "d:", "{", "}", "(", ")", ",", "|", "*", "-ago", "ms", "1h",
              "\u00e9", "\ud7ff", "\U0001f600", "\u2028", "\x85", "\xa0", "-", "+", ".",
              "0", "1", "e", "E", "rate", "all", "a:true", "now", "~", ";", "#"}))


#: the same as bytes, for the parsers that get the wire's bytes
BYTE_TOKENS: tuple[bytes, ...] = tuple(sorted(
    {t.encode("utf-8", "surrogatepass") for t in TEXT_TOKENS} | set(HUGE_NUMBERS + INSERTS)))


@st.composite
def edited(draw: st.DrawFn, seeds: tuple[Any, ...], tokens: tuple[Any, ...] = TEXT_TOKENS,
           ) -> Any:
    """A seed with a few edits (insert, replace, delete, repeat, cut) at drawn
    places, str or bytes as the seeds are; shrinks toward the seed itself."""
    s = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(("insert", "replace", "delete", "repeat", "cut")))
        i = draw(st.integers(0, len(s)))
        j = draw(st.integers(i, min(len(s), i + 40)))
        if kind == "insert":
            s = s[:i] + draw(st.sampled_from(tokens)) + s[i:]
        elif kind == "replace":
            s = s[:i] + draw(st.sampled_from(tokens)) + s[j:]
        elif kind == "delete":
            s = s[:i] + s[j:]
        elif kind == "repeat":
            s = s[:j] + s[i:j] * draw(st.sampled_from((2, 3, 100))) + s[j:]
        else:
            s = s[:i]
    return s


def wire_text(s: str) -> str:
    """Text as a server holds it after decoding bytes (no lone surrogates)."""
    return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def texts(seed_file: str) -> st.SearchStrategy[str]:
    """Seeds of a corpus file, edited, and unstructured text: as decoded text."""
    seeds = load_seeds(seed_file)
    return st.one_of(edited(seeds), edited(seeds), st.text(max_size=80),
                     st.lists(st.sampled_from(TEXT_TOKENS), max_size=12).map("".join),
                     ).map(wire_text)


def blobs(seed_file: str) -> st.SearchStrategy[bytes]:
    """The same as bytes, invalid UTF-8 included."""
    seeds = tuple(s.encode() for s in load_seeds(seed_file))
    return st.one_of(edited(seeds, BYTE_TOKENS), edited(seeds, BYTE_TOKENS),
                     st.binary(max_size=80),
                     st.lists(st.sampled_from(BYTE_TOKENS), max_size=12).map(b"".join))


def as_bytes(s: str) -> bytes:
    """Text as the bytes a client would send (a lone surrogate as invalid UTF-8)."""
    return s.encode("utf-8", "surrogatepass")


#: JSON texts, built as text so that numbers of any size and odd tokens occur
_JSON_KEYS = st.sampled_from(("metric", "timestamp", "value", "tags", "tsuid", "data", "host",
                              "a", "", "DATA", "Timestamp", "index", "name", "type", "fields",
                              "mode", "headers", "from", "startDate", "endDate", "interval",
                              "count", "unit", "queries", "start", "end", "aggregator",
                              "filters", "downsample", "rateOptions", "counterMax"))
_JSON_SCALARS = st.one_of(
    st.sampled_from(JSON_VALUES), st.integers().map(str), st.integers(-10**40, 10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.text(max_size=12).map(lambda s: json.dumps(s)), st.sampled_from(("true", "null")))


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(items: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items) + "}"




def _containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(inner, st.lists(inner, max_size=3).map(_array),
                     st.lists(st.tuples(_JSON_KEYS, inner), max_size=4).map(_object))


#: two levels of arrays and objects over the scalars (cheaper to draw than st.recursive)
JSON_TEXTS = _containers(_containers(_JSON_SCALARS))


@st.composite
def nested(draw: st.DrawFn, inner: st.SearchStrategy[str] = JSON_TEXTS) -> str:
    """A JSON value wrapped in arrays or objects, up to far past any recursion limit."""
    depth = draw(st.sampled_from((1, 40, 1100, 20_000)))
    core = draw(inner)
    if draw(st.booleans()):
        return "[" * depth + core + "]" * depth
    return '{"a":' * depth + core + "}" * depth


#: numbers at every edge, as JSON texts
NUMBER_TEXTS = st.sampled_from(tuple(b.decode() for b in HUGE_NUMBERS if b.isascii()
                                     and b[:1] in b"-0123456789"))


def field_values(good: str) -> st.SearchStrategy[str]:
    """A field's value: the valid one, or an edge number, or any JSON."""
    return st.one_of(st.just(good), st.just(good), NUMBER_TEXTS, JSON_TEXTS, nested())


@st.composite
def put_points(draw: st.DrawFn) -> str:
    """An /api/put datapoint: each field valid or anything else."""
    fields = {
        "metric": field_values('"fz.m"'),
        "timestamp": field_values("1700000000"),
        "value": field_values("1.5"),
        "tags": st.one_of(field_values('{"host":"a"}'),
                          JSON_TEXTS.map(lambda v: '{"host":' + v + "}"),
                          JSON_TEXTS.map(lambda v: '{"host":"a","k":' + v + "}")),
    }
    items = [(k, draw(v)) for k, v in fields.items() if draw(st.integers(0, 5))]
    if draw(st.integers(0, 9)) == 0:
        items.append(("tsuid", draw(JSON_TEXTS)))
    return _object(items)


PUT_BODIES = st.one_of(
    put_points(), st.lists(put_points(), min_size=1, max_size=3).map(_array),
    texts("opentsdb_put.txt"), JSON_TEXTS, nested(put_points()))


def tolerate(error: type[BaseException] | tuple[type[BaseException], ...], f: Any,
             *args: Any) -> Any:
    """``f(*args)``, where ``error`` is the only exception allowed (then None)."""
    try:
        return f(*args)
    except error:
        return None


def loads(text: str) -> Any:
    """What Python's json makes of ``text`` (the servers' routes parse with it);
    `NOT_JSON` when it refuses (each route answers that itself, see
    tests/test_fuzz_http.py)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return NOT_JSON


NOT_JSON = object()


# -- OpenTSDB -------------------------------------------------------------------------------


def _telnet_parser() -> PutParser:
    """A parser whose fast path knows a series, so cached lines take it too."""
    p = PutParser()
    p.parse("put seed.cpu 1700000000 42 host=a")
    p.parse("put fz.m 1700000000 42 host=a")
    return p


@fuzz(300)
@given(line=texts("telnet.txt"), allow=st.booleans())
def test_telnet_put_line_parses_or_put_error(line: str, allow: bool) -> None:
    p = _telnet_parser()
    for parse in (p.parse, p.parse_slow):
        try:
            parse(line, allow)
        except PutError:
            pass
    p.take_puts([line, line], 0, SampleSet())
    for word in line.split(" ")[2:4]:
        try:
            parse_timestamp_ms(word)
        except PutError:
            pass
        try:
            parse_java_long(word)
        except ValueError:
            pass


@fuzz(300)
@given(body=PUT_BODIES, charset=st.sampled_from(("utf-8", "latin-1", "utf-16", "bogus", "ascii")))
# the smallest inputs of the defects this test found (kept so that they always run)
@example(body='{"metric":"m","timestamp":1,"value":1,"tags":{"h":[]}}', charset="utf-8")
@example(body='{"metric":[],"timestamp":1,"value":1,"tags":{"h":"a"}}', charset="utf-8")
@example(body='{"metric":"m","timestamp":' + DIGITS + ',"value":1,"tags":{"h":"a"}}',
         charset="utf-8")
@example(body='{"metric":"m","timestamp":"' + DIGITS + '","value":1,"tags":{"h":"a"}}',
         charset="utf-8")
def test_put_body_parses_or_body_error(body: str, charset: str) -> None:
    raw = as_bytes(body)
    fast_put_samples(raw, SeriesCache())  # None or samples: it never refuses by raising
    try:
        points = parse_put_body(raw, charset)
    except PutBodyError:
        return
    series: dict = {}
    for p in points:
        for allow in (False, True):
            try:
                validate_point(p, allow_no_tags=allow, series=series)
            except PointError:
                pass


@fuzz(150)
@given(text=st.one_of(st.sampled_from([b.decode("latin-1") for b in HUGE_NUMBERS]),
                      st.text(max_size=30)),
       ctype=st.binary(max_size=60))
def test_put_flags_parse_or_value_error(text: str, ctype: bytes) -> None:
    try:
        sync_timeout_ms({"sync_timeout": [text]})
    except ValueError:
        pass
    assert isinstance(content_charset(ctype), str)
    assert isinstance(content_charset(b"application/json; charset=" + ctype), str)


# -- ATSD ---------------------------------------------------------------------------------------


def _fast_path() -> SeriesFastPath:
    fast = SeriesFastPath()
    fast.parse("series e:fz-ent m:fz.cpu=42 ms:1700000000000")
    fast.parse("series e:fz-ent t:host=a m:fz.cpu=42 t:dc=eu ms:1700000000000")
    return fast


@fuzz(300)
@given(text=texts("atsd.txt"))
def test_atsd_command_parses_or_command_error(text: str) -> None:
    fast = _fast_path()
    for parse in (parse_command, fast.parse):
        try:
            _, command = parse(text)
        except CommandError:
            continue
        if type(command).__name__ != "Control":
            CommandBatch().add(command, NOW_MS)  # what every channel does with it
            CommandBatch().add(command, NOW_MS, None, {})
    for item in (text, Overlong(len(text), text[:200])):
        try:
            parse_framed(item, fast.parse)
        except CommandError:
            pass
    fast.take([text, text], 0, SampleSet())


@fuzz(200)
@given(raw=blobs("atsd.txt"), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_atsd_framing_never_raises(raw: bytes, cuts: list[int]) -> None:
    framer = TcpFramer()
    out: list = []
    last = 0
    for c in sorted(cuts):
        out += framer.feed(raw[last:c])
        last = max(last, c)
    out += framer.feed(raw[last:])
    out += framer.close()
    assert all(isinstance(c, str | Overlong) for c in out)
    frame_datagram(raw)
    frame_http_body(raw.decode("utf-8", "replace"))  # as the route decodes


ATSD_DATES = st.one_of(JSON_TEXTS, st.sampled_from((
    '"now"', '"now - 1 * day"', '"now + 999999999999999999999 * week"', '"now - 1e400 * hour"',
    '"2023-11-14T22:13:20Z"', '"2023-11-14T22:13:20"', '"99999-01-01T00:00:00+00:00"',
    '"0001-01-01T00:00:00+14:00"', '"' + "9" * 5000 + '"', "1e400", "-1e400", "NaN",
    "9" * 5000, "1700000000000")))


@fuzz(200)
@given(start=ATSD_DATES, end=ATSD_DATES, count=JSON_TEXTS,
       unit=st.sampled_from(('"DAY"', '"week"', '"x"', "1", "null")),
       which=st.sampled_from(("both", "start", "end", "interval")))
@example(start="NaN", end="1", count="1", unit='"DAY"', which="both")
@example(start="1e400", end="1", count="1", unit='"DAY"', which="both")
@example(start=f'"{DIGITS}"', end="1", count="1", unit='"DAY"', which="both")
@example(start=f'"now - {DIGITS} * day"', end="1", count="1", unit='"DAY"', which="both")
@example(start="1", end="1", count="Infinity", unit='"DAY"', which="interval")
def test_atsd_read_dates_parse_or_query_error(start: str, end: str, count: str, unit: str,
                                              which: str) -> None:
    q: dict = {}
    if which in ("both", "start"):
        q["startDate"] = loads(start)
    if which in ("both", "end", "interval"):
        q["endDate"] = loads(end)
    if which != "both":
        q["interval"] = {"count": loads(count), "unit": loads(unit)}
    if NOT_JSON in q.values() or NOT_JSON in q.get("interval", {}).values():
        return  # the route answers 400 for a body json.loads refuses
    tolerate(AtsdQueryError, parse_date, q.get("startDate"), NOW_MS)
    tolerate(AtsdQueryError, date_range, q, NOW_MS)


# -- ts-store ------------------------------------------------------------------------------------

TSSTORE_JSON = st.one_of(blobs("tsstore_lines.txt"), JSON_TEXTS.map(as_bytes),
                         nested().map(as_bytes))
ENVELOPES = st.one_of(
    TSSTORE_JSON, st.one_of(

    st.tuples(field_values("1700000000000000000"), field_values('{"a":1}')).map(
        lambda tv: '{"timestamp":' + tv[0] + ',"data":' + tv[1] + "}"),
    field_values('{"a":1}').map(lambda d: '{"data":' + d + "}"),
    st.tuples(field_values('{"a":1}'), field_values("1700000000000000000")).map(
        lambda dv: '{"data":' + dv[0] + ',"timestamp":' + dv[1] + "}")).map(as_bytes))


@fuzz(300)
@given(raw=ENVELOPES)
@example(raw=b'{"timestamp":' + DIGITS.encode() + b',"data":1}')
def test_tsstore_json_parses_or_go_json_error(raw: bytes) -> None:
    for f in (go_loads, go_loads_map, check_json):
        try:
            value = f(raw)
        except GoJSONError:
            continue
        if f is go_loads:
            try:
                go_marshal(value)
            except GoJSONError:
                pass
    for args in ({"empty": "EOF"}, {}):
        try:
            decode_envelope(raw, **args)
        except GoJSONError:
            pass
    fast_envelope(raw)


FIELDS = [{"index": 1, "name": "temp", "type": "float64"},
          {"index": 2, "name": "unit", "type": "string"}]


@fuzz(200)
@given(fields=st.one_of(JSON_TEXTS, nested(), st.lists(st.one_of(
    JSON_TEXTS, st.tuples(field_values("1"), field_values('"temp"'),
                          field_values('"float64"')).map(
        lambda t: '{"index":' + t[0] + ',"name":' + t[1] + ',"type":' + t[2] + "}")),
    max_size=4).map(_array)), raw=TSSTORE_JSON)
def test_tsstore_schema_validates_or_schema_error(fields: str, raw: bytes) -> None:
    doc = loads(fields)
    if doc is not NOT_JSON:
        tolerate(SchemaError, SchemaSet().evolve, doc)
        tolerate(SchemaError, SchemaSet(1, {1: FIELDS}).evolve, doc)
    for current in (FIELDS, [], None):
        tolerate(SchemaError, compact, current, raw)
    expand(FIELDS, raw)
    expand_value(FIELDS, raw)
    expand_value(FIELDS, raw, strict=True)


DURATIONS = st.one_of(
    st.sampled_from(("30s", "1h30m", "1.5d", "2w", "300ms", "-1h", "1µs", "0", "", "1e400d",
                     "nand", "infw", "0x1p-2d", "1_0d", "9" * 5000 + "h", "9" * 5000 + "d",
                     "1." + "9" * 5000 + "s", "9223372036854775807ns", "1" * 30 + "s")),
    texts("tsstore_http.txt"))


@fuzz(300)
@given(text=DURATIONS, fields=st.text(max_size=30), default=st.text(max_size=20))
def test_tsstore_read_params_parse_or_their_errors(text: str, fields: str, default: str) -> None:
    tolerate(DurationError, parse_duration, text)
    tolerate(aggregate.AggregationError, aggregate.parse_spec, text, fields, default)
    tolerate(aggregate.AggregationError, aggregate.parse_spec, "1m", text, default)
    tolerate(aggregate.AggregationError, aggregate.parse_spec, "1m", "a:avg", text)
    tolerate(StoreError, read_int, text, "invalid timestamp")


@fuzz(150)
@given(body=st.one_of(JSON_TEXTS, nested(), st.tuples(
    field_values('"push"'), field_values('"ws://127.0.0.1:9/x"'), field_values('{"a":"b"}'),
    field_values("0"), field_values("true")).map(
        lambda t: '{"mode":' + t[0] + ',"url":' + t[1] + ',"headers":' + t[2]
        + ',"from":' + t[3] + ',"ack":' + t[4] + "}")))
def test_tsstore_connection_request_parses_or_store_error(body: str) -> None:
    doc = loads(body)
    if doc is not NOT_JSON:
        tolerate(StoreError, parse_request, doc)


# -- queries -----------------------------------------------------------------------------------

QUERY_TIMES = st.one_of(
    st.sampled_from(("now", "1h-ago", "100ms", "1700000000", "1700000000000",
                     "1700000000.123", "2023/11/14", "2023/11/14-22:13:20", "2023/11/14 22:13",
                     "9" * 5000, "9" * 5000 + "ms", "9" * 5000 + "s-ago", "1" * 30 + "y-ago",
                     "0", "-1", "1e400", "99999/99/99")),
    texts("opentsdb_http.txt"))


@fuzz(200)
@given(value=st.one_of(QUERY_TIMES, st.integers(), st.floats()),
       tz=st.sampled_from((None, "", "UTC", "Europe/Paris", "Nowhere/Land", "../../etc", "\x00")),
       spec=QUERY_TIMES)
@example(value=DIGITS + "ms", tz=None, spec="1h")
@example(value=DIGITS + "s-ago", tz=None, spec=DIGITS + "s")
def test_query_times_parse_or_query_error(value, tz: str | None, spec: str) -> None:
    tolerate(QueryError, parse_time_ms, value, NOW_MS, tz)
    tolerate(QueryError, parse_duration_ms, spec)
    tolerate(QueryError, parse_downsample, spec)
    tolerate(QueryError, parse_downsample, spec + "-avg")
    tolerate(QueryError, parse_rate_spec, spec)


M_SEEDS = ("sum:fz.ref", "avg:1m-avg-nan:rate{counter,100,0}:fz.ref{host=*}{dc=literal_or(eu)}",
           "none:explicit_tags:fz.ref{host=regexp(^a.*$)}", "p99:0all-sum:fz.ref{a=b|c,d=e*}",
           "zimsum:rate:fz.ref{host=wildcard(a*),x=not_key()}{y=iwildcard(*B*)}",
           "fz.ref{host=a}", "fz.ref{=}", "*{host=*}")


@fuzz(300)
@given(m=st.one_of(edited(M_SEEDS), texts("opentsdb_http.txt")),
       start=QUERY_TIMES)
def test_query_m_parses_or_query_error(m: str, start: str) -> None:
    tolerate(QueryError, parse_m, m)
    tolerate(QueryError, parse_metric_and_filters, m)
    tolerate(QueryError, parse_lookup_m, m)
    k, _, v = m.partition("=")
    tolerate(QueryError, filter_from_tag_value, k, v, True)
    from urllib.parse import quote

    uri = f"/api/query?start={quote(start)}&m={quote(m)}&tz=UTC".encode()
    tolerate(QueryError, parse_query_get, Params(types.SimpleNamespace(uri=uri)), NOW_MS)


@st.composite
def query_bodies(draw: st.DrawFn) -> str:
    sub = _object([(k, draw(v)) for k, v in {
        "aggregator": field_values('"sum"'), "metric": field_values('"fz.ref"'),
        "tags": field_values('{"host":"*"}'), "downsample": field_values('"1m-avg"'),
        "rate": field_values("false"), "rateOptions": field_values('{"counter":true}'),
        "filters": field_values('[{"type":"regexp","tagk":"host","filter":"a.*"}]'),
        "explicitTags": field_values("false"), "tsuids": field_values("null"),
    }.items() if draw(st.integers(0, 4))])
    return _object([(k, draw(v)) for k, v in {
        "start": field_values("1699990000"), "end": field_values("1700010000"),
        "queries": st.one_of(st.just(_array([sub])), field_values("[]")),
        "timezone": field_values('"UTC"'), "msResolution": field_values("true"),
        "showQuery": field_values("false"),
    }.items() if draw(st.integers(0, 5))])


@fuzz(300)
@given(body=st.one_of(query_bodies(), texts("opentsdb_http.txt"), JSON_TEXTS,
                      nested(query_bodies())))
@example(body='{"start":1,"queries":[{"aggregator":"sum","metric":"m","filters":1}]}')
def test_query_post_parses_or_query_error(body: str) -> None:
    doc = loads(body)
    if doc is not NOT_JSON:
        tolerate(QueryError, parse_query_post, doc, NOW_MS)


# -- HTTP framing and bodies -------------------------------------------------------------------

HEADS = st.one_of(
    texts("opentsdb_http.txt").map(
        lambda t: f"{t.split(' ', 2)[0]} {t.split(' ')[1] if ' ' in t else '/'} HTTP/1.1\r\n"
                  "Host: x\r\nContent-Length: 12\r\nContent-Type: application/json"),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.lists(st.sampled_from(("POST /api/put HTTP/1.1", "Host: x", "Content-Length: 5",
                              "Content-Length: -1", "Content-Length: 99999999999999",
                              "Content-Length: \u0661", " folded", "X:", ":", "A :b",
                              "Transfer-Encoding: chunked", "Connection: close")),
             min_size=1, max_size=8).map("\r\n".join))


@fuzz(200)
@given(head=HEADS)
@example(head="\x80")
def test_http_head_parses_or_none(head: str) -> None:
    parsed = parse_head(head.encode("latin-1", "replace"))
    if parsed is not None:
        _content_length(parsed[2])
    header_secrets(head, head)
    header_secrets("Basic " + head, None)


@fuzz(150)
@given(data=st.one_of(st.binary(max_size=200), texts("opentsdb_put.txt").map(as_bytes)),
       shape=st.sampled_from(("raw", "gzip", "deflate", "zlib", "gzip-cut", "gzip-twice")),
       encoding=st.sampled_from(("gzip", "x-gzip", "deflate", "identity", "gzip, gzip",
                                 "br", "", ",", "GZIP ,identity")))
def test_http_bodies_inflate_or_body_error(data: bytes, shape: str, encoding: str) -> None:
    if shape == "gzip":
        data = zlib.compress(data, wbits=31)
    elif shape == "deflate":
        data = zlib.compress(data, wbits=-15)
    elif shape == "zlib":
        data = zlib.compress(data)
    elif shape == "gzip-cut":
        data = zlib.compress(data, wbits=31)[:-5]
    elif shape == "gzip-twice":
        data = zlib.compress(data, wbits=31) * 2
    tolerate(BodyError, inflate_body, [data[:7], data[7:]], encoding, 64)


# -- the example plugin: Graphite and InfluxDB line protocols -----------------------------------


@fuzz(200)
@given(text=texts("graphite.txt"))
def test_graphite_line_parses_or_graphite_error(text: str) -> None:
    for line in text.split("\n"):
        tolerate(GraphiteLineError, parse_line, line, NOW_NS)
    GraphiteParser().take(text.split("\n") * 2, {}, NOW_NS)
    decode_lines(as_bytes(text))
    decode_lines(as_bytes(text), datagram=True)


@fuzz(200)
@given(body=blobs("influx.txt"),
       precision=st.sampled_from(("n", "ns", "u", "ms", "s", "m", "h")))
@example(body=b"m v=" + DIGITS.encode() + b"i", precision="ns")
@example(body=b"m v=1 " + DIGITS.encode(), precision="ns")
def test_influx_body_parses_into_points_and_errors(body: bytes, precision: str) -> None:
    points, errors = parse_body(body, precision, NOW_NS)
    assert all(isinstance(e, str) for e in errors) and isinstance(points, list)
    tolerate(ValueError, precision_multiplier, body[:3].decode("latin-1"))
