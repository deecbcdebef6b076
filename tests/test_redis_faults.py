"""A real redis-server stopped and restarted under load, under a real tsnet
process: nothing acked is lost, nothing is written twice, the node resumes by
itself, and the outage is logged once, not once per retry."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tsnet.testing.process import json_lines, running, tsnet

T0 = 1356998400

NODE = """
[tsnet]
data_dir = var
flush_interval = 0.05
storage_wait = 30

[storage:default]
backend = redis
url = {url}
timeout = 1
connect_timeout = 1

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb metrics
"""


def telnet_load(port: int, n: int, errors: list) -> None:
    """``n`` points on one connection, in small writes over a few seconds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            for start in range(0, n, 500):
                s.sendall("".join(f"put load {T0 + i} {i} s={i % 20}\n"
                                  for i in range(start, min(n, start + 500))).encode())
                time.sleep(0.01)
    except Exception as e:  # the assertion below reports it
        errors.append(e)


def put(port: int, i: int) -> int:
    body = json.dumps({"metric": "acked", "timestamp": T0 + i, "value": i,
                       "tags": {"k": "v"}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/put", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.subprocess
def test_redis_restart_under_load_loses_and_repeats_nothing(tmp_path: Path,
                                                             redis_servers: Any) -> None:
    [redis] = redis_servers(1, appendonly=True, appendfsync="always")
    n = 40_000
    with running(tmp_path, NODE.format(url=redis.url), {"opentsdb", "http"}) as node:
        errors: list = []
        load = threading.Thread(target=telnet_load, args=(node.ports["opentsdb"], n, errors))
        load.start()
        node.wait_metric("tsnet_points_written_total", 2000)
        redis.stop()
        acked: dict[int, int] = {}
        puts = [threading.Thread(target=lambda i=i: acked.__setitem__(
            i, put(node.ports["http"], i))) for i in range(5)]
        for t in puts:
            t.start()
        time.sleep(2.0)  # the outage: retries go on, inputs are paused
        written_down = node.metric("tsnet_points_written_total")
        time.sleep(0.5)
        assert node.metric("tsnet_points_written_total") == written_down
        assert all(t.is_alive() for t in puts)  # acks wait for the commit
        redis.restart()
        load.join(60)
        for t in puts:
            t.join(60)
        assert not errors
        assert acked == {i: 204 for i in range(5)}
        node.wait_metric("tsnet_points_written_total", n + 5, timeout=60)
        log = node.text()
    assert log.count("is failing") == 1, log
    assert log.count("writes again") == 1, log
    lines = json_lines(tsnet(node.config, "export").stdout)
    load_points = sorted(x["value"] for x in lines if x["metric"] == "load")
    assert load_points == list(range(n))  # every point once
    assert sorted(x["value"] for x in lines if x["metric"] == "acked") == list(range(5))
