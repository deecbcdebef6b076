"""OpenTSDB telnet through real loopback sockets into a real store, SQLite and Redis."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.helpers.clients import connect_line, sleep, wait_for
from tsnet.testing.fixtures import BASE_CONFIG, make_token


@pytest.fixture
def storage_config(each_backend: str) -> str:
    """Every test here on SQLite and on Redis."""
    return each_backend


# (input line, expected reply or None for silence) -- specs/opentsdb.md §1.4-§1.6, §6
CASES = [
    ("put sys.cpu 1356998400 42 host=web01", None),
    ("put sys.cpu 1356998400 42.5",
     "put: illegal argument: not enough arguments (need least 4, got 3)"),
    ("put", "put: illegal argument: not enough arguments (need least 4, got 0)"),
    ("put  sys.cpu 1356998400 1 host=a", "put: illegal argument: empty metric name"),
    ("put m notatime 42 host=web01", "put: invalid value: Invalid character 'n' in notatime"),
    ("put m 0 1 host=a", "put: illegal argument: invalid timestamp: 0"),
    ("put m 1356998400  1 host=a", "put: illegal argument: empty value"),
    ("put m 1356998400 NaN host=web01", "put: invalid value: Invalid character 'N' in NaN"),
    ("put m 1356998400 1 host", "put: illegal argument: invalid tag: host"),
    ("put m 1356998400 1 ", "put: illegal argument: Need at least one tag (metric=m, tags={})"),
    ("put sys.cpu!user 1356998400 1 host=web01",
     "put: illegal argument: Invalid metric name (\"sys.cpu!user\"): illegal character: !"),
    ("put m 1356998400 1e999 host=a",
     "put: illegal argument: value is NaN or Infinite: Infinity for metric=m timestamp=1356998400"),
    ("bogus", "unknown command: bogus.  Try `help'."),
    ("", "unknown command: .  Try `help'."),
    ("diediedie", "unknown command: diediedie.  Try `help'."),
    ("dropcaches", "Caches dropped."),
    ("put m 1356998400 2 host=a  cpu=0 ", None),
]


@pytest_twisted.inlineCallbacks
def test_case_table_one_reply_per_failing_line_in_order(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    c.send("".join(line + "\n" for line, _ in CASES))
    expected = [r for _, r in CASES if r is not None]
    lines = yield c.wait_lines(len(expected))
    assert lines == expected
    c.close()
    yield server.flush()
    rows = yield server.export()
    assert [(r["metric"], r["tags"], r["value"]) for r in rows] == [
        ("m", {"cpu": "0", "host": "a"}, 2),
        ("sys.cpu", {"host": "web01"}, 42),
    ]


@pytest_twisted.inlineCallbacks
def test_bad_lines_cost_nothing_around_them(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    good = [f"put load {1356998400 + i} {i} host=h{i % 3}\n" for i in range(300)]
    mixed = []
    for i, g in enumerate(good):
        mixed.append(g)
        if i % 7 == 0:
            mixed.append("put load x 1 host=a\n")
    c.send("".join(mixed))
    lines = yield c.wait_lines(len([1 for i in range(300) if i % 7 == 0]))
    assert set(lines) == {"put: invalid value: Invalid character 'x' in x"}
    c.close()
    yield wait_for(lambda: server.core.ingest.queued == 0)
    yield server.flush()
    n = yield server.core.storages.backend("default").count_points("default")
    assert n == 300


@pytest_twisted.inlineCallbacks
def test_commands(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    c.send("version\nhelp\nstats\n")
    lines = yield c.wait_lines(3)
    assert lines[0].startswith("net.opentsdb.tools 2.4.0 built at revision ")
    assert lines[1].startswith("Built on ")
    assert lines[2] == "available commands: stats dropcaches version exit help put "
    stats = yield c.wait_lines(8)
    assert any(s.startswith("tsd.connectionmgr.connections ") and " 1 type=open" in s
               for s in stats)
    c.send("exit\nput m 1356998400 1 host=after.exit\n")
    yield c.wait_closed()
    yield server.flush()
    assert (yield server.export()) == []


@pytest_twisted.inlineCallbacks
def test_split_reads_crlf_and_latin1(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    for part in ("put m 13569", "98400 1 ho", "st=a\r\nput m 1356998401 2 host=a\r", "\n"):
        c.send(part)
        yield sleep(0.02)
    c.send("put temp\xe9rature 1356998400 3 host=a\n".encode("latin-1"))
    c.send("put temp\xe9rature 1356998400 4 host=b\n".encode())
    yield sleep(0.2)
    c.close()
    yield server.flush()
    rows = yield server.export()
    assert [(r["metric"], r["time_ms"], r["value"]) for r in rows] == [
        ("m", 1356998400000, 1), ("m", 1356998401000, 2),
        ("température", 1356998400000, 3), ("température", 1356998400000, 4),
    ]
    assert c.received == b""


@pytest_twisted.inlineCallbacks
def test_half_close_gets_every_reply_then_close(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    c.send("put m 1356998400 1 host=a\nbogus\nput m x 1 host=a\nversion\n")
    c.transport.loseWriteConnection()  # as `printf ... | nc -N` does
    data = yield c.wait_closed()
    lines = data.decode().splitlines()
    assert lines[:2] == ["unknown command: bogus.  Try `help'.",
                         "put: invalid value: Invalid character 'x' in x"]
    assert lines[2].startswith("net.opentsdb.tools ") and len(lines) == 4


@pytest_twisted.inlineCallbacks
def test_overlong_line_closes_connection(server: Any) -> None:
    c = yield connect_line(server.port("opentsdb"))
    c.send("put m 1356998400 1 host=kept\nbogus\n" + "put m 1356998400 1 host=" + "x" * 9000
           + "\nput m 1356998400 1 host=after\n")
    data = yield c.wait_closed()
    assert data == b"unknown command: bogus.  Try `help'.\n"  # lines before it are answered
    c = yield connect_line(server.port("opentsdb"))
    c.send("put m 1356998400 1 host=" + "y" * 9000)  # no newline yet: still too long
    assert (yield c.wait_closed()) == b""
    yield server.flush()
    rows = yield server.export()
    assert [r["tags"] for r in rows] == [{"host": "kept"}]


TOKEN_CONFIG = BASE_CONFIG.replace(
    "endpoint = tcp:0:interface=127.0.0.1\n\n[listener:http]",
    "endpoint = tcp:0:interface=127.0.0.1\nauth = token\n\n[listener:http]")




@pytest_twisted.inlineCallbacks
def test_token_auth_session_and_tags(make_server: Any) -> None:
    server = yield make_server(TOKEN_CONFIG)
    _, sec = yield make_token(server, tags={"device": "d1"})
    c = yield connect_line(server.port("opentsdb"))
    c.send("help\n")
    yield c.wait_lines(1)  # works before auth
    c.send(f"auth {sec['write']}\nput temp 1356998400 20 device=spoofed room=a\n"
           "put temp 1356998401 21 \nput temp 1356998402 22\n")
    lines = yield c.wait_lines(3)
    assert lines[1:] == ["ok", "put: illegal argument: not enough arguments (need least 4, got 3)"]
    c.close()
    yield server.flush()
    rows = yield server.export("iot")
    assert [(r["solution"], r["tags"], r["value"]) for r in rows] == [
        ("iot", {"device": "d1"}, 21),  # no client tag: the token's tag suffices (A8)
        ("iot", {"device": "d1", "room": "a"}, 20),  # the token's tag overrides the client's
    ]


@pytest_twisted.inlineCallbacks
def test_token_auth_refusals(make_server: Any) -> None:
    server = yield make_server(TOKEN_CONFIG)
    _, sec = yield make_token(server)
    # no auth at all: refused and closed
    c = yield connect_line(server.port("opentsdb"))
    c.send("put m 1356998400 1 host=a\nput m 1356998401 1 host=a\n")
    data = yield c.wait_closed()
    assert data == b"put: illegal argument: Unauthenticated command: put\n"
    # a READ token cannot write; a made-up one neither
    for bad in (sec["read"], "nosuchid:nosuchkeynosuchkey", "x" * 20):
        c = yield connect_line(server.port("opentsdb"))
        c.send(f"auth {bad}\nput m 1356998400 1 host=a\n")
        data = yield c.wait_closed()
        assert data == b"auth: invalid token\n"
    yield server.flush()
    assert (yield server.export("iot")) == []


@pytest_twisted.inlineCallbacks
def test_ovh_auth_tag_per_line_never_stored(make_server: Any) -> None:
    server = yield make_server(TOKEN_CONFIG)
    _, sec = yield make_token(server, tags={"app": "x"})
    c = yield connect_line(server.port("opentsdb"))
    w = sec["write"]
    c.send(f"put m 1356998400 1 host=a ovh.auth={w}\nput m 1356998401 2 ovh.auth={w} host=b\n"
           f"put m 1356998402 3 host=c ovh.auth={sec['read']}\n")
    data = yield c.wait_closed()
    assert data == b"put: illegal argument: Unauthenticated command: put\n"
    yield server.flush()
    rows = yield server.export("iot")
    assert [r["tags"] for r in rows] == [{"app": "x", "host": "a"}, {"app": "x", "host": "b"}]


@pytest_twisted.inlineCallbacks
def test_revocation_reaches_open_session(make_server: Any) -> None:
    server = yield make_server(TOKEN_CONFIG.replace("flush_interval = 0.05",
                                                    "flush_interval = 0.05\nauth_refresh = 0.2"))
    rec, sec = yield make_token(server)
    c = yield connect_line(server.port("opentsdb"))
    c.send(f"auth {sec['write']}\nput m 1356998400 1 host=a\n")
    assert (yield c.wait_lines(1)) == ["ok"]
    rec.revoked = True
    yield server.core.catalog.save_token(rec)
    yield sleep(0.6)
    c.send("put m 1356998401 1 host=a\n")
    data = yield c.wait_closed()
    assert data.endswith(b"put: illegal argument: Unauthenticated command: put\n")
    yield server.flush()
    assert [r["time_ms"] for r in (yield server.export("iot"))] == [1356998400000]


@pytest_twisted.inlineCallbacks
def test_close_on_error_and_idle_timeout(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace(
        "[listener:http]",
        "close_on_error = yes\nidle_timeout = 0.3\n\n[listener:http]"))
    c = yield connect_line(server.port("opentsdb"))
    c.send("put m 1356998400 1 host=a\nput m x 1 host=a\nput m 1356998402 1 host=a\n")
    data = yield c.wait_closed()
    assert data == b"put: invalid value: Invalid character 'x' in x\n"
    c = yield connect_line(server.port("opentsdb"))
    yield c.wait_closed(timeout=3)  # closed by the idle timeout, not by us
    yield server.flush()
    assert [r["time_ms"] for r in (yield server.export())] == [1356998400000]


@pytest_twisted.inlineCallbacks
def test_max_connections(make_server: Any) -> None:
    server = yield make_server(BASE_CONFIG.replace(
        "[listener:http]", "max_connections = 2\n\n[listener:http]"))
    a = yield connect_line(server.port("opentsdb"))
    b = yield connect_line(server.port("opentsdb"))
    c = yield connect_line(server.port("opentsdb"))
    yield c.wait_closed()
    a.send("help\n")
    assert len((yield a.wait_lines(1))) == 1
    assert not b.closed.called
    a.close()
    b.close()


@pytest_twisted.inlineCallbacks
def test_every_parser_case_through_a_socket(server: Any) -> None:
    """The whole case table of specs/opentsdb.md §1.3-§1.6 (tests/test_opentsdb_parse.py)
    sent on one connection: one reply per failing line, in order, silence for the
    good ones, and exactly the good ones stored."""
    from tests.test_opentsdb_parse import CASES, Prefix

    cases = [(line, want) for line, want in CASES
             if "\n" not in line and "\r" not in line and "ovh.auth" not in line]
    c = yield connect_line(server.port("opentsdb"))
    c.send("".join(line + "\n" for line, _ in cases).encode("utf-8"))
    errors = [want for _, want in cases if isinstance(want, str)]
    replies = yield c.wait_lines(len(errors), timeout=10)
    assert len(replies) == len(errors)
    for got, want in zip(replies, errors, strict=True):
        if isinstance(want, Prefix):
            assert got.startswith(want), (got, want)
        else:
            assert got == want
    c.close()
    yield server.flush()
    stored = {(r["metric"], tuple(sorted(r["tags"].items())), r["time_ms"] * 10**6)
              for r in (yield server.export())}
    good = {(w[0][0], w[0][2], w[1]) for _, w in cases if isinstance(w, tuple)}
    assert stored == good
