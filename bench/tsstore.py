#!/usr/bin/env python3
"""The ts-store benchmark (stdlib only): WebSocket and Unix-socket write
throughput, and the Unix socket's round trip against REST's.

For each run and mode: write a private config in a fresh temp dir (an ``http``
listener on 127.0.0.1 port 0 with ``apis = tsstore metrics``, a ``tsstore``
Unix socket in the temp dir, SQLite storage), start ``twistd -n tsnet`` on it,
create the store ``bench`` with ``POST /api/stores``, then run the bench's own
load generator (bench/tsstore_load.py):

- ``ws`` / ``unix``: ``--records`` N records over ``--conns`` connections, each
  keeping up to ``--inflight`` messages unanswered, one record a message;
  records/s from the first byte to the last ack;
- ``latency``: one client, send one record, wait for its ack, repeat
  (``--warmup`` untimed, then ``--count`` timed) over the Unix socket, over REST
  (http.client, keep-alive), over REST from a raw socket and over WebSocket, one
  after another on the otherwise idle server: median and p99 round trips.

Then stop the server with SIGTERM and check with ``tsnet export --solution
bench`` that the store holds exactly the records acked, each ``i`` once.

Prints one JSON line per run and mode and one summary line on stdout (progress
goes to stderr).  Exit status: 0 every run passed its checks (with
``--strict``: and every bar was met), 1 a run failed, 2 environment (the ts-store
inputs missing, the route not served), 3 a bar was missed with ``--strict``.
See bench/README.rst.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "tsstore_load.py")


def _load_run() -> object:
    """bench/run.py, the ingest benchmark, for its process probes and Server."""
    spec = importlib.util.spec_from_file_location("tsnet_bench_run", os.path.join(HERE, "run.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_run = _load_run()
BenchError = _run.BenchError
Server = _run.Server
PySpy = _run.PySpy
proc_cpu = _run.proc_cpu
proc_cpu_split = _run.proc_cpu_split
proc_status = _run.proc_status
machine_cpu = _run.machine_cpu
mib = _run.mib
tail = _run.tail
dir_mib = _run.dir_mib
http = _run.http
metric_sum = _run.metric_sum
tsnet_cmd = _run.tsnet_cmd
git_state = _run.git_state
BIN = _run.BIN
LOOPBACK = _run.LOOPBACK

MODES = ("ws", "unix", "latency")
FLUSH_INTERVAL = 0.5
STORE = "bench"
UNIX_BOUND = re.compile(r"listener (\S+) bound unix:(\S+)")
SOCK_LISTENER = "sock"
#: a record is at most this many bytes of data (tsstore_load.record_data)
RECORD_BYTES = 40
#: what the latency run measures, in order: (name, loadgen target)
LATENCY_TARGETS = (("unix", "unix"), ("rest", "rest"), ("rest_raw", "rest-raw"), ("ws", "ws"))

#: The bars (the issue): each streaming input, and the Unix socket's round trip.
BAR_RECORDS_PER_SEC = 50_000
BAR_UNIX_MEDIAN_MS = 1.0
BAR_REST_OVER_UNIX = 5.0
BAR_PARAMS = {"records": 200_000, "conns": 4, "inflight": 100}


def log(msg: str) -> None:
    print(f"[tsstore-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ config and store

def write_config(workdir: str, admin_key: str) -> tuple[str, str]:
    sock = os.path.join(workdir, "tsstore.sock")
    if len(sock.encode()) > 100:
        raise BenchError(f"the socket path {sock} is too long for AF_UNIX; set TMPDIR to a "
                         "shorter directory", 2)
    text = (
        "; written by bench/tsstore.py: loopback and a socket in this dir only\n"
        "[tsnet]\n"
        "data_dir = var\n"
        f"flush_interval = {FLUSH_INTERVAL}\n"
        "[storage:default]\n"
        "backend = sqlite\n"
        "[tsstore]\n"
        f"admin_key = {admin_key}\n"
        "[listener:http]\n"
        "protocol = http\n"
        "endpoint = tcp:0:interface=127.0.0.1\n"
        "apis = tsstore metrics\n"
        f"[listener:{SOCK_LISTENER}]\n"
        "protocol = tsstore\n"
        f"endpoint = unix:{sock}:mode=660\n"
    )
    path = os.path.join(workdir, "tsnet.ini")
    with open(path, "w") as f:
        f.write(text)
    return path, sock


def wait_socket(server: Server, timeout: float) -> str:
    """The path the tsstore listener logged as bound."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(server.logf, encoding="utf-8", errors="replace") as f:
            for m in UNIX_BOUND.finditer(f.read()):
                if m.group(1) == SOCK_LISTENER:
                    return m.group(2)
        if not server.alive():
            raise BenchError(f"server exited with status {server.returncode}; log tail:\n"
                             f"{tail(server.logf)}")
        time.sleep(0.05)
    raise BenchError(f"the tsstore listener did not log 'listener {SOCK_LISTENER} bound "
                     f"unix:...' within {timeout:.0f} s; log tail:\n{tail(server.logf)}")


