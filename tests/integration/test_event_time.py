"""Per-source event time on the real stack: a lagging input decides nothing for the others.

Each case publishes hours of likes and the feedback on their prompts in an order a real system
produces (likes replayed before feedback, feedback hours behind, both inputs stopped and the
worker restarted with backlogs, an input with no records at all) and checks the served windows
(HTTP and Redis) against counts computed from the input, and that only truly late records
(late against their own source) are dead-lettered.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from config import Settings
from likeflow.domain.quality.windows import Counts
from likeflow.engine import KeyPartitioner
from likeflow.ops.topics import ensure_topics
from likeflow.sinks.redis_keys import windows_key
from streams.topics import DEAD_LETTERS, LIKES, PROMPT_FEEDBACK, VIDEO_PRODUCTS
from tests.integration.harness import Record, WorkerProcess, produce, read_topic, wait_until
from tests.integration.test_quality import get_json

H = 3_600_000
T0 = (int(time.time() * 1000) // H - 72) * H  # hour-aligned, three days ago
CREATORS = ["et-c0", "et-c1", "et-c2", "et-c3"]
LIKES_PER_HOUR = 40
FIELD_OF = {"like": "likes", "prompt": "prompts", "click": "clicks", "order": "orders", "return": "returns"}


def mapping(creator: str) -> Record:
    video = f"{creator}-v"
    product = {"product_id": f"{creator}-p", "title": "t", "category": "dress", "price_cents": 900,
               "certified": True, "stock": 50}  # fmt: skip
    body = {"video_id": video, "creator_id": creator, "ts": T0 - H, "products": [product]}
    return video.encode(), orjson.dumps(body), []


class Scenario:
    """Likes of distinct users (one prompt each), their feedback, and the windows both make."""

    def __init__(self, tag: str, hours: list[int] | range) -> None:
        self.tag = tag
        self.likes: dict[int, list[Record]] = {}
        self.feedback: dict[int, list[tuple[int, Record]]] = {}  # hour of the like -> (ts, record)
        self.windows: dict[str, dict[int, dict[str, int]]] = {c: {} for c in CREATORS}
        for hour in hours:
            for j in range(LIKES_PER_HOUR):
                creator = CREATORS[j % len(CREATORS)]
                user, event_id = f"{tag}-u{hour}-{j}", f"{tag}-l{hour}-{j}"
                ts = T0 + hour * H + j * (H // LIKES_PER_HOUR)
                like = {"event_id": event_id, "user_id": user, "video_id": f"{creator}-v", "ts": ts}
                self.likes.setdefault(hour, []).append((user.encode(), orjson.dumps(like), []))
                self._count(creator, "like", ts)
                self._count(creator, "prompt", ts)
                prompt_id = f"prompt-of-{event_id}"  # produce() makes it one the worker issued
                kinds = [("click", ts + 60_000)]
                if j % 4 == 0:
                    kinds.append(("order", ts + 120_000))
                if j % 8 == 0:
                    kinds.append(("return", ts + 2 * H))  # returned two hours later
                for kind, fts in kinds:
                    self._count(creator, kind, fts)
                    self.feedback.setdefault(hour, []).append(
                        (fts, feedback(f"{tag}-{kind}-{hour}-{j}", prompt_id, creator, kind, fts, user))
                    )

    def _count(self, creator: str, kind: str, ts: int) -> None:
        start = ts - ts % H
        row = self.windows[creator].setdefault(
            start, {"start_ms": start, "end_ms": start + H, **Counts().to_dict()}
        )
        row[FIELD_OF[kind]] += 1
        if kind == "order":
            row["gmv_cents"] += 1000

    def likes_of(self, hours: range) -> list[Record]:
        return [r for h in hours for r in self.likes.get(h, [])]

    def feedback_between(self, start_ms: int, end_ms: int) -> list[Record]:
        """Feedback with a ts in [start, end), in ts order: a click, order or return is reported
        when it happens (a return two hours after the like, with that ts)."""
        found = [x for xs in self.feedback.values() for x in xs if start_ms <= x[0] < end_ms]
        return [r for _, r in sorted(found, key=lambda x: x[0])]

    def feedback_of(self, hours: range) -> list[Record]:
        """All feedback of the likes of `hours`, in ts order."""
        return [
            r for _, r in sorted((x for h in hours for x in self.feedback.get(h, [])), key=lambda x: x[0])
        ]

    def served_form(self) -> dict[str, list[dict[str, int]]]:
        return {c: [w[s] for s in sorted(w)] for c, w in self.windows.items()}


def feedback(event_id: str, prompt_id: str, creator: str, kind: str, ts: int, user: str) -> Record:
    body: dict[str, Any] = {
        "event_id": event_id,
        "prompt_id": prompt_id,
        "creator_id": creator,
        "product_id": f"{creator}-p",
        "user_id": user,
        "kind": kind,
        "ts": ts,
    }
    if kind == "order":
        body["amount_cents"] = 1000
    return creator.encode(), orjson.dumps(body), []


@pytest.fixture
async def worker(private: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    await ensure_topics(private)
    await produce(private, private.topic(VIDEO_PRODUCTS), [mapping(c) for c in CREATORS])
    process = WorkerProcess(private, tmp_path / "worker.log")
    process.start()
    await wait_until(
        lambda: (process.health() or {}).get("video_mappings", 0) >= len(CREATORS), 30, "mappings", process
    )
    yield process
    process.stop()


def served(worker: WorkerProcess) -> dict[str, Any]:
    return {c: get_json(worker, f"/creators/{c}/quality")[1].get("windows") for c in CREATORS}


async def assert_exact(worker: WorkerProcess, scenario: Scenario, timeout_s: float = 60) -> None:
    """HTTP and Redis serve the scenario's windows exactly (waits for them, then compares)."""
    expected = scenario.served_form()
    with contextlib.suppress(TimeoutError):  # the comparison below shows what differs
        await wait_until(lambda: served(worker) == expected, timeout_s, "the exact windows", worker)
    assert served(worker) == expected
    client = aioredis.from_url(worker.settings.redis_url)
    try:
        for creator in CREATORS:
            stored = await client.hgetall(windows_key(worker.settings.redis_prefix, creator))
            rows = sorted(
                (orjson.loads(v) for k, v in stored.items() if k != b"version"), key=lambda w: w["start_ms"]
            )
            assert rows == expected[creator]
    finally:
        await client.aclose()


