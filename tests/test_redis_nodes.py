"""Several tsnet nodes over shared Redis, as DESIGN §6-7 promise it: real
``twistd -n tsnet`` processes, real ``redis-server``s, the real ``tsnet`` command.

- two nodes over one server read each other's writes, and the export shows
  every point once;
- a token made with ``tsnet token create`` works on both nodes, and a
  ``tsnet token revoke`` through one node's config is in force on the other
  within 5 s (at the default ``auth_refresh``);
- two servers in ``url`` shard the series evenly, each series on the shard the
  ring names, whatever order each node lists the URLs in, and such nodes share
  one catalog;
- the ring itself (no processes): adding a fourth shard moves only the keys the
  new shard takes, about a quarter, and placement depends on the shards'
  identities alone.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tsnet.storage.redis_keys import DEFAULT_PREFIX, route
from tsnet.storage.redis_shards import HashRing, parse_redis_url, parse_redis_urls
from tsnet.testing.process import TsnetProcess, json_lines, running, send_lines, tsnet
from tsnet.testing.redis import RedisServer

T0 = 1356998400  # 2013-01-01T00:00:00Z, in seconds

# No auth_refresh: the 5 s bound is checked at the default (2 s).
NODE = """
[tsnet]
data_dir = var
flush_interval = 0.1

[storage:default]
backend = redis
url = {url}

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:iot]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1
auth = token

[listener:api]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = token
apis = opentsdb

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb metrics
"""
LISTENERS = {"opentsdb", "iot", "api", "http"}


def start_node(stack: ExitStack, folder: Path, url: str) -> TsnetProcess:
    """A node in its own folder (its own data_dir), on free ports."""
    folder.mkdir()
    return stack.enter_context(running(folder, NODE.format(url=url), LISTENERS))


# -- HTTP -----------------------------------------------------------------------


def request(port: int, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; an HTTP error is an answer too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def query(port: int, m: str, headers: dict[str, str] | None = None
          ) -> dict[tuple[tuple[str, str], ...], dict[str, Any]]:
    """GET /api/query over [T0 - 1 h, T0 + 1 h]: dps by the series' sorted tags."""
    q = urllib.parse.urlencode({"start": T0 - 3600, "end": T0 + 3600, "m": m})
    status, _, body = request(port, f"/api/query?{q}", headers=headers)
    assert status == 200, (status, body)
    out: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for r in json.loads(body):
        key = tuple(sorted(r["tags"].items()))
        assert key not in out, f"series {key} answered twice"
        out[key] = r["dps"]
    return out


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def series_rows(text: str) -> Counter:
    """Exported series lines as a multiset of (solution, metric, tags, time_ms, value)."""
    return Counter((r["solution"], r["metric"], tuple(sorted(r["tags"].items())),
                    r["time_ms"], r["value"])
                   for r in json_lines(text) if r["kind"] == "series")


def data_keys(server: RedisServer) -> set[bytes]:
    return set(server.command("KEYS", f"{DEFAULT_PREFIX}s:*:d:*"))


# -- 1. two nodes, one redis-server ----------------------------------------------


