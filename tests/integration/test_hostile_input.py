"""Hostile records through a real worker: none stops it, undoes a promise or grows its state unbounded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import windows_key
from streams.topics import (
    DEAD_LETTERS,
    LIKES,
    ORDER_PROMPTS,
    PROMPT_FEEDBACK,
    USER_CONSENT,
    USER_ERASURE,
    VIDEO_PRODUCTS,
)
from tests.integration.clock import NOW
from tests.integration.harness import (
    Consumed,
    Record,
    WorkerProcess,
    present,
    produce,
    read_topic,
    read_topic_until,
    wait_until,
)
from tests.integration.namespaces import private_settings, pseudonymizer_for

RUN = uuid.uuid4().hex[:6]
# The replica cap of this module's worker: ~20 maximum-size mappings.
MAPPINGS_MAX_BYTES = 1024 * 1024
MAX_LIKES_PER_USER = 200
YEAR_9999 = 253_402_300_799_000
HOUR = 3_600_000


@pytest.fixture(scope="module")
def hostile_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return replace(
        private_settings(base_settings, tmp_path_factory),
        mappings_max_bytes=MAPPINGS_MAX_BYTES,
        max_likes_per_user=MAX_LIKES_PER_USER,
    )


@pytest.fixture(scope="module")
def hostile_worker(
    hostile_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    asyncio.run(ensure_topics(hostile_settings))
    worker = WorkerProcess(hostile_settings, Path(tmp_path_factory.mktemp("hostile")) / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def product(pid: str, *, certified: bool = True, title: str = "t") -> dict[str, Any]:
    return {"product_id": pid, "title": title, "category": "dress", "price_cents": 1000,
            "certified": certified, "stock": 50}  # fmt: skip


def mapping(video: str, products: list[dict[str, Any]], creator: str = f"hc-{RUN}") -> Record:
    body = {"video_id": video, "creator_id": creator, "ts": NOW - 3_600_000, "products": products}
    return video.encode(), orjson.dumps(body), []


def like(user: str, video: str, ts: int = NOW, event_id: str | None = None) -> Record:
    body = {"event_id": event_id or uuid.uuid4().hex, "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body), []


async def publish(settings: Settings, worker: WorkerProcess, records: list[Record]) -> None:
    before = worker.metric_sum("likeflow_mapping_updates_total")
    await produce(settings, settings.topic(VIDEO_PRODUCTS), records)
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total") >= before + len(records),
        30,
        "the mappings",
        worker,
    )


def prompts_for(records: list[Consumed], users: set[str]) -> list[dict[str, Any]]:
    values = (orjson.loads(r.value) for r in records if r.value)
    return [p for p in values if p["user_id"] in users]


def changelog(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


async def test_likes_from_year_9999_switch_no_consent_back_on(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """The attack of the issue: likes stamped 9999-12-31 on a video with no mapping used to move
    every partition's retention clock, deleting the users who had turned prompts off."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    video = f"hv-{RUN}"
    await publish(settings, worker, [mapping(video, [product(f"{video}-p")])])
    refusing = [f"refuse-{RUN}-{i}" for i in range(20)]
    controls: list[Record] = [
        (
            u.encode(),
            orjson.dumps({"user_id": u, "prompts": False, "personalized": False, "ts": NOW - 60_000}),
            [],
        )
        for u in refusing
    ]
    await produce(settings, settings.topic(USER_CONSENT), controls)
    await wait_until(
        lambda: worker.metric_sum("likeflow_user_controls_total", control="consent") >= len(refusing),
        30,
        "the refusals",
        worker,
    )
    future_before = worker.metric_sum("likeflow_dead_letters_total", reason="future_ts")
    expired_before = worker.metric_sum("likeflow_users_expired_total")
    await produce(
        settings,
        settings.topic(LIKES),
        [like(f"time-traveller-{RUN}-{i}", "no-such-video", YEAR_9999) for i in range(40)],
    )
    await wait_until(
        lambda: worker.metric_sum("likeflow_dead_letters_total", reason="future_ts") >= future_before + 40,
        30,
        "the future likes to be dead-lettered",
        worker,
    )
    off_before = worker.metric_sum("likeflow_likes_skipped_total", reason="prompts_off")
    await produce(settings, settings.topic(LIKES), [like(u, video) for u in refusing])
    await wait_until(
        lambda: worker.metric_sum("likeflow_likes_skipped_total", reason="prompts_off") >= off_before + 20,
        30,
        "the refusing users' likes to be skipped",
        worker,
    )
    sent = await read_topic(settings, settings.topic(ORDER_PROMPTS))
    assert not prompts_for(sent, {pseudonym(u) for u in refusing}), "a user who turned prompts off got one"
    assert worker.metric_sum("likeflow_users_expired_total") == expired_before


