"""Agent `prompt_likes`: per-user guards and ranking; emits prompts to Kafka and Redis per batch."""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from likeflow.domain.decide import Duplicate, Skip, decide
from likeflow.domain.user_state import UserState
from streams.events import CreatorEvent, Like, Prompt, VideoMapping
from streams.topics import LIKES_JOINED
from tables import put_for_event


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    settings = ctx.settings
    table = ctx.tables.user_state
    metrics = ctx.metrics
    consumed = metrics.records_consumed.labels(settings.topic(LIKES_JOINED))
    within_s = settings.batch_within_ms / 1000
    batch_seconds = metrics.batch_duration.labels("prompt_likes")

    async def emit(prompt: Prompt) -> None:
        await ctx.topics.order_prompts.send(
            key=prompt.user_id.encode(), value=prompt.to_json(), timestamp=prompt.like_ts / 1000
        )
        # The creator's prompt count. A re-sent prompt has the same event_id, counted once.
        await ctx.topics.creator_events.send(
            key=prompt.creator_id.encode(),
            value=CreatorEvent.for_prompt(prompt).to_json(),
            timestamp=prompt.like_ts / 1000,
        )

    async def prompt_likes(stream: Any) -> None:
        # take_events acks a batch only after this loop body finishes with it, so an offset is
        # committed only once its prompt is queued to Kafka and written to Redis.
        async for events in stream.take_events(settings.batch_max, within=within_s):
            started = time.perf_counter()
            to_serve: list[Prompt] = []
            for event in events:
                consumed.inc()
                joined = orjson.loads(event.message.value)
                like = Like.from_trusted(joined["like"])
                state = UserState.from_dict(table.get(like.user_id))
                now_ms = int(time.time() * 1000)
                decision = decide(
                    state,
                    like,
                    VideoMapping.from_trusted(joined["mapping"]),
                    creator_weight=ctx.creator_weight(joined["mapping"]["creator_id"]),
                    now_ms=now_ms,
                    guards=ctx.guards,
                    ranking=ctx.ranking,
                )
                if isinstance(decision, Duplicate):
                    metrics.duplicates.inc()
                    # Re-send the original prompt byte for byte: if the first send was lost in
                    # a crash before the producer flushed, this one delivers it.
                    if decision.prompt is not None:
                        await emit(decision.prompt)
                        to_serve.append(decision.prompt)
                    continue
                put_for_event(table, event, like.user_id, state.to_dict())
                if isinstance(decision, Skip):
                    metrics.likes_skipped.labels(decision.reason.value).inc()
                    continue
                await emit(decision.prompt)
                to_serve.append(decision.prompt)
                metrics.prompts_emitted.inc()
                metrics.like_to_prompt_latency.observe(max(0, now_ms - like.ts) / 1000)
            await ctx.prompt_store.write(to_serve)
            batch_seconds.observe(time.perf_counter() - started)

    return app.agent(ctx.topics.likes_joined, name="prompt_likes")(prompt_likes)
