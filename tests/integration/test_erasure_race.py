"""An erasure racing prompt writes in Redis: whichever reaches Redis first, no erased prompt is served."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from config import Settings
from likeflow.metrics import Metrics
from likeflow.sinks.redis_keys import erased_key, prompts_key
from likeflow.sinks.redis_prompts import RedisPromptStore, ServedPrompt

ERASED_AT = 1_795_000_000_000


def served(user: str, like_ts: int) -> ServedPrompt:
    prompt_id = uuid.uuid4().hex
    raw = orjson.dumps({"prompt_id": prompt_id, "user_id": user, "like_ts": like_ts})
    return ServedPrompt(user, like_ts, prompt_id, raw)


@pytest.fixture
async def store(settings: Settings) -> RedisPromptStore:
    client = aioredis.from_url(settings.redis_url)
    return RedisPromptStore(
        client, prefix=settings.redis_prefix, keep=20, ttl_s=3600, metrics=Metrics(CollectorRegistry())
    )


async def served_ts(client: aioredis.Redis, prefix: str, user: str) -> list[int]:
    entries = await client.zrange(prompts_key(prefix, user), 0, -1, withscores=True)
    scores: list[int] = []
    for entry in entries:  # (member, score) pairs: RESP2 tuples, RESP3 lists
        assert isinstance(entry, tuple | list), entry
        scores.append(int(entry[1]))
    return sorted(scores)


async def test_a_write_arriving_after_the_erasure_is_refused_up_to_the_erasure_ts(
    store: RedisPromptStore, redis_client: aioredis.Redis, settings: Settings
) -> None:
    user = f"race-{uuid.uuid4().hex[:8]}"
    assert await store.write([served(user, ERASED_AT - 60_000)])
    await store.erase(user, ERASED_AT)
    assert await served_ts(redis_client, settings.redis_prefix, user) == []
    # A retried or in-flight write of a prompt liked before the erasure lands afterwards: refused,
    # in the batched script and the one-prompt script (the Redis Cluster path) alike.
    assert await store.write([served(user, ERASED_AT - 30_000), served(user, ERASED_AT)])
    await store._script(  # noqa: SLF001 - the Cluster path's script, on this single node
        keys=[prompts_key(settings.redis_prefix, user), erased_key(settings.redis_prefix, user)],
        args=[ERASED_AT - 1, b"{}", '"prompt_id":"x"', 20, 3_600_000],
    )
    assert await served_ts(redis_client, settings.redis_prefix, user) == []
    # A like after the erasure is a new activity of the user: served.
    assert await store.write([served(user, ERASED_AT + 1)])
    assert await served_ts(redis_client, settings.redis_prefix, user) == [ERASED_AT + 1]
    # A second, older erasure request does not move the marker back.
    await store.erase(user, ERASED_AT - 100_000)
    marker = await redis_client.get(erased_key(settings.redis_prefix, user))
    assert marker is not None and int(marker) == ERASED_AT
    assert 0 < await redis_client.pttl(erased_key(settings.redis_prefix, user)) <= 3_600_000
    await store.close()


@pytest.mark.parametrize("erase_first", [True, False])
async def test_interleaved_writes_and_an_erasure_serve_only_later_likes(
    store: RedisPromptStore, redis_client: aioredis.Redis, settings: Settings, erase_first: bool
) -> None:
    """Two connections, the erasure and a stream of writes forced to interleave: every prompt
    liked at or before the erasure is gone at the end, every later one served."""
    user = f"race-{uuid.uuid4().hex[:8]}"
    writer = RedisPromptStore(
        aioredis.from_url(settings.redis_url),
        prefix=settings.redis_prefix,
        keep=1000,
        ttl_s=3600,
        metrics=Metrics(CollectorRegistry()),
    )
    before = [served(user, ERASED_AT - 200 + i) for i in range(200)]
    after = [served(user, ERASED_AT + 1 + i) for i in range(50)]
    erased, writing = asyncio.Event(), asyncio.Event()

    async def writes() -> None:
        for i, prompt in enumerate(before):
            await writer.write([prompt])
            writing.set()
            if i == (0 if erase_first else 100):
                await erased.wait()  # the erasure lands between two writes of older likes
        for prompt in after:
            await writer.write([prompt])

    async def erase() -> None:
        if not erase_first:
            await writing.wait()  # then races the writes until the 101st waits for it
        await store.erase(user, ERASED_AT)
        erased.set()

    await asyncio.gather(writes(), erase())
    assert await served_ts(redis_client, settings.redis_prefix, user) == [p.like_ts for p in after]
    await writer.close()
    await store.close()
