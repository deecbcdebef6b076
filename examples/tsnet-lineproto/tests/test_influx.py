"""The ``influx`` family end to end: a real ``twistd -n tsnet`` with this
distribution installed, written to by the real InfluxDB clients (``influxdb``
for 1.x, ``influxdb-client`` for 2.x) and by plain HTTP, read back through
tsnet's ``/api/query`` and ``tsnet export``."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import influxdb
import influxdb_client
import pytest
from influxdb_client.client.write_api import SYNCHRONOUS

from tsnet.testing.process import TsnetProcess, json_lines, running, tsnet

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
solution = influx
apis = influx opentsdb metrics
max_body = 100000

[listener:secure]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = token
apis = influx opentsdb
"""

T0 = 1_356_998_400


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TsnetProcess]:
    with running(tmp_path, CONFIG, {"http", "secure"}) as srv:
        yield srv


def http(srv: TsnetProcess, path: str, body: bytes = b"", listener: str = "http",
         headers: dict | None = None, method: str = "POST") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.ports[listener]}{path}",
                                 data=body if method == "POST" else None,
                                 headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def exported(srv: TsnetProcess, solution: str) -> list[dict]:
    rows = json_lines(tsnet(srv.config, "export", "--solution", solution).stdout)
    return sorted((r for r in rows if r["kind"] == "series"),
                  key=lambda r: (r["metric"], sorted(r["tags"].items()), r["time_ms"]))


def query(srv: TsnetProcess, m: str, listener: str = "http", auth: str | None = None) -> list:
    qs = urllib.parse.urlencode({"start": T0 - 10, "end": T0 + 1000, "m": m})
    headers = {"X-API-Key": auth} if auth else {}
    code, _, body = http(srv, f"/api/query?{qs}", listener=listener, headers=headers,
                         method="GET")
    assert code == 200, body
    return json.loads(body)


def test_the_1x_client_writes_every_field_type(server: TsnetProcess) -> None:
    client = influxdb.InfluxDBClient("127.0.0.1", server.ports["http"], database="telegraf")
    assert client.write_points([
        {"measurement": "cpu", "tags": {"host": "web 01", "region": "eu,west"},
         "time": T0, "fields": {"usage": 0.64, "cores": 8, "ok": True, "note": 'say "hi"'}},
        {"measurement": "cpu", "tags": {"host": "web 01", "region": "eu,west"},
         "time": T0 + 10, "fields": {"usage": 0.5, "ok": False}},
    ], time_precision="s")
    rows = exported(server, "influx")
    got = [(r["metric"], r["tags"], r["time_ms"], r.get("value"), r.get("text")) for r in rows]
    tags = {"host": "web 01", "region": "eu,west"}
    assert got == [
        ("cpu.cores", tags, T0 * 1000, 8, None),
        ("cpu.note", tags, T0 * 1000, None, 'say "hi"'),
        ("cpu.ok", tags, T0 * 1000, 1, None),
        ("cpu.ok", tags, (T0 + 10) * 1000, 0, None),
        ("cpu.usage", tags, T0 * 1000, 0.64, None),
        ("cpu.usage", tags, (T0 + 10) * 1000, 0.5, None),
    ]
    assert [type(r["value"]) for r in rows if r["metric"] == "cpu.cores"] == [int]
    [series] = query(server, "avg:cpu.usage")
    assert series["dps"] == {str(T0): 0.64, str(T0 + 10): 0.5}


def test_the_1x_client_with_a_token_as_username_and_password(server: TsnetProcess) -> None:
    tsnet(server.config, "solution", "create", "fleet")
    made = json.loads(tsnet(server.config, "token", "create", "fleet", "--tag", "site=s1").stdout)
    token_id, key = made["write"].split(":", 1)
    client = influxdb.InfluxDBClient("127.0.0.1", server.ports["secure"], username=token_id,
                                     password=key, database="ignored")
    client.write_points([{"measurement": "temp", "tags": {"site": "forged"}, "time": T0,
                          "fields": {"value": 21.5}}], time_precision="s")
    [series] = query(server, "sum:temp.value", "secure", auth=made["read"])
    assert (series["tags"], series["dps"]) == ({"site": "s1"}, {str(T0): 21.5})
    wrong = influxdb.InfluxDBClient("127.0.0.1", server.ports["secure"], username=token_id,
                                    password="not-the-key", database="x")
    with pytest.raises(influxdb.exceptions.InfluxDBClientError) as e:
        wrong.write_points([{"measurement": "temp", "time": T0, "fields": {"value": 1.0}}])
    assert e.value.code == 401


