"""Likes in, prompts out, on the real Kafka and Redis: the exact set of prompts, and why the rest got none."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import redis.asyncio as aioredis

from config import Settings
from likeflow.domain.prompt_ids import PromptIds
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.sinks.redis_keys import prompts_key
from streams.topics import LIKES, ORDER_PROMPTS, VIDEO_PRODUCTS
from tests.integration.harness import (
    Consumed,
    WorkerProcess,
    produce,
    prompt_ids_of,
    read_topic_until,
    wait_until,
    zset_members,
)

HOUR_MS = 3_600_000
# A fixed clock hour two hours ago, so the hourly cap is tested inside one hour of event time.
HOUR = (int(time.time() * 1000) // HOUR_MS - 2) * HOUR_MS


def item(pid: str, *, certified: bool = True, stock: int = 20, category: str = "dress") -> dict[str, Any]:
    return {
        "product_id": pid,
        "title": f"T-{pid}",
        "category": category,
        "price_cents": 9900,
        "certified": certified,
        "stock": stock,
    }


def video(
    vid: str, products: list[dict[str, Any]], *, creator: str = "c1", ts: int = HOUR
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return (
        vid.encode(),
        orjson.dumps({"video_id": vid, "creator_id": creator, "ts": ts, "products": products}),
        [],
    )


MAPPINGS = [
    video("v1", [item("pA", stock=5), item("pB", certified=False, stock=100), item("pC", stock=0)]),
    video("v2", [item("pD", stock=50), item("pE", stock=1)], creator="c2"),
    video("v3", [item("p3")], creator="c3"),
    video("v4", [item("p4")], creator="c3"),
    video("v5", [item("p5")], creator="c3"),
    video("v6", [item("p6")]),
    (b"v6", None, []),  # tombstone: v6 no longer sells anything
    video("v7", [item("pF")], ts=HOUR + 10),
    video("v7", [item("pG")], ts=HOUR),  # older than what is held: ignored
    video("v8", [item("pX", certified=False)]),
]


def like(
    event_id: str, user: str, vid: str, offset_s: int, action: str = "like"
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    body = {
        "event_id": event_id,
        "user_id": user,
        "video_id": vid,
        "ts": HOUR + offset_s * 1000,
        "action": action,
    }
    return user.encode(), orjson.dumps(body), []


LIKES_SENT = [
    like("L1", "u1", "v1", 1),
    like("L2", "u2", "v2", 2),
    like("L3", "u2", "v2", 3),  # repeat like: falls through to the next product
    like("L4", "u2", "v2", 4),  # nothing left to offer
    like("L5", "u3", "v3", 5),
    like("L6", "u3", "v4", 6),
    like("L7", "u3", "v5", 7),
    like("L8", "u3", "v1", 8),  # the fourth prompt in one clock hour: capped
    like("L9", "u4", "v1", 9),
    like("L9", "u4", "v1", 9),  # the same event delivered twice
    like("L11", "u5", "v1", 11, action="unlike"),
    like("L12", "u6", "v999", 12),  # no such video
    like("L13", "u7", "v6", 13),  # mapping removed
    like("L14", "u8", "v7", 14),
    like("L15", "u9", "v8", 15),  # only uncertified products
]

EXACT = {("L1", "pA"), ("L2", "pD"), ("L3", "pE"), ("L9", "pA"), ("L14", "pF")}
U3_CANDIDATES = {("L5", "p3"), ("L6", "p4"), ("L7", "p5"), ("L8", "pA")}
EXPECTED_SKIPS = {
    "all_recently_offered": 1,
    "hourly_cap": 1,
    "unlike": 1,
    "no_mapping": 2,
    "no_eligible_product": 1,
}


def outcomes(worker: WorkerProcess) -> float:
    return (
        worker.metric_sum("likeflow_prompts_emitted_total")
        + worker.metric_sum("likeflow_likes_skipped_total")
        + worker.metric_sum("likeflow_duplicate_likes_total")
        + worker.metric_sum("likeflow_dead_letters_total", topic=worker.settings.topic(LIKES))
    )


async def test_likes_become_exactly_the_expected_prompts(
    worker: WorkerProcess, settings: Settings, redis_client: aioredis.Redis, pseudonym: Pseudonymizer
) -> None:
    # The shared worker may still hold likes of earlier tests waiting for their mapping (their
    # `no_mapping` skips come after the grace): let them settle before counting from here.
    await wait_until(lambda: worker.metric_sum("likeflow_likes_waiting") == 0, 30, "earlier waits", worker)
    before = outcomes(worker)
    skipped_before = {r: worker.metric_sum("likeflow_likes_skipped_total", reason=r) for r in EXPECTED_SKIPS}
    duplicates_before = worker.metric_sum("likeflow_duplicate_likes_total")
    mappings_before = worker.metric_sum("likeflow_mapping_updates_total")
    await produce(settings, settings.topic(VIDEO_PRODUCTS), MAPPINGS)
    await wait_until(
        lambda: worker.metric_sum("likeflow_mapping_updates_total") - mappings_before >= len(MAPPINGS),
        60,
        "the mappings to be ingested",
        worker,
    )
    assert worker.metric_sum("likeflow_mapping_updates_total", outcome="stale") >= 1

    await produce(settings, settings.topic(LIKES), LIKES_SENT)
    await wait_until(
        lambda: (
            outcomes(worker) - before >= len(LIKES_SENT) and worker.metric_sum("likeflow_likes_waiting") == 0
        ),
        60,
        "every like to be accounted for (the unmapped ones after the mapping grace)",
        worker,
    )

    # Prompts are keyed by the user's pseudonym (docs/privacy.md).
    users = {pseudonym(key.decode()).encode() for key, _, _ in LIKES_SENT if key}
    # The session's worker serves other tests too: look only at this test's users.
    expected_records = len(EXACT) + 3 + 1  # distinct prompts, plus the re-sent copy for L9

    def mine(records: list[Consumed]) -> list[Consumed]:
        return [r for r in records if r.key in users]

    records = mine(
        await read_topic_until(
            settings,
            settings.topic(ORDER_PROMPTS),
            lambda rs: len(mine(rs)) >= expected_records,
            30,
            "every prompt",
        )
    )
    assert len(records) == expected_records
    prompts = [orjson.loads(r.value) for r in records if r.value is not None]
    by_id: dict[str, list[bytes]] = {}
    for r in records:
        assert r.value is not None
        by_id.setdefault(orjson.loads(r.value)["prompt_id"], []).append(r.value)
    # A redelivered like re-sends its prompt byte for byte, never a different one.
    assert all(len(set(copies)) == 1 for copies in by_id.values())

    # Each id is the one the worker issues for its like and product (the nonce) and its creator,
    # product and user (the tag).
    ids = prompt_ids_of(settings)
    assert all(ids.verify(p["prompt_id"], p["creator_id"], p["product_id"], p["user_id"]) for p in prompts)
    known = {PromptIds.nonce(e, pid): (e, pid) for e, pid in EXACT | U3_CANDIDATES}
    unexpected = [p for p in prompts if p["prompt_id"][:16] not in known]
    assert not unexpected
    pairs = {known[p["prompt_id"][:16]] for p in prompts}
    assert EXACT <= pairs
    u3 = pairs - EXACT
    assert len(u3) == 3 and u3 <= U3_CANDIDATES
    assert len(by_id) == len(EXACT) + 3

    for p in prompts:
        assert p["text"].startswith(f"同款 T-{p['product_id']} ¥99.00")
        assert p["price_cents"] == 9900 and p["emitted_ts"] >= p["like_ts"]
        assert list(p) == [
            "prompt_id",
            "user_id",
            "video_id",
            "creator_id",
            "product_id",
            "title",
            "price_cents",
            "offer",
            "score",
            "text",
            "like_ts",
            "emitted_ts",
            "source",
        ]
        assert p["source"] == "creator"
    skips = {
        r: worker.metric_sum("likeflow_likes_skipped_total", reason=r) - skipped_before[r]
        for r in EXPECTED_SKIPS
    }
    assert skips == EXPECTED_SKIPS
    assert worker.metric_sum("likeflow_duplicate_likes_total") - duplicates_before == 1

    # Redis serves each user's prompts: exactly the first copy of each, newest first.
    first_copies: dict[str, list[bytes]] = {}
    for copies in by_id.values():
        first_copies.setdefault(orjson.loads(copies[0])["user_id"], []).append(copies[0])
    for user, payloads in first_copies.items():
        stored = await zset_members(redis_client, prompts_key(settings.redis_prefix, user), desc=True)
        assert sorted(stored) == sorted(payloads), user
        assert [orjson.loads(s)["like_ts"] for s in stored] == sorted(
            (orjson.loads(s)["like_ts"] for s in stored), reverse=True
        )
        ttl = await redis_client.pttl(prompts_key(settings.redis_prefix, user))
        assert 0 < ttl <= settings.redis_prompt_ttl_s * 1000
    assert Counter(p["user_id"] for p in prompts if p["user_id"] != pseudonym("u4")) == {
        pseudonym("u1"): 1,
        pseudonym("u2"): 2,
        pseudonym("u3"): 3,
        pseudonym("u8"): 1,
    }
