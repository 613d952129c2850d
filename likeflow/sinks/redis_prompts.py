"""Serves each user's latest prompts from Redis: one sorted set per user, written per batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from likeflow.connections import CLUSTER_CONCURRENCY
from likeflow.metrics import Metrics
from likeflow.sinks.redis_keys import erased_key, prompts_key
from streams.events import Prompt

log = logging.getLogger(__name__)

# KEYS[1] = the user's prompt set, KEYS[2] = the user's erasure marker; ARGV = like_ts (score),
# payload, prompt-id marker, keep, ttl ms. Idempotent: a prompt already present (same prompt_id)
# is left as it is, so a redelivered like never duplicates an entry and the first copy always
# wins. A prompt liked at or before the user's erasure is refused, whatever order the erasure
# and the write arrive in. Entries older than the TTL, in like time, relative to the newest
# entry, are dropped, then the set is trimmed to `keep`.
UPSERT_PROMPT_LUA = """
local erased = redis.call('GET', KEYS[2])
if erased and tonumber(erased) >= tonumber(ARGV[1]) then return 0 end
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

# The same upsert for many users in one call (a single Redis node: all keys are local): KEYS =
# (prompt set, erasure marker) per prompt; ARGV = keep, ttl ms, then (like_ts, payload,
# prompt-id marker) per prompt. One command per batch instead of one per prompt.
UPSERT_PROMPTS_LUA = """
local keep, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local written = 0
for p = 0, #KEYS / 2 - 1 do
  local key, marker = KEYS[2 * p + 1], KEYS[2 * p + 2]
  local score, payload, id = ARGV[3 + 3 * p], ARGV[4 + 3 * p], ARGV[5 + 3 * p]
  local erased = redis.call('GET', marker)
  local fresh = not (erased and tonumber(erased) >= tonumber(score))
  if fresh then
    local members = redis.call('ZRANGE', key, 0, -1)
    for i = 1, #members do
      if string.find(members[i], id, 1, true) then fresh = false; break end
    end
  end
  if fresh then
    redis.call('ZADD', key, score, payload)
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (tonumber(newest[2]) - ttl))
    local n = redis.call('ZCARD', key)
    if n > keep then redis.call('ZREMRANGEBYRANK', key, 0, n - keep - 1) end
    redis.call('PEXPIRE', key, ttl)
    written = written + 1
  end
end
return written
"""
# Prompts per batched call: a script call blocks Redis while it runs, so calls stay short.
PROMPTS_PER_CALL = 1000

# KEYS[1] = the prompt set, KEYS[2] = the erasure marker; ARGV = erasure ts, ttl ms. The marker
# outlives every prompt it could refuse (prompts expire after the same TTL in like time).
ERASE_LUA = """
local held = redis.call('GET', KEYS[2])
if not held or tonumber(held) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"""

RETRY_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)
# What "Redis is unreachable" looks like. redis-py's cluster client can also raise RuntimeError
# from a transport it closed during a failover: retried like a connection error.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, RuntimeError)


async def run_concurrently(calls: Iterable[Awaitable[Any]], limit: int = CLUSTER_CONCURRENCY) -> list[Any]:
    """Await `calls` with at most `limit` in flight; their results in order. The first error
    is raised after every call of its group has finished (none is left running)."""
    results: list[Any] = []
    group: list[Awaitable[Any]] = []
    for call in calls:
        group.append(call)
        if len(group) >= limit:
            results += await _gather_all(group)
            group = []
    if group:
        results += await _gather_all(group)
    return results


