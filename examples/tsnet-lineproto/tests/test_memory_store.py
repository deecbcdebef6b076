"""The ``memory`` backend: tsnet's whole storage conformance suite, the plugin
as tsnet finds it, and a real server storing a telnet ``put`` in it.

A fresh `MemoryBackend` per conformance test, so tests share no store; the
reopen tests call the factory twice and reach the same store through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, protocol
from zope.interface.verify import verifyObject

from tsnet.plugin import ICatalog, IStorage, IStorageBackend, StorageConfig
from tsnet.testing.conformance import CPU, T0, S, StorageConformance, make_batch
from tsnet_lineproto.memory_store import MemoryBackend, MemoryStorage

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[storage:default]
backend = memory

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1
"""


def make_factory(backend: MemoryBackend, name: str = "default") -> Callable[[], MemoryStorage]:
    """Storages built the way tsnet builds them: by the plugin, from a section."""
    from twisted.internet import reactor

    section = StorageConfig(name, backend.name, plugin=backend)
    return lambda: backend.makeStorage(section, reactor)


class TestMemoryConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[[], Any]:
        return make_factory(MemoryBackend())


def test_plugin_and_storage_verify_against_their_interfaces() -> None:
    backend = MemoryBackend()
    assert verifyObject(IStorageBackend, backend)
    storage = make_factory(backend)()
    assert verifyObject(IStorage, storage)
    assert verifyObject(ICatalog, storage)


@pytest_twisted.ensureDeferred
async def test_stores_are_per_section_and_per_backend_instance() -> None:
    """Another section name, or another plugin instance, is another store."""
    backend = MemoryBackend()
    first, other = make_factory(backend)(), make_factory(backend, "other")()
    stranger = make_factory(MemoryBackend())()
    for s in (first, other, stranger):
        await s.open()
    await first.write(make_batch(samples=[(CPU, T0, 1)]))
    assert await first.count_points(S) == 1
    assert await other.count_points(S) == 0
    assert await stranger.count_points(S) == 0
    for s in (first, other, stranger):
        await s.close()


def test_tsnet_finds_the_backend() -> None:
    from tsnet.plugins import load_storage_backends

    backends = load_storage_backends()
    assert "memory" in backends
    assert type(backends["memory"]).__name__ == "MemoryBackend"
    assert "sqlite" in backends  # the built-in is still there


class _Lines(protocol.Protocol):
    """Collects what the server answers until ``n`` lines have arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.received = b""
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received.count(b"\n") >= self.n and not self.done.called:
            self.done.callback(self.received.decode("utf-8").splitlines())


@pytest_twisted.ensureDeferred
async def test_server_stores_a_telnet_put_in_memory(make_server: Any) -> None:
    from twisted.internet import reactor

    server = await make_server(CONFIG)
    assert isinstance(server.core.storages.backend("default"), MemoryStorage)
    assert (await server.core.catalog.get_solution("default")) is not None

    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port("opentsdb"))
    client = await endpoints.connectProtocol(endpoint, _Lines(2))
    # ``version`` answers two lines once the put before it has been taken
    client.transport.write(b"put mem.test 1425482080 42 host=a dc=x\nversion\n")
    replies = await client.done.addTimeout(5, reactor)
    client.transport.loseConnection()
    assert replies[0].startswith("net.opentsdb.tools")

    await server.flush()
    lines = [ln for ln in await server.export() if ln.get("metric") == "mem.test"]
    assert lines == [
        {
            "kind": "series",
            "solution": "default",
            "metric": "mem.test",
            "tags": {"dc": "x", "host": "a"},
            "time_ms": 1425482080000,
            "value": 42,
        }
    ]



@pytest_twisted.ensureDeferred
async def test_a_backend_without_bounded_reads_still_gets_the_points_limit(
        make_server: Any) -> None:
    """`IBoundedReads` is optional: tsnet counts this backend's points once its
    read returns, so ``max_query_points`` answers the same 413."""
    import json

    import treq

    from tsnet.plugin import Batch, IBoundedReads, anonymous, series_key

    server = await make_server(CONFIG.replace(
        "flush_interval = 0.05\n", "flush_interval = 0.05\nmax_query_points = 5\n"))
    assert not IBoundedReads.providedBy(server.core.storages.backend("default"))
    batch = Batch()
    for i in range(6):
        batch.samples.add(series_key("mem.q", {"host": "a"}), (1425482080 + i) * 10**9, i)
    await server.core.ingest.submit(batch, anonymous("default"))
    base = f"http://127.0.0.1:{server.port('opentsdb')}/api/query?m=sum:mem.q"
    resp = await treq.get(f"{base}&start=1425482080&end=1425482090")
    body = json.loads(await resp.content())
    assert resp.code == 413
    assert "max_query_points = 5" in body["error"]["message"]
    resp = await treq.get(f"{base}&start=1425482080&end=1425482085")
    assert resp.code == 413  # whole hours are read, as OpenTSDB does
    batch = Batch()
    for i in range(5):
        batch.samples.add(series_key("mem.r", {"host": "a"}), (1425482080 + i) * 10**9, i)
    await server.core.ingest.submit(batch, anonymous("default"))
    resp = await treq.get(base.replace("mem.q", "mem.r") + "&start=1425482080&end=1425482090")
    assert resp.code == 200
    assert len(json.loads(await resp.content())[0]["dps"]) == 5
