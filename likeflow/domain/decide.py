"""The prompt decision for one joined like: dedupe, guards, ranking; a pure function of its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from likeflow.domain.affinity import add_like, scores_at
from likeflow.domain.copy import matched_interest, offer_text
from likeflow.domain.exposure import prompt_shown
from likeflow.domain.pricing import PricePolicy, offer_price
from likeflow.domain.profile.level import Level, consumption_level
from likeflow.domain.profile.weights import LIKE_WEIGHT, like_weight
from likeflow.domain.prompt_ids import PromptIds
from likeflow.domain.ranking import HOUR_MS, RankingPolicy, rank
from likeflow.domain.user_state import SentPrompt, UserState
from streams.events import CONTENT_SOURCE, CREATOR_SOURCE, Like, Prompt, VideoMapping, kept

NO_CAMPAIGN = PricePolicy()


class NoPromptReason(StrEnum):
    """Why a valid like produced no prompt; a small fixed set, safe as a metric label."""

    NO_ELIGIBLE_PRODUCT = "no_eligible_product"
    ALL_RECENTLY_OFFERED = "all_recently_offered"
    HOURLY_CAP = "hourly_cap"
    TOO_LATE = "too_late"
    PROMPTS_OFF = "prompts_off"
    ERASED = "erased"
    # The user liked more than `max_likes_per_user` times within the dedupe horizon.
    RATE_LIMITED = "rate_limited"
    # The creator is demoted: its likes get a prompt for a share equal to its weight only.
    DEMOTED = "demoted"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Per-user guards, in event time: no repeat (user, product) within the window, an hourly cap."""

    repeat_window_ms: int = 24 * HOUR_MS
    prompts_per_hour: int = 3
    dedupe_horizon_ms: int = 24 * HOUR_MS
    language: str = "zh"
    # Likes remembered per user within the dedupe horizon (bounds the user's state).
    max_likes_per_user: int = 5_000


