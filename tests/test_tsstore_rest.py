"""ts-store's REST API through real HTTP: stores, keys, writes, reads, schema,
stats and the fixed footprint (spec §0-§5, §9), on SQLite and on Redis."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import pytest_twisted
import treq

from tests.helpers.tsstore import ADMIN, tsstore_config

CONFIG = tsstore_config("tsstore opentsdb metrics")


@pytest.fixture
def storage_config(each_backend: str) -> str:
    return each_backend


class Api:
    """The server's base URL and JSON requests against it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.port('http')}"

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None,
                   headers: dict | None = None, raw: bytes | None = None,
                   ctype: str = "application/json") -> tuple[int, Any, Any]:
        h = dict(headers or {})
        if key is not None:
            h["X-API-Key"] = key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            h.setdefault("Content-Type", ctype)
        resp = await treq.request(method, self.base + path, data=data, headers=h)
        content = await treq.content(resp)
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = content.decode()
        return resp.code, parsed, resp.headers

    async def create(self, name: str, **kw: Any) -> str:
        code, body, _ = await self.call("POST", "/api/stores", {"name": name, **kw},
                                        headers={"X-Admin-Key": ADMIN})
        assert code == 201, body
        return body["api_key"]

    async def put(self, store: str, key: str, body: Any) -> tuple[int, Any]:
        code, reply, _ = await self.call("POST", f"/api/stores/{store}/data", body, key=key)
        return code, reply


@pytest.fixture
def api(make_server: Any) -> Api:
    return Api(pytest_twisted.blockon(make_server(CONFIG)))


# -- stores and keys (spec §2, §3) ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_list_delete_and_admin_key(api: Api) -> None:
    code, body, headers = await api.call("POST", "/api/stores", {"name": "s1"})
    assert (code, body) == (401, {"error": "admin key required"})
    assert headers.getRawHeaders("access-control-allow-origin") == ["*"]
    code, body, _ = await api.call("POST", "/api/stores", {"name": "s1"},
                                   headers={"X-Admin-Key": "wrong-key-but-long-enough"})
    assert (code, body) == (401, {"error": "invalid admin key"})
    code, body, _ = await api.call("POST", f"/api/stores?admin_key={ADMIN}", {"name": "s1"})
    assert code == 201
    assert set(body) == {"name", "api_key", "key_id"} and body["name"] == "s1"
    key = body["api_key"]
    assert key.startswith("tsstore_") and len(key) == 44 and body["key_id"] == key[8:16]
    code, body, _ = await api.call("POST", "/api/stores", {"name": "s1"},
                                   headers={"X-Admin-Key": ADMIN})
    assert (code, body) == (500, {"error": "store already exists"})
    code, body, _ = await api.call("POST", "/api/stores", {},
                                   headers={"X-Admin-Key": ADMIN})
    assert code == 400 and body["error"].startswith("Key: 'CreateStoreRequest.Name'")
    for bad, message in [({"data_type": "JSON"},
                          "invalid data type: must be binary, text, json, or schema"),
                         ({"data_block_size": 100}, "invalid config: block size must be a "
                                                    "power of 2 and at least 64 bytes"),
                         ({"index_block_size": 32}, "invalid config: block size must be a "
                                                    "power of 2 and at least 64 bytes")]:
        code, body, _ = await api.call("POST", "/api/stores", {"name": "s2", **bad},
                                       headers={"X-Admin-Key": ADMIN})
        assert (code, body) == (500, {"error": message})
    code, body, _ = await api.call("POST", "/api/stores", {"name": "../etc"},
                                   headers={"X-Admin-Key": ADMIN})
    assert code == 500
    await api.create("a-store")
    assert (await api.call("GET", "/api/stores"))[:2] == (200, {"stores": ["a-store", "s1"]})
    code, body, _ = await api.call("DELETE", "/api/stores/s1", key=key)
    assert (code, body) == (200, {"message": "store deleted"})
    code, body, _ = await api.call("GET", "/api/stores/s1/stats", key=key)
    assert (code, body) == (401, {"error": "authentication failed"})
    assert (await api.call("GET", "/api/stores"))[1] == {"stores": ["a-store"]}


