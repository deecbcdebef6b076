"""Real OpenTSDB clients that nobody on this project wrote, against `twistd -n tsnet`.

* potsdb (PyPI): telnet `put` lines from a background thread;
* opentsdb-py (PyPI `opentsdb-py`, package `opentsdb`): its telnet sender and its
  HTTP sender (`POST /api/put?details=true`, gzip-compressed by default);
* collectd's `write_tsdb` plugin (Debian `collectd-core`): telnet `put` lines ending
  in CRLF, with an empty word between its tags, two samples a second rounded to
  whole seconds.

Every point a client sent is compared with what `tsnet export` stores, on each
storage backend (SQLite, and Redis on a real redis-server).
"""

from __future__ import annotations

import json
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import potsdb
import pytest
from opentsdb import TSDBClient, TSDBConnectProtocols

from tsnet.testing.process import TsnetProcess, json_lines, running, tsnet

pytestmark = pytest.mark.subprocess

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.1

[storage:default]
{storage}
[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = metrics
"""

T0 = 1356998400  # 2013-01-01T00:00:00Z
MS0 = 1356998400000

Key = tuple[str, tuple[tuple[str, str], ...], int]  # metric, sorted tags, time_ms


@pytest.fixture
def server(tmp_path: Path, each_backend: str) -> Iterator[TsnetProcess]:
    """``twistd -n tsnet`` on SQLite, then on Redis."""
    with running(tmp_path, CONFIG.format(storage=each_backend), {"opentsdb", "http"}) as srv:
        yield srv


# -- what was sent, what is stored ---------------------------------------------------

def number(text: str) -> int | float:
    """OpenTSDB's value classifier (specs/opentsdb.md §1.5)."""
    return float(text) if any(c in text for c in ".eE") else int(text)


def time_ms(ts: int) -> int:
    """Below 2^32 seconds, else milliseconds (§1.4 step 8)."""
    return ts * 1000 if ts < 2**32 else ts


def key(metric: str, tags: dict[str, str], ts: int) -> Key:
    return metric, tuple(sorted(tags.items())), time_ms(ts)


def parse_put(line: str) -> tuple[Key, int | float]:
    """One telnet `put` line as tsnet must understand it (§1.3: split on single
    spaces, empty words in the tag area ignored)."""
    words = line.rstrip("\r\n").split(" ")
    assert words[0] == "put" and len(words) >= 5, line
    metric, ts, value = words[1:4]
    tags = dict(w.split("=", 1) for w in words[4:] if w)
    return key(metric, tags, int(ts)), number(value)


def expected(points: list[tuple[Key, int | float]]) -> dict[Key, int | float]:
    """Last write wins for a repeated (series, time)."""
    return dict(points)


def stored(srv: TsnetProcess) -> dict[Key, int | float]:
    rows = json_lines(tsnet(srv.config, "export").stdout)
    out: dict[Key, int | float] = {}
    for r in rows:
        assert r["kind"] == "series" and r["solution"] == "default", r
        k = key(r["metric"], r["tags"], r["time_ms"])
        assert k not in out, f"exported twice: {r}"
        out[k] = r["value"]
    return out


def assert_same(got: dict[Key, Any], want: dict[Key, Any]) -> None:
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5],
                                   sorted(set(got) - set(want))[:5])
    for k, v in want.items():
        assert got[k] == v and type(got[k]) is type(v), (k, got[k], v)


def wait_written(srv: TsnetProcess, n: int, rejected: int = 0) -> None:
    srv.wait_metric("tsnet_points_written_total", n, timeout=15)
    assert srv.metric("tsnet_points_written_total") == n
    assert srv.metric("tsnet_points_rejected_total") == rejected
    assert "Traceback" not in srv.text() and "Unhandled" not in srv.text(), srv.text()


def query(port: int, m: str, start: int, end: int) -> Any:
    qs = urllib.parse.urlencode({"start": start, "end": end, "m": m})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query?{qs}", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        return json.loads(r.read())


