"""tsnet.http.lean: which requests the lean channel answers itself, and that it
hands the connection to twisted.web with the bytes untouched, replies in order,
over real loopback connections to a site with a test fast handler."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource

from tests.helpers.clients import connect_line, sleep
from tsnet.http.lean import MAX_HEAD, parse_head
from tsnet.http.site import Router, Site


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


def test_parse_head() -> None:
    assert parse_head(b"POST /api/put HTTP/1.1\r\nHost: a\r\nContent-Type:  x/y ") == (
        b"POST", b"/api/put", {b"host": b"a", b"content-type": b"x/y"})
    for bad in (b"POST /a HTTP/1.0", b"POST /a  HTTP/1.1", b"POST * HTTP/1.1",
                b"POST /a HTTP/1.1\r\nA: 1\r\na: 2", b"POST /a HTTP/1.1\r\nNoColon",
                b"POST /a HTTP/1.1\r\nA : 1", b"POST /a HTTP/1.1\r\n\tcont"):
        assert parse_head(bad) is None