@pytest_twisted.ensureDeferred
async def test_store_key_sources_and_errors(api: Api) -> None:
    key = await api.create("s1")
    other = await api.create("s2")
    path = "/api/stores/s1/stats"
    assert (await api.call("GET", path))[:2] == (401, {"error": "API key required"})
    assert (await api.call("GET", path, key="short"))[:2] == \
        (401, {"error": "invalid API key format"})
    assert (await api.call("GET", path, key="x" * 44))[:2] == \
        (401, {"error": "invalid API key format"})
    assert (await api.call("GET", path, key=other))[:2] == (401, {"error": "invalid API key"})
    fake = "tsstore_00000000-0000-4000-8000-000000000000"
    assert (await api.call("GET", path, key=fake))[:2] == (401, {"error": "invalid API key"})
    assert (await api.call("GET", "/api/stores/nope/stats", key=key))[:2] == \
        (401, {"error": "authentication failed"})
    assert (await api.call("GET", path, key=key))[0] == 200
    assert (await api.call("GET", path, headers={"Authorization": f"Bearer {key}"}))[0] == 200
    assert (await api.call("GET", f"{path}?api_key={key}"))[0] == 200
    # a non-empty X-API-Key wins outright
    assert (await api.call("GET", f"{path}?api_key={key}", key=other))[0] == 401


@pytest_twisted.ensureDeferred
async def test_cors_options_unknown_routes_and_health(api: Api) -> None:
    code, body, headers = await api.call("OPTIONS", "/api/stores/s1/data",
                                         headers={"Origin": "http://ui.example"})
    assert code == 204
    assert headers.getRawHeaders("access-control-allow-origin") == ["http://ui.example"]
    assert headers.getRawHeaders("access-control-allow-methods") == [
        "GET, POST, PUT, DELETE, OPTIONS"]
    assert headers.getRawHeaders("access-control-allow-headers") == [
        "Origin, Content-Type, Accept, X-API-Key, Authorization"]
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert headers.getRawHeaders("access-control-max-age") == ["86400"]
    code, body, _ = await api.call("GET", "/api/stores/s1/nothing/here")
    assert (code, body) == (404, "404 page not found")
    code, body, headers = await api.call("GET", "/health")
    assert code == 200 and body["status"] == "ok"
    assert time.strptime(body["time"], "%Y-%m-%dT%H:%M:%SZ")
    code, _, headers = await api.call("GET", "/api/query?start=1h-ago&m=sum:x")
    assert headers.getRawHeaders("access-control-allow-origin") is None  # not a tsstore route


# -- writes (spec §4) ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_json_writes_keep_raw_bytes_and_answer_after_commit(api: Api) -> None:
    key = await api.create("s1")
    raw = b'{"timestamp": 1000000000, "data": {"temperature": 72.5}}'
    code, body, _ = await api.call("POST", "/api/stores/s1/data", raw=raw, key=key)
    assert (code, body) == (201, {"timestamp": 1000000000, "block_num": 0, "size": 21})
    recs = await api.server.core.storage.backend_for("s1").read_records("s1")
    assert [(r.time_ns, r.data) for r in recs] == [(1000000000, b'{"temperature": 72.5}')]
    code, body = await api.put("s1", key, {"data": None})
    assert code == 201 and body["size"] == 4
    assert body["timestamp"] > time.time_ns() - 10**10  # server time
    code, body = await api.put("s1", key, {"timestamp": 5, "data": 1})
    assert (code, body) == (500, {"error": "timestamp must be greater than newest entry"})
    code, body = await api.put("s1", key, {"timestamp": -5, "data": 1})
    assert (code, body) == (500, {"error": "invalid timestamp"})
    code, body = await api.put("s1", key, {"timestamp": 9})
    assert (code, body) == (400, {"error": "data is required"})
    code, body, _ = await api.call("POST", "/api/stores/s1/data", raw=b"", key=key)
    assert (code, body) == (400, {"error": "EOF"})
    code, body, _ = await api.call("POST", "/api/stores/s1/data", raw=b"{nope", key=key)
    assert code == 400 and body["error"].startswith("invalid character")
    code, body = await api.put("s1", key, {"timestamp": 1.5, "data": 1})
    assert code == 400 and body["error"].startswith("json: cannot unmarshal")
    code, body, _ = await api.call("POST", "/api/stores/s1/data", {"data": 1}, key=key,
                                   ctype="text/plain")
    assert (code, body) == (400, {"error": "data does not match store's data type"})
    code, body, _ = await api.call("POST", "/api/stores/s1/data", {"data": 2}, key=key,
                                   ctype="application/json; charset=utf-8")
    assert code == 201


