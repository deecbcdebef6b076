"""bench/soak.py's verdicts on known sample series: the per-second committed rate,
the longest stall, boundedness and the write amplification.  (The real soak, a
server under a paced load, is in tests/test_bench_run.py.)"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


soak = load()


def polls(advances: dict[float, float], until: float, every: float = 0.05,
          t0: float = 1000.0) -> list[tuple[float, float]]:
    """Polls every ``every`` s from t0 to t0 + until; the count steps to
    ``advances[t]`` at offset t."""
    out, count, steps = [], 0.0, sorted(advances.items())
    for i in range(round(until / every) + 1):
        t = round(i * every, 6)
        while steps and steps[0][0] <= t:
            count = steps.pop(0)[1]
        out.append((t0 + t, count))
    return out


def test_a_steady_commit_has_no_stall_and_a_flat_rate() -> None:
    # 100 points committed every 0.1 s for 5 s: 1000 a second
    samples = polls({round(0.1 * k, 1): 100.0 * k for k in range(1, 51)}, 5.0)
    st = soak.stalls(samples, 1000.0)
    assert st["longest_stall_s"] == pytest.approx(0.1, abs=0.011)
    assert st["stalls_over_bar"] == 0
    assert st["commits_seen"] == 50
    assert st["poll_gap_max_s"] == pytest.approx(0.05, abs=1e-6)
    secs = soak.per_second(samples, 1000.0, 1005.0)
    assert secs == [1000] * 5


def test_a_pause_is_the_longest_stall_where_it_happened() -> None:
    steps = {round(0.1 * k, 1): 100.0 * k for k in range(1, 21)}  # to 2.0 s
    steps.update({round(3.1 + 0.1 * k, 1): 2000.0 + 100 * k for k in range(1, 11)})
    samples = polls(steps, 4.5)
    st = soak.stalls(samples, 1000.0)
    assert st["longest_stall_s"] == pytest.approx(1.2, abs=0.011)
    assert st["longest_stall_at_s"] == pytest.approx(2.0, abs=0.011)
    assert st["stalls_over_bar"] == 1
    ((gap, at),) = st["stalls_over_bar_first"]
    assert gap == pytest.approx(1.2, abs=0.011) and at == pytest.approx(2.0, abs=0.011)
    secs = soak.per_second(samples, 1000.0, 1004.0)
    assert secs[2] == 0 and secs[0] == secs[1] == 1000


def test_the_wait_for_the_first_commit_counts() -> None:
    samples = polls({0.6: 500.0, 0.7: 600.0}, 1.0)
    st = soak.stalls(samples, 1000.0)
    assert st["longest_stall_s"] == pytest.approx(0.6, abs=0.011)
    assert st["longest_stall_at_s"] == 0.0


def test_bounded_compares_the_last_third_with_the_middle() -> None:
    ts = [5.0 * i for i in range(12)]
    saw = [0, 900, 1800, 100, 1000, 1900, 200, 1100, 2000, 300, 1200, 1950]
    b = soak.bounded(ts, saw)
    assert b["bounded"] is True
    assert b["max_middle_third"] == 1900 and b["max_last_third"] == 2000
    growing = [1000 * i for i in range(12)]
    g = soak.bounded(ts, growing)
    assert g["bounded"] is False
    assert g["slope_per_min"] == pytest.approx(12000.0)
    assert soak.bounded(ts[:5], growing[:5])["bounded"] is None
    assert soak.bounded(ts, [0] * 12)["bounded"] is True


def test_amplification_per_wire_byte_and_per_point() -> None:
    a = soak.amplification(3_200_000, 1_000_000, 100_000)
    assert a["point_bytes"] == 1_600_000
    assert a["per_point_byte"] == 2.0 and a["per_wire_byte"] == 3.2
    assert soak.amplification(None, 10, 10)["per_point_byte"] is None


def test_the_report_holds_its_verdicts(tmp_path: Path) -> None:
    """soak_report over a real SQLite file's looks (a pending table and chunks)."""
    path = tmp_path / "default.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE pending (id INTEGER PRIMARY KEY, points INTEGER, batch TEXT)")
    db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, count INTEGER)")
    sampler = soak.DbSampler(str(path), 1.0, 1000.0)
    looks = []
    for i in range(12):
        db.execute("INSERT INTO pending (points, batch) VALUES (?, '')", (100,))
        db.execute("INSERT INTO chunks (count) VALUES (?)", (4096 if i % 2 else 10,))
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        look = sampler.look(conn)
        conn.close()
        look["t"] = 0.5 + i * 0.5
        looks.append(look)
    assert looks[-1]["pending"] == 1200 and looks[-1]["chunks"] == 12
    assert looks[-1]["small_chunks"] == 6
    assert looks[-1]["db_bytes"] == os.stat(path).st_size
    samples = polls({round(0.1 * k, 1): 100.0 * k for k in range(1, 61)}, 6.5)
    rep = soak.soak_report(samples, looks, 1000.0, 1006.0, 1006.0, 1000.0, 0.1)
    assert rep["per_second_committed"] == [1000] * 6
    assert rep["committed_per_sec_median"] == 1000
    assert rep["pending"]["bounded"] is False  # it grows by 100 a look
    assert rep["small_chunks"]["bounded"] is False
    assert rep["bar"]["stall"] is True and rep["bar"]["pass"] is False
    assert rep["commit_after_last_byte_s"] == 0.0
    db.close()