@pytest.mark.subprocess
def test_two_nodes_over_one_redis_read_each_others_writes(
        tmp_path: Path, redis_server: RedisServer) -> None:
    # ints (one beyond 2**53, which only int64 keeps exact), floats, negatives
    values = [0, 1, -7, 2.5, 1e-3, 9007199254740993, -0.25, 42]
    sent: Counter = Counter()

    def lines(metric: str) -> list[str]:
        out = []
        for host in ("web01", "web02"):
            for i, v in enumerate(values):
                out.append(f"put {metric} {T0 + 10 * i} {v} host={host} dc=par\n")
                sent[("default", metric, (("dc", "par"), ("host", host)),
                      (T0 + 10 * i) * 1000, v)] += 1
        return out

    def expected_dps(metric: str) -> dict:
        return {(("dc", "par"), ("host", h)): {str(T0 + 10 * i): v for i, v in enumerate(values)}
                for h in ("web01", "web02")}

    with ExitStack() as stack:
        a = start_node(stack, tmp_path / "a", redis_server.url)
        b = start_node(stack, tmp_path / "b", redis_server.url)
        assert a.ports != b.ports

        # A -> B: telnet put has no ack; A's counter says when it committed
        assert send_lines(a.ports["opentsdb"], lines("from.a")) == ""
        a.wait_metric("tsnet_points_written_total", 2 * len(values))
        got = query(b.ports["http"], "none:from.a{host=*}")
        assert got == expected_dps("from.a")

        # B -> A
        assert send_lines(b.ports["opentsdb"], lines("from.b")) == ""
        b.wait_metric("tsnet_points_written_total", 2 * len(values))
        assert query(a.ports["http"], "none:from.b{host=*}") == expected_dps("from.b")
        # and each node still reads its own writes beside the other's
        assert query(a.ports["http"], "none:from.a{host=*}") == expected_dps("from.a")
        assert query(b.ports["http"], "none:from.b{host=*}") == expected_dps("from.b")

        # the command, against the same Redis while both nodes run: every point once
        for node in (a, b):
            assert series_rows(tsnet(node.config, "export").stdout) == sent
    assert len(sent) == 4 * len(values) and set(sent.values()) == {1}


# -- 2. tokens and revocations on every node ----------------------------------------


def put_body(metric: str, t: int, value: float, **tags: str) -> bytes:
    return json.dumps([{"metric": metric, "timestamp": t, "value": value,
                        "tags": tags or {"p": "1"}}]).encode()


def put(port: int, headers: dict[str, str], metric: str, t: int, value: float,
        **tags: str) -> tuple[int, dict[str, str]]:
    """One /api/put on a fresh connection: 204 or 401 (anything else fails)."""
    status, hdrs, body = request(port, "/api/put", json.loads(put_body(metric, t, value, **tags)),
                                 headers=headers)
    assert status in (204, 401), (status, body)
    return status, hdrs


