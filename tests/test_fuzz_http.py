"""Every HTTP route, fuzzed over real sockets against one real ``twistd -n tsnet``:
OpenTSDB's API (on the ``http`` listener and on the ``opentsdb`` port, whose
first byte decides HTTP), ATSD's command and read-back API, ts-store's REST
API, ``/metrics`` and ``/health``, and the HTTP framing itself.

Each mutated request (tests/helpers/fuzz.py, seeds in tests/fuzz_corpus/) is
sent between two valid writes of its family with their own names and values.
A reply must carry no 5xx that no spec prescribes (a 503 "storage
unavailable" is one), no traceback nor Python exception name, a JSON error
object where it is JSON, and no JSONP callback reflected as sent; the server
log must stay free of tracebacks and critical entries; and at the end every
neighbour write must be readable through the read APIs.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers.fuzz import (
    ADMIN_KEY,
    T0,
    Case,
    Findings,
    FuzzServer,
    Mutator,
    Reply,
    fuzz_server,
    http_raw,
    http_request,
    load_seeds,
    log_problems,
    looks_complete,
    preview,
    reply_problems,
    scaled,
)

pytestmark = pytest.mark.subprocess

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    with fuzz_server(tmp_path_factory.mktemp("fuzz-http")) as s:
        for name, kind in (("fz-http", "json"), ("fz-http-schema", "schema"),
                           ("fz-http-text", "text")):
            s.create_store(name, kind)
        _, r = http_request(s.http, "PUT", "/api/stores/fz-http-schema/schema", json.dumps(
            {"fields": [{"index": 1, "name": "temp", "type": "float64"},
                        {"index": 2, "name": "unit", "type": "string"},
                        {"index": 3, "name": "nb", "type": "int64"}]}).encode(),
            {"X-API-Key": s.stores["fz-http-schema"], **JSON})
        assert r.status == 200, r.body
        # something for the queries to find: OpenTSDB and ATSD reference data
        ref = [{"metric": "fz.ref", "timestamp": T0 + i * 60, "value": i * 1.5,
                "tags": {"host": "ab"[i % 2], "dc": "eu"}} for i in range(20)]
        _, r = http_request(s.http, "POST", "/api/put", json.dumps(ref).encode(), JSON)
        assert r.status == 204, r.body
        commands = "\n".join(
            [f"series e:fz-ref m:fz.atref={i} t:k=a ms:{(T0 + i) * 1000}" for i in range(10)]
            + [f"property e:fz-ref t:disk k:mount=/var v:size={T0} ms:{T0 * 1000}",
               f'message e:fz-ref t:type=app m:"hello" ms:{T0 * 1000}',
               "metric m:fz.atref l:ref", "entity e:fz-ref l:ref"])
        _, r = http_request(s.http, "POST", "/api/v1/command", commands.encode())
        assert r.status == 200 and r.json()["fail"] == 0, r.body
        yield s


# -- neighbours: valid writes of each family, read back at the end ------------------------------


@dataclass
class Neighbours:
    """The valid writes framing the fuzz inputs of one test, and what they stored."""

    srv: FuzzServer
    findings: Findings
    family: str
    n: int = 0
    opentsdb: dict[str, int] = field(default_factory=dict)
    atsd: dict[str, int] = field(default_factory=dict)
    tsstore: dict[int, int] = field(default_factory=dict)

    def write(self, after: Case | None = None) -> None:
        """One neighbour write (``after`` names the fuzz input it follows)."""
        self.n += 1
        n, port = self.n, self.srv.http
        family = self.family
        try:
            if family == "atsd":
                metric = f"fuzz.nb.{self.findings.target}.{n}".lower()
                _, r = http_request(port, "POST", "/api/v1/command",
                                    f"series e:fuzz-nb m:{metric}={n} ms:{T0 * 1000}".encode())
                ok = r.status == 200 and r.json().get("success") == 1
                if ok:
                    self.atsd[metric] = n
            elif family == "tsstore":
                _, r = http_request(port, "POST", "/api/stores/fz-http/data",
                                    json.dumps({"data": {"nb": n}}).encode(),
                                    {"X-API-Key": self.srv.stores["fz-http"], **JSON})
                ok = r.status == 201
                if ok:
                    self.tsstore[r.json()["timestamp"]] = n
            else:
                metric = f"fuzz.nb.{self.findings.target}.{n}"
                _, r = http_request(port, "POST", "/api/put", json.dumps(
                    {"metric": metric, "timestamp": T0, "value": n,
                     "tags": {"nb": "x"}}).encode(), JSON)
                ok = r.status == 204
                if ok:
                    self.opentsdb[metric] = n
        except OSError as e:
            r, ok = Reply(None, body=repr(e).encode()), False
        if not ok:
            self.findings.add(after, f"the {family} neighbour write after it failed: "
                                     f"HTTP {r.status} {preview(r.body, 200)}")

    def missing(self) -> list[str]:
        """The neighbour writes the read APIs do not return."""
        port, out = self.srv.http, []
        metrics = sorted(self.opentsdb)
        for i in range(0, len(metrics), 40):
            batch = metrics[i:i + 40]
            got: dict[str, Any] = {}
            for chunk in [batch] + [[m] for m in batch]:
                body = json.dumps({"start": T0, "end": T0 + 1, "queries": [
                    {"aggregator": "sum", "metric": m} for m in chunk]}).encode()
                _, r = http_request(port, "POST", "/api/query", body, JSON)
                if r.status == 200:
                    got.update({x["metric"]: x["dps"].get(str(T0)) for x in r.json()})
                    if chunk is batch:
                        break
            out += [f"{m}={self.opentsdb[m]} (read {got.get(m)!r})" for m in batch
                    if got.get(m) != self.opentsdb[m]]
        metrics = sorted(self.atsd)
        for i in range(0, len(metrics), 100):
            body = json.dumps([{"entity": "fuzz-nb", "metric": m, "startDate": T0 * 1000,
                                "endDate": T0 * 1000 + 1, "timeFormat": "milliseconds"}
                               for m in metrics[i:i + 100]]).encode()
            _, r = http_request(port, "POST", "/api/v1/series/query", body, JSON)
            got = {s["metric"]: s["data"][0]["v"] for s in r.json() if s["data"]} \
                if r.status == 200 else {}
            out += [f"{m}={self.atsd[m]} (read {got.get(m)!r})" for m in metrics[i:i + 100]
                    if got.get(m) != self.atsd[m]]
        for t, n in sorted(self.tsstore.items()):
            _, r = http_request(port, "GET", f"/api/stores/fz-http/data/time/{t}",
                                headers={"X-API-Key": self.srv.stores["fz-http"]})
            got = r.json().get("data") if r.status == 200 else r.status
            if got != {"nb": n}:
                out.append(f"fz-http @{t}: nb={n} (read {got!r})")
        return out


def family_of(target: bytes, port_family: str | None = None) -> str:
    """Whose error dialect a request gets: the opentsdb port's is always OpenTSDB's."""
    if port_family:
        return port_family
    path = target.split(b"?", 1)[0].lower()
    if path.startswith(b"/api/v1/command") or path.startswith(b"/api/v1/series") \
            or path.startswith(b"/api/v1/properties") or path.startswith(b"/api/v1/messages") \
            or path.startswith(b"/api/v1/entities") or path.startswith(b"/api/v1/metrics"):
        return "atsd"
    if path.startswith(b"/api/stores") or path.startswith(b"/health"):
        return "tsstore"
    if path.startswith(b"/api/"):
        return "opentsdb"
    return "plain"


class Fuzzing:
    """Sends one test's cases, each after a neighbour write, and checks replies and log."""

    def __init__(self, srv: FuzzServer, target: str, family: str) -> None:
        self.srv = srv
        self.findings = Findings(target)
        self.neighbours = Neighbours(srv, self.findings, family)
        self.failures_in_a_row = 0
        self.neighbours.write()

    def send(self, case: Case, port: int, data: bytes, family: str,
             quiet: float | None = None, answered: bool = True) -> Reply | None:
        """``data`` (a whole request) to ``port``; then a neighbour, then the log."""
        if self.failures_in_a_row >= 3:
            return None  # the server stopped answering: reported once, not per case
        head = data.find(b"\r\n\r\n")
        if head < 0 or head > 16384:
            answered = False  # over the head limit: the server may close without a word
        try:
            reply = http_raw(port, data, timeout=20, quiet=quiet)
            self.failures_in_a_row = 0
        except (TimeoutError, OSError) as e:
            self.failures_in_a_row += 1
            self.findings.add(case, f"no reply: {e!r}", data)
            reply = None
        if reply is not None:
            for problem in reply_problems(family, reply, data, answered):
                self.findings.add(case, problem, data)
        self.neighbours.write(case)
        for problem in self.srv.new_log_problems():
            self.findings.add(case, f"server log: {problem}", data)
        return reply

    def finish(self) -> None:
        for m in self.neighbours.missing():
            self.findings.add(None, f"a neighbour write is not readable: {m}")
        self.findings.check()