def join(thread: threading.Thread, timeout: float) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), f"{thread.name} still running after {timeout}s"


# -- potsdb --------------------------------------------------------------------------

def potsdb_value(i: int) -> int | float:
    return (i * 1000, i / 4, -i * 1.5, i * 1.5e-7)[i % 4]


def test_potsdb_points_all_stored_and_read_back(server: TsnetProcess) -> None:
    port = server.ports["opentsdb"]
    client = potsdb.Client("127.0.0.1", port=port, host_tag="potsdb-host")
    lines: list[str] = []
    try:
        for i in range(300):
            lines.append(client.log("potsdb.temp", potsdb_value(i), sensor=f"s{i % 4}",
                                    site="lab/1", timestamp=T0 + i * 10))
        for i in range(100):  # millisecond timestamps go through potsdb's "%d" too
            lines.append(client.log("potsdb.fast", i - 50, unit="ms", timestamp=MS0 + i * 7))
        assert all(lines), "potsdb dropped a point as a duplicate"
        client.close()  # the thread drains its queue, then closes the socket
        join(client.t, 15)
    finally:
        client.stop()
        client.t.join(5)
    assert lines[1] == "put potsdb.temp 1356998410 0.25 sensor=s1 site=lab/1 host=potsdb-host\n"
    assert lines[3] == ("put potsdb.temp 1356998430 4.5e-07 sensor=s3 site=lab/1 "
                        "host=potsdb-host\n")
    assert lines[300] == "put potsdb.fast 1356998400000 -50 unit=ms host=potsdb-host\n"
    wait_written(server, len(lines))
    want = expected([parse_put(line) for line in lines])
    assert len(want) == 400
    assert_same(stored(server), want)

    # Read one series back through OpenTSDB's GET /api/query, on the same port.
    out = query(port, "sum:potsdb.temp{sensor=s1}", T0, T0 + 3000)
    assert len(out) == 1
    assert out[0]["metric"] == "potsdb.temp"
    assert out[0]["tags"] == {"host": "potsdb-host", "sensor": "s1", "site": "lab/1"}
    assert out[0]["aggregateTags"] == []
    sent = {str(T0 + i * 10): potsdb_value(i) for i in range(1, 300, 4)}
    assert out[0]["dps"] == sent
    # Grouping on a tag: one output series per sensor, all points of each.
    out = query(port, "sum:potsdb.temp{sensor=*}", T0, T0 + 3000)
    assert sorted(s["tags"]["sensor"] for s in out) == ["s0", "s1", "s2", "s3"]
    assert all(len(s["dps"]) == 75 for s in out)


# -- opentsdb-py ---------------------------------------------------------------------

BAD = ("py.bad", "NaN", {"core": 0, "timestamp": T0})  # a str value the library lets through


def opentsdb_py_points(bad_at: int) -> list[tuple[str, Any, dict[str, Any]]]:
    points: list[tuple[str, Any, dict[str, Any]]] = []
    for i in range(150):
        value = (i, i * 0.1, f"{i}.5", -(2**40) - i, 1e-9 * (i + 1))[i % 5]
        points.append(("py.load", value, {"core": i % 3, "timestamp": T0 + i}))
    for i in range(50):
        points.append(("py.ms", i * 2, {"core": "all", "timestamp": MS0 + 250 * i}))
    points.insert(bad_at, BAD)
    return points


def run_opentsdb_py(client: TSDBClient, bad_at: int) -> list[dict]:
    sent = []
    try:
        for metric, value, tags in opentsdb_py_points(bad_at):
            sent.append(client.send(metric, value, **tags))
        client.close()  # queues a StopIteration after the points
        join(client._metric_send_thread, 20)
    finally:
        client.close(force=True)
        client._metric_send_thread.join(5)
    return sent


