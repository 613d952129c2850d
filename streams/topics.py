"""Topic specs of contract v1 and their Faust declarations (raw bytes: we decode and validate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config import Settings
from streams.content import decode_catalogue_product, decode_video_content
from streams.engagement import decode_user_engagement
from streams.validation import (
    InputLimits,
    decode_consent,
    decode_erasure,
    decode_feedback,
    decode_like,
    decode_mapping,
)

if TYPE_CHECKING:
    import faust

LIKES = "likes"
VIDEO_PRODUCTS = "video-products"
# How long (ms of event time behind a video's newest version) mapping versions are kept.
MAPPING_HISTORY_MS = 24 * 3_600_000
ORDER_PROMPTS = "order-prompts"
DEAD_LETTERS = "likeflow-dlq"
# What `likeflow dlq replay` sent (docs/operations.md): one record per dead letter replayed, keyed
# by the dead letter's `<dlq topic>/<partition>/<offset>`, compacted and kept, so a dead letter is
# replayed once unless forced. Written and read only by the command, never by the workers.
DLQ_REPLAYS = "likeflow-dlq-replays"
# Creator quality. Feedback and the job's own prompts meet on `creator-events` (key creator_id),
# one totally ordered stream per partition, so lateness and counts replay identically. Closed
# windows go to the single-partition `creator-windows`, where one judge sees every creator and
# the platform totals; its verdicts land on the compacted `creator-quality`.
PROMPT_FEEDBACK = "prompt-feedback"
CREATOR_EVENTS = "creator-events"
CREATOR_WINDOWS = "creator-windows"
CREATOR_QUALITY = "creator-quality"
# Privacy controls (docs/privacy.md), keyed by user_id like `likes` and co-partitioned with it,
# so a user's controls are applied by the worker that holds the user's state.
USER_CONSENT = "user-consent"
USER_ERASURE = "user-erasure"
# The profile beyond likes (docs/profile.md), co-partitioned with `likes` too: a user's comments,
# shares and long watches (input), and the user's own orders, which the feedback handler routes
# from `prompt-feedback` (keyed by creator) to the partition of the user's state (internal).
USER_ENGAGEMENT = "user-engagement"
USER_ORDERS = "user-orders"
# Tamper-evident trail (docs/audit.md): hash-chained copies of every emitted prompt and every
# feedback record, one chain per partition, written by likeflow.sinks.audit_log.AuditTrail.
AUDIT_LOG = "audit-log"
# Signed tree heads of the audit log (docs/audit.md, "Checkpoints"): key "<audit topic>/<partition>",
# compacted (the latest checkpoint of each partition covers its whole log; every one is also
# exported to LIKEFLOW_AUDIT_CHECKPOINT_DIR for WORM storage).
AUDIT_CHECKPOINTS = "audit-checkpoints"
# Content understanding (docs/matching.md): what an upstream service recognised in a video
# (key video_id) and the product catalogue (key product_id), both compacted; the matcher's
# proposals for each video land on the compacted `video-matches` (key video_id), which every
# worker follows next to `video-products` (a creator's own mapping always wins).
VIDEO_CONTENT = "video-content"
PRODUCT_CATALOGUE = "product-catalogue"
VIDEO_MATCHES = "video-matches"


Decoder = Callable[[bytes | None, bytes | None, InputLimits], Any]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic of the contract and what the job does with it: the one registry from which the
    topic setup and checks, the worker's consumers and monitoring, and the operator commands
    are derived, so a new topic cannot be half-registered.
    """

    name: str
    configs: dict[str, str] = field(default_factory=dict)
    #: Created and read only by the job (docs/events.md: not a public contract).
    internal: bool = False
    #: None: `LIKEFLOW_PARTITIONS`. 1 for the judge's input, which must see every creator.
    partitions: int | None = None
    #: Consumed by the worker's consumer group: lag gauge, stall watchdog, metric series.
    consumed: bool = False
    #: Written by other systems (an input of the contract): `reset-offsets` rewinds these.
    input: bool = False
    #: Keyed by user id and co-partitioned with the `user_state` table (a user's likes,
    #: controls and state on one worker), so it must have `LIKEFLOW_PARTITIONS` partitions.
    co_partitioned: bool = False
    #: `replay file` can publish archives to it: the decoder that checks each line, and the
    #: payload field the live producers key by (a replayed record lands where a live one would).
    replay: tuple[Decoder, str] | None = None
    #: `backfill --from-topic` can recompute the creator windows from it.
    backfill_source: bool = False
    #: Its records carry a raw `user_id` (pseudonymised where the job reads it): their dead letters
    #: keep none, and `replay file` leaves out those of erased users.
    names_user: bool = False

    def partition_count(self, settings: Settings) -> int:
        """Partitions this topic is created with."""
        return self.partitions or settings.partitions


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    # The prompt handler's source.
    TopicSpec(
        LIKES,
        consumed=True,
        input=True,
        co_partitioned=True,
        replay=(decode_like, "user_id"),
        names_user=True,
    ),
    # Compacted: the latest mapping per video is the state; a null value deletes it. Every
    # worker also follows all of it outside the group (the join's replica). Records stay
    # uncompacted for the mapping history, so a restarted replica re-reads every version a
    # like may still join (likeflow/domain/mapping_versions.py).
    TopicSpec(
        VIDEO_PRODUCTS,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": str(MAPPING_HISTORY_MS)},
        consumed=True,
        input=True,
        replay=(decode_mapping, "video_id"),
    ),
    TopicSpec(ORDER_PROMPTS, backfill_source=True),
    TopicSpec(DEAD_LETTERS, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
    # The replay ledger: no record content in it (digests only), so it may outlive the 30 days.
    TopicSpec(DLQ_REPLAYS, {"cleanup.policy": "compact", "retention.ms": "-1"}, internal=True),
    TopicSpec(
        PROMPT_FEEDBACK,
        consumed=True,
        input=True,
        replay=(decode_feedback, "creator_id"),
        backfill_source=True,
        names_user=True,
    ),
    TopicSpec(CREATOR_EVENTS, internal=True, consumed=True, backfill_source=True),
    TopicSpec(CREATOR_WINDOWS, internal=True, partitions=1, consumed=True),
    # Followed by every worker outside the group (each worker's copy of the ranking weights).
    TopicSpec(CREATOR_QUALITY, {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}),
    TopicSpec(
        USER_CONSENT,
        consumed=True,
        input=True,
        co_partitioned=True,
        replay=(decode_consent, "user_id"),
        names_user=True,
    ),
    TopicSpec(
        USER_ERASURE,
        consumed=True,
        input=True,
        co_partitioned=True,
        replay=(decode_erasure, "user_id"),
        names_user=True,
    ),
    TopicSpec(
        USER_ENGAGEMENT,
        consumed=True,
        input=True,
        co_partitioned=True,
        replay=(decode_user_engagement, "user_id"),
        names_user=True,
    ),
    # Key: the user's pseudonym (no raw id), written to the partition of the user's likes.
    TopicSpec(USER_ORDERS, internal=True, consumed=True, co_partitioned=True),
    # Kept forever (retention.ms -1, never compacted): these are transaction records, which
    # China's E-commerce Law (art. 31) requires to be kept at least 3 years after the transaction;
    # a chain is verified from its genesis entry, so time-based deletion would break it.
    TopicSpec(AUDIT_LOG, {"retention.ms": "-1", "cleanup.policy": "delete"}),
    # Compacted, kept forever: the latest signed checkpoint of each audit partition, written in
    # the audit partition's transaction (partition p carries the checkpoints of audit-log[p]).
    TopicSpec(AUDIT_CHECKPOINTS, {"cleanup.policy": "compact", "retention.ms": "-1"}),
    TopicSpec(
        VIDEO_CONTENT,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        consumed=True,
        input=True,
        replay=(decode_video_content, "video_id"),
    ),
    # Followed by every worker outside the group (each matcher's catalogue index).
    TopicSpec(
        PRODUCT_CATALOGUE,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        input=True,
        replay=(decode_catalogue_product, "product_id"),
    ),
    TopicSpec(VIDEO_MATCHES, {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}, internal=True),
)
SPECS_BY_NAME = {spec.name: spec for spec in TOPIC_SPECS}
#: Contract names, derived from the flags above.
CONSUMED_TOPICS = tuple(s.name for s in TOPIC_SPECS if s.consumed)
INPUT_TOPICS = tuple(s.name for s in TOPIC_SPECS if s.input)
CO_PARTITIONED_TOPICS = tuple(s.name for s in TOPIC_SPECS if s.co_partitioned)
#: Keyed otherwise, but naming a user in their `user_id` field.
USER_FIELD_TOPICS = tuple(s.name for s in TOPIC_SPECS if s.names_user and not s.co_partitioned)
REPLAYABLE_TOPICS = tuple(s.name for s in TOPIC_SPECS if s.replay is not None)
BACKFILL_SOURCES = tuple(s.name for s in TOPIC_SPECS if s.backfill_source)


