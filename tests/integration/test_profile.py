"""The profile beyond likes on the real stack: likes with `watch_ms`, `user-engagement`, orders routed
from `prompt-feedback` (counted once across duplicates), `likeflow profile` through the worker's
web server, and refusal of personalisation forgetting all of it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings
from likeflow.ops.topics import ensure_topics
from streams.topics import (
    DEAD_LETTERS,
    LIKES,
    ORDER_PROMPTS,
    PROMPT_FEEDBACK,
    USER_CONSENT,
    USER_ENGAGEMENT,
    USER_ORDERS,
    VIDEO_PRODUCTS,
)
from tests.factories import mapping_json
from tests.integration.harness import (
    Record,
    WorkerProcess,
    produce,
    read_topic,
    read_topic_until,
    run_cli,
    wait_until,
)
from tests.integration.namespaces import private_settings, pseudonymizer_for

pytestmark = pytest.mark.integration

USER = "prof-u1"
LIPSTICK = [
    {"product_id": "p-lip", "title": "口红", "category": "lipstick", "price_cents": 12900, "certified": True,
     "stock": 5},
]  # fmt: skip


@pytest.fixture
def private(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return replace(private_settings(base_settings, tmp_path_factory), rank_by_consumption_level=True)


def record(key: str, **body: Any) -> Record:
    return key.encode(), orjson.dumps(body), []


def engagements(worker: WorkerProcess, kind: str, outcome: str) -> float:
    return worker.metric_sum("likeflow_user_engagements_total", kind=kind, outcome=outcome)


async def profile(settings: Settings) -> dict[str, Any]:
    result = await run_cli(settings, "profile", USER, timeout_s=60)
    assert result.returncode == 0, result.stderr.decode()
    doc: dict[str, Any] = orjson.loads(result.stdout)
    return doc


async def test_engagement_orders_and_refusal_through_the_profile_command(
    private: Settings, tmp_path: Path
) -> None:
    settings = private
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        now = int(time.time() * 1000)
        await produce(
            settings,
            settings.topic(VIDEO_PRODUCTS),
            [(b"prof-v1", mapping_json("prof-v1", products=LIPSTICK, ts=now - 60_000), [])],
        )
        # A like watched to the end (1.5), a share (2.0), a comment (1.5), a duplicate share, and
        # two bad engagements (dead letters).
        await produce(
            settings,
            settings.topic(LIKES),
            [record(USER, event_id="l1", user_id=USER, video_id="prof-v1", ts=now, watch_ms=90_000)],
        )
        share = record(USER, event_id="g1", user_id=USER, video_id="prof-v1", kind="share", ts=now)
        await produce(
            settings,
            settings.topic(USER_ENGAGEMENT),
            [
                share,
                record(USER, event_id="g2", user_id=USER, video_id="prof-v1", kind="comment", ts=now),
                share,
                record(USER, event_id="g3", user_id=USER, video_id="prof-v1", kind="wink", ts=now),
                record(
                    USER,
                    event_id="g4",
                    user_id=USER,
                    video_id="prof-v1",
                    kind="long_watch",
                    ts=now,
                    watch_ms=-1,
                ),
            ],  # fmt: skip
        )
        await wait_until(
            lambda: (
                engagements(worker, "share", "recorded") + engagements(worker, "share", "duplicate") >= 2
                and engagements(worker, "comment", "recorded") >= 1
            ),
            60,
            "the engagement",
            worker,
        )
        assert (
            engagements(worker, "share", "recorded") == 1 and engagements(worker, "share", "duplicate") == 1
        )
        pseudonym = pseudonymizer_for(settings)(USER)
        letters = await read_topic_until(
            settings, settings.topic(DEAD_LETTERS), lambda rs: len(rs) >= 2, 30, "the dead letters"
        )
        reasons = sorted(dict(r.headers)["likeflow.dlq.reason"].decode() for r in letters)
        assert reasons == ["invalid_value", "unknown_enum"]
        assert all(USER.encode() not in (r.key or b"") + (r.value or b"") for r in letters)

        # The user's order, as the app reports it on the prompt it showed (raw user id), twice
        # (the app retries with the same event id), and again in a later batch.
        prompts = await read_topic_until(
            settings, settings.topic(ORDER_PROMPTS), lambda rs: len(rs) >= 1, 30, "the prompt"
        )
        prompt = orjson.loads(prompts[0].value or b"")
        assert prompt["user_id"] == pseudonym
        order = record(
            prompt["creator_id"],
            event_id="o1",
            prompt_id=prompt["prompt_id"],
            creator_id=prompt["creator_id"],
            product_id=prompt["product_id"],
            user_id=USER,
            kind="order",
            ts=now + 1000,
            amount_cents=12900,
        )
        await produce(settings, settings.topic(PROMPT_FEEDBACK), [order, order])
        await produce(settings, settings.topic(PROMPT_FEEDBACK), [order])
        await wait_until(
            lambda: engagements(worker, "order", "recorded") + engagements(worker, "order", "duplicate") >= 3,
            60,
            "the orders",
            worker,
        )
        assert engagements(worker, "order", "recorded") == 1
        routed = await read_topic(settings, settings.topic(USER_ORDERS))
        assert {r.key for r in routed} == {pseudonym.encode()}
        assert all(USER.encode() not in (r.value or b"") for r in routed), "no raw id on user-orders"

        doc = await profile(settings)
        assert doc["user"] == pseudonym and doc["held"] is True
        assert doc["interest_tags"] == ["美妆爱好者"]
        (top,) = doc["top_categories"]
        assert top["category"] == "lipstick" and top["strength"] == pytest.approx(5.0, abs=0.01)
        assert doc["consumption_level"]["code"] == "mass" and doc["consumption_level"]["orders"] == 1.0
        assert doc["consent"] == {"prompts": True, "personalized": True, "stated_ts": None}

        # Refusal forgets all of it, and nothing more is built.
        await produce(
            settings,
            settings.topic(USER_CONSENT),
            [record(USER, user_id=USER, prompts=True, personalized=False, ts=now + 2000)],
        )
        await wait_until(
            lambda: worker.metric_sum("likeflow_user_controls_total", control="consent") >= 1,
            60,
            "the consent",
            worker,
        )
        await produce(
            settings,
            settings.topic(USER_ENGAGEMENT),
            [record(USER, event_id="g5", user_id=USER, video_id="prof-v1", kind="share", ts=now + 3000)],
        )
        await wait_until(
            lambda: engagements(worker, "share", "not_personalized") >= 1, 60, "the refused share", worker
        )
        doc = await profile(settings)
        assert doc["consent"] == {"prompts": True, "personalized": False, "stated_ts": now + 2000}
        assert doc["interest_tags"] == [] and doc["top_categories"] == []
        assert doc["consumption_level"] is None
    finally:
        worker.stop()