async def test_a_like_just_under_the_broker_limit_is_dead_lettered_and_the_rest_flows(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """A 1 MB like used to make a dead letter larger than the broker's record limit, which
    crashed every worker that took the partition."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    pid = worker.proc.pid if worker.proc else None
    video = f"hv-big-{RUN}"
    await publish(settings, worker, [mapping(video, [product(f"{video}-p")])])
    giant_user = f"giant-{RUN}"
    giant = orjson.dumps(
        {"event_id": "big", "user_id": giant_user, "video_id": video, "ts": NOW, "pad": "x" * 1_040_000}
    )
    users = [f"after-giant-{RUN}-{i}" for i in range(50)]
    await produce(
        settings, settings.topic(LIKES), [(giant_user.encode(), giant, [])] + [like(u, video) for u in users]
    )
    expected = {pseudonym(u) for u in users}
    await read_topic_until(
        settings,
        settings.topic(ORDER_PROMPTS),
        lambda rs: {p["user_id"] for p in prompts_for(rs, expected)} == expected,
        60,
        "the 50 prompts after the giant like",
    )
    dead = await read_topic_until(
        settings,
        settings.topic(DEAD_LETTERS),
        lambda rs: any(r.key == pseudonym(giant_user).encode() for r in rs),
        30,
        "the giant like's dead letter",
    )
    (letter,) = [r for r in dead if r.key == pseudonym(giant_user).encode()]
    headers = dict(letter.headers)
    assert headers["likeflow.dlq.reason"] == b"oversized"
    assert int(headers["likeflow.dlq.value_size"]) > 1_040_000
    assert len(present(letter.value)) == settings.max_record_bytes
    assert worker.alive() and worker.proc is not None and worker.proc.pid == pid
    assert worker.metric_sum("likeflow_dead_letters_refused_total") == 0


async def test_a_heavy_user_is_rate_limited_before_the_state_grows(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """~7,000 likes with long ids in a day used to make one user's state record larger than the
    changelog's record limit; now the state stops at LIKEFLOW_MAX_LIKES_PER_USER likes."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    video = f"hv-quiet-{RUN}"
    await publish(settings, worker, [mapping(video, [product(f"{video}-p", certified=False)])])
    heavy = f"heavy-{RUN}"
    likes = [
        like(heavy, video, NOW - 3_600_000 + i * 1000, event_id=f"{i:06d}-" + "e" * 121) for i in range(300)
    ]
    limited_before = worker.metric_sum("likeflow_likes_skipped_total", reason="rate_limited")
    await produce(settings, settings.topic(LIKES), likes)
    await wait_until(
        lambda: (
            worker.metric_sum("likeflow_likes_skipped_total", reason="rate_limited") >= limited_before + 100
        ),
        60,
        "100 likes over the cap",
        worker,
    )
    key = pseudonym(heavy).encode()
    records = await read_topic_until(
        settings,
        changelog(settings, "user_state"),
        lambda rs: any(r.key == key and r.value and len(orjson.loads(r.value)["seen"]) == 200 for r in rs),
        30,
        "the heavy user's state with 200 likes",
    )
    states = [present(r.value) for r in records if r.key == key]
    assert max(len(orjson.loads(s)["seen"]) for s in states) == MAX_LIKES_PER_USER
    # Long event ids are remembered as 25-character digests: the state stays small.
    assert max(len(s) for s in states) < MAX_LIKES_PER_USER * 60 + 2_000
    assert worker.metric_sum("likeflow_likes_skipped_total", reason="rate_limited") == limited_before + 100


async def test_controls_for_unknown_users_create_no_state(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """A flood of consent and erasure records for invented ids used to create a state for each."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    defaults = [f"nobody-{RUN}-{i}" for i in range(200)]
    erased = [f"never-seen-{RUN}-{i}" for i in range(50)]
    before = worker.metric_sum("likeflow_user_controls_stateless_total")
    await produce(
        settings,
        settings.topic(USER_CONSENT),
        [(u.encode(), orjson.dumps({"user_id": u, "prompts": True, "personalized": True, "ts": NOW}), [])
         for u in defaults],
    )  # fmt: skip
    await produce(
        settings,
        settings.topic(USER_ERASURE),
        [(u.encode(), orjson.dumps({"user_id": u, "ts": NOW}), []) for u in erased],
    )
    await wait_until(
        lambda: worker.metric_sum("likeflow_user_controls_stateless_total") >= before + 250,
        30,
        "the controls",
        worker,
    )
    ledger = await read_topic_until(
        settings,
        changelog(settings, "erasure_ledger"),
        lambda rs: {pseudonym(u).encode() for u in erased} <= {r.key for r in rs},
        30,
        "the erasures in the ledger",
    )
    assert len([r for r in ledger if r.key in {pseudonym(u).encode() for u in erased}]) == 50
    states = await read_topic(settings, changelog(settings, "user_state"))
    invented = {pseudonym(u).encode() for u in defaults + erased}
    assert not [r for r in states if r.key in invented], "a state for an id never seen"


async def test_a_consent_after_an_erasure_does_not_bring_back_the_users_likes(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """A user erased while the job held nothing about them (or after retention deleted their
    state) has a ledger entry only; a consent record for them creates a state, which must still
    know the erasure, or a replayed like from before it would get a prompt again."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    video = f"hv-erased-{RUN}"
    await publish(settings, worker, [mapping(video, [product(f"{video}-p")])])
    user = f"erased-then-consent-{RUN}"
    await produce(
        settings,
        settings.topic(USER_ERASURE),
        [(user.encode(), orjson.dumps({"user_id": user, "ts": NOW - HOUR}), [])],
    )
    await read_topic_until(
        settings,
        changelog(settings, "erasure_ledger"),
        lambda rs: any(r.key == pseudonym(user).encode() for r in rs),
        30,
        "the erasure in the ledger",
    )
    refusal = {"user_id": user, "prompts": True, "personalized": False, "ts": NOW - HOUR // 2}
    await produce(settings, settings.topic(USER_CONSENT), [(user.encode(), orjson.dumps(refusal), [])])
    await read_topic_until(
        settings,
        changelog(settings, "user_state"),
        lambda rs: any(r.key == pseudonym(user).encode() for r in rs),
        30,
        "the state the consent created",
    )
    erased_before = worker.metric_sum("likeflow_likes_skipped_total", reason="erased")
    await produce(settings, settings.topic(LIKES), [like(user, video, NOW - 2 * HOUR)])
    await wait_until(
        lambda: worker.metric_sum("likeflow_likes_skipped_total", reason="erased") > erased_before,
        30,
        "the pre-erasure like to be skipped as erased",
        worker,
    )
    sent = await read_topic(settings, settings.topic(ORDER_PROMPTS))
    assert not prompts_for(sent, {pseudonym(user)})


async def test_forged_feedback_moves_no_counter_and_keeps_no_raw_user_id(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """Forged clicks for a creator no prompt was issued for used to move the platform averages;
    feedback dead letters kept the raw user id."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    creator = f"forged-{RUN}"
    raw_user = f"raw-user-{RUN}"

    def click(i: int, **over: Any) -> Record:
        body = {"event_id": f"fc-{RUN}-{i}", "prompt_id": f"{i:032x}", "creator_id": creator,
                "product_id": "p", "user_id": raw_user, "kind": "click", "ts": NOW, **over}  # fmt: skip
        return creator.encode(), orjson.dumps(body), []

    before = {
        reason: worker.metric_sum(
            "likeflow_dead_letters_total", topic=settings.topic(PROMPT_FEEDBACK), reason=reason
        )
        for reason in ("unknown_prompt", "invalid_value")
    }
    counted_before = worker.metric_sum("likeflow_creator_events_total", outcome="counted")
    forged = [click(i) for i in range(30)] + [click(99, kind="order", amount_cents=2**53)]
    await produce(settings, settings.topic(PROMPT_FEEDBACK), forged, as_sent=True)
    await wait_until(
        lambda: (
            worker.metric_sum(
                "likeflow_dead_letters_total", topic=settings.topic(PROMPT_FEEDBACK), reason="unknown_prompt"
            )
            >= before["unknown_prompt"] + 30
        ),
        30,
        "the forged clicks to be dead-lettered",
        worker,
    )
    await wait_until(
        lambda: (
            worker.metric_sum(
                "likeflow_dead_letters_total", topic=settings.topic(PROMPT_FEEDBACK), reason="invalid_value"
            )
            >= before["invalid_value"] + 1
        ),
        30,
        "the order of 2^53 cents to be dead-lettered",
        worker,
    )
    dead = await read_topic_until(
        settings,
        settings.topic(DEAD_LETTERS),
        lambda rs: len([r for r in rs if r.key == creator.encode()]) >= 31,
        30,
        "the feedback dead letters",
    )
    letters = [r for r in dead if r.key == creator.encode()]
    assert all(raw_user.encode() not in present(r.value) for r in letters), "a raw user id in a dead letter"
    assert all(orjson.loads(present(r.value))["user_id"] == pseudonym(raw_user) for r in letters)
    assert worker.metric_sum("likeflow_creator_events_total", outcome="counted") == counted_before
    client = aioredis.from_url(settings.redis_url)
    try:
        assert not await client.exists(windows_key(settings.redis_prefix, creator))
    finally:
        await client.aclose()


async def test_a_state_stamped_in_year_9999_is_repaired_when_the_worker_starts(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """A deployment hit before the fix holds users whose clock is in year 9999: every later like
    of theirs was `too_late`, also after a restart. The worker repairs such a state as it loads
    it (the migration path)."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    video = f"hv-repair-{RUN}"
    await publish(settings, worker, [mapping(video, [product(f"{video}-p")])])
    user = f"stuck-{RUN}"
    stuck = {"seen": {"old-like": YEAR_9999}, "sent": [], "affinity": {}, "high_ts": YEAR_9999,
             "consent": None, "erased_ts": 0}  # fmt: skip
    partition = (murmur2(user.encode()) & 0x7FFFFFFF) % settings.partitions
    worker.stop()
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all")
    await producer.start()
    try:
        # What an earlier version wrote: the user's state on its partition of the changelog.
        await producer.send_and_wait(
            changelog(settings, "user_state"),
            orjson.dumps(stuck),
            key=pseudonym(user).encode(),
            partition=partition,
        )
    finally:
        await producer.stop()
    worker.start()
    repairs_before = worker.metric_sum("likeflow_clock_repairs_total", what="user_state")
    await produce(settings, settings.topic(LIKES), [like(user, video)])
    await read_topic_until(
        settings,
        settings.topic(ORDER_PROMPTS),
        lambda rs: bool(prompts_for(rs, {pseudonym(user)})),
        30,
        "a prompt for the repaired user",
    )
    assert worker.metric_sum("likeflow_clock_repairs_total", what="user_state") > repairs_before
    assert worker.metric_sum("likeflow_likes_skipped_total", reason="too_late") == 0


async def test_the_mapping_replica_stops_at_its_cap(
    hostile_worker: WorkerProcess, hostile_settings: Settings
) -> None:
    """Every worker holds every mapping: a flood of maximum-size mappings used to fill the pod."""
    settings, worker = hostile_settings, hostile_worker
    pseudonym = pseudonymizer_for(settings)
    title = "长" * 250
    big = [
        mapping(f"flood-{RUN}-{i}", [product(f"fp{j}", title=title) for j in range(50)]) for i in range(40)
    ]
    size = min(len(present(value)) for _, value, _ in big)
    assert size > 40_000
    total_before = worker.metric_sum("likeflow_mapping_updates_total")
    refused_before = worker.metric_sum("likeflow_mapping_updates_total", outcome="refused")
    await produce(settings, settings.topic(VIDEO_PRODUCTS), big)
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total") >= total_before + 40,
        60,
        "the flood of mappings",
        worker,
    )
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total", outcome="refused") > refused_before,
        30,
        "the replica to refuse new videos",
        worker,
    )
    assert worker.metric_sum("likeflow_video_mappings_bytes") <= MAPPINGS_MAX_BYTES
    assert worker.metric_sum("likeflow_video_mappings_max_bytes") == MAPPINGS_MAX_BYTES
    # Videos held still join; those refused find no mapping, and nothing else breaks.
    likers = {f"flood-liker-{RUN}-{i}": f"flood-{RUN}-{i}" for i in range(40)}
    no_mapping_before = worker.metric_sum("likeflow_likes_skipped_total", reason="no_mapping")
    prompted_before = worker.metric_sum("likeflow_prompts_emitted_total")
    await produce(settings, settings.topic(LIKES), [like(u, v) for u, v in likers.items()])

    def decided() -> tuple[float, float]:
        return (
            worker.metric_sum("likeflow_prompts_emitted_total") - prompted_before,
            worker.metric_sum("likeflow_likes_skipped_total", reason="no_mapping") - no_mapping_before,
        )

    await wait_until(lambda: sum(decided()) >= 40, 30, "the 40 likes of the flooded videos", worker)
    held, refused = decided()
    assert held >= 1 and refused >= 1
    assert held * size <= MAPPINGS_MAX_BYTES
    mine = {pseudonym(u) for u in likers}
    await read_topic_until(
        settings,
        settings.topic(ORDER_PROMPTS),
        lambda rs: len(prompts_for(rs, mine)) == held,
        30,
        "a prompt for each like of a held video",
    )
    assert worker.alive()
