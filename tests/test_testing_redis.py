"""tsnet.testing.redis against the real redis-server: the fixtures start it on
a free port in the test's folder, and txredisapi (the backend's client) talks
to it plainly, with a password, across a restart and over TLS; ``each_backend``
puts a real server on each storage backend in turn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import ssl

from tests.helpers.clients import connect_line
from tsnet.testing import redis as tredis
from tsnet.testing.fixtures import BASE_CONFIG, STORAGE_SECTION, with_storage
from tsnet.testing.redis import RedisError, RedisServer


async def connect(server: RedisServer, **kw: Any) -> Any:
    return await txredisapi.Connection(server.host, server.port, dbid=0, reconnect=False,
                                       **kw)


def test_starts_in_its_folder_on_a_free_loopback_port(redis_server: RedisServer,
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    assert redis_server.command("PING") == "PONG"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("CONFIG", "GET", "dir", decode=True) == ["dir", str(folder)]
    assert redis_server.command("CONFIG", "GET", "bind", decode=True) == ["bind", "127.0.0.1"]
    assert redis_server.command("CONFIG", "GET", "save", decode=True) == ["save", ""]
    assert redis_server.config_path == folder / "redis.conf"
    assert "Ready to accept connections" in (folder / "redis.log").read_text()
    assert redis_server.dbsize() == 0


@pytest_twisted.ensureDeferred
async def test_set_get_through_txredisapi(redis_server: RedisServer) -> None:
    conn = await connect(redis_server)
    try:
        await conn.set("tsnet:k", "v1")
        assert await conn.get("tsnet:k") == "v1"
    finally:
        await conn.disconnect()
    assert redis_server.command("GET", "tsnet:k") == b"v1"
    assert redis_server.command("KEYS", "*") == [b"tsnet:k"]
    assert redis_server.dbsize() == 1


def test_servers_are_independent(redis_servers: Any, tmp_path: Path) -> None:
    a, b = redis_servers(2)
    assert a.port != b.port and a.directory != b.directory
    assert {a.directory.parent, b.directory.parent} == {tmp_path}
    a.command("SET", "only", "a")
    assert (a.dbsize(), b.dbsize()) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_password_is_required(redis_servers: Any) -> None:
    (server,) = redis_servers(password="s3cret pw")
    assert server.url == f"redis://:s3cret%20pw@127.0.0.1:{server.port}/0"
    with pytest.raises(RedisError, match="NOAUTH"):
        server.command("PING", auth=False)
    with pytest.raises(ValueError, match="NOAUTH"):
        await connect(server)
    conn = await connect(server, password="s3cret pw")
    try:
        await conn.set("k", "v")
    finally:
        await conn.disconnect()
    assert server.command("GET", "k") == b"v"


@pytest_twisted.ensureDeferred
async def test_appendonly_data_survives_restart_on_the_same_port(redis_servers: Any) -> None:
    (server,) = redis_servers(appendonly=True, appendfsync="always")
    port = server.port
    conn = await connect(server)
    await conn.set("kept", "one")
    await conn.disconnect()
    server.restart()
    assert server.port == port
    conn = await connect(server)
    try:
        assert await conn.get("kept") == "one"
        await conn.set("after-restart", "2")
    finally:
        await conn.disconnect()
    assert server.kill() == -9  # a crash: appendfsync always has it on disk already
    server.start()
    assert sorted(server.command("KEYS", "*")) == [b"after-restart", b"kept"]
    assert (server.directory / "appendonlydir").is_dir()


def test_without_appendonly_nothing_survives(redis_server: RedisServer) -> None:
    redis_server.command("SET", "k", "v")
    assert redis_server.stop() == 0
    redis_server.start()
    assert redis_server.dbsize() == 0
    assert not list(redis_server.directory.glob("*.rdb"))


@pytest_twisted.ensureDeferred
async def test_tls_with_the_servers_ca(redis_servers: Any) -> None:
    (server,) = redis_servers(tls=True)
    assert server.url == f"rediss://127.0.0.1:{server.port}/0"
    assert server.command("CONFIG", "GET", "port", decode=True) == ["port", "0"]
    ca = ssl.Certificate.loadPEM(server.ca_path.read_bytes())
    for hostname in ("127.0.0.1", "localhost"):  # both are in the certificate
        conn = await connect(server, ssl_context_factory=ssl.optionsForClientTLS(
            hostname, trustRoot=ca))
        try:
            await conn.set("over-tls", hostname)
        finally:
            await conn.disconnect()
        assert server.command("GET", "over-tls", decode=True) == hostname
    conn = await connect(server, ssl_context_factory=server.client_tls())
    await conn.disconnect()


@pytest_twisted.ensureDeferred
async def test_tls_client_that_does_not_trust_the_ca_fails(redis_servers: Any,
                                                           tmp_path: Path) -> None:
    (server,) = redis_servers(tls=True)
    other = tredis.make_certs(tmp_path / "other")  # a CA that did not sign the server
    untrusted = ssl.optionsForClientTLS(
        "127.0.0.1", trustRoot=ssl.Certificate.loadPEM(other["ca"].read_bytes()))
    with pytest.raises(ValueError, match="could not set dbid"):
        await connect(server, ssl_context_factory=untrusted)
    with pytest.raises(ValueError, match="could not set dbid"):  # platform trust store
        await connect(server, ssl_context_factory=ssl.optionsForClientTLS("127.0.0.1"))
    with pytest.raises(ValueError):  # and a plaintext client gets nowhere either
        await txredisapi.Connection(server.host, server.port, dbid=0, reconnect=False,
                                    replyTimeout=2)
    assert server.command("PING") == "PONG"


def test_tls_is_supported_by_this_build(tmp_path: Path) -> None:
    supported, said = tredis.tls_supported(tredis.find_binary(), tmp_path)
    assert supported, said


def test_a_taken_port_is_retried(redis_server: RedisServer, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    offered = [redis_server.port]  # taken, and by a redis that answers PING
    real = tredis.free_port
    monkeypatch.setattr(tredis, "free_port", lambda: offered.pop() if offered else real())
    with RedisServer(tmp_path / "second") as second:
        assert second.port != redis_server.port
        assert second.command("CONFIG", "GET", "dir", decode=True)[1] == str(second.directory)
    assert "Address already in use" in second.log_text()


def test_context_manager_leaves_no_process(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "r") as server:
        pid = server.pid
        assert server.running
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert server.stop() is None  # stopping twice is fine


def test_with_storage_replaces_only_the_base_config_section() -> None:
    redis = "backend = redis\nurl = redis://127.0.0.1:1/0\n"
    text = with_storage(BASE_CONFIG.replace("apis = metrics", "apis = opentsdb"), redis)
    assert STORAGE_SECTION not in text
    assert f"[storage:default]\n{redis}\n[listener:opentsdb]" in text
    assert "apis = opentsdb" in text
    own = BASE_CONFIG.replace("backend = sqlite\n", "backend = sqlite\npath = my.db\n")
    assert with_storage(own, redis) == own  # a section of the test's own: left alone
    assert with_storage("[tsnet]\n", redis) == "[tsnet]\n"


class TestEachBackend:
    @pytest.fixture
    def storage_config(self, each_backend: str) -> str:
        return each_backend

    @pytest_twisted.inlineCallbacks
    def test_make_server_stores_in_it(self, make_server: Any, each_backend: str,
                                      request: pytest.FixtureRequest) -> None:
        backend = request.node.callspec.params["each_backend"]
        assert request.node.name.endswith(f"[{backend}]")
        server = yield make_server()
        storage = server.core.config.storages["default"]
        assert storage.backend == backend
        c = yield connect_line(server.port("opentsdb"))
        c.send("put m 1356998400 1 host=a\nexit\n")
        yield c.wait_closed()
        yield server.flush()
        assert [r["metric"] for r in (yield server.export())] == ["m"]
        if backend == "redis":
            redis = request.getfixturevalue("redis_server")
            assert each_backend == f"backend = redis\nurl = {redis.url}\n"
            assert redis.dbsize() > 0
        else:
            assert os.path.getsize(storage.path) > 0
