"""``tsnet import``: backups made with ``tsnet export`` loaded back, with the
real commands and a real server (SQLite and Redis).

A store holding every kind of item is filled through the protocols (OpenTSDB
and ATSD over HTTP, ts-store's REST API), exported, imported into a fresh
storage and exported again: byte for byte the same.  Importing twice, or into
the storage it came from, changes nothing; bad lines are named and counted;
an import runs beside a server that is ingesting."""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tsnet.testing.process import TsnetProcess, json_lines, send_lines, tsnet

pytestmark = pytest.mark.subprocess

ADMIN = "import-test-admin-key-0123456789"
T = 1_704_067_200  # 2024-01-01, seconds
SOURCE = """\
[tsnet]
data_dir = {data}
flush_interval = 0.05
auth_refresh = 0.5

[storage:default]
{storage}
[tsstore]
admin_key = {admin}

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = opentsdb atsd tsstore metrics

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1
"""


def write_config(path: Path, storage: str, data: str = "var") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SOURCE.format(storage=storage, admin=ADMIN, data=data))
    return path


def call(port: int, method: str, path: str, body: Any = None, headers: Any = None,
         raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def store(port: int, name: str, kind: str, **sizes: int) -> str:
    code, body = call(port, "POST", "/api/stores", {"name": name, "data_type": kind, **sizes},
                      {"X-Admin-Key": ADMIN})
    assert code in (200, 201), body
    return body["api_key"]


def record(port: int, name: str, key: str, body: bytes, ctype: str) -> dict:
    code, reply = call(port, "POST", f"/api/stores/{name}/data", raw=body,
                       headers={"X-API-Key": key, "Content-Type": ctype})
    assert code == 201, reply
    return reply


def fill(port: int) -> None:
    """Every kind of item, through the protocols that make them."""
    puts = [{"metric": "sys.cpu", "timestamp": (T + i) * 1000 + 7, "value": v,
             "tags": {"host": "web01", "cpu": "0"}}
            for i, v in enumerate((42, 42.5, -7, 1e16, 2.5e-7, 9007199254740993, 0.1))]
    code, body = call(port, "POST", "/api/put?details", puts,
                      {"Content-Type": "application/json"})
    assert code == 200 and body["success"] == len(puts), body
    commands = "\n".join([
        f"series e:srv1 m:temp=21.5 m:load=3 t:room=a ms:{T}000",
        f"series e:srv1 m:temp=NaN t:room=a ms:{T + 1}000",
        f'series e:srv1 x:state="on line" t:room=a ms:{T + 2}000',
        f"series e:srv1 m:state=1 t:room=a ms:{T + 2}000",  # keeps the text
        f'series e:srv2 m:temp=19 x:temp="cold, ""really""" ms:{T + 3}000',
        f"property e:srv1 t:disk k:mount=/ v:fs=ext4 v:size=100 ms:{T}000",
        f"property e:srv1 t:disk k:mount=/data v:fs=xfs ms:{T}000",
        f"property e:srv3 t:os v:name=linux ms:{T}000",  # srv3: implicit entity
        f'message e:srv1 t:type=security t:source=auth t:severity=WARNING m:"login failed" '
        f"ms:{T}000",
        f'message e:srv1 t:type=security t:source=auth t:severity=WARNING m:"login failed" '
        f"ms:{T}000",  # the same message twice: two messages
        f'message e:srv4 m:"hello, world" t:x=y ms:{T + 5}000',
        "metric m:temp l:Temperature d:\"room temperature\" p:float u:C min:-50 max:80",
        "entity e:srv1 l:\"Server one\" t:dc=eu t:rack=r1",
        "entity e:idle b:false",
    ])
    code, body = call(port, "POST", "/api/v1/command", raw=commands.encode(),
                      headers={"Content-Type": "text/plain"})
    assert code == 200 and body == {"fail": 0, "success": 14, "total": 14}, body
    js = store(port, "js", "json", num_blocks=8, data_block_size=256)
    for i, data in enumerate((
            b'{"data":{"temp":21.5,"site":"a"},"timestamp":%d}',
            b'{"data": {"temp": 22.0, "site": "b", "tags": [1, 2]}, "timestamp": %d}',
            b'{"data":{ "odd" :  1e5 ,"go":1e-7},"timestamp":%d}',
            b'{"data":"just a string","timestamp":%d}')):
        record(port, "js", js, data % (T * 10**9 + i), "application/json")
    tx = store(port, "tx", "text")
    for data in ("plain text", "ünïcode ✓", ""):
        if data:
            record(port, "tx", tx, data.encode(), "text/plain")
    bn = store(port, "bn", "binary", num_blocks=4, data_block_size=128)
    for data in (b"\x00\xff\xfe binary", b"utf-8 ok", b"x" * 150):  # (150 spans blocks)
        record(port, "bn", bn, data, "application/octet-stream")
    sc = store(port, "sc", "schema")
    fields = [{"index": 1, "name": "temperature", "type": "float64"},
              {"index": 2, "name": "sensor", "type": "string"}]
    code, body = call(port, "PUT", "/api/stores/sc/schema", {"fields": fields},
                      {"X-API-Key": sc, "Content-Type": "application/json"})
    assert code == 200, body
    record(port, "sc", sc, b'{"data":{"temperature":72.5,"sensor":"<room-1>"}}',
           "application/json")
    code, body = call(port, "PUT", "/api/stores/sc/schema", {"fields": [
        *fields, {"index": 3, "name": "pressure", "type": "float32"}]},
        {"X-API-Key": sc, "Content-Type": "application/json"})
    assert code == 200, body
    record(port, "sc", sc, b'{"data":{"pressure":1013.25}}', "application/json")
    code, body = call(port, "POST", "/api/stores/js/ws/connections",
                      {"mode": "push", "url": "ws://127.0.0.1:9/nowhere"},
                      {"X-API-Key": js, "Content-Type": "application/json"})
    assert code in (200, 201), body
    gone = record(port, "tx", tx, b"to be deleted", "text/plain")
    code, _ = call(port, "DELETE", f"/api/stores/tx/data/time/{gone['timestamp']}",
                   headers={"X-API-Key": tx})
    assert code == 200


def export_text(cfg: Path, *args: str) -> str:
    return tsnet(cfg, "export", *args).stdout


def import_file(cfg: Path, path: Path | str, *args: str, check: bool = True,
                stdin: str | None = None) -> tuple[dict, str, int]:
    import subprocess

    from tsnet.testing.process import BIN

    p = subprocess.run([str(BIN / "tsnet"), "--config", str(cfg), "import", str(path), *args],
                       capture_output=True, text=True, timeout=120, input=stdin)
    if check:
        assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr, p.returncode


@pytest.fixture
def source(tmp_path: Path, each_backend: str) -> tuple[Path, str]:
    """A config whose storage holds every kind of item, and its export."""
    cfg = write_config(tmp_path / "source" / "tsnet.ini", each_backend)
    srv = TsnetProcess(cfg)
    try:
        ports = srv.wait_bound({"http"})
        fill(ports["http"])
    finally:
        srv.stop()
    return cfg, export_text(cfg)


def target_storage(each_backend: str) -> str:
    """A storage of the same kind that is empty: a Redis database of its own."""
    return each_backend.replace("/0\n", "/3\n")


def test_export_import_export_is_the_same(tmp_path: Path, source: tuple[Path, str],
                                          each_backend: str) -> None:
    cfg, text = source
    lines = json_lines(text)
    kinds = {ln["kind"] for ln in lines}
    assert kinds == {"series", "property", "message", "metric", "entity", "store", "record"}
    values = [ln.get("value") for ln in lines if ln["kind"] == "series"]
    assert "NaN" in values and 42 in values and 42.5 in values and 9007199254740993 in values
    assert any("text" in ln for ln in lines)
    assert {ln["type"] for ln in lines if ln["kind"] == "store"} == {"json", "text", "binary",
                                                                     "schema"}
    assert any(ln.get("encoding") == "base64" for ln in lines)
    assert any("schema" in ln for ln in lines if ln["kind"] == "store")
    assert any("connections" in ln for ln in lines if ln["kind"] == "store")
    entities = {ln["entity"]: ln for ln in lines if ln["kind"] == "entity"}
    assert entities["srv3"] == {"kind": "entity", "solution": "default", "entity": "srv3",
                                "enabled": True, "tags": {}}  # implicit
    backup = tmp_path / "backup.jsonl"
    backup.write_text(text)

    target = write_config(tmp_path / "target" / "tsnet.ini", target_storage(each_backend))
    counts, err, _ = import_file(target, backup)
    assert counts == {"file": str(backup), "lines": len(lines), "imported": len(lines),
                      "unchanged": 0, "rejected": 0, "skipped": 0}, err
    assert export_text(target) == text

    counts, _, _ = import_file(target, backup)  # twice: nothing to do
    assert counts["imported"] == 0 and counts["unchanged"] == len(lines)
    assert export_text(target) == text

    counts, _, _ = import_file(cfg, backup)  # into the storage it came from
    assert counts["imported"] == 0 and counts["unchanged"] == len(lines)
    assert export_text(cfg) == text
    out = tsnet(target, "store", "list").stdout
    assert [s["name"] for s in json_lines(out)] == ["bn", "js", "sc", "tx"]


def test_imported_records_sit_in_the_blocks_of_the_original(tmp_path: Path,
                                                            source: tuple[Path, str],
                                                            each_backend: str) -> None:
    """Records are placed in their store's ring as the writes placed them: a
    server on the imported storage answers the same block numbers."""
    cfg, text = source
    backup = tmp_path / "backup.jsonl"
    backup.write_text(text)
    target = write_config(tmp_path / "target" / "tsnet.ini", target_storage(each_backend))
    import_file(target, backup)
    key = json.loads(tsnet(target, "store", "key", "regenerate", "bn").stdout)["api_key"]
    key0 = json.loads(tsnet(cfg, "store", "key", "regenerate", "bn").stdout)["api_key"]
    answers = []
    for config, k in ((cfg, key0), (target, key)):
        srv = TsnetProcess(config)
        try:
            port = srv.wait_bound({"http"})["http"]
            code, body = call(port, "GET", "/api/stores/bn/data/oldest?limit=100"
                              "&include_data=false", headers={"X-API-Key": k})
            assert code == 200, body
            answers.append(body)
        finally:
            srv.stop()
    assert answers[0] == answers[1] and answers[0]["count"] == 3
    assert [o["block_num"] for o in answers[0]["objects"]] == [0, 0, 1]


def test_bad_lines_are_named_and_counted(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "t" / "tsnet.ini", "backend = sqlite\n")
    good = {"kind": "series", "solution": "default", "metric": "m", "tags": {},
            "time_ms": 1000, "value": 1}
    lines = [
        json.dumps(good),
        "not json",
        "[1, 2]",
        json.dumps({**good, "value": "x"}),
        json.dumps({**good, "solution": "bad name!"}),
        json.dumps({**good, "kind": "gauge"}),
        json.dumps({**good, "extra": 1}),
        json.dumps({**good, "time_ms": 10**20}),
        json.dumps({**good, "tags": {"a": 1}}),
        "",
        json.dumps({"kind": "record", "solution": "nostore", "time_ns": 5, "size": 1,
                    "data": "x"}),
        json.dumps({"kind": "store", "solution": "st", "type": "xml", "num_blocks": 1,
                    "data_block_size": 64, "index_block_size": 64}),
        json.dumps({**good, "time_ms": 2000}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    counts, err, rc = import_file(cfg, path, check=False)
    assert rc == 1
    assert counts == {"file": str(path), "lines": 12, "imported": 2, "unchanged": 0,
                      "rejected": 10, "skipped": 0}
    said = err.splitlines()
    assert len(said) == 10
    assert said[0].startswith(f"tsnet: {path}:2: not JSON")
    assert said[1] == f"tsnet: {path}:3: not a JSON object"
    assert said[2] == (f"tsnet: {path}:4: series: 'value' must be a number or \"NaN\", "
                       "not 'x'")
    assert said[3].startswith(f"tsnet: {path}:5: series: 'bad name!' is not a solution name")
    assert said[4].startswith(f"tsnet: {path}:6: unknown kind 'gauge'")
    assert said[5] == f"tsnet: {path}:7: series: unknown key 'extra' in a series line"
    assert said[6] == f"tsnet: {path}:8: series: 'time_ms' {10**20} is out of range"
    assert said[7].startswith(f"tsnet: {path}:9: series: ")
    assert said[8].startswith(f"tsnet: {path}:11: record: no ts-store store 'nostore'")
    assert said[9].startswith(f"tsnet: {path}:12: store: 'type' must be one of")
    rows = json_lines(export_text(cfg))
    assert [(r["time_ms"], r["value"]) for r in rows] == [(1000, 1), (2000, 1)]


def test_import_from_stdin_of_one_solution_into_a_named_storage(tmp_path: Path) -> None:
    cfg = tmp_path / "t" / "tsnet.ini"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[tsnet]\ndata_dir = var\n[storage:default]\nbackend = sqlite\n"
                   "[storage:archive]\nbackend = sqlite\n")
    lines = [{"kind": "series", "solution": s, "metric": "m", "tags": {"h": "a"},
              "time_ms": 1000 + i, "value": i} for i, s in enumerate(("a", "b", "a"))]
    text = "".join(json.dumps(ln) + "\n" for ln in lines)
    counts, _, _ = import_file(cfg, "-", "--solution", "a", "--storage", "archive",
                               stdin=text)
    assert counts == {"file": "<stdin>", "lines": 3, "imported": 2, "unchanged": 0,
                      "rejected": 0, "skipped": 1}
    sols = {s["name"]: s["storage"] for s in json_lines(tsnet(cfg, "solution", "list").stdout)}
    assert sols["a"] == "archive" and "b" not in sols
    assert [r["value"] for r in json_lines(export_text(cfg, "--solution", "a"))] == [0, 2]
    r = tsnet(cfg, "import", "-", "--storage", "nowhere", check=False)
    assert r.returncode == 1 and "nowhere" in r.stderr
    r = tsnet(cfg, "import", str(tmp_path / "missing.jsonl"), check=False)
    assert r.returncode == 1 and "No such file" in r.stderr


def test_import_upserts_as_ingest_does(tmp_path: Path) -> None:
    """Into a storage that has other values: a point at a stored time is
    replaced, a property's tags merge, an equal message is not written twice,
    a meta field the line sets is set."""
    cfg = write_config(tmp_path / "t" / "tsnet.ini", "backend = sqlite\n")
    first = [
        {"kind": "series", "solution": "default", "metric": "m", "tags": {}, "time_ms": 1000,
         "value": 1},
        {"kind": "series", "solution": "default", "metric": "m", "tags": {}, "time_ms": 2000,
         "value": 2},
        {"kind": "property", "solution": "default", "entity": "e", "type": "t", "key": {},
         "tags": {"a": "1"}, "time_ms": 1000},
        {"kind": "message", "solution": "default", "entity": "e", "tags": {},
         "message": "hi", "time_ms": 1000},
        {"kind": "metric", "solution": "default", "metric": "m", "data_type": "float",
         "enabled": True, "label": "M"},
    ]
    second = [
        {**first[0], "value": 1.0},  # a float now: replaced
        first[1],
        {**first[2], "tags": {"b": "2"}},
        first[3],
        {**first[4], "units": "s"},
    ]
    for name, lines in (("first", first), ("second", second)):
        (tmp_path / name).write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    assert import_file(cfg, tmp_path / "first")[0]["imported"] == 5
    counts = import_file(cfg, tmp_path / "second")[0]
    assert (counts["imported"], counts["unchanged"]) == (3, 2)
    rows = json_lines(export_text(cfg))
    assert [r.get("value") for r in rows if r["kind"] == "series"] == [1.0, 2]
    assert [r["tags"] for r in rows if r["kind"] == "property"] == [{"a": "1", "b": "2"}]
    assert len([r for r in rows if r["kind"] == "message"]) == 1
    meta = next(r for r in rows if r["kind"] == "metric")
    assert meta == {"kind": "metric", "solution": "default", "metric": "m", "data_type": "float",
                    "enabled": True, "label": "M", "units": "s"}


def test_import_while_the_server_ingests(tmp_path: Path) -> None:
    """The server holds SQLite's writer and commits every 50 ms while the
    command imports beside it: both sides' data is all there."""
    cfg = write_config(tmp_path / "t" / "tsnet.ini", "backend = sqlite\n")
    n = 30_000
    backup = tmp_path / "backup.jsonl"
    with backup.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"kind": "series", "solution": "restored", "metric": "r",
                                "tags": {"s": str(i % 50)}, "time_ms": (T + i // 50) * 1000,
                                "value": i}) + "\n")
        for i in range(200):
            f.write(json.dumps({"kind": "message", "solution": "restored", "entity": "e",
                                "tags": {}, "message": f"m{i}", "time_ms": T * 1000 + i}) + "\n")
    srv = TsnetProcess(cfg)
    stop = threading.Event()
    sent = [0]

    def ingest(port: int) -> None:
        while not stop.is_set():
            k = sent[0]
            send_lines(port, [f"put live {T + k + j} {j} host=h\n" for j in range(500)])
            sent[0] += 500

    try:
        ports = srv.wait_bound({"opentsdb", "http"})
        feeder = threading.Thread(target=ingest, args=(ports["opentsdb"],))
        feeder.start()
        try:
            srv.wait_metric("tsnet_points_written_total", 1000)
            counts, err, _ = import_file(cfg, backup)
        finally:
            stop.set()
            feeder.join(30)
        assert counts["imported"] == n + 200 and counts["rejected"] == 0, err
        srv.wait_metric("tsnet_points_written_total", sent[0])
    finally:
        srv.stop()
    rows = json_lines(export_text(cfg))
    live = [r for r in rows if r.get("metric") == "live"]
    assert len(live) == sent[0]
    restored = [r for r in rows if r["solution"] == "restored"]
    assert len(restored) == n + 200 + 1  # and the entity e, registered by its messages
    assert sum(r["value"] for r in restored if r["kind"] == "series") == sum(range(n))
    assert not math.isnan(sum(r["value"] for r in live))


