"""The fuzz suite's tools (tests/test_fuzz_*.py): seeds, mutators, a raw HTTP
client, and the checks every reply and the server log must pass.

Everything is deterministic: a mutator is a `random.Random` seeded by the
target's name and `FUZZ_SEED`, so CI replays the very same inputs.  Set
``TSNET_FUZZ_SEED`` (another corpus of mutations) or ``TSNET_FUZZ_SCALE``
(more cases per target) to explore locally; a failure names its case, so it
can be replayed with the same seed.
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import random
import re
import socket
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsnet.testing.process import TsnetProcess

CORPUS = Path(__file__).resolve().parent.parent / "fuzz_corpus"
#: stands for a line break inside one seed of a corpus file (seeds are one a line)
NEWLINE_MARK = "\u23ce"
FUZZ_SEED = int(os.environ.get("TSNET_FUZZ_SEED", "1729"))
SCALE = float(os.environ.get("TSNET_FUZZ_SCALE", "1"))
ADMIN_KEY = "fuzz-admin-key-of-24-chars"
#: the time of every neighbour point (2023-11-14T22:13:20Z)
T0 = 1_700_000_000

# -- seeds ---------------------------------------------------------------------------


def load_seeds(name: str) -> tuple[str, ...]:
    """The seeds of ``tests/fuzz_corpus/NAME``: one a line, ``#`` comments and
    blank lines skipped, `NEWLINE_MARK` standing for a line break."""
    out = []
    for line in (CORPUS / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(line.replace(NEWLINE_MARK, "\n"))
    return tuple(out)


def scaled(n: int) -> int:
    """``n`` cases, times ``TSNET_FUZZ_SCALE``."""
    return max(1, round(n * SCALE))


# -- mutations -------------------------------------------------------------------------

#: numbers parsers choke on: int64 and float edges, digit-count limits, odd syntax
HUGE_NUMBERS: tuple[bytes, ...] = (
    b"1" * 5000, b"9" * 4301, b"-" + b"9" * 400, b"1" + b"0" * 400, b"1e999", b"-1e999",
    b"1e-400", b"1e308", b"9223372036854775807", b"9223372036854775808",
    b"-9223372036854775809", b"18446744073709551616", b"4294967296", b"9999999999999",
    b"99999999999999", b"0", b"-0", b"-1", b"00001", b"+5", b"1.", b".5", b"0x10", b"1_000",
    b"NaN", b"Infinity", b"-Infinity", b"\xd9\xa3", b"1e+9999999999", b"0.0000001",
)
#: what an insertion puts in: invalid UTF-8, controls, delimiters, long runs
INSERTS: tuple[bytes, ...] = (
    b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x80\xa8",
    b"\x00", b"\r", b"\t", b"\x0b", b"\x7f", b"\x1b[2J", b'"', b"'", b"\\", b"\\u0000",
    b"\\ud800", b"{", b"}", b"[", b"]", b",", b":", b"=", b" ", b"  ", b"\n", b"\r\n",
    b"%", b"%ff", b"%zz", b"*", b"|", b"a" * 300, b"a" * 9000, b" " * 200, b"=" * 64,
    b"\xf0\x9f\x98\x80", b"\xef\xbb\xbf",
)
#: JSON texts that take the place of a value (wrong types, edges, lone surrogates)
JSON_VALUES: tuple[str, ...] = (
    "[]", "{}", "null", "true", "false", '"x"', '""', "-0", "0", "1e400", "-1e400", "NaN",
    "Infinity", "1" * 5000, "9223372036854775808", "-9223372036854775809", "0.5", "[1,2]",
    '{"a":"b"}', '"\\ud800"', '"\\u0000"', '"' + "x" * 10000 + '"', "[[[[[[[[[[]]]]]]]]]]",
    '{"":{"":{}}}', '"1"', '"now"', '["a",{"b":null}]', "-1", "1.5e300",
)
INTERESTING_BYTES = b"\x00\xff\x80\"{}[] \n\r\\=:,*|%\x7f"
_NUMBER_RUN = re.compile(rb"[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
#: the size a mutation may grow an input to
MAX_INPUT = 300_000


@dataclass(frozen=True)
class Case:
    """One generated input: which seed, which mutation, the bytes."""

    target: str
    index: int
    op: str
    data: bytes

    def label(self) -> str:
        return f"{self.target}#{self.index} ({self.op}, {len(self.data)} bytes)"


def preview(data: bytes, limit: int = 160) -> str:
    """An input as the report shows it: repr, its middle cut when long."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit // 2]!r}...<{len(data) - limit} bytes>...{data[-limit // 2:]!r}"


