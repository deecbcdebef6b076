"""ATSD's read-back API (spec §6.3) on the shared HTTP site.

``POST /api/v1/series/query``, ``/api/v1/properties/query`` and
``/api/v1/messages/query`` take ATSD's JSON query arrays; ``GET
/api/v1/entities/{entity}`` and ``/api/v1/metrics/{metric}`` return the meta
record (404 when there is none).  Every request needs a READ token (or an
``auth = none`` listener) and sees its solution only; a READ token's tags
filter series and messages as they filter OpenTSDB queries.  Names are
matched case-insensitively (they are stored lower-case); ``startDate`` is
inclusive and ``endDate`` exclusive, either an ISO time, epoch milliseconds,
``now`` or ``now - N * UNIT``.

The series, properties and messages queries spend the server's query limits
(`tsnet.query_limits`, the same ``[tsnet]`` keys as OpenTSDB's /api/query):
what is read counts against ``max_query_points``, what is returned against
``max_query_output``, and the filtering and encoding run in the thread pool
under ``query_timeout``.  Over a limit: 413 (503 for the time) with ATSD's
``{"error": ...}`` naming the key.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tsnet.errors import Forbidden, NotFound, Unauthorized
from tsnet.http.bodies import BodyError, request_body
from tsnet.http.credentials import listener_of, principal_for
from tsnet.http.site import DEFAULT_MAX_BODY
from tsnet.logbound import LogBound
from tsnet.model import READ, Message, Property
from tsnet.protocols.atsd.http_command import JSON_CONTENT_TYPE, error_body
from tsnet.protocols.atsd.parse import iso_ms
from tsnet.query import MAX_DIGITS, MAX_TIME_MS, MIN_TIME_MS, STEPS, shown
from tsnet.query import QueryError as LimitError
from tsnet.query_limits import QueryBudget, QueryLimits, QueryRunner, read_series

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.atsd.read")

MS = 1_000_000
#: queries one request may hold
MAX_QUERIES = 100
UNITS_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000,
            "day": 86_400_000, "week": 604_800_000}
_RELATIVE = re.compile(r"now\s*([+-])\s*(\d+(?:\.\d+)?)\s*\*\s*([a-z]+?)s?\Z")


class QueryError(ValueError):
    """A query ATSD would refuse: 400 with its message."""


def _whole_ms(x: float, value: Any) -> int:
    if not math.isfinite(x):
        raise QueryError(f"invalid date: {shown(repr(value))}")
    return int(x)


def parse_date(value: Any, now_ms: int) -> int:
    """ATSD's date forms as epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        raise QueryError(f"invalid date: {value!r}")
    if isinstance(value, int | float):
        return _whole_ms(value, value) if isinstance(value, float) else value
    text = str(value).strip().lower()
    if text == "now":
        return now_ms
    m = _RELATIVE.match(text)
    if m:
        unit = UNITS_MS.get(m.group(3))
        if unit is None:
            raise QueryError(f"invalid date: {shown(repr(value))}: unknown unit "
                             f"{shown(m.group(3))!r}")
        delta = _whole_ms(float(m.group(2)) * unit, value)
        return now_ms + delta if m.group(1) == "+" else now_ms - delta
    if text.isascii() and text.isdigit():
        if len(text) > MAX_DIGITS:
            raise QueryError(f"invalid date: {shown(repr(value))}")
        return int(text)
    try:
        d = datetime.fromisoformat(str(value).strip().replace("z", "Z"))
    except ValueError:
        raise QueryError(f"invalid date: {shown(repr(value))}") from None
    if d.tzinfo is None:
        raise QueryError(f"invalid date: {shown(repr(value))}: no time zone")
    return int(d.timestamp() * 1000)


def _storable(ms: int) -> int:
    """``ms`` if storage can hold it (int64 nanoseconds), else ATSD's 400."""
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise QueryError(f"invalid date: {shown(str(ms))} ms is outside the times tsnet can "
                         "store (1677-09-21 to 2262-04-11 UTC)")
    return ms


def date_range(q: dict, now_ms: int) -> tuple[int, int]:
    """[start, end) in ms from ``startDate``/``endDate``/``interval``."""
    start, end = _date_range(q, now_ms)
    return _storable(start), _storable(end)