async def _gather_all(group: Sequence[Awaitable[Any]]) -> list[Any]:
    done = await asyncio.gather(*group, return_exceptions=True)
    failed = next((r for r in done if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed
    return list(done)


class ServedPrompt(NamedTuple):
    """A prompt as Redis serves it: its user, like ts (the score), id, and exact JSON bytes."""

    user_id: str
    like_ts: int
    prompt_id: str
    raw: bytes

    @classmethod
    def of(cls, prompt: Prompt, raw: bytes | None = None) -> ServedPrompt:
        """`prompt` to serve (`raw`: its JSON, if already encoded)."""
        return cls(
            prompt.user_id, prompt.like_ts, prompt.prompt_id, raw if raw is not None else prompt.to_json()
        )


class RedisPromptStore:
    """Writes prompts to Redis in one pipelined round trip per batch, with bounded retries.

    While Redis is unreachable, prompts that could not be written are held (at most
    `max_pending`) and written with the next batch; beyond that bound `write` does not return
    until Redis answers, which pauses the agent (Kafka keeps the rest, uncommitted). With
    `max_pending=0` a failed batch is given up (the rebuild path: it reports failures itself).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        keep: int,
        ttl_s: int,
        metrics: Metrics,
        max_pending: int = 0,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._keep = keep
        self._ttl_ms = ttl_s * 1000
        self._metrics = metrics
        self._script = client.register_script(UPSERT_PROMPT_LUA)
        self._batch_script = client.register_script(UPSERT_PROMPTS_LUA)
        # Redis Cluster refuses a script whose keys are in different slots: one call per prompt.
        self._one_node = not isinstance(client, RedisCluster)
        self._erase_script = client.register_script(ERASE_LUA)
        self._max_pending = max_pending
        self._pending: list[ServedPrompt] = []
        # Batches complete concurrently; their writes (and what is held) go one at a time.
        self._writing = asyncio.Lock()
        self._pending_gauge = metrics.redis_pending.labels("prompts")

    async def write(self, prompts: Sequence[ServedPrompt]) -> bool:
        """Upsert `prompts` (and any still pending); True when written.

        Each attempt retries connection errors for ~4 s. A failed batch is held for the next
        call while at most `max_pending` prompts wait; above that, this call keeps retrying
        until Redis answers. The upsert is idempotent and first-copy-wins, so writing a held
        prompt late, or twice, serves the same set.
        """
        async with self._writing:
            return await self._write(prompts)

    async def _write(self, prompts: Sequence[ServedPrompt]) -> bool:
        self._pending.extend(prompts)
        while True:
            # Re-read each round: an erasure may have discarded held prompts meanwhile.
            batch = self._pending
            if await self._write_with_retries(batch):
                self._pending = []
                self._pending_gauge.set(0)
                return True
            self._pending_gauge.set(len(batch))
            if len(batch) <= self._max_pending:
                return False
            if not self._max_pending:
                self._pending = []
                return False
            log.error(
                "redis unreachable with %d prompts pending (limit %d): pausing until it answers",
                len(batch),
                self._max_pending,
            )

    def discard_pending(self, user_id: str) -> None:
        """Forget held prompts of `user_id` (an erasure: they must not be written later)."""
        self._pending = [p for p in self._pending if p.user_id != user_id]
        self._pending_gauge.set(len(self._pending))

    async def _write_with_retries(self, prompts: Sequence[ServedPrompt]) -> bool:
        if not prompts:
            return True
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            started = time.perf_counter()
            try:
                await self._write_once(prompts)
            except REDIS_DOWN as exc:
                if delay is None:
                    self._metrics.redis_write_errors.labels("gave_up").inc()
                    log.error(
                        "redis write of %d prompts failed after %d attempts: %r",
                        len(prompts),
                        attempt + 1,
                        exc,
                    )
                    return False
                self._metrics.redis_write_errors.labels("retried").inc()
                log.warning("redis write failed (%r); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
            else:
                self._metrics.redis_write_latency.observe(time.perf_counter() - started)
                return True
        return False  # unreachable: the last delay is None

    async def _write_once(self, prompts: Sequence[ServedPrompt]) -> None:
        prefix, keep, ttl_ms = self._prefix, self._keep, self._ttl_ms
        if not self._one_node:
            # Redis Cluster: one script call per user (its two keys share the user's slot),
            # concurrently; redis-py's cluster pipeline does not take scripts.
            await run_concurrently(
                self._script(
                    keys=[prompts_key(prefix, user_id), erased_key(prefix, user_id)],
                    args=[like_ts, raw, f'"prompt_id":"{prompt_id}"', keep, ttl_ms],
                )
                for user_id, like_ts, prompt_id, raw in prompts
            )
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for start in range(0, len(prompts), PROMPTS_PER_CALL):
                keys: list[str] = []
                args: list[Any] = [keep, ttl_ms]
                for user_id, like_ts, prompt_id, raw in prompts[start : start + PROMPTS_PER_CALL]:
                    keys += (prompts_key(prefix, user_id), erased_key(prefix, user_id))
                    args += (like_ts, raw, f'"prompt_id":"{prompt_id}"')
                await self._batch_script(keys=keys, args=args, client=pipe)
            await pipe.execute()

    async def erase(self, user_id: str, erased_ts: int) -> None:
        """Delete the user's served prompts (an erasure request at epoch-ms `erased_ts`) and leave
        a marker that refuses any prompt liked at or before it, so a write retried or still in
        flight cannot bring one back.

        Retries until Redis answers (backing off to 2 s between tries): the request's offset is
        not committed meanwhile, so an erasure is never acknowledged half done, and the worker
        does not crash while Redis is away.
        """
        self.discard_pending(user_id)
        keys = [prompts_key(self._prefix, user_id), erased_key(self._prefix, user_id)]
        attempt = 0
        while True:
            try:
                await self._erase_script(keys=keys, args=[erased_ts, self._ttl_ms])
                return
            except REDIS_DOWN as exc:
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                attempt += 1
                self._metrics.redis_write_errors.labels("retried").inc()
                log.warning("redis erase failed (%s); retrying in %.2f s (attempt %d)", exc, delay, attempt)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
