#!/usr/bin/env python3
"""Time OpenTSDB ``/api/query`` over one metric with many stored points.

Starts ``twistd -n tsnet`` on a temporary config (as ``bench/run.py`` does),
loads ``--points`` telnet points of one metric (``--series`` series, one point
per second each) with the bench's load generator (bench/loadgen.py), waits until all are
committed, then times ``GET /api/query?...&m=AGG:DOWNSAMPLE:bench.m0`` over the
whole span ``--repeats`` times and prints one JSON line: the first (cold) time,
the median of the others, the data points returned, and the server's CPU for
the queries.  Only processes it started are signalled, by PID.

``--filter-select K`` times the reads of a few series among many instead
(high cardinality): by default 100,000 series of the metric (tags
``series=s<i>`` and ``k1``) and 2,000,000 points, then ``/api/query`` with a
``series=...|...`` filter that selects K of them (grouped by it, so the reply
must hold K series), ``/api/suggest?type=tagv&q=s99`` and
``/api/suggest?type=metrics&q=bench``: each cold once, then ``--repeats``
times, and the medians printed.  ``--export`` then stops the server and
checks that ``tsnet export`` gives every point once and every series; the
server's peak RSS is given after the load and after the reads.

    python bench/query.py                     # 1,000,000 points, avg:1m-avg
    python bench/query.py --downsample 1h-max --aggregator sum
    python bench/query.py --filter-select 100 # 100 of 100,000 series
    python bench/query.py --filter-select 100 --series 1000000 --export --timeout 1800
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import (  # bench/ is not a package: run.py is found on sys.path
    DEFAULT_LOADGEN,
    LOOPBACK,
    BenchError,
    Server,
    count_export,
    http,
    metric_sum,
    mib,
    proc_cpu,
    proc_status,
    tsnet_cmd,
    write_config,
)

TS_BASE = 1_700_000_000
#: what --filter-select loads unless --series / --points say otherwise
WIDE_SERIES = 100_000
WIDE_POINTS = 2_000_000


def load(server: Server, a: argparse.Namespace) -> str:
    """Send the points, wait until all are committed; the HTTP base URL."""
    lg = subprocess.run(
        [sys.executable, a.loadgen, "--host", LOOPBACK, "--port",
         str(server.ports["opentsdb"]), "--format", "opentsdb-telnet",
         "--points", str(a.points), "--series", str(a.series), "--metrics", "1",
         "--ts-base", str(TS_BASE), "--duration-limit", str(a.timeout)],
        capture_output=True, timeout=a.timeout + 60)
    if lg.returncode != 0:
        raise BenchError(f"loadgen failed: {lg.stderr.decode()[-500:]}")
    base = f"http://{LOOPBACK}:{server.ports['http']}"
    deadline = time.time() + a.timeout
    while metric_sum(http(base + "/metrics")[1].decode(),
                     "tsnet_points_written_total") < a.points:
        if time.time() > deadline:
            raise BenchError("points not committed in time")
        time.sleep(0.1)
    return base


def timed(url: str, repeats: int, check: Callable[[list], None]) -> tuple[float, list[float]]:
    """(the first time, the times of ``repeats`` more) of GET ``url``, each
    reply checked."""
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        status, body = http(url, timeout=120)
        times.append(time.perf_counter() - t)
        if status != 200:
            raise BenchError(f"{url} answered {status}: {body[:300]!r}")
        check(json.loads(body))
    return times[0], times[1:]


def whole_metric(a: argparse.Namespace, base: str) -> dict:
    span = a.points // a.series
    url = (f"{base}/api/query?start={TS_BASE}&end={TS_BASE + span}"
           f"&m={a.aggregator}:{a.downsample}:bench.m0")
    dps = []
    first, rest = timed(url, a.repeats - 1, lambda r: dps.append(sum(len(x["dps"]) for x in r)))
    return {"points": a.points, "series": a.series, "query": url.split("?", 1)[1],
            "first_s": round(first, 3), "median_s": round(statistics.median(rest or [first]), 3),
            "dps_returned": dps[-1]}


def filter_select(a: argparse.Namespace, base: str) -> dict:
    k = a.filter_select
    if not 0 < k <= a.series:
        raise BenchError(f"--filter-select {k}: must be 1 to --series ({a.series})")
    span = a.points // a.series
    values = "|".join(f"s{i * (a.series // k)}" for i in range(k))
    query = f"sum:bench.m0{{series={values}}}"

    def k_series(reply: list) -> None:
        if len(reply) != k or not all(r["dps"] for r in reply):
            raise BenchError(f"the filter selected {len(reply)} series with data, not {k}")

    def names(want: str) -> Callable[[list], None]:
        def check(reply: list) -> None:
            if want not in reply:
                raise BenchError(f"suggest did not list {want!r}: {reply[:5]}")
        return check

    reads = {
        "query": (f"{base}/api/query?start={TS_BASE}&end={TS_BASE + span}&m={quote(query)}",
                  k_series),
        "suggest_tagv": (f"{base}/api/suggest?type=tagv&q=s99&max=25", names("s99")),
        "suggest_metrics": (f"{base}/api/suggest?type=metrics&q=bench&max=25",
                            names("bench.m0")),
    }
    out: dict = {"points": a.points, "series": a.series, "selected": k,
                 "repeats": a.repeats}
    for name, (url, check) in reads.items():
        first, rest = timed(url, a.repeats, check)
        out[f"{name}_first_ms"] = round(first * 1000, 1)
        out[f"{name}_median_ms"] = round(statistics.median(rest) * 1000, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=None,
                   help=f"points to load (default 1,000,000; {WIDE_POINTS:,} with "
                        "--filter-select)")
    p.add_argument("--series", type=int, default=None,
                   help=f"series of the one metric (default 100; {WIDE_SERIES:,} with "
                        "--filter-select)")
    p.add_argument("--aggregator", default="avg")
    p.add_argument("--downsample", default="1m-avg")
    p.add_argument("--filter-select", type=int, default=None, metavar="K",
                   help="time a filter that selects K of the series, and /api/suggest")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loadgen", default=DEFAULT_LOADGEN)
    p.add_argument("--timeout", type=float, default=300.0, help="s to load and commit")
    p.add_argument("--export", action="store_true",
                   help="after the reads, stop the server and check `tsnet export`")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)
    wide = a.filter_select is not None
    if a.points is None:
        a.points = WIDE_POINTS if wide else 1_000_000
    if a.series is None:
        a.series = WIDE_SERIES if wide else 100

    workdir = tempfile.mkdtemp(prefix="tsnet-query-")
    cfg = write_config(workdir, "opentsdb-http")
    server = Server(workdir, cfg)
    try:
        server.start(30.0)
        t0 = time.perf_counter()
        base = load(server, a)
        load_s = time.perf_counter() - t0
        rss_load = mib(proc_status(server.pid, "VmHWM"))
        cpu0 = proc_cpu(server.pid)
        result = filter_select(a, base) if wide else whole_metric(a, base)
        result["server_cpu_s"] = round(proc_cpu(server.pid) - cpu0, 2)
        result["load_points_per_sec"] = round(a.points / load_s)
        result["peak_rss_mib_load"] = rss_load
        result["peak_rss_mib"] = mib(proc_status(server.pid, "VmHWM"))
        if a.export:
            server.stop(120.0)
            got = count_export([*tsnet_cmd(), "--config", cfg, "export"], workdir, a.timeout)
            result.update(got)
            if (got["export_series_lines"], got["export_distinct_series"]) != (
                    a.points, a.series):
                raise BenchError(f"export gave {got['export_series_lines']} points of "
                                 f"{got['export_distinct_series']} series, not {a.points} "
                                 f"of {a.series}")
        print(json.dumps(result))
        return 0
    except BenchError as e:
        print(f"query bench failed: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            server.stop(30.0)
        except BenchError:
            pass
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
