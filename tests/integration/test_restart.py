"""kill -9, restart, the same likes again: no new prompt, no changed byte, no extra Redis entry."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from config import Settings
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import prompts_key
from streams.topics import LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.integration.clock import NOW
from tests.integration.harness import (
    Consumed,
    Record,
    WorkerProcess,
    produce,
    read_topic_until,
    wait_until,
    zset_members,
)
from tests.integration.namespaces import private_settings, pseudonymizer_for

USERS = [f"r-u{i}" for i in range(12)]
PRODUCTS = [
    {
        "product_id": f"r-p{i}",
        "title": f"T{i}",
        "category": "dress",
        "price_cents": 1000 + i,
        "certified": True,
        "stock": 30 - i,
    }
    for i in range(3)
]
MAPPING: Record = (
    b"r-v1",
    orjson.dumps({"video_id": "r-v1", "creator_id": "r-c", "ts": NOW, "products": PRODUCTS}),
    [],
)


def likes(batch: str, offset_s: int) -> list[Record]:
    return [
        (
            u.encode(),
            orjson.dumps(
                {"event_id": f"{batch}-{u}", "user_id": u, "video_id": "r-v1", "ts": NOW + offset_s * 1000}
            ),
            [],
        )
        for u in USERS
    ]


@pytest.fixture(scope="module", params=["memory://", "rocksdict://"])
def restart_settings(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Settings:
    """A namespace of its own per store: on `rocksdict://` the restarted worker reopens the state
    the killed one left on disk (same data directory) and replays the changelog past it."""
    settings = dataclasses.replace(private_settings(base_settings, tmp_path_factory), store=request.param)
    asyncio.run(ensure_topics(settings))
    return settings


def by_prompt_id(records: list[Consumed]) -> dict[str, set[bytes]]:
    out: dict[str, set[bytes]] = {}
    for r in records:
        assert r.value is not None
        out.setdefault(orjson.loads(r.value)["prompt_id"], set()).add(r.value)
    return out


async def test_redelivery_after_kill_9_changes_nothing(restart_settings: Settings, tmp_path: Path) -> None:
    settings = restart_settings
    pseudonym = pseudonymizer_for(settings)
    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    try:
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [MAPPING])
        await wait_until(lambda: (first.health() or {}).get("video_mappings") == 1, 30, "mapping", first)
        await produce(settings, settings.topic(LIKES), likes("A", 1))
        before = await read_topic_until(
            settings, settings.topic(ORDER_PROMPTS), lambda rs: len(rs) >= len(USERS), 30, "batch A"
        )
    finally:
        # No graceful shutdown: offsets committed or not, changelog flushed or not, as it happens.
        first.stop(signal.SIGKILL)
    prompts_a = by_prompt_id(before)
    assert len(prompts_a) == len(USERS)

    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        # The same likes again (as a producer retry would send them), then new ones.
        await produce(settings, settings.topic(LIKES), likes("A", 1) + likes("B", 2))
        await wait_until(
            lambda: (
                second.metric_sum("likeflow_duplicate_likes_total") >= len(USERS)
                and second.metric_sum("likeflow_prompts_emitted_total") >= len(USERS)
            ),
            60,
            "batch A to be recognised and batch B to prompt",
            second,
        )
        after = await read_topic_until(
            settings,
            settings.topic(ORDER_PROMPTS),
            lambda rs: len(by_prompt_id(rs)) >= 2 * len(USERS),
            30,
            "batch B",
        )
        # Every prompt of batch A that the new worker re-sent is byte-identical to the first copy.
        prompts_after = by_prompt_id(after)
        for prompt_id, copies in prompts_a.items():
            assert prompts_after[prompt_id] == copies
        assert len(prompts_after) == 2 * len(USERS)
        assert all(len(copies) == 1 for copies in prompts_after.values())
        # Batch B falls through to each user's next product: state survived the crash.
        for copies in prompts_after.values():
            prompt = orjson.loads(next(iter(copies)))
            expected = "r-p0" if prompt["like_ts"] == NOW + 1000 else "r-p1"
            assert prompt["product_id"] == expected
        client = aioredis.from_url(settings.redis_url)
        try:
            for user in USERS:
                key = prompts_key(settings.redis_prefix, pseudonym(user))
                # Redis is written after the batch's Kafka sends and audit append: allow for it.
                for _ in range(100):
                    stored = await zset_members(client, key)
                    if len(stored) >= 2:
                        break
                    await asyncio.sleep(0.1)
                assert len(stored) == 2 and {orjson.loads(s)["product_id"] for s in stored} == {
                    "r-p0",
                    "r-p1",
                }
        finally:
            await client.aclose()
    finally:
        second.stop()
