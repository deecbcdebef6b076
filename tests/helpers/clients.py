"""Small Twisted clients for tests: tests run inside the reactor, so a blocking
socket would stall the server it talks to."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, endpoints, protocol


class LineClient(protocol.Protocol):
    """Collects everything received; tests wait for lines or for the close."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred = defer.Deferred()
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: Any = None) -> None:
        self._check(final=True)
        self.closed.callback(self.received)

    def _check(self, final: bool = False) -> None:
        n = self.received.count(b"\n")
        for want, d in list(self._waiters):
            if n >= want or final:
                self._waiters.remove((want, d))
                d.callback(self.lines())

    def lines(self) -> list[str]:
        return self.received.decode("utf-8").splitlines()

    def send(self, data: bytes | str) -> None:
        self.transport.write(data.encode() if isinstance(data, str) else data)

    def wait_lines(self, n: int, timeout: float = 5.0) -> defer.Deferred:
        """Fires with all lines once ``n`` have arrived (or the connection closed)."""
        from twisted.internet import reactor

        d: defer.Deferred = defer.Deferred()
        self._waiters.append((n, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def wait_closed(self, timeout: float = 5.0) -> defer.Deferred:
        from twisted.internet import reactor

        if self.closed.called:
            return defer.succeed(self.received)
        d: defer.Deferred = defer.Deferred()
        self.closed.addBoth(lambda r: (d.callback(r) if not d.called else None, r)[1])
        return d.addTimeout(timeout, reactor)

    def close(self) -> None:
        self.transport.loseConnection()


def connect_line(port: int, host: str = "127.0.0.1") -> defer.Deferred:
    from twisted.internet import reactor

    ep = endpoints.TCP4ClientEndpoint(reactor, host, port)
    return endpoints.connectProtocol(ep, LineClient())


def sleep(seconds: float) -> defer.Deferred:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` (may return a Deferred) until it is truthy."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    while True:
        v = yield defer.maybeDeferred(predicate)
        if v:
            return v
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        yield sleep(interval)