@dataclass(frozen=True, slots=True)
class Emit:
    """A new prompt to emit, and its exact bytes (also kept in the user's state)."""

    prompt: Prompt
    raw: bytes


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The like was processed before: state unchanged; `sent` is what it produced then, if any.

    `redelivered`: this very record was processed before (the like was recorded at its offset),
    so what it reported may not have reached the counters and is reported again; otherwise it
    is a copy sent again upstream, and reports nothing.
    """

    sent: SentPrompt | None
    redelivered: bool = False

    @property
    def prompt(self) -> Prompt | None:
        """The prompt the like produced then, decoded."""
        return None if self.sent is None else self.sent.prompt


@dataclass(frozen=True, slots=True)
class Skip:
    """A valid, new like that produces no prompt, and why."""

    reason: NoPromptReason


Decision = Emit | Duplicate | Skip


def decide(
    state: UserState,
    like: Like,
    mapping: VideoMapping,
    *,
    creator_weight: float,
    now_ms: int,
    guards: GuardPolicy,
    ranking: RankingPolicy,
    prompt_ids: PromptIds,
    pricing: PricePolicy = NO_CAMPAIGN,
    offset: int = -1,
) -> Decision:
    """Decide the prompt for `like` joined with `mapping`, updating `state` in place.

    `offset` is the like's position in its input partition, kept with the prompt it produces;
    `prompt_ids` issues the prompt's id (deterministic: a redelivered like gets the same one).

    The user's controls first: a user who turned prompts off gets none and the like is not
    recorded; a like from before the user's erasure request is ignored. Then dedupe (by
    event_id, so redelivery is a no-op), the per-user cap on likes remembered (skipped as
    `rate_limited` before the state grows), then: eligible products (certified,
    in stock) ranked against the user's profile *before* this like; products offered to the user
    within `repeat_window_ms` of this like are passed over, so a repeat like falls through to the
    best product not yet offered; a like more than `dedupe_horizon_ms` behind the user's latest is
    refused as too late; at most `prompts_per_hour` per clock hour of like time. Last, a demoted
    creator's like gets its prompt only if `prompt_shown(creator_weight, ...)` (a share of likes
    equal to the weight, by a stable hash of user, video and UTC day), else `demoted`: a like
    that would have had a prompt, withheld for its creator's standing. It is recorded like any
    other skip (dedupe, the user's clock, the profile: the user's interest is real), so a
    redelivery is a `Duplicate` of the first decision even if the weight changed since. The like
    then joins the profile, weighed by its `watch_ms` (`like_weight`), unless the user refused
    personalisation: then products are ranked on an empty profile and none is built (and the
    copy names no interest: `matched_interest`).
    The user's consumption level (their own orders' prices, docs/profile.md), when known and
    personalisation is on, multiplies each product's score by its `price_fit`: the choice only.
    The price is `offer_price` (the same for everyone at the like's ts). `now_ms` (wall clock)
    only stamps `emitted_ts`.
    """
    if state.consent is not None and not state.consent.prompts:
        return Skip(NoPromptReason.PROMPTS_OFF)
    if state.erased(like.ts):
        return Skip(NoPromptReason.ERASED)
    if state.remembers(like.event_id):
        return Duplicate(state.sent_for(like.event_id), state.recorded_at(like.event_id, offset))
    if like.ts < state.high_ts - guards.dedupe_horizon_ms:
        # Older than the dedupe horizon: its event_id may have been pruned from `seen`, so it
        # could be a redelivery we can no longer recognise. Refusing it keeps dedupe exact.
        return Skip(NoPromptReason.TOO_LATE)
    if len(state.seen) >= guards.max_likes_per_user:
        # The like's own time may prune old entries first (the state's clock is a maximum, so
        # this is idempotent); a user still at the cap is skipped before the state grows.
        state.high_ts = max(state.high_ts, like.ts)
        _prune(state, guards)
        if len(state.seen) >= guards.max_likes_per_user:
            return Skip(NoPromptReason.RATE_LIMITED)
    personalized = state.consent is None or state.consent.personalized
    # The profile's scores at the like, decayed once: ranked on, then updated with the like.
    current = scores_at(state.affinity, like.ts, ranking.affinity_half_life_ms) if personalized else {}
    level = (
        consumption_level(state.price_bands, like.ts)
        if personalized and state.price_bands and ranking.use_consumption_level
        else None
    )
    decision = _choose(
        state, like, mapping, creator_weight, now_ms, guards, ranking, pricing, current, prompt_ids, level
    )
    state.remember(like.event_id, like.ts, offset)
    if isinstance(decision, Emit):
        state.sent.append(
            SentPrompt(like.event_id, decision.prompt.product_id, like.ts, decision.raw, offset)
        )
    if personalized:
        # A like's weight in the profile: 1.0, or by how long it was watched (docs/profile.md).
        weight = LIKE_WEIGHT if like.watch_ms is None else like_weight(like.watch_ms)
        add_like(state.affinity, mapping.categories, like.ts, ranking.affinity_half_life_ms, current, weight)
    state.high_ts = max(state.high_ts, like.ts)
    _prune(state, guards)
    return decision


def _choose(
    state: UserState,
    like: Like,
    mapping: VideoMapping,
    creator_weight: float,
    now_ms: int,
    guards: GuardPolicy,
    ranking: RankingPolicy,
    pricing: PricePolicy,
    current: dict[str, float],
    prompt_ids: PromptIds,
    level: Level | None = None,
) -> Decision:
    eligible = mapping.eligible
    if not eligible:
        return Skip(NoPromptReason.NO_ELIGIBLE_PRODUCT)
    # Event time, both directions: an out-of-order like is guarded like an in-order one.
    # One pass over the user's recent prompts: the products offered within the repeat window,
    # and the prompts of this like's clock hour.
    ts, window, hour = like.ts, guards.repeat_window_ms, like.ts // HOUR_MS
    recent: set[str] = set()
    this_hour = 0
    for sent in state.sent:
        if abs(sent.like_ts - ts) < window:
            recent.add(sent.product_id)
        if sent.like_ts // HOUR_MS == hour:
            this_hour += 1
    candidates = [p for p in eligible if p.product_id not in recent] if recent else list(eligible)
    if not candidates:
        return Skip(NoPromptReason.ALL_RECENTLY_OFFERED)
    if this_hour >= guards.prompts_per_hour:
        return Skip(NoPromptReason.HOURLY_CAP)
    if not prompt_shown(creator_weight, like.user_id, like.video_id, like.ts):
        return Skip(NoPromptReason.DEMOTED)
    score, best = rank(candidates, state.affinity, like.ts, creator_weight, ranking, current, level)[0]
    price_cents = offer_price(best, like.ts, pricing)
    prompt = Prompt(
        prompt_id=prompt_ids.issue(like.event_id, best.product_id, mapping.creator_id, like.user_id),
        user_id=like.user_id,
        video_id=like.video_id,
        creator_id=mapping.creator_id,
        product_id=best.product_id,
        title=best.title,
        price_cents=price_cents,
        offer=best.offer,
        score=score,
        text=offer_text(
            guards.language, best.offer, best.title, price_cents, matched_interest(best.category, current)
        ),
        like_ts=like.ts,
        emitted_ts=now_ms,
        source=CONTENT_SOURCE if best.product_id in mapping.matched else CREATOR_SOURCE,
    )
    return Emit(prompt, kept(prompt.to_json()))


def _prune(state: UserState, guards: GuardPolicy) -> None:
    # Pruning follows the user's own event-time clock (high_ts), never the wall clock, so a
    # replay of the same likes leaves the same state behind.
    seen_floor = state.high_ts - guards.dedupe_horizon_ms
    if state.seen and min(state.seen.values()) < seen_floor:
        state.seen = {e: ts for e, ts in state.seen.items() if ts >= seen_floor}
        if state.seen_offsets:
            seen = state.seen
            state.seen_offsets = {e: o for e, o in state.seen_offsets.items() if e in seen}
    keep_ms = max(guards.repeat_window_ms, guards.dedupe_horizon_ms, HOUR_MS)
    sent_floor = state.high_ts - keep_ms
    if state.sent and min(s.like_ts for s in state.sent) < sent_floor:
        state.sent = [s for s in state.sent if s.like_ts >= sent_floor]