@pytest_twisted.ensureDeferred
async def test_a_write_the_storage_does_not_take_ends_the_import(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock past ``storage_wait``: the
    import stops, saying which lines may not be written; run again once the
    lock is gone, it imports the rest and nothing twice."""
    import io
    import sqlite3

    from twisted.internet import reactor

    from tsnet.config import load_config
    from tsnet.importer import ImportAborted, Importer
    from tsnet.ingest import Ingest
    from tsnet.metrics import Metrics
    from tsnet.plugins import load_plugins
    from tsnet.storages import Storages

    cfg = tmp_path / "tsnet.ini"
    cfg.write_text("[tsnet]\ndata_dir = var\nstorage_wait = 0.5\n"
                   "[storage:default]\nbackend = sqlite\nbusy_timeout = 0.1\n")
    text = "".join(json.dumps({"kind": "series", "solution": "default", "metric": "m",
                               "tags": {}, "time_ms": 1000 + i, "value": i}) + "\n"
                   for i in range(25))

    async def run(lines: str, lock: bool = False) -> Importer:
        config = load_config(str(cfg), load_plugins())
        storages = Storages(config, reactor)
        await storages.open()
        other = sqlite3.connect(str(tmp_path / "var" / "default.sqlite"), isolation_level=None)
        ingest = Ingest(storages, reactor, Metrics(), ack_timeout=config.storage_wait)
        importer = Importer(storages, ingest, batch=10)
        try:
            if lock:
                other.execute("BEGIN IMMEDIATE")
            await importer.run(io.BytesIO(lines.encode()))
        finally:
            await ingest.stop()  # (gives up on the batch after storage_wait)
            if other.in_transaction:
                other.execute("ROLLBACK")
            other.close()
            await storages.close()
        return importer

    first = await run(text[:text.index("\n") * 10 + 10])
    assert first.counts.imported == 10
    with pytest.raises(ImportAborted) as e:
        await run(text, lock=True)
    assert str(e.value).startswith("lines 11 to 20 may not be written (the storage did not "
                                   "commit them in time")
    again = await run(text)
    assert again.counts.as_dict() == {"lines": 25, "imported": 15, "unchanged": 10,
                                      "rejected": 0, "skipped": 0}