def _date_range(q: dict, now_ms: int) -> tuple[int, int]:
    interval = q.get("interval")
    span = None
    if isinstance(interval, dict):
        unit = UNITS_MS.get(str(interval.get("unit", "")).lower())
        count = interval.get("count")
        if unit is None or not isinstance(count, int | float) or isinstance(count, bool):
            raise QueryError("invalid interval: count and unit are required")
        span_ms = count * unit
        if isinstance(span_ms, float) and not math.isfinite(span_ms):
            raise QueryError("invalid interval: the count is too large")
        span = int(span_ms)
    start, end = q.get("startDate"), q.get("endDate")
    if start is not None and end is not None:
        return parse_date(start, now_ms), parse_date(end, now_ms)
    if span is not None and end is not None:
        e = parse_date(end, now_ms)
        return e - span, e
    if span is not None and start is not None:
        s = parse_date(start, now_ms)
        return s, s + span
    if span is not None:
        return now_ms - span, now_ms
    raise QueryError("startDate and endDate, or an interval, are required")


def _name(q: dict, field: str, required: bool = True) -> str | None:
    v = q.get(field)
    if v is None or v == "":
        if required:
            raise QueryError(f"{field} is required")
        return None
    if not isinstance(v, str):
        raise QueryError(f"{field} must be a string")
    return v.lower()


def tags_match(stored: dict[str, str], wanted: dict, exact: bool) -> bool:
    """ATSD's tag filter: each wanted tag (a value, ``*``, or a list of them)
    matches; with ``exactMatch`` the series has no other tags."""
    for k, want in wanted.items():
        v = stored.get(k.lower())
        options = want if isinstance(want, list) else [want]
        if v is None or not any(o == "*" or o == v for o in options):
            return False
    return not exact or len(stored) == len(wanted)


def _json_value(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _TooManyDigits(Exception):
    pass


def _json_int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise _TooManyDigits()
    return int(text)


def parse_queries(body: bytes) -> Any:
    """The JSON of a query request, with ATSD's 400 for anything unparseable
    (too deep, a number of too many digits) and no interpreter detail."""
    try:
        return json.loads(body or b"null", parse_int=_json_int)
    except _TooManyDigits:
        raise QueryError(f"invalid JSON: a number has more than {MAX_DIGITS} digits") from None
    except RecursionError:
        raise QueryError("invalid JSON: arrays and objects are nested too deeply") from None
    except json.JSONDecodeError as e:
        raise QueryError(f"invalid JSON: {e}") from None
    except ValueError:  # not UTF-8
        raise QueryError("invalid JSON: the body is not UTF-8 text") from None


class _JsonResource(Resource):
    """A read-back route: READ principal, JSON in and out, errors as ATSD's.

    ``answer`` returns (code, a JSON-able object or ready bytes); each request
    has a `QueryBudget` from the routes' shared runner.
    """

    isLeaf = True

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
        d = defer.ensureDeferred(self._serve(request, budget))
        d.addCallbacks(self._answer, self._crashed, callbackArgs=(request, gone),
                       errbackArgs=(request, gone))
        d.addBoth(lambda _: self.runner.finish(budget))
        return NOT_DONE_YET

    async def _serve(self, request: Any, budget: QueryBudget) -> tuple[int, Any]:
        try:
            principal = await principal_for(request, READ)
        except Unauthorized:
            request.setHeader(b"www-authenticate", b'Basic realm="atsd"')
            return 401, {"error": "Unauthorized"}
        except Forbidden:
            return 403, {"error": "Forbidden: the token has no read scope"}
        try:
            backend = self.core.storage.backend_for(principal.solution)
        except NotFound:
            await self.core.storage.refresh()
            backend = self.core.storage.backend_for(principal.solution)
        try:
            return await self.answer(request, principal, backend, budget)
        except QueryError as e:
            return 400, {"error": str(e)}
        except LimitError as e:  # a query limit, or the server stopping
            return e.status, {"error": e.message}

    async def answer(self, request: Any, principal: Any, backend: Any,
                     budget: QueryBudget) -> tuple[int, Any]:
        raise NotImplementedError

    def _answer(self, reply: tuple[int, Any], request: Any, gone: list[bool]) -> None:
        if gone or request.finished:
            return
        code, obj = reply
        request.setResponseCode(code)
        request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.write(obj if isinstance(obj, bytes) else _dumps(obj))
        request.finish()

    def _crashed(self, f: Failure, request: Any, gone: list[bool]) -> None:
        self._logs.failure("atsd-read-failed", "an ATSD read request failed", f)
        if not gone and not request.finished:
            request.setResponseCode(500)
            request.setHeader(b"content-type", JSON_CONTENT_TYPE)
            request.setHeader(b"x-content-type-options", b"nosniff")
            request.write(error_body("Internal Server Error"))
            request.finish()


class _QueryResource(_JsonResource):
    """``POST`` of a JSON array of queries; one list of results for them all.

    ``query`` returns the encoded objects of one query's results; the filtering
    and encoding run in the pool (`QueryRunner.call`)."""

    async def answer(self, request: Any, principal: Any, backend: Any,
                     budget: QueryBudget) -> tuple[int, Any]:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return 405, {"error": "Method Not Allowed"}
        cap = listener_of(request).options.get("max_body", DEFAULT_MAX_BODY)
        try:
            body = request_body(request, cap)
        except BodyError as e:
            return e.code, {"error": e.message}
        queries = parse_queries(body)
        if isinstance(queries, dict):
            queries = [queries]
        if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
            raise QueryError("the body must be a JSON array of query objects")
        if len(queries) > MAX_QUERIES:
            raise QueryError(f"at most {MAX_QUERIES} queries a request")
        now_ms = int(self.core.reactor.seconds() * 1000)
        out: list[bytes] = []
        for q in queries:
            out.extend(await self.query(q, principal, backend, now_ms, budget))
        return 200, b"[" + b",".join(out) + b"]"

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int,
                    budget: QueryBudget) -> list[bytes]:
        raise NotImplementedError


