"""The ``influx`` family in-process while the store is down: another connection
holds the SQLite file's write lock, so tsnet retries and, past ``storage_wait``,
each API answers InfluxDB's own 503; the points are committed once the lock
goes."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from typing import Any

import pytest_twisted
from twisted.internet import defer, task, threads

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05
storage_wait = 0.3

[storage:default]
backend = sqlite
busy_timeout = 0.05

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = influx
"""

T0_NS = 1_356_998_400 * 10**9


def post(port: int, path: str, body: bytes) -> defer.Deferred:
    """Deferred[(status, JSON body)]: a blocking urllib request in a thread, so
    the server in this reactor can answer it."""

    def blocking() -> tuple[int, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    return threads.deferToThread(blocking)


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    from twisted.internet import reactor

    waited = 0.0
    while not await defer.maybeDeferred(predicate):
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {predicate}")
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_past_storage_wait_both_apis_answer_503_and_keep_the_points(
    make_server: Any,
) -> None:
    server = await make_server(CONFIG)
    port = server.port("http")
    lock = sqlite3.connect(server.core.config.storages["default"].path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        code, body = await post(port, "/write?db=telegraf", f"cpu,host=a v=1 {T0_NS}".encode())
        assert code == 503 and body["error"].startswith("storage unavailable")
        code, body = await post(port, "/api/v2/write?bucket=b&org=o",
                                f"cpu,host=b v=2 {T0_NS}".encode())
        assert code == 503 and body["code"] == "unavailable"
        assert body["message"].startswith("storage unavailable")
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    async def stored() -> list[tuple]:
        rows = await server.export()
        return sorted((r["metric"], r["tags"]["host"], r["value"]) for r in rows
                      if r["kind"] == "series")

    await wait_for(lambda: defer.ensureDeferred(stored()).addCallback(lambda r: len(r) == 2))
    assert await stored() == [("cpu.v", "a", 1), ("cpu.v", "b", 2)]