def num_blocks(records: int) -> int:
    """Enough 4 KiB blocks that nothing is reclaimed during the run."""
    return records * (24 + RECORD_BYTES) // 4000 + 16


def create_store(port: int, admin_key: str, records: int) -> str:
    body = json.dumps({"name": STORE, "num_blocks": num_blocks(records),
                       "data_block_size": 4096}).encode()
    st, out = http(f"http://{LOOPBACK}:{port}/api/stores", data=body,
                   headers={"X-Admin-Key": admin_key, "Content-Type": "application/json"})
    if st == 404:
        raise BenchError(f"POST /api/stores answered 404: this tsnet does not serve "
                         f"ts-store's REST API ({out[:200]!r})", 2)
    if st != 201:
        raise BenchError(f"POST /api/stores answered {st}: {out[:300]!r}")
    return json.loads(out)["api_key"]


def preflight_ws(port: int, key: str) -> None:
    """GET the write route without an upgrade: 400 when it is served, 404 when not."""
    st, out = http(f"http://{LOOPBACK}:{port}/api/stores/{STORE}/ws/write?api_key={key}")
    if st == 404:
        raise BenchError("GET /api/stores/bench/ws/write answered 404: this tsnet does not "
                         f"serve ts-store's WebSocket write ({out[:200]!r})", 2)


def missing_modules() -> list[str]:
    """The ts-store inputs this interpreter's tsnet lacks (WebSocket, Unix socket)."""
    missing = []
    for mod in ("tsnet.protocols.tsstore.ws_write", "tsnet.protocols.tsstore.unix"):
        p = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True,
                           timeout=60, text=True)
        if p.returncode != 0:
            missing.append(f"{mod} ({(p.stderr.strip().splitlines() or ['?'])[-1]})")
    return missing


# ------------------------------------------------------------------ export check

NUM = re.compile(rb'"i":(\d+)')


def check_export(cfg: str, workdir: str, want: set[int], timeout: float) -> dict:
    """Stream ``tsnet export --solution bench``: every record line's ``i``."""
    t0 = time.time()
    errf = os.path.join(workdir, "export.err")
    with open(errf, "wb") as ef:
        p = subprocess.Popen([*tsnet_cmd(), "--config", cfg, "export", "--solution", STORE],
                             stdout=subprocess.PIPE, stderr=ef, stdin=subprocess.DEVNULL,
                             cwd=workdir)
    timed_out = threading.Event()

    def on_timeout() -> None:
        if p.poll() is None:
            timed_out.set()
            os.kill(p.pid, signal.SIGKILL)  # our own child, by PID

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    records = stores = other = 0
    seen: set[int] = set()
    repeats = 0
    try:
        assert p.stdout is not None
        for ln in p.stdout:
            if b'"kind":"record"' in ln:
                records += 1
                m = NUM.search(ln)
                if m is not None:
                    i = int(m.group(1))
                    repeats += i in seen
                    seen.add(i)
            elif b'"kind":"store"' in ln:
                stores += 1
            elif ln.strip():
                other += 1
        rc = p.wait(30)
    finally:
        timer.cancel()
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
    if timed_out.is_set():
        raise BenchError(f"tsnet export did not finish within {timeout:.0f} s")
    if rc != 0:
        raise BenchError(f"tsnet export exited {rc}: {tail(errf)}")
    out = {"export_records": records, "export_store_lines": stores,
           "export_other_lines": other, "export_seconds": round(time.time() - t0, 2)}
    if records != len(want) or seen != want or repeats:
        raise BenchError(
            f"STORAGE MISMATCH: tsnet export has {records} record lines (acked "
            f"{len(want)}), {len(seen)} distinct i, {repeats} repeated, "
            f"{len(want - seen)} acked but missing, {len(seen - want)} never sent")
    return out


