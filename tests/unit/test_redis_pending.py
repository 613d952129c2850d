"""While Redis is down, sinks hold writes (bounded), keep the agent going, and pause above the bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from likeflow.domain.user_state import UserState
from likeflow.metrics import Metrics
from likeflow.sinks import redis_prompts, redis_quality
from likeflow.sinks.redis_prompts import RedisPromptStore, ServedPrompt
from likeflow.sinks.redis_quality import RedisQualityStore, WindowsUpdate
from tests.factories import BASE_TS, like, mapping
from tests.unit.test_privacy import emitted, run


class FlakyRedis:
    """Just enough of redis.asyncio.Redis: scripts run in a pipeline that fails while down."""

    def __init__(self) -> None:
        self.up = False
        self.calls: list[tuple[list[str], list[Any]]] = []

    def register_script(self, source: str) -> Any:
        async def script(keys: list[str], args: list[Any], client: Any) -> None:
            client.queued.append((keys, args))

        return script

    def pipeline(self, transaction: bool = False) -> Any:
        return Pipeline(self)


class Pipeline:
    def __init__(self, redis: FlakyRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[list[str], list[Any]]] = []

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self) -> list[int]:
        if not self.redis.up:
            raise RedisConnectionError("down")
        self.redis.calls.extend(self.queued)
        return [1] * len(self.queued)


@pytest.fixture(autouse=True)
def no_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_prompts, "RETRY_DELAYS_S", (0.0,))
    monkeypatch.setattr(redis_quality, "PAUSED_RETRY_S", 0.0)


def prompt(n: int) -> Any:
    return ServedPrompt.of(
        emitted(run(UserState(), like(f"e{n}", user_id=f"u{n}", ts=BASE_TS + n), mapping()))
    )


async def test_prompts_are_held_while_redis_is_down_and_written_when_it_returns() -> None:
    redis = FlakyRedis()
    store = RedisPromptStore(redis, prefix="t", keep=10, ttl_s=60, metrics=Metrics(), max_pending=5)  # type: ignore[arg-type]
    assert not await store.write([prompt(1), prompt(2)])
    store.discard_pending(prompt(2).user_id)  # erased meanwhile: never written
    redis.up = True
    assert await store.write([prompt(3)])
    written = [key for keys, _ in redis.calls for key in keys[::2]]  # (prompts, erasure marker) pairs
    assert written == ["t:v2:prompts:{u1}", "t:v2:prompts:{u3}"]


async def test_above_the_bound_the_agent_pauses_until_redis_answers() -> None:
    redis = FlakyRedis()
    store = RedisPromptStore(redis, prefix="t", keep=10, ttl_s=60, metrics=Metrics(), max_pending=1)  # type: ignore[arg-type]
    writing = asyncio.create_task(store.write([prompt(1), prompt(2)]))
    await asyncio.sleep(0.05)
    assert not writing.done(), "paused: the batch is not acknowledged"
    redis.up = True
    assert await asyncio.wait_for(writing, 5)
    assert sum(len(keys) // 2 for keys, _ in redis.calls) == 2


async def test_quality_writes_are_merged_per_key_while_held() -> None:
    redis = FlakyRedis()
    store = RedisQualityStore(redis, prefix="t", metrics=Metrics(), max_pending=10)  # type: ignore[arg-type]
    await store.write([("t:v2:platform", 5, {"n": 5}), ("t:v2:platform", 7, {"n": 7})])
    await store.write_windows([WindowsUpdate("c1", 3, {0: {"prompts": 1}}, set())], 3_600_000)
    await store.write_windows([WindowsUpdate("c1", 4, {3_600_000: {"prompts": 2}}, {0})], 3_600_000)
    redis.up = True
    assert await store.write([("t:v2:platform", 6, {"n": 6})]) == 2
    (doc_keys, doc_args), (win_keys, win_args) = redis.calls
    assert doc_keys == ["t:v2:platform"] and doc_args[0] == 7, "the newest version held"
    assert win_keys == ["t:v2:creator:{c1}:windows"]
    assert win_args[:3] == [4, 1, "w:3600000"] and win_args[-1] == "w:0"


class SlowRedis(FlakyRedis):
    """Up, but each pipeline waits for `release` before it answers (a flush in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.release = asyncio.Event()

    def pipeline(self, transaction: bool = False) -> Any:
        redis = self

        class Slow(Pipeline):
            async def execute(self) -> list[int]:
                await redis.release.wait()
                return await super().execute()

        return Slow(self)


async def test_windows_queued_while_a_flush_is_in_flight_are_written_by_the_next() -> None:
    redis = SlowRedis()
    store = RedisQualityStore(redis, prefix="t", metrics=Metrics())  # type: ignore[arg-type]
    store.hold_windows([WindowsUpdate("c1", 3, {0: {"prompts": 1}}, set())], 3_600_000)
    first = asyncio.create_task(store.flush())
    await asyncio.sleep(0)  # the first flush has taken what was held and waits for Redis
    store.hold_windows([WindowsUpdate("c1", 4, {3_600_000: {"prompts": 2}}, set())], 3_600_000)
    second = asyncio.create_task(store.flush())
    redis.release.set()
    assert (await first, await second) == (1, 1)
    versions = [args[:3] for _, args in redis.calls]
    assert versions == [[3, 1, "w:0"], [4, 1, "w:3600000"]], "each update written once, in order"
