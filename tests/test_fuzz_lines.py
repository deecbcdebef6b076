"""The line protocols, fuzzed over real sockets against one real ``twistd -n
tsnet``: OpenTSDB telnet, ATSD over TCP and UDP, the ts-store Unix socket.

Each mutated input (tests/helpers/fuzz.py, seeds in tests/fuzz_corpus/) is
sent between two valid neighbours with their own metric names and values, on
the same connection where the protocol allows it.  Every reply line must be
one of the protocol's own (an error line, or the answer to a command the input
happened to be), without internals; the server log must stay free of
tracebacks and critical entries; and at the end every neighbour must be
readable through the read APIs (``/api/query``, ATSD's series query, ts-store's
``data/range``).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.fuzz import (
    T0,
    Case,
    Findings,
    FuzzServer,
    Mutator,
    fuzz_server,
    http_request,
    leaks,
    load_seeds,
    log_problems,
    preview,
    scaled,
)

pytestmark = pytest.mark.subprocess

#: telnet lines a server may answer with: its errors, and what commands print
TELNET_REPLY = re.compile(
    r"put: (?:illegal argument|invalid value): |unknown command: .*  Try `help'\.$|ok$"
    r"|available commands: |Caches dropped\.$|net\.opentsdb\.tools |Built on "
    r"|tsd\.[a-z.]+ \d+ ")
#: ATSD over TCP: ``debug`` answers, control commands, and rejections
ATSD_REPLY = re.compile(r"ok$|Invalid command: |Empty tag values in command: |\d+$|Goodbye$")
#: the ts-store socket: the record acks and its refusals
UNIX_REPLY = re.compile(r"OK(?: \d+| bye)?$|ERROR invalid JSON: |ERROR schema validation failed: "
                        r"|ERROR line too long$")
#: the lines the telnet protocol may close the connection after (specs/opentsdb.md §1.1)
TELNET_MAX_LINE = 8192


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    with fuzz_server(tmp_path_factory.mktemp("fuzz-lines")) as s:
        s.create_store("fz-lines")
        key = s.create_store("fz-lines-schema", "schema")
        _, r = http_request(s.http, "PUT", "/api/stores/fz-lines-schema/schema", json.dumps(
            {"fields": [{"index": 1, "name": "case", "type": "int64"},
                        {"index": 2, "name": "side", "type": "string"}]}).encode(),
            {"X-API-Key": key, "Content-Type": "application/json"})
        assert r.status == 200, r.body
        yield s


def exchange(connect: Callable[[], socket.socket], data: bytes, timeout: float = 20) -> bytes:
    """Send ``data``, half-close, and read until the server closes."""
    with connect() as s:
        s.settimeout(timeout)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed early (an overlong line); what it answered is still readable
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=20)


def unix(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(path))
        return s
    return connect


def check_lines(findings: Findings, case: Case, reply: bytes, sent: bytes,
                allowed: re.Pattern[str]) -> list[str]:
    """The reply's lines; each one that is not the protocol's is a finding."""
    lines = reply.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        if not allowed.match(line):
            findings.add(case, f"a reply that is not the protocol's: {line[:200]!r}", sent)
            break
    for problem in leaks(reply, sent):
        findings.add(case, problem, sent)
    return lines


def check_log(srv: FuzzServer, findings: Findings, case: Case | None, sent: bytes = b"") -> None:
    for problem in srv.new_log_problems():
        findings.add(case, f"server log: {problem}", sent)


def eventually(read: Callable[[], list[str]], timeout: float = 15) -> list[str]:
    """``read()`` (the neighbours still missing) until it is empty or time is up:
    lines without an ack are committed within the flush interval, not at once."""
    deadline = time.monotonic() + timeout
    while True:
        missing = read()
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


# -- reading the neighbours back -------------------------------------------------------------


def opentsdb_missing(srv: FuzzServer, want: dict[tuple[str, str], int]) -> list[str]:
    """The (metric, side) points of ``want`` that /api/query does not return."""
    metrics = sorted({m for m, _ in want})
    got: dict[tuple[str, str], Any] = {}
    for i in range(0, len(metrics), 40):
        batch = metrics[i:i + 40]
        results = _query(srv, batch)
        if results is None:  # a metric unknown: the whole query is a 400; ask one by one
            results = [r for m in batch for r in (_query(srv, [m]) or [])]
        for r in results:
            got[(r["metric"], r["tags"].get("side", "?"))] = r["dps"].get(str(T0))
    return [f"{m} {side}={v} (read {got.get((m, side))!r})" for (m, side), v in sorted(want.items())
            if got.get((m, side)) != v]


def _query(srv: FuzzServer, metrics: list[str]) -> list[dict] | None:
    body = json.dumps({"start": T0, "end": T0 + 1, "queries": [
        {"aggregator": "none", "metric": m} for m in metrics]}).encode()
    _, r = http_request(srv.http, "POST", "/api/query", body,
                        {"Content-Type": "application/json"})
    if r.status == 400:
        return None
    assert r.status == 200, (r.status, r.body[:300])
    return r.json()


def atsd_missing(srv: FuzzServer, want: dict[tuple[str, str], int]) -> list[str]:
    """The (metric, side) points of ``want`` that ATSD's series query does not return."""
    metrics = sorted({m for m, _ in want})
    got: dict[tuple[str, str], Any] = {}
    for i in range(0, len(metrics), 100):
        body = json.dumps([{"entity": "fuzz-nb", "metric": m, "startDate": T0 * 1000,
                            "endDate": T0 * 1000 + 1, "timeFormat": "milliseconds"}
                           for m in metrics[i:i + 100]]).encode()
        _, r = http_request(srv.http, "POST", "/api/v1/series/query", body,
                            {"Content-Type": "application/json"})
        assert r.status == 200, (r.status, r.body[:300])
        for s in r.json():
            for point in s["data"]:
                got[(s["metric"], s["tags"].get("side", "?"))] = point["v"]
    return [f"{m} {side}={v} (read {got.get((m, side))!r})" for (m, side), v in sorted(want.items())
            if got.get((m, side)) != v]


