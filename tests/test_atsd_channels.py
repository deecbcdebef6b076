"""The ATSD family through real sockets: TCP (replies, debug acks after commit,
disconnect on error, EOF), UDP (no replies, the unterminated tail dropped) and
HTTP /api/v1/command (tokens, counts, gzip), checked against the export and
the command logs."""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.logger import formatEvent

from tests.helpers.clients import connect_line, sleep, wait_for
from tests.helpers.logs import leaks, refuse, watching
from tsnet.protocols.atsd import http_command, meta, udp
from tsnet.protocols.atsd import plugin as atsd_plugin
from tsnet.protocols.atsd.plugin import AtsdPlugin
from tsnet.testing.fixtures import make_token

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
solution = fleet

[listener:atsd-keep]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
solution = fleet
disconnect_on_error = no
command_log = yes

[listener:atsd-udp]
protocol = atsd
endpoint = udp:0:interface=127.0.0.1
solution = fleet

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = token
apis = atsd opentsdb metrics
"""

T_MS = 1_425_482_080_000


async def start(make_server: Any) -> Any:
    return await make_server(CONFIG)


def series_rows(rows: list[dict]) -> list[tuple]:
    return sorted((r["entity"], r["metric"], tuple(sorted(r["tags"].items())), r["time_ms"],
                   r["value"], r.get("text")) for r in rows if r["kind"] == "series")


@pytest_twisted.ensureDeferred
async def test_tcp_commands_of_every_kind_on_one_connection(make_server: Any) -> None:
    server = await start(make_server)
    c = await connect_line(server.port("atsd"))
    c.send(f"series e:Srv1 m:CPU_busy=72.5 m:mem=10 t:Host=A ms:{T_MS}\n"
           f"property e:srv1 t:disk k:mount=/ v:fs=ext4 ms:{T_MS}\n"
           f"message e:srv1 t:type=security t:severity=WARNING m:\"login failed\" ms:{T_MS}\n"
           "metric m:cpu_busy l:\"CPU busy\" p:float u:%\n"
           "entity e:srv1 l:\"Server 1\" t:site=paris\n"
           "debug ping\n")
    assert await c.wait_lines(1) == ["ok"]  # ping answers with or without debug
    c.send(f"debug series e:srv1 m:acked=1 ms:{T_MS}\n")
    assert await c.wait_lines(2) == ["ok", "ok"]  # after commit
    rows = await server.export("fleet")  # so the export holds it already
    assert series_rows(rows) == [
        ("srv1", "acked", (), T_MS, 1.0, None),
        ("srv1", "cpu_busy", (("host", "A"),), T_MS, 72.5, None),
        ("srv1", "mem", (("host", "A"),), T_MS, 10.0, None),
    ]
    await server.flush()
    rows = await server.export("fleet")
    kinds = {r["kind"] for r in rows}
    assert {"series", "property", "message", "metric", "entity"} <= kinds
    [prop] = [r for r in rows if r["kind"] == "property"]
    assert (prop["entity"], prop["type"], prop["key"], prop["tags"]) == (
        "srv1", "disk", {"mount": "/"}, {"fs": "ext4"})
    [msg] = [r for r in rows if r["kind"] == "message"]
    assert (msg["type"], msg["severity"], msg["message"]) == ("security", "WARNING",
                                                              "login failed")
    c.close()


@pytest_twisted.ensureDeferred
async def test_tcp_control_commands(make_server: Any) -> None:
    server = await start(make_server)
    c = await connect_line(server.port("atsd"))
    c.send("version\ntime\nping\nexit\nseries e:x m:after=1\n")
    await c.wait_closed()
    version, now, ok, bye = c.lines()
    assert version.isdigit() and ok == "ok" and bye == "Goodbye"
    assert abs(int(now) - int(server.core.reactor.seconds() * 1000)) < 60_000
    await server.flush()
    assert series_rows(await server.export("fleet")) == []  # nothing after exit


@pytest_twisted.ensureDeferred
async def test_a_bad_command_closes_after_its_reply_and_keeps_what_came_before(
        make_server: Any) -> None:
    server = await start(make_server)
    c = await connect_line(server.port("atsd"))
    c.send(f"series e:x m:before=1 ms:{T_MS}\ndebug bogus e:x\nseries e:x m:after=1 ms:{T_MS}\n")
    await c.wait_closed()
    assert c.lines() == ["Invalid command: bogus e:x"]
    await server.flush()
    assert [r[1] for r in series_rows(await server.export("fleet"))] == ["before"]
    assert server.core.metrics.points_rejected.labels("atsd", "unknown_command")._value.get() == 1
    server.core.plugins["atsd"].logs(server.core).flush()
    log = (Path(server.core.config.data_dir) / "command_malformed.log").read_text()
    assert log.endswith(";incoming.tcp.raw;unknown_command;debug bogus e:x\n")


@pytest_twisted.ensureDeferred
async def test_disconnect_on_error_no_keeps_the_connection(make_server: Any) -> None:
    server = await start(make_server)
    c = await connect_line(server.port("atsd-keep"))
    c.send(f"debug series e:x m:a=abc ms:{T_MS}\ndebug series e:x m:b=2 ms:{T_MS}\n")
    lines = await c.wait_lines(2)
    assert lines[0] != "ok" and lines[1] == "ok"
    assert [r[1] for r in series_rows(await server.export("fleet"))] == ["b"]
    server.core.plugins["atsd"].logs(server.core).flush()
    accepted = (Path(server.core.config.data_dir) / "command.log").read_text()
    assert accepted.endswith(f";incoming.tcp.raw;debug series e:x m:b=2 ms:{T_MS}\n")
    c.close()


@pytest_twisted.ensureDeferred
async def test_the_last_command_at_eof_without_lf(make_server: Any) -> None:
    server = await start(make_server)
    port = server.port("atsd")

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"series e:x m:one=1 ms:{T_MS}\ndebug series e:x m:last=2 ms:{T_MS}"
                      .encode())
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(1000):
                out += chunk
            return out

    from twisted.internet import threads

    assert await threads.deferToThread(send) == b"ok\n"
    assert [r[1] for r in series_rows(await server.export("fleet"))] == ["last", "one"]


@pytest_twisted.ensureDeferred
async def test_udp_never_answers_and_drops_the_unterminated_tail(make_server: Any) -> None:
    server = await start(make_server)
    port = server.port("atsd-udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f"series e:u m:single=1 ms:{T_MS}".encode(), ("127.0.0.1", port))
        s.sendto(f"series e:u m:two=1 ms:{T_MS}\nbogus\nseries e:u m:three=1 ms:{T_MS}\n"
                 f"series e:u m:tail=1 ms:{T_MS}".encode(), ("127.0.0.1", port))
    await wait_for(lambda: server.core.metrics.points_received.labels("atsd")._value.get() >= 3)
    await server.flush()
    assert [r[1] for r in series_rows(await server.export("fleet"))] == ["single", "three", "two"]
    rejected = server.core.metrics.points_rejected
    assert rejected.labels("atsd", "unterminated")._value.get() == 1
    assert rejected.labels("atsd", "unknown_command")._value.get() == 1


def basic(secret: str) -> str:
    user, _, key = secret.partition(":")
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


@pytest_twisted.ensureDeferred
async def test_http_command_counts_tokens_and_gzip(make_server: Any) -> None:
    server = await start(make_server)
    _, secrets = await make_token(server, "tenant")
    url = f"http://127.0.0.1:{server.port('http')}/api/v1/command?commit=true"
    body = (f"series e:h m:a=1 ms:{T_MS}\nbogus line\nping\n"
            f"series e:h m:b=abc ms:{T_MS}\nseries e:h m:c=3 ms:{T_MS}\n").encode()
    resp = await treq.post(url, data=body, headers={"Authorization": basic(secrets["write"])})
    assert resp.code == 200
    assert json.loads(await treq.content(resp)) == {"fail": 3, "success": 2, "total": 5}
    assert [r[1] for r in series_rows(await server.export("tenant"))] == ["a", "c"]
    resp = await treq.post(url, data=gzip.compress(f"series e:h m:z=9 ms:{T_MS}".encode()),
                           headers={"Authorization": basic(secrets["write"]),
                                    "Content-Encoding": "gzip"})
    assert json.loads(await treq.content(resp)) == {"fail": 0, "success": 1, "total": 1}
    resp = await treq.post(url, data=body)
    assert resp.code == 401
    assert resp.headers.getRawHeaders("www-authenticate") == ['Basic realm="atsd"']
    await treq.content(resp)
    resp = await treq.post(url, data=body, headers={"Authorization": basic(secrets["read"])})
    assert resp.code == 403
    await treq.content(resp)


@pytest_twisted.ensureDeferred
async def test_read_back_api_and_opentsdb_query(make_server: Any) -> None:
    server = await start(make_server)
    _, secrets = await make_token(server, "fleet")
    c = await connect_line(server.port("atsd"))
    c.send(f"series e:srv1 m:temp=21.5 x:temp=warm t:room=a ms:{T_MS}\n"
           f"series e:srv1 m:temp=22 t:room=b ms:{T_MS + 1000}\n"
           f"property e:srv1 t:disk k:mount=/ v:fs=ext4 ms:{T_MS}\n"
           f"message e:srv1 t:type=app t:source=cron m:done ms:{T_MS}\n"
           "entity e:srv1 l:\"Server 1\" t:site=paris\n"
           "debug metric m:temp u:C i:linear\n")
    assert await c.wait_lines(1) == ["ok"]
    base = f"http://127.0.0.1:{server.port('http')}"
    auth = {"Authorization": basic(secrets["read"])}

    async def post(path: str, query: Any) -> Any:
        resp = await treq.post(base + path, json=query, headers=auth)
        return resp.code, json.loads(await treq.content(resp))

    code, got = await post("/api/v1/series/query", [{
        "entity": "SRV1", "metric": "temp", "tags": {"room": "a"},
        "startDate": "2015-03-04T00:00:00Z", "endDate": "2015-03-05T00:00:00Z"}])
    assert code == 200
    assert got == [{"entity": "srv1", "metric": "temp", "tags": {"room": "a"},
                    "type": "HISTORY", "aggregate": {"type": "DETAIL"},
                    "data": [{"d": "2015-03-04T15:14:40.000Z", "v": 21.5, "x": "warm"}]}]
    code, got = await post("/api/v1/properties/query", [{"type": "disk", "entity": "srv1"}])
    assert got == [{"type": "disk", "entity": "srv1", "key": {"mount": "/"},
                    "tags": {"fs": "ext4"}, "date": "2015-03-04T15:14:40.000Z"}]
    code, got = await post("/api/v1/messages/query", [{
        "entity": "srv1", "startDate": T_MS, "endDate": T_MS + 1}])
    assert [(m["type"], m["source"], m["message"]) for m in got] == [("app", "cron", "done")]
    resp = await treq.get(base + "/api/v1/entities/SRV1", headers=auth)
    entity = json.loads(await treq.content(resp))
    assert (entity["name"], entity["label"], entity["tags"]) == ("srv1", "Server 1",
                                                                 {"site": "paris"})
    resp = await treq.get(base + "/api/v1/metrics/temp", headers=auth)
    metric = json.loads(await treq.content(resp))
    assert (metric["name"], metric["units"], metric["interpolate"]) == ("temp", "C", "LINEAR")
    resp = await treq.get(base + "/api/v1/metrics/nosuch", headers=auth)
    assert resp.code == 404
    await treq.content(resp)
    resp = await treq.get(base + "/api/query?start=1425482000&m=sum:temp{entity=srv1}",
                          headers=auth)
    [opentsdb] = json.loads(await treq.content(resp))
    assert opentsdb["tags"] == {"entity": "srv1"} and len(opentsdb["dps"]) == 2
    c.close()
    await sleep(0)


@pytest_twisted.ensureDeferred
async def test_meta_discards_data_in_order_on_every_channel(make_server: Any) -> None:
    """A disabled entity or metric, and min/max with invalid action DISCARD,
    discard the data that follows them (command_discarded.log, counted)."""
    server = await start(make_server)
    c = await connect_line(server.port("atsd"))
    c.send(f"series e:off m:kept=1 ms:{T_MS}\n"
           "entity e:off b:false\n"
           f"series e:off m:dropped=1 ms:{T_MS}\n"
           f"property e:off t:disk v:fs=ext4 ms:{T_MS}\n"
           "metric m:disabled b:false\n"
           f"series e:on m:disabled=1 m:fine=2 ms:{T_MS}\n"
           "metric m:bounded min:0 max:100 a:discard\n"
           f"series e:on m:bounded=150 ms:{T_MS}\n"
           f"series e:on m:bounded=50 ms:{T_MS + 1}\n"
           "debug ping\n")
    assert await c.wait_lines(1) == ["ok"]
    port = server.port("atsd-udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f"series e:off m:udp=1 ms:{T_MS}\nseries e:on m:udp=1 ms:{T_MS}\n".encode(),
                 ("127.0.0.1", port))
    _, secrets = await make_token(server, "fleet")
    resp = await treq.post(f"http://127.0.0.1:{server.port('http')}/api/v1/command",
                           data=f"series e:off m:http=1 ms:{T_MS}\n"
                                f"series e:on m:bounded=-1 ms:{T_MS}".encode(),
                           headers={"Authorization": basic(secrets["write"])})
    assert json.loads(await treq.content(resp)) == {"fail": 0, "success": 2, "total": 2}
    await wait_for(lambda: server.core.metrics.points_received.labels("atsd")._value.get() >= 4)
    await server.flush()
    rows = await server.export("fleet")
    assert [(r[0], r[1], r[4]) for r in series_rows(rows)] == [
        ("off", "kept", 1.0), ("on", "bounded", 50.0), ("on", "fine", 2.0), ("on", "udp", 1.0)]
    assert not [r for r in rows if r["kind"] == "property"]
    rejected = server.core.metrics.points_rejected
    assert {reason: rejected.labels("atsd", reason)._value.get() for reason in (
        "disabled_entity", "disabled_metric", "out_of_range")} == {
        "disabled_entity": 4, "disabled_metric": 1, "out_of_range": 2}
    server.core.plugins["atsd"].logs(server.core).flush()
    log = (Path(server.core.config.data_dir) / "command_discarded.log").read_text()
    assert log.count(";disabled_entity;") == 4 and ";incoming.udp.raw;" in log
    c.close()


@pytest_twisted.ensureDeferred
async def test_a_later_duplicate_wins_whichever_path_each_line_took(make_server: Any) -> None:
    """The first line of a series takes the full parser, the next ones the fast
    path: the later value still wins at the same time, as the lines came."""
    server = await start(make_server)
    c = await connect_line(server.port("atsd"))
    c.send(f"series e:o m:dup=1 ms:{T_MS}\nseries e:o m:dup=2 ms:{T_MS}\n"
           f"series e:o m:dup=3 t:new=tag ms:{T_MS}\nseries e:o m:dup=4 t:new=tag ms:{T_MS}\n"
           "debug ping\n")
    assert await c.wait_lines(1) == ["ok"]
    await server.flush()
    assert [(r[2], r[4]) for r in series_rows(await server.export("fleet"))] == [
        ((), 2.0), ((("new", "tag"),), 4.0)]
    c.close()


@pytest_twisted.ensureDeferred
async def test_http_runs_of_known_series_count_and_store_like_the_rest(
        make_server: Any) -> None:
    server = await start(make_server)
    _, secrets = await make_token(server, "tenant")
    url = f"http://127.0.0.1:{server.port('http')}/api/v1/command"
    lines = [f"series e:h m:run={i} t:k=v ms:{T_MS + i}" for i in range(50)]
    lines[20] = f"series e:h m:run=x t:k=v ms:{T_MS + 20}"  # bad value in the middle of a run
    lines[30] = f"series e:h m:run=1 t:k=v ms:{T_MS}"  # a duplicate of the first: it wins
    resp = await treq.post(url, data="\n".join(lines).encode(),
                           headers={"Authorization": basic(secrets["write"])})
    assert json.loads(await treq.content(resp)) == {"fail": 1, "success": 49, "total": 50}
    rows = series_rows(await server.export("tenant"))
    assert len(rows) == 48  # 50 lines, one bad, one a duplicate time
    values = {r[3]: r[4] for r in rows}
    assert values[T_MS] == 1.0 and T_MS + 20 not in values and values[T_MS + 49] == 49.0


def test_append_text_rule() -> None:
    from tsnet.storage.rules import append_text

    assert append_text(None, "a") == "a"
    assert append_text("", "b") == "b"
    assert append_text("a", "b") == "a;\nb"
    assert append_text("a;\nb", "a") == "a;\nb"  # already one of the parts
    assert append_text("a;\nb", "a;") == "a;\nb;\na;"


@pytest_twisted.ensureDeferred
async def test_append_joins_texts_in_order_on_every_channel(make_server: Any) -> None:
    """Spec §4.1's examples: a, a(append), b(append) -> a;\\nb; and a,
    b(append), c(append), d (a:false), e(append) -> d;\\ne."""
    server = await start(make_server)
    c = await connect_line(server.port("atsd"))
    c.send(f"series e:t m:one=1 x:one=a ms:{T_MS}\n"
           f"series e:t x:one=a a:true ms:{T_MS}\n"
           f"series e:t x:one=b a:true ms:{T_MS}\n"
           f"series e:t x:two=a ms:{T_MS}\n"
           f"series e:t x:two=b a:true ms:{T_MS}\n"
           f"series e:t x:two=c a:true ms:{T_MS}\n"
           f"series e:t x:two=d a:false ms:{T_MS}\n"
           f"debug series e:t x:two=e a:true ms:{T_MS}\n")
    assert await c.wait_lines(1) == ["ok"]
    _, secrets = await make_token(server, "fleet")
    resp = await treq.post(f"http://127.0.0.1:{server.port('http')}/api/v1/command",
                           data=f"series e:t x:web=p ms:{T_MS}\n"
                                f"series e:t x:web=q a:true ms:{T_MS}\n".encode(),
                           headers={"Authorization": basic(secrets["write"])})
    assert json.loads(await treq.content(resp))["success"] == 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f"series e:t x:udp=u ms:{T_MS}\nseries e:t x:udp=v a:true ms:{T_MS}\n".encode(),
                 ("127.0.0.1", server.port("atsd-udp")))
    await wait_for(lambda: server.core.metrics.points_received.labels("atsd")._value.get() >= 12)
    await server.flush()
    texts = {r[1]: r[5] for r in series_rows(await server.export("fleet"))}
    assert texts == {"one": "a;\nb", "two": "d;\ne", "web": "p;\nq", "udp": "u;\nv"}
    c.close()


def test_the_limit_of_other_commands_counts_utf8_bytes() -> None:
    from tsnet.protocols.atsd.framing import over_other_limit

    assert not over_other_limit("metric m:m d:" + "x" * 1000)  # 1013 bytes
    assert over_other_limit("metric m:m d:" + "x" * 1012)  # 1025 bytes
    assert over_other_limit("metric m:m d:" + "é" * 506)  # 519 characters, 1025 bytes
    assert not over_other_limit("series e:x x:m=" + "x" * 5000)  # data commands: 131,072
    assert over_other_limit("debug entity e:x l:" + "x" * 1010)


@pytest_twisted.ensureDeferred
async def test_commands_other_than_data_are_limited_to_1024_bytes(make_server: Any) -> None:
    server = await make_server(CONFIG.replace("command_log = yes",
                                              "command_log = yes\nother_limit = 131072"))
    long_metric = "metric m:long d:" + "x" * 1100
    c = await connect_line(server.port("atsd-keep"))  # other_limit raised to 131,072
    c.send(f"debug {long_metric}\n")
    assert await c.wait_lines(1) == ["ok"]
    c.close()
    c = await connect_line(server.port("atsd"))  # the default: 1024 bytes
    c.send(f"debug series e:x x:m={'y' * 2000} ms:{T_MS}\ndebug {long_metric}\n")
    await c.wait_closed()
    ok, refused = c.lines()
    assert ok == "ok" and refused.startswith("Invalid command: metric m:long d:xxx")
    assert refused.endswith("is longer than 1024 bytes")
    assert server.core.metrics.points_rejected.labels("atsd", "overlong")._value.get() == 1


@pytest_twisted.ensureDeferred
async def test_udp_past_the_queue_ceiling_is_counted_as_dropped(make_server: Any) -> None:
    server = await make_server(CONFIG.replace("flush_interval = 0.05",
                                              "flush_interval = 30\nmax_queue = 5"))
    port = server.port("atsd-udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"".join(b"series e:u m:m%d=1 ms:%d\n" % (i, T_MS) for i in range(3)),
                 ("127.0.0.1", port))  # fits
        s.sendto(b"".join(b"series e:u m:n%d=1 ms:%d\n" % (i, T_MS) for i in range(10)),
                 ("127.0.0.1", port))  # does not: dropped whole, counted
    rejected = server.core.metrics.points_rejected
    await wait_for(lambda: rejected.labels("atsd", "overloaded")._value.get() == 10)
    await server.flush()
    assert sorted(r[1] for r in series_rows(await server.export("fleet"))) == ["m0", "m1", "m2"]


# -- failures a client repeats at will: fixed replies, bounded logs ------------------------


def damage_meta(server: Any, solution: str) -> None:
    """A metric whose stored fields are not JSON (a database damaged by hand)."""
    db = sqlite3.connect(server.core.config.storages["default"].path)
    db.execute("INSERT INTO meta VALUES (?, 'metric', 'broken', 'not json')", (solution,))
    db.commit()
    db.close()


@pytest_twisted.ensureDeferred
async def test_http_commands_the_storage_refuses_log_once(make_server: Any,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          ) -> None:
    """Every request's commands are refused by the storage (a real SQLite
    trigger on new series): each gets the fixed 503, the log one traceback,
    then a count of the rest."""
    monkeypatch.setattr(AtsdPlugin, "log_period", 2.0)
    server = await start(make_server)
    _, secrets = await make_token(server, "tenant")
    refuse(server, "series")
    url = f"http://127.0.0.1:{server.port('http')}/api/v1/command"
    n = 12
    with watching("tsnet.atsd") as events:
        for i in range(n):
            resp = await treq.post(url, data=f"series e:h m:m{i}=1 ms:{T_MS}\n".encode(),
                                   headers={"Authorization": basic(secrets["write"])})
            body = await treq.content(resp)
            assert (resp.code, json.loads(body)) == (
                503, {"error": "the commands could not be stored; retry"})
            assert not leaks(body)
        await wait_for(lambda: events.summaries(), timeout=10)  # the period ends
    assert len(events.failures()) == 1
    [first] = events.full(http_command.COMMIT_FAILURES)
    assert formatEvent(first) == "ATSD commands of one request not committed"
    assert events.summaries() == [f"{n - 1} more ATSD command requests not committed in "
                                  "the last 2 s"]


@pytest_twisted.ensureDeferred
async def test_http_requests_crashing_on_damaged_meta_log_once(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The solution's meta cannot be read, so every request fails: a plain 500
    in ATSD's shape, never the JSON decoder's text; one traceback, a count."""
    monkeypatch.setattr(AtsdPlugin, "log_period", 2.0)
    server = await start(make_server)
    _, secrets = await make_token(server, "tenant")
    damage_meta(server, "tenant")
    url = f"http://127.0.0.1:{server.port('http')}/api/v1/command"
    n = 12
    with watching("tsnet.atsd") as events:
        for _ in range(n):
            resp = await treq.post(url, data=f"series e:h m:a=1 ms:{T_MS}\n".encode(),
                                   headers={"Authorization": basic(secrets["write"])})
            body = await treq.content(resp)
            assert (resp.code, json.loads(body)) == (500, {"error": "Internal Server Error"})
            assert not leaks(body) and "Expecting value" not in body.decode()
        await wait_for(lambda: events.summaries(), timeout=10)
    assert len(events.failures()) == 1
    [first] = events.full(http_command.REQUEST_FAILURES)
    assert formatEvent(first) == "an ATSD command request failed"
    assert events.summaries() == [f"{n - 1} more failed ATSD command requests in the last 2 s"]


