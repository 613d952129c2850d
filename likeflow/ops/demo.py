"""A synthetic feed for `likeflow demo`: a product catalogue, a stream of likes, and a live view."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config import Settings
from likeflow.connections import kafka_client_kwargs
from likeflow.ops.status import Samples, scrape
from streams.topics import (
    DEAD_LETTERS,
    LIKES,
    ORDER_PROMPTS,
    PRODUCT_CATALOGUE,
    VIDEO_CONTENT,
    VIDEO_PRODUCTS,
)

CATEGORIES = {
    "dress": ["碎花连衣裙", "法式茶歇裙", "针织长裙"],
    "sneakers": ["复古跑鞋", "小白鞋", "篮球鞋"],
    "lipstick": ["丝绒口红", "润唇膏", "唇釉"],
    "cookware": ["不粘炒锅", "铸铁锅", "砂锅"],
    "earbuds": ["降噪耳机", "运动耳机", "骨传导耳机"],
    "snacks": ["坚果礼盒", "牛肉干", "手工饼干"],
}
OFFERS = ("order", "order", "order", "booking", "trial")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Size and pace of the synthetic feed (rate in likes per second; duration 0 = forever)."""

    videos: int = 200
    creators: int = 20
    users: int = 500
    rate: float = 20.0
    duration_s: float = 0.0
    bad_ratio: float = 0.01
    seed: int = 7
    show: int = 10


def catalogue(opts: DemoOptions, now_ms: int) -> list[dict[str, Any]]:
    """Video -> products mappings; about 1 in 10 products is uncertified or out of stock."""
    rng = random.Random(opts.seed)
    videos = []
    for v in range(opts.videos):
        category = rng.choice(sorted(CATEGORIES))
        products = []
        for p in range(rng.randint(1, 4)):
            cat = category if p == 0 else rng.choice(sorted(CATEGORIES))
            products.append(
                {
                    "product_id": f"p{v:04d}-{p}",
                    "title": rng.choice(CATEGORIES[cat]),
                    "category": cat,
                    "price_cents": rng.randint(9, 899) * 100 + rng.choice((0, 90)),
                    "certified": rng.random() > 0.05,
                    "stock": 0 if rng.random() < 0.05 else rng.randint(1, 200),
                    "offer": rng.choice(OFFERS),
                }
            )
        videos.append(
            {
                "video_id": f"v{v:04d}",
                "creator_id": f"c{v % opts.creators:03d}",
                "ts": now_ms,
                "products": products,
            }
        )
    return videos


def bad_record(rng: random.Random) -> bytes:
    """One of the kinds of garbage real producers send."""
    return rng.choice(
        [
            b"{not json",
            b'{"event_id": "x", "user_id": "u1", "video_id": "v1", "ts": NaN}',
            b'{"event_id": "x", "user_id": "u1", "video_id": "v1"}',
            b'{"event_id": "x", "user_id": "u1", "video_id": "v1", "ts": 1, "action": "love"}',
            b"\xff\xfe garbage",
        ]
    )


def no_prompt_reasons(before: Samples, after: Samples) -> dict[str, int]:
    """Why the worker's valid likes got no prompt between two scrapes of its /metrics: the rise
    of `likeflow_likes_skipped_total` per reason (and redelivered likes), biggest first."""
    reasons: dict[str, int] = {}
    for name, label in (
        ("likeflow_likes_skipped_total", None),
        ("likeflow_duplicate_likes_total", "duplicate"),
    ):
        was = before.get(name, {})
        for labels, value in after.get(name, {}).items():
            rise = int(value - was.get(labels, 0.0))
            if rise > 0:
                reason = label or dict(labels).get("reason", "?")
                reasons[reason] = reasons.get(reason, 0) + rise
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


