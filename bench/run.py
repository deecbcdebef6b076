#!/usr/bin/env python3
"""tsnet's ingest benchmark (stdlib only): first byte sent -> every point committed.

For each run: write a private config in a fresh temp dir (every listener on
127.0.0.1, port 0), start ``twistd -n tsnet`` on it, read the bound ports from its
log, run the bench's own load generator (bench/loadgen.py) against the listener of
the format (OpenTSDB telnet or HTTP, ATSD series over TCP or HTTP, or the graphite
family of examples/tsnet-lineproto), poll
``GET /metrics`` until ``tsnet_points_written_total{protocol=FAMILY}`` reaches
the point count, sample the server's CPU time and peak RSS, stop it with SIGTERM
and check with ``tsnet export`` that storage holds exactly the points sent.

With ``--soak SECONDS --rate R`` the load is paced instead (loadgen's --rate
and --duration: R points a second for SECONDS), the bench samples the committed
count every 50 ms and the SQLite file every 5 s, and each run's JSON gets a
``soak`` object: the per-second committed rate, the longest stall, whether the
pending log and the small chunks stay bounded (bench/soak.py).  Every run
reports the bytes the server wrote to storage and the write amplification.

Prints one JSON line per run and one summary line on stdout (progress goes to
stderr).  Exit status: 0 every run passed its checks (with ``--strict``: and the
bar was met), 1 a run failed (count mismatch, timeout, crash, ...), 2 usage or
environment problem (loadgen missing, the HTTP route not served), 3 the bar was
missed with ``--strict``.  See bench/README.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soak  # bench/ is not a package: soak.py is found on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LOADGEN = os.path.join(REPO, "bench", "loadgen.py")
BIN = os.path.dirname(sys.executable)
CLK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"
BOUND = re.compile(r"listener (\S+) bound tcp:([0-9.]+):(\d+)")
FORMATS = ("opentsdb-telnet", "opentsdb-http", "graphite", "atsd-series", "atsd-http")
#: the listener each format loads, and the protocol label its points are counted under
TARGETS = {"opentsdb-telnet": ("opentsdb", "opentsdb"), "opentsdb-http": ("http", "opentsdb"),
           "graphite": ("graphite", "graphite"), "atsd-series": ("atsd", "atsd"),
           "atsd-http": ("http", "atsd")}
#: the route each HTTP format posts to (a 404 there is an environment problem)
HTTP_ROUTES = {"opentsdb-http": "/api/put", "atsd-http": "/api/v1/command"}
#: where the graphite family comes from (a plugin distribution of its own)
LINEPROTO = os.path.join(REPO, "examples", "tsnet-lineproto")
HTTP_BATCH = 50
ATSD_HTTP_BATCH = 1000
FLUSH_INTERVAL = 0.5
#: a soak's flush interval: telnet points wait for it before their commit, so
#: with 0.5 s every gap between commits is 0.5 s and the 200 ms stall bar could
#: only measure the timer; 0.1 s leaves the stalls that storage makes
SOAK_FLUSH_INTERVAL = 0.1
#: seconds between a soak's looks into the SQLite file
SOAK_SAMPLE_INTERVAL = 5.0

#: The bar (DESIGN §10), for the default telnet run.
BAR_PPS = 300_000
BAR_RSS_MIB = 300
#: The export bar (issue 13): lines per second of `tsnet export` on the default data set.
BAR_EXPORT_LPS = 500_000
BAR_PARAMS = {"format": "opentsdb-telnet", "points": 2_000_000, "conns": 4, "series": 1000,
              "tags": 2}


class BenchError(Exception):
    """A run that cannot be measured or whose result is wrong; ``code`` is the exit status."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ process probes

def proc_cpu(pid: int) -> float:
    """utime+stime of ``pid`` in seconds, all threads (/proc/PID/stat)."""
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds: the kernel's share is mostly socket
    and SQLite I/O."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) / CLK, int(rest[12]) / CLK


def proc_status(pid: int, key: str) -> int | None:
    """A numeric field of /proc/PID/status (VmHWM and VmRSS are in kB)."""
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return int(ln.split()[1])
    return None


def mib(kib: int | None) -> float:
    return round((kib or 0) / 1024, 1)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds summed over every CPU since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / CLK, sum(v) / CLK


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16000))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return ""


def dir_mib(path: str) -> float:
    total = 0
    for dp, _dn, fn in os.walk(path):
        for name in fn:
            try:
                total += os.lstat(os.path.join(dp, name)).st_blocks * 512
            except OSError:
                pass
    return round(total / 2**20, 1)


# ------------------------------------------------------------------ commands

def script_cmd(name: str, module: str, func: str) -> list[str]:
    """The console script ``name`` next to sys.executable, run by this interpreter."""
    path = os.path.join(BIN, name)
    if os.path.isfile(path):
        return [sys.executable, path]
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def twistd_cmd() -> list[str]:
    return script_cmd("twistd", "twisted.scripts.twistd", "run")


def tsnet_cmd() -> list[str]:
    return script_cmd("tsnet", "tsnet.cli", "main")


