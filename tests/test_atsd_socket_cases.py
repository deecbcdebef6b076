"""The parser's table of series cases (tests/test_atsd_parse.py) and a set of
bad commands of every kind, sent through real sockets: over TCP each with
``debug`` gets the parser's answer (``ok`` or its error text) and the export
holds what the parser said; over HTTP the same commands are counted alike."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest_twisted
import treq

from tests.helpers.clients import connect_line, sleep
from tests.test_atsd_parse import SERIES_OK
from tsnet.protocols.atsd.framing import TcpFramer
from tsnet.protocols.atsd.parse import CommandError, parse_command
from tsnet.testing.fixtures import make_token

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
solution = cases
disconnect_on_error = no

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = token
apis = atsd
"""

BAD = [
    "bogus e:x", "SERIES e:x m:m=1", "series m:m=1", "series e:a", "series e:a m:cpu=abc",
    "series e:a m:m=1 ms:-1", "series e:a m:m=1 d:2016-06-09T16:15:04",
    "series e:a m:m=1 ms:1 s:1", 'series e:"a b" m:m=1', "series e:a m:m=1 q:1",
    "property e:a t:disk k:k=v", 'property e:a t:disk v:fs=""', "property t:disk v:a=b",
    "message e:a", "message e:a t:severity=LOUD m:x", "metric l:x", "metric m:m p:int",
    "metric m:m z:HST", "entity e:x b:yes", "csv p:parser",
]


def typed(v: Any) -> str:
    return "NaN" if isinstance(v, float) and math.isnan(v) else repr(float(v))


def expected_reply(line: str) -> str:
    try:
        parse_command(line)
    except CommandError as e:
        return str(e)
    return "ok"


@pytest_twisted.ensureDeferred
async def test_every_case_through_tcp_then_http(make_server: Any) -> None:
    server = await make_server(CONFIG)
    c = await connect_line(server.port("atsd"))
    got = 0
    for text, _ in SERIES_OK:
        c.send(f"debug {text}\n")
        got += 1
        assert (await c.wait_lines(got))[-1] == "ok", text
        await sleep(0.002)  # commands without a time get distinct milliseconds
    for text in BAD:
        c.send(f"debug {text}\n")
        got += 1
        reply = (await c.wait_lines(got))[-1]
        assert reply == expected_reply(text) and reply != "ok", text
    rows = [r for r in await server.export("cases") if r["kind"] == "series"]
    stored = {(r.get("entity"), r["metric"], tuple(sorted(r["tags"].items())),
               r["value"] if r["value"] == "NaN" else typed(r["value"]), r.get("text"))
              for r in rows}
    for text, _ in SERIES_OK:
        # what the parser makes of the command as TCP frames it (CRs at line ends go)
        [framed] = TcpFramer().feed(f"{text}\n".encode())
        want = parse_command(framed)[1]
        for key, (_, value, x) in zip(want.keys(), want.samples, strict=True):
            assert (key[1], key[0], key[2], typed(value), x) in stored, text
            if want.time_ms is not None:
                assert any(r["metric"] == key[0] and r["time_ms"] == want.time_ms
                           for r in rows), text
    c.close()

    _, secrets = await make_token(server, "viahttp")
    user, _, key = secrets["write"].partition(":")
    plain = [t for t, _ in SERIES_OK if "\r" not in t and "\n" not in t]  # HTTP trims lines
    resp = await treq.post(f"http://127.0.0.1:{server.port('http')}/api/v1/command",
                           data="\n".join(plain + BAD).encode(),
                           headers={"Authorization": "Basic " + base64.b64encode(
                               f"{user}:{key}".encode()).decode()})
    assert json.loads(await treq.content(resp)) == {
        "fail": len(BAD), "success": len(plain), "total": len(plain) + len(BAD)}