# ------------------------------------------------------------------ the load generator

def pin_process(pid: int, cpu: int) -> None:
    """Run every thread of ``pid`` (started ones too) on ``cpu`` only."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:
            pass  # (a thread that just ended)


def run_loadgen(args: list[str], workdir: str, name: str, timeout: float,
                cpu: int | None = None) -> tuple[dict, int]:
    out = os.path.join(workdir, f"{name}.out")
    err = os.path.join(workdir, f"{name}.err")
    cmd = [sys.executable, LOADGEN, *args]
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    with open(out, "wb") as fo, open(err, "wb") as fe:
        lg = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                              preexec_fn=pin)
    try:
        lg.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(lg.pid, signal.SIGKILL)  # our own child, by PID
        lg.wait(10)
        raise BenchError(f"the load generator ({name}) did not exit within {timeout:.0f} s"
                         ) from None
    with open(out, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"the load generator ({name}) printed no JSON (exit "
                         f"{lg.returncode}): {tail(err)}")
    return json.loads(lines[-1]), lg.returncode


def loadgen_args(a: argparse.Namespace, target: str, port: int, sock: str, key: str) -> list:
    where = ["--socket", sock] if target == "unix" else ["--host", LOOPBACK, "--port", str(port)]
    return ["--target", target, *where, "--store", STORE, "--key", key,
            "--stall-timeout", str(a.stall_timeout)]


# ------------------------------------------------------------------ one run

def one_run(a: argparse.Namespace, mode: str, run: int) -> dict:
    rec: dict = {"run": run, "mode": mode, "ok": False}
    if mode == "latency":
        rec.update({"count": a.count, "warmup": a.warmup})
        total = len(LATENCY_TARGETS) * (a.count + a.warmup)
    else:
        rec.update({"records": a.records, "conns": a.conns, "inflight": a.inflight})
        total = a.records
    workdir = tempfile.mkdtemp(prefix="tsnet-tsb-")
    server: Server | None = None
    spy: PySpy | None = None
    t_start = time.time()
    try:
        admin = secrets.token_hex(16)  # 32 characters
        cfg, sock = write_config(workdir, admin)
        server = Server(workdir, cfg)
        server.start(a.startup_timeout, names=("http",))
        rec["socket"] = wait_socket(server, a.startup_timeout)
        pid = server.pid
        rec["startup_s"] = round(time.time() - t_start, 2)
        port = server.ports["http"]
        rec["ports"] = dict(server.ports)
        key = create_store(port, admin, total)
        rec["num_blocks"] = num_blocks(total)
        if mode in ("ws", "latency"):
            preflight_ws(port, key)
        rec["rss_before_mib"] = mib(proc_status(pid, "VmRSS"))
        if a.py_spy:
            out = numbered(a.py_spy, mode, run, a.runs)
            spy = PySpy(out, pid, a.py_spy_rate, workdir)
            rec["py_spy_output"] = out

        if mode == "latency":
            want = latency_phases(a, rec, pid, port, sock, key, workdir)
        else:
            want = stream_phase(a, mode, rec, pid, port, sock, key, workdir)
        if spy is not None:
            spy.stop()
        st, body = http(f"http://{LOOPBACK}:{port}/metrics")
        if st == 200:
            text = body.decode("utf-8", "replace")
            rec["records_written"] = int(metric_sum(text, "tsnet_items_written_total",
                                                    "tsstore"))

        t_stop = time.time()
        rec["stop_rc"] = server.stop(a.stop_timeout)
        rec["stop_s"] = round(time.time() - t_stop, 2)
        if rec["stop_rc"] not in (0, -signal.SIGTERM) or "tsnet stopped cleanly" not in \
                tail(server.logf, 40):
            raise BenchError(f"server did not stop cleanly (exit {rec['stop_rc']}); log "
                             f"tail:\n{tail(server.logf)}")
        rec["server_log_errors"] = log_errors(server.logf)
        rec["data_dir_mib"] = dir_mib(os.path.join(workdir, "var"))
        rec.update(check_export(cfg, workdir, want, a.export_timeout))
        rec["ok"] = True
    except BenchError as e:
        rec["error"] = str(e)
        rec["error_code"] = e.code
    except Exception as e:  # any other failure is a failed run, never a hang
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["error_code"] = 1
    finally:
        if spy is not None:
            spy.stop()
        if server is not None and server.alive():
            server.kill()
        if server is not None and not rec["ok"]:
            rec["server_log_tail"] = tail(server.logf, 12).splitlines()
        rec["wall_s"] = round(time.time() - t_start, 1)
        if a.keep or (a.keep_failed and not rec["ok"]):
            rec["kept_dir"] = workdir
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rec


def log_errors(path: str) -> int:
    """Lines of the server log at error level or worse, and tracebacks."""
    n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for ln in f:
            if "#error]" in ln or "#critical]" in ln or ln.startswith("Traceback"):
                n += 1
    return n


class Window:
    """Server CPU, machine CPU and this process's children's CPU over one phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = proc_cpu(pid)
        self.sys0 = proc_cpu_split(pid)[1]
        self.m0 = machine_cpu()
        self.ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    def close(self) -> dict:
        cpu = proc_cpu(self.pid) - self.cpu0
        sys_cpu = proc_cpu_split(self.pid)[1] - self.sys0
        m1 = machine_cpu()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reaped load generator
        lg = (ru1.ru_utime - self.ru0.ru_utime) + (ru1.ru_stime - self.ru0.ru_stime)
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        return {"server_cpu_s": round(cpu, 2), "server_sys_cpu_s": round(sys_cpu, 2),
                "loadgen_total_cpu_s": round(lg, 2),
                "machine_busy_pct": round(100.0 * busy / total, 1) if total > 0 else None,
                "other_cpu_s": round(busy - cpu - lg, 2)}


