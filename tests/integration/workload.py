"""Seeded fault-test workload and its exact oracle: mappings, likes, feedback, duplicates, poison.

The oracle recomputes every expected output from the input with the job's own pure functions
(`decide`, the window math), in the order the worker must see the records: one producer, keyed
records, so each user's likes and each creator's events keep their produce order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from config import Settings
from likeflow.domain.decide import Emit, Skip, decide
from likeflow.domain.quality.windows import FIELD_OF_KIND, Counts
from likeflow.domain.user_state import UserState
from likeflow.policies import policies_from
from streams.events import FEEDBACK_KINDS, PRICED_KINDS, Like, Product, VideoMapping
from tests.integration.harness import Record, prompt_ids_of, pseudonymizer_for

HOUR_MS = 3_600_000
# The feedback kinds of the workload, clicks twice as often: every kind an app may report.
FEEDBACK_MIX = ("click", "click", *(k for k in FEEDBACK_KINDS if k != "click"))


@dataclass(frozen=True)
class Scale:
    """How big a run is: CI uses the small one, `make chaos` the large one."""

    likes: int
    users: int
    videos: int
    creators: int
    feedback_ratio: float = 0.5
    duplicate_ratio: float = 0.05
    poison_ratio: float = 0.0
    # T8: likes whose ts goes back up to 30 min, likes older than the user's dedupe horizon
    # (refused as too late), feedback for windows closed two days ago (dead-lettered as late),
    # and videos whose mapping is replaced while their likes are in flight.
    out_of_order_ratio: float = 0.0
    late_ratio: float = 0.0
    raced_videos: int = 0


@dataclass
class Workload:
    """Records to produce and the exact expected outputs."""

    mappings: list[Record] = field(default_factory=list)
    likes: list[Record] = field(default_factory=list)
    feedback: list[Record] = field(default_factory=list)
    poison: list[Record] = field(default_factory=list)
    expected_prompt_ids: set[str] = field(default_factory=set)
    # Likes of raced videos: like event_id -> the prompt ids it may produce (one product of the
    # mapping before or after the update: the join is processing-time, docs/events.md).
    raced: dict[str, set[str]] = field(default_factory=dict)
    raced_creators: set[str] = field(default_factory=set)
    late_feedback: list[Record] = field(default_factory=list)
    mapping_updates: list[Record] = field(default_factory=list)
    # Valid likes that produce no prompt, by reason (likeflow_likes_skipped_total{reason}).
    expected_skips: dict[str, int] = field(default_factory=dict)
    raced_likes: list[Record] = field(default_factory=list)
    # creator -> window start -> counts, in the form GET /creators/{id}/quality serves.
    expected_windows: dict[str, dict[int, dict[str, int]]] = field(default_factory=dict)

    def served_form(self) -> dict[str, list[dict[str, int]]]:
        """The expected `windows` list of every creator, oldest window first."""
        return {c: [w[s] for s in sorted(w)] for c, w in self.expected_windows.items()}


def _window(counts: dict[int, dict[str, int]], ts: int) -> dict[str, int]:
    start = ts - ts % HOUR_MS
    return counts.setdefault(start, {"start_ms": start, "end_ms": start + HOUR_MS, **Counts().to_dict()})


def _mapping(rng: random.Random, video: str, creator: str, ts: int) -> dict[str, Any]:
    products = [
        {
            "product_id": f"{video}-p{j}",
            "title": f"item {j} of {video}",
            "category": rng.choice(["dress", "shoes", "bag", "coat"]),
            "price_cents": rng.randint(990, 49_900),
            "certified": rng.random() > 0.05,
            "stock": rng.choice([0, 3, 20, 100]),
        }
        for j in range(rng.randint(1, 3))
    ]
    return {"video_id": video, "creator_id": creator, "ts": ts, "products": products}


POISON_VALUES: tuple[bytes, ...] = (
    b"\xff\xfe not utf-8",
    b'{"event_id": "p", "user_id": "u", "video_id": "v", "ts": NaN}',
    b'{"event_id": "p", "user_id": "u", "video_id": "v", "ts": ' + b"9" * 5000 + b"}",
    b"[" * 10_000 + b"]" * 10_000,
    b"{not json",
    b'{"event_id": 1}',
    b'{"event_id": "p", "user_id": "u", "video_id": "v", "ts": 253402300799000}',  # year 9999
    '{"event_id": "p\u202e", "user_id": "u", "video_id": "v", "ts": 1795000000000}'.encode(),
)


def poison_record(rng: random.Random, i: int, max_bytes: int) -> Record:
    """One record every decoder must dead-letter (never crash on)."""
    if i % (len(POISON_VALUES) + 1) == 0:
        big = orjson.dumps(
            {"event_id": f"big{i}", "user_id": "u", "video_id": "v", "ts": 1, "pad": "x" * max_bytes}
        )
        return b"u", big, [("origin", b"chaos")]
    return f"poison-{i}".encode(), rng.choice(POISON_VALUES), [("origin", b"chaos")]


def build(settings: Settings, scale: Scale, seed: int, base_ts: int) -> Workload:
    """Generate a workload over ~50 minutes of event time starting at `base_ts` (epoch ms).

    The span stays under one window plus the grace period, so no window closes during the run and
    no creator's weight changes: every expected value is exact and order-free. The T8 extras
    (`Scale.out_of_order_ratio`, `late_ratio`, `raced_videos`) keep that: late feedback is two
    days old (its window closed long ago), and raced videos have their own creators and users.
    """
    rng = random.Random(seed)
    guards, ranking = policies_from(settings)
    # The worker's own pseudonyms and prompt ids: the oracle's prompts are the worker's, byte for
    # byte but for emitted_ts.
    pseudonymize, prompt_ids = pseudonymizer_for(settings), prompt_ids_of(settings)
    wl = Workload()
    creators = [f"c{i}" for i in range(scale.creators)]
    videos: dict[str, VideoMapping] = {}
    for v in range(scale.videos):
        video = f"v{v}"
        body = _mapping(rng, video, rng.choice(creators), base_ts - HOUR_MS)
        wl.mappings.append((video.encode(), orjson.dumps(body), []))
        products = tuple(Product(**p) for p in body["products"])
        if products:
            videos[video] = VideoMapping(video, body["creator_id"], body["ts"], products)
    span_ms = 50 * 60_000
    states: dict[str, UserState] = {}
    emitted: list[tuple[str, str, int, str, str]] = []  # prompt_id, creator, like ts, user, product
    video_names = list(videos) or ["v0"]
    weights = [1.0 / (rank + 1) for rank in range(len(video_names))]
    for i in range(scale.likes):
        user = f"u{rng.randrange(scale.users)}"
        video = rng.choices(video_names, weights)[0]
        ts = base_ts + i * span_ms // max(1, scale.likes)
        if rng.random() < scale.out_of_order_ratio:
            ts -= rng.randint(1, 30 * 60_000)
        elif user in states and rng.random() < scale.late_ratio:
            ts = base_ts - 2 * 24 * HOUR_MS  # behind the user's dedupe horizon: refused
        record: Record = (
            user.encode(),
            orjson.dumps({"event_id": f"l{i}", "user_id": user, "video_id": video, "ts": ts}),
            [],
        )
        wl.likes.append(record)
        copies = 1
        if rng.random() < scale.duplicate_ratio:
            wl.likes.append(record)  # an upstream retry: same bytes, changes nothing
            copies = 2
        mapping = videos.get(video)
        if mapping is None:
            continue
        state = states.setdefault(user, UserState())
        decision = decide(
            state,
            Like(f"l{i}", pseudonymize(user), video, ts),
            mapping,
            creator_weight=1.0,
            now_ms=ts,
            guards=guards,
            ranking=ranking,
            prompt_ids=prompt_ids,
        )
        if not (isinstance(decision, Skip) and decision.reason.value in ("too_late", "rate_limited")):
            # Recorded in the user's state, prompted or not: a like of the creator's, once.
            _window(wl.expected_windows.setdefault(mapping.creator_id, {}), ts)["likes"] += 1
        if isinstance(decision, Emit):
            prompt = decision.prompt
            emitted.append((prompt.prompt_id, prompt.creator_id, ts, user, prompt.product_id))
        elif isinstance(decision, Skip):
            reason = decision.reason.value
            # A too-late like leaves no trace in the user's state, so its retry is refused again.
            count = copies if reason == "too_late" else 1
            wl.expected_skips[reason] = wl.expected_skips.get(reason, 0) + count
    wl.expected_prompt_ids = {p for p, _, _, _, _ in emitted}
    for _, creator, ts, _, _ in emitted:
        _window(wl.expected_windows.setdefault(creator, {}), ts)["prompts"] += 1
    for j, (prompt_id, creator, ts, user, product) in enumerate(emitted):
        if rng.random() >= scale.feedback_ratio:
            continue
        kind = rng.choice(FEEDBACK_MIX)
        amount = rng.randint(100, 50_000) if kind in PRICED_KINDS else None
        event: dict[str, Any] = {
            "event_id": f"f{j}",
            "prompt_id": prompt_id,
            "creator_id": creator,
            "product_id": product,
            "user_id": user,
            "kind": kind,
            "ts": ts + rng.randint(0, 60_000),
        }
        if amount is not None:
            event["amount_cents"] = amount
        row = _window(wl.expected_windows[creator], event["ts"])
        row[FIELD_OF_KIND[kind]] += 1
        row["gmv_cents"] += amount or 0
        record = (creator.encode(), orjson.dumps(event), [])
        wl.feedback.append(record)
        if rng.random() < scale.duplicate_ratio:
            wl.feedback.append(record)
    _late_feedback(rng, wl, scale, base_ts)
    _raced(rng, wl, scale, base_ts, span_ms, lambda e, p, c, u: prompt_ids.issue(e, p, c, pseudonymize(u)))
    poison_count = int(scale.likes * scale.poison_ratio)
    wl.poison = [poison_record(rng, k, settings.max_record_bytes) for k in range(poison_count)]
    return wl


def _late_feedback(rng: random.Random, wl: Workload, scale: Scale, base_ts: int) -> None:
    """Feedback two days old, after the normal feedback of the same creator: its window closed
    long ago on that creator-events partition, so it must be dead-lettered as late, not counted."""
    normal = list(wl.feedback)
    for k in range(int(len(normal) * scale.late_ratio)):
        key, value, _ = rng.choice(normal)
        assert value is not None
        event = orjson.loads(value)
        event.update(event_id=f"late{k}", ts=base_ts - 2 * 24 * HOUR_MS)
        wl.late_feedback.append((key, orjson.dumps(event), []))


def _raced(
    rng: random.Random,
    wl: Workload,
    scale: Scale,
    base_ts: int,
    span_ms: int,
    prompt_id: Callable[[str, str, str, str], str],
) -> None:
    """Videos of their own creators, each liked once by users of their own; the mapping is
    replaced (newer ts, another product) in the middle of the likes. Each like must produce
    exactly one prompt, for the product of either version."""
    for r in range(scale.raced_videos):
        video, creator = f"rv{r}", f"rc{r}"
        wl.raced_creators.add(creator)
        versions: list[Record] = []
        for version in (0, 1):
            product = {"product_id": f"{video}-p{version}", "title": "raced", "category": "dress",
                       "price_cents": 1990, "certified": True, "stock": 50}  # fmt: skip
            body = {
                "video_id": video,
                "creator_id": creator,
                "ts": base_ts - HOUR_MS + version,
                "products": [product],
            }
            versions.append((video.encode(), orjson.dumps(body), []))
        wl.mappings.append(versions[0])
        wl.mapping_updates.append(versions[1])
        for n in range(4):
            user, event_id = f"ru{r}-{n}", f"rl{r}-{n}"
            ts = base_ts + rng.randrange(span_ms)
            body = {"event_id": event_id, "user_id": user, "video_id": video, "ts": ts}
            wl.raced_likes.append((user.encode(), orjson.dumps(body), []))
            wl.raced[event_id] = {prompt_id(event_id, f"{video}-p{v}", creator, user) for v in (0, 1)}


def interleave(rng: random.Random, good: list[Record], bad: list[Record]) -> list[Record]:
    """`good` in its order with `bad` spread at random positions."""
    out = list(good)
    for record in bad:
        out.insert(rng.randrange(len(out) + 1), record)
    return out
