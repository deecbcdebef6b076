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
from tsnet.model import READ, Message, Property
from tsnet.protocols.atsd.http_command import JSON_CONTENT_TYPE, error_body
from tsnet.protocols.atsd.parse import iso_ms

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.atsd.read")

MS = 1_000_000
#: queries one request may hold, and samples one reply may carry
MAX_QUERIES = 100
MAX_SAMPLES = 1_000_000
UNITS_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000,
            "day": 86_400_000, "week": 604_800_000}
_RELATIVE = re.compile(r"now\s*([+-])\s*(\d+(?:\.\d+)?)\s*\*\s*([a-z]+?)s?\Z")


class QueryError(ValueError):
    """A query ATSD would refuse: 400 with its message."""


def parse_date(value: Any, now_ms: int) -> int:
    """ATSD's date forms as epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        raise QueryError(f"invalid date: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip().lower()
    if text == "now":
        return now_ms
    m = _RELATIVE.match(text)
    if m:
        unit = UNITS_MS.get(m.group(3))
        if unit is None:
            raise QueryError(f"invalid date: {value!r}: unknown unit {m.group(3)!r}")
        delta = int(float(m.group(2)) * unit)
        return now_ms + delta if m.group(1) == "+" else now_ms - delta
    if text.isdigit():
        return int(text)
    try:
        d = datetime.fromisoformat(str(value).strip().replace("z", "Z"))
    except ValueError:
        raise QueryError(f"invalid date: {value!r}") from None
    if d.tzinfo is None:
        raise QueryError(f"invalid date: {value!r}: no time zone")
    return int(d.timestamp() * 1000)


def date_range(q: dict, now_ms: int) -> tuple[int, int]:
    """[start, end) in ms from ``startDate``/``endDate``/``interval``."""
    interval = q.get("interval")
    span = None
    if isinstance(interval, dict):
        unit = UNITS_MS.get(str(interval.get("unit", "")).lower())
        count = interval.get("count")
        if unit is None or not isinstance(count, int | float) or isinstance(count, bool):
            raise QueryError("invalid interval: count and unit are required")
        span = int(count * unit)
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


class _JsonResource(Resource):
    """A read-back route: READ principal, JSON in and out, errors as ATSD's."""

    isLeaf = True

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core

    def render(self, request: Any) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = defer.ensureDeferred(self._serve(request))
        d.addCallbacks(self._answer, self._crashed, callbackArgs=(request, gone),
                       errbackArgs=(request, gone))
        return NOT_DONE_YET

    async def _serve(self, request: Any) -> tuple[int, Any]:
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
            return await self.answer(request, principal, backend)
        except QueryError as e:
            return 400, {"error": str(e)}

    async def answer(self, request: Any, principal: Any, backend: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def _answer(self, reply: tuple[int, Any], request: Any, gone: list[bool]) -> None:
        if gone or request.finished:
            return
        code, obj = reply
        request.setResponseCode(code)
        request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        request.write(json.dumps(obj, separators=(",", ":")).encode())
        request.finish()

    def _crashed(self, f: Failure, request: Any, gone: list[bool]) -> None:
        log.failure("an ATSD read request failed", f)
        if not gone and not request.finished:
            request.setResponseCode(500)
            request.setHeader(b"content-type", JSON_CONTENT_TYPE)
            request.write(error_body("Internal Server Error"))
            request.finish()


class _QueryResource(_JsonResource):
    """``POST`` of a JSON array of queries; one list of results for them all."""

    async def answer(self, request: Any, principal: Any, backend: Any) -> tuple[int, Any]:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return 405, {"error": "Method Not Allowed"}
        cap = listener_of(request).options.get("max_body", DEFAULT_MAX_BODY)
        try:
            body = request_body(request, cap)
            queries = json.loads(body or b"null")
        except BodyError as e:
            return e.code, {"error": e.message}
        except ValueError as e:
            raise QueryError(f"invalid JSON: {e}") from None
        if isinstance(queries, dict):
            queries = [queries]
        if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
            raise QueryError("the body must be a JSON array of query objects")
        if len(queries) > MAX_QUERIES:
            raise QueryError(f"at most {MAX_QUERIES} queries a request")
        now_ms = int(self.core.reactor.seconds() * 1000)
        out: list[dict] = []
        for q in queries:
            out.extend(await self.query(q, principal, backend, now_ms))
        return 200, out

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int) -> list[dict]:
        raise NotImplementedError