class KeepAlive:
    """One keep-alive HTTP/1.1 connection, as a device holds it: plain POSTs
    with a Content-Length body, which take tsnet's fast path once its
    credential is verified."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Content-Type": "application/json", **headers}
        self.sent = 0

    def put(self, metric: str, t: int, value: float) -> int:
        self.conn.request("POST", "/api/put", put_body(metric, t, value), self.headers)
        r = self.conn.getresponse()
        r.read()
        assert r.status in (204, 401), r.status
        assert not r.will_close, "tsnet closed the keep-alive connection"
        self.sent += 1
        return r.status

    def close(self) -> None:
        self.conn.close()


class TelnetSession:
    """One telnet connection that authenticated once with ``auth SECRET``."""

    def __init__(self, port: int, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"auth {secret}\n".encode())
        assert self.read_line() == "ok"
        self.said = b""

    def read_line(self) -> str:
        out = b""
        while not out.endswith(b"\n"):
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            out += chunk
        return out.decode().rstrip("\n")

    def put_refused(self, metric: str, t: int, value: float) -> bool:
        """Send a put; True once the server answered it (success is silent)
        and closed the connection.  Waits 0.1 s for an answer."""
        try:
            self.sock.sendall(f"put {metric} {t} {value} via=telnet\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            return True
        ready, _, _ = select.select([self.sock], [], [], 0.1)
        if ready:
            while chunk := self.sock.recv(4096):
                self.said += chunk
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def poll(what: str, ok: Any, limit: float = 5.0, since: float | None = None,
         pause: float = 0.1) -> float:
    """Call ``ok()`` every ``pause`` s until it is true; the seconds it took
    (from ``since``), failing past ``limit``."""
    t0 = time.monotonic() if since is None else since
    while not ok():
        assert time.monotonic() - t0 < limit, f"{what} not within {limit} s"
        time.sleep(pause)
    return time.monotonic() - t0


@pytest.mark.subprocess
def test_token_works_on_both_nodes_and_revocation_reaches_the_other_within_5s(
        tmp_path: Path, redis_server: RedisServer) -> None:
    with ExitStack() as stack:
        a = start_node(stack, tmp_path / "a", redis_server.url)
        b = start_node(stack, tmp_path / "b", redis_server.url)
        tsnet(b.config, "solution", "create", "fleet")
        tok = json_lines(tsnet(b.config, "token", "create", "fleet", "--tag",
                               "unit=u1").stdout)[0]
        write_key = {"X-API-Key": tok["write"]}
        write_basic = basic(tok["write_id"], tok["write"].split(":", 1)[1])
        read_basic = basic(tok["read_id"], tok["read"].split(":", 1)[1])

        # made while both run (through B's config): in force on both within 5 s
        for node in (a, b):
            poll("new token on a node", lambda n=node: put(
                n.ports["api"], write_key, "probe", T0, 0)[0] == 204)

        # A with X-API-Key, B with HTTP Basic; the token's tag overrides the client's
        for i in range(3):
            assert put(a.ports["api"], write_key, "t", T0 + i, i, unit="spoof",
                       via="a")[0] == 204
            assert put(b.ports["api"], write_basic, "t", T0 + i, 10 + i, unit="spoof",
                       via="b")[0] == 204
        # each node reads the other's points with the READ token, in the token's solution
        want = {(("unit", "u1"), ("via", "a")): {str(T0 + i): i for i in range(3)},
                (("unit", "u1"), ("via", "b")): {str(T0 + i): 10 + i for i in range(3)}}
        for node in (a, b):
            assert query(node.ports["api"], "none:t{via=*}", read_basic) == want
        # nothing of it in `default`, which the unauthenticated listener reads
        # (OpenTSDB answers a metric it never saw with 400)
        status, _, body = request(b.ports["http"], f"/api/query?start={T0 - 3600}&m=none:t")
        assert (status, json.loads(body)["error"]["message"]) == (
            400, "No such name for 'metrics': 't'")

        # devices that stay connected to B: a keep-alive HTTP connection (the
        # fast path, credential cached) and an authenticated telnet session
        device = KeepAlive(b.ports["api"], write_basic)
        stack.callback(device.close)
        for k in range(3):
            assert device.put("probe.keepalive", T0 + k, k) == 204
        session = TelnetSession(b.ports["iot"], tok["write"])
        stack.callback(session.close)
        assert not session.put_refused("probe.telnet", T0, 0)

        # revoked through A's config: B refuses it within 5 s, by every way in
        tsnet(a.config, "token", "revoke", tok["id"])
        revoked_at = time.monotonic()
        refused: list[dict[str, str]] = []

        def refuses(node: TsnetProcess, headers: dict[str, str]) -> bool:
            status, hdrs = put(node.ports["api"], headers, "probe", T0, 0)
            if status == 401:
                refused.append(hdrs)
            return status == 401

        k = iter(range(10, 1000))
        checks = {
            "B, new connection": lambda: refuses(b, write_basic),
            "B, keep-alive connection": lambda: device.put("probe.keepalive", T0 + next(k),
                                                           0) == 401,
            "B, telnet session": lambda: session.put_refused("probe.telnet", T0 + next(k), 0),
            "A, new connection": lambda: refuses(a, write_key),
        }
        took = {}  # seconds from the revoke command's exit, printed with -s
        for what, check in checks.items():
            took[what] = poll(f"revocation seen on {what}", check, since=revoked_at,
                              pause=0.05)
        print("revocation in force after (s):",
              {w: round(t, 2) for w, t in took.items()})
        assert max(took.values()) < 5
        for hdrs in refused:
            assert hdrs.get("WWW-Authenticate", "").startswith("Basic")
        assert session.said.decode() == "put: illegal argument: Unauthenticated command: put\n"
        # every way of sending it, and the READ half too
        assert put(b.ports["api"], write_key, "probe", T0, 0)[0] == 401
        assert request(b.ports["api"], "/api/query?start=1h-ago&m=none:t",
                       headers=read_basic)[0] == 401
        # and a new telnet session is refused at `auth`
        with socket.create_connection(("127.0.0.1", b.ports["iot"]), timeout=10) as s:
            s.sendall(f"auth {tok['write']}\n".encode())
            assert s.recv(4096) == b"auth: invalid token\n"

    rows = series_rows(tsnet(a.config, "export", "--solution", "fleet").stdout)
    t_rows = Counter({k: n for k, n in rows.items() if k[1] == "t"})
    assert t_rows == Counter({
        ("fleet", "t", (("unit", "u1"), ("via", via)), (T0 + i) * 1000, base + i): 1
        for via, base in (("a", 0), ("b", 10)) for i in range(3)})


# -- 3. two redis-servers: sharded series ---------------------------------------------


@pytest.mark.subprocess
def test_two_shards_split_series_evenly_and_every_node_reads_them(
        tmp_path: Path, redis_servers: Any) -> None:
    s1, s2 = redis_servers(2)
    n_series = 200
    with ExitStack() as stack:
        a = start_node(stack, tmp_path / "a", f"{s1.url} {s2.url}")
        # B lists the shards the other way round: placement must not change
        b = start_node(stack, tmp_path / "b", f"{s2.url}\n    {s1.url}")

        lines = [f"put shard.m {T0 + k} {i * 10 + k} series=s{i:03d}\n"
                 for i in range(n_series) for k in range(2)]
        assert send_lines(a.ports["opentsdb"], lines) == ""
        a.wait_metric("tsnet_points_written_total", len(lines))

        keys1, keys2 = data_keys(s1), data_keys(s2)
        assert keys1 and keys2
        assert not keys1 & keys2
        assert len(keys1) + len(keys2) == n_series
        for keys in (keys1, keys2):
            assert 0.25 * n_series <= len(keys) <= 0.75 * n_series, (len(keys1), len(keys2))
        # each key on the shard the ring over the identities names
        ring = HashRing([parse_redis_url(s.url).identity for s in (s1, s2)])
        for index, keys in enumerate((keys1, keys2)):
            assert {ring.index(route(DEFAULT_PREFIX, k)) for k in keys} == {index}
        want = {(("series", f"s{i:03d}"),): {str(T0 + k): i * 10 + k for k in range(2)}
                for i in range(n_series)}
        assert query(b.ports["http"], "none:shard.m{series=*}") == want
        exported = series_rows(tsnet(b.config, "export").stdout)
        assert exported == Counter({
            ("default", "shard.m", (("series", f"s{i:03d}"),), (T0 + k) * 1000, i * 10 + k): 1
            for i in range(n_series) for k in range(2)})

        # B overwrites every series' first point: same keys on the same shards
        # (last write wins), no series split over two shards
        lines_b = [f"put shard.m {T0} {-i} series=s{i:03d}\n" for i in range(n_series)]
        assert send_lines(b.ports["opentsdb"], lines_b) == ""
        b.wait_metric("tsnet_points_written_total", len(lines_b))
        assert (data_keys(s1), data_keys(s2)) == (keys1, keys2)
        for i in range(n_series):
            want[(("series", f"s{i:03d}"),)][str(T0)] = -i
        for node in (a, b):
            assert query(node.ports["http"], "none:shard.m{series=*}") == want
        assert sum(series_rows(tsnet(a.config, "export").stdout).values()) == 2 * n_series




@pytest.mark.subprocess
def test_nodes_listing_the_shards_in_another_order_share_one_catalog(
        tmp_path: Path, redis_servers: Any) -> None:
    s1, s2 = redis_servers(2)
    with ExitStack() as stack:
        a = start_node(stack, tmp_path / "a", f"{s1.url} {s2.url}")
        b = start_node(stack, tmp_path / "b", f"{s2.url} {s1.url}")
        tsnet(b.config, "solution", "create", "fleet")
        tok = json_lines(tsnet(b.config, "token", "create", "fleet").stdout)[0]
        listed = json_lines(tsnet(a.config, "solution", "list").stdout)
        assert "fleet" in [s["name"] for s in listed], "A's config does not see B's solution"
        write_key = {"X-API-Key": tok["write"]}
        poll("token made through B's config on node A", lambda: put(
            a.ports["api"], write_key, "probe", T0, 0)[0] == 204)
        # one catalog, on one shard
        catalog = [bool(s.command("KEYS", f"{DEFAULT_PREFIX}c:*")) for s in (s1, s2)]
        assert catalog.count(True) == 1, "catalog records on both shards"


# -- 4. the ring ------------------------------------------------------------------------


IDENTITIES = ["10.0.0.1:6379/0", "10.0.0.2:6379/0", "10.0.0.3:6380/0", "10.0.0.4:6379/1"]


def routing_keys(n: int = 10_000) -> list[bytes]:
    rnd = random.Random(20130101)
    return [f"sol{rnd.randrange(50)}:{rnd.getrandbits(80):020x}".encode() for _ in range(n)]


def placement(identities: list[str], keys: list[bytes]) -> list[str]:
    """The identity owning each key."""
    ring = HashRing(identities)
    return [identities[ring.index(k)] for k in keys]


def test_ring_adding_a_fourth_shard_moves_only_its_quarter() -> None:
    keys = routing_keys()
    before = placement(IDENTITIES[:3], keys)
    after = placement(IDENTITIES, keys)
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert moved, "nothing moved to the new shard"
    assert {new for _, new in moved} == {IDENTITIES[3]}, "a key moved between old shards"
    assert 0.15 <= len(moved) / len(keys) <= 0.35, len(moved) / len(keys)
    # and every shard gets a fair share (160 points each)
    for n, ids in ((3, IDENTITIES[:3]), (4, IDENTITIES)):
        shares = Counter(placement(ids, keys))
        assert set(shares) == set(ids)
        assert all(0.5 / n <= c / len(keys) <= 1.5 / n for c in shares.values()), shares


def test_ring_placement_depends_on_identities_not_their_order() -> None:
    keys = routing_keys()
    base = placement(IDENTITIES, keys)
    rnd = random.Random(7)
    for _ in range(3):
        ids = IDENTITIES[:]
        rnd.shuffle(ids)
        assert placement(ids, keys) == base


def test_ring_is_the_same_on_every_node() -> None:
    """Another interpreter (another hash seed, as another node has) places the
    same keys on the same shards: the ring hashes with BLAKE2b, not hash()."""
    keys = routing_keys(2000)
    code = (
        "import json, sys\n"
        "from tsnet.storage.redis_shards import HashRing\n"
        "ids, keys = json.load(sys.stdin)\n"
        "ring = HashRing(ids)\n"
        "print(json.dumps([ids[ring.index(k.encode())] for k in keys]))\n")
    for seed in ("1", "2"):
        p = subprocess.run([sys.executable, "-c", code],
                           input=json.dumps([IDENTITIES[::-1], [k.decode() for k in keys]]),
                           capture_output=True, text=True, timeout=30, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(p.stdout) == placement(IDENTITIES, keys)


def test_storage_rings_over_identities_without_passwords() -> None:
    """What RedisStorage puts on its ring: host:port/db, so a password, the
    scheme's TLS or the URLs' order change nothing."""
    from twisted.internet import reactor

    from tsnet.storage.redis import RedisStorage

    plain = "redis://10.0.0.1:6379/0 redis://10.0.0.2:6379/0 redis://10.0.0.3:6380/0"
    other = ("redis://:s3cret@10.0.0.3:6380/0 rediss://10.0.0.1:6379 "
             "redis://user:pw@10.0.0.2:6379/0")
    assert [u.identity for u in parse_redis_urls(plain)] == IDENTITIES[:3]
    keys = routing_keys(2000)
    owners = []
    for text in (plain, other):
        storage = RedisStorage("default", parse_redis_urls(text), reactor)
        urls = storage._urls  # what the ring indexes point into
        owners.append([urls[storage._ring.index(k)].identity for k in keys])
    assert owners[0] == owners[1] == placement(IDENTITIES[:3], keys)
