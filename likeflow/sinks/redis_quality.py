"""Serves creator quality from Redis: absolute JSON documents behind a version guard."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeflow.metrics import Metrics

log = logging.getLogger(__name__)

# KEYS[1] = a hash {version, doc}; ARGV = version, doc. A write whose version is below the
# stored one is refused, so a replay or a zombie worker (one that lost its partitions but has
# not noticed yet) never overwrites newer numbers. Equal versions rewrite the same content.
VERSIONED_SET_LUA = """
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'doc', ARGV[2])
return 1
"""


def windows_key(prefix: str, creator_id: str) -> str:
    """Redis key of a creator's window counts (docs/redis.md)."""
    return f"{prefix}:v1:creator:{creator_id}:windows"


def standing_key(prefix: str, creator_id: str) -> str:
    """Redis key of a creator's score, weight and demotion state."""
    return f"{prefix}:v1:creator:{creator_id}:standing"


def platform_key(prefix: str) -> str:
    """Redis key of the platform totals and rates."""
    return f"{prefix}:v1:platform"


class RedisQualityStore:
    """Versioned writes of quality documents, one pipelined round trip per batch."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, metrics: Metrics) -> None:
        self._client = client
        self.prefix = prefix
        self._metrics = metrics
        self._script = client.register_script(VERSIONED_SET_LUA)

    async def write(self, docs: Sequence[tuple[str, int, dict[str, Any]]]) -> int:
        """Write (key, version, doc) triples; returns how many were accepted (newer or equal).

        A Redis outage is logged and counted, not raised: the tables are the source of truth.
        """
        if not docs:
            return 0
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, version, doc in docs:
                    await self._script(keys=[key], args=[version, orjson.dumps(doc)], client=pipe)
                results = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._metrics.redis_write_errors.labels("gave_up").inc()
            log.error("redis write of %d quality documents failed: %s", len(docs), exc)
            return 0
        return sum(int(r) for r in results)

    async def read(self, key: str) -> dict[str, Any] | None:
        """The document stored at `key`, or None."""
        raw = await self._client.hget(key, "doc")
        if raw is None:
            return None
        doc: dict[str, Any] = orjson.loads(raw)
        return doc
