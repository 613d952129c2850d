"""Year-9999 clocks an earlier version left in the counters are repaired; creators that stop appearing expire.

On the real Kafka and Redis, with a worker subprocess: the counters' stored clocks, window rows
and count records written by a version that let a like stamped in year 9999 through no longer
make every later prompt and feedback of its sources late; and a creator without a window for
LIKEFLOW_CREATOR_RETENTION_DAYS is forgotten in the `creator_standing` table, on
`creator-quality` and in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config import Settings, load_settings
from likeflow.connections import kafka_client_kwargs, topic_partitions
from likeflow.domain.quality.counting import PartitionClock, Seen, SourceClock, WindowRow
from likeflow.domain.quality.windows import Counts
from likeflow.engine import KeyPartitioner
from likeflow.metrics import Metrics
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import standing_key, window_field, windows_key
from likeflow.sinks.redis_quality import RedisQualityStore
from streams.events import CountRecord, CreatorEvent, source_name
from streams.topics import (
    CREATOR_EVENTS,
    CREATOR_QUALITY,
    DEAD_LETTERS,
    LIKES,
    PROMPT_FEEDBACK,
    VIDEO_PRODUCTS,
)
from tables.codecs import CreatorCountsCodec
from tests.integration.harness import Record, WorkerProcess, produce, read_topic_until, wait_until
from tests.integration.test_quality import get_json

H = 3_600_000
M = 60_000
YEAR_9999 = 253_402_297_200_000  # an hour boundary in year 9999: what a hostile like carried
CODEC = CreatorCountsCodec()


def mapping(creator: str, ts: int) -> Record:
    video = f"{creator}-v"
    product = {"product_id": f"{creator}-p", "title": "t", "category": "dress", "price_cents": 900,
               "certified": True, "stock": 500}  # fmt: skip
    body = {"video_id": video, "creator_id": creator, "ts": ts, "products": [product]}
    return video.encode(), orjson.dumps(body), []


def like(user: str, creator: str, ts: int) -> Record:
    body = {"event_id": f"{user}-like", "user_id": user, "video_id": f"{creator}-v", "ts": ts}
    return user.encode(), orjson.dumps(body), []


def feedback(event_id: str, user: str, creator: str, kind: str, ts: int) -> Record:
    body: dict[str, Any] = {"event_id": event_id, "prompt_id": f"pr-{event_id}", "creator_id": creator,
                            "product_id": f"{creator}-p", "user_id": user, "kind": kind,
                            "ts": ts}  # fmt: skip
    if kind == "order":
        body["amount_cents"] = 1000
    return creator.encode(), orjson.dumps(body), []


def changelog(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


async def latest_by_key(settings: Settings, topic: str) -> dict[bytes, list[bytes | None]]:
    """Every value of each key of `topic` (all its partitions, up to the end offsets), in order."""
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    out: dict[bytes, list[bytes | None]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 20
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if r.key is not None:
                        out.setdefault(r.key, []).append(r.value)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
async def redis(private: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(private.redis_url)
    yield client
    await client.aclose()


async def test_year_9999_clocks_of_an_earlier_version_are_repaired_and_later_records_count(
    private: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    """What a deployment hit by the bug holds: every counting partition's stored clock in year
    9999 (all sources there, windows "closed" there), a window row and a dedupe entry there, its
    served window in Redis, and count records on `creator-events` carrying year-9999 clocks (and
    the hostile like's prompt). Before the fix every later prompt and click of those sources was
    late, also after a restart; now the worker repairs all of it on start and counts them."""
    settings = private
    await ensure_topics(settings)
    now = int(time.time() * 1000)
    creator = f"fc-{uuid.uuid4().hex[:6]}"
    partition_of = KeyPartitioner(settings.partitions)
    home = partition_of(creator.encode())  # the creator's counting (and feedback) partition
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()  # creates the table changelogs
    await produce(settings, settings.topic(VIDEO_PRODUCTS), [mapping(creator, now - H)])
    await wait_until(lambda: (worker.health() or {}).get("video_mappings", 0) >= 1, 30, "the mapping", worker)
    worker.stop()

    sources = [source_name(t, p) for t in (LIKES, PROMPT_FEEDBACK) for p in range(settings.partitions)]
    hostile = CreatorEvent("hostile-like", "pr-hostile", creator, f"{creator}-p", "v1.x", "prompt", YEAR_9999)
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all")
    await producer.start()
    try:
        for k in range(settings.partitions):
            stuck = PartitionClock(-1, {s: SourceClock(YEAR_9999) for s in sources}, YEAR_9999)
            state: list[tuple[str, Any]] = [(f"p|{k}", stuck)]
            if k == home:
                state += [
                    (f"w|{creator}|{YEAR_9999}", WindowRow(creator, YEAR_9999, Counts(prompts=1), 0, 0)),
                    ("s|hostile-click", Seen(0, 1, YEAR_9999, source_name(PROMPT_FEEDBACK, home))),
                ]
            for key, value in state:
                await producer.send_and_wait(
                    changelog(settings, "creator_counts"), CODEC.encode(value), key=key.encode(), partition=k
                )
            for source in sources:
                poisoned = CountRecord(source, YEAR_9999, [], [])
                if k == home and source == source_name(LIKES, 0):
                    poisoned = CountRecord(source, YEAR_9999, [hostile], [YEAR_9999])
                await producer.send_and_wait(
                    settings.topic(CREATOR_EVENTS), poisoned.to_json(), key=source.encode(), partition=k
                )
    finally:
        await producer.stop()
    # The year-9999 window the earlier version served.
    junk_field = window_field(YEAR_9999)
    await redis.hset(
        windows_key(settings.redis_prefix, creator),
        mapping={"version": -1, junk_field: orjson.dumps({"start_ms": YEAR_9999, "end_ms": YEAR_9999 + H})},
    )

    worker.start()
    try:
        users = [f"fc-u{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
        ts = now - 10 * M
        await produce(
            settings, settings.topic(LIKES), [like(u, creator, ts + i) for i, u in enumerate(users)]
        )
        await produce(
            settings,
            settings.topic(PROMPT_FEEDBACK),
            [feedback(f"fc-click-{u}", u, creator, "click", ts + M) for u in users],
        )

        def counted(kind: str) -> float:
            return worker.metric_sum("likeflow_creator_events_total", kind=kind, outcome="counted")

        with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
            await wait_until(
                lambda: counted("prompt") >= len(users) and counted("click") >= len(users),
                60,
                "the prompts and clicks to be counted",
                worker,
            )
        assert worker.metric_sum("likeflow_late_records_total") == 0, "nothing is late"
        assert (counted("prompt"), counted("click")) == (len(users), len(users))
        assert worker.metric_sum("likeflow_clock_repairs_total", what="counter_clock") >= settings.partitions
        assert worker.metric_sum("likeflow_clock_repairs_total", what="count_record") >= len(sources)
        assert worker.metric_sum("likeflow_creator_events_total", outcome="future_ts") == 1
        start = ts - ts % H
        n = len(users)
        expected = [
            {"start_ms": start, "end_ms": start + H, **Counts(likes=n, prompts=n, clicks=n).to_dict()}
        ]
        await wait_until(
            lambda: get_json(worker, f"/creators/{creator}/quality")[1].get("windows") == expected,
            30,
            "the served windows without the year-9999 one",
            worker,
        )
        assert not await redis.hexists(windows_key(settings.redis_prefix, creator), junk_field)
        dead = await read_topic_until(
            settings,
            settings.topic(DEAD_LETTERS),
            lambda rs: any(b"hostile-like" in (r.value or b"") for r in rs),
            30,
            "the hostile prompt's dead letter",
        )
        letter = next(r for r in dead if b"hostile-like" in (r.value or b""))
        assert dict(letter.headers)["likeflow.dlq.reason"] == b"future_ts"
        # The repaired clocks reached the changelog: a restart finds no year 9999 there.
        clocks = await latest_by_key(settings, changelog(settings, "creator_counts"))
        for k in range(settings.partitions):
            value = clocks[f"p|{k}".encode()][-1]
            assert value is not None
            stored = CODEC.decode(value)
            assert isinstance(stored, PartitionClock)
            assert max(s.clock for s in stored.sources.values()) < YEAR_9999
            assert stored.closed_until < YEAR_9999
        assert clocks[f"w|{creator}|{YEAR_9999}".encode()][-1] is None, "the junk row's tombstone"
    finally:
        worker.stop()


async def test_a_creator_without_a_window_for_the_retention_is_forgotten(
    private: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    """LIKEFLOW_CREATOR_RETENTION_DAYS=1: one creator's windows two days ago, then another
    creator's windows now. The first is forgotten: its `creator_standing` row (a tombstone on
    the changelog), its verdict on `creator-quality` (a tombstone) and its Redis documents.

    The table also holds a row an earlier version wrote with a window in year 9999 (and a
    judgment there): it is repaired when the judge loads the table, and neither the judge's
    clock nor the platform uses that window (with it, the clock would be in year 9999 and
    every creator would be forgotten)."""
    settings = load_settings(
        private.to_env(),
        creator_retention_days=1,
        quality_horizon_hours=24,  # the retention must cover the horizon
        quality_grace_minutes=0,
        demotion_min_orders=1,
    )
    await ensure_topics(settings)
    now = int(time.time() * 1000)
    tag = uuid.uuid4().hex[:6]
    old, new, tick, junk = f"ex-old-{tag}", f"ex-new-{tag}", f"ex-tick-{tag}", f"ex-junk-{tag}"
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()  # creates the table changelogs
    worker.stop()
    # The junk row's real window is older than the old creator's: it is forgotten with it.
    older = (now - 60 * H) - (now - 60 * H) % H
    counts = {"prompts": 0, "clicks": 1, "orders": 0, "returns": 0, "complaints": 0, "gmv_cents": 0}
    junk_row = {
        "windows": {
            str(older): {**counts, "end_ms": older + H, "revision": 1},
            str(YEAR_9999): {**counts, "end_ms": YEAR_9999 + H, "revision": 1},
        },
        "standing": {"demoted": False, "bad_streak": 0, "good_streak": 0, "score": 1.0, "weight": 1.0,
                     "last_window": YEAR_9999 + H, "reasons": []},
        "last_offset": 0,
    }  # fmt: skip
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            changelog(settings, "creator_standing"),
            orjson.dumps(junk_row),
            key=orjson.dumps(junk),
            partition=0,
        )
    finally:
        await producer.stop()
    worker.start()
    try:
        await produce(
            settings, settings.topic(VIDEO_PRODUCTS), [mapping(c, now - 72 * H) for c in (old, new, tick)]
        )
        verdicts = settings.topic(CREATOR_QUALITY)

        async def judged(creator: str) -> None:
            await read_topic_until(
                settings,
                verdicts,
                lambda rs: any(r.key == creator.encode() and r.value for r in rs),
                60,
                f"a verdict for {creator}",
            )

        # Two days ago: an order for `old`, and a click of another creator an hour after its
        # window, which moves every counting partition's clock past it (once the inputs are idle).
        await produce(
            settings,
            settings.topic(PROMPT_FEEDBACK),
            [
                feedback(f"{old}-o", "u1", old, "order", now - 50 * H),
                feedback(f"{tick}-c1", "u2", tick, "click", now - 48 * H),
            ],
        )
        await judged(old)
        deadline = time.monotonic() + 30  # Redis is written after the batch's verdicts are sent
        while not await redis.exists(standing_key(settings.redis_prefix, old)):
            assert time.monotonic() < deadline, "the old creator's standing never reached Redis"
            await asyncio.sleep(0.2)
        assert get_json(worker, f"/creators/{old}/quality")[0] == 200
        # Now: `new`'s window closes and moves the judge's clock two days on.
        await produce(
            settings,
            settings.topic(PROMPT_FEEDBACK),
            [
                feedback(f"{new}-o", "u3", new, "order", now - 3 * H),
                feedback(f"{tick}-c2", "u4", tick, "click", now - H),
            ],
        )
        await judged(new)
        await wait_until(
            lambda: worker.metric_sum("likeflow_creators_expired_total") >= 1, 30, "the expiry", worker
        )
        prefix = settings.redis_prefix
        await wait_until(
            lambda: get_json(worker, f"/creators/{old}/quality")[0] == 404,
            30,
            "the old creator's 404",
            worker,
        )
        assert not await redis.exists(windows_key(prefix, old), standing_key(prefix, old))
        assert await redis.exists(windows_key(prefix, new)) and await redis.exists(standing_key(prefix, new))
        quality = await latest_by_key(settings, verdicts)
        assert quality[old.encode()][0] is not None and quality[old.encode()][-1] is None, (
            "verdict, then tombstone"
        )
        assert quality[new.encode()][-1] is not None
        # The table's changelog keys are JSON strings (tables.declare_tables).
        standing = await latest_by_key(settings, changelog(settings, "creator_standing"))
        assert standing[orjson.dumps(old)][0] is not None, "the row"
        assert standing[orjson.dumps(old)][-1] is None, "then its tombstone"
        assert standing[orjson.dumps(new)][-1] is not None
        assert worker.metric_sum("likeflow_clock_repairs_total", what="creator_standing") == 1
        seeded, written, forgotten = standing[orjson.dumps(junk)]
        assert seeded is not None
        repaired = orjson.loads(written or b"null")
        assert list(repaired["windows"]) == [str(older)], "the repair, written back"
        assert repaired["standing"]["last_window"] == older + H
        assert forgotten is None, "then forgotten with the old creator"
    finally:
        worker.stop()


async def test_forgetting_in_redis_keeps_a_windows_hash_the_counters_wrote_since(
    private: Settings, redis: aioredis.Redis
) -> None:
    """The expiry's Redis script on a real Redis: the standing goes; the windows hash goes unless
    it holds a window at or after the cutoff (the creator came back meanwhile)."""
    store = RedisQualityStore(redis, prefix=private.redis_prefix, metrics=Metrics())
    cutoff = 1_795_000_000_000
    for creator, start in (("gone", cutoff - 5 * H), ("back", cutoff + H)):
        await redis.hset(
            windows_key(store.prefix, creator), mapping={"version": 3, window_field(start): b"{}"}
        )
        await redis.hset(standing_key(store.prefix, creator), mapping={"version": 3, "doc": b"{}"})
    assert await store.forget_creators(["gone", "back"], cutoff) == 1
    assert not await redis.exists(windows_key(store.prefix, "gone"), standing_key(store.prefix, "gone"))
    assert not await redis.exists(standing_key(store.prefix, "back"))
    assert await redis.hexists(windows_key(store.prefix, "back"), window_field(cutoff + H))