def stream_phase(a: argparse.Namespace, mode: str, rec: dict, pid: int, port: int,
                 sock: str, key: str, workdir: str) -> set[int]:
    args = ["stream", *loadgen_args(a, mode, port, sock, key), "--records", str(a.records),
            "--conns", str(a.conns), "--inflight", str(a.inflight),
            "--timeout", str(a.timeout)]
    rec["loadgen_cmd"] = " ".join(["bench/tsstore_load.py", *args])
    win = Window(pid)
    r, rc = run_loadgen(args, workdir, mode, a.timeout + 120)
    rec["peak_rss_mib"] = mib(proc_status(pid, "VmHWM"))
    rec["rss_end_mib"] = mib(proc_status(pid, "VmRSS"))
    rec["threads"] = proc_status(pid, "Threads")
    rec.update(win.close())
    rec["loadgen"] = {k: r.get(k) for k in (
        "sent", "replies", "acked", "failed", "errors", "seconds", "records_per_sec",
        "pregen_seconds", "setup_seconds", "loadgen_cpu_seconds", "bytes_sent",
        "bytes_received", "max_inflight_seen")}
    rec["loadgen"]["rc"] = rc
    if rc != 0 or not r.get("ok"):
        raise BenchError(f"the load generator failed (exit {rc}): {r.get('acked')} of "
                         f"{a.records} acked, {r.get('failed')} failed: {r.get('errors')}")
    rec["acked"] = r["acked"]
    rec["failed"] = r["failed"]
    rec["records_per_sec"] = r["records_per_sec"]
    rec["seconds"] = r["seconds"]
    rec["server_cpu_us_per_record"] = round(rec["server_cpu_s"] / a.records * 1e6, 2)
    return set(range(a.records))


