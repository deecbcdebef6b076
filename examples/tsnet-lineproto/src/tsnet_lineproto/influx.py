"""The ``influx`` family: InfluxDB line protocol writes on tsnet's HTTP site.

Routes (``apis = influx`` on an ``http`` listener):

* ``POST /write``: InfluxDB 1.x (``db`` required, ``precision``, ``u``/``p``
  or HTTP Basic or ``Authorization: Token``); 204, or 400 with a JSON
  ``error``;
* ``POST /api/v2/write``: InfluxDB 2.x (``bucket`` required, ``org``,
  ``precision``, ``Authorization: Token``); 204, or 400 with ``code`` and
  ``message``;
* ``GET``/``HEAD /ping``: 204, as clients and Telegraf probe it.

Each field becomes a series ``measurement.field`` with the line's tags
(`influx_parse.to_samples`).  ``db``/``bucket`` and ``org`` are required as
InfluxDB requires them, but do not route the data: the listener's solution
(``auth = none``) or the token's (``auth = token``) does, as on every tsnet
family.  A bad line never costs the good lines of the body: they are committed
and the reply is InfluxDB's 400 ``partial write``.  Replies come after commit.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsnet.plugin import (
    DEFAULT_MAX_BODY,
    WRITE,
    Batch,
    BodyError,
    Core,
    Forbidden,
    IHTTPErrors,
    LogBound,
    ProtocolPlugin,
    SampleSet,
    StorageUnavailable,
    Unauthorized,
    listener_of,
    principal_for,
    request_body,
)
from tsnet_lineproto.influx_parse import parse_body, to_samples

log = Logger(namespace="tsnet.influx")

PROTOCOL = "influx"
#: the kinds of `WriteResource.logs` (fixed texts: what repeats is counted)
CRASHES = "failed influx writes"
NOT_COMMITTED = "influx writes not committed"
#: what /ping reports: the InfluxDB release whose write API this follows
INFLUXDB_VERSION = "1.8.10"
JSON_CONTENT_TYPE = b"application/json"


def error_v1(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def error_v2(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


#: 2.x error codes by HTTP status (influxdata/influxdb kit/platform/errors)
V2_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "request too large",
    415: "unsupported media type",
    500: "internal error",
    503: "unavailable",
}


@implementer(IHTTPErrors)
class InfluxErrors:
    """Site errors on influx routes, in InfluxDB 1.x's ``{"error": ...}`` form."""

    def error_reply(
        self,
        code: int,
        message: str,
        details: str | None = None,
    ) -> tuple[bytes, bytes]:
        return JSON_CONTENT_TYPE, error_v1(f"{message}: {details}" if details else message)


