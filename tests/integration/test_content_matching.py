"""Content understanding live: a video with content only gets prompts for matched catalogue
products (`source: "content"`), a creator's mapping wins, a waiting like is woken by a proposal,
and `likeflow match` explains the proposal."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from config import Settings
from likeflow.ops.topics import ensure_topics
from streams.topics import LIKES, ORDER_PROMPTS, PRODUCT_CATALOGUE, VIDEO_CONTENT, VIDEO_PRODUCTS
from tests.factories import mapping_json
from tests.integration.harness import Record, WorkerProcess, produce, read_topic, run_cli, wait_until
from tests.integration.namespaces import pseudonymizer_for

pytestmark = pytest.mark.integration

CATALOGUE = Path(__file__).parents[2] / "data" / "matching" / "catalogue.jsonl"


def content(video: str, caption: str, ts: int, creator: str = "cm-c1") -> Record:
    body = {"video_id": video, "creator_id": creator, "caption": caption, "hashtags": ["口红", "种草"],
            "labels": [{"label": "口红", "confidence": 0.9}], "ts": ts}  # fmt: skip
    return video.encode(), orjson.dumps(body), []


def like(user: str, video: str, ts: int) -> Record:
    body = {"event_id": f"{user}-{video}", "user_id": user, "video_id": video, "ts": ts}
    return user.encode(), orjson.dumps(body), []


async def prompts_of(settings: Settings, users: list[str]) -> dict[str, list[tuple[str, str]]]:
    """user -> (product_id, source) of every prompt for them."""
    pseudonym = pseudonymizer_for(settings)
    keys = {pseudonym(u).encode(): u for u in users}
    out: dict[str, list[tuple[str, str]]] = {u: [] for u in users}
    for r in await read_topic(settings, settings.topic(ORDER_PROMPTS)):
        if r.key in keys:
            body = orjson.loads(r.value or b"")
            out[keys[r.key]].append((body["product_id"], body["source"]))
    return out


async def test_content_only_videos_get_matched_prompts_and_the_creators_mapping_wins(
    private: Settings, tmp_path: Path
) -> None:
    settings = private
    await ensure_topics(settings)
    lines = CATALOGUE.read_text().splitlines()
    catalogue: list[Record] = [
        (orjson.loads(line)["product_id"].encode(), line.encode(), []) for line in lines
    ]
    await produce(settings, settings.topic(PRODUCT_CATALOGUE), catalogue)
    now = int(time.time() * 1000)
    # cm-v2 has the creator's own (eligible) mapping: it wins over any content match.
    await produce(
        settings, settings.topic(VIDEO_PRODUCTS), [(b"cm-v2", mapping_json("cm-v2", ts=now - 60_000), [])]
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        # A like of cm-v1 before anything is known of it waits; the proposal wakes it.
        await produce(settings, settings.topic(LIKES), [like("cm-early", "cm-v1", now - 2000)])
        await wait_until(
            lambda: worker.metric_sum("likeflow_mapping_waits_total", outcome="waiting") >= 1,
            30,
            "the wait",
            worker,
        )
        await produce(
            settings,
            settings.topic(VIDEO_CONTENT),
            [
                content("cm-v1", "ysl小金条1966 yyds 谁懂啊💄 #平价替代", now - 1000),
                content("cm-v2", "ysl小金条1966 真的绝绝子", now - 1000),
                content("cm-v3", "今天天气真好 出去走走", now - 1000),  # nothing to match
            ],
        )
        await wait_until(
            lambda: worker.metric_sum("likeflow_content_matches_total") >= 3, 60, "the matcher", worker
        )
        assert worker.metric_sum("likeflow_content_matches_total", outcome="none") == 1
        await wait_until(
            lambda: worker.metric_sum("likeflow_mapping_waits_total", outcome="joined") >= 1,
            30,
            "the join",
            worker,
        )
        users = ["cm-u1", "cm-u2"]
        await produce(
            settings, settings.topic(LIKES), [like("cm-u1", "cm-v1", now), like("cm-u2", "cm-v2", now)]
        )
        await wait_until(
            lambda: worker.metric_sum("likeflow_prompts_emitted_total") >= 3, 30, "the prompts", worker
        )
        found = await prompts_of(settings, ["cm-early", *users])
        assert found["cm-early"] == found["cm-u1"] == [("bea-001", "content")]
        assert found["cm-u2"] == [("p1", "creator")]
        explained = await run_cli(settings, "match", "cm-v1")
        assert explained.returncode == 0, explained.stderr.decode()
        text = explained.stdout.decode()
        assert "proposed (confidence >= 0.4): bea-001" in text and "小金条" in text, text
        missing = await run_cli(settings, "match", "cm-nope")
        assert missing.returncode == 1 and b"no video-content record" in missing.stderr
        print("\n" + text)
    finally:
        worker.stop()