def late(worker: WorkerProcess) -> float:
    return worker.metric_sum("likeflow_late_records_total")


async def late_dead_letters(settings: Settings) -> list[Any]:
    records = await read_topic(settings, settings.topic(DEAD_LETTERS))
    return [r for r in records if dict(r.headers).get("likeflow.dlq.reason") == b"late"]


async def test_likes_replayed_for_six_hours_then_their_feedback(worker: WorkerProcess) -> None:
    """The issue's case: likes of six hours first, the feedback right after. Feedback is late
    only against feedback; the windows the likes closed are revised, not corrupted."""
    settings = worker.settings
    scenario = Scenario("a", range(6))
    await produce(settings, settings.topic(LIKES), scenario.likes_of(range(6)))
    total = 6 * LIKES_PER_HOUR
    await wait_until(
        lambda: worker.metric_sum("likeflow_prompts_emitted_total") >= total, 60, "the prompts", worker
    )
    # Truly late: after all the feedback, clicks five hours behind their own source.
    truly_late = [
        feedback(f"a-late-{i}", "x", CREATORS[i % 4], "click", T0 + 30 * 60_000, "u") for i in range(8)
    ]
    await produce(settings, settings.topic(PROMPT_FEEDBACK), scenario.feedback_of(range(6)) + truly_late)
    await assert_exact(worker, scenario)
    await wait_until(lambda: late(worker) >= len(truly_late), 30, "the late clicks", worker)
    assert late(worker) == len(truly_late), "only the truly late records are late"
    dead = await late_dead_letters(settings)
    assert sorted(orjson.loads(r.value)["event_id"] for r in dead) == sorted(f"a-late-{i}" for i in range(8))


async def test_feedback_published_live_three_hours_behind_the_likes(worker: WorkerProcess) -> None:
    settings = worker.settings
    scenario = Scenario("b", range(7))
    for hour in range(12):
        # Likes of this hour, and the feedback that happened three hours before.
        await produce(settings, settings.topic(LIKES), scenario.likes_of(range(hour, hour + 1)))
        behind = T0 + (hour - 3) * H
        await produce(
            settings, settings.topic(PROMPT_FEEDBACK), scenario.feedback_between(behind, behind + H)
        )
    await assert_exact(worker, scenario)
    assert late(worker) == 0


async def test_both_inputs_stopped_then_a_restart_with_both_backlogs(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    """Two hours live, the worker stopped, an hour with no input at all, two more hours of likes
    and feedback published meanwhile: the restarted worker counts the backlogs exactly."""
    settings = worker.settings
    scenario = Scenario("c", [0, 1, 3, 4])
    stopped_at = T0 + 2 * H
    await produce(settings, settings.topic(LIKES), scenario.likes_of(range(0, 2)))
    await produce(settings, settings.topic(PROMPT_FEEDBACK), scenario.feedback_between(T0, stopped_at))
    await wait_until(
        lambda: worker.metric_sum("likeflow_prompts_emitted_total") >= 2 * LIKES_PER_HOUR,
        60,
        "the first prompts",
        worker,
    )
    worker.stop(signal.SIGTERM)
    await produce(settings, settings.topic(LIKES), scenario.likes_of(range(3, 5)))
    await produce(
        settings, settings.topic(PROMPT_FEEDBACK), scenario.feedback_between(stopped_at, T0 + 24 * H)
    )
    worker.start()
    await assert_exact(worker, scenario)
    assert late(worker) == 0


async def test_an_idle_feedback_partition_does_not_hold_the_windows_of_the_others(
    worker: WorkerProcess,
) -> None:
    """Feedback for one creator only: the other feedback partitions never receive a record. Once
    they have been quiet for LIKEFLOW_QUALITY_IDLE_AFTER_S they stop holding windows open, and
    the windows close for the judge."""
    settings = worker.settings
    partition_of = KeyPartitioner(settings.partitions)
    busy = partition_of(CREATORS[0].encode())
    scenario = Scenario("d", range(3))
    await produce(settings, settings.topic(LIKES), scenario.likes_of(range(3)))
    only_one = [r for r in scenario.feedback_of(range(3)) if r[0] == CREATORS[0].encode()]
    await produce(settings, settings.topic(PROMPT_FEEDBACK), only_one)
    quiet = [f"prompt-feedback/{p}" for p in range(settings.partitions) if p != busy]
    started = time.monotonic()
    await wait_until(
        lambda: all(worker.metric_sum("likeflow_source_idle", source=s) == 1 for s in quiet),
        settings.quality_idle_after_s + 30,
        "the quiet feedback partitions to be reported idle",
        worker,
    )
    await wait_until(
        lambda: worker.metric_sum("likeflow_creator_windows_closed_total") >= len(CREATORS),
        30,
        "windows to close",
        worker,
    )
    waited = time.monotonic() - started
    print(
        f"windows closed {waited:.1f} s after the last record (idle after {settings.quality_idle_after_s} s)"
    )
    assert worker.metric_sum("likeflow_source_idle", source=f"prompt-feedback/{busy}") == 0
