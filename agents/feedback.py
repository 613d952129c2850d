"""Agent `route_feedback`: validates `prompt-feedback`, audits it and forwards it to `creator-events`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import faust

from agents.context import PipelineContext
from agents.decoding import decode_or_dead_letter
from likeflow.sinks.kafka_batch import BatchSender
from streams.topics import CREATOR_EVENTS, PROMPT_FEEDBACK
from streams.validation import decode_feedback


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    settings = ctx.settings
    consumed = ctx.metrics.records_consumed.labels(settings.topic(PROMPT_FEEDBACK))
    creator_events = settings.topic(CREATOR_EVENTS)
    sender = BatchSender(app)

    async def route_feedback(stream: Any) -> None:
        # take_events acks a batch only after this loop body finishes with it: each record is
        # forwarded and on its audit chain (or dead-lettered) before its offset is committed.
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            audit_records: dict[int, list[bytes]] = {}
            for event in events:
                consumed.inc()
                decoded = await decode_or_dead_letter(event, decode_feedback, ctx)
                if decoded is None:
                    continue
                # The edge for feedback: the app reports the raw user id; only its pseudonym
                # goes on. Same key (creator_id) and partitioner as the job's prompt counts, so
                # both meet on one partition of `creator-events`, in one order.
                feedback = replace(decoded, user_id=ctx.pseudonymize(decoded.user_id))
                value = feedback.to_json()
                await sender.send(creator_events, feedback.creator_id.encode(), value, feedback.ts / 1000)
                audit_records.setdefault(event.message.partition, []).append(value)
            await sender.delivered()
            for partition, records in audit_records.items():
                await ctx.audit.append(partition, "feedback", records)

    return app.agent(ctx.topics.prompt_feedback, name="route_feedback")(route_feedback)
