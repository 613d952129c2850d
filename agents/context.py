"""What the agents share: settings, topics, tables, sinks and metrics (built once per app)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config import Settings
from likeflow.domain.decide import GuardPolicy
from likeflow.domain.ranking import HOUR_MS, RankingPolicy
from likeflow.metrics import Metrics
from likeflow.sinks.dead_letters import DeadLetterSink
from likeflow.sinks.redis_prompts import RedisPromptStore
from streams.topics import Topics
from tables import Tables

CreatorWeight = Callable[[str], float]


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