GOOD_OTHERS = [
    ("property e:srv t:disk k:mount=/ v:fs=ext4 v:size=10G ms:1", "property"),
    ('property e:srv t:$entity_tags v:site="north 1" ms:1', "entity"),
    ("message e:srv t:type=app t:source=cron t:severity=6 m:\"job failed\" ms:1", "message"),
    ("message e:srv t:channel=ops ms:2", "message"),
    ("metric m:cpu l:CPU d:\"busy share\" p:double i:previous u:% z:UTC v:false a:none "
     "pe:true rd:30 min:0 max:100 t:team=ops", "metric"),
    ("entity e:srv2 b:true l:\"Server 2\" i:LINEAR z:Europe/Paris t:rack=7", "entity"),
]


@pytest_twisted.ensureDeferred
async def test_the_spec_framing_examples_and_other_commands_through_sockets(
        make_server: Any) -> None:
    from tests.test_atsd_framing import HTTP_EXAMPLES, TCP_EXAMPLES

    server = await make_server(CONFIG)
    c = await connect_line(server.port("atsd"))
    for i, (sent, _) in enumerate(TCP_EXAMPLES):
        c.send(f'debug series e:tcp x:m{i}="{sent}" ms:{i + 1}\n')
        assert (await c.wait_lines(i + 1))[-1] == "ok"
    base = len(TCP_EXAMPLES)
    for j, (line, _) in enumerate(GOOD_OTHERS):
        c.send(f"debug {line}\n")
        assert (await c.wait_lines(base + j + 1))[-1] == "ok", line
    _, secrets = await make_token(server, "viahttp")
    user, _, key = secrets["write"].partition(":")
    body = "\n".join(f'series e:http x:m{i}="{sent}" ms:{i + 1}'
                     for i, (sent, _) in enumerate(HTTP_EXAMPLES))
    auth = "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()
    resp = await treq.post(f"http://127.0.0.1:{server.port('http')}/api/v1/command",
                           data=body.encode(), headers={"Authorization": auth})
    assert json.loads(await treq.content(resp))["success"] == len(HTTP_EXAMPLES)
    await server.flush()
    rows = await server.export("cases")
    texts = {r["metric"]: r.get("text") for r in rows
             if r["kind"] == "series" and r.get("entity") == "tcp"}
    assert texts == {f"m{i}": stored for i, (_, stored) in enumerate(TCP_EXAMPLES)}
    http_rows = await server.export("viahttp")
    assert {r["metric"]: r.get("text") for r in http_rows if r["kind"] == "series"} == {
        f"m{i}": stored for i, (_, stored) in enumerate(HTTP_EXAMPLES)}
    kinds = {r["kind"] for r in rows}
    assert {"property", "message", "metric", "entity"} <= kinds
    [metric] = [r for r in rows if r["kind"] == "metric" and r["metric"] == "cpu"]
    assert (metric["data_type"], metric["interpolate"], metric["min_value"],
            metric["max_value"], metric["retention_days"], metric["tags"]) == (
        "double", "previous", 0, 100, 30, {"team": "ops"})
    [north] = [r for r in rows if r["kind"] == "entity" and r["entity"] == "srv"]
    assert north["tags"] == {"site": "north 1"}  # $entity_tags are the entity's own tags
    messages = [r for r in rows if r["kind"] == "message"]
    assert sorted((m.get("severity", ""), m.get("message", "")) for m in messages) == [
        ("", ""), ("CRITICAL", "job failed")]
    c.close()


@pytest_twisted.ensureDeferred
async def test_the_series_table_over_udp(make_server: Any) -> None:
    import socket

    from tests.helpers.clients import wait_for

    server = await make_server(CONFIG.replace(
        "[listener:http]", "[listener:udp]\nprotocol = atsd\nendpoint = udp:0\n"
        "solution = udp\n\n[listener:http]"))
    plain = [t for t, _ in SERIES_OK if "\n" not in t and "ms:" in t]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for text in plain:
            s.sendto(text.encode(), ("127.0.0.1", server.port("udp")))
    await wait_for(lambda: server.core.metrics.points_received.labels(
        "atsd")._value.get() >= len(plain))
    await server.flush()
    rows = [r for r in await server.export("udp") if r["kind"] == "series"]
    for text in plain:
        want = parse_command(text)[1]
        assert any(r["metric"] == want.samples[0][0] and r["time_ms"] == want.time_ms
                   for r in rows), text
