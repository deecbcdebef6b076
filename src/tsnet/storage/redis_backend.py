"""The ``redis`` storage backend as a plugin: several nodes over shared Redis."""

from __future__ import annotations

import os
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsnet.config import Config, Key, StorageConfig, positive_float
from tsnet.interfaces import IStorage, IStorageBackend


def _non_negative_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise ValueError(f"expected 0 or more, got {v}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError(f"expected 1 or more, got {v}")
    return v


def _prefix(text: str) -> str:
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError("a key prefix is a non-empty word, e.g. tsnet:")
    return text


@implementer(IPlugin, IStorageBackend)
class RedisBackend:
    name = "redis"
    description = "Redis through txredisapi: several nodes share it; several URLs shard it"
    storage_keys = {
        "url": Key(str, doc="redis://[[user]:password@]host:port/db (rediss:// for verified "
                            "TLS); several, whitespace-separated, shard the data"),
        "pool_size": Key(_positive_int, 4, "connections per shard for reads and the catalog"),
        "connect_timeout": Key(positive_float, 5.0, "seconds to connect to a shard"),
        "timeout": Key(positive_float, 10.0, "seconds any one Redis call may take"),
        "replicas": Key(_non_negative_int, 0, "acks also wait for WAIT N: the write reached "
                                              "N replicas"),
        "replicas_timeout": Key(positive_float, 1.0, "seconds WAIT waits for the replicas"),
        "tls_ca": Key(str, None, "PEM file of the CA that signs the servers' certificates "
                                 "(rediss://; default: the system's trust store)"),
        "prefix": Key(_prefix, "tsnet:", "the prefix of every key tsnet writes"),
    }

    def check(self, storage: StorageConfig, config: Config) -> None:
        """Parse ``url`` (an error never shows the password) and make ``tls_ca``
        absolute, relative to the config file's folder."""
        from tsnet.storage.redis_shards import parse_redis_urls

        opts = storage.options
        try:
            opts["urls"] = parse_redis_urls(opts["url"])
        except ValueError as e:
            raise ValueError(f"url: {e}") from None
        if opts.get("tls_ca"):
            opts["tls_ca"] = os.path.normpath(os.path.join(config.directory, opts["tls_ca"]))
            if not os.path.isfile(opts["tls_ca"]):
                raise ValueError(f"tls_ca: no file {opts['tls_ca']}")
        if opts["replicas"] and opts["replicas_timeout"] >= opts["timeout"]:
            raise ValueError("replicas_timeout must be shorter than timeout")

    def makeStorage(self, storage: StorageConfig, reactor: Any) -> IStorage:
        from tsnet.storage.redis import RedisStorage
        from tsnet.storage.redis_shards import ShardOptions

        o = storage.options
        return RedisStorage(
            storage.name, o["urls"], reactor,
            ShardOptions(o["pool_size"], o["connect_timeout"], o["timeout"], o.get("tls_ca")),
            prefix=o["prefix"], replicas=o["replicas"], replicas_timeout=o["replicas_timeout"])
