"""Agent `route_feedback`: validates `prompt-feedback` and forwards it to `creator-events`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import faust

from agents.context import PipelineContext
from agents.decoding import valid_events
from streams.topics import PROMPT_FEEDBACK
from streams.validation import decode_feedback


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    topic_name = ctx.settings.topic(PROMPT_FEEDBACK)

    async def route_feedback(stream: Any) -> None:
        async for _event, decoded in valid_events(stream, decode_feedback, ctx, topic_name):
            # The edge for feedback: the app reports the raw user id; only its pseudonym goes on.
            feedback = replace(decoded, user_id=ctx.pseudonymize(decoded.user_id))
            # Same key (creator_id) and partitioner: the creator's feedback and the job's prompt
            # counts meet on one partition of `creator-events`, in one order.
            await ctx.topics.creator_events.send(
                key=feedback.creator_id.encode(), value=feedback.to_json(), timestamp=feedback.ts / 1000
            )

    return app.agent(ctx.topics.prompt_feedback, name="route_feedback")(route_feedback)
