"""Random records (any time, size or character) through the decoders, the domain and the handlers:
no clock passes now + skew, no state passes its cap, no exception escapes, nothing is dropped."""

from __future__ import annotations

import time
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.testing import in_process
from config import load_settings
from likeflow.domain.decide import Duplicate, GuardPolicy, decide
from likeflow.domain.privacy import apply_consent, apply_erasure, needs_state
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.domain.quality.sources import SourceReports
from likeflow.domain.ranking import RankingPolicy
from likeflow.domain.user_state import UserState
from streams.events import CountBatch, Invalid, Like, UserConsent, UserErasure
from streams.validation import InputLimits, decode_consent, decode_erasure, decode_like
from tests.factories import PROMPT_IDS, mapping, mapping_json, product
from tests.unit.loop import run

HOUR = 3_600_000
NOW = int(time.time() * 1000)
LIMITS = InputLimits().at(NOW)
GUARDS = GuardPolicy(max_likes_per_user=25)
PSEUDONYMIZE = Pseudonymizer(b"k" * 32, 1)
VIDEOS = {f"v{i}": mapping(f"v{i}", product(f"p{i}"), product(f"q{i}", category="bag")) for i in range(3)}

# What a client can put in a field: ids of any characters (controls, bidi overrides, zero-width
# characters, braces, long), times from the epoch's far past to year 9999 and beyond.
weird = st.sampled_from(["\u202e", "\u200b", "\u200d", "\x00", "\x1f", "{", "}", " ", "\u3000", "é", "😀"])
texts = st.one_of(
    st.text(max_size=20),
    st.lists(st.one_of(weird, st.text(max_size=3)), max_size=8).map("".join),
    st.text(alphabet="ab", min_size=100, max_size=300),
    st.sampled_from(["u1", "u2", "u3", "e1", "e2", "v0", "v1", "v2"]),
)
times = st.one_of(
    st.integers(NOW - 40 * 24 * HOUR, NOW + 2 * HOUR),
    st.integers(-(2**63), 2**63 - 1),
    st.just(253_402_300_799_000),
    st.sampled_from([NOW, NOW + LIMITS.max_skew_ms, NOW + LIMITS.max_skew_ms + 1]),
)
values = st.one_of(texts, times, st.booleans(), st.none())


def record(fields: dict[str, Any], key_field: str) -> st.SearchStrategy[tuple[bytes | None, bytes | None]]:
    body = st.fixed_dictionaries(fields, optional={"pad": st.text(alphabet="x", max_size=70_000)})

    def encode(obj: dict[str, Any]) -> tuple[st.SearchStrategy[bytes | None], bytes]:
        value = orjson.dumps(obj)
        own = obj.get(key_field)
        keys: list[st.SearchStrategy[bytes | None]] = [st.none(), st.binary(max_size=1200)]
        if isinstance(own, str):
            keys.append(st.just(own.encode("utf-8", "surrogatepass")))
        return st.one_of(*keys), value

    return body.map(encode).flatmap(lambda kv: st.tuples(kv[0], st.just(kv[1])))


likes = record(
    {
        "event_id": texts,
        "user_id": texts,
        "video_id": st.one_of(st.sampled_from(list(VIDEOS)), texts),
        "ts": times,
    },
    "user_id",
)
# Well-formed likes of a few users on the mapped videos, so that the decision itself is driven too.
good_likes = st.builds(
    lambda user, event, video, ts: (
        user.encode(),
        orjson.dumps({"event_id": event, "user_id": user, "video_id": video, "ts": ts}),
    ),
    st.sampled_from(["u1", "u2", "u3"]),
    st.text(alphabet="abcdef0123456789", min_size=1, max_size=60),
    st.sampled_from(list(VIDEOS)),
    st.integers(NOW - 30 * HOUR, NOW + LIMITS.max_skew_ms),
)
any_likes = st.one_of(likes, good_likes)
consents = record({"user_id": texts, "prompts": values, "personalized": values, "ts": times}, "user_id")
erasures = record({"user_id": texts, "ts": times}, "user_id")
feedback = record(
    {"event_id": texts, "prompt_id": texts, "creator_id": texts, "product_id": texts, "user_id": texts,
     "kind": st.sampled_from(["click", "order", "return", "complaint", "booking", "trial", "cancellation",
                              "no_show", "buy"]), "ts": times,
     "amount_cents": st.one_of(st.none(), st.integers(-10, 2**60))},
    "creator_id",
)  # fmt: skip
events = st.lists(
    st.one_of(any_likes.map(lambda r: ("like", r)), consents.map(lambda r: ("consent", r)),
              erasures.map(lambda r: ("erasure", r))),
    max_size=60,
)  # fmt: skip


