"""The shared HTTP site of `http` listeners: keys every listener takes apply."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.helpers.clients import connect_line, sleep, wait_for
from tsnet.testing.fixtures import BASE_CONFIG


@pytest_twisted.inlineCallbacks
def test_idle_timeout_closes_silent_http_connections(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG + "idle_timeout = 0.3\n")
    c = yield connect_line(server.port("http"))
    yield c.wait_closed(timeout=3)  # closed by the server, not by us
    c = yield connect_line(server.port("http"))
    c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (yield c.wait_lines(1))[0].startswith("HTTP/1.1 200")
    yield c.wait_closed(timeout=3)  # and once a keep-alive connection goes quiet


@pytest_twisted.inlineCallbacks
def test_max_connections_and_the_connection_gauge(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG + "max_connections = 2\n")
    port = server.port("http")
    a = yield connect_line(port)
    b = yield connect_line(port)
    c = yield connect_line(port)
    yield c.wait_closed(timeout=3)  # the third is refused at once
    a.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    yield wait_for(lambda: a.received.endswith(b"\n") and b"tsnet_connections" in a.received)
    assert b'tsnet_connections{listener="http",protocol="http"} 2.0' in a.received
    assert not b.closed.called
    b.close()
    yield b.wait_closed()
    d = yield connect_line(port)  # a place is free again
    d.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = yield d.wait_closed()
    assert b'tsnet_connections{listener="http",protocol="http"} 2.0' in text
    yield server.service.getServiceNamed("listener:http").stopService()
    yield a.wait_closed(timeout=3)  # a stopping listener drops its connections


TWO_FAMILIES = BASE_CONFIG.replace("apis = metrics", "apis = opentsdb metrics\nmax_body = 100")


def raw(port: int, request: str) -> Any:
    """The whole reply to one request sent on a fresh connection."""

    @pytest_twisted.inlineCallbacks
    def go() -> Any:
        c = yield connect_line(port)
        c.send(request)
        return (yield c.wait_closed())

    return go()


def split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest_twisted.inlineCallbacks
def test_each_route_answers_site_errors_in_its_familys_dialect(make_server: Any) -> None:
    """A path of no family gets neutral text; an OpenTSDB route OpenTSDB's JSON."""
    server = yield make_server(TWO_FAMILIES)
    port = server.port("http")
    code, headers, body = split((yield raw(
        port, "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
    assert (code, headers["content-type"], body) == (
        404, "text/plain; charset=utf-8", b"404 Not Found\n")
    big = "x" * 200
    code, headers, body = split((yield raw(
        port, f"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n{big}")))
    assert (code, body) == (413, b"413 Request Entity Too Large: the body is over 100 bytes\n")
    code, headers, body = split((yield raw(
        port, f"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n"
              f"Transfer-Encoding: identity\r\n\r\n{big}")))
    assert (code, headers["content-type"]) == (413, "application/json; charset=UTF-8")
    assert body == (b'{"error":{"code":413,"message":"Request Entity Too Large",'
                    b'"details":"the body is over 100 bytes"}}')


@pytest_twisted.inlineCallbacks
def test_the_opentsdb_port_answers_every_path_as_opentsdb(make_server: Any) -> None:
    server = yield make_server(TWO_FAMILIES)
    code, headers, body = split((yield raw(
        server.port("opentsdb"), "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
    assert (code, headers["content-type"]) == (404, "application/json; charset=UTF-8")
    assert body == b'{"error":{"code":404,"message":"Endpoint not found"}}'


@pytest_twisted.inlineCallbacks
def test_a_route_ending_in_star_mounts_every_path_below_it(serve_plugin: Any) -> None:
    from twisted.web.resource import Resource

    from tsnet.plugin import ProtocolPlugin

    class Rest(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return b"|".join(request.postpath)

    class Things(ProtocolPlugin):
        name = "things"
        description = "a prefix route"
        provides_api = True

        def resources(self, core: Any) -> dict:
            return {b"/api/things/*": Rest(), b"/api/things/exact": Rest()}

    server = yield serve_plugin(Things())
    port = server.port("http")

    def get(path: str) -> Any:
        return raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    code, _, body = split((yield get("/api/things/a%20b/c")))
    assert (code, body) == (200, b"a%20b|c")
    code, _, body = split((yield get("/API/Things/x")))  # case-insensitive, as whole paths
    assert (code, body) == (200, b"x")
    code, _, body = split((yield get("/api/things/exact")))  # an exact route wins
    assert (code, body) == (200, b"")
    code, _, _ = split((yield get("/api/things")))  # the prefix alone is not below it
    assert code == 404


# -- request deadlines, half-close, Expect ------------------------------------------

SLOW = TWO_FAMILIES.replace("max_body = 100",
                            "max_body = 1000\nrequest_timeout = 0.5\nmin_rate = 0")
SLOW = SLOW.replace("protocol = opentsdb\n",
                    "protocol = opentsdb\nrequest_timeout = 0.5\nmin_rate = 0\n")


def trickle(port: int, data: bytes, every: float = 0.1) -> Any:
    """(seconds from the first byte to the close, what came back): ``data`` a
    byte every ``every`` seconds (never idle) until the server hangs up."""
    from twisted.internet import reactor

    @pytest_twisted.inlineCallbacks
    def go() -> Any:
        c = yield connect_line(port)
        started = reactor.seconds()
        for b in data:
            if c.closed.called:
                break
            c.send(bytes([b]))
            yield sleep(every)
        text = yield c.wait_closed(timeout=5)
        return reactor.seconds() - started, text

    return go()


@pytest_twisted.inlineCallbacks
def test_a_trickled_request_is_cut_by_request_timeout(make_server: Any) -> None:
    """Head or body, one byte every 0.1 s is never idle, yet the request must be
    whole within request_timeout of its first byte: 408 in the route's dialect."""
    server = yield make_server(SLOW)
    head = b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    plain = b"408 Request Timeout\n"
    opentsdb = b'{"error":{"code":408,"message":"Request Timeout"}}'
    # the head, in the lean channel: the path is not known yet; the port's dialect
    for port, want in ((server.port("http"), plain), (server.port("opentsdb"), opentsdb)):
        took, text = yield trickle(port, head + b"[]")
        code, headers, body = split(text)
        assert (code, headers["connection"], body) == (408, "close", want)
        assert took < 2.5  # (0.5 s, and the timer's slack)
    # a head twisted.web reads (a GET)
    took, text = yield trickle(server.port("http"), b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert split(text)[0] == 408 and took < 2.5
    # a body after a whole head, in the lean channel and in twisted.web's: the route's
    for path, want in ((b"/api/put", opentsdb), (b"/nowhere", plain)):
        c = yield connect_line(server.port("http"))
        c.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n" % path)
        for _ in range(40):
            if c.closed.called:
                break
            c.send(b" ")
            yield sleep(0.1)
        code, headers, body = split((yield c.wait_closed()))
        assert (code, body) == (408, want)


@pytest_twisted.inlineCallbacks
def test_min_rate_gives_a_steady_slow_upload_its_time(make_server: Any) -> None:
    """Each min_rate bytes that came earn a second past request_timeout: a body
    at 500 B/s takes twice request_timeout and is answered."""
    server = yield make_server(SLOW.replace("request_timeout = 0.5\nmin_rate = 0\n",
                                            "request_timeout = 0.5\nmin_rate = 200\n"))
    body = b"[" + b" " * 498 + b"]"
    c = yield connect_line(server.port("http"))
    c.send(b"POST /api/put HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 50):
        c.send(body[i:i + 50])
        yield sleep(0.1)
    code, _, _ = split((yield c.wait_closed()))
    assert code == 400  # (an empty list of points): answered, not cut


def put_body(i: int, port: int) -> bytes:
    return (b'{"metric":"m","timestamp":%d,"value":1,"tags":{"port":"%d"}}'
            % (1356998400 + i, port))


@pytest_twisted.inlineCallbacks
def test_requests_sent_before_a_half_close_are_all_answered(make_server: Any) -> None:
    """200 pipelined puts, then shutdown(SHUT_WR): 200 answers on both ports,
    through the lean channel and through twisted.web's."""
    server = yield make_server(TWO_FAMILIES.replace("max_body = 100", "max_body = 1000"))
    for port in (server.port("http"), server.port("opentsdb")):
        c = yield connect_line(port)
        c.send(b"".join(b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(put_body(i, port)), put_body(i, port)) for i in range(200)))
        c.transport.loseWriteConnection()
        text = yield c.wait_closed(timeout=30)
        assert text.count(b"HTTP/1.1 204 ") == 200
        c = yield connect_line(port)
        c.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        c.transport.loseWriteConnection()
        text = yield c.wait_closed(timeout=30)
        assert text.count(b"HTTP/1.1 404 ") == 20
    yield server.flush()
    assert len((yield server.export())) == 400


@pytest_twisted.inlineCallbacks
def test_expect_100_continue_over_max_body_is_413_at_once(make_server: Any) -> None:
    server = yield make_server(TWO_FAMILIES.replace(
        "protocol = opentsdb\n", "protocol = opentsdb\nmax_body = 100\n"))
    for port in (server.port("http"), server.port("opentsdb")):
        c = yield connect_line(port)
        c.send(b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
               b"Expect: 100-continue\r\n\r\n")  # and the body only after a 100
        text = yield c.wait_closed()
        assert b"100 Continue" not in text
        code, headers, body = split(text)
        assert (code, headers["connection"]) == (413, "close")
        assert body == (b'{"error":{"code":413,"message":"Request Entity Too Large",'
                        b'"details":"the body is over 100 bytes"}}')
    c = yield connect_line(server.port("http"))  # a body within the cap still gets its 100
    c.send(b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
           b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    yield wait_for(lambda: b"100 Continue" in c.received)
    c.send(b"[]")
    assert b"HTTP/1.1 400 " in (yield c.wait_closed())
