"""tsnet.http.lean: which requests the lean channel answers itself, and that it
hands the connection to twisted.web with the bytes untouched, replies in order,
over real loopback connections to a site with a test fast handler."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent
from twisted.web.resource import Resource

from tests.helpers.clients import connect_line, sleep, wait_for
from tests.helpers.logs import leaks, watching
from tsnet.http import lean
from tsnet.http.lean import MAX_HEAD, LeanHTTPChannel, head_error, parse_head
from tsnet.http.site import Router, Site
from tsnet.testing.fixtures import BASE_CONFIG


class Echo(Resource):
    """What twisted.web answers: the method and the body it read."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"web " + request.method + b" " + request.content.read()


class FastEcho:
    """A fast handler that answers after a delay, as a commit would; a body of
    ``pass`` is left to twisted.web, ``raise`` raises, ``fail`` fails later."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, site: Any, target: bytes, headers: dict, body: bytes) -> Any:
        from twisted.internet import reactor

        if body == b"pass":
            return None
        if body == b"raise":
            raise RuntimeError("handler bug")
        self.seen.append(body)
        if body.startswith(b"now"):  # answered at once, as a refused commit is
            return defer.succeed((200, [], b"fast " + body))
        d: defer.Deferred = defer.Deferred()
        if body == b"fail":
            reactor.callLater(0.01, d.errback, RuntimeError("commit failed"))
        else:
            reactor.callLater(0.01, d.callback, (200, [(b"Content-Type", b"text/plain")],
                                                 b"fast " + body))
        return d


@pytest.fixture
def site_port() -> Any:
    from twisted.internet import reactor

    fast = FastEcho()
    site = Site(Router({b"/x": Echo()}), max_body=1000, reactor=reactor)
    site.fast_handlers = {b"/x": fast}
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield site, fast, port.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def post(body: bytes, path: bytes = b"/x", extra: bytes = b"",
         version: bytes = b"HTTP/1.1") -> bytes:
    return (b"POST %s %s\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path, version, len(body), extra, body))


def bodies(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each response in a stream of Content-Length responses."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        out.append((status, rest[:length]))
        data = rest[length:]
    return out


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_answered_in_order_then_handed_over(site_port: Any) -> None:
    _, fast, port = site_port
    c = await connect_line(port)
    c.send(post(b"one") + post(b"two") + b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
           + post(b"three", extra=b"Connection: close\r\n"))
    data = await c.wait_closed()
    assert bodies(data) == [(200, b"fast one"), (200, b"fast two"), (200, b"web GET "),
                            (200, b"web POST three")]  # twisted.web's from the GET on
    assert fast.seen == [b"one", b"two"]


@pytest_twisted.ensureDeferred
async def test_many_pipelined_requests_answered_at_once(site_port: Any) -> None:
    """Answers that come synchronously do not recurse (3000 deep would fail),
    and nothing after a Connection: close request is read."""
    _, fast, port = site_port
    c = await connect_line(port)
    c.send(b"".join(post(b"now%d" % i) for i in range(3000))
           + post(b"now-last", extra=b"Connection: close\r\n") + post(b"never"))
    data = await c.wait_closed(timeout=20)
    got = bodies(data)
    assert got == [(200, b"fast now%d" % i) for i in range(3000)] + [(200, b"fast now-last")]
    assert b"never" not in fast.seen


@pytest_twisted.ensureDeferred
async def test_a_request_sent_byte_by_byte(site_port: Any) -> None:
    _, _, port = site_port
    c = await connect_line(port)
    for b in post(b"slow", extra=b"Connection: close\r\n"):
        c.send(bytes([b]))
        await sleep(0)
    data = await c.wait_closed()
    assert bodies(data) == [(200, b"fast slow")]
    assert b"\r\nConnection: close\r\n" in data and b"\r\nDate: " in data


@pytest.mark.parametrize("request_bytes", [
    post(b"pass", extra=b"Connection: close\r\n"),  # the handler declines
    post(b"raise", extra=b"Connection: close\r\n"),  # the handler is broken
    post(b"v10", version=b"HTTP/1.0"),
    post(b"exp", extra=b"Expect: 100-continue\r\nConnection: close\r\n"),
    post(b"dup", extra=b"Content-Length: 3\r\nConnection: close\r\n"),
    post(b"fold", extra=b"X-A: 1\r\n  folded\r\nConnection: close\r\n"),
    b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    b"3\r\nchk\r\n0\r\n\r\n",
    b"POST http://t/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabs",
    b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nput",
    post(b"other", path=b"/y", extra=b"Connection: close\r\n"),
])
@pytest_twisted.ensureDeferred
async def test_everything_else_is_twisted_webs(site_port: Any, request_bytes: bytes) -> None:
    _, fast, port = site_port
    c = await connect_line(port)
    c.send(request_bytes)
    data = await c.wait_closed()
    assert fast.seen == []
    status = int(data.split(b" ", 2)[1])
    assert status in (100, 200, 400, 404)  # whatever twisted.web makes of it
    assert b"fast " not in data


@pytest_twisted.ensureDeferred
async def test_a_failed_fast_request_is_500_and_the_connection_goes_on(site_port: Any) -> None:
    _, _, port = site_port
    c = await connect_line(port)
    c.send(post(b"fail") + post(b"after", extra=b"Connection: close\r\n"))
    data = await c.wait_closed()
    (code, body), second = bodies(data)
    # a route of no family: the neutral dialect (OpenTSDB routes answer their JSON)
    assert (code, body) == (500, b"500 Internal Server Error\n")
    assert second == (200, b"fast after")


@pytest_twisted.ensureDeferred
async def test_body_over_the_cap_and_huge_heads_go_to_twisted_web(site_port: Any) -> None:
    _, fast, port = site_port
    c = await connect_line(port)
    c.send(post(b"x" * 1001, extra=b"Connection: close\r\n"))
    data = await c.wait_closed()
    assert data.startswith(b"HTTP/1.1 413 ")
    c = await connect_line(port)
    c.send(b"POST /x HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n")
    data = await c.wait_closed()
    assert data == b"" or data.startswith(b"HTTP/1.1 400 ")  # twisted.web hangs up
    assert fast.seen == []


@pytest_twisted.ensureDeferred
async def test_idle_connections_close_and_a_client_may_leave_early(site_port: Any) -> None:
    site, fast, port = site_port
    site.timeOut = 0.2
    c = await connect_line(port)
    assert await c.wait_closed(timeout=3) == b""
    c = await connect_line(port)
    c.send(post(b"gone"))
    c.close()  # before the answer: nothing is written to the closed transport
    await sleep(0.05)
    assert fast.seen == [b"gone"]


@pytest_twisted.ensureDeferred
async def test_a_half_close_gets_every_answer_then_the_close(site_port: Any) -> None:
    """Requests read before the client's shutdown(SHUT_WR) are all answered, those
    waiting on a commit too, then the server closes; also after twisted.web took over."""
    _, fast, port = site_port
    c = await connect_line(port)
    c.send(post(b"one") + post(b"now-two") + post(b"three") + b"POST /x HTTP/1.1\r\nHost: t")
    c.transport.loseWriteConnection()  # (and a partial request: dropped)
    data = await c.wait_closed()
    assert bodies(data) == [(200, b"fast one"), (200, b"fast now-two"), (200, b"fast three")]
    c = await connect_line(port)
    c.send(post(b"four") + b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n" + post(b"five"))
    c.transport.loseWriteConnection()
    data = await c.wait_closed()
    assert bodies(data) == [(200, b"fast four"), (200, b"web GET "), (200, b"web POST five")]
    assert fast.seen == [b"one", b"now-two", b"three", b"four"]


def test_parse_head() -> None:
    assert parse_head(b"POST /api/put HTTP/1.1\r\nHost: a\r\nContent-Type:  x/y ") == (
        b"POST", b"/api/put", {b"host": b"a", b"content-type": b"x/y"})
    for bad in (b"POST /a HTTP/1.0", b"POST /a  HTTP/1.1", b"POST * HTTP/1.1",
                b"POST /a HTTP/1.1\r\nA: 1\r\na: 2", b"POST /a HTTP/1.1\r\nNoColon",
                b"POST /a HTTP/1.1\r\nA : 1", b"POST /a HTTP/1.1\r\n\tcont"):
        assert parse_head(bad) is None


# -- bounded logs, and heads no server may take ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_fast_requests_failing_at_will_log_once_then_a_count(
        site_port: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client repeating a request whose fast handler fails (later, or at
    once) gets the route's 500 (or twisted.web's answer) every time; the log
    has one traceback of each kind, then one line counting the rest."""
    monkeypatch.setattr(LeanHTTPChannel, "log_period", 1.0)
    _, _, port = site_port
    n = 20
    with watching("tsnet.http") as events:
        c = await connect_line(port)
        c.send(b"".join(post(b"fail") for _ in range(n - 1))
               + post(b"fail", extra=b"Connection: close\r\n"))
        data = await c.wait_closed()
        assert bodies(data) == [(500, b"500 Internal Server Error\n")] * n
        assert not leaks(data) and b"commit failed" not in data
        for _ in range(n):  # a handler that raises: twisted.web answers instead
            c = await connect_line(port)
            c.send(post(b"raise", extra=b"Connection: close\r\n"))
            data = await c.wait_closed()
            assert bodies(data) == [(200, b"web POST raise")]
        await wait_for(lambda: len(events.summaries()) == 2, timeout=10)
    assert len(events.failures()) == 2
    [failed] = events.full(lean.FAILED_FAST)
    assert formatEvent(failed) == "fast request for /x failed"
    assert failed["log_failure"].check(RuntimeError)
    [raised] = events.full(lean.HANDLER_CRASHES)
    assert formatEvent(raised) == "fast handler for /x failed; twisted.web answers"
    assert sorted(events.summaries()) == [
        f"{n - 1} more failed fast requests in the last 1 s",
        f"{n - 1} more fast handlers that raised in the last 1 s"]


