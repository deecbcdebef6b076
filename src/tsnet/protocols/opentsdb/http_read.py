"""OpenTSDB's HTTP read API (specs/opentsdb.md §3): /api/query, /api/suggest,
/api/search/lookup, /api/version, /api/aggregators, /api/config/filters, and
their /api/v1/... twins.

This module only speaks the wire format: it parses requests into
`tsnet.query` objects, reads storage straight through the principal's
backend, runs the shared engine, and writes OpenTSDB's JSON (compact, ``dps``
keyed by seconds, or milliseconds with ``msResolution``; integers stay
integers).  Every endpoint resolves a READ principal first: with ``auth =
token`` a READ token is required (401 without one, 403 for a WRITE-only
token) and its tags are ANDed into every sub-query and every listing as
literal, non-grouping filters.

Every request spends one `tsnet.query_limits.QueryBudget` (points read,
buckets, reply size, time; 413 or 503 naming the ``[tsnet]`` key when one is
gone), and the work that grows with the data (selecting series, the engine,
listing, encoding) runs in the thread pool through the routes' shared
`QueryRunner`, so the reactor keeps serving writes and other requests.
``jsonp`` must name a JavaScript function (a dotted path of identifiers).

What Grafana's OpenTSDB data source sends (see tests/test_grafana_opentsdb.py):
``GET /api/suggest?type=metrics&q=&max=1000``, ``GET /api/search/lookup?m=
metric{key=*}&limit=1000``, ``GET /api/aggregators``, ``GET
/api/config/filters`` and ``POST /api/query`` (``?arrays=true`` in its 2.4
mode) with ``filters`` and ``downsample``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tsnet.errors import Forbidden, NotFound, Unauthorized
from tsnet.http.credentials import principal_for
from tsnet.interfaces import ISeriesByKey, ITagIndex
from tsnet.logbound import LogBound
from tsnet.model import READ, series_tags
from tsnet.protocols.opentsdb import BUILD_TIMESTAMP, OPENTSDB_VERSION
from tsnet.query import (
    AGGREGATORS,
    FILTER_DOCS,
    INT64_MAX,
    MAX_DIGITS,
    NS_PER_MS,
    NS_PER_S,
    STEPS,
    QueryError,
    RateOptions,
    SubQuery,
    TagFilter,
    Unbounded,
    add_filters,
    filter_examples,
    get_aggregator,
    literal_filters,
    literal_tags,
    make_filter,
    matches_all,
    parse_downsample,
    parse_metric_and_filters,
    parse_time_ms,
    run_sub_query,
    shown,
    storable_time_ms,
    tags_to_filters,
)
from tsnet.query_limits import (
    QueryBudget,
    QueryLimits,
    QueryRunner,
    read_series,
    read_series_of,
)

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.opentsdb.read")

JSON_TYPE = b"application/json; charset=UTF-8"
JSONP_TYPE = b"application/javascript; charset=UTF-8"
DEFAULT_SUGGEST_MAX = 25
DEFAULT_LOOKUP_LIMIT = 25
_INTEGER = re.compile(rf"[+-]?[0-9]{{1,{MAX_DIGITS}}}\Z")
_NO_CONTENT = "Supply valid JSON formatted data in the body of your request"
#: a jsonp callback: a JavaScript identifier or a dotted path of them
_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*\Z")
MAX_CALLBACK = 128


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Params:
    """The query string, flags included: Twisted's ``request.args`` drops a
    parameter without ``=`` (``&ms``, ``&show_query``, ``&arrays``), which
    OpenTSDB treats as present."""

    def __init__(self, request: Any) -> None:
        query = request.uri.split(b"?", 1)[1] if b"?" in request.uri else b""
        self._values = parse_qs(query.decode("utf-8", "replace"), keep_blank_values=True)

    def get(self, name: str) -> str | None:
        vals = self._values.get(name)
        return vals[0] if vals else None

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def has(self, name: str) -> bool:
        return name in self._values

    def required(self, name: str) -> str:
        v = self.get(name)
        if v is None or v == "":
            raise QueryError(f"Missing parameter <code>{name}</code>")
        return v


def _body(request: Any) -> bytes:
    request.content.seek(0)
    return request.content.read()


class _TooManyDigits(Exception):
    pass


def _json_int(text: str) -> int:
    """A JSON integer, refused past `MAX_DIGITS` digits (no time or count has
    that many, and Python will not convert over 4300)."""
    if len(text) > MAX_DIGITS:
        raise _TooManyDigits()
    return int(text)


def _json_body(request: Any) -> Any:
    raw = _body(request).strip()
    if not raw:
        raise QueryError("Missing message content", _NO_CONTENT)
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_json_int)
    except _TooManyDigits:
        raise QueryError("Unable to parse the given JSON",
                         f"A number has more than {MAX_DIGITS} digits") from None
    except RecursionError:
        raise QueryError("Unable to parse the given JSON",
                         "Arrays and objects are nested too deeply") from None
    except UnicodeDecodeError:
        raise QueryError("Unable to parse the given JSON", "The body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise QueryError("Unable to parse the given JSON", str(e)) from None
    except ValueError:
        raise QueryError("Unable to parse the given JSON", "Invalid JSON") from None


def _flag(value: Any) -> bool:
    """A JSON boolean as Jackson coerces it (``"true"`` is true)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _text(value: Any) -> str:
    """A JSON scalar as the string Jackson would coerce it to."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool):
        raise QueryError("Unable to parse the given JSON", f"{what} must be a number")
    if isinstance(value, (int, float)):
        return value
    if len(str(value)) > MAX_DIGITS:
        raise QueryError("Unable to parse the given JSON",
                         f"{what} must be a number of at most {MAX_DIGITS} digits")
    try:
        return int(str(value))
    except ValueError:
        try:
            return float(str(value))
        except ValueError:
            raise QueryError("Unable to parse the given JSON",
                             f"{what} must be a number, got {shown(repr(value))}") from None


async def _backend(core: Core, solution: str) -> Any:
    """The principal's series reader (its storage, or a family's view of it),
    reloading the solution list once if it is new."""
    try:
        return core.storages.series_reader(solution)
    except NotFound:
        await core.storages.refresh()
        try:
            return core.storages.series_reader(solution)
        except NotFound:
            return None


def jsonp_callback(params: Params) -> str | None:
    """The ``jsonp`` callback name, if the request has a valid one: what the
    reply is wrapped in, so it must be code a script tag can only call."""
    name = params.get("jsonp")
    if name and len(name) <= MAX_CALLBACK and _CALLBACK.match(name):
        return name
    return None


class _Endpoint(Resource):
    """A read endpoint: READ principal first, then ``respond``; JSON out.

    Subclasses implement ``async respond(request, principal, params, budget)``
    returning a JSON-able object (or ready bytes) and may narrow ``methods``;
    heavy steps go through ``self.runner.call(budget, ...)``.
    """

    isLeaf = True
    methods: tuple[bytes, ...] = (b"GET", b"POST")

    def __init__(self, core: Core, runner: QueryRunner, logs: LogBound) -> None:
        super().__init__()
        self.core = core
        self.runner = runner
        self._logs = logs

    def render(self, request: Any) -> Any:
        gone: list[bool] = []
        budget = self.runner.start()

        def finished(_: Any) -> None:
            gone.append(True)
            budget.cancelled = True  # a client that went away stops its query's work

        request.notifyFinish().addBoth(finished)
        d = principal_for(request, READ)
        params = Params(request)
        d.addCallback(lambda p: defer.ensureDeferred(self._run(request, p, params, budget)))
        d.addCallbacks(lambda body: self._send(request, 200, body, gone, params),
                       lambda f: self._failed(request, f, gone, params))
        d.addErrback(lambda f: self._logs.failure("read-reply-failed",
                                                  "writing a read response failed", f))
        d.addBoth(lambda _: self.runner.finish(budget))
        return NOT_DONE_YET

    async def _run(self, request: Any, principal: Any, params: Params,
                   budget: QueryBudget) -> Any:
        if request.method not in self.methods:
            raise QueryError(
                "Method not allowed",
                f"The HTTP method [{request.method.decode('latin-1')}] is not permitted "
                "for this endpoint", status=405)
        if params.get("jsonp") and jsonp_callback(params) is None:
            raise QueryError("Invalid jsonp callback",
                             "jsonp must be a JavaScript function name or dotted path of "
                             f"at most {MAX_CALLBACK} characters")
        return await self.respond(request, principal, params, budget)

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _send(self, request: Any, code: int, body: Any, gone: list[bool],
              params: Params) -> None:
        if gone:
            return
        if not isinstance(body, bytes):
            body = _dumps(body)
        callback = jsonp_callback(params)
        if callback:
            body = callback.encode("ascii") + b"(" + body + b")"
        request.setResponseCode(code)
        request.setHeader(b"content-type", JSONP_TYPE if callback else JSON_TYPE)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()

    def _failed(self, request: Any, failure: Any, gone: list[bool], params: Params) -> None:
        err = failure.value
        error: dict[str, Any]
        if isinstance(err, Unauthorized):
            code, error = 401, {"code": 401, "message": "Unauthorized"}
            request.setHeader(b"www-authenticate", b'Basic realm="opentsdb"')
        elif isinstance(err, Forbidden):
            code, error = 403, {"code": 403, "message": "Forbidden"}
        elif isinstance(err, QueryError):
            code, error = err.status, {"code": err.status, "message": err.message}
            if err.details:
                error["details"] = err.details
        else:  # a bug: logged (boundedly), never shown to the client
            self._logs.failure("read-request-failed", "read request {path} failed", failure,
                               path=request.path)
            code = 500
            error = {"code": 500, "message": "Unexpected exception"}
        self._send(request, code, {"error": error}, gone, params)


# -- /api/query -------------------------------------------------------------------


@dataclasses.dataclass
class TSQuery:
    """A parsed /api/query request (OpenTSDB's ``TSQuery``)."""

    start_ms: int
    end_ms: int
    queries: list[SubQuery | None]  # None: a tsuid-only sub-query, which tsnet ignores
    ms_resolution: bool = False
    show_query: bool = False


def _rate_options_json(obj: Any) -> RateOptions:
    if obj is None:
        return RateOptions()
    if not isinstance(obj, dict):
        raise QueryError("Unable to parse the given JSON", "rateOptions must be an object")
    max_ = obj.get("counterMax")
    reset = obj.get("resetValue")
    return RateOptions(
        counter=_flag(obj.get("counter", False)),
        counter_max=INT64_MAX if max_ is None else _number(max_, "counterMax"),
        reset_value=0 if reset is None else _number(reset, "resetValue"),
        drop_resets=_flag(obj.get("dropResets", False)),
    )


def parse_rate_spec(spec: str) -> RateOptions:
    """``rate`` or ``rate{[drop]counter[,max[,reset]]}`` of the GET ``m=`` form,
    with ``QueryRpc.parseRateOptions``'s errors."""
    if len(spec) == 4:
        return RateOptions()
    if len(spec) < 6:
        raise QueryError(f"Invalid rate options specification: {spec}")
    parts = spec[5:-1].split(",")
    if not 1 <= len(parts) <= 3:
        raise QueryError("Incorrect number of values in rate options specification, must be "
                         f"counter[,counter max value,reset value], recieved: {len(parts)} parts")
    counter = parts[0].endswith("counter")
    max_: int = INT64_MAX
    reset = 0
    if len(parts) >= 2 and parts[1]:
        if not _INTEGER.match(parts[1]):
            raise QueryError("Max value of counter was not a number, received "
                             f"'{shown(parts[1])}'")
        max_ = int(parts[1])
    if len(parts) >= 3 and parts[2]:
        if not _INTEGER.match(parts[2]):
            raise QueryError("Reset value of counter was not a number, received "
                             f"'{shown(parts[2])}'")
        reset = int(parts[2])
    return RateOptions(counter, max_, reset, parts[0] == "dropcounter")


@dataclasses.dataclass
class _RawSub:
    """A sub-query as sent, validated later in OpenTSDB's order."""

    aggregator: str
    metric: str
    filters: list[TagFilter]
    downsample: str | None = None
    rate: bool = False
    rate_options: RateOptions | None = None
    explicit_tags: bool = False
    tsuids: bool = False

    def identity(self) -> tuple:
        """What makes two sub-queries duplicates (OpenTSDB keeps the first)."""
        return (self.aggregator, self.metric, self.downsample, self.rate, self.rate_options,
                self.explicit_tags, tuple((f.type, f.tagk, f.filter, f.group_by)
                                          for f in self.filters))


def parse_m(text: str) -> _RawSub:
    """``agg:[rate[{...}]:][downsample:]metric[{k=v,...}][{k=filter,...}]``."""
    if not text:
        raise QueryError("The query string was empty")
    parts = text.split(":")
    if not 2 <= len(parts) <= 5:
        raise QueryError(f"Invalid parameter m={text} ("
                         f"{'not enough' if len(parts) < 2 else 'too many'} :-separated parts)")
    metric, filters = parse_metric_and_filters(parts[-1])
    sub = _RawSub(parts[0], metric, filters)
    for part in parts[1:-1]:
        low = part.lower()
        if low.startswith("rate"):
            sub.rate = True
            if "{" in part:
                sub.rate_options = parse_rate_spec(part)
        elif part[:1].isdigit():
            sub.downsample = part
        elif low.startswith("explicit_tags"):
            sub.explicit_tags = True
    return sub


def _sub_from_json(obj: Any) -> _RawSub:
    if not isinstance(obj, dict):
        raise QueryError("Unable to parse the given JSON", "a sub-query must be an object")
    filters: list[TagFilter] = []
    try:
        tags = obj.get("tags")
        if tags:
            if not isinstance(tags, dict):
                raise QueryError("tags must be an object")
            add_filters(filters, tags_to_filters(tags))
        listed = obj.get("filters") or ()
        if not isinstance(listed, list | tuple):
            raise QueryError("filters must be an array")
        for f in listed:
            if not isinstance(f, dict):
                raise QueryError("a filter must be an object")
            add_filters(filters, [make_filter(
                _text(f.get("type")), _text(f.get("tagk")), _text(f.get("filter")),
                _flag(f.get("groupBy", False)))])
    except QueryError as e:
        raise QueryError("Unable to parse the given JSON", e.message) from None
    ds = obj.get("downsample")
    return _RawSub(
        aggregator=_text(obj.get("aggregator")),
        metric=_text(obj.get("metric")),
        filters=filters,
        downsample=_text(ds) or None,
        rate=_flag(obj.get("rate", False)),
        rate_options=_rate_options_json(obj["rateOptions"]) if obj.get("rateOptions") else None,
        explicit_tags=_flag(obj.get("explicitTags", False)),
        tsuids=bool(obj.get("tsuids")),
    )


def _validate(start: Any, end: Any, subs: list[_RawSub] | None, now_ms: int,
              tz: str | None) -> tuple[int, int, list[SubQuery | None]]:
    """OpenTSDB ``TSQuery.validateAndSetQuery``: times, then each sub-query."""
    if start is None or start == "":
        raise QueryError("Missing start time")
    start_ms = storable_time_ms(parse_time_ms(start, now_ms, tz), "Start time")
    end_ms = now_ms if end is None or end == "" else storable_time_ms(
        parse_time_ms(end, now_ms, tz), "End time")
    if end_ms < start_ms:
        raise QueryError(f"End time [{end_ms}] must be greater than or equal to the start "
                         f"time [{start_ms}]")
    if not subs:
        raise QueryError("Missing queries")
    out: list[SubQuery | None] = []
    seen: set[tuple] = set()
    for raw in subs:
        ident = raw.identity()
        if ident in seen:
            continue
        seen.add(ident)
        if not raw.aggregator:
            raise QueryError("Missing the aggregation function")
        agg = get_aggregator(raw.aggregator)
        if not raw.metric:
            if raw.tsuids:
                out.append(None)  # TSUID sub-queries are ignored (IoT Lab docs)
                continue
            raise QueryError("Missing the metric or tsuids, provide at least one")
        ds = parse_downsample(raw.downsample) if raw.downsample else None
        out.append(SubQuery(agg, raw.metric, raw.filters, ds, raw.rate, raw.rate_options,
                            raw.explicit_tags, len(out)))
    return start_ms, end_ms, out


def parse_query_post(obj: Any, now_ms: int) -> TSQuery:
    if not isinstance(obj, dict):
        raise QueryError("Unable to parse the given JSON", "the query must be an object")
    queries = obj.get("queries")
    if queries is not None and not isinstance(queries, list):
        raise QueryError("Unable to parse the given JSON", "queries must be an array")
    subs = [_sub_from_json(q) for q in queries or ()]
    tz = _text(obj.get("timezone")) or None
    start, end, parsed = _validate(obj.get("start"), obj.get("end"), subs, now_ms, tz)
    return TSQuery(start, end, parsed, _flag(obj.get("msResolution", False)),
                   _flag(obj.get("showQuery", False)))


def parse_query_get(params: Params, now_ms: int) -> TSQuery:
    start = params.required("start")
    end = params.get("end")
    tz = params.get("tz") or params.get("timezone")
    subs = [parse_m(m) for m in params.all("m")]
    if not subs:
        if params.has("tsuid"):
            subs = [_RawSub("sum", "", [], tsuids=True)]
        else:
            raise QueryError("Missing sub queries")
    start_ms, end_ms, parsed = _validate(start, end, subs, now_ms, tz)
    return TSQuery(start_ms, end_ms, parsed, params.has("ms"), params.has("show_query"))


def _wire_value(v: Any, null_fill: bool) -> Any:
    """NaN and infinities as Jackson writes them by default (quoted), or null for
    the ``null`` fill policy."""
    if isinstance(v, float) and not math.isfinite(v):
        if v != v:
            return None if null_fill else "NaN"
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _dps(keys: list[int], values: list[Any], arrays: bool, budget: Any) -> bytes:
    """``dps`` encoded a slice at a time: one ``json.dumps`` of a million points
    holds the interpreter lock for the whole call, a slice only briefly, and
    the budget is looked at between slices."""
    pieces = []
    for i in range(0, len(keys), STEPS):
        k, v = keys[i:i + STEPS], values[i:i + STEPS]
        if arrays:
            pieces.append(_dumps(list(zip(k, v, strict=True)))[1:-1])
        else:
            pieces.append(_dumps(dict(zip(map(str, k), v, strict=True)))[1:-1])
        budget.spend(len(k))
    inner = b",".join(pieces)
    return b"[" + inner + b"]" if arrays else b"{" + inner + b"}"


def format_results(tsq: TSQuery, runs: list[tuple[SubQuery, list[Any]]], arrays: bool,
                   budget: Any = None) -> bytes:
    """The /api/query response body (``dps`` last in every object, as OpenTSDB)."""
    budget = budget or Unbounded()
    div = NS_PER_MS if tsq.ms_resolution else NS_PER_S
    out = []
    for sub, results in runs:
        null_fill = sub.downsample is not None and sub.downsample.fill == "null"
        for r in results:
            obj: dict[str, Any] = {"metric": r.metric, "tags": r.tags,
                                   "aggregateTags": r.aggregate_tags}
            if tsq.show_query:
                obj["query"] = sub.as_json()
            keys = [t // div for t in r.times]
            values = r.values
            if not all(map(math.isfinite, values)):
                values = [_wire_value(v, null_fill) for v in values]
            out.append(_dumps(obj)[:-1] + b',"dps":' + _dps(keys, values, arrays, budget) + b"}")
    return b"[" + b",".join(out) + b"]"


class QueryResource(_Endpoint):
    """/api/query: GET with ``m=`` or POST with a JSON ``queries`` list."""

    methods = (b"GET", b"POST", b"DELETE")

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:
        if request.method == b"DELETE":
            raise QueryError("Bad request", "Deleting data is not enabled "
                             "(tsd.http.query.allow_delete=false)")
        now_ms = int(self.core.reactor.seconds() * 1000)
        if request.method == b"POST":
            tsq = parse_query_post(_json_body(request), now_ms)
        else:
            tsq = parse_query_get(params, now_ms)
        for sub in tsq.queries:
            if sub is not None:
                self.runner.limits.check_filters(sub.filters)
        runs = await self.run(tsq, principal, budget)
        return await self.runner.call(budget, format_results, tsq, runs,
                                      params.has("arrays"), budget)

    async def run(self, tsq: TSQuery, principal: Any,
                  budget: QueryBudget) -> list[tuple[SubQuery, list[Any]]]:
        """Read and compute every sub-query, the token's tags ANDed in.

        A fill policy's buckets are counted and refused before anything is
        read; the points read before they are computed.
        """
        backend = await _backend(self.core, principal.solution)
        token_filters = literal_filters(principal.tags)
        start_ns, end_ns = tsq.start_ms * NS_PER_MS, tsq.end_ms * NS_PER_MS + NS_PER_MS - 1
        unit = NS_PER_MS if tsq.ms_resolution else NS_PER_S
        for sub in tsq.queries:
            if sub is not None:
                budget.plan_buckets(sub.planned_buckets(start_ns, end_ns))
        runs: list[tuple[SubQuery, list[Any]]] = []
        for sub in tsq.queries:
            if sub is None:
                continue
            effective = dataclasses.replace(sub, filters=[*sub.filters, *token_filters])
            keys, whole = await _candidates(backend, principal.solution, effective)
            selected = await self.runner.call(budget, effective.select, keys, budget)
            if not selected:
                continue
            budget.plan_buckets(effective.planned_buckets(start_ns, end_ns) * len(selected))
            lo, hi = effective.read_range(start_ns, end_ns)
            lo, hi = max(lo, -INT64_MAX), min(hi, INT64_MAX)
            if ISeriesByKey.providedBy(backend) and not (whole and len(selected) == len(keys)):
                rows = await read_series_of(backend, budget, principal.solution, selected,
                                            lo, hi)
            else:  # (every series of the metric, or a reader without keyed reads)
                rows = await read_series(backend, budget, principal.solution, sub.metric,
                                         lo, hi)
            results = await self.runner.call(budget, run_sub_query, effective, rows,
                                             start_ns, end_ns, unit, budget)
            runs.append((sub, results))
        return runs


async def _candidates(backend: Any, solution: str, sub: SubQuery) -> tuple[list[Any], bool]:
    """The series of ``sub``'s metric its filters are to select from, and
    whether that is all of them: from the backend's tag index (`ITagIndex`)
    the ones its literal filters allow, else every one.  A metric with no
    series at all is OpenTSDB's unknown name (400)."""
    literal = literal_tags(sub.filters) if ITagIndex.providedBy(backend) else {}
    if literal:
        keys = await backend.list_series_where(solution, sub.metric, literal)
        if keys or await backend.suggest_names(solution, "metrics", sub.metric, 1) == [
                sub.metric]:
            return keys, False
    elif backend is not None:
        keys = await backend.list_series(solution, sub.metric)
        if keys:
            return keys, True
    raise QueryError(f"No such name for 'metrics': '{shown(sub.metric)}'")


# -- /api/suggest, /api/search/lookup ------------------------------------------------


def _token_visible(keys: list[Any], tags: Any, budget: QueryBudget) -> list[Any]:
    token_filters = literal_filters(tags)
    out = []
    for i, k in enumerate(keys):
        if not i % STEPS:
            budget.spend(STEPS)
        if matches_all(token_filters, series_tags(k)):
            out.append(k)
    return out


async def _visible_series(core: Core, runner: QueryRunner, principal: Any,
                          budget: QueryBudget) -> list[Any]:
    """The principal's series: its solution's, narrowed by its token's tags."""
    backend = await _backend(core, principal.solution)
    if backend is None:
        return []
    keys = await backend.list_series(principal.solution)
    if principal.tags:
        keys = await runner.call(budget, _token_visible, keys, principal.tags, budget)
    return keys


def suggest(keys: list[Any], kind: str, prefix: str, limit: int,
            budget: QueryBudget) -> list[str]:
    """The names of ``kind`` starting with ``prefix``, sorted, at most ``limit``."""
    names: set[str] = set()
    for i, (metric, _, tags) in enumerate(keys):
        if not i % STEPS:
            budget.spend(STEPS)
        if kind == "metrics":
            names.add(metric)
        else:
            names.update(k if kind == "tagk" else v for k, v in tags)
    found = sorted(n for n in names if n.startswith(prefix))[:limit]
    budget.add_output(len(found), "names")
    return found


class SuggestResource(_Endpoint):
    """/api/suggest: metric names, tag keys or tag values by prefix, sorted."""

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:
        if request.method == b"POST":
            obj = _json_body(request)
            if not isinstance(obj, dict):
                raise QueryError("Unable to parse the given JSON", "expected an object")
            kind = _text(obj.get("type"))
            if not kind:
                raise QueryError("Missing 'type' parameter")
            prefix = _text(obj.get("q"))
            max_text: str | None = _text(obj.get("max"))
        else:
            kind = params.required("type")
            prefix = params.get("q") or ""
            max_text = params.get("max")
        limit = DEFAULT_SUGGEST_MAX
        if max_text:
            if not _INTEGER.match(max_text):
                raise QueryError("Unable to parse 'max' as a number")
            limit = int(max_text) if int(max_text) > 0 else DEFAULT_SUGGEST_MAX
        if kind not in ("metrics", "tagk", "tagv"):
            raise QueryError(f"Invalid 'type' parameter:{shown(kind)}")
        if not principal.tags:  # (a token's tags narrow the names: listed below)
            backend = await _backend(self.core, principal.solution)
            if ITagIndex.providedBy(backend):
                # one past what the reply may hold, so an answer over it is refused
                wanted = min(limit, budget.limits.max_output - budget.output + 1)
                found = await backend.suggest_names(principal.solution, kind, prefix,
                                                    max(0, wanted))
                budget.add_output(len(found), "names")
                return found
        keys = await _visible_series(self.core, self.runner, principal, budget)
        return await self.runner.call(budget, suggest, keys, kind, prefix, limit, budget)


def _tsuid(key: Any) -> str:
    """A stable stand-in for OpenTSDB's TSUID (tsnet has no UID tables)."""
    text = json.dumps([key[0], key[1], key[2]], separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:18].upper()


def parse_lookup_m(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    """``metric{k=v,k=*,*=v}`` of a lookup (``Tags.parseWithMetric`` to pairs)."""
    try:
        curly = text.find("{")
        if curly < 0:
            if not text:
                raise QueryError("Metric string was empty")
            return text, []
        if not text.endswith("}"):
            raise QueryError(f"Missing '}}' at the end of: {text}")
        metric = text[:curly] or None
        pairs: list[tuple[str, str]] = []
        if curly == len(text) - 2:
            if metric is None:
                raise QueryError(f"Missing metric and tags: {text}")
            return metric, pairs
        for item in text[curly + 1:-1].split(","):
            if len(item) < 2:
                raise QueryError(f"When parsing tag '{item}': Missing tag pair")
            if item.startswith("="):
                pairs.append(("*", item[1:]))
            elif item.endswith("="):
                pairs.append((item[:-1], "*"))
            else:
                kv = item.split("=")
                if len(kv) != 2 or not kv[0] or not kv[1]:
                    raise QueryError(f"When parsing tag '{item}': invalid tag: {item}")
                pairs.append((kv[0], kv[1]))
        return metric, pairs
    except QueryError as e:
        raise QueryError("Unable to parse query", e.message) from None


def lookup_matches(metric: str | None, pairs: list[tuple[str, str]], key: Any) -> bool:
    """OpenTSDB lookup semantics: the metric AND each tag key's pairs, the pairs
    of one key ORed; ``*`` is a wildcard on either side of ``=``."""
    if metric not in (None, "*") and key[0] != metric:
        return False
    tags = series_tags(key)
    by_key: dict[str, set[str]] = {}
    any_key: set[str] = set()
    for k, v in pairs:
        if k == "*":
            if v != "*":
                any_key.add(v)
        else:
            by_key.setdefault(k, set()).add(v)
    for k, values in by_key.items():
        if k not in tags or ("*" not in values and tags[k] not in values):
            return False
    return not any_key or any(v in any_key for v in tags.values())


class LookupResource(_Endpoint):
    """/api/search/lookup: the series of a metric and/or tag pairs (``limit`` 0 or
    less: all of them, as in OpenTSDB's ``TimeSeriesLookup``)."""

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:
        started = self.core.reactor.seconds()
        raw = _body(request).strip()
        if raw:
            obj = _json_body(request)
            if not isinstance(obj, dict):
                raise QueryError("Unable to parse the given JSON", "expected an object")
            metric = _text(obj.get("metric")) or None
            tags = obj.get("tags") or ()
            if not isinstance(tags, list | tuple):
                raise QueryError("Unable to parse the given JSON", "tags must be an array")
            pairs = [(_text(t.get("key")) or "*", _text(t.get("value")) or "*")
                     for t in tags if isinstance(t, dict)]
            limit_text = _text(obj.get("limit"))
        else:
            metric, pairs = parse_lookup_m(params.required("m"))
            limit_text = params.get("limit") or ""
        limit = DEFAULT_LOOKUP_LIMIT
        if limit_text:
            if not _INTEGER.match(limit_text):
                raise QueryError("Unable to convert 'limit' to a valid number")
            limit = int(limit_text)
        if metric in (None, "*") and not pairs:
            raise QueryError("Missing metric and tags. Please supply at least one value.")
        keys = await _visible_series(self.core, self.runner, principal, budget)
        found, results = await self.runner.call(budget, lookup, keys, metric, pairs, limit,
                                                budget)
        return {
            "type": "LOOKUP",
            "metric": metric or "*",
            "tags": [{"key": k, "value": v} for k, v in pairs],
            "limit": limit,
            "time": int((self.core.reactor.seconds() - started) * 1000),
            "results": results,
            "startIndex": 0,
            "totalResults": found,
        }


def lookup(keys: list[Any], metric: str | None, pairs: list[tuple[str, str]], limit: int,
           budget: QueryBudget) -> tuple[int, list[dict[str, Any]]]:
    """(series found, the first ``limit`` of them as results; all when ``limit``
    is 0 or less)."""
    _check_names(keys, metric, pairs, budget)
    found = []
    for i, k in enumerate(keys):
        if not i % STEPS:
            budget.spend(STEPS)
        if lookup_matches(metric, pairs, k):
            found.append(k)
    shown_keys = found[:limit] if limit > 0 else found
    budget.add_output(len(shown_keys), "series")
    return len(found), [{"tsuid": _tsuid(k), "metric": k[0], "tags": series_tags(k)}
                        for k in shown_keys]


def _check_names(keys: list[Any], metric: str | None, pairs: list[tuple[str, str]],
                 budget: QueryBudget) -> None:
    """Unknown names are 404s in OpenTSDB (its UID lookups fail)."""
    def missing(kind: str, name: str) -> QueryError:
        return QueryError("Unable to resolve one or more UIDs",
                          f"No such name for '{kind}': '{shown(name)}'", status=404)

    metrics: set[str] = set()
    tagks: set[str] = set()
    tagvs: set[str] = set()
    for i, key in enumerate(keys):
        if not i % STEPS:
            budget.spend(STEPS)
        metrics.add(key[0])
        for k, v in series_tags(key).items():
            tagks.add(k)
            tagvs.add(v)
    if metric not in (None, "*") and metric not in metrics:
        raise missing("metrics", metric)
    for k, v in pairs:
        if k != "*" and k not in tagks:
            raise missing("tagk", k)
        if v != "*" and v not in tagvs:
            raise missing("tagv", v)


# -- static endpoints -------------------------------------------------------------------


class VersionResource(_Endpoint):
    """/api/version (GET and POST, as 2.2-2.4.0 allow: A12)."""

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:
        from tsnet import __version__

        revision = f"tsnet-{__version__}"
        return {"version": OPENTSDB_VERSION, "short_revision": revision,
                "full_revision": revision, "timestamp": str(BUILD_TIMESTAMP), "repo_status": "MINT",
                "user": "tsnet", "host": socket.gethostname(), "repo": "tsnet",
                "branch": "tsnet"}


class AggregatorsResource(_Endpoint):
    """/api/aggregators (GET and POST: A12)."""

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:
        return sorted(AGGREGATORS)


class FiltersResource(_Endpoint):
    """/api/config/filters: the filter types, with examples (Grafana lists the keys)."""

    async def respond(self, request: Any, principal: Any, params: Params,
                      budget: QueryBudget) -> Any:
        return {t: {"examples": filter_examples(t), "description": d}
                for t, d in FILTER_DOCS.items()}


def read_resources(core: Core) -> dict[bytes, Resource]:
    """Every read route, under /api/ and /api/v1/, sharing one runner (and so
    one set of limits) and one bounded log."""
    runner = QueryRunner(core.reactor, QueryLimits.from_config(core.config))
    logs = LogBound(log, core.reactor)
    endpoints: dict[bytes, Resource] = {
        name: cls(core, runner, logs) for name, cls in (
            (b"query", QueryResource),
            (b"suggest", SuggestResource),
            (b"search/lookup", LookupResource),
            (b"version", VersionResource),
            (b"aggregators", AggregatorsResource),
            (b"config/filters", FiltersResource),
        )
    }
    routes: dict[bytes, Resource] = {}
    for name, resource in endpoints.items():
        routes[b"/api/" + name] = resource
        routes[b"/api/v1/" + name] = resource
    return routes