def latency_phases(a: argparse.Namespace, rec: dict, pid: int, port: int, sock: str,
                   key: str, workdir: str) -> set[int]:
    offset = 0
    per = a.count + a.warmup
    rec["peak_rss_mib"] = 0.0
    rec["pinned_cpu"] = a.pin
    if a.pin is not None:
        pin_process(pid, a.pin)
    for name, target in LATENCY_TARGETS:
        args = ["pingpong", *loadgen_args(a, target, port, sock, key), "--count",
                str(a.count), "--warmup", str(a.warmup), "--offset", str(offset)]
        win = Window(pid)
        r, rc = run_loadgen(args, workdir, f"latency-{name}", a.timeout, a.pin)
        w = win.close()
        if rc != 0 or not r.get("ok"):
            raise BenchError(f"{name} round trips failed (exit {rc}): {r.get('acked')} of "
                             f"{per} acked: {r.get('errors')}")
        rec[name] = {k: r.get(k) for k in (
            "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms", "seconds",
            "round_trips_per_sec", "loadgen_cpu_seconds")}
        rec[name]["server_cpu_us_per_round_trip"] = round(w["server_cpu_s"] / per * 1e6, 1)
        rec[name]["loadgen_cpu_us_per_round_trip"] = round(
            r["loadgen_cpu_seconds"] / a.count * 1e6, 1)
        rec[name]["other_cpu_s"] = w["other_cpu_s"]
        offset += per
    rec["peak_rss_mib"] = mib(proc_status(pid, "VmHWM"))
    rec["unix_median_ms"] = rec["unix"]["median_ms"]
    rec["unix_p99_ms"] = rec["unix"]["p99_ms"]
    rec["rest_median_ms"] = rec["rest"]["median_ms"]
    rec["rest_p99_ms"] = rec["rest"]["p99_ms"]
    rec["rest_over_unix"] = round(rec["rest_median_ms"] / rec["unix_median_ms"], 2)
    rec["rest_raw_over_unix"] = round(rec["rest_raw"]["median_ms"] / rec["unix_median_ms"], 2)
    return set(range(offset))


def numbered(path: str, mode: str, run: int, runs: int) -> str:
    """``x.svg`` -> ``x.ws.svg`` (one run) or ``x.ws.run2.svg``."""
    root, ext = os.path.splitext(os.path.abspath(path))
    return f"{root}.{mode}{ext}" if runs == 1 else f"{root}.{mode}.run{run}{ext}"


# ------------------------------------------------------------------ summary

def _med(values: list[float], nd: int = 3) -> float | None:
    return round(statistics.median(values), nd) if values else None


