#!/usr/bin/env python3
"""tsnet's load generator: N distinct points over C loopback connections (stdlib only).

Formats (--format):

  opentsdb-telnet  ``put METRIC TS VALUE k=v ...`` lines, TS in seconds
  graphite         ``PATH VALUE TS`` lines, the tag values appended to the path
  atsd-series      ``series e:ENTITY m:METRIC=VALUE t:k=v ... ms:TS_MS`` lines
  opentsdb-http    POST /api/put, a JSON array of --batch points (default 50)
  atsd-http        POST /api/v1/command, --batch ``series`` commands (default
                   1000), one per line; the reply ``{"fail","success","total"}``
                   is checked: a nonzero fail is an error

The HTTP formats keep each connection alive and have one request in flight per
connection; every reply status is counted (``http_status``).  The line formats
send --batch lines per chunk (default 1000), then half-close and wait until the
server closes: it has read everything.

Series model: --series S series; series i has metric ``bench.m{i % M}`` with
M = min(S, --metrics) and --tags tags, the first ``series=s{i}`` (with --tags 0
the metric is ``bench.m{i}``).  Point k (0 <= k < N) is series k % S at time
ts_base + (k // S) * ts_step, so no (series, time) pair repeats, and it goes to
connection k % C.  ts_base defaults to now - span - 600 s (every point at least
10 minutes old).

Each connection is its own worker process.  Workers connect and pre-generate
their whole payload (unless --no-pregen), then all start at once; only then
does the clock run.  Sending stops at --duration-limit seconds after the first
byte; the final drain waits at most --drain-timeout more.

Paced (--rate R --duration D): N = R * D points, sent at R points a second over
all connections for D seconds: by t seconds after the start, floor(t * R) of
them are due, and each worker sends its share of the due points every few ms
(--pace-tick, 10 ms), rendering them as it goes (no pre-generation), and catches up at
once after a late tick.  The series model is the same, so time stamps go on
and no (series, time) pair repeats.  The JSON adds the achieved rate and how
far sending fell behind the schedule.

Only loopback targets are accepted: 127.0.0.0/8, ::1 or localhost.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import multiprocessing
import selectors
import socket
import sys
import time

FORMATS = ("opentsdb-telnet", "opentsdb-http", "graphite", "atsd-series", "atsd-http")
HTTP_FORMATS = ("opentsdb-http", "atsd-http")
DEFAULT_BATCH = {"opentsdb-http": 50, "atsd-http": 1000}
LINE_BATCH = 1000
HTTP_PATHS = {"opentsdb-http": "/api/put", "atsd-http": "/api/v1/command"}

EPILOG = """\
output: one JSON line on stdout, among others
  points_sent, points_accepted, points_rejected   (HTTP: by reply; lines: sent)
  t_first_byte, t_last_byte, t_done               epoch seconds over all workers
  seconds = t_done - t_first_byte, points_per_sec = points_sent / seconds
  send_seconds = t_last_byte - t_first_byte
  setup_seconds (launch to start: pre-generation, connects), loadgen_cpu_seconds
  bytes, requests, http_status, all_drained, server_said, errors
  paced (--rate): rate_requested, duration_requested, achieved_rate
  (points_sent / send_seconds), max_late_s (the most a due point waited to be
  handed to the socket), end_late_s (send_seconds - duration)

exit status: 0 every point sent and no error; 2 the server answered 404;
  64 usage error (also a non-loopback --host); 1 any other failure
