"""ts-store's REST API on the shared HTTP site (spec §0-§5, §8.1, §9).

One resource answers everything under ``/api/stores``: it finds the route,
checks the admin or store key, and runs the handler off the request, answering
JSON in ts-store's shapes (``{"error": ...}`` with its status codes and texts).
CORS headers go on every answer, as ts-store's middleware sends them.  Writes
answer after commit (`Stores.write`); reads go to storage through
`tsnet.protocols.tsstore.reads`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsnet.logbound import LogBound
from tsnet.plugin import (
    DEFAULT_MAX_BODY,
    BodyError,
    IHTTPErrors,
    StorageUnavailable,
    listener_of,
    request_body,
)
from tsnet.protocols.tsstore import reads
from tsnet.protocols.tsstore.gojson import (
    GoJSONError,
    check_json,
    decode_envelope,
    go_kind,
    go_loads,
)
from tsnet.protocols.tsstore.schema import SchemaError, compact
from tsnet.protocols.tsstore.stores import Store, StoreError, Stores

if TYPE_CHECKING:
    from twisted.web.server import Request

log = Logger(namespace="tsnet.tsstore.rest")

JSON_TYPE = b"application/json; charset=utf-8"
CONTENT_TYPES = {"binary": "application/octet-stream", "text": "text/plain",
                 "json": "application/json", "schema": "application/json"}


@implementer(IHTTPErrors)
class TsstoreErrors:
    """``{"error": "<message>"}``, ts-store's one error shape."""

    def error_reply(self, code: int, message: str, details: str | None = None,
                    ) -> tuple[bytes, bytes]:
        text = details or message
        return JSON_TYPE, json.dumps({"error": text}, separators=(",", ":")).encode()


ERRORS = TsstoreErrors()


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()


def request_json(body: bytes) -> Any:
    """A JSON request body decoded as Go decodes it, or StoreError 400 with Go's
    text (never Python's: a number of 5000 digits is Go's range error, not
    Python's int-digit limit).  An empty body is null."""
    try:
        return go_loads(body or b"null")
    except GoJSONError as e:
        raise StoreError(400, str(e)) from None


