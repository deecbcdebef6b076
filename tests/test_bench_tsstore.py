"""bench/tsstore.py, the ts-store benchmark, run end to end at a tiny size against
real ``twistd -n tsnet`` servers (WebSocket and Unix-socket streams, the latency
round trips, the export check), and its load generator's own pieces: the RFC 6455
framing, the percentiles, the failure counts, the loopback-only rule."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
RECORDS = 2000
COUNT = 150
WARMUP = 20

#: what the summary and the bench's users read from a run line
STREAM_FIELDS = ("records_per_sec", "seconds", "acked", "failed", "server_cpu_s",
                 "server_cpu_us_per_record", "peak_rss_mib", "other_cpu_s", "loadgen",
                 "export_records", "records_written", "stop_rc", "wall_s")
LATENCY_FIELDS = ("median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms",
                  "server_cpu_us_per_round_trip", "loadgen_cpu_us_per_round_trip")


def load_module() -> Any:
    spec = importlib.util.spec_from_file_location("tsstore_load", BENCH / "tsstore_load.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lg = load_module()


@pytest.fixture(scope="module")
def bench() -> tuple[int, list[dict], str]:
    p = subprocess.run(
        [sys.executable, str(BENCH / "tsstore.py"), "--mode", "all", "--runs", "1",
         "--records", str(RECORDS), "--count", str(COUNT), "--warmup", str(WARMUP),
         "--timeout", "60", "--stall-timeout", "20", "--export-timeout", "60"],
        capture_output=True, text=True, timeout=120)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    return p.returncode, lines, p.stderr


@pytest.mark.subprocess
def test_every_mode_runs_and_checks_out(bench: tuple[int, list[dict], str]) -> None:
    rc, lines, err = bench
    assert rc == 0, (lines, err[-3000:])
    runs = [ln for ln in lines if not ln.get("summary")]
    assert [r["mode"] for r in runs] == ["ws", "unix", "latency"]
    assert all(r["ok"] for r in runs), runs
    for r in runs[:2]:
        assert set(STREAM_FIELDS) <= set(r), r
        assert r["acked"] == r["export_records"] == r["records_written"] == RECORDS
        assert r["failed"] == 0 and r["loadgen"]["errors"] == []
        assert r["loadgen"]["sent"] == r["loadgen"]["replies"] == RECORDS
        assert 1 <= r["loadgen"]["max_inflight_seen"] <= 100
        assert r["records_per_sec"] > 0 and r["seconds"] > 0
        assert r["stop_rc"] in (0, -15) and r["server_log_errors"] == 0
    lat = runs[2]
    per = COUNT + WARMUP
    assert lat["export_records"] == lat["records_written"] == 4 * per
    for name in ("unix", "rest", "rest_raw", "ws"):
        assert set(LATENCY_FIELDS) <= set(lat[name]), lat
        assert 0 < lat[name]["min_ms"] <= lat[name]["median_ms"] <= lat[name]["p99_ms"] \
            <= lat[name]["max_ms"]
    assert lat["rest_over_unix"] == round(lat["rest_median_ms"] / lat["unix_median_ms"], 2)


@pytest.mark.subprocess
def test_summary(bench: tuple[int, list[dict], str]) -> None:
    _rc, lines, err = bench
    summ = lines[-1]
    assert summ["summary"] is True and summ["ok"] is True and summ["runs_ok"] == 3
    assert summ["modes"] == ["ws", "unix", "latency"]
    for mode in ("ws", "unix"):
        assert summ[mode]["median_records_per_sec"] > 0
        bar = summ["bars"][f"{mode}_records_per_sec"]
        assert bar["min"] == 50_000 and bar["applies"] is False and bar["pass"] is None
    assert summ["latency"]["unix"]["median_median_ms"] > 0
    lat = lines[2]
    assert summ["latency"]["run_ratios"] == [lat["rest_over_unix"]]
    assert summ["latency"]["rest_over_unix"] == lat["rest_over_unix"] > 0
    # too few round trips to hold them to the latency bars either
    assert summ["bars"]["unix_median_ms"]["applies"] is False
    assert summ["bars"]["rest_over_unix"]["applies"] is False
    assert summ["bars_missed"] == []
    assert "bars:" in err


def test_ws_framing() -> None:
    # RFC 6455 §5.7: a masked "Hello" with the key 37 fa 21 3d
    key = bytes.fromhex("37fa213d")
    assert lg.ws_frame(b"Hello", mask=key) == bytes.fromhex("818537fa213d7f9f4d5158")
    for n in (0, 5, 125, 126, 300, 65535, 65536, 70000):
        payload = os.urandom(n)
        frame = lg.ws_frame(payload)
        fin, op, start, end, mask = lg.ws_parse(frame, 0)
        assert (fin, op, end) == (0x80, 0x1, len(frame))
        assert lg.ws_payload(frame, start, end, mask) == payload
        assert lg.ws_parse(frame[:-1], 0) is None or n == 0
    # an unmasked server frame after another, and an incomplete one
    two = b"\x81\x03abc\x81\x7e\x00\x80" + b"x" * 128
    fin, op, start, end, mask = lg.ws_parse(two, 0)
    assert two[start:end] == b"abc" and mask == -1
    assert lg.ws_parse(two, end)[3] == len(two)
    assert lg.ws_parse(two[:-1], end) is None


def test_percentiles_are_nearest_rank() -> None:
    ms = [float(i) for i in range(1, 101)]
    assert lg._percentile(ms, 50) == 50 and lg._percentile(ms, 99) == 99
    assert lg._percentile([3.0], 99) == 3.0
    assert lg._percentile([1.0, 2.0], 50) == 1.0


def test_records_differ_and_parse() -> None:
    seen = {json.loads(lg.unix_line(i))["i"] for i in range(1000)}
    assert seen == set(range(1000))
    assert json.loads(lg.ws_message(7)) == {"data": {"temp": 22.7, "i": 7}}
    assert len(lg.record_data(10**7)) <= 40  # bench/tsstore.py sizes stores with this


def fake_unix_server(path: str, refuse: set[int]) -> threading.Thread:
    """A stand-in ts-store socket: ``OK``, then ``OK <ts>`` a line, ``ERROR`` for ``refuse``."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(20)

    def serve() -> None:
        with srv:
            conns = []
            try:
                while True:
                    c = srv.accept()[0]
                    conns.append(c)
                    threading.Thread(target=handle, args=(c,), daemon=True).start()
            except OSError:
                pass

    def handle(c: socket.socket) -> None:
        with c:
            c.settimeout(20)
            buf = b""
            authed = False
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                out = b""
                for ln in lines:
                    if not authed:
                        authed = True
                        out += b"OK\n"
                    elif json.loads(ln)["i"] in refuse:
                        out += b"ERROR store failed: no\n"
                    else:
                        out += b"OK 1\n"
                c.sendall(out)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def run_load(*args: str) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, str(BENCH / "tsstore_load.py"), *args],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, json.loads(p.stdout.splitlines()[-1])


