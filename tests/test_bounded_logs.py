"""Failures a client can repeat at will, through real sockets into real servers,
logged once and then counted (`tsnet.logbound.LogBound`), never told: OpenTSDB
telnet, ATSD TCP, the ts-store Unix socket and ``/metrics``.

The faults are real: a SQLite trigger refusing writes (`tests.helpers.logs`), or
a row of the server's own database damaged by hand, as a bad restore would."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints
from twisted.logger import formatEvent

from tests.helpers.clients import LineClient, connect_line, sleep, wait_for
from tests.helpers.logs import TRIGGER_TEXT, leaks, refuse, watching
from tests.helpers.tsstore import tsstore_config
from tsnet.metrics import AUTH_FAILURES as METRICS_AUTH_FAILURES
from tsnet.metrics import MetricsResource
from tsnet.protocols.atsd import tcp as atsd_tcp
from tsnet.protocols.opentsdb import telnet
from tsnet.protocols.tsstore import unix
from tsnet.testing.fixtures import BASE_CONFIG, make_token

TS = 1356998400
T_MS = 1_425_482_080_000
TOKEN_CONFIG = BASE_CONFIG.replace(
    "endpoint = tcp:0:interface=127.0.0.1\n", "endpoint = tcp:0:interface=127.0.0.1\n"
    "auth = token\n")


def damage(server: Any, sql: str) -> None:
    """Run ``sql`` on the server's default SQLite database, behind its back."""
    db = sqlite3.connect(server.core.config.storages["default"].path)
    try:
        db.execute(sql)
        db.commit()
    finally:
        db.close()


def summary(events: Any, kind: str) -> int:
    """The count of the one summary of ``kind``: ``N more KIND in the last T s``."""
    [line] = events.summaries(kind)
    m = re.fullmatch(rf"(\d+) more {re.escape(kind)} in the last \d+ s", line)
    assert m, line
    return int(m.group(1))


# -- OpenTSDB telnet ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_telnet_token_lookups_that_fail_log_once_and_say_nothing(
        make_server: Any) -> None:
    """The token's row is damaged, so every lookup fails inside the catalog:
    each ``auth`` hears telnet's ``auth: invalid token``, each put with an
    ``ovh.auth`` tag the Unauthenticated error line; one traceback in all, and
    the count when the listener stops."""
    server = await make_server(TOKEN_CONFIG)
    _, sec = await make_token(server)
    damage(server, "UPDATE tokens SET tags = 'not json'")
    port = server.port("opentsdb")
    n = 10
    with watching("tsnet.opentsdb") as events:
        for _ in range(n):
            c = await connect_line(port)
            c.send(f"auth {sec['write']}\nput m {TS} 1 host=a\n")
            assert await c.wait_closed() == b"auth: invalid token\n"
            c = await connect_line(port)
            c.send(f"put m {TS} 1 host=a ovh.auth={sec['write']}\n")
            assert await c.wait_closed() == (b"put: illegal argument: Unauthenticated "
                                             b"command: put\n")
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(telnet.LOOKUP_FAILURES)
    assert formatEvent(first) == "token lookup failed"
    assert summary(events, telnet.LOOKUP_FAILURES) == 2 * n - 1


@pytest_twisted.ensureDeferred
async def test_telnet_lines_too_long_log_once(make_server: Any) -> None:
    """Each connection sending a line over MAX_LINE is closed after the lines
    before it: one log line, the rest counted, not a line a connection."""
    server = await make_server(BASE_CONFIG)
    port = server.port("opentsdb")
    n = 12
    with watching("tsnet.opentsdb") as events:
        for i in range(n):
            c = await connect_line(port)
            c.send(f"put long.ok {TS + i} 1 host=a\nput x {TS} 1 h={'a' * 9000}\n")
            await c.wait_closed()
        await server.stop()
    kind = "connections closed for a line too long"
    assert len(events.full(kind)) == 1
    assert summary(events, kind) == n - 1


