"""`tsnet.http.bodies`: a corrupt or truncated compressed body is refused with
a fixed text naming the problem, in each family's own error dialect, never
with zlib's message (``Error -3 while decompressing data: ...``); checked on
`inflate_body` itself and through real HTTP requests to every family."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
import pytest_twisted
import treq

from tests.helpers.logs import leaks
from tsnet.http.bodies import UNDECOMPRESSABLE, BodyError, inflate_body

ADMIN = "admin-key-of-twenty-chars"
CONFIG = f"""
[tsnet]
data_dir = var
flush_interval = 0.05

[tsstore]
admin_key = {ADMIN}

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb atsd tsstore metrics
"""

DATA = b'{"metric":"m","timestamp":1356998400,"value":1,"tags":{"h":"a"}}'
GZIP = gzip.compress(DATA)
DEFLATE = zlib.compress(DATA)
#: (Content-Encoding, body, the details bodies.py gives)
BAD = [
    ("gzip", b"\x1f\x8bnot gzip at all", "invalid gzip body"),
    ("gzip", b"plainly not gzip", "invalid gzip body"),
    ("x-gzip", GZIP[:-12], "truncated gzip body"),
    ("deflate", b"\x78\x9cnot deflate", "invalid deflate body"),
    ("deflate", DEFLATE[:-6], "truncated deflate body"),
    ("gzip", GZIP[:10] + b"\xff" * 20 + GZIP[30:], "invalid gzip body"),
]


@pytest.mark.parametrize(("encoding", "body", "details"), BAD)
def test_corrupt_bodies_are_named_not_explained_by_zlib(encoding: str, body: bytes,
                                                        details: str) -> None:
    with pytest.raises(BodyError) as raised:
        inflate_body([body], encoding, 1 << 20)
    e = raised.value
    assert (e.code, e.message, e.details) == (400, UNDECOMPRESSABLE, details)


def test_good_bodies_still_inflate() -> None:
    raw = zlib.compressobj(wbits=-15)
    for encoding, body in (("gzip", GZIP), ("deflate", DEFLATE),
                           ("deflate", raw.compress(DATA) + raw.flush()),
                           ("gzip", GZIP + GZIP), ("identity", DATA)):
        want = DATA * 2 if body == GZIP + GZIP else DATA
        assert inflate_body([body[:7], body[7:]], encoding, 1 << 20) == want


async def post(server: Any, path: str, body: bytes, encoding: str,
               headers: dict | None = None) -> tuple[int, bytes]:
    resp = await treq.post(f"http://127.0.0.1:{server.port('http')}{path}", data=body,
                           headers={"Content-Encoding": encoding, **(headers or {})},
                           persistent=False)
    return resp.code, await treq.content(resp)


@pytest_twisted.ensureDeferred
async def test_every_family_answers_a_corrupt_body_in_its_own_dialect(
        make_server: Any) -> None:
    server = await make_server(CONFIG)
    stores = server.core.plugins["tsstore"].stores_for(server.core)
    _, key, _ = await stores.create("s1")
    for encoding, body, details in BAD:
        # OpenTSDB: its JSON error object, the details apart
        code, reply = await post(server, "/api/put?details", body, encoding)
        error = json.loads(reply)["error"]
        assert (code, error["code"], error["message"]) == (400, 400, UNDECOMPRESSABLE)
        assert error.get("details") == details, reply
        assert not leaks(reply)
        # ATSD: {"error": "<message>: <details>"}
        code, reply = await post(server, "/api/v1/command", body, encoding)
        assert (code, json.loads(reply)) == (400, {"error": f"{UNDECOMPRESSABLE}: {details}"})
        # ts-store: {"error": "<details>"}
        code, reply = await post(server, "/api/stores/s1/data", body, encoding,
                                 {"X-API-Key": key, "Content-Type": "application/json"})
        assert (code, json.loads(reply)) == (400, {"error": details})
    # the telnet port's HTTP (OpenTSDB's own listener) says the same
    resp = await treq.post(f"http://127.0.0.1:{server.port('opentsdb')}/api/put?details",
                           data=BAD[0][1], headers={"Content-Encoding": "gzip"},
                           persistent=False)
    reply = await treq.content(resp)
    assert resp.code == 400 and json.loads(reply)["error"]["details"] == "invalid gzip body"
    await server.flush()
    assert await server.export() == []
