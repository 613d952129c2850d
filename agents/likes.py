"""Agent `route_likes`: validates raw likes and re-keys them by video_id for the join."""

from __future__ import annotations

from typing import Any

import faust

from agents.context import PipelineContext
from agents.decoding import valid_events
from streams.topics import LIKES
from streams.validation import decode_like


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    unlikes = ctx.metrics.likes_skipped.labels("unlike")

    async def route_likes(stream: Any) -> None:
        async for _event, like in valid_events(stream, decode_like, ctx, ctx.settings.topic(LIKES)):
            if like.action == "unlike":
                unlikes.inc()
                continue
            # Repartition by video_id. The record timestamp is the like's event time (not the
            # send time) and the payload carries `ts`, so event time survives the hop.
            await ctx.topics.likes_by_video.send(
                key=like.video_id.encode(), value=like.to_json(), timestamp=like.ts / 1000
            )

    return app.agent(ctx.topics.likes, name="route_likes")(route_likes)
