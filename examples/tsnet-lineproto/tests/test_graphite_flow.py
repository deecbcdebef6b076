"""The graphite family in-process, through tsnet.testing's ``serve_plugin``:
the write queue's watermarks pause a fast TCP client and resume it, and
nothing that was read is lost; the listener counts its connections."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, endpoints, protocol, task

from tsnet_lineproto.graphite import GraphitePlugin

T0 = 1_356_998_400


class Sender(protocol.Protocol):
    """Writes everything at once, then half-closes; `closed` fires at the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    from twisted.internet import reactor

    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {predicate}")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


@pytest_twisted.ensureDeferred
async def test_watermarks_pause_a_graphite_stream_without_loss(serve_plugin: Any) -> None:
    from twisted.internet import reactor

    server = await serve_plugin(GraphitePlugin())
    ingest = server.core.ingest
    # a queue this small pauses inputs after a few thousand points
    ingest.high_watermark, ingest.low_watermark = 2000, 500
    n = 60_000
    data = "".join(f"flow.m{i % 100} {i} {T0 + i // 100}\n" for i in range(n)).encode()
    paused: list[bool] = []
    watch = task.LoopingCall(lambda: paused.append(ingest.paused))
    watch.clock = reactor
    watch.start(0.005)
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("graphite"))
    sender = Sender(data)
    await endpoints.connectProtocol(ep, sender)
    await sender.closed  # everything sent; the server may not have read it all yet
    gauge = server.core.metrics.connections.labels("graphite", "graphite")
    await wait_for(lambda: gauge._value.get() == 0)  # read to the end: the server closed
    await wait_for(lambda: ingest.queued == 0 and not ingest.paused)
    watch.stop()
    await server.flush()
    rows = await server.export()
    assert len(rows) == n
    assert True in paused  # the queue did push back on the client
    written = server.core.metrics.points_written.labels("graphite")._value.get()
    assert written == n


@pytest_twisted.ensureDeferred
async def test_connections_are_counted_and_limited(serve_plugin: Any) -> None:
    from twisted.internet import reactor

    server = await serve_plugin(GraphitePlugin(), max_connections="1")
    gauge = server.core.metrics.connections.labels("graphite", "graphite")
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("graphite"))
    first = await endpoints.connectProtocol(ep, protocol.Protocol())
    await wait_for(lambda: gauge._value.get() == 1)
    second = Sender(b"")
    second.connectionMade = lambda: None  # says nothing; the server closes it
    await endpoints.connectProtocol(ep, second)
    await second.closed  # refused: the listener is full
    first.transport.loseConnection()
    await wait_for(lambda: gauge._value.get() == 0)