def _go_type_error(value: Any, where: str, go_type: str) -> StoreError:
    """Go's UnmarshalTypeError for a request field (the literal is shown only
    for a number into a numeric type)."""
    kind = go_kind(value)
    if kind == "number" and go_type != "string":
        kind = f"number {json.dumps(value)}"
    return StoreError(400, f"json: cannot unmarshal {kind} into Go struct field {where} "
                           f"of type {go_type}")


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def set_cors(request: Request) -> None:
    """ts-store's CORS middleware (spec §0), on every tsstore answer."""
    origin = request.getHeader(b"origin")
    h = request.setHeader
    h(b"access-control-allow-origin", origin or b"*")
    h(b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS")
    h(b"access-control-allow-headers",
      b"Origin, Content-Type, Accept, X-API-Key, Authorization")
    h(b"access-control-allow-credentials", b"true")
    h(b"access-control-max-age", b"86400")


def store_key(request: Request) -> str | None:
    """The key, from ``X-API-Key``, else ``Authorization: Bearer``, else ``api_key``."""
    for raw in (request.getHeader(b"x-api-key"),):
        if raw:
            return raw.decode("utf-8", "replace")
    auth = request.getHeader(b"authorization")
    if auth and auth.startswith(b"Bearer "):
        return auth[7:].decode("utf-8", "replace")
    q = request.args.get(b"api_key")
    if q and q[0]:
        return q[0].decode("utf-8", "replace")
    return None


def query(request: Request, name: str) -> str:
    """A query parameter's first value, "" when absent (gin's ``c.Query``)."""
    v = request.args.get(name.encode())
    return v[0].decode("utf-8", "replace") if v else ""


Reply = tuple[int, bytes, bytes]  # status, content type, body
Handler = Callable[..., Awaitable[Reply]]


def ok(value: Any, code: int = 200) -> Reply:
    return code, JSON_TYPE, value if isinstance(value, bytes) else json_body(value)


class StoresResource(Resource):
    """``/api/stores`` and everything below it."""

    isLeaf = True

    def __init__(self, stores: Stores, ws_write: Any = None, connections: Any = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        super().__init__()
        self.stores = stores
        self.ws_write = ws_write  # the WebSocket write resource (render_store)
        self.connections = connections  # outbound connections (spec §8.1)
        self.clock_ns = clock_ns
        #: unexpected failures: a client repeating one must not flood the log
        self._bounded = LogBound(log, stores.core.reactor)
        self._table: dict[tuple[bytes, tuple[str, ...]], Handler] = {
            (b"GET", ()): self.list_stores,
            (b"POST", ()): self.create_store,
            (b"DELETE", ("*",)): self.delete_store,
            (b"POST", ("*", "reset")): self.reset_store,
            (b"GET", ("*", "stats")): self.stats,
            (b"POST", ("*", "data")): self.put_data,
            (b"GET", ("*", "data", "time", "*")): self.get_by_time,
            (b"DELETE", ("*", "data", "time", "*")): self.delete_by_time,
            (b"GET", ("*", "data", "oldest")): self.oldest,
            (b"GET", ("*", "data", "newest")): self.newest,
            (b"GET", ("*", "data", "range")): self.range,
            (b"GET", ("*", "schema")): self.get_schema,
            (b"PUT", ("*", "schema")): self.put_schema,
            (b"GET", ("*", "ws", "connections")): self.list_connections,
            (b"POST", ("*", "ws", "connections")): self.create_connection,
            (b"GET", ("*", "ws", "connections", "*")): self.get_connection,
            (b"DELETE", ("*", "ws", "connections", "*")): self.delete_connection,
        }

    # -- routing -----------------------------------------------------------------

    def route(self, method: bytes, parts: list[str]) -> tuple[Handler, bool] | None:
        """(handler, needs the store key) for a path below /api/stores."""
        n = len(parts)
        table = self._table
        for (m, shape), handler in table.items():
            if m == method and len(shape) == n and all(
                    (s == "*" and p) or s == p for s, p in zip(shape, parts, strict=True)):
                return handler, n > 0
        return None

    def render(self, request: Request) -> Any:
        set_cors(request)
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            return b""
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if request.method == b"GET" and len(parts) == 3 and parts[1:] == ["ws", "write"] \
                and self.ws_write is not None:
            return self.ws_write.render_store(request, parts[0], self.stores)
        found = self.route(request.method, parts)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"404 page not found"
        handler, keyed = found
        d = defer.ensureDeferred(self._run(request, handler, parts, keyed))
        d.addCallback(self._answer, request)
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _run(self, request: Request, handler: Handler, parts: list[str],
                   keyed: bool) -> Reply:
        if not keyed:
            return await handler(request)
        store = await self.stores.authenticate(parts[0], store_key(request))
        return await handler(request, store, *parts[1:])

    def _answer(self, reply: Reply, request: Request) -> None:
        code, content_type, body = reply
        if request.finished or request.channel is None:
            return  # the client left
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def _failed(self, f: Any, request: Request) -> None:
        if f.check(StoreError):
            reply = (f.value.code, JSON_TYPE, error_body(f.value.message))
        elif f.check(BodyError):
            reply = (f.value.code, JSON_TYPE, error_body(f.value.details or f.value.message))
        elif f.check(StorageUnavailable):
            reply = (503, JSON_TYPE, error_body("storage unavailable, retry later"))
        else:
            self._bounded.failure("tsstore request failures", "tsstore {method} {path} failed",
                                  f, method=request.method.decode("latin-1"),
                                  path=request.path.decode("utf-8", "replace"))
            reply = (500, JSON_TYPE, error_body("internal error"))
        self._answer(reply, request)

    def _body(self, request: Request) -> bytes:
        listener = listener_of(request)
        return request_body(request, listener.options.get("max_body", DEFAULT_MAX_BODY))

    # -- stores (spec §3) ----------------------------------------------------------

    async def list_stores(self, request: Request) -> Reply:
        return ok({"stores": await self.stores.names()})

    async def create_store(self, request: Request) -> Reply:
        admin = request.getHeader(b"x-admin-key") or (
            request.args.get(b"admin_key", [b""])[0])
        if not admin:
            raise StoreError(401, "admin key required")
        if not self.stores.settings.admin_ok(admin.decode("utf-8", "replace")):
            raise StoreError(401, "invalid admin key")
        body = request_json(self._body(request))
        if body is None:
            body = {}  # null into a struct changes nothing (Go)
        if not isinstance(body, dict):
            raise StoreError(400, f"json: cannot unmarshal {go_kind(body)} into Go value of "
                                  "type handlers.CreateStoreRequest")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise _go_type_error(name, "CreateStoreRequest.name", "string")
        if name in (None, ""):
            raise StoreError(400, "Key: 'CreateStoreRequest.Name' Error:Field validation for"
                                  " 'Name' failed on the 'required' tag")
        sizes = {}
        for k in ("num_blocks", "data_block_size", "index_block_size"):
            v = body.get(k) or 0
            if type(v) is not int or not 0 <= v < 2**32:
                raise _go_type_error(v, f"CreateStoreRequest.{k}", "uint32")
            sizes[k] = v
        data_type = body.get("data_type") or "json"
        if not isinstance(data_type, str):
            raise _go_type_error(data_type, "CreateStoreRequest.data_type", "string")
        _, key, key_id = await self.stores.create(name, data_type=data_type, **sizes)
        return ok({"name": name, "api_key": key, "key_id": key_id}, 201)

    async def delete_store(self, request: Request, store: Store) -> Reply:
        await self.stores.delete(store)
        return ok({"message": "store deleted"})

    async def reset_store(self, request: Request, store: Store, _: str) -> Reply:
        await self.stores.reset(store)
        return ok({"message": "store reset"})

    async def stats(self, request: Request, store: Store, _: str) -> Reply:
        return ok(await reads.stats(self.stores, store))

    # -- writes (spec §4) ------------------------------------------------------------

    async def put_data(self, request: Request, store: Store, _: str) -> Reply:
        ctype = (request.getHeader(b"content-type") or b"").decode("latin-1")
        ctype = ctype.split(";", 1)[0].strip()
        if not ctype.startswith(CONTENT_TYPES[store.data_type]):
            raise StoreError(400, "data does not match store's data type")
        body = self._body(request)
        time_ns: int | None = None
        if store.data_type in ("binary", "text"):
            data = body
        else:
            try:
                time_ns, raw = decode_envelope(body, empty="EOF")
            except GoJSONError as e:
                raise StoreError(400, str(e)) from None
            if raw is None:
                raise StoreError(400, "data is required")
            try:
                check_json(raw)
            except GoJSONError:
                raise StoreError(400, "invalid JSON data") from None
            data = raw
            if store.data_type == "schema":
                try:
                    data = compact(store.schema.current(), raw)
                except SchemaError as e:
                    raise StoreError(400, f"schema validation failed: {e}") from None
        ack = await self.stores.write(store, data, time_ns)
        return ok({"timestamp": ack.timestamp, "block_num": ack.block_num,
                   "size": ack.size}, 201)

    # -- reads (spec §9) ---------------------------------------------------------------

    async def get_by_time(self, request: Request, store: Store, _: str, __: str,
                          ts: str) -> Reply:
        return ok(await reads.by_time(self.stores, store, ts, query(request, "format")))

    async def delete_by_time(self, request: Request, store: Store, _: str, __: str,
                             ts: str) -> Reply:
        await reads.delete_by_time(self.stores, store, ts)
        return ok({"message": "object deleted"})

    async def oldest(self, request: Request, store: Store, _: str, __: str) -> Reply:
        return ok(await reads.listing(self.stores, store, "oldest", _params(request),
                                      self.clock_ns()))

    async def newest(self, request: Request, store: Store, _: str, __: str) -> Reply:
        return ok(await reads.listing(self.stores, store, "newest", _params(request),
                                      self.clock_ns()))

    async def range(self, request: Request, store: Store, _: str, __: str) -> Reply:
        return ok(await reads.listing(self.stores, store, "range", _params(request),
                                      self.clock_ns()))

    # -- schema (spec §5.2) ------------------------------------------------------------

    async def get_schema(self, request: Request, store: Store, _: str) -> Reply:
        if store.data_type != "schema":
            raise StoreError(400, "schema endpoint only available for schema-type stores")
        fields = store.schema.current()
        if fields is None:
            raise StoreError(404, "no schema defined")
        return ok({"version": store.schema.current_version, "fields": fields})

    async def put_schema(self, request: Request, store: Store, _: str) -> Reply:
        if store.data_type != "schema":
            raise StoreError(400, "schema endpoint only available for schema-type stores")
        body = request_json(self._body(request))
        fields = body.get("fields") if isinstance(body, dict) else None
        if fields is None:
            raise StoreError(400, "Key: 'SchemaRequest.Fields' Error:Field validation for "
                                  "'Fields' failed on the 'required' tag")
        try:
            evolved = store.schema.evolve(fields)
        except SchemaError as e:
            raise StoreError(400, str(e)) from None
        old, store.schema = store.schema, evolved
        try:
            await self.stores.save(store)
        except BaseException:
            store.schema = old
            raise
        return ok({"message": "schema updated", "version": evolved.current_version})

    # -- outbound connections (spec §8.1) -------------------------------------------------

    def _outbound(self) -> Any:
        if self.connections is None:
            raise StoreError(404, "store not found or not open")
        return self.connections

    async def list_connections(self, request: Request, store: Store, _: str,
                               __: str) -> Reply:
        return ok({"connections": self._outbound().statuses(store)})

    async def create_connection(self, request: Request, store: Store, _: str,
                                __: str) -> Reply:
        body = request_json(self._body(request))
        return ok(await self._outbound().create(store, body), 201)

    async def get_connection(self, request: Request, store: Store, _: str, __: str,
                             cid: str) -> Reply:
        return ok(self._outbound().status(store, cid))

    async def delete_connection(self, request: Request, store: Store, _: str, __: str,
                                cid: str) -> Reply:
        await self._outbound().delete(store, cid)
        return ok({"message": "connection deleted"})


def _params(request: Request) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
            for k, v in request.args.items() if v}


class HealthResource(Resource):
    """``GET /health``: no auth, ``{"status":"ok","time":"<RFC3339 UTC>"}``."""

    isLeaf = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock

    def render(self, request: Request) -> bytes:
        set_cors(request)
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            return b""
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"404 page not found"
        request.setHeader(b"content-type", JSON_TYPE)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        return json_body({"status": "ok", "time": now})
