"""Agent `prompt_likes`: likes (key user_id) → join → guards and ranking → prompts to Kafka and Redis."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import faust

from agents.context import PipelineContext
from agents.decoding import decode_or_dead_letter
from agents.retention import state_record
from likeflow.domain.decide import Duplicate, Skip, decide
from likeflow.domain.user_state import UserState
from likeflow.sinks.kafka_batch import BatchSender
from streams.events import CreatorEvent, Prompt
from streams.topics import CREATOR_EVENTS, LIKES, ORDER_PROMPTS
from streams.validation import decode_like
from tables import put_for_event


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    settings = ctx.settings
    table = ctx.tables.user_state
    metrics = ctx.metrics
    consumed = metrics.records_consumed.labels(settings.topic(LIKES))
    unlikes = metrics.likes_skipped.labels("unlike")
    unmapped = metrics.likes_skipped.labels("no_mapping")
    within_s = settings.batch_within_ms / 1000
    batch_seconds = metrics.batch_duration.labels("prompt_likes")
    prompts_topic = settings.topic(ORDER_PROMPTS)
    creator_events_topic = settings.topic(CREATOR_EVENTS)
    sender = BatchSender(app)
    pseudonymize = ctx.pseudonymize
    retention = ctx.retention

    async def emit(prompt: Prompt) -> None:
        timestamp_s = prompt.like_ts / 1000
        await sender.send(prompts_topic, prompt.user_id.encode(), prompt.to_json(), timestamp_s)
        # The creator's prompt count. A re-sent prompt has the same event_id, counted once.
        event = CreatorEvent.for_prompt(prompt)
        await sender.send(creator_events_topic, prompt.creator_id.encode(), event.to_json(), timestamp_s)

    async def handle(event: Any, to_serve: list[tuple[int, Prompt]], states_written: list[Any]) -> None:
        """Decide one like; a prompt to send (new or re-sent) is appended to `to_serve` with
        the like's partition (the audit chain it belongs to)."""
        message = event.message
        decoded = await decode_or_dead_letter(event, decode_like, ctx)
        if decoded is None:
            return
        # The edge: from here on the user is a pseudonym, in state, counts, prompts and logs.
        like = replace(decoded, user_id=pseudonymize(decoded.user_id))
        retention.observe(message.partition, like.ts)
        if like.action == "unlike":
            unlikes.inc()
            return
        # The join: a processing-time lookup in this worker's replica of `video-products`
        # (like a Kafka Streams stream-GlobalKTable join). No mapping is the common case.
        mapping = ctx.video_mappings.get(like.video_id)
        if mapping is None:
            unmapped.inc()
            return
        state = UserState.from_dict(table.get(like.user_id))
        now_ms = int(time.time() * 1000)
        decision = decide(
            state,
            like,
            mapping,
            creator_weight=ctx.creator_weight(mapping.creator_id),
            now_ms=now_ms,
            guards=ctx.guards,
            ranking=ctx.ranking,
            pricing=ctx.pricing,
        )
        if isinstance(decision, Duplicate):
            metrics.duplicates.inc()
            # Re-send the original prompt byte for byte: if the first send was lost in a crash
            # before the producer flushed, this one delivers it.
            if decision.prompt is not None:
                to_serve.append((message.partition, decision.prompt))
            return
        record = state_record(state, message.partition)
        states_written.append(put_for_event(table, event, like.user_id, record))
        if isinstance(decision, Skip):
            metrics.likes_skipped.labels(decision.reason.value).inc()
            return
        to_serve.append((message.partition, decision.prompt))
        metrics.prompts_emitted.inc()
        metrics.like_to_prompt_latency.observe(max(0, now_ms - like.ts) / 1000)

    def erased_since(prompt: Prompt) -> bool:
        # An erasure handled while this batch awaited Kafka has deleted the user's Redis key;
        # writing the prompt now would bring it back.
        stored = table.get(prompt.user_id)
        return stored is not None and stored.get("erased_ts", 0) >= prompt.like_ts

    async def prompt_likes(stream: Any) -> None:
        # Before the first like, this worker's mapping replica holds every mapping published
        # before it started; otherwise a fresh worker would skip likes as "no_mapping".
        await ctx.video_mappings.ready.wait()
        # take_events acks a batch only after this loop body finishes with it, so an offset is
        # committed only once its prompt is acknowledged by Kafka and written to Redis.
        async for events in stream.take_events(settings.batch_max, within=within_s):
            started = time.perf_counter()
            to_serve: list[tuple[int, Prompt]] = []
            states_written: list[Any] = []
            for event in events:
                consumed.inc()
                await handle(event, to_serve, states_written)
            if to_serve:
                # The user states that record these prompts are acknowledged on their changelog
                # *before* the prompts go out. After a crash the restored state then knows every
                # prompt that may have been seen, and a redelivered like re-sends its exact bytes
                # instead of deciding again (with a new emitted_ts).
                await asyncio.gather(*states_written)
            audit_records: dict[int, list[bytes]] = {}
            for partition, prompt in to_serve:
                await emit(prompt)
                audit_records.setdefault(partition, []).append(prompt.to_json())
            await sender.delivered()
            # Every emitted prompt (re-sends too) is on its partition's audit chain before the
            # batch's offsets can be committed.
            await asyncio.gather(*(ctx.audit.append(p, "prompt", rs) for p, rs in audit_records.items()))
            await ctx.prompt_store.write([p for _, p in to_serve if not erased_since(p)])
            retention.sweep_due()
            batch_seconds.observe(time.perf_counter() - started)

    return app.agent(ctx.topics.likes, name="prompt_likes")(prompt_likes)
