"""Agents `apply_consent` and `apply_erasure`: a user's privacy controls applied to their state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust

from agents.context import PipelineContext
from agents.decoding import Decoder, valid_events
from agents.retention import state_record
from likeflow.domain.privacy import apply_consent, apply_erasure
from likeflow.domain.user_state import UserState
from streams.events import UserConsent, UserErasure
from streams.topics import USER_CONSENT, USER_ERASURE
from streams.validation import decode_consent, decode_erasure
from tables import put_for_event

T = TypeVar("T", UserConsent, UserErasure)


def register(app: faust.App, ctx: PipelineContext) -> tuple[Any, Any]:
    """Register both agents on `app`; returns them (for tests).

    Both topics are keyed by user_id and have as many partitions as `likes`, so Faust assigns
    partition p of all three to one worker: the one holding the user's state. Each control is
    written to the user's state (and its changelog) on the partition it came from, before its
    offset is committed, so a crash replays it rather than losing it.
    """
    table = ctx.tables.user_state
    controls = ctx.metrics.user_controls

    def stream_of(
        topic: Any, decode: Decoder[T], name: str, apply: Callable[[Any, T], Awaitable[None]]
    ) -> Any:
        topic_name = ctx.settings.topic(name)

        async def agent(stream: Any) -> None:
            async for event, control in valid_events(stream, decode, ctx, topic_name):
                await apply(event, control)

        agent.__name__ = f"apply_{name.split('-')[1]}"
        return app.agent(topic, name=agent.__name__)(agent)

    async def consent(event: Any, control: UserConsent) -> None:
        user = ctx.pseudonymize(control.user_id)
        state = UserState.from_dict(table.get(user))
        if apply_consent(state, control):
            put_for_event(table, event, user, state_record(state, event.message.partition))
        ctx.retention.observe(event.message.partition, control.ts)
        controls.labels("consent").inc()

    async def erasure(event: Any, control: UserErasure) -> None:
        user = ctx.pseudonymize(control.user_id)
        state = apply_erasure(UserState.from_dict(table.get(user)), control)
        # The state first (a like processed from now on sees the erasure), then Redis.
        put_for_event(table, event, user, state_record(state, event.message.partition))
        await ctx.prompt_store.erase(user)
        ctx.retention.observe(event.message.partition, control.ts)
        controls.labels("erasure").inc()

    return (
        stream_of(ctx.topics.user_consent, decode_consent, USER_CONSENT, consent),
        stream_of(ctx.topics.user_erasure, decode_erasure, USER_ERASURE, erasure),
    )