def tsstore_missing(srv: FuzzServer, store: str, want: dict[int, dict]) -> list[str]:
    """The records of ``want`` (timestamp -> data) that ``data/time/TS`` does not
    return (one read each: a listing would hold the fuzz records too, nested
    deeper than Python's json reads)."""
    out = []
    for t, d in sorted(want.items()):
        _, r = http_request(srv.http, "GET", f"/api/stores/{store}/data/time/{t}",
                            headers={"X-API-Key": srv.stores[store]})
        got = r.json().get("data") if r.status == 200 else r.status
        if got != d:
            out.append(f"{store} @{t}: {d} (read {got!r})")
    return out


# -- OpenTSDB telnet ------------------------------------------------------------------------------


def closes_telnet(data: bytes) -> bool:
    """Whether the protocol may close the connection on ``data``: a line over
    the limit, or an ``exit`` command."""
    return any(len(line) > TELNET_MAX_LINE or line.split(b" ", 1)[0].rstrip(b"\r") == b"exit"
               for line in data.split(b"\n"))


def test_opentsdb_telnet_lines(srv: FuzzServer) -> None:
    findings = Findings("opentsdb telnet")
    seeds = [s.encode() for s in load_seeds("telnet.txt")]
    port = srv.ports["opentsdb"]
    want: dict[tuple[str, str], int] = {}
    for case in Mutator("telnet", seeds).cases(scaled(300)):
        metric = f"fuzz.nb.tn.{case.index}"
        before = f"put {metric} {T0} {2 * case.index + 1} side=before\n".encode()
        after = f"put {metric} {T0} {2 * case.index + 2} side=after\n".encode()
        sent = before + case.data + b"\n" + after
        try:
            reply = exchange(tcp(port), sent)
        except OSError as e:
            findings.add(case, f"the connection failed: {e!r}", case.data)
            continue
        check_lines(findings, case, reply, case.data, TELNET_REPLY)
        if closes_telnet(case.data):  # the after line may be lost with the connection
            exchange(tcp(port), after)
        want[(metric, "before")] = 2 * case.index + 1
        want[(metric, "after")] = 2 * case.index + 2
        check_log(srv, findings, case, case.data)
    for m in eventually(lambda: opentsdb_missing(srv, want)):
        findings.add(None, f"a neighbour is not readable through /api/query: {m}")
    findings.check()


# -- ATSD over TCP and UDP -------------------------------------------------------------------------


def atsd_series(metric: str, value: int, side: str, debug: bool) -> bytes:
    prefix = "debug " if debug else ""
    return f"{prefix}series e:fuzz-nb m:{metric}={value} t:side={side} ms:{T0 * 1000}\n".encode()


def test_atsd_tcp_commands(srv: FuzzServer) -> None:
    findings = Findings("atsd tcp")
    seeds = [s.encode() for s in load_seeds("atsd.txt")]
    port = srv.ports["atsd"]
    want: dict[tuple[str, str], int] = {}
    for case in Mutator("atsd-tcp", seeds).cases(scaled(250)):
        metric = f"fuzz.nb.at.{case.index}"
        data = case.data
        if case.index % 2:  # half of them asking for an answer
            data = b"debug " + data
        before = atsd_series(metric, 2 * case.index + 1, "before", True)
        after = atsd_series(metric, 2 * case.index + 2, "after", True)
        # an odd number of quotes leaves a quoted value open: the after line would
        # be part of it, so it goes on a connection of its own
        same = data.count(b'"') % 2 == 0
        sent = before + data + b"\n" + (after if same else b"")
        try:
            reply = exchange(tcp(port), sent)
        except OSError as e:
            findings.add(case, f"the connection failed: {e!r}", data)
            continue
        lines = check_lines(findings, case, reply, data, ATSD_REPLY)
        if not lines or lines[0] != "ok":
            findings.add(case, f"the neighbour before got {lines[:1]!r}, not ok", data)
        if not same or "Goodbye" in lines:
            lines = check_lines(findings, case, exchange(tcp(port), after), after, ATSD_REPLY)
        if lines[-1:] != ["ok"]:
            findings.add(case, f"the neighbour after got {lines[-1:]!r}, not ok", data)
        want[(metric, "before")] = 2 * case.index + 1
        want[(metric, "after")] = 2 * case.index + 2
        check_log(srv, findings, case, data)
    for m in eventually(lambda: atsd_missing(srv, want)):
        findings.add(None, f"a neighbour is not readable through /api/v1/series/query: {m}")
    findings.check()


