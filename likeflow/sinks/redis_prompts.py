"""Serves each user's latest prompts from Redis: one sorted set per user, written per batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeflow.metrics import Metrics
from streams.events import Prompt

log = logging.getLogger(__name__)

# KEYS[1] = the user's prompt set; ARGV = like_ts (score), payload, prompt-id marker, keep, ttl ms.
# Idempotent: a prompt already present (same prompt_id) is left as it is, so a redelivered like
# never duplicates an entry and the first copy always wins. Entries older than the TTL, in like
# time, relative to the newest entry, are dropped, then the set is trimmed to `keep`.
UPSERT_PROMPT_LUA = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #members do
  if string.find(members[i], ARGV[3], 1, true) then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(newest[2]) - tonumber(ARGV[5])))
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[4])
if n > keep then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

RETRY_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)


def prompts_key(prefix: str, user_id: str) -> str:
    """Redis key of a user's prompts: `{prefix}:v1:prompts:{user_id}` (docs/redis.md)."""
    return f"{prefix}:v1:prompts:{user_id}"


class RedisPromptStore:
    """Writes prompts to Redis in one pipelined round trip per batch, with bounded retries."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        keep: int,
        ttl_s: int,
        metrics: Metrics,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._keep = keep
        self._ttl_ms = ttl_s * 1000
        self._metrics = metrics
        self._script = client.register_script(UPSERT_PROMPT_LUA)

    async def write(self, prompts: Sequence[Prompt]) -> bool:
        """Upsert `prompts`; True when written. Retries connection errors ~4 s, then gives up.

        Giving up does not stop the job: the prompt is already on `order-prompts` (the source
        of truth) and in the user table, from which serving can be rebuilt.
        """
        if not prompts:
            return True
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            started = time.perf_counter()
            try:
                await self._write_once(prompts)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if delay is None:
                    self._metrics.redis_write_errors.labels("gave_up").inc()
                    log.error(
                        "redis write of %d prompts failed after %d attempts, giving up: %s",
                        len(prompts),
                        attempt + 1,
                        exc,
                    )
                    return False
                self._metrics.redis_write_errors.labels("retried").inc()
                log.warning("redis write failed (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
            else:
                self._metrics.redis_write_latency.observe(time.perf_counter() - started)
                return True
        return False  # unreachable: the last delay is None

    async def _write_once(self, prompts: Sequence[Prompt]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for prompt in prompts:
                await self._script(
                    keys=[prompts_key(self._prefix, prompt.user_id)],
                    args=[
                        prompt.like_ts,
                        prompt.to_json(),
                        f'"prompt_id":"{prompt.prompt_id}"',
                        self._keep,
                        self._ttl_ms,
                    ],
                    client=pipe,
                )
            await pipe.execute()

    async def erase(self, user_id: str) -> None:
        """Delete the user's served prompts (an erasure request).

        Retries until Redis answers (backing off to 2 s between tries): the request's offset is
        not committed meanwhile, so an erasure is never acknowledged half done, and the worker
        does not crash while Redis is away.
        """
        key = prompts_key(self._prefix, user_id)
        attempt = 0
        while True:
            try:
                await self._client.delete(key)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                attempt += 1
                self._metrics.redis_write_errors.labels("retried").inc()
                log.warning("redis erase failed (%s); retrying in %.2f s (attempt %d)", exc, delay, attempt)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
