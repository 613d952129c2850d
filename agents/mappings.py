"""Agent `ingest_mappings`: validates `video-products` records; dead-letters and counts them once."""

from __future__ import annotations

from typing import Any, cast

import faust

from agents.context import PipelineContext
from agents.decoding import valid_events
from likeflow.domain.mappings import mapping_outcome
from streams.events import MappingRemoval, VideoMapping
from streams.topics import VIDEO_PRODUCTS
from streams.validation import decode_mapping


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    outcomes = ctx.metrics.mapping_updates
    topic_name = ctx.settings.topic(VIDEO_PRODUCTS)

    async def ingest_mappings(stream: Any) -> None:
        # Every worker follows all of `video-products` into its own replica (likeflow/
        # video_mappings.py), which serves the join. This agent owns each partition once in the
        # group, so each bad record is dead-lettered, and each update counted, exactly once.
        async for _event, decoded in valid_events(stream, decode_mapping, ctx, topic_name):
            # mypy cannot solve the decoder's `T | Invalid` against a three-way union.
            update = cast(VideoMapping | MappingRemoval, decoded)
            outcome = mapping_outcome(ctx.video_mappings.get(update.video_id), update)
            outcomes.labels(outcome.value).inc()

    return app.agent(ctx.topics.video_products, name="ingest_mappings")(ingest_mappings)
