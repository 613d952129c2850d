"""The agents: Faust agents for the low-volume topics, batch handlers for the hot ones."""

from __future__ import annotations

import faust

from agents import content_matcher, judge, mappings, user_controls
from agents.context import PipelineContext


def register_agents(app: faust.App, ctx: PipelineContext) -> None:
    """Register the Faust agents of the pipeline on `app` (explicitly: no import side effects).

    The hot topics (`likes`, `prompt-feedback`, `creator-events`) are not Faust agents: their
    batch handlers (`agents.prompt_likes`, `agents.route_feedback`,
    `agents.count_creator_events`) are registered by `likeflow.worker.app` on the batch router.
    """
    for module in (mappings, user_controls, judge, content_matcher):
        module.register(app, ctx)
