"""Connection limits every stream listener shares (tsnet.listeners): the cap per
client address, fair eviction when a listener is full, line deadlines, and
logs that stay bounded under a flood.  Real loopback and Unix sockets against
a real service tree; 127.0.0.2 stands for a second client address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints
from twisted.logger import globalLogPublisher

from tests.helpers.clients import LineClient, connect_line, sleep, wait_for
from tests.helpers.tsstore import tsstore_config
from tsnet.config import load_config
from tsnet.errors import ConfigError
from tsnet.listeners import EVICT_AFTER
from tsnet.plugins import load_plugins
from tsnet.testing.fixtures import BASE_CONFIG

GET = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def connect_from(source: str, port: int) -> defer.Deferred:
    """A client connection to 127.0.0.1:``port`` from the address ``source``."""
    from twisted.internet import reactor

    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    return endpoints.connectProtocol(ep, LineClient())


def http_listener(keys: str) -> str:
    return BASE_CONFIG.replace("apis = metrics", "apis = metrics\n" + keys)


@pytest_twisted.ensureDeferred
async def test_one_address_gets_its_share_and_the_others_are_served(make_server: Any) -> None:
    server = await make_server(http_listener("max_connections_per_address = 3"))
    port = server.port("http")
    mine = [(await connect_from("127.0.0.2", port)) for _ in range(3)]
    over = await connect_from("127.0.0.2", port)
    await over.wait_closed(timeout=3)  # the fourth from that address is refused
    other = await connect_line(port)  # another address is not
    other.send(GET)
    await wait_for(lambda: b"tsnet_connections" in other.received)
    assert b'tsnet_connections{listener="http",protocol="http"} 4.0' in other.received
    assert not any(c.closed.called for c in mine)
    mine[0].close()
    await mine[0].wait_closed()
    await wait_for(lambda: len(server.service.getServiceNamed("listener:http")
                               .factory.tracker.connections) == 3)
    again = await connect_from("127.0.0.2", port)  # a place of that address is free again
    again.send(GET.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"))
    assert (await again.wait_closed()).startswith(b"HTTP/1.1 200 ")


@pytest_twisted.ensureDeferred
async def test_a_full_listener_drops_the_slowest_unfinished_connection(make_server: Any) -> None:
    """Silent sockets that never sent a whole request make room for a newcomer;
    a client that sent one keeps its place; with nobody slow the newcomer is refused."""
    server = await make_server(http_listener("max_connections = 3\n"
                                             "max_connections_per_address = 0"))
    port = server.port("http")
    served = await connect_line(port)
    served.send(GET)
    await wait_for(lambda: b"tsnet_connections" in served.received)
    silent = [(await connect_line(port)) for _ in range(2)]
    await sleep(EVICT_AFTER + 0.2)
    newcomer = await connect_line(port)
    newcomer.send(GET)
    await wait_for(lambda: b"tsnet_connections" in newcomer.received)
    await silent[0].wait_closed(timeout=3)  # the one that waited longest made room
    assert not silent[1].closed.called and not served.closed.called
    await sleep(EVICT_AFTER + 0.2)
    late = await connect_line(port)
    late.send(GET)
    await wait_for(lambda: b"tsnet_connections" in late.received)
    await silent[1].wait_closed(timeout=3)
    refused = await connect_line(port)  # three clients with whole requests: no room
    await refused.wait_closed(timeout=3)
    assert refused.received == b""
    served.send(GET)  # the established clients are served still
    await wait_for(lambda: served.received.count(b"HTTP/1.1 200") == 2)
    assert not newcomer.closed.called and not late.closed.called


@pytest_twisted.ensureDeferred
async def test_refused_connections_are_logged_once_a_burst(make_server: Any) -> None:
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "tsnet.listener":
            events.append(event)

    server = await make_server(http_listener("max_connections = 1"))
    port = server.port("http")
    held = await connect_line(port)
    held.send(GET)  # a whole request: it keeps its place
    await wait_for(lambda: b"tsnet_connections" in held.received)
    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(75):  # (in rounds below the listen backlog of 50)
            burst = await defer.gatherResults([connect_line(port) for _ in range(40)])
            await defer.gatherResults([c.wait_closed(timeout=10) for c in burst])
        await server.service.getServiceNamed("listener:http").stopService()
    finally:
        globalLogPublisher.removeObserver(observe)
    # the first refusal, then one summary line (at the latest when the listener stops)
    assert 1 <= len(events) <= 3, [e["log_format"] for e in events[:5]]
    assert events[0]["kind"] == "full"
    assert sum(e.get("counts", {}).get("full", 0) for e in events) == 2999


def line_listeners(tmp_path: Path) -> str:
    return tsstore_config(extra=(
        f"[listener:sock]\nprotocol = tsstore\nendpoint = unix:{tmp_path / 'ts.sock'}\n"
        "line_timeout = 0.5\nmin_rate = 0\n\n"
        "[listener:opentsdb]\nprotocol = opentsdb\nendpoint = tcp:0:interface=127.0.0.1\n"
        "line_timeout = 0.5\nmin_rate = 0\n\n"
        "[listener:atsd]\nprotocol = atsd\nendpoint = tcp:0:interface=127.0.0.1\n"
        "line_timeout = 0.5\nmin_rate = 0\n"))


@pytest.mark.parametrize(("listener", "first", "trickle"), [
    ("opentsdb", "version\n", "put sys.cpu 1356998400 1 host=a"),
    ("atsd", "ping\n", "series e:a m:m=1"),
    ("sock", "", "AUTH store key"),
])
@pytest_twisted.ensureDeferred
async def test_a_trickled_line_is_cut_by_line_timeout(make_server: Any, tmp_path: Path,
                                                listener: str, first: str,
                                                trickle: str) -> None:
    """One byte every 0.1 s never goes idle, yet the line must be whole within
    line_timeout of its first byte; whole lines before it are answered."""
    from twisted.internet import reactor

    server = await make_server(line_listeners(tmp_path))
    if listener == "sock":
        ep = endpoints.UNIXClientEndpoint(reactor, str(tmp_path / "ts.sock"))
        c = await endpoints.connectProtocol(ep, LineClient())
    else:
        c = await connect_line(server.port(listener))
    if first:
        c.send(first)
        await c.wait_lines(1)
    started = reactor.seconds()
    for ch in trickle * 10:
        if c.closed.called:
            break
        c.send(ch)
        await sleep(0.1)
    assert c.closed.called
    assert reactor.seconds() - started < 2.5  # (0.5 s, and the timer's slack)


@pytest_twisted.ensureDeferred
async def test_whole_lines_sent_slowly_are_not_cut(make_server: Any, tmp_path: Path) -> None:
    """The deadline is per line: a client sending whole lines for longer than
    line_timeout in all, or pausing between them, is served."""
    server = await make_server(line_listeners(tmp_path))
    c = await connect_line(server.port("opentsdb"))
    for _ in range(4):
        c.send("vers")
        await sleep(0.2)
        c.send("ion\n")
        await sleep(0.2)
    await sleep(0.7)
    c.send("version\n")
    lines = await c.wait_lines(10)
    assert sum(1 for ln in lines if ln.startswith("net.opentsdb")) == 5
    assert not c.closed.called


def test_limit_keys_have_defaults_and_are_checked(tmp_path: Path) -> None:
    plugins = load_plugins()
    cfg = tmp_path / "tsnet.ini"
    cfg.write_text("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:0\n\n"
                   "[listener:b]\nprotocol = opentsdb\nendpoint = tcp:0\n"
                   "max_connections_per_address = 0\nrequest_timeout = 2.5\n"
                   "line_timeout = 0\nmin_rate = 100\n")
    a, b = load_config(str(cfg), plugins).listeners.values()
    assert (a.max_connections_per_address, a.request_timeout, a.line_timeout,
            a.min_rate) == (256, 30.0, 30.0, 500.0)
    assert (b.max_connections_per_address, b.request_timeout, b.line_timeout,
            b.min_rate) == (0, 2.5, 0.0, 100.0)
    cfg.write_text("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:0\n"
                   "max_connections_per_address = -1\n")
    with pytest.raises(ConfigError, match="max_connections_per_address"):
        load_config(str(cfg), plugins)
