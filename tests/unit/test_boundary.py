"""The input boundary's rules, one by one: limits, text, time, dead letters that fit, bounded state."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import pytest

from config import ConfigError, load_settings
from likeflow.domain.decide import Emit, GuardPolicy, NoPromptReason, Skip, decide
from likeflow.domain.privacy import needs_state
from likeflow.domain.prompt_ids import PromptIds, is_legacy_id
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.domain.ranking import HOUR_MS, RankingPolicy
from likeflow.domain.user_state import ConsentState, UserState, seen_key
from likeflow.engine import DeliveryError, KeyPartitioner, OutputBatch
from likeflow.engine.testing import FakeProducer
from likeflow.metrics import Metrics
from likeflow.ops.backfill import ErasureFilter, IssuedPrompts, SourcedEvent, SourcedRecord
from likeflow.replicas.video_mappings import VideoMappings, footprint
from likeflow.sinks.dead_letter_records import MAX_ORIGINAL_HEADER_BYTES, dead_letter_headers, fitted
from likeflow.sinks.dead_letters import DeadLetterSink
from streams.events import CountBatch, CountRecord, CreatorEvent, DeadLetterReason, Invalid, UserConsent
from streams.validation import (
    InputLimits,
    decode_feedback,
    decode_like,
    decode_mapping,
    id_problem,
    text_problem,
)
from tables.codecs import UserStateCodec
from tests.factories import BASE_TS, LIMITS, PROMPT_IDS, like, like_json, mapping, mapping_json, product

R = DeadLetterReason


# --- time ---


def test_a_ts_beyond_now_plus_skew_is_future_ts_and_at_it_is_accepted() -> None:
    limits = InputLimits(max_skew_ms=300_000).at(BASE_TS)
    assert not isinstance(decode_like(b"u1", like_json(ts=BASE_TS + 300_000), limits), Invalid)
    late = decode_like(b"u1", like_json(ts=BASE_TS + 300_001), limits)
    assert isinstance(late, Invalid) and late.reason is R.FUTURE_TS
    assert "300 s" in late.error and "LIKEFLOW_MAX_CLOCK_SKEW_S" in late.error
    year_9999 = decode_mapping(b"v1", mapping_json(ts=253_402_300_799_000), limits)
    assert isinstance(year_9999, Invalid) and year_9999.reason is R.FUTURE_TS


def test_limits_without_a_clock_accept_no_time() -> None:
    result = decode_like(b"u1", like_json(), InputLimits())
    assert isinstance(result, Invalid) and result.reason is R.FUTURE_TS


# --- text and keys ---


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("u1", False),
        ("user 1", False),
        ("用户", False),
        ("u1\u200b", True),  # zero-width space (Cf)
        ("u\u202e1", True),  # right-to-left override (Cf)
        ("u\x001", True),  # control (Cc)
        ("u\u00a01", True),  # no-break space (Zs): not printable
    ],
)
def test_ids_must_be_printable(value: str, bad: bool) -> None:
    assert (id_problem(value) is not None) is bad


def test_braces_are_refused_in_ids_that_are_hash_tags() -> None:
    assert id_problem("c}1", tag=True) and id_problem("{c", tag=True)
    assert id_problem("c}1") is None
    refused = decode_mapping(b"v1", mapping_json(creator_id="}c"), LIMITS)
    assert isinstance(refused, Invalid) and "hash tag" in refused.error


@pytest.mark.parametrize(
    ("title", "bad"),
    [
        ("碎花连衣裙\u3000夏季", False),  # ideographic space
        ("👨\u200d👩\u200d👧 family", False),  # the emoji joiner
        ("dress \u202e00.99¥", True),  # an RLO would reverse the price next to it
        ("dress\u200b", True),
        ("line\nbreak", True),
    ],
)
def test_titles_refuse_controls_and_format_characters(title: str, bad: bool) -> None:
    assert (text_problem(title) is not None) is bad
    decoded = decode_mapping(b"v1", mapping_json(products=[_product(title=title)]), LIMITS)
    assert isinstance(decoded, Invalid) is bad


def _product(**over: Any) -> dict[str, Any]:
    return {"product_id": "p1", "title": "t", "category": "dress", "price_cents": 100, "certified": True,
            "stock": 1, **over}  # fmt: skip


def test_an_oversized_key_is_refused_before_anything_else() -> None:
    result = decode_like(b"u" * 513, like_json(user_id="u" * 513), LIMITS)
    assert isinstance(result, Invalid) and result.reason is R.OVERSIZED and "key" in result.error


def test_order_amounts_have_a_ceiling() -> None:
    def order(amount: int) -> bytes:
        body = {"event_id": "f1", "prompt_id": "p", "creator_id": "c1", "product_id": "p1", "user_id": "u1",
                "kind": "order", "ts": BASE_TS, "amount_cents": amount}  # fmt: skip
        return orjson.dumps(body)

    assert not isinstance(decode_feedback(b"c1", order(LIMITS.max_order_cents), LIMITS), Invalid)
    over = decode_feedback(b"c1", order(LIMITS.max_order_cents + 1), LIMITS)
    assert isinstance(over, Invalid) and "LIKEFLOW_MAX_ORDER_CENTS" in over.error


# --- dead letters that always fit ---


def test_a_dead_letter_cuts_what_is_too_large_and_says_what_it_was() -> None:
    key, value, extra = fitted(b"k" * 1000, b"v" * 5000, max_key_bytes=512, max_value_bytes=1024)
    assert key == b"k" * 512 and value == b"v" * 1024
    headers = dict(extra)
    assert headers["likeflow.dlq.key_size"] == b"1000" and headers["likeflow.dlq.value_size"] == b"5000"
    assert headers["likeflow.dlq.value_sha256"] == hashlib.sha256(b"v" * 5000).hexdigest().encode()
    assert fitted(b"k", b"v", max_key_bytes=512, max_value_bytes=1024) == (b"k", b"v", [])


def test_original_headers_are_capped() -> None:
    many = [(f"h{i}", b"x" * 1000) for i in range(40)]
    headers = dead_letter_headers(many, reason="r", error="e", topic="t", partition=0, offset=0)
    kept = [h for h in headers if h[0].startswith("h")]
    assert sum(len(n) + len(v) for n, v in kept) <= MAX_ORIGINAL_HEADER_BYTES
    assert dict(headers)["likeflow.dlq.headers_dropped"] == str(40 - len(kept)).encode()


class _Record:
    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset = topic, 0, 7
        self.key, self.value, self.headers = key, value, None


def test_feedback_dead_letters_keep_no_raw_user_id_and_their_creator_key() -> None:
    pseudonymize = Pseudonymizer(b"k" * 32, 1)
    producer = FakeProducer()
    sink = DeadLetterSink(
        "dlq", KeyPartitioner(4), Metrics(), ["likes"], pseudonymize, user_field_topics=["fb"]
    )
    outputs = OutputBatch(producer)
    value = orjson.dumps({"user_id": "alice", "creator_id": "c1", "kind": "buy"})
    sink.add(outputs, _Record("fb", b"c1", value), Invalid(R.UNKNOWN_ENUM, "kind"))
    asyncio.run(_deliver(outputs))
    ((_, _, key, sent, _),) = producer.sent
    assert key == b"c1" and sent is not None and b"alice" not in sent
    assert orjson.loads(sent)["user_id"] == pseudonymize("alice")


async def _deliver(outputs: OutputBatch) -> int:
    await outputs.send()
    return await outputs.delivered()


def test_a_dead_letter_the_broker_refuses_is_counted_and_the_others_go_out() -> None:
    producer = FakeProducer()
    producer.max_value_bytes = 100
    metrics = Metrics()
    sink = DeadLetterSink("dlq", lambda key: 0, metrics, max_value_bytes=10_000)
    outputs = OutputBatch(producer)
    for i, size in enumerate((10, 5000, 20)):
        sink.add(outputs, _Record("likes", f"u{i}".encode(), b"x" * size), Invalid(R.MALFORMED_JSON, "x"))
    asyncio.run(_deliver(outputs))
    assert [len(v or b"") for *_, v, _ in producer.sent] == [10, 20]
    assert metrics.registry.get_sample_value("likeflow_dead_letters_refused_total", {"topic": "likes"}) == 1


def test_other_outputs_the_broker_refuses_still_fail_the_batch() -> None:
    producer = FakeProducer()
    producer.max_value_bytes = 100
    outputs = OutputBatch(producer)
    outputs.add("order-prompts", 0, b"k", b"x" * 500, None)
    with pytest.raises(DeliveryError):
        asyncio.run(_deliver(outputs))


# --- bounded caches ---


def test_long_keys_and_ids_are_not_cached() -> None:
    partitioner = KeyPartitioner(4, max_cached_bytes=64)
    partitioner(b"k" * 65)
    partitioner(b"short")
    assert list(partitioner._cache) == [b"short"]
    pseudonymize = Pseudonymizer(b"k" * 32, 1)
    pseudonymize("u" * 10_000)
    assert pseudonymize._recent == {}


# --- prompt ids ---


def test_prompt_ids_verify_only_for_their_creator_product_and_user() -> None:
    pid = PROMPT_IDS.issue("e1", "p1", "c1", "v1.user")
    assert len(pid) == 32 and pid == PROMPT_IDS.issue("e1", "p1", "c1", "v1.user")
    assert pid[:16] == PromptIds.nonce("e1", "p1")
    assert PROMPT_IDS.verify(pid, "c1", "p1", "v1.user")
    assert not PROMPT_IDS.verify(pid, "c2", "p1", "v1.user")
    assert not PROMPT_IDS.verify(pid, "c1", "p2", "v1.user")
    assert not PROMPT_IDS.verify(pid, "c1", "p1", "v1.other")
    assert not PromptIds(b"another key of 32 bytes, or more").verify(pid, "c1", "p1", "v1.user")
    tampered = pid[:-1] + ("0" if pid[-1] != "0" else "1")
    assert not PROMPT_IDS.verify(tampered, "c1", "p1", "v1.user")
    for junk in ("", "x" * 32, pid.upper(), pid + "0"):
        assert not PROMPT_IDS.verify(junk, "c1", "p1", "v1.user")


def test_legacy_ids_have_the_uuid5_shape() -> None:
    import uuid

    assert is_legacy_id(uuid.uuid5(uuid.NAMESPACE_URL, "x").hex)
    assert not is_legacy_id(uuid.uuid4().hex) and not is_legacy_id("p1")


def test_a_derived_key_is_no_pseudonym() -> None:
    pseudonymize = Pseudonymizer(b"k" * 32, 1)
    derived = pseudonymize.derive("prompt-ids v1")
    assert len(derived) == 32 and derived.hex()[:32] not in pseudonymize("prompt-ids v1")
    assert derived != Pseudonymizer(b"j" * 32, 1).derive("prompt-ids v1")


# --- bounded user state ---


def _decide(state: UserState, event_id: str, ts: int, guards: GuardPolicy) -> Any:
    mp = mapping("v1", product("a"), product("b", category="bag"))
    return decide(state, like(event_id, ts=ts), mp, creator_weight=1.0, now_ms=ts, guards=guards,
                  ranking=RankingPolicy(), prompt_ids=PROMPT_IDS)  # fmt: skip


def test_a_user_at_the_cap_is_rate_limited_until_the_horizon_frees_room() -> None:
    guards = GuardPolicy(max_likes_per_user=5, prompts_per_hour=100)
    state = UserState()
    for i in range(5):
        _decide(state, f"e{i}", BASE_TS + i, guards)
    assert _decide(state, "e5", BASE_TS + 10, guards) == Skip(NoPromptReason.RATE_LIMITED)
    assert len(state.seen) == 5 and not state.remembers("e5")
    # A day of the user's own event time later the old likes are pruned: room again.
    assert isinstance(_decide(state, "e6", BASE_TS + 25 * HOUR_MS, guards), Emit)
    assert len(state.seen) == 1


def test_long_event_ids_are_remembered_as_digests() -> None:
    state = UserState()
    long_id = "e" * 128
    _decide(state, long_id, BASE_TS, GuardPolicy())
    assert list(state.seen) == [seen_key(long_id)] and len(seen_key(long_id)) == 25
    assert state.remembers(long_id)
    # 40 characters of 4 bytes each are 160 bytes in the changelog: digested too.
    wide = "\U0001f600" * 40
    assert seen_key(wide).startswith("#") and seen_key("e" * 40) == "e" * 40
    legacy = UserState(seen={long_id: BASE_TS})  # written before ids were digested
    assert legacy.remembers(long_id)


def test_a_state_from_year_9999_is_repaired_when_read() -> None:
    year_9999 = 253_402_300_799_000
    stored = UserState(
        seen={"e1": year_9999},
        affinity={"dress": (1.0, year_9999)},
        high_ts=year_9999,
        consent=ConsentState(False, True, year_9999),
        erased_ts=year_9999,
    )
    repaired: list[int] = []
    codec = UserStateCodec(lambda: BASE_TS, lambda: repaired.append(1))
    state = codec.decode(stored.to_json())
    assert repaired == [1]
    assert state.high_ts == state.erased_ts == BASE_TS and state.consent == ConsentState(False, True, BASE_TS)
    assert state.seen == {"e1": BASE_TS} and state.affinity == {"dress": (1.0, BASE_TS)}
    assert codec.decode(state.to_json()) == state and repaired == [1]


def test_only_a_refusal_needs_state_for_an_unknown_user() -> None:
    assert not needs_state(UserConsent("u", True, True, BASE_TS))
    assert needs_state(UserConsent("u", False, True, BASE_TS))
    assert needs_state(UserConsent("u", True, False, BASE_TS))


def test_settings_that_allow_a_state_over_the_record_limit_are_refused() -> None:
    assert load_settings({}).user_state_worst_bytes < 900_000
    with pytest.raises(ConfigError, match="MAX_LIKES_PER_USER"):
        load_settings({}, max_likes_per_user=50_000)
    with pytest.raises(ConfigError, match="MAX_RECORD_BYTES"):
        load_settings({}, max_record_bytes=1_000_000)


# --- the mapping replica's cap ---


def test_the_replica_refuses_new_videos_at_its_cap_but_updates_held_ones() -> None:
    one = footprint(len(mapping_json("v1")), 1)
    refused: list[int] = []
    replica = VideoMappings(LIMITS, max_bytes=2 * one + 10, on_refused=lambda: refused.append(1))
    replica.apply(b"v1", mapping_json("v1"))
    replica.apply(b"v2", mapping_json("v2"))
    replica.apply(b"v3", mapping_json("v3"))
    assert replica.get("v3") is None and refused == [1] and len(replica) == 2
    replica.apply(b"v1", mapping_json("v1", ts=BASE_TS + 1, creator_id="c9"))
    held = replica.get("v1")
    assert held is not None and held.creator_id == "c9"
    replica.apply(b"v2", None)
    replica.apply(b"v3", mapping_json("v3"))
    assert replica.get("v3") is not None and replica.bytes <= 2 * one + 10


# --- the erasure ledger in recomputations ---


def test_a_backfill_leaves_out_the_events_of_users_erased_since() -> None:
    pseudonymize = Pseudonymizer(b"k" * 32, 1)
    gone = pseudonymize("gone")
    erasures = ErasureFilter({gone: BASE_TS}, pseudonymize)

    def event(user: str, ts: int) -> CreatorEvent:
        return CreatorEvent(f"e-{user}-{ts}", "p", "c1", "p1", user, "click", ts)

    assert erasures.keep(SourcedEvent(event("gone", BASE_TS), None)) is None  # raw id, as archived
    after = SourcedEvent(event(gone, BASE_TS + 1), None)
    assert erasures.keep(after) is after
    record = CountRecord("likes/0", BASE_TS + 5, [event(gone, BASE_TS - 1), event("v1.other", BASE_TS)],
                         [BASE_TS - 1, BASE_TS], offsets=[3, 4])  # fmt: skip
    kept = erasures.keep(SourcedRecord(record, 0, 9))
    assert isinstance(kept, SourcedRecord) and isinstance(kept.record, CountRecord) and kept.offset == 9
    assert [e.user_id for e in kept.record.events] == ["v1.other"]
    assert (kept.record.clocks, kept.record.offsets, kept.record.clock) == ([BASE_TS], [4], BASE_TS + 5)
    assert erasures.left_out == 2
    assert ErasureFilter({}, pseudonymize).keep(SourcedRecord(record, 0, 9)) is not None
    # A batched record: each section loses its erased users' events, the sections stay.
    clean = CountRecord("prompt-feedback/0", BASE_TS, [event("v1.other", BASE_TS)], [BASE_TS])
    batched = erasures.keep(SourcedRecord(CountBatch([record, clean]), 0, 10))
    assert isinstance(batched, SourcedRecord) and isinstance(batched.record, CountBatch)
    assert [[e.user_id for e in s.events] for s in batched.record.sections] == [["v1.other"], ["v1.other"]]
    assert batched.record.sections[1] is clean


def test_a_held_video_that_grows_past_the_cap_is_dropped_not_kept_stale() -> None:
    small = mapping_json("v1")
    replica = VideoMappings(LIMITS, max_bytes=footprint(len(small), 1) + 100)
    replica.apply(b"v1", small)
    big = mapping_json("v1", ts=BASE_TS + 1, products=[_product(product_id=f"p{i}") for i in range(5)])
    replica.apply(b"v1", big)
    assert replica.get("v1") is None and replica.bytes == 0


def test_the_replica_judges_a_future_ts_by_the_record_timestamp_too() -> None:
    """A re-read after the wall clock moved on decides as the first read did."""
    later = mapping_json("v1", ts=BASE_TS + 3_600_000)  # an hour ahead of the record's timestamp
    replica = VideoMappings(LIMITS)
    replica.apply(b"v1", later, timestamp_ms=BASE_TS)
    assert replica.get("v1") is None
    replica.apply(b"v1", mapping_json("v1", ts=BASE_TS + 60_000), timestamp_ms=BASE_TS)
    held = replica.get("v1")
    assert held is not None and held.ts == BASE_TS + 60_000


def test_a_backfill_counts_only_the_feedback_of_issued_prompts() -> None:
    pseudonymize = Pseudonymizer(b"k" * 32, 1)
    issued = IssuedPrompts(PROMPT_IDS, pseudonymize)
    real = PROMPT_IDS.issue("l1", "p1", "c1", pseudonymize("alice"))

    def click(prompt_id: str, user: str) -> SourcedEvent:
        return SourcedEvent(CreatorEvent("f", prompt_id, "c1", "p1", user, "click", BASE_TS), None)

    assert issued.keep(click(real, "alice")) is not None  # archived feedback names the raw id
    assert issued.keep(click(real, pseudonymize("alice"))) is not None  # as on creator-events
    assert issued.keep(click(real, "mallory")) is None
    assert issued.keep(click("0" * 32, "alice")) is None
    assert issued.refused == 2
    record = SourcedRecord(CountRecord("likes/0", BASE_TS, [], []), 0, 1)
    assert issued.keep(record) is record
