"""One worker's batch handlers in-process, on the engine's harness: records in; outputs, state, commits out.

`in_process()` builds the real `PromptLikes`, `RouteFeedback` and `CountCreatorEvents` over the
engine's harness (`likeflow.engine.testing`): a fake producer, Faust memory tables behind real
`ChangelogStore`s, and testing sinks that keep what a worker would serve on Redis and append to
the audit trail. No broker, no Redis: a batch runs in milliseconds, and a test reads the
records sent per topic, the state in the stores, the served prompts and the committed offsets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry.sdk.trace.export import SpanExporter

from agents.batch_handlers import BatchHandlers, build_batch_handlers
from agents.context import CreatorWeight, PipelineContext, neutral_creator_weight
from agents.retention import RetentionSweeper
from config import Settings, load_settings
from likeflow.domain.privacy import DAY_MS
from likeflow.domain.prompt_ids import prompt_ids_for
from likeflow.domain.pseudonym import Pseudonymizer
from likeflow.domain.user_state import UserState
from likeflow.engine import BatchHandler, ChangelogStore, KeyPartitioner
from likeflow.engine.testing import Delivered, FakeProducer, Harness, Header
from likeflow.metrics import Metrics
from likeflow.policies import input_limits_from, policies_from, pricing_from, quality_policies_from
from likeflow.replicas.joined import JoinedMappings
from likeflow.replicas.video_mappings import VideoMappings
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.tracing import LikeTracing
from streams.topics import CREATOR_EVENTS, DEAD_LETTERS, LIKES, PROMPT_FEEDBACK, USER_ENGAGEMENT, USER_ORDERS
from tables import CREATOR_COUNTS_TABLE, ERASURE_LEDGER_TABLE, MAPPING_WAITS_TABLE, USER_STATE_TABLE
from tables.codecs import CreatorCountsCodec, ErasureLedgerCodec, UserStateCodec, WaitingLikeCodec

# What the worker's Redis sinks and audit trail were handed, kept (a testing sink each).


@dataclass
class ServedPrompts:
    """The prompt store (`RedisPromptStore`): the prompts served, the erasures applied."""

    prefix: str = "likeflow"
    served: list[Any] = field(default_factory=list)
    erased: list[tuple[str, int]] = field(default_factory=list)

    async def write(self, prompts: Sequence[Any]) -> bool:
        self.served.extend(prompts)
        return True

    async def erase(self, user_id: str, erased_ts: int) -> None:
        self.erased.append((user_id, erased_ts))


@dataclass
class ServedQuality:
    """The quality store (`RedisQualityStore`): window updates held and flushed."""

    prefix: str = "likeflow"
    held: list[Any] = field(default_factory=list)
    flushed: list[Any] = field(default_factory=list)

    def hold_windows(self, updates: Sequence[Any], size_ms: int) -> None:
        self.held.extend(updates)

    async def flush(self) -> int:
        flushed = len(self.held)
        self.flushed.extend(self.held)
        self.held.clear()
        return flushed


@dataclass
class AuditEntries:
    """The audit trail (`WorkerAudit`): the records appended, by partition and kind."""

    appended: list[tuple[int, str, bytes]] = field(default_factory=list)

    async def append(self, partition: int, kind: str, records: Sequence[bytes]) -> None:
        self.appended += [(partition, kind, r) for r in records]


@dataclass
class InProcess:
    """One worker's batch handlers, its state and its testing sinks, over the engine's harness."""

    settings: Settings
    harness: Harness
    ctx: PipelineContext
    handlers: BatchHandlers
    creator_counts: ChangelogStore[Any]
    prompts: ServedPrompts
    quality: ServedQuality
    audit: AuditEntries
    _counted: int = 0  # records of `producer.sent` that `count` has looked at

    @property
    def producer(self) -> FakeProducer:
        return self.harness.producer

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def sent(self, name: str) -> list[Any]:
        """Records sent to topic `name` (unprefixed), in send order."""
        return self.harness.outputs(self.topic(name))

    def user_state(self, user_id: str) -> UserState | None:
        """The state held for raw `user_id`, on the partition its likes land on."""
        partition = KeyPartitioner(self.settings.partitions)(user_id.encode())
        return self.ctx.user_states.get(partition, self.ctx.pseudonymize(user_id))

    async def run(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        headers: Sequence[Header] = (),
    ) -> Delivered:
        """One fetched batch of `records` (key, value) of `topic` (`likes`, `prompt-feedback`,
        `creator-events` or `user-engagement`, unprefixed), each in the partition Kafka's default
        partitioner gives its key, processed and completed."""
        handlers: dict[str, BatchHandler] = {
            LIKES: self.handlers.likes,
            PROMPT_FEEDBACK: self.handlers.feedback,
            CREATOR_EVENTS: self.handlers.counting,
            USER_ENGAGEMENT: self.handlers.engagement,
        }
        partition_of = KeyPartitioner(self.settings.partitions)
        return await self.harness.feed(handlers[topic], self.topic(topic), records, partition_of, headers)

    async def tick(self) -> Delivered:
        """A fetch with no new likes: the partitions with waiting likes due are delivered to the
        prompt handler as empty batches, as the worker's consumer does (`BatchRouter.timers`)."""
        likes = self.handlers.likes
        return await self.harness.tick(likes, self.topic(LIKES), likes.due_partitions())

    async def route_orders(self, sent: Sequence[Any] | None = None) -> Delivered:
        """Deliver `sent` (default: every record sent to `user-orders` so far) to the engagement
        handler, in the partitions they were sent to (as the worker's consumer of `user-orders`
        would; call it again to model a redelivery)."""
        if sent is None:
            sent = self.sent(USER_ORDERS)
        return await self.harness.deliver(self.handlers.engagement, self.harness.refetch(sent))

    def lose_counts(self) -> None:
        """Drop the count records sent since the last `count` undelivered, as a worker killed
        before the broker acknowledged them loses them (its batch is then redelivered)."""
        self._counted = len(self.producer.sent)

    async def count(self) -> Delivered:
        """Deliver the count records sent since the last call to the counting handler, in the
        partitions they were sent to (as the worker's consumer of `creator-events` would)."""
        sent, topic = self.producer.sent, self.topic(CREATOR_EVENTS)
        fresh = [s for s in sent[self._counted :] if s.topic == topic]
        self._counted = len(sent)
        batch = self.harness.refetch(fresh)
        return await self.harness.deliver(self.handlers.counting, batch)


