"""Agent `ingest_mappings`: validates `video-products` records into the video_products table."""

from __future__ import annotations

from typing import Any, cast

import faust

from agents.context import PipelineContext
from agents.decoding import valid_events
from streams.events import MappingRemoval, VideoMapping
from streams.topics import VIDEO_PRODUCTS
from streams.validation import decode_mapping


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    table = ctx.tables.video_products
    outcomes = ctx.metrics.mapping_updates
    topic_name = ctx.settings.topic(VIDEO_PRODUCTS)

    async def ingest_mappings(stream: Any) -> None:
        async for _event, decoded in valid_events(stream, decode_mapping, ctx, topic_name):
            # mypy cannot solve the decoder's `T | Invalid` against a three-way union.
            update = cast(VideoMapping | MappingRemoval, decoded)
            current = table.get(update.video_id)
            # Newest `ts` wins, so a redelivered or reordered older mapping never overwrites a
            # newer one (idempotent under at-least-once). A tombstone (ts None) always removes.
            if current is not None and update.ts is not None and update.ts < current["ts"]:
                outcomes.labels("stale").inc()
            elif isinstance(update, MappingRemoval):
                if current is not None:
                    del table[update.video_id]
                outcomes.labels("removed").inc()
            else:
                table[update.video_id] = update.to_dict()
                outcomes.labels("set").inc()

    # The table is written from this agent's events, so its changelog partition is the
    # source partition: `video-products` and `likes-by-video` must have equal partition counts.
    return app.agent(ctx.topics.video_products, name="ingest_mappings")(ingest_mappings)