def test_error_replies_fail_the_load(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    fake_unix_server(path, refuse={5, 77})
    rc, out = run_load("stream", "--target", "unix", "--socket", path, "--key", "k",
                       "--records", "500", "--conns", "3", "--inflight", "10")
    assert rc == 1 and out["ok"] is False
    assert out["replies"] == 500 and out["acked"] == 498 and out["failed"] == 2
    assert out["errors"] == ["ERROR store failed: no"] * 2
    assert out["max_inflight_seen"] == 10
    rc, out = run_load("pingpong", "--target", "unix", "--socket", path, "--key", "k",
                       "--count", "100", "--warmup", "10")
    assert rc == 1 and out["failed"] == 2 and out["acked"] == 108
    rc, out = run_load("pingpong", "--target", "unix", "--socket", path, "--key", "k",
                       "--count", "50", "--warmup", "0", "--offset", "100")
    assert rc == 0 and out["ok"] is True and out["acked"] == 50
    assert 0 < out["median_ms"] <= out["p99_ms"]


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "example.com", "::ffff:127.0.0.1"])
def test_refuses_non_loopback(host: str) -> None:
    p = subprocess.run([sys.executable, str(BENCH / "tsstore_load.py"), "stream", "--target",
                        "ws", "--host", host, "--port", "9", "--key", "k"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 64 and "refusing --host" in p.stderr
