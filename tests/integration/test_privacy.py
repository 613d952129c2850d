"""Privacy on the real stack: pseudonyms everywhere, consent, erasure within a bound, retention."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.domain.privacy import DAY_MS
from likeflow.domain.pseudonym import PSEUDONYMISED_HEADER, Pseudonymizer
from likeflow.ops.replay import replay_files
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import prompts_key
from streams.topics import (
    CREATOR_EVENTS,
    DEAD_LETTERS,
    LIKES,
    ORDER_PROMPTS,
    PROMPT_FEEDBACK,
    USER_CONSENT,
    USER_ERASURE,
    VIDEO_PRODUCTS,
)
from tables import USER_STATE_CHANGELOG_CONFIGS
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
    zset_members,
)
from tests.integration.namespaces import private_settings, pseudonymizer_for

RUN = uuid.uuid4().hex[:6]
VIDEO = f"pv-{RUN}"


def raw_user(name: str) -> str:
    """A raw user id distinctive enough to be searched for in every store afterwards."""
    return f"rawuser-{RUN}-{name}"


def like(user: str, ts: int, video: str = VIDEO) -> Record:
    # Event ids are opaque (docs/events.md): they must not embed the user id.
    body = {"event_id": uuid.uuid4().hex, "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body), []


def control(user: str, **fields: Any) -> Record:
    return user.encode(), orjson.dumps({"user_id": user, **fields}), []


def changelog(settings: Settings) -> str:
    return f"{settings.app_id}-user_state-changelog"


def latest_state(records: list[Consumed], user: str) -> tuple[bool, dict[str, Any] | None]:
    """(seen, latest value) of `user`'s key on the changelog (raw UTF-8 keys); a tombstone reads
    as None."""
    key = user.encode()
    found, value = False, None
    for record in records:
        if record.key == key:
            found, value = True, (orjson.loads(record.value) if record.value else None)
    return found, value


async def publish_video(
    settings: Settings, worker: WorkerProcess, video: str = VIDEO, certified: bool = True
) -> None:
    """A mapping; with `certified=False` nothing is eligible: likes update state, emit nothing."""
    before = worker.metric_sum("likeflow_mapping_updates_total")
    products = [
        {"product_id": f"{video}-bag", "title": "bag", "category": "bag", "price_cents": 5000,
         "certified": certified, "stock": 50},
        {"product_id": f"{video}-dress", "title": "dress", "category": "dress", "price_cents": 7000,
         "certified": certified, "stock": 50},
    ]  # fmt: skip
    body = {"video_id": video, "creator_id": f"pc-{RUN}", "ts": NOW - 60 * DAY_MS, "products": products}
    await produce(settings, settings.topic(VIDEO_PRODUCTS), [(video.encode(), orjson.dumps(body), [])])
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total") > before, 30, "the mapping", worker
    )


async def prompts_of(settings: Settings, users: set[str], count: int) -> list[dict[str, Any]]:
    def mine(records: list[Consumed]) -> list[dict[str, Any]]:
        values = (orjson.loads(r.value) for r in records if r.value)
        return [p for p in values if p["user_id"] in users]

    records = await read_topic_until(
        settings, settings.topic(ORDER_PROMPTS), lambda rs: len(mine(rs)) >= count, 60, f"{count} prompts"
    )
    return mine(records)


async def test_consent_erasure_and_no_raw_id_anywhere(
    worker: WorkerProcess, settings: Settings, redis_client: aioredis.Redis, pseudonym: Pseudonymizer
) -> None:
    await publish_video(settings, worker)
    plain, silent, neutral, erased = (raw_user(n) for n in ("plain", "silent", "neutral", "erased"))
    await produce(
        settings,
        settings.topic(USER_CONSENT),
        [
            control(silent, prompts=False, personalized=True, ts=NOW - 10_000),
            control(neutral, prompts=True, personalized=False, ts=NOW - 10_000),
        ],
    )
    await wait_until(
        lambda: worker.metric_sum("likeflow_user_controls_total", control="consent") >= 2,
        30,
        "consent",
        worker,
    )
    off_before = worker.metric_sum("likeflow_likes_skipped_total", reason="prompts_off")
    await produce(
        settings, settings.topic(LIKES), [like(u, NOW - 5_000) for u in (plain, silent, neutral, erased)]
    )
    expected = {pseudonym(plain), pseudonym(neutral), pseudonym(erased)}
    prompts = await prompts_of(settings, expected | {pseudonym(silent)}, 3)
    assert {p["user_id"] for p in prompts} == expected, "the user who turned prompts off got none"
    await wait_until(
        lambda: worker.metric_sum("likeflow_likes_skipped_total", reason="prompts_off") > off_before,
        30,
        "the prompts_off skip",
        worker,
    )

    # Erasure: state and serving gone within the bound, measured from the request.
    erased_key = prompts_key(settings.redis_prefix, pseudonym(erased))
    deadline = time.monotonic() + 30
    while not await redis_client.exists(erased_key):  # written just after the Kafka send
        assert time.monotonic() < deadline, "the prompt never reached Redis"
        await asyncio.sleep(0.1)
    requested = time.monotonic()
    await produce(settings, settings.topic(USER_ERASURE), [control(erased, ts=NOW - 1_000)])
    while await redis_client.exists(erased_key):
        assert time.monotonic() - requested < 30, "erasure not applied to Redis within 30 s"
        await asyncio.sleep(0.1)
    records = await read_topic_until(
        settings,
        changelog(settings),
        lambda rs: (latest_state(rs, pseudonym(erased))[1] or {}).get("erased_ts") == NOW - 1_000,
        30,
        "the erased state on the changelog",
    )
    print(f"erasure applied to Redis and the changelog in {time.monotonic() - requested:.2f} s")
    state = latest_state(records, pseudonym(erased))[1]
    assert state is not None and state["seen"] == {} and state["sent"] == [] and state["affinity"] == {}
    # A like from before the request, arriving late, does not bring the user back.
    erased_before = worker.metric_sum("likeflow_likes_skipped_total", reason="erased")
    await produce(settings, settings.topic(LIKES), [like(erased, NOW - 2_000)])
    await wait_until(
        lambda: worker.metric_sum("likeflow_likes_skipped_total", reason="erased") > erased_before,
        30,
        "the late like to be ignored",
        worker,
    )

    # The refused profile: the state holds the choice and no interest profile.
    neutral_state = latest_state(records, pseudonym(neutral))[1]
    assert neutral_state is not None and neutral_state["affinity"] == {}
    assert neutral_state["consent"]["personalized"] is False

    # No raw user id in any table, changelog, Redis key or value, output topic or log line.
    raw_ids = [u.encode() for u in (plain, silent, neutral, erased)]
    stores: dict[str, list[bytes]] = {}
    creator_counts = f"{settings.app_id}-creator_counts-changelog"
    for topic in (
        changelog(settings),
        creator_counts,
        settings.topic(ORDER_PROMPTS),
        settings.topic(CREATOR_EVENTS),
    ):
        stores[topic] = [b"%r %r" % (r.key, r.value) for r in await read_topic(settings, topic)]
    redis_entries: list[bytes] = []
    async for key in redis_client.scan_iter(match=f"{settings.redis_prefix}:*"):
        redis_entries.append(key)
        kind = await redis_client.type(key)
        if kind == b"zset":
            redis_entries.extend(await zset_members(redis_client, key))
        elif kind == b"string":
            value = await redis_client.get(key)
            assert not isinstance(value, str), "the client does not decode replies"
            redis_entries.append(value or b"")
        elif kind == b"hash":
            redis_entries.extend(b"%r" % (item,) for item in (await redis_client.hgetall(key)).items())
    stores["redis"] = redis_entries
    stores["worker log"] = [worker.log_path.read_bytes()]
    leaks = {name: raw for name, blobs in stores.items() for raw in raw_ids if any(raw in b for b in blobs)}
    assert not leaks, leaks
    assert all(stores[name] for name in stores), "every store was actually read"


async def test_retention_tombstones_idle_users_and_the_erasure_ledger_outlives_it(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A user idle for more than 30 days of the partition's event time is deleted, with a
    tombstone; so is an erased user's remainder. The erasure itself stays in the erasure ledger:
    a like from before it, replayed after retention deleted the state, is still ignored.

    A worker of its own: its partitions' clocks start with this test's likes (no record may be
    stamped ahead of the wall clock, so a shared worker's clock could not be moved past its next
    sweep). The idle user likes a video with no eligible product: state, no prompt.
    """
    settings = private_settings(base_settings, tmp_path_factory)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        pseudonym = pseudonymizer_for(settings)
        quiet = f"{VIDEO}-quiet"
        await publish_video(settings, worker, quiet, certified=False)
        await publish_video(settings, worker, VIDEO)
        partitioner = DefaultPartitioner()
        partitions = list(range(settings.partitions))

        def partition(user: str) -> int:
            return int(partitioner(user.encode(), partitions, partitions))

        idle = raw_user("idle")
        # An active user and an erased one on the same partition: the active user's like moves
        # that partition's event-time clock.
        same = (raw_user(f"same{i}") for i in range(1000))
        active, erased = [u for u in same if partition(u) == partition(idle)][:2]
        expired_before = worker.metric_sum("likeflow_users_expired_total")
        pre_erasure = like(erased, NOW - 40 * DAY_MS - 3_600_000)
        await produce(settings, settings.topic(LIKES), [like(idle, NOW - 40 * DAY_MS, quiet), pre_erasure])
        await produce(settings, settings.topic(USER_ERASURE), [control(erased, ts=NOW - 40 * DAY_MS)])
        await read_topic_until(
            settings,
            changelog(settings),
            lambda rs: latest_state(rs, pseudonym(idle))[0] and latest_state(rs, pseudonym(erased))[0],
            60,
            "the idle and the erased user's state",
        )
        await produce(settings, settings.topic(LIKES), [like(active, NOW, quiet)])
        records = await read_topic_until(
            settings,
            changelog(settings),
            lambda rs: all(latest_state(rs, pseudonym(u)) == (True, None) for u in (idle, erased)),
            60,
            "the idle and the erased user's tombstones",
        )
        found, state = latest_state(records, pseudonym(active))
        assert found and state is not None, "the active user is kept"
        assert worker.metric_sum("likeflow_users_expired_total") >= expired_before + 2

        # The erased user's state is gone; their pre-erasure like, replayed (as an archive replay
        # or a reset of the group would), is ignored because the ledger remembers the erasure.
        skipped_before = worker.metric_sum("likeflow_likes_skipped_total", reason="erased")
        replayed = like(erased, NOW - 40 * DAY_MS - 1_800_000)
        await produce(settings, settings.topic(LIKES), [replayed])
        await wait_until(
            lambda: worker.metric_sum("likeflow_likes_skipped_total", reason="erased") > skipped_before,
            30,
            "the replayed pre-erasure like to be skipped as erased",
            worker,
        )
        ledger = await read_topic(settings, f"{settings.app_id}-erasure_ledger-changelog")
        assert [int(present(r.value)) for r in ledger if r.key == pseudonym(erased).encode()] == [
            NOW - 40 * DAY_MS
        ]
        sent = [
            orjson.loads(r.value)
            for r in await read_topic(settings, settings.topic(ORDER_PROMPTS))
            if r.value
        ]
        replayed_ts = orjson.loads(present(replayed[1]))["ts"]
        assert not [p for p in sent if p["user_id"] == pseudonym(erased) and p["like_ts"] == replayed_ts]

        # The tombstoned history is compacted away within the configured bound.
        admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
        await admin.start()
        try:
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, changelog(settings))]
            )
        finally:
            await admin.close()
        configs = {name: value for name, value, *_ in described[0].resources[0][4]}
        for name, value in USER_STATE_CHANGELOG_CONFIGS.items():
            assert configs[name] == value, name
    finally:
        worker.stop()


