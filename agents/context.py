"""What the agents share: settings, topics, tables, sinks and metrics (built once per app)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from aiokafka import AIOKafkaProducer

from agents.retention import RetentionSweeper
from config import Settings
from likeflow.domain.decide import GuardPolicy
from likeflow.domain.mapping_versions import Unknown
from likeflow.domain.matching import CatalogueIndex
from likeflow.domain.pricing import PricePolicy
from likeflow.domain.prompt_ids import PromptIds
from likeflow.domain.quality.counting import WindowPolicy
from likeflow.domain.quality.judging import JudgePolicy
from likeflow.domain.ranking import RankingPolicy
from likeflow.domain.user_state import UserState
from likeflow.domain.waiting import WaitingLike
from likeflow.engine import ChangelogStore
from likeflow.metrics import Metrics
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.sinks.redis_prompts import RedisPromptStore
from likeflow.sinks.redis_quality import RedisQualityStore
from likeflow.tracing import LikeTracing
from streams.events import VideoMapping
from streams.topics import Topics
from streams.validation import InputLimits
from tables import Tables

CreatorWeight = Callable[[str], float]
# Raw user id -> pseudonym (likeflow.domain.pseudonym.Pseudonymizer).
Pseudonymize = Callable[[str], str]


class AuditAppender(Protocol):
    """The hash-chained audit trail (likeflow.sinks.audit_log.WorkerAudit)."""

    async def append(
        self, partition: int, kind: Literal["prompt", "feedback"], records: Sequence[bytes]
    ) -> None: ...


class MappingLookup(Protocol):
    """The join side: a video's mapping now and at a like's ts, and whether the view is complete."""

    ready: asyncio.Event

    on_mapped: list[Callable[[str], None]]

    def get(self, video_id: str) -> VideoMapping | None: ...

    def at(self, video_id: str, ts: int) -> VideoMapping | None | Unknown: ...


class CatalogueLookup(Protocol):
    """The content matcher's catalogue: its index once loaded, and whether it caught up."""

    ready: asyncio.Event
    index: CatalogueIndex | None


def neutral_creator_weight(creator_id: str) -> float:
    """Every creator weighs 1.0 until creator-quality scoring provides real weights."""
    return 1.0


@dataclass(frozen=True, slots=True)
class PipelineContext:
    """Dependencies of the agents, built once by `likeflow.worker.app.create_app`; tests build
    one with their own sinks. Each field names what the worker binds to it."""

    settings: Settings  # config.load_settings()
    topics: Topics  # streams.topics.declare_topics: the Faust topic objects
    tables: Tables  # tables.declare_tables: the Faust tables (changelog-backed)
    metrics: Metrics  # likeflow.metrics: the worker's Prometheus registry
    dead_letters: DeadLetterSink  # likeflow.sinks.dead_letters
    prompt_store: RedisPromptStore  # likeflow.sinks.redis_prompts: served prompts per user
    guards: GuardPolicy  # likeflow.policies.policies_from: dedupe, repeat, hourly cap
    ranking: RankingPolicy  # likeflow.policies.policies_from: affinity decay, evening boost
    quality_store: RedisQualityStore  # likeflow.sinks.redis_quality: served windows, standings
    windows: WindowPolicy  # likeflow.policies.quality_policies_from: window size, grace, sources
    judging: JudgePolicy  # likeflow.policies.quality_policies_from: demotion thresholds
    video_mappings: MappingLookup  # likeflow.replicas.video_mappings.VideoMappings
    pseudonymize: Pseudonymize  # likeflow.connections.pseudonymizer (keyed HMAC)
    pricing: PricePolicy  # likeflow.policies.pricing_from: the campaign everyone sees
    retention: RetentionSweeper  # agents.retention: per-user state expiry
    audit: AuditAppender  # likeflow.sinks.audit_log.WorkerAudit
    # The aiokafka producer of the app (started with it): every output goes through it.
    producer: Callable[[], AIOKafkaProducer]  # likeflow.engine.OutputProducer (changelogs: Faust's)
    user_states: ChangelogStore[UserState]  # likeflow.engine.ChangelogStore over tables.user_state
    limits: InputLimits  # likeflow.policies.input_limits_from: what one input record may hold
    # ChangelogStore over tables.erasure_ledger: pseudonym -> latest erasure ts, never expired.
    erasures: ChangelogStore[int]
    prompt_ids: PromptIds  # likeflow.domain.prompt_ids, keyed by a key derived from the user key
    # ChangelogStore over tables.mapping_waits: like offset -> a like waiting for its mapping.
    mapping_waits: ChangelogStore[WaitingLike]
    # likeflow.replicas.creator_weights.CreatorWeights (the judge's weights; 1.0 until judged).
    creator_weight: CreatorWeight = neutral_creator_weight
    # likeflow.replicas.catalogue.CatalogueReplica; None: content matching is off.
    catalogue: CatalogueLookup | None = None
    # likeflow.tracing.LikeTracing.from_settings: spans of traced likes; None: tracing is off.
    tracing: LikeTracing | None = None


def new_user_state(ctx: PipelineContext, partition: int, user: str) -> UserState:
    """The state of a user the job holds nothing about (never seen, or expired by retention):
    empty but for an erasure the ledger remembers, so that nothing created for the user (a like,
    a consent) brings back what the erasure covers. Every handler that creates a state uses it."""
    return UserState(erased_ts=ctx.erasures.get(partition, user) or 0)