class Mutator:
    """Mutations of one target's seeds, reproducible from (target name, seed)."""

    def __init__(self, target: str, seeds: Sequence[bytes], seed: int = FUZZ_SEED,
                 json_aware: bool = False) -> None:
        self.target = target
        self.seeds = list(seeds)
        self.rng = random.Random(f"{target}:{seed}")
        self.json_aware = json_aware

    def cases(self, n: int) -> list[Case]:
        """``n`` cases; the first ones are the seeds themselves, unmutated, so a
        broken seed shows up as such."""
        out = [Case(self.target, i, "seed", s) for i, s in enumerate(self.seeds[:n])]
        while len(out) < n:
            data = self.rng.choice(self.seeds)
            ops = []
            for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
                op, data = self.mutate(data)
                ops.append(op)
            out.append(Case(self.target, len(out), "+".join(ops), data))
        return out

    def mutate(self, data: bytes) -> tuple[str, bytes]:
        """One mutation of ``data``: (its name, the result)."""
        rng = self.rng
        ops: list[tuple[str, Callable[[bytes], bytes]]] = [
            ("flip", self._flip), ("byte", self._byte), ("truncate", self._truncate),
            ("delete", self._delete), ("duplicate", self._duplicate),
            ("insert", self._insert), ("insert", self._insert), ("number", self._number),
            ("number", self._number), ("splice", self._splice),
        ]
        if self.json_aware:
            doc = _json_or_none(data)
            if doc is not None:
                ops += [("retype", lambda d: self._retype(doc)),
                        ("retype", lambda d: self._retype(doc)),
                        ("nest", lambda d: self._nest(doc)),
                        ("dupkey", lambda d: self._dupkey(d))]
        name, op = rng.choice(ops)
        try:
            out = op(data)
        except RecursionError:  # a document nested past Python's own limit already
            name, out = "insert", self._insert(data)
        return name, out[:MAX_INPUT]

    # -- byte level ---------------------------------------------------------------

    def _pos(self, data: bytes) -> int:
        return self.rng.randrange(len(data) + 1)

    def _flip(self, data: bytes) -> bytes:
        if not data:
            return b"\x00"
        b = bytearray(data)
        for _ in range(self.rng.choice((1, 1, 2, 4))):
            b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
        return bytes(b)

    def _byte(self, data: bytes) -> bytes:
        if not data:
            return b"\xff"
        i = self.rng.randrange(len(data))
        return data[:i] + bytes([self.rng.choice(INTERESTING_BYTES)]) + data[i + 1:]

    def _truncate(self, data: bytes) -> bytes:
        return data[:self.rng.randrange(len(data))] if len(data) > 1 else b""

    def _delete(self, data: bytes) -> bytes:
        i, j = sorted((self._pos(data), self._pos(data)))
        return data[:i] + data[j:]

    def _duplicate(self, data: bytes) -> bytes:
        i, j = sorted((self._pos(data), self._pos(data)))
        if i == j:
            i, j = 0, len(data)
        times = self.rng.choice((2, 2, 3, 50, 1000))
        return data[:j] + data[i:j] * (times - 1) + data[j:]

    def _insert(self, data: bytes) -> bytes:
        i = self._pos(data)
        return data[:i] + self.rng.choice(INSERTS) + data[i:]

    def _number(self, data: bytes) -> bytes:
        runs = list(_NUMBER_RUN.finditer(data))
        new = self.rng.choice(HUGE_NUMBERS)
        if not runs:
            i = self._pos(data)
            return data[:i] + new + data[i:]
        m = self.rng.choice(runs)
        return data[:m.start()] + new + data[m.end():]

    def _splice(self, data: bytes) -> bytes:
        other = self.rng.choice(self.seeds)
        return data[:self._pos(data)] + other[self._pos(other):]

    # -- JSON level -----------------------------------------------------------------

    def _retype(self, doc: Any) -> bytes:
        return _replace_node(doc, self.rng, self.rng.choice(JSON_VALUES))

    def _nest(self, doc: Any) -> bytes:
        depth = self.rng.choice((64, 1100, 5000, 100_000))
        if self.rng.random() < 0.5:
            wrap = "[" * depth, "]" * depth
        else:
            wrap = '{"a":' * depth, "}" * depth
        return _replace_node(doc, self.rng, None, wrap)

    def _dupkey(self, data: bytes) -> bytes:
        i = data.find(b"{")
        if i < 0:
            return data
        return data[:i + 1] + b'"metric":' + self.rng.choice(JSON_VALUES).encode() + b"," \
            + data[i + 1:]


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


_SENTINEL = "\u0001fuzz-node\u0001"


