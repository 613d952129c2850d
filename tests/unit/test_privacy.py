"""Privacy by design, pure parts: pseudonyms, consent, erasure, retention sweeps and fair pricing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.retention import RetentionSweeper
from likeflow.domain.decide import NO_CAMPAIGN, Emit, GuardPolicy, NoPromptReason, Skip, decide
from likeflow.domain.pricing import PricePolicy, offer_price
from likeflow.domain.privacy import DAY_MS, apply_consent, apply_erasure, is_expired
from likeflow.domain.pseudonym import Pseudonymizer, is_pseudonym
from likeflow.domain.ranking import HOUR_MS, RankingPolicy, local_hour
from likeflow.domain.user_state import UserState
from likeflow.engine import ChangelogStore
from likeflow.engine.testing import FakeTable
from streams.events import Like, UserConsent, UserErasure, VideoMapping
from streams.validation import decode_consent, decode_erasure, decode_mapping
from tables.codecs import UserStateCodec
from tests.factories import BASE_TS, LIMITS, PROMPT_IDS, like, mapping, mapping_json, product

KEY = b"k" * 32
GUARDS = GuardPolicy()
RANKING = RankingPolicy()


def run(state: UserState, lk: Like, mp: VideoMapping, pricing: PricePolicy = NO_CAMPAIGN) -> Any:
    return decide(
        state,
        lk,
        mp,
        creator_weight=1.0,
        now_ms=lk.ts,
        guards=GUARDS,
        ranking=RANKING,
        prompt_ids=PROMPT_IDS,
        pricing=pricing,
    )


# --- pseudonyms ---


def test_pseudonym_is_stable_keyed_and_versioned() -> None:
    first = Pseudonymizer(KEY, 1)
    assert first("u1") == first("u1")
    assert is_pseudonym(first("u1")) and first("u1").startswith("v1.")
    assert first("u1") != first("u2")
    assert Pseudonymizer(b"x" * 32, 1)("u1") != first("u1"), "another key, another pseudonym"
    assert Pseudonymizer(KEY, 2)("u1").startswith("v2.")
    assert "u1" not in first("u1") and "k" * 8 not in repr(first)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Pseudonymizer(b"short", 1)


# --- consent ---


def consent(prompts: bool, personalized: bool, ts: int = BASE_TS) -> UserConsent:
    return UserConsent("u1", prompts, personalized, ts)


def test_prompts_off_gives_no_prompt_and_records_nothing() -> None:
    state = UserState()
    apply_consent(state, consent(False, True))
    before = state.to_dict()
    assert run(state, like(ts=BASE_TS + 1), mapping()) == Skip(NoPromptReason.PROMPTS_OFF)
    assert state.to_dict() == before


def test_refusing_personalisation_ranks_without_the_profile_and_forgets_it() -> None:
    bags = mapping("v9", product("bag", category="bag"), product("dress", category="dress"))
    dresses = mapping("v1", product("d1", category="dress"))
    liked_dresses = UserState()
    for i in range(5):
        run(liked_dresses, like(f"e{i}", video_id="v1", ts=BASE_TS + i), dresses)
    assert liked_dresses.affinity
    personal = emitted(run(UserState.from_dict(liked_dresses.to_dict()), like("x", ts=BASE_TS + 9), bags))
    assert personal.product_id == "dress"

    refused = UserState.from_dict(liked_dresses.to_dict())
    apply_consent(refused, consent(True, False, BASE_TS + 8))
    assert refused.affinity == {}
    neutral = emitted(run(refused, like("x", ts=BASE_TS + 9), bags))
    assert neutral.score == emitted(run(UserState(), like("x", ts=BASE_TS + 9), bags)).score
    assert refused.affinity == {}, "no profile is built while personalisation is refused"


def test_the_newest_consent_wins_whatever_the_arrival_order() -> None:
    state = UserState()
    assert apply_consent(state, consent(False, False, BASE_TS + 10))
    assert not apply_consent(state, consent(True, True, BASE_TS + 5))
    assert state.consent is not None and not state.consent.prompts


# --- erasure and retention ---


def test_erasure_keeps_no_activity_and_ignores_earlier_likes() -> None:
    state = UserState()
    run(state, like("e1", ts=BASE_TS), mapping())
    apply_consent(state, consent(True, False, BASE_TS + 1))
    erased = apply_erasure(state, UserErasure("u1", BASE_TS + 100))
    stored = erased.to_dict()
    assert stored["seen"] == {} and stored["sent"] == [] and stored["affinity"] == {}
    assert stored["erased_ts"] == BASE_TS + 100 and erased.consent == state.consent
    assert run(erased, like("e0", ts=BASE_TS + 50), mapping()) == Skip(NoPromptReason.ERASED)
    assert isinstance(run(erased, like("e2", ts=BASE_TS + 200), mapping()), Emit)


def test_expiry_follows_the_latest_activity() -> None:
    state = UserState(high_ts=BASE_TS)
    assert not is_expired(state.last_active_ts, BASE_TS + 30 * DAY_MS, 30 * DAY_MS)
    assert is_expired(state.last_active_ts, BASE_TS + 30 * DAY_MS + 1, 30 * DAY_MS)
    apply_consent(state, consent(True, True, BASE_TS + DAY_MS))
    assert UserState.last_active_of(state.to_dict()) == BASE_TS + DAY_MS


def test_sweeper_tombstones_expired_users_of_the_partition_only() -> None:
    table = FakeTable()
    store = ChangelogStore(table, UserStateCodec(), producer=table.producer)
    for user, partition, ts in (
        ("old0", 0, BASE_TS),
        ("new0", 0, BASE_TS + 40 * DAY_MS),
        ("old1", 1, BASE_TS),
    ):
        store.put(partition, user, UserState(high_ts=ts))
    expired: list[int] = []
    sweeper = RetentionSweeper(store, 30 * DAY_MS, on_expired=expired.append)
    sweeper.observe(0, BASE_TS + 41 * DAY_MS)
    assert sweeper.sweep_due() == 1
    assert store.keys(0) == {"new0"} and store.keys(1) == {"old1"}, "partition 1 has no clock: not swept"
    assert expired == [1]
    sweeper.observe(0, BASE_TS + 41 * DAY_MS + 1)
    assert sweeper.sweep_due() == 0, "next sweep an hour later"


async def test_a_sweep_writes_a_tombstone_with_the_next_flush() -> None:
    table = FakeTable()
    store = ChangelogStore(table, UserStateCodec(), producer=table.producer)
    store.put(0, "old0", UserState(high_ts=BASE_TS))
    await (await store.flush(0))
    sweeper = RetentionSweeper(store, 30 * DAY_MS, on_expired=lambda n: None)
    sweeper.observe(0, BASE_TS + 41 * DAY_MS)
    sweeper.sweep_due()
    await (await store.flush(0))
    assert [(p, k, v) for p, k, v in table.sent][-1] == (0, b"old0", None)
    assert table.data.data == {}


# --- fair pricing ---

CAMPAIGN = PricePolicy(discount_pct=20, start_hour=19, end_hour=23)


def test_campaign_price_is_the_same_discount_for_all_within_the_merchant_floor() -> None:
    assert local_hour(BASE_TS, 480) == 19
    assert offer_price(product(price_cents=10000, min_price_cents=7000), BASE_TS, CAMPAIGN) == 8000
    assert offer_price(product(price_cents=10000, min_price_cents=9000), BASE_TS, CAMPAIGN) == 9000
    assert offer_price(product(price_cents=10000), BASE_TS, CAMPAIGN) == 10000, "no floor: no discount"
    assert (
        offer_price(product(price_cents=10000, min_price_cents=1), BASE_TS + 5 * HOUR_MS, CAMPAIGN) == 10000
    )


def test_a_floor_above_the_price_is_a_dead_letter() -> None:
    bad = [{"product_id": "p", "title": "t", "category": "c", "price_cents": 100, "certified": True,
            "stock": 1, "min_price_cents": 101}]  # fmt: skip
    assert "min_price_cents" in decode_mapping(b"v1", mapping_json(products=bad), LIMITS).error  # type: ignore[union-attr]


histories = st.lists(
    st.tuples(st.sampled_from(["dress", "bag", "shoe", "hat"]), st.integers(0, 48 * HOUR_MS)), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(
    first=histories,
    second=histories,
    personalized=st.tuples(st.booleans(), st.booleans()),
    offset_ms=st.integers(0, 24 * HOUR_MS),
    prices=st.lists(st.tuples(st.integers(100, 100_000), st.integers(0, 100)), min_size=1, max_size=5),
)
def test_two_users_liking_the_same_video_at_the_same_moment_see_the_same_price(
    first: list[tuple[str, int]],
    second: list[tuple[str, int]],
    personalized: tuple[bool, bool],
    offset_ms: int,
    prices: list[tuple[int, int]],
) -> None:
    products = tuple(
        product(f"p{i}", category=["dress", "bag", "shoe", "hat"][i % 4], price_cents=price,
                min_price_cents=max(1, price * floor_pct // 100), stock=1 + i)
        for i, (price, floor_pct) in enumerate(prices)
    )  # fmt: skip
    moment = BASE_TS + 48 * HOUR_MS + offset_ms
    video = mapping("v", *products)
    seen_prices: dict[str, set[int]] = {}
    for user, history, personal in (("a", first, personalized[0]), ("b", second, personalized[1])):
        state = UserState()
        for i, (category, ts) in enumerate(history):
            run(
                state,
                like(f"{user}{i}", user, "h", BASE_TS + ts),
                mapping("h", product(f"h{i}", category=category)),
            )
        apply_consent(state, UserConsent(user, True, personal, moment - 1))
        decision = run(state, like(f"{user}-now", user, "v", moment), video, CAMPAIGN)
        if isinstance(decision, Emit):
            prompt = decision.prompt
            chosen = next(p for p in products if p.product_id == prompt.product_id)
            assert prompt.price_cents == offer_price(chosen, moment, CAMPAIGN)
            assert chosen.floor_price_cents <= prompt.price_cents <= chosen.price_cents
            seen_prices.setdefault(prompt.product_id, set()).add(prompt.price_cents)
    assert all(len(p) == 1 for p in seen_prices.values())


def emitted(decision: object) -> Any:
    assert isinstance(decision, Emit), decision
    return decision.prompt


def test_consent_and_erasure_decoders() -> None:
    ok = decode_consent(
        b"u1", orjson.dumps({"user_id": "u1", "prompts": False, "personalized": True, "ts": BASE_TS}), LIMITS
    )
    assert ok == UserConsent("u1", False, True, BASE_TS)
    missing = decode_consent(b"u1", orjson.dumps({"user_id": "u1", "prompts": "no", "ts": BASE_TS}), LIMITS)
    assert getattr(missing, "reason", None) is not None
    assert decode_erasure(b"u1", orjson.dumps({"user_id": "u1", "ts": BASE_TS}), LIMITS) == UserErasure(
        "u1", BASE_TS
    )
    assert getattr(
        decode_erasure(b"u2", orjson.dumps({"user_id": "u1", "ts": BASE_TS}), LIMITS), "reason", None
    )