def _with_data(head: dict, data: list[dict], budget: QueryBudget) -> bytes:
    """``head`` with ``"data": data`` last, ``data`` encoded a slice at a time
    (one ``json.dumps`` of a million samples would hold the interpreter lock
    for all of it)."""
    pieces = []
    for i in range(0, len(data), STEPS):
        pieces.append(_dumps(data[i:i + STEPS])[1:-1])
        budget.spend(STEPS)
    return _dumps(head)[:-1] + b',"data":[' + b",".join(pieces) + b"]}"


def series_reply(rows: list, entity: str, metric: str, wanted: dict, exact: bool,
                 token: dict, millis: bool, budget: QueryBudget) -> list[bytes]:
    """The encoded results of one series query over the rows read."""
    out: list[bytes] = []
    for key, times, values, texts in rows:
        budget.spend()
        if entity != "*" and key[1] != entity:
            continue
        tags = dict(key[2])
        if not tags_match(tags, wanted, exact) or not tags_match(tags, token, False):
            continue
        budget.add_output(len(times), "samples")
        data = []
        for i, t in enumerate(times):
            point: dict[str, Any] = {"t": t // MS} if millis else {"d": iso_ms(t // MS)}
            point["v"] = _json_value(values[i])
            if texts is not None and texts[i] is not None:
                point["x"] = texts[i]
            data.append(point)
            if not i % STEPS:
                budget.spend(STEPS)
        out.append(_with_data({"entity": key[1], "metric": key[0], "tags": tags,
                               "type": "HISTORY", "aggregate": {"type": "DETAIL"}}, data,
                              budget))
    if not out:  # ATSD answers an empty series for a query that matched nothing
        out.append(_dumps({"entity": entity, "metric": metric, "tags": dict(wanted),
                           "type": "HISTORY", "aggregate": {"type": "DETAIL"}, "data": []}))
    return out


class SeriesQuery(_QueryResource):
    """``POST /api/v1/series/query``: detail samples, ``d`` or ``t`` times."""

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int,
                    budget: QueryBudget) -> list[bytes]:
        entity = _name(q, "entity")
        metric = _name(q, "metric")
        start, end = date_range(q, now_ms)
        wanted = q.get("tags") or {}
        if not isinstance(wanted, dict):
            raise QueryError("tags must be an object")
        exact = q.get("exactMatch") is True
        millis = q.get("timeFormat") == "milliseconds"
        rows = await read_series(backend, budget, principal.solution, metric, start * MS,
                                 end * MS - 1) if end > start else []
        return await self.runner.call(budget, series_reply, rows, entity, metric, wanted,
                                      exact, dict(principal.tags), millis, budget)


def properties_reply(props: list[Property], key: dict, exact: bool, start: int | None,
                     end: int | None, budget: QueryBudget) -> list[bytes]:
    out = []
    for p in props:
        budget.spend()
        t = p.time_ns // MS
        if start is not None and end is not None and not start <= t < end:
            continue
        if not tags_match(p.key, key, exact):
            continue
        budget.add_output(1, "properties")
        out.append(_dumps({"type": p.type, "entity": p.entity, "key": dict(p.key),
                           "tags": dict(p.tags), "date": iso_ms(t)}))
    return out


