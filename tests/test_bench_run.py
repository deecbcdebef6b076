"""bench/run.py run for real on tiny loads: the series sweep (each count gets its
runs and its summary, and the table compares them against the first), the write
amplification every run reports, and a short soak (--soak) with a pause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "bench" / "run.py"

pytestmark = pytest.mark.subprocess


def test_a_series_sweep_runs_every_count_and_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, str(RUN), "--points", "3000", "--series", "10,300", "--runs", "2",
         "--export-runs", "0"],
        capture_output=True, text=True, timeout=240, check=True).stdout
    objects = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    runs = [o for o in objects if "run" in o]
    assert sorted((r["series"], r["run"]) for r in runs) == [(10, 1), (10, 2), (300, 1),
                                                            (300, 2)]
    assert [r["series"] for r in runs] == [10, 300, 10, 300]  # interleaved
    assert all(r["ok"] and r["points_written"] == 3000 for r in runs)
    for r in runs:  # every run reports what it wrote to storage
        amp = r["write_amplification"]
        assert amp["point_bytes"] == 16 * 3000 and amp["wire_bytes"] == r["loadgen"]["bytes"]
        assert amp["bytes_written"] == r["io"]["write_bytes"] > 0
        assert amp["per_point_byte"] > 0 and amp["per_wire_byte"] > 0
    assert {r["export_distinct_series"] for r in runs if r["series"] == 300} == {300}
    summaries = [o for o in objects if o.get("summary")]
    assert [(s["series"], s["runs_ok"]) for s in summaries] == [(10, 2), (300, 2)]
    [sweep] = [o for o in objects if o.get("sweep")]
    rows = sweep["rows"]
    assert [r["series"] for r in rows] == [10, 300]
    assert rows[0]["rate_vs_first"] == 1.0
    assert rows[1]["points_per_sec"] == summaries[1]["median_points_per_sec"]
    assert rows[1]["rate_vs_first"] == round(
        summaries[1]["median_points_per_sec"] / summaries[0]["median_points_per_sec"], 3)
    table = out[out.index("    series"):].splitlines()
    assert table[0].split() == ["series", "points/s", "CPU", "us/point", "peak", "RSS", "MiB",
                                "rate", "vs", "first"]
    assert [line.split()[0] for line in table[1:3]] == ["10", "300"]


@pytest.mark.parametrize("bad", ["10,x", "10,10", ""])
def test_bad_series_lists_are_refused(bad: str) -> None:
    r = subprocess.run([sys.executable, str(RUN), "--series", bad], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "--series" in r.stderr


def children(pid: int) -> dict[int, bytes]:
    """The live children of ``pid`` (from /proc: PID -> command line)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = f.read()
        except (OSError, ValueError, IndexError):
            pass
    return out


def signal_if_there(pid: int, sig: int) -> None:
    """Signal ``pid`` unless it is gone (then the bench's own report says why)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def test_a_soak_reports_a_pause_of_the_server_as_a_stall() -> None:
    """A short paced soak during which the test freezes the server (SIGSTOP) for
    1.5 s: every point is still committed and exported, the stall is found where
    it happened and fails the bar (``--strict``: exit 3), and the report has its
    per-second rate, the SQLite looks and the write amplification."""
    rate, seconds = 2000, 7
    bench = subprocess.Popen(
        [sys.executable, str(RUN), "--soak", str(seconds), "--rate", str(rate),
         "--series", "50", "--conns", "2", "--sample-interval", "0.5", "--strict"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and bench.poll() is None:
            kids = children(bench.pid)  # the server first, then loadgen
            server = next((p for p, cmd in kids.items() if b"twistd" in cmd), server)
            if server and any(b"loadgen.py" in cmd for cmd in kids.values()):
                break
            time.sleep(0.02)
        if server is not None:
            time.sleep(2.5)
            signal_if_there(server, signal.SIGSTOP)  # the bench's child, by its PID
            time.sleep(1.5)
            signal_if_there(server, signal.SIGCONT)
        out, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            if server:
                signal_if_there(server, signal.SIGCONT)
            bench.kill()
            bench.wait(30)
    assert bench.returncode == 3, err[-3000:]  # ran fine, missed the soak's bar
    objects = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [rec] = [o for o in objects if "run" in o]
    [summ] = [o for o in objects if o.get("summary")]
    n = rate * seconds
    assert rec["ok"], rec.get("error")
    assert rec["points"] == rec["points_written"] == rec["loadgen"]["points_sent"] == n
    assert rec["export_series_lines"] == n and rec["export_distinct_series"] == 50
    lg = rec["loadgen"]
    assert lg["rate_requested"] == rate
    assert 0.85 * rate <= lg["achieved_rate"] <= 1.05 * rate
    assert "--rate 2000.0 --duration 7.0" in rec["loadgen_cmd"]

    s = rec["soak"]
    assert s["flush_interval"] == 0.1
    assert 1.4 <= s["longest_stall_s"] <= 3.5
    assert 1.5 <= s["longest_stall_at_s"] <= 4.0  # the pause began about 2.6 s in
    assert s["stalls_over_bar"] >= 1
    assert s["poll_gap_max_s"] >= 1.4  # /metrics did not answer while it was stopped
    assert s["bar"]["stall"] is False and s["bar"]["pass"] is False
    secs = s["per_second_committed"]
    assert len(secs) in (6, 7) and sum(secs) <= n
    assert min(secs) < 0.6 * rate  # a second of the pause
    assert s["committed_per_sec_max"] > rate  # and the catch-up after it
    assert s["commits_seen"] > 20
    looks = [x for x in s["db_samples"] if "label" not in x]
    assert len(looks) >= 10 and all(isinstance(x.get("pending"), int) for x in looks)
    assert {x.get("label") for x in s["db_samples"]} >= {"committed", "stopped"}
    assert max(x["pending"] + x["chunks"] for x in looks) > 0
    assert isinstance(s["pending"]["bounded"], bool)
    assert isinstance(s["small_chunks"]["bounded"], bool)

    amp = rec["write_amplification"]
    assert amp["point_bytes"] == 16 * n and amp["wire_bytes"] == lg["bytes"]
    assert rec["io"]["write_bytes"] >= rec["io"]["write_bytes_load"] > 0
    assert amp["bytes_written"] == rec["io"]["write_bytes"]
    assert amp["per_point_byte"] > 0 and amp["per_wire_byte"] > 0
    assert summ["soak"]["pass"] is False
    assert summ["soak"]["max_longest_stall_s"] == s["longest_stall_s"]
    assert "soak: longest stall" in err and "write amplification" in err


@pytest.mark.parametrize("args,why", [
    (["--soak", "5"], "--soak and --rate go together"),
    (["--rate", "100"], "--soak and --rate go together"),
    (["--soak", "5", "--rate", "100", "--points", "10"], "drop --points"),
    (["--soak", "5", "--rate", "100", "--storage", "redis"], "needs --storage sqlite"),
    (["--soak", "0", "--rate", "100"], "must be > 0"),
])
def test_bad_soak_options_are_refused(args: list[str], why: str) -> None:
    r = subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert why in r.stderr
