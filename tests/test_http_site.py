"""The shared HTTP site of `http` listeners: keys every listener takes apply."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.helpers.clients import connect_line, wait_for
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