async def test_the_price_is_the_same_for_everyone_on_the_real_stack(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A worker running a 20% campaign all day: users with opposite histories liking the same
    video at the same moment are offered products at the one campaign price, floor respected."""
    settings = replace(
        private_settings(base_settings, tmp_path_factory),
        campaign_discount_pct=20,
        campaign_start_hour=0,
        campaign_end_hour=24,
    )
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        pseudonym = pseudonymizer_for(settings)
        # Histories: one user only ever liked bags, the other only dresses.
        for video, category in (("fp-bags", "bag"), ("fp-dresses", "dress")):
            body = {"video_id": video, "creator_id": "fp-c", "ts": NOW - DAY_MS, "products": [
                {"product_id": f"{video}-1", "title": "t", "category": category, "price_cents": 1000,
                 "certified": True, "stock": 50}]}  # fmt: skip
            await produce(
                settings, settings.topic(VIDEO_PRODUCTS), [(video.encode(), orjson.dumps(body), [])]
            )
        both = {"video_id": "fp-both", "creator_id": "fp-c", "ts": NOW - DAY_MS, "products": [
            {"product_id": "bag", "title": "bag", "category": "bag", "price_cents": 10000,
             "min_price_cents": 8500, "certified": True, "stock": 50},
            {"product_id": "dress", "title": "dress", "category": "dress", "price_cents": 10000,
             "min_price_cents": 7000, "certified": True, "stock": 50}]}  # fmt: skip
        await produce(settings, settings.topic(VIDEO_PRODUCTS), [(b"fp-both", orjson.dumps(both), [])])
        await wait_until(
            lambda: worker.metric_sum("likeflow_mapping_updates_total") >= 3, 30, "the mappings", worker
        )
        bag_fan, dress_fan = raw_user("bags"), raw_user("dresses")
        history = [like(bag_fan, NOW - 3 * 3_600_000 + i, "fp-bags") for i in range(3)]
        history += [like(dress_fan, NOW - 3 * 3_600_000 + i, "fp-dresses") for i in range(3)]
        await produce(settings, settings.topic(LIKES), history)
        await prompts_of(settings, {pseudonym(bag_fan), pseudonym(dress_fan)}, 2)
        await produce(
            settings, settings.topic(LIKES), [like(u, NOW, "fp-both") for u in (bag_fan, dress_fan)]
        )
        prompts = [
            p
            for p in await prompts_of(settings, {pseudonym(bag_fan), pseudonym(dress_fan)}, 4)
            if p["video_id"] == "fp-both"
        ]
        offered = {p["user_id"]: (p["product_id"], p["price_cents"]) for p in prompts}
        # The ranking is personal (each gets their category); the price is the campaign's.
        assert offered == {pseudonym(bag_fan): ("bag", 8500), pseudonym(dress_fan): ("dress", 8000)}
    finally:
        worker.stop()


async def test_dead_letters_keep_no_raw_user_id_and_a_repaired_one_is_not_pseudonymised_twice(
    worker: WorkerProcess, settings: Settings, pseudonym: Pseudonymizer
) -> None:
    await publish_video(settings, worker)
    user, controlled = raw_user("dead"), raw_user("dead-control")
    broken_like = {"event_id": uuid.uuid4().hex, "user_id": user, "video_id": VIDEO, "ts": "yesterday"}
    await produce(settings, settings.topic(LIKES), [(user.encode(), orjson.dumps(broken_like), [])])
    await produce(
        settings,
        settings.topic(USER_CONSENT),
        [(controlled.encode(), orjson.dumps({"user_id": controlled, "prompts": "maybe", "ts": NOW}), [])],
    )
    mine = {pseudonym(user).encode(), pseudonym(controlled).encode()}
    records = await read_topic_until(
        settings,
        settings.topic(DEAD_LETTERS),
        lambda rs: len([r for r in rs if r.key in mine]) >= 2,
        30,
        "both dead letters",
    )
    dead = {r.key: r for r in records if r.key in mine}
    for record in records:
        blob = b"%r %r %r" % (record.key, record.value, record.headers)
        assert user.encode() not in blob and controlled.encode() not in blob, "a raw id in a dead letter"
    letter = dead[pseudonym(user).encode()]
    headers = dict(letter.headers)
    assert headers[PSEUDONYMISED_HEADER] == b"1"
    assert headers["likeflow.dlq.reason"] == b"wrong_type"
    assert orjson.loads(letter.value or b"{}")["user_id"] == pseudonym(user)

    # Repaired and published again to its original partition (the user's state lives there),
    # with the marker: the prompt is for the user's pseudonym, not a pseudonym of the pseudonym.
    repaired = {**orjson.loads(letter.value or b"{}"), "ts": NOW - 3_000}
    original_partition = int(headers["likeflow.dlq.partition"])
    assert original_partition == DefaultPartitioner()(user.encode(), list(range(settings.partitions)), [])
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(LIKES),
            orjson.dumps(repaired),
            key=pseudonym(user).encode(),
            partition=original_partition,
            headers=[(PSEUDONYMISED_HEADER, b"1")],
        )
    finally:
        await producer.stop()
    [prompt] = await prompts_of(settings, {pseudonym(user), pseudonym(pseudonym(user))}, 1)
    assert prompt["user_id"] == pseudonym(user)


async def test_replay_file_leaves_out_erased_users_and_its_dead_letters_keep_no_raw_id(
    worker: WorkerProcess, settings: Settings, pseudonym: Pseudonymizer, tmp_path: Path
) -> None:
    """An archive of likes replayed after a user's erasure must not bring the user's raw id (or
    their pre-erasure likes) back into `likes`; a bad feedback line's dead letter keeps no raw id."""
    erased = raw_user("archived")
    await produce(settings, settings.topic(USER_ERASURE), [control(erased, ts=NOW - 3_600_000)])
    await read_topic_until(
        settings,
        f"{settings.app_id}-erasure_ledger-changelog",
        lambda rs: any(r.key == pseudonym(erased).encode() for r in rs),
        30,
        "the erasure in the ledger",
    )
    archive = tmp_path / "likes.jsonl"
    before_erasure, after_erasure = like(erased, NOW - 7_200_000), like(erased, NOW - 60_000)
    archive.write_bytes(present(before_erasure[1]) + b"\n" + present(after_erasure[1]) + b"\n")
    result = await replay_files(settings, [archive], LIKES)
    assert (result.sent, result.erased, result.invalid) == (1, 1, 0)
    replayed = await read_topic(settings, settings.topic(LIKES))
    ids = {orjson.loads(present(r.value)).get("event_id") for r in replayed if r.key == erased.encode()}
    assert orjson.loads(present(after_erasure[1]))["event_id"] in ids
    assert orjson.loads(present(before_erasure[1]))["event_id"] not in ids

    raw = raw_user("feedback")
    bad = {"event_id": f"pf-{RUN}", "prompt_id": "p", "creator_id": f"pc-{RUN}", "product_id": "p",
           "user_id": raw, "kind": "bought", "ts": NOW}  # fmt: skip
    feedback_archive = tmp_path / "feedback.jsonl"
    feedback_archive.write_bytes(orjson.dumps(bad) + b"\n")
    assert (await replay_files(settings, [feedback_archive], PROMPT_FEEDBACK)).invalid == 1
    dead = await read_topic_until(
        settings,
        settings.topic(DEAD_LETTERS),
        lambda rs: any(b"pf-" + RUN.encode() in (r.value or b"") for r in rs),
        30,
        "the feedback line's dead letter",
    )
    (letter,) = [r for r in dead if b"pf-" + RUN.encode() in (r.value or b"")]
    assert raw.encode() not in present(letter.value) and letter.key == f"pc-{RUN}".encode()
    assert orjson.loads(present(letter.value))["user_id"] == pseudonym(raw)
    assert dict(letter.headers)[PSEUDONYMISED_HEADER] == b"1"
