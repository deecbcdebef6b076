#!/usr/bin/env python3
"""The ts-store benchmark's own load generator (stdlib only): WebSocket write,
Unix-socket write and REST write (spec tsstore §4, §6, §7) on loopback.

Two modes, each printing one JSON line on stdout:

``stream``
    ``--records`` N records over ``--conns`` C connections (record ``k`` on
    connection ``k % C``), each connection keeping up to ``--inflight`` W
    messages sent and not yet answered; one record a message.  Every payload
    is rendered (and, over WebSocket, framed and masked) before the first byte,
    and every connection is open and authenticated by then; one thread drives
    all of them with a selector.  ``seconds`` is first byte to last reply.
    Targets: ``ws`` (``GET /api/stores/S/ws/write``, masked text frames of
    ``{"data":{"temp":T,"i":k}}``, one ``{"type":"ack",...}`` frame a message)
    and ``unix`` (``AUTH S KEY``, then one ``{"temp":T,"i":k}`` line a record,
    one ``OK <ts>`` line each).

``pingpong``
    One connection: send one record, wait for its reply, repeat; ``--warmup``
    round trips first (not timed), then ``--count`` timed ones.  Reports the
    median, p90, p99 (nearest rank), min, max and mean round trip in ms.
    Targets: ``unix``, ``ws`` and ``rest`` (``POST /api/stores/S/data``, a
    keep-alive HTTP/1.1 connection with ``http.client``, ``X-API-Key``,
    ``{"data":{...}}``, 201 expected); ``rest-raw`` sends the same requests,
    pre-rendered, on a raw socket, which leaves http.client's own time out.

A reply that is not an ack (a WebSocket ``{"type":"error"}`` frame, a Unix
``ERROR ...`` line, an HTTP status other than 201) is a failure: counted in
``failed``, the first few kept in ``errors``.  ``--offset`` shifts the record
numbers ``i`` so that several phases against one store never repeat one.

Exit status: 0 every record acked; 1 anything else (failures, a stall of
``--stall-timeout`` s with no reply, ``--timeout`` reached, a refused
handshake); 64 usage (including a host other than loopback).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import ipaddress
import json
import os
import re
import resource
import selectors
import socket
import sys
import time
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ACK_WS = b'{"type":"ack"'
ERR_WS = b'{"type":"error"'
KEEP_ERRORS = 5
RECV = 1 << 18
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")


class LoadError(Exception):
    pass


# ------------------------------------------------------------------ records

def record_data(i: int) -> bytes:
    """The JSON value of record ``i``: ``{"temp":T,"i":i}`` (about 25 bytes)."""
    return b'{"temp":%d.%d,"i":%d}' % (15 + i % 20, i % 10, i)


def ws_message(i: int) -> bytes:
    """The WebSocket (and REST) body of record ``i``: no timestamp, server time."""
    return b'{"data":' + record_data(i) + b"}"


def unix_line(i: int) -> bytes:
    """The Unix-socket line of record ``i``: the whole line is the record."""
    return record_data(i) + b"\n"


# ------------------------------------------------------------------ WebSocket framing

def ws_frame(payload: bytes, opcode: int = 0x1, mask: bytes | None = None) -> bytes:
    """One final client frame (RFC 6455 §5.2): masked, as a client must."""
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 1 << 16:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    key = os.urandom(4) if mask is None else mask
    return head + key + xor_mask(payload, key)


def xor_mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def ws_parse(buf: bytes, pos: int) -> tuple[int, int, int, int, int] | None:
    """The frame starting at ``buf[pos]``: (fin, opcode, payload start, payload end,
    mask key as an int or -1), or None while it is incomplete."""
    n = len(buf)
    if n - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    ln = b1 & 0x7F
    hp = pos + 2
    if ln == 126:
        if n - pos < 4:
            return None
        ln = int.from_bytes(buf[hp:hp + 2], "big")
        hp += 2
    elif ln == 127:
        if n - pos < 10:
            return None
        ln = int.from_bytes(buf[hp:hp + 8], "big")
        hp += 8
    mask = -1
    if b1 & 0x80:  # a server must not mask, but read it right if it does
        if n < hp + 4:
            return None
        mask = int.from_bytes(buf[hp:hp + 4], "big")
        hp += 4
    end = hp + ln
    if end > n:
        return None
    return b0 & 0x80, b0 & 0x0F, hp, end, mask


def ws_payload(buf: bytes, start: int, end: int, mask: int) -> bytes:
    data = buf[start:end]
    return data if mask < 0 else xor_mask(data, mask.to_bytes(4, "big"))


def ws_handshake(sock: socket.socket, host: str, port: int, path: str,
                 timeout: float) -> bytes:
    """HTTP/1.1 Upgrade (RFC 6455 §4.1); returns the bytes read past the headers."""
    key = base64.b64encode(os.urandom(16))
    req = (b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (path.encode(), host.encode(), port, key))
    sock.settimeout(timeout)
    sock.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise LoadError(f"WebSocket handshake: the server closed; it said {buf[:300]!r}")
        buf += chunk
        if len(buf) > 65536:
            raise LoadError("WebSocket handshake: no end of headers in 64 KiB")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise LoadError(f"WebSocket handshake refused: {head[:200]!r} {rest[:200]!r}")
    want = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if headers.get(b"sec-websocket-accept") != want:
        raise LoadError(f"WebSocket handshake: bad Sec-WebSocket-Accept "
                        f"{headers.get(b'sec-websocket-accept')!r}")
    return rest


# ------------------------------------------------------------------ connections

class Conn:
    """One connection of a stream: its pre-rendered bytes and its counts."""

    def __init__(self, sock: socket.socket, blob: bytes, offsets: list[int], rest: bytes) -> None:
        self.sock = sock
        self.blob = memoryview(blob)
        self.offsets = offsets  # offsets[k]: where message k starts; offsets[-1] == len
        self.total = len(offsets) - 1
        self.sent = 0  # messages handed to the kernel (whole or in part)
        self.out_end = 0  # blob bytes up to here are queued for sending
        self.out_pos = 0  # blob bytes up to here were sent
        self.replies = 0
        self.acks = 0
        self.inbuf = rest
        self.closed = False
        self.extra_out = b""  # pongs


def check_host(host: str) -> None:
    if host == "localhost":
        return
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None or not addr.is_loopback or getattr(addr, "ipv4_mapped", None):
        print(f"tsstore_load: refusing --host {host}: loopback only", file=sys.stderr)
        sys.exit(64)


def open_ws(a: argparse.Namespace) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((a.host, a.port), timeout=a.connect_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = f"/api/stores/{a.store}/ws/write?api_key={a.key}"
    rest = ws_handshake(sock, a.host, a.port, path, a.connect_timeout)
    return sock, rest


def open_unix(a: argparse.Namespace) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(a.connect_timeout)
    sock.connect(a.socket)
    sock.sendall(b"AUTH %s %s\n" % (a.store.encode(), a.key.encode()))
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise LoadError(f"Unix socket: closed after AUTH; it said {buf[:200]!r}")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    if line.strip() != b"OK":
        raise LoadError(f"Unix socket AUTH refused: {line[:200]!r}")
    return sock, rest


# ------------------------------------------------------------------ stream mode

def stream(a: argparse.Namespace) -> dict:
    out: dict[str, Any] = {"mode": "stream", "target": a.target, "records": a.records,
                           "conns": a.conns, "inflight": a.inflight, "offset": a.offset,
                           "sent": 0, "replies": 0, "acked": 0, "failed": 0, "errors": [],
                           "ok": False}
    t0 = time.time()
    render = ws_message if a.target == "ws" else unix_line
    per: list[list[int]] = [list(range(a.offset + c, a.offset + a.records, a.conns))
                            for c in range(a.conns)]
    blobs: list[tuple[bytes, list[int]]] = []
    for ids in per:
        parts = [ws_frame(render(i)) for i in ids] if a.target == "ws" else \
            [render(i) for i in ids]
        offs = [0]
        for p in parts:
            offs.append(offs[-1] + len(p))
        blobs.append((b"".join(parts), offs))
    out["pregen_seconds"] = round(time.time() - t0, 3)
    t1 = time.time()
    conns: list[Conn] = []
    try:
        for blob, offs in blobs:
            sock, rest = open_ws(a) if a.target == "ws" else open_unix(a)
            conns.append(Conn(sock, blob, offs, rest))
        out["setup_seconds"] = round(time.time() - t1, 3)
        _drive(a, conns, out)
    finally:
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
    return out


def _drive(a: argparse.Namespace, conns: list[Conn], out: dict) -> None:
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    want = sum(c.total for c in conns)
    ws = a.target == "ws"
    errors: list[str] = out["errors"]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    bytes_in = bytes_out = 0
    failed = 0
    replies = 0
    max_inflight = 0
    t_first = time.time()
    for c in conns:  # the first window of every connection, back to back
        bytes_out += _top_up(c, a.inflight, sel)
        max_inflight = max(max_inflight, c.sent - c.replies)
    last_progress = time.monotonic()
    deadline = last_progress + a.timeout
    while replies < want:
        now = time.monotonic()
        if now > deadline:
            raise LoadError(f"timeout: {replies} of {want} replies in {a.timeout:.0f} s")
        if now - last_progress > a.stall_timeout:
            raise LoadError(f"stalled: no reply for {a.stall_timeout:.0f} s "
                            f"({replies} of {want} replies)")
        for key, ev in sel.select(1.0):
            c: Conn = key.data
            if ev & selectors.EVENT_WRITE:
                bytes_out += _flush(c, sel)
            if not ev & selectors.EVENT_READ:
                continue
            try:
                chunk = c.sock.recv(RECV)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                raise LoadError(f"connection failed: {e} ({c.replies} of {c.total} "
                                "replies on it)") from e
            if not chunk:
                raise LoadError(f"the server closed a connection after {c.replies} of "
                                f"{c.total} replies; unparsed: {c.inbuf[:200]!r}")
            bytes_in += len(chunk)
            last_progress = time.monotonic()
            n, bad = (_ws_replies if ws else _unix_replies)(c, chunk, errors)
            c.replies += n
            c.acks += n - bad
            replies += n
            failed += bad
            if c.replies > c.sent:
                raise LoadError(f"more replies ({c.replies}) than messages sent ({c.sent})")
            bytes_out += _top_up(c, a.inflight, sel)
            if c.sent - c.replies > max_inflight:
                max_inflight = c.sent - c.replies
    t_last = time.time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    sel.close()
    seconds = t_last - t_first
    acked = sum(c.acks for c in conns)
    out.update({
        "sent": sum(c.sent for c in conns), "replies": replies, "acked": acked,
        "failed": failed, "t_first_byte": t_first, "t_last_ack": t_last,
        "seconds": round(seconds, 4),
        "records_per_sec": round(acked / seconds, 1) if seconds > 0 else None,
        "bytes_sent": bytes_out, "bytes_received": bytes_in,
        "max_inflight_seen": max_inflight,
        "loadgen_cpu_seconds": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime
                                     - ru0.ru_stime, 3),
        "ok": failed == 0 and acked == a.records,
    })


def _top_up(c: Conn, inflight: int, sel: selectors.BaseSelector) -> int:
    """Queue messages while fewer than ``inflight`` wait for a reply; send."""
    room = inflight - (c.sent - c.replies)
    if room > 0 and c.sent < c.total:
        k = min(room, c.total - c.sent)
        c.sent += k
        c.out_end = c.offsets[c.sent]
    return _flush(c, sel)


def _flush(c: Conn, sel: selectors.BaseSelector) -> int:
    sent = 0
    if c.extra_out:
        try:
            n = c.sock.send(c.extra_out)
        except (BlockingIOError, InterruptedError):
            n = 0
        c.extra_out = c.extra_out[n:]
        sent += n
    while c.out_pos < c.out_end and not c.extra_out:
        try:
            n = c.sock.send(c.blob[c.out_pos:c.out_end])
        except (BlockingIOError, InterruptedError):
            break
        if n <= 0:
            break
        c.out_pos += n
        sent += n
    events = selectors.EVENT_READ
    if c.out_pos < c.out_end or c.extra_out:
        events |= selectors.EVENT_WRITE
    if sel.get_key(c.sock).events != events:
        sel.modify(c.sock, events, c)
    return sent


def _ws_replies(c: Conn, chunk: bytes, errors: list[str]) -> tuple[int, int]:
    """Count the complete reply frames in ``c.inbuf + chunk``: (replies, failures)."""
    buf = c.inbuf + chunk if c.inbuf else chunk
    pos = 0
    n = bad = 0
    while True:
        fr = ws_parse(buf, pos)
        if fr is None:
            break
        fin, op, start, end, mask = fr
        pos = end
        if op in (0x1, 0x2) and fin and mask < 0:
            n += 1
            if not buf.startswith(ACK_WS, start):
                bad += 1
                if len(errors) < KEEP_ERRORS:
                    errors.append(buf[start:end].decode("utf-8", "replace").strip())
        elif op == 0x9:  # ping: answer it
            c.extra_out += ws_frame(ws_payload(buf, start, end, mask), 0xA)
        elif op == 0x8:
            body = ws_payload(buf, start, end, mask)
            raise LoadError(f"the server closed the WebSocket: code "
                            f"{int.from_bytes(body[:2], 'big') if len(body) >= 2 else None} "
                            f"{body[2:200]!r}")
        elif op == 0xA:
            continue
        else:  # fragmented or masked data: rare, do it the slow way
            raise LoadError(f"unexpected frame from the server: fin={fin} opcode={op}")
    c.inbuf = buf[pos:]
    return n, bad


def _unix_replies(c: Conn, chunk: bytes, errors: list[str]) -> tuple[int, int]:
    buf = c.inbuf + chunk if c.inbuf else chunk
    last = buf.rfind(b"\n")
    if last < 0:
        c.inbuf = buf
        return 0, 0
    block = buf[:last + 1]
    c.inbuf = buf[last + 1:]
    n = block.count(b"\n")
    oks = block.count(b"\nOK ") + block.startswith(b"OK ")
    bad = n - oks
    if bad:
        for ln in block.split(b"\n"):
            if ln and not ln.startswith(b"OK ") and len(errors) < KEEP_ERRORS:
                errors.append(ln.decode("utf-8", "replace"))
    return n, bad


# ------------------------------------------------------------------ ping-pong mode

def _percentile(sorted_ms: list[float], pct: int) -> float:
    """Nearest rank: the smallest value with at least ``pct`` % of them at or below it."""
    return sorted_ms[max(0, (pct * len(sorted_ms) + 99) // 100 - 1)]


class _Unix:
    def __init__(self, a: argparse.Namespace) -> None:
        self.sock, self.buf = open_unix(a)
        self.sock.settimeout(a.stall_timeout)

    def round_trip(self, i: int) -> bytes:
        self.sock.sendall(unix_line(i))
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise LoadError("the server closed the Unix socket")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return b"" if line.startswith(b"OK ") else line

    def close(self) -> None:
        self.sock.close()


class _Ws:
    def __init__(self, a: argparse.Namespace) -> None:
        self.sock, self.buf = open_ws(a)
        self.sock.settimeout(a.stall_timeout)

    def round_trip(self, i: int) -> bytes:
        self.sock.sendall(ws_frame(ws_message(i)))
        while True:
            fr = ws_parse(self.buf, 0)
            if fr is None:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise LoadError("the server closed the WebSocket")
                self.buf += chunk
                continue
            _fin, op, start, end, mask = fr
            body = ws_payload(self.buf, start, end, mask)
            self.buf = self.buf[end:]
            if op in (0x1, 0x2):
                return b"" if body.startswith(ACK_WS) else body
            if op == 0x9:
                self.sock.sendall(ws_frame(body, 0xA))
            elif op == 0x8:
                raise LoadError(f"the server closed the WebSocket: {body[:200]!r}")

    def close(self) -> None:
        self.sock.close()


class _Rest:
    def __init__(self, a: argparse.Namespace) -> None:
        self.conn = http.client.HTTPConnection(a.host, a.port, timeout=a.stall_timeout)
        self.conn.connect()
        self.path = f"/api/stores/{a.store}/data"
        self.headers = {"X-API-Key": a.key, "Content-Type": "application/json"}

    def round_trip(self, i: int) -> bytes:
        self.conn.request("POST", self.path, body=ws_message(i), headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.will_close:
            raise LoadError(f"the server did not keep the connection alive ({r.status})")
        return b"" if r.status == 201 else b"%d %s" % (r.status, body[:200])

    def close(self) -> None:
        self.conn.close()


class _RestRaw:
    """The same requests as `_Rest`, pre-rendered and sent on a raw socket: what
    REST costs without http.client's own time (about 0.15 ms a request)."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.sock = socket.create_connection((a.host, a.port), timeout=a.connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(a.stall_timeout)
        self.head = (b"POST /api/stores/%s/data HTTP/1.1\r\nHost: %s:%d\r\nX-API-Key: %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     % (a.store.encode(), a.host.encode(), a.port, a.key.encode()))
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise LoadError("the server closed the HTTP connection")
        self.buf += chunk

    def round_trip(self, i: int) -> bytes:
        body = ws_message(i)
        self.sock.sendall(self.head + b"%d\r\n\r\n" % len(body) + body)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = self.buf[:end].lower()
        self.buf = self.buf[end + 4:]
        status = head[9:12]
        m = CONTENT_LENGTH.search(head)
        if m is None:
            if b"transfer-encoding: chunked" not in head:
                raise LoadError(f"a reply with no Content-Length: {head[:300]!r}")
            while b"\r\n0\r\n\r\n" not in b"\r\n" + self.buf:
                self._fill()
            reply, self.buf = self.buf, b""
        else:
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            reply, self.buf = self.buf[:n], self.buf[n:]
        return b"" if status == b"201" else status + b" " + reply[:200]

    def close(self) -> None:
        self.sock.close()


def pingpong(a: argparse.Namespace) -> dict:
    out: dict[str, Any] = {"mode": "pingpong", "target": a.target, "count": a.count,
                           "warmup": a.warmup, "offset": a.offset, "acked": 0, "failed": 0,
                           "errors": [], "ok": False}
    client = {"unix": _Unix, "ws": _Ws, "rest": _Rest, "rest-raw": _RestRaw}[a.target](a)
    errors: list[str] = out["errors"]
    rtts: list[int] = []
    clock = time.perf_counter_ns
    try:
        i = a.offset
        for _ in range(a.warmup):
            bad = client.round_trip(i)
            i += 1
            if bad:
                out["failed"] += 1
                if len(errors) < KEEP_ERRORS:
                    errors.append(bad.decode("utf-8", "replace").strip())
        out["acked"] = a.warmup - out["failed"]
        t0 = time.time()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(a.count):
            s = clock()
            bad = client.round_trip(i)
            rtts.append(clock() - s)
            i += 1
            if bad:
                out["failed"] += 1
                if len(errors) < KEEP_ERRORS:
                    errors.append(bad.decode("utf-8", "replace").strip())
            else:
                out["acked"] += 1
        seconds = time.time() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        client.close()
    ms = sorted(r / 1e6 for r in rtts)
    out.update({
        "seconds": round(seconds, 3),
        "median_ms": round(_percentile(ms, 50), 4),
        "p90_ms": round(_percentile(ms, 90), 4),
        "p99_ms": round(_percentile(ms, 99), 4),
        "min_ms": round(ms[0], 4), "max_ms": round(ms[-1], 4),
        "mean_ms": round(sum(ms) / len(ms), 4),
        "round_trips_per_sec": round(a.count / seconds, 1) if seconds > 0 else None,
        "loadgen_cpu_seconds": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime
                                     - ru0.ru_stime, 3),
        "ok": out["failed"] == 0 and out["acked"] == a.warmup + a.count,
    })
    return out


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("stream", "pingpong"))
    p.add_argument("--target", choices=("ws", "unix", "rest", "rest-raw"), required=True)
    p.add_argument("--host", default="127.0.0.1", help="WebSocket/REST host (loopback only)")
    p.add_argument("--port", type=int, default=0, help="the http listener's port (ws, rest)")
    p.add_argument("--socket", default=None, help="the ts-store Unix socket path (unix)")
    p.add_argument("--store", default="bench")
    p.add_argument("--key", required=True, help="the store's API key")
    p.add_argument("--records", type=int, default=200_000, help="stream: records in all")
    p.add_argument("--conns", type=int, default=4, help="stream: connections")
    p.add_argument("--inflight", type=int, default=100,
                   help="stream: messages a connection keeps unanswered at most")
    p.add_argument("--count", type=int, default=2000, help="pingpong: timed round trips")
    p.add_argument("--warmup", type=int, default=200, help="pingpong: untimed round trips first")
    p.add_argument("--offset", type=int, default=0, help="the first record number i")
    p.add_argument("--timeout", type=float, default=300.0, help="stream: seconds in all")
    p.add_argument("--stall-timeout", type=float, default=30.0,
                   help="seconds without any reply before giving up")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    a = p.parse_args(argv)
    if a.target != "unix":
        check_host(a.host)
        if not a.port:
            p.error(f"--target {a.target} needs --port")
    if a.target == "unix" and not a.socket:
        p.error("--target unix needs --socket")
    if a.mode == "stream" and a.target.startswith("rest"):
        p.error("stream: ws or unix (REST has one request in flight a connection)")
    if min(a.records, a.conns, a.inflight, a.count) < 1 or a.warmup < 0 or a.offset < 0:
        p.error("--records, --conns, --inflight and --count must be >= 1")
    try:
        out = stream(a) if a.mode == "stream" else pingpong(a)
    except (LoadError, OSError) as e:
        print(json.dumps({"mode": a.mode, "target": a.target, "ok": False,
                          "errors": [f"{type(e).__name__}: {e}" if isinstance(e, OSError)
                                     else str(e)]}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