def write_config(workdir: str, fmt: str, storage: str = "backend = sqlite\n",
                 flush_interval: float = FLUSH_INTERVAL) -> str:
    # The telnet run mounts only /metrics on the http listener.  The HTTP run leaves
    # `apis` out, which mounts every installed API: /metrics and, once a plugin
    # provides it, OpenTSDB's /api/put.  The ATSD HTTP run mounts ATSD's API
    # (/api/v1/command) next to /metrics.
    apis = {"opentsdb-http": "", "atsd-http": "apis = atsd metrics\n"}.get(
        fmt, "apis = metrics\n")
    family = {"graphite": "graphite", "atsd-series": "atsd"}.get(fmt)
    extra = (f"[listener:{family}]\nprotocol = {family}\nendpoint = tcp:0:interface=127.0.0.1\n"
             if family else "")
    text = (
        "; written by bench/run.py: every listener on 127.0.0.1, free ports\n"
        "[tsnet]\n"
        "data_dir = var\n"
        f"flush_interval = {flush_interval}\n"
        "[storage:default]\n"
        f"{storage}"
        "[listener:opentsdb]\n"
        "protocol = opentsdb\n"
        "endpoint = tcp:0:interface=127.0.0.1\n"
        "[listener:http]\n"
        "protocol = http\n"
        "endpoint = tcp:0:interface=127.0.0.1\n"
        f"{apis}"
        f"{extra}"
    )
    path = os.path.join(workdir, "tsnet.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


# ------------------------------------------------------------------ the server

class RedisProcess:
    """A throwaway ``redis-server`` for ``--storage redis``: loopback, a free port,
    no persistence (the run measures tsnet, not Redis's disk)."""

    def __init__(self, workdir: str, binary: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            self.port = s.getsockname()[1]
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir)
        self.logf = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", self.logf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def wait_ready(self, timeout: float) -> None:
        import socket

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited {self.proc.returncode}: "
                                 f"{tail(self.logf, 5)}", 2)
            try:
                with socket.create_connection((LOOPBACK, self.port), 1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError("redis-server did not answer PING", 2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # our own child, by PID
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Server:
    """One ``twistd -n tsnet`` child; only ever signalled by its own PID."""

    def __init__(self, workdir: str, cfg: str, cprofile: str | None = None) -> None:
        self.workdir = workdir
        self.logf = os.path.join(workdir, "server.log")
        self.cmd = [*twistd_cmd(), "-n", "--pidfile="]
        if cprofile:
            self.cmd += [f"--profile={cprofile}", "--profiler=cprofile", "--savestats"]
        self.cmd += ["tsnet", "--config", cfg]
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        #: the server's own rusage once `stop` reaped it (ru_oublock: its write_bytes)
        self.rusage: resource.struct_rusage | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def start(self, timeout: float, names: tuple[str, ...] = ("opentsdb", "http")) -> None:
        """Start; return once every listener in ``names`` logged its bound port."""
        with open(self.logf, "wb") as lf:
            self.proc = subprocess.Popen(self.cmd, stdout=lf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.logf, encoding="utf-8", errors="replace") as f:
                for m in BOUND.finditer(f.read()):
                    name, host, port = m.groups()
                    if host != LOOPBACK:
                        raise BenchError(f"listener {name} bound {host}, not {LOOPBACK}: "
                                         "refusing to load it")
                    self.ports[name] = int(port)
            if all(n in self.ports for n in names):
                return
            if not self.alive():
                raise BenchError(f"server exited with status {self.returncode} before "
                                 f"binding; log tail:\n{tail(self.logf)}")
            time.sleep(0.05)
        missing = ", ".join(n for n in names if n not in self.ports)
        raise BenchError(f"server did not log 'listener NAME bound' for {missing} within "
                         f"{timeout:.0f} s; log tail:\n{tail(self.logf)}")

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait up to ``timeout`` s; raises (after SIGKILL) if it hangs."""
        if not self.alive():
            return self.returncode
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while True:  # wait4, not wait: the rusage tells what it wrote until its end
            try:
                pid, status, ru = os.wait4(self.pid, os.WNOHANG)  # our own child, by PID
            except ChildProcessError:  # reaped elsewhere: no rusage
                return self.proc.wait(timeout)
            if pid:
                self.rusage = ru
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode
            if time.time() > deadline:
                self.kill()
                raise BenchError(f"server did not exit within {timeout:.0f} s of SIGTERM "
                                 "(killed)")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(30)


# ------------------------------------------------------------------ HTTP helpers

def http(url: str, data: bytes | None = None, timeout: float = 5.0,
         headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric_sum(text: str, name: str, protocol: str = "*") -> float:
    """Sum of the ``name{...}`` samples with label protocol="P" (``*``: every sample)."""
    total = 0.0
    want = f'protocol="{protocol}"'
    for ln in text.splitlines():
        if ln.startswith(name) and ln[len(name):len(name) + 1] in ("{", " "):
            head, _, val = ln.rpartition(" ")
            if protocol == "*" or want in head:
                total += float(val)
    return total


def points_lines(text: str) -> str:
    """The counter lines worth showing when a run times out."""
    return "\n".join(ln for ln in text.splitlines()
                     if ln.startswith(("tsnet_points_", "tsnet_write_queue_items"))
                     and not ln.split("{")[0].split(" ")[0].endswith("_created"))


def preflight_http_put(port: int, fmt: str = "opentsdb-http") -> None:
    """POST an empty batch: 404 means this server does not serve the format's route
    (OpenTSDB's /api/put, ATSD's /api/v1/command)."""
    route = HTTP_ROUTES[fmt]
    data, ctype = (b"[]", "application/json") if fmt == "opentsdb-http" else \
        (b"", "text/plain")
    st, body = http(f"http://{LOOPBACK}:{port}{route}", data=data,
                    headers={"Content-Type": ctype})
    if st == 404:
        raise BenchError(
            f"--format {fmt}: the server answered 404 to POST {route} on its http "
            f"listener (port {port}): this tsnet does not serve it yet (body: "
            f"{body[:200].decode('utf-8', 'replace')})", code=2)


# ------------------------------------------------------------------ export check

def count_export(cmd: list[str], cwd: str, timeout: float) -> dict:
    """Stream ``tsnet export``: series lines and distinct series, bounded by ``timeout``."""
    t0 = time.time()
    errf = os.path.join(cwd, "export.err")
    with open(errf, "wb") as ef:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=ef, stdin=subprocess.DEVNULL,
                             cwd=cwd)
    timed_out = threading.Event()

    def on_timeout() -> None:
        if p.poll() is None:
            timed_out.set()
            os.kill(p.pid, signal.SIGKILL)  # our own child, by PID

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    lines = other = 0
    series: set[bytes] = set()
    try:
        assert p.stdout is not None
        for ln in p.stdout:
            if b'"kind":"series"' in ln:
                lines += 1
                cut = ln.find(b',"time_ms"')
                series.add(ln[:cut] if cut > 0 else ln)
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
    return {"export_series_lines": lines, "export_distinct_series": len(series),
            "export_other_lines": other, "export_seconds": round(time.time() - t0, 2)}


def time_export(cmd: list[str], cwd: str, timeout: float, want: int) -> dict:
    """One timed ``tsnet export`` into a file (a pipe's reader would be what is
    measured): wall seconds of the whole command (start-up included), its CPU
    and peak RSS, and a check that the file holds ``want`` series lines."""
    out = os.path.join(cwd, "export.timed")
    errf = os.path.join(cwd, "export.timed.err")
    t0 = time.perf_counter()
    with open(out, "wb") as fo, open(errf, "wb") as ef:
        p = subprocess.Popen(cmd, stdout=fo, stderr=ef, stdin=subprocess.DEVNULL, cwd=cwd)
    timer = threading.Timer(timeout, lambda: p.poll() is None and os.kill(p.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)  # our own child, by PID: its own rusage
    finally:
        timer.cancel()
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise BenchError(f"timed tsnet export exited {p.returncode}: {tail(errf)}")
    lines = series = 0
    mark = b'"kind":"series"'
    end = b""  # (the end of the block before: a mark may straddle two blocks)
    with open(out, "rb") as f:
        while block := f.read(1 << 24):
            lines += block.count(b"\n")
            series += (end + block).count(mark)
            end = block[-(len(mark) - 1):]
    os.unlink(out)
    if series != want:
        raise BenchError(f"EXPORT MISMATCH: the timed export has {series} series lines, "
                         f"want {want}")
    return {"lines": lines, "seconds": round(seconds, 3),
            "lines_per_sec": round(lines / seconds, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "peak_rss_mib": mib(ru.ru_maxrss)}


# ------------------------------------------------------------------ profilers

def numbered(path: str, run: int, runs: int) -> str:
    """``path`` for one run: ``x.txt`` -> ``x.run2.txt`` when there are several runs."""
    root, ext = os.path.splitext(os.path.abspath(path))
    return root + ext if runs == 1 else f"{root}.run{run}{ext}"


class PySpy:
    """``py-spy record --pid`` attached to the server from before the load to the commit."""

    def __init__(self, out: str, pid: int, rate: int, workdir: str, gil: bool = False) -> None:
        self.out = out
        fmt = {".json": "speedscope", ".svg": "flamegraph"}.get(
            os.path.splitext(out)[1].lower(), "raw")
        exe = shutil.which("py-spy") or os.path.join(BIN, "py-spy")
        cmd = [exe, "record", "--pid", str(pid), "--output", out, "--format", fmt,
               "--rate", str(rate), "--threads"] + (["--gil"] if gil else [])
        self.logf = os.path.join(workdir, "py-spy.log")
        with open(self.logf, "wb") as lf:
            self.proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach before the load starts
        if self.proc.poll() is not None:
            raise BenchError(f"py-spy exited {self.proc.returncode} at once: {tail(self.logf)}")

    def stop(self) -> None:
        """SIGINT makes py-spy write its output and exit."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # our own child, by PID
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


# ------------------------------------------------------------------ one run

def loadgen_cmd(a: argparse.Namespace, port: int) -> list[str]:
    load = ["--rate", str(a.rate), "--duration", str(a.soak)] if a.soak else \
        ["--points", str(a.points)]
    cmd = [sys.executable, a.loadgen, "--host", LOOPBACK, "--port", str(port),
           "--format", a.format, *load, "--conns", str(a.conns),
           "--series", str(a.series), "--tags", str(a.tags),
           "--duration-limit", str(a.timeout), "--drain-timeout", "60"]
    if a.format == "opentsdb-http":
        cmd += ["--batch", str(HTTP_BATCH)]
    elif a.format == "atsd-http":
        cmd += ["--batch", str(ATSD_HTTP_BATCH)]
    return cmd


def wait_committed(a: argparse.Namespace, server: Server, lg: subprocess.Popen,
                   metrics_url: str, t_launch: float,
                   samples: list[tuple[float, float]] | None = None) -> dict:
    """Poll /metrics until the committed count reaches --points; bounded by --timeout.
    Each answer's (time, committed count) goes into ``samples`` when given."""
    n = a.points
    deadline = t_launch + a.timeout
    written = -1.0
    text = ""
    t_prev = None
    polls = errors = 0
    lg_gone = False
    while True:
        tq = time.time()
        if tq > deadline:
            raise BenchError(
                f"timeout: {deadline - t_launch:.0f} s after launching loadgen only "
                f"{written:.0f} of {n} points were committed; last /metrics:\n"
                f"{points_lines(text)}\nloadgen exit status: {lg.poll()}")
        if not server.alive():
            raise BenchError(f"server exited with status {server.returncode} during the "
                             f"load; log tail:\n{tail(server.logf)}")
        try:
            _st, body = http(metrics_url, timeout=10)
            text = body.decode("utf-8", "replace")
            written = metric_sum(text, "tsnet_points_written_total", a.protocol_label)
            if samples is not None:
                samples.append((time.time(), written))
        except (OSError, ValueError):
            errors += 1
        polls += 1
        if written >= n:
            return {"t_commit": time.time(), "t_prev": t_prev, "polls": polls,
                    "poll_errors": errors, "text": text, "written": written}
        if not lg_gone and lg.poll() is not None:
            lg_gone = True
            if lg.returncode != 0:
                # loadgen gave up (refused, rejected, ...): wait only as long as it takes
                # to commit what the server did read.
                deadline = min(deadline, time.time() + 2 * FLUSH_INTERVAL + 5)
        t_prev = tq
        time.sleep(a.poll_interval)


def read_loadgen(lg: subprocess.Popen, out: str, err: str, timeout: float) -> dict:
    try:
        lg.wait(timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"loadgen did not exit within {timeout:.0f} s") from None
    with open(out, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"loadgen printed no JSON (exit {lg.returncode}): {tail(err)}")
    return json.loads(lines[-1])


def check_loadgen(r: dict, rc: int | None, n: int) -> None:
    """Raise when loadgen did not deliver all N points (404s: exit status 2)."""
    if (r.get("http_status") or {}).get("404") or rc == 2:
        fmt = r.get("format", "opentsdb-http")
        raise BenchError(f"--format {fmt}: {HTTP_ROUTES.get(fmt, 'the route')} answered 404 "
                         f"to {(r.get('http_status') or {}).get('404')} requests: this tsnet "
                         "does not serve it", code=2)
    if rc != 0 or r.get("points_sent") != n or r.get("errors"):
        raise BenchError(f"loadgen failed (exit {rc}, {r.get('points_sent')} of {n} sent, "
                         f"{r.get('points_rejected')} rejected): {r.get('errors')}")


def io_record(io0: dict[str, int], io1: dict[str, int],
              ru: resource.struct_rusage | None) -> dict:
    """What the server wrote, from ``/proc/PID/io`` before the load (``io0``) and at
    the commit (``io1``), and its rusage at exit: ``write_bytes`` runs from the
    launch of loadgen to the server's exit (``ru_oublock`` is the same counter in
    512-byte units), so the stop's last fold and checkpoint count; the ``_load``
    figures stop at the commit.  None where the kernel did not say."""
    def delta(key: str) -> int | None:
        return io1[key] - io0[key] if key in io0 and key in io1 else None

    end = ru.ru_oublock * 512 if ru is not None else None
    return {"write_bytes": end - io0["write_bytes"] if end is not None and io0 else None,
            "write_bytes_load": delta("write_bytes"), "wchar_load": delta("wchar"),
            "cancelled_write_bytes_load": delta("cancelled_write_bytes"),
            "read_bytes_load": delta("read_bytes")}


def one_run(a: argparse.Namespace, run: int) -> dict:
    n = a.points
    rec: dict = {"run": run, "format": a.format, "points": n, "conns": a.conns,
                 "series": a.series, "tags": a.tags, "ok": False}
    workdir = tempfile.mkdtemp(prefix="tsnet-bench-")
    server: Server | None = None
    lg: subprocess.Popen | None = None
    spy: PySpy | None = None
    redis: RedisProcess | None = None
    sampler: soak.DbSampler | None = None
    t_start = time.time()
    try:
        storage = "backend = sqlite\n"
        if a.storage == "redis":
            redis = RedisProcess(workdir, a.redis_server)
            redis.wait_ready(a.startup_timeout)
            storage = f"backend = redis\nurl = {redis.url}\n"
        rec["storage"] = a.storage
        cfg = write_config(workdir, a.format, storage, a.flush_interval)
        cprof = numbered(a.cprofile, run, a.runs) if a.cprofile else None
        server = Server(workdir, cfg, cprof)
        listener = TARGETS[a.format][0]
        server.start(a.startup_timeout, names=tuple(dict.fromkeys((listener, "http"))))
        pid = server.pid
        rec["startup_s"] = round(time.time() - t_start, 2)
        rec["ports"] = dict(server.ports)
        http_port = server.ports["http"]
        target = server.ports[listener]
        metrics_url = f"http://{LOOPBACK}:{http_port}/metrics"
        st, body = http(metrics_url)
        if st != 200:
            raise BenchError(f"GET /metrics answered {st}: {body[:200]!r}")
        if a.format in HTTP_ROUTES:
            preflight_http_put(http_port, a.format)
        rec["rss_before_mib"] = mib(proc_status(pid, "VmRSS"))

        if a.py_spy:
            spy = PySpy(numbered(a.py_spy, run, a.runs), pid, a.py_spy_rate, workdir,
                        a.py_spy_gil)
            rec["py_spy_output"] = spy.out
        if cprof:
            rec["cprofile_output"] = cprof
        lg_out = os.path.join(workdir, "loadgen.out")
        lg_err = os.path.join(workdir, "loadgen.err")
        cmd = loadgen_cmd(a, target)
        rec["loadgen_cmd"] = " ".join(cmd[1:])
        cpu0 = proc_cpu(pid)
        redis0 = proc_cpu(redis.proc.pid) if redis is not None else 0.0
        sys0 = proc_cpu_split(pid)[1]
        m0 = machine_cpu()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        io0 = soak.proc_io(pid)
        samples: list[tuple[float, float]] | None = [] if a.soak else None
        t_launch = time.time()
        if a.soak:
            sampler = soak.DbSampler(os.path.join(workdir, "var", "default.sqlite"),
                                     a.sample_interval, t_launch)
            sampler.start()
        with open(lg_out, "wb") as fo, open(lg_err, "wb") as fe:
            lg = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)

        try:
            c = wait_committed(a, server, lg, metrics_url, t_launch, samples)
        except BenchError:
            if lg.poll() not in (None, 0):  # loadgen's own failure explains it better
                check_loadgen(read_loadgen(lg, lg_out, lg_err, 10), lg.returncode, n)
            raise
        cpu1 = proc_cpu(pid)
        io1 = soak.proc_io(pid)
        if sampler is not None:
            sampler.stop()
            sampler.look_once("committed")
        redis_cpu = proc_cpu(redis.proc.pid) - redis0 if redis is not None else 0.0
        if redis is not None:
            rec["redis_cpu_s"] = round(redis_cpu, 2)
        rec["server_sys_cpu_s"] = round(proc_cpu_split(pid)[1] - sys0, 2)
        m1 = machine_cpu()
        rec["peak_rss_mib"] = mib(proc_status(pid, "VmHWM"))
        rec["rss_end_mib"] = mib(proc_status(pid, "VmRSS"))
        rec["threads"] = proc_status(pid, "Threads")
        rec["server_cpu_total_s"] = round(cpu1, 2)

        r = read_loadgen(lg, lg_out, lg_err, max(10.0, t_launch + a.timeout + 90 - time.time()))
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # now includes loadgen, reaped
        if spy is not None:
            spy.stop()
        rec["loadgen"] = {k: r.get(k) for k in (
            "points_sent", "points_accepted", "points_rejected", "seconds", "points_per_sec",
            "send_seconds", "setup_seconds", "loadgen_cpu_seconds", "bytes", "requests",
            "http_status", "all_drained", "server_said", "errors", "rate_requested",
            "achieved_rate", "max_late_s", "end_late_s")}
        rec["loadgen"]["rc"] = lg.returncode
        check_loadgen(r, lg.returncode, n)
        t0 = r["t_first_byte"]
        e2e = c["t_commit"] - t0
        rec["points_per_sec"] = round(n / e2e, 1)
        rec["e2e_seconds"] = round(e2e, 3)
        # the counter reached N between the previous poll and this one
        rec["e2e_seconds_lower_bound"] = round(max(c["t_prev"] or t0, r["t_done"]) - t0, 3)
        rec["commit_after_read_s"] = round(c["t_commit"] - r["t_done"], 3)
        rec["loadgen_start_s"] = round(t0 - t_launch, 3)
        rec["server_cpu_s"] = round(cpu1 - cpu0, 2)
        rec["server_cpu_us_per_point"] = round((cpu1 - cpu0) / n * 1e6, 2)
        busy, total = m1[0] - m0[0], m1[1] - m0[1]
        rec["machine_busy_pct"] = round(100.0 * busy / total, 1) if total > 0 else None
        # Noise gauge: CPU the rest of the machine used while we measured (busy CPU
        # minus server and loadgen, loadgen counted from launch to exit; approximate).
        lg_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        rec["loadgen_total_cpu_s"] = round(lg_cpu, 2)
        rec["other_cpu_s"] = round(busy - (cpu1 - cpu0) - lg_cpu - redis_cpu, 2)
        rec["polls"] = c["polls"]
        rec["poll_errors"] = c["poll_errors"]
        rec["points_written"] = int(c["written"])
        rec["points_received"] = int(metric_sum(c["text"], "tsnet_points_received_total"))
        rec["points_rejected"] = int(metric_sum(c["text"], "tsnet_points_rejected_total"))

        t_stop = time.time()
        rec["stop_rc"] = server.stop(a.stop_timeout)
        rec["stop_s"] = round(time.time() - t_stop, 2)
        # twistd re-raises the signal it stopped on, so a clean stop exits -SIGTERM (0
        # is accepted too); the service logs "tsnet stopped cleanly" once all is committed.
        if rec["stop_rc"] not in (0, -signal.SIGTERM) or "tsnet stopped cleanly" not in \
                tail(server.logf, 40):
            raise BenchError(f"server did not stop cleanly (exit {rec['stop_rc']}); log "
                             f"tail:\n{tail(server.logf)}")
        rec["data_dir_mib"] = dir_mib(os.path.join(workdir, "var"))
        rec["io"] = io_record(io0, io1, server.rusage)
        rec["write_amplification"] = soak.amplification(rec["io"]["write_bytes"],
                                                        r.get("bytes"), n)
        if sampler is not None and samples is not None:
            sampler.look_once("stopped")
            rec["soak"] = soak.soak_report(samples, sampler.samples, t0, r["t_last_byte"],
                                           c["t_commit"], t_launch, a.flush_interval)
        rec.update(count_export([*tsnet_cmd(), "--config", cfg, "export"], workdir,
                                a.export_timeout))
        want_series = min(a.series, n)
        if rec["export_series_lines"] != n or rec["export_distinct_series"] != want_series:
            raise BenchError(
                f"STORAGE MISMATCH: tsnet export has {rec['export_series_lines']} series "
                f"lines (sent {n}) in {rec['export_distinct_series']} distinct series "
                f"(sent {want_series})")
        if rec["points_written"] != n:
            raise BenchError(f"tsnet_points_written_total is {rec['points_written']}, "
                             f"want exactly {n}")
        timed = [time_export([*tsnet_cmd(), "--config", cfg, "export"], workdir,
                             a.export_timeout, n) for _ in range(a.export_runs)]
        if timed:
            rec["export_timed"] = timed
            rec["export_lines_per_sec"] = round(
                statistics.median(t["lines_per_sec"] for t in timed), 1)
            rec["export_peak_rss_mib"] = max(t["peak_rss_mib"] for t in timed)
        rec["ok"] = True
    except BenchError as e:
        rec["error"] = str(e)
        rec["error_code"] = e.code
    except Exception as e:  # any other failure is a failed run, never a hang
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["error_code"] = 1
    finally:
        if lg is not None and lg.poll() is None:
            os.kill(lg.pid, signal.SIGTERM)  # our own child, by PID
            try:
                lg.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(lg.pid, signal.SIGKILL)
                lg.wait(10)
        if spy is not None:
            spy.stop()
        if sampler is not None:
            sampler.stop()
        if server is not None and server.alive():
            server.kill()
        if redis is not None:
            redis.stop()
        if server is not None and not rec["ok"]:
            rec["server_log_tail"] = tail(server.logf, 12).splitlines()
        rec["wall_s"] = round(time.time() - t_start, 1)
        if a.keep or (a.keep_failed and not rec["ok"]):
            rec["kept_dir"] = workdir
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rec


# ------------------------------------------------------------------ main

def graphite_installed() -> bool:
    """Whether the server this interpreter runs will find a `graphite` plugin."""
    p = subprocess.run([sys.executable, "-c", "from tsnet.plugins import load_plugins; "
                        "import sys; sys.exit('graphite' not in load_plugins())"],
                       capture_output=True, timeout=60)
    return p.returncode == 0


def git_state() -> dict:
    """The commit measured, and whether the work tree had changes (best effort)."""
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                               timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return {"commit": head, "src_modified": bool(dirty) if dirty is not None else None}


def series_counts(text: str) -> list[int]:
    """``--series``: one count, or several comma-separated for a sweep."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or a list of counts: {text!r}") from None
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"a count is named twice: {text!r}")
    return counts


def report(summ: dict) -> None:
    """The one-line verdict of a series count's runs."""
    bar = summ["bar"]
    verdict = ("PASS" if bar["pass"] else "FAIL") if bar["applies"] else \
        "n/a (only the default telnet run, unprofiled, is held to it)"
    log(f"{summ['series']} series: median {summ.get('median_points_per_sec')} points/s, "
        f"server CPU {summ.get('median_server_cpu_s')} s, peak RSS "
        f"{summ.get('max_peak_rss_mib')} MiB; bar (>= {BAR_PPS} points/s, RSS < "
        f"{BAR_RSS_MIB} MiB): {verdict}")
    if "median_write_amplification_per_point_byte" in summ:
        log(f"write amplification (bytes written to storage, loadgen's launch to the "
            f"server's exit): median {summ['median_write_amplification_per_point_byte']} "
            f"per 16-byte point, {summ['median_write_amplification_per_wire_byte']} per "
            "wire byte")
    if "soak" in summ:
        sk = summ["soak"]
        log(f"soak ({sk['seconds']:g} s at {sk['rate']:g} points/s, flush_interval "
            f"{sk['flush_interval']} s): longest stall {sk['max_longest_stall_s']} s; bar "
            f"(no stall over {soak.STALL_BAR_S} s, pending log and small chunks bounded): "
            f"{'PASS' if sk['pass'] else 'FAIL'}")
    if "export_bar" in summ:
        log(f"export: median {summ['median_export_lines_per_sec']} lines/s (whole command, "
            f"start-up included), peak RSS {summ['max_export_peak_rss_mib']} MiB; bar (>= "
            f"{BAR_EXPORT_LPS} lines/s): {'PASS' if summ['export_bar']['pass'] else 'FAIL'}")


def sweep_table(summaries: list[dict]) -> list[dict]:
    """One row per series count: the medians, and the rate against the first count's."""
    first = summaries[0].get("median_points_per_sec")
    rows = []
    for s in summaries:
        pps = s.get("median_points_per_sec")
        rows.append({"series": s["series"], "points_per_sec": pps,
                     "server_cpu_us_per_point": s.get("median_server_cpu_us_per_point"),
                     "peak_rss_mib": s.get("max_peak_rss_mib"),
                     "rate_vs_first": round(pps / first, 3) if pps and first else None})
    return rows


def render_sweep(rows: list[dict]) -> str:
    """The sweep as a text table (README shows one)."""
    def cell(v: object, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"{'series':>10}  {'points/s':>10}  {'CPU us/point':>12}  {'peak RSS MiB':>12}"
             f"  {'rate vs first':>13}"]
    for r in rows:
        lines.append(f"{r['series']:>10,}  {cell(r['points_per_sec'], ',.0f'):>10}  "
                     f"{cell(r['server_cpu_us_per_point'], '.2f'):>12}  "
                     f"{cell(r['peak_rss_mib'], '.1f'):>12}  "
                     f"{cell(r['rate_vs_first'], '.3f'):>13}")
    return "\n".join(lines)


def summarize(a: argparse.Namespace, runs: list[dict], git: dict) -> dict:
    ok = [r for r in runs if r["ok"]]
    summ: dict = {"summary": True, "format": a.format, "storage": a.storage,
                  "points": a.points, "conns": a.conns,
                  "series": a.series, "tags": a.tags, "runs": len(runs), "runs_ok": len(ok),
                  "ok": len(ok) == a.runs, **git}
    if ok:
        pps = [r["points_per_sec"] for r in ok]
        summ.update({
            "median_points_per_sec": round(statistics.median(pps), 1),
            "min_points_per_sec": min(pps),
            "max_points_per_sec": max(pps),
            "median_e2e_seconds": round(statistics.median(r["e2e_seconds"] for r in ok), 3),
            "median_server_cpu_s": round(statistics.median(r["server_cpu_s"] for r in ok), 2),
            "median_server_cpu_us_per_point": round(
                statistics.median(r["server_cpu_us_per_point"] for r in ok), 2),
            "max_peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
            "median_other_cpu_s": round(statistics.median(r["other_cpu_s"] for r in ok), 2),
        })
        for key in ("per_point_byte", "per_wire_byte"):
            amps = [r["write_amplification"][key] for r in ok
                    if r["write_amplification"][key] is not None]
            summ[f"median_write_amplification_{key}"] = \
                round(statistics.median(amps), 3) if amps else None
    timed = [t["lines_per_sec"] for r in ok for t in r.get("export_timed", ())]
    if timed:
        summ["median_export_lines_per_sec"] = round(statistics.median(timed), 1)
        summ["min_export_lines_per_sec"] = min(timed)
        summ["max_export_lines_per_sec"] = max(timed)
        summ["max_export_peak_rss_mib"] = max(r["export_peak_rss_mib"] for r in ok
                                              if "export_peak_rss_mib" in r)
        summ["export_bar"] = {"lines_per_sec_min": BAR_EXPORT_LPS,
                              "pass": summ["median_export_lines_per_sec"] >= BAR_EXPORT_LPS}
    applies = all(getattr(a, k) == v for k, v in BAR_PARAMS.items()) and not (
        a.py_spy or a.cprofile or a.soak)
    met = (summ["ok"] and summ["median_points_per_sec"] >= BAR_PPS
           and summ["max_peak_rss_mib"] < BAR_RSS_MIB)
    summ["bar"] = {"points_per_sec_min": BAR_PPS, "peak_rss_mib_below": BAR_RSS_MIB,
                   "applies": applies, "pass": met if applies else None, "would_pass": met}
    if a.soak:
        soaks = [r["soak"] for r in ok]
        stalls = [s["longest_stall_s"] for s in soaks if s["longest_stall_s"] is not None]
        summ["soak"] = {"seconds": a.soak, "rate": a.rate, "flush_interval": a.flush_interval,
                        "max_longest_stall_s": max(stalls, default=None),
                        "pass": summ["ok"] and all(s["bar"]["pass"] for s in soaks)}
    if not summ["ok"]:
        summ["errors"] = [r.get("error", "")[:300] for r in runs if not r["ok"]]
    return summ


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=None,
                   help="points per run (N, default 2000000; --soak: RATE * SECONDS)")
    p.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                   help="paced load for SECONDS at --rate (loadgen --rate --duration), "
                        "sampled over time: per-second committed rate, stalls, the pending "
                        "log and small chunks in the SQLite file (SQLite storage only)")
    p.add_argument("--rate", type=float, default=None, metavar="R",
                   help="--soak: points per second over all connections")
    p.add_argument("--flush-interval", type=float, default=None,
                   help=f"the server's flush_interval (default {FLUSH_INTERVAL}; --soak: "
                        f"{SOAK_FLUSH_INTERVAL})")
    p.add_argument("--sample-interval", type=float, default=SOAK_SAMPLE_INTERVAL,
                   help="--soak: seconds between looks into the SQLite file "
                        f"(default {SOAK_SAMPLE_INTERVAL})")
    p.add_argument("--conns", type=int, default=4, help="client connections")
    p.add_argument("--series", type=series_counts, default=[1000], metavar="N[,N...]",
                   help="distinct series; several (1000,10000,100000,1000000) sweep them: "
                        "the runs of each count interleave, and a table compares rate, CPU "
                        "per point and RSS against the series count")
    p.add_argument("--tags", type=int, default=2, help="tags per point")
    p.add_argument("--format", choices=FORMATS, default="opentsdb-telnet")
    p.add_argument("--storage", choices=("sqlite", "redis"), default="sqlite",
                   help="the default storage: embedded SQLite, or a throwaway redis-server "
                        "per run (its CPU is reported as redis_cpu_s)")
    p.add_argument("--redis-server", default="redis-server",
                   help="the redis-server binary for --storage redis")
    p.add_argument("--runs", type=int, default=None,
                   help="fresh-server runs (median reported; default 3, --soak: 1)")
    p.add_argument("--loadgen", default=DEFAULT_LOADGEN,
                   help="path of the load generator (default: bench/loadgen.py, the bench's "
                        "own; ../shared/bench/loadgen.py is the one that measures the peers)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds from launching loadgen until every point must be committed "
                        "(--soak: from the soak's end)")
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between polls")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--stop-timeout", type=float, default=120.0)
    p.add_argument("--export-timeout", type=float, default=600.0)
    p.add_argument("--export-runs", type=int, default=None,
                   help="timed `tsnet export` runs into a file after each run's check "
                        "(export lines/s, median reported; 0: none; default 3, --soak: 0)")
    p.add_argument("--protocol-label", default=None,
                   help="protocol label of tsnet_points_written_total to wait on (default: "
                        'the format\'s family; "*": all)')
    p.add_argument("--py-spy", metavar="OUT", default=None,
                   help="attach `py-spy record --threads` to the server during the load; "
                        "OUT.txt: raw collapsed stacks, .json: speedscope, .svg: flamegraph "
                        "(several runs: .runN before the extension)")
    p.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--py-spy-gil", action="store_true",
                   help="py-spy samples only the thread holding the GIL (--gil): where the "
                        "interpreter's one core goes, not the time threads spend in C")
    p.add_argument("--cprofile", metavar="OUT", default=None,
                   help="run twistd --profiler=cprofile --savestats --profile=OUT (reactor "
                        "thread only; slows the server a lot)")
    p.add_argument("--keep", action="store_true", help="keep every run's temp dir")
    p.add_argument("--keep-failed", action="store_true", help="keep a failed run's temp dir")
    p.add_argument("--strict", action="store_true",
                   help="exit 3 when the bar applies and is missed (--soak: the soak's bar)")
    a = p.parse_args(argv)
    if (a.soak is None) != (a.rate is None):
        p.error("--soak and --rate go together")
    if a.soak is not None:
        if min(a.soak, a.rate, a.sample_interval) <= 0:
            p.error("--soak, --rate and --sample-interval must be > 0")
        if a.points is not None:
            p.error("--points is RATE * SECONDS with --soak: drop --points")
        if a.storage != "sqlite":
            p.error("--soak looks into the SQLite file: it needs --storage sqlite")
        a.points = int(a.rate * a.soak)  # what loadgen makes of --rate and --duration
        a.timeout += a.soak
    defaults = {"points": 2_000_000, "runs": 3, "export_runs": 3,
                "flush_interval": FLUSH_INTERVAL}
    if a.soak is not None:
        defaults.update(runs=1, export_runs=0, flush_interval=SOAK_FLUSH_INTERVAL)
    for key, value in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.flush_interval <= 0:
        p.error("--flush-interval must be > 0")
    if min(a.points, a.conns, *a.series, a.runs) < 1 or min(a.tags, a.export_runs) < 0:
        p.error("points, conns, series and runs must be >= 1, tags and export runs >= 0")
    if a.poll_interval <= 0 or a.timeout <= 0:
        p.error("--poll-interval and --timeout must be > 0")
    if a.protocol_label is None:
        a.protocol_label = TARGETS[a.format][1]
    if a.format == "graphite" and not graphite_installed():
        print("bench: --format graphite needs the graphite family: "
              f"pip install {os.path.relpath(LINEPROTO)}", file=sys.stderr)
        return 2
    a.loadgen = os.path.abspath(a.loadgen)
    if not os.path.isfile(a.loadgen):
        print(f"bench: load generator not found at {a.loadgen}; pass --loadgen PATH "
              "(the bench's own is bench/loadgen.py)", file=sys.stderr)
        return 2
    if a.py_spy and not (shutil.which("py-spy") or os.path.isfile(os.path.join(BIN, "py-spy"))):
        print("bench: --py-spy needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    if a.storage == "redis" and not shutil.which(a.redis_server):
        print(f"bench: --storage redis needs {a.redis_server} (apt-get install redis-server)",
              file=sys.stderr)
        return 2
    if not os.path.isfile("/proc/self/stat"):
        print("bench: needs Linux /proc for CPU and RSS", file=sys.stderr)
        return 2

    git = git_state()
    counts = a.series
    by_count: dict[int, list[dict]] = {n: [] for n in counts}
    stop = False
    for i in range(1, a.runs + 1):
        for n in counts:
            one = argparse.Namespace(**{**vars(a), "series": n})
            if len(counts) > 1:  # each count's profiles apart: x.txt -> x.s100000.txt
                for opt in ("py_spy", "cprofile"):
                    if getattr(a, opt):
                        root, ext = os.path.splitext(getattr(a, opt))
                        setattr(one, opt, f"{root}.s{n}{ext}")
            paced = f" ({a.rate:g} points/s for {a.soak:g} s)" if a.soak else ""
            log(f"run {i}/{a.runs}: {a.format} on {a.storage}, {a.points} points{paced}, "
                f"{a.conns} conns, {n} series, {a.tags} tags")
            rec = one_run(one, i)
            by_count[n].append(rec)
            print(json.dumps(rec), flush=True)
            if rec["ok"]:
                amp = rec["write_amplification"]
                log(f"run {i}: {rec['points_per_sec']:.0f} points/s ({rec['e2e_seconds']:.2f} "
                    f"s), server CPU {rec['server_cpu_s']:.2f} s, peak RSS "
                    f"{rec['peak_rss_mib']} MiB, wrote {mib((amp['bytes_written'] or 0) >> 10)}"
                    f" MiB: {amp['per_point_byte']} per 16-byte point, "
                    f"{amp['per_wire_byte']} per wire byte")
                for line in soak.render(rec) if "soak" in rec else ():
                    log(line)
            else:
                log(f"RUN {i} FAILED: {rec['error']}")
                stop = rec.get("error_code") == 2  # environment: the next would fail alike
            if stop:
                break
        if stop:
            break

    summaries = []
    for n in counts:
        summ = summarize(argparse.Namespace(**{**vars(a), "series": n}), by_count[n], git)
        summaries.append(summ)
        print(json.dumps(summ), flush=True)
        report(summ)
    if len(counts) > 1:
        sweep = sweep_table(summaries)
        print(json.dumps({"sweep": True, "format": a.format, "storage": a.storage,
                          "points": a.points, "runs": a.runs, "rows": sweep}), flush=True)
        print(render_sweep(sweep), flush=True)
    runs = [r for n in counts for r in by_count[n]]
    summ = summaries[0] if len(summaries) == 1 else {
        "ok": all(x["ok"] for x in summaries), "bar": {"applies": False}}
    if not summ["ok"]:
        return max(r.get("error_code", 1) for r in runs if not r["ok"])
    if a.strict and summ["bar"]["applies"] and not summ["bar"]["pass"]:
        return 3
    if a.strict and a.soak and not all(x["soak"]["pass"] for x in summaries):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