def check_state(state: UserState) -> None:
    assert state.last_active_ts <= LIMITS.max_ts
    assert all(ts <= LIMITS.max_ts for ts in state.seen.values())
    assert len(state.seen) <= GUARDS.max_likes_per_user
    # Every id it remembers is short: a digest stands for a long one.
    assert all(len(e) <= 40 for e in state.seen)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_no_record_moves_a_clock_past_now_plus_skew_or_a_state_past_its_cap(
    items: list[tuple[str, tuple[bytes | None, bytes | None]]],
) -> None:
    states: dict[str, UserState] = {}
    reports = SourceReports("likes", 4, lambda creator: 0)
    for kind, (key, value) in items:
        if kind == "like":
            decoded: Any = decode_like(key, value, LIMITS)
        elif kind == "consent":
            decoded = decode_consent(key, value, LIMITS)
        else:
            decoded = decode_erasure(key, value, LIMITS)
        if isinstance(decoded, Invalid):
            assert decoded.reason.value and decoded.error
            continue
        assert decoded.ts <= LIMITS.max_ts
        user = PSEUDONYMIZE(decoded.user_id)
        if isinstance(decoded, Like):
            reports.observe(0, decoded.ts)
            mp = VIDEOS.get(decoded.video_id)
            if mp is None:
                continue
            state = states.setdefault(user, UserState())
            result = decide(
                state,
                Like(decoded.event_id, user, decoded.video_id, decoded.ts),
                mp,
                creator_weight=1.0,
                now_ms=NOW,
                guards=GUARDS,
                ranking=RankingPolicy(),
                prompt_ids=PROMPT_IDS,
            )
            assert not isinstance(result, Duplicate) or state.remembers(decoded.event_id)
        elif isinstance(decoded, UserConsent):
            if user in states or needs_state(decoded):
                apply_consent(states.setdefault(user, UserState()), decoded)
        elif isinstance(decoded, UserErasure):
            if user in states:
                states[user] = apply_erasure(states[user], decoded)
        assert all(clock <= LIMITS.max_ts for clock in reports.clocks.values())
    for state in states.values():
        check_state(state)


def test_a_state_at_its_cap_stays_below_the_changelog_limit() -> None:
    """The worst state the defaults allow fits one changelog record: every like remembered
    (40-character ASCII ids, the longest kept as they are), and the prompts of the first likes of
    each hour with every id and title of the longest length in 4-byte characters (emoji), which
    the sent prompts keep as they are; the widest profile."""
    defaults = load_settings({}, user_key="k" * 48)
    guards = GuardPolicy(
        max_likes_per_user=defaults.max_likes_per_user, prompts_per_hour=defaults.prompts_per_hour
    )
    state = UserState()
    wide = "\U0001f600"  # 4 bytes in UTF-8
    ids, titles = defaults.max_id_chars, defaults.max_title_chars
    start = NOW - 23 * HOUR
    likes = defaults.max_likes_per_user + 50
    per_hour: dict[int, int] = {}
    for i in range(likes):
        ts = start + i * (23 * HOUR // likes)
        hour = ts // HOUR
        per_hour[hour] = per_hour.get(hour, 0) + 1
        prompted = per_hour[hour] <= defaults.prompts_per_hour
        event_id = f"{i:06d}".ljust(ids, wide) if prompted else f"{i:040d}"
        products = [
            product(f"{i}-{j}".ljust(ids, wide), title=wide * titles, category=f"{i % 40}{j}".ljust(64, wide))
            for j in range(3)
        ]
        mp = mapping(f"{i % 97}".ljust(ids, wide), *products, creator_id=wide * ids)
        decide(
            state,
            Like(event_id, "v1." + "a" * 32, mp.video_id, ts),
            mp,
            creator_weight=1.0,
            now_ms=ts,
            guards=guards,
            ranking=RankingPolicy(),
            prompt_ids=PROMPT_IDS,
        )
    assert len(state.seen) == defaults.max_likes_per_user
    assert len(state.sent) >= 23 * defaults.prompts_per_hour
    assert len(state.to_json()) <= defaults.user_state_worst_bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_likes, max_size=60), st.lists(feedback, max_size=20))
def test_no_exception_escapes_a_handler_and_every_record_is_accounted_for(
    like_records: list[tuple[bytes | None, bytes | None]],
    feedback_records: list[tuple[bytes | None, bytes | None]],
) -> None:
    mappings = [(f"v{i}".encode(), mapping_json(f"v{i}", ts=NOW - HOUR)) for i in range(3)]
    worker = in_process(mappings=mappings)
    registry = worker.ctx.metrics.registry

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for m in registry.collect()
            for s in m.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    run(worker.run("likes", like_records))
    run(worker.run("prompt-feedback", feedback_records))
    sent = worker.producer.sent
    # Every like is a prompt, a skip, a duplicate or a dead letter.
    decided = sum(
        total(name)
        for name in (
            "likeflow_prompts_emitted_total",
            "likeflow_likes_skipped_total",
            "likeflow_duplicate_likes_total",
        )
    )
    assert decided + total("likeflow_dead_letters_total", topic="likes") == len(like_records)
    # Every feedback record is forwarded to the counters or dead-lettered.
    forwarded = sum(
        len(section.events)
        for topic, _, _, v, _ in sent
        if topic == "creator-events"
        for section in CountBatch.from_json(v or b"").sections
        if section.source.startswith("prompt-feedback")
    )
    assert forwarded + total("likeflow_dead_letters_total", topic="prompt-feedback") == len(feedback_records)
    # Dead letters fit; no clock or state passes the ceiling (the handlers read the clock a few
    # ms after this module did).
    dead = [(k, v) for topic, _, k, v, _ in sent if topic == "likeflow-dlq"]
    assert all(len(v or b"") <= worker.settings.max_record_bytes for _, v in dead)
    assert all(len(k or b"") <= worker.settings.max_key_bytes for k, _ in dead)
    ceiling = int(time.time() * 1000) + LIMITS.max_skew_ms
    assert all(clock <= ceiling for clock in worker.handlers.like_sources.clocks.values())
    for partition in range(worker.settings.partitions):
        for user in worker.ctx.user_states.keys(partition):
            state = worker.ctx.user_states.get(partition, user)
            assert state is not None and state.last_active_ts <= ceiling