def _paths(doc: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*path, i))


def _replace_node(doc: Any, rng: random.Random, text: str | None,
                  wrap: tuple[str, str] | None = None) -> bytes:
    """``doc`` as JSON with one node (chosen by ``rng``) replaced by the JSON text
    ``text``, or wrapped in ``wrap`` (opening, closing)."""
    path = rng.choice(list(_paths(doc)))
    node_text = json.dumps(_get(doc, path), ensure_ascii=False)
    new = text if wrap is None else wrap[0] + node_text + wrap[1]
    if not path:
        return new.encode()
    copy = json.loads(json.dumps(doc))
    _set(copy, path, _SENTINEL)
    return json.dumps(copy, ensure_ascii=False).replace(json.dumps(_SENTINEL), new, 1).encode(
        "utf-8", "surrogatepass")


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


# -- HTTP over a raw socket ----------------------------------------------------------------


@dataclass
class Reply:
    """What came back for one request: ``status`` None when the server closed
    (or went quiet) without answering."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def http_raw(port: int, data: bytes, timeout: float = 15.0,
             quiet: float | None = None) -> Reply:
    """Send ``data`` as it is and read one reply (Content-Length, chunked, or up to
    the close).  ``quiet``: seconds of silence after which a request the server
    is still waiting on (a truncated one) counts as unanswered."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer (413, 400) and close before the rest arrives
        buf = b""
        while True:
            done = _complete(buf)
            if done is not None:
                return done
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete reply in {timeout}s: {preview(buf)}")
            s.settimeout(min(left, quiet) if quiet else left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if quiet and not buf:
                    return Reply(None)
                raise TimeoutError(f"no complete reply in {timeout}s: {preview(buf)}") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return _parse(buf, final=True) or Reply(None, raw=buf)
            buf += chunk


def _complete(buf: bytes) -> Reply | None:
    return _parse(buf, final=False)


def _parse(buf: bytes, final: bool) -> Reply | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return Reply(None, raw=buf) if final and buf else None
    head, rest = buf[:end].decode("latin-1"), buf[end + 4:]
    lines = head.split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if m is None:
        return Reply(None, raw=buf) if final else None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    status = int(m.group(1))
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) >= n:
            return Reply(status, headers, rest[:n], buf)
        return Reply(status, headers, rest, buf) if final else None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, complete = _dechunk(rest)
        if complete or final:
            return Reply(status, headers, body, buf)
        return None
    if status in (204, 304) or 100 <= status < 200:
        return Reply(status, headers, b"", buf)
    return Reply(status, headers, rest, buf) if final else None


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out = b""
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return out, False
        try:
            size = int(data[:line_end].split(b";")[0], 16)
        except ValueError:
            return out, True
        if size == 0:
            return out, True
        chunk = data[line_end + 2:line_end + 2 + size]
        if len(chunk) < size:
            return out + chunk, False
        out += chunk
        data = data[line_end + 4 + size:]


