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
