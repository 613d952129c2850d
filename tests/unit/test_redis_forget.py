"""Forgetting expired creators in Redis: after the writes made before, held while Redis is down."""

from __future__ import annotations

import pytest

from likeflow.metrics import Metrics
from likeflow.sinks import redis_quality
from likeflow.sinks.redis_quality import RedisQualityStore, WindowsUpdate
from tests.unit.test_redis_pending import FlakyRedis

H = 3_600_000
CUTOFF = 1_795_000_000_000


@pytest.fixture(autouse=True)
def no_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_quality, "PAUSED_RETRY_S", 0.0)


def store_of(redis: FlakyRedis) -> RedisQualityStore:
    return RedisQualityStore(redis, prefix="t", metrics=Metrics(), max_pending=10)  # type: ignore[arg-type]


async def test_a_forgotten_creator_loses_its_standing_and_windows_hash_in_one_call() -> None:
    redis = FlakyRedis()
    redis.up = True
    store = store_of(redis)
    assert await store.forget_creators(["c1"], CUTOFF) == 1
    assert redis.calls == [(["t:v2:creator:{c1}:windows", "t:v2:creator:{c1}:standing"], [CUTOFF])]


async def test_a_forget_held_while_redis_is_down_goes_after_the_writes_held_before_it() -> None:
    redis = FlakyRedis()
    store = store_of(redis)
    await store.write([("t:v2:creator:{c1}:standing", 5, {"weight": 0.4})])
    store.hold_windows([WindowsUpdate("c1", 9, {CUTOFF - 2 * H: {"prompts": 1}}, set())], H)
    await store.forget_creators(["c1", "c2"], CUTOFF)
    redis.up = True
    assert await store.flush() == 4
    keys = [keys for keys, _ in redis.calls]
    assert keys == [
        ["t:v2:creator:{c1}:standing"],
        ["t:v2:creator:{c1}:windows"],
        ["t:v2:creator:{c1}:windows", "t:v2:creator:{c1}:standing"],
        ["t:v2:creator:{c2}:windows", "t:v2:creator:{c2}:standing"],
    ], "documents, then windows, then the forgets"


async def test_a_creator_judged_again_after_it_was_forgotten_keeps_its_new_standing() -> None:
    redis = FlakyRedis()
    store = store_of(redis)
    await store.forget_creators(["c1", "c2"], CUTOFF)
    await store.write([("t:v2:creator:{c1}:standing", 12, {"weight": 1.0})])  # c1 came back
    redis.up = True
    await store.flush()
    assert [keys for keys, _ in redis.calls] == [
        ["t:v2:creator:{c1}:standing"],
        ["t:v2:creator:{c2}:windows", "t:v2:creator:{c2}:standing"],
    ]
