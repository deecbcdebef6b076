"""OpenTSDB HTTP ``/api/put`` (and ``/api/v1/put``): specs/opentsdb.md §2, §6.8-6.10.

Parsing and validation are `json_put`'s pure functions; this module adds the
HTTP around them: the method check, ``Content-Encoding`` and charset, the query
flags, authentication, and the reply.  The reply is sent only after the points
are committed (the ingest Deferred), so an HTTP 2xx means "stored".

Authentication (listener ``auth = token``), our reading of §4 and §6.10:

* Credentials in the request (HTTP Basic ``id:key`` or password alone, Bearer,
  ``X-API-Key``) are checked before the body: unknown -> 401, READ token -> 403.
* A point carrying an ``ovh.auth`` tag is written with *that* token (its tags,
  its solution), as a telnet line with the tag is; the tag is removed before
  validation and is never stored nor echoed.  Points without the tag use the
  request's credentials.  Distinct tokens are looked up once each.
* Every credential the request relies on must be valid: if any is missing,
  unknown or lacks WRITE, the whole request is refused (401 / 403) and nothing
  is stored.  A request without any credential gets 401 whatever its body.
* Zero client tags are accepted when the point's token adds tags (A8); the tag
  limit counts client tags only (A7); token tags override client tags (ingest).

Status codes follow OpenTSDB; where it could not fail the same way we say so:
a batch the storage refuses (after validation) makes the request 400 like a
validation failure, since a 2xx must mean committed; a storage that is down
(`StorageUnavailable`: not committed within ``storage_wait``, or the queue
full meanwhile) makes it 503 with the error object, whatever the flags, since
the client should send it all again later; ``sync`` is implied (we always wait);
``sync_timeout=N`` answers 400 with the timed-out count if the commit takes
longer than N ms (the points are still written).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsnet.errors import Forbidden, Overloaded, StorageUnavailable, Unauthorized
from tsnet.http.bodies import inflate_body, read_chunks
from tsnet.http.credentials import header_secrets, listener_of, principal_for, request_secrets
from tsnet.http.replies import retry_after
from tsnet.http.site import DEFAULT_MAX_BODY
from tsnet.interfaces import IFastPost
from tsnet.logbound import LogBound
from tsnet.model import WRITE, Batch, Principal, SampleSet, anonymous
from tsnet.protocols.opentsdb.json_put import (
    PointError,
    PutBodyError,
    RawPoint,
    SeriesCache,
    fast_put_samples,
    parse_put_body,
    validate_point,
)
from tsnet.protocols.opentsdb.replies import JSON_CONTENT_TYPE, error_body, json_error

if TYPE_CHECKING:
    from tsnet.core import Core

log = Logger(namespace="tsnet.opentsdb.http")

PROTOCOL = "opentsdb"
REALM = b'Basic realm="opentsdb"'
SEE_DETAILS = 'Please see the TSD logs or append "details" to the put request'
UNAVAILABLE = "Storage unavailable, please retry later"
STORAGE_REFUSED = "Storage exception: the storage refused the batch"
CONTENT_TYPE = JSON_CONTENT_TYPE


def put_resources(core: Core) -> dict[bytes, Resource]:
    """The put endpoint at every path OpenTSDB serves it (the router ignores a
    trailing slash and case)."""
    r = PutResource(core)
    return {b"/api/put": r, b"/api/v1/put": r}


def content_charset(content_type: bytes | None) -> str:
    """The ``charset`` parameter of a Content-Type, UTF-8 by default."""
    for param in (content_type or b"").split(b";")[1:]:
        k, _, v = param.partition(b"=")
        if k.strip().lower() == b"charset":
            return v.strip().strip(b"\"'").decode("latin-1") or "utf-8"
    return "utf-8"


def query_args(request: Any) -> dict[str, list[str]]:
    """The query string with bare flags kept: OpenTSDB's flags count by presence
    (``?summary``), and Twisted's ``request.args`` drops keys without ``=``."""
    _, _, qs = request.uri.partition(b"?")
    return parse_qs(qs.decode("latin-1"), keep_blank_values=True)


