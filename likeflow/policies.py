"""Domain policies from settings: the one place where hours and minutes become milliseconds."""

from __future__ import annotations

from config import Settings
from likeflow.domain.decide import GuardPolicy
from likeflow.domain.pricing import PricePolicy
from likeflow.domain.quality.counting import WindowPolicy
from likeflow.domain.quality.judging import JudgePolicy
from likeflow.domain.ranking import HOUR_MS, RankingPolicy
from streams.events import FEEDBACK_SOURCE, LIKES_SOURCE, source_name
from streams.validation import InputLimits


def policies_from(settings: Settings) -> tuple[GuardPolicy, RankingPolicy]:
    """Guard and ranking policies from settings (hours converted to ms)."""
    guards = GuardPolicy(
        repeat_window_ms=settings.repeat_window_hours * HOUR_MS,
        prompts_per_hour=settings.prompts_per_hour,
        dedupe_horizon_ms=settings.dedupe_horizon_hours * HOUR_MS,
        language=settings.language,
        max_likes_per_user=settings.max_likes_per_user,
    )
    ranking = RankingPolicy(
        affinity_half_life_ms=settings.affinity_half_life_hours * HOUR_MS,
        evening_peak_start_hour=settings.evening_peak_start_hour,
        evening_peak_end_hour=settings.evening_peak_end_hour,
        evening_peak_boost=settings.evening_peak_boost,
        tz_offset_minutes=settings.tz_offset_minutes,
        use_consumption_level=settings.rank_by_consumption_level,
    )
    return guards, ranking


def input_limits_from(settings: Settings) -> InputLimits:
    """What one input record may hold (docs/security.md); `at(now_ms)` adds the time ceiling."""
    return InputLimits(
        max_record_bytes=settings.max_record_bytes,
        max_key_bytes=settings.max_key_bytes,
        max_id_chars=settings.max_id_chars,
        max_title_chars=settings.max_title_chars,
        max_products=settings.max_products_per_mapping,
        max_order_cents=settings.max_order_cents,
        max_skew_ms=int(settings.max_clock_skew_s * 1000),
    )


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
        min_conversions=settings.demotion_min_orders,
        demote_after=settings.demote_after_windows,
        recover_after=settings.recover_after_windows,
        min_weight=settings.demoted_min_weight,
    )
    return windows, judging
