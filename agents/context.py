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
from likeflow.domain.ranking import HOUR_MS, RankingPolicy
from likeflow.domain.user_state import UserState
from likeflow.metrics import Metrics
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.sinks.redis_prompts import RedisPromptStore
from likeflow.sinks.redis_quality import RedisQualityStore
from streams.events import FEEDBACK_SOURCE, LIKES_SOURCE, VideoMapping, source_name
from streams.topics import Topics
from tables import Tables
from tables.state_store import ChangelogStore

CreatorWeight = Callable[[str], float]
# Raw user id -> pseudonym (likeflow.domain.pseudonym.Pseudonymizer).
Pseudonymize = Callable[[str], str]


class AuditAppender(Protocol):
    """The hash-chained audit trail (likeflow.audit_trail.WorkerAudit)."""

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


def policies_from(settings: Settings) -> tuple[GuardPolicy, RankingPolicy]:
    """Guard and ranking policies from settings (hours converted to ms)."""
    guards = GuardPolicy(
        repeat_window_ms=settings.repeat_window_hours * HOUR_MS,
        prompts_per_hour=settings.prompts_per_hour,
        dedupe_horizon_ms=settings.dedupe_horizon_hours * HOUR_MS,
        language=settings.language,
    )
    ranking = RankingPolicy(
        affinity_half_life_ms=settings.affinity_half_life_hours * HOUR_MS,
        evening_peak_start_hour=settings.evening_peak_start_hour,
        evening_peak_end_hour=settings.evening_peak_end_hour,
        evening_peak_boost=settings.evening_peak_boost,
        tz_offset_minutes=settings.tz_offset_minutes,
    )
    return guards, ranking


def pricing_from(settings: Settings) -> PricePolicy:
    """The campaign every user sees alike (docs/privacy.md, fair pricing)."""
    return PricePolicy(
        discount_pct=settings.campaign_discount_pct,
        start_hour=settings.campaign_start_hour,
        end_hour=settings.campaign_end_hour,
        tz_offset_minutes=settings.tz_offset_minutes,
    )


def count_sources(partitions: int) -> tuple[str, ...]:
    """Every input of the creator counters: each `likes` partition (the job's own prompts) and
    each `prompt-feedback` partition; a window closes once all of them have passed it."""
    return tuple(source_name(t, p) for t in (LIKES_SOURCE, FEEDBACK_SOURCE) for p in range(partitions))


def quality_policies_from(settings: Settings) -> tuple[WindowPolicy, JudgePolicy]:
    """Window and judging policies from settings (minutes and hours converted to ms)."""
    windows = WindowPolicy(
        size_ms=settings.quality_window_minutes * 60_000,
        grace_ms=settings.quality_grace_minutes * 60_000,
        retention_ms=settings.quality_retention_hours * HOUR_MS,
        dedupe_horizon_ms=settings.feedback_dedupe_hours * HOUR_MS,
        sources=count_sources(settings.partitions),
    )
    judging = JudgePolicy(
        prior_strength=settings.quality_prior_strength,
        horizon_ms=settings.quality_horizon_hours * HOUR_MS,
        margin=settings.demotion_margin,
        min_prompts=settings.demotion_min_prompts,
        min_orders=settings.demotion_min_orders,
        demote_after=settings.demote_after_windows,
        recover_after=settings.recover_after_windows,
        min_weight=settings.demoted_min_weight,
    )
    return windows, judging