@pytest_twisted.ensureDeferred
async def test_text_and_binary_stores(api: Api) -> None:
    tkey = await api.create("t", data_type="text")
    bkey = await api.create("b", data_type="binary")
    code, body, _ = await api.call("POST", "/api/stores/t/data", raw=b"hello", key=tkey,
                                   ctype="text/plain")
    assert code == 201 and body["size"] == 5
    code, body, _ = await api.call("POST", "/api/stores/b/data", raw=b"\x00\xff", key=bkey,
                                   ctype="application/octet-stream")
    assert code == 201 and body["size"] == 2
    code, body, _ = await api.call("POST", "/api/stores/b/data", raw=b"", key=bkey,
                                   ctype="application/octet-stream")
    assert code == 201 and body["size"] == 0
    code, body, _ = await api.call("POST", "/api/stores/b/data", raw=b"x", key=bkey,
                                   ctype="text/plain")
    assert (code, body) == (400, {"error": "data does not match store's data type"})
    _, body, _ = await api.call("GET", "/api/stores/t/data/oldest", key=tkey)
    assert [o["data"] for o in body["objects"]] == ["hello"]
    _, body, _ = await api.call("GET", "/api/stores/b/data/oldest", key=bkey)
    assert [o["data"] for o in body["objects"]] == [base64.b64encode(b"\x00\xff").decode(), ""]


# -- schema (spec §5.2) ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_schema_versions_compact_and_full_forms(api: Api) -> None:
    key = await api.create("sc", data_type="schema")
    jkey = await api.create("js")
    path = "/api/stores/sc/schema"
    assert (await api.call("GET", "/api/stores/js/schema", key=jkey))[:2] == (
        400, {"error": "schema endpoint only available for schema-type stores"})
    assert (await api.call("GET", path, key=key))[:2] == (404, {"error": "no schema defined"})
    code, body = await api.put("sc", key, {"data": {"temperature": 1}})
    assert (code, body) == (400, {"error": "schema validation failed: schema is required "
                                           "for schema data type"})
    fields = [{"index": 1, "name": "temperature", "type": "float64"},
              {"index": 2, "name": "humidity", "type": "int32"},
              {"index": 3, "name": "sensor_id", "type": "string"}]
    code, body, _ = await api.call("PUT", path, {"fields": fields}, key=key)
    assert (code, body) == (200, {"message": "schema updated", "version": 1})
    assert (await api.call("GET", path, key=key))[:2] == (200, {"version": 1, "fields": fields})
    code, body, _ = await api.call("PUT", path, {}, key=key)
    assert code == 400 and body["error"].startswith("Key: 'SchemaRequest.Fields'")
    changed = [dict(fields[0], type="int64")]
    code, body, _ = await api.call("PUT", path, {"fields": changed}, key=key)
    assert (code, body) == (400, {"error": "invalid schema: cannot modify existing field 1"})
    code, body, _ = await api.call("PUT", path, {"fields": []}, key=key)
    assert (code, body) == (400, {"error": "invalid schema: no fields defined"})
    code, body = await api.put("sc", key, {"timestamp": 10, "data": {
        "temperature": 72.5, "humidity": 45, "sensor_id": "room-1"}})
    assert (code, body) == (201, {"timestamp": 10, "block_num": 0, "size": 30})
    code, body = await api.put("sc", key, {"data": {"pressure": 1}})
    assert (code, body) == (400, {"error": "schema validation failed: field not found in "
                                           "schema: pressure"})
    evolved = [*fields, {"index": 4, "name": "pressure", "type": "float32"}]
    code, body, _ = await api.call("PUT", path, {"fields": evolved}, key=key)
    assert (code, body) == (200, {"message": "schema updated", "version": 2})
    assert (await api.put("sc", key, {"timestamp": 11, "data": {"pressure": 1013}}))[0] == 201
    _, body, _ = await api.call("GET", "/api/stores/sc/data/time/10", key=key)
    assert body["data"] == {"humidity": 45, "sensor_id": "room-1", "temperature": 72.5}
    _, body, _ = await api.call("GET", "/api/stores/sc/data/time/10?format=compact", key=key)
    assert body["data"] == {"1": 72.5, "2": 45, "3": "room-1"}
    _, body, _ = await api.call("GET", "/api/stores/sc/data/oldest", key=key)
    assert [o["data"] for o in body["objects"]] == [
        {"humidity": 45, "sensor_id": "room-1", "temperature": 72.5}, {"pressure": 1013}]