class PropertiesQuery(_QueryResource):
    """``POST /api/v1/properties/query``."""

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int,
                    budget: QueryBudget) -> list[bytes]:
        ptype = _name(q, "type")
        entity = _name(q, "entity")
        key = q.get("key") or {}
        if not isinstance(key, dict):
            raise QueryError("key must be an object")
        exact = q.get("exactMatch") is True
        bounded = any(f in q for f in ("startDate", "endDate", "interval"))
        start, end = date_range(q, now_ms) if bounded else (None, None)
        props: list[Property] = await backend.read_properties(
            principal.solution, None if entity == "*" else entity, ptype)
        budget.read(len(props))
        return await self.runner.call(budget, properties_reply, props, key, exact, start, end,
                                      budget)


def messages_reply(messages: list[Message], token: dict, limit: int | None,
                   budget: QueryBudget) -> list[bytes]:
    out = []
    for m in messages:
        budget.spend()
        if not tags_match(m.tags, token, False):
            continue
        budget.add_output(1, "messages")
        line: dict[str, Any] = {"entity": m.entity, "type": m.type, "source": m.source,
                                "severity": m.severity, "tags": dict(m.tags),
                                "message": m.message, "date": iso_ms(m.time_ns // MS)}
        out.append(_dumps({k: v for k, v in line.items() if v is not None}))
        if limit and len(out) >= limit:
            break
    return out


class MessagesQuery(_QueryResource):
    """``POST /api/v1/messages/query``."""

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int,
                    budget: QueryBudget) -> list[bytes]:
        entity = _name(q, "entity")
        start, end = date_range(q, now_ms)
        mtype = q.get("type")
        limit = q.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            raise QueryError("limit must be a whole number")
        token = dict(principal.tags)
        # without token tags to filter by, storage stops at the limit (or just
        # past what a reply may hold) instead of reading every message
        cap = self.runner.limits.max_output + 1
        read_limit = None if token else min(limit or cap, cap)
        messages: list[Message] = await backend.read_messages(
            principal.solution, None if entity == "*" else entity, start * MS, end * MS,
            mtype if isinstance(mtype, str) else None, read_limit)
        budget.read(len(messages))
        return await self.runner.call(budget, messages_reply, messages, token, limit, budget)


#: export names of meta fields -> ATSD's API names, and the enum fields (upper-case there)
API_NAMES = {"enabled": "enabled", "label": "label", "description": "description",
             "units": "units", "data_type": "dataType", "interpolate": "interpolate",
             "timezone": "timeZone", "versioned": "versioned", "invalid_action": "invalidAction",
             "min_value": "minValue", "max_value": "maxValue", "filter": "filter",
             "persistent": "persistent", "retention_days": "retentionDays", "tags": "tags"}
ENUMS = {"data_type", "interpolate", "invalid_action"}


def meta_json(kind: str, name: str, fields: dict) -> dict:
    """A meta record as ATSD's entities/metrics API returns it."""
    out: dict[str, Any] = {"name": name, "enabled": True}
    if kind == "metric":
        out.update({"dataType": "FLOAT", "persistent": True, "versioned": False})
    out["tags"] = {}
    for k, v in fields.items():
        if v is None or k not in API_NAMES:
            continue
        out[API_NAMES[k]] = v.upper() if k in ENUMS and isinstance(v, str) else v
    return out


class MetaResource(_JsonResource):
    """``GET /api/v1/entities/{entity}`` or ``/api/v1/metrics/{metric}``."""

    def __init__(self, core: Core, runner: QueryRunner, logs: LogBound, kind: str) -> None:
        super().__init__(core, runner, logs)
        self.kind = kind

    async def answer(self, request: Any, principal: Any, backend: Any,
                     budget: QueryBudget) -> tuple[int, Any]:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return 405, {"error": "Method Not Allowed"}
        if len(request.postpath) != 1:
            return 404, {"error": f"no such {self.kind}"}
        name = urllib.parse.unquote(request.postpath[0].decode("latin-1")).lower()
        found = await backend.read_meta(principal.solution, self.kind, name)
        if not found:
            return 404, {"error": f"{self.kind} not found: {shown(name)}"}
        return 200, meta_json(self.kind, found[0].name, found[0].fields)


def read_resources(core: Core) -> dict[bytes, Resource]:
    """The read-back routes, sharing one runner (so one set of limits) and log."""
    runner = QueryRunner(core.reactor, QueryLimits.from_config(core.config))
    logs = LogBound(log, core.reactor)
    return {
        b"/api/v1/series/query": SeriesQuery(core, runner, logs),
        b"/api/v1/properties/query": PropertiesQuery(core, runner, logs),
        b"/api/v1/messages/query": MessagesQuery(core, runner, logs),
        b"/api/v1/entities/*": MetaResource(core, runner, logs, "entity"),
        b"/api/v1/metrics/*": MetaResource(core, runner, logs, "metric"),
    }
