"""`tsnet.unix_socket`: a Unix listener whose connections send at once, over a
real Unix socket and the real reactor."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

from tsnet.unix_socket import EagerServer, UnixReactor


class Echo(Protocol):
    """Answers each chunk with ``size`` bytes (a counter pattern), and records
    whether the reply was left to the reactor's write loop."""

    size = 10

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        reply = bytes(i % 251 for i in range(self.size))
        self.transport.write(reply)
        self.factory.buffered.append(self.transport in reactor.getWriters())


def _factory(size: int) -> Factory:
    f = Factory.forProtocol(Echo)
    f.received, f.buffered = [], []
    Echo.size = size
    return f


def _talk(path: str, send: bytes, want: int) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(send)
    got = b""
    while len(got) < want:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    s.close()
    return got


async def _listen(tmp_path: Path, factory: Factory) -> tuple[Any, str]:
    path = str(tmp_path / "s.sock")
    port = await serverFromString(UnixReactor(reactor), f"unix:{path}:mode=600").listen(factory)
    return port, path


@pytest_twisted.ensureDeferred
async def test_a_reply_the_socket_takes_is_sent_at_once(tmp_path: Path) -> None:
    f = _factory(10)
    port, path = await _listen(tmp_path, f)
    try:
        assert port.transport is EagerServer
        assert (tmp_path / "s.sock").stat().st_mode & 0o777 == 0o600  # the endpoint's mode=
        got = await threads.deferToThread(_talk, path, b"ping", 10)
    finally:
        await port.stopListening()
    assert got == bytes(range(10))
    assert f.received == [b"ping"]
    assert f.buffered == [False]  # sent in write(), never handed to the write loop


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_buffered_in_order(tmp_path: Path) -> None:
    size = 8 << 20  # far more than a Unix socket's buffer
    f = _factory(size)
    port, path = await _listen(tmp_path, f)
    try:
        got = await threads.deferToThread(_talk, path, b"x", size)
    finally:
        await port.stopListening()
    assert f.buffered == [True]
    assert len(got) == size and got == bytes(i % 251 for i in range(size))


@pytest_twisted.ensureDeferred
async def test_writes_behind_a_buffered_one_keep_their_order(tmp_path: Path) -> None:
    """Once something is buffered, later writes queue behind it instead of
    overtaking it on the socket."""
    size = 4 << 20
    done: defer.Deferred = defer.Deferred()

    class Two(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b"a" * size)
            self.transport.write(b"b" * 10)
            done.callback(self.transport in reactor.getWriters())

    port, path = await _listen(tmp_path, Factory.forProtocol(Two))
    try:
        got = await threads.deferToThread(_talk, path, b"x", size + 10)
    finally:
        await port.stopListening()
    assert await done
    assert got == b"a" * size + b"b" * 10