class _Refusal(Exception):
    """A whole request refused: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _arg(request: Any, name: bytes) -> str | None:
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


class WriteResource(Resource):
    """``/write`` (``version`` 1) or ``/api/v2/write`` (``version`` 2)."""

    isLeaf = True

    def __init__(self, core: Core, version: int, logs: LogBound | None = None) -> None:
        super().__init__()
        self.core = core
        self.version = version
        #: failures a client may repeat at will, once a request: logged once,
        #: then counted (one for both write APIs, from `InfluxPlugin.resources`)
        self.logs = logs if logs is not None else LogBound(log, core.reactor)

    def render(self, request: Any) -> Any:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._error(request, 405, "method not allowed")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = defer.ensureDeferred(self._write(request, gone))
        d.addErrback(self._crashed, request, gone)
        return NOT_DONE_YET

    def _error(self, request: Any, status: int, message: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        if status == 401:
            request.setHeader(b"www-authenticate", b'Basic realm="InfluxDB"')
        if self.version == 1:
            return error_v1(message)
        return error_v2(V2_CODES.get(status, "invalid"), message)

    def _answer(self, request: Any, gone: list[bool], status: int, message: str = "") -> None:
        if gone or request.finished:  # the client left: the points are committed anyway
            return
        if status == 204:
            request.setResponseCode(204)
            request.finish()
            return
        request.write(self._error(request, status, message))
        request.finish()

    def _crashed(self, f: Failure, request: Any, gone: list[bool]) -> None:
        self.logs.failure(CRASHES, "influx write failed", f)
        self._answer(request, gone, 500, "internal error")

    def _secrets(self, request: Any) -> list[str]:
        """InfluxDB's own credentials, beside the token sources tsnet reads
        everywhere: ``Authorization: Token X`` and 1.x's ``u``/``p``."""
        out = []
        auth = (request.getHeader(b"authorization") or b"").decode("latin-1").strip()
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "token" and value.strip():
            out.append(value.strip())
        user, password = _arg(request, b"u"), _arg(request, b"p")
        if password:
            if user:
                out.append(f"{user}:{password}")  # the IoT form: id:key
            out.append(password)
        return out

    async def _write(self, request: Any, gone: list[bool]) -> None:
        try:
            status, message = await self._store(request)
        except _Refusal as r:
            status, message = r.status, r.message
        self._answer(request, gone, status, message)

    async def _store(self, request: Any) -> tuple[int, str]:
        core = self.core
        if self.version == 1:
            if not _arg(request, b"db"):
                raise _Refusal(400, "database is required")
            precision = _arg(request, b"precision") or "n"
        else:
            if not _arg(request, b"bucket"):
                raise _Refusal(400, "bucket is required")
            precision = _arg(request, b"precision") or "ns"
        try:
            principal = await principal_for(request, WRITE, self._secrets(request))
        except Unauthorized:
            raise _Refusal(
                401, "authorization failed" if self.version == 1 else "unauthorized access"
            ) from None
        except Forbidden:
            raise _Refusal(403, "this token may not write") from None
        cap = listener_of(request).options.get("max_body", DEFAULT_MAX_BODY)
        try:
            body = request_body(request, cap)
        except BodyError as e:
            raise _Refusal(
                e.code, f"{e.message}: {e.details}" if e.details else e.message
            ) from None
        now_ns = int(core.reactor.seconds() * 1e9)
        try:
            points, errors = parse_body(body, precision, now_ns)
        except ValueError as e:
            raise _Refusal(400, str(e)) from None
        samples = SampleSet()
        for key, t, v, text in to_samples(points):
            samples.add(key, t, v, text)
        if errors:
            core.metrics.rejected(PROTOCOL, "invalid", len(errors))
        if samples.count:
            core.metrics.received(PROTOCOL, samples.count)
            try:
                await core.ingest.submit(Batch(samples=samples), principal, PROTOCOL)
            except StorageUnavailable as e:  # tsnet logs the outage, once
                return 503, str(e)
            except Exception:
                self.logs.failure(NOT_COMMITTED, "influx write of {n} points not committed",
                                  n=samples.count)
                return 503, "the points could not be committed; retry"
        if not errors:
            return 204, ""
        joined = "\n".join(errors)
        if points:  # the good lines are committed, as InfluxDB writes them
            return 400, f"partial write: {joined} dropped=0"
        return 400, joined


class PingResource(Resource):
    """``/ping``: 204 with the version headers clients read."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"x-influxdb-version", INFLUXDB_VERSION.encode())
        request.setHeader(b"x-influxdb-build", b"OSS")
        return b""


class InfluxPlugin(ProtocolPlugin):
    name = "influx"
    description = "InfluxDB line protocol: POST /write (1.x) and /api/v2/write (2.x)"
    provides_api = True
    http_errors = InfluxErrors()
    #: seconds a write API counts the repeats of a failure before it says how many
    log_period = 60.0

    def resources(self, core: Core) -> dict[bytes, IResource]:
        logs = LogBound(log, core.reactor, self.log_period)
        return {
            b"/write": WriteResource(core, 1, logs),
            b"/api/v2/write": WriteResource(core, 2, logs),
            b"/ping": PingResource(),
        }