# Videos posted with content only (no `video-products` mapping): the content matcher proposes
# their products from the catalogue in data/matching/ (docs/matching.md); the demo sends them a
# share of the likes and shows their prompts, marked [content].
CONTENT_VIDEOS = [
    {"caption": "家人们谁懂啊！防晒霜天花板  闭眼入", "hashtags": ["必买清单", "好物推荐", "美妆", "安热沙"],
     "labels": [{"label": "户外", "confidence": 0.64}]},
    {"caption": "今天给大家分享的小裙子，太可了🌟🤩", "hashtags": ["dress", "zara"],
     "labels": [{"label": "连衣裙", "confidence": 0.92}]},
    {"caption": "卡骆驰 粉色洞洞真实使用感受 🥹狠狠种草了", "hashtags": ["鞋子分享", "穿搭", "拖鞋"],
     "labels": [{"label": "鞋", "confidence": 0.8}]},
    {"caption": "第N次回购supor 火红点煎锅了👍救命", "hashtags": ["抖音好物", "平价好物", "做饭"],
     "labels": [{"label": "锅", "confidence": 0.79}]},
    {"caption": "开箱 久阳 豆浆机 unboxing ‼️👀👀💕", "hashtags": [],
     "labels": [{"label": "家电", "confidence": 0.73}]},
]  # fmt: skip
CONTENT_LIKE_SHARE = 0.1
DEMO_CATALOGUE = Path(__file__).resolve().parents[2] / "data" / "matching" / "catalogue.jsonl"


def content_videos(opts: DemoOptions, now_ms: int) -> list[dict[str, Any]]:
    """The `video-content` records of the content-only videos (`vc0`, `vc1`, ...)."""
    return [
        {"video_id": f"vc{i}", "creator_id": f"c{i % opts.creators:03d}", "ts": now_ms, **body}
        for i, body in enumerate(CONTENT_VIDEOS)
    ]


class LiveView:
    """Prints prompts as they arrive and a summary line every few seconds: what was sent, what
    came back, and why the other likes got no prompt (from the worker's metrics)."""

    def __init__(self, show: int) -> None:
        self.likes = 0
        self.bad = 0
        self.prompts = 0
        self.dead_letters = 0
        # Likes without a prompt by reason since the feed started; None: the worker's metrics
        # could not be read.
        self.no_prompt: dict[str, int] | None = {}
        self._baseline: Samples | None = None
        self._show = show
        self._started = time.monotonic()
        self.content_prompts = 0

    def on_metrics(self, samples: Samples | None) -> None:
        """A scrape of the worker's /metrics (None if it failed); the first is the baseline."""
        if samples is None:
            self.no_prompt = None
        elif self._baseline is None:
            self._baseline, self.no_prompt = samples, {}
        else:
            self.no_prompt = no_prompt_reasons(self._baseline, samples)

    def on_prompt(self, value: bytes) -> None:
        self.prompts += 1
        p = orjson.loads(value)
        content = p.get("source") == "content"
        self.content_prompts += content
        if self.prompts <= self._show or self.prompts % 100 == 0 or (content and self.content_prompts <= 5):
            lag_ms = p["emitted_ts"] - p["like_ts"]
            print(
                f"  prompt #{self.prompts}  {p['user_id']} liked {p['video_id']} -> {p['text']}  "
                f"(score {p['score']}, {lag_ms} ms after the like)" + ("  [content]" if content else ""),
                flush=True,
            )

    def summary(self) -> str:
        elapsed = time.monotonic() - self._started
        if self.no_prompt is None:
            why = "no prompt: ? (worker metrics unreachable)"
        else:
            reasons = ", ".join(f"{reason} {n}" for reason, n in self.no_prompt.items())
            why = f"no prompt {sum(self.no_prompt.values())}" + (f": {reasons}" if reasons else "")
        return (
            f"[demo {elapsed:6.0f}s] likes sent {self.likes} (+{self.bad} bad) | "
            f"prompts out {self.prompts} ({self.content_prompts} from content) | {why} | "
            f"dead letters {self.dead_letters}"
        )


async def read_metrics(url: str) -> Samples | None:
    """The worker's /metrics, or None when it does not answer (the demo goes on without)."""
    try:
        return await asyncio.to_thread(scrape, url, 2.0)
    except (OSError, ValueError):
        return None


