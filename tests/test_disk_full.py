"""A full disk: the data directory on a small tmpfs the test mounts (root only,
as in CI; skipped elsewhere), filled up by a ballast file, then freed.

Writes fail with SQLite's "database or disk is full" while it is full: they must
be kept and retried, never dropped nor answered as bad data; reads and exports
must go on without writing; and once space is freed everything acked or read
is committed, once."""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import socket
import sqlite3
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tsnet.model import WriteBatch, series_key
from tsnet.storage.sqlite import SqliteEngine
from tsnet.testing.process import TsnetProcess, json_lines, tsnet

T0 = 1_356_998_400  # 2013-01-01, in s
S = "default"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for the test (needs root and mount(8))."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem with a ballast file."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return ballast


def batch(metric: str, points: list[tuple[int, int]], host: str = "a") -> WriteBatch:
    wb = WriteBatch()
    for t, v in points:
        wb.for_solution(S).samples.add(series_key(metric, {"host": host}), t * 10**9, v)
    return wb


# -- the engine --------------------------------------------------------------------------


def test_reads_and_exports_need_no_free_space(small_fs: Path) -> None:
    eng = SqliteEngine(str(small_fs / "t.sqlite"), busy_timeout=0.05, pending_max_points=10)
    eng.open()
    eng.write(batch("m", [(T0 + i, i) for i in range(20)]))  # chunks
    eng.write(batch("m", [(T0 + i, 100 + i) for i in range(15, 20)]))  # the pending log
    eng.write(batch("n", [(T0 + i, i) for i in range(5)]))
    eng.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every commit from now grows the WAL
    ballast = fill(small_fs)
    with pytest.raises(sqlite3.OperationalError, match="full"):  # not a bad batch
        eng.write(batch("m", [(T0 + i, 200) for i in range(30)]))
    with pytest.raises(sqlite3.OperationalError, match="full"):
        eng.fold_pending()
    m_values = list(range(15)) + [100 + i for i in range(15, 20)]
    for _ in range(2):  # (the second read does not even try to fold)
        series = {k[0]: (t, v) for k, t, v, _ in eng.read_series(S)}
        assert series == {"m": ([(T0 + i) * 10**9 for i in range(20)], m_values),
                          "n": ([(T0 + i) * 10**9 for i in range(5)], list(range(5)))}
        assert eng.count_points(S) == 25 and eng.count_points() == 25
        assert [k[0] for k in eng.list_series(S)] == ["m", "n"]
        assert eng.solution_has_data(S)
        lines = [line for line in eng.iter_export() if line["kind"] == "series"]
        assert [line["value"] for line in lines if line["metric"] == "m"] == m_values
        assert len(lines) == 25
    ballast.unlink()
    # a big write folds the older log first, so the newer values win
    eng.write(batch("m", [(T0 + i, 300) for i in range(15, 30)]))
    series = {k[0]: v for k, _, v, _ in eng.read_series(S)}
    assert series["m"] == list(range(15)) + [300] * 15
    assert eng.count_points(S) == 35
    eng.close()


# -- a real server ------------------------------------------------------------------------

CONFIG = """
[tsnet]
data_dir = {data}
flush_interval = 0.05
storage_wait = 1

[storage:default]
backend = sqlite

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb metrics
"""


