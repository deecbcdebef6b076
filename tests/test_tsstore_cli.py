"""``tsnet store ...`` (ts-store's ``create`` and ``key regenerate|list|revoke``)
and the export's ``store`` lines, through the real command; a key made by
the command opens the store on a running server, a revoked one stops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
import treq

from tests.helpers.clients import wait_for
from tsnet.testing.process import json_lines, tsnet

ADMIN = "admin-key-of-twenty-chars"


TEXT = (f"[tsnet]\ndata_dir = var\nauth_refresh = 0.2\n[tsstore]\nadmin_key = {ADMIN}\n"
        "num_blocks = 16\n[listener:http]\nprotocol = http\n"
        "endpoint = tcp:0:interface=127.0.0.1\napis = tsstore\n")


def config(tmp_path: Path) -> Path:
    path = tmp_path / "tsnet.ini"
    path.write_text(TEXT)
    return path


def test_store_commands(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    made = json.loads(tsnet(cfg, "store", "create", "s1", "--type", "schema",
                            "--data-size", "128").stdout)
    assert made["name"] == "s1" and made["api_key"].startswith("tsstore_")
    assert made["key_id"] == made["api_key"][8:16]
    again = tsnet(cfg, "store", "create", "s1", check=False)
    assert again.returncode == 1 and "store already exists" in again.stderr
    bad = tsnet(cfg, "store", "create", "s2", "--data-size", "100", check=False)
    assert bad.returncode == 1 and "power of 2" in bad.stderr
    assert json_lines(tsnet(cfg, "store", "list").stdout) == [
        {"name": "s1", "type": "schema", "num_blocks": 16, "data_block_size": 128,
         "index_block_size": 4096}]
    keys = json_lines(tsnet(cfg, "store", "key", "list", "s1").stdout)
    assert [(k["id"], k["note"]) for k in keys] == [(made["key_id"], "Initial key")]
    new = json.loads(tsnet(cfg, "store", "key", "regenerate", "s1").stdout)
    keys = json_lines(tsnet(cfg, "store", "key", "list", "s1").stdout)
    assert [(k["id"], k["note"]) for k in keys] == [(new["key_id"], "Regenerated via CLI")]
    gone = tsnet(cfg, "store", "key", "revoke", "s1", "nope", check=False)
    assert gone.returncode == 1 and "API key not found" in gone.stderr
    tsnet(cfg, "store", "key", "revoke", "s1", new["key_id"])
    assert tsnet(cfg, "store", "key", "list", "s1").stdout == ""
    assert "no store" in tsnet(cfg, "store", "key", "list", "zz", check=False).stderr
    lines = json_lines(tsnet(cfg, "export").stdout)
    assert lines == [{"kind": "store", "solution": "s1", "type": "schema", "num_blocks": 16,
                      "data_block_size": 128, "index_block_size": 4096}]
    assert "store" in tsnet(cfg, "--help").stdout


@pytest_twisted.ensureDeferred
async def test_a_key_from_the_command_works_on_a_running_server(make_server: Any) -> None:
    server = await make_server(TEXT, name="srv")
    cfg = server.config_path
    made = json.loads(tsnet(cfg, "store", "create", "s1").stdout)
    url = f"http://127.0.0.1:{server.port('http')}/api/stores/s1/data"

    async def put(key: str, t: int) -> int:
        resp = await treq.post(url, data=json.dumps({"timestamp": t, "data": t}).encode(),
                               headers={"X-API-Key": key, "Content-Type": "application/json"})
        await treq.content(resp)
        return resp.code

    assert await put(made["api_key"], 1) == 201
    lines = json_lines(tsnet(cfg, "export", "--solution", "s1").stdout)
    assert [ln["kind"] for ln in lines] == ["store", "record"]
    assert lines[1] == {"kind": "record", "solution": "s1", "time_ns": 1, "size": 1, "data": 1}
    tsnet(cfg, "store", "key", "revoke", "s1", made["key_id"])
    codes: list[int] = []

    async def refused() -> bool:
        codes.append(await put(made["api_key"], 2 + len(codes)))
        return codes[-1] == 401
    await wait_for(refused, timeout=10)
