"""bench/run.py's series sweep, run for real on a tiny load: each count gets
its runs and its summary, and the table compares them against the first."""

from __future__ import annotations

import json
import subprocess
import sys
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
