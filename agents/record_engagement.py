"""Batch handler `record_engagement`: `user-engagement` and `user-orders` into the user's profile."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from agents.context import PipelineContext, new_user_state
from agents.decoding import wall_clock_ms
from likeflow.domain.profile.record import Recorded, record_engagement, record_order
from likeflow.domain.pseudonym import edge_pseudonym, is_pseudonym
from likeflow.domain.user_state import UserState
from likeflow.engine import ChangelogStore, Completion, OutputBatch, Records, StageTimer, Turn
from streams.engagement import decode_user_engagement, decode_user_order
from streams.events import DeadLetterReason, Invalid
from streams.topics import USER_ENGAGEMENT, USER_ORDERS
from streams.validation import InputLimits

NOT_A_PSEUDONYM = Invalid(
    DeadLetterReason.INVALID_VALUE, "user-orders: user_id must be a pseudonym (written by the job only)"
)


class RecordEngagement:
    """Adds each comment, share and long watch (`user-engagement`, keyed by raw user id) to the
    user's decayed affinity, and each of the user's own orders (`user-orders`, routed there by
    the feedback handler, keyed by pseudonym) to their price bands (docs/profile.md).

    Both topics are co-partitioned with `likes`: partition p of each reaches the worker holding
    the users' states of partition p, through the same `ChangelogStore` as the like handler's (the
    batches of one worker are processed one at a time, so the two never interleave on a state).
    Exactly once in effect: every event is remembered in the user's `seen` under its event id
    (`record_engagement` / `record_order`), the states changed by a batch go to their changelog in
    `process`, and the completion waits for those acknowledgements (and the dead letters') before
    the batch's offsets can be committed; a redelivered event is then a `duplicate`.
    """

    def __init__(self, ctx: PipelineContext, states: ChangelogStore[UserState]) -> None:
        settings = ctx.settings
        self._ctx = ctx
        self._states = states
        self._engagement_topic = settings.topic(USER_ENGAGEMENT)
        self._orders_topic = settings.topic(USER_ORDERS)
        metrics = ctx.metrics
        self._consumed = {
            topic: metrics.records_consumed.labels(topic)
            for topic in (self._engagement_topic, self._orders_topic)
        }
        self._outcomes = metrics.user_engagements
        self._batch_seconds = metrics.batch_duration.labels("record_engagement")
        self._stages = StageTimer(self._engagement_topic, metrics.observe_stage)

    async def process(self, batch: Records) -> Completion:
        """Record every event of the batch (see the class doc)."""
        ctx = self._ctx
        # As for likes: a fresh worker's mapping replica first holds every published mapping,
        # else its first engagement events would find no categories (`nothing_to_count`).
        await ctx.video_mappings.ready.wait()
        started = time.perf_counter()
        limits = ctx.limits.at(wall_clock_ms())
        invalid: list[tuple[Any, Invalid]] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        for tp, records in batch.items():
            consumed = self._consumed.get(tp.topic)
            if consumed is not None:
                consumed.inc(len(records))
            orders = tp.topic == self._orders_topic
            for record in records:
                if orders:
                    outcome = self._order(tp.partition, record, limits)
                else:
                    outcome = self._engagement(tp.partition, record, limits)
                if isinstance(outcome, Invalid):
                    invalid.append((record, outcome))
                else:
                    outcomes[outcome] += 1
        flushed = [await self._states.flush(p) for p in {tp.partition for tp in batch}]
        for (kind, recorded), n in outcomes.items():
            self._outcomes.labels(kind, recorded).inc(n)
        self._batch_seconds.observe(time.perf_counter() - started)

        async def complete(turn: Turn) -> None:
            # The states that record these events are on the changelog, and so are the dead
            # letters, before the batch's offsets can be committed.
            await self._stages.timed("changelog_ack", _all(flushed))
            outputs = OutputBatch(ctx.producer())
            ctx.dead_letters.add_all(outputs, invalid)
            async with turn:
                await outputs.send()
            await outputs.delivered()

        return complete

    def _engagement(self, partition: int, record: Any, limits: InputLimits) -> tuple[str, str] | Invalid:
        ctx = self._ctx
        event = decode_user_engagement(record.key, record.value, limits)
        if isinstance(event, Invalid):
            return event
        # The edge: from here on the user is a pseudonym (as for likes and consent).
        user = edge_pseudonym(event.user_id, record.headers, ctx.pseudonymize)
        # The video's categories: its current mapping (an engagement is not a purchase intent at
        # a point in time, so the latest products say what the video is about).
        mapping = ctx.video_mappings.get(event.video_id)
        categories = mapping.categories if mapping is not None else ()
        state = self._states.get(partition, user) or new_user_state(ctx, partition, user)
        outcome = record_engagement(
            state,
            event.event_id,
            event.kind,
            event.ts,
            categories,
            ctx.ranking.affinity_half_life_ms,
            ctx.guards,
            event.watch_ms,
        )
        self._recorded(partition, user, state, outcome, event.ts)
        return event.kind, outcome.value

    def _order(self, partition: int, record: Any, limits: InputLimits) -> tuple[str, str] | Invalid:
        order = decode_user_order(record.key, record.value, limits)
        if isinstance(order, Invalid):
            return order
        if not is_pseudonym(order.user_id):
            return NOT_A_PSEUDONYM
        user = order.user_id  # pseudonymised by the feedback handler: never a raw id here
        state = self._states.get(partition, user) or new_user_state(self._ctx, partition, user)
        outcome = record_order(state, order.event_id, order.amount_cents, order.ts, self._ctx.guards)
        self._recorded(partition, user, state, outcome, order.ts)
        return "order", outcome.value

    def _recorded(self, partition: int, user: str, state: UserState, outcome: Recorded, ts: int) -> None:
        """Only a recorded event changed the state (the others leave it, or a new one, as it was):
        only then is it written (and a user never seen gets a state)."""
        if outcome is Recorded.RECORDED:
            self._states.put(partition, user, state)
            self._ctx.retention.touch(partition, user, state)
        self._ctx.retention.observe(partition, ts)


async def _all(futures: Sequence[Any]) -> None:
    for future in futures:
        await future
