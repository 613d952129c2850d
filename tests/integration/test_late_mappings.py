"""The join that waits and remembers, live: mappings seconds after their likes, kill -9 while likes
wait, a mapping removed and re-added, and likes joining the version valid at their ts."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings, load_settings
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.factories import mapping_json
from tests.integration.harness import Record, WorkerProcess, produce, read_topic, wait_until
from tests.integration.namespaces import pseudonymizer_for

pytestmark = pytest.mark.integration

MINUTE = 60_000


def like(user: str, video: str, ts: int) -> Record:
    body = {"event_id": f"{user}-{video}-{ts}", "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body), []


def mapping(video: str, ts: int, *products: str) -> Record:
    items = [
        {"product_id": p, "title": "碎花连衣裙", "category": "dress", "price_cents": 12900, "certified": True,
         "stock": 5}
        for p in products
    ]  # fmt: skip
    return video.encode(), mapping_json(video, ts=ts, products=items), []


async def prompts_of(settings: Settings, users: list[str]) -> dict[str, list[str]]:
    """user -> the product of every prompt on `order-prompts` for them (re-sends included)."""
    pseudonym = pseudonymizer_for(settings)
    keys = {pseudonym(u).encode(): u for u in users}
    out: dict[str, list[str]] = {u: [] for u in users}
    for r in await read_topic(settings, settings.topic(ORDER_PROMPTS)):
        if r.key in keys:
            out[keys[r.key]].append(orjson.loads(r.value or b"")["product_id"])
    return out


def waits(worker: WorkerProcess, outcome: str) -> float:
    return worker.metric_sum("likeflow_mapping_waits_total", outcome=outcome)


async def test_likes_before_their_mapping_get_their_prompts_when_it_comes(
    private: Settings, tmp_path: Path
) -> None:
    settings = load_settings(private.to_env(), mapping_grace_s=10.0)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        now = int(time.time() * 1000)
        users = [f"late-u{i}" for i in range(20)]
        await produce(settings, settings.topic(LIKES), [like(u, "late-v1", now) for u in users])
        await wait_until(lambda: waits(worker, "waiting") >= 20, 30, "the likes to wait", worker)
        await asyncio.sleep(3)  # the mapping comes 3 s after its likes
        posted = time.monotonic()
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [mapping("late-v1", now, "p-late")])
        await wait_until(lambda: waits(worker, "joined") >= 20, 30, "the likes to join", worker)
        joined_after_s = time.monotonic() - posted
        found = await prompts_of(settings, users)
        assert found == {u: ["p-late"] for u in users}
        assert waits(worker, "expired") == 0
        # Their entries are deleted once the prompts are out (the next delivery of the partition).
        await wait_until(
            lambda: worker.metric_sum("likeflow_likes_waiting") == 0, 10, "the entries to go", worker
        )
        # A like of a video whose mapping never comes is skipped once the grace is over.
        await produce(settings, settings.topic(LIKES), [like("late-lone", "late-never", now)])
        await wait_until(lambda: waits(worker, "expired") >= 1, 30, "the grace to run out", worker)
        assert worker.metric_sum("likeflow_likes_skipped_total", reason="no_mapping") == 1
        print(f"\n20 likes decided {joined_after_s:.2f} s after their mapping was produced")
    finally:
        worker.stop()


@pytest.mark.parametrize("store", ["memory://", "rocksdict://"])
async def test_likes_waiting_survive_kill_9_and_are_decided_once(
    private: Settings, tmp_path: Path, store: str
) -> None:
    """The likes' offsets are committed while they wait: only the changelogged table has them."""
    settings = load_settings(private.to_env(), mapping_grace_s=120.0, store=store)
    await ensure_topics(settings)
    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    now = int(time.time() * 1000)
    users = [f"kill-u{i}" for i in range(40)]
    try:
        await produce(settings, settings.topic(LIKES), [like(u, "kill-v1", now) for u in users])
        await wait_until(lambda: waits(first, "waiting") >= 40, 30, "the likes to wait", first)
        await asyncio.sleep(5)  # their offsets are committed (Faust commits every 2.8 s)
    finally:
        first.stop(signal.SIGKILL)
    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [mapping("kill-v1", now, "p-kill")])
        await wait_until(lambda: waits(second, "joined") >= 40, 60, "the restored likes to join", second)
        assert second.metric_sum("likeflow_records_consumed_total", topic=settings.topic(LIKES)) == 0, (
            "nothing was redelivered: the likes came back from the table"
        )
        found = await prompts_of(settings, users)
        assert found == {u: ["p-kill"] for u in users}
    finally:
        second.stop()


async def test_a_like_joins_the_mapping_valid_at_its_ts(private: Settings, tmp_path: Path) -> None:
    """Versions, a removal and a re-add, and a tombstone: each like decides as a replay would."""
    settings = load_settings(private.to_env(), mapping_grace_s=10.0)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        t0 = int(time.time() * 1000) - 60 * MINUTE
        await produce(
            settings,
            settings.topic(VIDEO_PRODUCTS),
            [
                mapping("ver-v1", t0, "p-first"),
                mapping("ver-v1", t0 + 20 * MINUTE, "p-second"),
                mapping("ver-v1", t0 + 30 * MINUTE),  # removed
                mapping("ver-v1", t0 + 40 * MINUTE, "p-back"),  # re-added
            ],
        )
        await wait_until(
            lambda: worker.metric_sum("likeflow_mapping_updates_total") >= 4, 30, "the versions", worker
        )
        at = {"ver-a": 10, "ver-b": 25, "ver-c": 35, "ver-d": 45}  # minutes after t0
        await produce(
            settings, settings.topic(LIKES), [like(u, "ver-v1", t0 + m * MINUTE) for u, m in at.items()]
        )
        decided: Any = lambda: (  # noqa: E731
            worker.metric_sum("likeflow_prompts_emitted_total")
            + worker.metric_sum("likeflow_likes_skipped_total", reason="no_mapping")
        )
        await wait_until(lambda: decided() >= 4, 30, "the likes", worker)
        found = await prompts_of(settings, list(at))
        assert found == {"ver-a": ["p-first"], "ver-b": ["p-second"], "ver-c": [], "ver-d": ["p-back"]}
        # A tombstone forgets the video; a like of it then waits, and a new mapping serves it.
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [(b"ver-v1", None, [])])
        await asyncio.sleep(1)
        await produce(settings, settings.topic(LIKES), [like("ver-e", "ver-v1", t0 + 50 * MINUTE)])
        await wait_until(lambda: waits(worker, "waiting") >= 1, 30, "the like to wait", worker)
        await produce(
            settings, settings.topic(VIDEO_PRODUCTS), [mapping("ver-v1", t0 + 55 * MINUTE, "p-new")]
        )
        await wait_until(lambda: waits(worker, "joined") >= 1, 30, "the like to join", worker)
        assert (await prompts_of(settings, ["ver-e"])) == {"ver-e": ["p-new"]}
    finally:
        worker.stop()