def test_atsd_udp_datagrams(srv: FuzzServer) -> None:
    findings = Findings("atsd udp")
    seeds = [s.encode() for s in load_seeds("atsd.txt")]
    addr = ("127.0.0.1", srv.ports["atsd-udp"])
    want: dict[tuple[str, str], int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for case in Mutator("atsd-udp", seeds).cases(scaled(200)):
            metric = f"fuzz.nb.au.{case.index}"
            s.sendto(atsd_series(metric, 2 * case.index + 1, "before", False), addr)
            s.sendto(case.data[:65000], addr)
            s.sendto(atsd_series(metric, 2 * case.index + 2, "after", False), addr)
            want[(metric, "before")] = 2 * case.index + 1
            want[(metric, "after")] = 2 * case.index + 2
            # the server reads datagrams one by one: keep its socket buffer from filling
            time.sleep(0.02 if len(case.data) > 4096 else 0.002)
            check_log(srv, findings, case, case.data)
    for m in eventually(lambda: atsd_missing(srv, want)):
        findings.add(None, f"a neighbour datagram is not readable: {m}")
    check_log(srv, findings, None)
    findings.check()


# -- ts-store's Unix socket ------------------------------------------------------------------


def test_tsstore_unix_socket_lines(srv: FuzzServer) -> None:
    findings = Findings("tsstore unix socket")
    seeds = [s.encode() for s in load_seeds("tsstore_lines.txt")]
    want: dict[str, dict[int, dict]] = {"fz-lines": {}, "fz-lines-schema": {}}
    connect = unix(srv.sock)
    for case in Mutator("tsstore-unix", seeds, json_aware=True).cases(scaled(250)):
        store = "fz-lines" if case.index % 2 == 0 else "fz-lines-schema"
        auth = f"AUTH {store} {srv.stores[store]}\n".encode()
        before = {"case": 2 * case.index + 1, "side": "before"}
        after = {"case": 2 * case.index + 2, "side": "after"}
        sent = auth + json.dumps(before).encode() + b"\n" + case.data + b"\n" \
            + json.dumps(after).encode() + b"\n"
        try:
            reply = exchange(connect, sent)
        except OSError as e:
            findings.add(case, f"the connection failed: {e!r}", case.data)
            continue
        lines = check_lines(findings, case, reply, case.data, UNIX_REPLY)
        if lines[:1] != ["OK"] or not lines[1:2] or not lines[1].startswith("OK "):
            findings.add(case, f"AUTH and the neighbour before got {lines[:2]!r}", case.data)
            check_log(srv, findings, case, case.data)
            continue
        want[store][int(lines[1][3:])] = before
        if "OK bye" in lines:  # a QUIT line: the after record goes on a new connection
            lines = check_lines(findings, case, exchange(
                connect, auth + json.dumps(after).encode() + b"\n"), b"", UNIX_REPLY)
        if lines[-1:] and lines[-1].startswith("OK "):
            want[store][int(lines[-1][3:])] = after
        else:
            findings.add(case, f"the neighbour after got {lines[-1:]!r}", case.data)
        check_log(srv, findings, case, case.data)
    for case in Mutator("tsstore-auth", [f"AUTH fz-lines {srv.stores['fz-lines']}".encode(),
                                         b"AUTH fz-lines-schema nope", b"auth  x  y"],
                        ).cases(scaled(20)):
        reply = exchange(connect, case.data + b"\n{}\n")
        check_lines(findings, case, reply, case.data, re.compile(
            r"OK(?: \d+)?$|ERROR invalid auth format|ERROR authentication failed$"))
        check_log(srv, findings, case, case.data)
    assert sum(map(len, want.values())) > scaled(250), "too few neighbours acknowledged"
    for store, records in want.items():
        for m in tsstore_missing(srv, store, records):
            findings.add(None, f"a neighbour record is not readable through data/time: {m}")
    findings.check()


def test_zz_server_log_is_clean(srv: FuzzServer) -> None:
    """Last: the whole log, whatever the tests above attributed to their inputs."""
    assert srv.proc.proc.poll() is None, "the server exited:\n" + srv.proc.text()[-3000:]
    problems = log_problems(srv.proc.text())
    assert not problems, f"{len(problems)} log entries with a traceback or of critical " \
                         "level:\n" + "\n".join(f"  - {preview(p.encode(), 600)}"
                                                for p in problems[:30])