def in_process(
    settings: Settings | None = None,
    mappings: Sequence[tuple[bytes, bytes]] = (),
    producer: FakeProducer | None = None,
    creator_weight: CreatorWeight = neutral_creator_weight,
    proposals: Sequence[tuple[bytes, bytes]] = (),
    span_exporter: SpanExporter | None = None,
) -> InProcess:
    """The handlers over `settings` (default: the defaults with a test key), a video-mapping
    replica that holds `mappings` (video-products records), `producer` (default: a
    `FakeProducer`; `FakeProducer(encode=True)` also builds real record batches) and the
    creators' weights `creator_weight` (default: everyone 1.0); `proposals` are the content
    matcher's `video-matches` records (`ctx.video_mappings.content`). With `settings.tracing`, spans
    go to `span_exporter` (e.g. the SDK's `InMemorySpanExporter`; `ctx.tracing.provider.force_flush()`
    exports those ended) instead of OTLP."""
    settings = settings or load_settings({}, user_key="in-process-" + "0123456789abcdef" * 3)
    metrics = Metrics()
    harness = Harness(producer or FakeProducer(), on_stage=metrics.observe_stage)
    pseudonymize = Pseudonymizer(settings.user_key.encode(), settings.user_key_version)
    limits = input_limits_from(settings)
    replica = VideoMappings(limits, settings.mappings_max_bytes)
    for key, value in mappings:
        replica.apply(key, value)
    replica.ready.set()
    matched = VideoMappings(limits, settings.mappings_max_bytes)
    for key, value in proposals:
        matched.apply(key, value)
    joined = JoinedMappings(replica, matched)

    def changelog(table: str) -> str:
        return f"{settings.app_id}-{table}-changelog"

    def ceiling() -> int:
        return int(time.time() * 1000) + limits.max_skew_ms

    user_states = harness.store(
        UserStateCodec(ceiling, metrics.clock_repairs.labels("user_state").inc),
        changelog(USER_STATE_TABLE),
        max_cached=settings.state_cache_keys,
    )
    creator_counts = harness.store(CreatorCountsCodec(), changelog(CREATOR_COUNTS_TABLE))
    guards, ranking = policies_from(settings)
    windows, judging = quality_policies_from(settings)
    prompts, quality, audit = (
        ServedPrompts(settings.redis_prefix),
        ServedQuality(settings.redis_prefix),
        AuditEntries(),
    )
    ctx = PipelineContext(
        settings=settings,
        topics=cast(Any, None),  # the Faust topic objects: only the worker subscribes
        tables=cast(Any, None),  # the Faust tables: the stores below stand in for them
        metrics=metrics,
        dead_letters=DeadLetterSink(
            settings.topic(DEAD_LETTERS),
            KeyPartitioner(settings.partitions),
            metrics,
            user_keyed_topics=[settings.topic(LIKES), settings.topic(USER_ENGAGEMENT)],
            pseudonymize=pseudonymize,
            user_field_topics=[settings.topic(PROMPT_FEEDBACK)],
            max_key_bytes=settings.max_key_bytes,
            max_value_bytes=settings.max_record_bytes,
        ),
        prompt_store=cast(Any, prompts),
        guards=guards,
        ranking=ranking,
        quality_store=cast(Any, quality),
        windows=windows,
        judging=judging,
        video_mappings=joined,
        pseudonymize=pseudonymize,
        pricing=pricing_from(settings),
        retention=RetentionSweeper(
            user_states, settings.user_retention_days * DAY_MS, on_expired=metrics.users_expired.inc
        ),
        audit=audit,
        producer=lambda: cast(Any, harness.producer),
        user_states=user_states,
        limits=limits,
        erasures=harness.store(ErasureLedgerCodec(), changelog(ERASURE_LEDGER_TABLE)),
        prompt_ids=prompt_ids_for(pseudonymize),
        mapping_waits=harness.store(WaitingLikeCodec(), changelog(MAPPING_WAITS_TABLE)),
        creator_weight=creator_weight,
        tracing=LikeTracing.from_settings(settings, settings.topic(LIKES), pseudonymize, span_exporter),
    )
    handlers = build_batch_handlers(ctx, creator_counts)
    return InProcess(settings, harness, ctx, handlers, creator_counts, prompts, quality, audit)
