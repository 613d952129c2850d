"""The prompt decision: eligibility, ranking, guards in event time, dedupe and determinism."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from likeflow.domain.decide import (
    Duplicate,
    Emit,
    GuardPolicy,
    NoPromptReason,
    Skip,
    decide,
)
from likeflow.domain.ranking import HOUR_MS, RankingPolicy
from likeflow.domain.user_state import UserState
from streams.events import Like, Prompt, VideoMapping
from tests.factories import BASE_TS, PROMPT_IDS, like, mapping, product

GUARDS = GuardPolicy()
RANKING = RankingPolicy()
HOUR_START = BASE_TS - BASE_TS % HOUR_MS


def run(state: UserState, lk: Like, mp: VideoMapping, guards: GuardPolicy = GUARDS):  # type: ignore[no-untyped-def]
    return decide(
        state,
        lk,
        mp,
        creator_weight=1.0,
        now_ms=lk.ts + 5,
        guards=guards,
        ranking=RANKING,
        prompt_ids=PROMPT_IDS,
    )


def emitted(decision: object) -> Prompt:
    assert isinstance(decision, Emit), decision
    return decision.prompt


def test_emits_the_best_eligible_product() -> None:
    mp = mapping(
        "v1",
        product("uncertified", certified=False, stock=100),
        product("sold-out", stock=0),
        product("low-stock", stock=1),
        product("well-stocked", stock=40),
    )
    prompt = emitted(run(UserState(), like(), mp))
    assert prompt.product_id == "well-stocked"
    assert prompt.creator_id == "c1" and prompt.video_id == "v1" and prompt.user_id == "u1"
    assert prompt.like_ts == BASE_TS and prompt.emitted_ts == BASE_TS + 5
    assert prompt.prompt_id == PROMPT_IDS.issue("e1", "well-stocked", "c1", "u1")
    assert prompt.text == "同款 title well-stocked ¥129.00，一键下单"


def test_no_eligible_product_skips() -> None:
    mp = mapping("v1", product("a", certified=False), product("b", stock=0))
    assert run(UserState(), like(), mp) == Skip(NoPromptReason.NO_ELIGIBLE_PRODUCT)


def test_repeat_like_falls_through_to_the_next_product_then_stops() -> None:
    state = UserState()
    mp = mapping("v1", product("best", stock=50), product("second", stock=2))
    first = emitted(run(state, like("e1", ts=HOUR_START), mp))
    second = emitted(run(state, like("e2", ts=HOUR_START + 60_000), mp))
    assert (first.product_id, second.product_id) == ("best", "second")
    third = run(state, like("e3", ts=HOUR_START + 120_000), mp)
    assert third == Skip(NoPromptReason.ALL_RECENTLY_OFFERED)


def test_same_product_can_be_offered_again_after_the_repeat_window() -> None:
    state = UserState()
    mp = mapping("v1", product("only"))
    emitted(run(state, like("e1", ts=BASE_TS), mp))
    assert isinstance(run(state, like("e2", ts=BASE_TS + 23 * HOUR_MS), mp), Skip)
    assert emitted(run(state, like("e3", ts=BASE_TS + 24 * HOUR_MS), mp)).product_id == "only"


def test_repeat_guard_works_backwards_in_event_time_too() -> None:
    state = UserState()
    mp = mapping("v1", product("only"))
    emitted(run(state, like("e1", ts=BASE_TS), mp))
    late = run(state, like("e0", ts=BASE_TS - 2 * HOUR_MS), mp)
    assert late == Skip(NoPromptReason.ALL_RECENTLY_OFFERED)


def test_hourly_cap_counts_prompts_per_clock_hour_of_like_time() -> None:
    state = UserState()
    for i in range(3):
        emitted(
            run(
                state,
                like(f"e{i}", video_id=f"v{i}", ts=HOUR_START + i * 1000),
                mapping(f"v{i}", product(f"p{i}")),
            )
        )
    capped = run(state, like("e3", video_id="v3", ts=HOUR_START + 59 * 60_000), mapping("v3", product("p3")))
    assert capped == Skip(NoPromptReason.HOURLY_CAP)
    next_hour = run(state, like("e4", video_id="v3", ts=HOUR_START + HOUR_MS), mapping("v3", product("p3")))
    assert emitted(next_hour).product_id == "p3"


def test_cap_is_configurable() -> None:
    guards = GuardPolicy(prompts_per_hour=1)
    state = UserState()
    emitted(run(state, like("e1"), mapping("v1", product("a")), guards))
    assert run(state, like("e2", video_id="v2"), mapping("v2", product("b")), guards) == Skip(
        NoPromptReason.HOURLY_CAP
    )


def test_redelivered_like_returns_the_original_prompt_and_changes_nothing() -> None:
    state = UserState()
    mp = mapping("v1", product("a"), product("b", stock=3))
    first = emitted(run(state, like("e1"), mp))
    before = orjson.dumps(state.to_dict())
    again = decide(
        state,
        like("e1"),
        mp,
        creator_weight=1.0,
        now_ms=BASE_TS + 999_999,
        guards=GUARDS,
        ranking=RANKING,
        prompt_ids=PROMPT_IDS,
    )
    assert isinstance(again, Duplicate) and again.sent is not None
    assert again.sent.raw == first.to_json(), "the original bytes, not a new decision"
    assert orjson.dumps(state.to_dict()) == before
    assert again.prompt == first


def test_redelivered_like_that_gave_no_prompt_stays_without_one() -> None:
    state = UserState()
    mp = mapping("v1", product("a", certified=False))
    assert isinstance(run(state, like("e1"), mp), Skip)
    assert run(state, like("e1"), mp) == Duplicate(None)


def test_likes_older_than_the_dedupe_horizon_are_refused() -> None:
    state = UserState()
    emitted(run(state, like("e1", ts=BASE_TS), mapping("v1", product("a"))))
    old = run(state, like("e0", video_id="v2", ts=BASE_TS - 25 * HOUR_MS), mapping("v2", product("b")))
    assert old == Skip(NoPromptReason.TOO_LATE)


def test_state_is_pruned_by_event_time() -> None:
    state = UserState()
    emitted(run(state, like("e1", ts=BASE_TS), mapping("v1", product("a"))))
    emitted(run(state, like("e2", video_id="v2", ts=BASE_TS + 30 * HOUR_MS), mapping("v2", product("b"))))
    assert set(state.seen) == {"e2"}
    assert [s.event_id for s in state.sent] == ["e2"]


def test_affinity_from_past_likes_steers_the_choice() -> None:
    state = UserState()
    shoes = mapping("v-shoes", product("s1", category="sneakers"), creator_id="c2")
    for i in range(3):
        run(state, like(f"e{i}", video_id="v-shoes", ts=BASE_TS + i), shoes)
    outfit = mapping("v2", product("dress", category="dress"), product("shoe", category="sneakers"))
    assert (
        emitted(run(state, like("e9", video_id="v2", ts=BASE_TS + 2 * HOUR_MS), outfit)).product_id == "shoe"
    )


def test_prompt_ids_are_deterministic_and_distinct() -> None:
    issue = PROMPT_IDS.issue
    assert issue("e1", "p1", "c1", "u1") == issue("e1", "p1", "c1", "u1")
    assert (
        len({issue("e1", "p1", "c1", "u1"), issue("e1", "p2", "c1", "u1"), issue("e2", "p1", "c1", "u1")})
        == 3
    )


def test_a_replay_gives_the_same_prompts_except_emitted_ts() -> None:
    def replay(now_ms: int) -> list[Prompt]:
        state = UserState()
        out = []
        for i in range(6):
            v = i % 3
            mp = mapping(
                f"v{v}",
                product(f"a{v}", category="dress"),
                product(f"b{v}", category="bag", stock=3),
            )
            lk = like(f"e{i}", video_id=f"v{v}", ts=BASE_TS + i * 600_000)
            d = decide(
                state,
                lk,
                mp,
                creator_weight=1.0,
                now_ms=now_ms,
                guards=GUARDS,
                ranking=RANKING,
                prompt_ids=PROMPT_IDS,
            )
            if isinstance(d, Emit):
                out.append(replace(d.prompt, emitted_ts=0))
        return out

    first, second = replay(1), replay(2)
    # Six likes at :06 ... :56 of one hour: 3 prompts, then the hourly cap.
    assert len(first) == 3
    assert first == second


def test_state_round_trips_through_json() -> None:
    state = UserState()
    run(state, like("e1"), mapping("v1", product("a"), product("b", category="bag")))
    restored = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored == state


def test_the_offset_of_each_remembered_like_round_trips_aligned_with_seen() -> None:
    state = UserState()
    state.remember("a", 1, 5)
    state.remember("b", 2)  # read before offsets were kept
    state.remember("c", 3, 7)
    stored = orjson.loads(state.to_json())
    assert stored["seen_offsets"] == [5, -1, 7], "one number a like, in `seen`'s order"
    restored = UserState.from_dict(stored)
    assert restored == state and restored.recorded_at("c", 7) and not restored.recorded_at("b", 2)
    assert UserState.from_dict({**stored, "seen_offsets": []}).seen_offsets == {}


@pytest.mark.parametrize(
    ("language", "text"),
    [("zh", "同款 title a ¥129.00，一键下单"), ("en", "Get title a for ¥129.00, one tap to order")],
)
def test_copy_language_follows_the_policy(language: str, text: str) -> None:
    prompt = emitted(run(UserState(), like(), mapping("v1", product("a")), GuardPolicy(language=language)))
    assert prompt.text == text