def http_request(port: int, method: str | bytes, target: str | bytes, body: bytes = b"",
                 headers: Sequence[tuple[str, str]] | dict[str, str] = (),
                 timeout: float = 15.0, quiet: float | None = None) -> tuple[bytes, Reply]:
    """A well-formed HTTP/1.1 request (Host, Content-Length, Connection: close
    added); returns (the bytes sent, the reply)."""
    m = method.encode("latin-1") if isinstance(method, str) else method
    t = target.encode("utf-8", "surrogateescape") if isinstance(target, str) else target
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in items}
    lines = [m + b" " + t + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{k}: {v}".encode("utf-8", "surrogateescape") for k, v in items]
    if "content-length" not in names and "transfer-encoding" not in names and (
            body or m in (b"POST", b"PUT")):
        lines.append(b"Content-Length: %d" % len(body))
    if "connection" not in names:
        lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    return data, http_raw(port, data, timeout, quiet)


def looks_complete(data: bytes) -> bool:
    """Whether a raw request is whole (its head ended, its body as long as it
    says), so that the server owes an answer rather than waiting for more."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head, body = data[:end].lower(), data[end + 4:]
    if b"transfer-encoding" in head:
        return body.endswith(b"0\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:[ \t]*([0-9]{1,12})[ \t]*(?:\r\n|\Z)", head)
    return m is None or len(body) >= int(m.group(1))


# -- the checks -------------------------------------------------------------------------------

#: Python's exception classes, by name, and those of the libraries tsnet uses
EXCEPTION_NAMES: frozenset[str] = frozenset(
    {n for n, o in vars(builtins).items()
     if isinstance(o, type) and issubclass(o, BaseException) and n.endswith("Error")}
    | {"JSONDecodeError", "OperationalError", "IntegrityError", "DatabaseError",
       "ProgrammingError", "InterfaceError", "StopIteration", "KeyboardInterrupt",
       "ConnectionDone", "ConnectionLost", "CancelledError", "AlreadyCalledError",
       "ResponseError", "GoJSONError", "PutBodyError", "CommandError", "StoreError",
       "QueryError", "SchemaError", "DurationError", "RingError", "BodyError"})
_EXCEPTION_NAME = re.compile(r"\b(?:" + "|".join(sorted(EXCEPTION_NAMES)) + r")\b")
#: what may precede ``(`` in a JSONP reply: a plain JavaScript callback name
_JSONP = re.compile(rb"[A-Za-z_$][\w$.]*\Z")
#: a reply wrapped in a JSONP callback: (callback, JSON)
_JSONP_REPLY = re.compile(rb"([^{\[].*?)\(([\[{].*)\)\Z", re.S)


def leaks(body: bytes, sent: bytes) -> list[str]:
    """Internals in a reply: a traceback, or a Python exception name that the
    request itself did not carry (replies may echo the input)."""
    text = body.decode("utf-8", "replace")
    sent_text = sent.decode("utf-8", "replace")
    out = []
    if "Traceback" in text and "Traceback" not in sent_text:
        out.append("a traceback in the reply")
    for name in sorted(set(_EXCEPTION_NAME.findall(text))):
        if name not in sent_text:
            out.append(f"the exception name {name} in the reply")
    return out


def documented_5xx(family: str, reply: Reply, sent: bytes) -> bool:
    """A 5xx a spec prescribes: 503 (storage unavailable, retry) anywhere;
    OpenTSDB's 500 for a non-integer ``sync_timeout`` (specs/opentsdb.md §2.1);
    ts-store's 500s with the reference's error texts (specs/tsstore.md §3-§9),
    never its generic ``internal error``."""
    if reply.status == 503:
        return True
    if reply.status != 500:
        return False
    try:
        doc = reply.json()
    except ValueError:
        return False
    if family == "opentsdb" and b"sync_timeout" in sent:
        err = doc.get("error") if isinstance(doc, dict) else None
        return isinstance(err, dict) and str(err.get("message", "")).startswith(
            "For input string:")
    if family == "tsstore":
        return isinstance(doc, dict) and isinstance(doc.get("error"), str) \
            and doc["error"] != "internal error"
    return False


def reply_problems(family: str, reply: Reply, sent: bytes, answered: bool = True) -> list[str]:
    """What is wrong with the reply to a request of ``family`` (opentsdb, atsd,
    tsstore, plain): a 5xx no spec prescribes, internals leaked, a JSON error
    reply without its ``error`` member, a reflected JSONP callback; and, when
    ``answered``, no reply at all."""
    out = []
    if reply.status is None:
        if answered:
            out.append("no reply")
        return out
    if reply.status >= 500 and not documented_5xx(family, reply, sent):
        out.append(f"HTTP {reply.status}: {preview(reply.body, 300)}")
    out += leaks(reply.body, sent)
    ctype = reply.headers.get("content-type", "")
    body = reply.body
    wrapped = _JSONP_REPLY.match(body)
    if wrapped:
        if not _JSONP.match(wrapped.group(1)):
            out.append(f"a JSONP callback reflected as sent: {preview(wrapped.group(1))}")
        body = wrapped.group(2)
    if reply.status >= 400 and "json" in ctype and body:
        try:
            doc = json.loads(body)
        except ValueError:
            out.append(f"HTTP {reply.status} says JSON but is not: {preview(reply.body)}")
        else:
            # OpenTSDB's /api/put answers its ``summary``/``details`` object with 400
            if not isinstance(doc, dict) or ("error" not in doc and not (
                    family == "opentsdb" and "failed" in doc and "success" in doc)):
                out.append(f"HTTP {reply.status} without an error object: "
                           f"{preview(reply.body)}")
    return out


# -- the server and its log -----------------------------------------------------------------

_EVENT_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", re.M)
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def log_problems(text: str) -> list[str]:
    """The log events that must not happen: a traceback, an ``Unhandled`` error,
    a critical-level entry; each summed up by its first line, its innermost
    frame in tsnet's code (else the innermost frame) and its exception line."""
    starts = [m.start() for m in _EVENT_START.finditer(text)] + [len(text)]
    out = []
    for a, b in itertools.pairwise(starts):
        event = text[a:b]
        if "Traceback" in event or "Unhandled" in event or "#critical]" in event:
            out.append(summarise_event(event))
    return out


def summarise_event(event: str) -> str:
    lines = [ln.strip() for ln in event.strip().splitlines() if ln.strip()]
    frames = _FRAME.findall(event)
    ours = [f for f in frames if "/tsnet" in f[0] and "/testing/" not in f[0]]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    parts = [lines[0][:300]]
    if where is not None:
        path = re.sub(r".*/(src/|site-packages/)", "", where[0])
        parts.append(f"top frame {path}:{where[1]} in {where[2]}")
    if len(lines) > 1:
        parts.append(lines[-1][:300])
    return " | ".join(parts)


class LogWatch:
    """Reads a growing log file; `new` is what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0

    def new(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        return data.decode("utf-8", "replace")


#: one server for a fuzz module: every listener the suite fuzzes
FUZZ_CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.01

[storage:default]
backend = sqlite

[tsstore]
admin_key = {admin}

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:iot]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1
auth = token

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
disconnect_on_error = no

[listener:atsd-udp]
protocol = atsd
endpoint = udp:0:interface=127.0.0.1

[listener:sock]
protocol = tsstore
endpoint = unix:{sock}

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb atsd tsstore metrics
"""


@dataclass
class FuzzServer:
    """A running ``twistd -n tsnet`` and what the fuzz tests need of it."""

    proc: TsnetProcess
    ports: dict[str, int]
    sock: Path
    log: LogWatch
    #: ts-store stores made for the suite: name -> api key
    stores: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> int:
        return self.ports["http"]

    def new_log_problems(self) -> list[str]:
        return log_problems(self.log.new())

    def create_store(self, name: str, data_type: str = "json") -> str:
        """A store with room for the whole run (nothing reclaimed); its key."""
        body = json.dumps({"name": name, "data_type": data_type, "num_blocks": 65536,
                           "data_block_size": 65536}).encode()
        _, r = http_request(self.http, "POST", "/api/stores", body,
                            {"X-Admin-Key": ADMIN_KEY, "Content-Type": "application/json"})
        assert r.status == 201, (r.status, r.body)
        key = r.json()["api_key"]
        self.stores[name] = key
        return key


@contextmanager
def fuzz_server(directory: Path) -> Iterator[FuzzServer]:
    """`FUZZ_CONFIG` served by a real ``twistd -n tsnet`` in ``directory`` until
    the block ends (then killed)."""
    sock = directory / "run" / "ts.sock"
    sock.parent.mkdir(parents=True)
    cfg = directory / "tsnet.ini"
    cfg.write_text(textwrap.dedent(FUZZ_CONFIG.format(admin=ADMIN_KEY, sock=sock)))
    proc = TsnetProcess(cfg)
    try:
        ports = proc.wait_bound({"opentsdb", "iot", "atsd", "atsd-udp", "http"})
        deadline = time.monotonic() + 20
        while "listener sock bound" not in proc.text():
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.text()
            time.sleep(0.05)
        yield FuzzServer(proc, dict(ports), sock, LogWatch(proc.log))
    finally:
        proc.stop()


@dataclass
class Findings:
    """Problems found by one test, grouped by kind so that a defect hit by many
    inputs is listed once, with its first (and smallest) input."""

    target: str
    seen: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def add(self, case: Case | None, problem: str, sent: bytes = b"") -> None:
        what = f"{case.label() if case else self.target}: {problem}"
        if sent:
            what += f"\n      input: {preview(sent)}"
        entries = self.seen.setdefault(self.kind(problem), [])
        entries.append((len(sent) if sent else 0, what))
        entries.sort(key=lambda e: e[0])

    @staticmethod
    def kind(problem: str) -> str:
        """What makes two problems one defect: a log entry's top frame and
        exception type; an HTTP status and the start of its message; else the
        text before the first colon."""
        frame = re.search(r"top frame (\S+) in \S+ \| (?:builtins\.)?(\w+)(.{0,40})", problem)
        if frame:
            return re.sub(r"\d+", "N", f"log {frame.group(1)} {frame.group(2)}{frame.group(3)}")
        if problem.startswith("HTTP 5"):
            return re.sub(r"\d+", "N", problem[:90])
        return re.sub(r"\d+", "N", problem.split(":", 1)[0])

    def report(self) -> str:
        lines = [f"{len(self.seen)} distinct problems in {self.target}:"]
        for entries in self.seen.values():
            lines.append(f"  - {entries[0][1]}" + (f"\n    ({len(entries)} inputs in all)"
                                                  if len(entries) > 1 else ""))
        return "\n".join(lines)

    def check(self) -> None:
        assert not self.seen, self.report()