def summarize(a: argparse.Namespace, modes: list[str], runs: list[dict], git: dict) -> dict:
    ok = [r for r in runs if r["ok"]]
    summ: dict = {"summary": True, "modes": modes, "records": a.records, "conns": a.conns,
                  "inflight": a.inflight, "count": a.count, "warmup": a.warmup,
                  "runs": a.runs, "runs_done": len(runs), "runs_ok": len(ok),
                  "ok": len(ok) == len(runs) == a.runs * len(modes), **git}
    bars: dict = {}
    applies_stream = all(getattr(a, k) == v for k, v in BAR_PARAMS.items()) and not a.py_spy
    for mode in ("ws", "unix"):
        if mode not in modes:
            continue
        rs = [r for r in ok if r["mode"] == mode]
        pps = [r["records_per_sec"] for r in rs]
        summ[mode] = {
            "median_records_per_sec": _med(pps, 1),
            "min_records_per_sec": min(pps, default=None),
            "max_records_per_sec": max(pps, default=None),
            "median_seconds": _med([r["seconds"] for r in rs]),
            "median_server_cpu_s": _med([r["server_cpu_s"] for r in rs], 2),
            "median_server_cpu_us_per_record": _med(
                [r["server_cpu_us_per_record"] for r in rs], 2),
            "max_peak_rss_mib": max((r["peak_rss_mib"] for r in rs), default=None),
            "median_other_cpu_s": _med([r["other_cpu_s"] for r in rs], 2),
            "runs_ok": len(rs),
        }
        met = bool(pps) and len(rs) == a.runs and \
            statistics.median(pps) >= BAR_RECORDS_PER_SEC
        bars[f"{mode}_records_per_sec"] = {"min": BAR_RECORDS_PER_SEC,
                                           "median": summ[mode]["median_records_per_sec"],
                                           "applies": applies_stream,
                                           "pass": met if applies_stream else None,
                                           "would_pass": met}
    if "latency" in modes:
        rs = [r for r in ok if r["mode"] == "latency"]
        lat: dict = {"runs_ok": len(rs)}
        for name, _target in LATENCY_TARGETS:
            lat[name] = {f"median_{k}": _med([r[name][k] for r in rs], 4)
                         for k in ("median_ms", "p90_ms", "p99_ms")}
            lat[name]["median_server_cpu_us_per_round_trip"] = _med(
                [r[name]["server_cpu_us_per_round_trip"] for r in rs], 1)
            lat[name]["median_loadgen_cpu_us_per_round_trip"] = _med(
                [r[name]["loadgen_cpu_us_per_round_trip"] for r in rs], 1)
        um, rm = lat["unix"]["median_median_ms"], lat["rest"]["median_median_ms"]
        rrm = lat["rest_raw"]["median_median_ms"]
        # the ratio is taken within each run (the same server, minutes apart at most),
        # then the median over runs; the ratio of the medians is there for reference
        lat["run_ratios"] = [r["rest_over_unix"] for r in rs]
        lat["rest_over_unix"] = _med(lat["run_ratios"], 2)
        lat["rest_raw_over_unix"] = _med([r["rest_raw_over_unix"] for r in rs], 2)
        lat["rest_over_unix_of_medians"] = round(rm / um, 2) if um and rm else None
        lat["rest_raw_over_unix_of_medians"] = round(rrm / um, 2) if um and rrm else None
        summ["latency"] = lat
        complete = len(rs) == a.runs
        applies = not a.py_spy and a.count >= 1000
        met_ms = complete and um is not None and um < BAR_UNIX_MEDIAN_MS
        met_ratio = complete and lat["rest_over_unix"] is not None and \
            lat["rest_over_unix"] >= BAR_REST_OVER_UNIX
        bars["unix_median_ms"] = {"below": BAR_UNIX_MEDIAN_MS, "median": um,
                                  "applies": applies, "pass": met_ms if applies else None,
                                  "would_pass": met_ms}
        bars["rest_over_unix"] = {"min": BAR_REST_OVER_UNIX, "ratio": lat["rest_over_unix"],
                                  "applies": applies, "pass": met_ratio if applies else None,
                                  "would_pass": met_ratio}
    summ["bars"] = bars
    summ["bars_missed"] = [n for n, b in bars.items() if b["applies"] and not b["pass"]]
    if not summ["ok"]:
        summ["errors"] = [f"{r['mode']} run {r['run']}: {r.get('error', '')[:300]}"
                          for r in runs if not r["ok"]]
    return summ


