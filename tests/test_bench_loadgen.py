"""bench/loadgen.py, the bench's own load generator, as a subprocess against a real
``twistd -n tsnet``: every format delivers exactly the points it reports, the
JSON carries what bench/run.py reads, and only loopback targets are loaded."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsnet.testing.process import TsnetProcess, running

pytestmark = pytest.mark.subprocess

LOADGEN = Path(__file__).resolve().parent.parent / "bench" / "loadgen.py"
POINTS = 3000
SERIES = 100

#: the listener each format loads, and the protocol label its points are counted under
TARGETS = {"opentsdb-telnet": ("opentsdb", "opentsdb"), "opentsdb-http": ("http", "opentsdb"),
           "graphite": ("graphite", "graphite"), "atsd-series": ("atsd", "atsd"),
           "atsd-http": ("http", "atsd")}
#: a time range of its own for each format, so that no two formats share a point
TS_BASE = {f: 1_700_000_000 + i * 100_000 for i, f in enumerate(TARGETS)}

#: what bench/run.py reads from loadgen's JSON
FIELDS = ("points_sent", "points_accepted", "points_rejected", "seconds", "points_per_sec",
          "send_seconds", "setup_seconds", "loadgen_cpu_seconds", "bytes", "requests",
          "http_status", "all_drained", "server_said", "errors", "t_first_byte", "t_done")

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.1

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb atsd metrics
"""

GRAPHITE = """
[listener:graphite]
protocol = graphite
endpoint = tcp:0:interface=127.0.0.1
"""


def graphite_installed() -> bool:
    from tsnet.plugins import load_plugins

    return "graphite" in load_plugins()


HAVE_GRAPHITE = graphite_installed()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsnetProcess]:
    names = {"opentsdb", "atsd", "http"} | ({"graphite"} if HAVE_GRAPHITE else set())
    text = CONFIG + (GRAPHITE if HAVE_GRAPHITE else "")
    with running(tmp_path_factory.mktemp("loadgen"), text, names) as srv:
        yield srv


def loadgen(*args: str, timeout: float = 60) -> tuple[int, dict | None, str]:
    p = subprocess.run([sys.executable, str(LOADGEN), *args], capture_output=True, text=True,
                       timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    return p.returncode, json.loads(lines[-1]) if lines else None, p.stderr


def counter(srv: TsnetProcess, name: str, protocol: str) -> float:
    url = f"http://127.0.0.1:{srv.ports['http']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    want = f'protocol="{protocol}"'
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith(name + "{") and want in ln.split("}")[0])


def settled(srv: TsnetProcess, protocol: str, want: float, timeout: float = 15) -> float:
    """The written counter once it reached ``want`` and held still over a flush or two."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counter(srv, "tsnet_points_written_total", protocol) >= want:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return counter(srv, "tsnet_points_written_total", protocol)


@pytest.mark.parametrize("fmt", list(TARGETS))
def test_every_point_committed(server: TsnetProcess, fmt: str) -> None:
    if fmt == "graphite" and not HAVE_GRAPHITE:
        pytest.skip("the graphite family (examples/tsnet-lineproto) is not installed")
    listener, protocol = TARGETS[fmt]
    before = counter(server, "tsnet_points_written_total", protocol)
    rejected = counter(server, "tsnet_points_rejected_total", protocol)
    batch = {"opentsdb-http": ["--batch", "50"], "atsd-http": ["--batch", "400"]}.get(fmt, [])
    rc, out, err = loadgen("--port", str(server.ports[listener]), "--format", fmt,
                           "--points", str(POINTS), "--conns", "3", "--series", str(SERIES),
                           "--ts-base", str(TS_BASE[fmt]), "--duration-limit", "30",
                           "--drain-timeout", "15", *batch)
    assert rc == 0, (out, err)
    assert out is not None
    assert set(FIELDS) <= set(out)
    assert out["errors"] == []
    assert out["points_sent"] == out["points_accepted"] == POINTS
    assert out["points_rejected"] == 0
    assert out["all_drained"] is True
    assert out["t_first_byte"] <= out["t_done"]
    assert out["seconds"] > 0 and out["points_per_sec"] > 0
    assert out["bytes"] > POINTS * 20
    if fmt == "opentsdb-http":
        assert out["requests"] == POINTS // 50  # 1000 points a connection, 50 a request
        assert set(out["http_status"]) <= {"200", "204"}
    elif fmt == "atsd-http":
        assert out["requests"] == 9  # 1000 points a connection, 400 a request
        assert out["http_status"] == {"200": 9}
        assert json.loads(out["server_said"]) == {"fail": 0, "success": 400, "total": 400}
    else:
        assert out["requests"] is None and out["http_status"] is None
    assert settled(server, protocol, before + POINTS) == before + POINTS
    assert counter(server, "tsnet_points_rejected_total", protocol) == rejected


def test_404_exits_2(server: TsnetProcess) -> None:
    rc, out, _err = loadgen("--port", str(server.ports["http"]), "--format", "opentsdb-http",
                            "--points", "100", "--conns", "1", "--http-path", "/nowhere")
    assert rc == 2
    assert out is not None and out["http_status"] == {"404": 2}
    assert out["points_rejected"] == 100 and out["points_accepted"] == 0


def test_atsd_http_fail_count_is_an_error() -> None:
    """A reply with a nonzero ``fail`` fails the run; a tiny fake server answers."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(20)
    reply = b'{"fail":2,"success":8,"total":10}'

    def serve() -> None:
        with lsock, lsock.accept()[0] as c:
            c.settimeout(20)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                              if ln.lower().startswith(b"content-length:")))
            while len(body) < length:
                body += c.recv(65536)
            assert head.startswith(b"POST /api/v1/command HTTP/1.1")
            assert body.count(b"series e:bench m:bench.m") == 10
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    rc, out, _err = loadgen("--port", str(lsock.getsockname()[1]), "--format", "atsd-http",
                            "--points", "10", "--conns", "1", "--duration-limit", "10",
                            "--drain-timeout", "10")
    t.join(20)
    assert rc == 1
    assert out is not None
    assert out["points_sent"] == 10
    assert out["points_accepted"] == 8 and out["points_rejected"] == 2
    assert out["http_status"] == {"200": 1}
    assert any("2 of 10 commands failed" in e for e in out["errors"])


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "0.0.0.0", "::2", "example.com",
                                  "128.0.0.1", "::ffff:127.0.0.1"])
