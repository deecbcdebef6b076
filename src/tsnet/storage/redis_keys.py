"""The key layout of the Redis backend, and which shard holds which key.

With the default prefix ``tsnet:`` (``[storage:*] prefix``)::

    tsnet:s:SOL:d:SID          LIST   a series' sample blobs in write order
    tsnet:s:SOL:m:METRIC       HASH   SID -> series key JSON, this shard's series
    tsnet:s:SOL:metrics        SET    the metrics that have series on this shard
    tsnet:s:SOL:props          LIST   property blobs (one per batch)
    tsnet:s:SOL:msgs           LIST   message blobs
    tsnet:s:SOL:meta           LIST   metric/entity upserts
    tsnet:s:SOL:recs           LIST   ts-store record blobs
    tsnet:data                 SET    solutions with data on this shard
    tsnet:batch:ID             STRING a committed batch (an hour): retries skip it
    tsnet:c:gen                STRING the catalog generation
    tsnet:c:sols               SET    solution names
    tsnet:c:sol:NAME           STRING a solution record (JSON)
    tsnet:c:toks:SOL           SET    the token ids of a solution
    tsnet:c:tok:ID             STRING a token record with its credentials' hashes
    tsnet:c:cred:CID           STRING credential id -> token id
    tsnet:c:hash:SHA256        STRING secret hash -> credential id

SID is a hash of the series key, so a key name never depends on the bytes of
a metric or tag beyond ``METRIC`` in its index.  A series (its ``d:`` list and
its entries in ``m:``/``metrics``) lives on the shard of ``SOL:SID``; a
solution's other items on the shard of ``s:SOL``.  The whole catalog lives on
one shard, so every catalog change is one atomic script: the shard the ring
names for ``c`` when the deployment starts, and wherever it is after that
(a node looks for it when it starts), so adding shards never moves it.
`route` gives the routing key of any key name, which is what a rebalance uses.
"""

from __future__ import annotations

import hashlib

DEFAULT_PREFIX = "tsnet:"

#: the per-solution item lists, by item kind
ITEM_LISTS = ("props", "msgs", "meta", "recs")

#: where a new deployment's catalog goes (`RedisStorage` finds an existing one)
CATALOG_ROUTE = b"c"


def series_id(key_json: bytes) -> str:
    """A series' id inside its solution: 80 bits of BLAKE2b of its key JSON."""
    return hashlib.blake2b(key_json, digest_size=10).hexdigest()


def series_route(solution: str, sid: str) -> bytes:
    return f"{solution}:{sid}".encode()


def items_route(solution: str) -> bytes:
    return f"s:{solution}".encode()


class KeyRouteError(ValueError):
    """A key under the prefix that is not part of the layout."""


def route(prefix: str, key: bytes) -> bytes | None:
    """The routing key of a key name (None: a key that never moves whole: the
    catalog, which stays where it is, or a per-shard index whose entries
    follow their series)."""
    p = prefix.encode()
    if not key.startswith(p):
        raise KeyRouteError(f"{key!r} is not under {prefix!r}")
    rest = key[len(p):]
    if rest.startswith(b"c:") or rest == b"data" or rest.startswith(b"batch:"):
        return None
    if rest.startswith(b"s:"):
        sol, _, tail = rest[2:].partition(b":")
        if tail.startswith(b"d:"):
            return sol + b":" + tail[2:]
        if tail in [k.encode() for k in ITEM_LISTS]:
            return b"s:" + sol
        if tail == b"metrics" or tail.startswith(b"m:"):
            return None
    raise KeyRouteError(f"{key!r} is not a key of the tsnet layout")