def verdict(summ: dict) -> str:
    parts = []
    for name, b in summ["bars"].items():
        state = "n/a" if not b["applies"] else ("PASS" if b["pass"] else "FAIL")
        if "below" in b:
            parts.append(f"{name} {b['median']} ms < {b['below']}: {state}")
        elif "ratio" in b:
            parts.append(f"{name} {b['ratio']} >= {b['min']}: {state}")
        else:
            parts.append(f"{name} {b['median']} >= {b['min']}: {state}")
    return "; ".join(parts)


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=(*MODES, "all"), default="all")
    p.add_argument("--records", type=int, default=200_000,
                   help="ws/unix: records a run (N)")
    p.add_argument("--conns", type=int, default=4, help="ws/unix: connections")
    p.add_argument("--inflight", type=int, default=100,
                   help="ws/unix: messages a connection keeps unanswered at most")
    p.add_argument("--count", type=int, default=2000, help="latency: timed round trips")
    p.add_argument("--pin", type=int, default=None, metavar="CPU",
                   help="latency: run the server (every thread) and the client on this one "
                        "CPU, so that a round trip measures the two programs and not the "
                        "wake-up of an idle CPU (on a VM that adds tens of microseconds at "
                        "random, to the Unix socket and to REST alike)")
    p.add_argument("--warmup", type=int, default=200,
                   help="latency: untimed round trips before them")
    p.add_argument("--runs", type=int, default=3,
                   help="fresh-server runs of every mode (medians reported)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a load generator may take (a stream, one latency target)")
    p.add_argument("--stall-timeout", type=float, default=30.0,
                   help="seconds with no reply before the load generator gives up")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--stop-timeout", type=float, default=120.0)
    p.add_argument("--export-timeout", type=float, default=600.0)
    p.add_argument("--py-spy", metavar="OUT", default=None,
                   help="attach `py-spy record --threads` to the server during the load "
                        "(OUT.txt raw, .json speedscope, .svg flamegraph; files get "
                        ".MODE[.runN] before the extension)")
    p.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--keep", action="store_true", help="keep every run's temp dir")
    p.add_argument("--keep-failed", action="store_true", help="keep a failed run's temp dir")
    p.add_argument("--strict", action="store_true", help="exit 3 when a bar is missed")
    a = p.parse_args(argv)
    if min(a.records, a.conns, a.inflight, a.count, a.runs) < 1 or a.warmup < 0:
        p.error("--records, --conns, --inflight, --count and --runs must be >= 1")
    if a.pin is not None and a.pin not in os.sched_getaffinity(0):
        p.error(f"--pin {a.pin}: this process may run on CPUs "
                f"{sorted(os.sched_getaffinity(0))} only")
    modes = list(MODES) if a.mode == "all" else [a.mode]
    if not os.path.isfile("/proc/self/stat"):
        print("tsstore-bench: needs Linux /proc for CPU and RSS", file=sys.stderr)
        return 2
    if a.py_spy and not (shutil.which("py-spy") or os.path.isfile(os.path.join(BIN, "py-spy"))):
        print("tsstore-bench: --py-spy needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    missing = missing_modules()
    if missing:
        print("tsstore-bench: this tsnet lacks ts-store inputs the bench loads: "
              + "; ".join(missing), file=sys.stderr)
        return 2

    git = git_state()
    runs: list[dict] = []
    stop = False
    for i in range(1, a.runs + 1):
        for mode in modes:
            what = (f"{a.count} round trips each over {', '.join(n for n, _ in LATENCY_TARGETS)}"
                    if mode == "latency" else
                    f"{a.records} records, {a.conns} conns, {a.inflight} in flight")
            log(f"run {i}/{a.runs} {mode}: {what}")
            rec = one_run(a, mode, i)
            runs.append(rec)
            print(json.dumps(rec), flush=True)
            if not rec["ok"]:
                log(f"RUN {i} {mode} FAILED: {rec['error']}")
                if rec.get("error_code") == 2:
                    stop = True  # environment: the next runs would fail the same way
                    break
            elif mode == "latency":
                log(f"run {i} latency: unix median {rec['unix_median_ms']} ms p99 "
                    f"{rec['unix_p99_ms']} ms; rest median {rec['rest_median_ms']} ms p99 "
                    f"{rec['rest_p99_ms']} ms; rest/unix {rec['rest_over_unix']}x "
                    f"(raw-socket rest {rec['rest_raw']['median_ms']} ms, ws "
                    f"{rec['ws']['median_ms']} ms)")
            else:
                log(f"run {i} {mode}: {rec['records_per_sec']:.0f} records/s "
                    f"({rec['seconds']:.2f} s), server CPU {rec['server_cpu_s']:.2f} s, "
                    f"peak RSS {rec['peak_rss_mib']} MiB, other CPU {rec['other_cpu_s']} s")
        if stop:
            break

    summ = summarize(a, modes, runs, git)
    print(json.dumps(summ), flush=True)
    log(f"medians over {a.runs} runs: " + ", ".join(
        f"{m} {summ[m]['median_records_per_sec']} records/s" for m in ("ws", "unix")
        if m in summ) + (
        f"{', ' if 'ws' in summ or 'unix' in summ else ''}unix "
        f"{summ['latency']['unix']['median_median_ms']} ms (p99 "
        f"{summ['latency']['unix']['median_p99_ms']}), rest "
        f"{summ['latency']['rest']['median_median_ms']} ms (p99 "
        f"{summ['latency']['rest']['median_p99_ms']})" if "latency" in summ else ""))
    log(f"bars: {verdict(summ)}")
    if not summ["ok"]:
        return max([r.get("error_code", 1) for r in runs if not r["ok"]] or [1])
    if a.strict and summ["bars_missed"]:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