def test_refuses_non_loopback(host: str) -> None:
    rc, out, err = loadgen("--host", host, "--port", "9", "--format", "opentsdb-telnet",
                           "--points", "10", timeout=30)
    assert rc == 64
    assert out is None
    assert "refusing --host" in err


class Sink:
    """A line server on 127.0.0.1 that keeps what each connection sent, with the
    time each piece came in, and closes a connection once its client half-closed."""

    def __init__(self) -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(30)
        self.port = self.lsock.getsockname()[1]
        self.pieces: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def serve(self, conns: int) -> None:
        def one(c: socket.socket) -> None:
            with c:
                c.settimeout(30)
                while data := c.recv(1 << 16):
                    with self.lock:
                        self.pieces.append((time.time(), data))

        with self.lsock:
            for _ in range(conns):
                c, _addr = self.lsock.accept()
                t = threading.Thread(target=one, args=(c,), daemon=True)
                t.start()
                self.threads.append(t)
        for t in self.threads:
            t.join(30)


def test_paced_lines_keep_the_rate_and_never_repeat_a_point() -> None:
    """--rate 3000 --duration 3 over 3 connections: 9000 points, sent over the 3
    seconds (not in one burst), each (series, time) once, time stamps going on."""
    sink = Sink()
    t = threading.Thread(target=sink.serve, args=(3,), daemon=True)
    t.start()
    base = 1_600_000_000
    rc, out, err = loadgen("--port", str(sink.port), "--format", "opentsdb-telnet",
                           "--rate", "3000", "--duration", "3", "--conns", "3",
                           "--series", "70", "--ts-base", str(base), "--drain-timeout", "10")
    t.join(30)
    assert rc == 0, (out, err)
    assert out is not None and out["errors"] == []
    assert out["points_sent"] == out["points_requested"] == 9000
    assert out["rate_requested"] == 3000 and out["duration_requested"] == 3
    assert 2700 <= out["achieved_rate"] <= 3150
    assert 2.9 <= out["send_seconds"] <= 3.4
    assert 0 <= out["max_late_s"] < 0.5 and out["end_late_s"] < 0.4
    assert out["pregen"] is False
    lines = b"".join(d for _t, d in sink.pieces).decode().splitlines()
    assert len(lines) == 9000
    points = set()
    for ln in lines:
        _put, metric, ts, _value, *tags = ln.split()
        points.add((metric, tuple(tags), int(ts)))
    assert len(points) == 9000
    assert len({p[:2] for p in points}) == 70
    assert min(p[2] for p in points) == base and max(p[2] for p in points) == base + 8999 // 70
    # paced: about half the bytes were in by half time
    t0 = out["t_first_byte"]
    half = sum(len(d) for ts, d in sink.pieces if ts <= t0 + 1.5)
    total = sum(len(d) for _t, d in sink.pieces)
    assert 0.35 * total <= half <= 0.65 * total


def test_paced_http_sends_whole_batches_on_time(server: TsnetProcess) -> None:
    listener, protocol = TARGETS["opentsdb-http"]
    before = counter(server, "tsnet_points_written_total", protocol)
    rc, out, err = loadgen("--port", str(server.ports[listener]), "--format", "opentsdb-http",
                           "--rate", "1000", "--duration", "2", "--conns", "2", "--batch", "50",
                           "--ts-base", str(TS_BASE["opentsdb-http"] + 50_000))
    assert rc == 0, (out, err)
    assert out is not None and out["errors"] == []
    assert out["points_sent"] == out["points_accepted"] == 2000
    assert out["requests"] == 40  # whole batches of 50
    assert 850 <= out["achieved_rate"] <= 1050
    assert settled(server, protocol, before + 2000) == before + 2000


@pytest.mark.parametrize("args,why", [
    (["--rate", "100"], "--rate and --duration go together"),
    (["--duration", "3"], "--rate and --duration go together"),
    (["--rate", "100", "--duration", "3", "--points", "300"], "drop --points"),
    (["--rate", "0", "--duration", "3"], "must be > 0"),
])
def test_bad_pacing_is_a_usage_error(args: list[str], why: str) -> None:
    rc, out, err = loadgen("--port", "9", "--format", "opentsdb-telnet", *args, timeout=30)
    assert rc == 64 and out is None
    assert why in err
