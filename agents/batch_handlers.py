"""The hot topics' batch handlers of one worker, built once from its context (the worker and the harness)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.context import PipelineContext
from agents.count_creator_events import CountCreatorEvents
from agents.prompt_likes import PromptLikes
from agents.record_engagement import RecordEngagement
from agents.route_feedback import RouteFeedback
from likeflow.domain.quality.sources import SourceReports
from likeflow.engine import ChangelogStore, KeyPartitioner
from streams.events import FEEDBACK_SOURCE, LIKES_SOURCE


@dataclass(frozen=True, slots=True)
class BatchHandlers:
    """`likes` -> prompts, `prompt-feedback` -> count records (and the users' orders),
    `creator-events` -> creator windows, `user-engagement` and `user-orders` -> users' profiles."""

    likes: PromptLikes
    feedback: RouteFeedback
    counting: CountCreatorEvents
    engagement: RecordEngagement
    # Per input partition, the count records' clocks (`IdleSources` moves them when idle).
    like_sources: SourceReports
    feedback_sources: SourceReports

    def forgetters(self) -> tuple[Callable[[], None], ...]:
        """What a rebalance resets: every in-memory view of the partitions' state."""
        return (
            self.like_sources.forget,
            self.feedback_sources.forget,
            self.counting.forget,
            self.likes.forget,
        )


def build_batch_handlers(ctx: PipelineContext, creator_counts: ChangelogStore[Any]) -> BatchHandlers:
    """The handlers over `ctx`, with the count records of every source routed as feedback is."""
    settings = ctx.settings
    creator_partition = KeyPartitioner(settings.partitions)

    def counting_partition(creator_id: str) -> int:
        # Feedback is keyed by creator_id with Kafka's default partitioner: the count records of
        # one creator land on the partition its feedback would.
        return creator_partition(creator_id.encode())

    like_sources = SourceReports(LIKES_SOURCE, settings.partitions, counting_partition, ctx.windows)
    feedback_sources = SourceReports(FEEDBACK_SOURCE, settings.partitions, counting_partition, ctx.windows)
    return BatchHandlers(
        likes=PromptLikes(ctx, ctx.user_states, like_sources),
        feedback=RouteFeedback(ctx, feedback_sources),
        counting=CountCreatorEvents(ctx, creator_counts),
        engagement=RecordEngagement(ctx, ctx.user_states),
        like_sources=like_sources,
        feedback_sources=feedback_sources,
    )
