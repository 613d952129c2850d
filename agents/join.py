"""Agent `join_likes`: joins each like with its video's mapping and re-keys it by user_id."""

from __future__ import annotations

from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from streams.topics import LIKES_BY_VIDEO


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (for tests)."""
    table = ctx.tables.video_products
    consumed = ctx.metrics.records_consumed.labels(ctx.settings.topic(LIKES_BY_VIDEO))
    unmapped = ctx.metrics.likes_skipped.labels("no_mapping")

    async def join_likes(stream: Any) -> None:
        async for event in stream.events():
            consumed.inc()
            like = orjson.loads(event.message.value)
            # Processing-time lookup (like a Kafka Streams stream-table join): the mapping as
            # this worker knows it when the like is processed. A video without products is the
            # common case, not an error.
            mapping = table.get(like["video_id"])
            if mapping is None:
                unmapped.inc()
                continue
            await ctx.topics.likes_joined.send(
                key=like["user_id"].encode(),
                value=orjson.dumps({"like": like, "mapping": mapping}),
                timestamp=like["ts"] / 1000,
            )

    return app.agent(ctx.topics.likes_by_video, name="join_likes")(join_likes)
