"""Agent `match_content`: proposes catalogue products for each `video-content` record (off the like path)."""

from __future__ import annotations

import logging
from typing import Any

import faust
import orjson

from agents.context import PipelineContext
from agents.decoding import valid_events
from likeflow.domain.matching.proposal import propose
from streams.content import decode_video_content
from streams.topics import VIDEO_CONTENT

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: PipelineContext) -> Any:
    """Register the agent on `app`; returns it (None when content matching is off)."""
    catalogue = ctx.catalogue
    if catalogue is None:
        return None
    topic_name = ctx.settings.topic(VIDEO_CONTENT)
    outcomes = ctx.metrics.content_matches
    min_confidence = ctx.settings.match_min_confidence

    async def match_content(stream: Any) -> None:
        # Partitioned by video: each content record is matched once in the group, and its
        # proposal (or its withdrawal, a tombstone) goes to the compacted `video-matches`, keyed
        # by video, which every worker's join follows. Matching is deterministic for a given
        # catalogue, so a redelivery after a crash re-sends the same proposal (idempotent).
        await catalogue.ready.wait()
        async for _event, content in valid_events(stream, decode_video_content, ctx, topic_name):
            index = catalogue.index
            if index is None or content.creator_id is None:
                # Without a creator no prompt can be counted or judged: nothing is proposed.
                outcomes.labels("no_creator" if index is not None else "no_catalogue").inc()
                continue
            record, found = propose(
                content.video_id, content.creator_id, content.ts, content, index, min_confidence
            )
            value = orjson.dumps(record) if record is not None else None
            await ctx.topics.video_matches.send(key=content.video_id.encode(), value=value)
            outcomes.labels("matched" if record is not None else "none").inc()
            log.debug(
                "video %s: %s",
                content.video_id[:64],
                ", ".join(f"{m.product_id} {m.confidence:.2f}" for m in found) or "no match",
            )

    return app.agent(ctx.topics.video_content, name="match_content")(match_content)
