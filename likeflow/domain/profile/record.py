"""Engagement and orders recorded into a user's state: deduplicated, and only with consent."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from likeflow.domain.affinity import add_like
from likeflow.domain.decide import GuardPolicy
from likeflow.domain.profile.level import add_order
from likeflow.domain.profile.weights import engagement_weight
from likeflow.domain.user_state import UserState

# Prefixes of the ids remembered in `UserState.seen` for events other than likes, so an
# engagement or order id never collides with a like's.
ENGAGEMENT_PREFIX = "engagement:"
ORDER_PREFIX = "order:"


class Recorded(StrEnum):
    """What became of one engagement or order event; a small fixed set, safe as a metric label."""

    RECORDED = "recorded"
    # Seen before (redelivery): nothing changes.
    DUPLICATE = "duplicate"
    # The user turned prompts or personalisation off: nothing about them is built.
    NOT_PERSONALIZED = "not_personalized"
    # At or before the user's latest erasure request.
    ERASED = "erased"
    # More than the dedupe horizon behind the user's clock: could be a redelivery no longer known.
    TOO_LATE = "too_late"
    # The user's state already remembers `GuardPolicy.max_likes_per_user` events.
    RATE_LIMITED = "rate_limited"
    # Nothing to count: a video without categories, a free order.
    NOTHING_TO_COUNT = "nothing_to_count"


def _admit(state: UserState, key: str, ts: int, guards: GuardPolicy) -> Recorded | None:
    """Why an event remembered as `key` at `ts` (epoch ms) is not recorded, or None to record it."""
    consent = state.consent
    if consent is not None and not (consent.prompts and consent.personalized):
        return Recorded.NOT_PERSONALIZED
    if state.erased(ts):
        return Recorded.ERASED
    if state.remembers(key):
        return Recorded.DUPLICATE
    if ts < state.high_ts - guards.dedupe_horizon_ms:
        return Recorded.TOO_LATE
    if len(state.seen) >= guards.max_likes_per_user:
        return Recorded.RATE_LIMITED
    return None


def _remember(state: UserState, key: str, ts: int) -> None:
    state.remember(key, ts)
    state.high_ts = max(state.high_ts, ts)


def record_engagement(
    state: UserState,
    event_id: str,
    kind: str,
    ts: int,
    categories: Iterable[str],
    half_life_ms: float,
    guards: GuardPolicy,
    watch_ms: int | None = None,
) -> Recorded:
    """Add one `user-engagement` event (comment, share, long_watch at `ts`, epoch ms) on a video
    of `categories` to the user's affinity with its weight (`engagement_weight`), in place.

    As a like is: only with personalisation (and prompts) on, never before the user's erasure,
    once per `event_id` (remembered in `seen` like a like, within the dedupe horizon and under
    the same per-user cap), and it moves the user's event-time clock (`high_ts`).
    """
    key = ENGAGEMENT_PREFIX + event_id
    refused = _admit(state, key, ts, guards)
    if refused is not None:
        return refused
    wanted = tuple(dict.fromkeys(categories))
    if not wanted:
        return Recorded.NOTHING_TO_COUNT
    add_like(state.affinity, wanted, ts, half_life_ms, weight=engagement_weight(kind, watch_ms))
    _remember(state, key, ts)
    return Recorded.RECORDED


def record_order(
    state: UserState, event_id: str, amount_cents: int, ts: int, guards: GuardPolicy
) -> Recorded:
    """Count the user's own order of `amount_cents` at `ts` (epoch ms; an `order` on
    `prompt-feedback`) into their price bands, in place: the consumption level. The same
    admission as `record_engagement` (consent, erasure, once per `event_id`)."""
    key = ORDER_PREFIX + event_id
    refused = _admit(state, key, ts, guards)
    if refused is not None:
        return refused
    if not add_order(state.price_bands, amount_cents, ts):
        return Recorded.NOTHING_TO_COUNT
    _remember(state, key, ts)
    return Recorded.RECORDED
