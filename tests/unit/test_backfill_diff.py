"""`likeflow backfill` compares its recomputed windows with the served ones: what differs, how it reads."""

from __future__ import annotations

import pytest

from likeflow.domain.quality.windows import COUNT_FIELDS, Counts
from likeflow.ops.backfill import WindowDiff, Windows, carry_live_likes, diff, events_from_line, live_windows
from streams.events import CreatorEvent
from tests.factories import BASE_TS, LIMITS

H = 3_600_000
T0, T1, T2 = BASE_TS, BASE_TS + H, BASE_TS + 2 * H


def counts(**fields: int) -> dict[str, int]:
    return Counts(**fields).to_dict()


class FakeQualityStore:
    """The one read `live_windows` makes of RedisQualityStore."""

    def __init__(self, windows: dict[str, list[dict[str, int]]]) -> None:
        self.windows = windows

    async def read_windows(self, creator_id: str, namespace: str = "") -> list[dict[str, int]] | None:
        return self.windows.get(creator_id)


def test_identical_windows_make_no_difference() -> None:
    same: Windows = {"c1": {T0: counts(prompts=3, clicks=1)}, "c2": {T1: counts(orders=1, gmv_cents=900)}}
    copy = {c: {s: dict(w) for s, w in by_start.items()} for c, by_start in same.items()}
    assert diff(same, copy) == []
    assert diff({}, {}) == []


def test_a_changed_count_is_reported_field_by_field_with_its_sign() -> None:
    live: Windows = {"c7": {T0: counts(prompts=10, clicks=3, returns=2)}}
    backfill: Windows = {"c7": {T0: counts(prompts=10, clicks=4, returns=0)}}
    [change] = diff(live, backfill)
    assert change == WindowDiff("c7", T0, live["c7"][T0], backfill["c7"][T0])
    assert change.describe() == f"c7 @{T0}: clicks 3 -> 4 (+1), returns 2 -> 0 (-2)"


def test_a_window_missing_on_either_side_is_a_difference() -> None:
    live: Windows = {"c1": {T0: counts(prompts=1), T1: counts(prompts=2)}}
    backfill: Windows = {"c1": {T1: counts(prompts=2), T2: counts(clicks=1)}}
    only_live, only_backfill = diff(live, backfill)
    assert (only_live.start_ms, only_live.backfill) == (T0, None)
    assert (only_backfill.start_ms, only_backfill.live) == (T2, None)
    assert only_live.describe() == f"c1 @{T0}: only in live {counts(prompts=1)}"
    assert only_backfill.describe() == f"c1 @{T2}: only in the backfill {counts(clicks=1)}"


def test_a_creator_on_one_side_only_has_every_window_reported() -> None:
    backfill: Windows = {"new": {T0: counts(prompts=1), T1: counts(prompts=1)}}
    assert [(d.creator_id, d.start_ms, d.live) for d in diff({}, backfill)] == [
        ("new", T0, None),
        ("new", T1, None),
    ]
    assert [(d.creator_id, d.backfill) for d in diff(backfill, {})] == [("new", None), ("new", None)]


def test_differences_are_sorted_by_creator_then_window_start() -> None:
    live: Windows = {
        "c2": {T1: counts(prompts=1), T0: counts(prompts=1)},
        "c10": {T0: counts(prompts=1)},
        "c1": {T2: counts(prompts=1)},
    }
    order = [(d.creator_id, d.start_ms) for d in diff(live, {})]
    assert order == [("c1", T2), ("c10", T0), ("c2", T0), ("c2", T1)]


async def test_served_windows_are_compared_on_their_counts_within_the_range() -> None:
    def served(start: int, revision: int, **fields: int) -> dict[str, int]:
        return {"start_ms": start, "end_ms": start + H, "revision": revision, **counts(**fields)}

    store = FakeQualityStore(
        {
            "c1": [served(T0 - H, 1, prompts=9), served(T0, 3, prompts=5), served(T1, 1, clicks=2)],
            "c2": [served(T2, 1, prompts=1)],  # at `until`: outside
        }
    )
    live = await live_windows(store, ["c1", "c2", "unknown"], T0, T2)  # type: ignore[arg-type]  # reads only
    assert live == {"c1": {T0: counts(prompts=5), T1: counts(clicks=2)}}
    # The revision and end are serving's bookkeeping: equal counts are no difference.
    assert diff(live, {"c1": {T0: counts(prompts=5), T1: counts(clicks=2)}}) == []


async def test_a_window_served_before_bookings_were_counted_equals_its_recomputation() -> None:
    old = {"start_ms": T0, "end_ms": T1, "revision": 1, "prompts": 4, "clicks": 2, "orders": 1, "returns": 0,
           "complaints": 0, "gmv_cents": 900}  # fmt: skip
    live = await live_windows(FakeQualityStore({"c1": [old]}), ["c1"], T0, T1)  # type: ignore[arg-type]
    assert diff(live, {"c1": {T0: counts(prompts=4, clicks=2, orders=1, gmv_cents=900)}}) == []


def test_a_feedback_archive_line_of_a_booking_is_its_creator_event() -> None:
    line = (b'{"event_id": "f1", "prompt_id": "p1", "creator_id": "c1", "product_id": "x", "user_id": "u",'
            b' "kind": "booking", "ts": %d, "amount_cents": 8800}' % T0)  # fmt: skip
    event = events_from_line(line, LIMITS)
    assert isinstance(event, CreatorEvent) and (event.kind, event.amount_cents) == ("booking", 8800)


@pytest.mark.parametrize("field", COUNT_FIELDS)
def test_every_count_field_is_compared(field: str) -> None:
    [change] = diff({"c": {T0: counts()}}, {"c": {T0: counts(**{field: 1})}})
    assert change.describe() == f"c @{T0}: {field} 0 -> 1 (+1)"


def test_a_recomputation_without_likes_keeps_the_live_likes() -> None:
    live: Windows = {"c1": {T0: counts(likes=9, prompts=2), T1: counts(likes=4)}}
    recomputed: Windows = {"c1": {T0: counts(prompts=2)}}
    carry_live_likes(live, recomputed)
    assert recomputed == {"c1": {T0: counts(likes=9, prompts=2), T1: counts(likes=4)}}
    assert diff(live, recomputed) == []
