#!/usr/bin/env python3
"""Time OpenTSDB ``/api/query`` over one metric with many stored points.

Starts ``twistd -n tsnet`` on a temporary config (as ``bench/run.py`` does),
loads ``--points`` telnet points of one metric (``--series`` series, one point
per second each) with the bench's load generator (bench/loadgen.py), waits until all are
committed, then times ``GET /api/query?...&m=AGG:DOWNSAMPLE:bench.m0`` over the
whole span ``--repeats`` times and prints one JSON line: the first (cold) time,
the median of the others, the data points returned, and the server's CPU for
the queries.  Only processes it started are signalled, by PID.

    python bench/query.py                     # 1,000,000 points, avg:1m-avg
    python bench/query.py --downsample 1h-max --aggregator sum
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import (  # bench/ is not a package: run.py is found on sys.path
    DEFAULT_LOADGEN,
    LOOPBACK,
    BenchError,
    Server,
    http,
    metric_sum,
    proc_cpu,
    write_config,
)

TS_BASE = 1_700_000_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--series", type=int, default=100, help="series of the one metric")
    p.add_argument("--aggregator", default="avg")
    p.add_argument("--downsample", default="1m-avg")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loadgen", default=DEFAULT_LOADGEN)
    p.add_argument("--timeout", type=float, default=300.0, help="s to load and commit")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="tsnet-query-")
    server = Server(workdir, write_config(workdir, "opentsdb-http"))
    try:
        server.start(30.0)
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
        span = a.points // a.series
        url = (f"{base}/api/query?start={TS_BASE}&end={TS_BASE + span}"
               f"&m={a.aggregator}:{a.downsample}:bench.m0")
        cpu0 = proc_cpu(server.pid)
        times, dps = [], 0
        for _ in range(a.repeats):
            t = time.perf_counter()
            status, body = http(url, timeout=120)
            times.append(time.perf_counter() - t)
            if status != 200:
                raise BenchError(f"query answered {status}: {body[:300]!r}")
            dps = sum(len(r["dps"]) for r in json.loads(body))
        print(json.dumps({
            "points": a.points, "series": a.series, "query": url.split("?", 1)[1],
            "first_s": round(times[0], 3),
            "median_s": round(statistics.median(times[1:] or times), 3),
            "dps_returned": dps,
            "server_cpu_s": round(proc_cpu(server.pid) - cpu0, 2),
        }))
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
