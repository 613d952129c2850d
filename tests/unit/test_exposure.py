"""A demoted creator's share of prompted likes: equal to its weight, stable per (user, video, day)."""

from __future__ import annotations

import math

import pytest

from likeflow.domain.decide import Duplicate, Emit, NoPromptReason, Skip
from likeflow.domain.exposure import DAY_MS, exposure_point, prompt_shown
from likeflow.domain.user_state import UserState
from tests.factories import BASE_TS, decided, like, mapping

N = 20_000


def share(weight: float, ts: int = BASE_TS) -> float:
    return sum(prompt_shown(weight, f"v1.user{i}", "v7", ts) for i in range(N)) / N


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5, 0.83])
def test_the_share_of_likes_shown_is_the_weight(weight: float) -> None:
    # Binomial: 4.5 standard deviations of N draws (the hash is fixed, so this never flakes).
    assert abs(share(weight) - weight) < 4.5 * math.sqrt(weight * (1 - weight) / N)


def test_full_standing_always_and_zero_never() -> None:
    assert share(1.0) == 1.0 and share(1.5) == 1.0
    assert share(0.0) == 0.0 and share(-0.1) == 0.0 and share(math.nan) == 0.0


def test_a_like_decides_the_same_every_time_and_all_day() -> None:
    day_start = BASE_TS - BASE_TS % DAY_MS
    first = [prompt_shown(0.5, f"u{i}", "v1", day_start) for i in range(200)]
    assert first == [prompt_shown(0.5, f"u{i}", "v1", day_start + DAY_MS - 1) for i in range(200)]
    assert exposure_point("u1", "v1", BASE_TS) == exposure_point("u1", "v1", BASE_TS)
    # A larger weight shows a superset: recovering never takes a prompt away.
    assert all(prompt_shown(0.7, f"u{i}", "v1", day_start) for i in range(200) if first[i])


def test_users_videos_and_days_draw_independently() -> None:
    points = {
        exposure_point("u1", "v1", BASE_TS),
        exposure_point("u2", "v1", BASE_TS),
        exposure_point("u1", "v2", BASE_TS),
        exposure_point("u1", "v1", BASE_TS + DAY_MS),
        exposure_point("u1\0v1", "", BASE_TS),
    }
    assert len(points) == 5 and all(0.0 <= p < 1.0 for p in points)
    daily = [prompt_shown(0.5, "u1", "v1", BASE_TS + d * DAY_MS) for d in range(400)]
    assert 150 < sum(daily) < 250, "a user not shown today is not excluded for good"


def run(state: UserState, event_id: str, user: str, weight: float, ts: int = BASE_TS) -> object:
    return decided(state, like(event_id, user_id=user, ts=ts), mapping("v1"), weight)


def test_decide_skips_a_demoted_like_as_demoted_and_records_it() -> None:
    users = [f"u{i}" for i in range(400)]
    decisions = {u: run(UserState(), "e1", u, 0.3) for u in users}
    skipped = [u for u, d in decisions.items() if d == Skip(NoPromptReason.DEMOTED)]
    shown = [u for u, d in decisions.items() if isinstance(d, Emit)]
    assert len(skipped) + len(shown) == len(users)
    assert set(shown) == {u for u in users if prompt_shown(0.3, u, "v1", BASE_TS)}
    # Recorded: the user's state remembers the like, so a redelivery is a duplicate without a
    # prompt, even once the creator has recovered.
    state = UserState()
    assert run(state, "e1", skipped[0], 0.3) == Skip(NoPromptReason.DEMOTED)
    assert state.remembers("e1") and state.affinity
    assert run(state, "e1", skipped[0], 1.0) == Duplicate(None)
    # A fresh like after the recovery gets its prompt.
    assert isinstance(run(state, "e2", skipped[0], 1.0), Emit)


def test_the_user_guards_come_first_so_demoted_counts_only_withheld_prompts() -> None:
    state = UserState()
    # Offered once: the next like of the same product is `all_recently_offered`, whatever the weight.
    assert isinstance(run(state, "e1", "u1", 1.0), Emit)
    assert run(state, "e2", "u1", 0.0, ts=BASE_TS + 1) == Skip(NoPromptReason.ALL_RECENTLY_OFFERED)
