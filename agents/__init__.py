"""The Faust agents: thin loops that decode, call pure functions and hand results to sinks."""

from __future__ import annotations

import faust

from agents import counting, feedback, judge, mappings, prompts, user_controls
from agents.context import PipelineContext


def register_agents(app: faust.App, ctx: PipelineContext) -> None:
    """Register every agent of the pipeline on `app` (explicitly: no import side effects)."""
    for module in (mappings, prompts, user_controls, feedback, counting, judge):
        module.register(app, ctx)
