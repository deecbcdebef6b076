"""The `tsnet` command against Redis: `storage rebalance` after adding a shard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted

from tsnet.storage.redis import RedisStorage
from tsnet.storage.redis_shards import parse_redis_urls
from tsnet.testing.conformance import T0, make_batch
from tsnet.testing.process import tsnet


def config(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "tsnet.ini"
    path.write_text(f"[tsnet]\ndata_dir = var\n[storage:default]\n{storage}\n")
    return path


@pytest_twisted.ensureDeferred
async def test_storage_rebalance_moves_series_to_a_new_shard(redis_servers: Any,
                                                             tmp_path: Path) -> None:
    from twisted.internet import reactor

    a, b = redis_servers(2)
    one = RedisStorage("default", parse_redis_urls(a.url), reactor)
    await one.open()
    await one.write(make_batch(samples=[(("m", None, (("i", str(i)),)), T0, i)
                                        for i in range(100)]))
    await one.close()
    cfg = config(tmp_path, f"backend = redis\nurl = {a.url}\n    {b.url}")
    out = json.loads(tsnet(cfg, "storage", "rebalance").stdout)
    on_b = len(b.command("KEYS", "tsnet:s:default:d:*"))
    assert out == {"storage": "default", "series": on_b, "lists": 0, "blobs": on_b}
    assert on_b > 10
    lines = [json.loads(x) for x in tsnet(cfg, "export").stdout.splitlines()]
    assert sorted(x["value"] for x in lines) == list(range(100))


def test_storage_rebalance_of_sqlite_says_there_is_nothing_to_do(tmp_path: Path) -> None:
    r = tsnet(config(tmp_path, "backend = sqlite"), "storage", "rebalance", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "tsnet: [storage:default] is not sharded: nothing to rebalance"


def test_readme_redis_config_block_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    start = readme.index("    [storage:default]\n    backend = redis\n")
    block = readme[start:readme.index("\n\n", start)]
    cfg = tmp_path / "tsnet.ini"
    cfg.write_text("[tsnet]\ndata_dir = var\n" + "\n".join(
        line[4:] for line in block.split("\n")) + "\n")
    r = tsnet(cfg, "check-config")
    assert "OK" in r.stdout and "1 storages: default" in r.stdout