@pytest_twisted.ensureDeferred
async def test_telnet_batches_the_storage_refuses_log_once(make_server: Any) -> None:
    """Puts with a per-line token, one batch a send, each refused by the
    storage (a trigger on new series): telnet has no reply for them, and the
    log has one line and the count at stop, not a line a batch."""
    server = await make_server(TOKEN_CONFIG)
    _, sec = await make_token(server)
    refuse(server, "series")
    n = 15
    with watching("tsnet.opentsdb") as events:
        c = await connect_line(server.port("opentsdb"))
        for i in range(n):
            c.send(f"put m{i} {TS} 1 host=a ovh.auth={sec['write']}\n")
            await sleep(0.02)
        await server.flush()
        await sleep(0.1)
        assert c.received == b""  # puts are silent, failed or not
        assert await server.export("iot") == []
        await server.stop()
    [first] = [e for e in events.full() if "could not be stored" in formatEvent(e)]
    assert first["log_kind"] == telnet.WRITE_FAILURES
    assert re.fullmatch(r"1 points could not be stored: .+", formatEvent(first))
    assert 2 <= summary(events, telnet.WRITE_FAILURES) + 1 <= n
    assert not events.failures()


# -- ATSD TCP -------------------------------------------------------------------------

ATSD_CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
solution = fleet
disconnect_on_error = no
"""


@pytest_twisted.ensureDeferred
async def test_atsd_batches_the_storage_refuses_log_once(make_server: Any) -> None:
    """``debug`` commands the storage refuses (a trigger on new series): each
    hears the fixed error, never SQLite's text; one log line, one count."""
    server = await make_server(ATSD_CONFIG)
    refuse(server, "series")
    n = 12
    with watching("tsnet.atsd") as events:
        c = await connect_line(server.port("atsd"))
        for i in range(n):
            c.send(f"debug series e:h m:m{i}=1 ms:{T_MS}\n")
            lines = await c.wait_lines(i + 1)
        assert lines == ["Error: the command was not stored"] * n
        assert not leaks(c.received)
        await server.stop()
    [first] = [e for e in events.full() if "could not be stored" in formatEvent(e)]
    assert first["log_kind"] == atsd_tcp.NOT_STORED
    assert formatEvent(first).startswith("1 ATSD items could not be stored: ")
    assert summary(events, atsd_tcp.NOT_STORED) == n - 1
    assert not events.failures()


@pytest_twisted.ensureDeferred
async def test_atsd_appends_that_cannot_read_the_stored_text_log_once(
        make_server: Any) -> None:
    """The stored series' row is damaged, so every ``a:true`` command fails to
    read the text it appends to: each hears the fixed error; one traceback."""
    server = await make_server(ATSD_CONFIG)
    c = await connect_line(server.port("atsd"))
    c.send(f"debug series e:u x:t=first ms:{T_MS}\n")
    assert await c.wait_lines(1) == ["ok"]
    damage(server, "UPDATE series SET tags = 'not json'")
    n = 12
    with watching("tsnet.atsd") as events:
        for i in range(n):
            c.send(f"debug series e:u x:t=more a:true ms:{T_MS}\n")
            lines = await c.wait_lines(i + 2)
        assert lines[1:] == ["Error: the command was not stored"] * n
        assert not leaks(c.received) and b"Expecting value" not in c.received
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(atsd_tcp.FAILED_APPENDS)
    assert formatEvent(first) == "appending an ATSD text failed"
    assert summary(events, atsd_tcp.FAILED_APPENDS) == n - 1


# -- the ts-store Unix socket ---------------------------------------------------------


def socket_config(sock: Path) -> str:
    return tsstore_config(extra=f"[listener:sock]\nprotocol = tsstore\nendpoint = unix:{sock}\n")


def connect_unix(path: Path) -> Any:
    from twisted.internet import reactor

    ep = endpoints.UNIXClientEndpoint(reactor, str(path))
    return endpoints.connectProtocol(ep, LineClient())


