"""The ``graphite`` family end to end: a real ``twistd -n tsnet`` with this
distribution installed, fed by the ``graphyte`` client (TCP and UDP) and by raw
sockets, read back through tsnet's OpenTSDB ``/api/query``."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import graphyte
import pytest

from tsnet.testing.process import TsnetProcess, running, tsnet

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:graphite]
protocol = graphite
endpoint = tcp:0:interface=127.0.0.1
solution = carbon
max_line = 200

[listener:graphite-udp]
protocol = graphite
endpoint = udp:0:interface=127.0.0.1
solution = carbon

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
solution = carbon
apis = opentsdb metrics
"""

T0 = 1_356_998_400


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TsnetProcess]:
    with running(tmp_path, CONFIG, {"graphite", "graphite-udp", "http"}) as srv:
        yield srv


def query(srv: TsnetProcess, m: str, start: int = T0 - 10, end: int = T0 + 1000) -> list:
    qs = urllib.parse.urlencode({"start": start, "end": end, "m": m})
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.ports['http']}/api/query?{qs}",
                                timeout=5) as r:
        return json.loads(r.read())


def wait_query(srv: TsnetProcess, m: str, n: int, timeout: float = 10) -> list:
    """The query's series once they hold ``n`` points in all (committed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = query(srv, m)
        except urllib.error.HTTPError:  # unknown metric: not committed yet
            got = []
        if sum(len(s["dps"]) for s in got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def send_raw(port: int, data: bytes) -> bytes:
    """Send, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_graphyte_over_tcp_with_and_without_tags(server: TsnetProcess) -> None:
    sender = graphyte.Sender("127.0.0.1", port=server.ports["graphite"], protocol="tcp")
    sender.send("servers.web01.cpu", 42.5, timestamp=T0)
    sender.send("servers.web01.cpu", 43, timestamp=T0 + 60)
    sender.send("disk.used", 7, timestamp=T0, tags={"host": "web01", "mount": "root"})
    sender.stop()
    [plain] = wait_query(server, "sum:servers.web01.cpu", 2)
    assert (plain["tags"], plain["dps"]) == ({}, {str(T0): 42.5, str(T0 + 60): 43})
    [tagged] = wait_query(server, "sum:disk.used{host=web01}", 1)
    assert (tagged["tags"], tagged["dps"]) == ({"host": "web01", "mount": "root"}, {str(T0): 7})


def test_graphyte_over_udp(server: TsnetProcess) -> None:
    sender = graphyte.Sender("127.0.0.1", port=server.ports["graphite-udp"], protocol="udp")
    for i in range(5):
        sender.send("udp.metric", i, timestamp=T0 + i)
    sender.stop()
    [series] = wait_query(server, "sum:udp.metric", 5)
    assert series["dps"] == {str(T0 + i): i for i in range(5)}


def test_a_bad_line_costs_no_good_line_and_is_logged_once(server: TsnetProcess) -> None:
    lines = [f"ok.one 1 {T0}", "no.timestamp 1", f"bad.value x {T0}", f"ok.one 2 {T0 + 1}",
             f"tag.bad;=v 1 {T0}", f"ok.one 3 {T0 + 2}"]
    assert send_raw(server.ports["graphite"], ("\n".join(lines) + "\n").encode()) == b""
    [series] = wait_query(server, "sum:ok.one", 3)
    assert series["dps"] == {str(T0): 1, str(T0 + 1): 2, str(T0 + 2): 3}
    server.wait_metric("tsnet_points_rejected_total", 3)
    time.sleep(0.2)
    log = server.text()
    assert log.count("invalid line from") == 1  # the first one, not one per line
    assert "'no.timestamp 1'; 3 such lines so far" in log


def test_the_last_line_without_lf_counts_at_a_clean_close(server: TsnetProcess) -> None:
    send_raw(server.ports["graphite"], f"last.line 5 {T0}\nlast.line 6 {T0 + 1}".encode())
    [series] = wait_query(server, "sum:last.line", 2)
    assert series["dps"] == {str(T0): 5, str(T0 + 1): 6}


def test_a_line_over_max_line_closes_the_connection(server: TsnetProcess) -> None:
    long = "x" * 300
    with socket.create_connection(("127.0.0.1", server.ports["graphite"]), timeout=10) as s:
        s.sendall(f"before 1 {T0}\n{long} 1 {T0}\nafter 1 {T0}\n".encode())
        assert s.recv(100) == b""  # closed by the server, as carbon does
    [series] = wait_query(server, "sum:before", 1)
    assert series["dps"] == {str(T0): 1}
    assert "is over 200: closing the connection" in server.text()


@pytest.mark.parametrize(("listener", "message"), [
    ("protocol = graphite\nendpoint = tcp:0\nauth = token\n",
     "[listener:g] auth: Graphite plaintext carries no credentials"),
    ("protocol = carbon-pickle\nendpoint = tcp:0\n",
     "[listener:g] protocol: no installed plugin provides 'carbon-pickle' (installed: "),
])
def test_the_config_check(tmp_path: Path, listener: str, message: str) -> None:
    cfg = tmp_path / "t.ini"
    cfg.write_text("[listener:g]\n" + listener)
    p = tsnet(cfg, "check-config", check=False)
    assert p.returncode != 0
    assert message in p.stderr
    if "installed: " in message:  # the list names the installed families, this one too
        assert "graphite" in p.stderr.rsplit("installed: ", 1)[1]