# -- reads (spec §9) ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reads_by_time_lists_and_ranges(api: Api) -> None:
    key = await api.create("s1")
    base = "/api/stores/s1/data"
    assert (await api.call("GET", f"{base}/time/5", key=key))[:2] == \
        (404, {"error": "store is empty"})
    assert (await api.call("DELETE", f"{base}/time/5", key=key))[:2] == \
        (500, {"error": "store is empty"})
    for t in range(1, 13):
        data = {"n": t, "s": f"v{t}"}
        assert (await api.put("s1", key, {"timestamp": t * 1000, "data": data}))[0] == 201
    code, body, _ = await api.call("GET", f"{base}/time/3000", key=key)
    assert (code, body) == (200, {"timestamp": 3000, "block_num": 0, "size": 19,
                                  "data": {"n": 3, "s": "v3"}})
    assert (await api.call("GET", f"{base}/time/3001", key=key))[:2] == \
        (404, {"error": "timestamp not found"})
    assert (await api.call("GET", f"{base}/time/abc", key=key))[:2] == \
        (400, {"error": "invalid timestamp"})
    _, body, _ = await api.call("GET", f"{base}/oldest", key=key)
    assert body["count"] == 10 and [o["timestamp"] for o in body["objects"]][:2] == [1000, 2000]
    _, body, _ = await api.call("GET", f"{base}/oldest?limit=x", key=key)
    assert body["count"] == 10
    _, body, _ = await api.call("GET", f"{base}/newest?limit=3&include_data=false", key=key)
    assert body == {"objects": [{"timestamp": t * 1000, "block_num": 0,
                                 "size": len(json.dumps({"n": t, "s": f"v{t}"})),
                                 "data": None}
                                for t in (12, 11, 10)], "count": 3}
    _, body, _ = await api.call("GET", f"{base}/range?start_time=2000&end_time=4000", key=key)
    assert [o["timestamp"] for o in body["objects"]] == [2000, 3000, 4000]
    assert all(o["data"] is None for o in body["objects"])  # range leaves data out by default
    _, body, _ = await api.call("GET", f"{base}/range?after=10000&include_data=true", key=key)
    assert [(o["timestamp"], o["data"]["n"]) for o in body["objects"]] == [(11000, 11),
                                                                           (12000, 12)]
    _, body, _ = await api.call("GET", f"{base}/range?start_time=11000", key=key)
    assert body["count"] == 2
    _, body, _ = await api.call("GET", f"{base}/range?end_time=2000&limit=1", key=key)
    assert [o["timestamp"] for o in body["objects"]] == [1000]
    for query, message in [("", "start_time, end_time, after, or since parameter required"),
                           ("after=x", "invalid after timestamp"),
                           ("start_time=x", "invalid start_time"),
                           ("end_time=y", "invalid end_time"),
                           ("since=abc", 'invalid since duration: time: invalid duration '
                                         '"abc"')]:
        assert (await api.call("GET", f"{base}/range?{query}", key=key))[:2] == \
            (400, {"error": message}), query
    assert (await api.call("GET", f"{base}/range?start_time=5000&end_time=10", key=key))[:2] \
        == (500, {"error": "invalid timestamp"})
    _, body, _ = await api.call("GET", f"{base}/newest?filter=V1&filter_ignore_case=true",
                                key=key)
    assert [o["timestamp"] for o in body["objects"]] == [12000, 11000, 10000, 1000]
    _, body, _ = await api.call("GET", f"{base}/oldest?filter=V1", key=key)
    assert body == {"objects": [], "count": 0}