class TelnetStream(threading.Thread):
    """A telnet client putting 100 lines every 10 ms on one connection until
    stopped; ``sent`` counts the lines handed to the kernel (blocking sends, so
    a server that stops reading holds the client back, as TCP does)."""

    def __init__(self, port: int, metric: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.metric = metric
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            lines = "".join(f"put {self.metric} {T0 + i} {i} host=h{i % 10}\n"
                            for i in range(self.sent, self.sent + 100))
            self.sock.sendall(lines.encode())
            self.sent += 100
            time.sleep(0.01)
        self.sock.close()


class HttpPutter(threading.Thread):
    """An HTTP client posting 10 points per /api/put, one request at a time,
    remembering each answer (status, headers, body) and the first time it sent."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/put"
        self.answers: list[tuple[int, int, Any, dict]] = []  # (first time, status, ...)
        self.stop = threading.Event()

    def run(self) -> None:
        t = T0
        while not self.stop.is_set():
            body = json.dumps([{"metric": "http", "timestamp": t, "value": t - T0,
                                "tags": {"host": f"h{j}"}} for j in range(10)]).encode()
            req = urllib.request.Request(self.url, data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    self.answers.append((t, r.status, dict(r.headers), r.read()))
            except urllib.error.HTTPError as e:
                self.answers.append((t, e.code, dict(e.headers), e.read()))
            except (OSError, http.client.HTTPException) as e:
                if self.stop.is_set():
                    return  # (the server is being stopped under it)
                self.answers.append((t, 0, {}, repr(e)))
            t += 1

    def by_status(self, status: int) -> list[tuple[int, int, Any, dict]]:
        return [a for a in list(self.answers) if a[1] == status]


def wait_until(check: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def query(port: int, metric: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{port}/api/query?start={T0 - 1}&m=sum:{metric}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stored(cfg: Path) -> dict[tuple[str, str, int], Any]:
    """(metric, host, time s) -> value of every series point, by ``tsnet export``."""
    p = tsnet(cfg, "export")
    return {(r["metric"], r["tags"]["host"], r["time_ms"] // 1000 - T0): r["value"]
            for r in json_lines(p.stdout) if r["kind"] == "series"}


@pytest.mark.subprocess
def test_a_full_disk_mid_stream_loses_nothing_and_reads_go_on(tmp_path: Path,
                                                             small_fs: Path) -> None:
    cfg = tmp_path / "tsnet.ini"  # (the config and the log are not on the small disk)
    cfg.write_text(textwrap.dedent(CONFIG.format(data=small_fs)))
    srv = TsnetProcess(cfg)
    ballast: Path | None = None
    clients: list[Any] = []
    try:
        ports = srv.wait_bound({"opentsdb", "http"})
        stream = TelnetStream(ports["opentsdb"], "tel")
        putter = HttpPutter(ports["http"])
        clients = [stream, putter]
        for c in clients:
            c.start()
        wait_until(lambda: len(putter.by_status(204)) >= 20 and stream.sent >= 2000)

        ballast = fill(small_fs)  # mid-stream
        wait_until(lambda: srv.metric("tsnet_storage_failing") == 1, what="a failing storage")
        wait_until(lambda: len(putter.by_status(503)) >= 2, what="503 answers")
        # an acked write the storage cannot take is a retryable 503, never a 400
        for _, status, headers, body in putter.answers:
            assert status in (204, 503), (status, body)
            if status == 503:
                assert int(headers["Retry-After"]) >= 1
                error = json.loads(body)["error"]
                assert error["code"] == 503 and "stays queued" in error["details"]
        # reads and exports write nothing: they work on the full disk
        acked = {t for t, *_ in putter.by_status(204)}
        status, answer = query(ports["http"], "http")
        assert status == 200, answer
        assert {int(t) for t in answer[0]["dps"]} >= acked
        status, answer = query(ports["http"], "tel")
        assert status == 200 and answer[0]["dps"], answer
        exported = stored(cfg)
        assert {(m, t) for m, _, t in exported if m == "http"} >= {("http", t - T0)
                                                                 for t in acked}
        # 1000 telnet puts sent while it is full, on a new connection
        with socket.create_connection(("127.0.0.1", ports["opentsdb"]), timeout=30) as s:
            s.sendall("".join(f"put full {T0 + i} {i} host=x\n" for i in range(1000)).encode())
        assert srv.metric("tsnet_storage_failing") == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/metrics") as r:
            text = r.read().decode()
        assert re.search(r'^tsnet_storage_errors_total\{kind="unavailable",storage="default"\} '
                         r'[1-9]', text, re.M), text
        assert srv.metric("tsnet_storage_retry_delay_seconds") > 0

        ballast.unlink()
        ballast = None
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(60)
            assert not c.is_alive()
        wait_until(lambda: srv.metric("tsnet_storage_failing") == 0
                   and srv.metric("tsnet_write_queue_items") == 0, what="the queue to drain")
        assert srv.metric("tsnet_storage_retry_delay_seconds") == 0

        exported = stored(cfg)
        want = {("tel", f"h{i % 10}", i): i for i in range(stream.sent)}
        want.update({("full", "x", i): i for i in range(1000)})
        for t, *_ in putter.answers:  # 204 and 503 alike: a 503 says "stays queued"
            want.update({("http", f"h{j}", t - T0): t - T0 for j in range(10)})
        assert exported == want
        assert srv.metric("tsnet_points_written_total") == len(want)  # each once
    finally:
        for c in clients:
            c.stop.set()
        if ballast is not None:
            ballast.unlink()
        srv.stop()
    log = srv.text()
    assert "Traceback" not in log and "#critical" not in log
    # one line when it starts failing and one when it writes again, not one per try
    down = log.count("is failing (OperationalError: database or disk is full)")
    assert down >= 1 and log.count("writes again after") == down
    assert len(re.findall(r"#(warn|error)\]", log)) <= 3 * down + 4, log