def request_bytes(method: bytes, target: bytes, body: bytes = b"",
                  headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [k + b": " + v for k, v in headers or ()]
    names = {k.lower() for k, _ in headers or ()}
    if b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    if b"connection" not in names:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_seed(line: str) -> tuple[bytes, bytes, bytes]:
    """``METHOD TARGET [BODY]`` of an ``*_http.txt`` seed."""
    parts = line.split(" ", 2)
    return parts[0].encode(), parts[1].encode(), (parts[2].encode() if len(parts) > 2 else b"")


def encode_target(raw: bytes, rng_pick: int) -> bytes:
    """A mutated target as a client would send it: mostly percent-encoded where a
    request line cannot hold the bytes, sometimes raw (the framing's problem)."""
    if rng_pick % 3 == 0:
        return raw
    return urllib.parse.quote_from_bytes(raw, safe="/?&=%:+,{}*@$!~'()[];|").encode()


def mutated_requests(name: str, seeds: tuple[str, ...], n: int,
                     subst: dict[str, str] | None = None,
                     known: tuple[tuple[bytes, bytes, bytes], ...] = (),
                     ) -> Iterator[tuple[Case, bytes, bytes, bytes]]:
    """(case, method, target, body): first the ``known`` requests (the smallest
    inputs of defects found so far, so they always run), then the seed's body
    or its target mutated."""
    for i, (method, target, body) in enumerate(known):
        yield Case(f"{name}-known", i, "known", method + b" " + target + b" " + body), \
            method, target, body
    parsed = []
    for s in seeds:
        for k, v in (subst or {}).items():
            s = s.replace("{" + k + "}", v)
        parsed.append(parse_seed(s))
    bodies = Mutator(f"{name}-body", [b for _, _, b in parsed if b] or [b"{}"], json_aware=True)
    targets = Mutator(f"{name}-target", [t for _, t, _ in parsed])
    pick = bodies.rng
    for i in range(n):
        method, target, body = parsed[pick.randrange(len(parsed))] if i >= len(parsed) \
            else parsed[i]
        if i < len(parsed):
            op = "seed"
        elif body and pick.random() < 0.6:
            op, body = bodies.mutate(body)
        else:
            op, target = targets.mutate(target)
            target = encode_target(target, i)
        yield Case(name, i, op, method + b" " + target + b" " + body), method, target, body


# -- OpenTSDB -------------------------------------------------------------------------------

#: 5000 digits: past Python's int/str conversion limit (4300)
DIGITS = b"9" * 5000
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000

#: the smallest inputs of the defects found so far (HEAD of the hardening issue)
KNOWN_PUTS = (
    b'{"metric":"m","timestamp":1700000000,"value":1,"tags":{"h":[]}}',
    b'{"metric":[],"timestamp":1700000000,"value":1,"tags":{"h":"a"}}',
    b'{"metric":"m","timestamp":' + DIGITS + b',"value":1,"tags":{"h":"a"}}',
    b'{"metric":"m","timestamp":"' + DIGITS + b'","value":1,"tags":{"h":"a"}}',
    b"[" * 100_000,
)
KNOWN_READS = (
    (b"GET", b"/api/query?start=" + DIGITS + b"&m=sum:fz.ref", b""),
    (b"GET", b"/api/query?start=" + DIGITS + b"ms&m=sum:fz.ref", b""),
    (b"GET", b"/api/query?start=" + DIGITS + b"s-ago&m=sum:fz.ref", b""),
    (b"GET", b"/api/query?start=1h-ago&m=sum:4294967296m-avg:fz.ref", b""),
    (b"GET", b"/api/query?start=1&end=9223372036854&m=sum:fz.ref", b""),
    (b"GET", b"/api/search/lookup?m=fz.ref&limit=" + DIGITS, b""),
    (b"GET", b"/api/suggest?type=metrics&max=" + DIGITS, b""),
    (b"POST", b"/api/query",
     b'{"start":1,"queries":[{"aggregator":"sum","metric":"fz.ref","filters":1}]}'),
    (b"POST", b"/api/query", DEEP),
    (b"GET", b"/api/query?start=1h-ago&m=sum:fz.ref&jsonp=%3Cscript%3Ealert(1)%3C/script%3E",
     b""),
)


def test_opentsdb_put(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "put", "opentsdb")
    seeds = [s.encode() for s in load_seeds("opentsdb_put.txt")]
    flags = [b"", b"", b"", b"?details", b"?summary", b"?sync", b"?sync_timeout=100",
             b"?details&sync_timeout=abc"]
    codings = [b"", b"", b"", b"gzip", b"gzip-bad", b"deflate", b"br"]
    ctypes = [b"application/json", b"application/json; charset=utf-8",
              b"application/json; charset=latin-1", b"application/json; charset=bogus",
              b"application/json; charset=utf-16", b"text/plain"]
    m = Mutator("put", seeds, json_aware=True)
    rng = m.rng
    known = [Case("put-known", i, "known", body) for i, body in enumerate(KNOWN_PUTS)]
    for case in known + m.cases(scaled(300)):
        body = case.data
        if case.op == "known":  # as plain as can be: the fast path's kind of request
            fz.send(case, srv.http, request_bytes(b"POST", b"/api/put", body, [
                (b"Content-Type", b"application/json")]), "opentsdb")
            continue
        headers = [(b"Content-Type", rng.choice(ctypes))]
        coding = rng.choice(codings)
        if coding == b"gzip":
            body = gzip.compress(body)
        elif coding == b"gzip-bad":
            body, coding = gzip.compress(body)[:-6] + b"xx", b"gzip"
        elif coding == b"deflate":
            body = zlib.compress(body)
        if coding:
            headers.append((b"Content-Encoding", coding))
        target = b"/api/put" + rng.choice(flags)
        port, family = ((srv.ports["opentsdb"], "opentsdb") if case.index % 3 == 0
                        else (srv.http, family_of(target)))
        fz.send(case, port, request_bytes(b"POST", target, body, headers), family)
    fz.finish()


def test_opentsdb_reads(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "read", "opentsdb")
    for case, method, target, body in mutated_requests(
            "read", load_seeds("opentsdb_http.txt"), scaled(300), known=KNOWN_READS):
        port, family = ((srv.ports["opentsdb"], "opentsdb") if case.index % 4 == 0
                        else (srv.http, family_of(target)))
        if b"jsonp=" not in target and case.index % 7 == 0:
            target += b"&jsonp=" + urllib.parse.quote(
                ["cb", "<script>alert(1)</script>", "a b", "x\r\nSet-Cookie: y"][
                    case.index % 4]).encode()
        fz.send(case, port, request_bytes(method, target, body, [
            (b"Content-Type", b"application/json")]), family)
    fz.finish()


# -- ATSD -----------------------------------------------------------------------------------


def test_atsd_command(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "atsd-cmd", "atsd")
    seeds = [s.encode() for s in load_seeds("atsd_command.txt") + load_seeds("atsd.txt")]
    m = Mutator("atsd-cmd", seeds)
    for case in m.cases(scaled(200)):
        body, headers = case.data, [(b"Content-Type", b"text/plain")]
        if case.index % 5 == 4:
            body = gzip.compress(body)
            headers.append((b"Content-Encoding", b"gzip"))
        target = b"/api/v1/command" + (b"?commit=true" if case.index % 3 else b"")
        fz.send(case, srv.http, request_bytes(b"POST", target, body, headers), "atsd")
    fz.finish()


def _series_query(**fields: Any) -> tuple[bytes, bytes, bytes]:
    q = {"entity": "fz-ref", "metric": "fz.atref", "startDate": 0, "endDate": "now", **fields}
    return b"POST", b"/api/v1/series/query", json.dumps([q]).encode()


KNOWN_ATSD_READS = (
    _series_query(startDate=float("nan")),
    _series_query(startDate=float("-inf")),
    _series_query(startDate="9" * 5000),
    _series_query(startDate="now - " + "9" * 5000 + " * day"),
    _series_query(interval={"count": float("inf"), "unit": "DAY"}, startDate=None),
    _series_query(endDate=9223372036854775808),
    _series_query(endDate=99999999999999),
    (b"POST", b"/api/v1/messages/query", b"[" + DEEP + b"]"),
)


def test_atsd_reads(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "atsd-read", "atsd")
    for case, method, target, body in mutated_requests(
            "atsd-read", load_seeds("atsd_http.txt"), scaled(200), known=KNOWN_ATSD_READS):
        fz.send(case, srv.http, request_bytes(method, target, body, [
            (b"Content-Type", b"application/json")]), family_of(target))
    fz.finish()


# -- ts-store --------------------------------------------------------------------------------


STORES = {"store": "fz-http", "schema": "fz-http-schema", "text": "fz-http-text"}
_NAMED = re.compile(rb"/api/stores/([^/?]+)")


KNOWN_TSSTORE = (
    (b"PUT", b"/api/stores/fz-http-schema/schema", DEEP),
    (b"POST", b"/api/stores/fz-http/ws/connections", DEEP),
    (b"POST", b"/api/stores/fz-http/data", b'{"timestamp":' + DIGITS + b',"data":1}'),
    (b"POST", b"/api/stores/fz-http/data", b'{"data":' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
    (b"GET", b"/api/stores/fz-http/data/time/" + DIGITS, b""),
    (b"GET", b"/api/stores/fz-http/data/range?since=" + DIGITS + b"h", b""),
    (b"GET", b"/api/stores/fz-http/data/range?start_time=1&end_time=" + DIGITS, b""),
    (b"GET", b"/api/stores/fz-http/data/newest?agg_window=" + DIGITS + b"s", b""),
)


def test_tsstore_rest(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "tsstore", "tsstore")
    for case, method, target, body in mutated_requests(
            "tsstore", load_seeds("tsstore_http.txt"), scaled(300), STORES,
            known=KNOWN_TSSTORE):
        if b"/reset" in target.lower() or method == b"DELETE":
            continue  # would drop the neighbours, as it should
        named = _NAMED.match(target)
        store = named.group(1).decode("latin-1") if named else ""
        key = srv.stores.get(store, srv.stores["fz-http"])
        ctype = b"text/plain" if store == "fz-http-text" else b"application/json"
        fz.send(case, srv.http, request_bytes(method, target, body, [
            (b"X-API-Key", key.encode()), (b"Content-Type", ctype)]), family_of(target))
    fz.finish()


def test_tsstore_create_store(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "tsstore-create", "tsstore")
    seeds = [s.encode() for s in load_seeds("tsstore_create.txt")]
    known = [Case("tsstore-create-known", 0, "known", b"[" * 5000)]
    for case in known + Mutator("tsstore-create", seeds, json_aware=True).cases(scaled(40)):
        fz.send(case, srv.http, request_bytes(b"POST", b"/api/stores", case.data, [
            (b"X-Admin-Key", ADMIN_KEY.encode()), (b"Content-Type", b"application/json")]),
            "tsstore")
    fz.finish()


# -- the site itself: framing, headers, odd requests --------------------------------------------


def raw_seeds() -> list[bytes]:
    put = json.dumps({"metric": "seed.raw", "timestamp": T0, "value": 1,
                      "tags": {"h": "a"}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(put), put)
    return [
        request_bytes(b"POST", b"/api/put", put, [(b"Content-Type", b"application/json")]),
        request_bytes(b"POST", b"/api/put", chunked, [(b"Transfer-Encoding", b"chunked")]),
        request_bytes(b"POST", b"/api/put", gzip.compress(put), [(b"Content-Encoding", b"gzip")]),
        request_bytes(b"GET", b"/api/query?start=1699990000&m=sum:fz.ref{host=*}"),
        request_bytes(b"POST", b"/api/v1/command", b"series e:fz-raw m:fz.raw=1"),
        request_bytes(b"GET", b"/api/stores/fz-http/stats"),
        request_bytes(b"GET", b"/metrics"),
        request_bytes(b"GET", b"/health"),
        request_bytes(b"GET", b"/no/such/route?x=1"),
    ]


def odd_requests() -> list[tuple[str, bytes]]:
    """Requests that framing and header parsing must refuse in HTTP's own terms."""
    put = b'{"metric":"seed.odd","timestamp":1700000000,"value":1,"tags":{"h":"a"}}'
    big = b"X-Big: " + b"a" * 20_000
    many = b"\r\n".join(b"X-H%d: v" % i for i in range(300))
    return [
        ("oversized header", b"GET /api/version HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n\r\n"),
        ("300 headers", b"GET /api/version HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n\r\n"),
        ("huge URL", b"GET /api/query?m=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("two Content-Lengths", b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                b"Content-Length: 70\r\nConnection: close\r\n\r\n" + put),
        ("negative Content-Length", b"POST /api/put HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: -1\r\nConnection: close\r\n\r\n" + put),
        ("5000-digit Content-Length", b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                      + b"9" * 5000 + b"\r\nConnection: close\r\n\r\n" + put),
        ("Content-Length over the cap", b"POST /api/put HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: 999999999999\r\nConnection: close"
                                        b"\r\n\r\n" + put),
        ("bad chunk size", b"POST /api/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                           b"\r\nConnection: close\r\n\r\nzz\r\n" + put + b"\r\n0\r\n\r\n"),
        ("huge chunk size", b"POST /api/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                            b"\r\nConnection: close\r\n\r\n" + b"f" * 40 + b"\r\nab"),
        ("chunked and a length", b"POST /api/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                 b"chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
                                 b"3\r\nabc\r\n0\r\n\r\n"),
        ("gzip bomb", request_bytes(b"POST", b"/api/put", gzip.compress(b"[" * 30_000_000),
                                    [(b"Content-Encoding", b"gzip")])),
        ("gzip of garbage", request_bytes(b"POST", b"/api/v1/command", b"\x1f\x8b" + b"x" * 50,
                                          [(b"Content-Encoding", b"gzip")])),
        ("unknown coding", request_bytes(b"POST", b"/api/stores/fz-http/data", put,
                                         [(b"Content-Encoding", b"zstd"),
                                          (b"Content-Type", b"application/json")])),
        ("HTTP/1.0", b"GET /api/version HTTP/1.0\r\n\r\n"),
        ("HTTP/2.0 line", b"GET /api/version HTTP/2.0\r\nHost: x\r\n\r\n"),
        ("HTTP/9.9 line", b"GET /api/version HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("absolute URI", b"GET http://127.0.0.1/api/version HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n"),
        ("asterisk target", b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("bad percent escapes", b"GET /api/stores/%zz%ff%00/stats HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\n\r\n"),
        ("NUL in the path", b"GET /api/v1/entities/a\x00b HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n"),
        ("invalid UTF-8 path", b"GET /api/v1/metrics/\xff\xfe HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n"),
        ("lowercase method", b"get /api/version HTTP/1.1\r\nHost: x\r\nConnection: close"
                             b"\r\n\r\n"),
        ("long method", b"A" * 5000 + b" /api/version HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("no headers end", b"GET /api/version HTTP/1.1\r\nHost: x\r\n"),
        ("header without colon", b"GET /api/version HTTP/1.1\r\nHost x\r\nConnection: close"
                                 b"\r\n\r\n"),
        ("folded header", b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\n b\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(put), put)),
        ("a VT in the Content-Type of a POST", b"POST /api/put HTTP/1.1\r\nHost: x\r\n"
         b"Content-Type: a\x0bb\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"),
        ("Basic auth of junk", request_bytes(b"GET", b"/api/version",
                                             headers=[(b"Authorization", b"Basic \xff\xfe==")])),
        ("Expect 100-continue", b"POST /api/put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue"
                                b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                % (len(put), put)),
        ("pipelined garbage", request_bytes(b"GET", b"/api/version") + b"\x00\xff" * 100),
    ]


def test_site_framing_and_headers(srv: FuzzServer) -> None:
    fz = Fuzzing(srv, "site", "opentsdb")
    m = Mutator("site", raw_seeds())
    cases = [(c, c.data) for c in m.cases(scaled(150))]
    cases += [(Case("site-odd", i, name, data), data)
              for i, (name, data) in enumerate(odd_requests())]
    for n, (case, data) in enumerate(cases):
        for port, port_family in ((srv.http, None), (srv.ports["opentsdb"], "opentsdb")):
            if n % 2 and port_family:
                continue  # every other one also to the opentsdb port's HTTP
            target = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b"/"
            # a mutated request may be incomplete (no end of headers, a body short of
            # its length): no answer is then right, after a moment of silence
            whole = looks_complete(data)
            fz.send(case, port, data, family_of(target, port_family),
                    quiet=5 if whole else 0.3, answered=False)
    fz.finish()


def test_token_listener_credentials(srv: FuzzServer) -> None:
    """An ``auth = token`` listener reads credentials from every request: none
    may make it fail (401 for what it cannot use)."""
    fz = Fuzzing(srv, "credentials", "opentsdb")
    seeds = [b"Basic " + base64.b64encode(b"id:secret"), b"Bearer some-token",
             b"Basic " + base64.b64encode("\u00e9:\u00ff".encode()), b"Basic ====", b"Token x"]
    put = b'{"metric":"seed.auth","timestamp":1700000000,"value":1,"tags":{"h":"a"}}'
    known = [Case("credentials-known", 0, "known", b"Basic \x80")]
    for case in known + Mutator("credentials", seeds).cases(scaled(40)):
        header = case.data.replace(b"\r", b"").replace(b"\n", b"")
        target, body = ((b"/api/put", put) if case.index % 2
                        else (b"/api/query?start=1h-ago&m=sum:fz.ref", b""))
        name = b"Authorization" if case.index % 3 else b"X-API-Key"
        fz.send(case, srv.ports["iot"], request_bytes(
            b"POST" if body else b"GET", target, body, [(name, header)]), "opentsdb")
    fz.finish()


def test_zz_server_log_is_clean(srv: FuzzServer) -> None:
    """Last: the whole log, whatever the tests above attributed to their inputs."""
    assert srv.proc.proc.poll() is None, "the server exited:\n" + srv.proc.text()[-3000:]
    problems = log_problems(srv.proc.text())
    assert not problems, f"{len(problems)} log entries with a traceback or of critical " \
                         "level:\n" + "\n".join(f"  - {preview(p.encode(), 600)}"
                                                for p in problems[:30])