@pytest_twisted.ensureDeferred
async def test_since_and_soft_delete(api: Api) -> None:
    key = await api.create("s1")
    now = time.time_ns()
    for i, t in enumerate((now - 3 * 3600 * 10**9, now - 60 * 10**9, now - 10**9)):
        assert (await api.put("s1", key, {"timestamp": t, "data": i}))[0] == 201
    base = "/api/stores/s1/data"
    _, body, _ = await api.call("GET", f"{base}/newest?since=2h", key=key)
    assert [o["data"] for o in body["objects"]] == [1, 2]  # ascending, as ts-store
    _, body, _ = await api.call("GET", f"{base}/range?since=1.5d&include_data=true", key=key)
    assert [o["data"] for o in body["objects"]] == [0, 1, 2]
    t1 = now - 60 * 10**9
    assert (await api.call("DELETE", f"{base}/time/{t1}", key=key))[:2] == \
        (200, {"message": "object deleted"})
    assert (await api.call("DELETE", f"{base}/time/{t1}", key=key))[:2] == \
        (404, {"error": "timestamp not found"})
    assert (await api.call("GET", f"{base}/time/{t1}", key=key))[0] == 404
    for path in ("oldest", "newest", "range?since=1d"):
        _, body, _ = await api.call("GET", f"{base}/{path}", key=key)
        assert t1 not in [o["timestamp"] for o in body["objects"]], path
    lines = await api.server.export("s1")
    assert [ln["data"] for ln in lines if ln["kind"] == "record"] == [0, 2]


@pytest_twisted.ensureDeferred
async def test_windowed_aggregation(api: Api) -> None:
    key = await api.create("s1")
    tkey = await api.create("t", data_type="text")
    sec = 10**9
    for i in range(6):
        assert (await api.put("s1", key, {"timestamp": (60 + 10 * i) * sec,
                                          "data": {"temp": i, "name": f"n{i}"}}))[0] == 201
    base = "/api/stores/s1/data/range?start_time=1"
    code, body, _ = await api.call("GET", f"{base}&agg_window=30s&agg_fields=temp:avg%2Bmax",
                                   key=key)
    assert code == 200, body
    objs = body["objects"]
    assert [o["timestamp"] for o in objs] == [90 * sec, 120 * sec]
    assert objs[0]["data"]["temp_avg"] == 1 and objs[0]["data"]["temp_max"] == 2
    assert objs[0]["block_num"] == 0 and objs[0]["size"] == 0
    code, body, _ = await api.call("GET", f"{base}&agg_window=nope", key=key)
    assert code == 400 and body["error"].startswith("invalid agg_window: ")
    code, body, _ = await api.call("GET", "/api/stores/t/data/newest?agg_window=1m", key=tkey)
    assert (code, body) == (400, {"error": "aggregation is only supported for json and "
                                           "schema stores"})