"""

#: one-decimal values, cycled over the points
VALUES = [f"{(i * 7307) % 99991 / 10:.1f}" for i in range(997)]
#: bytes handed to one send() of a line-protocol payload
SEND_SLICE = 1 << 20
#: the most a server's reply headers may take
MAX_HEAD = 65536
#: the most of what line servers wrote back that is kept for server_said
SAID_KEEP = 2000
#: seconds between a paced worker's looks at its schedule (--rate); each look costs
#: a wake-up and a small send: at 60,000 points/s over 4 connections loadgen used
#: 0.16 of a core with 5 ms, 0.13 with 10 ms, 0.09 with 20 ms
PACE_TICK = 0.01


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # 2 means "404" here: usage is 64
        self.print_usage(sys.stderr)
        self.exit(64, f"{self.prog}: error: {message}\n")


# ------------------------------------------------------------------ the series

def loopback_only(host: str) -> None:
    """Raise UsageError unless ``host`` is 127.0.0.0/8, ::1 or localhost."""
    if host == "localhost":
        return
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"refusing --host {host!r}: only 127.0.0.0/8, ::1 and "
                         "localhost may be loaded") from None
    ok = (addr.version == 4 and addr in ipaddress.ip_network("127.0.0.0/8")) or \
        (addr.version == 6 and addr == ipaddress.ip_address("::1"))
    if not ok:
        raise UsageError(f"refusing --host {host!r}: not a loopback address "
                         "(only 127.0.0.0/8, ::1 and localhost)")


def series_names(i: int, cfg: dict) -> tuple[str, list[tuple[str, str]]]:
    """(metric, tags) of series ``i``."""
    if cfg["tags"] <= 0:
        return f"bench.m{i}", []
    nmetrics = max(1, min(cfg["metrics"], cfg["series"]))
    tags = [("series", f"s{i}")]
    tags += [(f"k{t}", f"v{(i * (t + 1) + t) % 10}") for t in range(1, cfg["tags"])]
    return f"bench.m{i % nmetrics}", tags


class Payload:
    """Renders one worker's share of the points, --batch points per chunk."""

    def __init__(self, cfg: dict, worker: int) -> None:
        self.cfg = cfg
        self.worker = worker
        fmt = cfg["format"]
        self.heads: list[str] = []
        self.tails: list[str] = []
        for i in range(cfg["series"]):
            metric, tags = series_names(i, cfg)
            if fmt == "opentsdb-telnet":
                self.heads.append(f"put {metric} ")
                self.tails.append("".join(f" {k}={v}" for k, v in tags) + "\n")
            elif fmt == "graphite":
                self.heads.append(".".join([metric, *(v for _k, v in tags)]) + " ")
                self.tails.append("\n")
            elif fmt in ("atsd-series", "atsd-http"):
                self.heads.append(f"series e:{cfg['entity']} m:{metric}=")
                self.tails.append("".join(f" t:{k}={v}" for k, v in tags) + " ms:")
            else:  # opentsdb-http
                tagmap = dict(tags)
                if cfg["auth_token"]:
                    tagmap["ovh.auth"] = cfg["auth_token"]
                self.heads.append(f'{{"metric":{json.dumps(metric)},"timestamp":')
                self.tails.append(',"tags":' + json.dumps(tagmap, separators=(",", ":")) + "}")

    def count(self) -> int:
        n, c, w = self.cfg["points"], self.cfg["conns"], self.worker
        return max(0, (n - w + c - 1) // c)

    def render(self, first: int, stop: int) -> bytes:
        """The points of this worker with local indices first..stop-1, as one chunk."""
        cfg = self.cfg
        nseries, base, step = cfg["series"], cfg["ts_base"], cfg["ts_step"]
        conns, w, fmt = cfg["conns"], self.worker, cfg["format"]
        heads, tails, values, nvals = self.heads, self.tails, VALUES, len(VALUES)
        ks = range(w + first * conns, w + stop * conns, conns)
        if fmt == "opentsdb-telnet":
            text = "".join([f"{heads[k % nseries]}{base + k // nseries * step} "
                            f"{values[k % nvals]}{tails[k % nseries]}" for k in ks])
        elif fmt == "graphite":
            text = "".join([f"{heads[k % nseries]}{values[k % nvals]} "
                            f"{base + k // nseries * step}{tails[k % nseries]}" for k in ks])
        elif fmt == "atsd-series":
            text = "".join([f"{heads[k % nseries]}{values[k % nvals]}{tails[k % nseries]}"
                            f"{(base + k // nseries * step) * 1000}\n" for k in ks])
        elif fmt == "atsd-http":
            text = "\n".join([f"{heads[k % nseries]}{values[k % nvals]}{tails[k % nseries]}"
                              f"{(base + k // nseries * step) * 1000}" for k in ks])
        else:
            text = "[" + ",".join([f'{heads[k % nseries]}{base + k // nseries * step},'
                                   f'"value":{values[k % nvals]}{tails[k % nseries]}'
                                   for k in ks]) + "]"
        body = text.encode()
        if fmt not in HTTP_FORMATS:
            return body
        return self.http_head(len(body)) + body

    def http_head(self, length: int) -> bytes:
        cfg = self.cfg
        ctype = "application/json" if cfg["format"] == "opentsdb-http" else "text/plain"
        lines = [f"POST {cfg['http_path']} HTTP/1.1", f"Host: {cfg['host_header']}",
                 f"Content-Type: {ctype}", f"Content-Length: {length}"]
        token = cfg["auth_token"]
        if token and cfg["format"] == "atsd-http":
            if ":" in token:  # token id and key: ATSD's own HTTP Basic
                lines.append("Authorization: Basic " + base64.b64encode(token.encode()).decode())
            else:
                lines.append(f"Authorization: Bearer {token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def chunks(self):
        """(bytes, points) per --batch points, in order."""
        total, batch = self.count(), self.cfg["batch"]
        for first in range(0, total, batch):
            stop = min(total, first + batch)
            yield self.render(first, stop), stop - first


def paced_chunks(payload: Payload, res: dict, t0: float):
    """This worker's chunks on the --rate schedule, rendered as they fall due.

    Global point k is due ``(k + 1) / rate`` seconds after ``t0``; the worker's
    points are k = worker + j * conns.  Yields ``(bytes, points)`` for what is
    due (at most --batch points a chunk; an HTTP request waits for a whole
    batch), or a float: the time before which nothing is due.  Records in
    ``res["max_late_s"]`` how long the oldest due point had waited when sent.
    """
    cfg = payload.cfg
    rate, conns, w, batch = cfg["rate"], cfg["conns"], payload.worker, cfg["batch"]
    whole = cfg["format"] in HTTP_FORMATS
    total = payload.count()
    sent = 0
    while sent < total:
        now = time.time()
        due = max(0, (min(cfg["points"], int((now - t0) * rate)) - w + conns - 1) // conns)
        need = min(batch, total - sent) if whole else 1
        if due - sent >= need:
            late = now - (t0 + (w + sent * conns + 1) / rate)
            if late > res["max_late_s"]:
                res["max_late_s"] = late
            stop = min(due, sent + batch)
            yield payload.render(sent, stop), stop - sent
            sent = stop
        else:
            # when the next point (or request) falls due, a tick away at the least
            last = sent + need - 1
            yield max(now + cfg["pace_tick"], t0 + (w + last * conns + 1) / rate)


# ------------------------------------------------------------------ HTTP replies

class Reply:
    """Reads HTTP/1.1 responses off one keep-alive socket, each bounded in time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self, deadline: float) -> None:
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no complete HTTP reply in time")
        self.sock.settimeout(left)
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("the server closed the connection mid-reply")
        self.buf += data

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._more(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self, deadline: float) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("HTTP chunk line too long")
            self._more(deadline)
        out, self.buf = self.buf[:i], self.buf[i + 2:]
        return out

    def read(self, deadline: float) -> tuple[int, dict[str, str], bytes]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("HTTP reply headers too long")
            self._more(deadline)
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        first, *rest = head.split("\r\n")
        parts = first.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP status line: {first[:100]!r}")
        status = int(parts[1])
        headers = {}
        for ln in rest:
            name, _, value = ln.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            pieces = []
            for _ in range(1_000_000):  # bounded; each piece also by the deadline
                size = int(self._line(deadline).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers end with an empty line
                        if not self._line(deadline):
                            break
                    break
                pieces.append(self._take(size, deadline))
                self._line(deadline)
            return status, headers, b"".join(pieces)
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]), deadline)
        # delimited by close
        try:
            while True:
                self._more(deadline)
        except ConnectionError:
            pass
        body, self.buf = self.buf, b""
        headers["connection"] = "close"
        return status, headers, body


# ------------------------------------------------------------------ one worker

def connect(cfg: dict) -> socket.socket:
    sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def note(res: dict, msg: str) -> None:
    if len(res["errors"]) < 10:
        res["errors"].append(msg)


def send_lines(cfg: dict, sock: socket.socket, source, res: dict, deadline: float) -> None:
    """Send every chunk, half-close, read until the server closes; one thread,
    non-blocking, reading whatever the server says back while sending."""
    said = bytearray()
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    pending = memoryview(b"")
    points_in = 0  # points of the chunk being sent
    chunks = iter(source)
    writing = True
    drain_by = None
    wake = None  # paced: nothing is due before then, so the socket's writability waits
    try:
        while True:
            now = time.time()
            if wake is not None and now >= wake:
                wake = None
                if writing:
                    sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            if writing and now > deadline:
                note(res, "duration limit reached before every point was sent")
                writing = False
            if not writing and drain_by is None:
                res["t_last_sent"] = now
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError as e:
                    note(res, f"shutdown: {e!r}")
                drain_by = now + cfg["drain_timeout"]
                sel.modify(sock, selectors.EVENT_READ)
            limit = drain_by if drain_by is not None else deadline
            if now > limit:
                note(res, f"the server did not close within --drain-timeout "
                          f"{cfg['drain_timeout']} s")
                break
            until = limit if wake is None or not writing else min(limit, wake)
            for _key, events in sel.select(min(1.0, max(0.0, until - now))):
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    if data == b"":
                        res["drained"] = True
                        res["t_eof"] = time.time()
                        if writing:
                            note(res, "the server closed the connection while we sent")
                        return
                    if data:
                        res["server_bytes"] += len(data)
                        if len(said) < SAID_KEEP:
                            said += data[:SAID_KEEP - len(said)]
                            res["server_said"] = said[:300].decode("utf-8", "replace")
                if writing and wake is None and events & selectors.EVENT_WRITE:
                    for _ in range(64):  # bounded burst, then look at the socket again
                        if not pending:
                            if points_in:
                                res["points_sent"] += points_in
                                points_in = 0
                            nxt = next(chunks, None)
                            if nxt is None:
                                writing = False
                                break
                            if isinstance(nxt, float):  # paced: nothing due yet
                                wake = nxt
                                sel.modify(sock, selectors.EVENT_READ)
                                break
                            data, points_in = nxt
                            res["chunks"] += 1
                            pending = memoryview(data)
                        try:
                            n = sock.send(pending[:SEND_SLICE])
                        except (BlockingIOError, InterruptedError):
                            break
                        res["bytes"] += n
                        pending = pending[n:]
    finally:
        sel.close()
        res["points_accepted"] = res["points_sent"]  # no per-point replies on lines
        res.setdefault("t_last_sent", time.time())
        res.setdefault("t_eof", time.time())


def send_http(cfg: dict, sock: socket.socket, source, res: dict, deadline: float) -> None:
    """One request in flight: send a batch, read its reply, next; keep-alive."""
    reply = Reply(sock)
    atsd = cfg["format"] == "atsd-http"
    try:
        for item in source:
            if isinstance(item, float):  # paced: nothing due before then
                time.sleep(max(0.0, min(item, deadline) - time.time()))
                continue
            data, npoints = item
            if time.time() > deadline:
                note(res, "duration limit reached before every point was sent")
                break
            if sock is None:  # the server closed after its last reply
                sock = connect(cfg)
                reply = Reply(sock)
                res["reconnects"] += 1
            sock.settimeout(max(0.1, deadline - time.time()))
            sock.sendall(data)
            res["bytes"] += len(data)
            res["requests"] += 1
            res["points_sent"] += npoints
            status, headers, body = reply.read(deadline + cfg["drain_timeout"])
            key = str(status)
            res["http_status"][key] = res["http_status"].get(key, 0) + 1
            text = body[:300].decode("utf-8", "replace")
            if not 200 <= status < 300:
                res["points_rejected"] += npoints
                note(res, f"HTTP {status}: {text}")
            elif atsd:
                try:
                    counts = json.loads(body)
                    fail, success = int(counts["fail"]), int(counts["success"])
                except (ValueError, KeyError, TypeError):
                    res["points_rejected"] += npoints
                    note(res, f"HTTP {status} without fail/success counts: {text}")
                else:
                    res["points_accepted"] += success
                    res["points_rejected"] += fail
                    if fail or success != npoints:
                        note(res, f"{cfg['http_path']}: {fail} of {npoints} commands failed "
                                  f"({success} succeeded): {text}")
            else:
                res["points_accepted"] += npoints
            if not res["server_said"] and text:
                res["server_said"] = text
            if headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
        res["drained"] = True
    finally:
        res["t_last_sent"] = res["t_eof"] = time.time()
        if sock is not None:
            sock.close()


def worker(cfg: dict, index: int, pipe, start) -> None:
    """One connection: set up, report ready, wait for the start, send, report."""
    res: dict = {"worker": index, "points_sent": 0, "points_accepted": 0, "points_rejected": 0,
                 "bytes": 0, "requests": 0, "chunks": 0, "http_status": {}, "reconnects": 0,
                 "server_bytes": 0, "server_said": "", "drained": False, "errors": [],
                 "max_late_s": 0.0}
    sock = None
    source = None
    try:
        payload = Payload(cfg, index)
        t0 = time.time()
        source = list(payload.chunks()) if cfg["pregen"] else \
            None if cfg["rate"] else payload.chunks()
        if cfg["pregen"] and cfg["format"] not in HTTP_FORMATS and source:
            # one buffer: the sender hands the kernel big slices of it
            source = [(b"".join(c for c, _n in source), sum(n for _c, n in source))]
        res["pregen_seconds"] = round(time.time() - t0, 3)
        sock = connect(cfg)
        if cfg["auth_token"] and cfg["format"] == "opentsdb-telnet":
            sock.sendall(f"auth {cfg['auth_token']}\n".encode())
    except Exception as e:  # still take part in the start, so that nothing waits on us
        note(res, f"setup: {e!r}")
    pipe.send("ready")
    if not start.wait(cfg["setup_limit"] + 30):
        note(res, "the start never came")
    if res["errors"]:
        if sock is not None:
            sock.close()
        pipe.send(res)
        return
    cpu0 = time.process_time()
    res["t_first"] = time.time()
    deadline = res["t_first"] + cfg["duration_limit"]
    if cfg["rate"]:
        source = paced_chunks(payload, res, res["t_first"])
    try:
        if cfg["format"] in HTTP_FORMATS:
            send_http(cfg, sock, source, res, deadline)
        else:
            send_lines(cfg, sock, source, res, deadline)
    except Exception as e:
        note(res, f"send: {e!r}")
    finally:
        try:
            sock.close()
        except OSError:
            pass
    res["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    pipe.send(res)


# ------------------------------------------------------------------ the run

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="loadgen.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--host", default="127.0.0.1",
                   help="target: 127.0.0.0/8, ::1 or localhost only (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="target TCP port")
    p.add_argument("--format", choices=FORMATS, required=True, help="wire format, see above")
    p.add_argument("--points", type=int, default=None,
                   help="points in all (default 100000; paced: RATE * DURATION)")
    p.add_argument("--conns", type=int, default=4,
                   help="connections, one worker process each (default 4)")
    p.add_argument("--series", type=int, default=1000, help="distinct series (default 1000)")
    p.add_argument("--tags", type=int, default=2, help="tags per series (default 2)")
    p.add_argument("--metrics", type=int, default=10, help="distinct metrics (default 10)")
    p.add_argument("--batch", type=int, default=None,
                   help="points per HTTP request (opentsdb-http 50, atsd-http 1000) or "
                        "lines per generated chunk (1000)")
    p.add_argument("--entity", default="bench", help="ATSD entity (default bench)")
    p.add_argument("--auth-token", default=None,
                   help="opentsdb-telnet: `auth TOKEN` first; opentsdb-http: an ovh.auth "
                        "tag on every point; atsd-http: Authorization Basic (ID:KEY) or "
                        "Bearer; not for graphite and atsd-series")
    p.add_argument("--http-path", default=None,
                   help="request path (default /api/put, or /api/v1/command for atsd-http)")
    p.add_argument("--ts-base", type=int, default=None,
                   help="first timestamp, epoch seconds (default now - span - 600)")
    p.add_argument("--ts-step", type=int, default=1,
                   help="seconds between the points of a series (default 1)")
    p.add_argument("--rate", type=float, default=None, metavar="POINTS_PER_SEC",
                   help="paced: send this many points a second over all connections "
                        "(with --duration; no pre-generation)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="paced: send for this long at --rate (RATE * SECONDS points)")
    p.add_argument("--pace-tick", type=float, default=PACE_TICK, metavar="SECONDS",
                   help=f"paced: seconds between looks at the schedule (default {PACE_TICK})")
    p.add_argument("--duration-limit", type=float, default=None,
                   help="seconds after the first byte when sending stops (default 300; "
                        "paced: 1.5 * DURATION + 30)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to wait for the server to close or answer at the end "
                        "(default 30)")
    p.add_argument("--setup-limit", type=float, default=600.0,
                   help="seconds for the workers to connect and pre-generate (default 600)")
    p.add_argument("--no-pregen", dest="pregen", action="store_false",
                   help="render the payload while sending, not before the clock starts")
    a = p.parse_args(argv)
    if a.batch is None:
        a.batch = DEFAULT_BATCH.get(a.format, LINE_BATCH)
    if (a.rate is None) != (a.duration is None):
        p.error("--rate and --duration go together")
    if a.rate is not None:
        if min(a.rate, a.duration, a.pace_tick) <= 0:
            p.error("--rate, --duration and --pace-tick must be > 0")
        if a.points is not None:
            p.error("--points is RATE * DURATION with --rate: drop --points")
        a.points = int(a.rate * a.duration)
        a.pregen = False  # generated as it falls due
        if a.duration_limit is None:
            a.duration_limit = 1.5 * a.duration + 30
    if a.points is None:
        a.points = 100_000
    if a.duration_limit is None:
        a.duration_limit = 300.0
    if min(a.port, a.points, a.conns, a.series, a.batch, a.ts_step, a.metrics) < 1 or a.tags < 0:
        p.error("--port, --points, --conns, --series, --batch, --ts-step and --metrics must "
                "be >= 1, --tags >= 0")
    if a.conns > 256:
        p.error("--conns above 256 is not a benchmark of a server")
    if min(a.duration_limit, a.drain_timeout, a.setup_limit) <= 0:
        p.error("--duration-limit, --drain-timeout and --setup-limit must be > 0")
    if a.auth_token and a.format in ("graphite", "atsd-series"):
        p.error(f"--format {a.format} carries no credentials: drop --auth-token")
    try:
        loopback_only(a.host)
    except UsageError as e:
        p.error(str(e))
    if a.http_path is None:
        a.http_path = HTTP_PATHS.get(a.format, "/")
    return a


def collect(a: argparse.Namespace) -> tuple[list[dict], float, list[str]]:
    """Run the workers; their results, the setup time, and the main process's errors."""
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    host_header = f"[{a.host}]:{a.port}" if ":" in a.host else f"{a.host}:{a.port}"
    cfg = {**vars(a), "host_header": host_header}
    start = ctx.Event()
    pipes, procs, errors = [], [], []
    t_launch = time.time()
    for w in range(a.conns):
        mine, theirs = ctx.Pipe(duplex=False)
        pr = ctx.Process(target=worker, args=(cfg, w, theirs, start), daemon=True)
        pr.start()
        theirs.close()
        pipes.append(mine)
        procs.append(pr)
    results: list[dict] = []
    try:
        ready_by = t_launch + a.setup_limit
        for w, pipe in enumerate(pipes):
            if not pipe.poll(max(0.0, ready_by - time.time())):
                errors.append(f"worker {w} not ready within --setup-limit {a.setup_limit} s")
                break
            pipe.recv()
        setup = time.time() - t_launch
        start.set()
        done_by = time.time() + a.duration_limit + a.drain_timeout + 30
        for w, pipe in enumerate(pipes):
            try:
                if pipe.poll(max(0.0, done_by - time.time())):
                    results.append(pipe.recv())
                else:
                    errors.append(f"worker {w} did not report in time")
            except EOFError:
                errors.append(f"worker {w} died (exit {procs[w].exitcode})")
    finally:
        for pr in procs:  # our own children, by their Process handle
            pr.join(5)
            if pr.is_alive():
                pr.terminate()
                pr.join(5)
    return results, setup, errors


def summary(a: argparse.Namespace, results: list[dict], setup: float,
            errors: list[str]) -> dict:
    def total(key: str) -> int:
        return sum(r[key] for r in results)

    errors = [*errors, *(f"conn {r['worker']}: {e}" for r in results for e in r["errors"])]
    firsts = [r["t_first"] for r in results if "t_first" in r]
    lasts = [r["t_last_sent"] for r in results if "t_last_sent" in r]
    dones = [r["t_eof"] for r in results if "t_eof" in r]
    t_first = min(firsts) if firsts else None
    t_last = max(lasts) if lasts else None
    t_done = max(dones) if dones else t_last
    secs = t_done - t_first if t_first and t_done else None
    send_secs = t_last - t_first if t_first and t_last else None
    sent = total("points_sent")
    status: dict[str, int] = {}
    for r in results:
        for k, v in r["http_status"].items():
            status[k] = status.get(k, 0) + v
    span = -(-a.points // a.series) * a.ts_step
    is_http = a.format in HTTP_FORMATS
    return {
        "format": a.format, "host": a.host, "port": a.port, "points_requested": a.points,
        "points_sent": sent, "points_accepted": total("points_accepted"),
        "points_rejected": total("points_rejected"),
        "seconds": round(secs, 4) if secs else None,
        "points_per_sec": round(sent / secs, 1) if secs else None,
        "send_seconds": round(send_secs, 4) if send_secs else None,
        "send_points_per_sec": round(sent / send_secs, 1) if send_secs else None,
        "conns": a.conns, "batch": a.batch, "series": a.series, "tags": a.tags,
        "metrics": a.metrics, "bytes": total("bytes"),
        "requests": total("requests") if is_http else None,
        "http_status": status or None, "reconnects": total("reconnects"),
        "all_drained": len(results) == a.conns and all(r["drained"] for r in results),
        "server_bytes": total("server_bytes"),
        "server_said": next((r["server_said"] for r in results if r["server_said"]), ""),
        "pregen": a.pregen, "setup_seconds": round(setup, 3),
        "pregen_seconds_max": max((r.get("pregen_seconds", 0) for r in results), default=None),
        "loadgen_cpu_seconds": round(sum(r.get("cpu_seconds", 0) for r in results), 3),
        "t_first_byte": t_first, "t_last_byte": t_last, "t_done": t_done,
        "ts_base": a.ts_base, "ts_step": a.ts_step, "ts_span": span,
        "errors": errors[:20],
        **(paced_summary(a, results, sent, send_secs) if a.rate else {}),
    }


def paced_summary(a: argparse.Namespace, results: list[dict], sent: int,
                  send_secs: float | None) -> dict:
    """How the paced send went: the rate it achieved and how far it fell behind."""
    return {
        "rate_requested": a.rate, "duration_requested": a.duration,
        "achieved_rate": round(sent / send_secs, 1) if send_secs else None,
        "max_late_s": round(max((r["max_late_s"] for r in results), default=0.0), 4),
        "end_late_s": round(send_secs - a.duration, 4) if send_secs else None,
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    span = -(-a.points // a.series) * a.ts_step
    if a.ts_base is None:
        a.ts_base = int(time.time()) - span - 600
    results, setup, errors = collect(a)
    out = summary(a, results, setup, errors)
    print(json.dumps(out), flush=True)
    if (out["http_status"] or {}).get("404"):
        return 2
    return 0 if out["points_sent"] == a.points and not out["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