class SeriesQuery(_QueryResource):
    """``POST /api/v1/series/query``: detail samples, ``d`` or ``t`` times."""

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int) -> list[dict]:
        entity = _name(q, "entity")
        metric = _name(q, "metric")
        start, end = date_range(q, now_ms)
        wanted = q.get("tags") or {}
        if not isinstance(wanted, dict):
            raise QueryError("tags must be an object")
        exact = q.get("exactMatch") is True
        millis = q.get("timeFormat") == "milliseconds"
        token = dict(principal.tags)
        rows = await backend.read_series(principal.solution, metric, start * MS,
                                         end * MS - 1) if end > start else []
        out, samples = [], 0
        for key, times, values, texts in rows:
            if entity != "*" and key[1] != entity:
                continue
            tags = dict(key[2])
            if not tags_match(tags, wanted, exact) or not tags_match(tags, token, False):
                continue
            samples += len(times)
            if samples > MAX_SAMPLES:
                raise QueryError(f"the reply would hold more than {MAX_SAMPLES} samples")
            data = []
            for i, t in enumerate(times):
                point: dict[str, Any] = {"t": t // MS} if millis else {"d": iso_ms(t // MS)}
                point["v"] = _json_value(values[i])
                if texts is not None and texts[i] is not None:
                    point["x"] = texts[i]
                data.append(point)
            out.append({"entity": key[1], "metric": key[0], "tags": tags, "type": "HISTORY",
                        "aggregate": {"type": "DETAIL"}, "data": data})
        if not out:  # ATSD answers an empty series for a query that matched nothing
            out.append({"entity": entity, "metric": metric, "tags": dict(wanted),
                        "type": "HISTORY", "aggregate": {"type": "DETAIL"}, "data": []})
        return out


class PropertiesQuery(_QueryResource):
    """``POST /api/v1/properties/query``."""

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int) -> list[dict]:
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
        out = []
        for p in props:
            t = p.time_ns // MS
            if start is not None and not start <= t < end:
                continue
            if not tags_match(p.key, key, exact):
                continue
            out.append({"type": p.type, "entity": p.entity, "key": dict(p.key),
                        "tags": dict(p.tags), "date": iso_ms(t)})
        return out


class MessagesQuery(_QueryResource):
    """``POST /api/v1/messages/query``."""

    async def query(self, q: dict, principal: Any, backend: Any, now_ms: int) -> list[dict]:
        entity = _name(q, "entity")
        start, end = date_range(q, now_ms)
        mtype = q.get("type")
        limit = q.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            raise QueryError("limit must be a whole number")
        token = dict(principal.tags)
        messages: list[Message] = await backend.read_messages(
            principal.solution, None if entity == "*" else entity, start * MS, end * MS,
            mtype if isinstance(mtype, str) else None)
        out = []
        for m in messages:
            if not tags_match(m.tags, token, False):
                continue
            line: dict[str, Any] = {"entity": m.entity, "type": m.type, "source": m.source,
                                    "severity": m.severity, "tags": dict(m.tags),
                                    "message": m.message, "date": iso_ms(m.time_ns // MS)}
            out.append({k: v for k, v in line.items() if v is not None})
            if limit and len(out) >= limit:
                break
        return out


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

    def __init__(self, core: Core, kind: str) -> None:
        super().__init__(core)
        self.kind = kind

    async def answer(self, request: Any, principal: Any, backend: Any) -> tuple[int, Any]:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return 405, {"error": "Method Not Allowed"}
        if len(request.postpath) != 1:
            return 404, {"error": f"no such {self.kind}"}
        name = urllib.parse.unquote(request.postpath[0].decode("latin-1")).lower()
        found = await backend.read_meta(principal.solution, self.kind, name)
        if not found:
            return 404, {"error": f"{self.kind} not found: {name}"}
        return 200, meta_json(self.kind, found[0].name, found[0].fields)


def read_resources(core: Core) -> dict[bytes, Resource]:
    return {
        b"/api/v1/series/query": SeriesQuery(core),
        b"/api/v1/properties/query": PropertiesQuery(core),
        b"/api/v1/messages/query": MessagesQuery(core),
        b"/api/v1/entities/*": MetaResource(core, "entity"),
        b"/api/v1/metrics/*": MetaResource(core, "metric"),
    }