# -- fixed footprint, stats and reset (spec §3, §5.4) ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_full_store_reclaims_its_oldest_block(api: Api) -> None:
    key = await api.create("small", num_blocks=4, data_block_size=64, index_block_size=64)
    acks = [(await api.put("small", key, {"timestamp": t, "data": "0123456789abcd"}))[1]
            for t in (1, 2, 3, 4, 5)]
    assert [a["block_num"] for a in acks] == [0, 1, 2, 3, 0]
    assert all(a["size"] == 16 for a in acks)
    _, body, _ = await api.call("GET", "/api/stores/small/data/oldest", key=key)
    assert [o["timestamp"] for o in body["objects"]] == [2, 3, 4, 5]
    code, stats, _ = await api.call("GET", "/api/stores/small/stats", key=key)
    assert (code, stats) == (200, {
        "num_blocks": 4, "data_block_size": 64, "index_block_size": 64, "data_type": "json",
        "head_block": 0, "tail_block": 1, "write_offset": 64, "active_blocks": 4,
        "oldest_timestamp": 2, "oldest_time": "1970-01-01T00:00:00Z",
        "newest_timestamp": 5, "newest_time": "1970-01-01T00:00:00Z"})
    code, body = await api.put("small", key, {"timestamp": 6, "data": "x" * 200})
    assert code == 500 and "capacity" in body["error"]
    assert (await api.call("POST", "/api/stores/small/reset", key=key))[:2] == \
        (200, {"message": "store reset"})
    _, stats, _ = await api.call("GET", "/api/stores/small/stats", key=key)
    assert (stats["head_block"], stats["tail_block"], stats["write_offset"],
            stats["active_blocks"]) == (0, 0, 0, 1)
    assert "oldest_timestamp" not in stats
    _, body, _ = await api.call("GET", "/api/stores/small/data/oldest", key=key)
    assert body == {"objects": [], "count": 0}
    code, body = await api.put("small", key, {"timestamp": 1, "data": 1})
    assert (code, body["block_num"]) == (201, 0)


@pytest_twisted.ensureDeferred
async def test_the_ring_is_rebuilt_after_a_restart(make_server: Any) -> None:
    server = await make_server(CONFIG, name="n")
    api = Api(server)
    key = await api.create("small", num_blocks=4, data_block_size=128)
    before = [(await api.put("small", key, {"timestamp": t, "data": "v" * (t * 7)}))[1]
              for t in range(1, 9)]
    _, stats, _ = await api.call("GET", "/api/stores/small/stats", key=key)
    await server.stop()
    again = Api(await make_server(CONFIG, name="n"))
    _, stats2, _ = await again.call("GET", "/api/stores/small/stats", key=key)
    assert stats2 == stats
    code, ack = await again.put("small", key, {"timestamp": 9, "data": "x"})
    assert code == 201
    assert ack["block_num"] in range(4) and before[-1]["block_num"] in range(4)
    code, body = await again.put("small", key, {"timestamp": 9, "data": "x"})
    assert (code, body) == (500, {"error": "timestamp must be greater than newest entry"})


# -- the admin key (spec §1) -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_admin_key_file_is_made_once_and_kept(make_server: Any, tmp_path: Any,
                                                    monkeypatch: Any) -> None:
    import os
    import stat

    monkeypatch.delenv("TSSTORE_ADMIN_KEY", raising=False)
    text = CONFIG.replace(f"admin_key = {ADMIN}", "admin_key_file = keys/admin.key")
    server = await make_server(text, name="n")
    path = server.config_path.parent / "keys" / "admin.key"
    key = path.read_text().strip()
    assert len(key) >= 20 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    api = Api(server)
    code, _, _ = await api.call("POST", "/api/stores", {"name": "s1"},
                                headers={"X-Admin-Key": key})
    assert code == 201
    await server.stop()
    api = Api(await make_server(text, name="n"))
    assert path.read_text().strip() == key
    code, _, _ = await api.call("POST", "/api/stores", {"name": "s2"},
                                headers={"X-Admin-Key": key})
    assert code == 201
    code, body, _ = await api.call("POST", "/api/stores", {"name": "s3"},
                                   headers={"X-Admin-Key": ADMIN})
    assert (code, body) == (401, {"error": "invalid admin key"})


def test_admin_key_is_required_and_long(tmp_path: Any, monkeypatch: Any) -> None:
    from tsnet.config import load_config
    from tsnet.errors import ConfigError
    from tsnet.plugins import load_plugins

    monkeypatch.delenv("TSSTORE_ADMIN_KEY", raising=False)
    path = tmp_path / "t.ini"
    for text, message in [(CONFIG.replace(f"admin_key = {ADMIN}", ""), "admin_key"),
                          (CONFIG.replace(ADMIN, "short"), "at least 20")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(str(path), load_plugins())
    monkeypatch.setenv("TSSTORE_ADMIN_KEY", "x" * 20)
    path.write_text(CONFIG.replace(f"admin_key = {ADMIN}", ""))
    load_config(str(path), load_plugins())
