"""Agents `apply_consent` and `apply_erasure`: a user's privacy controls applied to their state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust

from agents.context import PipelineContext, new_user_state
from agents.decoding import Decoder, valid_events
from likeflow.domain.privacy import apply_consent, apply_erasure, needs_state
from likeflow.domain.pseudonym import edge_pseudonym
from likeflow.domain.user_state import UserState
from streams.events import UserConsent, UserErasure
from streams.topics import USER_CONSENT, USER_ERASURE
from streams.validation import decode_consent, decode_erasure

T = TypeVar("T", UserConsent, UserErasure)


def register(app: faust.App, ctx: PipelineContext) -> tuple[Any, Any]:
    """Register both agents on `app`; returns them (for tests).

    Both topics are keyed by user_id and have as many partitions as `likes`, so Faust assigns
    partition p of all three to one worker: the one holding the user's state. Each control is
    written to the user's state (and acknowledged on its changelog) on the partition it came
    from before its offset is committed, so a crash replays it rather than losing it. The state
    goes through the same store as the like handler's, so the two never overwrite each other
    on the changelog out of order.
    """
    states = ctx.user_states
    ledger = ctx.erasures
    controls = ctx.metrics.user_controls
    stateless = ctx.metrics.user_controls_stateless

    def stream_of(
        topic: Any, decode: Decoder[T], name: str, apply: Callable[[int, T, Any], Awaitable[None]]
    ) -> Any:
        topic_name = ctx.settings.topic(name)

        async def agent(stream: Any) -> None:
            async for event, control in valid_events(stream, decode, ctx, topic_name):
                await apply(event.message.partition, control, event.message.headers)

        agent.__name__ = f"apply_{name.split('-')[1]}"
        return app.agent(topic, name=agent.__name__)(agent)

    async def save(partition: int, user: str, state: UserState) -> None:
        states.put(partition, user, state)
        ctx.retention.touch(partition, user, state)
        await (await states.flush(partition))

    async def consent(partition: int, control: UserConsent, headers: Any) -> None:
        user = edge_pseudonym(control.user_id, headers, ctx.pseudonymize)
        held = states.get(partition, user)
        if held is None and not needs_state(control):
            # Admission: a user never seen who keeps the default choices needs no state (a
            # flood of consent records for invented ids creates none).
            stateless.labels("consent").inc()
        else:
            state = held or new_user_state(ctx, partition, user)
            if apply_consent(state, control):
                await save(partition, user, state)
        ctx.retention.observe(partition, control.ts)
        controls.labels("consent").inc()

    async def erasure(partition: int, control: UserErasure, headers: Any) -> None:
        user = edge_pseudonym(control.user_id, headers, ctx.pseudonymize)
        erased_ts = max(control.ts, ledger.get(partition, user) or 0)
        # The ledger first: it outlives the state (retention), so a pre-erasure like replayed
        # any time later is still ignored (docs/privacy.md). Its changelog is on the same
        # partition as the state's, acknowledged before this control's offset is committed.
        ledger.put(partition, user, erased_ts)
        ledger_acknowledged = await ledger.flush(partition)
        held = states.get(partition, user)
        if held is None:
            # Nothing held to erase: the ledger entry alone (admission: no state for an id
            # never seen). A like processed later finds the ledger when it creates the state.
            stateless.labels("erasure").inc()
        else:
            # The state next (a like processed from now on sees the erasure), then Redis.
            await save(partition, user, apply_erasure(held, UserErasure(control.user_id, erased_ts)))
        await ledger_acknowledged
        await ctx.prompt_store.erase(user, erased_ts)
        ctx.retention.observe(partition, control.ts)
        controls.labels("erasure").inc()

    return (
        stream_of(ctx.topics.user_consent, decode_consent, USER_CONSENT, consent),
        stream_of(ctx.topics.user_erasure, decode_erasure, USER_ERASURE, erasure),
    )