@pytest_twisted.ensureDeferred
async def test_unix_socket_writes_the_storage_refuses_log_once(
        make_server: Any, tmp_path: Path) -> None:
    """Every record refused by the storage (a trigger on records): each line
    is answered ``ERROR store failed: internal error``, one traceback is
    logged, and the count at stop."""
    sock = tmp_path / "tsstore.sock"
    server = await make_server(socket_config(sock))
    stores = server.core.plugins["tsstore"].stores_for(server.core)
    _, key, _ = await stores.create("s1")
    refuse(server, "records")
    n = 10
    with watching("tsnet.tsstore") as events:
        c = await connect_unix(sock)
        c.send(f"AUTH s1 {key}\n")
        assert await c.wait_lines(1) == ["OK"]
        for i in range(n):
            c.send(f'{{"n": {i}}}\n')
            lines = await c.wait_lines(i + 2)
        assert lines[1:] == ["ERROR store failed: internal error"] * n
        assert not leaks(c.received)
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(unix.WRITE_FAILURES)
    assert formatEvent(first) == "a unix socket write failed"
    assert summary(events, unix.WRITE_FAILURES) == n - 1


@pytest_twisted.ensureDeferred
async def test_unix_socket_clients_of_a_store_that_cannot_open_log_once(
        make_server: Any, tmp_path: Path) -> None:
    """A store whose settings were damaged while tsnet was down: every AUTH
    hears ``ERROR authentication failed``; one traceback, then a count."""
    sock = tmp_path / "tsstore.sock"
    server = await make_server(socket_config(sock))
    stores = server.core.plugins["tsstore"].stores_for(server.core)
    _, key, _ = await stores.create("s1")
    await server.stop()
    damage(server, "UPDATE solutions SET attributes = json_set(attributes, "
                   "'$.tsstore.num_blocks', 'many') WHERE name = 's1'")
    server = await make_server(socket_config(sock))  # the same folder: the same database
    n = 10
    with watching("tsnet.tsstore") as events:
        for _ in range(n):
            c = await connect_unix(sock)
            c.send(f"AUTH s1 {key}\n")
            assert await c.wait_closed() == b"ERROR authentication failed\n"
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(unix.AUTH_FAILURES)
    assert formatEvent(first) == "authenticating a unix socket client failed"
    assert summary(events, unix.AUTH_FAILURES) == n - 1


# -- /metrics -------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Authorization: Bearer {secret}", "X-API-Key: {secret}"])
@pytest_twisted.ensureDeferred
async def test_metrics_tokens_that_cannot_be_looked_up_are_a_500_logged_once(
        make_server: Any, monkeypatch: pytest.MonkeyPatch, header: str) -> None:
    """The token's row is damaged: each GET /metrics gets a plain 500 (it used
    to get no answer at all) with nothing of the decoder's text, and the log
    one traceback, then a count."""
    monkeypatch.setattr(MetricsResource, "log_period", 1.0)
    server = await make_server(TOKEN_CONFIG)
    _, sec = await make_token(server)
    damage(server, "UPDATE tokens SET tags = 'not json'")
    n = 10
    with watching("tsnet.metrics") as events:
        for _ in range(n):
            c = await connect_line(server.port("http"))
            c.send(f"GET /metrics HTTP/1.1\r\nHost: t\r\n{header.format(secret=sec['read'])}"
                   "\r\nConnection: close\r\n\r\n")
            data = await c.wait_closed()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
            assert body == b"500 Internal Server Error\n"
        await wait_for(lambda: events.summaries(), timeout=10)
    assert len(events.failures()) == 1
    [first] = events.full(METRICS_AUTH_FAILURES)
    assert formatEvent(first) == "looking up a /metrics token failed"
    assert events.summaries() == [f"{n - 1} more failed /metrics token lookups in the last 1 s"]


def test_the_helpers_fault_text_is_a_leak() -> None:
    """(So the checks above would see SQLite's text in a reply.)"""
    assert leaks(json.dumps({"error": f"IntegrityError: {TRIGGER_TEXT}"}))