@pytest_twisted.ensureDeferred
async def test_udp_appends_the_storage_refuses_log_once(make_server: Any) -> None:
    """Datagrams with ``a:true`` wait for the commit of what came before; the
    storage refuses it each time: one traceback, and the count at stop."""
    server = await start(make_server)
    refuse(server, "series")
    port = server.port("atsd-udp")
    n = 10
    received = server.core.metrics.points_received.labels("atsd")
    before = received._value.get()
    with watching("tsnet.atsd") as events:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(f"series e:u m:m{i}=1 ms:{T_MS}\n"
                         f"series e:u x:t=more a:true ms:{T_MS + 1}\n".encode(),
                         ("127.0.0.1", port))
                await sleep(0.01)
        await wait_for(lambda: received._value.get() - before >= n)
        await server.flush()
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(udp.FAILED_APPENDS)
    assert formatEvent(first) == "an ATSD datagram with appends failed"
    [summary] = events.summaries(udp.FAILED_APPENDS)
    assert summary.startswith(f"{n - 1} more failed ATSD datagrams with appends in the last ")


@pytest_twisted.ensureDeferred
async def test_meta_that_cannot_be_reloaded_is_logged_once(make_server: Any,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    """Each datagram finds the meta stale and reloads it, which fails each
    time: one traceback, and the count when the listener stops."""
    server = await start(make_server)
    damage_meta(server, "fleet")
    monkeypatch.setattr(meta, "RELOAD_SECONDS", 0.0)  # every datagram reloads
    port = server.port("atsd-udp")
    with watching("tsnet.atsd") as events:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(10):
                s.sendto(f"series e:u m:m{i}=1 ms:{T_MS}\n".encode(), ("127.0.0.1", port))
                await sleep(0.05)  # the reload fails before the next one
        await server.stop()
    assert len(events.failures()) == 1
    [first] = events.full(atsd_plugin.META_FAILURES)
    assert formatEvent(first) == "loading the ATSD meta of fleet failed"
    [summary] = events.summaries(atsd_plugin.META_FAILURES)
    assert re.fullmatch(r"\d+ more failed loads of ATSD meta in the last \d+ s", summary)
