"""ATSD's ``POST /api/v1/command`` on the shared HTTP site (spec §6.1, §6.2).

The body is the network commands, framed as ATSD's HTTP endpoint frames them
(every line trimmed; quoted values rebuilt across lines), plain or gzip.
Every command is validated on its own: the bad ones are counted and skipped,
the good ones are committed, and only then the reply comes, 200 with
``{"fail","success","total"}``.  A WRITE token from any source tsnet reads
(HTTP Basic first) decides the solution; without one the answer is 401 with
``WWW-Authenticate: Basic``, and a READ token gets 403.  ``commit=true`` is
accepted and changes nothing: every reply waits for the commit anyway.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from tsnet.errors import Forbidden, StorageUnavailable, Unauthorized
from tsnet.http.bodies import BodyError, request_body
from tsnet.http.credentials import listener_of, principal_for
from tsnet.http.site import DEFAULT_MAX_BODY
from tsnet.interfaces import IHTTPErrors
from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.model import WRITE
from tsnet.protocols.atsd.append import needs_append, resolve
from tsnet.protocols.atsd.framing import frame_http_body
from tsnet.protocols.atsd.items import CommandBatch
from tsnet.protocols.atsd.parse import (
    CommandError,
    Control,
    SeriesFastPath,
    framed_text,
    parse_framed,
)

if TYPE_CHECKING:
    from tsnet.core import Core
    from tsnet.protocols.atsd.commandlog import CommandLogs

log = Logger(namespace="tsnet.atsd.http")

PROTOCOL = "atsd"
CHANNEL = "atsd.incoming.api.command.raw"
JSON_CONTENT_TYPE = b"application/json"
NOT_STORED = "the commands could not be stored; retry"
#: the kinds of `CommandResource.bounded` (fixed texts: what repeats is counted)
REQUEST_FAILURES = "failed ATSD command requests"
COMMIT_FAILURES = "ATSD command requests not committed"


def error_body(message: str) -> bytes:
    """ATSD's API error object."""
    return json.dumps({"error": message}).encode()


@implementer(IHTTPErrors)
class AtsdErrors:
    """Site errors on ATSD routes, as ATSD's API answers them."""

    def error_reply(self, code: int, message: str, details: str | None = None,
                    ) -> tuple[bytes, bytes]:
        return JSON_CONTENT_TYPE, error_body(f"{message}: {details}" if details else message)


class CommandResource(Resource):
    """``POST /api/v1/command``."""

    isLeaf = True

    def __init__(self, core: Core, logs: CommandLogs, rules: Any = None,
                 log_period: float = DEFAULT_PERIOD) -> None:
        super().__init__()
        self.core = core
        self.logs = logs
        #: unexpected failures, which a client may repeat per request: logged
        #: once, then counted for ``log_period`` seconds
        self.bounded = LogBound(log, core.reactor, log_period)
        #: ``rules(core, solution) -> Deferred[MetaRules]``: what the meta discards
        self.rules = rules
        #: the cache of validated series lines, shared by every request
        self.fast = SeriesFastPath()

    def render(self, request: Any) -> Any:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._error(request, 405, "Method Not Allowed")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = defer.ensureDeferred(self._command(request))
        d.addCallback(self._answer, request, gone)
        d.addErrback(self._crashed, request, gone)
        return NOT_DONE_YET

    def _error(self, request: Any, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        if code == 401:
            request.setHeader(b"www-authenticate", b'Basic realm="atsd"')
        return error_body(message)

    def _answer(self, reply: tuple[int, bytes], request: Any, gone: list[bool]) -> None:
        code, body = reply
        if gone or request.finished:
            return
        if code == 200:
            request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        request.write(body)
        request.finish()

    def _crashed(self, f: Failure, request: Any, gone: list[bool]) -> None:
        self.bounded.failure(REQUEST_FAILURES, "an ATSD command request failed", f)
        if not gone and not request.finished:
            request.write(self._error(request, 500, "Internal Server Error"))
            request.finish()

    async def _command(self, request: Any) -> tuple[int, bytes]:
        core = self.core
        try:
            principal = await principal_for(request, WRITE)
        except Unauthorized:
            return 401, self._error(request, 401, "Unauthorized")
        except Forbidden:
            return 403, self._error(request, 403, "Forbidden: the token has no write scope")
        cap = listener_of(request).options.get("max_body", DEFAULT_MAX_BODY)
        try:
            body = request_body(request, cap)
        except BodyError as e:
            text = f"{e.message}: {e.details}" if e.details else e.message
            return e.code, self._error(request, e.code, text)
        rules = await self.rules(core, principal.solution) if self.rules is not None else None
        items = CommandBatch()
        now_ms = int(core.reactor.seconds() * 1000)
        fail = success = 0
        commands = frame_http_body(body.decode("utf-8", "replace"))
        # plain series lines of known series go straight into the batch's samples
        fast = not (rules and rules.active)
        samples = items.batch.samples
        take, parse = self.fast.take, self.fast.parse
        i, n = 0, len(commands)
        while i < n:
            if fast:
                j = take(commands, i, samples)
                success += j - i
                items.commands += j - i
                if j >= n:
                    break
                i = j
            item = commands[i]
            i += 1
            text = framed_text(item)
            try:
                debug, command = parse_framed(item, parse)
            except CommandError as e:
                fail += 1
                core.metrics.rejected(PROTOCOL, e.reason)
                self.logs.malformed(CHANNEL, text, e.reason)
                continue
            if debug or isinstance(command, Control):  # the HTTP endpoint takes neither
                fail += 1
                core.metrics.rejected(PROTOCOL, "not_over_http")
                self.logs.malformed(CHANNEL, text, "not_over_http")
                continue
            if needs_append(command):  # the stored text, with what came before committed
                batch = items.take()
                try:
                    if batch is not None:
                        core.metrics.received(PROTOCOL, batch.samples.count)
                        await core.ingest.submit(batch, principal, PROTOCOL)
                    command = await resolve(core, principal.solution, command, now_ms)
                except StorageUnavailable as e:  # ingest logs the outage, once
                    return 503, self._error(request, 503, str(e))
                except Exception:
                    self.bounded.failure(COMMIT_FAILURES,
                                         "ATSD commands of one request not committed")
                    return 503, self._error(request, 503, NOT_STORED)
                samples = items.batch.samples
            discarded = items.add(command, now_ms, rules)
            if discarded is not None:  # accepted, as ATSD counts it, but not stored
                core.metrics.rejected(PROTOCOL, discarded)
                self.logs.discarded(CHANNEL, item, discarded)
            success += 1
        batch = items.take()
        if batch is not None:
            core.metrics.received(PROTOCOL, batch.samples.count)
            try:
                await core.ingest.submit(batch, principal, PROTOCOL)
            except StorageUnavailable as e:  # ingest logs the outage, once
                return 503, self._error(request, 503, str(e))
            except Exception:
                self.bounded.failure(COMMIT_FAILURES, "ATSD commands of one request not committed")
                return 503, self._error(request, 503, NOT_STORED)
        counts = {"fail": fail, "success": success, "total": fail + success}
        return 200, json.dumps(counts).encode()