@dataclass(frozen=True, slots=True)
class Topics:
    """The Faust topic objects of one app."""

    likes: Any
    video_products: Any
    order_prompts: Any
    dead_letters: Any
    prompt_feedback: Any
    creator_events: Any
    creator_windows: Any
    creator_quality: Any
    user_consent: Any
    user_erasure: Any
    video_content: Any
    video_matches: Any
    user_engagement: Any
    user_orders: Any


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare every topic on `app` as raw bytes with the configured partition count."""

    def raw(name: str) -> Any:
        spec = SPECS_BY_NAME[name]
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partition_count(settings),
            internal=spec.internal,
        )

    return Topics(
        likes=raw(LIKES),
        video_products=raw(VIDEO_PRODUCTS),
        order_prompts=raw(ORDER_PROMPTS),
        dead_letters=raw(DEAD_LETTERS),
        prompt_feedback=raw(PROMPT_FEEDBACK),
        creator_events=raw(CREATOR_EVENTS),
        creator_windows=raw(CREATOR_WINDOWS),
        creator_quality=raw(CREATOR_QUALITY),
        user_consent=raw(USER_CONSENT),
        user_erasure=raw(USER_ERASURE),
        video_content=raw(VIDEO_CONTENT),
        video_matches=raw(VIDEO_MATCHES),
        user_engagement=raw(USER_ENGAGEMENT),
        user_orders=raw(USER_ORDERS),
    )