BAD_HEADS = [  # (a header line, or a whole request line, and why it is refused)
    (b"X-\xff: 1", "malformed header"),
    (b"X-Caf\xc3\xa9: 1", "malformed header"),
    (b"A :b", "malformed header"),
    (b"NoColon", "malformed header"),
    (b"Content-Type: a\x0bb", "invalid character in a header value"),
    (b"X-A: a\x00b", "invalid character in a header value"),
    (b"X-A: a\rb", "invalid character in a header value"),
    (b"Content-Length: -1", "invalid Content-Length"),
    (b"Content-Length: " + b"9" * 5000, "invalid Content-Length"),
    (b"Transfer-Encoding: gzip", "unsupported Transfer-Encoding"),
    (b"Transfer-Encoding: chunked", "conflicting Content-Length and Transfer-Encoding"),
]


def bad_request(path: bytes, header: bytes) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: t\r\n%s\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}" % (path, header))


def split_reply(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return lines[0], headers, body


@pytest.mark.parametrize(("header", "reason"), BAD_HEADS,
                         ids=[h[:24].decode("latin-1") for h, _ in BAD_HEADS])
@pytest_twisted.ensureDeferred
async def test_a_head_no_server_may_take_is_400_in_the_routes_dialect(
        make_server: Any, header: bytes, reason: str) -> None:
    """Sent again and again, to an OpenTSDB route (its JSON error, on the
    shared site and on the telnet port's HTTP) and to a path of no family
    (plain text): a 400 that says why, then the close; never a traceback."""
    server = await make_server(BASE_CONFIG.replace("apis = metrics", "apis = opentsdb metrics"))
    with watching("tsnet", "twisted") as events:
        for _ in range(5):
            for port in (server.port("http"), server.port("opentsdb")):
                c = await connect_line(port)
                c.send(bad_request(b"/api/put", header))
                status, headers, body = split_reply(await c.wait_closed())
                assert status == b"HTTP/1.1 400 Bad Request"
                assert headers[b"content-type"].startswith(b"application/json")
                assert json.loads(body) == {"error": {"code": 400, "message": "Bad Request",
                                                      "details": reason}}
                assert headers[b"connection"] == b"close"
            c = await connect_line(server.port("http"))
            c.send(bad_request(b"/nowhere", header))
            status, headers, body = split_reply(await c.wait_closed())
            assert (status, body) == (b"HTTP/1.1 400 Bad Request",
                                      f"400 Bad Request: {reason}\n".encode())
    assert not events.failures()
    assert not [e for e in events.events if e.get("log_level") in
                (LogLevel.error, LogLevel.critical)]
    await server.flush()
    assert await server.export() == []


@pytest_twisted.ensureDeferred
async def test_credentials_that_are_not_ascii_are_no_credentials(make_server: Any) -> None:
    """HTTP Basic of bytes that are not base64 at all: 401, as any unreadable
    credential, on the fast path's route and on twisted.web's; never a crash."""
    config = BASE_CONFIG.replace("apis = metrics", "apis = opentsdb metrics").replace(
        "endpoint = tcp:0:interface=127.0.0.1\n", "endpoint = tcp:0:interface=127.0.0.1\n"
        "auth = token\n")
    server = await make_server(config)
    put = b'{"metric":"m","timestamp":1356998400,"value":1,"tags":{"h":"a"}}'
    with watching("tsnet", "twisted") as events:
        for credential in (b"\x80", b"\xc3\xa9t\xc3\xa9", b"\xff\xfe=="):
            for port in (server.port("http"), server.port("opentsdb")):
                for method, path in ((b"POST", b"/api/put"), (b"GET", b"/api/query?m=sum:m"),
                                     (b"GET", b"/metrics")):
                    if path == b"/metrics" and port != server.port("http"):
                        continue
                    c = await connect_line(port)
                    c.send(b"%s %s HTTP/1.1\r\nHost: t\r\nAuthorization: Basic %s\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                           % (method, path, credential, len(put), put))
                    status, _, body = split_reply(await c.wait_closed())
                    assert status == b"HTTP/1.1 401 Unauthorized", (path, body)
                    assert not leaks(body) and b"ASCII" not in body
    assert not events.failures()


def test_head_error_says_why_and_parse_head_takes_no_malformed_header() -> None:
    for header, reason in BAD_HEADS:
        head = b"POST /a HTTP/1.1\r\nHost: t\r\n" + header + b"\r\nContent-Length: 2"
        assert head_error(head) == reason
        if "header" in reason:  # (the others are framing: no fast handler takes them)
            assert parse_head(head) is None
    for line, reason in ((b"P@ST /a HTTP/1.1", "malformed request line"),
                         (b"POST /a\xff HTTP/1.1", "malformed request line"),
                         (b"POST  /a HTTP/1.1", "malformed request line"),
                         (b"POST /a HTTP/2.0", "unsupported HTTP version")):
        assert head_error(line + b"\r\nHost: t") == reason
    for fine in (b"POST /a HTTP/1.1\r\nHost: t\r\nX-A: caf\xc3\xa9\tau lait",  # obs-text, HTAB
                 b"POST /a HTTP/1.0\r\nHost: t",
                 b"POST /a HTTP/1.1\r\nX-A: 1\r\n  folded",  # twisted.web's to join
                 b"\r\nPOST /a HTTP/1.1\r\nHost: t",  # an empty line first: twisted.web skips it
                 b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked",
                 b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: identity"):
        assert head_error(fine) is None
    assert parse_head(b"POST /a HTTP/1.1\r\nX-A: caf\xc3\xa9\tau lait") == (
        b"POST", b"/a", {b"x-a": b"caf\xc3\xa9\tau lait"})