def sync_timeout_ms(args: dict[str, list[str]]) -> int:
    """``sync_timeout`` as Java's Integer.parseInt reads it; ValueError carries
    Java's NumberFormatException text, which OpenTSDB answers with a 500."""
    values = args.get("sync_timeout")
    if not values:
        return 0
    text = values[0]
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10 \
            or not -(2**31) <= int(text) < 2**31:
        raise ValueError(f'For input string: "{text}"')
    return int(text)


class _Outcome:
    """What became of the points of one principal: committed, failed, or still
    pending when the sync timeout fired."""

    __slots__ = ("error", "indexes", "state")

    def __init__(self) -> None:
        self.indexes: list[int] = []
        self.state = "pending"  # pending | ok | failed | timeout | unavailable
        self.error = ""


@implementer(IFastPost)
class PutResource(Resource):
    """``POST /api/put``: one object or an array of datapoints."""

    isLeaf = True

    def __init__(self, core: Core) -> None:
        super().__init__()
        self._core = core
        self._series = SeriesCache()
        self._anonymous: dict[str, Principal] = {}
        #: unexpected failures: a client repeating one must not flood the log
        self._bounded = LogBound(log, core.reactor)

    # -- the fast path (tsnet.http.lean) -------------------------------------------

    def fast_post(
        self, site: Any, target: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> defer.Deferred | None:
        """Answer a plain put (no query flags, no content coding, UTF-8, every
        point plainly valid, credentials already verified) without twisted.web.

        Anything else is None, and `render` answers it: the reply is the same
        either way, this is only cheaper.  Errors therefore never come from here,
        except a failed commit, which `_store` would answer the same."""
        if b"?" in target or b"content-encoding" in headers:
            return None
        if content_charset(headers.get(b"content-type")).lower() not in ("utf-8", "utf8"):
            return None
        principal = self._fast_principal(site.listener, headers)
        if principal is None:
            return None
        samples = fast_put_samples(body, self._series)
        if samples is None:
            return None
        core = self._core
        core.metrics.received(PROTOCOL, samples.count)
        d = core.ingest.submit(Batch(samples=samples), principal, PROTOCOL)
        return d.addCallbacks(_stored, _not_stored)

    def _fast_principal(self, listener: Any, headers: dict[bytes, bytes]) -> Principal | None:
        """The request's principal when it is known without a lookup; None when
        only the full path can tell (unknown to the cache, 401, 403)."""
        if listener.auth == "none":
            p = self._anonymous.get(listener.solution)
            if p is None:
                p = self._anonymous[listener.solution] = anonymous(listener.solution)
            return p
        auth = headers.get(b"authorization")
        key = headers.get(b"x-api-key")
        secrets = header_secrets(auth.decode("latin-1") if auth is not None else None,
                                 key.decode("latin-1") if key is not None else None)
        for secret in secrets:
            try:
                return self._core.auth.cached(secret, WRITE)
            except Unauthorized:
                continue  # as authenticate_any: the next reading of the credential
            except Forbidden:
                return None
        return None

    def render(self, request: Any) -> Any:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            method = request.method.decode("latin-1")
            return json_error(request, 405, "Method not allowed",
                              details=f"The HTTP method [{method}] is not permitted "
                                      "for this endpoint")
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the client went away
        d = defer.ensureDeferred(self._put(request))
        d.addErrback(self._crashed, request)
        d.addCallback(self._send, request, gone)
        d.addErrback(lambda f: self._bounded.failure("/api/put reply failures",
                                                      "/api/put could not reply", f))
        return NOT_DONE_YET

    # -- the request --------------------------------------------------------------

    async def _put(self, request: Any) -> bytes:
        """The reply body; the status and headers are set on ``request``."""
        try:
            return await self._put_authorized(request)
        except Unauthorized:
            request.setHeader(b"www-authenticate", REALM)
            return json_error(request, 401, "Unauthorized")
        except Forbidden:
            return json_error(request, 403, "Forbidden")

    async def _put_authorized(self, request: Any) -> bytes:
        token_auth = listener_of(request).auth != "none"
        header: Principal | None = None
        if not token_auth or request_secrets(request):
            header = await principal_for(request, WRITE)
        try:
            points = self._read(request)
        except PutBodyError as e:
            if header is None:
                raise Unauthorized("no credentials") from None
            return json_error(request, e.code, e.message,
                              **({"details": e.details} if e.details else {}))
        args = query_args(request)
        try:
            timeout_ms = sync_timeout_ms(args)
        except ValueError as e:
            return json_error(request, 500, str(e))
        owners = await self._principals(points, header, token_auth)
        return await self._store(request, points, owners, args, timeout_ms)

    def _read(self, request: Any) -> list[RawPoint | None]:
        """Decompress (under the body cap), decode and parse the body."""
        cap = getattr(request.channel.site, "max_body", DEFAULT_MAX_BODY)
        content = request.content
        content.seek(0)
        encoding = request.getHeader(b"content-encoding")
        if encoding:
            body = inflate_body(read_chunks(content), encoding.decode("latin-1"), cap)
        else:
            body = content.read()
        return parse_put_body(body, content_charset(request.getHeader(b"content-type")))

    async def _principals(
        self, points: list[RawPoint | None], header: Principal | None, token_auth: bool
    ) -> list[Principal | None]:
        """The principal each point is written with (see the module doc)."""
        if not token_auth:
            return [header] * len(points)
        by_token: dict[str, Principal] = {}
        owners: list[Principal | None] = []
        for p in points:
            if p is None:
                owners.append(header)
            elif p.token is None:
                if header is None:
                    raise Unauthorized("a point without ovh.auth and no request credentials")
                owners.append(header)
            else:
                tok = p.token
                if tok not in by_token:
                    by_token[tok] = await self._authenticate(tok)
                owners.append(by_token[tok])
        if header is None and not by_token:
            raise Unauthorized("no credentials")
        return owners

    async def _authenticate(self, secret: str) -> Principal:
        try:
            secret.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape
            raise Unauthorized("invalid token") from None
        return await self._core.auth.authenticate(secret, WRITE)

    async def _store(
        self,
        request: Any,
        points: list[RawPoint | None],
        owners: list[Principal | None],
        args: dict[str, list[str]],
        timeout_ms: int,
    ) -> bytes:
        """Validate each point on its own, commit the good ones, answer."""
        core = self._core
        errors: list[tuple[int, dict[str, Any]]] = []
        sets: dict[Principal, SampleSet] = {}
        outcomes: dict[Principal, _Outcome] = {}
        series: dict[tuple, Any] = {}
        for i, (p, owner) in enumerate(zip(points, owners, strict=True)):
            try:
                key, t, v = validate_point(p, allow_no_tags=bool(owner and owner.tags),
                                           series=series)
            except PointError as e:
                errors.append((i, {"datapoint": p.echo() if p else None, "error": str(e)}))
                continue
            assert owner is not None  # only a null point has none, and it fails above
            s = sets.get(owner)
            if s is None:
                s = sets[owner] = SampleSet()
                outcomes[owner] = _Outcome()
            s.add(key, t, v)
            outcomes[owner].indexes.append(i)
        core.metrics.rejected(PROTOCOL, "invalid", len(errors))
        core.metrics.received(PROTOCOL, sum(s.count for s in sets.values()))
        await self._commit(sets, outcomes, timeout_ms)

        unavailable = [o for o in outcomes.values() if o.state == "unavailable"]
        if unavailable:
            request.setHeader(*retry_after(None))
            return json_error(request, 503, UNAVAILABLE, details=unavailable[0].error)
        success = failed_writes = timeouts = 0
        for o in outcomes.values():
            n = len(o.indexes)
            if o.state == "ok":
                success += n
                continue
            if o.state == "failed":
                failed_writes += n
                why = o.error
            else:
                timeouts += n
                why = "Write timedout"
            errors.extend((i, {"datapoint": _echo(points[i]), "error": why}) for i in o.indexes)
        failed = len(errors) - timeouts

        details = "details" in args
        summarise = details or "summary" in args
        if timeouts:
            if not summarise:
                return json_error(
                    request, 400,
                    f"The put call has timedout with {success} successful writes, "
                    f"{failed_writes} failed writes and {timeouts} timed out writes.",
                    details=SEE_DETAILS)
            summary: dict[str, Any] = {"success": success, "failed": failed,
                                       "timeouts": timeouts}
        elif not summarise:
            if failed:
                return json_error(request, 400, "One or more data points had errors",
                                  details=SEE_DETAILS)
            request.setResponseCode(204)
            request.setHeader(b"content-type", CONTENT_TYPE)
            return b""
        else:
            summary = {"success": success, "failed": failed}
            if timeout_ms > 0:
                summary["timeouts"] = 0
        if details:
            errors.sort(key=lambda e: e[0])
            summary["errors"] = [e for _, e in errors]
        request.setResponseCode(400 if failed or timeouts else 200)
        request.setHeader(b"content-type", CONTENT_TYPE)
        return json.dumps(summary, separators=(",", ":")).encode()

    def _commit(
        self, sets: dict[Principal, SampleSet], outcomes: dict[Principal, _Outcome],
        timeout_ms: int,
    ) -> defer.Deferred:
        """Submit one batch per principal; fires when all are committed or failed,
        or when ``timeout_ms`` (if > 0) passes first."""
        core = self._core
        done: defer.Deferred = defer.Deferred()
        if not sets:
            done.callback(None)
            return done
        left = [len(sets)]
        timer: Any = None

        def settle(result: Any, o: _Outcome) -> None:
            # ingest has logged a storage failure already; it is answered here
            left[0] -= 1
            if done.called:  # answered by the timeout; the write went on
                return
            if isinstance(result, Failure):
                o.state = "unavailable" if result.check(StorageUnavailable) else "failed"
                # (a refused batch's own text is the storage's, and logged by ingest)
                o.error = ("Please throttle" if result.check(Overloaded)
                           else result.getErrorMessage() if o.state == "unavailable"
                           else STORAGE_REFUSED)
            else:
                o.state = "ok"
            if not left[0]:
                if timer is not None and timer.active():
                    timer.cancel()
                done.callback(None)

        def expire() -> None:
            if not done.called:
                for o in outcomes.values():
                    if o.state == "pending":
                        o.state = "timeout"
                done.callback(None)

        for principal, samples in sets.items():
            d = core.ingest.submit(Batch(samples=samples), principal, PROTOCOL)
            d.addBoth(settle, outcomes[principal])
        if timeout_ms > 0 and not done.called:
            timer = core.reactor.callLater(timeout_ms / 1000.0, expire)
        return done

    # -- replying -----------------------------------------------------------------

    def _crashed(self, f: Failure, request: Any) -> bytes:
        self._bounded.failure("/api/put failures", "/api/put failed", f)
        return json_error(request, 500, "Unexpected exception")

    def _send(self, body: bytes, request: Any, gone: list[Failure]) -> None:
        if gone or request.finished:
            return
        if body:
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
        request.finish()


def _stored(_: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return 204, [(b"Content-Type", CONTENT_TYPE)], b""


def _not_stored(f: Failure) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A failed commit, answered as `_store` answers it without flags."""
    if f.check(StorageUnavailable):
        return 503, [(b"Content-Type", CONTENT_TYPE), retry_after(f.value)], error_body(
            503, UNAVAILABLE, details=f.getErrorMessage())
    return 400, [(b"Content-Type", CONTENT_TYPE)], error_body(
        400, "One or more data points had errors", details=SEE_DETAILS)


def _echo(p: RawPoint | None) -> dict[str, Any] | None:
    return p.echo() if p is not None else None