def test_opentsdb_py_telnet_sender(server: TsnetProcess) -> None:
    client = TSDBClient("127.0.0.1", server.ports["opentsdb"],
                        protocol=TSDBConnectProtocols.TELNET, host_tag=False,
                        static_tags={"lib": "opentsdb-py"}, check_tsdb_alive=True)
    # The bad point goes last: the sender never reads tsnet's replies, so closing its
    # socket with the error reply unread makes the kernel send a RST, and the RST makes
    # the kernel on tsnet's side drop the lines it had not read yet.  Only with the
    # bad line last has tsnet read everything before it can reply.
    sent = run_opentsdb_py(client, bad_at=200)
    # It counts the bad point as sent (nothing is read back).
    assert client.statuses == {"success": 201, "failed": 0, "queued": 201}
    # The sender's own formatting: "put %s %d %s %s\n" with "k=v" tags joined by spaces.
    lines = [f"put {m['metric']} {m['timestamp']} {m['value']} "
             + " ".join(f"{k}={v}" for k, v in m["tags"].items()) + "\n" for m in sent]
    assert lines[2] == "put py.load 1356998402 2.5 core=2 lib=opentsdb-py\n"
    assert lines[4] == "put py.load 1356998404 5e-09 core=1 lib=opentsdb-py\n"
    assert lines.pop() == "put py.bad 1356998400 NaN core=0 lib=opentsdb-py\n"
    wait_written(server, len(lines), rejected=1)
    assert_same(stored(server), expected([parse_put(line) for line in lines]))


@pytest.mark.parametrize("compression", ["gzip", None])
def test_opentsdb_py_http_sender(server: TsnetProcess, compression: str | None) -> None:
    client = TSDBClient("127.0.0.1", server.ports["opentsdb"],
                        protocol=TSDBConnectProtocols.HTTP, host_tag=False,
                        static_tags={"lib": "opentsdb-py"}, http_compression=compression)
    # GET /api/version (with its session's "Content-Encoding: gzip" and no body).
    # check_tsdb_alive=True cannot be used: opentsdb-py 0.6.0 checks before it sets
    # its compression attribute and always raises TSDBNotAlive.
    assert client.is_alive()
    sent = run_opentsdb_py(client, bad_at=121)
    # It posts batches of 50 to /api/put?details=true and adds up the replies'
    # "success" and "failed"; the batch with the NaN string keeps its 49 good points.
    assert client.statuses == {"success": 200, "failed": 1, "queued": 201}
    assert sent[2] == {"metric": "py.load", "timestamp": 1356998402, "value": "2.5",
                       "tags": {"core": 2, "lib": "opentsdb-py"}}
    assert sent.pop(121)["value"] == "NaN"
    wait_written(server, len(sent), rejected=1)

    def value(v: Any) -> int | float:  # a JSON string value is classified like telnet text
        return number(v) if isinstance(v, str) else v

    want = expected([(key(m["metric"], {k: str(v) for k, v in m["tags"].items()},
                          m["timestamp"]), value(m["value"])) for m in sent])
    assert_same(stored(server), want)


# -- collectd write_tsdb -------------------------------------------------------------

class TeeProxy:
    """A TCP relay to tsnet that records the bytes a client sent and tsnet's replies."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self.replies = bytearray()
        self.accepted = 0
        self.client_eofs = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._run, name="tee-proxy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, _ in self._sel.select(0.05):
                if k.data is None:
                    client, _ = self.listener.accept()
                    up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                    self._sel.register(client, selectors.EVENT_READ, (up, self.sent, True))
                    self._sel.register(up, selectors.EVENT_READ, (client, self.replies, False))
                    self.accepted += 1
                    continue
                other, record, from_client = k.data
                try:
                    data = k.fileobj.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    record += data
                if data:
                    try:
                        other.sendall(data)
                    except OSError:
                        pass
                    continue
                self._sel.unregister(k.fileobj)
                try:
                    other.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                if from_client:
                    self.client_eofs += 1
        for k in list(self._sel.get_map().values()):
            k.fileobj.close()

    def text(self) -> str:
        with self._lock:
            return self.sent.decode("latin-1")

    def wait_clients_closed(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.client_eofs < self.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.client_eofs == self.accepted, "collectd's connection never closed"

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)


COLLECTD_CONF = """
Hostname "testhost"
FQDNLookup false
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
Interval 0.5

LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{dir}/collectd.log"
</Plugin>

LoadPlugin load
LoadPlugin memory
LoadPlugin cpu
<Plugin cpu>
  ReportByCpu false
  ValuesPercentage true
</Plugin>
<LoadPlugin write_tsdb>
  FlushInterval 1
</LoadPlugin>
<Plugin write_tsdb>
  <Node "tsnet">
    Host "127.0.0.1"
    Port "{port}"
    HostTags "source=collectd"
  </Node>
</Plugin>
"""


def collectd_binary() -> str:
    found = shutil.which("collectd") or shutil.which("collectd", path="/usr/sbin:/sbin")
    assert found, "collectd is not installed: run tools/install-test-deps"
    return found


def test_collectd_write_tsdb(server: TsnetProcess, tmp_path: Path) -> None:
    cdir = tmp_path / "collectd"
    cdir.mkdir()
    conf = cdir / "collectd.conf"
    proxy = TeeProxy(server.ports["opentsdb"])
    began = time.time()
    proc = None
    try:
        conf.write_text(COLLECTD_CONF.format(dir=cdir, port=proxy.port))
        proc = subprocess.Popen([collectd_binary(), "-f", "-C", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        # Run until tsnet got samples of three different seconds (two for the cpu
        # plugin, whose percentages need two readings).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            sofar = [line.split(" ") for line in proxy.text().split("\r\n")[:-1]]
            load = {w[2] for w in sofar if w[1] == "load.load.shortterm"}
            cpu = {w[2] for w in sofar if w[1] == "cpu.user.percent"}
            if len(load) >= 3 and len(cpu) >= 2:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # collectd flushes write_tsdb on shutdown
        assert proc.wait(10) == 0
        proxy.wait_clients_closed()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proxy.close()
    ended = time.time()
    log = (cdir / "collectd.log").read_text()
    assert "write_tsdb" in log and "Exiting normally" in log, log

    raw = proxy.sent.decode("latin-1")
    assert raw.endswith("\r\n")
    lines = raw.split("\r\n")[:-1]  # write_tsdb ends every line with CRLF
    assert len(lines) >= 20
    assert all(line.startswith("put ") and line.endswith(" fqdn=testhost  source=collectd")
               for line in lines), lines[:3]
    assert proxy.replies == b"", proxy.replies[:500]  # no error line from tsnet

    wait_written(server, len(lines))
    assert server.metric("tsnet_points_received_total") == len(lines)
    want = expected([parse_put(line) for line in lines])
    got = stored(server)
    assert_same(got, want)
    metrics = {k[0] for k in got}
    assert {"load.load.shortterm", "load.load.midterm", "load.load.longterm",
            "memory.used.memory", "memory.free.memory", "cpu.user.percent",
            "cpu.idle.percent"} <= metrics
    assert {k[1] for k in got} == {(("fqdn", "testhost"), ("source", "collectd"))}
    assert all(int(began) * 1000 <= k[2] <= int(ended + 1) * 1000 for k in got)

    # collectd's series read back through /api/query (seconds; last sample of a second).
    shortterm = sorted((k[2], v) for k, v in got.items() if k[0] == "load.load.shortterm")
    out = query(server.ports["opentsdb"], "sum:load.load.shortterm{fqdn=testhost}",
                int(began) - 1, int(ended) + 1)
    assert [(s["metric"], s["tags"]) for s in out] == [
        ("load.load.shortterm", {"fqdn": "testhost", "source": "collectd"})]
    assert out[0]["dps"] == {str(t // 1000): v for t, v in shortterm}