def test_the_2x_client_with_a_token(server: TsnetProcess) -> None:
    tsnet(server.config, "solution", "create", "v2")
    made = json.loads(tsnet(server.config, "token", "create", "v2").stdout)
    url = f"http://127.0.0.1:{server.ports['secure']}"
    with influxdb_client.InfluxDBClient(url=url, token=made["write"], org="my-org") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket="b", record=[
            influxdb_client.Point("mem").tag("host", "h1").field("used", 42).time(
                T0 * 10**9, write_precision="ns"),
            f"mem,host=h1 used=43i,free=1.5 {(T0 + 1) * 10**9}",
        ])
    [used] = query(server, "sum:mem.used", "secure", auth=made["read"])
    assert used["dps"] == {str(T0): 42, str(T0 + 1): 43}
    with influxdb_client.InfluxDBClient(url=url, token=made["read"], org="o") as client:
        with pytest.raises(influxdb_client.rest.ApiException) as e:
            client.write_api(write_options=SYNCHRONOUS).write(bucket="b", record="m v=1")
    assert e.value.status == 403  # a READ token cannot write


def test_bad_lines_are_400_and_the_good_lines_are_committed(server: TsnetProcess) -> None:
    body = b"good v=1 %d\nbad v=\ngood v=2 %d\n" % (T0 * 10**9, (T0 + 1) * 10**9)
    code, headers, reply = http(server, "/write?db=x", body)
    assert (code, headers["Content-Type"]) == (400, "application/json")
    assert json.loads(reply) == {
        "error": "partial write: unable to parse 'bad v=': missing field value dropped=0"}
    [series] = query(server, "sum:good.v")
    assert series["dps"] == {str(T0): 1, str(T0 + 1): 2}  # committed before the reply
    code, _, reply = http(server, "/write?db=x", b"nothing here\n")
    assert code == 400 and json.loads(reply)["error"].startswith("unable to parse 'nothing here'")
    code, _, reply = http(server, "/api/v2/write?bucket=b", b"bad v=\n")
    assert (code, json.loads(reply)["code"]) == (400, "invalid")


def test_request_errors_in_each_versions_dialect(server: TsnetProcess) -> None:
    assert json.loads(http(server, "/write", b"m v=1")[2]) == {"error": "database is required"}
    code, _, reply = http(server, "/api/v2/write?org=o", b"m v=1")
    assert (code, json.loads(reply)) == (400, {"code": "invalid", "message": "bucket is required"})
    code, _, reply = http(server, "/write?db=x&precision=fortnight", b"m v=1")
    assert code == 400 and "invalid precision" in json.loads(reply)["error"]
    code, headers, reply = http(server, "/write?db=x", b"m v=1", "secure")
    assert (code, json.loads(reply)) == (401, {"error": "authorization failed"})
    assert headers["WWW-Authenticate"] == 'Basic realm="InfluxDB"'
    code, _, reply = http(server, "/api/v2/write?bucket=b", b"m v=1", "secure")
    assert (code, json.loads(reply)) == (401, {"code": "unauthorized",
                                               "message": "unauthorized access"})
    code, headers, _ = http(server, "/write?db=x", method="GET")
    assert (code, headers["Allow"]) == (405, "POST")
    code, _, reply = http(server, "/write?db=x", b"m v=1 1\n" * 20000)
    assert code == 413 and json.loads(reply)["error"].startswith("Request Entity Too Large")


def test_gzip_bodies_precision_and_ping(server: TsnetProcess) -> None:
    body = gzip.compress(b"zipped,host=a v=7 %d\n" % (T0 * 1000))
    code, _, _ = http(server, "/write?db=x&precision=ms", body, headers={
        "Content-Encoding": "gzip"})
    assert code == 204
    [series] = query(server, "sum:zipped.v{host=a}")
    assert series["dps"] == {str(T0): 7}
    code, headers, _ = http(server, "/ping", method="GET")
    assert (code, headers["X-Influxdb-Version"]) == (204, "1.8.10")


def test_an_influx_write_is_committed_when_the_reply_comes(server: TsnetProcess) -> None:
    """204 means committed: the export, another process, sees it at once."""
    t = time.time_ns()
    assert http(server, "/write?db=x", b"acked v=1 %d" % t)[0] == 204
    assert [r["metric"] for r in exported(server, "influx")] == ["acked.v"]