async def run_demo(settings: Settings, opts: DemoOptions) -> LiveView:
    """Publish the catalogue, then likes at `opts.rate`/s while showing prompts and dead letters."""
    view = LiveView(opts.show)
    metrics_url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    view.on_metrics(await read_metrics(metrics_url))  # the baseline, before the first like
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), linger_ms=5)
    consumer = AIOKafkaConsumer(
        settings.topic(ORDER_PROMPTS),
        settings.topic(DEAD_LETTERS),
        **kafka_client_kwargs(settings),
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    watcher = asyncio.create_task(_watch(consumer, view, settings))
    try:
        now_ms = int(time.time() * 1000)
        videos = catalogue(opts, now_ms)
        for video in videos:
            await producer.send(
                settings.topic(VIDEO_PRODUCTS), orjson.dumps(video), key=video["video_id"].encode()
            )
        contents = content_videos(opts, now_ms) if DEMO_CATALOGUE.exists() else []
        for line in DEMO_CATALOGUE.read_text().splitlines() if contents else []:
            item = orjson.loads(line)
            await producer.send(
                settings.topic(PRODUCT_CATALOGUE), line.encode(), key=item["product_id"].encode()
            )
        for content in contents:
            await producer.send(
                settings.topic(VIDEO_CONTENT), orjson.dumps(content), key=content["video_id"].encode()
            )
        await producer.flush()
        if contents:
            print(
                f"[demo] published the catalogue of {DEMO_CATALOGUE.name} and {len(contents)} videos "
                f"with content only ({', '.join(c['video_id'] for c in contents)}) to "
                f"{settings.topic(VIDEO_CONTENT)}: their prompts come from the content matcher",
                flush=True,
            )
        print(
            f"[demo] published {len(videos)} video->product mappings to "
            f"{settings.topic(VIDEO_PRODUCTS)}; sending likes at {opts.rate:g}/s to "
            f"{settings.topic(LIKES)} (Ctrl-C to stop)",
            flush=True,
        )
        await _send_likes(producer, settings, opts, view, len(videos), metrics_url, len(contents))
        await asyncio.sleep(2)  # let the last prompts arrive
        view.on_metrics(await read_metrics(metrics_url))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await producer.stop()
        await consumer.stop()
    return view


async def _send_likes(
    producer: AIOKafkaProducer,
    settings: Settings,
    opts: DemoOptions,
    view: LiveView,
    n_videos: int,
    metrics_url: str,
    n_content: int = 0,
) -> None:
    rng = random.Random(opts.seed + 1)
    topic = settings.topic(LIKES)
    deadline = time.monotonic() + opts.duration_s if opts.duration_s else float("inf")
    interval = 1.0 / opts.rate
    next_summary = time.monotonic() + 5
    while time.monotonic() < deadline:
        user = f"u{rng.randint(0, opts.users - 1):05d}"
        if rng.random() < opts.bad_ratio:
            await producer.send(topic, bad_record(rng), key=user.encode())
            view.bad += 1
        else:
            # Popularity is skewed: a few videos get most of the likes.
            video = f"v{min(int(rng.paretovariate(1.2)) - 1, n_videos - 1):04d}"
            if n_content and rng.random() < CONTENT_LIKE_SHARE:
                video = f"vc{rng.randrange(n_content)}"
            like = {
                "event_id": uuid.uuid4().hex,
                "user_id": user,
                "video_id": video,
                "ts": int(time.time() * 1000),
            }
            await producer.send(topic, orjson.dumps(like), key=user.encode())
            view.likes += 1
        if time.monotonic() >= next_summary:
            view.on_metrics(await read_metrics(metrics_url))
            print(view.summary(), flush=True)
            next_summary += 5
        await asyncio.sleep(interval)
    await producer.flush()


async def _watch(consumer: AIOKafkaConsumer, view: LiveView, settings: Settings) -> None:
    prompts_topic = settings.topic(ORDER_PROMPTS)
    async for record in consumer:
        if record.topic == prompts_topic and record.value is not None:
            view.on_prompt(record.value)
        else:
            view.dead_letters += 1
