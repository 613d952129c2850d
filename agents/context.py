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
from likeflow.domain.pricing import PricePolicy
from likeflow.domain.quality.counting import WindowPolicy
from likeflow.domain.quality.judging import JudgePolicy
from likeflow.domain.ranking import RankingPolicy
from likeflow.domain.user_state import UserState
from likeflow.metrics import Metrics
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.sinks.redis_prompts import RedisPromptStore
from likeflow.sinks.redis_quality import RedisQualityStore
from streams.events import VideoMapping
from streams.topics import Topics
from tables import Tables
from tables.state_store import ChangelogStore

CreatorWeight = Callable[[str], float]
# Raw user id -> pseudonym (likeflow.domain.pseudonym.Pseudonymizer).
Pseudonymize = Callable[[str], str]


class AuditAppender(Protocol):
    """The hash-chained audit trail (likeflow.sinks.audit_log.WorkerAudit)."""

    async def append(
        self, partition: int, kind: Literal["prompt", "feedback"], records: Sequence[bytes]
    ) -> None: ...


class MappingLookup(Protocol):
    """The join side: a video's current mapping, and whether the view is complete yet."""

    ready: asyncio.Event

    def get(self, video_id: str) -> VideoMapping | None: ...


def neutral_creator_weight(creator_id: str) -> float:
    """Every creator weighs 1.0 until creator-quality scoring provides real weights."""
    return 1.0


@dataclass(frozen=True, slots=True)
class PipelineContext:
    """Dependencies of the agents; tests build one with their own sinks."""

    settings: Settings
    topics: Topics
    tables: Tables
    metrics: Metrics
    dead_letters: DeadLetterSink
    prompt_store: RedisPromptStore
    guards: GuardPolicy
    ranking: RankingPolicy
    quality_store: RedisQualityStore
    windows: WindowPolicy
    judging: JudgePolicy
    video_mappings: MappingLookup
    pseudonymize: Pseudonymize
    pricing: PricePolicy
    retention: RetentionSweeper
    audit: AuditAppender
    # The aiokafka producer of the app (started with it): every output goes through it.
    producer: Callable[[], AIOKafkaProducer]
    user_states: ChangelogStore[UserState]
    creator_weight: CreatorWeight = neutral_creator_weight
