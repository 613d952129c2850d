"""Topic specs of contract v1 and their Faust declarations (raw bytes: we decode and validate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust

from config import Settings

LIKES = "likes"
VIDEO_PRODUCTS = "video-products"
ORDER_PROMPTS = "order-prompts"
DEAD_LETTERS = "likeflow-dlq"
# Internal hops. `likes-by-video` re-keys likes by video_id so each like meets its video's
# mapping on the same partition (Faust has no stream-table join: the join is a table lookup on
# a co-partitioned stream). `likes-joined` re-keys the joined like by user_id so that one
# worker owns each user's guards and profile.
LIKES_BY_VIDEO = "likes-by-video"
LIKES_JOINED = "likes-joined"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the job needs: contract name, Kafka configs, and whether the job creates it."""

    name: str
    configs: dict[str, str] = field(default_factory=dict)
    internal: bool = False


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(LIKES),
    # Compacted: the latest mapping per video is the state; a null value deletes it.
    TopicSpec(VIDEO_PRODUCTS, {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}),
    TopicSpec(ORDER_PROMPTS),
    TopicSpec(DEAD_LETTERS, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
    TopicSpec(LIKES_BY_VIDEO, internal=True),
    TopicSpec(LIKES_JOINED, internal=True),
)


@dataclass(frozen=True, slots=True)
class Topics:
    """The Faust topic objects of one app."""

    likes: Any
    video_products: Any
    order_prompts: Any
    dead_letters: Any
    likes_by_video: Any
    likes_joined: Any


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare every topic on `app` as raw bytes with the configured partition count."""

    def raw(name: str, internal: bool = False) -> Any:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            internal=internal,
        )

    return Topics(
        likes=raw(LIKES),
        video_products=raw(VIDEO_PRODUCTS),
        order_prompts=raw(ORDER_PROMPTS),
        dead_letters=raw(DEAD_LETTERS),
        likes_by_video=raw(LIKES_BY_VIDEO, internal=True),
        likes_joined=raw(LIKES_JOINED, internal=True),
    )
