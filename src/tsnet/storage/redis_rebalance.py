"""Moving data to the shards a grown ring names (`tsnet storage rebalance`).

After shards are added to ``url``, new writes go where the ring says and
reads gather a series from every shard holding part of it, so nothing is
unreadable meanwhile.  A rebalance moves each part that is not on its shard
there, old blobs before new, so reads touch one shard again.  Each series or
list is copied to its new shard first and removed from the old one after, so
an interrupted rebalance leaves at worst a part on both (samples fold to the
same values; re-running finishes the move).  Run it while no node writes: a
write landing on the old shard between the copy and the removal would be lost.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from tsnet.storage import redis_scripts as lua
from tsnet.storage.redis_keys import ITEM_LISTS, route

log = Logger(namespace="tsnet.storage.redis")

SCAN_COUNT = 1000


async def _keys(shard: Any, pattern: str) -> list[bytes]:
    cursor: Any = 0
    out: list[bytes] = []
    while True:
        cursor, keys = await shard.call("scan", cursor, pattern, SCAN_COUNT)
        out.extend(keys)
        if int(cursor) == 0:
            return out


async def rebalance(shards: list[Any], ring: Any, prefix: str) -> dict:
    """Move every misplaced series and item list; returns what moved."""
    moved = {"series": 0, "lists": 0, "blobs": 0}
    p = prefix.encode()
    data_key = f"{prefix}data"
    for index, shard in enumerate(shards):
        touched: set[str] = set()
        for key in await _keys(shard, f"{prefix}s:*"):
            rest = key[len(p) + 2:]
            sol_b, _, tail = rest.partition(b":")
            sol = sol_b.decode()
            sp = f"{prefix}s:{sol}:"
            if tail.startswith(b"m:"):
                metric = tail[2:].decode()
                for sid_b, key_json in (await shard.call("hgetall", key)).items():
                    sid = sid_b.decode()
                    dest = ring.index(f"{sol}:{sid}".encode())
                    if dest == index:
                        continue
                    blobs = await shard.call("lrange", f"{sp}d:{sid}", 0, -1)
                    await shards[dest].call(
                        "eval", lua.MOVE_SERIES_IN, [],
                        [sp, data_key, sol, metric, sid, key_json, *blobs], write=True)
                    await shard.call("eval", lua.MOVE_SERIES_OUT, [],
                                     [sp, data_key, sol, metric, sid], write=True)
                    moved["series"] += 1
                    moved["blobs"] += len(blobs)
                    touched.add(sol)
            elif tail.decode() in ITEM_LISTS:
                r = route(prefix, key)
                dest = ring.index(r) if r is not None else index
                if dest == index:
                    continue
                blobs = await shard.call("lrange", key, 0, -1)
                await shards[dest].call("eval", lua.MOVE_LIST_IN, [],
                                        [key, data_key, sol, *blobs], write=True)
                await shard.call("delete", key, write=True)
                moved["lists"] += 1
                moved["blobs"] += len(blobs)
                touched.add(sol)
        for sol in touched:
            await shard.call("eval", lua.FORGET_IF_EMPTY, [],
                             [f"{prefix}s:{sol}:", data_key, sol], write=True)
        log.info("rebalance: shard {shard} done", shard=shard.url.display())
    return moved
