"""ts-store's Unix-socket input (spec §7) over a real Unix socket."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.helpers.tsstore import tsstore_config


def config(sock: Path) -> str:
    return tsstore_config(extra=f"[listener:sock]\nprotocol = tsstore\nendpoint = unix:{sock}\n")


class Client:
    """A blocking AF_UNIX client, run in a thread so the reactor serves it."""

    def __init__(self, path: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def lines(self, n: int) -> list[str]:
        while self.buf.count(b"\n") < n:
            chunk = self.s.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        out = self.buf.split(b"\n")
        got, self.buf = out[:n], b"\n".join(out[n:])
        return [x.decode() for x in got]

    def closed(self) -> bool:
        return self.s.recv(100) == b""


def run(f: Any, *args: Any) -> Any:
    return threads.deferToThread(f, *args)


@pytest.fixture
def served(make_server: Any, tmp_path: Path) -> Any:
    sock = tmp_path / "run" / "tsstore.sock"
    sock.parent.mkdir()
    server = pytest_twisted.blockon(make_server(config(sock)))
    stores = server.core.plugins["tsstore"].stores_for(server.core)
    return server, stores, sock


@pytest_twisted.ensureDeferred
async def test_auth_replies(served: Any) -> None:
    _, stores, sock = served
    _, key, _ = await stores.create("s1")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660

    def exchange(first: bytes) -> tuple[list[str], bool]:
        c = Client(sock)
        c.send(first)
        return c.lines(1), c.closed()

    fmt = "ERROR invalid auth format, expected: AUTH <store> <api-key>"
    for first in (b"HELLO\n", b"AUTH s1\n", b"\n"):
        assert await run(exchange, first) == ([fmt], True)
    for first in (b"AUTH s1 wrong\n", b"AUTH nope " + key.encode() + b"\n"):
        assert await run(exchange, first) == (["ERROR authentication failed"], True)

    def ok(first: bytes) -> list[str]:
        c = Client(sock)
        c.send(first)
        return c.lines(1)
    assert await run(ok, b"auth s1 " + key.encode() + b"\r\n") == ["OK"]


@pytest_twisted.ensureDeferred
async def test_records_in_order_errors_and_quit(served: Any) -> None:
    server, stores, sock = served
    _, key, _ = await stores.create("s1")

    def session() -> list[str]:
        c = Client(sock)
        c.send(b"AUTH s1 " + key.encode() + b"\n")
        out = c.lines(1)
        c.send(b'{"temp": 1}\n\n{nope\r\n')
        out += c.lines(2)
        c.send(b'{"te')
        import time
        time.sleep(1.2)  # a line in slow pieces is never dropped
        c.send(b'mp": 2}\n')
        out += c.lines(1)
        c.send(b"".join(b'{"i": %d}\n' % i for i in range(200)))
        out += c.lines(200)
        c.send(b"quit\nignored\n")
        out += c.lines(1)
        assert c.closed()
        return out

    out = await run(session)
    assert out[0] == "OK"
    assert out[1].startswith("OK ") and out[2].startswith("ERROR invalid JSON: invalid character")
    oks = out[3:-1]
    assert all(o.startswith("OK ") for o in oks) and len(oks) == 201
    times = [int(o.split()[1]) for o in [out[1], *oks]]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert out[-1] == "OK bye"
    recs = await server.core.storage.backend_for("s1").read_records("s1")
    assert [r.time_ns for r in recs] == times
    assert recs[0].data == b'{"temp": 1}' and recs[1].data == b'{"temp": 2}'


@pytest_twisted.ensureDeferred
async def test_schema_store_and_store_errors(served: Any) -> None:
    server, stores, sock = served
    store, key, _ = await stores.create("sc", data_type="schema")

    def session() -> list[str]:
        c = Client(sock)
        c.send(b"AUTH sc " + key.encode() + b'\n{"temp": 1}\n')
        return c.lines(2)
    assert await run(session) == ["OK", "ERROR schema validation failed: schema is required "
                                        "for schema data type"]
    store.schema = store.schema.evolve([{"index": 1, "name": "temp", "type": "float64"}])
    await stores.save(store)

    def again() -> list[str]:
        c = Client(sock)
        c.send(b"AUTH sc " + key.encode() + b'\n{"temp": 1.5}\n{"x": 1}\n')
        return c.lines(3)
    out = await run(again)
    assert out[1].startswith("OK ")
    assert out[2] == "ERROR schema validation failed: field not found in schema: x"
    recs = await server.core.storage.backend_for("sc").read_records("sc")
    assert [r.data for r in recs] == [b'{"1":1.5}']
    _, small, _ = await stores.create("tiny", num_blocks=1, data_block_size=64)

    def big() -> list[str]:
        c = Client(sock)
        c.send(b"AUTH tiny " + small.encode() + b'\n"' + b"x" * 100 + b'"\n')
        return c.lines(2)
    out = await run(big)
    assert out[0] == "OK" and out[1].startswith("ERROR store failed: object of 102 bytes")


@pytest_twisted.ensureDeferred
async def test_socket_file_lifecycle_and_env_override(make_server: Any, tmp_path: Path,
                                                      monkeypatch: Any) -> None:
    sock = tmp_path / "run" / "tsstore.sock"
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # a socket file left by a crash
    stale.close()
    server = await make_server(config(sock), name="a")
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    await server.stop()
    assert not sock.exists()
    moved = tmp_path / "elsewhere" / "ts.sock"
    monkeypatch.setenv("TSSTORE_SOCKET_PATH", str(moved))
    server = await make_server(config(sock), name="b")
    assert stat.S_IMODE(os.stat(moved).st_mode) == 0o660 and not sock.exists()
    stores = server.core.plugins["tsstore"].stores_for(server.core)
    _, key, _ = await stores.create("s1")
    out = await run(lambda: subprocess.run(
        ["nc", "-N", "-U", str(moved)], input=f"AUTH s1 {key}\n{{\"a\":1}}\nQUIT\n".encode(),
        capture_output=True, timeout=10).stdout.decode())
    lines = out.splitlines()
    assert lines[0] == "OK" and lines[1].startswith("OK ") and lines[2] == "OK bye"


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_paused(served: Any) -> None:
    server, stores, sock = served
    _, key, _ = await stores.create("s1", num_blocks=100_000)
    c = Client(sock)
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(b"AUTH s1 " + key.encode() + b"\n")
    line = b'{"v": 1}\n'
    sent = [0]
    stop = threading.Event()

    def flood() -> None:
        c.s.settimeout(2)
        try:
            while not stop.is_set():
                c.s.sendall(line * 100)
                sent[0] += 100
        except (TimeoutError, OSError):
            pass
    await run(flood)
    proto = next(iter(server.service.getServiceNamed("listener:sock").factory.connections))
    assert proto._transport_paused
    assert len(proto._replies) <= 2 * 1000
    assert sent[0] < 1_000_000

    def drain() -> int:
        c.s.settimeout(10)
        return len(c.lines(sent[0] + 1))
    got = await run(drain)
    assert got >= sent[0]


@pytest_twisted.ensureDeferred
async def test_socket_mode_follows_the_endpoint(make_server: Any, tmp_path: Path) -> None:
    """0660 unless the endpoint's ``mode=`` says otherwise."""
    sock = tmp_path / "tsstore.sock"
    await make_server(tsstore_config(
        extra=f"[listener:sock]\nprotocol = tsstore\nendpoint = unix:{sock}:mode=600\n"))
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
